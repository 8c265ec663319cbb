package billing

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/policies"
	"github.com/limitr/limitr/internal/store"
)

// MeterValue is what one committed meter period is worth as it stands: what the
// invoice that bills it will charge if nothing changes before it is rated. Analytics
// books the changes of these figures over time, so that what it reports for a billing
// period adds up to what the period's invoices bill, cent for cent.
type MeterValue struct {
	MeterUsage
	// Bill is the billing period whose invoice bills the meter period: the one it ends
	// in, or for a level (a meter that never resets) the current one, billed again
	// every period.
	Bill Period
	// Level is true for a meter that never resets.
	Level bool
	// Version is the policy version the invoice rates it with: the one in force at the
	// billing period's end (the active one while that end is ahead).
	Version int
	// Gross is the usage line and Net the usage line plus its grant credit, each
	// rounded to the currency as the invoice rounds them; Gross−Net is what grants paid.
	Gross, Net num.Dec
	// Cost is the provider's cost of the usage (its overhead at the rune rate),
	// unrounded; zero for a meter period no invoice bills.
	Cost num.Dec
	// Billed is false for a meter period no invoice bills (an entitlement outside the
	// plan, the plan's subscription, a meter period starting after its customer's
	// billing ended): its usage still counts, its money does not.
	Billed bool
}

// CustomerValue is a customer's current billing period and what its meters are worth.
type CustomerValue struct {
	Customer store.Customer
	// Now is the customer's time: its test clock's, else real time.
	Now time.Time
	// Period is the billing period containing Now; Fees the plan fees (with
	// prorations) its invoice charges, in the currency.
	Period Period
	Fees   num.Dec
	Meters []MeterValue
}

// Valuation values customers' meters with one environment's settings and published
// versions, read once.
type Valuation struct {
	svc      *Service
	env      store.Environment
	db       store.DBTX
	set      Settings
	vers     *envVersions
	active   *policies.Policy
	clocks   map[string]time.Time
	Currency string
}

// Valuation loads what valuing the environment's customers needs through db (a
// transaction, or the pool).
func (s *Service) Valuation(ctx context.Context, db store.DBTX, env store.Environment) (*Valuation, error) {
	p, err := s.policies.ActivePolicyIn(ctx, db, env)
	if err != nil {
		return nil, err
	}
	set, err := loadSettings(ctx, db, env)
	if err != nil {
		return nil, err
	}
	vers, err := s.versions(ctx, db, env)
	if err != nil {
		return nil, err
	}
	if set.runeRate.IsZero() {
		set.runeRate = num.One
	}
	return &Valuation{svc: s, env: env, db: db, set: set, vers: vers, active: p, clocks: map[string]time.Time{}, Currency: set.Currency}, nil
}

// Active is the environment's active policy.
func (v *Valuation) Active() *policies.Policy { return v.active }

// Customers values the customers uids (unknown uids are skipped) whose committed
// meters are given: meters maps a uid to its meter periods.
func (v *Valuation) Customers(ctx context.Context, uids []uuid.UUID, meters map[uuid.UUID][]MeterUsage) ([]CustomerValue, error) {
	if len(uids) == 0 {
		return nil, nil
	}
	cs, err := v.svc.customers.RecordsByUIDIn(ctx, v.db, v.env, v.active, uids)
	if err != nil {
		return nil, fmt.Errorf("billing: valuation: customers: %w", err)
	}
	data, err := loadCustomerData(ctx, v.db, uids, time.Time{})
	if err != nil {
		return nil, err
	}
	out := make([]CustomerValue, 0, len(cs))
	for _, c := range cs {
		now, ok := v.clocks[c.TestClock]
		if !ok {
			if now, err = v.svc.clockNow(ctx, v.db, v.env, c); err != nil {
				return nil, fmt.Errorf("billing: valuation: customer %q: %w", c.ID, err)
			}
			v.clocks[c.TestClock] = now
		}
		sub, err := subject(c, data.plans[c.UID])
		if err != nil {
			return nil, err
		}
		cv, err := v.value(c, sub, now, meters[c.UID])
		if err != nil {
			return nil, fmt.Errorf("billing: valuation of %q: %w", c.ID, err)
		}
		out = append(out, cv)
	}
	return out, nil
}

