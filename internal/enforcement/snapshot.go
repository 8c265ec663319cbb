package enforcement

import (
	"encoding/json"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/policies"
)

// Customer is a point-in-time copy of a customer's whole state. Its JSON form uses
// the reference engine's field names, with times as Unix milliseconds; numbers are
// written with their exact decimal value, so save → JSON → restore loses nothing.
type Customer struct {
	ID            string              `json:"id"`
	Plan          string              `json:"plan"`
	AltIDs        []string            `json:"alt_ids"`
	Refs          []string            `json:"refs"`
	Type          string              `json:"type"`
	Label         string              `json:"label"`
	Meters        map[string]Meter    `json:"meters"`
	Overrides     map[string]Override `json:"overrides"`
	Grants        map[string]Grant    `json:"grants"`
	Caps          map[string]Cap      `json:"caps"`
	Metadata      map[string]any      `json:"metadata"`
	Timezone      string              `json:"timezone,omitempty"`
	BillingAnchor time.Time           `json:"-"`
	Created       time.Time           `json:"-"`
	// ResolvedPlan is the plan in force (through refs or the default); not persisted.
	ResolvedPlan string `json:"-"`
	// Voucher is the customer's voucher and its balance now. The JSON form keeps it
	// where Limitr does, in Metadata's limitr_voucher keys (balance debited).
	Voucher *Voucher `json:"-"`
}

// Meter is one entitlement's usage in its current period.
type Meter struct {
	Credit   string          `json:"credit"`
	Started  time.Time       `json:"-"`
	Value    float64         `json:"-"`
	Overhead float64         `json:"-"`
	Holds    map[string]Hold `json:"holds,omitempty"`
	// Governor state; GovernorTokens is nil until the governor first runs.
	GovernorTokens     *float64  `json:"-"`
	GovernorLastRefill time.Time `json:"-"`
	// GrantCovered is this period's overage paid by grants, in credit units;
	// TopupRevenue the topup revenue those draws recognised, in runes.
	GrantCovered float64 `json:"-"`
	TopupRevenue float64 `json:"-"`
	// Estimates are the settled-amount statistics reservations estimate from, by segment.
	Estimates map[string]Estimate `json:"estimates,omitempty"`

	exact *meterExact
}

// Estimate is the running mean and variance of settled reservation amounts.
type Estimate struct {
	Samples  int     `json:"n"`
	Mean     float64 `json:"mean"`
	Variance float64 `json:"variance"`
}

type meterExact struct {
	value, overhead, govTokens, grantCovered, topupRevenue num.Dec
}

// Grant is a balance of credit from a topup.
type Grant struct {
	ID              string    `json:"id"`
	Credit          string    `json:"credit"`
	Topup           string    `json:"topup,omitempty"`
	Included        bool      `json:"included,omitempty"`
	Value           float64   `json:"-"`
	StartingValue   float64   `json:"-"`
	Created         time.Time `json:"-"`
	GrantedOn       time.Time `json:"-"`
	LastReset       time.Time `json:"-"`
	ExpiresAt       time.Time `json:"-"`
	Resets          bool      `json:"resets,omitempty"`
	ResetInc        string    `json:"reset_inc,omitempty"`
	ResetSch        string    `json:"reset_sch,omitempty"`
	ResetMode       string    `json:"reset_mode,omitempty"`
	RolloverMin     *float64  `json:"rollover_min,omitempty"`
	RolloverMax     *float64  `json:"rollover_max,omitempty"`
	RolloverPct     *float64  `json:"rollover_pct,omitempty"`
	MaxBalance      *float64  `json:"max_balance,omitempty"`
	ResetCatchupCap int       `json:"reset_catchup_cap,omitempty"`
	Price           *float64  `json:"price,omitempty"`

	g *grant // the engine's copy, so an in-memory restore is exact
}

func msPtr(t time.Time) *int64 {
	if t.IsZero() {
		return nil
	}
	ms := t.UnixMilli()
	return &ms
}

