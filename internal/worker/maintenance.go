package worker

import (
	"context"
	"time"

	"github.com/riverqueue/river"

	"github.com/limitr/limitr/internal/partitions"
	"github.com/limitr/limitr/internal/retention"
)

// PartitionsArgs keeps the usage tables' daily partitions DaysAhead days ahead.
type PartitionsArgs struct{}

// Kind implements river.JobArgs.
func (PartitionsArgs) Kind() string { return "limitr.ensure_partitions" }

type partitionsWorker struct {
	river.WorkerDefaults[PartitionsArgs]
	w *Worker
}

func (pw *partitionsWorker) Work(ctx context.Context, _ *river.Job[PartitionsArgs]) error {
	_, err := partitions.Ensure(ctx, pw.w.deps.Pool, time.Now(), partitions.DaysAhead, pw.w.log)
	pw.w.metrics.outcome("ensure_partitions", err)
	return err
}

// PurgeIdempotencyArgs removes idempotency replies past their window.
type PurgeIdempotencyArgs struct{}

// Kind implements river.JobArgs.
func (PurgeIdempotencyArgs) Kind() string { return "limitr.purge_idempotency" }

type idempotencyWorker struct {
	river.WorkerDefaults[PurgeIdempotencyArgs]
	w *Worker
}

func (iw *idempotencyWorker) Work(ctx context.Context, _ *river.Job[PurgeIdempotencyArgs]) error {
	res, err := retention.Run(ctx, iw.w.deps.Pool, time.Now(), retention.Policy{IdempotencyKeys: iw.w.cfg.Retention.IdempotencyKeys}, iw.w.log)
	iw.w.record(res)
	iw.w.metrics.outcome("purge_idempotency", err)
	return err
}

// RetentionArgs applies the retention policy (everything but idempotency replies,
// which PurgeIdempotencyArgs handles).
type RetentionArgs struct{}

// Kind implements river.JobArgs.
func (RetentionArgs) Kind() string { return "limitr.retention" }

type retentionWorker struct {
	river.WorkerDefaults[RetentionArgs]
	w *Worker
}

func (rw *retentionWorker) Work(ctx context.Context, _ *river.Job[RetentionArgs]) error {
	p := rw.w.cfg.Retention
	p.IdempotencyKeys = 0
	res, err := retention.Run(ctx, rw.w.deps.Pool, time.Now(), p, rw.w.log)
	rw.w.record(res)
	rw.w.metrics.outcome("retention", err)
	return err
}

func (w *Worker) record(res retention.Result) {
	for table, n := range res.Deleted {
		w.metrics.Removed.WithLabelValues(table).Add(float64(n))
	}
	if len(res.Dropped) > 0 {
		w.metrics.Removed.WithLabelValues("usage_partitions").Add(float64(len(res.Dropped)))
	}
}
