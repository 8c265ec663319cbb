// Package pgstore keeps policy versions in Postgres. It lives apart from package
// policies so the SDK, which imports policies, never links a database driver.
package pgstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ErrNotFound is returned for a version or publication that does not exist.
var ErrNotFound = errors.New("policy version not found")

// DBTX is the pool or a transaction.
type DBTX interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Version is an immutable policy version.
type Version struct {
	ID        uuid.UUID       `json:"id"`
	TenantID  uuid.UUID       `json:"-"`
	Number    int             `json:"number"`
	Hash      string          `json:"hash"`
	Format    string          `json:"format"`
	Source    []byte          `json:"-"`
	Canonical json.RawMessage `json:"-"`
	CreatedAt time.Time       `json:"created_at"`
	CreatedBy *uuid.UUID      `json:"created_by,omitempty"`
}

const versionColumns = `id, tenant_id, number, hash, format, source, canonical, created_at, created_by`

func scanVersion(row interface{ Scan(...any) error }) (Version, error) {
	var v Version
	err := row.Scan(&v.ID, &v.TenantID, &v.Number, &v.Hash, &v.Format, &v.Source, &v.Canonical, &v.CreatedAt, &v.CreatedBy)
	if errors.Is(err, pgx.ErrNoRows) {
		return Version{}, ErrNotFound
	}
	return v, err
}

// CreateVersion stores a new version numbered after the tenant's latest. The tenant row
// is locked so concurrent creations number consecutively.
func CreateVersion(ctx context.Context, db DBTX, tenantID uuid.UUID, format string, source, canonical []byte, hash string, createdBy *uuid.UUID) (Version, error) {
	if _, err := db.Exec(ctx, `select 1 from tenants where id = $1 for update`, tenantID); err != nil {
		return Version{}, fmt.Errorf("pgstore: lock tenant: %w", err)
	}
	return scanVersion(db.QueryRow(ctx, `insert into policy_versions (id, tenant_id, number, hash, format, source, canonical, created_by)
		values ($1, $2, coalesce((select max(number) from policy_versions where tenant_id = $2), 0) + 1, $3, $4, $5, $6, $7)
		returning `+versionColumns, uuid.New(), tenantID, hash, format, source, canonical, createdBy))
}

// VersionByNumber loads one of a tenant's versions.
func VersionByNumber(ctx context.Context, db DBTX, tenantID uuid.UUID, number int) (Version, error) {
	return scanVersion(db.QueryRow(ctx, `select `+versionColumns+` from policy_versions where tenant_id = $1 and number = $2`, tenantID, number))
}

// VersionByID loads one of a tenant's versions by id.
func VersionByID(ctx context.Context, db DBTX, tenantID, id uuid.UUID) (Version, error) {
	return scanVersion(db.QueryRow(ctx, `select `+versionColumns+` from policy_versions where tenant_id = $1 and id = $2`, tenantID, id))
}

// ActiveVersion is the version published to an environment.
func ActiveVersion(ctx context.Context, db DBTX, tenantID, envID uuid.UUID) (Version, error) {
	return scanVersion(db.QueryRow(ctx, `select `+prefixed("v.")+` from environment_policies ep
		join policy_versions v on v.tenant_id = ep.tenant_id and v.id = ep.version_id
		where ep.tenant_id = $1 and ep.environment_id = $2`, tenantID, envID))
}

// ActiveHash is the hash of the active version, for cheap ETag checks.
func ActiveHash(ctx context.Context, db DBTX, tenantID, envID uuid.UUID) (string, int, error) {
	var hash string
	var number int
	err := db.QueryRow(ctx, `select v.hash, v.number from environment_policies ep
		join policy_versions v on v.tenant_id = ep.tenant_id and v.id = ep.version_id
		where ep.tenant_id = $1 and ep.environment_id = $2`, tenantID, envID).Scan(&hash, &number)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", 0, ErrNotFound
	}
	return hash, number, err
}

func prefixed(p string) string {
	return p + "id, " + p + "tenant_id, " + p + "number, " + p + "hash, " + p + "format, " + p + "source, " + p + "canonical, " + p + "created_at, " + p + "created_by"
}
