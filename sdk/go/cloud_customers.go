package limitr

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/limitr/limitr/internal/enforcement"
	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/wire"
)

// customerMetadata is a record's metadata as a map (empty when absent or unreadable).
func customerMetadata(r *wire.Customer) map[string]any {
	if len(r.Metadata) == 0 {
		return map[string]any{}
	}
	var m map[string]any
	if json.Unmarshal(r.Metadata, &m) != nil || m == nil {
		return map[string]any{}
	}
	return m
}

// customerSpec is the engine's form of a record's profile.
func customerSpec(r *wire.Customer) enforcement.CustomerSpec {
	s := enforcement.CustomerSpec{ID: r.ID, Plan: r.Plan, Refs: slices.Clone(r.Refs), RefsSet: true,
		AltIDs: slices.Clone(r.AltIDs), Metadata: customerMetadata(r)}
	if r.Type != "" {
		t := r.Type
		s.Type = &t
	}
	l, tz := r.Label, r.Timezone
	s.Label, s.Timezone = &l, &tz
	if !r.BillingAnchor.IsZero() {
		a := r.BillingAnchor
		s.Anchor = &a
	}
	if !r.CreatedAt.IsZero() {
		created := r.CreatedAt
		s.Created = &created
	}
	return s
}

func decodeCustomer(data []byte) (*wire.Customer, error) {
	var rec wire.Customer
	if err := json.Unmarshal(data, &rec); err != nil {
		return nil, fmt.Errorf("limitr: unreadable customer record from the API: %w", err)
	}
	if rec.ID == "" {
		return nil, errors.New("limitr: customer record from the API without an id")
	}
	return &rec, nil
}

// ---- local state ----

func (c *cloud) local(id string) *Customer {
	s, err := c.eng.Customer(context.Background(), id)
	if err != nil {
		return nil
	}
	return s
}

// forget drops negative hydration results for ids the server now knows.
func (c *cloud) forget(ids ...string) {
	c.hmu.Lock()
	for _, id := range ids {
		delete(c.negative, id)
	}
	c.hmu.Unlock()
}

func (c *cloud) setRev(id string, rev int64) {
	c.hmu.Lock()
	if rev > c.revs[id] {
		c.revs[id] = rev
	}
	c.hmu.Unlock()
}

// ---- hydration ----

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
		Meters: map[string]Meter{}, Overrides: map[string]Override{}, Grants: map[string]Grant{}}
	for ent, raw := range rec.Overrides {
		var o Override
		if err := json.Unmarshal(raw, &o); err != nil {
			c.log.Warn("limitr: skipping an unreadable override", "customer", rec.ID, "entitlement", ent, "err", err)
			continue
		}
		if !o.ExpiresAt.IsZero() && !now.Before(o.ExpiresAt) {
			continue
		}
		snap.Overrides[ent] = o
	}
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
	st, _, err := c.fetchState(ctx, id)
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
}

// ---- change events ----

// applyChange applies a customer change from the push stream. Meters, grant balances
// and pending usage held here are kept: only the profile, plan, overrides and new
// grants change. A delete drops the customer with its undrained usage. Customers this
// instance does not hold are left to hydration.
func (c *cloud) applyChange(ctx context.Context, ch wire.CustomerChanged) {
	var rec *wire.Customer
	if len(ch.Customer) > 0 && string(ch.Customer) != "null" {
		r, err := decodeCustomer(ch.Customer)
		if err != nil {
			c.log.Warn("limitr: skipping a customer event", "customer", ch.ID, "err", err)
			return
		}
		rec = r
	}
	id := ch.ID
	if id == "" && rec != nil {
		id = rec.ID
	}
	if id == "" {
		return
	}
	c.hmu.Lock()
	stale := ch.Revision > 0 && ch.Revision <= c.revs[id]
	c.hmu.Unlock()
	if stale {
		return
	}
	if ch.Op == "delete" {
		c.dropLocal(ctx, id)
		return
	}
	cur := c.local(id)
	if cur == nil {
		ids := []string{id}
		if rec != nil {
			ids = append(ids, rec.AltIDs...)
		}
		c.forget(ids...)
		return
	}
	var err error
	switch ch.Op {
	case "plan":
		if ch.Plan != "" {
			err = c.eng.SetCustomerPlan(ctx, id, ch.Plan, ch.OverwriteMeters)
		}
	case "override":
		if ch.Removed {
			err = c.eng.RemoveCustomerOverride(ctx, id, ch.Entitlement)
		} else {
			var o Override
			if err = json.Unmarshal(ch.Override, &o); err == nil {
				if o.ExpiresAt.IsZero() || time.Now().Before(o.ExpiresAt) {
					err = c.eng.CreateCustomerOverride(ctx, id, ch.Entitlement, o)
				}
			}
		}
	case "topup":
		var t wire.CustomerTopup
		if err = json.Unmarshal(ch.Topup, &t); err == nil {
			err = c.grant(ctx, id, t)
		}
	default: // upsert
		if rec != nil {
			err = c.applyProfile(ctx, cur, rec)
		}
	}
	if err != nil {
		c.log.Warn("limitr: applying a customer change failed", "customer", id, "op", ch.Op, "err", err)
	}
	if ch.Revision > 0 {
		c.setRev(id, ch.Revision)
	}
}

