package aggregate

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/limitr/limitr/internal/platform/bus"
	"github.com/limitr/limitr/internal/platform/pg"
	"github.com/limitr/limitr/internal/platform/pgtest"
	"github.com/limitr/limitr/internal/wire"
)

// fixture is a tenant with one environment and some customers.
type fixture struct {
	tenant, env uuid.UUID
	customers   []string
}

func newFixture(t testing.TB, pool *pgxpool.Pool, customers int) fixture {
	t.Helper()
	ctx := context.Background()
	f := fixture{tenant: uuid.New(), env: uuid.New()}
	if _, err := pool.Exec(ctx, `insert into tenants (id, slug, name) values ($1, $2, 'Test')`, f.tenant, "t-"+f.tenant.String()[:8]); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `insert into environments (id, tenant_id, name) values ($1, $2, 'production')`, f.env, f.tenant); err != nil {
		t.Fatal(err)
	}
	for i := range customers {
		id := fmt.Sprintf("cus_%d", i)
		if _, err := pool.Exec(ctx, `insert into customers (tenant_id, environment_id, id, billing_anchor) values ($1, $2, $3, now())`, f.tenant, f.env, id); err != nil {
			t.Fatal(err)
		}
		f.customers = append(f.customers, id)
	}
	return f
}

// row is one usage delta as the API would commit it.
type row struct {
	customer, entitlement string
	period                time.Time
	units, overhead       string // exact decimals
	price                 string
	calls                 int64
}

type meterKey struct {
	customer, entitlement string
	period                int64
}

// totals are the exact expected sums per meter, in big.Rat.
type totals map[meterKey]*[4]big.Rat

func (tt totals) add(t testing.TB, r row) {
	k := meterKey{r.customer, r.entitlement, r.period.Unix()}
	s := tt[k]
	if s == nil {
		s = new([4]big.Rat)
		tt[k] = s
	}
	for i, v := range []string{r.units, r.overhead, r.price, fmt.Sprint(r.calls)} {
		var x big.Rat
		if _, ok := x.SetString(v); !ok {
			t.Fatalf("bad decimal %q", v)
		}
		s[i].Add(&s[i], &x)
	}
}

// insert writes rows in one statement, as one (instance, sequence) batch, received at
// receivedAt (now when zero).
func insert(t testing.TB, pool *pgxpool.Pool, f fixture, rows []row, receivedAt time.Time) {
	t.Helper()
	n := len(rows)
	cust, ent, units, over, price := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	periods, calls := make([]time.Time, n), make([]int64, n)
	for i, r := range rows {
		cust[i], ent[i], units[i], over[i], price[i], periods[i], calls[i] = r.customer, r.entitlement, r.units, r.overhead, r.price, r.period, r.calls
	}
	var at *time.Time
	if !receivedAt.IsZero() {
		at = &receivedAt
	}
	_, err := pool.Exec(context.Background(), `
		insert into usage_deltas (received_at, tenant_id, environment_id, instance_id, sequence, customer_id, customer_uid, entitlement, credit,
		                          period_start, units, overhead, price, calls)
		select coalesce($3::timestamptz, now()), $1, $2, 'inst', 1, c, md5(c)::uuid, e, 'usd', p, u::numeric, o::numeric, pr::numeric, k
		from unnest($4::text[], $5::text[], $6::timestamptz[], $7::text[], $8::text[], $9::text[], $10::bigint[]) as x(c, e, p, u, o, pr, k)`,
		f.tenant, f.env, at, cust, ent, periods, units, over, price, calls)
	if err != nil {
		t.Fatal(err)
	}
}

