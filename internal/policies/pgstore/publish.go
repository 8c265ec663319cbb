package pgstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// Publication actions.
const (
	ActionPublish  = "publish"
	ActionRollback = "rollback"
)

// Publication is one time a version became active in an environment.
type Publication struct {
	ID            int64      `json:"id"`
	EnvironmentID uuid.UUID  `json:"-"`
	Environment   string     `json:"environment"`
	VersionID     uuid.UUID  `json:"-"`
	Version       int        `json:"version"`
	Hash          string     `json:"hash"`
	Action        string     `json:"action"`
	PublishedAt   time.Time  `json:"published_at"`
	PublishedBy   *uuid.UUID `json:"published_by,omitempty"`
}

const publicationSelect = `select p.id, p.environment_id, e.name, p.version_id, v.number, v.hash, p.action, p.published_at, p.published_by
	from policy_publications p
	join environments e on e.tenant_id = p.tenant_id and e.id = p.environment_id
	join policy_versions v on v.tenant_id = p.tenant_id and v.id = p.version_id`

func scanPublications(rows pgx.Rows) ([]Publication, error) {
	defer rows.Close()
	out := []Publication{}
	for rows.Next() {
		var p Publication
		if err := rows.Scan(&p.ID, &p.EnvironmentID, &p.Environment, &p.VersionID, &p.Version, &p.Hash, &p.Action, &p.PublishedAt, &p.PublishedBy); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// VersionSummary is a version with where and when it was published, for listings.
type VersionSummary struct {
	Version
	Publications []Publication `json:"publications"`
}

// LatestVersion is the tenant's newest version.
func LatestVersion(ctx context.Context, db DBTX, tenantID uuid.UUID) (Version, error) {
	return scanVersion(db.QueryRow(ctx, `select `+versionColumns+` from policy_versions where tenant_id = $1 order by number desc limit 1`, tenantID))
}

// CreateVersionIfChanged is CreateVersion unless the tenant's newest version already has
// this hash, in which case it returns that version and created=false. Run it in a
// transaction: the tenant row lock makes the check and the insert atomic.
func CreateVersionIfChanged(ctx context.Context, db DBTX, tenantID uuid.UUID, format string, source, canonical []byte, hash string, createdBy *uuid.UUID) (Version, bool, error) {
	if _, err := db.Exec(ctx, `select 1 from tenants where id = $1 for update`, tenantID); err != nil {
		return Version{}, false, fmt.Errorf("pgstore: lock tenant: %w", err)
	}
	latest, err := LatestVersion(ctx, db, tenantID)
	switch {
	case err == nil && latest.Hash == hash:
		return latest, false, nil
	case err != nil && !errors.Is(err, ErrNotFound):
		return Version{}, false, err
	}
	v, err := CreateVersion(ctx, db, tenantID, format, source, canonical, hash, createdBy)
	return v, err == nil, err
}

// ListVersions pages a tenant's versions newest first, without their documents.
// beforeNumber is an exclusive cursor (0 starts at the newest).
func ListVersions(ctx context.Context, db DBTX, tenantID uuid.UUID, beforeNumber, limit int) ([]VersionSummary, error) {
	if beforeNumber <= 0 {
		beforeNumber = 1<<31 - 1
	}
	rows, err := db.Query(ctx, `select id, tenant_id, number, hash, format, created_at, created_by
		from policy_versions where tenant_id = $1 and number < $2 order by number desc limit $3`, tenantID, beforeNumber, limit)
	if err != nil {
		return nil, err
	}
	var out []VersionSummary
	var ids []uuid.UUID
	func() {
		defer rows.Close()
		for rows.Next() {
			var v Version
			if err = rows.Scan(&v.ID, &v.TenantID, &v.Number, &v.Hash, &v.Format, &v.CreatedAt, &v.CreatedBy); err != nil {
				return
			}
			out = append(out, VersionSummary{Version: v, Publications: []Publication{}})
			ids = append(ids, v.ID)
		}
		err = rows.Err()
	}()
	if err != nil {
		return nil, err
	}
	if len(ids) == 0 {
		return []VersionSummary{}, nil
	}
	pubs, err := PublicationsOfVersions(ctx, db, tenantID, ids)
	if err != nil {
		return nil, err
	}
	for i := range out {
		if ps := pubs[out[i].ID]; ps != nil {
			out[i].Publications = ps
		}
	}
	return out, nil
}

// PublicationsOfVersions returns the publications of the given versions, newest first.
func PublicationsOfVersions(ctx context.Context, db DBTX, tenantID uuid.UUID, versionIDs []uuid.UUID) (map[uuid.UUID][]Publication, error) {
	rows, err := db.Query(ctx, publicationSelect+` where p.tenant_id = $1 and p.version_id = any($2) order by p.id desc`, tenantID, versionIDs)
	if err != nil {
		return nil, err
	}
	pubs, err := scanPublications(rows)
	if err != nil {
		return nil, err
	}
	out := make(map[uuid.UUID][]Publication, len(versionIDs))
	for _, p := range pubs {
		out[p.VersionID] = append(out[p.VersionID], p)
	}
	return out, nil
}

// ListPublications pages an environment's publication history newest first; beforeID
// is an exclusive cursor (0 starts at the newest).
func ListPublications(ctx context.Context, db DBTX, tenantID, envID uuid.UUID, beforeID int64, limit int) ([]Publication, error) {
	if beforeID <= 0 {
		beforeID = 1<<63 - 1
	}
	rows, err := db.Query(ctx, publicationSelect+` where p.tenant_id = $1 and p.environment_id = $2 and p.id < $3 order by p.id desc limit $4`,
		tenantID, envID, beforeID, limit)
	if err != nil {
		return nil, err
	}
	return scanPublications(rows)
}

// Active is what an environment serves: its id and, when a policy is published, the
// active version's id, number and hash.
type Active struct {
	EnvironmentID uuid.UUID
	VersionID     *uuid.UUID
	Number        int
	Hash          string
}

// ActiveByEnvironmentName resolves an environment by name and its active version's
// identity in one indexed query, without loading the document: the SDK's poll path.
// ErrNotFound means no such environment; an environment with nothing published has a
// nil VersionID.
func ActiveByEnvironmentName(ctx context.Context, db DBTX, tenantID uuid.UUID, name string) (Active, error) {
	var a Active
	var number *int
	var hash *string
	err := db.QueryRow(ctx, `select e.id, v.id, v.number, v.hash from environments e
		left join environment_policies ep on ep.tenant_id = e.tenant_id and ep.environment_id = e.id
		left join policy_versions v on v.tenant_id = ep.tenant_id and v.id = ep.version_id
		where e.tenant_id = $1 and e.name = $2`, tenantID, name).Scan(&a.EnvironmentID, &a.VersionID, &number, &hash)
	if errors.Is(err, pgx.ErrNoRows) {
		return Active{}, ErrNotFound
	}
	if err != nil {
		return Active{}, err
	}
	if number != nil {
		a.Number = *number
	}
	if hash != nil {
		a.Hash = *hash
	}
	return a, nil
}

// LockEnvironment takes the environment's row lock for the rest of the transaction, so
// concurrent publishes and rollbacks of one environment serialise and each sees the
// version the other left active. It returns the environment's name; ErrNotFound if the
// tenant has no such environment.
func LockEnvironment(ctx context.Context, tx pgx.Tx, tenantID, envID uuid.UUID) (string, error) {
	var name string
	err := tx.QueryRow(ctx, `select name from environments where tenant_id = $1 and id = $2 for update`, tenantID, envID).Scan(&name)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", ErrNotFound
	}
	return name, err
}

// RollbackTarget is the version to roll an environment back to by default: the most
// recently published version other than the active one. Rolling back twice therefore
// returns to where it started, like `kubectl rollout undo`. ErrNotFound when the
// environment never had another version.
func RollbackTarget(ctx context.Context, db DBTX, tenantID, envID uuid.UUID) (Version, error) {
	return scanVersion(db.QueryRow(ctx, `select `+prefixed("v.")+` from policy_publications p
		join policy_versions v on v.tenant_id = p.tenant_id and v.id = p.version_id
		where p.tenant_id = $1 and p.environment_id = $2
		  and p.version_id is distinct from (select version_id from environment_policies where tenant_id = $1 and environment_id = $2)
		order by p.id desc limit 1`, tenantID, envID))
}

// WasPublished reports whether a version was ever active in an environment.
func WasPublished(ctx context.Context, db DBTX, tenantID, envID, versionID uuid.UUID) (bool, error) {
	var ok bool
	err := db.QueryRow(ctx, `select exists (select 1 from policy_publications where tenant_id = $1 and environment_id = $2 and version_id = $3)`,
		tenantID, envID, versionID).Scan(&ok)
	return ok, err
}

// Published is the outcome of Publish.
type Published struct {
	// Previous is the version that was active before, nil if none.
	Previous *Version
	// Publication is the new history row; nil when the version was already active
	// (nothing changed and nothing was written).
	Publication *Publication
}

// Publish makes a version the environment's active one and records it in the history,
// in the caller's transaction (which it locks the environment in). Publishing the
// version that is already active changes nothing. The version must be the tenant's.
func Publish(ctx context.Context, tx pgx.Tx, tenantID, envID uuid.UUID, v Version, action string, by *uuid.UUID) (Published, error) {
	if action != ActionPublish && action != ActionRollback {
		return Published{}, fmt.Errorf("pgstore: unknown publication action %q", action)
	}
	if v.TenantID != tenantID {
		return Published{}, ErrNotFound
	}
	envName, err := LockEnvironment(ctx, tx, tenantID, envID)
	if err != nil {
		return Published{}, err
	}
	var out Published
	prev, err := ActiveVersion(ctx, tx, tenantID, envID)
	switch {
	case err == nil:
		prev.Source, prev.Canonical = nil, nil
		out.Previous = &prev
		if prev.ID == v.ID {
			return out, nil
		}
	case !errors.Is(err, ErrNotFound):
		return Published{}, err
	}
	if _, err := tx.Exec(ctx, `insert into environment_policies (tenant_id, environment_id, version_id) values ($1, $2, $3)
		on conflict (tenant_id, environment_id) do update set version_id = excluded.version_id, updated_at = now()`,
		tenantID, envID, v.ID); err != nil {
		return Published{}, fmt.Errorf("pgstore: set active version: %w", err)
	}
	var id int64
	var at time.Time
	if err := tx.QueryRow(ctx, `insert into policy_publications (tenant_id, environment_id, version_id, action, published_by)
		values ($1, $2, $3, $4, $5) returning id, published_at`, tenantID, envID, v.ID, action, by).Scan(&id, &at); err != nil {
		return Published{}, fmt.Errorf("pgstore: record publication: %w", err)
	}
	out.Publication = &Publication{ID: id, EnvironmentID: envID, Environment: envName, VersionID: v.ID, Version: v.Number,
		Hash: v.Hash, Action: action, PublishedAt: at, PublishedBy: by}
	return out, nil
}
