package replay

import (
	"fmt"
	"slices"
	"time"

	"github.com/limitr/limitr/internal/billing"
	"github.com/limitr/limitr/internal/billing/money"
	"github.com/limitr/limitr/internal/num"
)

// Report is a replay's outcome. Money is in Currency as decimal strings rounded to its
// minor unit; units are exact decimals in the entitlement's credit.
type Report struct {
	Window   Window `json:"window"`
	Currency string `json:"currency"`
	// CurrentVersion is the version the usage is billed with; CandidateVersion the one
	// it is priced with (null for a document that is not a saved version).
	CurrentVersion   int              `json:"current_version"`
	CandidateVersion *int             `json:"candidate_version"`
	Totals           Totals           `json:"totals"`
	Customers        []CustomerReport `json:"customers"`
}

// Figures are revenue (what the invoices bill), cost (what the billed usage cost the
// provider) and margin (revenue less cost).
type Figures struct {
	Revenue string `json:"revenue"`
	Cost    string `json:"cost"`
	Margin  string `json:"margin"`
}

// Totals sum the customers' figures (each rounded first, as invoice totals are sums
// of rounded lines) and count the enforcement changes.
type Totals struct {
	// Customers counts the customers with a billing period in the window.
	Customers  int     `json:"customers"`
	Current    Figures `json:"current"`
	Candidate  Figures `json:"candidate"`
	Difference Figures `json:"difference"`
	// CustomersHittingHardLimits reach a hard limit of the candidate; CustomersDenied
	// go past one (some of their usage would have been refused).
	CustomersHittingHardLimits int `json:"customers_hitting_hard_limits"`
	CustomersDenied            int `json:"customers_denied"`
	// CustomersOutOfGrants used more grant-paid usage than the candidate's grants give.
	CustomersOutOfGrants int                `json:"customers_out_of_grants"`
	DeniedUnits          []EntitlementUnits `json:"denied_units"`
	GrantShortfall       []CreditUnits      `json:"grant_shortfall"`
}

// EntitlementUnits is an amount of an entitlement's usage.
type EntitlementUnits struct {
	Entitlement string `json:"entitlement"`
	Units       string `json:"units"`
}

// CreditUnits is an amount of a credit.
type CreditUnits struct {
	Credit string `json:"credit"`
	Units  string `json:"units"`
}

// CustomerReport is one customer's replay.
type CustomerReport struct {
	Customer string `json:"customer"`
	Plan     string `json:"plan"`
	// Periods are the billing periods replayed: those ending in the window.
	Periods    []billing.Period `json:"periods"`
	Current    Figures          `json:"current"`
	Candidate  Figures          `json:"candidate"`
	Difference Figures          `json:"difference"`
	HardLimits []HardLimitHit   `json:"hard_limits,omitempty"`
	Grants     []GrantRunOut    `json:"grants_run_out,omitempty"`

	current, candidate totals
}

// HardLimitHit is a meter period that reaches a hard limit of the candidate.
type HardLimitHit struct {
	Entitlement string    `json:"entitlement"`
	PeriodStart time.Time `json:"period_start"`
	Limit       string    `json:"limit"`
	// Units is the committed usage; Denied what the candidate would have refused.
	Units  string `json:"units"`
	Denied string `json:"denied"`
}

// GrantRunOut is a credit whose grant-paid usage in a billing period exceeds what the
// candidate's grants give; the shortfall is billed (or denied by a hard limit).
type GrantRunOut struct {
	Credit      string    `json:"credit"`
	PeriodStart time.Time `json:"period_start"`
	Covered     string    `json:"covered"`
	Available   string    `json:"available"`
	Shortfall   string    `json:"shortfall"`
}

// builder accumulates the report.
type builder struct {
	in        Input
	customers []CustomerReport
	cur, cand totals
	hitting   int
	denying   int
	outOf     int
	denied    map[string]num.Dec
	shortfall map[string]num.Dec
	calc      num.Calc
}

func newBuilder(in Input) *builder {
	return &builder{in: in, customers: make([]CustomerReport, 0, len(in.Customers)),
		denied: map[string]num.Dec{}, shortfall: map[string]num.Dec{}}
}

