// Package simulate is the control plane's what-if replay: a simulation prices the
// committed usage of a window under a candidate policy, next to the active one, with
// internal/analytics/replay (billing's own rating). A simulation is a row in
// `simulations` and a River job on the "simulations" queue inserted in the same
// transaction; the job loads the usage, runs the replay and stores the report.
package simulate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/limitr/limitr/internal/analytics/replay"
	"github.com/limitr/limitr/internal/billing"
	"github.com/limitr/limitr/internal/policies"
	"github.com/limitr/limitr/internal/policies/doctree"
	"github.com/limitr/limitr/internal/policies/pgstore"
	"github.com/limitr/limitr/internal/store"
	"github.com/limitr/limitr/internal/validation"
)

// Errors, for errors.Is. Invalid input is a *validation.Error (ErrInvalid), an invalid
// candidate document a *policies.ValidationError.
var (
	ErrNotFound = errors.New("no such simulation")
	// ErrNoPolicy: the environment has no active policy to compare with.
	ErrNoPolicy = errors.New("no policy is published to this environment")
)

// Statuses of a simulation.
const (
	StatusQueued    = "queued"
	StatusRunning   = "running"
	StatusSucceeded = "succeeded"
	StatusFailed    = "failed"
)

// Queue is the River queue simulations run on.
const Queue = "simulations"

// maxDocumentBytes bounds a candidate document sent inline.
const maxDocumentBytes = 512 << 10

// JobInserter queues River jobs in a transaction (*river.Client[pgx.Tx] is one).
type JobInserter interface {
	InsertManyTx(ctx context.Context, tx pgx.Tx, params []river.InsertManyParams) ([]*rivertype.JobInsertResult, error)
}

// Policies reads policy versions.
type Policies interface {
	Source(ctx context.Context, tenantID uuid.UUID, number int) (pgstore.Version, *policies.Policy, error)
	Active(ctx context.Context, env store.Environment) (*policies.Policy, pgstore.Version, error)
}

// Billing loads what a replay rates: settings and customers with their usage.
type Billing interface {
	Settings(ctx context.Context, env store.Environment) (billing.Settings, error)
	ReplayCustomers(ctx context.Context, env store.Environment, p *policies.Policy, after string, limit int, until time.Time) ([]billing.ReplayCustomer, error)
}

// Service is the simulations domain.
type Service struct {
	pool     *pgxpool.Pool
	jobs     JobInserter
	policies Policies
	billing  Billing
	now      func() time.Time
}

// New returns the service; jobs may be nil for a service that only runs simulations
// (a worker's) or computes them synchronously.
func New(pool *pgxpool.Pool, jobs JobInserter, pols Policies, bill Billing) *Service {
	return &Service{pool: pool, jobs: jobs, policies: pols, billing: bill, now: time.Now}
}

// SetClock replaces the time the default window is reckoned from (tests).
func (s *Service) SetClock(now func() time.Time) { s.now = now }

// CreateInput asks for a simulation: a candidate (a saved version, or a document) and
// an optional window (default: the last full calendar month, see replay.LastFullMonth).
type CreateInput struct {
	Version  *int   `json:"version,omitempty"`
	Document string `json:"document,omitempty"`
	// BaselineVersion, when set, stands for the active version as what the usage is
	// billed with.
	BaselineVersion *int       `json:"baseline_version,omitempty"`
	From            *time.Time `json:"from,omitempty"`
	To              *time.Time `json:"to,omitempty"`
}

const maxVersion = 1<<31 - 1

