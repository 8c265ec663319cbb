package main

import (
	"context"
	"errors"
	"flag"
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

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"

	"github.com/limitr/limitr/internal/aggregate"
	"github.com/limitr/limitr/internal/api"
	"github.com/limitr/limitr/internal/config"
	"github.com/limitr/limitr/internal/httpx/idempotency"
	"github.com/limitr/limitr/internal/partitions"
	"github.com/limitr/limitr/internal/platform/bus"
	"github.com/limitr/limitr/internal/platform/pg"
)

// runDev runs the API server and the worker's jobs in one process until SIGINT or SIGTERM.
func runDev(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return dev(ctx, args, os.Getenv, stdout, stderr)
}

// dev is runDev until ctx ends. It prints "limitr dev: listening on http://ADDR" on
// stdout once the API accepts connections; logs go to stderr.
func dev(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	apiCfg, workerCfg, err := config.LoadDev(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintln(stderr, "limitr dev:", err)
		return exitUsage
	}
	if err := devServe(ctx, apiCfg, workerCfg, stdout, stderr); err != nil {
		fmt.Fprintln(stderr, "limitr dev:", err)
		return exitFail
	}
	return exitOK
}

func devServe(ctx context.Context, cfg config.API, wcfg config.Worker, stdout, stderr io.Writer) error {
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	pool, err := pg.Open(ctx, cfg.DatabaseURL, cfg.MigrateOnStart)
	if err != nil {
		return err
	}
	defer pool.Close()
	var rdb redis.UniversalClient
	// One process: the API's wake-ups reach the worker loop directly, Redis or not.
	var wake bus.Bus = bus.NewMemory()
	if cfg.RedisURL != "" {
		client, err := bus.NewRedisClient(cfg.RedisURL)
		if err != nil {
			return fmt.Errorf("redis-url: %w", err)
		}
		rdb = client
		defer rdb.Close()
		if err := rdb.Ping(ctx).Err(); err != nil {
			logger.Warn("redis is not answering yet; everything works without it and the client keeps retrying", "err", err)
		}
		wake = bus.NewRedis(rdb, logger)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	srv, err := api.New(api.Config{
		OperatorToken: cfg.OperatorToken,
		MaxBodyBytes:  cfg.MaxBodyBytes,
		RateLimit:     cfg.RateLimit,
		RatePer:       cfg.RatePeriod,
	}, api.Deps{Pool: pool, Redis: rdb, Logger: logger, Registry: reg, Bus: wake})
	if err != nil {
		return err
	}
	defer srv.Close()
	aggMetrics := aggregate.NewMetrics(reg) // served on the API's /metrics

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return err
	}
	httpSrv := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second}
	httpSrv.RegisterOnShutdown(func() { _ = srv.Close() }) // ends push streams
	errc := make(chan error, 1)
	go func() { errc <- httpSrv.Serve(ln) }()

	// The worker's jobs, on the same pool; they stop after the API has drained.
	jobsCtx, stopJobs := context.WithCancel(context.WithoutCancel(ctx))
	var jobs sync.WaitGroup
	defer jobs.Wait()
	defer stopJobs()
	jobs.Go(func() {
		_ = aggregate.New(pool, aggregate.Options{
			BatchSize: wcfg.BatchSize, PollInterval: wcfg.PollInterval, Bus: wake, Logger: logger, Metrics: aggMetrics,
		}).Run(jobsCtx)
	})
	jobs.Go(func() { partitions.Maintain(jobsCtx, pool, time.Hour, logger, nil) })
	jobs.Go(func() { purgeIdempotencyKeys(jobsCtx, pool, logger) })

	url := "http://" + ln.Addr().String()
	logger.Info("limitr dev: API and worker running", "addr", ln.Addr().String(), "redis", rdb != nil,
		"poll", wcfg.PollInterval.String())
	fmt.Fprintf(stdout, "limitr dev: listening on %s\n", url)
	if cfg.OperatorToken != "" {
		fmt.Fprintf(stdout, "limitr dev: create a tenant with: curl -X POST %s/v1/tenants -H 'Authorization: Bearer <operator token>' -d '{\"slug\": \"acme\"}'\n", url)
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	logger.Info("limitr dev: shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := httpSrv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}

// purgeIdempotencyKeys is the worker's purge job: replies past their 24-hour window go.
func purgeIdempotencyKeys(ctx context.Context, pool *pgxpool.Pool, logger *slog.Logger) {
	store := idempotency.NewPGStore(pool)
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		if n, err := store.Purge(ctx, 24*time.Hour); err != nil && ctx.Err() == nil {
			logger.Warn("limitr dev: purging idempotency keys failed; retrying next hour", "err", err)
		} else if n > 0 {
			logger.Info("limitr dev: purged idempotency keys", "count", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
