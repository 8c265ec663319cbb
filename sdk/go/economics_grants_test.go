package limitr_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	limitr "github.com/limitr/limitr/sdk/go"
)

// grantsPolicy: tok is priced 0.01 rune (no pair); bigc is worth 1 rune (= 100 tok) and
// gem 0.5 rune (= 50 tok). The strategy is a placeholder the tests replace.
const grantsPolicy = `{"policy": {
  "credits": {
    "tok":  {"price": {"amount": 0.01}},
    "bigc": {},
    "gem":  {},
    "free": {}
  },
  "exchange": {
    "grant_strategy": "STRATEGY",
    "bigc": {"value": 1, "currency": "rune"},
    "gem":  {"value": 0.5, "currency": "rune"}
  },
  "plans": {
    "hp": {"default": true,
      "entitlements": {
        "api":  {"limit": {"credit": "tok", "value": 100}},
        "soft": {"limit": {"credit": "tok", "mode": "soft", "value": 100}},
        "obs":  {"limit": {"credit": "tok", "mode": "observe", "value": 100}},
        "nogr": {"limit": {"credit": "tok", "mode": "soft", "value": 100, "grants_apply": false}},
        "zero": {"limit": {"credit": "tok", "mode": "soft", "value": 0}},
        "fr":   {"limit": {"credit": "free", "mode": "hard", "value": 0}}
      },
      "topups": {
        "t10":   {"credit": "tok", "value": 10, "price": {"amount": 0.2}},
        "t5exp": {"credit": "tok", "value": 5, "expires_after": "1day"},
        "t5x2":  {"credit": "tok", "value": 5, "expires_after": "2days"},
        "b1":    {"credit": "bigc", "value": 1},
        "g1":    {"credit": "gem", "value": 1},
        "g1exp": {"credit": "gem", "value": 1, "expires_after": "2days"},
        "f3":    {"credit": "free", "value": 3},
        "r_hard":  {"credit": "tok", "value": 10, "resets": true, "reset_inc": "1day"},
        "r_add":   {"credit": "tok", "value": 10, "resets": true, "reset_inc": "1day", "reset_mode": "add", "max_balance": 25},
        "r_roll":  {"credit": "tok", "value": 10, "resets": true, "reset_inc": "1day", "reset_mode": "rollover",
                    "rollover_pct": 0.5, "rollover_min": 1, "rollover_max": 3},
        "r_roll_full": {"credit": "tok", "value": 10, "resets": true, "reset_inc": "1day", "reset_mode": "rollover", "max_balance": 18},
        "r_catch": {"credit": "tok", "value": 10, "resets": true, "reset_inc": "1day", "reset_mode": "add", "reset_catchup_cap": 2},
        "r_cal":   {"credit": "tok", "value": 10, "resets": true, "reset_sch": "monthly:1", "reset_mode": "add"}
      }}
  }
}}`

func grantsEnv(t *testing.T, strategy string) *env {
	return newEnv(t, strings.Replace(grantsPolicy, "STRATEGY", strategy, 1))
}

