// Package tenancy is the control plane's tenancy domain: tenants, their environments and
// their API keys. Its Service takes validated inputs, runs each change in one transaction
// with its audit record, and keeps the rules that protect a tenant, such as never
// revoking its last admin key. HTTP handlers (internal/api) and the limitr CLI both go
// through it.
package tenancy

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/limitr/limitr/internal/store"
)

// The records are the store's; the aliases let callers name them from this package.
type (
	Tenant       = store.Tenant
	Environment  = store.Environment
	APIKey       = store.APIKey
	AuditEntry   = store.AuditEntry
	Bootstrapped = store.Bootstrapped
)

// maxQuotedName bounds a name quoted back in a not-found error.
const maxQuotedName = 256

// CreatedKey is a new key with its secret, which is shown once and never stored.
type CreatedKey struct {
	APIKey
	Secret string `json:"secret"`
}

// AuditPage is a page of the audit log, newest first.
type AuditPage struct {
	Entries []AuditEntry
	// NextCursor is the Before of the next page; 0 on the last page.
	NextCursor int64
}

// Service runs tenancy operations against Postgres.
type Service struct {
	pool  *pgxpool.Pool
	store *store.Store
}

// NewService returns a service on pool.
func NewService(pool *pgxpool.Pool) *Service {
	return &Service{pool: pool, store: store.New(pool)}
}

// CreateTenant creates a tenant with the default environments and a first admin key, in
// one transaction, and records it in the audit log. A taken slug is ErrConflict.
func (s *Service) CreateTenant(ctx context.Context, in CreateTenantInput) (Bootstrapped, error) {
	if err := in.Validate(); err != nil {
		return Bootstrapped{}, err
	}
	name := in.Name
	if name == "" {
		name = in.Slug
	}
	var out Bootstrapped
	err := s.store.InTx(ctx, func(tx pgx.Tx) error {
		t, err := store.CreateTenant(ctx, tx, in.Slug, name)
		if err != nil {
			return resourceErr(err, ResourceTenant, in.Slug)
		}
		out.Tenant = t
		for _, env := range store.DefaultEnvironments {
			e, err := store.CreateEnvironment(ctx, tx, t.ID, env, env == "production")
			if err != nil {
				return err
			}
			out.Environments = append(out.Environments, e)
		}
		out.AdminKey, out.Secret, err = store.CreateKey(ctx, tx, t.ID, KindAdmin, nil, "bootstrap", nil)
		if err != nil {
			return err
		}
		return audit(ctx, tx, t.ID, nil, "tenant.bootstrap", "tenant", t.ID.String(),
			nil, map[string]any{"tenant": t, "admin_key": out.AdminKey})
	})
	if err != nil {
		return Bootstrapped{}, fmt.Errorf("tenancy: create tenant: %w", err)
	}
	return out, nil
}

// Tenant loads a tenant.
func (s *Service) Tenant(ctx context.Context, id uuid.UUID) (Tenant, error) {
	t, err := store.TenantByID(ctx, s.pool, id)
	if err != nil {
		return Tenant{}, fmt.Errorf("tenancy: %w", resourceErr(err, ResourceTenant, ""))
	}
	return t, nil
}

// TenantBySlug loads a tenant by its slug.
func (s *Service) TenantBySlug(ctx context.Context, slug string) (Tenant, error) {
	t, err := store.TenantBySlug(ctx, s.pool, slug)
	if err != nil {
		return Tenant{}, fmt.Errorf("tenancy: %w", resourceErr(err, ResourceTenant, slug))
	}
	return t, nil
}

// ListEnvironments lists a tenant's environments by name.
func (s *Service) ListEnvironments(ctx context.Context, tenantID uuid.UUID) ([]Environment, error) {
	envs, err := store.ListEnvironments(ctx, s.pool, tenantID)
	if err != nil {
		return nil, fmt.Errorf("tenancy: list environments: %w", err)
	}
	return envs, nil
}

// CreateEnvironment adds an environment; a taken name is ErrConflict.
func (s *Service) CreateEnvironment(ctx context.Context, in CreateEnvironmentInput) (Environment, error) {
	if err := in.Validate(); err != nil {
		return Environment{}, err
	}
	var env Environment
	err := s.store.InTx(ctx, func(tx pgx.Tx) error {
		var err error
		live := in.Name == "production"
		if in.Live != nil {
			live = *in.Live
		}
		if env, err = store.CreateEnvironment(ctx, tx, in.TenantID, in.Name, live); err != nil {
			return resourceErr(err, ResourceEnvironment, in.Name)
		}
		return audit(ctx, tx, in.TenantID, &env.ID, "environment.create", "environment", env.ID.String(), nil, env)
	})
	if err != nil {
		return Environment{}, fmt.Errorf("tenancy: create environment: %w", err)
	}
	return env, nil
}

// ListKeys lists a tenant's keys, newest first, revoked ones included.
func (s *Service) ListKeys(ctx context.Context, tenantID uuid.UUID) ([]APIKey, error) {
	keys, err := store.ListKeys(ctx, s.pool, tenantID)
	if err != nil {
		return nil, fmt.Errorf("tenancy: list keys: %w", err)
	}
	return keys, nil
}

