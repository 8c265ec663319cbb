// Package worker composes the control plane's background work, once, for cmd/worker
// and `limitr dev`:
//
//   - Usage aggregation: the internal/aggregate loop, woken over the bus when usage
//     commits and polling otherwise. It stays a dedicated SKIP LOCKED loop rather than a
//     River job: it runs continuously over a queue that is already a table, and a
//     River job per batch would add an insert, a fetch and a completion per batch for
//     nothing (see bench/README.md for the measurement).
//   - River (riverqueue/river), for jobs with side effects and for maintenance:
//     periodic jobs keep the usage partitions ahead of the clock, purge idempotency
//     replies past their window, and apply the retention policy. Periodic jobs are
//     enqueued by River's elected leader only, so any number of workers can run.
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/limitr/limitr/internal/aggregate"
	"github.com/limitr/limitr/internal/alerts"
	"github.com/limitr/limitr/internal/alerts/evaluate"
	"github.com/limitr/limitr/internal/analytics"
	"github.com/limitr/limitr/internal/analytics/simulate"
	"github.com/limitr/limitr/internal/billing"
	"github.com/limitr/limitr/internal/billing/stripesync"
	"github.com/limitr/limitr/internal/platform/bus"
	"github.com/limitr/limitr/internal/retention"
	"github.com/limitr/limitr/internal/secrets"
)

// QueueMaintenance is the River queue maintenance jobs run on.
const QueueMaintenance = "maintenance"

// Config tunes the worker; zero values take the defaults.
type Config struct {
	// BatchSize is the usage rows folded into meters per transaction (default 5000).
	BatchSize int
	// PollInterval is how long aggregation waits for a wake-up before looking anyway
	// (default 1s).
	PollInterval time.Duration
	// Retention says how long rows are kept; a zero field keeps them forever (the
	// configuration's defaults are retention.Defaults()).
	Retention retention.Policy
	// MaintenanceInterval is how often the periodic maintenance jobs run (default 1h).
	// Partitions are made two days ahead, so an hour leaves ample room for retries.
	MaintenanceInterval time.Duration
	// BillingInterval is how often the billing pass runs: closing ended periods and
	// finalizing drafts past their grace (default 1m).
	BillingInterval time.Duration
	// OnBatch, when set, sees every committed aggregation batch (benchmarks and tests).
	OnBatch func(aggregate.Batch)
	// DisableAlertEvaluation turns off the usage alert rules (usage percent, spend,
	// grant balance, margin, forecast) evaluated as usage is aggregated; they are on
	// by default.
	DisableAlertEvaluation bool
	// AlertSweepInterval is how often every customer with recent usage is re-evaluated
	// against the usage alert rules, besides the customers each batch touches
	// (default 5m).
	AlertSweepInterval time.Duration
	// AnalyticsSweepInterval is how often every environment is swept for the
	// analytics the aggregation batches do not cover: reprices after a publish or an
	// override, plan fees and levels of a new billing period, topups (default 5m).
	AnalyticsSweepInterval time.Duration
}

func (c *Config) defaults() {
	if c.BatchSize <= 0 {
		c.BatchSize = aggregate.DefaultBatchSize
	}
	if c.PollInterval <= 0 {
		c.PollInterval = time.Second
	}
	if c.MaintenanceInterval <= 0 {
		c.MaintenanceInterval = time.Hour
	}
	if c.BillingInterval <= 0 {
		c.BillingInterval = time.Minute
	}
	if c.AlertSweepInterval <= 0 {
		c.AlertSweepInterval = 5 * time.Minute
	}
	if c.AnalyticsSweepInterval <= 0 {
		c.AnalyticsSweepInterval = 5 * time.Minute
	}
}

// Deps are the worker's connections. Bus may be nil: aggregation then polls.
type Deps struct {
	Pool     *pgxpool.Pool
	Bus      bus.Bus
	Logger   *slog.Logger
	Registry prometheus.Registerer
	// Secrets opens the Stripe secrets; without it Stripe jobs fail (and say so).
	Secrets *secrets.Keyring
	// StripeAPIBase is Stripe's API URL (empty: Stripe's own).
	StripeAPIBase string
	// Alerts fires and delivers alerts; nil builds one on Pool and Secrets that queues
	// deliveries through the worker's River client.
	Alerts *alerts.Service
	// SlackAPIURL is Slack's Web API base URL for alert deliveries (empty: Slack's own).
	SlackAPIURL string
	// PublicURL is the dashboard's public base URL alert messages link to (empty: none).
	PublicURL string
	// AllowPrivateAlertDestinations lets alert channels reach private addresses.
	AllowPrivateAlertDestinations bool
}

// Worker runs the background work.
type Worker struct {
	cfg     Config
	deps    Deps
	log     *slog.Logger
	metrics *Metrics
	river   *river.Client[pgx.Tx]
	agg     *aggregate.Aggregator
	stripe  *stripesync.Service
	billing *billing.Service
	alerts  *alerts.Service
	eval    *evaluate.Evaluator // nil when alert evaluation is off
	booker  *analytics.Booker
	reg     prometheus.Registerer
}

