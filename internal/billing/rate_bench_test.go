package billing

import (
	"testing"

	"github.com/limitr/limitr/internal/num"
)

// BenchmarkRate rates one period of a customer on the golden policy's basic plan: the
// plan fee and its five metered entitlements (flat, tiered, volume, a stairstep level
// and a credit priced through the exchange), one meter period each. Closing a period
// rates every customer once, so this is the pure part of each invoice's cost.
//
//	go test ./internal/billing -run '^$' -bench Rate -benchmem
func BenchmarkRate(b *testing.B) {
	p := loadPolicy(b, "testdata/policy.yaml")
	created := at("2026-01-10T09:30:00Z")
	per := Period{Start: at("2026-02-10T00:00:00Z"), End: at("2026-03-10T00:00:00Z")}
	meter := func(ent, start, units, granted string) MeterUsage {
		return MeterUsage{Entitlement: ent, PeriodStart: at(start), Units: d(units), GrantCovered: d(granted)}
	}
	in := RatingInput{Currency: "USD", RuneRate: num.One, Versions: oneVersion{number: 3, policy: p}, Period: per, Now: per.End,
		Customer: Subject{ID: "acme", ResolvedPlan: "basic", CreatedAt: created, Anchor: created,
			Plans: []PlanSpan{{Plan: "basic", From: created}}},
		Meters: []MeterUsage{
			meter("tokens", "2026-02-10T00:00:00Z", "1600000", "250000"),
			meter("images", "2026-02-10T00:00:00Z", "1250", "0"),
			meter("minutes", "2026-02-10T00:00:00Z", "12345", "0"),
			meter("seats", "2026-01-10T09:30:00Z", "9", "0"),
			meter("assistant", "2026-02-10T00:00:00Z", "5000", "0"),
		}}
	r, err := Rate(in)
	if err != nil {
		b.Fatal(err)
	}
	// 20 plan fee + 12 tokens − 5 of them paid by grants + 34 images + 86.42 minutes
	// + 80 seats + 50 assistant.
	if got := r.Total.Pad(2).String(); got != "277.42" || len(r.Lines) != 7 || len(r.Bills) != 4 {
		b.Fatalf("total %s, %d lines, %d bills", got, len(r.Lines), len(r.Bills))
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Rate(in); err != nil {
			b.Fatal(err)
		}
	}
}
