package limitr

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/limitr/limitr/internal/enforcement"
	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/wire"
)

// Hydration of customers this instance does not hold, and the fleet refresh of
// committed totals after acknowledged batches.

type flight struct {
	done chan struct{}
	ok   bool
}

const maxRefDepth = 8

// hydrate loads a customer this instance does not hold from the server. Concurrent
// callers for one id share one request; a customer the server does not know (or a
// failed request) is not asked about again before the negative TTL.
func (c *cloud) hydrate(ctx context.Context, id string) bool { return c.hydrateDepth(ctx, id, 0) }

func (c *cloud) hydrateDepth(ctx context.Context, id string, depth int) bool {
	now := time.Now()
	c.hmu.Lock()
	if exp, ok := c.negative[id]; ok {
		if now.Before(exp) {
			c.hmu.Unlock()
			return false
		}
		delete(c.negative, id)
	}
	if f := c.flights[id]; f != nil {
		c.hmu.Unlock()
		select {
		case <-f.done:
			return f.ok
		case <-ctx.Done():
			return false
		}
	}
	f := &flight{done: make(chan struct{})}
	c.flights[id] = f
	c.hmu.Unlock()
	// The load runs on its own, bounded by Cloud's lifetime and the request limit, so
	// every caller (the first included) waits only as long as its own context allows.
	go func() {
		ok, cause := c.loadCustomer(id, depth)
		c.hmu.Lock()
		delete(c.flights, id)
		if c.causes == nil {
			c.causes = map[string]error{}
		}
		delete(c.causes, id)
		if !ok {
			if cause != nil {
				c.causes[id] = cause
			}
			if len(c.negative) > 10_000 {
				for k, exp := range c.negative {
					if now.After(exp) {
						delete(c.negative, k)
						delete(c.causes, k)
					}
				}
			}
			c.negative[id] = time.Now().Add(c.cfg.negativeTTL)
		}
		f.ok = ok
		c.hmu.Unlock()
		close(f.done)
	}()
	select {
	case <-f.done:
		return f.ok
	case <-ctx.Done():
		return false
	}
}

// fetchState reads a customer's record, committed meter totals and grant draws.
func (c *cloud) fetchState(ctx context.Context, id string) (*wire.CustomerState, *wire.Customer, error) {
	_, data, err := c.call(ctx, http.MethodGet, wire.PathCustomer+url.PathEscape(id)+"/state", nil)
	if err != nil {
		return nil, nil, mapAPIError(err, "")
	}
	var st wire.CustomerState
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, nil, fmt.Errorf("limitr: unreadable customer state: %w", err)
	}
	rec, err := decodeCustomer(st.Customer)
	if err != nil {
		return nil, nil, err
	}
	return &st, rec, nil
}

// unavailable is why id's last hydration failed when the control plane could not
// answer, or nil when it answered that the customer does not exist.
func (c *cloud) unavailable(id string) error {
	c.hmu.Lock()
	defer c.hmu.Unlock()
	return c.causes[id]
}

// loadCustomer hydrates one customer (and the refs it names that are missing here).
// The error is why the control plane could not answer; (false, nil) means it does not
// know the customer.
func (c *cloud) loadCustomer(id string, depth int) (bool, error) {
	ctx, cancel := context.WithTimeout(c.sendCtx, c.cfg.hydrateLimit)
	defer cancel()
	st, rec, err := c.fetchState(ctx, id)
	if err != nil {
		if !errors.Is(err, ErrUnknownCustomer) {
			c.log.Warn("limitr: hydrating a customer failed", "customer", id, "err", err)
			return false, err
		}
		return false, nil
	}
	if c.local(rec.ID) != nil || c.local(id) != nil {
		return true, nil // created here meanwhile
	}
	snap, err := c.snapshot(rec, st)
	inserted := false
	if err == nil {
		// Insert only: a customer that appeared here meanwhile is never overwritten.
		inserted, err = c.eng.InsertCustomer(ctx, snap)
	}
	if err != nil {
		c.log.Warn("limitr: applying a hydrated customer failed", "customer", id, "err", err)
		return c.local(id) != nil, nil
	}
	if inserted {
		// Included grants exist now (deterministically); every grant takes off what
		// the fleet has drawn from it in its current period.
		if err := c.eng.ApplyGrantDraws(ctx, rec.ID, remoteDraws(st.GrantDraws)); err != nil && !errors.Is(err, ErrUnknownCustomer) {
			c.log.Warn("limitr: applying committed grant draws failed", "customer", rec.ID, "err", err)
		}
		c.applyRecordVoucher(ctx, rec.ID, rec)
		c.applyRecordCaps(ctx, rec.ID, rec)
		c.setRev(rec.ID, rec.Revision)
		c.hmu.Lock()
		c.lastRefresh[rec.ID] = time.Now()
		c.hmu.Unlock()
	}
	if depth < maxRefDepth {
		for _, r := range rec.Refs {
			if c.local(r) == nil {
				c.hydrateDepth(ctx, r, depth+1)
			}
		}
	}
	return true, nil
}

