package limitr_test

import (
	"errors"
	"testing"
	"time"

	limitr "github.com/limitr/limitr/sdk/go"
)

// capsPolicy: 1 tok = 0.01 rune (its price; no pair), so a 1-rune cap is 100 tok.
const capsPolicy = `{"policy": {
  "credits": {
    "tok":   {"price": {"amount": 0.01}, "overhead_cost": 0.005},
    "other": {"price": {"amount": 1}}
  },
  "plans": {
    "p": {"default": true,
      "entitlements": {
        "api":  {"limit": {"credit": "tok", "value": 100000}},
        "soft": {"limit": {"credit": "tok", "mode": "soft", "value": 100}},
        "ng":   {"limit": {"credit": "tok", "mode": "soft", "value": 100, "grants_apply": false}},
        "oth":  {"limit": {"credit": "other", "mode": "soft", "value": 100000}}
      },
      "topups": {"t50": {"credit": "tok", "value": 50}}}
  }
}}`

func capsEnv(t *testing.T) *env {
	e := newEnv(t, capsPolicy)
	return e
}

// §12, §5 step 11/17, §11.2 cap-limit: a per-customer cap denies with cap-limit only and
// changes nothing; cap-threshold-crossed fires once when the ceiling is reached.
func TestCustomerCapDenies(t *testing.T) {
	e := capsEnv(t)
	e.customer("u", "")
	e.addCap("u", limitr.Cap{ID: "budget", Credit: "rune", Value: 1})
	if !e.allow("u", "api", 60) {
		t.Fatal("60 tok (0.6 rune) denied under a 1-rune cap")
	}
	if got := e.capOf("u", "budget").MeterValue; got != 0.6 {
		t.Errorf("cap meter = %v, want 0.6", got)
	}
	before := e.snapshotJSON("u")
	e.rec.reset()
	if e.check("u", "api", 50) {
		t.Error("Check allowed 0.5 more rune past the cap")
	}
	if e.allow("u", "api", 50) {
		t.Fatal("cap did not deny")
	}
	if got := e.rec.types(); !eqStrings(got, []string{limitr.EventCapLimit}) {
		t.Errorf("events = %v, want cap-limit only", got)
	}
	if after := e.snapshotJSON("u"); after != before {
		t.Errorf("cap-denied call changed state:\n%s\n%s", before, after)
	}
	ev, _ := e.rec.last(limitr.EventCapLimit)
	m := payload(t, ev)
	cm, _ := m["customer"].(map[string]any)
	cp, _ := m["cap"].(map[string]any)
	if m["caller"] != "u" || cm["id"] != "u" || cp["id"] != "budget" || m["entitlement"] != "api" {
		t.Errorf("cap-limit payload = %v", m)
	}
	if got, _ := pf(m, "meter", "diff"); got != 50 {
		t.Errorf("cap-limit meter.diff = %v, want 50", got)
	}
	e.rec.reset()
	if !e.allow("u", "api", 40) {
		t.Fatal("exactly reaching the ceiling was denied (inclusive)")
	}
	if n := len(e.rec.ofType(limitr.EventCapThresholdCrossed)); n != 1 {
		t.Errorf("cap-threshold-crossed × %d, want 1", n)
	}
	ev, _ = e.rec.last(limitr.EventCapThresholdCrossed)
	if m := payload(t, ev); m["caller"] != "u" || m["entitlement"] != "api" {
		t.Errorf("cap-threshold-crossed payload = %v", m)
	}
	if e.allow("u", "api", 1) {
		t.Error("call past a full cap allowed")
	}
	// A decrement is never gated by a cap and does not move a plain cap.
	if !e.allow("u", "api", -10) {
		t.Error("decrement denied")
	}
	if got := e.capOf("u", "budget").MeterValue; got != 1 {
		t.Errorf("cap meter = %v after a decrement, want 1 (no follow_decrements)", got)
	}
}

