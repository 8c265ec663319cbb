package limitr

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/limitr/limitr/internal/enforcement"
	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/wire"
)

// DefaultLeaseHorizon is how much of its recent rate an instance asks to hold ahead.
const DefaultLeaseHorizon = 2 * time.Second

// FleetMode is how cloud mode keeps a hard limit served by several instances.
type FleetMode int

const (
	// Exact keeps the limit exactly across the fleet with allowance leases: an instance
	// decides locally inside a lease of the meter's remaining allowance the control
	// plane grants it, and asks for more ahead of running out. Committed usage never
	// passes the limit. The default for hard limits.
	Exact FleetMode = iota
	// Bounded decides locally against the usage the instance knows of: the fleet can
	// pass the limit by what other instances admit between syncs (see Cloud).
	Bounded
)

// WithFleetMode sets how hard limits are kept across a fleet (default Exact). A
// limit's fleet_mode in the policy (exact | bounded) takes precedence. Soft and
// observe limits are unaffected.
func WithFleetMode(m FleetMode) CloudOption { return func(c *cloudConfig) { c.fleet = m } }

// UnreachableRule is what an instance does, in fleet mode Exact, once it has spent
// the allowance it holds and the control plane cannot be asked for more.
type UnreachableRule struct{ ceiling float64 }

// DenyWhenUnreachable denies calls past the lease until the control plane answers
// again (the default): the limit is never passed.
func DenyWhenUnreachable() UnreachableRule { return UnreachableRule{} }

// AllowBoundedWhenUnreachable allows up to ceiling units (in the credit's units) past
// the lease, per meter and outage, then denies: the fleet can pass the limit by at
// most ceiling per instance.
func AllowBoundedWhenUnreachable(ceiling float64) UnreachableRule {
	return UnreachableRule{ceiling: max(0, ceiling)}
}

// WithUnreachable sets the rule for an unreachable control plane (fleet mode Exact).
func WithUnreachable(r UnreachableRule) CloudOption {
	return func(c *cloudConfig) { c.unreachable = r }
}

// WithLeaseHorizon sets how far ahead an instance leases at its recent rate (default
// 2 s): a busy instance asks rarely, an idle one holds little.
func WithLeaseHorizon(d time.Duration) CloudOption {
	return func(c *cloudConfig) { c.leaseHorizon = d }
}

// leaser asks the control plane for allowance leases and keeps them renewed.
type leaser struct {
	c    *cloud
	wake chan enforcement.LeaseKey

	mu      sync.Mutex
	active  map[enforcement.LeaseKey]time.Time // leased meters and when they were last used or asked for
	flights map[enforcement.LeaseKey]chan struct{}
	waits   [4096]time.Duration
	nwaits  int

	requests    atomic.Int64
	waited      atomic.Int64
	ttl         atomic.Int64 // the server's lease TTL, ns
	unsupported atomic.Bool
}

func newLeaser(c *cloud) *leaser {
	l := &leaser{c: c, wake: make(chan enforcement.LeaseKey, 4096), active: map[enforcement.LeaseKey]time.Time{},
		flights: map[enforcement.LeaseKey]chan struct{}{}}
	l.ttl.Store(int64(15 * time.Second))
	return l
}

// low is the engine's low-water hook: it runs under a customer's lock, so it only
// queues the meter for the renewer (dropped when the queue is full: the next call past
// the lease asks itself).
func (l *leaser) low(k enforcement.LeaseKey) {
	select {
	case l.wake <- k:
	default:
	}
}

// acquire asks for allowance for a call that found no room in its lease and waits for
// the answer; concurrent calls on one meter share one request. It always leaves the
// engine able to decide: a grant, a denial until a recheck, or the unreachable rule.
func (l *leaser) acquire(ctx context.Context, k enforcement.LeaseKey, need num.Dec) {
	start := time.Now()
	l.mu.Lock()
	if ch, ok := l.flights[k]; ok {
		l.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
		}
		l.recordWait(time.Since(start))
		return
	}
	ch := make(chan struct{})
	l.flights[k] = ch
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		delete(l.flights, k)
		l.mu.Unlock()
		close(ch)
		l.recordWait(time.Since(start))
	}()
	l.touch(k)
	l.ask(ctx, []enforcement.LeaseKey{k}, map[enforcement.LeaseKey]num.Dec{k: need})
}

// retry is how a call that found no room in a lease (err) waits for allowance: it
// asks for the lease the engine named (a cap's), else the meter's, and decides again
// (decide), a few rounds, since the call may need several leases and others' calls
// may take the new room first. It returns decide's last error.
func (l *leaser) retry(ctx context.Context, customer, ent string, amount num.Dec, err error, decide func() error) error {
	for i := 0; i < 8 && errors.Is(err, enforcement.ErrLeaseNeeded); i++ {
		var ln *enforcement.LeaseNeededError
		if errors.As(err, &ln) {
			l.acquire(ctx, ln.Key, ln.Need)
		} else {
			l.acquire(ctx, enforcement.LeaseKey{Customer: customer, Entitlement: ent}, amount)
		}
		err = decide()
	}
	return err
}