// liveOverrides decodes a record's overrides that have not expired at now; an
// unreadable one is logged and skipped.
func (c *cloud) liveOverrides(rec *wire.Customer, now time.Time) map[string]Override {
	live := make(map[string]Override, len(rec.Overrides))
	for ent, raw := range rec.Overrides {
		var o Override
		if err := json.Unmarshal(raw, &o); err != nil {
			c.log.Warn("limitr: skipping an unreadable override", "customer", rec.ID, "entitlement", ent, "err", err)
			continue
		}
		if o.ExpiresAt.IsZero() || now.Before(o.ExpiresAt) {
			live[ent] = o
		}
	}
	return live
}

// snapshot builds the engine's customer from a server record and meter totals: the
// profile, overrides, purchased topups as grants (under the server's grant ids; one
// that does not reset less its committed draws) and each meter at its committed total
// for its latest period.
func (c *cloud) snapshot(rec *wire.Customer, st *wire.CustomerState) (*Customer, error) {
	p := c.eng.Policy()
	now := time.Now()
	snap := &Customer{ID: rec.ID, Plan: rec.Plan, AltIDs: slices.Clone(rec.AltIDs), Refs: slices.Clone(rec.Refs),
		Type: rec.Type, Label: rec.Label, Metadata: customerMetadata(rec), Timezone: rec.Timezone,
		BillingAnchor: rec.BillingAnchor, Created: rec.CreatedAt,
		Meters: map[string]Meter{}, Overrides: c.liveOverrides(rec, now), Grants: map[string]Grant{}}
	for ent, totals := range st.Meters {
		var latest *wire.MeterTotal
		for i := range totals {
			if latest == nil || totals[i].PeriodStart.After(latest.PeriodStart) {
				latest = &totals[i]
			}
		}
		if latest == nil {
			continue
		}
		m, err := meterFromTotal(*latest)
		if err != nil {
			return nil, fmt.Errorf("meters.%s: %w", ent, err)
		}
		snap.Meters[ent] = m
	}
	plan := p.Plan(rec.ResolvedPlan)
	if plan != nil && !rec.CreatedAt.IsZero() {
		// Meters without committed usage start where the server created the customer,
		// so every instance of the fleet cuts the same periods.
		for _, ce := range plan.Limited {
			if _, ok := snap.Meters[ce.Name]; !ok && (ce.Scope == "" || ce.Scope == rec.Type) {
				snap.Meters[ce.Name] = meterAt(ce.Limit.Credit.Name, rec.CreatedAt)
			}
		}
	}
	for _, t := range rec.Topups {
		if t.GrantID == "" || (p.Credit(t.Credit) == nil && t.Credit != "rune" && t.Credit != "usd") {
			c.log.Warn("limitr: skipping a topup the enforced policy cannot hold", "customer", rec.ID, "topup", t.Topup, "credit", t.Credit)
			continue
		}
		value := t.Value
		if plan != nil {
			// A purchased grant that does not reset has one period: all its committed
			// draws come off. Resetting grants are settled by ApplyGrantDraws.
			if ct := plan.CompiledTopup(t.Topup); ct != nil && ct.Reset.IsZero() {
				value = remainingAfterDraws(t.Value, t.GrantID, st.GrantDraws)
			}
		}
		g := map[string]any{"id": t.GrantID, "credit": t.Credit, "topup": t.Topup,
			"value": value, "starting_value": t.Value}
		if at := t.AppliedAt; !at.IsZero() {
			ms := at.UnixMilli()
			g["created_on"], g["granted_on"], g["last_reset"] = ms, ms, ms
		}
		if plan != nil {
			if ct := plan.CompiledTopup(t.Topup); ct != nil && ct.ExpiresAfter > 0 && !t.AppliedAt.IsZero() {
				exp := t.AppliedAt.Add(ct.ExpiresAfter)
				if !exp.After(now) {
					continue
				}
				g["expires_on"] = exp.UnixMilli()
			}
		}
		if t.Price != "" {
			if f, err := t.Price.Float64(); err == nil {
				g["price"] = f
			}
		}
		data, _ := json.Marshal(g)
		var gr Grant
		if err := json.Unmarshal(data, &gr); err != nil {
			return nil, fmt.Errorf("topups.%s: %w", t.GrantID, err)
		}
		snap.Grants[t.GrantID] = gr
	}
	return snap, nil
}

// remainingAfterDraws is a topup's value less every committed draw of its grant, at
// least zero (the value unchanged when anything is unreadable).
func remainingAfterDraws(value json.Number, grantID string, draws []wire.GrantDraw) json.Number {
	v, err := num.Parse(value.String())
	if err != nil {
		return value
	}
	var calc num.Calc
	for _, d := range draws {
		if d.GrantID != grantID {
			continue
		}
		u, err := parseDec(d.Units)
		if err != nil {
			return value
		}
		v = calc.Sub(v, u)
	}
	if calc.Err != nil {
		return value
	}
	return json.Number(num.Max(num.Zero, v).String())
}