// §12 variants, each starting from a fresh customer "u" with one cap.
func TestCapVariants(t *testing.T) {
	type call struct {
		ent    string
		amt    float64
		want   bool
		capVal float64 // cap meter after
	}
	cases := []struct {
		name   string
		cap    limitr.Cap
		topups []string
		calls  []call
	}{
		{"named-credit cap counts only its credit", limitr.Cap{ID: "c", Credit: "tok", Value: 100}, nil, []call{
			{"api", 100, true, 100}, {"oth", 5, true, 100}, {"api", 1, false, 100}}},
		{"scope limits the cap to some entitlements", limitr.Cap{ID: "c", Credit: "rune", Value: 1, Scope: []string{"soft"}}, nil, []call{
			{"api", 500, true, 0}, {"soft", 100, true, 1}, {"soft", 1, false, 1}, {"api", 1, true, 1}}},
		{"exchangeable cap converts other credits", limitr.Cap{ID: "c", Credit: "rune", Value: 2}, nil, []call{
			{"oth", 1, true, 1}, {"api", 100, true, 2}, {"oth", 0.5, false, 2}}},
		{"overage_only counts only units past the limit", limitr.Cap{ID: "c", Credit: "rune", Value: 0.1, OverageOnly: true}, nil, []call{
			{"soft", 100, true, 0}, {"soft", 10, true, 0.1}, {"soft", 1, false, 0.1}}},
		{"overage_only + ignore_grants counts the uncovered overage", limitr.Cap{ID: "c", Credit: "rune", Value: 0.2, OverageOnly: true, IgnoreGrants: true}, []string{"t50"}, []call{
			{"soft", 100, true, 0}, {"soft", 60, true, 0.1}, {"soft", 10, true, 0.2}, {"soft", 1, false, 0.2}}},
		{"ignore_grants counts included units, not grant-paid ones", limitr.Cap{ID: "c", Credit: "rune", Value: 1, IgnoreGrants: true}, []string{"t50"}, []call{
			{"soft", 160, false, 0}, {"soft", 150, true, 1}}}, // 160: 60 over, 50 covered ⇒ 110 counted
		// Ours: with grants_apply false nothing is covered, so the cap counts everything.
		{"ignore_grants with grants_apply false counts all", limitr.Cap{ID: "c", Credit: "rune", Value: 1, IgnoreGrants: true}, []string{"t50"}, []call{
			{"ng", 101, false, 0}, {"ng", 100, true, 1}}},
		{"observe_only never denies and crosses", limitr.Cap{ID: "c", Credit: "rune", Value: 0.1, ObserveOnly: true}, nil, []call{
			{"api", 500, true, 5}, {"api", 500, true, 10}}},
		{"overhead_cost counts the call's overhead", limitr.Cap{ID: "c", Credit: "rune", Value: 1, OverheadCost: true}, nil, []call{
			{"api", 100, true, 0.5}, {"api", 100, true, 1}, {"api", 1, false, 1}}},
		{"follow_decrements gives back", limitr.Cap{ID: "c", Credit: "rune", Value: 10, FollowDecrements: true}, nil, []call{
			{"api", 100, true, 1}, {"api", -50, true, 0.5}}},
		{"hard_trailing cap: one call may cross", limitr.Cap{ID: "c", Credit: "rune", Value: 1, HardTrailing: true}, nil, []call{
			{"api", 80, true, 0.8}, {"api", 50, true, 1.3}, {"api", 1, false, 1.3}, {"api", -1, true, 1.3}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := capsEnv(t)
			e.customer("u", "")
			for _, tp := range tc.topups {
				e.topup("u", tp)
			}
			e.addCap("u", tc.cap)
			for i, c := range tc.calls {
				if got := e.check("u", c.ent, c.amt); got != c.want {
					t.Errorf("call %d: Check(%s, %v) = %v, want %v", i, c.ent, c.amt, got, c.want)
				}
				if got := e.allow("u", c.ent, c.amt); got != c.want {
					t.Fatalf("call %d: Allow(%s, %v) = %v, want %v (cap meter %v)", i, c.ent, c.amt, got, c.want, e.capOf("u", "c").MeterValue)
				}
				if got := e.capOf("u", "c").MeterValue; !closeTo(got, c.capVal, 1e-12) {
					t.Fatalf("call %d: cap meter = %v, want %v", i, got, c.capVal)
				}
			}
		})
	}
}

