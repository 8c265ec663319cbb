package enforcement

import (
	"context"
	"fmt"
	"slices"
	"sync"
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

// CallCap is a ceiling for one call only: the call may not consume more than Value
// of Credit ("rune" when empty).
type CallCap struct {
	Credit string
	Value  num.Dec
}

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
	// Force meters past hard limits, caps and the governor (used by Settle).
	Force bool
	Caps  []CallCap
	// Reservation tunes Reserve; other calls ignore it.
	Reservation ReserveOptions
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
	res := resolution{caller: c, owner: c, plan: c.planLocked(e, p)}
	if res.plan == nil {
		return res, nil
	}
	res.ce = res.plan.Entitlement(idx)
	if res.ce != nil && res.ce.Scope != "" && res.ce.Scope != c.info.Load().typ {
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

// Decide is Allow (commit) or Check without copying the call: the SDK's hot path.
func (e *Engine) Decide(ctx context.Context, call *Call, commit bool) (bool, error) {
	return e.call(call, commit)
}

// denial says what stopped a call.
type denial uint8

const (
	notDenied denial = iota
	deniedByCap
	deniedByGovernor
	deniedByLimit
	deniedByVoucher
)

// decision is the outcome of the shared decision path. Everything in it is computed
// from state without changing it; commit applies it.
type decision struct {
	limit          *policies.CompiledLimit
	amount         num.Dec
	overhead       num.Dec // this call's cost, runes
	reset          bool
	resetStart     int64
	prior          num.Dec // meter value before the call, before any reset
	meterValue     num.Dec // this period's value before the call
	overheadBefore num.Dec
	newValue       num.Dec
	held           num.Dec
	overage        num.Dec // the call's own overage (holds never create overage)
	gateOverage    num.Dec
	position       num.Dec // meter value − limit before the call
	billable       num.Dec
	grantsPooled   num.Dec // grant balance available past the limit
	coverAll       bool    // a hard limit passes because grants cover the whole overage
	ownValid       bool
	valid          bool
	commit         bool // the meter moves
	denied         denial
	deniedCap      int // index into caps when deniedByCap
	govTokens      num.Dec
	voucherDebit   num.Dec // runes the owner's voucher pays for the uncovered overage
}

// allowed is the call's answer.
func (d *decision) allowed() bool { return d.denied == notDenied && d.commit }

// checked is what Check answers: the same decision, without the commit.
func (d *decision) checked() bool {
	return d.denied != deniedByCap && d.denied != deniedByGovernor && d.denied != deniedByVoucher &&
		(d.valid || d.limit.Mode != policies.Hard)
}

// callScratch holds buffers for calls that involve grants or caps. It comes from a
// pool so neither those calls allocate nor plain calls pay for zeroing it.
type callScratch struct {
	caps   [4]capRef
	grants [8]grantState
}

var scratchPool = sync.Pool{New: func() any { return new(callScratch) }}

func (s *callScratch) release() {
	clear(s.caps[:])
	scratchPool.Put(s)
}

// lockScratch holds the customers a call locks.
type lockScratch struct {
	locks [4]*customer
	hold  [4]*customer
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
	res, err := e.resolve(p, call.Customer, call.Entitlement)
	if err != nil || res.ce == nil {
		return false, err
	}
	var ls lockScratch
	locks := e.lockCall(&res, &ls)
	if res.owner.deleted {
		unlockAll(locks)
		return false, fmt.Errorf("%w: %q", ErrUnknownCustomer, call.Customer)
	}
	now := e.now()
	owner := res.owner
	if commit && call.IdempotencyKey != "" {
		if rec, ok := owner.idemRecord(call.IdempotencyKey); ok && now.UnixNano()-rec.at < int64(e.idemTTL) {
			unlockAll(locks)
			return rec.allowed, nil
		}
	}
	limit := owner.effectiveLimit(p, res.ce, now)
	if limit == nil {
		// A feature gate: entitled means allowed; there is nothing to step.
		unlockAll(locks)
		return call.Step == StepNone, nil
	}
	m := owner.meter(res.ce.Name)
	amount := call.Amount
	switch {
	case call.Quantity != "":
		amount, err = policies.ToCreditUnits(limit.Credit.Credit, q)
		if err != nil {
			unlockAll(locks)
			return false, fmt.Errorf("%w: %w", ErrInvalidQuantity, err)
		}
	case call.Step == StepIncrement:
		amount = limit.Increment
	case call.Step == StepDecrement:
		amount = limit.Increment.Neg()
	}
	if allowed, ok := e.fastCall(p, owner, limit, m, amount, call, now.UnixNano(), commit, len(locks)); ok {
		if commit && call.IdempotencyKey != "" {
			e.remember(owner, call.IdempotencyKey, allowed, now)
		}
		if commit && e.usage != nil && e.usage.audit {
			if limit.Credit.Int {
				amount = amount.Trunc(0)
			}
			e.audit(owner.id, res.caller.id, res.ce.Name, amount, e.callOverhead(limit.Credit, amount, call), allowed, now)
		}
		unlockAll(locks)
		return allowed, nil
	}
	if len(owner.grants()) > 0 || len(res.plan.Compiled) > 0 {
		e.syncIncludedLocked(p, owner, now.UnixNano())
	}
	if commit && len(owner.grants()) > 0 {
		// Grant periods roll forward on access, like meter periods: an add or rollover
		// reset that happened while nothing was drawn must not be lost.
		owner.currentGrants(p, now.UnixNano())
	}
	var grantBuf []grantState
	var capBuf []capRef
	if len(owner.grants()) > 0 || len(locks) > 1 || res.caller.capCount.Load() > 0 || len(call.Caps) > 0 {
		sc := scratchPool.Get().(*callScratch)
		defer sc.release()
		grantBuf, capBuf = sc.grants[:0], sc.caps[:0]
	}
	var d decision
	caps, err := e.decide(&d, p, &res, locks, limit, m, amount, call, now, grantBuf, capBuf)
	if err != nil {
		unlockAll(locks)
		return false, err
	}
	if !commit {
		unlockAll(locks)
		return d.checked(), nil
	}
	events := e.commit(&d, p, &res, locks, caps, m, call, now)
	if e.usage != nil && e.usage.audit {
		e.audit(owner.id, res.caller.id, res.ce.Name, d.amount, d.overhead, d.allowed(), now)
	}
	if call.IdempotencyKey != "" {
		e.remember(owner, call.IdempotencyKey, d.allowed(), now)
	}
	unlockAll(locks)
	for i := range events {
		e.emit(events[i])
	}
	return d.allowed(), nil
}

// lockCall locks the meter owner and every customer whose caps can apply, in creation
// order, so two calls that share customers can never deadlock.
func (e *Engine) lockCall(res *resolution, s *lockScratch) []*customer {
	locks := append(s.locks[:0], res.owner)
	if res.caller.capCount.Load() > 0 || len(res.caller.info.Load().refs) > 0 {
		for _, h := range e.capHolders(res.caller, s.hold[:0]) {
			if !slices.Contains(locks, h) {
				locks = append(locks, h)
			}
		}
	}
	if len(locks) > 1 {
		slices.SortFunc(locks, func(a, b *customer) int {
			switch {
			case a.seq < b.seq:
				return -1
			case a.seq > b.seq:
				return 1
			}
			return 0
		})
	}
	for _, c := range locks {
		c.mu.Lock()
	}
	return locks
}

func unlockAll(locks []*customer) {
	if len(locks) == 1 {
		locks[0].mu.Unlock() // the common call: its meter owner only
		return
	}
	for i := len(locks) - 1; i >= 0; i-- {
		locks[i].mu.Unlock()
	}
}

// decide runs the reference engine's decision steps on one meter, computing everything
// from the current state without changing it.
func (e *Engine) decide(d *decision, p *policies.Policy, res *resolution, locked []*customer, limit *policies.CompiledLimit, m *meter, amount num.Dec, call *Call, now time.Time, grantBuf []grantState, caps []capRef) ([]capRef, error) {
	var c num.Calc
	owner := res.owner
	credit := limit.Credit
	d.limit = limit
	nowNs := now.UnixNano()
	if m != nil {
		d.prior, d.meterValue, d.overheadBefore = m.value, m.value, m.overhead
		if limit.Resets() && (m.periodOf != limit || nowNs >= m.periodEnd) {
			loc, anchor := owner.location(p), owner.anchor()
			start := limit.Reset.CurrentStart(m.startedAt(), now, loc, anchor)
			if start.UnixNano() != m.started {
				d.reset, d.resetStart = true, start.UnixNano()
				d.meterValue, d.overheadBefore = num.Zero, num.Zero
			} else {
				m.periodOf, m.periodEnd = limit, periodEnd(limit, start, loc, anchor)
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
	d.overhead = e.callOverhead(credit, amount, call)
	d.newValue = c.Add(d.meterValue, amount)
	if limit.HasMinimum && d.newValue.Cmp(limit.Minimum) < 0 {
		d.newValue = limit.Minimum
	}
	if amount.IsPos() && m != nil && m.ext != nil {
		d.held = m.held(nowNs)
	} else {
		d.held = num.Zero
	}
	d.ownValid = limitAllows(limit, d.newValue, d.meterValue)
	grantsApply := limit.GrantsApply && limit.Mode != policies.Observe && len(owner.grants()) > 0
	capsPossible := len(locked) > 1 || res.caller.capCount.Load() > 0 || len(call.Caps) > 0
	// The common call (within a plain limit, nothing else in play) needs nothing more,
	// unless its events are wanted: within the limit, those are meter-changed and
	// meter-reset.
	if d.ownValid && !d.held.IsPos() && !grantsApply && !capsPossible && !call.Force &&
		!limit.GovernorEnabled && (call.NoEvents || e.wanted(p)&(bitChanged|bitReset) == 0) &&
		(e.leases == nil || !e.leased(limit)) {
		d.valid, d.commit = true, true
		return caps, c.Err
	}
	gateValue, gateNew, gateMeter := amount, d.newValue, d.meterValue
	if d.held.IsPos() {
		gateValue, gateNew, gateMeter = c.Add(amount, d.held), c.Add(d.newValue, d.held), c.Add(d.meterValue, d.held)
	}
	// The part of the call above max(previous meter, limit); when the meter was already
	// past the limit, the whole call.
	d.overage = overageOf(&c, d.newValue, d.meterValue, limit.Value)
	d.gateOverage = d.overage
	if d.held.IsPos() {
		d.gateOverage = overageOf(&c, gateNew, gateMeter, limit.Value)
	}
	d.position = c.Sub(d.meterValue, limit.Value)
	d.billable = num.Max(num.Zero, d.position)
	d.grantsPooled = num.Zero
	// The pooled balance is only compared against when a hard limit (or held room) may
	// need grants, or an ignore_grants cap subtracts what they cover; computing it means
	// converting through the exchange, so it is skipped otherwise.
	if grantsApply && (limit.Mode == policies.Hard || !d.held.IsZero() || capsPossible || owner.voucher() != nil) {
		states := owner.grantStates(p, nowNs, grantBuf)
		d.grantsPooled = pooled(p, owner, credit.Name, d.billable, states)
	}
	if c.Err != nil {
		return caps, c.Err
	}

	// Caps: every applicable cap must have room for the call, first counting grant-paid
	// units, then (ignore_grants caps) only what grants do not pay for.
	if !call.Force && amount.IsPos() {
		covered := num.Zero
		if grantsApply && d.gateOverage.IsPos() {
			covered = num.Min(d.gateOverage, d.grantsPooled)
		}
		use := capUse{credit: credit.Name, units: gateValue, overage: num.Max(num.Zero, d.gateOverage),
			covered: covered, position: d.position, billable: d.billable, overhead: d.overhead}
		caps = e.collectCaps(caps, d, p, res, locked, call, nowNs)
		for i := range caps {
			cr := &caps[i]
			u := use
			if !cr.cap.cfg.IgnoreGrants {
				u.covered = num.Zero
			}
			cr.use, cr.ok = cr.cap.consumption(p, &u)
			if cr.ok && !cr.cap.hasRoom(cr.state.meter, cr.use) {
				d.denied, d.deniedCap = deniedByCap, i
				return caps, nil
			}
			if cr.ok && cr.cap.key != "" {
				denied, err := e.capLeaseGate(cr, nowNs)
				if err != nil {
					return caps, err
				}
				if denied {
					d.denied, d.deniedCap = deniedByCap, i
					return caps, nil
				}
			}
		}
	}

	// The governor smooths bursts under a hard limit; a denied call spends no tokens.
	if !call.Force && limit.GovernorEnabled && limit.Mode == policies.Hard && amount.IsPos() {
		d.govTokens = governorTokens(limit, m, d.reset, nowNs)
		if amount.Cmp(d.govTokens) > 0 {
			d.denied = deniedByGovernor
			return caps, nil
		}
	}

	gateValid := d.held.IsZero() || limitAllows(limit, gateNew, gateMeter)
	if d.ownValid && !gateValid && grantsApply {
		gateValid = d.grantsPooled.Cmp(d.gateOverage) >= 0
	}
	d.valid = d.ownValid && gateValid
	if !d.valid && limit.Mode == policies.Hard && !call.Force && grantsApply &&
		d.overage.IsPos() && d.grantsPooled.Cmp(d.gateOverage) >= 0 {
		// Hard limits take grants all or nothing: full coverage, or deny.
		d.valid, d.coverAll = true, true
	}
	d.commit = d.valid || limit.Mode == policies.Soft || call.Force
	if !d.commit {
		d.denied = deniedByLimit
		return caps, nil
	}
	if d.ownValid && !d.coverAll && !call.Force && amount.IsPos() && e.leases != nil && e.leased(limit) {
		period := nowNs
		if m != nil {
			period = m.started
			if d.reset {
				period = d.resetStart
			}
		}
		// Holds on the meter count against the lease, as against the limit: a hold
		// reserves allowance the fleet has granted this instance.
		switch m.leaseOf().room(period, gateValue, nowNs) {
		case leaseNeeded:
			return caps, ErrLeaseNeeded
		case leaseDenied:
			// The fleet has used the limit up: the call is denied as the limit would.
			d.valid, d.commit, d.denied = false, false, deniedByLimit
			return caps, nil
		}
	}
	if owner.voucher() != nil && !d.ownValid && !d.coverAll && d.overage.IsPos() {
		// The voucher pays what grants leave of the overage, priced from where the
		// grants stop; a call it cannot pay is denied (forced calls go through unpaid).
		covered := num.Zero
		if grantsApply {
			covered = num.Min(d.overage, d.grantsPooled)
		}
		uncovered := c.Sub(d.overage, covered)
		debit, ok := voucherPays(owner.voucher(), p, credit, uncovered, c.Add(d.billable, covered), nowNs)
		if c.Err != nil {
			return caps, c.Err
		}
		switch {
		case ok:
			d.voucherDebit = debit
		case !call.Force:
			d.denied, d.commit = deniedByVoucher, false
		}
	}
	return caps, nil
}

// overageOf is the part of a move from current to next above max(current, limit).
func overageOf(c *num.Calc, next, current, limit num.Dec) num.Dec {
	if next.Cmp(current) > 0 {
		return c.Sub(next, num.Max(current, limit))
	}
	return c.Sub(next, limit)
}

// collectCaps lists the caps that apply to the call: the caller's own, shared caps of
// customers up its refs (filtered by shared_with), and the call's own ceilings.
func (e *Engine) collectCaps(caps []capRef, d *decision, p *policies.Policy, res *resolution, locked []*customer, call *Call, now int64) []capRef {
	ent, credit := res.ce.Name, d.limit.Credit.Name
	callerType := res.caller.info.Load().typ
	for _, h := range locked {
		if h.deleted || len(h.caps()) == 0 {
			continue
		}
		loc, anchor := h.location(p), h.anchor()
		for _, sc := range h.caps() {
			if h != res.caller && (!sc.cfg.Shared || (len(sc.cfg.SharedWith) > 0 && !slices.Contains(sc.cfg.SharedWith, callerType))) {
				continue
			}
			if !sc.appliesTo(p, ent, credit) {
				continue
			}
			st := sc.at(now, loc, anchor)
			if st.expired {
				continue
			}
			caps = append(caps, capRef{holder: h, cap: sc, state: st})
		}
	}
	for _, cc := range call.Caps {
		cr := cc.Credit
		if cr == "" {
			cr = "rune"
		}
		// Limitr names a call's own cap tmp-<credit>; cap-limit events keep that id.
		sc := &spendCap{cfg: Cap{ID: "tmp-" + cr, Credit: cr}, credit: cr, ceiling: cc.Value}
		if !sc.appliesTo(p, ent, credit) {
			continue
		}
		caps = append(caps, capRef{cap: sc, state: capState{meter: num.Zero}})
	}
	return caps
}

// governorTokens is the bucket's level at now: full when first used or after a reset,
// refilled by elapsed milliseconds × rate up to capacity.
//
// In fleet mode Exact the bucket is the fleet's: each of the instances holding a live
// lease of the meter runs its share of it (capacity and rate divided by their number),
// so together they admit no more than the governor allows one instance.
func governorTokens(l *policies.CompiledLimit, m *meter, reset bool, now int64) num.Dec {
	capacity, refill := l.GovernorCapacity, l.GovernorRefill
	if ls := m.leaseOf(); ls != nil && ls.holders > 1 && now < ls.expires {
		var c num.Calc
		h := num.FromInt(int64(ls.holders))
		capacity, refill = c.Quo(capacity, h), c.Quo(refill, h)
		if c.Err != nil {
			capacity, refill = l.GovernorCapacity, l.GovernorRefill
		}
	}
	if m == nil || m.ext == nil || !m.ext.govInit || reset {
		return capacity
	}
	var c num.Calc
	elapsedMs := num.FromInt((now - m.ext.govLast) / int64(time.Millisecond))
	tokens := c.Add(m.ext.govTokens, c.Mul(elapsedMs, refill))
	if c.Err != nil || tokens.Cmp(capacity) > 0 {
		return capacity
	}
	return tokens
}

// callOverhead is this call's provider cost in runes: explicit, the credit's cost
// expression, or units × overhead_cost.
func (e *Engine) callOverhead(credit *policies.CompiledCredit, amount num.Dec, call *Call) num.Dec {
	switch {
	case call.HasOverhead:
		return call.Overhead
	case amount.IsZero():
		return num.Zero
	case credit.Cost != nil:
		if v, err := credit.Cost.Eval(amount, credit.OverheadCost, call.EventData); err == nil {
			return v
		}
	}
	if credit.OverheadCost.IsZero() {
		return num.Zero
	}
	var c num.Calc
	v := c.Mul(amount, credit.OverheadCost)
	if c.Err != nil {
		return num.Zero
	}
	return v
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

// limitAllows is Limit.check: observe never denies, decrements and no-ops never trip,
// hard_trailing looks at the meter before the call, everything else is inclusive.
func limitAllows(l *policies.CompiledLimit, newValue, current num.Dec) bool {
	if l.Mode == policies.Observe || num.Cmp(newValue, current) <= 0 {
		return true
	}
	if l.Mode == policies.Hard && l.HardTrailing {
		return num.Cmp(current, l.Value) < 0
	}
	return num.Cmp(newValue, l.Value) <= 0
}

// idemRecord is the outcome remembered for an idempotency key. Caller holds c.mu.
func (c *customer) idemRecord(key string) (idemRecord, bool) {
	if c.x == nil {
		return idemRecord{}, false
	}
	rec, ok := c.x.idem[key]
	return rec, ok
}

// remember stores an idempotency outcome, pruning expired keys when the map grows.
func (e *Engine) remember(c *customer, key string, allowed bool, now time.Time) {
	x := c.extras()
	if x.idem == nil {
		x.idem = map[string]idemRecord{}
	}
	if len(x.idem) >= 1024 && len(x.idem)&(len(x.idem)-1) == 0 {
		cutoff := now.UnixNano() - int64(e.idemTTL)
		for k, r := range x.idem {
			if r.at < cutoff {
				delete(x.idem, k)
			}
		}
	}
	x.idem[key] = idemRecord{allowed: allowed, at: now.UnixNano()}
}
