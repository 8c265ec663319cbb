package enforcement

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/period"
	"github.com/limitr/limitr/internal/policies"
	"github.com/limitr/limitr/internal/quantity"
)

// Cap is a spend cap: a ceiling on what calls may consume, in a credit or in runes.
// The first block is configuration; the second is state, reported in snapshots.
type Cap struct {
	ID               string    `json:"id"`
	Credit           string    `json:"credit"`
	Value            float64   `json:"value"`
	IgnoreGrants     bool      `json:"ignore_grants,omitempty"`
	OverageOnly      bool      `json:"overage_only,omitempty"`
	ObserveOnly      bool      `json:"observe_only,omitempty"`
	OverheadCost     bool      `json:"overhead_cost,omitempty"`
	FollowDecrements bool      `json:"follow_decrements,omitempty"`
	HardTrailing     bool      `json:"hard_trailing,omitempty"`
	Shared           bool      `json:"shared,omitempty"`
	SharedWith       []string  `json:"shared_with,omitempty"`
	Scope            []string  `json:"scope,omitempty"`
	Resets           bool      `json:"resets,omitempty"`
	ResetInc         string    `json:"reset_inc,omitempty"`
	ResetSch         string    `json:"reset_sch,omitempty"`
	ExpiresAt        time.Time `json:"-"`
	// Key is set on a cap the control plane holds (cloud mode): the key it minted for
	// the cap's current incarnation (see ApplyCaps). Empty for a cap added locally.
	Key string `json:"key,omitempty"`

	MeterValue float64   `json:"meter_value"`
	Started    time.Time `json:"-"`
	LastReset  time.Time `json:"-"`
	Created    time.Time `json:"-"`

	exact *capExact
}

// capExact carries a snapshot's decimals so a save/restore round trip is exact.
type capExact struct{ value, meter num.Dec }

// spendCap is a cap in the engine, with exact values.
type spendCap struct {
	cfg        Cap
	credit     string
	ceiling    num.Dec
	meterValue num.Dec
	reset      period.Spec
	started    int64
	lastReset  int64
	expiresOn  int64
	createdOn  int64
	key        string      // the control plane's key for a held cap ("" for a local one)
	lease      *meterLease // this instance's lease of a held cap (fleet mode Exact)
}

// Validate checks a cap's configuration; errors name the field.
func (cp *Cap) Validate(p *policies.Policy) error {
	switch {
	case cp.ID == "":
		return fmt.Errorf("%w: id: must not be empty", ErrInvalidCap)
	case len(cp.ID) > MaxIDLength:
		return fmt.Errorf("%w: id: longer than %d bytes", ErrInvalidCap, MaxIDLength)
	case cp.Value < 0:
		return fmt.Errorf("%w: value: must not be negative", ErrInvalidCap)
	case cp.ResetInc != "" && cp.ResetSch != "":
		return fmt.Errorf("%w: reset_inc and reset_sch are exclusive", ErrInvalidCap)
	}
	credit := cp.Credit
	if credit == "" {
		credit = "rune"
	}
	if credit != "rune" && credit != "usd" && p.Credit(credit) == nil && !hasPair(p, credit) {
		return fmt.Errorf("%w: credit: %q is neither a credit nor an exchange currency", ErrInvalidCap, credit)
	}
	if cp.ResetInc != "" {
		d, err := quantity.ParseDuration(cp.ResetInc)
		if err != nil || d <= 0 {
			return fmt.Errorf("%w: reset_inc: %q is not a positive duration", ErrInvalidCap, cp.ResetInc)
		}
	}
	if cp.ResetSch != "" {
		if _, err := period.ParseSchedule(cp.ResetSch); err != nil {
			return fmt.Errorf("%w: reset_sch: %w", ErrInvalidCap, err)
		}
	}
	return nil
}

func hasPair(p *policies.Policy, name string) bool {
	for _, pr := range p.Doc.Exchange.Pairs {
		if pr.Name == name {
			return true
		}
	}
	return false
}

