package limitr

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"time"

	"github.com/limitr/limitr/internal/wire"
)

// resyncParallel bounds the customer reads of a resync.
const resyncParallel = 8

// resync re-reads what a stream reset says this instance may have missed: the active
// policy (swapped in if it changed) and every customer it holds. A customer the
// server no longer has, or has created again (another customer under the id), is
// dropped here with its undrained usage; the next call for the id hydrates what the
// server has. Every other customer gets the server's record laid over it (see
// layOver), and its committed totals and grant draws are re-read on the sender, as
// after a batch, so no acknowledgement lands between the read and its application.
//
// It fails when the policy or a customer could not be read: the stream then
// reconnects from its old position and the server sends the reset again. A record
// that cannot be applied (a plan the policy lacks, an invalid override) is logged and
// skipped, as for a pushed change, since reading it again would not help.
func (c *cloud) resync(ctx context.Context) error {
	if _, err := c.fetchPolicy(ctx, false); err != nil {
		return fmt.Errorf("limitr: resync: fetching the policy: %w", err)
	}
	// Customers the server did not know may have been created since.
	c.hmu.Lock()
	clear(c.negative)
	clear(c.causes)
	c.hmu.Unlock()

	ids := c.eng.CustomerIDs()
	var (
		mu     sync.Mutex
		failed int
		first  error
		wg     sync.WaitGroup
	)
	sem := make(chan struct{}, resyncParallel)
loop:
	for _, id := range ids {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			break loop
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := c.resyncCustomer(ctx, id); err != nil {
				mu.Lock()
				failed++
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("limitr: resync: %w", err)
	}
	if first != nil {
		return fmt.Errorf("limitr: resync: %d of %d customers could not be read: %w", failed, len(ids), first)
	}
	c.log.Info("limitr: resynchronised after a stream reset", "customers", len(ids))
	return nil
}

// resyncCustomer re-reads one customer held here; it fails only when the server
// could not be asked.
func (c *cloud) resyncCustomer(ctx context.Context, id string) error {
	rctx, cancel := context.WithTimeout(ctx, c.cfg.requestLimit)
	defer cancel()
	st, rec, err := c.fetchState(rctx, id)
	if errors.Is(err, ErrUnknownCustomer) {
		c.dropLocal(ctx, id)
		return nil
	}
	if err != nil {
		return fmt.Errorf("customer %q: %w", id, err)
	}
	cur := c.local(id)
	if cur == nil || cur.ID != id {
		return nil // deleted here meanwhile
	}
	if rec.ID != cur.ID || recreated(cur.Created, rec.CreatedAt) {
		// The id names another customer now: the one held here was deleted.
		c.dropLocal(ctx, cur.ID)
		return nil
	}
	c.layOver(ctx, cur, rec, st)
	c.setRev(rec.ID, rec.Revision)
	c.requestRefresh(rec.ID)
	return nil
}

// recreated reports whether a customer held since held was created is another one
// than the server's, created at server. The server keeps microseconds.
func recreated(held, server time.Time) bool {
	if held.IsZero() || server.IsZero() {
		return false
	}
	d := held.Sub(server)
	return d >= time.Microsecond || d <= -time.Microsecond
}

// layOver makes a customer held here match the server's record: its profile and plan
// (as a pushed upsert does), exactly the record's live overrides, and a grant for each
// of the record's topups not held here. Meters and the balances of grants held are
// left to the refresh of committed totals and draws. Failures are logged.
func (c *cloud) layOver(ctx context.Context, cur *Customer, rec *wire.Customer, st *wire.CustomerState) {
	warn := func(what string, err error, args ...any) {
		c.log.Warn("limitr: resync: "+what, append([]any{"customer", cur.ID, "err", err}, args...)...)
	}
	if err := c.retryOnPolicyLag(ctx, func() error { return c.applyProfile(ctx, cur, rec) }); err != nil {
		warn("applying the profile failed", err)
	}
	live := c.liveOverrides(rec, time.Now())
	for ent, o := range live {
		if held, ok := cur.Overrides[ent]; ok && sameOverride(held, o) {
			continue
		}
		if err := c.eng.CreateCustomerOverride(ctx, cur.ID, ent, o); err != nil {
			warn("setting an override failed", err, "entitlement", ent)
		}
	}
	for ent := range cur.Overrides {
		if _, ok := live[ent]; ok {
			continue
		}
		if err := c.eng.RemoveCustomerOverride(ctx, cur.ID, ent); err != nil {
			warn("removing an override failed", err, "entitlement", ent)
		}
	}
	for _, t := range rec.Topups {
		if _, held := cur.Grants[t.GrantID]; held || t.GrantID == "" {
			continue
		}
		// New, or one that does not reset and was drained and dropped here: it starts
		// at its value less every draw of it, committed by the fleet or not yet
		// committed from here, and is not granted when nothing is left.
		if err := c.grantDrawn(ctx, cur.ID, t, remoteDraws(st.GrantDraws)); err != nil {
			warn("granting a topup failed", err, "topup", t.Topup, "grant", t.GrantID)
		}
	}
}

func sameOverride(a, b Override) bool {
	a.ExpiresAt, b.ExpiresAt = a.ExpiresAt.UTC(), b.ExpiresAt.UTC()
	return reflect.DeepEqual(a, b)
}

// dropLocal deletes a customer held here, discarding its undrained usage, and forgets
// what was tracked for it.
func (c *cloud) dropLocal(ctx context.Context, id string) {
	if err := c.eng.DeleteCustomer(ctx, id); err != nil && !errors.Is(err, ErrUnknownCustomer) {
		c.log.Warn("limitr: deleting a customer locally failed", "customer", id, "err", err)
	}
	c.hmu.Lock()
	delete(c.revs, id)
	delete(c.lastRefresh, id)
	delete(c.refreshWant, id)
	c.hmu.Unlock()
}

// requestRefresh asks the sender to re-read customers' committed totals and grant
// draws before its next batch.
func (c *cloud) requestRefresh(ids ...string) {
	c.hmu.Lock()
	for _, id := range ids {
		c.refreshWant[id] = struct{}{}
	}
	c.hmu.Unlock()
	c.kick()
}

// refreshRequested runs the refreshes requestRefresh asked for. Only the sender calls
// it, between batches. While usage is spilled it waits, as the refresh after a batch
// does: spilled usage is outside the in-flight accounting a refresh relies on.
func (c *cloud) refreshRequested() {
	c.umu.Lock()
	spilled := c.spilledN > 0
	c.umu.Unlock()
	if spilled {
		return
	}
	c.hmu.Lock()
	if len(c.refreshWant) == 0 {
		c.hmu.Unlock()
		return
	}
	now := time.Now()
	ids := make([]string, 0, len(c.refreshWant))
	for id := range c.refreshWant {
		ids = append(ids, id)
		c.lastRefresh[id] = now
	}
	clear(c.refreshWant)
	c.hmu.Unlock()
	c.refreshEach(ids)
}
