package pgstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/limitr/limitr/internal/policies"
	"github.com/limitr/limitr/internal/policies/diff"
	"github.com/limitr/limitr/internal/policies/doctree"
	"github.com/limitr/limitr/internal/store"
	"github.com/limitr/limitr/internal/validation"
)

// The policy-versions domain of the control plane: creating versions, publishing and
// rolling back per environment, history and diffs. Each mutation runs in one
// transaction with its change-feed entry (which connected SDKs follow) and its audit
// entry; the Notifier then wakes every replica's feed followers.

// Errors of the service, for errors.Is.
var (
	ErrNoActivePolicy   = errors.New("no policy is published to this environment")
	ErrNoRollbackTarget = errors.New("nothing to roll back to")
	ErrNeverPublished   = errors.New("the version was never published to this environment")
)

// VersionNotFoundError names the missing version; it matches ErrNotFound.
type VersionNotFoundError struct{ Number int }

func (e *VersionNotFoundError) Error() string { return fmt.Sprintf("no policy version %d", e.Number) }

// Is makes it match ErrNotFound.
func (e *VersionNotFoundError) Is(target error) bool { return target == ErrNotFound }

// Notifier is told after a commit that an environment's change feed moved.
type Notifier interface {
	ChangeCommitted(ctx context.Context, tenantID, envID uuid.UUID, changeID int64)
}

// Service is the policy-versions domain.
type Service struct {
	pool   *pgxpool.Pool
	notify Notifier
	cache  *compiledCache
}

// NewService returns the service; notify may be nil (followers then catch up by
// polling).
func NewService(pool *pgxpool.Pool, notify Notifier) *Service {
	return &Service{pool: pool, notify: notify, cache: newCompiledCache(64)}
}

// CreateInput is a policy document to store as a new version.
type CreateInput struct {
	// Format is the document's format; FormatUnknown detects it from the bytes.
	Format doctree.Format
	Source []byte
}

// Validate checks what can be checked before parsing.
func (in CreateInput) Validate() error {
	if len(bytes.TrimSpace(in.Source)) == 0 {
		return validation.New("the policy is empty", "(document)", "send a policy document (JSON, YAML or TOML)")
	}
	return nil
}

// Created is the outcome of Create: the version and where it is published. IsNew is
// false when the tenant's newest version already had the same hash.
type Created struct {
	Version      Version
	Publications []Publication
	IsNew        bool
}

// Create stores a document as the tenant's next version, unless the newest version is
// the same policy (same hash, however it was spelled): then that version comes back,
// so a deploy pipeline can post its policy on every run. An invalid document returns
// the engine's *policies.ValidationError listing every problem with its path.
func (s *Service) Create(ctx context.Context, tenantID uuid.UUID, in CreateInput) (Created, error) {
	if err := in.Validate(); err != nil {
		return Created{}, err
	}
	f := in.Format
	if f == doctree.FormatUnknown {
		f = doctree.Detect(in.Source)
	}
	doc, err := policies.Parse(in.Source, f)
	if err != nil {
		return Created{}, err
	}
	compiled, err := policies.Compile(doc)
	if err != nil {
		return Created{}, err
	}
	canonical, err := doctree.Encode(policies.Tree(doc), doctree.FormatJSON)
	if err != nil {
		return Created{}, fmt.Errorf("pgstore: canonical policy: %w", err)
	}
	if bytes.Contains(canonical, []byte(`\u0000`)) {
		// Postgres cannot store NUL in text or jsonb; no real policy needs one.
		return Created{}, &policies.ValidationError{Problems: []policies.Problem{{Path: "(document)", Message: "strings must not contain NUL characters"}}}
	}
	var out Created
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		v, isNew, err := CreateVersionIfChanged(ctx, tx, tenantID, f.String(), in.Source, canonical, compiled.Hash, store.ActorFrom(ctx).KeyID)
		if err != nil {
			return err
		}
		out.Version, out.IsNew = v, isNew
		if !isNew {
			m, err := PublicationsOfVersions(ctx, tx, tenantID, []uuid.UUID{v.ID})
			out.Publications = m[v.ID]
			return err
		}
		return store.RecordAudit(ctx, tx, store.AuditEntry{TenantID: tenantID, Action: "policy.create", Resource: "policy",
			ResourceID: strconv.Itoa(v.Number)}, nil, v)
	})
	if out.Publications == nil {
		out.Publications = []Publication{}
	}
	return out, err
}