func fromMs(ms *int64) time.Time {
	if ms == nil {
		return time.Time{}
	}
	return time.UnixMilli(*ms).UTC()
}

// exactNumber writes the decimal when the snapshot carries it, else the float.
func exactNumber(exact *num.Dec, f float64) json.Number {
	if exact != nil {
		return json.Number(exact.String())
	}
	d, err := num.FromFloat64(f)
	if err != nil {
		return json.Number("0")
	}
	return json.Number(d.String())
}

func parseNumber(n json.Number) (num.Dec, float64) {
	if n == "" {
		return num.Zero, 0
	}
	d, err := num.Parse(string(n))
	if err != nil {
		f, _ := n.Float64()
		d, _ = num.FromFloat64(f)
		return d, f
	}
	return d, num.Float64(d)
}

type customerJSON Customer

// MarshalJSON writes times as Unix milliseconds, as the reference engine does.
func (c Customer) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		customerJSON
		BillingAnchor *int64 `json:"billing_anchor,omitempty"`
		Created       *int64 `json:"created,omitempty"`
	}{customerJSON(c), msPtr(c.BillingAnchor), msPtr(c.Created)})
}

// UnmarshalJSON reads the form MarshalJSON writes.
func (c *Customer) UnmarshalJSON(b []byte) error {
	var aux struct {
		customerJSON
		BillingAnchor *int64 `json:"billing_anchor"`
		Created       *int64 `json:"created"`
	}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	*c = Customer(aux.customerJSON)
	c.BillingAnchor = fromMs(aux.BillingAnchor)
	c.Created = fromMs(aux.Created)
	return nil
}

type meterJSON Meter

type meterAux struct {
	meterJSON
	Started            *int64      `json:"started,omitempty"`
	Value              json.Number `json:"value"`
	Overhead           json.Number `json:"overhead"`
	GovernorTokens     json.Number `json:"governor_tokens,omitempty"`
	GovernorLastRefill *int64      `json:"governor_last_refill,omitempty"`
	GrantCovered       json.Number `json:"grant_covered,omitempty"`
	TopupRevenue       json.Number `json:"topup_revenue,omitempty"`
}

// MarshalJSON writes exact values and millisecond times.
func (m Meter) MarshalJSON() ([]byte, error) {
	x := m.exact
	if x == nil {
		x = &meterExact{}
		x.value, _ = num.FromFloat64(m.Value)
		x.overhead, _ = num.FromFloat64(m.Overhead)
		x.grantCovered, _ = num.FromFloat64(m.GrantCovered)
		x.topupRevenue, _ = num.FromFloat64(m.TopupRevenue)
		if m.GovernorTokens != nil {
			x.govTokens, _ = num.FromFloat64(*m.GovernorTokens)
		}
	}
	aux := meterAux{meterJSON: meterJSON(m), Started: msPtr(m.Started),
		Value: json.Number(x.value.String()), Overhead: json.Number(x.overhead.String())}
	if m.GovernorTokens != nil {
		aux.GovernorTokens = json.Number(x.govTokens.String())
		aux.GovernorLastRefill = msPtr(m.GovernorLastRefill)
	}
	if !x.grantCovered.IsZero() {
		aux.GrantCovered = json.Number(x.grantCovered.String())
	}
	if !x.topupRevenue.IsZero() {
		aux.TopupRevenue = json.Number(x.topupRevenue.String())
	}
	return json.Marshal(aux)
}

// UnmarshalJSON reads the form MarshalJSON writes, keeping exact values.
func (m *Meter) UnmarshalJSON(b []byte) error {
	var aux meterAux
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	*m = Meter(aux.meterJSON)
	x := &meterExact{}
	x.value, m.Value = parseNumber(aux.Value)
	x.overhead, m.Overhead = parseNumber(aux.Overhead)
	x.grantCovered, m.GrantCovered = parseNumber(aux.GrantCovered)
	x.topupRevenue, m.TopupRevenue = parseNumber(aux.TopupRevenue)
	if aux.GovernorTokens != "" {
		var f float64
		x.govTokens, f = parseNumber(aux.GovernorTokens)
		m.GovernorTokens = &f
		m.GovernorLastRefill = fromMs(aux.GovernorLastRefill)
	}
	m.Started = fromMs(aux.Started)
	m.exact = x
	return nil
}

