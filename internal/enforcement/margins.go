package enforcement

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/limitr/limitr/internal/billing/rating"
	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/policies"
	"github.com/limitr/limitr/internal/quantity"
)

// Margin is revenue against provider cost for one period, in runes.
//
//   - Revenue follows the reference engine: each entitlement's usage past its limit,
//     priced by its credit's own price from the first billable unit. Included units
//     are free; usage a grant paid for still counts, because it was sold. Unlike the
//     reference, a credit without a price of its own is priced through the exchange
//     table (1 ai_credit = 1.25 rune earns 1.25 a unit) instead of earning nothing.
//     RateOverage is the rule, shared with invoices.
//   - Cost is the provider cost recorded on the meters this period.
//   - Margin is (Revenue − Cost) / Revenue in percent, rounded to 2 places, or −100
//     when there is no revenue (the reference engine's convention).
//   - GrantCoveredRevenue is the part of Revenue grants paid for rather than an
//     invoice, and TopupRevenue what the customer paid for those grants, recognised
//     as they are drawn (price × drawn / granted). Cash margin for the period is
//     Revenue − GrantCoveredRevenue + TopupRevenue − Cost.
type Margin struct {
	Revenue             float64                      `json:"revenue"`
	Cost                float64                      `json:"cost"`
	Margin              float64                      `json:"margin"`
	GrantCoveredRevenue float64                      `json:"grant_covered_revenue"`
	TopupRevenue        float64                      `json:"topup_revenue"`
	Entitlements        map[string]EntitlementMargin `json:"entitlements"`
}

// EntitlementMargin is one entitlement's share of a Margin. Margin is nil when the
// entitlement has no revenue.
type EntitlementMargin struct {
	Usage               float64  `json:"usage"`
	Limit               float64  `json:"limit"`
	Revenue             float64  `json:"revenue"`
	Cost                float64  `json:"cost"`
	Margin              *float64 `json:"margin"`
	GrantCoveredRevenue float64  `json:"grant_covered_revenue"`
	TopupRevenue        float64  `json:"topup_revenue"`
}

// Usage is hypothetical usage of one entitlement for MarginSnapshot. Value is the
// meter value in credit units (or Quantity, a unit string); Limit and Overhead
// override the plan's limit and the credit's cost; Context feeds cost expressions.
type Usage struct {
	Value    float64
	Quantity string
	Limit    *float64
	Overhead *float64
	Context  map[string]any
}

type marginLine struct {
	usage, limit, revenue, cost, granted, topup num.Dec
}

type marginSum struct {
	c     num.Calc
	total marginLine
	out   Margin
}

func newMarginSum() *marginSum {
	return &marginSum{
		total: marginLine{revenue: num.Zero, cost: num.Zero, granted: num.Zero, topup: num.Zero},
		out:   Margin{Entitlements: map[string]EntitlementMargin{}},
	}
}

func (s *marginSum) add(name string, l marginLine) {
	c := &s.c
	s.total.revenue = c.Add(s.total.revenue, l.revenue)
	s.total.cost = c.Add(s.total.cost, l.cost)
	s.total.granted = c.Add(s.total.granted, l.granted)
	s.total.topup = c.Add(s.total.topup, l.topup)
	em := EntitlementMargin{
		Usage: num.Float64(l.usage), Limit: num.Float64(l.limit),
		Revenue: num.Float64(l.revenue), Cost: num.Float64(l.cost),
		GrantCoveredRevenue: num.Float64(l.granted), TopupRevenue: num.Float64(l.topup),
	}
	if l.revenue.IsPos() {
		m := percent(c, l.revenue, l.cost)
		em.Margin = &m
	}
	s.out.Entitlements[name] = em
}

func (s *marginSum) result() (Margin, error) {
	c := &s.c
	s.out.Revenue, s.out.Cost = num.Float64(s.total.revenue), num.Float64(s.total.cost)
	s.out.GrantCoveredRevenue, s.out.TopupRevenue = num.Float64(s.total.granted), num.Float64(s.total.topup)
	s.out.Margin = -100
	if s.total.revenue.IsPos() {
		s.out.Margin = percent(c, s.total.revenue, s.total.cost)
	}
	return s.out, c.Err
}

// percent is round((revenue − cost) / revenue × 100, 2), half away from zero as money
// is usually rounded for display.
func percent(c *num.Calc, revenue, cost num.Dec) float64 {
	ratio := c.Mul(c.Quo(c.Sub(revenue, cost), revenue), num.Hundred)
	return num.Float64(ratio.Round(2))
}

// line prices one entitlement's period through RateOverage, the rule invoices use. A
// credit with no price path has no revenue; any other rating error is returned.
func line(p *policies.Policy, credit *policies.CompiledCredit, usage, limit, cost, granted, topup num.Dec) (marginLine, error) {
	revenue, covered, err := RateOverage(p, credit, usage, limit, granted)
	if err != nil && !errors.Is(err, rating.ErrNoPrice) {
		return marginLine{}, err
	}
	return marginLine{usage: usage, limit: limit, revenue: revenue, cost: cost, granted: covered, topup: topup}, nil
}