// §12: observe-only caps report their crossing once per crossing.
func TestCapThresholdOncePerCrossing(t *testing.T) {
	e := capsEnv(t)
	e.customer("u", "")
	e.addCap("u", limitr.Cap{ID: "w", Credit: "rune", Value: 1, ObserveOnly: true})
	crossings := func() int { return len(e.rec.ofType(limitr.EventCapThresholdCrossed)) }
	e.allow("u", "api", 99)
	if crossings() != 0 {
		t.Fatal("crossed early")
	}
	e.allow("u", "api", 1)
	e.allow("u", "api", 50)
	e.allow("u", "api", 50)
	if n := crossings(); n != 1 {
		t.Errorf("crossings = %d, want 1", n)
	}
	e.rec.reset()
	if err := e.p.ResetCustomerCap(e.ctx, "u", "w"); err != nil {
		t.Fatal(err)
	}
	if got := e.rec.types(); !eqStrings(got, []string{limitr.EventCustomerCapReset}) {
		t.Errorf("events = %v, want customer-cap-reset", got)
	}
	if got := e.capOf("u", "w").MeterValue; got != 0 {
		t.Errorf("after reset cap meter = %v", got)
	}
	e.allow("u", "api", 100)
	if n := crossings(); n != 1 {
		t.Errorf("crossings after reset = %d, want 1 again", n)
	}
}

// §12 cap resets (reset_inc with the clock advanced), expiry, admin errors.
func TestCapPeriodsAndAdmin(t *testing.T) {
	e := capsEnv(t)
	e.customer("u", "")
	e.addCap("u", limitr.Cap{ID: "daily", Credit: "rune", Value: 1, Resets: true, ResetInc: "1day"})
	e.allow("u", "api", 100)
	if e.allow("u", "api", 1) {
		t.Fatal("full daily cap allowed")
	}
	e.clock.Advance(24 * time.Hour)
	if e.allow("u", "api", 1) {
		t.Fatal("the boundary instant belongs to the old period")
	}
	e.clock.Advance(time.Second)
	if got := e.capOf("u", "daily").MeterValue; got != 0 {
		t.Errorf("cap meter in the new period = %v, want 0", got)
	}
	if !e.allow("u", "api", 1) {
		t.Fatal("cap did not reset after a day")
	}
	if got := e.capOf("u", "daily").MeterValue; got != 0.01 {
		t.Errorf("cap meter = %v, want 0.01", got)
	}

	e.customer("x", "")
	e.addCap("x", limitr.Cap{ID: "tmp", Credit: "rune", Value: 0, ExpiresAt: e.clock.Now().Add(time.Hour)})
	if e.allow("x", "api", 1) {
		t.Fatal("zero cap allowed a call")
	}
	e.clock.Advance(time.Hour + time.Second)
	if !e.allow("x", "api", 1) {
		t.Fatal("expired cap still denies")
	}
	if _, ok := e.cust("x").Caps["tmp"]; ok {
		t.Error("expired cap still listed")
	}

	// Admin errors (§12 add_customer_cap).
	if err := e.p.AddCustomerCap(e.ctx, "u", limitr.Cap{ID: "daily", Credit: "rune", Value: 1}); !errors.Is(err, limitr.ErrCapExists) {
		t.Errorf("duplicate id: err = %v, want ErrCapExists", err)
	}
	if err := e.p.AddCustomerCap(e.ctx, "u", limitr.Cap{ID: "b", Credit: "rune", Value: 1, ResetInc: "1day", ResetSch: "monthly:1"}); !errors.Is(err, limitr.ErrInvalidCap) {
		t.Errorf("both reset kinds: err = %v, want ErrInvalidCap", err)
	}
	if err := e.p.AddCustomerCap(e.ctx, "u", limitr.Cap{ID: "n", Credit: "nope", Value: 1}); !errors.Is(err, limitr.ErrInvalidCap) {
		t.Errorf("unknown credit: err = %v, want ErrInvalidCap", err)
	}
	e.rec.reset()
	if err := e.p.RemoveCustomerCap(e.ctx, "u", "daily"); err != nil {
		t.Fatal(err)
	}
	if got := e.rec.types(); !eqStrings(got, []string{limitr.EventCustomerCapRemoved}) {
		t.Errorf("events = %v", got)
	}
	if _, err := e.p.CustomerCap(e.ctx, "u", "daily"); !errors.Is(err, limitr.ErrUnknownCap) {
		t.Errorf("removed cap: err = %v, want ErrUnknownCap", err)
	}
}

