package analytics

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/limitr/limitr/internal/customers"
	"github.com/limitr/limitr/internal/num"
)

// The revenue analytics report for a billing period is what that period's invoices
// bill, to the cent, per customer and in total: usage booked as it arrives over a
// month (tiered and volume curves priced as a whole, not per delivery), plan fees with
// a trial, a level billed again every period, daily meters, and late usage after the
// invoice was finalized (billed and booked in the next period).
func TestRevenueEqualsInvoices(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.customer("acme", "basic")
	h.customer("globex", "pro")
	h.customer("initech", "")
	steps := []struct {
		at              time.Time
		customer, ent   string
		period          time.Time
		units, overhead string
	}{
		{jan1.AddDate(0, 0, 2), "acme", "images", jan1, "80", "0.5"},
		{jan1.AddDate(0, 0, 2), "acme", "minutes", jan1, "900", "2"},
		{jan1.AddDate(0, 0, 2), "acme", "seats", jan1, "4", "0"},
		{jan1.AddDate(0, 0, 9), "acme", "images", jan1, "700", "3.25"}, // crosses the 100 and 1,000 tiers in two deliveries
		{jan1.AddDate(0, 0, 9), "acme", "minutes", jan1, "400", "1"},   // the volume price of all 1,300 drops a tier
		{jan1.AddDate(0, 0, 9), "globex", "tokens", jan1, "4000000", "11"},
		{jan1.AddDate(0, 0, 19), "globex", "tokens", jan1, "2500000", "7"},
		{jan1.AddDate(0, 0, 19), "globex", "daily_calls", jan1.AddDate(0, 0, 19), "1500", "0.1"},
		{jan1.AddDate(0, 0, 20), "globex", "daily_calls", jan1.AddDate(0, 0, 20), "999", "0.1"},
		{jan1.AddDate(0, 0, 21), "acme", "tokens", jan1, "1700000|300000", "2"}, // grants paid for 300,000 of the 700,000 over
		{jan1.AddDate(0, 0, 27), "initech", "assistant", jan1, "5000", "4.4"},
		{jan1.AddDate(0, 0, 27), "initech", "images", jan1, "1234", "1"},
		{jan1.AddDate(0, 0, 30).Add(23 * time.Hour), "acme", "minutes", jan1, "8700", "9"},
	}
	for _, s := range steps {
		h.at(s.at)
		units, granted, _ := strings.Cut(s.units, "|")
		h.usageGranted(s.customer, s.ent, s.period, units, granted, s.overhead)
		h.book()
	}
	feb1, mar1 := jan1.AddDate(0, 1, 0), jan1.AddDate(0, 2, 0)
	h.close(feb1.Add(30 * time.Minute))
	h.close(feb1.Add(2 * time.Hour)) // past the grace: finalized
	// Late usage for January, after its invoice was finalized: an adjustment on
	// February's invoice, booked in February.
	h.at(feb1.AddDate(0, 0, 3))
	h.usage("acme", "images", jan1, "500", "1")
	h.usage("acme", "images", feb1, "60", "0.2")
	h.book()
	h.close(mar1.Add(30 * time.Minute))
	h.close(mar1.Add(2 * time.Hour))
	h.book() // the level and the fees of March's period

	for _, month := range []time.Time{jan1, feb1} {
		want := h.invoiced(month)
		if len(want) != 3 {
			t.Fatalf("%s: invoices %v", month.Format("Jan"), want)
		}
		m, err := h.svc.Margins(h.ctx, h.env, MarginsQuery{From: month, To: month.AddDate(0, 1, 0), Interval: Month, Sort: "key"})
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, g := range m.Groups {
			got[g.Key] = g.Totals.Revenue
			if len(g.Series) != 1 || g.Series[0].Revenue != g.Totals.Revenue || !g.Series[0].Start.Equal(month) {
				t.Fatalf("%s: series of %s: %+v", month.Format("Jan"), g.Key, g.Series)
			}
		}
		total := num.Zero
		for id, inv := range want {
			if !num.MustParse(inv).Equal(num.MustParse(got[id])) {
				t.Errorf("%s: %s invoiced %s, analytics say %s", month.Format("Jan"), id, inv, got[id])
			}
			total, _ = total.Add(num.MustParse(inv))
		}
		if !total.Equal(num.MustParse(m.Totals.Revenue)) {
			t.Errorf("%s: invoices total %s, analytics total %s", month.Format("Jan"), total, m.Totals.Revenue)
		}
		byPlan, err := h.svc.Margins(h.ctx, h.env, MarginsQuery{GroupBy: ByPlan, From: month, To: month.AddDate(0, 1, 0), Interval: Day})
		if err != nil {
			t.Fatal(err)
		}
		if !sameFigures(byPlan.Totals, m.Totals) {
			t.Errorf("%s: totals by plan %+v, by customer %+v", month.Format("Jan"), byPlan.Totals, m.Totals)
		}
	}
	// Booking again changes nothing.
	if b := h.book(); b.Meters != 0 || b.Fees != 0 || b.Changes != 0 {
		t.Fatalf("a second booking wrote %+v", b)
	}
}

