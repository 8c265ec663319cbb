package enforcement

import (
	"context"
	"fmt"
	"time"

	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/policies"
	"github.com/limitr/limitr/internal/quantity"
)

// Step selects a call whose amount comes from the limit's increment.
type Step int8

// Steps.
const (
	StepNone      Step = 0
	StepIncrement Step = 1
	StepDecrement Step = -1
)

// Call is one metering request. Amount is in the credit's units unless Quantity is set.
type Call struct {
	Customer    string
	Entitlement string
	Amount      num.Dec
	// Quantity, when set, is a unit string ("500MB") converted into the credit's units.
	Quantity string
	Step     Step
	// SetTo makes the call move the meter to Amount (Limitr's set).
	SetTo          bool
	NoEvents       bool
	EventData      map[string]any
	HasOverhead    bool
	Overhead       num.Dec // runes, used when HasOverhead
	IdempotencyKey string
	Force          bool
}

// resolution is who and what a call is about.
type resolution struct {
	caller *customer
	owner  *customer // holds the meter: the caller, or the scoped customer up its refs
	plan   *policies.CompiledPlan
	ce     *policies.CompiledEntitlement // nil: not entitled
}

func (e *Engine) resolve(p *policies.Policy, id, ent string) (resolution, error) {
	idx, ok := p.EntitlementIndex(ent)
	if !ok {
		return resolution{}, fmt.Errorf("%w: %q", ErrUnknownEntitlement, ent)
	}
	c := e.lookup(id)
	if c == nil {
		return resolution{}, fmt.Errorf("%w: %q", ErrUnknownCustomer, id)
	}
	prof := c.info.Load()
	res := resolution{caller: c, owner: c, plan: e.resolvePlan(p, prof)}
	if res.plan == nil {
		return res, nil
	}
	res.ce = res.plan.Entitlement(idx)
	if res.ce != nil && res.ce.Scope != "" && res.ce.Scope != prof.typ {
		res.owner = e.scopeOwner(c, res.ce.Scope)
		if res.owner == nil {
			res.ce = nil
		}
	}
	return res, nil
}

// Allow decides a call and commits it when allowed.
func (e *Engine) Allow(ctx context.Context, call Call) (bool, error) { return e.call(&call, true) }

// Check decides a call exactly as Allow would, without changing anything.
func (e *Engine) Check(ctx context.Context, call Call) (bool, error) { return e.call(&call, false) }

// decision is the outcome of the shared decision path.
type decision struct {
	limit      *policies.CompiledLimit
	amount     num.Dec
	overhead   num.Dec // this call's cost, runes
	reset      bool
	prior      num.Dec // meter value before the call, before any reset
	meterValue num.Dec // this period's value before the call
	overheadBefore,
	newValue,
	overage num.Dec
	ownValid bool
	valid    bool
	commit   bool // the meter moves
}

func (e *Engine) call(call *Call, commit bool) (bool, error) {
	p := e.policy.Load()
	var q quantity.Quantity
	if call.Quantity != "" {
		var err error
		if q, err = quantity.Parse(call.Quantity); err != nil {
			return false, fmt.Errorf("%w: %w", ErrInvalidQuantity, err)
		}
	}
	res, err := e.resolveLocked(p, call.Customer, call.Entitlement)
	if err != nil || res.ce == nil {
		return false, err
	}
	now := e.now()
	owner := res.owner
	if commit && call.IdempotencyKey != "" {
		if rec, ok := owner.idem[call.IdempotencyKey]; ok && now.UnixNano()-rec.at < int64(e.idemTTL) {
			owner.mu.Unlock()
			return rec.allowed, nil
		}
	}
	limit := owner.effectiveLimit(p, res.ce, now)
	if limit == nil {
		// A feature gate: entitled means allowed; there is nothing to step.
		owner.mu.Unlock()
		return call.Step == StepNone, nil
	}
	m := owner.meter(res.ce.Name)
	amount := call.Amount
	switch {
	case call.Quantity != "":
		amount, err = policies.ToCreditUnits(limit.Credit.Credit, q)
		if err != nil {
			owner.mu.Unlock()
			return false, fmt.Errorf("%w: %w", ErrInvalidQuantity, err)
		}
	case call.Step == StepIncrement:
		amount = limit.Increment
	case call.Step == StepDecrement:
		amount = limit.Increment.Neg()
	}
	var d decision
	err = e.decide(&d, p, owner, limit, m, amount, call, now, commit)
	if err != nil {
		owner.mu.Unlock()
		return false, err
	}
	var events []Event
	if commit {
		if d.commit {
			if m == nil {
				owner.meters = append(owner.meters, meter{ent: res.ce.Name, started: now.UnixNano()})
				m = &owner.meters[len(owner.meters)-1]
			}
			m.credit = limit.Credit.Name
			m.value = d.newValue
			var c num.Calc
			m.overhead = c.Add(d.overheadBefore, d.overhead)
		}
		if call.IdempotencyKey != "" {
			e.remember(owner, call.IdempotencyKey, d.valid || d.commit, now)
		}
		if !call.NoEvents && e.hasHandlers() {
			events = e.meterEvents(p, res, &d, call, now)
		}
	}
	owner.mu.Unlock()
	for i := range events {
		e.emit(events[i])
	}
	if !commit {
		return d.valid || limit.Mode != policies.Hard, nil
	}
	return d.valid || d.commit, nil
}

