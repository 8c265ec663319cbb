package limitr_test

import (
	"testing"
	"time"

	limitr "github.com/limitr/limitr/sdk/go"
)

// marginPolicy: tok is sold at 0.00002 and costs 0.00001; the pro plan's fee is a
// subscription entitlement (credit priced 50, soft limit 0) after a 14-day trial.
const marginPolicy = `{"policy": {
  "credits": {
    "tok":     {"price": {"amount": 0.00002}, "overhead_cost": 0.00001},
    "pro_fee": {"price": {"amount": 50}},
    "ctok":    {"price": {"amount": 0.00002}, "overhead_cost": 0.000003,
                "overhead": "units * (context.model == 'opus' ? 0.000015 : 0.000003)"}
  },
  "plans": {
    "free": {"default": true, "entitlements": {
      "ai": {"limit": {"credit": "tok", "mode": "soft", "value": 1000}}
    }},
    "pro": {"trial_period": "14days", "entitlements": {
      "subscription": {"limit": {"credit": "pro_fee", "mode": "soft", "value": 0}},
      "ai":    {"limit": {"credit": "tok", "mode": "soft", "value": 1000}},
      "daily": {"limit": {"credit": "tok", "mode": "soft", "value": 100, "resets": true, "reset_inc": "1day"}},
      "cel":   {"limit": {"credit": "ctok", "mode": "soft", "value": 0}}
    },
    "topups": {"t500": {"credit": "tok", "value": 500, "price": {"amount": 0.008}}}}
  }
}}`

func (e *env) margin(id string) limitr.Margin {
	e.t.Helper()
	m, err := e.p.CustomerMarginSnapshot(e.ctx, id)
	if err != nil {
		e.t.Fatalf("CustomerMarginSnapshot(%q): %v", id, err)
	}
	return m
}

// §15.1 customer margin: revenue = overage priced from the first billable unit; cost =
// recorded overhead; margin % rounded to 2 places, −100 without revenue.
func TestCustomerMarginSnapshot(t *testing.T) {
	cases := []struct {
		name      string
		usage     float64
		revenue   float64
		cost      float64
		margin    float64
		entMargin *float64
	}{
		{"no usage: -100", 0, 0, 0, -100, nil},
		{"inside the limit: cost but no revenue", 500, 0, 0.005, -100, nil},
		{"overage: 25%", 3000, 0.04, 0.03, 25, ptr(25.0)},
		{"rounded to 2 places", 1300, 0.006, 0.013, -116.67, ptr(-116.67)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, marginPolicy)
			e.customer("u", "free")
			if tc.usage > 0 {
				e.allow("u", "ai", tc.usage)
			}
			m := e.margin("u")
			if !closeTo(m.Revenue, tc.revenue, 1e-12) || !closeTo(m.Cost, tc.cost, 1e-12) || m.Margin != tc.margin {
				t.Errorf("margin = {revenue %v cost %v margin %v}, want {%v %v %v}", m.Revenue, m.Cost, m.Margin, tc.revenue, tc.cost, tc.margin)
			}
			em, ok := m.Entitlements["ai"]
			if !ok {
				t.Fatalf("entitlements = %v, want ai", m.Entitlements)
			}
			if (em.Margin == nil) != (tc.entMargin == nil) || (em.Margin != nil && *em.Margin != *tc.entMargin) {
				t.Errorf("ai margin = %v, want %v", em.Margin, tc.entMargin)
			}
			if m.GrantCoveredRevenue != 0 || m.TopupRevenue != 0 {
				t.Errorf("grant/topup revenue without grants: %v/%v", m.GrantCoveredRevenue, m.TopupRevenue)
			}
		})
	}
}

// §15.1 on a tiered credit: the period's overage priced from position 0.
func TestCustomerMarginTiered(t *testing.T) {
	e := newEnv(t, curvesPolicy)
	e.customer("c", "")
	e.allow("c", "t", 12)
	e.allow("c", "t", 13) // 25 used, 15 billable: 10@1 + 5@0.5
	m := e.margin("c")
	if m.Entitlements["t"].Revenue != 12.5 {
		t.Errorf("tiered revenue = %v, want 12.5", m.Entitlements["t"].Revenue)
	}
	if m.Margin != 100 {
		t.Errorf("margin = %v, want 100 (no cost)", m.Margin)
	}
}