// checkTotals compares meter_aggregates with want, exactly, and checks nothing is pending.
func checkTotals(t testing.TB, pool *pgxpool.Pool, f fixture, want totals) {
	t.Helper()
	ctx := context.Background()
	rows, err := pool.Query(ctx, `select customer_id, entitlement, period_start, units::text, overhead::text, price::text, calls::text
		from meter_aggregates where tenant_id = $1 and environment_id = $2`, f.tenant, f.env)
	if err != nil {
		t.Fatal(err)
	}
	got := totals{}
	for rows.Next() {
		var k meterKey
		var p time.Time
		var vals [4]string
		if err := rows.Scan(&k.customer, &k.entitlement, &p, &vals[0], &vals[1], &vals[2], &vals[3]); err != nil {
			t.Fatal(err)
		}
		k.period = p.Unix()
		s := new([4]big.Rat)
		for i, v := range vals {
			if _, ok := s[i].SetString(v); !ok {
				t.Fatalf("bad numeric %q", v)
			}
		}
		got[k] = s
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Errorf("%d meters, want %d", len(got), len(want))
	}
	bad := 0
	for k, w := range want {
		g := got[k]
		if g == nil {
			t.Errorf("meter %v missing", k)
			bad++
		} else {
			for i := range w {
				if g[i].Cmp(&w[i]) != 0 {
					t.Errorf("meter %v column %d: got %s, want %s", k, i, g[i].FloatString(30), w[i].FloatString(30))
					bad++
				}
			}
		}
		if bad > 10 {
			t.Fatal("too many differences")
		}
	}
	var pending int
	if err := pool.QueryRow(ctx, `select count(*) from usage_deltas where aggregated_at is null`).Scan(&pending); err != nil {
		t.Fatal(err)
	}
	if pending != 0 {
		t.Errorf("%d rows still pending", pending)
	}
}

func randomRows(rng *rand.Rand, f fixture, n int, periods []time.Time) []row {
	ents := []string{"tokens", "requests", "seats"}
	out := make([]row, n)
	for i := range out {
		units := fmt.Sprintf("%d.%018d%07d", rng.IntN(1_000_000), rng.Int64N(1e18), rng.IntN(1e7)) // 25 decimals
		if rng.IntN(10) == 0 {
			units = "-" + units // corrections and refunds
		}
		out[i] = row{
			customer:    f.customers[rng.IntN(len(f.customers))],
			entitlement: ents[rng.IntN(len(ents))],
			period:      periods[rng.IntN(len(periods))],
			units:       units,
			overhead:    fmt.Sprintf("0.%020d", rng.Int64N(1e18)),
			price:       fmt.Sprintf("%d.%010d", rng.IntN(100), rng.Int64N(1e10)),
			calls:       int64(rng.IntN(5)),
		}
	}
	return out
}

var (
	jan = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	feb = time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)
)

