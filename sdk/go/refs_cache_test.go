package limitr_test

import (
	"context"
	"testing"

	limitr "github.com/limitr/limitr/sdk/go"
)

// Inherited plans and scope owners are cached per customer; every change that can
// alter them (a ref's plan, the customer's refs, a ref deleted or created) is seen by
// the very next call.
func TestInheritedPlanAndScopeOwnerFollowChanges(t *testing.T) {
	p, err := limitr.New([]byte(`{"policy": {
  "credits": {"seat": {"stof_units": "int"}},
  "plans": {
    "team": {"entitlements": {"api": {"scope": "org", "limit": {"credit": "seat", "mode": "hard", "value": 10}}}},
    "pro":  {"entitlements": {"api": {"scope": "org", "limit": {"credit": "seat", "mode": "hard", "value": 1000}}}}
  }}}`))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, c := range []struct{ id, plan string }{{"org1", "team"}, {"org2", "team"}} {
		if _, err := p.CreateCustomer(ctx, c.id, c.plan, limitr.WithCustomerType("org")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := p.CreateCustomer(ctx, "u", "", limitr.WithRefs("org1")); err != nil {
		t.Fatal(err)
	}
	allow := func(n float64, want bool, what string) {
		t.Helper()
		ok, err := p.Allow(ctx, "u", "api", n)
		if err != nil || ok != want {
			t.Fatalf("%s: Allow(%v) = %v, %v; want %v", what, n, ok, err, want)
		}
	}
	allow(8, true, "team, metered on org1")
	allow(5, false, "team's 10 on org1")
	// org1 moves to pro: u inherits it at once.
	if err := p.SetCustomerPlan(ctx, "org1", "pro", false); err != nil {
		t.Fatal(err)
	}
	allow(5, true, "pro inherited from org1")
	if v, _ := p.Value(ctx, "org1", "api"); v != 13 {
		t.Fatalf("org1 meter = %v, want 13", v)
	}
	// u now refers to org2 (team): its meter is org2's, fresh.
	if _, err := p.CreateCustomer(ctx, "u", "", limitr.WithRefs("org2")); err != nil {
		t.Fatal(err)
	}
	allow(10, true, "team on org2")
	allow(1, false, "team's 10 on org2")
	if v, _ := p.Value(ctx, "org2", "api"); v != 10 {
		t.Fatalf("org2 meter = %v, want 10", v)
	}
	// org2 is deleted: nothing is reachable to meter on, so nothing is allowed.
	if err := p.DeleteCustomer(ctx, "org2"); err != nil {
		t.Fatal(err)
	}
	allow(1, false, "no org to meter on")
	// A new org2 (pro) appears: found again.
	if _, err := p.CreateCustomer(ctx, "org2", "pro", limitr.WithCustomerType("org")); err != nil {
		t.Fatal(err)
	}
	allow(500, true, "the new org2, pro")
}