// applyProfile lays a record's profile (and plan) over a customer held here, keeping
// its meters.
func (c *cloud) applyProfile(ctx context.Context, cur *Customer, rec *wire.Customer) error {
	if rec.Plan != "" && rec.Plan != cur.Plan {
		if err := c.eng.SetCustomerPlan(ctx, cur.ID, rec.Plan, false); err != nil {
			return err
		}
	}
	s := customerSpec(rec)
	s.ID = cur.ID
	_, err := c.eng.CreateCustomer(ctx, s)
	return err
}

func (c *cloud) grant(ctx context.Context, id string, t wire.CustomerTopup) error {
	return c.grantDrawn(ctx, id, t, nil)
}

// grantDrawn grants a topup less what has been drawn from it: the committed draws
// given, and this instance's own not yet committed (see GrantTopupDrawn).
func (c *cloud) grantDrawn(ctx context.Context, id string, t wire.CustomerTopup, draws []enforcement.RemoteGrantDraw) error {
	var price *num.Dec
	if t.Price != "" {
		d, err := num.Parse(t.Price.String())
		if err != nil {
			return fmt.Errorf("topup price: %w", err)
		}
		price = &d
	}
	_, err := c.eng.GrantTopupDrawn(ctx, id, t.Topup, t.GrantID, price, t.AppliedAt, draws)
	return err
}

// ---- customer operations ----

func (c *cloud) custPath(ctx context.Context, id, suffix string) (string, error) {
	env, err := c.environment(ctx)
	if err != nil {
		return "", err
	}
	p := "/v1/environments/" + url.PathEscape(env) + "/customers"
	if id != "" {
		p += "/" + url.PathEscape(id)
	}
	return p + suffix, nil
}

// mapAPIError makes an API refusal unwrap to the SDK error it means.
func mapAPIError(err error, op string) error {
	var ae *APIError
	if !errors.As(err, &ae) || ae.kind != nil {
		return err
	}
	switch ae.Status {
	case http.StatusNotFound:
		ae.kind = ErrUnknownCustomer
	case http.StatusConflict:
		if ae.field("alt_ids") != nil || ae.field("id") != nil {
			ae.kind = ErrAltIDTaken
		}
	case http.StatusBadRequest, http.StatusUnprocessableEntity:
		switch {
		case ae.field("plan") != nil:
			ae.kind = ErrUnknownPlan
		case ae.field("topup") != nil:
			ae.kind = ErrUnknownTopup
		case ae.field("entitlement") != nil:
			if strings.Contains(ae.field("entitlement").Message, "unknown entitlement") {
				ae.kind = ErrUnknownEntitlement
			} else {
				ae.kind = ErrNotEntitled
			}
		case op == "override":
			ae.kind = ErrInvalidOverride
		default:
			ae.kind = ErrInvalidCustomer
		}
	}
	return ae
}

// metadataJSON is a customer's metadata as a request carries it (nil: none given).
func metadataJSON(m map[string]any) json.RawMessage {
	if len(m) == 0 {
		return nil
	}
	data, err := json.Marshal(m)
	if err != nil {
		return nil // not JSON-encodable: the spec's validation refuses it first
	}
	return data
}

func anchorText(t *time.Time) *string {
	if t == nil || t.IsZero() {
		return nil
	}
	s := t.UTC().Format(time.RFC3339Nano)
	return &s
}

