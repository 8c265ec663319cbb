package simulate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/limitr/limitr/internal/analytics/replay"
	"github.com/limitr/limitr/internal/policies"
	"github.com/limitr/limitr/internal/policies/doctree"
	"github.com/limitr/limitr/internal/policies/pgstore"
	"github.com/limitr/limitr/internal/store"
)

// customerPage is how many customers are loaded per round trip.
const customerPage = 2000

// compute runs a replay of the window: the usage of every customer on real time
// through the baseline (the active version unless one is named) and the candidate.
// Customers on test clocks and deleted customers are left out: a replay prices the
// environment's real customers as they stand.
func (s *Service) compute(ctx context.Context, env store.Environment, baseline *int, c candidate, w replay.Window) (*replay.Report, error) {
	active, av, err := s.policies.Active(ctx, env)
	if errors.Is(err, pgstore.ErrNoActivePolicy) {
		return nil, fmt.Errorf("%w: environment %q", ErrNoPolicy, env.Name)
	}
	if err != nil {
		return nil, err
	}
	cur := replay.Policy{Version: av.Number, Policy: active}
	if baseline != nil && *baseline != av.Number {
		_, p, err := s.policies.Source(ctx, env.TenantID, *baseline)
		if err != nil {
			return nil, err
		}
		cur = replay.Policy{Version: *baseline, Policy: p}
	}
	set, err := s.billing.Settings(ctx, env)
	if err != nil {
		return nil, err
	}
	in := replay.Input{Currency: set.Currency, RuneRate: set.Rate(), Current: cur,
		Candidate: replay.Policy{Version: c.version, Policy: c.policy}, Window: w, Now: s.now()}
	// Meter periods that can belong to a billing period ending by the window's end.
	after := ""
	for {
		page, err := s.billing.ReplayCustomers(ctx, env, active, after, customerPage, w.To)
		if err != nil {
			return nil, err
		}
		in.Customers = append(in.Customers, page...)
		if len(page) < customerPage {
			break
		}
		after = page[len(page)-1].Subject.ID
	}
	return replay.Run(in)
}

// RunArgs is the job that runs a queued simulation.
type RunArgs struct {
	SimulationID uuid.UUID `json:"simulation_id"`
}

// Kind implements river.JobArgs.
func (RunArgs) Kind() string { return "limitr.simulation" }

// InsertOpts puts simulations on their own queue: a long replay never delays
// billing or alert deliveries. A failed replay is stored as failed rather than
// retried (the usage and policies it read do not change by waiting), so one attempt
// plus a retry for a crash is enough.
func (RunArgs) InsertOpts() river.InsertOpts { return river.InsertOpts{Queue: Queue, MaxAttempts: 2} }

// AddWorkers registers the simulation worker.
func (s *Service) AddWorkers(workers *river.Workers) { river.AddWorker(workers, &runWorker{s: s}) }

type runWorker struct {
	river.WorkerDefaults[RunArgs]
	s *Service
}

// Timeout bounds one replay: a year of a large environment.
func (w *runWorker) Timeout(*river.Job[RunArgs]) time.Duration { return 10 * time.Minute }

// Work runs the simulation and stores the outcome. A replay error is the
// simulation's (stored as failed, not retried); only a failure to store it is the
// job's.
func (w *runWorker) Work(ctx context.Context, job *river.Job[RunArgs]) error {
	return w.s.run(ctx, job.Args.SimulationID)
}

func (s *Service) run(ctx context.Context, id uuid.UUID) error {
	var sim Simulation
	err := s.pool.QueryRow(ctx, `update simulations set status = 'running', started_at = now()
		where id = $1 and status in ('queued', 'running') returning tenant_id, environment_id`, id).Scan(&sim.tenantID, &sim.envID)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil // gone (its environment was deleted) or already finished
	}
	if err != nil {
		return fmt.Errorf("simulate: start: %w", err)
	}
	env, err := store.EnvironmentByID(ctx, s.pool, sim.tenantID, sim.envID)
	if err != nil {
		return fmt.Errorf("simulate: environment: %w", err)
	}
	if sim, err = s.Get(ctx, env, id); err != nil {
		return err
	}
	rep, runErr := s.replay(ctx, env, sim)
	if runErr != nil {
		if ctx.Err() != nil {
			return runErr // shutting down: River runs it again
		}
		_, err = s.pool.Exec(ctx, `update simulations set status = 'failed', error = $2, finished_at = now() where id = $1`, id, runErr.Error())
		return err
	}
	result, err := json.Marshal(rep)
	if err != nil {
		return fmt.Errorf("simulate: encode result: %w", err)
	}
	_, err = s.pool.Exec(ctx, `update simulations set status = 'succeeded', result = $2, current_version = $3, error = null, finished_at = now()
		where id = $1`, id, result, rep.CurrentVersion)
	return err
}

// replay recompiles a stored simulation's candidate and computes it.
func (s *Service) replay(ctx context.Context, env store.Environment, sim Simulation) (*replay.Report, error) {
	c := candidate{format: sim.format, source: sim.source}
	if sim.CandidateVersion != nil {
		c.version = *sim.CandidateVersion
		_, p, err := s.policies.Source(ctx, env.TenantID, c.version)
		if err != nil {
			return nil, err
		}
		c.policy = p
	} else {
		f, err := doctree.ParseFormat(sim.format)
		if err != nil {
			return nil, err
		}
		if c.policy, err = policies.Load([]byte(sim.source), f); err != nil {
			return nil, err
		}
	}
	return s.compute(ctx, env, sim.BaselineVersion, c, sim.Window)
}
