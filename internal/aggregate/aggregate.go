// Package aggregate folds committed usage deltas into per-customer, per-period meters
// (meter_aggregates) exactly once.
//
// A batch is one transaction holding one statement: it claims up to BatchSize pending
// rows of usage_deltas in arrival order with FOR UPDATE SKIP LOCKED, marks them
// aggregated, sums them by meter in SQL (numeric, so sums are exact whatever the scale)
// and upserts the sums into meter_aggregates, returning the customers it touched (for
// alert rules, which read meters after the commit). Marking and adding commit together or not
// at all: a worker killed mid-batch leaves nothing behind (Postgres rolls the
// transaction back) and the rows are claimed again later. Several workers split the
// queue between them through SKIP LOCKED, and a row another worker has just aggregated
// is re-checked under its lock: in READ COMMITTED, locking a row that was updated after
// the statement's snapshot re-evaluates aggregated_at is null on its newest version, so
// the claim drops it. Every claimed row is therefore pending and locked by this
// transaction until it commits, and the mark step updates exactly the claimed rows, by
// primary key. No row is ever counted twice. Meters are upserted in key order, so
// workers that touch the same meters lock them in the same order and cannot deadlock.
//
// # Plan safety
//
// A batch costs O(BatchSize) index work whatever the backlog, the table's size or its
// planner statistics (none, stale, or taken while the table was empty): the claim reads
// the pending partial index (received_at, id) in key order and stops after BatchSize
// rows; the mark step is a nested loop of primary-key lookups, one per claimed row.
// Three things keep the planner there.
//
//   - The mark step joins the claimed rows to usage_deltas on the primary key only. It
//     used to repeat "and aggregated_at is null", which let the planner drive the join
//     from a scan of the pending index whenever it believed few rows were pending (an
//     empty table, or statistics taken while everything was aggregated): a nested loop
//     that compares every pending row with every claimed row. For 5,000 rows over a
//     100k backlog that is 5×10⁸ comparisons and close to a minute, and it grows with
//     the backlog, so a worker that fell behind fell further behind. The claim's lock
//     re-check (above) is what guarantees the rows are pending.
//   - The transaction plans every batch afresh (plan_cache_mode = force_custom_plan), so
//     against the table's current size. pgx prepares the statement, and after five runs
//     Postgres may switch to a generic plan made once and kept: made while the table was
//     empty (a worker idling before load, or after ANALYZE of an empty table) it costs
//     every scan at zero, and no wording of the statement survives that. Planning takes
//     about a millisecond a batch.
//   - The transaction also turns off, for itself only, the plans that grow with the
//     table rather than the batch, which the planner picks when statistics are missing
//     or stale (it then believes few rows are pending): sorting every pending row to
//     claim the first BatchSize (read from either partial index), and hashing or merging
//     the claimed rows against a scan of the whole table. With enable_sort,
//     enable_hashjoin and enable_mergejoin off, the claim can only walk an index on
//     (received_at, id) in key order, stopping after BatchSize rows (the pending index
//     is the cheaper one), and the mark step can only be a nested loop of key lookups;
//     enable_seqscan off keeps any step from reading a partition whole. The upsert's
//     ORDER BY still needs its sort, and the cost Postgres adds to a disabled node would
//     then cross jit_above_cost, so jit is off too: compiling took 0.3–0.5 s, for a
//     statement that runs in milliseconds.
//
// TestBatchAfterIdleOverBacklog checks the plan and the time of a batch over a 100k-row
// backlog after the worker idled on an empty table, with and without statistics.
//
// Run loops: a full batch is followed at once by the next; otherwise it waits for a
// wake-up on the bus (the API publishes on wire.ChannelUsage after committing usage) or the poll
// interval. Without a bus it polls.
package aggregate

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/limitr/limitr/internal/platform/bus"
	"github.com/limitr/limitr/internal/platform/pg"
	"github.com/limitr/limitr/internal/wire"
)

// DefaultBatchSize is the number of rows claimed per transaction when Options leaves it 0.
const DefaultBatchSize = 5000

// Options tune an Aggregator; zero values take the defaults.
type Options struct {
	// BatchSize is the most rows claimed per transaction (default 5000).
	BatchSize int
	// PollInterval is how long Run waits for a wake-up before looking anyway (default 1s).
	PollInterval time.Duration
	// SampleInterval is how often Run samples the backlog and lag gauges (default 5s).
	SampleInterval time.Duration
	// Bus, when set, wakes Run as soon as usage is committed; nil polls.
	Bus bus.Bus
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Metrics, when set, records batches, rows, lags and the backlog.
	Metrics *Metrics
	// OnBatch, when set, is called after every committed batch that folded rows (for
	// benchmarks and tests). It runs on the aggregation goroutine: keep it short.
	OnBatch func(Batch)
}