func TestSumsAreExact(t *testing.T) {
	_, pool := pgtest.NewMigrated(t)
	ctx := context.Background()
	f := newFixture(t, pool, 2)
	want := totals{}
	rows := []row{
		{f.customers[0], "tokens", jan, "0.1", "0.0000000000000000000000000001", "0.000001", 1},
		{f.customers[0], "tokens", jan, "0.2", "0.0000000000000000000000000002", "0.000002", 1},
		{f.customers[0], "tokens", jan, "-0.3", "0", "-0.000003", 0},
		{f.customers[0], "tokens", feb, "123456789012345678901234567890.123456789012345678901234567890", "1", "1", 2},
		{f.customers[0], "tokens", feb, "0.000000000000000000000000000001", "1", "1", 3},
		{f.customers[1], "tokens", jan, "-5", "2.5", "0.75", 7},
		{f.customers[1], "seats", jan, "1", "0", "9.99", 1},
	}
	for _, r := range rows {
		want.add(t, r)
	}
	// An existing meter is added to, not replaced.
	if _, err := pool.Exec(ctx, `insert into meter_aggregates (tenant_id, environment_id, customer_id, customer_uid, entitlement, period_start, credit, units, overhead, price, calls)
		values ($1, $2, $3, md5($3)::uuid, 'seats', $4, 'usd', 10.5, 0, 1, 4)`, f.tenant, f.env, f.customers[1], jan); err != nil {
		t.Fatal(err)
	}
	want.add(t, row{f.customers[1], "seats", jan, "10.5", "0", "1", 4})
	insert(t, pool, f, rows, time.Time{})

	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	a := New(pool, Options{BatchSize: 3, Metrics: m})
	n, err := a.Drain(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n != len(rows) {
		t.Fatalf("drained %d rows, want %d", n, len(rows))
	}
	checkTotals(t, pool, f, want)
	if got := testutil.ToFloat64(m.Rows); got != float64(len(rows)) {
		t.Errorf("rows_total %v", got)
	}
	if got := testutil.ToFloat64(m.Batches); got != 3 {
		t.Errorf("batches_total %v, want 3 (3+3+1)", got)
	}
	if got := testutil.CollectAndCount(m.CommitLag); got != 1 {
		t.Errorf("commit lag series %d", got)
	}
	// Nothing more to do: a second pass changes nothing.
	if b, err := a.RunOnce(ctx); err != nil || b.Rows != 0 {
		t.Fatalf("second pass: %+v %v", b, err)
	}
	checkTotals(t, pool, f, want)
	var exact string
	if err := pool.QueryRow(ctx, `select units::text from meter_aggregates where customer_id = $1 and period_start = $2`, f.customers[0], feb).Scan(&exact); err != nil {
		t.Fatal(err)
	}
	if exact != "123456789012345678901234567890.123456789012345678901234567891" {
		t.Errorf("units %s", exact)
	}
}

// Four workers, each with its own pool, drain 50k rows (10k of them arriving while they
// run): every row is folded exactly once and the meters equal the exact sums.
func TestConcurrentWorkersCountOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("50k rows")
	}
	dbURL, pool := pgtest.NewMigrated(t)
	ctx := context.Background()
	f := newFixture(t, pool, 40)
	rng := rand.New(rand.NewPCG(1, 2))
	periods := []time.Time{jan, feb}
	want := totals{}
	var all []row
	for range 8 {
		rows := randomRows(rng, f, 5000, periods)
		insert(t, pool, f, rows, time.Time{})
		all = append(all, rows...)
	}
	late := make([][]row, 10)
	for i := range late {
		late[i] = randomRows(rng, f, 1000, periods)
		all = append(all, late[i]...)
	}
	for _, r := range all {
		want.add(t, r)
	}

	var folded, inserting atomic.Int64
	inserting.Store(1)
	perWorker := make([]int64, 4)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w := range 4 {
		p, err := pg.Connect(ctx, dbURL)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		a := New(p, Options{BatchSize: 700})
		wg.Go(func() {
			for {
				b, err := a.RunOnce(ctx)
				if err != nil {
					errs <- err
					return
				}
				folded.Add(int64(b.Rows))
				perWorker[w] += int64(b.Rows)
				if b.Rows == 0 && inserting.Load() == 0 {
					return
				}
			}
		})
	}
	for _, rows := range late {
		insert(t, pool, f, rows, time.Time{})
		time.Sleep(5 * time.Millisecond)
	}
	inserting.Store(0)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// A worker may stop while another still holds the last rows; mop up, then check.
	rest, err := New(pool, Options{}).Drain(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := folded.Load() + int64(rest); got != int64(len(all)) {
		t.Fatalf("folded %d rows, inserted %d", got, len(all))
	}
	checkTotals(t, pool, f, want)
	busy := 0
	for _, n := range perWorker {
		if n > 0 {
			busy++
		}
	}
	t.Logf("rows per worker: %v (+%d mopped up)", perWorker, rest)
	if busy < 2 {
		t.Errorf("only %d worker(s) did any work: %v", busy, perWorker)
	}
}

