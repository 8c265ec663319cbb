// Package replay prices a pricing change before it ships: it replays a window of
// committed usage through the current policy and a candidate, and reports per
// customer and in total the revenue, cost and margin under each, their difference,
// and what enforcement would have done differently (hard limits hit, units denied,
// grants run out).
//
// It is pure: usage comes in memory (from Postgres in internal/analytics/simulate, from
// a CSV in `limitr simulate`), and revenue is billing's own rating (billing.Replay,
// which is billing.Rate), so the "current" figures are what the invoices bill.
package replay

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/limitr/limitr/internal/billing"
	"github.com/limitr/limitr/internal/billing/money"
	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/policies"
	"github.com/limitr/limitr/internal/validation"
)

// ErrInvalid wraps every input error (also a *validation.Error naming the field).
var ErrInvalid = validation.ErrInvalid

// MaxWindow bounds a replay window: a year and a day.
const MaxWindow = 367 * 24 * time.Hour

// Policy is a policy version a replay rates with. Version is 0 for a document that
// is not a saved version.
type Policy struct {
	Version int
	Policy  *policies.Policy
}

// Window is the replayed time range. A customer's billing periods that end inside it,
// From exclusive and To inclusive, are replayed: each is one invoice. A window that
// reaches the present (To at or after Input.Now) also replays each customer's period
// in progress, rated as it stands, as its upcoming invoice is.
type Window struct {
	From time.Time `json:"from"`
	To   time.Time `json:"to"`
}

// Input is a replay.
type Input struct {
	Currency string
	// RuneRate is the value of one rune in Currency (zero: 1).
	RuneRate  num.Dec
	Current   Policy
	Candidate Policy
	Window    Window
	// Now is the present: a window reaching it replays the periods in progress too
	// (zero: only periods that ended).
	Now time.Time
	// Customers are rated in their order; the report lists them by id.
	Customers []billing.ReplayCustomer
}

// Validate checks every field, naming it.
func (in Input) Validate() error {
	var errs validation.Errors
	if _, err := money.Normalize(in.Currency); err != nil {
		errs.Add("currency", "must be an ISO 4217 currency code, like USD")
	}
	if in.RuneRate.IsNeg() {
		errs.Add("rune_rate", "must not be negative")
	}
	if in.Current.Policy == nil {
		errs.Add("current", "is required: the policy the usage is billed with")
	}
	if in.Candidate.Policy == nil {
		errs.Add("candidate", "is required: the policy to price the usage with")
	}
	errs.AddField(in.Window.check())
	return errs.Err("invalid replay")
}

func (w Window) check() *validation.FieldError {
	switch {
	case w.From.IsZero() || w.To.IsZero():
		return &validation.FieldError{Path: "window", Message: "needs both from and to"}
	case !w.From.Before(w.To):
		return &validation.FieldError{Path: "window.to", Message: "must be after from"}
	case w.To.Sub(w.From) > MaxWindow:
		return &validation.FieldError{Path: "window.to", Message: "must be at most 367 days after from"}
	}
	return nil
}

// LastFullMonth is the default window at now: the last whole calendar month in UTC.
// Billing periods are monthly per customer (from its anchor), so each customer has
// one billing period ending in it: the last one that ended in that month.
func LastFullMonth(now time.Time) Window {
	now = now.UTC()
	to := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
	return Window{From: to.AddDate(0, -1, 0), To: to}
}

// Run replays in. The customers are rated one after the other; a customer whose
// usage cannot be rated fails the replay with its id.
func Run(in Input) (*Report, error) {
	if err := in.Validate(); err != nil {
		return nil, err
	}
	if in.RuneRate.IsZero() {
		in.RuneRate = num.One
	}
	b := newBuilder(in)
	for i := range in.Customers {
		c := &in.Customers[i]
		cr, err := b.customer(c)
		if err != nil {
			return nil, fmt.Errorf("replay: customer %q: %w", c.Subject.ID, err)
		}
		if cr != nil {
			b.add(cr)
		}
	}
	return b.finish()
}

// versions is one policy standing for every instant, as a replay rates a whole window
// with it.
type versions Policy

func (v versions) At(time.Time) (billing.Version, error) {
	return billing.Version{Number: v.Version, Policy: v.Policy}, nil
}

