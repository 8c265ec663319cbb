// Package evaluate evaluates the alert rules that watch meters and the invoice to date
// (usage percent, spend, grant balance, margin, forecast) as usage is aggregated.
//
// Evaluation runs off the aggregation transaction, on its own goroutine: the
// aggregator hands each committed batch's touched customers to OnBatch, which only
// queues them on a bounded channel, so a slow evaluation never slows aggregation. Run
// coalesces whatever is queued into one set of customers per environment, computes
// their standings (billing's figures, loaded set-wise) and lets alerts.Service.Observe
// fire. When the queue is full, OnBatch drops the batch and marks its environments
// for a sweep instead of blocking; a periodic sweep (and one at start) re-evaluates
// every customer with recent usage, so nothing is missed after an overflow or a crash.
// Firing is idempotent (one alert per rule and dedup key), so evaluating a customer
// twice is harmless.
package evaluate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/limitr/limitr/internal/aggregate"
	"github.com/limitr/limitr/internal/alerts"
	"github.com/limitr/limitr/internal/billing"
	"github.com/limitr/limitr/internal/store"
)

// Observer fires the alerts observations raise (*alerts.Service).
type Observer interface {
	Observe(ctx context.Context, env store.Environment, obs []alerts.Observation) (alerts.Fired, error)
}

// Standings computes customers' standings (*billing.Service).
type Standings interface {
	Standings(ctx context.Context, env store.Environment, uids []uuid.UUID) ([]billing.Standing, error)
}

// Config tunes an Evaluator; zero values take the defaults.
type Config struct {
	// SweepInterval is how often every customer with recent usage is re-evaluated
	// (default 5m; negative: only the sweep at start and after overflows).
	SweepInterval time.Duration
	// QueueSize is how many batches wait for evaluation before OnBatch drops them and
	// marks their environments for a sweep (default 256).
	QueueSize int
	// ChunkSize is the most customers evaluated (and observed) at once (default 500).
	ChunkSize int
	// MinInterval is the least time between two evaluations of one customer (default
	// 1s): a customer touched by every batch is evaluated once per interval, not
	// once per batch, which bounds what evaluation costs the database whatever the
	// batch rate, while a customer not evaluated lately is evaluated at once.
	MinInterval time.Duration
	// MinGap is the least time between the starts of two evaluations of any customers
	// (default 200ms): the customers that come due meanwhile are evaluated together,
	// so what an evaluation costs whatever its size (the policy, the rules, a handful
	// of queries) is paid at most five times a second, not once per batch.
	MinGap time.Duration
	// Recent is how far back a sweep looks for usage (default 32 days: a billing
	// period, whatever the month).
	Recent time.Duration
	Logger *slog.Logger
	// Metrics, when set, counts evaluations and dropped batches.
	Metrics *Metrics
}

