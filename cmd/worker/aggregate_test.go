package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/limitr/limitr/internal/config"
	"github.com/limitr/limitr/internal/platform/pgtest"
	"github.com/limitr/limitr/internal/retention"
)

// The worker folds usage into meters, makes the day's partitions, and shows its backlog
// and lag on /metrics.
func TestWorkerAggregatesUsage(t *testing.T) {
	dbURL, pool := pgtest.NewMigrated(t)
	ctx := context.Background()
	insertUsage := func(n int, units string) {
		t.Helper()
		_, err := pool.Exec(ctx, `
			insert into usage_deltas (tenant_id, environment_id, instance_id, sequence, customer_id, customer_uid, entitlement, credit, period_start, units, overhead, price, calls)
			select '00000000-0000-0000-0000-000000000001', '00000000-0000-0000-0000-000000000002', 'i', 1,
			       'cus_' || (g % 3), ('00000000-0000-0000-0000-00000000000' || (g % 3))::uuid, 'tokens', 'usd', '2026-01-01T00:00:00Z', $2::numeric, 0.001, 0.5, 1
			from generate_series(1, $1) g`, n, units)
		if err != nil {
			t.Fatal(err)
		}
	}
	insertUsage(3000, "1.25")

	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	ready := make(chan string, 1)
	go func() {
		done <- work(runCtx, config.Worker{DatabaseURL: dbURL, MetricsAddr: "127.0.0.1:0", PollInterval: 50 * time.Millisecond, BatchSize: 1000,
			Retention: retention.Defaults()}, io.Discard, ready)
	}()
	addr := <-ready
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	total := func() string {
		var s string
		_ = pool.QueryRow(ctx, `select coalesce(sum(units), 0)::text || '/' || coalesce(sum(calls), 0) from meter_aggregates`).Scan(&s)
		return s
	}
	waitFor("the first aggregates", func() bool { return total() == "3750.00/3000" })
	insertUsage(500, "-0.5") // polling picks up later usage too
	waitFor("the later usage", func() bool { return total() == "3500.00/3500" })
	var pending int
	if err := pool.QueryRow(ctx, `select count(*) from usage_deltas where aggregated_at is null`).Scan(&pending); err != nil || pending != 0 {
		t.Fatalf("pending %d %v", pending, err)
	}
	// Tomorrow's partition is ready; today's is not, because today's rows were already in
	// the default partition when the worker started (they stay there, and are counted).
	// The partition job runs on River, once the worker is its leader.
	var tomorrow, today bool
	waitFor("the partition job", func() bool {
		err := pool.QueryRow(ctx, `select to_regclass('usage_deltas_' || to_char(now() at time zone 'UTC' + interval '1 day', 'YYYYMMDD')) is not null,
			to_regclass('usage_deltas_' || to_char(now() at time zone 'UTC', 'YYYYMMDD')) is not null`).Scan(&tomorrow, &today)
		return err == nil && tomorrow
	})
	if today {
		t.Fatal("today's partition was made although its rows were in the default partition")
	}

	scrape := func() string {
		t.Helper()
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return string(body)
	}
	var metrics string
	waitFor("the partition job's outcome", func() bool {
		metrics = scrape()
		return strings.Contains(metrics, `limitr_worker_job_runs_total{job="ensure_partitions"`)
	})
	for _, want := range []string{
		"limitr_aggregation_rows_total 3500",
		"limitr_aggregation_commit_lag_seconds_count 3500",
		`limitr_worker_job_runs_total{job="ensure_partitions",outcome="ok"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	for _, name := range []string{"limitr_aggregation_backlog", "limitr_aggregation_lag_seconds", "limitr_aggregation_batches_total"} {
		if !regexp.MustCompile(`(?m)^` + name + ` \d`).MatchString(metrics) {
			t.Errorf("metrics lack %s", name)
		}
	}
	if t.Failed() {
		fmt.Println(metrics)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