// §7 apply_customer_topup, §11.2 customer-topup-granted, §6 remaining/limit with grants.
func TestApplyCustomerTopupStacks(t *testing.T) {
	e := grantsEnv(t, "expires_first")
	e.customer("u", "")
	e.rec.reset()
	e.topup("u", "t10")
	e.topup("u", "t10")
	gs := e.grantList("u")
	if len(gs) != 2 {
		t.Fatalf("grants = %+v, want 2 stacked grants", gs)
	}
	for _, g := range gs {
		if g.Credit != "tok" || g.Topup != "t10" || g.Value != 10 || g.StartingValue != 10 || !strings.HasPrefix(g.ID, "lgrnt_") {
			t.Errorf("grant = %+v, want credit tok, topup t10, value 10, id lgrnt_…", g)
		}
		if !g.Created.Equal(t0) || !g.GrantedOn.Equal(t0) || !g.ExpiresAt.IsZero() {
			t.Errorf("grant times = %v/%v/%v, want created = granted_on = now, no expiry", g.Created, g.GrantedOn, g.ExpiresAt)
		}
	}
	if gs[0].ID == gs[1].ID {
		t.Errorf("grant ids repeat: %s", gs[0].ID)
	}
	// §11.2: one customer-topup-granted per topup, no customer-set.
	if got := e.rec.types(); !eqStrings(got, []string{limitr.EventCustomerTopupGranted, limitr.EventCustomerTopupGranted}) {
		t.Errorf("events = %v, want two customer-topup-granted only", got)
	}
	ev, _ := e.rec.last(limitr.EventCustomerTopupGranted)
	m := payload(t, ev)
	if m["topup_name"] != "t10" || m["plan_name"] != "hp" {
		t.Errorf("payload topup_name/plan_name = %v/%v, want t10/hp", m["topup_name"], m["plan_name"])
	}
	top, _ := m["topup"].(map[string]any)
	if top == nil || top["credit"] != "tok" || top["value"] != 10.0 {
		t.Errorf("payload topup = %v, want the topup definition (credit tok, value 10)", m["topup"])
	}
	cm, _ := m["customer"].(map[string]any)
	if cm == nil || cm["id"] != "u" {
		t.Errorf("payload customer = %v", m["customer"])
	} else if gm, _ := cm["grants"].(map[string]any); len(gm) != 2 {
		t.Errorf("payload customer has %d grants, want 2 (state after the change)", len(gm))
	}
	// §6: RemainingCredit, Remaining and Limit include grants.
	if got := e.credit("u", "tok"); got != 20 {
		t.Errorf("RemainingCredit(tok) = %v, want 20", got)
	}
	if got := e.remaining("u", "api"); got != 120 {
		t.Errorf("Remaining(api) = %v, want 100 + 20", got)
	}
	if got := e.limitOf("u", "api"); got != 120 {
		t.Errorf("Limit(api) = %v, want 120", got)
	}
	// grants_apply false: reads ignore grants.
	if got := e.remaining("u", "nogr"); got != 100 {
		t.Errorf("Remaining(nogr) = %v, want 100 (grants_apply false)", got)
	}
	// §5.3: unknown topup.
	err := e.p.ApplyCustomerTopup(e.ctx, "u", "nope")
	if !errors.Is(err, limitr.ErrUnknownTopup) {
		t.Errorf("unknown topup: err = %v, want ErrUnknownTopup", err)
	}
	if err := e.p.ApplyCustomerTopup(e.ctx, "ghost", "t10"); !errors.Is(err, limitr.ErrUnknownCustomer) {
		t.Errorf("unknown customer: err = %v", err)
	}
}

// §6 remaining: with meter past the limit, grants extend from the meter.
func TestRemainingWithGrantsPastLimit(t *testing.T) {
	e := grantsEnv(t, "expires_first")
	e.customer("u", "")
	e.allow("u", "soft", 130) // 30 over, no grants yet
	e.topup("u", "t10")
	if got := e.remaining("u", "soft"); got != 10 {
		t.Errorf("Remaining = %v, want max(130,100)+10−130 = 10", got)
	}
	if got := e.limitOf("u", "soft"); got != 110 {
		t.Errorf("Limit = %v, want 100 + 10", got)
	}
	// Cross-credit grants count through runes: 1 bigc = 100 tok.
	e.topup("u", "b1")
	if got := e.credit("u", "tok"); got != 110 {
		t.Errorf("RemainingCredit(tok) = %v, want 10 + 100", got)
	}
	if got := e.credit("u", "bigc"); got != 1.1 {
		t.Errorf("RemainingCredit(bigc) = %v, want 1 + 0.1", got)
	}
	if got := e.credit("u", "rune"); got != 1.1 {
		t.Errorf("RemainingCredit(rune) = %v, want 1.1", got)
	}
}

