package enforcement

import (
	"context"
	"fmt"
	"time"

	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/policies"
)

// GrantTopupWithID grants a topup of the customer's plan, as ApplyCustomerTopup does,
// under a grant id chosen elsewhere (the control plane's, so every SDK instance holds
// the same grant), dated grantedAt (zero: now) and priced at price (nil: the topup's
// price). Meters and other grants are untouched. It reports false and changes nothing
// when the customer already holds a grant with that id, or when the grant would
// already have expired: applying the same topup twice is harmless.
func (e *Engine) GrantTopupWithID(ctx context.Context, id, topup, grantID string, price *num.Dec, grantedAt time.Time) (bool, error) {
	if grantID == "" {
		return false, fmt.Errorf("%w: empty grant id", ErrInvalidCustomer)
	}
	p := e.policy.Load()
	c := e.lookup(id)
	if c == nil {
		return false, fmt.Errorf("%w: %q", ErrUnknownCustomer, id)
	}
	now := e.now()
	at := grantedAt
	if at.IsZero() {
		at = now
	}
	c.mu.Lock()
	if c.deleted {
		c.mu.Unlock()
		return false, fmt.Errorf("%w: %q", ErrUnknownCustomer, id)
	}
	for _, g := range c.grants {
		if g.id == grantID {
			c.mu.Unlock()
			return false, nil
		}
	}
	plan := c.planLocked(e, p)
	var t *policies.CompiledTopup
	if plan != nil {
		t = plan.CompiledTopup(topup)
	}
	if t == nil {
		c.mu.Unlock()
		return false, fmt.Errorf("%w: %q is not a topup of the customer's plan", ErrUnknownTopup, topup)
	}
	e.syncIncludedLocked(p, c, now.UnixNano())
	g := e.newGrant(t, false, at.UnixNano())
	g.id = grantID
	if price != nil {
		g.price, g.hasPrice = *price, true
	}
	if g.expiresOn != 0 && g.expiresOn <= now.UnixNano() {
		c.mu.Unlock()
		return false, nil
	}
	c.grants = append(c.grants, g)
	snap := e.snapshotLocked(p, c)
	c.mu.Unlock()
	e.emit(Event{Type: EventCustomerTopupGranted, Customer: snap, Plan: plan.Name, Time: now,
		Topup: &TopupGranted{Topup: t.Name, Plan: plan.Name, Grant: g.id}, topupDef: t})
	return true, nil
}

// InsertCustomer is SetCustomer for an id no customer holds yet (by id or alt id): it
// adds the customer from the snapshot and reports true, or reports false and changes
// nothing when the id is taken, so a restore can never overwrite a customer that
// appeared meanwhile (with its meters and undrained usage). No event is emitted.
func (e *Engine) InsertCustomer(ctx context.Context, snap *Customer) (bool, error) {
	if snap == nil {
		return false, fmt.Errorf("%w: nil customer", ErrInvalidCustomer)
	}
	if e.lookup(snap.ID) != nil {
		return false, nil
	}
	p := e.policy.Load()
	state, err := e.restoreState(p, snap, e.now())
	if err != nil {
		return false, fmt.Errorf("customer %q: %w", snap.ID, err)
	}
	c := &customer{id: snap.ID, seq: e.customerSeq.Add(1)}
	c.info.Store(state.prof)
	c.meters, c.overrides, c.grants, c.caps = state.meters, state.overrides, state.grants, state.caps
	c.capCount.Store(int32(len(c.caps)))
	if err := e.register(c, nil); err != nil {
		if e.lookup(snap.ID) != nil {
			return false, nil
		}
		return false, err
	}
	return true, e.addAltIDs(c, snap.AltIDs)
}