func (c *cloud) createCustomer(ctx context.Context, spec enforcement.CustomerSpec) (*Customer, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	path, err := c.custPath(ctx, "", "")
	if err != nil {
		return nil, err
	}
	body := wire.CreateCustomerRequest{ID: spec.ID, Plan: spec.Plan, Type: spec.Type, Label: spec.Label,
		AltIDs: spec.AltIDs, Metadata: metadataJSON(spec.Metadata), BillingAnchor: anchorText(spec.Anchor)}
	if spec.RefsSet {
		body.Refs = spec.Refs
	}
	if spec.Timezone != nil {
		body.Timezone = *spec.Timezone
	}
	_, data, err := c.call(ctx, http.MethodPost, path, body)
	fresh := true
	if ae := (*APIError)(nil); errors.As(err, &ae) && ae.Status == http.StatusConflict && ae.field("alt_ids") == nil && ae.field("id") == nil {
		// The customer exists: update it, as CreateCustomer does locally.
		data, err = c.updateCustomer(ctx, spec)
		fresh = false
	}
	if err != nil {
		return nil, mapAPIError(err, "customer")
	}
	rec, err := decodeCustomer(data)
	if err != nil {
		return nil, err
	}
	return c.applyRecord(ctx, rec, fresh)
}

// updateCustomer is CreateCustomer on an existing id: the profile fields the spec sets
// (PATCH), then the plan if it names one.
func (c *cloud) updateCustomer(ctx context.Context, spec enforcement.CustomerSpec) ([]byte, error) {
	path, err := c.custPath(ctx, spec.ID, "")
	if err != nil {
		return nil, err
	}
	_, data, err := c.call(ctx, http.MethodGet, path, nil)
	if err != nil {
		return nil, err
	}
	rec, err := decodeCustomer(data)
	if err != nil {
		return nil, err
	}
	for _, a := range spec.AltIDs {
		if a != rec.ID && !slices.Contains(rec.AltIDs, a) {
			return nil, fmt.Errorf("%w: alt_ids: the alt ids of an existing customer cannot be changed in cloud mode (%q)", ErrInvalidCustomer, a)
		}
	}
	body := wire.UpdateCustomerRequest{Type: spec.Type, Label: spec.Label, Metadata: metadataJSON(spec.Metadata),
		Timezone: spec.Timezone, BillingAnchor: anchorText(spec.Anchor)}
	if spec.RefsSet {
		refs := spec.Refs
		if refs == nil {
			refs = []string{}
		}
		body.Refs = &refs
	}
	if _, data, err = c.call(ctx, http.MethodPatch, path, body); err != nil {
		return nil, err
	}
	if spec.Plan != "" {
		if rec, err = decodeCustomer(data); err != nil {
			return nil, err
		}
		if rec.ResolvedPlan != spec.Plan || rec.Plan != spec.Plan {
			_, data, err = c.call(ctx, http.MethodPut, path+"/plan", wire.SetPlanRequest{Plan: spec.Plan})
		}
	}
	return data, err
}

// applyRecord applies a record the API returned for an operation made here. fresh means
// the API just created the customer.
func (c *cloud) applyRecord(ctx context.Context, rec *wire.Customer, fresh bool) (*Customer, error) {
	if cur := c.local(rec.ID); cur != nil {
		if err := c.retryOnPolicyLag(ctx, func() error { return c.applyProfile(ctx, cur, rec) }); err != nil {
			return nil, err
		}
		return c.eng.Customer(ctx, rec.ID)
	}
	c.forget(append([]string{rec.ID}, rec.AltIDs...)...)
	if fresh {
		var snap *Customer
		err := c.retryOnPolicyLag(ctx, func() (err error) {
			snap, err = c.eng.CreateCustomer(ctx, customerSpec(rec))
			return err
		})
		if err == nil {
			c.setRev(rec.ID, rec.Revision)
		}
		return snap, err
	}
	if !c.hydrate(ctx, rec.ID) {
		return nil, fmt.Errorf("%w: %q: applied by the API, but it could not be loaded here", ErrUnknownCustomer, rec.ID)
	}
	return c.eng.Customer(ctx, rec.ID)
}

