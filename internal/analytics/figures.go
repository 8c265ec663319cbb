package analytics

import (
	"fmt"
	"time"

	"github.com/limitr/limitr/internal/billing/money"
	"github.com/limitr/limitr/internal/num"
)

// Figures are revenue, cost and margin over a window. Money is a decimal string in the
// environment's currency. Revenue is as invoiced: usage net of what grants paid, plus
// plan fees, plus topups bought. Cost is the provider's cost of the usage, rounded to
// the currency; margin is revenue minus cost, and margin_percent its share of revenue
// (null without revenue).
type Figures struct {
	Revenue             string  `json:"revenue"`
	UsageRevenue        string  `json:"usage_revenue"`
	GrantCoveredRevenue string  `json:"grant_covered_revenue"`
	FeeRevenue          string  `json:"fee_revenue"`
	TopupRevenue        string  `json:"topup_revenue"`
	Cost                string  `json:"cost"`
	Margin              string  `json:"margin"`
	MarginPercent       *string `json:"margin_percent"`
	Calls               int64   `json:"calls"`
}

// sumsRow are the summed columns as read from a rollup (numeric as text).
type sumsRow struct {
	calls                int64
	cost, ur, gr, fr, tr string
	start                time.Time
	key                  string
}

func (r sumsRow) figures(currency string) (Figures, error) {
	var c num.Calc
	cost, ur, gr, fr, tr := c.Parse(r.cost), c.Parse(r.ur), c.Parse(r.gr), c.Parse(r.fr), c.Parse(r.tr)
	if c.Err != nil {
		return Figures{}, fmt.Errorf("analytics: figures: %w", c.Err)
	}
	return makeFigures(currency, r.calls, cost, ur, gr, fr, tr)
}

func makeFigures(currency string, calls int64, cost, usage, grant, fee, topup num.Dec) (Figures, error) {
	var c num.Calc
	revenue := c.Add(c.Add(c.Sub(usage, grant), fee), topup)
	costR, err := money.RoundTo(cost, currency)
	if err != nil {
		return Figures{}, err
	}
	margin := c.Sub(revenue, costR)
	f := Figures{Calls: calls}
	for _, x := range []struct {
		out *string
		v   num.Dec
	}{{&f.Revenue, revenue}, {&f.UsageRevenue, usage}, {&f.GrantCoveredRevenue, grant}, {&f.FeeRevenue, fee},
		{&f.TopupRevenue, topup}, {&f.Cost, costR}, {&f.Margin, margin}} {
		s, err := money.Format(x.v, currency)
		if err != nil {
			return Figures{}, err
		}
		*x.out = s
	}
	if !revenue.IsZero() {
		pct := c.Mul(c.Quo(margin, revenue), num.Hundred)
		s := money.Round(pct, 2).Pad(2).String()
		f.MarginPercent = &s
	}
	if c.Err != nil {
		return Figures{}, fmt.Errorf("analytics: figures: %w", c.Err)
	}
	return f, nil
}
