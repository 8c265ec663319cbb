package bench

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
)

// Why usage aggregation is not a River job: the alternative would insert a job in
// each usage batch's transaction and fold the batch when River runs it. RiverLatency
// measures the part River adds (from the committing transaction to the job starting)
// at a given batch rate, to set beside the aggregation loop's commit-to-aggregated lag
// from the lag scenario.

// RiverOptions shape a River latency run.
type RiverOptions struct {
	Rate     int           // jobs per second, one per simulated usage batch
	Duration time.Duration // how long to insert them
	// FetchCooldown is River's shortest pause between fetches (0: River's default,
	// 100 ms).
	FetchCooldown time.Duration
}

// RiverResult is how long jobs waited between their inserting transaction's commit
// and a worker starting them.
type RiverResult struct {
	Rate          int
	FetchCooldown time.Duration
	Jobs          int
	Start         Dist
}

func (r RiverResult) String() string {
	cd := "default"
	if r.FetchCooldown > 0 {
		cd = r.FetchCooldown.String()
	}
	return fmt.Sprintf("river: %d jobs/s (fetch cooldown %s), %d jobs: commit → job start p50 %s p90 %s p99 %s max %s",
		r.Rate, cd, r.Jobs, r.Start.P50, r.Start.P90, r.Start.P99, r.Start.Max)
}

const benchQueue = "bench"

// pingArgs is a job that only records when it started.
type pingArgs struct {
	Committed time.Time `json:"committed"`
}

func (pingArgs) Kind() string { return "bench.ping" }

type pingWorker struct {
	river.WorkerDefaults[pingArgs]
	mu     sync.Mutex
	starts []time.Duration
	done   chan struct{}
	want   int
}

func (w *pingWorker) Work(_ context.Context, j *river.Job[pingArgs]) error {
	d := time.Since(j.Args.Committed)
	w.mu.Lock()
	w.starts = append(w.starts, d)
	if len(w.starts) == w.want {
		close(w.done)
	}
	w.mu.Unlock()
	return nil
}

// RiverLatency inserts one job per 1/Rate seconds, each in a transaction of its own
// (as a usage batch's would be), on a running River client, and measures the time
// from each commit to the job starting. The pool's database must be migrated.
func RiverLatency(ctx context.Context, pool *pgxpool.Pool, opt RiverOptions) (RiverResult, error) {
	n := int(float64(opt.Rate) * opt.Duration.Seconds())
	w := &pingWorker{done: make(chan struct{}), want: n}
	workers := river.NewWorkers()
	river.AddWorker(workers, w)
	client, err := river.NewClient(riverpgxv5.New(pool), &river.Config{
		// A queue of its own: a worker's River client on the same database must not take
		// (and fail) these jobs.
		Queues:        map[string]river.QueueConfig{benchQueue: {MaxWorkers: 16}},
		Workers:       workers,
		FetchCooldown: opt.FetchCooldown,
	})
	if err != nil {
		return RiverResult{}, err
	}
	if err := client.Start(ctx); err != nil {
		return RiverResult{}, err
	}
	defer func() {
		stop, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_ = client.Stop(stop)
	}()
	time.Sleep(time.Second) // let the client settle (leader, listeners)
	tick := time.NewTicker(time.Duration(float64(time.Second) / float64(opt.Rate)))
	defer tick.Stop()
	for range n {
		select {
		case <-ctx.Done():
			return RiverResult{}, ctx.Err()
		case <-tick.C:
		}
		// The job carries its commit time: the transaction commits right after.
		err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			_, err := client.InsertTx(ctx, tx, pingArgs{Committed: time.Now()}, &river.InsertOpts{Queue: benchQueue})
			return err
		})
		if err != nil {
			return RiverResult{}, err
		}
	}
	select {
	case <-w.done:
	case <-time.After(30 * time.Second):
		return RiverResult{}, fmt.Errorf("river: only %d of %d jobs ran within 30 s", len(w.starts), n)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return RiverResult{Rate: opt.Rate, FetchCooldown: opt.FetchCooldown, Jobs: n, Start: NewDist(w.starts)}, nil
}
