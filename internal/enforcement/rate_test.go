package enforcement

import (
	"errors"
	"testing"

	"github.com/limitr/limitr/internal/billing/rating"
	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/policies"
	"github.com/limitr/limitr/internal/policies/doctree"
)

// ratePolicy has one credit per price path: its own curve (each model), only the
// exchange (abstract ai_credit, and a credit that drains into a tiered one), both (the
// own curve wins), and none.
const ratePolicy = `{"policy": {
  "credits": {
    "flat":   {"price": {"amount": 2}},
    "tiered": {"pricing_model": "tiered", "tiers": [{"up_to": 10, "price": {"amount": 1}}, {"price": {"amount": 0.5}}]},
    "volume": {"pricing_model": "volume", "tiers": [{"up_to": 10, "price": {"amount": 1}}, {"price": {"amount": 0.5}}]},
    "stair":  {"pricing_model": "stairstep", "tiers": [{"up_to": 10, "price": {"amount": 5}}, {"up_to": 20, "price": {"amount": 8}}, {"price": {"amount": 10}}]},
    "abstract": {}, "ai_credit": {}, "via": {},
    "both":   {"price": {"amount": 2}},
    "orphan": {},
    "dear":   {"price": {"amount": 1000}}
  },
  "exchange": {
    "abstract":  {"value": 1, "currency": "rune"},
    "ai_credit": {"value": 1.25, "currency": "abstract"},
    "via":       {"value": 2, "currency": "tiered"},
    "both":      {"value": 3, "currency": "rune"}
  },
  "plans": {"p": {"default": true, "entitlements": {"e": {"limit": {"credit": "flat", "mode": "soft", "value": 10}}}}}
}}`

func TestRateOverage(t *testing.T) {
	p, err := policies.Load([]byte(ratePolicy), doctree.FormatJSON)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name                  string
		credit                string
		usage, limit, granted string
		revenue, grantCovered string
		noPrice, outOfRange   bool
	}{
		{name: "flat", credit: "flat", usage: "15", limit: "10", granted: "0", revenue: "10", grantCovered: "0"},
		{name: "flat, no limit", credit: "flat", usage: "3.5", limit: "0", granted: "0", revenue: "7", grantCovered: "0"},
		{name: "flat, grants pay part", credit: "flat", usage: "15", limit: "10", granted: "2", revenue: "10", grantCovered: "4"},
		{name: "flat, grants pay all", credit: "flat", usage: "15", limit: "10", granted: "5", revenue: "10", grantCovered: "10"},
		{name: "flat, grants cover more than revenue", credit: "flat", usage: "15", limit: "10", granted: "8", revenue: "10", grantCovered: "10"},
		{name: "usage below the limit", credit: "flat", usage: "8", limit: "10", granted: "3", revenue: "0", grantCovered: "0"},
		{name: "usage at the limit", credit: "flat", usage: "10", limit: "10", granted: "0", revenue: "0", grantCovered: "0"},
		{name: "negative granted counts as none", credit: "flat", usage: "15", limit: "10", granted: "-1", revenue: "10", grantCovered: "0"},
		// 15 billable: 10 at 1, 5 at 0.5; 12 granted: 10 at 1, 2 at 0.5.
		{name: "tiered", credit: "tiered", usage: "20", limit: "5", granted: "12", revenue: "12.5", grantCovered: "11"},
		// 15 billable all at 0.5; 10 granted alone would be 10 at 1, capped at revenue.
		{name: "volume, coverage capped", credit: "volume", usage: "20", limit: "5", granted: "10", revenue: "7.5", grantCovered: "7.5"},
		{name: "volume, part", credit: "volume", usage: "20", limit: "5", granted: "4", revenue: "7.5", grantCovered: "4"},
		// 15 billable: the (10, 20] band's fee; 5 granted: the first band's fee.
		{name: "stairstep", credit: "stair", usage: "20", limit: "5", granted: "5", revenue: "8", grantCovered: "5"},
		{name: "exchange only: 1 ai_credit = 1.25 rune", credit: "ai_credit", usage: "14", limit: "10", granted: "2", revenue: "5", grantCovered: "2.5"},
		{name: "exchange only, 1:1", credit: "abstract", usage: "3", limit: "0", granted: "3", revenue: "3", grantCovered: "3"},
		// 8 via = 16 tiered: 10 at 1 + 6 at 0.5.
		{name: "exchange into a tiered credit", credit: "via", usage: "8", limit: "0", granted: "1", revenue: "13", grantCovered: "2"},
		{name: "own price wins over an exchange pair", credit: "both", usage: "15", limit: "10", granted: "1", revenue: "10", grantCovered: "2"},
		{name: "no price path", credit: "orphan", usage: "15", limit: "10", granted: "1", revenue: "0", grantCovered: "0", noPrice: true},
		{name: "no price path, nothing to price", credit: "orphan", usage: "5", limit: "10", granted: "0", revenue: "0", grantCovered: "0"},
		{name: "out of range", credit: "dear", usage: "900000000000000000", limit: "0", granted: "0", revenue: "0", grantCovered: "0", outOfRange: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			credit := p.Credit(tc.credit)
			if credit == nil {
				t.Fatalf("no credit %q", tc.credit)
			}
			rev, cov, err := RateOverage(p, credit, num.MustParse(tc.usage), num.MustParse(tc.limit), num.MustParse(tc.granted))
			switch {
			case tc.noPrice:
				if !errors.Is(err, rating.ErrNoPrice) {
					t.Fatalf("err = %v, want rating.ErrNoPrice", err)
				}
			case tc.outOfRange:
				if !errors.Is(err, num.ErrOutOfRange) {
					t.Fatalf("err = %v, want num.ErrOutOfRange", err)
				}
			case err != nil:
				t.Fatal(err)
			}
			if !rev.Equal(num.MustParse(tc.revenue)) || !cov.Equal(num.MustParse(tc.grantCovered)) {
				t.Fatalf("RateOverage = %s, %s; want %s, %s", rev, cov, tc.revenue, tc.grantCovered)
			}
		})
	}
	if _, _, err := RateOverage(p, nil, num.One, num.Zero, num.Zero); !errors.Is(err, rating.ErrNoPrice) {
		t.Fatalf("nil credit: %v, want rating.ErrNoPrice", err)
	}
}
