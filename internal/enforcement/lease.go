package enforcement

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/policies"
)

// ErrLeaseNeeded is returned by a call on a hard limit kept with allowance leases
// (fleet mode Exact) when this instance holds no live lease with room for it: the SDK
// asks the control plane for allowance and decides the call again. Nothing changed.
var ErrLeaseNeeded = errors.New("allowance lease needed")

// LeaseNeededError names the lease a call waits for and the room it needs, when that
// is not simply the call's meter and amount: a spend cap's lease (fleet mode Exact
// keeps caps held by the control plane with leases too), or a reservation's estimated
// size. It matches ErrLeaseNeeded.
type LeaseNeededError struct {
	Key  LeaseKey
	Need num.Dec // the room the call needs, in the cap's credit
}

func (e *LeaseNeededError) Error() string {
	if e.Key.Cap != "" {
		return fmt.Sprintf("%s: cap %q of %q", ErrLeaseNeeded, e.Key.Cap, e.Key.Customer)
	}
	return fmt.Sprintf("%s: %q of %q", ErrLeaseNeeded, e.Key.Entitlement, e.Key.Customer)
}

// Is makes errors.Is(err, ErrLeaseNeeded) hold.
func (e *LeaseNeededError) Is(target error) bool { return target == ErrLeaseNeeded }

// LeaseOptions makes the engine keep hard limits with allowance leases: a call inside
// the limit is allowed only within the allowance this instance was granted for the
// meter's period, so a fleet of instances never passes the limit together.
type LeaseOptions struct {
	// Exact is the mode of hard limits whose policy leaves fleet_mode unset.
	Exact bool
	// Low is called when a lease's room falls below its low-water mark, at most once
	// per grant, so the SDK renews ahead of running out. It runs with the customer
	// locked: it must not block or call back into the engine.
	Low func(LeaseKey)
}

// LeaseKey names a leased meter (a customer and entitlement) or a leased cap (Cap,
// the cap's key; Customer its holder; Entitlement empty).
type LeaseKey struct{ Customer, Entitlement, Cap string }

// Compare orders keys by customer, entitlement and cap.
func (k LeaseKey) Compare(o LeaseKey) int {
	if c := strings.Compare(k.Customer, o.Customer); c != 0 {
		return c
	}
	if c := strings.Compare(k.Entitlement, o.Entitlement); c != 0 {
		return c
	}
	return strings.Compare(k.Cap, o.Cap)
}

type leaseConfig struct {
	LeaseOptions
	off atomic.Bool // the control plane does not grant leases (an older one): decide as Bounded
}

// DisableLeases makes every limit decide locally (fleet mode Bounded), for a control
// plane that grants no leases.
func (e *Engine) DisableLeases() {
	if e.leases != nil {
		e.leases.off.Store(true)
	}
}

// WithLeases turns allowance leases on.
func WithLeases(o LeaseOptions) Option {
	return func(e *Engine) { e.leases = &leaseConfig{LeaseOptions: o} }
}

// meterLease is this instance's lease of one meter's allowance in one period. Amounts
// are cumulative over the period, as the control plane counts them.
type meterLease struct {
	period    int64   // unix ns: the start of the period the lease belongs to
	granted   num.Dec // allowance granted to this instance in the period
	used      num.Dec // what this instance's calls moved the meter by in the period
	low       num.Dec // renew when granted − used falls below this
	expires   int64   // unix ns: a lease not renewed by then is void
	denyTill  int64   // unix ns: the fleet has nothing left (or the control plane is unreachable): deny until then without asking
	fallback  num.Dec // allowance past the lease while the control plane is unreachable
	share     num.Dec // this instance's share of what remains (remaining / holders), as of the last grant
	committed num.Dec // what the control plane had committed from this instance, as of the last grant
	holders   int     // instances holding a live lease of the meter, as of the last grant
	knowShare bool
	asked     bool // Low was called for this grant
	// A cap's lease, which has no burn history, keeps its own smoothed rate of use
	// (units per millisecond), updated at each ask from what was used since the last.
	rate     float64
	rateAt   int64
	rateUsed num.Dec
}