func (v versions) Number(int) (billing.Version, error) {
	return billing.Version{Number: v.Version, Policy: v.Policy}, nil
}

// periods lists the customer's billing periods that end inside the window, and the
// one in progress at now when the window reaches it.
func periods(sub billing.Subject, p *policies.Policy, w Window, now time.Time) []billing.Period {
	loc := sub.Location
	if loc == nil {
		loc = p.Location
	}
	var out []billing.Period
	per := billing.PeriodAt(w.From, sub.CreatedAt, sub.Anchor, loc)
	for !per.End.After(w.From) {
		per = billing.NextPeriod(per, sub.CreatedAt, sub.Anchor, loc)
	}
	for !per.End.After(w.To) {
		out = append(out, per)
		next := billing.NextPeriod(per, sub.CreatedAt, sub.Anchor, loc)
		if !next.End.After(per.End) {
			break // cannot happen with monthly periods; never loop forever
		}
		per = next
	}
	if !now.IsZero() && !w.To.Before(now) && !per.Start.After(now) && per.End.After(now) && per.End.After(w.From) {
		out = append(out, per)
	}
	return out
}

// rate rates one period of a customer with one policy.
func (b *builder) rate(pol Policy, sub billing.Subject, per billing.Period, meters []billing.MeterUsage) (billing.Replayed, error) {
	return billing.Replay(billing.RatingInput{Currency: b.in.Currency, RuneRate: b.in.RuneRate, Versions: versions(pol),
		Customer: sub, Period: per, Meters: meters, Now: per.End})
}

// customer replays every period of one customer; nil when none ends in the window.
func (b *builder) customer(c *billing.ReplayCustomer) (*CustomerReport, error) {
	pers := periods(c.Subject, b.in.Current.Policy, b.in.Window, b.in.Now)
	if len(pers) == 0 {
		return nil, nil
	}
	cr := &CustomerReport{Customer: c.Subject.ID, Plan: c.Subject.ResolvedPlan, Periods: pers}
	var cur, cand totals
	for _, per := range pers {
		now, err := b.rate(b.in.Current, c.Subject, per, c.Meters)
		if err != nil {
			return nil, fmt.Errorf("current policy, period from %s: %w", per.Start.Format(time.RFC3339), err)
		}
		if err := cur.add(now, b.in.Currency); err != nil {
			return nil, err
		}
		then, err := b.candidate(c, per, cr)
		if err != nil {
			return nil, fmt.Errorf("candidate policy, period from %s: %w", per.Start.Format(time.RFC3339), err)
		}
		if err := cand.add(then, b.in.Currency); err != nil {
			return nil, err
		}
	}
	cr.current, cr.candidate = cur, cand
	return cr, nil
}

// candidate rates a period with the candidate as its enforcement would have shaped
// the usage: grants give what the candidate's give, and usage past a hard limit is
// denied (and so neither billed nor paid for).
func (b *builder) candidate(c *billing.ReplayCustomer, per billing.Period, cr *CustomerReport) (billing.Replayed, error) {
	first, err := b.rate(b.in.Candidate, c.Subject, per, c.Meters)
	if err != nil {
		return billing.Replayed{}, err
	}
	e := enforcer{current: b.in.Current.Policy, candidate: b.in.Candidate.Policy, sub: c.Subject, typ: c.Type, period: per}
	shaped, changed, err := e.shape(c.Meters, first.Meters, cr)
	if err != nil || !changed {
		return first, err
	}
	return b.rate(b.in.Candidate, c.Subject, per, shaped)
}

// totals are one customer's figures under one policy, rounded as invoices are.
type totals struct {
	revenue, cost num.Dec
}

func (t *totals) add(r billing.Replayed, currency string) error {
	cost, err := money.RoundTo(r.Cost, currency)
	if err != nil {
		return err
	}
	var c num.Calc
	t.revenue = c.Add(t.revenue, r.Total)
	t.cost = c.Add(t.cost, cost)
	return c.Err
}

// sortCustomers keeps the report's customers by id.
func sortCustomers(cs []CustomerReport) {
	slices.SortFunc(cs, func(a, b CustomerReport) int { return strings.Compare(a.Customer, b.Customer) })
}

// errOverflow is a sum too large for exact decimals.
var errOverflow = errors.New("replay: an amount is out of range")