// §12 shared caps: an org cap binds its users (shared_with filters by type); unshared
// caps do not; a user's call that moves the org's cap sends customer-set for the org.
func TestSharedOrgCap(t *testing.T) {
	e := capsEnv(t)
	e.customer("org", "", withType("org"))
	e.customer("u1", "", withRefs("org"))
	e.customer("u2", "", withRefs("org"))
	e.customer("adm", "", withRefs("org"), withType("admin"))
	e.addCap("org", limitr.Cap{ID: "budget", Credit: "rune", Value: 1, Shared: true})
	e.addCap("org", limitr.Cap{ID: "private", Credit: "rune", Value: 0})
	e.addCap("org", limitr.Cap{ID: "admins", Credit: "rune", Value: 0.5, Shared: true, SharedWith: []string{"admin"}})
	e.rec.reset()
	if !e.allow("u1", "api", 60) {
		t.Fatal("u1 denied (the private org cap must not bind users)")
	}
	var orgSet bool
	for _, ev := range e.rec.ofType(limitr.EventCustomerSet) {
		if ev.Customer != nil && ev.Customer.ID == "org" {
			orgSet = true
			if got := ev.Customer.Caps["budget"].MeterValue; got != 0.6 {
				t.Errorf("customer-set org cap meter = %v, want 0.6", got)
			}
		}
	}
	if !orgSet {
		t.Errorf("no customer-set for the org whose cap moved; events %v", e.rec.types())
	}
	if got := e.capOf("org", "admins").MeterValue; got != 0 {
		t.Errorf("admins-only cap moved for a user: %v", got)
	}
	e.rec.reset()
	if e.allow("u2", "api", 50) {
		t.Fatal("org budget did not bind u2")
	}
	ev, ok := e.rec.last(limitr.EventCapLimit)
	if !ok {
		t.Fatalf("no cap-limit; got %v", e.rec.types())
	}
	m := payload(t, ev)
	if cm, _ := m["customer"].(map[string]any); cm["id"] != "org" || m["caller"] != "u2" {
		t.Errorf("cap-limit customer/caller = %v/%v, want org/u2", cm["id"], m["caller"])
	}
	if !e.allow("u2", "api", 40) {
		t.Fatal("u2 denied within the org budget")
	}
	// The admin is bound by both shared caps.
	if e.allow("adm", "api", 1) {
		t.Error("admin not bound by the full org budget")
	}
	if err := e.p.ResetCustomerCap(e.ctx, "org", "budget"); err != nil {
		t.Fatal(err)
	}
	if e.allow("adm", "api", 51) {
		t.Error("admin not bound by the admins-only cap (0.5 rune)")
	}
	if !e.allow("adm", "api", 50) {
		t.Error("admin denied within both caps")
	}
}