// Validate checks every field, naming it; the document itself is checked by
// prepare (its problems are the policy's, with their document paths).
func (in CreateInput) Validate() error {
	var errs validation.Errors
	switch {
	case in.Version == nil && len(bytes.TrimSpace([]byte(in.Document))) == 0:
		errs.Add("version", "is required unless a document is sent: the version to simulate")
	case in.Version != nil && in.Document != "":
		errs.Add("document", "must be left out when a version is named")
	case in.Version != nil && (*in.Version < 1 || *in.Version > maxVersion):
		errs.Add("version", "must be a version number (1, 2, 3, ...)")
	case len(in.Document) > maxDocumentBytes:
		errs.Add("document", fmt.Sprintf("must be at most %d bytes", maxDocumentBytes))
	}
	if in.BaselineVersion != nil && (*in.BaselineVersion < 1 || *in.BaselineVersion > maxVersion) {
		errs.Add("baseline_version", "must be a version number (1, 2, 3, ...) or left out")
	}
	switch {
	case (in.From == nil) != (in.To == nil):
		if in.From == nil {
			errs.Add("from", "is required with to")
		} else {
			errs.Add("to", "is required with from")
		}
	case in.From != nil && !in.From.Before(*in.To):
		errs.Add("to", "must be after from")
	case in.From != nil && in.To.Sub(*in.From) > replay.MaxWindow:
		errs.Add("to", "must be at most 367 days after from")
	}
	return errs.Err("invalid simulation")
}

// Simulation is a simulation as the API shows it.
type Simulation struct {
	ID               uuid.UUID      `json:"id"`
	Environment      string         `json:"environment"`
	Status           string         `json:"status"`
	Error            string         `json:"error,omitempty"`
	CandidateVersion *int           `json:"candidate_version"`
	BaselineVersion  *int           `json:"baseline_version,omitempty"`
	CurrentVersion   *int           `json:"current_version"`
	Window           replay.Window  `json:"window"`
	CreatedAt        time.Time      `json:"created_at"`
	StartedAt        *time.Time     `json:"started_at"`
	FinishedAt       *time.Time     `json:"finished_at"`
	Result           *replay.Report `json:"result"`

	seq int64
	// the candidate document, for the job
	format, source string
	tenantID       uuid.UUID
	envID          uuid.UUID
}

// Seq orders simulations for pagination (the list's cursor).
func (s Simulation) Seq() int64 { return s.seq }

// candidate is a checked candidate: a compiled policy and how it is stored.
type candidate struct {
	version int // 0 for a document
	policy  *policies.Policy
	format  string
	source  string
}

// prepare checks the input and compiles the candidate: a version must exist
// (ErrNotFound from the policy store), a document must be a valid policy.
func (s *Service) prepare(ctx context.Context, env store.Environment, in CreateInput) (candidate, replay.Window, error) {
	if err := in.Validate(); err != nil {
		return candidate{}, replay.Window{}, err
	}
	w := replay.LastFullMonth(s.now())
	if in.From != nil {
		w = replay.Window{From: in.From.UTC(), To: in.To.UTC()}
	}
	if in.Version != nil {
		_, p, err := s.policies.Source(ctx, env.TenantID, *in.Version)
		if err != nil {
			return candidate{}, w, err
		}
		return candidate{version: *in.Version, policy: p}, w, nil
	}
	src := []byte(in.Document)
	f := doctree.Detect(src)
	p, err := policies.Load(src, f)
	if err != nil {
		return candidate{}, w, err
	}
	return candidate{policy: p, format: f.String(), source: in.Document}, w, nil
}

// Create checks the input and queues the simulation: the row and its River job in
// one transaction.
func (s *Service) Create(ctx context.Context, env store.Environment, in CreateInput) (Simulation, error) {
	if s.jobs == nil {
		return Simulation{}, errors.New("simulate: no job inserter: this service cannot queue simulations")
	}
	cand, w, err := s.prepare(ctx, env, in)
	if err != nil {
		return Simulation{}, err
	}
	var out Simulation
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if out, err = s.insert(ctx, tx, env, in.BaselineVersion, cand, w, StatusQueued, nil); err != nil {
			return err
		}
		_, err := s.jobs.InsertManyTx(ctx, tx, []river.InsertManyParams{{Args: RunArgs{SimulationID: out.ID}}})
		if err != nil {
			return fmt.Errorf("simulate: queue: %w", err)
		}
		return nil
	})
	return out, err
}

// RunNow computes a simulation synchronously (publish's dry run) and stores it as
// succeeded, so it can be read again like any other.
func (s *Service) RunNow(ctx context.Context, env store.Environment, in CreateInput) (Simulation, error) {
	cand, w, err := s.prepare(ctx, env, in)
	if err != nil {
		return Simulation{}, err
	}
	rep, err := s.compute(ctx, env, in.BaselineVersion, cand, w)
	if err != nil {
		return Simulation{}, err
	}
	return s.insert(ctx, s.pool, env, in.BaselineVersion, cand, w, StatusSucceeded, rep)
}