type holdJSON Hold

// MarshalJSON writes the exact amount and the expiry in milliseconds.
func (h Hold) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		holdJSON
		Amount  json.Number `json:"value"`
		Expires *int64      `json:"expires,omitempty"`
	}{holdJSON(h), exactNumber(h.exact, h.Amount), msPtr(h.Expires)})
}

// UnmarshalJSON reads the form MarshalJSON writes.
func (h *Hold) UnmarshalJSON(b []byte) error {
	var aux struct {
		holdJSON
		Amount  json.Number `json:"value"`
		Expires *int64      `json:"expires"`
	}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	*h = Hold(aux.holdJSON)
	d, f := parseNumber(aux.Amount)
	h.Amount, h.exact = f, &d
	h.Expires = fromMs(aux.Expires)
	return nil
}

type grantJSON Grant

type grantAux struct {
	grantJSON
	Value         json.Number `json:"value"`
	StartingValue json.Number `json:"starting_value"`
	Created       *int64      `json:"created_on,omitempty"`
	GrantedOn     *int64      `json:"granted_on,omitempty"`
	LastReset     *int64      `json:"last_reset,omitempty"`
	ExpiresOn     *int64      `json:"expires_on,omitempty"`
}

// MarshalJSON writes the reference engine's grant record with exact balances.
func (g Grant) MarshalJSON() ([]byte, error) {
	aux := grantAux{grantJSON: grantJSON(g), Created: msPtr(g.Created), GrantedOn: msPtr(g.GrantedOn),
		LastReset: msPtr(g.LastReset), ExpiresOn: msPtr(g.ExpiresAt)}
	if g.g != nil {
		aux.Value, aux.StartingValue = json.Number(g.g.value.String()), json.Number(g.g.def.starting.String())
	} else {
		aux.Value, aux.StartingValue = exactNumber(nil, g.Value), exactNumber(nil, g.StartingValue)
	}
	return json.Marshal(aux)
}

// UnmarshalJSON reads the form MarshalJSON writes.
func (g *Grant) UnmarshalJSON(b []byte) error {
	var aux grantAux
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	*g = Grant(aux.grantJSON)
	_, g.Value = parseNumber(aux.Value)
	_, g.StartingValue = parseNumber(aux.StartingValue)
	g.Created, g.GrantedOn = fromMs(aux.Created), fromMs(aux.GrantedOn)
	g.LastReset, g.ExpiresAt = fromMs(aux.LastReset), fromMs(aux.ExpiresOn)
	g.g = &grant{}
	g.g.value, _ = parseNumber(aux.Value)
	g.g.def.starting, _ = parseNumber(aux.StartingValue)
	g.g.id = "" // marks a decoded record: restore rebuilds the grant from the fields
	return nil
}

type capJSON Cap

type capAux struct {
	capJSON
	Value      json.Number `json:"value"`
	MeterValue json.Number `json:"meter_value"`
	ExpiresOn  *int64      `json:"expires_on,omitempty"`
	Started    *int64      `json:"started,omitempty"`
	LastReset  *int64      `json:"last_reset,omitempty"`
	Created    *int64      `json:"created_on,omitempty"`
}

// MarshalJSON writes exact values and millisecond times.
func (cp Cap) MarshalJSON() ([]byte, error) {
	aux := capAux{capJSON: capJSON(cp), ExpiresOn: msPtr(cp.ExpiresAt), Started: msPtr(cp.Started),
		LastReset: msPtr(cp.LastReset), Created: msPtr(cp.Created)}
	if cp.exact != nil {
		aux.Value, aux.MeterValue = json.Number(cp.exact.value.String()), json.Number(cp.exact.meter.String())
	} else {
		aux.Value, aux.MeterValue = exactNumber(nil, cp.Value), exactNumber(nil, cp.MeterValue)
	}
	return json.Marshal(aux)
}