// A batch that fails after its statement, is cancelled mid-flight, or loses its
// connection leaves no trace; a later run folds everything exactly once.
func TestFailedBatchLeavesNoTrace(t *testing.T) {
	_, pool := pgtest.NewMigrated(t)
	ctx := context.Background()
	f := newFixture(t, pool, 3)
	rng := rand.New(rand.NewPCG(3, 4))
	rows := randomRows(rng, f, 2000, []time.Time{jan})
	insert(t, pool, f, rows, time.Time{})
	want := totals{}
	for _, r := range rows {
		want.add(t, r)
	}
	untouched := func(t *testing.T) {
		t.Helper()
		var meters, pending int
		if err := pool.QueryRow(ctx, `select (select count(*) from meter_aggregates), (select count(*) from usage_deltas where aggregated_at is null)`).Scan(&meters, &pending); err != nil {
			t.Fatal(err)
		}
		if meters != 0 || pending != len(rows) {
			t.Fatalf("after a failed batch: %d meters, %d of %d rows pending", meters, pending, len(rows))
		}
	}
	boom := errors.New("injected failure after the upsert")

	t.Run("error before commit", func(t *testing.T) {
		a := New(pool, Options{})
		a.beforeCommit = func(ctx context.Context, tx pgx.Tx) error {
			var n int
			// The upsert is visible inside the transaction...
			if err := tx.QueryRow(ctx, `select count(*) from meter_aggregates`).Scan(&n); err != nil || n == 0 {
				t.Errorf("inside the batch: %d meters, %v", n, err)
			}
			return boom
		}
		if _, err := a.RunOnce(ctx); !errors.Is(err, boom) {
			t.Fatalf("err %v", err)
		}
		untouched(t) // ...and gone after the rollback.
	})
	t.Run("context cancelled mid-transaction", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		a := New(pool, Options{})
		a.beforeCommit = func(ctx context.Context, tx pgx.Tx) error {
			time.AfterFunc(50*time.Millisecond, cancel)
			_, err := tx.Exec(ctx, `select pg_sleep(30)`)
			return err
		}
		start := time.Now()
		if _, err := a.RunOnce(cctx); err == nil {
			t.Fatal("no error")
		}
		if time.Since(start) > 10*time.Second {
			t.Fatal("cancellation did not interrupt the batch")
		}
		// The client hung up, but its backend sleeps on holding the batch's row locks (as
		// a killed worker's backend would until its statement ends): end it.
		if _, err := pool.Exec(ctx, `select pg_terminate_backend(pid, 5000) from pg_stat_activity
			where datname = current_database() and query = 'select pg_sleep(30)'`); err != nil {
			t.Fatal(err)
		}
		untouched(t)
	})
	t.Run("connection killed mid-transaction", func(t *testing.T) {
		a := New(pool, Options{})
		hooked := false
		defer func() {
			if !hooked {
				t.Error("the batch found no rows")
			}
		}()
		a.beforeCommit = func(ctx context.Context, tx pgx.Tx) error {
			hooked = true
			var pid int
			if err := tx.QueryRow(ctx, `select pg_backend_pid()`).Scan(&pid); err != nil {
				return err
			}
			// What SIGKILL of the worker looks like from Postgres: the session vanishes.
			// (Waiting until it is gone, so its row locks are released before the next run.)
			var killed bool
			if err := pool.QueryRow(context.Background(), `select pg_terminate_backend($1, 5000)`, pid).Scan(&killed); err != nil || !killed {
				t.Errorf("terminating backend %d: %v %v", pid, killed, err)
			}
			return nil
		}
		if _, err := a.RunOnce(ctx); err == nil {
			t.Fatal("commit on a killed connection succeeded")
		}
		untouched(t)
	})
	n, err := New(pool, Options{BatchSize: 500}).Drain(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n != len(rows) {
		t.Fatalf("drained %d of %d", n, len(rows))
	}
	checkTotals(t, pool, f, want)
}