func (e *Engine) compileCap(p *policies.Policy, cfg Cap, now int64) (*spendCap, error) {
	if err := cfg.Validate(p); err != nil {
		return nil, err
	}
	if cfg.Credit == "" {
		cfg.Credit = "rune"
	}
	sc := &spendCap{cfg: cfg, credit: cfg.Credit, createdOn: now, started: now, lastReset: now}
	var err error
	if cfg.exact != nil {
		sc.ceiling, sc.meterValue = cfg.exact.value, cfg.exact.meter
	} else {
		if sc.ceiling, err = num.FromFloat64(cfg.Value); err != nil {
			return nil, fmt.Errorf("%w: value: %w", ErrInvalidCap, err)
		}
		if sc.meterValue, err = num.FromFloat64(cfg.MeterValue); err != nil {
			return nil, fmt.Errorf("%w: meter_value: %w", ErrInvalidCap, err)
		}
	}
	if cfg.Resets || cfg.ResetInc != "" || cfg.ResetSch != "" {
		switch {
		case cfg.ResetSch != "":
			sc.reset.Schedule, _ = period.ParseSchedule(cfg.ResetSch)
		case cfg.ResetInc != "":
			sc.reset.Every, _ = quantity.ParseDuration(cfg.ResetInc)
		default:
			sc.reset.Every = 30 * 24 * time.Hour
		}
	}
	if !cfg.ExpiresAt.IsZero() {
		sc.expiresOn = cfg.ExpiresAt.UnixNano()
	}
	if !cfg.Started.IsZero() {
		sc.started = cfg.Started.UnixNano()
	}
	if !cfg.LastReset.IsZero() {
		sc.lastReset = cfg.LastReset.UnixNano()
	}
	if !cfg.Created.IsZero() {
		sc.createdOn = cfg.Created.UnixNano()
	}
	return sc, nil
}

// exchangeable caps convert calls in any credit; a cap in a named credit only counts
// calls in that credit.
func (sc *spendCap) exchangeable(p *policies.Policy) bool {
	return sc.credit == "rune" || sc.credit == "usd" || p.Credit(sc.credit) == nil
}

func (sc *spendCap) appliesTo(p *policies.Policy, ent, credit string) bool {
	if len(sc.cfg.Scope) > 0 && !slices.Contains(sc.cfg.Scope, ent) {
		return false
	}
	return sc.credit == credit || sc.exchangeable(p)
}

// capState is a cap at an instant, computed without mutating it.
type capState struct {
	meter     num.Dec
	started   int64
	lastReset int64
	expired   bool
}

func (sc *spendCap) at(now int64, loc *time.Location, anchor time.Time) capState {
	st := capState{meter: sc.meterValue, started: sc.started, lastReset: sc.lastReset}
	if sc.expiresOn != 0 && sc.expiresOn < now {
		st.expired = true
		return st
	}
	switch {
	case sc.reset.Every > 0:
		start := period.GridStart(time.Unix(0, sc.started), time.Unix(0, now), sc.reset.Every).UnixNano()
		if start != sc.started {
			st.started, st.meter, st.lastReset = start, num.Zero, now
		}
	case !sc.reset.Schedule.IsZero():
		start := sc.reset.Schedule.Start(time.Unix(0, now), loc, anchor).UnixNano()
		if st.lastReset < start {
			st.meter, st.lastReset, st.started = num.Zero, now, start
		}
	}
	return st
}

func (sc *spendCap) settle(st capState) bool {
	if st.expired {
		return false
	}
	sc.meterValue, sc.started, sc.lastReset = st.meter, st.started, st.lastReset
	return true
}

// hasRoom is the cap's gate for a converted consumption.
func (sc *spendCap) hasRoom(meter, converted num.Dec) bool {
	if sc.cfg.ObserveOnly {
		return true
	}
	if sc.cfg.HardTrailing {
		return !converted.IsPos() || meter.Cmp(sc.ceiling) < 0
	}
	var c num.Calc
	after := c.Add(meter, converted)
	return c.Err == nil && after.Cmp(sc.ceiling) <= 0
}

