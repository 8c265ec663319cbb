package enforcement

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/limitr/limitr/internal/policies"
	"github.com/limitr/limitr/internal/quantity"
)

// OverrideFieldError names the override field that is wrong.
type OverrideFieldError struct {
	Field string
	Err   error
}

func (e *OverrideFieldError) Error() string { return e.Field + ": " + e.Err.Error() }

// Unwrap returns the underlying error.
func (e *OverrideFieldError) Unwrap() error { return e.Err }

// buildLimit lays the override's named fields over the plan limit. Unlike the
// reference engine, unnamed fields (minimum, hard_trailing, grants_apply, governor)
// keep the plan's values.
func (o Override) buildLimit(base *policies.Limit) (*policies.Limit, error) {
	var l policies.Limit
	if base != nil {
		l = *base
	} else {
		l = *policies.NewLimit()
	}
	var errs []error
	amount := func(field, s string, dst *policies.Amount) {
		if s == "" {
			return
		}
		q, err := quantity.Parse(s)
		if err != nil {
			errs = append(errs, &OverrideFieldError{Field: field, Err: err})
			return
		}
		*dst = policies.Amount{Q: q, Set: true, Quoted: !q.Unit.IsZero()}
	}
	amount("value", o.Value, &l.Value)
	amount("increment", o.Increment, &l.Increment)
	amount("minimum", o.Minimum, &l.Minimum)
	if o.Credit != "" {
		l.Credit = o.Credit
	}
	if o.Mode != "" {
		l.Mode = o.Mode
	}
	if o.Resets != nil {
		l.Resets = *o.Resets
		if !l.Resets {
			l.ResetInc, l.ResetSch = policies.Duration{}, ""
		}
	}
	if o.ResetInc != "" {
		d, err := quantity.ParseDuration(o.ResetInc)
		if err != nil {
			errs = append(errs, &OverrideFieldError{Field: "reset_inc", Err: err})
		}
		l.ResetInc = policies.Duration{D: d, Set: true, Quoted: true, Text: o.ResetInc}
		l.ResetSch = ""
		l.Resets = true
	}
	if o.ResetSch != "" {
		l.ResetSch = o.ResetSch
		l.ResetInc = policies.Duration{}
		l.Resets = true
	}
	if l.Resets && !l.ResetInc.Set && l.ResetSch == "" {
		l.ResetInc = policies.Duration{D: 30 * 24 * time.Hour, Set: true, Quoted: true, Text: "30days"}
	}
	if o.HardTrailing != nil {
		l.HardTrailing = *o.HardTrailing
	}
	if o.GrantsApply != nil {
		l.GrantsApply = *o.GrantsApply
	}
	if l.Mode != policies.ModeHard {
		// A mode change away from hard drops the hard-only settings rather than failing.
		if o.HardTrailing == nil {
			l.HardTrailing = false
		}
		l.GovernorEnabled = false
	}
	l.OverrideExpiresOn = o.ExpiresAt
	return &l, errors.Join(errs...)
}

// Compile lays the override over the entitlement's plan limit, validates the result as a
// limit and compiles it, exactly as CreateCustomerOverride does. Errors wrap
// ErrInvalidOverride and carry *OverrideFieldError or *policies.ValidationError values
// that name the offending field.
func (o Override) Compile(p *policies.Policy, base *policies.CompiledEntitlement) (*policies.CompiledLimit, error) {
	var src *policies.Limit
	if base.Limit != nil {
		src = base.Limit.Src
	}
	l, err := o.buildLimit(src)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidOverride, err)
	}
	if err := policies.ValidateLimit(p.Doc, l, ""); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidOverride, err)
	}
	cl, err := p.CompileLimit(l)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidOverride, err)
	}
	return cl, nil
}

// effectiveLimit returns the override if one is live, else the plan limit. An expired
// override is dropped on access, as in the reference engine. Caller holds c.mu.
func (c *customer) effectiveLimit(p *policies.Policy, ce *policies.CompiledEntitlement, now time.Time) *policies.CompiledLimit {
	if c.x == nil || len(c.x.overrides) == 0 {
		return ce.Limit // the common case, without hashing the name
	}
	o := c.x.overrides[ce.Name]
	if o == nil {
		return ce.Limit
	}
	if !o.spec.ExpiresAt.IsZero() && !now.Before(o.spec.ExpiresAt) {
		delete(c.overrides(), ce.Name)
		return ce.Limit
	}
	if o.policy != p {
		cl, err := o.spec.Compile(p, ce)
		if err != nil {
			// The new policy no longer supports this override (say, its credit is gone):
			// fall back to the plan limit rather than enforcing something invalid.
			return ce.Limit
		}
		o.compiled, o.policy = cl, p
	}
	return o.compiled
}

// CreateCustomerOverride sets a customer-specific limit for an entitlement on the
// customer's plan. For a scoped entitlement it is stored on the customer that owns
// the meter.
func (e *Engine) CreateCustomerOverride(ctx context.Context, id, ent string, o Override) error {
	p := e.policy.Load()
	res, err := e.resolve(p, id, ent)
	if err != nil {
		return err
	}
	if res.ce == nil {
		return fmt.Errorf("%w: %q", ErrNotEntitled, ent)
	}
	now := e.now()
	if !o.ExpiresAt.IsZero() && !o.ExpiresAt.After(now) {
		return fmt.Errorf("%w: expires_at: %s is not in the future", ErrInvalidOverride, o.ExpiresAt.Format(time.RFC3339))
	}
	cl, err := o.Compile(p, res.ce)
	if err != nil {
		return err
	}
	owner := res.owner
	owner.mu.Lock()
	if owner.deleted {
		owner.mu.Unlock()
		return fmt.Errorf("%w: %q", ErrUnknownCustomer, id)
	}
	x := owner.extras()
	if x.overrides == nil {
		x.overrides = map[string]*override{}
	}
	x.overrides[ent] = &override{spec: o, compiled: cl, policy: p}
	snap := e.snapshotLocked(p, owner)
	owner.mu.Unlock()
	e.emit(Event{Type: EventCustomerSet, Customer: snap, Time: now})
	return nil
}

// RemoveCustomerOverride drops a customer's override; it is not an error if none exists.
func (e *Engine) RemoveCustomerOverride(ctx context.Context, id, ent string) error {
	p := e.policy.Load()
	res, err := e.resolve(p, id, ent)
	if err != nil {
		return err
	}
	if res.ce == nil {
		return fmt.Errorf("%w: %q", ErrNotEntitled, ent)
	}
	owner := res.owner
	owner.mu.Lock()
	_, had := owner.overrides()[ent]
	delete(owner.overrides(), ent)
	snap := e.snapshotLocked(p, owner)
	owner.mu.Unlock()
	if had {
		e.emit(Event{Type: EventCustomerSet, Customer: snap, Time: e.now()})
	}
	return nil
}