func (c *Config) defaults() {
	if c.SweepInterval == 0 {
		c.SweepInterval = 5 * time.Minute
	}
	if c.QueueSize <= 0 {
		c.QueueSize = 256
	}
	if c.ChunkSize <= 0 {
		c.ChunkSize = 500
	}
	if c.MinGap <= 0 {
		c.MinGap = 200 * time.Millisecond
	}
	if c.MinInterval <= 0 {
		c.MinInterval = time.Second
	}
	if c.Recent <= 0 {
		c.Recent = 32 * 24 * time.Hour
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Evaluator evaluates usage rules for the customers aggregation touches.
type Evaluator struct {
	pool      *pgxpool.Pool
	observer  Observer
	standings Standings
	cfg       Config
	log       *slog.Logger
	queue     chan []aggregate.Touched
	overflow  chan struct{} // signalled (1-buffered) when swept has new entries

	mu    sync.Mutex
	swept map[uuid.UUID]bool // environments whose batches were dropped, to sweep
	stats Stats
}

// Stats count what the evaluator did, for tests, benchmarks and logs.
type Stats struct {
	Batches, Dropped, Customers int
	Fired                       alerts.Fired
	// Standings and Observe are the time spent computing standings and firing.
	Standings, Observe time.Duration
}

// New returns an Evaluator; Run starts it.
func New(pool *pgxpool.Pool, observer Observer, standings Standings, cfg Config) *Evaluator {
	cfg.defaults()
	return &Evaluator{pool: pool, observer: observer, standings: standings, cfg: cfg, log: cfg.Logger,
		queue: make(chan []aggregate.Touched, cfg.QueueSize), overflow: make(chan struct{}, 1), swept: map[uuid.UUID]bool{}}
}

// OnBatch queues a committed batch's customers for evaluation. It never blocks: when
// the queue is full it marks the batch's environments for a sweep instead. It is meant
// for aggregate.Options.OnBatch.
func (e *Evaluator) OnBatch(b aggregate.Batch) {
	if len(b.Touched) == 0 {
		return
	}
	select {
	case e.queue <- b.Touched:
		return
	default:
	}
	e.mu.Lock()
	e.stats.Dropped++
	if m := e.cfg.Metrics; m != nil {
		m.Dropped.Inc()
	}
	for _, t := range b.Touched {
		e.swept[t.EnvironmentID] = true
	}
	e.mu.Unlock()
	select {
	case e.overflow <- struct{}{}:
	default:
	}
}

// Stats returns the counts so far.
func (e *Evaluator) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.stats
}

// Run evaluates queued batches, sweeps at start, every SweepInterval and after an
// overflow, until ctx ends; it returns nil then. Errors are logged: the next sweep
// covers what they left out.
func (e *Evaluator) Run(ctx context.Context) error {
	e.logErr(ctx, "sweep", e.Sweep(ctx))
	var tick <-chan time.Time
	if e.cfg.SweepInterval > 0 {
		t := time.NewTicker(e.cfg.SweepInterval)
		defer t.Stop()
		tick = t.C
	}
	p := newPacer(e.cfg.MinInterval)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var last time.Time // the start of the last evaluation
	for {
		var due <-chan time.Time
		if wait, ok := p.nextDue(time.Now()); ok {
			timer.Reset(max(wait, time.Until(last.Add(e.cfg.MinGap))))
			due = timer.C
		}
		select {
		case <-ctx.Done():
			return nil
		case first := <-e.queue:
			e.takeQueued(p, first)
		case <-due:
			last = time.Now()
			e.logErr(ctx, "evaluate", e.evaluateDue(ctx, p))
		case <-e.overflow:
			e.logErr(ctx, "sweep after overflow", e.sweepDropped(ctx))
		case <-tick:
			e.logErr(ctx, "sweep", e.Sweep(ctx))
		}
	}
}

func (e *Evaluator) logErr(ctx context.Context, what string, err error) {
	if err != nil && ctx.Err() == nil {
		e.log.Warn("alerts: "+what+" failed; the next sweep retries", "err", err)
	}
}

// takeQueued hands first and every batch queued behind it to the pacer.
func (e *Evaluator) takeQueued(p *pacer, first []aggregate.Touched) {
	p.add(first)
	batches := 1
	for more := true; more; {
		select {
		case ts := <-e.queue:
			p.add(ts)
			batches++
		default:
			more = false
		}
	}
	e.mu.Lock()
	e.stats.Batches += batches
	e.mu.Unlock()
}

// evaluateQueued takes the queued batches and evaluates the customers whose turn has
// come (tests drive the evaluator with it).
func (e *Evaluator) evaluateQueued(ctx context.Context, p *pacer, first []aggregate.Touched) error {
	e.takeQueued(p, first)
	return e.evaluateDue(ctx, p)
}

// evaluateDue evaluates the waiting customers whose turn has come.
func (e *Evaluator) evaluateDue(ctx context.Context, p *pacer) error {
	byEnv := p.take(time.Now())
	if len(byEnv) == 0 {
		return nil
	}
	envs, err := e.ruledEnvironments(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for envID, uids := range byEnv {
		env, ok := envs[envID]
		if !ok {
			continue // no usage rules: nothing to evaluate
		}
		if _, err := e.Evaluate(ctx, env, uids); err != nil {
			errs = append(errs, fmt.Errorf("environment %s: %w", envID, err))
		}
	}
	return errors.Join(errs...)
}

// Evaluate computes the standings of customers of env and fires what the rules raise,
// ChunkSize customers at a time.
func (e *Evaluator) Evaluate(ctx context.Context, env store.Environment, uids []uuid.UUID) (alerts.Fired, error) {
	var total alerts.Fired
	for len(uids) > 0 {
		n := min(len(uids), e.cfg.ChunkSize)
		chunk := uids[:n]
		uids = uids[n:]
		start := time.Now()
		sts, err := e.standings.Standings(ctx, env, chunk)
		computed := time.Now()
		if errors.Is(err, billing.ErrNoPolicy) {
			return total, nil // nothing to rate with: nothing to observe
		}
		if err != nil {
			return total, err
		}
		var obs []alerts.Observation
		for _, st := range sts {
			obs = append(obs, Observations(st, st.Now)...)
		}
		fired, err := e.observer.Observe(ctx, env, obs)
		if err != nil {
			return total, err
		}
		e.log.Debug("alerts: evaluated", "environment", env.ID, "customers", len(chunk), "observations", len(obs),
			"alerts", fired.Alerts, "superseded", fired.Superseded)
		total.Alerts += fired.Alerts
		total.Superseded += fired.Superseded
		total.Deliveries += fired.Deliveries
		e.mu.Lock()
		e.stats.Standings += computed.Sub(start)
		e.stats.Observe += time.Since(computed)
		e.stats.Customers += len(chunk)
		if m := e.cfg.Metrics; m != nil {
			m.Customers.Add(float64(len(chunk)))
		}
		e.stats.Fired.Alerts += fired.Alerts
		e.stats.Fired.Superseded += fired.Superseded
		e.stats.Fired.Deliveries += fired.Deliveries
		e.mu.Unlock()
	}
	return total, nil
}

// Sweep re-evaluates every customer with usage in the last Recent in every environment
// with usage rules.
func (e *Evaluator) Sweep(ctx context.Context) error {
	return e.sweep(ctx, func(uuid.UUID) bool { return true })
}

// sweepDropped sweeps the environments whose batches OnBatch dropped.
func (e *Evaluator) sweepDropped(ctx context.Context) error {
	e.mu.Lock()
	envs := e.swept
	e.swept = map[uuid.UUID]bool{}
	e.mu.Unlock()
	if len(envs) == 0 {
		return nil
	}
	e.log.Info("alerts: the evaluation queue overflowed; sweeping the environments whose batches were dropped", "environments", len(envs))
	return e.sweep(ctx, func(id uuid.UUID) bool { return envs[id] })
}

func (e *Evaluator) sweep(ctx context.Context, want func(uuid.UUID) bool) error {
	envs, err := e.ruledEnvironments(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for id, env := range envs {
		if !want(id) {
			continue
		}
		if err := e.sweepEnvironment(ctx, env); err != nil {
			errs = append(errs, fmt.Errorf("environment %s: %w", id, err))
		}
	}
	return errors.Join(errs...)
}

// sweepEnvironment pages the environment's customers with recent usage by uid.
func (e *Evaluator) sweepEnvironment(ctx context.Context, env store.Environment) error {
	since := time.Now().Add(-e.cfg.Recent)
	after := uuid.Nil
	for {
		rows, err := e.pool.Query(ctx, `select distinct customer_uid from meter_aggregates
			where tenant_id = $1 and environment_id = $2 and updated_at >= $3 and customer_uid > $4
			order by customer_uid limit $5`, env.TenantID, env.ID, since, after, e.cfg.ChunkSize)
		if err != nil {
			return fmt.Errorf("alerts: sweep: %w", err)
		}
		uids, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
		if err != nil {
			return fmt.Errorf("alerts: sweep: %w", err)
		}
		if len(uids) == 0 {
			return nil
		}
		if _, err := e.Evaluate(ctx, env, uids); err != nil {
			return err
		}
		if len(uids) < e.cfg.ChunkSize {
			return nil
		}
		after = uids[len(uids)-1]
	}
}

// ruledEnvironments reads the environments with enabled usage rules. It is not cached:
// evaluations run at most once per MinGap, so this is one indexed query each, and a
// rule created a moment before a crossing sees it.
func (e *Evaluator) ruledEnvironments(ctx context.Context) (map[uuid.UUID]store.Environment, error) {
	rows, err := e.pool.Query(ctx, `select e.id, e.tenant_id, e.name, e.live, e.created_at from environments e
		where exists (select 1 from alert_rules r where r.tenant_id = e.tenant_id and r.environment_id = e.id
			and r.enabled and r.kind = any($1))`, Kinds)
	if err != nil {
		return nil, fmt.Errorf("alerts: environments with rules: %w", err)
	}
	list, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.Environment, error) {
		var env store.Environment
		return env, r.Scan(&env.ID, &env.TenantID, &env.Name, &env.Live, &env.CreatedAt)
	})
	if err != nil {
		return nil, fmt.Errorf("alerts: environments with rules: %w", err)
	}
	envs := make(map[uuid.UUID]store.Environment, len(list))
	for _, env := range list {
		envs[env.ID] = env
	}
	return envs, nil
}
