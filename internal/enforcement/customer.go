package enforcement

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/limitr/limitr/internal/policies"
)

// MaxIDLength bounds customer ids and alt ids.
const MaxIDLength = 256

// customer is one customer's mutable state. The profile (plan, type, refs, ...) is an
// immutable value swapped atomically, so plan resolution through refs reads other
// customers without taking their locks; meters and the extras are guarded by mu.
//
// A deployment holds millions of these, so the struct keeps only what every customer
// uses on every call; what few customers have (overrides, grants, caps, idempotency
// keys, a voucher) lives behind x, allocated on first use.
type customer struct {
	mu         sync.Mutex
	id         string
	seq        uint64    // creation order: locks on several customers are taken in seq order
	created    time.Time // set before the customer is shared, changed only by a restore under mu
	info       atomic.Pointer[profile]
	ownerCache atomic.Pointer[ownerCacheEntry]
	capCount   atomic.Int32 // len(caps), readable without the lock
	deleted    bool
	meters     []meter
	x          *customerExtras // nil until the customer has any of it
}

// customerExtras is the customer state only some customers have. Guarded by the
// customer's mu, like the fields it came from.
type customerExtras struct {
	overrides map[string]*override
	grants    []*grant
	caps      []*spendCap
	idem      map[string]idemRecord
	voucher   *voucherState
	// topupsFor/topupsPlan record the policy and plan included topups were last synced to.
	topupsFor  *policies.Policy
	topupsPlan *policies.CompiledPlan
}

// extras returns the customer's extras, allocating them on first use. Caller holds c.mu.
func (c *customer) extras() *customerExtras {
	if c.x == nil {
		c.x = &customerExtras{}
	}
	return c.x
}

// The getters below read the extras without allocating them; callers hold c.mu.

func (c *customer) grants() []*grant {
	if c.x == nil {
		return nil
	}
	return c.x.grants
}

func (c *customer) caps() []*spendCap {
	if c.x == nil {
		return nil
	}
	return c.x.caps
}

// overrides is the customer's overrides by entitlement; nil (still readable, and
// deletable from) when it has none.
func (c *customer) overrides() map[string]*override {
	if c.x == nil {
		return nil
	}
	return c.x.overrides
}

func (c *customer) voucher() *voucherState {
	if c.x == nil {
		return nil
	}
	return c.x.voucher
}

// setVoucher sets (nil: drops) the customer's voucher. Caller holds c.mu.
func (c *customer) setVoucher(st *voucherState) {
	if st == nil && c.x == nil {
		return
	}
	c.extras().voucher = st
}

// planCacheEntry is the plan resolved for a policy version and the profile holding
// the entry. A plan the profile names itself (gen 0) stays valid; one inherited through
// refs only while the engine's refs generation is gen (never 0 once a customer exists,
// as registering one moves it).
type planCacheEntry struct {
	policy *policies.Policy
	plan   *policies.CompiledPlan
	gen    uint64
}

// ownerCacheEntry is the scope owner found for one scope under a refs generation
// (owner nil: none reachable).
type ownerCacheEntry struct {
	gen   uint64
	scope string
	owner *customer
}

// profile is what describes a customer (plan, type, refs, ...): immutable once stored,
// replaced whole on change. Most customers of a deployment have the same few profiles
// (a plan, type "user", label "User", nothing else), so identical plain profiles are
// shared (Engine.intern) and nothing per customer lives here: the creation time is the
// customer's, and the anchor is kept only when it is not the creation time.
type profile struct {
	profileData
	// planCache is the plan this profile resolves to, cached per policy version.
	// Resolution reads only the profile and, through its refs, other customers, and
	// customer ids only to stop at cycles; a shared profile has no refs and one with
	// refs belongs to one customer, so the entry is valid for every holder.
	planCache atomic.Pointer[planCacheEntry]
}