func (v *Valuation) value(c store.Customer, sub Subject, now time.Time, meters []MeterUsage) (CustomerValue, error) {
	cur, err := v.vers.At(now)
	if err != nil {
		return CustomerValue{}, err
	}
	cv := CustomerValue{Customer: c, Now: now, Period: PeriodAt(now, sub.CreatedAt, sub.Anchor, sub.location(cur.Policy))}
	r := rater{in: RatingInput{Currency: v.set.Currency, RuneRate: v.set.runeRate, Versions: v.vers, Customer: sub, Period: cv.Period, Now: now}}
	if err := r.fees(); err != nil {
		return CustomerValue{}, err
	}
	cv.Fees = num.Zero
	for _, l := range r.lines {
		cv.Fees, _ = cv.Fees.Add(l.amount)
	}
	cv.Meters = make([]MeterValue, 0, len(meters))
	for _, m := range meters {
		mv, err := r.meterValue(cur.Policy, m, now)
		if err != nil {
			return CustomerValue{}, fmt.Errorf("meter %s from %s: %w", m.Entitlement, m.PeriodStart.Format(time.RFC3339), err)
		}
		cv.Meters = append(cv.Meters, mv)
	}
	return cv, nil
}

// meterValue rates one meter period as the invoice that bills it will: with the
// version in force at that invoice's period end, the overrides live then (or now, if
// that is earlier), and rateMeter's rounding.
func (r *rater) meterValue(cur *policies.Policy, m MeterUsage, now time.Time) (MeterValue, error) {
	mv := MeterValue{MeterUsage: m, Gross: num.Zero, Net: num.Zero, Cost: num.Zero}
	sub := r.in.Customer
	// The meter's own reset decides which billing period bills it; it is read from the
	// current policy, which is also what the SDKs meter with.
	plan := cur.Plan(sub.ResolvedPlan)
	var l *policies.CompiledLimit
	if plan != nil && m.Entitlement != plan.Subscription {
		l = r.limitOf(cur, plan, m.Entitlement)
	}
	if l == nil {
		mv.Bill = PeriodAt(now, sub.CreatedAt, sub.Anchor, sub.location(cur))
		return mv, nil
	}
	end := r.meterEnd(cur, l, m.PeriodStart)
	if end.IsZero() {
		mv.Level = true
		mv.Bill = PeriodAt(now, sub.CreatedAt, sub.Anchor, sub.location(cur))
	} else {
		mv.Bill = PeriodAt(end.Add(-time.Nanosecond), sub.CreatedAt, sub.Anchor, sub.location(cur))
	}
	v, err := r.in.Versions.At(mv.Bill.End)
	if err != nil {
		return MeterValue{}, err
	}
	mv.Version = v.Number
	p := v.Policy
	if plan = p.Plan(sub.ResolvedPlan); plan == nil {
		return mv, nil
	}
	saved := r.in.Now
	r.in.Now = now
	if mv.Bill.End.Before(now) {
		r.in.Now = mv.Bill.End
	}
	l = r.limitOf(p, plan, m.Entitlement)
	r.in.Now = saved
	if l == nil {
		return mv, nil
	}
	mv.Billed = true
	charge, credit, err := r.rateMeter(p, l, m)
	if err != nil {
		return MeterValue{}, err
	}
	if charge != nil {
		mv.Gross, mv.Net = charge.amount, charge.amount
		if credit != nil {
			mv.Net, _ = mv.Net.Add(credit.amount)
		}
	}
	if mv.Cost, err = m.Overhead.Mul(r.in.RuneRate); err != nil {
		return MeterValue{}, fmt.Errorf("cost: %w", num.ErrOutOfRange)
	}
	return mv, nil
}