// §5.1, §5 step 16: hard limits take grants all or nothing.
func TestHardLimitGrantCoverage(t *testing.T) {
	cases := []struct {
		name      string
		meter     float64
		call      float64
		wantOK    bool
		wantGrant []float64 // t10 balances after
		wantMeter float64
	}{
		{"short by one: denied, grants untouched", 100, 11, false, []float64{10}, 100},
		{"exact coverage: allowed, grant drained and deleted", 100, 10, true, nil, 110},
		{"crossing: only the overage is drawn", 95, 10, true, []float64{5}, 105},
		{"inside the limit: grants untouched", 50, 50, true, []float64{10}, 100},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := grantsEnv(t, "expires_first")
			e.customer("u", "")
			e.allow("u", "api", tc.meter)
			e.topup("u", "t10")
			before := e.snapshotJSON("u")
			e.rec.reset()
			if !e.check("u", "api", tc.call) != !tc.wantOK {
				t.Errorf("Check = %v, want %v", !tc.wantOK, tc.wantOK)
			}
			if got := e.allow("u", "api", tc.call); got != tc.wantOK {
				t.Fatalf("Allow(%v) at %v = %v, want %v", tc.call, tc.meter, got, tc.wantOK)
			}
			if got := e.grantValues("u")["t10"]; !eqFloats(got, tc.wantGrant) {
				t.Errorf("t10 grants = %v, want %v", got, tc.wantGrant)
			}
			if got := e.value("u", "api"); got != tc.wantMeter {
				t.Errorf("meter = %v, want %v", got, tc.wantMeter)
			}
			if !tc.wantOK {
				if after := e.snapshotJSON("u"); after != before {
					t.Errorf("denied call changed the customer:\n%s\n%s", before, after)
				}
				if got := e.rec.meterTypes(); !eqStrings(got, []string{limitr.EventMeterLimit}) {
					t.Errorf("events = %v, want meter-limit", got)
				}
				return
			}
			ev, ok := e.rec.last(limitr.EventMeterChanged)
			if !ok {
				t.Fatalf("no meter-changed; got %v", e.rec.types())
			}
			m := payload(t, ev)
			over := tc.meter + tc.call - 100
			if over > 0 {
				if got, _ := pf(m, "grant_value_applied"); got != over {
					t.Errorf("grant_value_applied = %v, want %v", got, over)
				}
				if got, ok := pf(m, "overage"); !ok || got != 0 {
					t.Errorf("overage = %v (present %v), want 0", got, ok)
				}
			} else if has(m, "grant_value_applied") {
				t.Errorf("grant_value_applied present for a call inside the limit: %v", m["grant_value_applied"])
			}
		})
	}
}

func eqFloats(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !closeTo(a[i], b[i], 1e-12) {
			return false
		}
	}
	return true
}

// §5.1 soft: grants drawn first (partial OK), meter-overage with the uncovered overage
// and overage_price priced from billable + grant_value_applied.
func TestSoftPartialGrantCoverage(t *testing.T) {
	e := grantsEnv(t, "expires_first")
	e.customer("u", "")
	e.allow("u", "soft", 100)
	e.topup("u", "t10")
	e.rec.reset()
	if !e.allow("u", "soft", 25) {
		t.Fatal("soft call denied")
	}
	ev, ok := e.rec.last(limitr.EventMeterOverage)
	if !ok {
		t.Fatalf("no meter-overage; got %v", e.rec.types())
	}
	m := payload(t, ev)
	if got, _ := pf(m, "overage"); got != 15 {
		t.Errorf("overage = %v, want 15 uncovered", got)
	}
	if got, _ := pf(m, "grant_value_applied"); got != 10 {
		t.Errorf("grant_value_applied = %v, want 10", got)
	}
	if got, _ := pf(m, "overage_price"); !closeTo(got, 0.15, 1e-12) {
		t.Errorf("overage_price = %v, want 15 × 0.01", got)
	}
	if got, _ := pf(m, "meter", "price_diff"); !closeTo(got, 0.25, 1e-12) {
		t.Errorf("price_diff = %v, want 25 × 0.01 (the call's whole billable diff)", got)
	}
	if len(e.grantList("u")) != 0 {
		t.Errorf("drained non-resetting grant not deleted: %+v", e.grantList("u"))
	}
	if got := e.value("u", "soft"); got != 125 {
		t.Errorf("meter = %v, want 125", got)
	}
	// Fully covered soft overage: meter-changed, overage 0.
	e.topup("u", "t10")
	e.rec.reset()
	e.allow("u", "soft", 4)
	if got := e.rec.meterTypes(); !eqStrings(got, []string{limitr.EventMeterChanged}) {
		t.Fatalf("events = %v, want meter-changed", got)
	}
	ev, _ = e.rec.last(limitr.EventMeterChanged)
	m = payload(t, ev)
	if got, _ := pf(m, "grant_value_applied"); got != 4 {
		t.Errorf("grant_value_applied = %v, want 4", got)
	}
	if got := e.grantValues("u")["t10"]; !eqFloats(got, []float64{6}) {
		t.Errorf("t10 = %v, want [6]", got)
	}
}

