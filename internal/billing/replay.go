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

// What-if replay (internal/analytics/replay) prices committed usage under a policy
// that may never have billed it. It goes through Rate like every invoice, so a replay
// of the active policy and the invoices it produced cannot disagree; this file only
// exposes what a replay needs besides the total: the provider cost of the usage the
// invoice bills and, per meter period, the effective limit it was rated against.

// Replayed is one customer's period rated for a replay.
type Replayed struct {
	Rated
	// Cost is what the billed usage cost the provider (the meters' overhead) in the
	// currency at the rune rate, unrounded: Standing.Cost's figure.
	Cost num.Dec
	// Meters are the meter periods the invoice bills, with their effective limits
	// under the policy in force at the period's end, by entitlement and start.
	Meters []ReplayedMeter
}

// ReplayedMeter is a meter period an invoice bills and the limit it is rated against.
type ReplayedMeter struct {
	MeterUsage
	Limit *policies.CompiledLimit
}

// Replay rates in as Rate does and adds the cost and the rated meter periods.
func Replay(in RatingInput) (Replayed, error) {
	rated, err := Rate(in)
	if err != nil {
		return Replayed{}, err
	}
	r := rater{in: in}
	if r.in.RuneRate.IsZero() {
		r.in.RuneRate = num.One
	}
	out := Replayed{Rated: rated}
	if out.Cost, err = r.cost(); err != nil {
		return Replayed{}, err
	}
	if out.Meters, err = r.billedMeters(); err != nil {
		return Replayed{}, err
	}
	return out, nil
}

// billedMeters lists the meter periods usage() rates, by the same rule (cost() reads
// the same ones).
func (r *rater) billedMeters() ([]ReplayedMeter, error) {
	v, err := r.in.Versions.At(r.in.Period.End)
	if err != nil {
		return nil, err
	}
	p := v.Policy
	plan := p.Plan(r.in.Customer.ResolvedPlan)
	if plan == nil {
		return nil, nil
	}
	var out []ReplayedMeter
	for _, m := range r.in.Meters {
		if m.Entitlement == plan.Subscription || !m.PeriodStart.Before(r.in.Period.End) {
			continue
		}
		l := r.limitOf(p, plan, m.Entitlement)
		if l == nil {
			continue
		}
		end := r.meterEnd(p, l, m.PeriodStart)
		if !end.IsZero() && (!end.After(r.in.Period.Start) || end.After(r.in.Period.End)) {
			continue
		}
		out = append(out, ReplayedMeter{MeterUsage: m, Limit: l})
	}
	return out, nil
}

// Rate is the value of one rune in the settings' currency (RuneRate, parsed).
func (set Settings) Rate() num.Dec {
	if set.runeRate.IsZero() {
		if d, err := num.Parse(set.RuneRate); err == nil && d.IsPos() {
			return d
		}
		return num.One
	}
	return set.runeRate
}

// ReplayCustomer is a customer as a replay rates it: its rating view, its type
// (included grants may be scoped to types) and its committed meter periods.
type ReplayCustomer struct {
	Subject Subject
	Type    string
	Meters  []MeterUsage
}

// ReplayCustomers pages the environment's customers on real time by id (after the id
// `after`, at most limit), each with the meter periods that can belong to a billing
// period ending by until, in a fixed number of queries per page. Resolved plans are
// those under p (the active policy). Reads go through the pool: call it outside a
// transaction.
func (s *Service) ReplayCustomers(ctx context.Context, env store.Environment, p *policies.Policy, after string, limit int, until time.Time) ([]ReplayCustomer, error) {
	cs, err := s.customers.Records(ctx, env, p, "", after, limit)
	if err != nil {
		return nil, fmt.Errorf("billing: replay customers: %w", err)
	}
	if len(cs) == 0 {
		return nil, nil
	}
	uids := make([]uuid.UUID, len(cs))
	for i, c := range cs {
		uids[i] = c.UID
	}
	data, err := loadCustomerData(ctx, s.pool, uids, until)
	if err != nil {
		return nil, err
	}
	out := make([]ReplayCustomer, 0, len(cs))
	for _, c := range cs {
		sub, err := subject(c, data.plans[c.UID])
		if err != nil {
			return nil, err
		}
		out = append(out, ReplayCustomer{Subject: sub, Type: c.Type, Meters: data.meters[c.UID]})
	}
	return out, nil
}