// remoteDraws is the engine's form of a customer's committed grant draws.
func remoteDraws(draws []wire.GrantDraw) []enforcement.RemoteGrantDraw {
	out := make([]enforcement.RemoteGrantDraw, 0, len(draws))
	for _, d := range draws {
		u, err := parseDec(d.Units)
		if err != nil || d.GrantID == "" {
			continue
		}
		out = append(out, enforcement.RemoteGrantDraw{GrantID: d.GrantID, PeriodStart: d.PeriodStart, Units: u})
	}
	return out
}

// meterAt is an empty meter starting at start.
func meterAt(credit string, start time.Time) Meter {
	var m Meter
	_ = json.Unmarshal([]byte(`{"value":0,"overhead":0}`), &m)
	m.Credit, m.Started = credit, start.UTC()
	return m
}

// meterFromTotal builds an exact meter (through its JSON form, which keeps decimals
// exact) starting at the total's period start to the nanosecond.
func meterFromTotal(t wire.MeterTotal) (Meter, error) {
	units, err := parseDec(t.Units)
	if err != nil {
		return Meter{}, fmt.Errorf("units: %w", err)
	}
	overhead, err := parseDec(t.Overhead)
	if err != nil {
		return Meter{}, fmt.Errorf("overhead: %w", err)
	}
	credit, _ := json.Marshal(t.Credit)
	var m Meter
	if err := json.Unmarshal(fmt.Appendf(nil, `{"credit":%s,"value":%s,"overhead":%s}`, credit, units.String(), overhead.String()), &m); err != nil {
		return Meter{}, err
	}
	m.Started = t.PeriodStart
	return m, nil
}

func parseDec(s string) (num.Dec, error) {
	if s == "" {
		return num.Zero, nil
	}
	return num.Parse(s)
}

// ---- fleet refresh ----

// refreshCustomers re-reads the committed totals and grant draws of customers this
// instance just sent usage for, at most once per refresh interval each and a bounded number per round. It
// runs on the sender between batches, so no acknowledgement lands between a read and
// its application (which would count that batch twice or not at all).
func (c *cloud) refreshCustomers(ids []string) {
	const perRound = 256
	now := time.Now()
	var due []string
	c.hmu.Lock()
	for _, id := range ids {
		if len(due) >= perRound {
			break
		}
		if t, ok := c.lastRefresh[id]; ok && now.Sub(t) < c.cfg.refreshInterval {
			continue
		}
		c.lastRefresh[id] = now
		due = append(due, id)
	}
	if len(c.lastRefresh) > 100_000 {
		for k, t := range c.lastRefresh {
			if now.Sub(t) > c.cfg.refreshInterval {
				delete(c.lastRefresh, k)
			}
		}
	}
	c.hmu.Unlock()
	c.refreshEach(due)
}

// refreshEach re-reads and applies the committed totals and grant draws of customers,
// a few at a time.
// Only the sender calls it, between batches.
func (c *cloud) refreshEach(due []string) {
	const parallel = 8
	if len(due) == 0 {
		return
	}
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for _, id := range due {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			c.refreshTotals(id)
		}()
	}
	wg.Wait()
}

func (c *cloud) refreshTotals(id string) {
	ctx, cancel := context.WithTimeout(c.sendCtx, c.cfg.requestLimit)
	defer cancel()
	st, rec, err := c.fetchState(ctx, id)
	if err != nil {
		c.log.Debug("limitr: refreshing committed totals failed", "customer", id, "err", err)
		return
	}
	local := c.local(id)
	if local == nil {
		return
	}
	var totals []enforcement.RemoteTotal
	for ent, ts := range st.Meters {
		lm, has := local.Meters[ent]
		for _, t := range ts {
			units, err1 := parseDec(t.Units)
			overhead, err2 := parseDec(t.Overhead)
			if err1 != nil || err2 != nil {
				continue
			}
			start := t.PeriodStart
			// The server keeps microseconds (Postgres rounds); a meter started here keeps
			// nanoseconds.
			if has && !start.Equal(lm.Started) && (start.Equal(lm.Started.Round(time.Microsecond)) || start.Equal(lm.Started.Truncate(time.Microsecond))) {
				start = lm.Started
			}
			totals = append(totals, enforcement.RemoteTotal{Entitlement: ent, Credit: t.Credit, PeriodStart: start, Units: units, Overhead: overhead})
		}
	}
	if err := c.eng.ApplyRemoteTotals(ctx, id, totals); err != nil && !errors.Is(err, ErrUnknownCustomer) {
		c.log.Warn("limitr: applying committed totals failed", "customer", id, "err", err)
	}
	if err := c.eng.ApplyGrantDraws(ctx, id, remoteDraws(st.GrantDraws)); err != nil && !errors.Is(err, ErrUnknownCustomer) {
		c.log.Warn("limitr: applying committed grant draws failed", "customer", id, "err", err)
	}
	c.applyRecordVoucher(ctx, id, rec)
	c.applyRecordCaps(ctx, id, rec)
}