// retryOnPolicyLag runs f again after fetching the policy when it failed because this
// instance has not seen the version the API validated against yet.
func (c *cloud) retryOnPolicyLag(ctx context.Context, f func() error) error {
	err := f()
	if errors.Is(err, ErrUnknownPlan) || errors.Is(err, ErrUnknownTopup) || errors.Is(err, ErrUnknownEntitlement) || errors.Is(err, ErrNotEntitled) {
		if changed, ferr := c.fetchPolicy(ctx, false); ferr == nil && changed {
			err = f()
		}
	}
	return err
}

// onLocal applies an operation the API confirmed to the customer held here; a customer
// not held here is hydrated instead (its state already includes the change).
func (c *cloud) onLocal(ctx context.Context, id string, f func(primary string) error) error {
	if cur := c.local(id); cur != nil {
		err := c.retryOnPolicyLag(ctx, func() error { return f(cur.ID) })
		if !errors.Is(err, ErrUnknownCustomer) {
			return err
		}
	}
	c.forget(id)
	if !c.hydrate(ctx, id) {
		return fmt.Errorf("%w: %q: applied by the API, but it could not be loaded here", ErrUnknownCustomer, id)
	}
	return nil
}

func (c *cloud) setCustomerPlan(ctx context.Context, id, plan string, overwrite bool) error {
	path, err := c.custPath(ctx, id, "/plan")
	if err != nil {
		return err
	}
	if _, _, err := c.call(ctx, http.MethodPut, path, wire.SetPlanRequest{Plan: plan, OverwriteMeters: overwrite}); err != nil {
		return mapAPIError(err, "plan")
	}
	return c.onLocal(ctx, id, func(primary string) error {
		return c.eng.SetCustomerPlan(ctx, primary, plan, overwrite)
	})
}

func (c *cloud) deleteCustomer(ctx context.Context, id string) error {
	path, err := c.custPath(ctx, id, "")
	if err != nil {
		return err
	}
	if _, _, err := c.call(ctx, http.MethodDelete, path, nil); err != nil {
		return mapAPIError(err, "customer")
	}
	if cur := c.local(id); cur != nil {
		c.dropLocal(ctx, cur.ID)
	}
	return nil
}

func (c *cloud) createOverride(ctx context.Context, id, ent string, o Override) error {
	path, err := c.custPath(ctx, id, "/overrides/"+url.PathEscape(ent))
	if err != nil {
		return err
	}
	body := wire.OverrideRequest{Value: wire.Quantity(o.Value), Credit: o.Credit, Mode: o.Mode, Increment: wire.Quantity(o.Increment),
		Minimum: wire.Quantity(o.Minimum), Resets: o.Resets, ResetInc: o.ResetInc, ResetSch: o.ResetSch, HardTrailing: o.HardTrailing,
		GrantsApply: o.GrantsApply}
	if !o.ExpiresAt.IsZero() {
		at := o.ExpiresAt.UTC().Format(time.RFC3339Nano)
		body.ExpiresAt = &at
	}
	if _, _, err := c.call(ctx, http.MethodPut, path, body); err != nil {
		return mapAPIError(err, "override")
	}
	return c.onLocal(ctx, id, func(string) error { return c.eng.CreateCustomerOverride(ctx, id, ent, o) })
}

func (c *cloud) removeOverride(ctx context.Context, id, ent string) error {
	path, err := c.custPath(ctx, id, "/overrides/"+url.PathEscape(ent))
	if err != nil {
		return err
	}
	if _, _, err := c.call(ctx, http.MethodDelete, path, nil); err != nil {
		var ae *APIError
		// Removing an override that does not exist is not an error, as locally.
		if !errors.As(err, &ae) || ae.Status != http.StatusNotFound || !strings.Contains(ae.Detail, "has no override") {
			return mapAPIError(err, "override")
		}
	}
	return c.onLocal(ctx, id, func(string) error { return c.eng.RemoveCustomerOverride(ctx, id, ent) })
}

func (c *cloud) applyTopup(ctx context.Context, id, topup string) error {
	path, err := c.custPath(ctx, id, "/topups")
	if err != nil {
		return err
	}
	_, data, err := c.call(ctx, http.MethodPost, path, wire.TopupRequest{Topup: topup})
	if err != nil {
		return mapAPIError(err, "topup")
	}
	var t wire.CustomerTopup
	if err := json.Unmarshal(data, &t); err != nil || t.GrantID == "" {
		return fmt.Errorf("limitr: unreadable topup record from the API: %v", err)
	}
	return c.onLocal(ctx, id, func(primary string) error { return c.grant(ctx, primary, t) })
}
