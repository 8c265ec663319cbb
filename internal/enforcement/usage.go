package enforcement

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
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
	// GrantCovered is how many of Units past the limit grants paid for (the sum of
	// the calls' grant draws, in the delta's credit): what an invoice credits instead
	// of billing, as margins do (see RateOverage).
	GrantCovered num.Dec
	// CustomerCreatedAt is when the meter's owner was created: a customer deleted and
	// created again under the same id is another customer, whose usage this is not.
	CustomerCreatedAt time.Time
}

// pendingUsage accumulates a meter's usage between drains.
type pendingUsage struct {
	periodStart int64
	credit      string
	units       num.Dec
	overhead    num.Dec
	price       num.Dec
	granted     num.Dec // units of the overage grants paid for
	calls       int64
	queued      bool // on the recorder's dirty list
}

type meterRef struct {
	c   *customer
	ent string
}

// usageKey names a meter's usage in one period. created (the owner's creation, unix
// nanoseconds) keeps a customer created again under a deleted one's id apart from it.
type usageKey struct {
	customer, ent string
	period        int64
	created       int64
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
	// eventMax bounds events (0: no bound); eventsDropped counts records refused at it.
	eventMax      int
	eventsDropped int64
	// Grant draws: pending since the last drain, drained but not yet acknowledged
	// (summed per key), and the drained draws of each unacknowledged batch.
	draws       map[grantKey]num.Dec
	drawsFlight map[grantKey]num.Dec
	drawBatches map[uint64][]GrantDraw
}

// GrantDraw is what calls took from one grant in one grant period since the last
// drain, in the grant's credit. Customer is the grant's holder (the meter's owner).
type GrantDraw struct {
	Customer    string
	GrantID     string
	PeriodStart time.Time
	Units       num.Dec
	// CustomerCreatedAt is when the grant's holder was created (see UsageDelta).
	CustomerCreatedAt time.Time
	// Voucher marks a voucher debit: GrantID is then the voucher's id, Units runes,
	// and PeriodStart zero. Debits travel with grant draws because they are settled
	// the same way (pending, in flight, corrected from the fleet's committed sum).
	Voucher bool
	// Cap marks a held cap's consumption: GrantID is then the cap's key, Units in the
	// cap's credit (negative for a follow_decrements cap that moved down), and
	// PeriodStart the cap period's start.
	Cap bool
}

// kind orders a drain's draws: grant draws, then cap uses, then voucher debits.
func (d *GrantDraw) kind() int {
	switch {
	case d.Voucher:
		return 2
	case d.Cap:
		return 1
	}
	return 0
}

type grantKey struct {
	customer, grant string
	period          int64
	created         int64 // the holder's creation, as in usageKey
	voucher         bool  // a voucher debit (grant is the voucher's id)
	cap             bool  // a held cap's consumption (grant is the cap's key)
}

// recordDraw adds units to the pending sum under k: a draw from a grant (grantKey),
// a voucher debit (voucherKey) or a held cap's use (capUseKey). Caller holds the lock of
// the customer k names.
func (r *usageRecorder) recordDraw(k grantKey, units num.Dec) {
	var calc num.Calc
	r.mu.Lock()
	cur, ok := r.draws[k]
	if !ok {
		cur = num.Zero
	}
	r.draws[k] = calc.Add(cur, units)
	r.mu.Unlock()
}

// grantDrawKey is where a draw from a grant of c in a grant period is recorded.
func grantDrawKey(c *customer, grantID string, period int64) grantKey {
	return grantKey{customer: c.id, grant: grantID, period: period, created: c.created.UnixNano()}
}

// localDrawn is what this instance drew from a grant in a period that the server has
// not committed yet: pending and in flight. Caller holds r.mu.
func (r *usageRecorder) localDrawn(k grantKey) num.Dec {
	var calc num.Calc
	out := num.Zero
	if v, ok := r.draws[k]; ok {
		out = calc.Add(out, v)
	}
	if v, ok := r.drawsFlight[k]; ok {
		out = calc.Add(out, v)
	}
	return out
}