// Batch describes one committed batch.
type Batch struct {
	// Rows is the number of usage rows folded in; Meters the number of meters touched.
	Rows, Meters int
	// Took is the batch's wall time, from claim to commit.
	Took time.Duration
	// CommitLags holds, per row, the time from its received_at to the batch's commit.
	CommitLags []time.Duration
	// Touched lists the customers whose meters the batch changed, each once, so that
	// what watches meters (alert rules) re-reads only those.
	Touched []Touched
}

// Touched is a customer whose meters a batch changed.
type Touched struct {
	TenantID, EnvironmentID, CustomerUID uuid.UUID
}

// Aggregator folds usage deltas into meters.
type Aggregator struct {
	pool *pgxpool.Pool
	opts Options
	log  *slog.Logger
	// beforeCommit, when set (by tests), runs after the batch statement and before the
	// commit; an error rolls the batch back.
	beforeCommit func(context.Context, pgx.Tx) error
}

// New returns an Aggregator on pool.
func New(pool *pgxpool.Pool, opts Options) *Aggregator {
	if opts.BatchSize <= 0 {
		opts.BatchSize = DefaultBatchSize
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = time.Second
	}
	if opts.SampleInterval <= 0 {
		opts.SampleInterval = 5 * time.Second
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Aggregator{pool: pool, opts: opts, log: log}
}

// batchBegin opens a batch's transaction. The settings hold for this transaction only
// and keep batchSQL on key lookups whatever the table's size and statistics (see Plan
// safety in the package doc). It is one simple-protocol round trip.
const batchBegin = `begin isolation level read committed;
set local plan_cache_mode = force_custom_plan;
set local enable_sort = off;
set local enable_hashjoin = off;
set local enable_mergejoin = off;
set local enable_seqscan = off;
set local jit = off`

// batchSQL claims, marks, sums and upserts in one statement. $1 is the batch size.
// The mark step joins on the primary key alone: the claim has already re-checked
// aggregated_at under each row's lock, and repeating it here would let the planner
// drive the join from the pending index (see Plan safety in the package doc).
// The lag column is measured from statement_timestamp(), on the database's clock, so
// worker and database clocks need not agree; RunOnce adds the time to commit.
const batchSQL = `
with claimed as materialized (
    select received_at, id
    from usage_deltas
    where aggregated_at is null
    order by received_at, id
    limit $1
    for update skip locked
), marked as (
    update usage_deltas d
    set aggregated_at = now()
    from claimed c
    where d.received_at = c.received_at and d.id = c.id
    returning d.received_at, d.tenant_id, d.environment_id, d.customer_id, d.customer_uid, d.entitlement,
              d.period_start, d.credit, d.units, d.overhead, d.price, d.calls, d.grant_covered
), sums as (
    select tenant_id, environment_id, customer_id, customer_uid, entitlement, period_start,
           max(credit) as credit, sum(units) as units, sum(overhead) as overhead,
           sum(price) as price, sum(calls) as calls, sum(grant_covered) as grant_covered
    from marked
    -- A uid belongs to one tenant, environment and id: grouping by them too changes nothing.
    group by customer_uid, entitlement, period_start, tenant_id, environment_id, customer_id
), upserted as (
    insert into meter_aggregates as m
        (tenant_id, environment_id, customer_id, customer_uid, entitlement, period_start, credit,
         units, overhead, price, calls, grant_covered, updated_at)
    select tenant_id, environment_id, customer_id, customer_uid, entitlement, period_start, credit,
           units, overhead, price, calls, grant_covered, now()
    from sums
    order by customer_uid, entitlement, period_start
    on conflict (customer_uid, entitlement, period_start) do update
    set units = m.units + excluded.units,
        overhead = m.overhead + excluded.overhead,
        price = m.price + excluded.price,
        calls = m.calls + excluded.calls,
        grant_covered = m.grant_covered + excluded.grant_covered,
        credit = excluded.credit,
        updated_at = excluded.updated_at
    returning tenant_id, environment_id, customer_uid
), touched as (
    select distinct tenant_id, environment_id, customer_uid from upserted
)
select (select count(*) from upserted),
       coalesce(array_agg(extract(epoch from statement_timestamp() - received_at)::float8), '{}'),
       (select coalesce(array_agg(tenant_id), '{}') from touched),
       (select coalesce(array_agg(environment_id), '{}') from touched),
       (select coalesce(array_agg(customer_uid), '{}') from touched)
from marked`

// RunOnce folds one batch and commits it. A batch with no pending rows returns Rows 0.
func (a *Aggregator) RunOnce(ctx context.Context) (Batch, error) {
	start := time.Now()
	tx, err := a.pool.BeginTx(ctx, pgx.TxOptions{BeginQuery: batchBegin})
	if err != nil {
		return Batch{}, fmt.Errorf("aggregate: begin: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // a no-op after commit
	var meters int64
	var lags []float64
	var tenants, envs, uids []uuid.UUID
	sent := time.Now()
	if err := tx.QueryRow(ctx, batchSQL, a.opts.BatchSize).Scan(&meters, &lags, &tenants, &envs, &uids); err != nil {
		return Batch{}, fmt.Errorf("aggregate: batch: %w", err)
	}
	if len(lags) == 0 {
		return Batch{}, nil
	}
	if a.beforeCommit != nil {
		if err := a.beforeCommit(ctx, tx); err != nil {
			return Batch{}, err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return Batch{}, fmt.Errorf("aggregate: commit: %w", err)
	}
	toCommit := time.Since(sent)
	b := Batch{Rows: len(lags), Meters: int(meters), Took: time.Since(start), CommitLags: make([]time.Duration, len(lags))}
	for i, s := range lags {
		b.CommitLags[i] = max(time.Duration(s*float64(time.Second))+toCommit, 0)
	}
	b.Touched = make([]Touched, len(uids))
	for i := range uids {
		b.Touched[i] = Touched{TenantID: tenants[i], EnvironmentID: envs[i], CustomerUID: uids[i]}
	}
	if m := a.opts.Metrics; m != nil {
		m.observe(b)
	}
	if a.opts.OnBatch != nil {
		a.opts.OnBatch(b)
	}
	return b, nil
}

// Drain runs batches until one is not full, and returns the rows folded.
func (a *Aggregator) Drain(ctx context.Context) (int, error) {
	total := 0
	for {
		b, err := a.RunOnce(ctx)
		total += b.Rows
		if err != nil || b.Rows < a.opts.BatchSize {
			return total, err
		}
	}
}

// Run aggregates until ctx ends; it returns nil then. Database errors are logged and
// retried with backoff (poll interval doubling up to 30 s, or sooner on a wake-up):
// nothing is lost meanwhile, usage waits in Postgres.
func (a *Aggregator) Run(ctx context.Context) error {
	var wake <-chan []byte
	if a.opts.Bus != nil {
		wake = a.opts.Bus.Subscribe(ctx, wire.ChannelUsage)
	}
	sampleCtx, stopSampling := context.WithCancel(ctx)
	defer stopSampling()
	if a.opts.Metrics != nil {
		go a.sample(sampleCtx)
	}
	timer := time.NewTimer(a.opts.PollInterval)
	defer timer.Stop()
	failures := 0
	for {
		b, err := a.RunOnce(ctx)
		if ctx.Err() != nil {
			a.log.Info("aggregate: stopping")
			return nil
		}
		wait := a.opts.PollInterval
		switch {
		case err != nil:
			failures++
			if a.opts.Metrics != nil {
				a.opts.Metrics.Errors.Inc()
			}
			// Back off up to 30 s while Postgres is down; wake-ups still cut the wait short.
			wait = min(a.opts.PollInterval<<min(failures-1, 5), max(a.opts.PollInterval, 30*time.Second))
			if pg.IsTransient(err) {
				a.log.Info("aggregate: batch rolled back; retrying", "err", err, "retry_in", wait.String())
			} else {
				a.log.Warn("aggregate: batch failed; retrying", "err", err, "retry_in", wait.String())
			}
		case b.Rows >= a.opts.BatchSize:
			failures = 0
			continue // more is waiting
		default:
			failures = 0
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			a.log.Info("aggregate: stopping")
			return nil
		case _, ok := <-wake:
			if !ok {
				wake = nil // the bus is gone: poll
			}
			drain(wake)
		case <-timer.C:
		}
	}
}

// drain empties the wake-up channel: one batch answers every wake-up so far.
func drain(ch <-chan []byte) {
	for ch != nil {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		default:
			return
		}
	}
}

func (a *Aggregator) sample(ctx context.Context) {
	t := time.NewTicker(a.opts.SampleInterval)
	defer t.Stop()
	for {
		if s, err := Measure(ctx, a.pool); err == nil {
			a.opts.Metrics.set(s)
		} else if ctx.Err() == nil {
			a.log.Debug("aggregate: sampling the backlog failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
