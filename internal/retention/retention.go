// Package retention removes what the control plane no longer needs, on a schedule the
// operator sets: idempotency records past their window, usage-batch keys past the
// deduplication window, change-feed entries past what resuming SDK streams need, old
// audit entries, old unattributed usage, allowance leases expired for more than a day
// (Policy.ExpiredLeases), and raw usage partitions once their usage is
// in the meters. Meters (meter_aggregates), grant draws, customers and policy versions
// are never removed here: they are the record.
//
// Removal is in bounded batches, so a large backlog never holds locks for long, and
// every step is safe to run from several workers at once (and is run by River's
// leader only).
package retention

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/limitr/limitr/internal/httpx/idempotency"
	"github.com/limitr/limitr/internal/partitions"
)

// Policy says how long each kind of row is kept. Zero keeps it forever.
type Policy struct {
	// IdempotencyKeys: stored replies to POSTs with an Idempotency-Key.
	IdempotencyKeys time.Duration
	// UsageBatches: the (instance, sequence) keys that make usage commit at most once.
	// A batch first sent before this window can no longer be recognised as a retry:
	// the API keeps its records as unattributed (batch_expired) rather than count
	// them twice.
	UsageBatches time.Duration
	// ChangeFeed: entries SDK streams resume from. A stream resuming from an older
	// cursor is told to resynchronise (a reset event).
	ChangeFeed time.Duration
	// AuditLog: who changed what.
	AuditLog time.Duration
	// Unattributed: usage records that named no customer.
	Unattributed time.Duration
	// UsagePartitions: daily partitions of raw usage deltas and audit events; a
	// partition still holding unaggregated usage is kept.
	UsagePartitions time.Duration
	// SDKEvents: engine events SDKs forwarded for alerts, and their batch keys (the
	// alerts they fired are kept).
	SDKEvents time.Duration
	// AnalyticsHourly is how long the hourly analytics rollups are kept; margins and
	// usage by hour, and windows starting or ending inside a day, need them.
	AnalyticsHourly time.Duration
	// AnalyticsDaily is how long the daily rollups and customers' daily running totals
	// are kept: windows starting earlier can no longer be answered.
	AnalyticsDaily time.Duration
	// ExpiredLeases is how long after its expiry an allowance lease's row is kept
	// (LeaseGrace in Defaults and in the worker; not an operator setting).
	ExpiredLeases time.Duration
}

// Defaults are the documented defaults.
func Defaults() Policy {
	const day = 24 * time.Hour
	return Policy{
		IdempotencyKeys: day,
		UsageBatches:    35 * day,
		ChangeFeed:      7 * day,
		AuditLog:        400 * day,
		Unattributed:    90 * day,
		UsagePartitions: 90 * day,
		SDKEvents:       90 * day,
		AnalyticsHourly: 90 * day,
		ExpiredLeases:   LeaseGrace,
	}
}

// Validate checks that the windows are long enough to be safe.
func (p Policy) Validate() error {
	var errs []error
	if p.IdempotencyKeys != 0 && p.IdempotencyKeys < time.Hour {
		errs = append(errs, errors.New("retention-idempotency: must be 0 (forever) or at least 1h: clients retry within it"))
	}
	if p.UsageBatches != 0 && p.UsageBatches < 2*24*time.Hour {
		errs = append(errs, errors.New("retention-usage-batches: must be 0 (forever) or at least 2 days: SDKs retry and replay spilled batches within it"))
	}
	if p.SDKEvents != 0 && p.SDKEvents < 2*24*time.Hour {
		errs = append(errs, errors.New("retention-sdk-events: must be 0 (forever) or at least 2 days: SDKs retry event batches within it"))
	}
	if p.AnalyticsDaily != 0 && p.AnalyticsDaily < 32*24*time.Hour {
		errs = append(errs, errors.New("retention-analytics-daily: must be 0 (forever) or at least 32 days: a billing period's margins read them"))
	}
	if p.UsagePartitions != 0 && p.UsagePartitions < 2*24*time.Hour {
		errs = append(errs, errors.New("retention-usage: must be 0 (forever) or at least 2 days"))
	}
	for _, c := range []struct {
		name string
		d    time.Duration
	}{{"retention-idempotency", p.IdempotencyKeys}, {"retention-usage-batches", p.UsageBatches}, {"retention-change-feed", p.ChangeFeed},
		{"retention-audit-log", p.AuditLog}, {"retention-unattributed", p.Unattributed}, {"retention-usage", p.UsagePartitions},
		{"retention-sdk-events", p.SDKEvents}, {"retention-analytics-hourly", p.AnalyticsHourly}, {"retention-analytics-daily", p.AnalyticsDaily}} {
		if c.d < 0 {
			errs = append(errs, fmt.Errorf("%s: must not be negative", c.name))
		}
	}
	return errors.Join(errs...)
}

// Result counts what one run removed, by table.
type Result struct {
	Deleted map[string]int64
	Dropped []string // partitions dropped
	Kept    []string // old partitions kept (still pending aggregation)
}

// LeaseGrace is how long after its expiry an allowance lease's row is removed.
const LeaseGrace = 24 * time.Hour

// batchSize bounds the rows one statement deletes.
const batchSize = 10_000