// decide runs the reference engine's decision steps on one meter. With commit it
// applies a due period reset (the one state change a denied call may make); without,
// the reset is only computed.
func (e *Engine) decide(d *decision, p *policies.Policy, owner *customer, limit *policies.CompiledLimit, m *meter, amount num.Dec, call *Call, now time.Time, commit bool) error {
	var c num.Calc
	credit := limit.Credit
	d.limit = limit
	if m != nil {
		d.prior, d.meterValue, d.overheadBefore = m.value, m.value, m.overhead
		if limit.Resets() && (m.periodOf != limit || now.UnixNano() >= m.periodEnd) {
			prof := owner.info.Load()
			loc := owner.location(p)
			start := limit.Reset.CurrentStart(m.startedAt(), now, loc, prof.anchor)
			if start.UnixNano() != m.started {
				d.reset = true
				d.meterValue, d.overheadBefore = num.Zero, num.Zero
				if commit {
					m.started = start.UnixNano()
					m.value, m.overhead = num.Zero, num.Zero
				}
			}
			if !d.reset || commit {
				m.periodOf, m.periodEnd = limit, periodEnd(limit, start, loc, prof.anchor)
			}
		}
	}
	if call.SetTo {
		amount = c.Sub(amount, d.meterValue)
	}
	if credit.Int {
		amount = amount.Trunc(0)
	}
	d.amount = amount
	switch {
	case call.HasOverhead:
		d.overhead = call.Overhead
	case amount.IsZero() || credit.OverheadCost.IsZero():
		d.overhead = num.Zero
	default:
		d.overhead = c.Mul(amount, credit.OverheadCost)
	}
	d.newValue = c.Add(d.meterValue, amount)
	if limit.HasMinimum && d.newValue.Cmp(limit.Minimum) < 0 {
		d.newValue = limit.Minimum
	}
	if c.Err != nil {
		return c.Err
	}
	d.ownValid = limitAllows(limit, d.newValue, d.meterValue)
	d.valid = d.ownValid
	d.commit = d.valid || limit.Mode == policies.Soft || call.Force
	if !d.ownValid || e.hasHandlers() {
		// The part of the call above max(previous meter, limit); when the meter was
		// already past the limit, the whole call.
		if d.newValue.Cmp(d.meterValue) > 0 {
			d.overage = c.Sub(d.newValue, num.Max(d.meterValue, limit.Value))
		} else {
			d.overage = c.Sub(d.newValue, limit.Value)
		}
	}
	return c.Err
}

// periodEnd is the first instant at which the period starting at start is over. A
// duration grid keeps its boundary instant in the old period; a calendar period ends
// exactly at the next boundary.
func periodEnd(l *policies.CompiledLimit, start time.Time, loc *time.Location, anchor time.Time) int64 {
	if l.Reset.Every > 0 {
		return start.UnixNano() + int64(l.Reset.Every) + 1
	}
	return l.Reset.Schedule.Next(start, loc, anchor).UnixNano()
}

// resolveLocked is resolve for the hot path: it returns with the owner's lock held,
// using the caller's cached plan. On error or when not entitled, no lock is held.
func (e *Engine) resolveLocked(p *policies.Policy, id, ent string) (resolution, error) {
	idx, ok := p.EntitlementIndex(ent)
	if !ok {
		return resolution{}, fmt.Errorf("%w: %q", ErrUnknownEntitlement, ent)
	}
	c := e.lookup(id)
	if c == nil {
		return resolution{}, fmt.Errorf("%w: %q", ErrUnknownCustomer, id)
	}
	c.mu.Lock()
	if c.deleted {
		c.mu.Unlock()
		return resolution{}, fmt.Errorf("%w: %q", ErrUnknownCustomer, id)
	}
	res := resolution{caller: c, owner: c, plan: c.planLocked(e, p)}
	if res.plan != nil {
		res.ce = res.plan.Entitlement(idx)
	}
	if res.ce == nil {
		c.mu.Unlock()
		return res, nil
	}
	if res.ce.Scope != "" && res.ce.Scope != c.info.Load().typ {
		c.mu.Unlock()
		res.owner = e.scopeOwner(c, res.ce.Scope)
		if res.owner == nil {
			res.ce = nil
			return res, nil
		}
		res.owner.mu.Lock()
		if res.owner.deleted {
			res.owner.mu.Unlock()
			res.ce = nil
			return res, nil
		}
	}
	return res, nil
}

// limitAllows is Limit.check: observe never denies, decrements and no-ops never trip,
// hard_trailing looks at the meter before the call, everything else is inclusive.
func limitAllows(l *policies.CompiledLimit, newValue, current num.Dec) bool {
	if l.Mode == policies.Observe || newValue.Cmp(current) <= 0 {
		return true
	}
	if l.Mode == policies.Hard && l.HardTrailing {
		return current.Cmp(l.Value) < 0
	}
	return newValue.Cmp(l.Value) <= 0
}

// remember stores an idempotency outcome, pruning expired keys when the map grows.
func (e *Engine) remember(c *customer, key string, allowed bool, now time.Time) {
	if c.idem == nil {
		c.idem = map[string]idemRecord{}
	}
	if len(c.idem) >= 1024 && len(c.idem)&(len(c.idem)-1) == 0 {
		cutoff := now.UnixNano() - int64(e.idemTTL)
		for k, r := range c.idem {
			if r.at < cutoff {
				delete(c.idem, k)
			}
		}
	}
	c.idem[key] = idemRecord{allowed: allowed, at: now.UnixNano()}
}
