package aggregate

import (
	"context"
	"crypto/md5"
	"fmt"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/limitr/limitr/internal/platform/pgtest"
)

// copyBacklog writes rows pending usage rows over the fixture's customers × 2
// entitlements, as the API does: one COPY of perTx rows per transaction, so the rows of
// a transaction share its received_at. With aggregated set, the rows are written as
// already aggregated (the history a partition keeps). Each row is 1 unit and 1 call.
func copyBacklog(tb testing.TB, pool *pgxpool.Pool, f fixture, rows, perTx int, aggregated bool) {
	tb.Helper()
	ctx := context.Background()
	cols := []string{"tenant_id", "environment_id", "instance_id", "sequence", "customer_id", "customer_uid", "entitlement", "credit",
		"period_start", "units", "overhead", "price", "calls"}
	inst := "backlog"
	if aggregated {
		cols = append(cols, "aggregated_at")
		inst = "history"
	}
	tenant := pgtype.UUID{Bytes: f.tenant, Valid: true}
	env := pgtype.UUID{Bytes: f.env, Valid: true}
	one := pgtype.Numeric{Int: big.NewInt(1), Valid: true}
	milli := pgtype.Numeric{Int: big.NewInt(1), Exp: -3, Valid: true}
	ents := []string{"tokens", "requests"}
	now := time.Now()
	for seq, done := 1, 0; done < rows; seq++ {
		n := min(perTx, rows-done)
		i := 0
		_, err := pool.CopyFrom(ctx, pgx.Identifier{"usage_deltas"}, cols, pgx.CopyFromFunc(func() ([]any, error) {
			if i >= n {
				return nil, nil
			}
			k := done + i
			i++
			cust := f.customers[k/len(ents)%len(f.customers)]
			v := []any{tenant, env, inst, int64(seq), cust, uidOf(cust), ents[k%len(ents)], "usd",
				jan, one, milli, milli, int64(1)}
			if aggregated {
				v = append(v, now)
			}
			return v, nil
		}))
		if err != nil {
			tb.Fatal(err)
		}
		done += n
	}
}