// touch marks a meter as in demand: the renewer keeps its lease alive for two TTLs.
// Only calls mark it (waiting, or running low), never a renewal, so the lease of a
// meter nobody calls lapses and its rest returns to the fleet.
func (l *leaser) touch(k enforcement.LeaseKey) {
	l.mu.Lock()
	l.active[k] = time.Now()
	l.mu.Unlock()
}

func (l *leaser) recordWait(d time.Duration) {
	l.waited.Add(1)
	l.mu.Lock()
	l.waits[l.nwaits%len(l.waits)] = d
	l.nwaits++
	l.mu.Unlock()
}

// ask sends one LeaseRequest for the keys (needs: the room a waiting call needs) and
// applies the answers.
func (l *leaser) ask(ctx context.Context, keys []enforcement.LeaseKey, needs map[enforcement.LeaseKey]num.Dec) {
	c := l.c
	horizon := c.cfg.leaseHorizon
	var req wire.LeaseRequest
	req.InstanceID = c.instance
	var asked []enforcement.LeaseAsk
	for _, k := range keys {
		need, ok := needs[k]
		if !ok {
			need = num.Zero
		}
		a, leased, err := c.eng.LeaseAsk(ctx, k, need, horizon)
		if err != nil || !leased {
			continue
		}
		asked = append(asked, a)
		if a.Key() != k && needs != nil {
			// The call named its caller; the lease is its meter owner's.
			needs[a.Key()] = need
		}
		wa := wire.LeaseAsk{Customer: a.Owner, Entitlement: a.Entitlement, Cap: a.Cap,
			PeriodStart: a.PeriodStart.Truncate(time.Microsecond), Limit: a.Limit.String(), Target: a.Target.String(),
			Used: a.Used.String(), CustomerCreatedAt: timePtr(a.CustomerCreatedAt)}
		if a.Need.IsPos() {
			wa.Need = a.Need.String()
		}
		req.Leases = append(req.Leases, wa)
	}
	if len(asked) == 0 {
		return
	}
	l.requests.Add(1)
	sent := time.Now()
	code, data, err := c.call(ctx, http.MethodPost, wire.PathLeases, req)
	var reply wire.LeaseReply
	if err == nil {
		err = json.Unmarshal(data, &reply)
		if err == nil && len(reply.Leases) != len(req.Leases) {
			err = fmt.Errorf("%d grants for %d asks", len(reply.Leases), len(req.Leases))
		}
	}
	var ae *APIError
	if errors.As(err, &ae) && (ae.Status == http.StatusNotFound || ae.Status == http.StatusMethodNotAllowed) {
		if !l.unsupported.Swap(true) {
			c.log.Warn("limitr: the control plane grants no allowance leases (an older version): hard limits are kept Bounded")
		}
		c.eng.DisableLeases()
		l.mu.Lock()
		clear(l.active)
		l.mu.Unlock()
		return
	}
	if err != nil || code != http.StatusOK {
		l.unreachable(ctx, asked, err)
		return
	}
	if reply.TTLMillis > 0 {
		l.ttl.Store(int64(reply.TTLMillis) * int64(time.Millisecond))
	}
	ttl := time.Duration(l.ttl.Load())
	// The lease is void locally before the server can hand its rest to others: timed
	// from when it was asked for, less a margin for clocks and the trip.
	expires := sent.Add(ttl - min(ttl/10, time.Second))
	for i, g := range reply.Leases {
		a := asked[i]
		need, ok := needs[a.Key()]
		if !ok {
			need = num.Zero
		}
		granted, perr := num.Parse(g.Granted)
		if g.Error != "" || perr != nil {
			c.log.Warn("limitr: allowance lease refused", "customer", a.Owner, "entitlement", a.Entitlement, "cap", a.Cap, "error", g.Error)
			_ = c.eng.LeaseUnreachable(ctx, a.Key(), num.Zero, time.Now().Add(time.Second))
			continue
		}
		lg := enforcement.LeaseGrant{Owner: a.Owner, Entitlement: a.Entitlement, Cap: a.Cap, PeriodStart: a.PeriodStart,
			Granted: granted, Expires: expires, Need: need, Recheck: leaseRecheck}
		rem, err1 := num.Parse(g.Remaining)
		committed, err2 := num.Parse(g.Committed)
		if err1 == nil && err2 == nil && g.Holders > 0 {
			lg.Remaining, lg.Holders, lg.Committed = rem, g.Holders, committed
		}
		if err := c.eng.ApplyLease(ctx, lg); err != nil {
			c.log.Debug("limitr: applying a lease failed", "customer", a.Owner, "err", err)
		}
	}
}

