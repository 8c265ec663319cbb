package enforcement

import (
	"time"

	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/policies"
)

// commit applies a decision: the due reset (even for a denied call), then for an
// allowed call the meter, governor, grants and caps. It returns the events to emit.
func (e *Engine) commit(d *decision, p *policies.Policy, res *resolution, locked []*customer, caps []capRef, m *meter, call *Call, now time.Time) []Event {
	var c num.Calc
	owner := res.owner
	nowNs := now.UnixNano()
	if d.reset {
		m.resetPeriod(d.resetStart)
		m.periodOf, m.periodEnd = d.limit, periodEnd(d.limit, time.Unix(0, d.resetStart), owner.location(p), owner.anchor())
	}
	if m != nil && m.ext != nil && d.amount.IsPos() {
		m.pruneHolds(nowNs)
	}
	// Events are built only when a handler wants one the call makes: building them
	// snapshots the customer, which allocates. A due reset makes a meter-reset.
	var want eventMask
	if !call.NoEvents {
		want = e.wanted(p)
	}
	resetWanted := d.reset && want&bitReset != 0
	if d.denied == deniedByVoucher {
		return nil // Limitr's voucher denial sends no event
	}
	if d.denied != notDenied && d.denied != deniedByLimit {
		typ, ref := EventMeterGoverned, EventRef{Type: EventMeterGoverned, Customer: owner.id, Entitlement: res.ce.Name}
		if d.denied == deniedByCap {
			typ, ref = EventCapLimit, capLimitRef(res, caps[d.deniedCap])
		}
		if !resetWanted && (want&bitOf(typ) == 0 || e.repeated(p, ref)) {
			return nil
		}
		return e.denialEvents(p, res, d, caps, call, now)
	}
	if !d.commit {
		ref := EventRef{Type: EventMeterLimit, Customer: owner.id, Entitlement: res.ce.Name}
		if !resetWanted && (want&bitLimit == 0 || e.repeated(p, ref)) {
			return nil
		}
		return e.meterEvents(p, res, d, call, now, grantDraw{}, d.overage)
	}
	if m == nil {
		owner.meters = append(owner.meters, meter{key: e.meterKey(res.ce.Name, d.limit.Credit.Name), started: nowNs})
		m = &owner.meters[len(owner.meters)-1]
	}
	e.setCredit(m, d.limit.Credit.Name)
	m.value = d.newValue
	if m.lease != nil {
		e.leaseUse(owner, m, d.amount)
	}
	if d.voucherDebit.IsPos() {
		e.debitVoucher(owner, d.voucherDebit)
	}
	if !d.overhead.IsZero() || d.reset {
		m.overhead = c.Add(d.overheadBefore, d.overhead)
	}
	if d.limit.GovernorEnabled && d.amount.IsPos() && !call.Force {
		x := m.extension()
		x.govInit, x.govTokens, x.govLast = true, c.Sub(d.govTokens, d.amount), nowNs
	}
	m.burn.push(nowNs/int64(time.Millisecond), toFloat32(d.amount), d.limit.EWMAAlphaF)
	draw, left := grantDraw{}, d.overage
	grantsApply := d.limit.GrantsApply && d.limit.Mode != policies.Observe && len(owner.grants()) > 0
	if (d.coverAll || !d.ownValid) && d.overage.IsPos() && grantsApply {
		owner.currentGrants(p, nowNs)
		draw, left = drawGrants(p, owner, d.limit.Credit.Name, d.overage, d.billable, e.usage)
		if draw.applied.IsPos() {
			x := m.extension()
			x.grantCovered = c.Add(x.grantCovered, draw.applied)
			x.topupRevenue = c.Add(x.topupRevenue, draw.topup)
		}
	}
	if e.usage != nil {
		var price num.Dec
		if pd, ok := e.callPrice(p, d); ok {
			price = pd
		} else {
			price = num.Zero
		}
		// draw.applied is the zero decimal when no grant was drawn.
		e.record(owner, m, d.limit.Credit.Name, c.Sub(d.newValue, d.meterValue), d.overhead, price, draw.applied)
	}
	capReport := want & (bitCrossed | bitSet)
	moved := e.commitCaps(d, p, res, locked, caps, draw.applied, now, capReport)
	var out []Event
	// What meterEvents makes: meter-overage past the limit (unless grants paid for all of
	// it), else meter-changed when the meter moved; meter-reset when a period ended.
	overage := !d.ownValid && !d.coverAll && left.IsPos()
	changed := !overage && (d.reset || !d.newValue.Equal(d.meterValue) || !d.overhead.IsZero())
	if resetWanted || changed && want&bitChanged != 0 ||
		overage && want&bitOverage != 0 && !e.repeated(p, EventRef{Type: EventMeterOverage, Customer: owner.id, Entitlement: res.ce.Name}) {
		out = e.meterEvents(p, res, d, call, now, draw, left)
	}
	if len(moved) > 0 {
		out = append(out, e.capEvents(p, res, d, moved, call, now, capReport)...)
	}
	return out
}

// commitCaps advances every applicable cap by what the call consumed. Caps move even
// past their ceiling when the call was forced. It returns the caps that moved.
// report says which events the caller builds from the moves: the moves of caps that
// crossed their threshold for cap-threshold-crossed, every move for customer-set.
func (e *Engine) commitCaps(d *decision, p *policies.Policy, res *resolution, locked []*customer, caps []capRef, covered num.Dec, now time.Time, report eventMask) []capMove {
	if len(caps) == 0 && res.caller.capCount.Load() == 0 && len(res.caller.info.Load().refs) == 0 {
		return nil
	}
	if len(caps) == 0 {
		// Gates are skipped for non-positive and forced calls; caps still follow them.
		caps = e.collectCaps(caps, d, p, res, locked, &Call{}, now.UnixNano())
		if len(caps) == 0 {
			return nil
		}
	}
	var c num.Calc
	overage := num.Max(num.Zero, d.overage)
	var moved []capMove
	for i := range caps {
		cr := &caps[i]
		if cr.holder == nil {
			continue // call-scoped caps only gate
		}
		u := capUse{credit: d.limit.Credit.Name, units: d.amount, overage: overage, position: d.position,
			billable: d.billable, overhead: d.overhead, covered: num.Zero}
		if cr.cap.cfg.IgnoreGrants {
			u.covered = covered
		}
		if d.amount.IsNeg() {
			u.overage = num.Zero
		}
		use, ok := cr.cap.consumption(p, &u)
		if !ok || use.IsZero() {
			continue
		}
		if use.IsNeg() && !cr.cap.cfg.FollowDecrements {
			continue
		}
		if d.amount.IsZero() && !cr.cap.cfg.OverheadCost {
			continue
		}
		sc := cr.cap
		sc.settle(cr.state)
		before := sc.meterValue
		sc.meterValue = c.Add(sc.meterValue, use)
		e.capUsed(cr.holder, sc, use)
		if report != 0 {
			crossed := before.Cmp(sc.ceiling) < 0 && sc.meterValue.Cmp(sc.ceiling) >= 0
			if report&bitSet != 0 || crossed && report&bitCrossed != 0 {
				moved = append(moved, capMove{holder: cr.holder, cap: sc, crossed: crossed})
			}
		}
	}
	return moved
}

type capMove struct {
	holder  *customer
	cap     *spendCap
	crossed bool
}
