package billing

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/limitr/limitr/internal/billing/money"
	"github.com/limitr/limitr/internal/enforcement"
	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/policies"
)

// Version is a published policy version.
type Version struct {
	Number int
	Policy *policies.Policy
}

// Versions finds the policy versions rating uses: the one in force at an instant (the
// last published at or before it; the first ever published for earlier instants) and
// one by number (adjustments re-rate a meter period with the version that billed it).
type Versions interface {
	At(t time.Time) (Version, error)
	Number(n int) (Version, error)
}

// PlanSpan is the explicit plan a customer was on from an instant ("" for none).
type PlanSpan struct {
	Plan string
	From time.Time
}

// Subject is the customer an invoice is rated for, as it stands when rated.
type Subject struct {
	ID string
	// ResolvedPlan is the plan the customer's own meters are rated on (its own,
	// inherited through refs, or the default).
	ResolvedPlan string
	Location     *time.Location // nil: the policy's time zone
	Anchor       time.Time
	CreatedAt    time.Time
	Overrides    map[string]enforcement.Override
	// Plans is the explicit plan history, oldest first; plan fees and proration read it.
	Plans []PlanSpan
}

// MeterUsage is the committed usage of one meter period.
type MeterUsage struct {
	Entitlement  string
	PeriodStart  time.Time
	Units        num.Dec
	GrantCovered num.Dec
	// Overhead is what the usage cost the provider, in runes (margins read it).
	Overhead num.Dec
}

// BilledMeter is what finalized invoices billed for one meter period, net of grants.
type BilledMeter struct {
	Entitlement   string
	PeriodStart   time.Time
	Units         num.Dec
	GrantCovered  num.Dec
	Amount        num.Dec
	PolicyVersion int
}

// RatingInput is everything one invoice's lines are computed from. Rating is a pure
// function of it, so drafts, upcoming invoices, the CLI's preview and golden tests all
// run the same code.
type RatingInput struct {
	Currency string
	RuneRate num.Dec
	Versions Versions
	Customer Subject
	Period   Period
	// Meters are the customer's committed meter periods that may belong to the period.
	Meters []MeterUsage
	// Billed are meter periods earlier invoices billed; those whose usage changed since
	// are billed again as adjustments.
	Billed []BilledMeter
	// Now decides which overrides are live (the period end once it has passed).
	Now time.Time
}

// Rated is the result of rating: the lines and, for bookkeeping at finalization, the
// meter periods the lines bill.
type Rated struct {
	Lines []Line
	Total num.Dec
	Bills []BilledMeter
}

// Rate computes an invoice's lines. Lines come in a stable order: plan fee and
// prorations by time, then usage (with its grant credits) and adjustments by
// entitlement and meter period.
func Rate(in RatingInput) (Rated, error) {
	if in.RuneRate.IsZero() {
		in.RuneRate = num.One
	}
	r := rater{in: in,
		lines: make([]draftLine, 0, 2+2*len(in.Meters)+len(in.Billed)),
		bills: make([]BilledMeter, 0, len(in.Meters)+len(in.Billed))}
	if err := r.fees(); err != nil {
		return Rated{}, err
	}
	if err := r.usage(); err != nil {
		return Rated{}, err
	}
	if err := r.adjustments(); err != nil {
		return Rated{}, err
	}
	total := num.Zero
	var c num.Calc
	for _, l := range r.lines {
		total = c.Add(total, l.amount)
	}
	if c.Err != nil {
		return Rated{}, c.Err
	}
	out := Rated{Total: total, Bills: r.bills}
	if len(r.bills) == 0 {
		out.Bills = nil
	}
	if len(r.lines) > 0 {
		out.Lines = make([]Line, 0, len(r.lines))
	}
	for _, l := range r.lines {
		line, err := l.render(in.Currency)
		if err != nil {
			return Rated{}, err
		}
		out.Lines = append(out.Lines, line)
	}
	return out, nil
}

type rater struct {
	in    RatingInput
	lines []draftLine
	bills []BilledMeter
}

