package enforcement

import (
	"context"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/limitr/limitr/internal/num"
)

// Spend caps held by the control plane (cloud mode). Every instance holds the same
// caps, keyed by the key the control plane minted for them (new at each reset). A cap's
// meter is the fleet's committed consumption in the cap period plus what this instance
// consumed and has not had committed yet; in fleet mode Exact a call must also fit the
// allowance lease this instance holds of the cap, so the fleet together never passes
// the ceiling (a shared org budget is shared across every instance).

// CapCommitted is a cap's committed consumption in one cap period, as the control
// plane counts it from every instance's usage batches.
type CapCommitted struct {
	PeriodStart time.Time
	Units       num.Dec
}

// FleetCap is a cap as the control plane holds it: its configuration with Key set
// (Started is when the key was minted, the start of its first period; Created when the
// cap was), its exact ceiling, and the fleet's committed consumption per period.
type FleetCap struct {
	Cap
	Ceiling   num.Dec
	Committed []CapCommitted
}

// capUseKey is where a cap's consumption is recorded for cloud sync: beside grant
// draws, under the cap's key and period.
func capUseKey(c *customer, key string, period int64) grantKey {
	return grantKey{customer: c.id, grant: key, period: period, created: c.created.UnixNano(), cap: true}
}

// ApplyCaps sets a customer's caps held by the control plane to caps, replacing those
// it held before (caps added locally, without a key, stay unless a held cap has their
// id). A cap whose key is unchanged keeps its lease. Each cap's meter is the committed
// consumption of its current period plus what this instance has consumed of it and
// not yet had committed.
func (e *Engine) ApplyCaps(ctx context.Context, id string, caps []FleetCap) error {
	p := e.policy.Load()
	c := e.lookup(id)
	if c == nil {
		return fmt.Errorf("%w: %q", ErrUnknownCustomer, id)
	}
	now := e.now().UnixNano()
	compiled := make([]*spendCap, 0, len(caps))
	for i, fc := range caps {
		if fc.Key == "" {
			return fmt.Errorf("%w: caps[%d].key: must not be empty", ErrInvalidCap, i)
		}
		cfg := fc.Cap
		cfg.exact = &capExact{value: fc.Ceiling, meter: num.Zero}
		cfg.LastReset = cfg.Started
		sc, err := e.compileCap(p, cfg, now)
		if err != nil {
			return fmt.Errorf("caps[%d]: %w", i, err)
		}
		sc.key = fc.Key
		compiled = append(compiled, sc)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.deleted {
		return fmt.Errorf("%w: %q", ErrUnknownCustomer, id)
	}
	loc, anchor := c.location(p), c.anchor()
	old := c.caps()
	next := make([]*spendCap, 0, len(old)+len(compiled))
	for _, sc := range old {
		if sc.key == "" && !slices.ContainsFunc(compiled, func(n *spendCap) bool { return n.cfg.ID == sc.cfg.ID }) {
			next = append(next, sc)
		}
	}
	var calc num.Calc
	for i, sc := range compiled {
		st := sc.at(now, loc, anchor)
		if st.expired {
			continue
		}
		st.meter = num.Zero
		for _, u := range caps[i].Committed {
			if samePeriod(u.PeriodStart.UnixNano(), st.started) {
				st.meter = calc.Add(st.meter, u.Units)
			}
		}
		if r := e.usage; r != nil {
			r.mu.Lock()
			st.meter = calc.Add(st.meter, r.localDrawn(capUseKey(c, sc.key, st.started)))
			r.mu.Unlock()
		}
		sc.settle(st)
		if j := slices.IndexFunc(old, func(o *spendCap) bool { return o.key == sc.key }); j >= 0 {
			sc.lease = old[j].lease
		}
		next = append(next, sc)
	}
	if calc.Err != nil {
		return fmt.Errorf("%w: committed: %w", ErrInvalidCap, calc.Err)
	}
	c.extras().caps = next
	c.capCount.Store(int32(len(next)))
	return nil
}

// samePeriod compares period starts at the control plane's precision (microseconds).
func samePeriod(a, b int64) bool {
	return a/int64(time.Microsecond) == b/int64(time.Microsecond)
}

// capsLeased reports whether caps held by the control plane are kept with leases.
func (e *Engine) capsLeased() bool {
	return e.leases != nil && e.leases.Exact && !e.leases.off.Load()
}

// capLeaseGate decides a call's use of a held cap against this instance's lease of
// it: nil when the lease has room, a *LeaseNeededError when the control plane must be
// asked, and denied when the fleet has used the cap up. Caller holds the holder's lock.
func (e *Engine) capLeaseGate(cr *capRef, now int64) (denied bool, err error) {
	sc := cr.cap
	if cr.holder == nil || sc.key == "" || sc.cfg.ObserveOnly || !cr.use.IsPos() || !e.capsLeased() {
		return false, nil
	}
	switch sc.lease.room(cr.state.started, cr.use, now) {
	case leaseNeeded:
		return false, &LeaseNeededError{Key: LeaseKey{Customer: cr.holder.id, Cap: sc.key}, Need: cr.use}
	case leaseDenied:
		return true, nil
	}
	return false, nil
}

// capUsed records a committed call's consumption of a held cap: for cloud sync, and
// against the cap's lease, asking for more when the lease runs low. Caller holds the
// holder's lock.
func (e *Engine) capUsed(holder *customer, sc *spendCap, use num.Dec) {
	if sc.key == "" {
		return
	}
	if r := e.usage; r != nil {
		r.recordDraw(capUseKey(holder, sc.key, sc.started), use)
	}
	l := sc.lease.of(sc.started)
	if l == nil {
		return
	}
	if l.use(use) && e.leases != nil && e.leases.Low != nil {
		e.leases.Low(LeaseKey{Customer: holder.id, Cap: sc.key})
	}
}

// heldCap finds a customer's held cap by key and brings it to its current period.
// Caller holds c.mu.
func (e *Engine) heldCap(c *customer, key string, now int64) *spendCap {
	for _, sc := range c.caps() {
		if sc.key == key {
			p := e.policy.Load()
			sc.settle(sc.at(now, c.location(p), c.anchor()))
			return sc
		}
	}
	return nil
}

// capLeaseAsk is LeaseAsk for a cap's lease. A cap has no burn history: a renewal asks
// at the rate the lease was used since its last grant.
func (e *Engine) capLeaseAsk(k LeaseKey, need num.Dec, horizon time.Duration) (LeaseAsk, bool, error) {
	c := e.lookup(k.Customer)
	if c == nil || !e.capsLeased() {
		return LeaseAsk{}, false, nil
	}
	now := e.now().UnixNano()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.deleted {
		return LeaseAsk{}, false, nil
	}
	sc := e.heldCap(c, k.Cap, now)
	if sc == nil || sc.cfg.ObserveOnly {
		return LeaseAsk{}, false, nil
	}
	ask := LeaseAsk{Owner: c.id, Cap: sc.key, PeriodStart: time.Unix(0, sc.started).UTC(), Limit: sc.ceiling,
		Used: num.Zero, Need: num.Zero, CustomerCreatedAt: c.created}
	l := sc.lease.of(sc.started)
	rate := 0.0
	if l != nil {
		rate = l.smoothRate(now)
	}
	err := sizeAsk(&ask, l, need, num.Zero, rate, horizon)
	return ask, true, err
}

// rateWindow is the time constant of a cap lease's smoothed rate: a burst right after
// a grant moves it a little, a steady rate within a few windows.
const rateWindow = time.Second

// smoothRate updates the lease's smoothed rate of use with what was used since the
// last update and returns it, in units per millisecond. Caller holds the holder's lock.
func (l *meterLease) smoothRate(now int64) float64 {
	if l.rateAt == 0 || now <= l.rateAt {
		if l.rateAt == 0 {
			l.rateAt, l.rateUsed = now, l.used
		}
		return l.rate
	}
	elapsed := time.Duration(now - l.rateAt)
	var c num.Calc
	used := c.Sub(l.used, l.rateUsed)
	if c.Err != nil {
		return l.rate
	}
	inst := num.Float64(used) / float64(max(elapsed, 10*time.Millisecond).Milliseconds())
	w := 1 - math.Exp(-float64(elapsed)/float64(rateWindow))
	l.rate += (max(inst, 0) - l.rate) * w
	l.rateAt, l.rateUsed = now, l.used
	return l.rate
}

// withCapLease runs f on this instance's lease of a held cap in its current period,
// with the holder locked; the lease is created when missing. Nothing runs for a cap
// no longer held.
func (e *Engine) withCapLease(k LeaseKey, f func(l *meterLease, now time.Time) error) error {
	c := e.lookup(k.Customer)
	if c == nil {
		return fmt.Errorf("%w: %q", ErrUnknownCustomer, k.Customer)
	}
	now := e.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.deleted {
		return fmt.Errorf("%w: %q", ErrUnknownCustomer, k.Customer)
	}
	sc := e.heldCap(c, k.Cap, now.UnixNano())
	if sc == nil {
		return nil
	}
	return f(leaseIn(&sc.lease, sc.started), now)
}
