// Package limitr enforces a Limitr pricing policy inside your process.
//
//	policy, err := limitr.Open("policy.json")
//	_, err = policy.CreateCustomer(ctx, "user_starter", "starter")
//	ok, err := policy.Allow(ctx, "user_starter", "ai-chat-input", 120000)
//
// Decisions are made in memory with exact decimal arithmetic: no network call, no
// allocation on a warm Allow. A *Policy is safe for concurrent use.
package limitr

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/limitr/limitr/internal/enforcement"
	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/policies"
	"github.com/limitr/limitr/internal/policies/doctree"
)

// Format is a policy document format.
type Format = doctree.Format

// Document formats.
const (
	FormatJSON = doctree.FormatJSON
	FormatYAML = doctree.FormatYAML
	FormatTOML = doctree.FormatTOML
)

// Types shared with the engine.
type (
	// Customer is a snapshot of a customer's state, JSON-serialisable with Limitr's field names.
	Customer = enforcement.Customer
	// Meter is one entitlement's usage in its current period.
	Meter = enforcement.Meter
	// Grant is a balance of credit from a topup.
	Grant = enforcement.Grant
	// Override changes the named fields of a customer's limit.
	Override = enforcement.Override
	// Event is a state change delivered to handlers.
	Event = enforcement.Event
	// MeterChange is the meter part of a meter event.
	MeterChange = enforcement.MeterChange
	// ValidationError lists every problem in a rejected policy document.
	ValidationError = policies.ValidationError
	// Problem is one problem in a policy document, with its path.
	Problem = policies.Problem
)

// Event types.
const (
	EventMeterChanged        = enforcement.EventMeterChanged
	EventMeterOverage        = enforcement.EventMeterOverage
	EventMeterLimit          = enforcement.EventMeterLimit
	EventMeterReset          = enforcement.EventMeterReset
	EventCustomerSet         = enforcement.EventCustomerSet
	EventCustomerRemoved     = enforcement.EventCustomerRemoved
	EventCustomerPlanChanged = enforcement.EventCustomerPlanChanged
)

// Errors callers test with errors.Is.
var (
	ErrUnknownCustomer    = enforcement.ErrUnknownCustomer
	ErrUnknownEntitlement = enforcement.ErrUnknownEntitlement
	ErrUnknownPlan        = enforcement.ErrUnknownPlan
	ErrNoLimit            = enforcement.ErrNoLimit
	ErrInvalidQuantity    = enforcement.ErrInvalidQuantity
	ErrNotEntitled        = enforcement.ErrNotEntitled
	ErrInvalidCustomer    = enforcement.ErrInvalidCustomer
	ErrInvalidOverride    = enforcement.ErrInvalidOverride
	ErrAltIDTaken         = enforcement.ErrAltIDTaken
	ErrInvalidPolicy      = policies.ErrInvalidPolicy
	ErrClosed             = enforcement.ErrClosed
)

// Policy is a loaded policy and the customers it governs.
type Policy struct {
	eng    *enforcement.Engine
	closed atomic.Bool
	cloud  *cloud // nil in local mode
}

type config struct {
	clock   func() time.Time
	format  Format
	idemTTL time.Duration
}

// Option configures New and Open.
type Option func(*config)

// WithClock injects the time source. Tests use it to move through periods.
func WithClock(now func() time.Time) Option { return func(c *config) { c.clock = now } }

// WithFormat says which format the document is in; without it the format is detected.
func WithFormat(f Format) Option { return func(c *config) { c.format = f } }

// WithIdempotencyTTL sets how long an idempotency key answers retries (default 24h).
func WithIdempotencyTTL(d time.Duration) Option { return func(c *config) { c.idemTTL = d } }

