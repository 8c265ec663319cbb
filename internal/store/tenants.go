package store

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// Tenant is a company using the control plane.
type Tenant struct {
	ID        uuid.UUID `json:"id"`
	Slug      string    `json:"slug"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
}

// Environment is one of a tenant's deployments (production, staging, ...).
type Environment struct {
	ID       uuid.UUID `json:"id"`
	TenantID uuid.UUID `json:"-"`
	Name     string    `json:"name"`
	// Live marks an environment that bills real money: test clocks are refused there.
	// New environments named "production" are live.
	Live      bool      `json:"live"`
	CreatedAt time.Time `json:"created_at"`
}

// CreateTenant inserts a tenant; ErrConflict when the slug is taken.
func CreateTenant(ctx context.Context, db DBTX, slug, name string) (Tenant, error) {
	t := Tenant{ID: uuid.New(), Slug: slug, Name: name}
	err := db.QueryRow(ctx, `insert into tenants (id, slug, name) values ($1, $2, $3) returning created_at`,
		t.ID, slug, name).Scan(&t.CreatedAt)
	if isUniqueViolation(err) {
		return Tenant{}, fmt.Errorf("tenant %q: %w", slug, ErrConflict)
	}
	return t, err
}

// TenantByID loads a tenant.
func TenantByID(ctx context.Context, db DBTX, id uuid.UUID) (Tenant, error) {
	t := Tenant{ID: id}
	err := db.QueryRow(ctx, `select slug, name, created_at from tenants where id = $1`, id).Scan(&t.Slug, &t.Name, &t.CreatedAt)
	return t, notFound(err, "tenant")
}

// TenantBySlug loads a tenant by its slug.
func TenantBySlug(ctx context.Context, db DBTX, slug string) (Tenant, error) {
	t := Tenant{Slug: slug}
	err := db.QueryRow(ctx, `select id, name, created_at from tenants where slug = $1`, slug).Scan(&t.ID, &t.Name, &t.CreatedAt)
	return t, notFound(err, "tenant")
}

// CreateEnvironment adds an environment to a tenant.
func CreateEnvironment(ctx context.Context, db DBTX, tenantID uuid.UUID, name string, live bool) (Environment, error) {
	e := Environment{ID: uuid.New(), TenantID: tenantID, Name: name, Live: live}
	err := db.QueryRow(ctx, `insert into environments (id, tenant_id, name, live) values ($1, $2, $3, $4) returning created_at`,
		e.ID, tenantID, name, e.Live).Scan(&e.CreatedAt)
	if isUniqueViolation(err) {
		return Environment{}, fmt.Errorf("environment %q: %w", name, ErrConflict)
	}
	return e, err
}

// EnvironmentByName finds a tenant's environment.
func EnvironmentByName(ctx context.Context, db DBTX, tenantID uuid.UUID, name string) (Environment, error) {
	e := Environment{TenantID: tenantID, Name: name}
	err := db.QueryRow(ctx, `select id, live, created_at from environments where tenant_id = $1 and name = $2`,
		tenantID, name).Scan(&e.ID, &e.Live, &e.CreatedAt)
	return e, notFound(err, "environment")
}

// EnvironmentByID finds a tenant's environment by id.
func EnvironmentByID(ctx context.Context, db DBTX, tenantID, id uuid.UUID) (Environment, error) {
	e := Environment{TenantID: tenantID, ID: id}
	err := db.QueryRow(ctx, `select name, live, created_at from environments where tenant_id = $1 and id = $2`,
		tenantID, id).Scan(&e.Name, &e.Live, &e.CreatedAt)
	return e, notFound(err, "environment")
}

// ListEnvironments lists a tenant's environments by name.
func ListEnvironments(ctx context.Context, db DBTX, tenantID uuid.UUID) ([]Environment, error) {
	rows, err := db.Query(ctx, `select id, name, live, created_at from environments where tenant_id = $1 order by name`, tenantID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []Environment{}
	for rows.Next() {
		e := Environment{TenantID: tenantID}
		if err := rows.Scan(&e.ID, &e.Name, &e.Live, &e.CreatedAt); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// TestClockTime is the frozen time of one of an environment's test clocks.
func TestClockTime(ctx context.Context, db DBTX, tenantID, envID uuid.UUID, id string) (time.Time, error) {
	var t time.Time
	err := db.QueryRow(ctx, `select frozen_time from test_clocks where tenant_id = $1 and environment_id = $2 and id = $3::uuid`,
		tenantID, envID, id).Scan(&t)
	return t, notFound(err, "test clock")
}
