package enforcement

import (
	"time"

	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/policies"
)

// fastCall decides the common call — a plain limit with nothing else in play (no grants
// or topups, caps, holds, governor, unit strings, and no handler for the events the
// call makes) — with the same rules as decide, without building a full decision. ok is
// false when the call needs the full path; nothing has changed then.
func (e *Engine) fastCall(p *policies.Policy, owner *customer, limit *policies.CompiledLimit, m *meter, amount num.Dec, call *Call, nowNs int64, commit bool, locked int) (allowed, ok bool) {
	if m == nil || m.ext != nil || locked > 1 || owner.x != nil && (len(owner.x.grants) > 0 || owner.x.voucher != nil) || owner.capCount.Load() > 0 ||
		call.SetTo || call.Force || call.Quantity != "" || len(call.Caps) > 0 || call.HasOverhead ||
		limit.GovernorEnabled || limit.Credit.Cost != nil {
		return false, false
	}
	// A call here makes at most one event: meter-changed when allowed within the limit,
	// meter-overage past a soft one, meter-limit when denied. Only a wanted one sends the
	// call down the full path, which builds it.
	want := e.wanted(p)
	if want&bitChanged != 0 && !call.NoEvents {
		return false, false
	}
	if limit.Resets() && (m.periodOf != limit || nowNs >= m.periodEnd) {
		return false, false // a period may have ended: the full path applies the reset
	}

	if limit.Credit.Int && amount.Scale() > 0 { // Trunc(0) of a whole amount is itself
		amount = amount.Trunc(0)
	}
	next, err := num.Add(m.value, amount)
	if err != nil {
		return false, false
	}
	if limit.HasMinimum && num.Cmp(next, limit.Minimum) < 0 {
		next = limit.Minimum
	}
	if e.usage != nil && (num.Cmp(next, limit.Value) > 0 || num.Cmp(m.value, limit.Value) > 0) {
		return false, false // billable usage is priced on the full path
	}
	var within bool
	if amount.IsPos() && limit.Mode != policies.Observe && !limit.HardTrailing {
		within = num.Cmp(next, limit.Value) <= 0 // limitAllows, for the common call: the meter moves up
	} else {
		within = limitAllows(limit, next, m.value)
	}
	if within && amount.IsPos() && e.leases != nil && e.leased(limit) && m.lease.room(m.started, amount, nowNs) != leaseRoom {
		return false, false // the full path asks for allowance or denies
	}
	allowed = within || limit.Mode == policies.Soft
	if !commit {
		return allowed || limit.Mode != policies.Hard, true
	}
	if !within && want&(bitOverage|bitLimit) != 0 && !call.NoEvents {
		return false, false
	}
	if !allowed {
		return false, true
	}
	cost := num.Zero
	if !limit.Credit.OverheadCost.IsZero() && !amount.IsZero() {
		var err error
		if cost, err = amount.Mul(limit.Credit.OverheadCost); err != nil {
			return false, false
		}
		total, err := m.overhead.Add(cost)
		if err != nil {
			return false, false
		}
		m.overhead = total
	}
	if e.usage != nil {
		moved, _ := next.Sub(m.value)
		e.record(owner, m, limit.Credit.Name, moved, cost, num.Zero, num.Zero) // no overage here, so no grant draws
	}
	m.value = next
	e.setCredit(m, limit.Credit.Name)
	m.burn.push(nowNs/int64(time.Millisecond), toFloat32(amount), limit.EWMAAlphaF)
	if m.lease != nil {
		e.leaseUse(owner, m, amount)
	}
	return true, true
}
