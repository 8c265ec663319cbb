package limitr_test

import (
	"encoding/json"
	"testing"
	"time"

	limitr "github.com/limitr/limitr/sdk/go"
)

// §7 create_customer with every option.
func TestCreateCustomerAllOptions(t *testing.T) {
	e := newEnv(t, basePolicy)
	e.customer("org", "pro", limitr.WithCustomerType("org"))
	anchor := time.Date(2026, 1, 3, 0, 0, 0, 0, time.UTC)
	c := e.customer("u", "free",
		limitr.WithCustomerType("member"),
		limitr.WithLabel("Alice"),
		limitr.WithRefs("org"),
		limitr.WithAltIDs("alt1", "alt2"),
		limitr.WithMetadata(map[string]any{"tier": "gold"}),
		limitr.WithTimezone("America/New_York"),
		limitr.WithBillingAnchor(anchor),
	)
	checks := []struct {
		what      string
		got, want any
	}{
		{"id", c.ID, "u"},
		{"plan", c.Plan, "free"},
		{"type", c.Type, "member"},
		{"label", c.Label, "Alice"},
		{"refs", len(c.Refs) == 1 && c.Refs[0] == "org", true},
		{"alt ids", len(c.AltIDs) == 2 && c.AltIDs[0] == "alt1" && c.AltIDs[1] == "alt2", true},
		{"metadata", c.Metadata["tier"], "gold"},
		{"timezone", c.Timezone, "America/New_York"},
		{"anchor", c.BillingAnchor.Equal(anchor), true},
		// §7: a new customer gets a meter, started now, for every limited entitlement it holds.
		{"api meter started", c.Meters["api"].Started.Equal(t0), true},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %v, want %v", ch.what, ch.got, ch.want)
		}
	}
	// Defaults (§2.8): type user, label User.
	d := e.customer("d", "free")
	if d.Type != "user" || d.Label != "User" {
		t.Errorf("defaults: type %q label %q, want user/User", d.Type, d.Label)
	}
	// §7: unknown plan.
	_, err := e.p.CreateCustomer(e.ctx, "x", "platinum")
	wantErr(t, "CreateCustomer unknown plan", err, limitr.ErrUnknownPlan)
	// Unknown time zone is rejected.
	if _, err := e.p.CreateCustomer(e.ctx, "y", "free", limitr.WithTimezone("Mars/Olympus")); err == nil {
		t.Error("unknown time zone accepted")
	}
}

// §7 + DESIGN: CreateCustomer on an existing id updates it; refs are kept unless WithRefs is passed; meters untouched.
func TestCreateCustomerUpdates(t *testing.T) {
	e := newEnv(t, basePolicy)
	e.customer("org", "pro", limitr.WithCustomerType("org"))
	e.customer("org2", "free", limitr.WithCustomerType("org"))
	e.customer("u", "free", limitr.WithRefs("org"), limitr.WithLabel("A"))
	e.allow("u", "api", 7)
	e.rec.reset()
	c := e.customer("u", "free", limitr.WithLabel("B"))
	if len(c.Refs) != 1 || c.Refs[0] != "org" {
		t.Errorf("refs after update without WithRefs = %v, want [org]", c.Refs)
	}
	if c.Label != "B" {
		t.Errorf("label = %q, want B", c.Label)
	}
	if v := e.value("u", "api"); v != 7 {
		t.Errorf("meter after update = %v, want 7 (untouched)", v)
	}
	if got := e.rec.types(); !eqStrings(got, []string{limitr.EventCustomerSet}) {
		t.Errorf("update events = %v, want [customer-set]", got)
	}
	c = e.customer("u", "free", limitr.WithRefs("org2"))
	if len(c.Refs) != 1 || c.Refs[0] != "org2" {
		t.Errorf("refs after WithRefs(org2) = %v", c.Refs)
	}
	c = e.customer("u", "free", limitr.WithRefs())
	if len(c.Refs) != 0 {
		t.Errorf("refs after WithRefs() = %v, want none", c.Refs)
	}
	// §7: an update also changes the plan; meters are untouched.
	c = e.customer("u", "pro")
	if c.Plan != "pro" {
		t.Errorf("plan after update = %q, want pro", c.Plan)
	}
	if l, _ := e.p.Limit(e.ctx, "u", "api"); l != 100 {
		t.Errorf("api limit after update to pro = %v, want 100", l)
	}
	if v := e.value("u", "api"); v != 7 {
		t.Errorf("meter after plan update = %v, want 7", v)
	}
	// Updating through an alt id updates the same customer.
	e.customer("v", "free", limitr.WithAltIDs("v-alt"))
	c = e.customer("v-alt", "free", limitr.WithLabel("via alt"))
	if c.ID != "v" || c.Label != "via alt" {
		t.Errorf("update via alt id: %+v", c)
	}
}