// profileData is the profile's value; copying it makes a changed profile without the
// original's cache.
type profileData struct {
	plan     string // "" inherits through refs
	typ      string
	label    string
	refs     []string
	altIDs   []string
	metadata map[string]any
	tz       string
	loc      *time.Location // nil: the policy's zone
	anchor   time.Time      // billing anchor for monthly:anchor; zero: the customer's creation
}

// clone returns a copy of p to change before storing it.
func (p *profile) clone() *profile { return &profile{profileData: p.profileData} }

// maxInterned bounds the shared profiles an engine keeps. Profiles are few in practice
// (plans × types × labels × zones); if labels are per customer, say, sharing stops
// paying off and later customers simply get their own.
const maxInterned = 4096

// profileKey identifies a plain profile: the fields left once refs, alt ids, metadata
// and an own anchor are ruled out (loc follows from tz).
type profileKey struct{ plan, typ, label, tz string }

// profileTable holds the engine's shared profiles.
type profileTable struct {
	mu sync.RWMutex
	m  map[profileKey]*profile
}

// intern returns the shared profile equal to prof when prof is plain, else prof. The
// result is stored and never changed: profiles are replaced, not mutated.
func (e *Engine) intern(prof *profile) *profile {
	if prof.refs != nil || prof.altIDs != nil || prof.metadata != nil || !prof.anchor.IsZero() {
		return prof
	}
	k := profileKey{plan: prof.plan, typ: prof.typ, label: prof.label, tz: prof.tz}
	t := &e.profiles
	t.mu.RLock()
	shared := t.m[k]
	t.mu.RUnlock()
	if shared != nil {
		return shared
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if shared := t.m[k]; shared != nil {
		return shared
	}
	if len(t.m) < maxInterned {
		if t.m == nil {
			t.m = map[profileKey]*profile{}
		}
		t.m[k] = prof
	}
	return prof
}

// anchor is the customer's billing anchor. Caller holds c.mu (or c is not shared yet).
func (c *customer) anchor() time.Time {
	if a := c.info.Load().anchor; !a.IsZero() {
		return a
	}
	return c.created
}

// override is a customer-specific limit: the fields the caller named, laid over the
// plan limit. It is compiled per policy version so a policy swap re-bases it.
type override struct {
	spec     Override
	compiled *policies.CompiledLimit
	policy   *policies.Policy
}

type idemRecord struct {
	allowed bool
	at      int64
}

// Override names the limit fields to change for one customer; empty fields keep the
// plan's value. Quantities are numbers or unit strings ("1TiB").
type Override struct {
	Value        string    `json:"value,omitempty"`
	ExpiresAt    time.Time `json:"expires_at,omitzero"`
	Credit       string    `json:"credit,omitempty"`
	Mode         string    `json:"mode,omitempty"`
	Increment    string    `json:"increment,omitempty"`
	Minimum      string    `json:"minimum,omitempty"`
	Resets       *bool     `json:"resets,omitempty"`
	ResetInc     string    `json:"reset_inc,omitempty"`
	ResetSch     string    `json:"reset_sch,omitempty"`
	HardTrailing *bool     `json:"hard_trailing,omitempty"`
	GrantsApply  *bool     `json:"grants_apply,omitempty"`
}

// CustomerSpec describes a customer to create or update.
type CustomerSpec struct {
	ID       string
	Plan     string
	Type     *string
	Label    *string
	Refs     []string
	RefsSet  bool
	AltIDs   []string
	Metadata map[string]any
	Timezone *string
	Anchor   *time.Time
	// Created, for a new customer, is when the control plane created it. Duration
	// periods are anchored there, so every instance of a fleet agrees on them.
	Created *time.Time
}

// Validate checks the spec's own fields.
func (s *CustomerSpec) Validate() error {
	if err := validID("id", s.ID); err != nil {
		return err
	}
	for i, r := range s.Refs {
		if err := validID(fmt.Sprintf("refs[%d]", i), r); err != nil {
			return err
		}
		if r == s.ID {
			return fmt.Errorf("%w: refs[%d]: a customer cannot reference itself", ErrInvalidCustomer, i)
		}
	}
	for i, a := range s.AltIDs {
		if err := validID(fmt.Sprintf("alt_ids[%d]", i), a); err != nil {
			return err
		}
	}
	if s.Type != nil && *s.Type == "" {
		return fmt.Errorf("%w: type: must not be empty", ErrInvalidCustomer)
	}
	if s.Timezone != nil && *s.Timezone != "" {
		if _, err := time.LoadLocation(*s.Timezone); err != nil {
			return fmt.Errorf("%w: timezone: unknown time zone %q", ErrInvalidCustomer, *s.Timezone)
		}
	}
	if _, err := VoucherFromMetadata(s.Metadata); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidCustomer, err)
	}
	return nil
}

