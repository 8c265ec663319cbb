package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/limitr/limitr/internal/config"
	"github.com/limitr/limitr/internal/platform/pgtest"
	"github.com/limitr/limitr/internal/retention"
)

func TestWorkerPurgesExpiredIdempotencyKeys(t *testing.T) {
	dbURL, pool := pgtest.NewMigrated(t)
	ctx := context.Background()
	_, err := pool.Exec(ctx, `insert into idempotency_keys (tenant_id, principal, key, method, path, request_hash, created_at)
		values ('t', 'p', 'old', 'POST', '/v1/x', '\x00', now() - interval '25 hours'),
		       ('t', 'p', 'new', 'POST', '/v1/x', '\x00', now())`)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	ready := make(chan string, 1)
	go func() {
		done <- work(runCtx, config.Worker{DatabaseURL: dbURL, MetricsAddr: "127.0.0.1:0", PollInterval: time.Second,
			Retention: retention.Defaults()}, io.Discard, ready)
	}()
	addr := <-ready
	deadline := time.Now().Add(10 * time.Second)
	for {
		var keys []string
		rows, err := pool.Query(ctx, `select key from idempotency_keys order by key`)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var k string
			_ = rows.Scan(&k)
			keys = append(keys, k)
		}
		rows.Close()
		if strings.Join(keys, ",") == "new" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("keys left: %v", keys)
		}
		time.Sleep(50 * time.Millisecond)
	}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `limitr_retention_removed_total{table="idempotency_keys"} 1`) {
		t.Fatalf("metrics:\n%s", body)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestWorkerConfigErrors(t *testing.T) {
	if code := run(context.Background(), []string{"--poll-interval", "soon"}, func(string) string { return "" }, io.Discard); code != 2 {
		t.Fatalf("exit %d", code)
	}
}