// New builds a worker; Run starts it.
func New(deps Deps, cfg Config) (*Worker, error) {
	if deps.Pool == nil {
		return nil, errors.New("worker: a Postgres pool is required")
	}
	cfg.defaults()
	if err := cfg.Retention.Validate(); err != nil {
		return nil, err
	}
	log := deps.Logger
	if log == nil {
		log = slog.Default()
	}
	reg := deps.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	w := &Worker{cfg: cfg, deps: deps, log: log, metrics: newMetrics(reg), reg: reg}

	workers := river.NewWorkers()
	river.AddWorker(workers, &partitionsWorker{w: w})
	river.AddWorker(workers, &idempotencyWorker{w: w})
	river.AddWorker(workers, &retentionWorker{w: w})
	river.AddWorker(workers, &resealWorker{w: w})
	bill := newBillingCloseWorker(w)
	river.AddWorker(workers, bill)
	bill.stripe.AddWorkers(workers)
	w.alerts.AddWorkers(workers)
	w.addSimulationWorker(workers)
	w.agg = aggregate.New(deps.Pool, aggregate.Options{BatchSize: cfg.BatchSize, PollInterval: cfg.PollInterval,
		Bus: deps.Bus, Logger: log, Metrics: aggregate.NewMetrics(reg), OnBatch: w.newOnBatch()})
	every := river.PeriodicInterval(cfg.MaintenanceInterval)
	onMaintenance := &river.InsertOpts{Queue: QueueMaintenance}
	periodic := []*river.PeriodicJob{
		river.NewPeriodicJob(every, func() (river.JobArgs, *river.InsertOpts) { return PartitionsArgs{}, onMaintenance },
			&river.PeriodicJobOpts{RunOnStart: true}),
		river.NewPeriodicJob(every, func() (river.JobArgs, *river.InsertOpts) { return PurgeIdempotencyArgs{}, onMaintenance },
			&river.PeriodicJobOpts{RunOnStart: true}),
		river.NewPeriodicJob(every, func() (river.JobArgs, *river.InsertOpts) { return RetentionArgs{}, onMaintenance },
			&river.PeriodicJobOpts{RunOnStart: true}),
		river.NewPeriodicJob(river.PeriodicInterval(cfg.BillingInterval), func() (river.JobArgs, *river.InsertOpts) { return BillingCloseArgs{}, nil },
			&river.PeriodicJobOpts{RunOnStart: true}),
		river.NewPeriodicJob(river.PeriodicInterval(cfg.BillingInterval), func() (river.JobArgs, *river.InsertOpts) {
			return stripesync.SyncCatalogArgs{}, &river.InsertOpts{Queue: stripesync.Queue}
		}, &river.PeriodicJobOpts{RunOnStart: true}),
		river.NewPeriodicJob(every, func() (river.JobArgs, *river.InsertOpts) {
			return stripesync.ReconcileArgs{}, &river.InsertOpts{Queue: stripesync.Queue}
		}, nil),
		river.NewPeriodicJob(every, func() (river.JobArgs, *river.InsertOpts) { return ResealArgs{}, onMaintenance },
			&river.PeriodicJobOpts{RunOnStart: true}),
		river.NewPeriodicJob(river.PeriodicInterval(time.Minute), func() (river.JobArgs, *river.InsertOpts) { return alerts.RescueArgs{}, nil },
			&river.PeriodicJobOpts{RunOnStart: true}),
	}
	client, err := river.NewClient(riverpgxv5.New(deps.Pool), &river.Config{
		Logger: log.With("component", "river"),
		Queues: map[string]river.QueueConfig{QueueMaintenance: {MaxWorkers: 2}, QueueBilling: {MaxWorkers: 1}, stripesync.Queue: {MaxWorkers: 4},
			alerts.Queue: {MaxWorkers: 100}, simulate.Queue: {MaxWorkers: 1}, river.QueueDefault: {MaxWorkers: 4}},
		Workers:      workers,
		PeriodicJobs: periodic,
		JobTimeout:   15 * time.Minute,
		// Deliveries are waits on other servers: 50 at a time, and the next fetch
		// soon after (River's default 100 ms cooldown, with 1,000 alerts firing at
		// once, would spread them over 2 s).
		FetchCooldown:     20 * time.Millisecond,
		FetchPollInterval: 200 * time.Millisecond,
	})
	if err != nil {
		return nil, fmt.Errorf("worker: river: %w", err)
	}
	w.river = client
	return w, nil
}

// River is the worker's River client, to insert jobs with (Insert, InsertTx).
func (w *Worker) River() *river.Client[pgx.Tx] { return w.river }

// Run works until ctx ends, then stops River (letting running jobs finish, within
// stopTimeout) and the aggregation loop, and returns.
func (w *Worker) Run(ctx context.Context) error {
	if err := w.river.Start(ctx); err != nil {
		return fmt.Errorf("worker: start river: %w", err)
	}
	var wg sync.WaitGroup
	wg.Go(func() { _ = w.agg.Run(ctx) })
	if w.eval != nil {
		wg.Go(func() { _ = w.eval.Run(ctx) })
	}
	wg.Go(func() { _ = w.booker.Run(ctx) })
	<-ctx.Done()
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), stopTimeout)
	defer cancel()
	err := w.river.Stop(stopCtx)
	wg.Wait()
	if err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("worker: stop river: %w", err)
	}
	return nil
}

// stopTimeout bounds how long stopping waits for running jobs.
const stopTimeout = 10 * time.Second

// Metrics count maintenance work.
type Metrics struct {
	Runs    *prometheus.CounterVec // by job and outcome
	Removed *prometheus.CounterVec // rows or partitions removed, by table
}

func newMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Runs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "limitr_worker_job_runs_total",
			Help: "Maintenance job runs by job and outcome."}, []string{"job", "outcome"}),
		Removed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "limitr_retention_removed_total",
			Help: "Rows (or, for usage partitions, partitions) removed by retention, by table."}, []string{"table"}),
	}
	reg.MustRegister(m.Runs, m.Removed)
	return m
}

func (m *Metrics) outcome(job string, err error) {
	o := "ok"
	if err != nil {
		o = "error"
	}
	m.Runs.WithLabelValues(job, o).Inc()
}