// Run removes what p says is past its time at now.
func Run(ctx context.Context, pool *pgxpool.Pool, now time.Time, p Policy, logger *slog.Logger) (Result, error) {
	if logger == nil {
		logger = slog.Default()
	}
	res := Result{Deleted: map[string]int64{}}
	steps := []struct {
		table string
		keep  time.Duration
		run   func(context.Context, *pgxpool.Pool, time.Time) (int64, error)
	}{
		{"idempotency_keys", p.IdempotencyKeys, deleteIdempotency},
		{"usage_batches", p.UsageBatches, deleteUsageBatches},
		{"change_feed", p.ChangeFeed, deleteChangeFeed},
		{"audit_log", p.AuditLog, deleteWhere(`audit_log`, `at`)},
		{"unattributed_usage", p.Unattributed, deleteWhere(`unattributed_usage`, `received_at`)},
		{"sdk_events", p.SDKEvents, deleteWhere(`sdk_events`, `received_at`)},
		{"sdk_event_batches", p.SDKEvents, deleteWhere(`sdk_event_batches`, `received_at`)},
		{"analytics_hourly", p.AnalyticsHourly, deleteWhere(`analytics_hourly`, `bucket`)},
		{"analytics_group_hourly", p.AnalyticsHourly, deleteWhere(`analytics_group_hourly`, `bucket`)},
		{"analytics_daily", p.AnalyticsDaily, deleteWhere(`analytics_daily`, `bucket`)},
		{"analytics_group_daily", p.AnalyticsDaily, deleteWhere(`analytics_group_daily`, `bucket`)},
		{"analytics_customer_days", p.AnalyticsDaily, deleteWhere(`analytics_customer_days`, `day`)},
		// Allowance leases expired for more than a day: an instance that went away
		// without returning them (a lease's row is only needed while it lives, and
		// while usage it covered may still arrive).
		{"fleet_leases", p.ExpiredLeases, deleteWhere(`fleet_leases`, `expires_at`)},
	}
	for _, st := range steps {
		if st.keep <= 0 {
			continue
		}
		n, err := st.run(ctx, pool, now.Add(-st.keep))
		res.Deleted[st.table] = n
		if err != nil {
			return res, fmt.Errorf("retention: %s: %w", st.table, err)
		}
		if n > 0 {
			logger.Info("retention: removed old rows", "table", st.table, "rows", n, "older_than", st.keep.String())
		}
	}
	if p.UsagePartitions > 0 {
		dropped, err := partitions.DropOlderThan(ctx, pool, now.Add(-p.UsagePartitions), logger)
		for _, d := range dropped {
			if d.Kept == "" {
				res.Dropped = append(res.Dropped, d.Partition)
			} else {
				res.Kept = append(res.Kept, d.Partition)
			}
		}
		if err != nil {
			return res, fmt.Errorf("retention: usage partitions: %w", err)
		}
	}
	return res, nil
}

// deleteWhere deletes rows of table whose timestamp column is before the cutoff, in
// batches.
func deleteWhere(table, column string) func(context.Context, *pgxpool.Pool, time.Time) (int64, error) {
	q := `delete from ` + table + ` where ctid = any (array(select ctid from ` + table + ` where ` + column + ` < $1 limit ` +
		fmt.Sprint(batchSize) + `))`
	return func(ctx context.Context, pool *pgxpool.Pool, cutoff time.Time) (int64, error) {
		return inBatches(ctx, func() (int64, error) {
			tag, err := pool.Exec(ctx, q, cutoff)
			return tag.RowsAffected(), err
		})
	}
}

func inBatches(ctx context.Context, step func() (int64, error)) (int64, error) {
	var total int64
	for {
		n, err := step()
		total += n
		if err != nil || n < batchSize || ctx.Err() != nil {
			return total, err
		}
	}
}

// deleteIdempotency purges replies through the idempotency store, which owns the table.
func deleteIdempotency(ctx context.Context, pool *pgxpool.Pool, cutoff time.Time) (int64, error) {
	return idempotency.NewPGStore(pool, nil).Purge(ctx, time.Since(cutoff))
}

// deleteUsageBatches removes batch keys received before the cutoff and records the
// cutoff, so the API can tell a batch it can no longer deduplicate.
func deleteUsageBatches(ctx context.Context, pool *pgxpool.Pool, cutoff time.Time) (int64, error) {
	if _, err := pool.Exec(ctx, `insert into retention_horizons (name, before) values ('usage_batches', $1)
		on conflict (name) do update set before = greatest(retention_horizons.before, excluded.before), updated_at = now()`, cutoff); err != nil {
		return 0, err
	}
	return deleteWhere(`usage_batches`, `received_at`)(ctx, pool, cutoff)
}

// deleteChangeFeed removes feed entries created before the cutoff and, in the same
// statement, records per environment the newest id removed, so a stream resuming from
// before it is told to resynchronise instead of silently missing changes.
func deleteChangeFeed(ctx context.Context, pool *pgxpool.Pool, cutoff time.Time) (int64, error) {
	return inBatches(ctx, func() (int64, error) {
		var n int64
		err := pool.QueryRow(ctx, `with gone as (
				delete from change_feed where id = any (array(
					select id from change_feed where created_at < $1 order by id limit `+fmt.Sprint(batchSize)+`))
				returning tenant_id, environment_id, id
			), horizon as (
				insert into change_feed_horizon as h (tenant_id, environment_id, purged_through)
				select tenant_id, environment_id, max(id) from gone group by 1, 2
				on conflict (tenant_id, environment_id) do update
				set purged_through = greatest(h.purged_through, excluded.purged_through), updated_at = now()
			)
			select count(*) from gone`, cutoff).Scan(&n)
		return n, err
	})
}