// capUse is what a call would consume, before conversion into a cap's credit.
type capUse struct {
	credit   string
	units    num.Dec // all units of the call (gate: including held units)
	overage  num.Dec // units past the limit
	covered  num.Dec // units grants pay for
	position num.Dec // meter value − limit before the call (signed)
	billable num.Dec // max(0, position)
	overhead num.Dec // the call's cost in runes
}

// consumption converts a call's use into the cap's credit. ok is false when the cap
// cannot price the call (no exchange path, or an unbounded stairstep inverse); such a
// cap does not apply.
func (sc *spendCap) consumption(p *policies.Policy, u *capUse) (num.Dec, bool) {
	var c num.Calc
	if sc.cfg.OverheadCost {
		if sc.credit == "rune" || sc.credit == "usd" {
			return u.overhead, true
		}
		v, err := p.Exchange.FromRunes(u.overhead, sc.credit, num.Zero)
		return v, err == nil && !unbounded(v)
	}
	base, offset := u.units, u.position
	if sc.cfg.OverageOnly {
		base, offset = u.overage, u.billable
	}
	if sc.cfg.IgnoreGrants {
		base = num.Max(num.Zero, c.Sub(base, u.covered))
		offset = c.Add(offset, u.covered)
	}
	if c.Err != nil {
		return num.Zero, false
	}
	if sc.credit == u.credit {
		return base, true
	}
	v, err := p.Exchange.Convert(base, u.credit, sc.credit, offset, num.Zero)
	if err != nil || unbounded(v) {
		return num.Zero, false
	}
	return v, true
}

// capRef is an applicable cap and the customer that holds it (nil: call-scoped).
type capRef struct {
	holder *customer
	cap    *spendCap
	state  capState
	use    num.Dec
	ok     bool
}

// capHolders lists the customers whose caps can apply to a call by caller: the caller
// itself and every customer up its refs that holds a cap, breadth-first. Read without
// locks; the caller locks them in a canonical order afterwards.
func (e *Engine) capHolders(caller *customer, buf []*customer) []*customer {
	buf = buf[:0]
	if caller.capCount.Load() > 0 {
		buf = append(buf, caller)
	}
	if len(caller.info.Load().refs) == 0 {
		return buf
	}
	// Breadth-first over refs; ref chains are short, so a linear "seen" check over a
	// stack array beats a map and keeps the call allocation-free.
	var visitedBuf [16]*customer
	visited := append(visitedBuf[:0], caller)
	for next := 0; next < len(visited); next++ {
		for _, r := range visited[next].info.Load().refs {
			rc := e.byID(r)
			if rc == nil || slices.Contains(visited, rc) {
				continue
			}
			visited = append(visited, rc)
			if rc.capCount.Load() > 0 {
				buf = append(buf, rc)
			}
		}
	}
	return buf
}

// AddCustomerCap adds a spend cap to a customer.
func (e *Engine) AddCustomerCap(ctx context.Context, id string, cfg Cap) (*Customer, error) {
	p := e.policy.Load()
	c := e.lookup(id)
	if c == nil {
		return nil, fmt.Errorf("%w: %q", ErrUnknownCustomer, id)
	}
	now := e.now()
	cfg.exact = nil
	cfg.MeterValue = 0
	cfg.Started, cfg.LastReset, cfg.Created = time.Time{}, time.Time{}, time.Time{}
	sc, err := e.compileCap(p, cfg, now.UnixNano())
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.deleted {
		c.mu.Unlock()
		return nil, fmt.Errorf("%w: %q", ErrUnknownCustomer, id)
	}
	for _, existing := range c.caps() {
		if existing.cfg.ID == cfg.ID {
			c.mu.Unlock()
			return nil, fmt.Errorf("%w: %q already exists", ErrCapExists, cfg.ID)
		}
	}
	x := c.extras()
	x.caps = append(x.caps, sc)
	c.capCount.Store(int32(len(x.caps)))
	snap := e.snapshotLocked(p, c)
	c.mu.Unlock()
	e.emit(Event{Type: EventCustomerCapAdded, Customer: snap, Cap: capPtr(snap.Caps[cfg.ID]), Time: now})
	return snap, nil
}

