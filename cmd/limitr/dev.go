package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"

	"github.com/limitr/limitr/internal/api"
	"github.com/limitr/limitr/internal/config"
	"github.com/limitr/limitr/internal/httpx"
	"github.com/limitr/limitr/internal/platform/bus"
	"github.com/limitr/limitr/internal/platform/pg"
	"github.com/limitr/limitr/internal/secrets"
	"github.com/limitr/limitr/internal/users"
	"github.com/limitr/limitr/internal/web"
	"github.com/limitr/limitr/internal/worker"
)

// runDev runs the API server and the worker in one process until SIGINT or SIGTERM.
func runDev(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return dev(ctx, args, os.Getenv, stdout, stderr)
}

// dev is runDev until ctx ends. It prints "limitr dev: listening on http://ADDR" on
// stdout once the API accepts connections, then "limitr dev: metrics on http://ADDR";
// logs go to stderr.
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
	if cfg.Secrets == nil {
		// A development server needs a keyring like any other; one made up here keeps
		// idempotent replies sealed, and replayable until the process stops.
		spec, err := secrets.GenerateKey()
		if err != nil {
			return err
		}
		if cfg.Secrets, err = secrets.ParseKeyring(spec); err != nil {
			return err
		}
		logger.Info("limitr dev: LIMITR_SECRET_KEY is not set: generated a key for this run; set one to keep sealed values readable across restarts (limitr admin gen-secret-key)")
	}
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
		Dashboard:     web.Config{SecureCookies: cfg.CookieSecure},
		Sessions:      users.Config{IdleTimeout: cfg.SessionIdleTimeout, Lifetime: cfg.SessionLifetime},
		LeaseTTL:      cfg.LeaseTTL,
	}, api.Deps{Pool: pool, Redis: rdb, Logger: logger, Registry: reg, Bus: wake, Secrets: cfg.Secrets, StripeAPIBase: cfg.StripeAPIBase,
		SlackAPIURL: cfg.SlackAPIURL, PublicURL: cfg.PublicURL,
		AllowPrivateAlertDestinations: cfg.AllowPrivateAlertDestinations})
	if err != nil {
		return err
	}
	defer srv.Close()
	// The worker's metrics join the API's, on the metrics address.
	w, err := worker.New(worker.Deps{Pool: pool, Bus: wake, Logger: logger, Registry: reg, Secrets: cfg.Secrets, StripeAPIBase: cfg.StripeAPIBase,
		SlackAPIURL: cfg.SlackAPIURL, PublicURL: cfg.PublicURL,
		AllowPrivateAlertDestinations: cfg.AllowPrivateAlertDestinations}, worker.Config{
		BatchSize: wcfg.BatchSize, PollInterval: wcfg.PollInterval, Retention: wcfg.Retention, AlertSweepInterval: wcfg.AlertSweepInterval,
	})
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return err
	}
	httpSrv := httpx.NewServer(srv.Handler(), httpx.Timeouts{ReadHeader: cfg.ReadHeaderTimeout, Read: cfg.ReadTimeout})
	httpSrv.RegisterOnShutdown(func() { _ = srv.Close() }) // ends push streams
	errc := make(chan error, 1)
	go func() { errc <- httpSrv.Serve(ln) }()
	metricsURL := ""
	if cfg.MetricsAddr != "" {
		msrv, addr, err := httpx.ServeInternal(cfg.MetricsAddr, srv.MetricsHandler())
		if err != nil {
			return fmt.Errorf("metrics-addr: %w", err)
		}
		defer msrv.Close()
		metricsURL = "http://" + addr + "/metrics"
	}

	// The worker runs on the same pool; it stops after the API has drained.
	workCtx, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	workDone := make(chan error, 1)
	go func() { workDone <- w.Run(workCtx) }()
	defer func() {
		stopWork()
		if err := <-workDone; err != nil {
			logger.Warn("limitr dev: the worker stopped with an error", "err", err)
		}
	}()

	url := "http://" + ln.Addr().String()
	logger.Info("limitr dev: API and worker running", "addr", ln.Addr().String(), "redis", rdb != nil,
		"poll", wcfg.PollInterval.String())
	fmt.Fprintf(stdout, "limitr dev: listening on %s\n", url)
	fmt.Fprintf(stdout, "limitr dev: dashboard on %s/login (make its first owner with `limitr admin create-user`)\n", url)
	if metricsURL != "" {
		fmt.Fprintf(stdout, "limitr dev: metrics on %s\n", metricsURL)
	}
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
