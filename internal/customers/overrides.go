package customers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/limitr/limitr/internal/enforcement"
	"github.com/limitr/limitr/internal/policies"
	"github.com/limitr/limitr/internal/store"
	"github.com/limitr/limitr/internal/validation"
	"github.com/limitr/limitr/internal/wire"
)

// overrideAudit is an override as the audit log records it.
type overrideAudit struct {
	Entitlement string          `json:"entitlement"`
	Override    json.RawMessage `json:"override"`
}

// SetOverride sets (or replaces) a customer's override of an entitlement of its plan,
// checked with the engine's own compiler. A scoped entitlement is metered, and so
// overridden, on the customer of the scope's type found through refs, as the engine
// does; the record returned is that customer's.
func (s *Service) SetOverride(ctx context.Context, env store.Environment, id, ent string, in OverrideInput) (wire.Customer, error) {
	o, err := in.prepare(s.now())
	if err != nil {
		return wire.Customer{}, err
	}
	if fe := validation.ID("entitlement", ent); fe != nil {
		return wire.Customer{}, &validation.Error{Title: "invalid override", Fields: []validation.FieldError{*fe}}
	}
	p, err := s.policy(ctx, env)
	if err != nil {
		return wire.Customer{}, err
	}
	idx, ok := p.EntitlementIndex(ent)
	if !ok {
		return wire.Customer{}, validation.New("invalid override", "entitlement", fmt.Sprintf("unknown entitlement %q: no plan of the active policy defines it", ent))
	}
	spec, err := json.Marshal(o)
	if err != nil {
		return wire.Customer{}, err
	}
	var out store.Customer
	err = s.mutation(ctx, env, func(tx pgx.Tx) (*change, error) {
		cust, err := s.load(ctx, tx, p, env, id, true)
		if err != nil {
			return nil, err
		}
		var ce *policies.CompiledEntitlement
		if plan := p.Plan(cust.ResolvedPlan); plan != nil {
			ce = plan.Entitlement(idx)
		}
		if ce == nil {
			return nil, validation.New("invalid override", "entitlement", fmt.Sprintf("%q is not on the customer's plan %q", ent, cust.ResolvedPlan))
		}
		if err := checkOverride(p, ce, o); err != nil {
			return nil, err
		}
		owner := cust
		if ce.Scope != "" && ce.Scope != cust.Type {
			ownerID, err := scopeOwner(ctx, tx, env, &cust, ce.Scope)
			if err != nil {
				return nil, err
			}
			if ownerID == "" {
				return nil, validation.New("invalid override", "entitlement",
					fmt.Sprintf("%q is metered on a customer of type %q and none is reachable through this customer's refs", ent, ce.Scope))
			}
			if owner, err = s.load(ctx, tx, p, env, ownerID, true); err != nil {
				return nil, err
			}
		}
		var before any
		switch old, err := store.GetOverride(ctx, tx, env.TenantID, env.ID, owner.ID, ent); {
		case err == nil:
			before = overrideAudit{Entitlement: ent, Override: old.Spec}
		case !errors.Is(err, store.ErrNotFound):
			return nil, err
		}
		row := store.CustomerOverride{Entitlement: ent, Spec: spec, CreatedBy: store.ActorFrom(ctx).KeyID}
		if !o.ExpiresAt.IsZero() {
			t := o.ExpiresAt
			row.ExpiresAt = &t
		}
		if err := store.PutOverride(ctx, tx, env.TenantID, env.ID, owner.ID, row); err != nil {
			return nil, err
		}
		if out, err = s.touch(ctx, tx, p, env, owner.ID); err != nil {
			return nil, err
		}
		feed := feedOf(opOverride, out)
		feed.Entitlement, feed.Override = ent, spec
		return &change{subject: out.ID, action: "customer.override.set", before: before,
			after: overrideAudit{Entitlement: ent, Override: spec}, feed: feed}, nil
	})
	return out.Customer, err
}