// CreateKey makes a key and returns it with its secret. The environment of an SDK key
// must exist (ErrNotFound otherwise).
func (s *Service) CreateKey(ctx context.Context, in CreateKeyInput) (CreatedKey, error) {
	if err := in.Validate(); err != nil {
		return CreatedKey{}, err
	}
	var out CreatedKey
	err := s.store.InTx(ctx, func(tx pgx.Tx) error {
		var env *Environment
		if in.Kind == KindSDK {
			e, err := environmentByName(ctx, tx, in.TenantID, in.Environment)
			if err != nil {
				return err
			}
			env = &e
		}
		k, secret, err := store.CreateKey(ctx, tx, in.TenantID, in.Kind, env, in.Name, store.ActorFrom(ctx).KeyID)
		if err != nil {
			return err
		}
		out = CreatedKey{APIKey: k, Secret: secret}
		return audit(ctx, tx, in.TenantID, k.EnvironmentID, "key.create", "api_key", k.ID.String(), nil, k)
	})
	if err != nil {
		return CreatedKey{}, fmt.Errorf("tenancy: create key: %w", err)
	}
	return out, nil
}

// RevokeKey revokes a key; revoking it again changes nothing and returns it as it is.
// Revoking the tenant's last active admin key is ErrLastAdminKey: the tenant would be
// locked out.
//
// The tenant's row is locked for the transaction, so revocations of one tenant's keys
// run one at a time: two admins revoking each other's keys at the same moment cannot
// both see "another admin key is left" and both succeed. FOR NO KEY UPDATE, unlike FOR
// UPDATE, does not block the foreign-key checks of inserts that reference the tenant.
func (s *Service) RevokeKey(ctx context.Context, in RevokeKeyInput) (APIKey, error) {
	if err := in.Validate(); err != nil {
		return APIKey{}, err
	}
	var after APIKey
	err := s.store.InTx(ctx, func(tx pgx.Tx) error {
		var locked uuid.UUID
		err := tx.QueryRow(ctx, `select id from tenants where id = $1 for no key update`, in.TenantID).Scan(&locked)
		if err != nil {
			return resourceErr(err, ResourceKey, "")
		}
		before, err := store.KeyByID(ctx, tx, in.TenantID, in.KeyID)
		if err != nil {
			return resourceErr(err, ResourceKey, "")
		}
		if before.RevokedAt != nil {
			after = before
			return nil // nothing changes, nothing to audit
		}
		if before.Kind == KindAdmin {
			var others int
			if err := tx.QueryRow(ctx, `select count(*) from api_keys
				where tenant_id = $1 and kind = 'admin' and revoked_at is null and id <> $2`,
				in.TenantID, in.KeyID).Scan(&others); err != nil {
				return err
			}
			if others == 0 {
				return ErrLastAdminKey
			}
		}
		if after, err = store.RevokeKey(ctx, tx, in.TenantID, in.KeyID); err != nil {
			return resourceErr(err, ResourceKey, "")
		}
		return audit(ctx, tx, in.TenantID, before.EnvironmentID, "key.revoke", "api_key", in.KeyID.String(), before, after)
	})
	if err != nil {
		return APIKey{}, fmt.Errorf("tenancy: revoke key: %w", err)
	}
	return after, nil
}

// ListAudit returns a page of the tenant's audit log, newest first.
func (s *Service) ListAudit(ctx context.Context, in ListAuditInput) (AuditPage, error) {
	if err := in.Validate(); err != nil {
		return AuditPage{}, err
	}
	entries, err := store.ListAudit(ctx, s.pool, in.TenantID, in.Before, in.Limit+1)
	if err != nil {
		return AuditPage{}, fmt.Errorf("tenancy: list audit: %w", err)
	}
	page := AuditPage{Entries: entries}
	if len(entries) > in.Limit {
		page.Entries = entries[:in.Limit]
		page.NextCursor = entries[in.Limit-1].ID
	}
	return page, nil
}

// environmentByName resolves an environment. A name too long or too odd to be quoted back
// (it may be anything the caller sent) gives an ErrNotFound without the name.
func environmentByName(ctx context.Context, db store.DBTX, tenantID uuid.UUID, name string) (Environment, error) {
	if len(name) > maxQuotedName || strings.ContainsAny(name, "\x00\r\n\t/") {
		return Environment{}, &ResourceError{Err: ErrNotFound, Resource: ResourceEnvironment}
	}
	e, err := store.EnvironmentByName(ctx, db, tenantID, name)
	if err != nil {
		return Environment{}, resourceErr(err, ResourceEnvironment, name)
	}
	return e, nil
}

// audit records a change in the same transaction as the change, by the actor ctx
// carries (store.WithActor).
func audit(ctx context.Context, tx pgx.Tx, tenantID uuid.UUID, env *uuid.UUID, action, resource, id string, before, after any) error {
	return store.RecordAudit(ctx, tx, store.AuditEntry{TenantID: tenantID, EnvironmentID: env,
		Action: action, Resource: resource, ResourceID: id}, before, after)
}

// resourceErr turns the store's not-found and conflict errors into this package's,
// naming the resource; other errors pass through.
func resourceErr(err error, resource, name string) error {
	switch {
	case errors.Is(err, store.ErrNotFound) || errors.Is(err, pgx.ErrNoRows):
		return &ResourceError{Err: ErrNotFound, Resource: resource, Name: name}
	case errors.Is(err, store.ErrConflict):
		return &ResourceError{Err: ErrConflict, Resource: resource, Name: name}
	}
	return err
}