// draftLine is a line before formatting; amount is already rounded to the currency.
type draftLine struct {
	Line
	amount, quantity, unit num.Dec
	hasQty, hasUnit        bool
}

func (l draftLine) render(currency string) (Line, error) {
	out := l.Line
	var err error
	if out.Amount, err = money.Format(l.amount, currency); err != nil {
		return Line{}, err
	}
	if l.hasQty {
		out.Quantity = decString(l.quantity)
	}
	if l.hasUnit {
		out.UnitAmount = decString(l.unit)
	}
	return out, nil
}

// decString writes an exact decimal without trailing zeros.
func decString(d num.Dec) string { return d.Trim(0).String() }

// money converts runes to the invoice currency and rounds half away from zero to its
// minor unit.
func (r *rater) money(runes num.Dec) (num.Dec, error) {
	v, err := runes.Mul(r.in.RuneRate)
	if err != nil {
		return num.Zero, fmt.Errorf("billing: %s runes at rate %s: %w", runes, r.in.RuneRate, num.ErrOutOfRange)
	}
	return money.RoundTo(v, r.in.Currency)
}

func (r *rater) location(p *policies.Policy) *time.Location {
	if r.in.Customer.Location != nil {
		return r.in.Customer.Location
	}
	return p.Location
}

// limitOf is the customer's effective limit for an entitlement of plan: a live
// override laid over the plan limit (the engine's own compiler), else the plan's.
func (r *rater) limitOf(p *policies.Policy, plan *policies.CompiledPlan, ent string) *policies.CompiledLimit {
	ce := p.PlanEntitlement(plan, ent)
	if ce == nil || ce.Limit == nil {
		return nil
	}
	if o, ok := r.in.Customer.Overrides[ent]; ok && (o.ExpiresAt.IsZero() || r.in.Now.Before(o.ExpiresAt)) {
		if cl, err := o.Compile(p, ce); err == nil {
			return cl
		}
	}
	return ce.Limit
}

// meterEnd is when a meter period that starts at start ends under limit (zero for a
// limit that never resets).
func (r *rater) meterEnd(p *policies.Policy, l *policies.CompiledLimit, start time.Time) time.Time {
	if !l.Resets() {
		return time.Time{}
	}
	return l.Reset.NextReset(start, start, r.location(p), r.in.Customer.Anchor)
}

// usage bills every meter period of the resolved plan that belongs to the period: a
// resetting meter when its period ends inside the billing period (in arrears), a
// meter that never resets (a level: seats, storage) every period at its current level.
func (r *rater) usage() error {
	v, err := r.in.Versions.At(r.in.Period.End)
	if err != nil {
		return err
	}
	p := v.Policy
	plan := p.Plan(r.in.Customer.ResolvedPlan)
	if plan == nil {
		return nil
	}
	meters := slices.Clone(r.in.Meters)
	slices.SortFunc(meters, func(a, b MeterUsage) int {
		if c := strings.Compare(a.Entitlement, b.Entitlement); c != 0 {
			return c
		}
		return a.PeriodStart.Compare(b.PeriodStart)
	})
	for _, m := range meters {
		if m.Entitlement == plan.Subscription {
			continue // the plan fee is billed by the server, not metered
		}
		l := r.limitOf(p, plan, m.Entitlement)
		if l == nil || !m.PeriodStart.Before(r.in.Period.End) {
			continue
		}
		end := r.meterEnd(p, l, m.PeriodStart)
		if !end.IsZero() && (!end.After(r.in.Period.Start) || end.After(r.in.Period.End)) {
			continue
		}
		charge, credit, err := r.rateMeter(p, l, m)
		if err != nil {
			return fmt.Errorf("billing: rate %s from %s: %w", m.Entitlement, m.PeriodStart.Format(time.RFC3339), err)
		}
		if charge == nil {
			continue
		}
		charge.PolicyVersion = v.Number
		if end.IsZero() {
			charge.PeriodStart, charge.PeriodEnd = timePtr(r.in.Period.Start), timePtr(r.in.Period.End)
		} else {
			charge.PeriodStart, charge.PeriodEnd = timePtr(m.PeriodStart), timePtr(end)
		}
		r.lines = append(r.lines, *charge)
		net := charge.amount
		if credit != nil {
			credit.PolicyVersion = v.Number
			credit.PeriodStart, credit.PeriodEnd = charge.PeriodStart, charge.PeriodEnd
			r.lines = append(r.lines, *credit)
			net, _ = net.Add(credit.amount)
		}
		if !end.IsZero() {
			r.bills = append(r.bills, BilledMeter{Entitlement: m.Entitlement, PeriodStart: m.PeriodStart,
				Units: m.Units, GrantCovered: m.GrantCovered, Amount: net, PolicyVersion: v.Number})
		}
	}
	return nil
}

