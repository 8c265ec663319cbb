package partitions

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/limitr/limitr/internal/platform/pgtest"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func partitionsOf(t *testing.T, pool *pgxpool.Pool, table string) []string {
	t.Helper()
	rows, err := pool.Query(context.Background(), `select c.relname from pg_inherits i join pg_class c on c.oid = i.inhrelid
		where i.inhparent = $1::regclass order by 1`, table)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

func TestEnsureCreatesDaysAheadIdempotently(t *testing.T) {
	_, pool := pgtest.NewMigrated(t)
	ctx := context.Background()
	now := time.Date(2026, 3, 31, 23, 30, 0, 0, time.FixedZone("X", -5*3600)) // 2026-04-01 04:30 UTC
	res, err := Ensure(ctx, pool, now, DaysAhead, quiet)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"usage_deltas_20260401", "usage_deltas_20260402", "usage_deltas_20260403",
		"usage_events_20260401", "usage_events_20260402", "usage_events_20260403"}
	if !slices.Equal(res.Created, want) || len(res.Skipped) != 0 {
		t.Fatalf("first run: %+v", res)
	}
	for _, table := range Tables {
		got := partitionsOf(t, pool, table)
		exp := []string{table + "_20260401", table + "_20260402", table + "_20260403", table + "_default"}
		if !slices.Equal(got, exp) {
			t.Errorf("%s partitions %v", table, got)
		}
	}
	res, err = Ensure(ctx, pool, now, DaysAhead, quiet)
	if err != nil || len(res.Created) != 0 || len(res.Skipped) != 0 {
		t.Fatalf("second run: %+v %v", res, err)
	}
	// A day later one more partition appears; several workers at once are fine.
	var wg sync.WaitGroup
	results := make([]Result, 4)
	for i := range results {
		wg.Go(func() {
			r, err := Ensure(ctx, pool, now.Add(24*time.Hour), DaysAhead, quiet)
			if err != nil {
				t.Error(err)
			}
			results[i] = r
		})
	}
	wg.Wait()
	var created []string
	for _, r := range results {
		created = append(created, r.Created...)
	}
	slices.Sort(created)
	if !slices.Equal(created, []string{"usage_deltas_20260404", "usage_events_20260404"}) {
		t.Fatalf("concurrent runs created %v", created)
	}
	// The new partitions carry the parent's indexes, the worker's queue index included.
	var n int
	if err := pool.QueryRow(ctx, `select count(*) from pg_indexes where tablename = 'usage_deltas_20260404' and indexdef like '%WHERE (aggregated_at IS NULL)%'`).Scan(&n); err != nil || n != 2 {
		t.Fatalf("partial indexes on the new partition: %d %v", n, err)
	}
}

