package limitr_test

import (
	"testing"

	limitr "github.com/limitr/limitr/sdk/go"
)

// §4.2 plan_for: own plan, else first ref with a plan (depth-first), else the default plan.
func TestPlanResolution(t *testing.T) {
	e := newEnv(t, basePolicy)
	e.customer("org", "pro", limitr.WithCustomerType("org"))
	e.customer("team", "", limitr.WithCustomerType("team"), limitr.WithRefs("org"))
	cases := []struct {
		name, id, plan string
		opts           []limitr.CustomerOption
		wantStored     string
		wantLimit      float64 // api limit: free 10, pro 100
	}{
		{"own plan", "a", "pro", nil, "pro", 100},
		{"through ref", "b", "", []limitr.CustomerOption{limitr.WithRefs("org")}, "", 100},
		{"through two refs", "c", "", []limitr.CustomerOption{limitr.WithRefs("team")}, "", 100},
		{"own plan beats ref", "d", "free", []limitr.CustomerOption{limitr.WithRefs("org")}, "free", 10},
		{"default plan", "e", "", nil, "free", 10},
		{"ref without plan falls to default", "f", "", []limitr.CustomerOption{limitr.WithRefs("missing")}, "free", 10},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := e.customer(tc.id, tc.plan, tc.opts...)
			if c.Plan != tc.wantStored {
				t.Errorf("stored plan %q, want %q (§7: '' = inherit through refs)", c.Plan, tc.wantStored)
			}
			l, err := e.p.Limit(e.ctx, tc.id, "api")
			if err != nil || l != tc.wantLimit {
				t.Errorf("Limit(api) = (%v, %v), want %v", l, err, tc.wantLimit)
			}
		})
	}
	// A pro-only gate is reachable through the ref's plan.
	if ok, err := e.p.Allow(e.ctx, "b", "pro_only", 1); !ok || err != nil {
		t.Errorf("pro_only through ref: (%v, %v), want true", ok, err)
	}
}

// §4.3: a scoped entitlement is metered on the customer of that type up the refs.
func TestScopedEntitlement(t *testing.T) {
	e := newEnv(t, basePolicy)
	e.customer("org", "free", limitr.WithCustomerType("org"))
	e.customer("alice", "", limitr.WithRefs("org"))
	e.customer("bob", "", limitr.WithRefs("org"))
	e.customer("loner", "free") // no org up its refs
	steps := []struct {
		who     string
		amt     float64
		want    bool
		wantOrg float64
	}{
		{"alice", 2, true, 2},
		{"bob", 1, true, 3},
		{"bob", 1, false, 3}, // limit 3 shared by the org
		{"alice", -1, true, 2},
		{"alice", 1, true, 3},
		{"org", 1, false, 3}, // the org itself uses the same meter
	}
	for i, s := range steps {
		if got := e.allow(s.who, "seats", s.amt); got != s.want {
			t.Errorf("step %d: %s Allow(%v) = %v, want %v", i, s.who, s.amt, got, s.want)
		}
		for _, who := range []string{"alice", "bob", "org"} {
			if v := e.value(who, "seats"); v != s.wantOrg {
				t.Errorf("step %d: Value(%s, seats) = %v, want the org's %v", i, who, v, s.wantOrg)
			}
		}
	}
	c, _ := e.p.Customer(e.ctx, "alice")
	if _, ok := c.Meters["seats"]; ok {
		t.Errorf("alice has her own seats meter; it belongs to the org")
	}
	// §4.3 step 3 / §5.3: no customer of the scope's type up the refs → not entitled, false.
	ok, err := e.p.Allow(e.ctx, "loner", "seats", 1)
	if ok || err != nil {
		t.Errorf("scope without org: Allow = (%v, %v), want (false, nil)", ok, err)
	}
	if ok, err := e.p.Check(e.ctx, "loner", "seats", 1); ok || err != nil {
		t.Errorf("scope without org: Check = (%v, %v), want (false, nil)", ok, err)
	}
	_, err = e.p.Value(e.ctx, "loner", "seats")
	wantErr(t, "Value scope without org", err, limitr.ErrNotEntitled)
}

// §4.1: alt ids resolve for calls and lookups.
func TestAltIDs(t *testing.T) {
	e := newEnv(t, basePolicy)
	e.customer("u", "free", limitr.WithAltIDs("stripe_cus_1", "email@x"))
	if !e.allow("stripe_cus_1", "api", 4) {
		t.Fatal("Allow via alt id denied")
	}
	if !e.allow("email@x", "api", 6) {
		t.Fatal("Allow via second alt id denied")
	}
	if e.allow("u", "api", 1) {
		t.Error("the meter is shared: 10 used, Allow(1) should be denied")
	}
	for _, id := range []string{"u", "stripe_cus_1", "email@x"} {
		if v := e.value(id, "api"); v != 10 {
			t.Errorf("Value(%s) = %v, want 10", id, v)
		}
		c, err := e.p.Customer(e.ctx, id)
		if err != nil || c.ID != "u" {
			t.Errorf("Customer(%s) = %+v, %v; want id u", id, c, err)
		}
	}
	// Another customer cannot take an alt id in use.
	_, err := e.p.CreateCustomer(e.ctx, "v", "free", limitr.WithAltIDs("stripe_cus_1"))
	if err == nil {
		t.Error("alt id taken twice without error")
	}
}

// §4.3: for a scoped entitlement the limit comes from the CALLER's plan, the meter and
// overrides from the scoped owner; meter events name the owner as customer and its plan (§11.2).
func TestScopedLimitFromCallerPlan(t *testing.T) {
	e := newEnv(t, basePolicy)
	e.customer("org", "free", limitr.WithCustomerType("org")) // free: seats 3
	e.customer("vip", "pro", limitr.WithRefs("org"))          // pro: seats 5
	e.customer("std", "free", limitr.WithRefs("org"))
	if l, err := e.p.Limit(e.ctx, "vip", "seats"); err != nil || l != 5 {
		t.Errorf("vip Limit(seats) = (%v, %v), want 5 (caller's plan)", l, err)
	}
	if l, err := e.p.Limit(e.ctx, "std", "seats"); err != nil || l != 3 {
		t.Errorf("std Limit(seats) = (%v, %v), want 3", l, err)
	}
	if !e.allow("vip", "seats", 4) {
		t.Error("vip Allow(4) denied under its plan's limit of 5")
	}
	if e.allow("std", "seats", 1) {
		t.Error("std Allow(1) allowed with the org meter at 4 of std's 3")
	}
	ev, ok := e.rec.last(limitr.EventMeterChanged)
	if !ok {
		t.Fatal("no meter-changed")
	}
	m := payload(t, ev)
	if cust, _ := m["customer"].(map[string]any); cust["id"] != "org" {
		t.Errorf("meter-changed customer = %v, want the meter owner org", cust["id"])
	}
	if m["plan"] != "free" {
		t.Errorf("meter-changed plan = %v, want the owner's plan \"free\" (§11.2: plan = owner's plan name)", m["plan"])
	}
	// §4.4: overrides on a scoped entitlement live on the owner and apply to every member.
	if err := e.p.CreateCustomerOverride(e.ctx, "std", "seats", limitr.Override{Value: "10"}); err != nil {
		t.Fatal(err)
	}
	if c := mustCustomer(t, e, "org"); c.Overrides["seats"].Value != "10" {
		t.Errorf("override not stored on the org: %+v", c.Overrides)
	}
	if !e.allow("std", "seats", 1) {
		t.Error("std denied after the org override of 10")
	}
}