// §15.3, §7 ensure_plan_subscription: the plan fee is metered once after the trial.
func TestPlanSubscriptionFee(t *testing.T) {
	e := newEnv(t, marginPolicy)
	e.customer("org", "pro", withType("org"))
	e.customer("u", "", withRefs("org"))
	ensure := func(id string) bool {
		t.Helper()
		ok, err := e.p.EnsurePlanSubscription(e.ctx, id)
		if err != nil {
			t.Fatalf("EnsurePlanSubscription(%q): %v", id, err)
		}
		return ok
	}
	if ensure("org") {
		t.Fatal("fee charged during the trial")
	}
	e.clock.Advance(14*24*time.Hour - time.Second)
	if ensure("org") {
		t.Fatal("fee charged a second before the trial ends")
	}
	e.clock.Advance(time.Second)
	if !ensure("org") {
		t.Fatal("fee not charged once the trial is over")
	}
	if ensure("org") {
		t.Error("fee charged twice")
	}
	if got := e.value("org", "subscription"); got != 1 {
		t.Errorf("subscription meter = %v, want 1", got)
	}
	if ensure("u") {
		t.Error("a customer inheriting its plan was charged")
	}
	m := e.margin("org")
	if m.Revenue != 50 || m.Margin != 100 || m.Entitlements["subscription"].Revenue != 50 {
		t.Errorf("margin = %+v, want revenue 50 at 100%%", m)
	}
}

// §15.1 with grants (ours): grant-covered overage still counts as revenue;
// GrantCoveredRevenue and TopupRevenue attribute it.
func TestMarginGrantAndTopupRevenue(t *testing.T) {
	e := newEnv(t, marginPolicy)
	e.customer("u", "pro")
	e.topup("u", "t500")
	e.allow("u", "ai", 1400) // 400 over, all paid by the grant
	if got := e.grantValues("u")["t500"]; !eqFloats(got, []float64{100}) {
		t.Fatalf("grant = %v, want [100]", got)
	}
	m := e.margin("u")
	ai := m.Entitlements["ai"]
	if !closeTo(ai.Revenue, 0.008, 1e-12) || !closeTo(ai.GrantCoveredRevenue, 0.008, 1e-12) || !closeTo(ai.TopupRevenue, 0.0064, 1e-12) {
		t.Errorf("ai = %+v, want revenue 0.008, grant-covered 0.008, topup 0.008×400/500 = 0.0064", ai)
	}
	if !closeTo(m.GrantCoveredRevenue, 0.008, 1e-12) || !closeTo(m.TopupRevenue, 0.0064, 1e-12) {
		t.Errorf("totals grant-covered %v topup %v", m.GrantCoveredRevenue, m.TopupRevenue)
	}
	if !closeTo(m.Cost, 0.014, 1e-12) {
		t.Errorf("cost = %v, want 1400 × 0.00001", m.Cost)
	}
	// 0.008 revenue vs 0.014 cost ⇒ −75%.
	if m.Margin != -75 {
		t.Errorf("margin = %v, want -75", m.Margin)
	}
	// A partly covered soft overage: 200 more → 100 from the grant, 100 invoiced.
	e.allow("u", "ai", 200)
	m = e.margin("u")
	if ai := m.Entitlements["ai"]; !closeTo(ai.Revenue, 0.012, 1e-12) || !closeTo(ai.GrantCoveredRevenue, 0.01, 1e-12) || !closeTo(ai.TopupRevenue, 0.008, 1e-12) {
		t.Errorf("ai = %+v, want revenue 0.012, grant-covered 0.01, topup 0.008", ai)
	}
}

// §15.1: a pending period reset reads as an empty period.
func TestMarginPendingReset(t *testing.T) {
	e := newEnv(t, marginPolicy)
	e.customer("u", "pro")
	e.allow("u", "daily", 150)
	if got := e.margin("u").Entitlements["daily"].Revenue; !closeTo(got, 0.001, 1e-12) {
		t.Fatalf("daily revenue = %v, want 50 × 0.00002", got)
	}
	e.clock.Advance(24*time.Hour + time.Second)
	if d := e.margin("u").Entitlements["daily"]; d.Revenue != 0 || d.Cost != 0 || d.Usage != 0 {
		t.Errorf("after the period daily = %+v, want zeros", d)
	}
}

