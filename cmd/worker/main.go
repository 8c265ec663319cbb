// Command worker runs the control plane's background jobs: folding committed usage into
// per-customer meters (woken through Redis, polling without it), keeping the usage
// tables' daily partitions ahead of the clock, and purging idempotency keys past their
// 24-hour window. Jobs claim work through Postgres, so any number of workers can run
// side by side.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/limitr/limitr/internal/aggregate"
	"github.com/limitr/limitr/internal/config"
	"github.com/limitr/limitr/internal/httpx/idempotency"
	"github.com/limitr/limitr/internal/partitions"
	"github.com/limitr/limitr/internal/platform/bus"
	"github.com/limitr/limitr/internal/platform/pg"
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

// idempotencyWindow is how long POST replies are kept for retries.
const idempotencyWindow = 24 * time.Hour

// partitionInterval is how often daily partitions are checked; they are made two days
// ahead, so an hour leaves ample room for retries.
const partitionInterval = time.Hour

func outcome(err error) string {
	if err != nil {
		return "error"
	}
	return "ok"
}

func work(ctx context.Context, cfg config.Worker, logOut io.Writer, ready chan<- string) error {
	logger := slog.New(slog.NewJSONHandler(logOut, &slog.HandlerOptions{Level: cfg.LogLevel}))
	pool, err := pg.Open(ctx, cfg.DatabaseURL, cfg.MigrateOnStart)
	if err != nil {
		return err
	}
	defer pool.Close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	purged := prometheus.NewCounter(prometheus.CounterOpts{Name: "limitr_worker_idempotency_keys_purged_total", Help: "Idempotency keys removed after their window."})
	runs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "limitr_worker_job_runs_total", Help: "Job runs by job and outcome."}, []string{"job", "outcome"})
	reg.MustRegister(purged, runs)
	aggMetrics := aggregate.NewMetrics(reg)

	var wake bus.Bus
	if cfg.RedisURL != "" {
		client, err := bus.NewRedisClient(cfg.RedisURL)
		if err != nil {
			return fmt.Errorf("redis-url: %w", err)
		}
		rdb := client
		defer rdb.Close()
		if err := rdb.Ping(ctx).Err(); err != nil {
			logger.Warn("worker: redis is not answering yet; polling meanwhile", "err", err)
		}
		wake = bus.NewRedis(rdb, logger)
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
	ln, err := net.Listen("tcp", cfg.MetricsAddr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	logger.Info("worker: started", "metrics", ln.Addr().String(), "poll", cfg.PollInterval.String(),
		"batch_size", cfg.BatchSize, "redis", wake != nil)
	if ready != nil {
		ready <- ln.Addr().String()
	}

	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		_ = aggregate.New(pool, aggregate.Options{
			BatchSize: cfg.BatchSize, PollInterval: cfg.PollInterval, Bus: wake, Logger: logger, Metrics: aggMetrics,
		}).Run(ctx)
	})
	wg.Go(func() {
		partitions.Maintain(ctx, pool, partitionInterval, logger, func(_ partitions.Result, err error) {
			runs.WithLabelValues("ensure_partitions", outcome(err)).Inc()
		})
	})

	store := idempotency.NewPGStore(pool)
	// Purging is cheap and idempotent, so it runs on a slow tick rather than per wake-up.
	purgeEvery := max(cfg.PollInterval, time.Minute)
	tick := time.NewTicker(purgeEvery)
	defer tick.Stop()
	for {
		n, err := store.Purge(ctx, idempotencyWindow)
		switch {
		case errors.Is(err, context.Canceled):
			return nil
		case err != nil:
			runs.WithLabelValues("purge_idempotency", "error").Inc()
			logger.Warn("worker: purge failed; retrying next tick", "err", err)
		default:
			runs.WithLabelValues("purge_idempotency", "ok").Inc()
			purged.Add(float64(n))
			if n > 0 {
				logger.Info("worker: purged idempotency keys", "count", n)
			}
		}
		select {
		case <-ctx.Done():
			logger.Info("worker: stopping")
			return nil
		case <-tick.C:
		}
	}
}