// Get loads a version with its compiled policy and its publications.
func (s *Service) Get(ctx context.Context, tenantID uuid.UUID, number int) (Version, *policies.Policy, []Publication, error) {
	v, err := s.version(ctx, s.pool, tenantID, number)
	if err != nil {
		return Version{}, nil, nil, err
	}
	p, err := s.cache.get(v)
	if err != nil {
		return Version{}, nil, nil, err
	}
	pubs, err := PublicationsOfVersions(ctx, s.pool, tenantID, []uuid.UUID{v.ID})
	if err != nil {
		return Version{}, nil, nil, err
	}
	out := pubs[v.ID]
	if out == nil {
		out = []Publication{}
	}
	return v, p, out, nil
}

// Source loads a version and its compiled policy (to re-encode it).
func (s *Service) Source(ctx context.Context, tenantID uuid.UUID, number int) (Version, *policies.Policy, error) {
	v, err := s.version(ctx, s.pool, tenantID, number)
	if err != nil {
		return Version{}, nil, err
	}
	p, err := s.cache.get(v)
	return v, p, err
}

// SourcesIn loads the compiled policies of a tenant's versions by number, in one query
// through db (a transaction's reads stay on its connection). Unknown numbers are
// absent from the result.
func (s *Service) SourcesIn(ctx context.Context, db DBTX, tenantID uuid.UUID, numbers []int) (map[int]*policies.Policy, error) {
	rows, err := db.Query(ctx, `select `+versionColumns+` from policy_versions where tenant_id = $1 and number = any($2)`, tenantID, numbers)
	if err != nil {
		return nil, err
	}
	var vs []Version
	for rows.Next() {
		v, err := scanVersion(rows)
		if err != nil {
			rows.Close()
			return nil, err
		}
		vs = append(vs, v)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	out := make(map[int]*policies.Policy, len(vs))
	for _, v := range vs {
		p, err := s.cache.get(v)
		if err != nil {
			return nil, fmt.Errorf("pgstore: version %d: %w", v.Number, err)
		}
		out[v.Number] = p
	}
	return out, nil
}

func (s *Service) version(ctx context.Context, db DBTX, tenantID uuid.UUID, number int) (Version, error) {
	v, err := VersionByNumber(ctx, db, tenantID, number)
	if errors.Is(err, ErrNotFound) {
		return Version{}, &VersionNotFoundError{Number: number}
	}
	return v, err
}

// List pages a tenant's versions newest first, before an exclusive version number (0:
// from the newest).
func (s *Service) List(ctx context.Context, tenantID uuid.UUID, before, limit int) ([]VersionSummary, error) {
	return ListVersions(ctx, s.pool, tenantID, before, limit)
}

// Publications pages an environment's publication history newest first.
func (s *Service) Publications(ctx context.Context, env store.Environment, before int64, limit int) ([]Publication, error) {
	return ListPublications(ctx, s.pool, env.TenantID, env.ID, before, limit)
}

// Active is the compiled policy published to an environment and its version;
// ErrNoActivePolicy when nothing is.
func (s *Service) Active(ctx context.Context, env store.Environment) (*policies.Policy, Version, error) {
	v, err := ActiveVersion(ctx, s.pool, env.TenantID, env.ID)
	if errors.Is(err, ErrNotFound) {
		return nil, Version{}, ErrNoActivePolicy
	}
	if err != nil {
		return nil, Version{}, err
	}
	p, err := s.cache.get(v)
	return p, v, err
}

// ActiveRef is the number and hash of the version published to an environment,
// without loading or compiling it; ErrNoActivePolicy when nothing is.
func (s *Service) ActiveRef(ctx context.Context, env store.Environment) (VersionRef, error) {
	hash, number, err := ActiveHash(ctx, s.pool, env.TenantID, env.ID)
	if errors.Is(err, ErrNotFound) {
		return VersionRef{}, ErrNoActivePolicy
	}
	return VersionRef{Number: number, Hash: hash}, err
}

// ActivePolicyIn is ActivePolicy read through db: inside a transaction, so the caller
// does not wait for a second pool connection while it holds one.
func (s *Service) ActivePolicyIn(ctx context.Context, db store.DBTX, env store.Environment) (*policies.Policy, error) {
	v, err := ActiveVersion(ctx, db, env.TenantID, env.ID)
	if errors.Is(err, ErrNotFound) {
		return nil, ErrNoActivePolicy
	}
	if err != nil {
		return nil, err
	}
	return s.cache.get(v)
}

// ActivePolicy is Active without the version.
func (s *Service) ActivePolicy(ctx context.Context, env store.Environment) (*policies.Policy, error) {
	p, _, err := s.Active(ctx, env)
	return p, err
}

// ActiveByName resolves an environment by name and its active version's identity in
// one indexed query, without loading the document: the SDK's poll path.
func (s *Service) ActiveByName(ctx context.Context, tenantID uuid.UUID, name string) (Active, error) {
	return ActiveByEnvironmentName(ctx, s.pool, tenantID, name)
}

// PublishInput names the version to make active.
type PublishInput struct {
	Version *int `json:"version"`
}

// Validate requires a version number.
func (in PublishInput) Validate() error {
	if in.Version == nil || *in.Version < 1 || *in.Version > maxVersion {
		return validation.New("invalid publish request", "version", "is required: the number of the version to publish")
	}
	return nil
}

// RollbackInput optionally names the version to return to; without one, the most
// recently published version other than the active one.
type RollbackInput struct {
	Version *int `json:"version"`
}

// Validate checks the version number when there is one.
func (in RollbackInput) Validate() error {
	if in.Version != nil && (*in.Version < 1 || *in.Version > maxVersion) {
		return validation.New("invalid rollback request", "version", "must be a version number (1, 2, 3, ...) or left out")
	}
	return nil
}

const maxVersion = 1<<31 - 1

// Outcome is the result of a publish or rollback. Changed is false when the version
// was already active: nothing was written and Publication is nil.
type Outcome struct {
	Environment     string       `json:"environment"`
	Version         int          `json:"version"`
	Hash            string       `json:"hash"`
	PreviousVersion *int         `json:"previous_version"`
	Changed         bool         `json:"changed"`
	Publication     *Publication `json:"publication"`
}

// auditedVersion is the before/after of a publication in the audit log.
type auditedVersion struct {
	Version int    `json:"version"`
	Hash    string `json:"hash"`
}

// Publish makes a version active in an environment.
func (s *Service) Publish(ctx context.Context, env store.Environment, in PublishInput) (Outcome, error) {
	if err := in.Validate(); err != nil {
		return Outcome{}, err
	}
	return s.setActive(ctx, env, ActionPublish, func(tx pgx.Tx) (Version, error) {
		return s.version(ctx, tx, env.TenantID, *in.Version)
	})
}

// Rollback makes an earlier version active again. A named version must have been
// active in the environment before (ErrNeverPublished); without one the target is the
// most recently published version other than the active one, so two rollbacks in a
// row undo each other (ErrNoRollbackTarget when there is none).
func (s *Service) Rollback(ctx context.Context, env store.Environment, in RollbackInput) (Outcome, error) {
	if err := in.Validate(); err != nil {
		return Outcome{}, err
	}
	return s.setActive(ctx, env, ActionRollback, func(tx pgx.Tx) (Version, error) {
		if _, err := LockEnvironment(ctx, tx, env.TenantID, env.ID); err != nil {
			return Version{}, err
		}
		if in.Version == nil {
			v, err := RollbackTarget(ctx, tx, env.TenantID, env.ID)
			if errors.Is(err, ErrNotFound) {
				return v, fmt.Errorf("%w: no other version was ever published to %q", ErrNoRollbackTarget, env.Name)
			}
			return v, err
		}
		v, err := s.version(ctx, tx, env.TenantID, *in.Version)
		if err != nil {
			return v, err
		}
		was, err := WasPublished(ctx, tx, env.TenantID, env.ID, v.ID)
		if err != nil {
			return v, err
		}
		if !was {
			return v, fmt.Errorf("%w: version %d was never published to %q: publish it instead", ErrNeverPublished, v.Number, env.Name)
		}
		return v, nil
	})
}

// setActive points an environment at the version target picks, in one transaction
// with the publication record, the change-feed entry and the audit entry; then wakes
// the feed's followers.
func (s *Service) setActive(ctx context.Context, env store.Environment, action string, target func(tx pgx.Tx) (Version, error)) (Outcome, error) {
	var out Outcome
	var changeID int64
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		v, err := target(tx)
		if err != nil {
			return err
		}
		res, err := Publish(ctx, tx, env.TenantID, env.ID, v, action, store.ActorFrom(ctx).KeyID)
		if err != nil {
			return err
		}
		out = Outcome{Environment: env.Name, Version: v.Number, Hash: v.Hash, Changed: res.Publication != nil, Publication: res.Publication}
		var before any
		if res.Previous != nil {
			n := res.Previous.Number
			out.PreviousVersion = &n
			before = auditedVersion{Version: res.Previous.Number, Hash: res.Previous.Hash}
		}
		if !out.Changed {
			return nil
		}
		after := auditedVersion{Version: v.Number, Hash: v.Hash}
		if changeID, err = store.AppendChange(ctx, tx, env.TenantID, env.ID, "policy", strconv.Itoa(v.Number), after); err != nil {
			return err
		}
		return store.RecordAudit(ctx, tx, store.AuditEntry{TenantID: env.TenantID, EnvironmentID: &env.ID,
			Action: "policy." + action, Resource: "environment_policy", ResourceID: env.Name}, before, after)
	})
	if err != nil {
		return Outcome{}, err
	}
	if out.Changed && s.notify != nil {
		s.notify.ChangeCommitted(ctx, env.TenantID, env.ID, changeID)
	}
	return out, nil
}