func TestRowsLandInTheirDay(t *testing.T) {
	_, pool := pgtest.NewMigrated(t)
	ctx := context.Background()
	now := time.Now()
	if _, err := Ensure(ctx, pool, now, DaysAhead, quiet); err != nil {
		t.Fatal(err)
	}
	tomorrow := now.UTC().Truncate(24*time.Hour).AddDate(0, 0, 1)
	_, err := pool.Exec(ctx, `
		insert into usage_deltas (received_at, tenant_id, environment_id, instance_id, sequence, customer_id, customer_uid, entitlement, credit, period_start, units, overhead, price, calls)
		values (now(), gen_random_uuid(), gen_random_uuid(), 'i', 1, 'c', gen_random_uuid(), 'e', 'usd', now(), 1, 0, 0, 1),
		       ($1, gen_random_uuid(), gen_random_uuid(), 'i', 1, 'c', gen_random_uuid(), 'e', 'usd', now(), 1, 0, 0, 1),
		       ($1::timestamptz - interval '1 microsecond', gen_random_uuid(), gen_random_uuid(), 'i', 1, 'c', gen_random_uuid(), 'e', 'usd', now(), 1, 0, 0, 1),
		       ($1::timestamptz + interval '30 days', gen_random_uuid(), gen_random_uuid(), 'i', 1, 'c', gen_random_uuid(), 'e', 'usd', now(), 1, 0, 0, 1)`, tomorrow)
	if err != nil {
		t.Fatal(err)
	}
	_, err = pool.Exec(ctx, `
		insert into usage_events (received_at, tenant_id, environment_id, instance_id, event_id, customer_id, entitlement, units, overhead, allowed, at)
		values ($1, gen_random_uuid(), gen_random_uuid(), 'i', 'ev1', 'c', 'e', 1, 0, true, now())`, tomorrow)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	rows, err := pool.Query(ctx, `select tableoid::regclass::text from usage_deltas order by received_at`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var s string
		_ = rows.Scan(&s)
		got = append(got, s)
	}
	rows.Close()
	today := Name("usage_deltas", now)
	want := []string{today, today, Name("usage_deltas", tomorrow), "usage_deltas_default"}
	if !slices.Equal(got, want) {
		t.Fatalf("rows in %v, want %v", got, want)
	}
	var ev string
	if err := pool.QueryRow(ctx, `select tableoid::regclass::text from usage_events`).Scan(&ev); err != nil || ev != Name("usage_events", tomorrow) {
		t.Fatalf("event in %q %v", ev, err)
	}
}

// Rows already in the default partition for a day stop that day's partition from being
// created: Ensure skips it with a reason, creates the other days, and does not fail.
func TestDefaultPartitionConflictIsSkipped(t *testing.T) {
	_, pool := pgtest.NewMigrated(t)
	ctx := context.Background()
	day := time.Date(2026, 5, 10, 0, 0, 0, 0, time.UTC)
	if _, err := pool.Exec(ctx, `
		insert into usage_deltas (received_at, tenant_id, environment_id, instance_id, sequence, customer_id, customer_uid, entitlement, credit, period_start, units, overhead, price, calls)
		values ($1::timestamptz + interval '1 day 3 hours', gen_random_uuid(), gen_random_uuid(), 'i', 1, 'c', gen_random_uuid(), 'e', 'usd', now(), 1, 0, 0, 1)`, day); err != nil {
		t.Fatal(err)
	}
	res, err := Ensure(ctx, pool, day, DaysAhead, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Skipped) != 1 || res.Skipped[0].Partition != "usage_deltas_20260511" {
		t.Fatalf("skipped %+v", res.Skipped)
	}
	t.Logf("skipped: %+v", res.Skipped)
	if !slices.Equal(res.Created, []string{"usage_deltas_20260510", "usage_deltas_20260512",
		"usage_events_20260510", "usage_events_20260511", "usage_events_20260512"}) {
		t.Fatalf("created %v", res.Created)
	}
	// The row stays where it is, and the next run skips again without error.
	var where string
	if err := pool.QueryRow(ctx, `select tableoid::regclass::text from usage_deltas`).Scan(&where); err != nil || where != "usage_deltas_default" {
		t.Fatalf("row in %q %v", where, err)
	}
	res, err = Ensure(ctx, pool, day, DaysAhead, quiet)
	if err != nil || len(res.Created) != 0 || len(res.Skipped) != 1 {
		t.Fatalf("second run %+v %v", res, err)
	}
	// What Postgres itself says, which the pre-check spares the log: the error path is
	// handled too when the check is raced.
	_, name, err := ensureDayUnchecked(ctx, pool, "usage_deltas", day.AddDate(0, 0, 1))
	if err != nil || name == "" {
		t.Fatalf("unchecked create: %q %v", name, err)
	}
	t.Logf("postgres: %s", name)
}

// ensureDayUnchecked issues the create without the pre-check, to exercise the error path.
func ensureDayUnchecked(ctx context.Context, pool *pgxpool.Pool, table string, from time.Time) (string, string, error) {
	skipDefaultCheck = true
	defer func() { skipDefaultCheck = false }()
	return ensureDay(ctx, pool, table, from)
}