// specVoucher is the voucher a spec's metadata sets in Limitr's form, if any.
func specVoucher(spec CustomerSpec) *voucherState {
	v, err := VoucherFromMetadata(spec.Metadata)
	if err != nil || v == nil {
		return nil // Validate reported a bad one
	}
	st, err := v.state()
	if err != nil {
		return nil
	}
	return st
}

func validID(field, id string) error {
	switch {
	case id == "":
		return fmt.Errorf("%w: %s: must not be empty", ErrInvalidCustomer, field)
	case len(id) > MaxIDLength:
		return fmt.Errorf("%w: %s: longer than %d bytes", ErrInvalidCustomer, field, MaxIDLength)
	case !utf8.ValidString(id):
		return fmt.Errorf("%w: %s: not valid UTF-8", ErrInvalidCustomer, field)
	}
	return nil
}

// resolvePlan finds the plan a customer is on (policies.ResolvePlan: its own plan,
// else the first found through refs, else the default plan). id is the customer's id
// and prof its profile, which may be one not stored yet.
func (e *Engine) resolvePlan(p *policies.Policy, id string, prof *profile) *policies.CompiledPlan {
	return policies.ResolvePlan(p, prof.refNode(id), engineRefs{e})
}

// planThroughRefs is resolvePlan without the default plan.
func (e *Engine) planThroughRefs(p *policies.Policy, id string, prof *profile) *policies.CompiledPlan {
	return policies.PlanThroughRefs(p, prof.refNode(id), engineRefs{e})
}

// scopeOwner is the customer of type scope that owns a scoped entitlement's meter for
// c (policies.ScopeOwner), or nil.
func (e *Engine) scopeOwner(c *customer, scope string) *customer {
	gen := e.refsGen.Load()
	if oc := c.ownerCache.Load(); oc != nil && oc.gen == gen && oc.scope == scope {
		return oc.owner
	}
	var owner *customer
	if n, ok := policies.ScopeOwner(c.info.Load().refNode(c.id), scope, engineRefs{e}); ok {
		owner, _ = n.Ref.(*customer)
	}
	c.ownerCache.Store(&ownerCacheEntry{gen: gen, scope: scope, owner: owner})
	return owner
}

// engineRefs is the engine's customers as the refs graph plan resolution walks. It is
// one pointer, so passing it as a RefGraph does not allocate.
type engineRefs struct{ e *Engine }

func (g engineRefs) Node(id string) (policies.RefNode, bool) {
	c := g.e.byID(id)
	if c == nil {
		return policies.RefNode{}, false
	}
	n := c.info.Load().refNode(id)
	n.Ref = c
	return n, true
}

func (p *profile) refNode(id string) policies.RefNode {
	return policies.RefNode{ID: id, Plan: p.plan, Type: p.typ, Refs: p.refs}
}

func (c *customer) meter(ent string) *meter {
	for i := range c.meters {
		if c.meters[i].key.ent == ent {
			return &c.meters[i]
		}
	}
	return nil
}

