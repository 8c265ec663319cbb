package enforcement

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/limitr/limitr/internal/num"
)

// UsageDelta is the usage of one meter in one period since the last drain, in exact
// decimals. Customer is the meter's owner.
type UsageDelta struct {
	Customer    string
	Entitlement string
	Credit      string
	PeriodStart time.Time
	Units       num.Dec
	Overhead    num.Dec
	Price       num.Dec
	Calls       int64
}

// pendingUsage accumulates a meter's usage between drains.
type pendingUsage struct {
	periodStart int64
	credit      string
	units       num.Dec
	overhead    num.Dec
	price       num.Dec
	calls       int64
	queued      bool // on the recorder's dirty list
}

type meterRef struct {
	c   *customer
	ent string
}

type usageKey struct {
	customer, ent string
	period        int64
}

// usageRecorder collects usage for cloud sync. A committed call adds to its meter's
// pending sums; the first addition since a drain puts the meter on the dirty list, so
// a drain visits only meters that moved and a warm call does not allocate.
type usageRecorder struct {
	mu       sync.Mutex
	dirty    []meterRef
	closed   []UsageDelta            // periods that ended before their usage was drained
	inflight map[usageKey]UsageDelta // drained, not yet acknowledged by the server
	batches  map[uint64][]usageKey
	nextID   uint64
	audit    bool
	events   []CallEvent
	eventSeq uint64
}

// WithUsageRecording makes the engine keep usage deltas for DrainUsage.
func WithUsageRecording() Option {
	return func(e *Engine) {
		e.usage = &usageRecorder{inflight: map[usageKey]UsageDelta{}, batches: map[uint64][]usageKey{}}
	}
}

// record adds a committed call's effect to its meter. Caller holds c.mu.
func (e *Engine) record(c *customer, m *meter, credit string, units, overhead, price num.Dec) {
	r := e.usage
	pu := m.pending
	if pu == nil {
		pu = &pendingUsage{units: num.Zero, overhead: num.Zero, price: num.Zero}
		m.pending = pu
	}
	if pu.calls > 0 && pu.periodStart != m.started {
		// The meter moved into a new period with usage of the old one still pending.
		r.mu.Lock()
		r.closed = append(r.closed, pu.delta(c.id, m.ent))
		r.mu.Unlock()
		pu.units, pu.overhead, pu.price, pu.calls = num.Zero, num.Zero, num.Zero, 0
	}
	var calc num.Calc
	pu.periodStart, pu.credit = m.started, credit
	pu.units = calc.Add(pu.units, units)
	pu.overhead = calc.Add(pu.overhead, overhead)
	pu.price = calc.Add(pu.price, price)
	pu.calls++
	if !pu.queued {
		pu.queued = true
		r.mu.Lock()
		r.dirty = append(r.dirty, meterRef{c: c, ent: m.ent})
		r.mu.Unlock()
	}
}

func (pu *pendingUsage) delta(customer, ent string) UsageDelta {
	return UsageDelta{Customer: customer, Entitlement: ent, Credit: pu.credit, PeriodStart: time.Unix(0, pu.periodStart).UTC(),
		Units: pu.units, Overhead: pu.overhead, Price: pu.price, Calls: pu.calls}
}

// DrainUsage takes every pending delta, at most max of them (0: all), and returns them
// with a batch id to acknowledge once the server has committed them. Until then they
// count as in flight: RemoteTotals keeps them in the local meter.
func (e *Engine) DrainUsage(ctx context.Context, max int) (uint64, []UsageDelta) {
	r := e.usage
	if r == nil {
		return 0, nil
	}
	r.mu.Lock()
	out := r.closed
	r.closed = nil
	refs := r.dirty
	r.dirty = nil
	r.mu.Unlock()
	var rest []meterRef
	for i, ref := range refs {
		if max > 0 && len(out) >= max {
			rest = refs[i:]
			break
		}
		ref.c.mu.Lock()
		if m := ref.c.meter(ref.ent); m != nil && m.pending != nil {
			pu := m.pending
			if pu.calls > 0 {
				out = append(out, pu.delta(ref.c.id, ref.ent))
			}
			pu.units, pu.overhead, pu.price, pu.calls, pu.queued = num.Zero, num.Zero, num.Zero, 0, false
		}
		ref.c.mu.Unlock()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(rest) > 0 {
		r.dirty = append(rest, r.dirty...)
	}
	if len(out) == 0 {
		return 0, nil
	}
	r.nextID++
	id := r.nextID
	keys := make([]usageKey, 0, len(out))
	var calc num.Calc
	for _, d := range out {
		k := usageKey{customer: d.Customer, ent: d.Entitlement, period: d.PeriodStart.UnixNano()}
		cur, ok := r.inflight[k]
		if !ok {
			cur = UsageDelta{Customer: d.Customer, Entitlement: d.Entitlement, Credit: d.Credit, PeriodStart: d.PeriodStart,
				Units: num.Zero, Overhead: num.Zero, Price: num.Zero}
		}
		cur.Units, cur.Overhead = calc.Add(cur.Units, d.Units), calc.Add(cur.Overhead, d.Overhead)
		cur.Calls += d.Calls
		r.inflight[k] = cur
		keys = append(keys, k)
	}
	r.batches[id] = keys
	return id, out
}

// AckUsage forgets a drained batch once the server committed it.
func (e *Engine) AckUsage(id uint64, deltas []UsageDelta) {
	r := e.usage
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.batches, id)
	var calc num.Calc
	for _, d := range deltas {
		k := usageKey{customer: d.Customer, ent: d.Entitlement, period: d.PeriodStart.UnixNano()}
		cur, ok := r.inflight[k]
		if !ok {
			continue
		}
		cur.Units, cur.Overhead = calc.Sub(cur.Units, d.Units), calc.Sub(cur.Overhead, d.Overhead)
		cur.Calls -= d.Calls
		if cur.Calls <= 0 {
			delete(r.inflight, k)
			continue
		}
		r.inflight[k] = cur
	}
}