// §2.6 grants_apply false and §5.1 observe: grants are never touched.
func TestGrantsNotApplied(t *testing.T) {
	for _, ent := range []string{"nogr", "obs"} {
		t.Run(ent, func(t *testing.T) {
			e := grantsEnv(t, "expires_first")
			e.customer("u", "")
			e.topup("u", "t10")
			e.rec.reset()
			if !e.allow("u", ent, 150) {
				t.Fatal("denied")
			}
			if got := e.grantValues("u")["t10"]; !eqFloats(got, []float64{10}) {
				t.Errorf("t10 = %v, want untouched [10]", got)
			}
			evs := e.rec.all()
			if len(evs) == 0 {
				t.Fatal("no events")
			}
			m := payload(t, evs[len(evs)-1])
			// §8.3: apply_overage_grants is not called, so no grant_value_applied field.
			if has(m, "grant_value_applied") {
				t.Errorf("%s payload carries grant_value_applied = %v; grants were not involved", evs[len(evs)-1].Type, m["grant_value_applied"])
			}
			if ent == "obs" {
				if got := e.rec.meterTypes(); !eqStrings(got, []string{limitr.EventMeterChanged}) {
					t.Errorf("observe events = %v, want meter-changed", got)
				}
			} else if got, _ := pf(m, "overage"); got != 50 {
				t.Errorf("overage = %v, want 50", got)
			}
		})
	}
}

// §8.1 grant order (ours: grantLess in internal/enforcement/grants.go).
func TestGrantStrategies(t *testing.T) {
	cases := []struct {
		name     string
		strategy string
		topups   []string // applied in this order, one second apart
		draw     float64  // overage drawn on "zero" (soft, limit 0) in tok
		want     map[string][]float64
	}{
		// expires_first: earliest expiry first, never-expiring last.
		{"expires_first: expiring grant before older non-expiring", "expires_first",
			[]string{"t10", "t5x2", "t5exp"}, 3, map[string][]float64{"t10": {10}, "t5x2": {5}, "t5exp": {2}}},
		{"expires_first: spills to the next expiry, then never-expiring", "expires_first",
			[]string{"t10", "t5x2", "t5exp"}, 12, map[string][]float64{"t10": {8}}},
		// exact-credit grants first whatever the strategy.
		{"exact credit before other credit", "expires_first",
			[]string{"b1", "t10"}, 10, map[string][]float64{"b1": {1}}},
		{"exact credit before other credit, valuable_first", "valuable_first",
			[]string{"b1", "t10"}, 15, map[string][]float64{"b1": {0.95}}},
		// cheapest / valuable by rune value per unit (gem 0.5, bigc 1).
		{"cheapest_first takes gem first", "cheapest_first",
			[]string{"b1", "g1"}, 20, map[string][]float64{"b1": {1}, "g1": {0.6}}},
		{"valuable_first takes bigc first", "valuable_first",
			[]string{"g1", "b1"}, 20, map[string][]float64{"b1": {0.8}, "g1": {1}}},
		{"cheapest_first spills from gem into bigc", "cheapest_first",
			[]string{"b1", "g1"}, 70, map[string][]float64{"b1": {0.8}}},
		// ties: earliest expiry, then creation order.
		{"tie on value: expiring one first", "cheapest_first",
			[]string{"g1", "g1exp"}, 10, map[string][]float64{"g1": {1}, "g1exp": {0.8}}},
		{"tie on value and expiry: oldest first", "cheapest_first",
			[]string{"g1", "g1"}, 10, map[string][]float64{"g1": {0.8, 1}}},
		{"expires_first: two never-expiring, oldest first", "expires_first",
			[]string{"t10", "t10"}, 4, map[string][]float64{"t10": {6, 10}}},
		{"expires_first: two never-expiring other-credit, oldest first", "expires_first",
			[]string{"g1", "g1"}, 10, map[string][]float64{"g1": {0.8, 1}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := grantsEnv(t, tc.strategy)
			e.customer("u", "")
			for _, tp := range tc.topups {
				e.topup("u", tp)
				e.clock.Advance(time.Second)
			}
			if !e.allow("u", "zero", tc.draw) {
				t.Fatal("soft call denied")
			}
			got := e.grantValues("u")
			if len(got) != len(tc.want) {
				t.Fatalf("grants = %v, want %v", got, tc.want)
			}
			for k, w := range tc.want {
				if !eqFloats(got[k], w) {
					t.Errorf("grants = %v, want %v", got, tc.want)
					break
				}
			}
		})
	}
}