// planLocked resolves the customer's plan, from the cache when it can. Safe without
// c.mu: the cache entry names the profile it was computed from.
func (c *customer) planLocked(e *Engine, p *policies.Policy) *policies.CompiledPlan {
	prof := c.info.Load()
	if pc := prof.planCache.Load(); pc != nil && pc.policy == p && (pc.gen == 0 || pc.gen == e.refsGen.Load()) {
		return pc.plan
	}
	gen := e.refsGen.Load() // before resolving: a change meanwhile makes the entry stale
	pl := e.resolvePlan(p, c.id, prof)
	if pl != nil {
		if prof.plan == pl.Name {
			gen = 0 // its own plan: no other customer can change it
		}
		prof.planCache.Store(&planCacheEntry{policy: p, plan: pl, gen: gen})
	}
	return pl
}

// invalidateLocked drops every cache derived from the profile (the plan cache lives on
// the profile, so a new profile starts without one). Caller holds c.mu.
func (c *customer) invalidateLocked() {
	if c.x != nil {
		c.x.topupsFor, c.x.topupsPlan = nil, nil
	}
	for i := range c.meters {
		c.meters[i].periodOf = nil
	}
}

func (c *customer) location(p *policies.Policy) *time.Location {
	if loc := c.info.Load().loc; loc != nil {
		return loc
	}
	return p.Location
}

// CreateCustomer creates a customer, or updates it when the id (or an alt id) exists,
// as the reference engine does. On update, fields the spec leaves unset are kept
// (the reference engine wipes refs; we don't).
func (e *Engine) CreateCustomer(ctx context.Context, spec CustomerSpec) (*Customer, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	p := e.policy.Load()
	now := e.now()
	if spec.Plan != "" && p.Plan(spec.Plan) == nil {
		return nil, fmt.Errorf("%w: %q", ErrUnknownPlan, spec.Plan)
	}
	if existing := e.lookup(spec.ID); existing != nil {
		return e.updateCustomer(p, existing, spec)
	}
	created := now
	if spec.Created != nil && !spec.Created.IsZero() {
		created = spec.Created.UTC()
	}
	prof := &profile{profileData: profileData{typ: "user", label: "User"}}
	applySpec(prof, spec)
	prof.dropDefaultAnchor(created)
	prof.plan = spec.Plan
	if prof.plan == "" {
		if e.planThroughRefs(p, spec.ID, prof) == nil {
			if p.DefaultPlan == nil {
				return nil, fmt.Errorf("%w: no plan given, no ref has one and the policy has no default plan", ErrUnknownPlan)
			}
			prof.plan = p.DefaultPlan.Name
		}
	}
	c := &customer{id: spec.ID, seq: e.customerSeq.Add(1), created: created}
	c.setVoucher(specVoucher(spec))
	prof = e.intern(prof)
	c.info.Store(prof)
	if plan := e.resolvePlan(p, spec.ID, prof); plan != nil {
		// Sized to the plan: append would round 3 meters up to room for 4.
		c.meters = make([]meter, 0, len(plan.Limited))
		for _, ce := range plan.Limited {
			if ce.Scope != "" && ce.Scope != prof.typ {
				continue // metered on the scoped customer, not here
			}
			c.meters = append(c.meters, meter{key: e.meterKey(ce.Name, ce.Limit.Credit.Name), started: created.UnixNano()})
		}
	}
	e.syncIncludedLocked(p, c, now.UnixNano())
	if err := e.register(c, spec.AltIDs); err != nil {
		return nil, err
	}
	snap := e.snapshot(p, c)
	e.emit(Event{Type: EventCustomerSet, Customer: snap, Time: now})
	return snap, nil
}

func applySpec(prof *profile, spec CustomerSpec) {
	if spec.Type != nil {
		prof.typ = *spec.Type
	}
	if spec.Label != nil {
		prof.label = *spec.Label
	}
	if spec.RefsSet {
		prof.refs = slices.Clone(spec.Refs)
	}
	if spec.Metadata != nil {
		prof.metadata = maps.Clone(spec.Metadata)
	}
	if spec.Timezone != nil {
		prof.tz = *spec.Timezone
		prof.loc = nil
		if prof.tz != "" {
			prof.loc, _ = time.LoadLocation(prof.tz)
		}
	}
	if spec.Anchor != nil && !spec.Anchor.IsZero() {
		prof.anchor = *spec.Anchor
	}
}