// leaseRecheck is how long calls past a lease are denied without asking, once the
// fleet had nothing more to grant: others' leases return as they expire or are used.
const leaseRecheck = 100 * time.Millisecond

// unreachable applies the configured rule to meters whose lease could not be asked for.
func (l *leaser) unreachable(ctx context.Context, asked []enforcement.LeaseAsk, cause error) {
	c := l.c
	c.log.Debug("limitr: asking for allowance leases failed", "meters", len(asked), "err", cause)
	fallback := num.Zero
	if f := c.cfg.unreachable.ceiling; f > 0 {
		if d, err := num.FromFloat64(f); err == nil {
			fallback = d
		}
	}
	retry := time.Now().Add(c.cfg.backoffBase * 4)
	for _, a := range asked {
		_ = c.eng.LeaseUnreachable(ctx, a.Key(), fallback, retry)
	}
}

// renewer renews leases ahead of need: at once for meters that ran low, and before
// they expire for meters in use. Meters unused for two TTLs are let go.
func (l *leaser) renewer() {
	c := l.c
	defer c.bgWG.Done()
	for {
		ttl := time.Duration(l.ttl.Load())
		t := time.NewTimer(ttl / 3)
		var keys []enforcement.LeaseKey
		select {
		case <-c.bgCtx.Done():
			t.Stop()
			return
		case k := <-l.wake:
			t.Stop()
			l.touch(k)
			keys = append(keys, k)
			// Gather what ran low meanwhile into the same request.
		gather:
			for len(keys) < wire.MaxLeases {
				select {
				case k := <-l.wake:
					l.touch(k)
					keys = append(keys, k)
				default:
					break gather
				}
			}
		case <-t.C:
			keys = l.inUse(2 * ttl)
		}
		if l.unsupported.Load() || len(keys) == 0 {
			continue
		}
		slices.SortFunc(keys, enforcement.LeaseKey.Compare)
		keys = l.claim(slices.Compact(keys))
		for len(keys) > 0 {
			n := min(len(keys), wire.MaxLeases)
			ctx, cancel := context.WithTimeout(c.bgCtx, c.cfg.requestLimit)
			l.ask(ctx, keys[:n], nil)
			cancel()
			l.release(keys[:n])
			keys = keys[n:]
		}
	}
}

// claim marks keys as in flight and returns those that were not already: one meter's
// asks are never in flight together, so their answers apply in order.
func (l *leaser) claim(keys []enforcement.LeaseKey) []enforcement.LeaseKey {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := keys[:0]
	for _, k := range keys {
		if _, busy := l.flights[k]; busy {
			continue
		}
		l.flights[k] = make(chan struct{})
		out = append(out, k)
	}
	return out
}

// release ends the flights of keys, waking calls that waited on them.
func (l *leaser) release(keys []enforcement.LeaseKey) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, k := range keys {
		if ch, ok := l.flights[k]; ok {
			close(ch)
			delete(l.flights, k)
		}
	}
}

// inUse lists the leased meters used within d, forgetting the others.
func (l *leaser) inUse(d time.Duration) []enforcement.LeaseKey {
	cutoff := time.Now().Add(-d)
	l.mu.Lock()
	defer l.mu.Unlock()
	var keys []enforcement.LeaseKey
	for k, at := range l.active {
		if at.Before(cutoff) {
			delete(l.active, k)
			continue
		}
		keys = append(keys, k)
	}
	return keys
}

// holding reports whether this instance has asked for leases (its batches then count
// against them on the server).
func (l *leaser) holding() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.active) > 0
}

// giveBack returns every lease of this instance (Close, after the last batch was
// acknowledged), so the fleet can use their rest at once.
func (l *leaser) giveBack(ctx context.Context) {
	if l.unsupported.Load() || !l.holding() {
		return
	}
	if _, _, err := l.c.call(ctx, http.MethodPost, wire.PathReturn, wire.LeaseReturn{InstanceID: l.c.instance}); err != nil {
		l.c.log.Warn("limitr: returning allowance leases failed; they return after their TTL", "err", err)
	}
}

func (l *leaser) stats(s *SyncStats) {
	s.LeaseRequests, s.LeaseWaits, s.LeasesUnsupported = l.requests.Load(), l.waited.Load(), l.unsupported.Load()
	l.mu.Lock()
	n := min(l.nwaits, len(l.waits))
	w := slices.Clone(l.waits[:n])
	l.mu.Unlock()
	if n > 0 {
		slices.Sort(w)
		s.LeaseWaitP99 = w[(n*99)/100]
	}
}
