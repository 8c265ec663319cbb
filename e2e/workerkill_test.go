package e2e

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/limitr/limitr/internal/aggregate"
)

// TestWorkerKilledMidBatch runs cmd/worker on a large backlog of usage deltas,
// SIGKILLs it inside a batch transaction once about half the backlog is folded, and
// starts it again. Every row ends up aggregated exactly once: a trigger logs each
// change of aggregated_at, and each row's is set once, from null; the meters equal
// the sums of the deltas exactly (numeric, units, overhead, price and calls).
func TestWorkerKilledMidBatch(t *testing.T) {
	dbURL, pool := newDB(t)
	rows, batchSize := 200_000, 2000
	if testing.Short() {
		rows, batchSize = 20_000, 500
	}
	ctx := context.Background()
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := pool.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%v\n%s", err, sql)
		}
	}
	exec(`create table e2e_marks (id bigint not null, old_at timestamptz, new_at timestamptz, by_pid int not null default pg_backend_pid())`)
	exec(`create function e2e_mark() returns trigger language plpgsql as $$
		begin
			insert into e2e_marks (id, old_at, new_at) values (new.id, old.aggregated_at, new.aggregated_at);
			return null;
		end $$`)
	exec(`create trigger e2e_mark after update of aggregated_at on usage_deltas for each row execute function e2e_mark()`)
	seedStart := time.Now()
	exec(`insert into usage_deltas (tenant_id, environment_id, instance_id, sequence, customer_id, customer_uid, entitlement, credit,
			period_start, units, overhead, price, calls)
		select t.tenant, t.env, 'seed-' || (g % 8), g / 8 + 1, 'c' || (g % 500), md5('c' || (g % 500))::uuid,
		       case when g % 3 = 0 then 'ai-chat-output' else 'ai-chat-input' end,
		       case when g % 3 = 0 then 'claude-sonnet-4-output' else 'claude-sonnet-4-input' end,
		       date_trunc('day', now()) - (g % 2) * interval '1 day',
		       ((g * 7919) % 100000)::numeric / 1000,
		       ((g * 31) % 1000)::numeric / 1000000,
		       ((g * 17) % 1000)::numeric / 10000000,
		       1 + g % 3
		from generate_series(1, $1::int) g, (select gen_random_uuid() as tenant, gen_random_uuid() as env) t`, rows)
	seedTook := time.Since(seedStart)

	backlog := func() int64 {
		b, err := aggregate.Measure(ctx, pool)
		if err != nil {
			t.Fatal(err)
		}
		return b.Rows
	}
	marks := func() (n, distinct, fromSet int64) {
		if err := pool.QueryRow(ctx, `select count(*), count(distinct id), count(*) filter (where old_at is not null or new_at is null) from e2e_marks`).
			Scan(&n, &distinct, &fromSet); err != nil {
			t.Fatal(err)
		}
		return
	}

	sink := newSink(t, "worker process")
	args := []string{"--database-url", withAppName(t, dbURL, "e2e-worker"), "--metrics-addr", "127.0.0.1:0",
		"--poll-interval", "100ms", "--batch-size", strconv.Itoa(batchSize), "--migrate-on-start=false", "--log-level", "warn"}
	bin := binary(t, "worker")
	runStart := time.Now()
	w := startProc(t, "worker", bin, args, sink)

	// Wait for half the backlog, then for a batch transaction that has marked rows and
	// not committed, and SIGKILL the worker there.
	waitFor(t, 60*time.Second, "the worker to fold half the backlog", func() bool {
		if w.exited() {
			t.Fatalf("the worker exited: %v", w.err)
		}
		return backlog() <= int64(rows/2)
	})
	caught := false
	deadline := time.Now().Add(3 * time.Second)
	for !caught && time.Now().Before(deadline) {
		var n int
		if err := pool.QueryRow(ctx, `select count(*) from pg_stat_activity
			where application_name = 'e2e-worker' and state = 'active' and backend_xid is not null`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		caught = n > 0
	}
	w.kill()
	killedAt := time.Since(runStart)
	if !caught {
		t.Errorf("no batch transaction in flight was seen within 3 s; killed anyway")
	}
	// The killed worker's session ends and its batch rolls back.
	waitFor(t, 10*time.Second, "the killed worker's sessions to end", func() bool {
		var n int
		if err := pool.QueryRow(ctx, `select count(*) from pg_stat_activity where application_name = 'e2e-worker'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 0
	})
	leftAtKill := backlog()
	markedAtKill, _, _ := marks()
	if markedAtKill+leftAtKill != int64(rows) {
		t.Errorf("after the kill: %d rows marked + %d pending ≠ %d", markedAtKill, leftAtKill, rows)
	}
	var batchesAtKill int64
	if err := pool.QueryRow(ctx, `select count(distinct (by_pid, new_at)) from e2e_marks`).Scan(&batchesAtKill); err != nil {
		t.Fatal(err)
	}

	restart := time.Now()
	w2 := startProc(t, "worker", bin, args, sink)
	waitFor(t, 90*time.Second, "the restarted worker to drain the backlog", func() bool {
		if w2.exited() {
			t.Fatalf("the restarted worker exited: %v", w2.err)
		}
		return backlog() == 0
	})
	drainTook := time.Since(restart)
	w2.kill()

	n, distinct, reset := marks()
	if n != int64(rows) || distinct != int64(rows) || reset != 0 {
		t.Errorf("aggregated_at changes: %d for %d distinct rows of %d, %d of them not from null to a time; want each row set once", n, distinct, rows, reset)
	}
	var unmarked int64
	if err := pool.QueryRow(ctx, `select count(*) from usage_deltas where aggregated_at is null`).Scan(&unmarked); err != nil {
		t.Fatal(err)
	}
	if unmarked != 0 {
		t.Errorf("%d rows were never aggregated", unmarked)
	}
	checkMetersEqualDeltas(t, pool)
	t.Logf("seeded %d deltas in %s; worker (batch %d) SIGKILLed %s after start inside a batch transaction (seen: %v) with %d rows pending (%d folded in %d committed batches); restarted worker drained the rest in %s",
		rows, seedTook.Round(time.Millisecond), batchSize, killedAt.Round(time.Millisecond), caught, leftAtKill, markedAtKill, batchesAtKill, drainTook.Round(time.Millisecond))
}

// checkMetersEqualDeltas compares every meter with the sums of its usage rows, exactly.
func checkMetersEqualDeltas(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	var bad, meters int64
	var units string
	err := pool.QueryRow(context.Background(), `
		with d as (
			select tenant_id, environment_id, customer_id, entitlement, period_start,
			       sum(units) as units, sum(overhead) as overhead, sum(price) as price, sum(calls) as calls
			from usage_deltas group by 1, 2, 3, 4, 5)
		select count(*) filter (where d.units is distinct from m.units or d.overhead is distinct from m.overhead
		                           or d.price is distinct from m.price or d.calls is distinct from m.calls),
		       count(*), coalesce(sum(m.units), 0)::text
		from d full join meter_aggregates m using (tenant_id, environment_id, customer_id, entitlement, period_start)`).
		Scan(&bad, &meters, &units)
	if err != nil {
		t.Fatal(err)
	}
	if bad != 0 {
		t.Errorf("%d of %d meters differ from the sums of their deltas", bad, meters)
	}
	t.Logf("%d meters, %s units in meter_aggregates, equal to the deltas' sums (units, overhead, price, calls)", meters, units)
}
