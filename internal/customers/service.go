// Package customers is the control plane's customers domain: creating, reading,
// updating and deleting customers of an environment, changing their plans, overrides,
// topups, vouchers and spend caps. Every mutation runs in one transaction that writes its rows, bumps the
// customer's revision, appends a change-feed entry (which connected SDKs apply) and an
// audit entry; after the commit the Notifier wakes the feed's followers.
//
// Inputs validate themselves (field errors name the offending field); plans resolve
// through refs with the engine's own rule (policies.ResolvePlan), and overrides are
// checked with the engine's own compiler, so the API and the SDK never disagree.
package customers

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/limitr/limitr/internal/policies"
	"github.com/limitr/limitr/internal/policies/pgstore"
	"github.com/limitr/limitr/internal/store"
	"github.com/limitr/limitr/internal/wire"
)

// Errors, for errors.Is. Validation failures are *validation.Error.
var (
	ErrNotFound = errors.New("customer not found")
	// ErrExists: a customer with this id exists (create).
	ErrExists = errors.New("customer already exists")
	// ErrNameTaken: the id or an alt id is already another customer's (*NameTakenError).
	ErrNameTaken = errors.New("name already used by another customer")
	// ErrNoActivePolicy: the environment has no published policy to validate against.
	ErrNoActivePolicy = errors.New("no policy is published to this environment")
	// ErrNoOverride: the customer has no override for the entitlement.
	ErrNoOverride = errors.New("no such override")
)

// NotFoundError names the customer that does not exist; it matches ErrNotFound.
type NotFoundError struct{ ID string }

func (e *NotFoundError) Error() string        { return fmt.Sprintf("no customer %q", e.ID) }
func (e *NotFoundError) Is(target error) bool { return target == ErrNotFound }

// NameTakenError reports an id or alt id another customer holds; it matches
// ErrNameTaken.
type NameTakenError struct {
	Field string // "id" or "alt_ids[i]"
	Name  string
	Owner string
}

func (e *NameTakenError) Error() string {
	return fmt.Sprintf("%s: %q is already used by customer %q", e.Field, e.Name, e.Owner)
}
func (e *NameTakenError) Is(target error) bool { return target == ErrNameTaken }

// Policies finds the policy published to an environment (pgstore.ErrNoActivePolicy
// when there is none).
type Policies interface {
	ActivePolicy(ctx context.Context, env store.Environment) (*policies.Policy, error)
}

// Notifier is told after a commit that an environment's change feed moved.
type Notifier interface {
	ChangeCommitted(ctx context.Context, tenantID, envID uuid.UUID, changeID int64)
}

// TopupBiller invoices a purchased topup in the transaction that applies it.
type TopupBiller interface {
	InvoiceTopup(ctx context.Context, tx pgx.Tx, env store.Environment, c store.Customer, t wire.CustomerTopup) error
}

// Service is the customers domain.
type Service struct {
	pool     *pgxpool.Pool
	policies Policies
	notify   Notifier
	biller   TopupBiller
	now      func() time.Time
}

// SetTopupBiller makes applied topups with a price invoiced by b (nil: not invoiced).
func (s *Service) SetTopupBiller(b TopupBiller) { s.biller = b }

// NewService returns the service. notify may be nil (followers then catch up by
// polling).
func NewService(pool *pgxpool.Pool, pols Policies, notify Notifier) *Service {
	return &Service{pool: pool, policies: pols, notify: notify, now: time.Now}
}

// policy is the environment's active policy; required for changes that must be
// validated against it.
func (s *Service) policy(ctx context.Context, env store.Environment) (*policies.Policy, error) {
	p, err := s.policies.ActivePolicy(ctx, env)
	if errors.Is(err, pgstore.ErrNoActivePolicy) {
		return nil, &NoPolicyError{Environment: env.Name}
	}
	return p, err
}

// NoPolicyError names the environment without a published policy; it matches
// ErrNoActivePolicy.
type NoPolicyError struct{ Environment string }

func (e *NoPolicyError) Error() string {
	return fmt.Sprintf("no policy is published to environment %q: publish a policy first", e.Environment)
}
func (e *NoPolicyError) Is(target error) bool { return target == ErrNoActivePolicy }

// policyOrNil is policy for reads, which work without one (resolved_plan is then "").
func (s *Service) policyOrNil(ctx context.Context, env store.Environment) (*policies.Policy, error) {
	p, err := s.policies.ActivePolicy(ctx, env)
	if errors.Is(err, pgstore.ErrNoActivePolicy) {
		return nil, nil
	}
	return p, err
}

// mutation runs fn in a transaction; fn returns the change to record (nil: nothing
// changed). The change's audit entry and feed entry are written in the transaction,
// and the feed's followers woken after the commit.
func (s *Service) mutation(ctx context.Context, env store.Environment, fn func(tx pgx.Tx) (*change, error)) error {
	var changeID int64
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		ch, err := fn(tx)
		if err != nil || ch == nil {
			return err
		}
		changeID, err = ch.record(ctx, tx, env)
		return err
	})
	if err != nil {
		return mapStoreError(err)
	}
	if changeID != 0 && s.notify != nil {
		s.notify.ChangeCommitted(ctx, env.TenantID, env.ID, changeID)
	}
	return nil
}

// change is one customer mutation as the audit log and the change feed record it.
type change struct {
	subject       string // the customer id
	action        string // audit action, e.g. "customer.create"
	before, after any
	feed          wire.CustomerChanged
}

func (c *change) record(ctx context.Context, tx pgx.Tx, env store.Environment) (int64, error) {
	if err := store.RecordAudit(ctx, tx, store.AuditEntry{TenantID: env.TenantID, EnvironmentID: &env.ID,
		Action: c.action, Resource: "customer", ResourceID: c.subject}, c.before, c.after); err != nil {
		return 0, err
	}
	return store.AppendChange(ctx, tx, env.TenantID, env.ID, "customer", c.subject, c.feed)
}

// mapStoreError turns store errors into this package's.
func mapStoreError(err error) error {
	var taken *store.AltIDConflictError
	if errors.As(err, &taken) {
		return &NameTakenError{Field: taken.Field, Name: taken.Name, Owner: taken.Owner}
	}
	return err
}
