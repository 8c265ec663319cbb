package evaluate

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/limitr/limitr/internal/aggregate"
	"github.com/limitr/limitr/internal/alerts"
	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/platform/bus"
	"github.com/limitr/limitr/internal/wire"
)

// BenchmarkAggregationWithEvaluation offers 20k usage deltas a second (1,000 every
// 50 ms, a wake-up after each commit, as the API does) over 1,000 customers with one
// rule of every usage kind, for 5 s per round, in alternating rounds with rule
// evaluation off and on, and reports aggregation capacity (rows folded per second of
// batch time, claim to commit) and the p99 commit lag of each, and their ratio. The
// budget is a ratio of at least 0.9: evaluation runs off the aggregation transaction.
func BenchmarkAggregationWithEvaluation(b *testing.B) {
	h := newHarness(b, Config{SweepInterval: -1})
	for _, k := range []struct {
		kind string
		p    alerts.Params
	}{
		{alerts.KindUsagePercent, alerts.Params{Thresholds: []num.Dec{dec("50"), dec("80"), dec("100")}}},
		{alerts.KindSpend, alerts.Params{Amount: decp("25")}},
		{alerts.KindMarginBelow, alerts.Params{Percent: decp("50")}},
		{alerts.KindForecastExceedsLimit, alerts.Params{}},
		{alerts.KindGrantBalanceBelow, alerts.Params{Balance: decp("100")}},
	} {
		h.rule(k.kind, k.p)
	}
	const customers = 1000
	ids, uids := make([]string, customers), make([]uuid.UUID, customers)
	for i := range ids {
		ids[i] = fmt.Sprintf("c%04d", i)
		uids[i] = h.customer(ids[i])
	}
	h.setClock(jan1.AddDate(0, 0, 10))
	rng := rand.New(rand.NewPCG(1, 2))
	batches := make([][]int, 100)
	for i := range batches {
		batches[i] = make([]int, 1000)
		for j := range batches[i] {
			batches[i][j] = rng.IntN(customers)
		}
	}
	for b.Loop() {
		var res [2][]round
		for i := range 4 {
			on := i%2 == 1
			r := h.offer(b, on, batches, ids, uids)
			res[i%2] = append(res[i%2], r)
			b.Logf("evaluation %v: %.0f rows/s of batch time, p99 lag %v, %d batches, evaluated %d customers in %d batches (%d dropped), fired %+v, standings %v, observe %v",
				on, r.capacity(), r.p99, r.batches, r.stats.Customers, r.stats.Batches, r.stats.Dropped, r.stats.Fired, r.stats.Standings, r.stats.Observe)
		}
		off, on := mean(res[0]), mean(res[1])
		b.ReportMetric(off, "off-rows/s")
		b.ReportMetric(on, "on-rows/s")
		b.ReportMetric(on/off, "on/off")
		b.ReportMetric(float64(res[0][1].p99.Microseconds())/1000, "off-p99-ms")
		b.ReportMetric(float64(res[1][1].p99.Microseconds())/1000, "on-p99-ms")
	}
}

// round is one load's outcome.
type round struct {
	rows, batches int
	took          time.Duration
	p99           time.Duration
	stats         Stats
}

func (r round) capacity() float64 { return float64(r.rows) / r.took.Seconds() }

func mean(rs []round) float64 {
	s := 0.0
	for _, r := range rs {
		s += r.capacity()
	}
	return s / float64(len(rs))
}

// offer runs the aggregation loop (and, when on, the evaluator fed by it) under the
// load until the backlog is empty.
func (h *harness) offer(b *testing.B, on bool, batches [][]int, ids []string, uids []uuid.UUID) round {
	ctx, cancel := context.WithCancel(h.ctx)
	defer cancel()
	wake := bus.NewMemory()
	ev := New(h.pool, h.alerts, h.bill, Config{SweepInterval: -1, Logger: nil})
	var mu sync.Mutex
	var r round
	var lags []time.Duration
	agg := aggregate.New(h.pool, aggregate.Options{Bus: wake, OnBatch: func(bt aggregate.Batch) {
		mu.Lock()
		r.rows += bt.Rows
		r.batches++
		r.took += bt.Took
		lags = append(lags, bt.CommitLags...)
		mu.Unlock()
		if on {
			ev.OnBatch(bt)
		}
	}})
	var wg sync.WaitGroup
	wg.Go(func() { _ = agg.Run(ctx) })
	if on {
		wg.Go(func() { _ = ev.Run(ctx) })
	}
	tick := time.NewTicker(50 * time.Millisecond)
	for _, batch := range batches {
		<-tick.C
		h.insertBatch(b, batch, ids, uids)
		_ = wake.Publish(ctx, wire.ChannelUsage, nil)
	}
	tick.Stop()
	for {
		s, err := aggregate.Measure(ctx, h.pool)
		if err != nil {
			b.Fatal(err)
		}
		if s.Rows == 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	cancel()
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	slices.Sort(lags)
	r.p99 = lags[len(lags)*99/100]
	r.stats = ev.Stats()
	return r
}

// insertBatch commits one usage delta of 1 to 3 tokens (and as many runes of
// overhead) per entry of batch, a customer index.
func (h *harness) insertBatch(b *testing.B, batch []int, ids []string, uids []uuid.UUID) {
	cs, us, units := make([]string, len(batch)), make([]uuid.UUID, len(batch)), make([]string, len(batch))
	for i, c := range batch {
		cs[i], us[i], units[i] = ids[c], uids[c], fmt.Sprint(1+i%3)
	}
	h.seq++
	if _, err := h.pool.Exec(h.ctx, `insert into usage_deltas (tenant_id, environment_id, instance_id, sequence, customer_id, customer_uid,
			entitlement, credit, period_start, units, overhead, price, calls)
		select $1, $2, 'bench', $3, c, u, 'tokens', 'token', $4, n::numeric, n::numeric / 10, 0, 1
		from unnest($5::text[], $6::uuid[], $7::text[]) as x(c, u, n)`,
		h.env.TenantID, h.env.ID, h.seq, jan1, cs, us, units); err != nil {
		b.Fatal(err)
	}
}