func (b *builder) add(cr *CustomerReport) {
	c := &b.calc
	b.cur.revenue = c.Add(b.cur.revenue, cr.current.revenue)
	b.cur.cost = c.Add(b.cur.cost, cr.current.cost)
	b.cand.revenue = c.Add(b.cand.revenue, cr.candidate.revenue)
	b.cand.cost = c.Add(b.cand.cost, cr.candidate.cost)
	if len(cr.HardLimits) > 0 {
		b.hitting++
	}
	denies := false
	for _, h := range cr.HardLimits {
		d, _ := num.Parse(h.Denied)
		if d.IsPos() {
			denies = true
			b.denied[h.Entitlement] = c.Add(b.denied[h.Entitlement], d)
		}
	}
	if denies {
		b.denying++
	}
	if len(cr.Grants) > 0 {
		b.outOf++
	}
	for _, g := range cr.Grants {
		s, _ := num.Parse(g.Shortfall)
		b.shortfall[g.Credit] = c.Add(b.shortfall[g.Credit], s)
	}
	b.customers = append(b.customers, *cr)
}

func (b *builder) finish() (*Report, error) {
	r := &Report{Window: Window{From: b.in.Window.From.UTC(), To: b.in.Window.To.UTC()}, Currency: b.in.Currency,
		CurrentVersion: b.in.Current.Version, Customers: b.customers}
	if b.in.Candidate.Version > 0 {
		v := b.in.Candidate.Version
		r.CandidateVersion = &v
	}
	if b.calc.Err != nil {
		return nil, fmt.Errorf("%w: %w", errOverflow, b.calc.Err)
	}
	for i := range r.Customers {
		cr := &r.Customers[i]
		var err error
		if cr.Current, cr.Candidate, cr.Difference, err = b.figures(cr.current, cr.candidate); err != nil {
			return nil, err
		}
	}
	sortCustomers(r.Customers)
	t := &r.Totals
	t.Customers = len(r.Customers)
	var err error
	if t.Current, t.Candidate, t.Difference, err = b.figures(b.cur, b.cand); err != nil {
		return nil, err
	}
	t.CustomersHittingHardLimits, t.CustomersDenied, t.CustomersOutOfGrants = b.hitting, b.denying, b.outOf
	t.DeniedUnits = make([]EntitlementUnits, 0, len(b.denied))
	for _, ent := range sortedKeys(b.denied) {
		t.DeniedUnits = append(t.DeniedUnits, EntitlementUnits{Entitlement: ent, Units: dec(b.denied[ent])})
	}
	t.GrantShortfall = make([]CreditUnits, 0, len(b.shortfall))
	for _, cr := range sortedKeys(b.shortfall) {
		t.GrantShortfall = append(t.GrantShortfall, CreditUnits{Credit: cr, Units: dec(b.shortfall[cr])})
	}
	return r, nil
}

// figures formats the current and candidate figures and their difference (candidate
// less current).
func (b *builder) figures(cur, cand totals) (now, then, diff Figures, err error) {
	var c num.Calc
	curMargin, candMargin := c.Sub(cur.revenue, cur.cost), c.Sub(cand.revenue, cand.cost)
	d := totals{revenue: c.Sub(cand.revenue, cur.revenue), cost: c.Sub(cand.cost, cur.cost)}
	dMargin := c.Sub(candMargin, curMargin)
	if c.Err != nil {
		return now, then, diff, fmt.Errorf("%w: %w", errOverflow, c.Err)
	}
	if now, err = b.format(cur.revenue, cur.cost, curMargin); err != nil {
		return
	}
	if then, err = b.format(cand.revenue, cand.cost, candMargin); err != nil {
		return
	}
	diff, err = b.format(d.revenue, d.cost, dMargin)
	return
}

func (b *builder) format(revenue, cost, margin num.Dec) (Figures, error) {
	var f Figures
	var err error
	if f.Revenue, err = money.Format(revenue, b.in.Currency); err != nil {
		return f, err
	}
	if f.Cost, err = money.Format(cost, b.in.Currency); err != nil {
		return f, err
	}
	f.Margin, err = money.Format(margin, b.in.Currency)
	return f, err
}

func sortedKeys(m map[string]num.Dec) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
