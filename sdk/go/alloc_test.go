//go:build !race

// The race detector changes allocation counts, so these run only without it.

package limitr_test

import (
	"context"
	"testing"
	"time"

	limitr "github.com/limitr/limitr/sdk/go"
)

// wantNoAllocs fails when a warm call allocates: the hot path's budget is 0 allocations
// (DESIGN.md, Performance budgets), and a benchmark only reports a regression, this fails
// on one.
func wantNoAllocs(t *testing.T, what string, call func() (bool, error)) {
	t.Helper()
	// Warm: the first calls may create meters and fill caches.
	for range 3 {
		if ok, err := call(); !ok || err != nil {
			t.Fatalf("%s: warm-up call: %v %v", what, ok, err)
		}
	}
	var denied int
	var firstErr error
	allocs := testing.AllocsPerRun(1000, func() {
		ok, err := call()
		if !ok {
			denied++
		}
		if err != nil && firstErr == nil {
			firstErr = err
		}
	})
	if denied > 0 || firstErr != nil {
		t.Fatalf("%s: %d calls denied, error %v: the test does not measure an allowed call", what, denied, firstErr)
	}
	if allocs != 0 {
		t.Errorf("%s: %v allocations per warm call, want 0", what, allocs)
	}
}

// TestAllowAllocs: a warm Allow on a hard limit (BenchmarkAllowHard).
func TestAllowAllocs(t *testing.T) {
	p, err := limitr.New([]byte(benchPolicy), limitr.WithClock(benchClock()))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := p.CreateCustomer(ctx, "user_0", "pro"); err != nil {
		t.Fatal(err)
	}
	wantNoAllocs(t, "Allow, hard limit", func() (bool, error) { return p.Allow(ctx, "user_0", "ai_tokens", 4200) })
	wantNoAllocs(t, "Check, hard limit", func() (bool, error) { return p.Check(ctx, "user_0", "ai_tokens", 4200) })
}

// TestAllowSoftWithGrantAllocs: soft overage paid from a grant in another credit, through
// the exchange (BenchmarkAllowSoftWithGrant).
func TestAllowSoftWithGrantAllocs(t *testing.T) {
	p, err := limitr.New([]byte(econPolicy), limitr.WithClock(benchClock()))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := p.CreateCustomer(ctx, "user_0", "soft"); err != nil {
		t.Fatal(err)
	}
	if err := p.ApplyCustomerTopup(ctx, "user_0", "big"); err != nil {
		t.Fatal(err)
	}
	before, _ := p.RemainingCredit(ctx, "user_0", "abstract")
	wantNoAllocs(t, "Allow, soft limit paid by an exchanged grant", func() (bool, error) { return p.Allow(ctx, "user_0", "ai_tokens", 4200) })
	if after, _ := p.RemainingCredit(ctx, "user_0", "abstract"); after >= before {
		t.Fatalf("the grant did not pay: %v → %v: the test does not take the grant path", before, after)
	}
}

// TestAllowCappedAllocs: a user's call counted against its org's shared rune cap
// (BenchmarkAllowCapped).
func TestAllowCappedAllocs(t *testing.T) {
	p, err := limitr.New([]byte(econPolicy), limitr.WithClock(benchClock()))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := p.CreateCustomer(ctx, "org_0", "capped", limitr.WithCustomerType("org")); err != nil {
		t.Fatal(err)
	}
	if _, err := p.CreateCustomer(ctx, "user_0", "capped", limitr.WithRefs("org_0")); err != nil {
		t.Fatal(err)
	}
	if err := p.AddCustomerCap(ctx, "org_0", limitr.Cap{ID: "budget", Credit: "rune", Value: 1e15, Shared: true}); err != nil {
		t.Fatal(err)
	}
	wantNoAllocs(t, "Allow, capped through the org", func() (bool, error) { return p.Allow(ctx, "user_0", "ai_tokens", 4200) })
	if c, _ := p.CustomerCap(ctx, "org_0", "budget"); c.MeterValue <= 0 {
		t.Fatalf("the org cap did not move: %+v: the test does not take the cap path", c)
	}
}

// TestCloudAllowAllocsWithEventForwarding: event forwarding (on by default in cloud
// mode) leaves a warm allowed call allocation-free (BenchmarkCloudAllowEvents).
func TestCloudAllowAllocsWithEventForwarding(t *testing.T) {
	p := newEventsBenchPolicy(t, true)
	ctx := context.Background()
	wantNoAllocs(t, "cloud Allow, event forwarding on", func() (bool, error) { return p.Allow(ctx, "u", "api", 1) })
}

// TestCloudAllowCappedAllocsWithEventForwarding: a call counted against a shared cap
// takes the full path; with event forwarding on it still builds no event and
// allocates nothing while the cap is far from its threshold.
func TestCloudAllowCappedAllocsWithEventForwarding(t *testing.T) {
	local, err := limitr.New([]byte(econPolicy), limitr.WithFormat(limitr.FormatYAML))
	if err != nil {
		t.Fatal(err)
	}
	doc, err := local.Marshal(limitr.FormatJSON)
	if err != nil {
		t.Fatal(err)
	}
	f := newFakeCP(t, string(doc))
	p := connect(t, f, limitr.WithFlushInterval(time.Second))
	ctx := context.Background()
	// On the server (the fake's API knows only its own plans); hydrated here.
	f.addCustomer("org_0", "capped")
	f.mutate("org_0", "upsert", func(rec *fakeRecord, _ map[string]any) { rec.Type = "org" })
	f.addCustomer("user_0", "capped")
	f.mutate("user_0", "upsert", func(rec *fakeRecord, _ map[string]any) { rec.Refs = []string{"org_0"} })
	eventually(t, "the customers", func() bool {
		org, err1 := p.Customer(ctx, "org_0")
		user, err2 := p.Customer(ctx, "user_0")
		return err1 == nil && err2 == nil && org.Type == "org" && len(user.Refs) == 1
	})
	if err := p.AddCustomerCap(ctx, "org_0", limitr.Cap{ID: "budget", Credit: "rune", Value: 1e15, Shared: true}); err != nil {
		t.Fatal(err)
	}
	wantNoAllocs(t, "cloud Allow, capped through the org, event forwarding on", func() (bool, error) { return p.Allow(ctx, "user_0", "ai_tokens", 4200) })
	if c, _ := p.CustomerCap(ctx, "org_0", "budget"); c.MeterValue <= 0 {
		t.Fatalf("the org cap did not move: %+v: the test does not take the cap path", c)
	}
}

// TestCloudDenyAllocsWithEventForwarding: repeated denials while their meter-limit
// event waits to be sent are counted without building the event again.
func TestCloudDenyAllocsWithEventForwarding(t *testing.T) {
	f := newFakeCP(t, cloudPolicy("10"))
	p := connect(t, f, limitr.WithEventFlushInterval(time.Hour))
	ctx := context.Background()
	if _, err := p.CreateCustomer(ctx, "u", ""); err != nil {
		t.Fatal(err)
	}
	deny := func() {
		if ok, err := p.Allow(ctx, "u", "api", 11); ok || err != nil {
			t.Fatalf("Allow = %v, %v; want a denial", ok, err)
		}
	}
	deny() // the event, built once
	if n := testing.AllocsPerRun(1000, deny); n != 0 {
		t.Errorf("%v allocations per repeated denial, want 0", n)
	}
	if s := p.SyncStats(); s.EventsPending != 1 {
		t.Fatalf("stats %+v: the denials were not coalesced", s)
	}
}
