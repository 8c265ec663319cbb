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
	"github.com/limitr/limitr/internal/wire"
)

// LagRecorder collects the worker's per-row commit lags; pass its OnBatch in
// StackConfig.
type LagRecorder struct {
	mu      sync.Mutex
	lags    []time.Duration
	took    []time.Duration
	batches int
}

// OnBatch records a committed aggregation batch.
func (l *LagRecorder) OnBatch(b aggregate.Batch) {
	l.mu.Lock()
	l.lags = append(l.lags, b.CommitLags...)
	l.took = append(l.took, b.Took)
	l.batches++
	l.mu.Unlock()
}

func (l *LagRecorder) take() (lags, took []time.Duration, batches int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	lags, took, batches = l.lags, l.took, l.batches
	l.lags, l.took, l.batches = nil, nil, 0
	return lags, took, batches
}

// LagOptions shape an aggregation-lag run.
type LagOptions struct {
	Name     string        // the phase's name in the report (optional)
	Rate     int           // deltas per second, offered open-loop
	Duration time.Duration // how long to offer them
	Senders  int           // SDK-like instances; each sends one batch per Interval
	Interval time.Duration // each sender's flush interval (the SDK's default is 1 s)
	// DrainTimeout bounds the wait for the backlog to empty after the last POST
	// (default 2 minutes); a run that exceeds it fails.
	DrainTimeout time.Duration
}

// LagResult is the aggregation lag of every row of the run.
type LagResult struct {
	Name                     string
	Rate, Senders, BatchSize int
	Customers, Meters        int // distinct customers and meters the run's usage spans
	Deltas                   int
	Offered                  time.Duration // first send to last acknowledgement
	Post                     Dist          // POST latency
	Received                 Dist          // aggregated_at − received_at (both on the database's clock)
	Commit                   Dist          // received_at → the worker's commit (aggregate.Batch.CommitLags)
	FromSend                 Dist          // aggregated_at − when the sender started the POST (same machine clock)
	WorkerBatches            int
	BatchTook                Dist // each worker batch's wall time, claim to commit
	// MaxBacklog is the largest number of pending rows seen (sampled every 100 ms while
	// sending and every 20 ms after); Drained the time from the last acknowledgement
	// until no row was pending.
	MaxBacklog int64
	Drained    time.Duration
}

// Achieved is the ingest rate the run reached.
func (r LagResult) Achieved() float64 { return float64(r.Deltas) / r.Offered.Seconds() }

func (r LagResult) String() string {
	name := ""
	if r.Name != "" {
		name = r.Name + ": "
	}
	return fmt.Sprintf("%saggregation lag at %d deltas/s for %s (achieved %.0f/s, %d senders × %d-delta batches, %d customers, %d meters, %d rows, %d worker batches):\n"+
		"  aggregated_at − received_at  %s\n  received → worker commit     %s\n  aggregated_at − POST start   %s\n  POST                         %s\n"+
		"  worker batch                 %s\n  backlog: at most %d rows; empty %s after the last POST",
		name, r.Rate, r.Offered.Round(100*time.Millisecond), r.Achieved(), r.Senders, r.BatchSize, r.Customers, r.Meters, r.Deltas, r.WorkerBatches,
		r.Received, r.Commit, r.FromSend, r.Post, r.BatchTook, r.MaxBacklog, ms(r.Drained))
}

// IdleWorker lets the stack's worker idle on an empty usage table before a measurement,
// as a production worker idles between bursts: it wakes the worker n times, every
// apart, and each wake-up runs one batch that finds nothing (a worker that only polls
// runs one per poll: pass its poll interval). The worker keeps running afterwards.
// (pgx prepares the batch statement on each connection, and from its sixth run there
// Postgres may keep a generic plan: made on an empty table, such a plan is what stalled
// aggregation under load; see Plan safety in internal/aggregate's package doc.)
func IdleWorker(ctx context.Context, st *Stack, n int, every time.Duration) error {
	s, err := aggregate.Measure(ctx, st.Pool)
	if err != nil {
		return err
	}
	if s.Rows != 0 {
		return fmt.Errorf("idle worker: %d rows pending, want an empty queue", s.Rows)
	}
	for range n {
		if err := st.Bus.Publish(ctx, wire.ChannelUsage, nil); err != nil {
			return err
		}
		if !sleep(ctx, every) {
			return ctx.Err()
		}
	}
	return nil
}

// Lag offers opt.Rate deltas per second of w through the API for opt.Duration while
// the stack's worker aggregates them, waits until the backlog is empty, and reports
// the lag of every row. rec must be the stack's OnBatch recorder. The worker is the
// stack's, running since the stack started: Lag neither starts nor warms it, so
// several runs in a row are phases of one worker's life. Batches are encoded before
// the run; each sender sends on its own schedule (phase-shifted), catching up at once
// if a POST was slow.
func Lag(ctx context.Context, c *http.Client, t Target, pool *pgxpool.Pool, rec *LagRecorder, w *Workload, opt LagOptions) (LagResult, error) {
	w.BatchSize = max(1, int(float64(opt.Rate)*opt.Interval.Seconds())/opt.Senders)
	r := LagResult{Name: opt.Name, Rate: opt.Rate, Senders: opt.Senders, BatchSize: w.BatchSize,
		Customers: len(w.Customers), Meters: len(w.Customers) * len(w.Meters)}
	drainTimeout := opt.DrainTimeout
	if drainTimeout <= 0 {
		drainTimeout = 2 * time.Minute
	}
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
	_, _, _ = rec.take() // forget earlier batches
	var maxBacklog atomic.Int64
	sampleBacklog := func() (int64, error) {
		s, err := aggregate.Measure(ctx, pool)
		if err != nil {
			return 0, err
		}
		if s.Rows > maxBacklog.Load() {
			maxBacklog.Store(s.Rows) // one writer at a time: the sampler, then Lag
		}
		return s.Rows, nil
	}
	sampling, stopSampling := context.WithCancel(ctx)
	var sampler sync.WaitGroup
	sampler.Go(func() {
		for sleep(sampling, 100*time.Millisecond) {
			_, _ = sampleBacklog()
		}
	})
	defer func() { stopSampling(); sampler.Wait() }()
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
	ended := time.Now()
	stopSampling()
	sampler.Wait()
	if p := failed.Load(); p != nil {
		return r, *p
	}
	var posts []time.Duration
	for _, l := range lats {
		posts = append(posts, l...)
	}
	r.Post = NewDist(posts)
	deadline := ended.Add(drainTimeout)
	for {
		n, err := sampleBacklog()
		if err != nil {
			return r, err
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			return r, fmt.Errorf("backlog of %d rows not aggregated %s after the last POST", n, drainTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.Drained, r.MaxBacklog = time.Since(ended), maxBacklog.Load()
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
	commit, took, n := rec.take()
	r.Commit, r.BatchTook, r.WorkerBatches = NewDist(commit), NewDist(took), n
	return r, nil
}