// UnmarshalJSON reads the form MarshalJSON writes.
func (cp *Cap) UnmarshalJSON(b []byte) error {
	var aux capAux
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	*cp = Cap(aux.capJSON)
	x := &capExact{}
	x.value, cp.Value = parseNumber(aux.Value)
	x.meter, cp.MeterValue = parseNumber(aux.MeterValue)
	cp.exact = x
	cp.ExpiresAt, cp.Started = fromMs(aux.ExpiresOn), fromMs(aux.Started)
	cp.LastReset, cp.Created = fromMs(aux.LastReset), fromMs(aux.Created)
	return nil
}

type overrideJSON Override

// MarshalJSON writes the expiry under the reference engine's name, in milliseconds.
func (o Override) MarshalJSON() ([]byte, error) {
	aux := struct {
		overrideJSON
		ExpiresAt time.Time `json:"expires_at,omitzero"`
		Expires   *int64    `json:"override_expires_on,omitempty"`
	}{overrideJSON: overrideJSON(o), Expires: msPtr(o.ExpiresAt)}
	return json.Marshal(aux)
}

// UnmarshalJSON reads the form MarshalJSON writes.
func (o *Override) UnmarshalJSON(b []byte) error {
	var aux struct {
		overrideJSON
		ExpiresAt time.Time `json:"expires_at,omitzero"`
		Expires   *int64    `json:"override_expires_on"`
	}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	*o = Override(aux.overrideJSON)
	o.ExpiresAt = fromMs(aux.Expires)
	return nil
}

func (e *Engine) snapshot(p *policies.Policy, c *customer) *Customer {
	c.mu.Lock()
	defer c.mu.Unlock()
	return e.snapshotLocked(p, c)
}

// snapshotLocked copies a customer's state; the caller holds c.mu. Meter values are
// reported for the current period and grants as they stand now, so a pending reset
// already shows.
func (e *Engine) snapshotLocked(p *policies.Policy, c *customer) *Customer {
	prof := c.info.Load()
	now := e.now()
	nowNs := now.UnixNano()
	s := &Customer{
		ID:            c.id,
		Plan:          prof.plan,
		AltIDs:        nonNil(slices.Clone(prof.altIDs)),
		Refs:          nonNil(slices.Clone(prof.refs)),
		Type:          prof.typ,
		Label:         prof.label,
		Meters:        make(map[string]Meter, len(c.meters)),
		Overrides:     make(map[string]Override, len(c.overrides())),
		Grants:        make(map[string]Grant, len(c.grants())),
		Caps:          make(map[string]Cap, len(c.caps())),
		Metadata:      metadataWithVoucher(maps.Clone(prof.metadata), c.voucher()),
		Timezone:      prof.tz,
		BillingAnchor: c.anchor(),
		Created:       c.created,
	}
	if c.voucher() != nil {
		s.Voucher = c.voucher().public()
	}
	if pl := e.resolvePlan(p, c.id, prof); pl != nil {
		s.ResolvedPlan = pl.Name
	}
	loc := c.location(p)
	for i := range c.meters {
		m := &c.meters[i]
		x := &meterExact{value: m.value, overhead: m.overhead}
		out := Meter{Credit: m.credit(), Started: m.startedAt()}
		pending := false
		if l := e.meterLimit(p, c, prof, m.ent(), now); l != nil && l.Resets() {
			if start := l.Reset.CurrentStart(out.Started, now, loc, s.BillingAnchor); !start.Equal(out.Started) {
				out.Started, x.value, x.overhead, pending = start, num.Zero, num.Zero, true
			}
		}
		if m.ext != nil {
			if len(m.ext.holds) > 0 {
				out.Holds = map[string]Hold{}
				for _, h := range m.ext.holds {
					if h.expires > nowNs {
						out.Holds[h.id] = holdOut(h, c.id, m.ent())
					}
				}
			}
			if m.ext.govInit && !pending {
				x.govTokens = m.ext.govTokens
				t := num.Float64(m.ext.govTokens)
				out.GovernorTokens = &t
				out.GovernorLastRefill = time.Unix(0, m.ext.govLast).UTC()
			}
			if !pending {
				x.grantCovered, x.topupRevenue = m.ext.grantCovered, m.ext.topupRevenue
			}
			if len(m.ext.estimates) > 0 {
				out.Estimates = make(map[string]Estimate, len(m.ext.estimates))
				for seg, est := range m.ext.estimates {
					out.Estimates[seg] = Estimate{Samples: est.N, Mean: est.Mean, Variance: est.Variance}
				}
			}
		}
		out.Value, out.Overhead = num.Float64(x.value), num.Float64(x.overhead)
		out.GrantCovered, out.TopupRevenue = num.Float64(x.grantCovered), num.Float64(x.topupRevenue)
		out.exact = x
		s.Meters[m.ent()] = out
	}
	for name, o := range c.overrides() {
		s.Overrides[name] = o.spec
	}
	for _, g := range c.grants() {
		st := g.at(nowNs, loc, s.BillingAnchor)
		if st.expired {
			continue
		}
		cp := *g
		cp.settle(st)
		s.Grants[g.id] = grantOutput(&cp)
	}
	for _, sc := range c.caps() {
		if cp := e.capSnapshot(p, c, sc, nowNs); sc.expiresOn == 0 || sc.expiresOn >= nowNs {
			s.Caps[sc.cfg.ID] = cp
		}
	}
	return s
}