// §8.1: a credit with no rune value only draws exact-credit grants.
func TestUnpricedCreditUsesExactGrantsOnly(t *testing.T) {
	e := grantsEnv(t, "expires_first")
	e.customer("u", "")
	e.topup("u", "b1")
	if e.allow("u", "fr", 1) {
		t.Fatal("hard limit 0 on an unpriced credit allowed with only other-credit grants")
	}
	e.topup("u", "f3")
	if got := e.credit("u", "free"); got != 3 {
		t.Errorf("RemainingCredit(free) = %v, want 3 (bigc cannot convert)", got)
	}
	if !e.allow("u", "fr", 3) {
		t.Fatal("exact grant of 3 did not cover 3")
	}
	if got := e.grantValues("u"); len(got["f3"]) != 0 || !eqFloats(got["b1"], []float64{1}) {
		t.Errorf("grants = %v, want f3 drained, b1 untouched", got)
	}
}

// §2.7 expires_after, §8.1: expired grants disappear.
func TestGrantExpiry(t *testing.T) {
	e := grantsEnv(t, "expires_first")
	e.customer("u", "")
	e.topup("u", "t5exp")
	g := e.grantList("u")[0]
	if !g.ExpiresAt.Equal(t0.Add(24 * time.Hour)) {
		t.Errorf("expires_on = %v, want created + 1day", g.ExpiresAt)
	}
	e.clock.Advance(24 * time.Hour)
	if got := e.credit("u", "tok"); got != 5 {
		t.Errorf("at the expiry instant RemainingCredit = %v, want 5 (expires_on < now expires)", got)
	}
	e.clock.Advance(time.Second)
	if got := e.credit("u", "tok"); got != 0 {
		t.Errorf("after expiry RemainingCredit = %v, want 0", got)
	}
	if got := e.grantList("u"); len(got) != 0 {
		t.Errorf("expired grant still listed: %+v", got)
	}
	if e.allow("u", "fr", 0) != true {
		t.Error("zero call denied")
	}
	if !e.allow("u", "zero", 1) {
		t.Fatal("soft denied")
	}
	ev, _ := e.rec.last(limitr.EventMeterOverage)
	if got, _ := pf(payload(t, ev), "overage"); got != 1 {
		t.Errorf("expired grant still paid: overage = %v, want 1", got)
	}
}