// WithUsageRecording makes the engine keep usage deltas for DrainUsage.
func WithUsageRecording() Option {
	return func(e *Engine) {
		e.usage = &usageRecorder{inflight: map[usageKey]UsageDelta{}, batches: map[uint64][]usageKey{},
			draws: map[grantKey]num.Dec{}, drawsFlight: map[grantKey]num.Dec{}, drawBatches: map[uint64][]GrantDraw{}}
	}
}

// record adds a committed call's effect to its meter: units, provider cost, price of
// the billable part, and granted, the units of its overage that grants paid for (the
// call's draw.applied), so the server can credit them on the invoice as margins do.
// Caller holds c.mu.
func (e *Engine) record(c *customer, m *meter, credit string, units, overhead, price, granted num.Dec) {
	r := e.usage
	pu := m.pending
	if pu == nil {
		pu = &pendingUsage{units: num.Zero, overhead: num.Zero, price: num.Zero, granted: num.Zero}
		m.pending = pu
	}
	if pu.calls > 0 && pu.periodStart != m.started {
		// The meter moved into a new period with usage of the old one still pending.
		r.mu.Lock()
		r.closed = append(r.closed, pu.delta(c, m.ent()))
		r.mu.Unlock()
		pu.reset()
	}
	var calc num.Calc
	pu.periodStart, pu.credit = m.started, credit
	pu.units = calc.Add(pu.units, units)
	pu.overhead = calc.Add(pu.overhead, overhead)
	pu.price = calc.Add(pu.price, price)
	pu.granted = calc.Add(pu.granted, granted)
	pu.calls++
	if !pu.queued {
		pu.queued = true
		r.mu.Lock()
		r.dirty = append(r.dirty, meterRef{c: c, ent: m.ent()})
		r.mu.Unlock()
	}
}

// delta is the pending usage of c's meter ent. Caller holds c.mu.
func (pu *pendingUsage) delta(c *customer, ent string) UsageDelta {
	return UsageDelta{Customer: c.id, Entitlement: ent, Credit: pu.credit, PeriodStart: time.Unix(0, pu.periodStart).UTC(),
		Units: pu.units, Overhead: pu.overhead, Price: pu.price, GrantCovered: pu.granted, Calls: pu.calls,
		CustomerCreatedAt: c.created}
}

// reset empties the pending sums (the meter stays on the dirty list if it is there).
func (pu *pendingUsage) reset() {
	pu.units, pu.overhead, pu.price, pu.granted, pu.calls = num.Zero, num.Zero, num.Zero, num.Zero, 0
}

func (d *UsageDelta) key() usageKey {
	return usageKey{customer: d.Customer, ent: d.Entitlement, period: d.PeriodStart.UnixNano(), created: d.CustomerCreatedAt.UnixNano()}
}

func (d *GrantDraw) key() grantKey {
	k := grantKey{customer: d.Customer, grant: d.GrantID, created: d.CustomerCreatedAt.UnixNano(), voucher: d.Voucher, cap: d.Cap}
	if !d.Voucher {
		k.period = d.PeriodStart.UnixNano()
	}
	return k
}

// discard drops c's usage that has not been drained: its meters' pending sums, deltas
// of its closed periods, its pending grant draws and its call records. Usage already
// drained stays in flight: the batch holding it may still be sent. Caller holds c.mu.
func (r *usageRecorder) discard(c *customer) {
	for i := range c.meters {
		if pu := c.meters[i].pending; pu != nil {
			pu.reset()
			pu.queued = false
		}
	}
	created := c.created.UnixNano()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.dirty = slices.DeleteFunc(r.dirty, func(ref meterRef) bool { return ref.c == c })
	r.closed = slices.DeleteFunc(r.closed, func(d UsageDelta) bool {
		return d.Customer == c.id && d.CustomerCreatedAt.UnixNano() == created
	})
	for k := range r.draws {
		if k.customer == c.id && k.created == created {
			delete(r.draws, k)
		}
	}
	// Call records carry no creation time; those of an earlier customer under this id
	// were discarded when it was deleted, so the id alone names c's.
	r.events = slices.DeleteFunc(r.events, func(ev CallEvent) bool { return ev.Customer == c.id })
}