// RemoveOverride removes a customer's override of an entitlement (held by the scope
// owner for a scoped entitlement); ErrNoOverride when there is none.
func (s *Service) RemoveOverride(ctx context.Context, env store.Environment, id, ent string) error {
	if fe := validation.ID("entitlement", ent); fe != nil {
		return &validation.Error{Title: "invalid override", Fields: []validation.FieldError{*fe}}
	}
	p, err := s.policyOrNil(ctx, env)
	if err != nil {
		return err
	}
	return s.mutation(ctx, env, func(tx pgx.Tx) (*change, error) {
		cust, err := s.load(ctx, tx, p, env, id, true)
		if err != nil {
			return nil, err
		}
		holder := cust.ID
		old, err := store.GetOverride(ctx, tx, env.TenantID, env.ID, holder, ent)
		if errors.Is(err, store.ErrNotFound) {
			if owner, oerr := s.overrideHolder(ctx, tx, p, env, &cust, ent); oerr != nil {
				return nil, oerr
			} else if owner != "" {
				holder = owner
				old, err = store.GetOverride(ctx, tx, env.TenantID, env.ID, holder, ent)
			}
		}
		if errors.Is(err, store.ErrNotFound) {
			return nil, fmt.Errorf("%w: customer %q has no override for %q", ErrNoOverride, cust.ID, ent)
		}
		if err != nil {
			return nil, err
		}
		if err := store.DeleteOverride(ctx, tx, env.TenantID, env.ID, holder, ent); err != nil {
			return nil, err
		}
		after, err := s.touch(ctx, tx, p, env, holder)
		if err != nil {
			return nil, err
		}
		feed := feedOf(opOverride, after)
		feed.Entitlement, feed.Removed = ent, true
		return &change{subject: holder, action: "customer.override.delete",
			before: overrideAudit{Entitlement: ent, Override: old.Spec}, feed: feed}, nil
	})
}

// overrideHolder is the scope owner holding a scoped entitlement's override for c
// (locked), or "" when the entitlement is not scoped away from c.
func (s *Service) overrideHolder(ctx context.Context, tx pgx.Tx, p *policies.Policy, env store.Environment, c *store.Customer, ent string) (string, error) {
	if p == nil {
		return "", nil
	}
	idx, ok := p.EntitlementIndex(ent)
	if !ok {
		return "", nil
	}
	plan := p.Plan(c.ResolvedPlan)
	if plan == nil {
		return "", nil
	}
	ce := plan.Entitlement(idx)
	if ce == nil || ce.Scope == "" || ce.Scope == c.Type {
		return "", nil
	}
	owner, err := scopeOwner(ctx, tx, env, c, ce.Scope)
	if err != nil || owner == "" {
		return "", err
	}
	if _, err := s.load(ctx, tx, p, env, owner, true); err != nil {
		return "", err
	}
	return owner, nil
}

// touch bumps a customer's revision after a change to its overrides or topups and
// returns its record.
func (s *Service) touch(ctx context.Context, tx pgx.Tx, p *policies.Policy, env store.Environment, id string) (store.Customer, error) {
	if _, _, err := store.TouchCustomer(ctx, tx, env.TenantID, env.ID, id); err != nil {
		return store.Customer{}, err
	}
	return s.load(ctx, tx, p, env, id, false)
}

// checkOverride compiles an override against the policy with the engine's own
// Compile, so the API and the SDK can never disagree on what is valid.
func checkOverride(p *policies.Policy, ce *policies.CompiledEntitlement, o enforcement.Override) error {
	_, err := o.Compile(p, ce)
	if err == nil {
		return nil
	}
	var errs validation.Errors
	var ve *policies.ValidationError
	if errors.As(err, &ve) {
		for _, pr := range ve.Problems {
			errs.Add(pr.Path, pr.Message)
		}
		return errs.Err("invalid override")
	}
	for _, e := range leaves(err) {
		var fe *enforcement.OverrideFieldError
		if errors.As(e, &fe) {
			errs.Add(fe.Field, fe.Err.Error())
		}
	}
	if errs.Len() == 0 {
		errs.Add("(body)", err.Error())
	}
	return errs.Err("invalid override")
}

// leaves flattens an error tree built with %w and errors.Join.
func leaves(err error) []error {
	switch u := err.(type) {
	case interface{ Unwrap() []error }:
		var out []error
		for _, e := range u.Unwrap() {
			out = append(out, leaves(e)...)
		}
		return out
	case interface{ Unwrap() error }:
		if _, ok := err.(*enforcement.OverrideFieldError); !ok {
			return leaves(u.Unwrap())
		}
	}
	return []error{err}
}