func capPtr(c Cap) *Cap { return &c }

// CustomerCap returns a cap's configuration and current state.
func (e *Engine) CustomerCap(ctx context.Context, id, capID string) (Cap, error) {
	snap, err := e.Customer(ctx, id)
	if err != nil {
		return Cap{}, err
	}
	cp, ok := snap.Caps[capID]
	if !ok {
		return Cap{}, fmt.Errorf("%w: %q", ErrUnknownCap, capID)
	}
	return cp, nil
}

// ResetCustomerCap zeroes a cap's meter and starts a new period.
func (e *Engine) ResetCustomerCap(ctx context.Context, id, capID string) error {
	return e.capAdmin(id, capID, EventCustomerCapReset, func(c *customer, i int, now int64) {
		sc := c.caps()[i]
		sc.meterValue, sc.started, sc.lastReset = num.Zero, now, now
	})
}

// RemoveCustomerCap removes a cap.
func (e *Engine) RemoveCustomerCap(ctx context.Context, id, capID string) error {
	return e.capAdmin(id, capID, EventCustomerCapRemoved, func(c *customer, i int, now int64) {
		c.x.caps = slices.Delete(c.x.caps, i, i+1) // i indexes c.caps(), so c.x is set
		c.capCount.Store(int32(len(c.x.caps)))
	})
}

func (e *Engine) capAdmin(id, capID, event string, change func(c *customer, i int, now int64)) error {
	p := e.policy.Load()
	c := e.lookup(id)
	if c == nil {
		return fmt.Errorf("%w: %q", ErrUnknownCustomer, id)
	}
	now := e.now()
	c.mu.Lock()
	i := slices.IndexFunc(c.caps(), func(sc *spendCap) bool { return sc.cfg.ID == capID })
	if i < 0 || c.deleted {
		c.mu.Unlock()
		return fmt.Errorf("%w: %q", ErrUnknownCap, capID)
	}
	before := e.capSnapshot(p, c, c.caps()[i], now.UnixNano())
	change(c, i, now.UnixNano())
	snap := e.snapshotLocked(p, c)
	c.mu.Unlock()
	ev := Event{Type: event, Customer: snap, Time: now, CapID: capID}
	if after, ok := snap.Caps[capID]; ok {
		ev.Cap = &after
	} else {
		ev.Cap = &before
	}
	e.emit(ev)
	return nil
}

// capSnapshot reports a cap at now. Caller holds c.mu.
func (e *Engine) capSnapshot(p *policies.Policy, c *customer, sc *spendCap, now int64) Cap {
	st := sc.at(now, c.location(p), c.anchor())
	out := sc.cfg
	out.Credit = sc.credit
	out.Value = num.Float64(sc.ceiling)
	out.MeterValue = num.Float64(st.meter)
	out.Started = time.Unix(0, st.started).UTC()
	out.LastReset = time.Unix(0, st.lastReset).UTC()
	out.Created = time.Unix(0, sc.createdOn).UTC()
	if sc.expiresOn != 0 {
		out.ExpiresAt = time.Unix(0, sc.expiresOn).UTC()
	}
	out.exact = &capExact{value: sc.ceiling, meter: st.meter}
	return out
}

// unbounded reports a stairstep inverse's "no ceiling" answer. Values with fewer than
// 16 integer digits are below it, which spares the decimal library's slow path for
// comparing numbers of very different scales.
func unbounded(v num.Dec) bool {
	if v.Prec()-v.Scale() < 16 {
		return false
	}
	return v.Cmp(unboundedQuantity) >= 0
}