// leased reports whether a limit is kept with leases.
func (e *Engine) leased(l *policies.CompiledLimit) bool {
	if e.leases == nil || l.Mode != policies.Hard || e.leases.off.Load() {
		return false
	}
	switch l.FleetMode {
	case policies.FleetExact:
		return true
	case policies.FleetBounded:
		return false
	}
	return e.leases.Exact
}

type leaseVerdict uint8

const (
	leaseRoom leaseVerdict = iota
	leaseNeeded
	leaseDenied
)

// of is the lease if it is of the period starting at period, else nil.
func (l *meterLease) of(period int64) *meterLease {
	if l == nil || l.period != period {
		return nil
	}
	return l
}

// leaseIn is *slot's lease of the period starting at period; a missing one, or one of
// another period, is replaced by a new empty lease.
func leaseIn(slot **meterLease, period int64) *meterLease {
	if l := (*slot).of(period); l != nil {
		return l
	}
	*slot = &meterLease{period: period, used: num.Zero, granted: num.Zero, fallback: num.Zero}
	return *slot
}

// room decides whether a lease lets amount through in the period starting at period.
func (l *meterLease) room(period int64, amount num.Dec, now int64) leaseVerdict {
	if l = l.of(period); l == nil {
		return leaseNeeded
	}
	var c num.Calc
	left := c.Sub(l.granted, l.used)
	if c.Err != nil {
		return leaseNeeded
	}
	if now < l.expires && left.Cmp(amount) >= 0 {
		return leaseRoom
	}
	if now < l.denyTill {
		if l.fallback.IsPos() && c.Add(left, l.fallback).Cmp(amount) >= 0 {
			return leaseRoom
		}
		return leaseDenied
	}
	return leaseNeeded
}

// leaseOf is the meter's lease; nil for no meter.
func (m *meter) leaseOf() *meterLease {
	if m == nil {
		return nil
	}
	return m.lease
}

// leaseUse counts a committed call against the meter's lease and asks for more when
// the room falls below the low-water mark. Caller holds the owner's lock.
func (e *Engine) leaseUse(owner *customer, m *meter, amount num.Dec) {
	l := m.lease.of(m.started)
	if l == nil {
		return
	}
	if l.use(amount) && e.leases.Low != nil {
		e.leases.Low(LeaseKey{Customer: owner.id, Entitlement: m.ent()})
	}
}

// use counts amount against the lease and reports whether its room just fell below
// the low-water mark (once per grant): time to ask for more.
func (l *meterLease) use(amount num.Dec) (low bool) {
	if u, err := l.used.Add(amount); err == nil {
		l.used = u
	}
	if l.asked {
		return false
	}
	var c num.Calc
	if c.Sub(l.granted, l.used).Cmp(l.low) < 0 && c.Err == nil {
		l.asked = true
		return true
	}
	return false
}

// LeaseAsk is what an instance asks the control plane for one meter or cap.
type LeaseAsk struct {
	Owner, Entitlement string
	Cap                string // the cap's key, for a cap's lease (Owner is its holder)
	PeriodStart        time.Time
	Limit              num.Dec
	Used               num.Dec // used under the lease in the period
	Target             num.Dec // the cumulative allowance wanted: Used + the headroom
	// Need is the room a waiting call needs when the lease has less: the lease's rest
	// is no longer used (calls wait for the answer), so the control plane may release
	// it rather than leave it stranded here.
	Need              num.Dec
	CustomerCreatedAt time.Time
}

// Key is the lease the ask is for.
func (a *LeaseAsk) Key() LeaseKey {
	return LeaseKey{Customer: a.Owner, Entitlement: a.Entitlement, Cap: a.Cap}
}