// §8.4 grant periods: hard / add / rollover, max_balance, reset_catchup_cap, calendar.
func TestResettingGrants(t *testing.T) {
	day := 24 * time.Hour
	type step struct {
		advance time.Duration
		draw    float64 // drawn on "zero" after advancing
		want    float64 // balance after
	}
	cases := []struct {
		name  string
		topup string
		start time.Time
		steps []step
	}{
		{"hard refills to value", "r_hard", t0, []step{
			{0, 4, 6},
			{day, 0, 6}, // the boundary instant belongs to the old period
			{time.Second, 0, 10},
			{day, 10, 0}, // drained resetting grant stays at 0
			{day, 0, 10},
		}},
		{"add accumulates up to max_balance", "r_add", t0, []step{
			{day + time.Second, 0, 20},
			{day, 0, 25},
			{day, 0, 25},
			{0, 24, 1},
			{day, 0, 11},
		}},
		{"rollover carries pct clamped to [min,max]", "r_roll", t0, []step{
			{0, 6, 4},
			{day + time.Second, 0, 12}, // carry 4 × 0.5 = 2
			{day, 0, 13},               // carry 6 → max 3
			{0, 13, 0},
			{day, 0, 11}, // carry 0 → min 1
		}},
		{"rollover full carry capped by max_balance", "r_roll_full", t0, []step{
			{0, 3, 7},
			{day + time.Second, 0, 17},
			{day, 0, 18},
		}},
		{"catch-up applies at most reset_catchup_cap periods", "r_catch", t0, []step{
			{5*day + time.Second, 1, 29}, // 5 periods due, 2 applied; the draw settles the grant
			{day, 0, 39},                 // the grid moved on through the skipped periods
		}},
		{"calendar: one reset per period, no catch-up", "r_cal", t0, []step{
			{0, 4, 6},
			{time.Date(2026, 1, 31, 23, 0, 0, 0, time.UTC).Sub(t0), 0, 6},
			{2 * time.Hour, 1, 15}, // Feb 1: reset, then a draw settles it
			{time.Date(2026, 5, 3, 0, 0, 0, 0, time.UTC).Sub(time.Date(2026, 2, 1, 1, 0, 0, 0, time.UTC)), 0, 25}, // skipped months: one reset
			{time.Hour, 0, 25},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := grantsEnv(t, "expires_first")
			e.customer("u", "")
			e.topup("u", tc.topup)
			for i, s := range tc.steps {
				e.clock.Advance(s.advance)
				if s.draw > 0 && !e.allow("u", "zero", s.draw) {
					t.Fatalf("step %d: soft call denied", i)
				}
				got := e.grantValues("u")[tc.topup]
				if len(got) != 1 || !closeTo(got[0], s.want, 1e-12) {
					t.Fatalf("step %d (now %v): %s = %v, want [%v]", i, e.clock.Now(), tc.topup, got, s.want)
				}
				if rc := e.credit("u", "tok"); !closeTo(rc, s.want, 1e-12) {
					t.Errorf("step %d: RemainingCredit = %v, want %v", i, rc, s.want)
				}
			}
		})
	}
}

// includedPolicy: included topups per customer type, and a plan change.
const includedPolicy = `{"policy": {
  "credits": {"tok": {"price": {"amount": 0.01}}},
  "plans": {
    "basic": {"default": true,
      "entitlements": {"api": {"limit": {"credit": "tok", "mode": "soft", "value": 0}}},
      "topups": {
        "inc":     {"credit": "tok", "value": 50, "included": true, "resets": true, "reset_inc": "30days"},
        "orgonly": {"credit": "tok", "value": 7, "included": true, "included_scopes": ["org"]},
        "buy":     {"credit": "tok", "value": 10}
      }},
    "pro": {
      "entitlements": {"api": {"limit": {"credit": "tok", "mode": "soft", "value": 0}}},
      "topups": {
        "inc2": {"credit": "tok", "value": 80, "included": true}
      }}
  }
}}`

