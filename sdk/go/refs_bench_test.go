package limitr_test

import (
	"context"
	"testing"

	limitr "github.com/limitr/limitr/sdk/go"
)

// BenchmarkAllowScopedInherited: a user without a plan of its own inherits its org's
// plan through refs, and the entitlement is metered on the org (scope): every call
// resolves the plan through refs and finds the scope owner.
func BenchmarkAllowScopedInherited(b *testing.B) {
	p, err := limitr.New([]byte(`{"policy": {
  "credits": {"seat": {"stof_units": "int"}},
  "plans": {"team": {"entitlements": {
    "api": {"scope": "org", "limit": {"credit": "seat", "mode": "hard", "value": 100000000000000}}
  }}}}}`), limitr.WithClock(benchClock()))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if _, err := p.CreateCustomer(ctx, "org_1", "team", limitr.WithCustomerType("org")); err != nil {
		b.Fatal(err)
	}
	if _, err := p.CreateCustomer(ctx, "user_1", "", limitr.WithRefs("org_1")); err != nil {
		b.Fatal(err)
	}
	if ok, err := p.Allow(ctx, "user_1", "api", 1); !ok || err != nil {
		b.Fatal(ok, err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if ok, _ := p.Allow(ctx, "user_1", "api", 1); !ok {
			b.Fatal("denied")
		}
	}
}