// LeaseAsk works out the ask for a lease: for a customer's leased entitlement, its
// owner's meter in the current period, the allowance used so far plus headroom for at
// least need units (and the meter's holds, which count against the lease), or what
// this instance's recent rate uses in horizon, whichever is more (and at most the
// limit); for a cap (k.Cap), the same against the cap's ceiling in its period. ok is
// false when nothing is leased there.
func (e *Engine) LeaseAsk(ctx context.Context, k LeaseKey, need num.Dec, horizon time.Duration) (LeaseAsk, bool, error) {
	if k.Cap != "" {
		return e.capLeaseAsk(k, need, horizon)
	}
	p := e.policy.Load()
	res, err := e.resolve(p, k.Customer, k.Entitlement)
	if err != nil || res.ce == nil {
		return LeaseAsk{}, false, err
	}
	now := e.now()
	owner := res.owner
	owner.mu.Lock()
	defer owner.mu.Unlock()
	limit := owner.effectiveLimit(p, res.ce, now)
	if limit == nil || !e.leased(limit) {
		return LeaseAsk{}, false, nil
	}
	ask := LeaseAsk{Owner: owner.id, Entitlement: res.ce.Name, Limit: limit.Value, Used: num.Zero, Need: num.Zero,
		CustomerCreatedAt: owner.created}
	m := owner.meter(res.ce.Name)
	period := now.UnixNano()
	if m != nil {
		period = e.currentPeriod(p, owner, m, limit, now)
		if need.IsPos() && m.ext != nil {
			// Holds on the meter take room in the lease, as calls do.
			var c num.Calc
			need = c.Add(need, m.held(now.UnixNano()))
		}
	}
	ask.PeriodStart = time.Unix(0, period).UTC()
	rate := 0.0
	if m != nil && m.started == period {
		rate = m.burn.rateNow()
	}
	err = sizeAsk(&ask, m.leaseOf().of(period), need, limit.Increment, rate, horizon)
	return ask, true, err
}

// sizeAsk fills in an ask's Used, Need and Target from the lease of the ask's period
// it renews (nil: none yet), the room a waiting call needs, the smallest step worth
// asking for and the recent rate (units per millisecond). Caller holds the lease
// holder's lock.
func sizeAsk(ask *LeaseAsk, l *meterLease, need, step num.Dec, rate float64, horizon time.Duration) error {
	var c num.Calc
	if l != nil {
		ask.Used = l.used
		if need.IsPos() && c.Sub(l.granted, l.used).Cmp(need) < 0 {
			// Its rest cannot serve the call: stop using it, so the answer may release it.
			l.expires, l.denyTill, ask.Need = 0, 0, need
		}
	} else if need.IsPos() {
		ask.Need = need
	}
	// A renewal (no call waiting) asks only for what the recent rate uses: an idle
	// meter holds nothing more.
	size := need
	if need.IsPos() {
		size = num.Max(need, step)
	}
	if ahead, err := num.FromFloat64(rate * float64(horizon.Milliseconds())); err == nil && ahead.Cmp(size) > 0 {
		// Whole units: fractions of a unit left on several instances serve none of them.
		size = ahead.Ceil(0)
	}
	size = num.Min(size, num.Max(ask.Limit, need))
	ask.Target = c.Add(ask.Used, size)
	if l != nil && l.knowShare {
		// What this instance holds beyond what the control plane has committed from it
		// (usage in flight and the unused rest) stays within its share of what remains:
		// allowance is not parked on a few instances while others are refused, and near
		// the limit leases shrink.
		ask.Target = num.Max(c.Add(ask.Used, need), num.Min(ask.Target, c.Add(l.committed, l.share)))
	}
	return c.Err
}

// currentPeriod is the start of the period a call now falls in (a due reset already
// applied). Caller holds the owner's lock.
func (e *Engine) currentPeriod(p *policies.Policy, owner *customer, m *meter, limit *policies.CompiledLimit, now time.Time) int64 {
	if !limit.Resets() {
		return m.started
	}
	return limit.Reset.CurrentStart(m.startedAt(), now, owner.location(p), owner.info.Load().anchor).UnixNano()
}

// LeaseGrant is the control plane's answer to a LeaseAsk.
type LeaseGrant struct {
	Owner, Entitlement string
	Cap                string // the cap's key, for a cap's lease
	PeriodStart        time.Time
	Granted            num.Dec       // cumulative, in the period
	Expires            time.Time     // local time after which the lease is void
	Need               num.Dec       // the call that asked needs this much room (0: a renewal)
	Recheck            time.Duration // when granted leaves no room for Need: deny until then
	// Remaining (the limit less committed usage) and Holders (instances with a live
	// lease, this one included), when the control plane said; Committed what it had
	// committed from this instance.
	Remaining num.Dec
	Holders   int
	Committed num.Dec
}