// DrainUsage takes every pending delta, at most max of them (0: all), and returns them
// with a batch id to acknowledge once the server has committed them. Until then they
// count as in flight: RemoteTotals keeps them in the local meter. Grant draws stay
// pending: DrainUsageAll takes them too.
func (e *Engine) DrainUsage(ctx context.Context, max int) (uint64, []UsageDelta) {
	return e.drainUsage(max, -1)
}

// DrainUsageAll is DrainUsage that also takes pending grant draws (at most max of
// them, 0: all), under the same batch id: AckUsage and RequeueUsage of that id cover
// them. Until acknowledged they count as in flight for ApplyGrantDraws.
func (e *Engine) DrainUsageAll(ctx context.Context, max int) (uint64, []UsageDelta, []GrantDraw) {
	id, deltas := e.drainUsage(max, max)
	if id == 0 || e.usage == nil {
		return id, deltas, nil
	}
	e.usage.mu.Lock()
	draws := e.usage.drawBatches[id]
	e.usage.mu.Unlock()
	return id, deltas, draws
}

// drainUsage drains deltas, and grant draws unless maxDraws is negative.
func (e *Engine) drainUsage(max, maxDraws int) (uint64, []UsageDelta) {
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
			if pu.calls > 0 && !ref.c.deleted {
				out = append(out, pu.delta(ref.c, ref.ent))
			}
			pu.reset()
			pu.queued = false
		}
		ref.c.mu.Unlock()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(rest) > 0 {
		r.dirty = append(rest, r.dirty...)
	}
	var draws []GrantDraw
	if maxDraws >= 0 && len(r.draws) > 0 {
		var calc num.Calc
		for k, v := range r.draws {
			if maxDraws > 0 && len(draws) >= maxDraws {
				break
			}
			delete(r.draws, k)
			if v.IsZero() {
				continue // a cap's ups and downs that cancelled out
			}
			d := GrantDraw{Customer: k.customer, GrantID: k.grant, Units: v, CustomerCreatedAt: time.Unix(0, k.created).UTC(), Voucher: k.voucher, Cap: k.cap}
			if !k.voucher {
				d.PeriodStart = time.Unix(0, k.period).UTC()
			}
			draws = append(draws, d)
			cur, ok := r.drawsFlight[k]
			if !ok {
				cur = num.Zero
			}
			r.drawsFlight[k] = calc.Add(cur, v)
		}
		slices.SortFunc(draws, func(a, b GrantDraw) int {
			if ka, kb := a.kind(), b.kind(); ka != kb {
				return ka - kb
			}
			if a.Customer != b.Customer {
				return strings.Compare(a.Customer, b.Customer)
			}
			if a.GrantID != b.GrantID {
				return strings.Compare(a.GrantID, b.GrantID)
			}
			return a.PeriodStart.Compare(b.PeriodStart)
		})
	}
	if len(out) == 0 && len(draws) == 0 {
		return 0, nil
	}
	r.nextID++
	id := r.nextID
	if len(draws) > 0 {
		r.drawBatches[id] = draws
	}
	keys := make([]usageKey, 0, len(out))
	var calc num.Calc
	for _, d := range out {
		k := d.key()
		cur, ok := r.inflight[k]
		if !ok {
			cur = UsageDelta{Customer: d.Customer, Entitlement: d.Entitlement, Credit: d.Credit, PeriodStart: d.PeriodStart,
				Units: num.Zero, Overhead: num.Zero, Price: num.Zero, GrantCovered: num.Zero, CustomerCreatedAt: d.CustomerCreatedAt}
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
	for _, d := range r.drawBatches[id] {
		k := d.key()
		if cur, ok := r.drawsFlight[k]; ok {
			if left := calc.Sub(cur, d.Units); !left.IsZero() { // a cap's use may be negative
				r.drawsFlight[k] = left
			} else {
				delete(r.drawsFlight, k)
			}
		}
	}
	delete(r.drawBatches, id)
	for _, d := range deltas {
		k := d.key()
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
	r := e.usage
	if r == nil {
		return
	}
	r.mu.Lock()
	draws := r.drawBatches[id]
	r.mu.Unlock()
	e.AckUsage(id, deltas)
	r.mu.Lock()
	r.closed = append(r.closed, deltas...)
	var calc num.Calc
	for _, d := range draws {
		k := d.key()
		cur, ok := r.draws[k]
		if !ok {
			cur = num.Zero
		}
		r.draws[k] = calc.Add(cur, d.Units)
	}
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
	return len(r.dirty) + len(r.closed) + len(r.draws)
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
			c.meters = append(c.meters, meter{key: e.meterKey(t.Entitlement, t.Credit), started: start, value: num.Zero, overhead: num.Zero})
			m = &c.meters[len(c.meters)-1]
		}
		if l := e.meterLimit(p, c, c.info.Load(), t.Entitlement, now); l != nil && l.Resets() {
			cur := l.Reset.CurrentStart(m.startedAt(), now, c.location(p), c.anchor())
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
			if in, ok := e.usage.inflight[usageKey{customer: c.id, ent: t.Entitlement, period: start, created: c.created.UnixNano()}]; ok {
				value, overhead = calc.Add(value, in.Units), calc.Add(overhead, in.Overhead)
			}
			e.usage.mu.Unlock()
		}
		if calc.Err != nil {
			return calc.Err
		}
		m.value, m.overhead = value, overhead
		if m.credit() == "" {
			e.setCredit(m, t.Credit)
		}
	}
	return nil
}