// §7 delete_customer: customer-removed (before removal, with the record), then unknown.
func TestDeleteCustomer(t *testing.T) {
	e := newEnv(t, basePolicy)
	e.customer("u", "free", limitr.WithAltIDs("u-alt"))
	e.allow("u", "api", 3)
	e.rec.reset()
	if err := e.p.DeleteCustomer(e.ctx, "u"); err != nil {
		t.Fatal(err)
	}
	ev, ok := e.rec.last(limitr.EventCustomerRemoved)
	if !ok {
		t.Fatalf("no customer-removed event; got %v", e.rec.types())
	}
	if ev.Customer == nil || ev.Customer.ID != "u" || ev.Customer.Meters["api"].Value != 3 {
		t.Errorf("customer-removed carries %+v, want the record with its meter", ev.Customer)
	}
	m := payload(t, ev)
	if m["id"] != "u" {
		t.Errorf("customer-removed JSON id = %v", m["id"])
	}
	for _, id := range []string{"u", "u-alt"} {
		_, err := e.p.Allow(e.ctx, id, "api", 1)
		wantErr(t, "Allow after delete ("+id+")", err, limitr.ErrUnknownCustomer)
		_, err = e.p.Value(e.ctx, id, "api")
		wantErr(t, "Value after delete ("+id+")", err, limitr.ErrUnknownCustomer)
		_, err = e.p.Customer(e.ctx, id)
		wantErr(t, "Customer after delete ("+id+")", err, limitr.ErrUnknownCustomer)
	}
	wantErr(t, "DeleteCustomer twice", e.p.DeleteCustomer(e.ctx, "u"), limitr.ErrUnknownCustomer)
	// The id can be used again, fresh.
	e.customer("u", "free")
	if v := e.value("u", "api"); v != 0 {
		t.Errorf("recreated customer has value %v", v)
	}
}

// §7 set_customer_plan: keep meters (usage carries over) or overwrite (reset).
func TestSetCustomerPlan(t *testing.T) {
	cases := []struct {
		name      string
		overwrite bool
		wantValue float64
	}{
		{"keep meters", false, 7},
		{"overwrite meters", true, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, basePolicy)
			e.customer("u", "free")
			e.allow("u", "api", 7)
			e.allow("u", "soft", 12)
			e.clock.Advance(time.Hour)
			e.rec.reset()
			if err := e.p.SetCustomerPlan(e.ctx, "u", "pro", tc.overwrite); err != nil {
				t.Fatal(err)
			}
			if v := e.value("u", "api"); v != tc.wantValue {
				t.Errorf("api after plan change = %v, want %v", v, tc.wantValue)
			}
			if l, _ := e.p.Limit(e.ctx, "u", "api"); l != 100 {
				t.Errorf("api limit after plan change = %v, want 100", l)
			}
			if ok := e.allow("u", "pro_only", 1); !ok {
				t.Error("pro_only not available after moving to pro")
			}
			got := e.rec.types()
			if !eqStrings(got[:2], []string{limitr.EventCustomerSet, limitr.EventCustomerPlanChanged}) {
				t.Errorf("events = %v, want customer-set then customer-plan-changed", got)
			}
			ev, _ := e.rec.last(limitr.EventCustomerPlanChanged)
			m := payload(t, ev)
			if m["previous_plan"] != "free" || m["new_plan"] != "pro" {
				t.Errorf("customer-plan-changed payload previous_plan=%v new_plan=%v", m["previous_plan"], m["new_plan"])
			}
			cust, ok := m["customer"].(map[string]any)
			if !ok || cust["plan"] != "pro" {
				t.Errorf("customer-plan-changed customer = %v", m["customer"])
			}
			if ev.PreviousPlan != "free" || ev.NewPlan != "pro" {
				t.Errorf("event fields PreviousPlan=%q NewPlan=%q", ev.PreviousPlan, ev.NewPlan)
			}
		})
	}
}