// VersionRef names a version in a diff.
type VersionRef struct {
	Number int    `json:"number"`
	Hash   string `json:"hash"`
}

// DiffResult is a structural diff of two versions (its sections at the top level).
type DiffResult struct {
	From VersionRef `json:"from"`
	To   VersionRef `json:"to"`
	// Empty is true when nothing the engine reads differs (the hashes may still
	// differ, for example when only the spelling of a number changed).
	Empty bool `json:"empty"`
	*diff.Diff
}

// Diff compares two of a tenant's versions.
func (s *Service) Diff(ctx context.Context, tenantID uuid.UUID, from, to int) (DiffResult, error) {
	var docs [2]*policies.Document
	var refs [2]VersionRef
	for i, n := range [2]int{from, to} {
		v, p, err := s.Source(ctx, tenantID, n)
		if err != nil {
			return DiffResult{}, err
		}
		docs[i], refs[i] = p.Doc, VersionRef{Number: v.Number, Hash: v.Hash}
	}
	d := diff.Documents(docs[0], docs[1])
	return DiffResult{From: refs[0], To: refs[1], Empty: d.Empty(), Diff: d}, nil
}

// compiledCache keeps compiled policy versions by hash: a version is immutable, so an
// entry never goes stale; the cache only bounds memory.
type compiledCache struct {
	mu    sync.Mutex
	max   int
	m     map[string]*policies.Policy
	order []string
}

func newCompiledCache(max int) *compiledCache {
	return &compiledCache{max: max, m: map[string]*policies.Policy{}}
}

func (c *compiledCache) get(v Version) (*policies.Policy, error) {
	c.mu.Lock()
	p := c.m[v.Hash]
	c.mu.Unlock()
	if p != nil {
		return p, nil
	}
	f, err := doctree.ParseFormat(v.Format)
	if err != nil {
		f = doctree.FormatUnknown
	}
	p, err = policies.Load(v.Source, f)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[v.Hash]; !ok {
		if len(c.order) >= c.max {
			delete(c.m, c.order[0])
			c.order = c.order[1:]
		}
		c.m[v.Hash] = p
		c.order = append(c.order, v.Hash)
	}
	return p, nil
}