// CustomerMarginSnapshot reports the current period's margin for a customer, over the
// entitlements of its plan it holds meters for.
func (e *Engine) CustomerMarginSnapshot(ctx context.Context, id string) (Margin, error) {
	p := e.policy.Load()
	c := e.lookup(id)
	if c == nil {
		return Margin{}, fmt.Errorf("%w: %q", ErrUnknownCustomer, id)
	}
	now := e.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	plan := c.planLocked(e, p)
	if plan == nil {
		return Margin{}, fmt.Errorf("%w: customer %q resolves to no plan", ErrUnknownPlan, id)
	}
	sum := newMarginSum()
	for _, ce := range plan.Limited {
		limit := c.effectiveLimit(p, ce, now)
		m := c.meter(ce.Name)
		if limit == nil || m == nil {
			continue
		}
		usage, cost, granted, topup := m.value, m.overhead, num.Zero, num.Zero
		if m.ext != nil {
			granted, topup = m.ext.grantCovered, m.ext.topupRevenue
		}
		if limit.Resets() {
			start := limit.Reset.CurrentStart(m.startedAt(), now, c.location(p), c.anchor())
			if start.UnixNano() != m.started {
				usage, cost, granted, topup = num.Zero, num.Zero, num.Zero, num.Zero
			}
		}
		l, err := line(p, limit.Credit, usage, limit.Value, cost, granted, topup)
		if err != nil {
			return Margin{}, fmt.Errorf("margin of %q: %w", ce.Name, err)
		}
		sum.add(ce.Name, l)
	}
	return sum.result()
}

// planPeriod is a plan's billing period, as the reference engine measures it.
func planPeriod(pl *policies.CompiledPlan) time.Duration {
	switch pl.Period {
	case "daily":
		return 24 * time.Hour
	case "weekly":
		return 7 * 24 * time.Hour
	case "yearly":
		return 365 * 24 * time.Hour
	}
	return 30 * 24 * time.Hour
}

// MarginSnapshot models a hypothetical customer on a plan. Limits that reset on a
// duration other than the plan's period are scaled to it, with the usage (and any
// explicit overhead), so a daily limit is compared with a month's usage.
func (e *Engine) MarginSnapshot(ctx context.Context, planName string, usage map[string]Usage) (Margin, error) {
	p := e.policy.Load()
	plan := p.Plan(planName)
	if plan == nil {
		return Margin{}, fmt.Errorf("%w: %q", ErrUnknownPlan, planName)
	}
	sum := newMarginSum()
	period := planPeriod(plan)
	for name, u := range usage {
		idx, ok := p.EntitlementIndex(name)
		if !ok {
			return Margin{}, fmt.Errorf("%w: %q", ErrUnknownEntitlement, name)
		}
		ce := plan.Entitlement(idx)
		if ce == nil || ce.Limit == nil {
			return Margin{}, fmt.Errorf("%w: %q has no limit on plan %q", ErrNoLimit, name, planName)
		}
		l := ce.Limit
		var c num.Calc
		value, err := num.FromFloat64(u.Value)
		if u.Quantity != "" {
			q, qerr := quantity.Parse(u.Quantity)
			if qerr == nil {
				value, err = policies.ToCreditUnits(l.Credit.Credit, q)
			} else {
				err = qerr
			}
		}
		if err != nil {
			return Margin{}, fmt.Errorf("%w: usage of %q: %w", ErrInvalidQuantity, name, err)
		}
		limit := l.Value
		if u.Limit != nil {
			if limit, err = num.FromFloat64(*u.Limit); err != nil {
				return Margin{}, fmt.Errorf("%w: limit of %q: %w", ErrInvalidQuantity, name, err)
			}
		}
		var cost num.Dec
		if u.Overhead != nil {
			if cost, err = num.FromFloat64(*u.Overhead); err != nil {
				return Margin{}, fmt.Errorf("%w: overhead of %q: %w", ErrInvalidQuantity, name, err)
			}
		}
		if every := l.Reset.Every; every > 0 && every != period {
			scale := c.Quo(num.FromInt(int64(period/time.Millisecond)), num.FromInt(int64(every/time.Millisecond)))
			limit, value = c.Mul(limit, scale), c.Mul(value, scale)
			if u.Overhead != nil {
				cost = c.Mul(cost, scale)
			}
		}
		if u.Overhead == nil {
			cost = e.callOverhead(l.Credit, value, &Call{EventData: u.Context})
		}
		if c.Err != nil {
			return Margin{}, c.Err
		}
		ml, err := line(p, l.Credit, value, limit, cost, num.Zero, num.Zero)
		if err != nil {
			return Margin{}, fmt.Errorf("margin of %q: %w", name, err)
		}
		sum.add(name, ml)
	}
	return sum.result()
}

// EnsurePlanSubscription meters the plan fee once: for a customer on its own plan whose
// subscription entitlement is still unused and whose trial is over, it increments the
// subscription entitlement. It reports whether it did.
func (e *Engine) EnsurePlanSubscription(ctx context.Context, id string) (bool, error) {
	p := e.policy.Load()
	c := e.lookup(id)
	if c == nil {
		return false, fmt.Errorf("%w: %q", ErrUnknownCustomer, id)
	}
	prof := c.info.Load()
	plan := p.Plan(prof.plan)
	if plan == nil {
		return false, nil // inherits its plan: the plan's owner pays
	}
	now := e.now()
	c.mu.Lock()
	m := c.meter(plan.Subscription)
	due := false
	if m != nil && m.value.Cmp(num.One) < 0 {
		trial := plan.TrialPeriod.D
		due = trial <= 0 || now.Sub(m.startedAt()) >= trial
	}
	c.mu.Unlock()
	if !due {
		return false, nil
	}
	return e.Allow(ctx, Call{Customer: id, Entitlement: plan.Subscription, Step: StepIncrement})
}