// With a bus, a wake-up folds new usage at once, long before the poll interval.
func TestWakeUpThroughBus(t *testing.T) {
	_, pool := pgtest.NewMigrated(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := newFixture(t, pool, 1)
	b := bus.NewMemory()
	batches := make(chan Batch, 16)
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	a := New(pool, Options{Bus: b, PollInterval: time.Minute, SampleInterval: 50 * time.Millisecond, Metrics: m,
		OnBatch: func(b Batch) { batches <- b }})
	insert(t, pool, f, []row{{f.customers[0], "tokens", jan, "1", "0", "0", 1}}, time.Time{})
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	select { // the first pass runs at start, after subscribing
	case <-batches:
	case <-time.After(10 * time.Second):
		t.Fatal("no first batch")
	}
	for i := range 3 {
		insert(t, pool, f, []row{{f.customers[0], "tokens", jan, "2", "0", "0", 1}}, time.Time{})
		start := time.Now()
		if err := b.Publish(ctx, wire.ChannelUsage, []byte("x")); err != nil {
			t.Fatal(err)
		}
		select {
		case got := <-batches:
			took := time.Since(start)
			t.Logf("wake-up %d folded %d row(s) in %v", i, got.Rows, took)
			if took > 200*time.Millisecond {
				t.Errorf("wake-up took %v", took)
			}
			if got.Rows != 1 || len(got.CommitLags) != 1 || got.CommitLags[0] <= 0 || got.CommitLags[0] > 5*time.Second {
				t.Errorf("batch %+v", got)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the wake-up was not answered")
		}
	}
	var units string
	if err := pool.QueryRow(ctx, `select units::text from meter_aggregates`).Scan(&units); err != nil || units != "7" {
		t.Fatalf("units %q %v", units, err)
	}
	// The sampler reports an empty queue.
	deadline := time.Now().Add(5 * time.Second)
	for testutil.ToFloat64(m.Backlog) != 0 || testutil.ToFloat64(m.Lag) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("backlog %v lag %v", testutil.ToFloat64(m.Backlog), testutil.ToFloat64(m.Lag))
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// Without a bus, Run polls.
func TestRunPollsWithoutBus(t *testing.T) {
	_, pool := pgtest.NewMigrated(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := newFixture(t, pool, 1)
	a := New(pool, Options{PollInterval: 50 * time.Millisecond})
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	time.Sleep(100 * time.Millisecond)
	insert(t, pool, f, []row{{f.customers[0], "tokens", jan, "3", "0", "0", 1}}, time.Time{})
	deadline := time.Now().Add(5 * time.Second)
	for {
		var n int
		_ = pool.QueryRow(ctx, `select count(*) from meter_aggregates`).Scan(&n)
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("polling never folded the row")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestMeasure(t *testing.T) {
	_, pool := pgtest.NewMigrated(t)
	ctx := context.Background()
	f := newFixture(t, pool, 1)
	s, err := Measure(ctx, pool)
	if err != nil || s.Rows != 0 || s.Lag != 0 || !s.Oldest.IsZero() {
		t.Fatalf("empty queue: %+v %v", s, err)
	}
	old := time.Now().Add(-90 * time.Second)
	insert(t, pool, f, []row{{f.customers[0], "tokens", jan, "1", "0", "0", 1}}, old)
	insert(t, pool, f, []row{{f.customers[0], "tokens", jan, "1", "0", "0", 1}, {f.customers[0], "tokens", jan, "1", "0", "0", 1}}, time.Time{})
	s, err = Measure(ctx, pool)
	if err != nil {
		t.Fatal(err)
	}
	if s.Rows != 3 || s.Lag < 89*time.Second || s.Lag > 120*time.Second || !s.Oldest.Equal(old.Truncate(time.Microsecond)) {
		t.Fatalf("queue: %+v (oldest %v)", s, old)
	}
}

// BenchmarkAggregate measures folding throughput: rows per second through RunOnce at the
// default batch size, over 200 meters.
func BenchmarkAggregate(b *testing.B) {
	_, pool := pgtest.NewMigrated(b)
	ctx := context.Background()
	f := newFixture(b, pool, 50)
	rng := rand.New(rand.NewPCG(5, 6))
	const total = 200_000
	for range total / 10_000 {
		insert(b, pool, f, randomRows(rng, f, 10_000, []time.Time{jan}), time.Time{})
	}
	if _, err := pool.Exec(ctx, `vacuum analyze usage_deltas`); err != nil {
		b.Fatal(err)
	}
	a := New(pool, Options{})
	rows := 0
	for b.Loop() {
		n, err := a.RunOnce(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if n.Rows == 0 {
			b.StopTimer()
			insert(b, pool, f, randomRows(rng, f, 10_000, []time.Time{jan}), time.Time{})
			b.StartTimer()
		}
		rows += n.Rows
	}
	b.ReportMetric(float64(rows)/b.Elapsed().Seconds(), "rows/s")
}

// BenchmarkLagAt20kRowsPerSecond commits 1000 usage rows every 50 ms for 5 s, publishing
// a wake-up after each commit as the API does, and reports the per-row commit lag
// (received_at → folded) percentiles, for the p99 ≤ 5 s budget.
func BenchmarkLagAt20kRowsPerSecond(b *testing.B) {
	_, pool := pgtest.NewMigrated(b)
	f := newFixture(b, pool, 50)
	rng := rand.New(rand.NewPCG(7, 8))
	batches := make([][]row, 100)
	for i := range batches {
		batches[i] = randomRows(rng, f, 1000, []time.Time{jan})
	}
	for b.Loop() {
		ctx, cancel := context.WithCancel(context.Background())
		wake := bus.NewMemory()
		var mu sync.Mutex
		var lags []time.Duration
		a := New(pool, Options{Bus: wake, OnBatch: func(bt Batch) {
			mu.Lock()
			lags = append(lags, bt.CommitLags...)
			mu.Unlock()
		}})
		done := make(chan error, 1)
		go func() { done <- a.Run(ctx) }()
		tick := time.NewTicker(50 * time.Millisecond)
		for _, rows := range batches {
			<-tick.C
			insert(b, pool, f, rows, time.Time{})
			_ = wake.Publish(ctx, wire.ChannelUsage, nil)
		}
		tick.Stop()
		for {
			s, err := Measure(ctx, pool)
			if err != nil {
				b.Fatal(err)
			}
			if s.Rows == 0 {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(50 * time.Millisecond)
		cancel()
		<-done
		mu.Lock()
		slices.Sort(lags)
		if len(lags) != 100_000 {
			b.Fatalf("%d lags", len(lags))
		}
		b.ReportMetric(float64(lags[len(lags)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(lags[len(lags)*99/100].Microseconds())/1000, "p99-ms")
		b.ReportMetric(float64(lags[len(lags)-1].Microseconds())/1000, "max-ms")
		lags = lags[:0]
		mu.Unlock()
	}
}
