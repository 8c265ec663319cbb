package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/limitr/limitr/internal/platform/pg"
	"github.com/limitr/limitr/internal/platform/pgtest"
)

// `limitr dev` serves the API on a free port, prints its URL, creates tenants with the
// operator token, folds usage into meters in the same process, and stops on cancel.
func TestDevRunsAPIAndWorker(t *testing.T) {
	dbURL := pgtest.NewDatabase(t) // dev applies the migrations itself
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	outR, outW := io.Pipe()
	done := make(chan int, 1)
	go func() {
		done <- dev(ctx, []string{"--addr", "127.0.0.1:0", "--database-url", dbURL, "--operator-token", "op-secret",
			"--poll-interval", "50ms", "--log-level", "warn"}, func(string) string { return "" }, outW, io.Discard)
		outW.Close()
	}()
	lines := bufio.NewScanner(outR)
	var base, metrics string
	for (base == "" || metrics == "") && lines.Scan() {
		if u, ok := strings.CutPrefix(lines.Text(), "limitr dev: listening on "); ok {
			base = u
		}
		if u, ok := strings.CutPrefix(lines.Text(), "limitr dev: metrics on "); ok {
			metrics = u
		}
	}
	if base == "" {
		t.Fatalf("no URL printed (exit %v)", <-done)
	}
	go func() { _, _ = io.Copy(io.Discard, outR) }()

	resp, err := http.Get(base + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/healthz: %d", resp.StatusCode)
	}

	req, _ := http.NewRequest(http.MethodPost, base+"/v1/tenants", strings.NewReader(`{"slug": "acme"}`))
	req.Header.Set("Authorization", "Bearer op-secret")
	req.Header.Set("Content-Type", "application/json")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var boot struct {
		Secret string `json:"secret"`
		Tenant struct {
			ID string `json:"id"`
		} `json:"tenant"`
		Environments []struct {
			ID string `json:"id"`
		} `json:"environments"`
	}
	err = json.NewDecoder(resp.Body).Decode(&boot)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusCreated || !strings.HasPrefix(boot.Secret, "lk_admin_") || len(boot.Environments) == 0 {
		t.Fatalf("bootstrap: %d %+v %v", resp.StatusCode, boot, err)
	}
	req, _ = http.NewRequest(http.MethodGet, base+"/v1/tenant", nil)
	req.Header.Set("Authorization", "Bearer "+boot.Secret)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v1/tenant with the new admin key: %d", resp.StatusCode)
	}

	// The worker half: committed usage reaches the meters.
	pool, err := pg.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, `insert into usage_deltas (tenant_id, environment_id, instance_id, sequence, customer_id, customer_uid, entitlement, credit, period_start, units, overhead, price, calls)
		values ($1, $2, 'i', 1, 'cus_1', gen_random_uuid(), 'tokens', 'usd', '2026-01-01T00:00:00Z', 42.5, 0, 0.01, 3)`, boot.Tenant.ID, boot.Environments[0].ID); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var units string
		err := pool.QueryRow(ctx, `select units::text from meter_aggregates where customer_id = 'cus_1'`).Scan(&units)
		if err == nil && units == "42.5" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("usage was not aggregated: %q %v", units, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	resp, err = http.Get(metrics)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "limitr_aggregation_rows_total 1") || !strings.Contains(string(body), "limitr_aggregation_backlog") {
		t.Errorf("/metrics lacks the aggregation series")
	}

	cancel()
	select {
	case code := <-done:
		if code != exitOK {
			t.Fatalf("exit %d", code)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("dev did not stop")
	}
}

func TestDevConfigErrors(t *testing.T) {
	var stderr strings.Builder
	code := dev(context.Background(), []string{"--batch-size", "0"}, func(string) string { return "" }, io.Discard, &stderr)
	if code != exitUsage || !strings.Contains(stderr.String(), "database-url") || !strings.Contains(stderr.String(), "batch-size") {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if strings.Count(stderr.String(), "database-url:") != 1 {
		t.Errorf("database-url reported more than once: %s", stderr.String())
	}
}
