// Command worker runs the control plane's background work (internal/worker): folding
// committed usage into per-customer meters (woken through Redis, polling without it),
// and River's jobs: keeping the usage tables' daily partitions ahead of the clock,
// purging idempotency replies and applying the retention policy. Work is claimed
// through Postgres, so any number of workers can run side by side.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/limitr/limitr/internal/config"
	"github.com/limitr/limitr/internal/httpx"
	"github.com/limitr/limitr/internal/platform/bus"
	"github.com/limitr/limitr/internal/platform/pg"
	"github.com/limitr/limitr/internal/worker"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Getenv, os.Stderr))
}

func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) int {
	cfg, err := config.LoadWorker(args, getenv, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "worker:", err)
		return 2
	}
	if err := work(ctx, cfg, stderr, nil); err != nil {
		fmt.Fprintln(stderr, "worker:", err)
		return 1
	}
	return 0
}

// work runs until ctx ends. ready, when not nil, receives the metrics address once the
// worker runs.
func work(ctx context.Context, cfg config.Worker, logOut io.Writer, ready chan<- string) error {
	logger := slog.New(slog.NewJSONHandler(logOut, &slog.HandlerOptions{Level: cfg.LogLevel}))
	pool, err := pg.Open(ctx, cfg.DatabaseURL, cfg.MigrateOnStart)
	if err != nil {
		return err
	}
	defer pool.Close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	var wake bus.Bus
	if cfg.RedisURL != "" {
		rdb, err := bus.NewRedisClient(cfg.RedisURL)
		if err != nil {
			return fmt.Errorf("redis-url: %w", err)
		}
		defer rdb.Close()
		if err := rdb.Ping(ctx).Err(); err != nil {
			logger.Warn("worker: redis is not answering yet; polling meanwhile", "err", err)
		}
		wake = bus.NewRedis(rdb, logger)
	}
	w, err := worker.New(worker.Deps{Pool: pool, Bus: wake, Logger: logger, Registry: reg, Secrets: cfg.Secrets, StripeAPIBase: cfg.StripeAPIBase,
		SlackAPIURL: cfg.SlackAPIURL, PublicURL: cfg.PublicURL,
		AllowPrivateAlertDestinations: cfg.AllowPrivateAlertDestinations}, worker.Config{
		BatchSize: cfg.BatchSize, PollInterval: cfg.PollInterval, Retention: cfg.Retention, AlertSweepInterval: cfg.AlertSweepInterval,
	})
	if err != nil {
		return err
	}

	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if err := pool.Ping(r.Context()); err != nil {
			http.Error(w, `{"status":"postgres unreachable"}`, http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}`))
	})
	srv, addr, err := httpx.ServeInternal(cfg.MetricsAddr, mux)
	if err != nil {
		return err
	}
	defer srv.Close()
	logger.Info("worker: started", "metrics", addr, "poll", cfg.PollInterval.String(), "batch_size", cfg.BatchSize, "redis", wake != nil)
	if ready != nil {
		ready <- addr
	}
	err = w.Run(ctx)
	logger.Info("worker: stopped")
	return err
}