// RemoteGrantDraw is what the server has committed as drawn from one of a customer's
// grants in one grant period, by every instance.
type RemoteGrantDraw struct {
	GrantID     string
	PeriodStart time.Time
	Units       num.Dec
}

// ApplyGrantDraws sets a customer's grant balances to what the whole fleet has drawn:
// for each grant held whose current period starts at a draw's period start (to the
// microsecond, as the server keeps times), the balance becomes its value at the start
// of the period less the committed draws and this instance's pending and in-flight
// draws of that grant and period. Included grants are created first (they are
// deterministic: the same id and periods on every instance). Grants without a
// committed draw for their current period are left as they are.
//
// The value at the start of a period is the topup's starting value. That is exact for
// grants that do not reset and for hard resets; for add and rollover resets it ignores
// what the previous period carried over (an approximation).
func (e *Engine) ApplyGrantDraws(ctx context.Context, id string, draws []RemoteGrantDraw) error {
	c := e.lookup(id)
	if c == nil {
		return fmt.Errorf("%w: %q", ErrUnknownCustomer, id)
	}
	p := e.policy.Load()
	now := e.now().UnixNano()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.deleted {
		return fmt.Errorf("%w: %q", ErrUnknownCustomer, id)
	}
	e.syncIncludedLocked(p, c, now)
	c.currentGrants(p, now)
	if len(draws) == 0 || len(c.grants()) == 0 {
		return nil
	}
	var calc num.Calc
	for _, g := range c.grants() {
		drawn, matched, err := e.drawnLocked(p, c, g, draws)
		if err != nil {
			return err
		}
		if !matched {
			continue
		}
		v := calc.Sub(g.def.starting, drawn)
		if calc.Err != nil {
			return calc.Err
		}
		g.value = num.Max(num.Zero, v)
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
// At most limit records wait to be drained (limit <= 0: no bound): past that, new
// records are dropped and counted (CallEventsDropped), so memory stays bounded when
// nothing drains them. The usage sums are kept whole either way.
func WithCallAudit(limit int) Option {
	return func(e *Engine) {
		if e.usage == nil {
			WithUsageRecording()(e)
		}
		e.usage.audit = true
		e.usage.eventMax = max(0, limit)
	}
}

// audit records a decided call when audit mode is on.
func (e *Engine) audit(owner, caller, ent string, units, overhead num.Dec, allowed bool, at time.Time) {
	r := e.usage
	if r == nil || !r.audit {
		return
	}
	r.mu.Lock()
	if r.eventMax > 0 && len(r.events) >= r.eventMax {
		r.eventsDropped++
		r.mu.Unlock()
		return
	}
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

// PendingCallEvents is the number of call records waiting to be drained.
func (e *Engine) PendingCallEvents() int {
	r := e.usage
	if r == nil {
		return 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.events)
}

// CallEventsDropped is the number of call records dropped at the WithCallAudit bound.
func (e *Engine) CallEventsDropped() int64 {
	r := e.usage
	if r == nil {
		return 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.eventsDropped
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