// §15.2 MarginSnapshot: a daily limit is scaled to the plan's 30-day month with the
// usage and an explicit overhead; the cost expression gets the context.
func TestMarginSnapshotScaling(t *testing.T) {
	e := newEnv(t, marginPolicy)
	cases := []struct {
		name    string
		usage   map[string]limitr.Usage
		revenue float64
		cost    float64
		margin  float64
	}{
		{"daily limit scaled ×30", map[string]limitr.Usage{"daily": {Value: 150}},
			1500 * 0.00002, 4500 * 0.00001, -50},
		{"explicit overhead scaled too", map[string]limitr.Usage{"daily": {Value: 150, Overhead: ptr(0.001)}},
			0.03, 0.03, 0},
		{"explicit limit", map[string]limitr.Usage{"daily": {Value: 150, Limit: ptr(50.0)}},
			3000 * 0.00002, 4500 * 0.00001, 25},
		{"monthly limit not scaled", map[string]limitr.Usage{"ai": {Value: 3000}},
			0.04, 0.03, 25},
		{"cost expression with context", map[string]limitr.Usage{"cel": {Value: 1000, Context: map[string]any{"model": "opus"}}},
			0.02, 0.015, 25},
		{"cost expression fallback", map[string]limitr.Usage{"cel": {Value: 1000}},
			0.02, 0.003, 85},
		{"subscription fee", map[string]limitr.Usage{"subscription": {Value: 1}, "ai": {Value: 1000}},
			50, 0.01, 99.98},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, err := e.p.MarginSnapshot(e.ctx, "pro", tc.usage)
			if err != nil {
				t.Fatal(err)
			}
			if !closeTo(m.Revenue, tc.revenue, 1e-12) || !closeTo(m.Cost, tc.cost, 1e-12) || m.Margin != tc.margin {
				t.Errorf("got revenue %v cost %v margin %v, want %v %v %v", m.Revenue, m.Cost, m.Margin, tc.revenue, tc.cost, tc.margin)
			}
		})
	}
	if _, err := e.p.MarginSnapshot(e.ctx, "nope", nil); err == nil {
		t.Error("unknown plan: no error")
	}
}

// Ours, a deliberate difference from Limitr: a credit with no price of its own is
// priced through the exchange table (1 ai_credit = 1.25 abstract = 1.25 rune), as
// invoices price it; a credit with no price path at all still earns nothing.
func TestMarginExchangeOnlyCredit(t *testing.T) {
	e := newEnv(t, `{"policy": {
  "credits": {"abstract": {}, "ai_credit": {}, "seat": {}},
  "exchange": {"abstract": {"value": 1, "currency": "rune"}, "ai_credit": {"value": 1.25, "currency": "abstract"}},
  "plans": {"p": {"default": true, "entitlements": {
    "ai":    {"limit": {"credit": "ai_credit", "mode": "soft", "value": 100}},
    "seats": {"limit": {"credit": "seat", "mode": "soft", "value": 1}}
  }}}}}`)
	e.customer("u", "")
	e.allow("u", "ai", 140) // 40 over × 1.25
	e.allow("u", "seats", 3)
	m := e.margin("u")
	if ai := m.Entitlements["ai"]; ai.Revenue != 50 || ai.Margin == nil || *ai.Margin != 100 {
		t.Errorf("ai = %+v, want revenue 50 at 100%%", ai)
	}
	if seats := m.Entitlements["seats"]; seats.Revenue != 0 || seats.Margin != nil {
		t.Errorf("seats = %+v, want no revenue (no price path)", seats)
	}
	if m.Revenue != 50 || m.Margin != 100 {
		t.Errorf("margin = %+v, want revenue 50 at 100%%", m)
	}
	snap, err := e.p.MarginSnapshot(e.ctx, "p", map[string]limitr.Usage{"ai": {Value: 120}})
	if err != nil || snap.Revenue != 25 {
		t.Errorf("MarginSnapshot = %+v, %v; want revenue 25", snap, err)
	}
}