// RequeueUsage puts a drained batch back, for a batch the server refused for good.
func (e *Engine) RequeueUsage(id uint64, deltas []UsageDelta) {
	e.AckUsage(id, deltas)
	r := e.usage
	if r == nil {
		return
	}
	r.mu.Lock()
	r.closed = append(r.closed, deltas...)
	r.mu.Unlock()
}

// PendingUsage reports how many meters have undrained usage.
func (e *Engine) PendingUsage() int {
	r := e.usage
	if r == nil {
		return 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.dirty) + len(r.closed)
}

// RemoteTotal is the server's committed usage of a meter in a period.
type RemoteTotal struct {
	Entitlement string
	Credit      string
	PeriodStart time.Time
	Units       num.Dec
	Overhead    num.Dec
}

// ApplyRemoteTotals sets a customer's meters to what the whole fleet has committed,
// plus what this instance has not yet had committed (pending and in flight), so
// usage from other instances counts against the limits here. Totals for a period
// other than a meter's current one are ignored.
func (e *Engine) ApplyRemoteTotals(ctx context.Context, id string, totals []RemoteTotal) error {
	c := e.lookup(id)
	if c == nil {
		return fmt.Errorf("%w: %q", ErrUnknownCustomer, id)
	}
	p := e.policy.Load()
	now := e.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	var calc num.Calc
	for _, t := range totals {
		m := c.meter(t.Entitlement)
		start := t.PeriodStart.UnixNano()
		if m == nil {
			c.meters = append(c.meters, meter{ent: t.Entitlement, credit: t.Credit, started: start, value: num.Zero, overhead: num.Zero})
			m = &c.meters[len(c.meters)-1]
		}
		if l := e.meterLimit(p, c, c.info.Load(), t.Entitlement, now); l != nil && l.Resets() {
			cur := l.Reset.CurrentStart(m.startedAt(), now, c.location(p), c.info.Load().anchor)
			if cur.UnixNano() != m.started {
				m.resetPeriod(cur.UnixNano())
			}
		}
		if start != m.started {
			continue
		}
		value, overhead := t.Units, t.Overhead
		if pu := m.pending; pu != nil && pu.calls > 0 && pu.periodStart == start {
			value, overhead = calc.Add(value, pu.units), calc.Add(overhead, pu.overhead)
		}
		if e.usage != nil {
			e.usage.mu.Lock()
			if in, ok := e.usage.inflight[usageKey{customer: c.id, ent: t.Entitlement, period: start}]; ok {
				value, overhead = calc.Add(value, in.Units), calc.Add(overhead, in.Overhead)
			}
			e.usage.mu.Unlock()
		}
		if calc.Err != nil {
			return calc.Err
		}
		m.value, m.overhead = value, overhead
		if m.credit == "" {
			m.credit = t.Credit
		}
	}
	return nil
}

// CallEvent is one decided call, kept in audit mode. ID is unique within the engine.
type CallEvent struct {
	ID          string
	Customer    string // the meter's owner
	Caller      string
	Entitlement string
	Units       num.Dec
	Overhead    num.Dec
	Allowed     bool
	At          time.Time
}

// WithCallAudit keeps a record of every metered call (allowed or denied) for
// DrainCallEvents, in addition to the usage sums. It implies WithUsageRecording.
func WithCallAudit() Option {
	return func(e *Engine) {
		if e.usage == nil {
			WithUsageRecording()(e)
		}
		e.usage.audit = true
	}
}

// audit records a decided call when audit mode is on.
func (e *Engine) audit(owner, caller, ent string, units, overhead num.Dec, allowed bool, at time.Time) {
	r := e.usage
	if r == nil || !r.audit {
		return
	}
	r.mu.Lock()
	r.eventSeq++
	r.events = append(r.events, CallEvent{ID: strconv.FormatUint(r.eventSeq, 36), Customer: owner, Caller: caller,
		Entitlement: ent, Units: units, Overhead: overhead, Allowed: allowed, At: at.UTC()})
	r.mu.Unlock()
}

// DrainCallEvents takes up to max recorded calls (0: all), oldest first.
func (e *Engine) DrainCallEvents(max int) []CallEvent {
	r := e.usage
	if r == nil || !r.audit {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	n := len(r.events)
	if max > 0 && n > max {
		n = max
	}
	out := slices.Clone(r.events[:n])
	r.events = slices.Delete(r.events, 0, n)
	return out
}

// RequeueCallEvents puts undelivered calls back at the front.
func (e *Engine) RequeueCallEvents(events []CallEvent) {
	r := e.usage
	if r == nil || len(events) == 0 {
		return
	}
	r.mu.Lock()
	r.events = append(slices.Clone(events), r.events...)
	r.mu.Unlock()
}