// rateMeter prices one meter period: the usage line and, when grants paid part of it,
// the credit line. The two sum to the net rounded once, so the invoice bills exactly
// round(revenue − grant-covered revenue) for the meter period.
func (r *rater) rateMeter(p *policies.Policy, l *policies.CompiledLimit, m MeterUsage) (charge, credit *draftLine, err error) {
	revenue, covered, err := rateOverage(p, l.Credit, m.Units, l.Value, m.GrantCovered)
	if err != nil {
		return nil, nil, err
	}
	if !revenue.IsPos() {
		return nil, nil, nil
	}
	gross, err := r.money(revenue)
	if err != nil {
		return nil, nil, err
	}
	over, _ := m.Units.Sub(l.Value)
	charge = &draftLine{Line: Line{Kind: KindUsage, Entitlement: m.Entitlement,
		Description: m.Entitlement + ": " + decString(over) + " " + unitName(l.Credit) + " over the " + decString(l.Value) + " included"},
		amount: gross, quantity: over, hasQty: true}
	if c := l.Credit.Curve; c != nil && c.Model == 0 && !l.Credit.Int {
		charge.unit, _ = c.Price.Mul(r.in.RuneRate)
		charge.hasUnit = true
	}
	if !covered.IsPos() {
		return charge, nil, nil
	}
	netRunes, _ := revenue.Sub(covered)
	net, err := r.money(netRunes)
	if err != nil {
		return nil, nil, err
	}
	creditAmount, _ := net.Sub(gross)
	if creditAmount.IsZero() {
		return charge, nil, nil
	}
	credit = &draftLine{Line: Line{Kind: KindCredit, Entitlement: m.Entitlement,
		Description: m.Entitlement + ": " + decString(num.Min(m.GrantCovered, over)) + " " + unitName(l.Credit) + " paid from grants"},
		amount: creditAmount}
	return charge, credit, nil
}

// adjustments bill late usage: a meter period an earlier invoice billed whose committed
// usage changed since is re-rated with the version that billed it, and the difference
// is billed (or credited) on this invoice.
func (r *rater) adjustments() error {
	current := map[meterKey]MeterUsage{}
	for _, m := range r.in.Meters {
		current[meterKey{m.Entitlement, m.PeriodStart.UnixNano()}] = m
	}
	billed := slices.Clone(r.in.Billed)
	slices.SortFunc(billed, func(a, b BilledMeter) int {
		if c := strings.Compare(a.Entitlement, b.Entitlement); c != 0 {
			return c
		}
		return a.PeriodStart.Compare(b.PeriodStart)
	})
	for _, b := range billed {
		m, ok := current[meterKey{b.Entitlement, b.PeriodStart.UnixNano()}]
		if !ok || (m.Units.Cmp(b.Units) == 0 && m.GrantCovered.Cmp(b.GrantCovered) == 0) {
			continue
		}
		v, err := r.in.Versions.Number(b.PolicyVersion)
		if err != nil {
			return err
		}
		p := v.Policy
		plan := p.Plan(r.in.Customer.ResolvedPlan)
		if plan == nil {
			continue
		}
		l := r.limitOf(p, plan, b.Entitlement)
		if l == nil {
			continue
		}
		net := num.Zero
		charge, credit, err := r.rateMeter(p, l, m)
		if err != nil {
			return fmt.Errorf("billing: re-rate %s from %s: %w", b.Entitlement, b.PeriodStart.Format(time.RFC3339), err)
		}
		if charge != nil {
			net = charge.amount
			if credit != nil {
				net, _ = net.Add(credit.amount)
			}
		}
		diff, _ := net.Sub(b.Amount)
		r.bills = append(r.bills, BilledMeter{Entitlement: b.Entitlement, PeriodStart: b.PeriodStart,
			Units: m.Units, GrantCovered: m.GrantCovered, Amount: net, PolicyVersion: b.PolicyVersion})
		if diff.IsZero() {
			continue
		}
		end := r.meterEnd(p, l, b.PeriodStart)
		late, _ := m.Units.Sub(b.Units)
		r.lines = append(r.lines, draftLine{Line: Line{Kind: KindAdjustment, Entitlement: b.Entitlement,
			Description:   fmt.Sprintf("%s: usage committed after its period was invoiced (%s %s)", b.Entitlement, signed(late), unitName(l.Credit)),
			PolicyVersion: b.PolicyVersion, PeriodStart: timePtr(b.PeriodStart), PeriodEnd: timePtrOrNil(end)},
			amount: diff, quantity: late, hasQty: true})
	}
	return nil
}