// ApplyLease sets a meter's lease to what the control plane granted. A grant for a
// period other than the meter's current one is ignored. When the grant leaves no room
// for the call that asked, calls needing more are denied until Recheck has passed.
func (e *Engine) ApplyLease(ctx context.Context, g LeaseGrant) error {
	return e.withLease(LeaseKey{Customer: g.Owner, Entitlement: g.Entitlement, Cap: g.Cap}, func(l *meterLease, now time.Time) error {
		if l.period != g.PeriodStart.UnixNano() && l.period/int64(time.Microsecond) != g.PeriodStart.UnixNano()/int64(time.Microsecond) {
			return nil // the period moved on meanwhile
		}
		return l.apply(g, now)
	})
}

// apply sets the lease to a grant. Caller holds the owner's lock.
func (l *meterLease) apply(g LeaseGrant, now time.Time) error {
	// The control plane's answer is the lease (asks of one meter are never in flight
	// together, so answers come in order); it is smaller only when this instance gave
	// its rest back.
	var c num.Calc
	l.granted = g.Granted
	l.knowShare, l.holders = g.Holders > 0, g.Holders
	if l.knowShare {
		l.share = c.Quo(g.Remaining, num.FromInt(int64(g.Holders))).Ceil(0)
		l.committed = g.Committed
	}
	// Renew once a quarter of what this grant gave is left (at least the call's need).
	l.low = num.Max(g.Need, c.Quo(c.Sub(l.granted, l.used), num.FromInt(4)))
	l.expires, l.asked, l.fallback, l.denyTill = g.Expires.UnixNano(), false, num.Zero, 0
	if c.Sub(l.granted, l.used).Cmp(g.Need) < 0 {
		l.denyTill = now.Add(g.Recheck).UnixNano()
	}
	return c.Err
}

// LeaseUnreachable records that the control plane could not be asked: calls needing
// more than the lease has left are denied until retryAt, except for up to fallback
// units past the lease (AllowBounded; 0 to deny).
func (e *Engine) LeaseUnreachable(ctx context.Context, k LeaseKey, fallback num.Dec, retryAt time.Time) error {
	return e.withLease(k, func(l *meterLease, _ time.Time) error {
		if !l.fallback.IsPos() && fallback.IsPos() {
			// Granted once per outage, past what the lease had reached: what an instance
			// spends unconfirmed is bounded by it.
			var calc num.Calc
			l.fallback = calc.Add(num.Max(num.Zero, calc.Sub(l.used, l.granted)), fallback)
		}
		l.denyTill = retryAt.UnixNano()
		return nil
	})
}

// withLease runs f on the lease of a customer's entitlement in the period a call falls
// in now (a due reset counted), with the meter's owner locked; the meter and the lease
// are created when missing. Nothing runs for an entitlement without a limit. A cap's
// key runs f on the cap's lease instead (withCapLease).
func (e *Engine) withLease(k LeaseKey, f func(l *meterLease, now time.Time) error) error {
	if k.Cap != "" {
		return e.withCapLease(k, f)
	}
	id := k.Customer
	p := e.policy.Load()
	res, err := e.resolve(p, id, k.Entitlement)
	if err != nil || res.ce == nil {
		return err
	}
	now := e.now()
	owner := res.owner
	owner.mu.Lock()
	defer owner.mu.Unlock()
	if owner.deleted {
		return fmt.Errorf("%w: %q", ErrUnknownCustomer, id)
	}
	limit := owner.effectiveLimit(p, res.ce, now)
	if limit == nil {
		return nil
	}
	m := owner.meter(res.ce.Name)
	if m == nil {
		owner.meters = append(owner.meters, meter{key: e.meterKey(res.ce.Name, limit.Credit.Name), started: now.UnixNano()})
		m = &owner.meters[len(owner.meters)-1]
	}
	period := e.currentPeriod(p, owner, m, limit, now)
	return f(leaseIn(&m.lease, period), now)
}