// dropDefaultAnchor clears an anchor that is exactly the creation time (the same
// value, zone included): zero means that, and keeps the profile shareable.
func (prof *profile) dropDefaultAnchor(created time.Time) {
	if prof.anchor == created {
		prof.anchor = time.Time{}
	}
}

// register adds a new customer and its alt ids under the shard locks.
func (e *Engine) register(c *customer, alts []string) error {
	h := e.hashID(c.id)
	s := e.shardOf(h)
	s.mu.Lock()
	if s.byID.get(h, c.id) != nil || s.byAlt[c.id] != nil {
		s.mu.Unlock()
		return fmt.Errorf("%w: %q was created concurrently", ErrInvalidCustomer, c.id)
	}
	s.byID.put(&e.ids, h, c)
	s.mu.Unlock()
	e.refsChanged()
	return e.addAltIDs(c, alts)
}

func (e *Engine) addAltIDs(c *customer, alts []string) error {
	for _, a := range alts {
		if a == c.id {
			continue
		}
		h := e.hashID(a)
		s := e.shardOf(h)
		s.mu.Lock()
		owner := s.byID.get(h, a)
		if owner == nil {
			owner = s.byAlt[a]
		}
		if owner != nil && owner != c {
			s.mu.Unlock()
			return fmt.Errorf("%w: %q", ErrAltIDTaken, a)
		}
		s.byAlt[a] = c
		s.mu.Unlock()
		for {
			old := c.info.Load()
			if slices.Contains(old.altIDs, a) {
				break
			}
			np := old.clone()
			np.altIDs = append(slices.Clone(old.altIDs), a)
			if c.info.CompareAndSwap(old, np) {
				break
			}
		}
	}
	return nil
}

func (e *Engine) updateCustomer(p *policies.Policy, c *customer, spec CustomerSpec) (*Customer, error) {
	c.mu.Lock()
	if c.deleted {
		c.mu.Unlock()
		return nil, fmt.Errorf("%w: %q", ErrUnknownCustomer, spec.ID)
	}
	np := c.info.Load().clone()
	applySpec(np, spec)
	np.dropDefaultAnchor(c.created)
	// Metadata in Limitr's voucher form sets the voucher; metadata without it leaves
	// the voucher as it is (a prepaid balance is never dropped by a profile update).
	if v := specVoucher(spec); v != nil {
		c.setVoucher(v)
	}
	np.plan = spec.Plan
	if np.plan == "" && e.planThroughRefs(p, c.id, np) == nil && p.DefaultPlan != nil {
		np.plan = p.DefaultPlan.Name
	}
	c.info.Store(e.intern(np))
	e.refsChanged()
	c.invalidateLocked()
	c.mu.Unlock()
	if err := e.addAltIDs(c, spec.AltIDs); err != nil {
		return nil, err
	}
	snap := e.snapshot(p, c)
	e.emit(Event{Type: EventCustomerSet, Customer: snap, Time: e.now()})
	return snap, nil
}

