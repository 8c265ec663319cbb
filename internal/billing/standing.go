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

// Standing is where a customer stands in its current periods, as it stands now: what
// alert rules watch as usage is aggregated. Its figures are billing's own (the upcoming
// invoice's rating, the effective limits with overrides), so an alert and the invoice
// cannot disagree.
type Standing struct {
	Customer store.Customer
	// Now is the customer's time: its test clock's, else real time.
	Now time.Time
	// Period is the billing period containing Now.
	Period   Period
	Currency string
	// InvoiceToDate is the total of the upcoming invoice (what Upcoming shows), in
	// Currency.
	InvoiceToDate num.Dec
	// Cost is what the usage the invoice rates cost the provider (the meters'
	// overhead, in runes) in Currency at the rune rate, unrounded.
	Cost num.Dec
	// Meters are the metered entitlements of the resolved plan with usage in their
	// current meter period, in the plan's order.
	Meters []MeterStanding
	// Grants are the balances of the customer's grants: included by its plan, then
	// purchased.
	Grants []GrantStanding
}

// MeterStanding is one meter in its current period.
type MeterStanding struct {
	Entitlement string
	Credit      string
	Units       num.Dec
	// Limit is the effective limit: a live override laid over the plan's.
	Limit num.Dec
	// PeriodStart and PeriodEnd bound the meter period; PeriodEnd is zero for a meter
	// that never resets (a level).
	PeriodStart, PeriodEnd time.Time
}

// Standings computes the standing of the environment's customers uids (unknown uids
// are skipped), loading them and their usage in a fixed number of queries whatever
// their number.
func (s *Service) Standings(ctx context.Context, env store.Environment, uids []uuid.UUID) ([]Standing, error) {
	if len(uids) == 0 {
		return nil, nil
	}
	p, err := s.ActivePolicy(ctx, env)
	if err != nil {
		return nil, err
	}
	set, err := s.Settings(ctx, env)
	if err != nil {
		return nil, err
	}
	vers, err := s.versions(ctx, s.pool, env)
	if err != nil {
		return nil, err
	}
	cs, err := s.customers.RecordsByUID(ctx, env, p, uids)
	if err != nil {
		return nil, fmt.Errorf("billing: standings: customers: %w", err)
	}
	data, err := loadCustomerData(ctx, s.pool, uids, time.Time{})
	if err != nil {
		return nil, err
	}
	clocks := map[string]time.Time{}
	out := make([]Standing, 0, len(cs))
	subs := make([]Subject, 0, len(cs))
	var until time.Time
	for _, c := range cs {
		now, ok := clocks[c.TestClock]
		if !ok {
			if now, err = s.clockNow(ctx, s.pool, env, c); err != nil {
				return nil, fmt.Errorf("billing: standings: customer %q: %w", c.ID, err)
			}
			clocks[c.TestClock] = now
		}
		sub, err := subject(c, data.plans[c.UID])
		if err != nil {
			return nil, err
		}
		v, err := vers.At(now)
		if err != nil {
			return nil, err
		}
		per := PeriodAt(now, sub.CreatedAt, sub.Anchor, sub.location(v.Policy))
		until = maxTime(until, per.End)
		out = append(out, Standing{Customer: c, Now: now, Period: per, Currency: set.Currency})
		subs = append(subs, sub)
	}
	// One read of usage for every customer, up to the latest period end: rating skips
	// meter periods past each customer's own period end.
	if err := loadUsage(ctx, s.pool, uids, until, &data); err != nil {
		return nil, err
	}
	draws, err := loadGrantDraws(ctx, s.pool, uids)
	if err != nil {
		return nil, err
	}
	for i := range out {
		if err := out[i].fill(set, vers, subs[i], data, draws[out[i].Customer.UID]); err != nil {
			return nil, fmt.Errorf("billing: standing of %q: %w", out[i].Customer.ID, err)
		}
	}
	return out, nil
}

// fill rates the upcoming invoice and reads the meters of one standing.
func (st *Standing) fill(set Settings, vers Versions, sub Subject, data customerData, draws []grantDraw) error {
	uid := st.Customer.UID
	rated, err := rateSubject(set, vers, sub, uid, data, st.Period, st.Now)
	if err != nil {
		return err
	}
	st.InvoiceToDate = rated.Total
	now := st.Now
	if now.After(st.Period.End) {
		now = st.Period.End
	}
	r := rater{in: RatingInput{Currency: set.Currency, RuneRate: set.runeRate, Versions: vers, Customer: sub,
		Period: st.Period, Meters: data.meters[uid], Now: now}}
	if r.in.RuneRate.IsZero() {
		r.in.RuneRate = num.One
	}
	if st.Cost, err = r.cost(); err != nil {
		return err
	}
	v, err := vers.At(st.Now)
	if err != nil {
		return err
	}
	st.Meters = r.standing(v.Policy, st.Now)
	st.Grants = grants(v.Policy, sub, st.Customer, draws, st.Now)
	return nil
}

// cost sums the overhead of the meter periods usage() rates for the period, converted
// from runes at the rune rate: the provider cost of what the invoice bills.
func (r *rater) cost() (num.Dec, error) {
	meters, err := r.billedMeters()
	if err != nil {
		return num.Zero, err
	}
	var c num.Calc
	runes := num.Zero
	for _, m := range meters {
		runes = c.Add(runes, m.Overhead)
	}
	out := c.Mul(runes, r.in.RuneRate)
	if c.Err != nil {
		return num.Zero, fmt.Errorf("billing: cost: %w", c.Err)
	}
	return out, nil
}

// standing reads the meters of the resolved plan's limited entitlements in their
// current period at now: the latest meter period started by now, if it has not ended.
func (r *rater) standing(p *policies.Policy, now time.Time) []MeterStanding {
	plan := p.Plan(r.in.Customer.ResolvedPlan)
	if plan == nil {
		return nil
	}
	latest := map[string]MeterUsage{}
	for _, m := range r.in.Meters {
		if m.PeriodStart.After(now) {
			continue
		}
		if cur, ok := latest[m.Entitlement]; !ok || m.PeriodStart.After(cur.PeriodStart) {
			latest[m.Entitlement] = m
		}
	}
	var out []MeterStanding
	for _, ce := range plan.Limited {
		m, ok := latest[ce.Name]
		if !ok || ce.Name == plan.Subscription {
			continue
		}
		l := r.limitOf(p, plan, ce.Name)
		if l == nil {
			continue
		}
		end := r.meterEnd(p, l, m.PeriodStart)
		if !end.IsZero() && !end.After(now) {
			continue // the period with usage is over; the current one has none yet
		}
		out = append(out, MeterStanding{Entitlement: ce.Name, Credit: l.Credit.Name, Units: m.Units, Limit: l.Value,
			PeriodStart: m.PeriodStart.UTC(), PeriodEnd: end.UTC()})
	}
	return out
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