// §7 included topups: granted on create (by customer type), re-synced on plan change;
// purchased grants survive a plan change (ours: Limitr deletes them).
func TestIncludedTopups(t *testing.T) {
	e := newEnv(t, includedPolicy)
	e.customer("u", "basic")
	e.customer("o", "basic", withType("org"))
	if got := e.grantValues("u"); len(got) != 1 || !eqFloats(got["inc"], []float64{50}) {
		t.Errorf("user grants = %v, want inc only", got)
	}
	if got := e.grantValues("o"); len(got) != 2 || !eqFloats(got["inc"], []float64{50}) || !eqFloats(got["orgonly"], []float64{7}) {
		t.Errorf("org grants = %v, want inc and orgonly", got)
	}
	for _, g := range e.grantList("u") {
		if !g.Included || !g.Resets {
			t.Errorf("included grant = %+v, want included and resetting", g)
		}
	}
	// Included once: a later call does not grant again.
	e.allow("u", "api", 5)
	if got := e.grantValues("u")["inc"]; !eqFloats(got, []float64{45}) {
		t.Errorf("inc = %v, want [45]", got)
	}
	e.topup("u", "buy")
	if err := e.p.SetCustomerPlan(e.ctx, "u", "pro", false); err != nil {
		t.Fatal(err)
	}
	got := e.grantValues("u")
	if len(got["inc"]) != 0 {
		t.Errorf("included grant of the old plan kept after plan change: %v", got)
	}
	if !eqFloats(got["inc2"], []float64{80}) {
		t.Errorf("new plan's included topup not granted: %v", got)
	}
	if !eqFloats(got["buy"], []float64{10}) {
		t.Errorf("purchased grant lost on plan change (ours keeps it): %v", got)
	}
	// The kept purchased grant still pays (exact credit) after the included one? Order:
	// both never expire ⇒ creation order: buy (older) first.
	e.allow("u", "api", 12)
	if got := e.grantValues("u"); len(got["buy"]) != 0 || !eqFloats(got["inc2"], []float64{78}) {
		t.Errorf("after drawing 12: %v, want buy drained then inc2 78", got)
	}
	// Changing type changes included_scopes eligibility on the next sync.
	if _, err := e.p.CreateCustomer(e.ctx, "o", "basic", withType("user")); err != nil {
		t.Fatal(err)
	}
	e.allow("o", "api", 1)
	if got := e.grantValues("o"); len(got["orgonly"]) != 0 {
		t.Errorf("org-only included grant kept for a user: %v", got)
	}
}

// §2.7/§2.8: the grant record's JSON names.
func TestGrantJSONFields(t *testing.T) {
	e := grantsEnv(t, "expires_first")
	e.customer("u", "")
	e.topup("u", "r_roll")
	var m map[string]any
	if err := json.Unmarshal([]byte(e.snapshotJSON("u")), &m); err != nil {
		t.Fatal(err)
	}
	gs := m["grants"].(map[string]any)
	for _, v := range gs {
		g := v.(map[string]any)
		for _, k := range []string{"id", "credit", "topup", "value", "starting_value", "created_on", "granted_on", "reset_mode", "rollover_pct", "rollover_min", "rollover_max"} {
			if !has(g, k) {
				t.Errorf("grant JSON lacks %q: %v", k, g)
			}
		}
		if g["created_on"] != float64(t0.UnixMilli()) {
			t.Errorf("created_on = %v, want Unix ms", g["created_on"])
		}
	}
}

// §7, §8.3 with quickstart-ai.json: an ai-token grant pays claude tokens through runes
// (1 ai-token = 1.25 runes; 1 input token = 0.000004 ai-token).
func TestQuickstartGrowthTopup(t *testing.T) {
	e := newEnv(t, readExample(t, "quickstart-ai.json"))
	e.customer("s", "starter")
	if err := e.p.ApplyCustomerTopup(e.ctx, "s", "ai-token-small"); !errors.Is(err, limitr.ErrUnknownTopup) {
		t.Errorf("starter plan does not sell the topup: err = %v", err)
	}
	e.customer("g", "growth")
	e.topup("g", "ai-token-small")
	if got := e.credit("g", "claude-sonnet-4-input"); !closeTo(got, 2.5e6, 1e-12) {
		t.Errorf("RemainingCredit(input) = %v, want 10 / 0.000004", got)
	}
	if got := e.credit("g", "rune"); got != 12.5 {
		t.Errorf("RemainingCredit(rune) = %v, want 12.5", got)
	}
	if !e.allow("g", "ai-chat-input", 700000+1000000) {
		t.Fatal("soft call denied")
	}
	ev, ok := e.rec.last(limitr.EventMeterChanged)
	if !ok {
		t.Fatalf("no meter-changed (grant covered everything); got %v", e.rec.types())
	}
	if got, _ := pf(payload(t, ev), "grant_value_applied"); got != 1e6 {
		t.Errorf("grant_value_applied = %v, want 1e6", got)
	}
	if got := e.grantValues("g")["ai-token-small"]; !eqFloats(got, []float64{6}) {
		t.Errorf("grant = %v, want [6] ai-token", got)
	}
	if got := e.remaining("g", "ai-chat-input"); !closeTo(got, 1.5e6, 1e-12) {
		t.Errorf("Remaining = %v, want 6 ai-token = 1.5e6 tokens", got)
	}
}
