package enforcement

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/period"
	"github.com/limitr/limitr/internal/policies"
	"github.com/limitr/limitr/internal/quantity"
)

// SetCustomer replaces a customer's whole state with a saved snapshot (from Customer,
// Customers or their JSON form), creating the customer if needed. Nothing is lost in
// a save/restore round trip: meters, holds, governor state, overrides, grants and caps
// come back with their exact values.
func (e *Engine) SetCustomer(ctx context.Context, snap *Customer, events bool) error {
	if snap == nil {
		return fmt.Errorf("%w: nil customer", ErrInvalidCustomer)
	}
	p := e.policy.Load()
	now := e.now()
	state, err := e.restoreState(p, snap, now)
	if err != nil {
		return fmt.Errorf("customer %q: %w", snap.ID, err)
	}
	c := e.byID(snap.ID)
	if c == nil {
		c = &customer{id: snap.ID, seq: e.customerSeq.Add(1)}
		c.info.Store(state.prof)
		c.adopt(state)
		if err := e.register(c, nil); err != nil {
			return err
		}
	} else {
		c.mu.Lock()
		old := c.info.Load()
		c.info.Store(state.prof)
		e.refsChanged()
		c.adopt(state)
		c.invalidateLocked()
		c.mu.Unlock()
		// Alt ids the snapshot no longer lists are released.
		for _, a := range old.altIDs {
			if !slices.Contains(snap.AltIDs, a) {
				s := e.shardOf(e.hashID(a))
				s.mu.Lock()
				if s.byAlt[a] == c {
					delete(s.byAlt, a)
				}
				s.mu.Unlock()
			}
		}
		np := c.info.Load().clone()
		np.altIDs = nil
		c.info.Store(e.intern(np))
		e.refsChanged()
	}
	if err := e.addAltIDs(c, snap.AltIDs); err != nil {
		return err
	}
	if events {
		e.emit(Event{Type: EventCustomerSet, Customer: e.snapshot(p, c), Time: now})
	}
	return nil
}

// LoadCustomers restores many customers, reporting every one that failed.
func (e *Engine) LoadCustomers(ctx context.Context, snaps []*Customer) error {
	var errs []error
	for _, s := range snaps {
		if err := e.SetCustomer(ctx, s, false); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// adopt takes a restored state as the customer's own. Caller holds c.mu, or c is not
// registered yet.
func (c *customer) adopt(state *restored) {
	c.created = state.created
	c.meters = state.meters
	if c.x != nil || state.overrides != nil || state.grants != nil || state.caps != nil || state.voucher != nil {
		x := c.extras()
		x.overrides, x.grants, x.caps, x.voucher = state.overrides, state.grants, state.caps, state.voucher
	}
	c.capCount.Store(int32(len(c.caps())))
}

type restored struct {
	prof      *profile
	created   time.Time
	meters    []meter
	overrides map[string]*override
	grants    []*grant
	caps      []*spendCap
	voucher   *voucherState
}

func (e *Engine) restoreState(p *policies.Policy, snap *Customer, now time.Time) (*restored, error) {
	spec := CustomerSpec{ID: snap.ID, Refs: snap.Refs, AltIDs: snap.AltIDs}
	if snap.Type != "" {
		spec.Type = &snap.Type
	}
	if snap.Timezone != "" {
		spec.Timezone = &snap.Timezone
	}
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	prof := &profile{profileData: profileData{plan: snap.Plan, typ: snap.Type, label: snap.Label, refs: slices.Clone(snap.Refs),
		altIDs: nil, metadata: maps.Clone(snap.Metadata), tz: snap.Timezone, anchor: snap.BillingAnchor}}
	if prof.typ == "" {
		prof.typ = "user"
	}
	if prof.label == "" {
		prof.label = "User"
	}
	if prof.tz != "" {
		prof.loc, _ = time.LoadLocation(prof.tz)
	}
	created := snap.Created
	if created.IsZero() {
		created = now
	}
	prof.dropDefaultAnchor(created) // a zero anchor is the creation time already
	r := &restored{prof: e.intern(prof), created: created}
	v := snap.Voucher
	if v == nil {
		var err error
		if v, err = VoucherFromMetadata(snap.Metadata); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidCustomer, err)
		}
	}
	if v != nil {
		st, err := v.state()
		if err != nil {
			return nil, fmt.Errorf("%w: voucher: %w", ErrInvalidCustomer, err)
		}
		r.voucher = st
	}
	for _, name := range sortedKeys(snap.Meters) {
		sm := snap.Meters[name]
		m := meter{key: e.meterKey(name, sm.Credit), started: sm.Started.UnixNano()}
		if sm.Started.IsZero() {
			m.started = now.UnixNano()
		}
		x := sm.exact
		if x == nil {
			x = &meterExact{}
			var err error
			if x.value, err = num.FromFloat64(sm.Value); err != nil {
				return nil, fmt.Errorf("%w: meters.%s.value: %w", ErrInvalidCustomer, name, err)
			}
			if x.overhead, err = num.FromFloat64(sm.Overhead); err != nil {
				return nil, fmt.Errorf("%w: meters.%s.overhead: %w", ErrInvalidCustomer, name, err)
			}
			x.grantCovered, _ = num.FromFloat64(sm.GrantCovered)
			x.topupRevenue, _ = num.FromFloat64(sm.TopupRevenue)
			if sm.GovernorTokens != nil {
				x.govTokens, _ = num.FromFloat64(*sm.GovernorTokens)
			}
		}
		m.value, m.overhead = x.value, x.overhead
		needExt := len(sm.Holds) > 0 || sm.GovernorTokens != nil || !x.grantCovered.IsZero() || !x.topupRevenue.IsZero() || len(sm.Estimates) > 0
		if needExt {
			ext := m.extension()
			for seg, est := range sm.Estimates {
				if ext.estimates == nil {
					ext.estimates = map[string]*estimator{}
				}
				ext.estimates[seg] = &estimator{N: est.Samples, Mean: est.Mean, Variance: est.Variance}
			}
			ext.grantCovered, ext.topupRevenue = x.grantCovered, x.topupRevenue
			if sm.GovernorTokens != nil {
				ext.govInit, ext.govTokens, ext.govLast = true, x.govTokens, sm.GovernorLastRefill.UnixNano()
			}
			for _, id := range sortedKeys(sm.Holds) {
				h := sm.Holds[id]
				v := num.Zero
				if h.exact != nil {
					v = *h.exact
				} else if d, err := num.FromFloat64(h.Amount); err == nil {
					v = d
				}
				ov, _ := num.FromFloat64(h.Overhead)
				ext.holds = append(ext.holds, hold{id: id, value: v, overhead: ov, expires: h.Expires.UnixNano(), basis: h.Basis, segment: h.Segment})
			}
		}
		r.meters = append(r.meters, m)
	}
	for ent, o := range snap.Overrides {
		if r.overrides == nil {
			r.overrides = map[string]*override{}
		}
		// Compiled on first use against whatever policy is then in force.
		r.overrides[ent] = &override{spec: o}
	}
	for _, id := range sortedKeys(snap.Grants) {
		g, err := e.restoreGrant(p, id, snap.Grants[id], now)
		if err != nil {
			return nil, err
		}
		r.grants = append(r.grants, g)
	}
	slices.SortStableFunc(r.grants, func(a, b *grant) int {
		switch {
		case a.createdOn < b.createdOn:
			return -1
		case a.createdOn > b.createdOn:
			return 1
		}
		return strings.Compare(a.id, b.id)
	})
	for _, g := range r.grants {
		g.seq = e.grantSeq.Add(1)
	}
	for _, id := range sortedKeys(snap.Caps) {
		cfg := snap.Caps[id]
		cfg.ID = id
		sc, err := e.compileCap(p, cfg, now.UnixNano())
		if err != nil {
			return nil, fmt.Errorf("caps.%s: %w", id, err)
		}
		r.caps = append(r.caps, sc)
	}
	return r, nil
}

