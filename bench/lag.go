package bench

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/limitr/limitr/internal/aggregate"
)

// LagRecorder collects the worker's per-row commit lags; pass its OnBatch in
// StackConfig.
type LagRecorder struct {
	mu      sync.Mutex
	lags    []time.Duration
	batches int
}

// OnBatch records a committed aggregation batch.
func (l *LagRecorder) OnBatch(b aggregate.Batch) {
	l.mu.Lock()
	l.lags = append(l.lags, b.CommitLags...)
	l.batches++
	l.mu.Unlock()
}

func (l *LagRecorder) take() ([]time.Duration, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	out, n := l.lags, l.batches
	l.lags, l.batches = nil, 0
	return out, n
}

// LagOptions shape an aggregation-lag run.
type LagOptions struct {
	Rate     int           // deltas per second, offered open-loop
	Duration time.Duration // how long to offer them
	Senders  int           // SDK-like instances; each sends one batch per Interval
	Interval time.Duration // each sender's flush interval (the SDK's default is 1 s)
}

// LagResult is the aggregation lag of every row of the run.
type LagResult struct {
	Rate, Senders, BatchSize int
	Deltas                   int
	Offered                  time.Duration // first send to last acknowledgement
	Post                     Dist          // POST latency
	Received                 Dist          // aggregated_at − received_at (both on the database's clock)
	Commit                   Dist          // received_at → the worker's commit (aggregate.Batch.CommitLags)
	FromSend                 Dist          // aggregated_at − when the sender started the POST (same machine clock)
	WorkerBatches            int
}

// Achieved is the ingest rate the run reached.
func (r LagResult) Achieved() float64 { return float64(r.Deltas) / r.Offered.Seconds() }

func (r LagResult) String() string {
	return fmt.Sprintf("aggregation lag at %d deltas/s (achieved %.0f/s, %d senders × %d-delta batches, %d rows, %d worker batches):\n"+
		"  aggregated_at − received_at  %s\n  received → worker commit     %s\n  aggregated_at − POST start   %s\n  POST                         %s",
		r.Rate, r.Achieved(), r.Senders, r.BatchSize, r.Deltas, r.WorkerBatches, r.Received, r.Commit, r.FromSend, r.Post)
}

// Lag offers opt.Rate deltas per second of w through the API for opt.Duration while
// the stack's worker aggregates them, waits until the backlog is empty, and reports
// the lag of every row. rec must be the stack's OnBatch recorder. Batches are encoded
// before the run; each sender sends on its own schedule (phase-shifted), catching up
// at once if a POST was slow.
func Lag(ctx context.Context, c *http.Client, t Target, pool *pgxpool.Pool, rec *LagRecorder, w *Workload, opt LagOptions) (LagResult, error) {
	w.BatchSize = max(1, int(float64(opt.Rate)*opt.Interval.Seconds())/opt.Senders)
	r := LagResult{Rate: opt.Rate, Senders: opt.Senders, BatchSize: w.BatchSize}
	perSender := max(1, int(opt.Duration/opt.Interval))
	run := randHex(4)
	prefix := "lag-" + run + "-"
	type enc struct {
		body []byte
		seq  int64
	}
	streams := make([][]enc, opt.Senders)
	for s := range streams {
		for q := 1; q <= perSender; q++ {
			b := w.Batch(fmt.Sprintf("%s%d", prefix, s), int64(q))
			streams[s] = append(streams[s], enc{Encode(b), int64(q)})
		}
	}
	_, _ = rec.take() // forget earlier batches
	lats := make([][]time.Duration, opt.Senders)
	sendAt := make([][]time.Time, opt.Senders)
	var failed atomic.Pointer[error]
	var wg sync.WaitGroup
	start := time.Now().Add(50 * time.Millisecond)
	for s := range streams {
		wg.Go(func() {
			phase := time.Duration(s) * opt.Interval / time.Duration(opt.Senders)
			for k, e := range streams[s] {
				if d := time.Until(start.Add(phase + time.Duration(k)*opt.Interval)); d > 0 && !sleep(ctx, d) {
					return
				}
				t1 := time.Now()
				sendAt[s] = append(sendAt[s], t1)
				if err := PostUsage(ctx, c, t, e.body, e.seq, w.BatchSize); err != nil {
					err = fmt.Errorf("sender %d: %w", s, err)
					failed.CompareAndSwap(nil, &err)
					return
				}
				lats[s] = append(lats[s], time.Since(t1))
			}
		})
	}
	wg.Wait()
	r.Offered = time.Since(start)
	if p := failed.Load(); p != nil {
		return r, *p
	}
	var posts []time.Duration
	for _, l := range lats {
		posts = append(posts, l...)
	}
	r.Post = NewDist(posts)
	deadline := time.Now().Add(2 * time.Minute)
	for {
		s, err := aggregate.Measure(ctx, pool)
		if err != nil {
			return r, err
		}
		if s.Rows == 0 {
			break
		}
		if time.Now().After(deadline) {
			return r, fmt.Errorf("backlog of %d rows not aggregated after 2 minutes", s.Rows)
		}
		time.Sleep(20 * time.Millisecond)
	}
	rows, err := pool.Query(ctx, `select instance_id, sequence, extract(epoch from aggregated_at - received_at)::float8,
			aggregated_at from usage_deltas where instance_id like $1`, prefix+"%")
	if err != nil {
		return r, err
	}
	var recv, fromSend []time.Duration
	for rows.Next() {
		var inst string
		var seq int64
		var lag float64
		var at time.Time
		if err := rows.Scan(&inst, &seq, &lag, &at); err != nil {
			rows.Close()
			return r, err
		}
		recv = append(recv, time.Duration(lag*float64(time.Second)))
		var s int
		if _, err := fmt.Sscanf(inst[len(prefix):], "%d", &s); err == nil && s < len(sendAt) && int(seq) <= len(sendAt[s]) {
			fromSend = append(fromSend, at.Sub(sendAt[s][seq-1]))
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return r, err
	}
	r.Deltas = len(recv)
	if want := opt.Senders * perSender * w.BatchSize; r.Deltas != want || len(fromSend) != want {
		return r, fmt.Errorf("%d rows of this run (%d matched to a POST), want %d", r.Deltas, len(fromSend), want)
	}
	r.Received, r.FromSend = NewDist(recv), NewDist(fromSend)
	commit, n := rec.take()
	r.Commit, r.WorkerBatches = NewDist(commit), n
	return r, nil
}
