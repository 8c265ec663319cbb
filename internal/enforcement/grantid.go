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
	return e.GrantTopupDrawn(ctx, id, topup, grantID, price, grantedAt, nil)
}

// GrantTopupDrawn is GrantTopupWithID for a grant that may have been drawn from
// already: by the fleet (draws, the server's committed draws, matched to the grant's
// current period as ApplyGrantDraws does) or by this instance (its pending and
// in-flight draws, say of a grant it drained and dropped). The balance starts at the
// topup's value less both, in one step, so no call ever sees the undrawn value. A
// grant that does not reset and has nothing left is not granted (false).
func (e *Engine) GrantTopupDrawn(ctx context.Context, id, topup, grantID string, price *num.Dec, grantedAt time.Time, draws []RemoteGrantDraw) (bool, error) {
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
	for _, g := range c.grants() {
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
	drawn, _, err := e.drawnLocked(p, c, g, draws)
	if err != nil {
		c.mu.Unlock()
		return false, err
	}
	if drawn.IsPos() {
		var calc num.Calc
		g.value = num.Max(num.Zero, calc.Sub(g.value, drawn))
		if calc.Err != nil {
			c.mu.Unlock()
			return false, calc.Err
		}
		if !g.value.IsPos() && g.def.reset.IsZero() {
			c.mu.Unlock()
			return false, nil // drained for good, as drawGrants would have left it
		}
	}
	x := c.extras()
	x.grants = append(x.grants, g)
	snap := e.snapshotLocked(p, c)
	c.mu.Unlock()
	e.emit(Event{Type: EventCustomerTopupGranted, Customer: snap, Plan: plan.Name, Time: now,
		Topup: &TopupGranted{Topup: t.Name, Plan: plan.Name, Grant: g.id}, topupDef: t})
	return true, nil
}

// drawnLocked is what has been drawn from a grant of c in its current period: the
// committed draws that match it (to the microsecond, as the server keeps times) and
// this instance's draws not committed yet. matched reports whether any committed draw
// matched. Caller holds c.mu.
func (e *Engine) drawnLocked(p *policies.Policy, c *customer, g *grant, draws []RemoteGrantDraw) (drawn num.Dec, matched bool, err error) {
	start := g.periodStart(c.location(p), c.anchor())
	var calc num.Calc
	drawn = num.Zero
	for _, d := range draws {
		if diff := d.PeriodStart.UnixNano() - start; d.GrantID == g.id && diff > -int64(time.Microsecond) && diff < int64(time.Microsecond) {
			drawn, matched = calc.Add(drawn, d.Units), true
		}
	}
	if e.usage != nil {
		e.usage.mu.Lock()
		drawn = calc.Add(drawn, e.usage.localDrawn(grantDrawKey(c, g.id, start)))
		e.usage.mu.Unlock()
	}
	return drawn, matched, calc.Err
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
	c.adopt(state)
	if err := e.register(c, nil); err != nil {
		if e.lookup(snap.ID) != nil {
			return false, nil
		}
		return false, err
	}
	return true, e.addAltIDs(c, snap.AltIDs)
}
