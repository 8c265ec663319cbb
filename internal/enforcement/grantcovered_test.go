package enforcement

import (
	"context"
	"testing"
	"time"

	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/policies"
	"github.com/limitr/limitr/internal/policies/doctree"
)

const grantCoveredPolicy = `{"policy": {
  "credits": {"tok": {"price": {"amount": 2}}},
  "plans": {"p": {"default": true,
    "entitlements": {"e": {"limit": {"credit": "tok", "mode": "soft", "value": 10, "resets": true, "reset_inc": "1day"}}},
    "topups": {"t": {"credit": "tok", "value": 5, "price": {"amount": 4}}}}}}}`

// The units of overage grants paid for travel with the usage delta, per period, and
// rate (RateOverage) to exactly the margin's GrantCoveredRevenue: what the server will
// credit on the invoice is what the engine reports.
func TestDrainedDeltaCarriesGrantCoverage(t *testing.T) {
	ctx := context.Background()
	p, err := policies.Load([]byte(grantCoveredPolicy), doctree.FormatJSON)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	e, err := New(p, WithClock(func() time.Time { return now }), WithUsageRecording())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.CreateCustomer(ctx, CustomerSpec{ID: "c"}); err != nil {
		t.Fatal(err)
	}
	topup := func() {
		t.Helper()
		if _, err := e.ApplyCustomerTopup(ctx, "c", "t"); err != nil {
			t.Fatal(err)
		}
	}
	credit := p.Credit("tok")
	limit := num.MustParse("10")
	// checkMargin rates a delta and compares it with the margin of its period.
	checkMargin := func(usage, granted num.Dec, wantRevenue, wantCovered string) {
		t.Helper()
		rev, cov, err := RateOverage(p, credit, usage, limit, granted)
		if err != nil {
			t.Fatal(err)
		}
		if !rev.Equal(num.MustParse(wantRevenue)) || !cov.Equal(num.MustParse(wantCovered)) {
			t.Fatalf("RateOverage(%s, %s) = %s, %s; want %s, %s", usage, granted, rev, cov, wantRevenue, wantCovered)
		}
		m, err := e.CustomerMarginSnapshot(ctx, "c")
		if err != nil {
			t.Fatal(err)
		}
		em := m.Entitlements["e"]
		if em.Revenue != num.Float64(rev) || em.GrantCoveredRevenue != num.Float64(cov) {
			t.Fatalf("margin %+v, rated revenue %s and grant-covered %s", em, rev, cov)
		}
	}

	// Day 1: 8 inside the limit, then 2 over paid by the grant, then 6 over of which the
	// grant's last 3 are paid and 3 billed.
	topup()
	allow(t, e, "8")
	allow(t, e, "4")
	allow(t, e, "6")
	checkMargin(num.MustParse("18"), num.MustParse("5"), "16", "10")

	// Day 2, before any drain: day 1's sums close with their own coverage.
	now = now.Add(25 * time.Hour)
	topup()
	allow(t, e, "12") // 2 over, paid by the new grant
	allow(t, e, "1")  // 1 over, paid by it too
	checkMargin(num.MustParse("13"), num.MustParse("3"), "6", "6")

	id, deltas := e.DrainUsage(ctx, 0)
	if len(deltas) != 2 {
		t.Fatalf("deltas %+v", deltas)
	}
	day1, day2 := deltas[0], deltas[1]
	if !day1.PeriodStart.Before(day2.PeriodStart) {
		day1, day2 = day2, day1
	}
	if !day1.Units.Equal(num.MustParse("18")) || !day1.GrantCovered.Equal(num.MustParse("5")) || day1.Calls != 3 {
		t.Fatalf("day 1 delta %+v, want 18 units, 5 grant-covered", day1)
	}
	if !day2.Units.Equal(num.MustParse("13")) || !day2.GrantCovered.Equal(num.MustParse("3")) || day2.Calls != 2 {
		t.Fatalf("day 2 delta %+v, want 13 units, 3 grant-covered", day2)
	}
	checkMargin(day2.Units, day2.GrantCovered, "6", "6")

	// A refused batch comes back whole, coverage included, and the pending sums restart
	// at 0: 3 more over take the grant's last 2 and bill 1.
	e.RequeueUsage(id, deltas)
	allow(t, e, "3")
	_, again := e.DrainUsage(ctx, 0)
	if len(again) != 3 {
		t.Fatalf("after requeue %+v, want the 2 requeued deltas and a new one", again)
	}
	for i, want := range []string{"5", "3", "2"} {
		if d := again[i]; !d.GrantCovered.Equal(num.MustParse(want)) {
			t.Fatalf("delta %d after requeue %+v, want grant-covered %s", i, d, want)
		}
	}
	checkMargin(num.MustParse("16"), num.MustParse("5"), "12", "10")
}
