package replay

import (
	"slices"
	"strings"

	"github.com/limitr/limitr/internal/billing"
	"github.com/limitr/limitr/internal/enforcement"
	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/policies"
)

// enforcer reshapes one billing period's committed usage as the candidate policy
// would have enforced it. The committed units are what the current policy let
// through; a replay cannot know what callers would have done when refused, so it
// assumes the same demand and takes away only what the candidate would have refused:
//
//   - Grants: the usage grants paid for is first what the current plan's included
//     grants give for the credit, each billing period (what is beyond came from
//     purchased topups, which the candidate keeps). Under the candidate, grants pay
//     at most its included grants plus those purchases; the rest is billed (or, past
//     a hard limit that grants extend, denied).
//   - Hard limits: usage past a hard limit of the candidate (its value, plus the
//     grant-paid usage when grants apply to the limit) is denied. Denied usage is not
//     billed and did not cost anything: the meter's overhead shrinks in proportion.
type enforcer struct {
	current, candidate *policies.Policy
	sub                billing.Subject
	typ                string
	period             billing.Period
}

type meterKey struct {
	ent   string
	start int64
}

func keyOf(m billing.MeterUsage) meterKey { return meterKey{m.Entitlement, m.PeriodStart.UnixNano()} }

// shape returns the customer's meters with the billed ones reshaped, and whether any
// changed; the hard limits hit and grants run out are added to cr.
func (e enforcer) shape(all []billing.MeterUsage, cand []billing.ReplayedMeter, cr *CustomerReport) ([]billing.MeterUsage, bool, error) {
	cand = slices.Clone(cand)
	slices.SortFunc(cand, func(a, b billing.ReplayedMeter) int {
		if c := strings.Compare(a.Entitlement, b.Entitlement); c != 0 {
			return c
		}
		return a.PeriodStart.Compare(b.PeriodStart)
	})
	changed := map[meterKey]billing.MeterUsage{}
	if err := e.grants(cand, changed, cr); err != nil {
		return nil, false, err
	}
	for i := range cand {
		if m, ok := changed[keyOf(cand[i].MeterUsage)]; ok {
			cand[i].MeterUsage = m
		}
		if m, ok, err := e.hardLimit(cand[i], cr); err != nil {
			return nil, false, err
		} else if ok {
			changed[keyOf(m)] = m
		}
	}
	if len(changed) == 0 {
		return all, false, nil
	}
	out := make([]billing.MeterUsage, len(all))
	for i, m := range all {
		if c, ok := changed[keyOf(m)]; ok {
			m = c
		}
		out[i] = m
	}
	return out, true, nil
}

// included is what a policy's included grants of the customer's plan give, per
// credit, each period.
func (e enforcer) included(p *policies.Policy) map[string]num.Dec {
	out := map[string]num.Dec{}
	plan := p.Plan(e.sub.ResolvedPlan)
	if plan == nil {
		return out
	}
	for _, t := range plan.Compiled {
		if t.Included && enforcement.IncludedFor(t, e.typ) {
			v, _ := out[t.Credit.Name].Add(t.Value)
			out[t.Credit.Name] = v
		}
	}
	return out
}

// grants caps the grant-paid usage of the candidate's billed meters at what its
// grants give, recording each credit that runs out.
func (e enforcer) grants(cand []billing.ReplayedMeter, changed map[meterKey]billing.MeterUsage, cr *CustomerReport) error {
	covered := map[string]num.Dec{}
	var credits []string
	var c num.Calc
	for _, m := range cand {
		if !m.GrantCovered.IsPos() {
			continue
		}
		name := m.Limit.Credit.Name
		if _, ok := covered[name]; !ok {
			credits = append(credits, name)
		}
		covered[name] = c.Add(covered[name], m.GrantCovered)
	}
	if len(credits) == 0 {
		return c.Err
	}
	was, now := e.included(e.current), e.included(e.candidate)
	slices.Sort(credits)
	left := map[string]num.Dec{}
	for _, name := range credits {
		purchased := num.Max(num.Zero, c.Sub(covered[name], was[name]))
		available := c.Add(now[name], purchased)
		left[name] = available
		if covered[name].Cmp(available) > 0 {
			cr.Grants = append(cr.Grants, GrantRunOut{Credit: name, PeriodStart: e.period.Start,
				Covered: dec(covered[name]), Available: dec(available), Shortfall: dec(c.Sub(covered[name], available))})
		}
	}
	for _, m := range cand {
		if !m.GrantCovered.IsPos() {
			continue
		}
		name := m.Limit.Credit.Name
		give := num.Min(m.GrantCovered, left[name])
		left[name] = c.Sub(left[name], give)
		if give.Cmp(m.GrantCovered) != 0 {
			u := m.MeterUsage
			u.GrantCovered = give
			changed[keyOf(u)] = u
		}
	}
	return c.Err
}

// hardLimit denies the usage of a meter past the candidate's hard limit; ok is false
// when the meter is not past it (a meter that reaches it exactly is recorded as
// hitting it, with nothing denied).
func (e enforcer) hardLimit(m billing.ReplayedMeter, cr *CustomerReport) (billing.MeterUsage, bool, error) {
	l := m.Limit
	if l.Mode != policies.Hard || !m.Units.IsPos() {
		return billing.MeterUsage{}, false, nil
	}
	allowed := l.Value
	var c num.Calc
	if l.GrantsApply {
		allowed = c.Add(allowed, m.GrantCovered)
	}
	if m.Units.Cmp(allowed) < 0 {
		return billing.MeterUsage{}, false, c.Err
	}
	hit := HardLimitHit{Entitlement: m.Entitlement, PeriodStart: m.PeriodStart.UTC(), Limit: dec(l.Value),
		Units: dec(m.Units), Denied: "0"}
	if m.Units.Cmp(allowed) == 0 {
		cr.HardLimits = append(cr.HardLimits, hit)
		return billing.MeterUsage{}, false, c.Err
	}
	denied := c.Sub(m.Units, allowed)
	hit.Denied = dec(denied)
	cr.HardLimits = append(cr.HardLimits, hit)
	u := m.MeterUsage
	// The overhead of the usage let through, in proportion: what was denied cost
	// nothing.
	u.Overhead = c.Quo(c.Mul(u.Overhead, allowed), u.Units)
	u.Units = allowed
	u.GrantCovered = num.Min(u.GrantCovered, allowed)
	return u, true, c.Err
}

func dec(d num.Dec) string { return d.Trim(0).String() }
