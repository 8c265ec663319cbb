package enforcement

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/limitr/limitr/internal/policies"
)

const shardCount = 256

// DefaultIdempotencyTTL is how long an idempotency key keeps answering a retry.
const DefaultIdempotencyTTL = 24 * time.Hour

// Engine enforces one compiled policy over many customers. It is safe for concurrent
// use: customer lookups go through sharded read-mostly maps, and each customer's
// meters are guarded by that customer's own mutex, so calls for different customers
// never contend.
type Engine struct {
	policy   atomic.Pointer[policies.Policy]
	now      func() time.Time
	shards   [shardCount]shard
	ids      idHasher // hashes customer ids (hashID)
	handlers atomic.Pointer[handlerSet]
	hmu      sync.Mutex // serialises handler registration; dispatch reads the atomic set
	idemTTL  time.Duration

	customerSeq atomic.Uint64
	grantSeq    atomic.Uint64
	holdSeq     atomic.Uint64
	estimates   estimateBook
	profiles    profileTable   // shared plain profiles
	meterKeys   meterKeyTable  // shared meter keys
	usage       *usageRecorder // nil unless usage is recorded for cloud sync
	leases      *leaseConfig   // nil unless hard limits are kept with allowance leases
	// refsGen moves on every change to any customer's profile and to the set of
	// customers. Plans inherited through refs and scope owners are cached per customer
	// under it: they stay valid until it moves (changes are rare, calls are many).
	refsGen atomic.Uint64
}

// refsChanged invalidates every cached inherited plan and scope owner. Call it after
// the change is visible (a profile stored, a customer registered or removed), so a
// resolution that read the old state cannot be cached under the new generation.
func (e *Engine) refsChanged() { e.refsGen.Add(1) }

// shard holds a share of the customers. mu serialises every change; byID is read
// without it.
type shard struct {
	mu    sync.RWMutex
	byID  idTable
	byAlt map[string]*customer
}

// Option configures an Engine.
type Option func(*Engine)

// WithClock injects the time source every decision and period uses.
func WithClock(now func() time.Time) Option {
	return func(e *Engine) {
		if now != nil {
			e.now = now
		}
	}
}

// WithIdempotencyTTL sets how long idempotency keys are remembered.
func WithIdempotencyTTL(d time.Duration) Option {
	return func(e *Engine) {
		if d > 0 {
			e.idemTTL = d
		}
	}
}

// New returns an engine enforcing p.
func New(p *policies.Policy, opts ...Option) (*Engine, error) {
	if p == nil {
		return nil, fmt.Errorf("enforcement: nil policy")
	}
	e := &Engine{now: time.Now, idemTTL: DefaultIdempotencyTTL, ids: newIDHasher()}
	for _, o := range opts {
		o(e)
	}
	for i := range e.shards {
		e.shards[i].byAlt = map[string]*customer{}
	}
	e.policy.Store(p)
	e.handlers.Store(&handlerSet{})
	return e, nil
}

// Policy returns the policy currently enforced.
func (e *Engine) Policy() *policies.Policy { return e.policy.Load() }

// SetPolicy swaps the enforced policy atomically. Customer state is kept: meters are
// keyed by entitlement name and overrides are recompiled against the new policy on
// their next use, so in-flight usage carries over.
func (e *Engine) SetPolicy(p *policies.Policy) error {
	if p == nil {
		return fmt.Errorf("enforcement: nil policy")
	}
	e.policy.Store(p)
	return nil
}

// shardOf is the shard holding id (hash h), as a primary or an alt id.
func (e *Engine) shardOf(h idHash) *shard { return &e.shards[h.shard()%shardCount] }

// lookup finds a customer by id or alt id. Primary ids are found without a lock (see
// idTable); only alt ids, rarely called by, take the shard's read lock.
func (e *Engine) lookup(id string) *customer {
	h := e.hashID(id)
	s := e.shardOf(h)
	if c := s.byID.get(h, id); c != nil {
		return c
	}
	s.mu.RLock()
	c := s.byAlt[id]
	s.mu.RUnlock()
	return c
}

// byID finds a customer by its primary id only.
func (e *Engine) byID(id string) *customer {
	h := e.hashID(id)
	return e.shardOf(h).byID.get(h, id)
}

// forEachCustomer visits every customer; the visit runs without shard locks held.
func (e *Engine) forEachCustomer(visit func(*customer)) {
	for i := range e.shards {
		s := &e.shards[i]
		s.mu.RLock()
		list := make([]*customer, 0, s.byID.n)
		s.byID.each(func(c *customer) { list = append(list, c) })
		s.mu.RUnlock()
		for _, c := range list {
			visit(c)
		}
	}
}