// §7 set_customer_plan edge cases: unknown plan, same plan (DESIGN: no-op nil), unknown customer.
func TestSetCustomerPlanErrors(t *testing.T) {
	e := newEnv(t, basePolicy)
	e.customer("u", "free")
	e.allow("u", "api", 4)
	e.rec.reset()
	wantErr(t, "unknown plan", e.p.SetCustomerPlan(e.ctx, "u", "platinum", false), limitr.ErrUnknownPlan)
	wantErr(t, "unknown customer", e.p.SetCustomerPlan(e.ctx, "nobody", "pro", false), limitr.ErrUnknownCustomer)
	if err := e.p.SetCustomerPlan(e.ctx, "u", "free", true); err != nil {
		t.Errorf("same plan: %v, want nil", err)
	}
	if v := e.value("u", "api"); v != 4 {
		t.Errorf("same-plan change touched the meter: %v", v)
	}
	if evs := e.rec.types(); len(evs) != 0 {
		t.Errorf("no-op plan changes emitted %v", evs)
	}
}

// §4.4 / §7 overrides, with DESIGN difference 3 (only named fields change).
func TestOverrides(t *testing.T) {
	t.Run("value and expiry", func(t *testing.T) {
		e := newEnv(t, basePolicy)
		e.customer("u", "free")
		e.allow("u", "api", 9)
		err := e.p.CreateCustomerOverride(e.ctx, "u", "api", limitr.Override{Value: "20", ExpiresAt: t0.Add(2 * time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		if l, _ := e.p.Limit(e.ctx, "u", "api"); l != 20 {
			t.Errorf("Limit with override = %v, want 20", l)
		}
		if !e.allow("u", "api", 11) { // 20: usage carried over, new limit applies (§7)
			t.Error("Allow(11) at 9/20 denied")
		}
		c, _ := e.p.Customer(e.ctx, "u")
		if _, ok := c.Overrides["api"]; !ok {
			t.Error("override missing from the snapshot")
		}
		// §4.4: at expiry (now >= expires) the plan limit is used again.
		e.clock.Advance(2 * time.Hour)
		if l, _ := e.p.Limit(e.ctx, "u", "api"); l != 10 {
			t.Errorf("Limit after expiry = %v, want 10", l)
		}
		if e.allow("u", "api", 1) {
			t.Error("Allow after expiry at 20/10 allowed")
		}
	})
	t.Run("remove", func(t *testing.T) {
		e := newEnv(t, basePolicy)
		e.customer("u", "free")
		if err := e.p.CreateCustomerOverride(e.ctx, "u", "api", limitr.Override{Value: "1"}); err != nil {
			t.Fatal(err)
		}
		if e.allow("u", "api", 2) {
			t.Error("override of 1 allowed 2")
		}
		if err := e.p.RemoveCustomerOverride(e.ctx, "u", "api"); err != nil {
			t.Fatal(err)
		}
		if !e.allow("u", "api", 2) {
			t.Error("plan limit not back after removing the override")
		}
	})
	t.Run("gate needs a credit", func(t *testing.T) {
		e := newEnv(t, basePolicy)
		e.customer("u", "free")
		err := e.p.CreateCustomerOverride(e.ctx, "u", "gate", limitr.Override{Value: "2"})
		if err == nil {
			t.Fatal("override on a gate without credit accepted (§7: needs an explicit credit)")
		}
		if err := e.p.CreateCustomerOverride(e.ctx, "u", "gate", limitr.Override{Value: "2", Credit: "req"}); err != nil {
			t.Fatalf("override on a gate with credit: %v", err)
		}
		if l, err := e.p.Limit(e.ctx, "u", "gate"); err != nil || l != 2 {
			t.Errorf("gate Limit with override = (%v, %v), want 2", l, err)
		}
		steps := []struct {
			amt  float64
			want bool
		}{{2, true}, {1, false}}
		for _, s := range steps {
			if got := e.allow("u", "gate", s.amt); got != s.want {
				t.Errorf("gate Allow(%v) = %v, want %v", s.amt, got, s.want)
			}
		}
	})
	t.Run("value only keeps hard_trailing", func(t *testing.T) {
		e := newEnv(t, basePolicy)
		e.customer("u", "free")
		if err := e.p.CreateCustomerOverride(e.ctx, "u", "trail", limitr.Override{Value: "8"}); err != nil {
			t.Fatal(err)
		}
		steps := []struct {
			amt  float64
			want bool
		}{{7, true}, {5, true}, {1, false}} // 7 < 8 so the crossing call passes (hard_trailing from the plan)
		for i, s := range steps {
			if got := e.allow("u", "trail", s.amt); got != s.want {
				t.Errorf("step %d: Allow(%v) = %v, want %v", i, s.amt, got, s.want)
			}
		}
	})
	t.Run("value only keeps minimum", func(t *testing.T) {
		e := newEnv(t, basePolicy)
		e.customer("u", "free")
		if err := e.p.CreateCustomerOverride(e.ctx, "u", "floor", limitr.Override{Value: "20"}); err != nil {
			t.Fatal(err)
		}
		e.allow("u", "floor", 15)
		if !e.allow("u", "floor", -30) {
			t.Error("decrement denied")
		}
		if v := e.value("u", "floor"); v != 0 {
			t.Errorf("value %v, want 0 (minimum inherited from the plan)", v)
		}
	})
	t.Run("mode only keeps value", func(t *testing.T) {
		e := newEnv(t, basePolicy)
		e.customer("u", "free")
		if err := e.p.CreateCustomerOverride(e.ctx, "u", "api", limitr.Override{Mode: "soft"}); err != nil {
			t.Fatal(err)
		}
		if l, _ := e.p.Limit(e.ctx, "u", "api"); l != 10 {
			t.Errorf("Limit = %v, want the plan's 10", l)
		}
		if !e.allow("u", "api", 15) {
			t.Error("soft override denied")
		}
	})
	t.Run("errors", func(t *testing.T) {
		e := newEnv(t, basePolicy)
		e.customer("u", "free")
		wantErr(t, "unknown customer", e.p.CreateCustomerOverride(e.ctx, "nobody", "api", limitr.Override{Value: "1"}), limitr.ErrUnknownCustomer)
		wantErr(t, "not on plan", e.p.CreateCustomerOverride(e.ctx, "u", "pro_only", limitr.Override{Value: "1", Credit: "req"}), limitr.ErrNotEntitled)
		wantErr(t, "unknown entitlement", e.p.CreateCustomerOverride(e.ctx, "u", "nope", limitr.Override{Value: "1"}), limitr.ErrUnknownEntitlement)
		wantErr(t, "bad credit", e.p.CreateCustomerOverride(e.ctx, "u", "api", limitr.Override{Credit: "nope"}), limitr.ErrInvalidOverride)
		wantErr(t, "bad mode", e.p.CreateCustomerOverride(e.ctx, "u", "api", limitr.Override{Mode: "sloppy"}), limitr.ErrInvalidOverride)
		wantErr(t, "bad value", e.p.CreateCustomerOverride(e.ctx, "u", "api", limitr.Override{Value: "3gb"}), limitr.ErrInvalidOverride)
		wantErr(t, "past expiry", e.p.CreateCustomerOverride(e.ctx, "u", "api", limitr.Override{Value: "3", ExpiresAt: t0.Add(-time.Hour)}), limitr.ErrInvalidOverride)
	})
}

// §2.8: the Customer snapshot serialises with Limitr's field names.
func TestCustomerJSONFields(t *testing.T) {
	e := newEnv(t, basePolicy)
	e.customer("u", "free")
	e.allow("u", "soft", 2)
	b, _ := json.Marshal(mustCustomer(t, e, "u"))
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"id", "plan", "alt_ids", "refs", "type", "label", "meters", "overrides", "grants", "metadata"} {
		if _, ok := m[k]; !ok {
			t.Errorf("customer JSON lacks %q: %s", k, b)
		}
	}
	meter, _ := m["meters"].(map[string]any)["soft"].(map[string]any)
	for _, k := range []string{"credit", "started", "value", "overhead"} {
		if _, ok := meter[k]; !ok {
			t.Errorf("meter JSON lacks %q: %v", k, meter)
		}
	}
	if meter["started"] != float64(t0.UnixMilli()) {
		t.Errorf("meter started = %v, want %d (unix ms)", meter["started"], t0.UnixMilli())
	}
}

func mustCustomer(t *testing.T, e *env, id string) *limitr.Customer {
	t.Helper()
	c, err := e.p.Customer(e.ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// §7 set_customer_plan "Requires a real plan name different from the current resolved plan":
// moving a customer to the plan it already resolves to (through refs) is a no-op (DESIGN: nil).
func TestSetCustomerPlanSameResolvedPlan(t *testing.T) {
	e := newEnv(t, basePolicy)
	e.customer("org", "pro", limitr.WithCustomerType("org"))
	e.customer("u", "", limitr.WithRefs("org"))
	e.allow("u", "api", 40)
	e.rec.reset()
	if err := e.p.SetCustomerPlan(e.ctx, "u", "pro", true); err != nil {
		t.Fatalf("SetCustomerPlan to the resolved plan: %v", err)
	}
	if got := e.rec.types(); len(got) != 0 {
		t.Errorf("no-op plan change emitted %v", got)
	}
	if v := e.value("u", "api"); v != 40 {
		t.Errorf("no-op plan change with overwrite reset the meter: %v", v)
	}
}