func (e *Engine) restoreGrant(p *policies.Policy, id string, sg Grant, now time.Time) (*grant, error) {
	if sg.g != nil && sg.g.id != "" {
		cp := *sg.g // an in-memory snapshot carries the engine's own copy
		return &cp, nil
	}
	g := &grant{id: id, topup: sg.Topup, included: sg.Included}
	if sg.g != nil {
		g.value, g.def.starting = sg.g.value, sg.g.def.starting
	} else {
		var err error
		if g.value, err = num.FromFloat64(sg.Value); err != nil {
			return nil, fmt.Errorf("%w: grants.%s.value: %w", ErrInvalidCustomer, id, err)
		}
		if g.def.starting, err = num.FromFloat64(sg.StartingValue); err != nil {
			return nil, fmt.Errorf("%w: grants.%s.starting_value: %w", ErrInvalidCustomer, id, err)
		}
	}
	if sg.Credit == "" || (p.Credit(sg.Credit) == nil && sg.Credit != "rune" && sg.Credit != "usd") {
		return nil, fmt.Errorf("%w: grants.%s.credit: unknown credit %q", ErrInvalidCustomer, id, sg.Credit)
	}
	g.def.credit = sg.Credit
	g.def.mode = sg.ResetMode
	if g.def.mode == "" {
		g.def.mode = policies.ResetHard
	}
	g.def.catchupCap = sg.ResetCatchupCap
	switch {
	case sg.ResetSch != "":
		s, err := period.ParseSchedule(sg.ResetSch)
		if err != nil {
			return nil, fmt.Errorf("%w: grants.%s.reset_sch: %w", ErrInvalidCustomer, id, err)
		}
		g.def.reset.Schedule = s
	case sg.ResetInc != "":
		d, err := quantity.ParseDuration(sg.ResetInc)
		if err != nil {
			if d, err = time.ParseDuration(sg.ResetInc); err != nil {
				return nil, fmt.Errorf("%w: grants.%s.reset_inc: %q", ErrInvalidCustomer, id, sg.ResetInc)
			}
		}
		g.def.reset.Every = d
	case sg.Resets:
		g.def.reset.Every = 30 * 24 * time.Hour
	}
	dec := func(f *float64) *num.Dec {
		if f == nil {
			return nil
		}
		d, err := num.FromFloat64(*f)
		if err != nil {
			return nil
		}
		return &d
	}
	g.def.rolloverMin, g.def.rolloverMax = dec(sg.RolloverMin), dec(sg.RolloverMax)
	g.def.rolloverPct, g.def.maxBalance = dec(sg.RolloverPct), dec(sg.MaxBalance)
	if pr := dec(sg.Price); pr != nil {
		g.price, g.hasPrice = *pr, true
	}
	g.createdOn, g.grantedOn, g.lastReset = orNow(sg.Created, now), orNow(sg.GrantedOn, now), orNow(sg.LastReset, now)
	if !sg.ExpiresAt.IsZero() {
		g.expiresOn = sg.ExpiresAt.UnixNano()
	}
	return g, nil
}

func orNow(t, now time.Time) int64 {
	if t.IsZero() {
		return now.UnixNano()
	}
	return t.UnixNano()
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