// explainBatch explains batchSQL as the worker's next batch would run it: on conn, in a
// transaction opened like RunOnce's, through the statement pgx prepared there (so
// Postgres's plan cache chooses between its generic and a custom plan as it does for
// RunOnce). The transaction is rolled back. opts are EXPLAIN's options.
func explainBatch(ctx context.Context, conn *pgx.Conn, opts string, batchSize int) (string, error) {
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{BeginQuery: batchBegin})
	if err != nil {
		return "", err
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // read only: rolled back
	var name string
	if err := tx.QueryRow(ctx, `select name from pg_prepared_statements where statement = $1`, batchSQL).Scan(&name); err != nil {
		return "", fmt.Errorf("the batch statement is not prepared on this connection: %w", err)
	}
	rows, err := tx.Query(ctx, fmt.Sprintf("explain (%s) execute %s(%d)", opts, pgx.Identifier{name}.Sanitize(), batchSize))
	if err != nil {
		return "", err
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	return strings.Join(lines, "\n"), err
}

// planCounts are the plans Postgres has made for batchSQL on conn so far.
func planCounts(ctx context.Context, conn *pgx.Conn) (generic, custom int64, err error) {
	err = conn.QueryRow(ctx, `select generic_plans, custom_plans from pg_prepared_statements where statement = $1`,
		batchSQL).Scan(&generic, &custom)
	return generic, custom, err
}

// The issue: a worker that has idled on an empty table (so that the batch statement,
// prepared by pgx on each pooled connection, has run more than five times there) falls
// behind for good once a backlog builds, because Postgres switched it to a generic plan
// made for an empty table, whose mark step compares every pending row with every
// claimed row (10⁸ comparisons, 20 s and more, for 5,000 rows over a 100k backlog).
//
// Here the worker idles on an empty table, with planner statistics as they may be at
// that point: none (autovacuum has not run), taken on the empty table, or taken while
// every row was aggregated. Then 100k pending rows over 300 meters land, and one batch
// of 5,000 must take well under 2 s and read only indexes, by key.
func TestBatchAfterIdleOverBacklog(t *testing.T) {
	if testing.Short() {
		t.Skip("100k rows per case")
	}
	const backlog, batch = 100_000, DefaultBatchSize
	for _, tc := range []struct {
		name    string
		history int  // rows already aggregated before the worker starts
		analyze bool // ANALYZE before the worker starts
	}{
		{"no statistics", 0, false},
		{"analyzed empty", 0, true},
		{"analyzed with every row aggregated", 50_000, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dbURL, pool := pgtest.NewMigrated(t)
			ctx := context.Background()
			// Statistics stay as the case sets them, whatever autovacuum does on this server.
			if _, err := pool.Exec(ctx, `alter table usage_deltas_default set (autovacuum_enabled = off)`); err != nil {
				t.Fatal(err)
			}
			f := newFixture(t, pool, 150)
			if tc.history > 0 {
				copyBacklog(t, pool, f, tc.history, 5000, true)
			}
			if tc.analyze {
				if _, err := pool.Exec(ctx, `analyze`); err != nil {
					t.Fatal(err)
				}
			}

			// The worker: one pooled connection, so every batch goes through the same
			// prepared statement.
			cfg, err := pgxpool.ParseConfig(dbURL)
			if err != nil {
				t.Fatal(err)
			}
			cfg.MaxConns = 1
			wpool, err := pgxpool.NewWithConfig(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer wpool.Close()
			a := New(wpool, Options{})
			for range 8 {
				if b, err := a.RunOnce(ctx); err != nil || b.Rows != 0 {
					t.Fatalf("idle batch: %+v %v", b, err)
				}
			}
			conn, err := wpool.Acquire(ctx)
			if err != nil {
				t.Fatal(err)
			}
			generic, custom, err := planCounts(ctx, conn.Conn())
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("after 8 idle batches: %d generic, %d custom plans", generic, custom)

			start := time.Now()
			copyBacklog(t, pool, f, backlog, 1000, false)
			t.Logf("backlog of %d rows written in %v", backlog, time.Since(start).Round(time.Millisecond))
			plan, err := explainBatch(ctx, conn.Conn(), "costs off", batch)
			conn.Release()
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("the next batch's plan:\n%s", plan)

			bctx, cancel := context.WithTimeout(ctx, 6*time.Second)
			defer cancel()
			start = time.Now()
			b, err := a.RunOnce(bctx)
			took := time.Since(start)
			if err != nil {
				t.Fatalf("one batch over a %d-row backlog: %v after %v", backlog, err, took.Round(time.Millisecond))
			}
			t.Logf("one batch over a %d-row backlog: %d rows, %d meters in %v", backlog, b.Rows, b.Meters, took.Round(time.Millisecond))
			if b.Rows != batch || b.Meters != 300 {
				t.Errorf("batch folded %d rows into %d meters, want %d into 300", b.Rows, b.Meters, batch)
			}
			if took > 2*time.Second {
				t.Errorf("one batch over a %d-row backlog took %v, want < 2s", backlog, took)
			}

			conn, err = wpool.Acquire(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Release()
			analyzed, err := explainBatch(ctx, conn.Conn(), "analyze, costs off, timing off, summary on", batch)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("the next batch, explain analyze:\n%s", analyzed)
			for _, bad := range []string{"Seq Scan", "Bitmap Heap Scan", "Hash Join", "Merge Join", "Join Filter", "Sort Key: usage_deltas", "JIT:"} {
				if strings.Contains(analyzed, bad) {
					t.Errorf("the batch's plan has %q: it reads more than the batch's keys", bad)
				}
			}
			if !strings.Contains(analyzed, "Index Scan using usage_deltas_default_pkey") {
				t.Error("the mark step does not look rows up by primary key")
			}
			if generic, _, err = planCounts(ctx, conn.Conn()); err != nil || generic != 0 {
				t.Errorf("the batch ran %d generic plans (%v); want custom plans only", generic, err)
			}

			var folded, units string
			if err := pool.QueryRow(ctx, `select (select count(*) from usage_deltas where instance_id = 'backlog' and aggregated_at is not null)::text,
				(select coalesce(sum(units), 0) from meter_aggregates)::text`).Scan(&folded, &units); err != nil || folded != "5000" || units != "5000" {
				t.Errorf("after one batch: %s rows marked, %s units in meters, %v", folded, units, err)
			}
		})
	}
}

// BenchmarkDrainAfterIdle measures Drain over a 200k-row backlog (COPY, 1,000 rows a
// transaction, 300 meters) that lands after the worker idled on an empty, analyzed
// table, as a production worker meets a burst; rows/s. A Drain is stopped after 2
// minutes (the rate is then over the rows it folded): before plan safety, it fell
// further behind with every batch.
func BenchmarkDrainAfterIdle(b *testing.B) {
	const backlog = 200_000
	dbURL, pool := pgtest.NewMigrated(b)
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `alter table usage_deltas_default set (autovacuum_enabled = off)`); err != nil {
		b.Fatal(err)
	}
	f := newFixture(b, pool, 150)
	if _, err := pool.Exec(ctx, `analyze`); err != nil {
		b.Fatal(err)
	}
	cfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		b.Fatal(err)
	}
	cfg.MaxConns = 1
	wpool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer wpool.Close()
	a := New(wpool, Options{})
	for range 8 {
		if _, err := a.RunOnce(ctx); err != nil {
			b.Fatal(err)
		}
	}
	rows := 0
	var took time.Duration
	for b.Loop() {
		b.StopTimer()
		copyBacklog(b, pool, f, backlog, 1000, false)
		b.StartTimer()
		dctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		start := time.Now()
		n, err := a.Drain(dctx)
		took += time.Since(start)
		cancel()
		rows += n
		if err != nil {
			b.Fatalf("stopped after %v with %d of %d rows folded: %v", time.Since(start).Round(time.Millisecond), n, backlog, err)
		}
	}
	b.ReportMetric(float64(rows)/took.Seconds(), "rows/s")
}

// uidOf is the customer uid the tests give a customer id (md5(id)::uuid in SQL).
func uidOf(customer string) pgtype.UUID {
	sum := md5.Sum([]byte(customer))
	return pgtype.UUID{Bytes: sum, Valid: true}
}