func sameFigures(a, b Figures) bool {
	pa, pb := "", ""
	if a.MarginPercent != nil {
		pa = *a.MarginPercent
	}
	if b.MarginPercent != nil {
		pb = *b.MarginPercent
	}
	a.MarginPercent, b.MarginPercent = nil, nil
	return a == b && pa == pb
}

// A customer on real time: what is booked for its current period is the upcoming
// invoice's total as usage arrives, and stays so when a publish reprices its open
// meter periods (booked when the publish is seen).
func TestBookedFollowsTheUpcomingInvoice(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	if _, err := h.custs.Create(h.ctx, h.env, customers.CreateInput{ID: "rt", Plan: "basic"}); err != nil {
		t.Fatal(err)
	}
	c, err := h.custs.GetRecord(h.ctx, h.env, "rt")
	if err != nil {
		t.Fatal(err)
	}
	h.uids["rt"] = c.UID
	up, err := h.bill.Upcoming(h.ctx, h.env, "rt")
	if err != nil {
		t.Fatal(err)
	}
	start := up.PeriodStart
	check := func(when string) {
		t.Helper()
		up, err := h.bill.Upcoming(h.ctx, h.env, "rt")
		if err != nil {
			t.Fatal(err)
		}
		m, err := h.svc.Margins(h.ctx, h.env, MarginsQuery{From: start, Interval: Hour})
		if err != nil {
			t.Fatal(err)
		}
		if len(m.Groups) != 1 || m.Groups[0].Totals.Revenue != up.Total {
			t.Fatalf("%s: upcoming invoice %s, booked %+v", when, up.Total, m.Groups)
		}
		live, err := h.svc.CustomerMargin(h.ctx, h.env, "rt")
		if err != nil {
			t.Fatal(err)
		}
		if live.Totals.Revenue != up.Total {
			t.Fatalf("%s: upcoming invoice %s, live margin %+v", when, up.Total, live.Totals)
		}
	}
	h.usage("rt", "images", start, "80", "0.5")
	h.usage("rt", "minutes", start, "900", "1")
	h.book()
	check("first usage")
	h.usage("rt", "images", start, "300", "0.5")
	h.usage("rt", "minutes", start, "400", "1")
	h.book()
	check("more usage")
	src, err := os.ReadFile("../billing/testdata/policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	h.publish(strings.Replace(string(src), "{ up_to: 100, price: { amount: 0.04 } }", "{ up_to: 100, price: { amount: 0.05 } }", 1))
	if b := h.book(); b.Changes != 1 {
		t.Fatalf("the reprice booked %+v, want one change (images)", b)
	}
	check("after the publish")
	// Committed but not aggregated yet: the live margin has it, the rollups not yet.
	h.usage("rt", "images", start, "1000", "0.5")
	live, err := h.svc.CustomerMargin(h.ctx, h.env, "rt")
	if err != nil {
		t.Fatal(err)
	}
	var images EntitlementMargin
	for _, e := range live.Entitlements {
		if e.Entitlement == "images" {
			images = e
		}
	}
	if images.Units != "1380" || images.Calls != 3 {
		t.Fatalf("live images: %+v", images)
	}
	h.book()
	check("after aggregation")
}