func grantOutput(g *grant) Grant {
	out := Grant{
		ID: g.id, Credit: g.def.credit, Topup: g.topup, Included: g.included,
		Value: num.Float64(g.value), StartingValue: num.Float64(g.def.starting),
		Created: time.Unix(0, g.createdOn).UTC(), GrantedOn: time.Unix(0, g.grantedOn).UTC(),
		LastReset: time.Unix(0, g.lastReset).UTC(), ResetMode: g.def.mode,
		ResetCatchupCap: g.def.catchupCap, g: g,
	}
	if g.expiresOn != 0 {
		out.ExpiresAt = time.Unix(0, g.expiresOn).UTC()
	}
	if !g.def.reset.IsZero() {
		out.Resets = true
		if g.def.reset.Every > 0 {
			out.ResetInc = strconv.FormatInt(g.def.reset.Every.Milliseconds(), 10) + "ms"
		} else {
			out.ResetSch = g.def.reset.Schedule.String()
		}
	}
	fp := func(d *num.Dec) *float64 {
		if d == nil {
			return nil
		}
		f := num.Float64(*d)
		return &f
	}
	out.RolloverMin, out.RolloverMax = fp(g.def.rolloverMin), fp(g.def.rolloverMax)
	out.RolloverPct, out.MaxBalance = fp(g.def.rolloverPct), fp(g.def.maxBalance)
	if g.hasPrice {
		out.Price = fp(&g.price)
	}
	return out
}

// meterLimit finds the limit that governs a meter held by c, for period maths in
// snapshots. Caller holds c.mu.
func (e *Engine) meterLimit(p *policies.Policy, c *customer, prof *profile, ent string, now time.Time) *policies.CompiledLimit {
	idx, ok := p.EntitlementIndex(ent)
	if !ok {
		return nil
	}
	pl := e.resolvePlan(p, c.id, prof)
	if pl == nil {
		return nil
	}
	ce := pl.Entitlement(idx)
	if ce == nil {
		return nil
	}
	if o := c.overrides()[ent]; o != nil && o.policy == p && (o.spec.ExpiresAt.IsZero() || now.Before(o.spec.ExpiresAt)) {
		return o.compiled
	}
	return ce.Limit
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
