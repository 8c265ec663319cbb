package enforcement

import (
	"encoding/json"
	"maps"
	"slices"
	"time"

	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/policies"
)

// Customer is a point-in-time copy of a customer's state. Its JSON form uses the
// reference engine's field names, with times as Unix milliseconds, so records can be
// stored and restored across engines.
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
	Metadata      map[string]any      `json:"metadata"`
	Timezone      string              `json:"timezone,omitempty"`
	BillingAnchor time.Time           `json:"-"`
	Created       time.Time           `json:"-"`
	// ResolvedPlan is the plan in force (through refs or the default); not persisted.
	ResolvedPlan string `json:"-"`
}

// Meter is one entitlement's usage in its current period.
type Meter struct {
	Credit   string    `json:"credit"`
	Started  time.Time `json:"-"`
	Value    float64   `json:"value"`
	Overhead float64   `json:"overhead"`
}

// Grant is a balance of credit from a topup (filled by the credit economics layer).
type Grant struct {
	ID     string  `json:"id"`
	Credit string  `json:"credit"`
	Topup  string  `json:"topup,omitempty"`
	Value  float64 `json:"value"`
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

// MarshalJSON writes started as Unix milliseconds.
func (m Meter) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		meterJSON
		Started *int64 `json:"started,omitempty"`
	}{meterJSON(m), msPtr(m.Started)})
}

// UnmarshalJSON reads the form MarshalJSON writes.
func (m *Meter) UnmarshalJSON(b []byte) error {
	var aux struct {
		meterJSON
		Started *int64 `json:"started"`
	}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	*m = Meter(aux.meterJSON)
	m.Started = fromMs(aux.Started)
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

func (e *Engine) snapshot(p *policies.Policy, c *customer) *Customer {
	c.mu.Lock()
	defer c.mu.Unlock()
	return e.snapshotLocked(p, c)
}

// snapshotLocked copies a customer's state; the caller holds c.mu. Meter values are
// reported for the current period, so a pending reset already shows as zero.
func (e *Engine) snapshotLocked(p *policies.Policy, c *customer) *Customer {
	prof := c.info.Load()
	now := e.now()
	s := &Customer{
		ID:            c.id,
		Plan:          prof.plan,
		AltIDs:        nonNil(slices.Clone(prof.altIDs)),
		Refs:          nonNil(slices.Clone(prof.refs)),
		Type:          prof.typ,
		Label:         prof.label,
		Meters:        make(map[string]Meter, len(c.meters)),
		Overrides:     make(map[string]Override, len(c.overrides)),
		Grants:        map[string]Grant{},
		Metadata:      maps.Clone(prof.metadata),
		Timezone:      prof.tz,
		BillingAnchor: prof.anchor,
		Created:       prof.created,
	}
	if pl := e.resolvePlan(p, prof); pl != nil {
		s.ResolvedPlan = pl.Name
	}
	for _, m := range c.meters {
		started, value, overhead := m.startedAt(), m.value, m.overhead
		if l := e.meterLimit(p, c, prof, m.ent, now); l != nil && l.Resets() {
			if start := l.Reset.CurrentStart(started, now, c.location(p), prof.anchor); !start.Equal(started) {
				started, value, overhead = start, num.Zero, num.Zero
			}
		}
		s.Meters[m.ent] = Meter{Credit: m.credit, Started: started, Value: num.Float64(value), Overhead: num.Float64(overhead)}
	}
	for name, o := range c.overrides {
		s.Overrides[name] = o.spec
	}
	return s
}

// meterLimit finds the limit that governs a meter held by c, for period maths in
// snapshots. Caller holds c.mu.
func (e *Engine) meterLimit(p *policies.Policy, c *customer, prof *profile, ent string, now time.Time) *policies.CompiledLimit {
	idx, ok := p.EntitlementIndex(ent)
	if !ok {
		return nil
	}
	pl := e.resolvePlan(p, prof)
	if pl == nil {
		return nil
	}
	ce := pl.Entitlement(idx)
	if ce == nil {
		return nil
	}
	if o := c.overrides[ent]; o != nil && o.policy == p && (o.spec.ExpiresAt.IsZero() || now.Before(o.spec.ExpiresAt)) {
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