// New loads a policy document (JSON, YAML or TOML). An invalid document returns a
// *ValidationError listing every problem with its path.
func New(doc []byte, opts ...Option) (*Policy, error) {
	cfg := config{}
	for _, o := range opts {
		o(&cfg)
	}
	compiled, err := policies.Load(doc, cfg.format)
	if err != nil {
		return nil, err
	}
	eng, err := enforcement.New(compiled, enforcement.WithClock(cfg.clock), enforcement.WithIdempotencyTTL(cfg.idemTTL))
	if err != nil {
		return nil, err
	}
	return &Policy{eng: eng}, nil
}

// Open loads a policy document from a file; the format comes from the extension
// unless WithFormat says otherwise.
func Open(path string, opts ...Option) (*Policy, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("limitr: %w", err)
	}
	if f := doctree.FormatFromPath(path); f != doctree.FormatUnknown {
		opts = append([]Option{WithFormat(f)}, opts...)
	}
	p, err := New(data, opts...)
	if err != nil {
		return nil, fmt.Errorf("limitr: %s: %w", path, err)
	}
	return p, nil
}

// Update swaps in a new version of the policy document atomically. Customers, meters
// and overrides are kept and enforced under the new version from the next call. In
// cloud mode it changes this instance only, until the control plane activates another
// version.
func (p *Policy) Update(ctx context.Context, doc []byte, opts ...Option) error {
	cfg := config{}
	for _, o := range opts {
		o(&cfg)
	}
	compiled, err := policies.Load(doc, cfg.format)
	if err != nil {
		return err
	}
	return p.eng.SetPolicy(compiled)
}

// Version identifies the enforced document: the SHA-256 of its canonical form. In cloud
// mode VersionNumber gives the control plane's version number too.
func (p *Policy) Version() string { return p.eng.Policy().Hash }

// Marshal writes the policy document (with defaults applied) in the given format.
func (p *Policy) Marshal(f Format) ([]byte, error) { return p.eng.Policy().Marshal(f) }

// Close releases the policy. Calls after Close return ErrClosed. In cloud mode it
// stops the background work and sends the usage not yet acknowledged, for as long as
// ctx allows; with Spill, what it could not send is written to the spill directory,
// whose lock it then releases. Otherwise usage left unsent is reported in the error.
func (p *Policy) Close(ctx context.Context) error {
	if !p.closed.CompareAndSwap(false, true) || p.cloud == nil {
		return nil
	}
	return p.cloud.close(ctx)
}

func (p *Policy) open() error {
	if p.closed.Load() {
		return ErrClosed
	}
	return nil
}

// CustomerOption configures CreateCustomer.
type CustomerOption func(*enforcement.CustomerSpec)

// WithCustomerType sets the customer's type (default "user"); scoped entitlements use it.
func WithCustomerType(t string) CustomerOption {
	return func(s *enforcement.CustomerSpec) { s.Type = &t }
}

// WithLabel sets the customer's display label (default "User").
func WithLabel(l string) CustomerOption {
	return func(s *enforcement.CustomerSpec) { s.Label = &l }
}

// WithRefs links the customer to parent customers (an org); plans and scoped
// entitlements resolve through them.
func WithRefs(ids ...string) CustomerOption {
	return func(s *enforcement.CustomerSpec) { s.Refs, s.RefsSet = ids, true }
}

// WithAltIDs registers other ids the customer can be called by.
func WithAltIDs(ids ...string) CustomerOption {
	return func(s *enforcement.CustomerSpec) { s.AltIDs = append(s.AltIDs, ids...) }
}

// WithMetadata attaches free-form metadata.
func WithMetadata(m map[string]any) CustomerOption {
	return func(s *enforcement.CustomerSpec) { s.Metadata = m }
}

// WithTimezone sets the IANA zone calendar resets use (default: the policy's, else UTC).
func WithTimezone(tz string) CustomerOption {
	return func(s *enforcement.CustomerSpec) { s.Timezone = &tz }
}

// WithBillingAnchor sets the billing anchor used by monthly:anchor resets (default: creation time).
func WithBillingAnchor(t time.Time) CustomerOption {
	return func(s *enforcement.CustomerSpec) { s.Anchor = &t }
}

