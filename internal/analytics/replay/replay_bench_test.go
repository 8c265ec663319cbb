package replay

import (
	"fmt"
	"testing"
	"time"

	"github.com/limitr/limitr/internal/billing"
	"github.com/limitr/limitr/internal/num"
)

// BenchCustomers builds n customers of the golden policy's plan, each with one month
// of usage on five entitlements (tokens, images and minutes, plus two metered on the
// same credits), the shape of the replay budget: one month × 10k customers × 5
// entitlements.
func benchCustomers(n int) []billing.ReplayCustomer {
	out := make([]billing.ReplayCustomer, n)
	start := at("2026-02-01T00:00:00Z")
	for i := range out {
		c := customer(fmt.Sprintf("c%05d", i))
		u := int64(i % 1000)
		c.Meters = []billing.MeterUsage{
			{Entitlement: "tokens", PeriodStart: start, Units: num.FromInt(900_000 + u*1000), GrantCovered: num.FromInt(u * 100), Overhead: num.FromInt(4)},
			{Entitlement: "images", PeriodStart: start, Units: num.FromInt(700 + u/3), Overhead: num.FromInt(7)},
			{Entitlement: "minutes", PeriodStart: start, Units: num.FromInt(u), Overhead: num.One},
			{Entitlement: "tokens2", PeriodStart: start, Units: num.FromInt(u * 50), Overhead: num.One},
			{Entitlement: "minutes2", PeriodStart: start, Units: num.FromInt(u / 2), Overhead: num.One},
		}
		out[i] = c
	}
	return out
}

const benchEntitlements = `        tokens2: { limit: { credit: token, mode: soft, value: 10000, resets: true, reset_sch: 'monthly:anchor' } }
        minutes2: { limit: { credit: minute, mode: hard, value: 400, resets: true, reset_sch: 'monthly:anchor' } }
      topups:`

// BenchmarkReplay10kCustomers replays one month of 10k customers × 5 entitlements
// through the current policy and a candidate with a lower hard limit, a cheaper tier
// and smaller grants (so every customer is rated twice or three times).
func BenchmarkReplay10kCustomers(b *testing.B) {
	cur := edit(b, currentSource(b), "      topups:", benchEntitlements)
	cand := edit(b, cur, "mode: hard, value: 1000,", "mode: hard, value: 850,",
		"- { price: { amount: 0.03 } }", "- { price: { amount: 0.02 } }",
		"value: 500000, resets: true, included: true", "value: 50000, resets: true, included: true")
	in := Input{Currency: "USD", Window: february, Current: Policy{Version: 1, Policy: load(b, cur)},
		Candidate: Policy{Version: 2, Policy: load(b, cand)}, Customers: benchCustomers(10_000)}
	b.ReportAllocs()
	var rep *Report
	start := time.Now()
	for b.Loop() {
		var err error
		if rep, err = Run(in); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(time.Since(start).Milliseconds())/float64(b.N), "ms/replay")
	if rep.Totals.Customers != 10_000 || rep.Totals.CustomersDenied == 0 || rep.Totals.CustomersOutOfGrants == 0 {
		b.Fatalf("the bench replays nothing interesting: %+v", rep.Totals)
	}
}