const simulationColumns = `id, seq, tenant_id, environment_id, status, coalesce(error, ''), candidate_version, baseline_version, current_version,
	window_from, window_to, created_at, started_at, finished_at, result, coalesce(candidate_format, ''), coalesce(candidate_source, '')`

func scanSimulation(row pgx.Row, env string) (Simulation, error) {
	var s Simulation
	var result []byte
	err := row.Scan(&s.ID, &s.seq, &s.tenantID, &s.envID, &s.Status, &s.Error, &s.CandidateVersion, &s.BaselineVersion, &s.CurrentVersion,
		&s.Window.From, &s.Window.To, &s.CreatedAt, &s.StartedAt, &s.FinishedAt, &result, &s.format, &s.source)
	if err != nil {
		return s, err
	}
	s.Environment = env
	s.Window.From, s.Window.To = s.Window.From.UTC(), s.Window.To.UTC()
	if len(result) > 0 {
		s.Result = new(replay.Report)
		if err := json.Unmarshal(result, s.Result); err != nil {
			return s, fmt.Errorf("simulate: stored result: %w", err)
		}
	}
	return s, nil
}

func (s *Service) insert(ctx context.Context, db store.DBTX, env store.Environment, baseline *int, c candidate, w replay.Window, status string, rep *replay.Report) (Simulation, error) {
	var version *int
	var format, source *string
	if c.version > 0 {
		version = &c.version
	} else {
		format, source = &c.format, &c.source
	}
	var result []byte
	var current *int
	var finished *time.Time
	if rep != nil {
		var err error
		if result, err = json.Marshal(rep); err != nil {
			return Simulation{}, fmt.Errorf("simulate: encode result: %w", err)
		}
		current = &rep.CurrentVersion
		now := time.Now()
		finished = &now
	}
	row := db.QueryRow(ctx, `insert into simulations (tenant_id, environment_id, status, baseline_version, candidate_version, candidate_format,
		candidate_source, window_from, window_to, current_version, result, created_by, started_at, finished_at)
		values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13)
		returning `+simulationColumns,
		env.TenantID, env.ID, status, baseline, version, format, source, w.From, w.To, current, result, store.ActorFrom(ctx).KeyID, finished)
	out, err := scanSimulation(row, env.Name)
	if err != nil {
		return Simulation{}, fmt.Errorf("simulate: insert: %w", err)
	}
	return out, nil
}

// Get reads one of the environment's simulations.
func (s *Service) Get(ctx context.Context, env store.Environment, id uuid.UUID) (Simulation, error) {
	out, err := scanSimulation(s.pool.QueryRow(ctx, `select `+simulationColumns+` from simulations
		where tenant_id = $1 and environment_id = $2 and id = $3`, env.TenantID, env.ID, id), env.Name)
	if errors.Is(err, pgx.ErrNoRows) {
		return Simulation{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return Simulation{}, fmt.Errorf("simulate: get: %w", err)
	}
	return out, nil
}

// List pages the environment's simulations newest first, before the cursor seq
// (0: from the newest), without their results (read one for it).
func (s *Service) List(ctx context.Context, env store.Environment, before int64, limit int) ([]Simulation, error) {
	// The results stay in the table: a list shows statuses.
	cols := strings.Replace(simulationColumns, " result,", " null::jsonb,", 1)
	rows, err := s.pool.Query(ctx, `select `+cols+` from simulations
		where tenant_id = $1 and environment_id = $2 and ($3 = 0 or seq < $3) order by seq desc limit $4`,
		env.TenantID, env.ID, before, limit)
	if err != nil {
		return nil, fmt.Errorf("simulate: list: %w", err)
	}
	defer rows.Close()
	out := []Simulation{}
	for rows.Next() {
		sim, err := scanSimulation(rows, env.Name)
		if err != nil {
			return nil, fmt.Errorf("simulate: list: %w", err)
		}
		out = append(out, sim)
	}
	return out, rows.Err()
}