// §5 step 11: call-scoped caps gate only that call.
func TestCallCap(t *testing.T) {
	e := capsEnv(t)
	e.customer("u", "")
	e.rec.reset()
	if e.check("u", "api", 60, limitr.WithCallCap("rune", 0.5)) {
		t.Error("Check ignored the call cap")
	}
	if e.allow("u", "api", 60, limitr.WithCallCap("rune", 0.5)) {
		t.Fatal("call cap of 0.5 rune allowed 0.6")
	}
	ev, ok := e.rec.last(limitr.EventCapLimit)
	if !ok {
		t.Fatalf("no cap-limit; got %v", e.rec.types())
	}
	if cm, _ := payload(t, ev)["customer"].(map[string]any); cm["id"] != "u" {
		t.Errorf("cap-limit customer = %v, want the caller", cm["id"])
	}
	// Limitr's id for a call's own cap, in the event and in its JSON payload.
	if ev.CapID != "tmp-rune" {
		t.Errorf("cap-limit CapID = %q, want tmp-rune", ev.CapID)
	}
	if cm, _ := payload(t, ev)["cap"].(map[string]any); cm["id"] != "tmp-rune" {
		t.Errorf("cap-limit payload cap = %v, want id tmp-rune", cm)
	}
	if !e.allow("u", "api", 50, limitr.WithCallCap("", 0.5)) {
		t.Fatal("call within its cap denied")
	}
	if !e.allow("u", "api", 50, limitr.WithCallCap("rune", 0.5)) {
		t.Fatal("call caps must not accumulate across calls")
	}
	if e.allow("u", "api", 11, limitr.WithCallCap("tok", 10)) {
		t.Error("tok call cap of 10 allowed 11")
	}
	if ev, ok := e.rec.last(limitr.EventCapLimit); !ok || ev.CapID != "tmp-tok" {
		t.Errorf("cap-limit for a tok call cap: %+v, want CapID tmp-tok", ev)
	}
	if len(e.cust("u").Caps) != 0 {
		t.Errorf("call cap persisted: %v", e.cust("u").Caps)
	}
}

// §12: non-overage caps count included units at the first tier's rate; overage-only caps
// price from the billable position.
func TestCapOnTieredCredit(t *testing.T) {
	e := newEnv(t, curvesPolicy)
	e.customer("c", "")
	e.addCap("c", limitr.Cap{ID: "all", Credit: "rune", Value: 100})
	e.addCap("c", limitr.Cap{ID: "over", Credit: "rune", Value: 100, OverageOnly: true})
	steps := []struct{ amt, all, over float64 }{
		{5, 5, 0},
		{10, 15, 5},                    // 5 included @ tier 1, 5 billable in band 1
		{10, 22.5, 12.5},               // billable 5..15: 5@1 + 5@0.5
		{20, 22.5 + 6.25, 12.5 + 6.25}, // billable 15..35: 5@0.5 + 15@0.25
	}
	for i, s := range steps {
		if !e.allow("c", "t", s.amt) {
			t.Fatalf("step %d denied", i)
		}
		if got := e.capOf("c", "all").MeterValue; !closeTo(got, s.all, 1e-12) {
			t.Errorf("step %d: all-units cap = %v, want %v", i, got, s.all)
		}
		if got := e.capOf("c", "over").MeterValue; !closeTo(got, s.over, 1e-12) {
			t.Errorf("step %d: overage cap = %v, want %v", i, got, s.over)
		}
	}
}

// §12 overhead caps: zero-unit calls with explicit overhead move them.
func TestOverheadCapZeroUnitCall(t *testing.T) {
	e := capsEnv(t)
	e.customer("u", "")
	e.addCap("u", limitr.Cap{ID: "cost", Credit: "rune", Value: 1, OverheadCost: true})
	e.addCap("u", limitr.Cap{ID: "units", Credit: "rune", Value: 1})
	if !e.allow("u", "api", 0, limitr.WithOverhead(0.25)) {
		t.Fatal("overhead-only call denied")
	}
	if got := e.capOf("u", "cost").MeterValue; got != 0.25 {
		t.Errorf("overhead cap = %v, want 0.25", got)
	}
	if got := e.capOf("u", "units").MeterValue; got != 0 {
		t.Errorf("unit cap = %v, want 0 (zero-unit call)", got)
	}
	if got := e.cust("u").Meters["api"].Overhead; got != 0.25 {
		t.Errorf("meter overhead = %v, want 0.25", got)
	}
}