type meterKey struct {
	ent   string
	start int64
}

// fees bills the plan fee: the explicit plan's subscription entitlement priced as the
// reference engine's ensure_plan_subscription meters it (one unit past its limit),
// once per period after the trial, for the whole period (in advance: it does not
// depend on usage). A plan change inside the period is prorated to the second: the
// unused part of the old fee is credited and the rest of the new one charged, so each
// plan costs its fee times the share of the period it was held (outside its trial).
func (r *rater) fees() error {
	v, err := r.in.Versions.At(r.in.Period.Start)
	if err != nil {
		return err
	}
	p, per := v.Policy, r.in.Period
	if !per.End.After(per.Start) {
		return nil
	}
	spans := r.spansIn(per)
	for i, s := range spans {
		from, to := s.From, per.End
		if i == 0 {
			from = per.Start
		}
		if i+1 < len(spans) {
			to = spans[i+1].From
		}
		plan := p.Plan(s.Plan)
		if plan == nil {
			continue
		}
		fee, ok, err := r.fee(p, plan)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		charged := from
		if trialEnd := r.in.Customer.CreatedAt.Add(plan.TrialPeriod.D); trialEnd.After(charged) {
			charged = trialEnd
		}
		if !charged.Before(to) {
			continue // in its trial for as long as it was held
		}
		if charged.Equal(per.Start) {
			r.lines = append(r.lines, draftLine{Line: Line{Kind: KindPlanFee,
				Description: "Plan " + planLabel(plan), PolicyVersion: v.Number,
				PeriodStart: timePtr(per.Start), PeriodEnd: timePtr(per.End)},
				amount: fee, quantity: num.One, unit: fee, hasQty: true, hasUnit: true})
		} else if err := r.prorate(v.Number, plan, fee, charged, per, false); err != nil {
			return err
		}
		if to.Before(per.End) {
			if err := r.prorate(v.Number, plan, fee, to, per, true); err != nil {
				return err
			}
		}
	}
	return nil
}

// prorate charges plan's fee for [at, period end), or credits it for a plan left at
// `at`, to the second.
func (r *rater) prorate(version int, plan *policies.CompiledPlan, fee num.Dec, at time.Time, per Period, credit bool) error {
	remaining := per.End.Sub(at)
	fraction, err := num.FromInt(int64(remaining / time.Second)).Quo(num.FromInt(int64(per.End.Sub(per.Start) / time.Second)))
	if err != nil {
		return fmt.Errorf("billing: proration: %w", err)
	}
	part, err := fee.Mul(fraction)
	if err != nil {
		return fmt.Errorf("billing: proration: %w", num.ErrOutOfRange)
	}
	amount, err := money.RoundTo(part, r.in.Currency)
	if err != nil {
		return err
	}
	share := percentOf(fraction)
	desc := fmt.Sprintf("Plan %s from %s (%s of the period)", planLabel(plan), at.UTC().Format(time.RFC3339), share)
	if credit {
		amount = amount.Neg()
		desc = fmt.Sprintf("Unused plan %s from %s (%s of the period)", planLabel(plan), at.UTC().Format(time.RFC3339), share)
	}
	if amount.IsZero() {
		return nil
	}
	r.lines = append(r.lines, draftLine{Line: Line{Kind: KindProration, Description: desc, PolicyVersion: version,
		PeriodStart: timePtr(at), PeriodEnd: timePtr(per.End)},
		amount: amount, quantity: fraction.Trim(0), unit: fee, hasQty: true, hasUnit: true})
	return nil
}