// CreateCustomer creates a customer on a plan ("" inherits through refs, else the
// default plan). For an existing id it updates the customer, keeping whatever the
// options leave unset.
func (p *Policy) CreateCustomer(ctx context.Context, id, plan string, opts ...CustomerOption) (*Customer, error) {
	if err := p.open(); err != nil {
		return nil, err
	}
	spec := enforcement.CustomerSpec{ID: id, Plan: plan}
	for _, o := range opts {
		o(&spec)
	}
	if p.cloud != nil {
		return p.cloud.createCustomer(ctx, spec)
	}
	return p.eng.CreateCustomer(ctx, spec)
}

// SetCustomerPlan moves a customer to another plan, keeping its meters unless
// overwriteMeters is set.
func (p *Policy) SetCustomerPlan(ctx context.Context, id, plan string, overwriteMeters bool) error {
	if err := p.open(); err != nil {
		return err
	}
	if p.cloud != nil {
		return p.cloud.setCustomerPlan(ctx, id, plan, overwriteMeters)
	}
	return p.eng.SetCustomerPlan(ctx, id, plan, overwriteMeters)
}

// DeleteCustomer removes a customer. In cloud mode the API deletes it first; then the
// customer's usage not yet cut into a batch (meter sums, grant draws, audit records)
// is discarded here, since the server would no longer attribute it. Usage already cut
// into a batch that is queued or in flight is still sent: the server commits it
// without a customer and reports it (SyncStats.Unattributed).
func (p *Policy) DeleteCustomer(ctx context.Context, id string) error {
	if err := p.open(); err != nil {
		return err
	}
	if p.cloud != nil {
		return p.cloud.deleteCustomer(ctx, id)
	}
	return p.eng.DeleteCustomer(ctx, id)
}

// Customer returns a snapshot of a customer, looked up by id or alt id. In cloud mode a
// customer this instance does not hold is loaded from the server first.
func (p *Policy) Customer(ctx context.Context, id string) (*Customer, error) {
	if err := p.open(); err != nil {
		return nil, err
	}
	c, err := p.eng.Customer(ctx, id)
	if p.hydrated(ctx, id, &err) {
		c, err = p.eng.Customer(ctx, id)
	}
	return c, err
}

// Customers returns snapshots of every customer, ordered by id. In cloud mode these are
// the customers this instance holds (created, changed or used here), not every
// customer of the environment.
func (p *Policy) Customers(ctx context.Context) ([]*Customer, error) {
	if err := p.open(); err != nil {
		return nil, err
	}
	return p.eng.Customers(ctx), nil
}

// CreateCustomerOverride changes the named fields of a customer's limit on one
// entitlement; fields left empty keep the plan's values.
func (p *Policy) CreateCustomerOverride(ctx context.Context, customer, entitlement string, o Override) error {
	if err := p.open(); err != nil {
		return err
	}
	if p.cloud != nil {
		return p.cloud.createOverride(ctx, customer, entitlement, o)
	}
	return p.eng.CreateCustomerOverride(ctx, customer, entitlement, o)
}

// RemoveCustomerOverride removes a customer's override.
func (p *Policy) RemoveCustomerOverride(ctx context.Context, customer, entitlement string) error {
	if err := p.open(); err != nil {
		return err
	}
	if p.cloud != nil {
		return p.cloud.removeOverride(ctx, customer, entitlement)
	}
	return p.eng.RemoveCustomerOverride(ctx, customer, entitlement)
}

// AddHandler registers an event handler under a name (replacing one of the same
// name). Handlers run synchronously after the state change.
func (p *Policy) AddHandler(name string, h func(Event)) { p.eng.AddHandler(name, h) }

// RemoveHandler unregisters a handler.
func (p *Policy) RemoveHandler(name string) { p.eng.RemoveHandler(name) }

func float(d num.Dec, err error) (float64, error) {
	if err != nil {
		return 0, err
	}
	return num.Float64(d), nil
}