// SetCustomerPlan moves a customer to another plan. Meters for entitlements the new
// plan limits are created (or, with overwriteMeters, started afresh); kept meters keep
// their usage, and new ones align to the period of the meters already running.
func (e *Engine) SetCustomerPlan(ctx context.Context, id, plan string, overwriteMeters bool) error {
	p := e.policy.Load()
	c := e.lookup(id)
	if c == nil {
		return fmt.Errorf("%w: %q", ErrUnknownCustomer, id)
	}
	next := p.Plan(plan)
	if next == nil {
		return fmt.Errorf("%w: %q", ErrUnknownPlan, plan)
	}
	now := e.now()
	c.mu.Lock()
	if c.deleted {
		c.mu.Unlock()
		return fmt.Errorf("%w: %q", ErrUnknownCustomer, id)
	}
	old := c.info.Load()
	prev := e.resolvePlan(p, c.id, old)
	if prev == next {
		c.mu.Unlock()
		return nil
	}
	// Keep new meters in step with the periods already running on the old plan.
	anchor := now.UnixNano()
	if !overwriteMeters && prev != nil {
		first := true
		for _, ce := range prev.Limited {
			if m := c.meter(ce.Name); m != nil && (first || m.started < anchor) {
				anchor, first = m.started, false
			}
		}
	}
	for _, ce := range next.Limited {
		if ce.Scope != "" && ce.Scope != old.typ {
			continue
		}
		m := c.meter(ce.Name)
		switch {
		case m == nil:
			c.meters = append(c.meters, meter{key: e.meterKey(ce.Name, ce.Limit.Credit.Name), started: anchor})
		case overwriteMeters:
			// Usage not yet synced keeps its own period; it is still owed to the server.
			*m = meter{key: e.meterKey(ce.Name, ce.Limit.Credit.Name), started: now.UnixNano(), pending: m.pending}
		}
	}
	np := old.clone()
	np.plan = plan
	c.info.Store(e.intern(np))
	e.refsChanged()
	c.invalidateLocked()
	e.syncIncludedLocked(p, c, now.UnixNano())
	snap := e.snapshotLocked(p, c)
	c.mu.Unlock()
	prevName := ""
	if prev != nil {
		prevName = prev.Name
	}
	e.emit(Event{Type: EventCustomerSet, Customer: snap, Time: now})
	e.emit(Event{Type: EventCustomerPlanChanged, Customer: snap, PreviousPlan: prevName, NewPlan: plan, Plan: plan, Time: now})
	return nil
}

// DeleteCustomer removes a customer and its alt ids. With usage recording, the
// customer's usage not yet drained (pending sums, closed periods, grant draws, call
// records) is discarded; usage already drained into a batch is left to its batch.
func (e *Engine) DeleteCustomer(ctx context.Context, id string) error {
	p := e.policy.Load()
	c := e.lookup(id)
	if c == nil {
		return fmt.Errorf("%w: %q", ErrUnknownCustomer, id)
	}
	c.mu.Lock()
	if c.deleted {
		c.mu.Unlock()
		return fmt.Errorf("%w: %q", ErrUnknownCustomer, id)
	}
	snap := e.snapshotLocked(p, c)
	c.deleted = true
	if e.usage != nil {
		// Usage of a customer the server is deleting would reach it unattributed. What
		// was drained before this point may still be sent (the server reports it).
		e.usage.discard(c)
	}
	c.mu.Unlock()
	e.emit(Event{Type: EventCustomerRemoved, Customer: snap, Time: e.now()})
	h := e.hashID(c.id)
	s := e.shardOf(h)
	s.mu.Lock()
	s.byID.remove(h, c)
	s.mu.Unlock()
	e.refsChanged()
	for _, a := range c.info.Load().altIDs {
		s := e.shardOf(e.hashID(a))
		s.mu.Lock()
		if s.byAlt[a] == c {
			delete(s.byAlt, a)
		}
		s.mu.Unlock()
	}
	return nil
}

// Customer returns a snapshot of a customer.
func (e *Engine) Customer(ctx context.Context, id string) (*Customer, error) {
	c := e.lookup(id)
	if c == nil {
		return nil, fmt.Errorf("%w: %q", ErrUnknownCustomer, id)
	}
	return e.snapshot(e.policy.Load(), c), nil
}

// CustomerIDs returns the primary id of every customer, in no particular order.
func (e *Engine) CustomerIDs() []string {
	var out []string
	for i := range e.shards {
		s := &e.shards[i]
		s.mu.RLock()
		s.byID.each(func(c *customer) { out = append(out, c.id) })
		s.mu.RUnlock()
	}
	return out
}

// Customers returns snapshots of every customer, ordered by id.
func (e *Engine) Customers(ctx context.Context) []*Customer {
	p := e.policy.Load()
	var out []*Customer
	e.forEachCustomer(func(c *customer) { out = append(out, e.snapshot(p, c)) })
	slices.SortFunc(out, func(a, b *Customer) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	return out
}