// fee is a plan's fee in the invoice currency; ok is false for a plan without a
// priced subscription.
func (r *rater) fee(p *policies.Policy, plan *policies.CompiledPlan) (num.Dec, bool, error) {
	if plan.Subscription == "" {
		return num.Zero, false, nil
	}
	idx, ok := p.EntitlementIndex(plan.Subscription)
	if !ok {
		return num.Zero, false, nil
	}
	ce := plan.Entitlement(idx)
	if ce == nil || ce.Limit == nil {
		return num.Zero, false, nil
	}
	runes, _, err := rateOverage(p, ce.Limit.Credit, num.One, ce.Limit.Value, num.Zero)
	if err != nil {
		return num.Zero, false, err
	}
	if !runes.IsPos() {
		return num.Zero, false, nil
	}
	amount, err := r.money(runes)
	return amount, err == nil, err
}

// PlanFee is a plan's fee per billing period in the settings' currency, as invoices
// bill it (a decimal string); ok is false for a plan without a priced subscription.
func PlanFee(p *policies.Policy, plan *policies.CompiledPlan, set Settings) (fee string, ok bool, err error) {
	r := rater{in: RatingInput{Currency: set.Currency, RuneRate: set.runeRate}}
	if r.in.RuneRate.IsZero() {
		r.in.RuneRate = num.One
	}
	amount, ok, err := r.fee(p, plan)
	if err != nil || !ok {
		return "", ok, err
	}
	fee, err = money.Format(amount, set.Currency)
	return fee, err == nil, err
}

// spansIn returns the plan spans overlapping the period: the plan in force at its start
// first, then every change inside it.
func (r *rater) spansIn(per Period) []PlanSpan {
	var out []PlanSpan
	for _, s := range r.in.Customer.Plans {
		switch {
		case !s.From.After(per.Start):
			out = []PlanSpan{s}
		case s.From.Before(per.End):
			if len(out) > 0 && out[len(out)-1].Plan == s.Plan {
				continue
			}
			out = append(out, s)
		}
	}
	return out
}

func planLabel(p *policies.CompiledPlan) string {
	if p.Label != "" {
		return p.Label
	}
	return p.Name
}

func unitName(c *policies.CompiledCredit) string {
	if c.StofUnits != "" && c.StofUnits != policies.UnitsInt && c.StofUnits != policies.UnitsFloat {
		return c.StofUnits
	}
	return c.Name
}

func percentOf(fraction num.Dec) string {
	p, err := fraction.Mul(num.Hundred)
	if err != nil {
		return "?"
	}
	return strings.TrimSuffix(money.Round(p, 2).Trim(0).String(), ".") + "%"
}

func signed(d num.Dec) string {
	if d.IsNeg() {
		return decString(d)
	}
	return "+" + decString(d)
}

func timePtr(t time.Time) *time.Time { u := t.UTC(); return &u }

func timePtrOrNil(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return timePtr(t)
}

// rateOverage is the engine's rating rule, the one margins use: invoices and
// CustomerMarginSnapshot cannot disagree.
func rateOverage(p *policies.Policy, credit *policies.CompiledCredit, usage, limit, granted num.Dec) (revenue, covered num.Dec, err error) {
	return enforcement.RateOverage(p, credit, usage, limit, granted)
}
