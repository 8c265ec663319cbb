// Command api serves the control plane's REST API.
//
//	api [serve] [flags]        serve (the default)
//	api migrate up             apply pending migrations
//	api migrate down [N]       revert the last N migrations (all without N)
//	api migrate version        print the schema version
//
// Every flag also reads a LIMITR_* environment variable; see --help.
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
	"strconv"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"

	"github.com/limitr/limitr/internal/api"
	"github.com/limitr/limitr/internal/config"
	"github.com/limitr/limitr/internal/httpx"
	"github.com/limitr/limitr/internal/platform/bus"
	"github.com/limitr/limitr/internal/platform/pg"
	"github.com/limitr/limitr/internal/users"
	"github.com/limitr/limitr/internal/web"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	cmd := "serve"
	if len(args) > 0 && (args[0] == "serve" || args[0] == "migrate") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "migrate":
		return migrateCmd(ctx, args, getenv, stdout, stderr)
	default:
		cfg, err := config.LoadAPI(args, getenv, stderr)
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		if err != nil {
			fmt.Fprintln(stderr, "api:", err)
			return 2
		}
		if err := serve(ctx, cfg, stderr, nil); err != nil {
			fmt.Fprintln(stderr, "api:", err)
			return 1
		}
		return 0
	}
}

func migrateCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: api migrate up | down [N] | version  (database from LIMITR_DATABASE_URL or --database-url)")
		return 2
	}
	sub, rest := args[0], args[1:]
	n := 0
	if sub == "down" && len(rest) > 0 && rest[0] != "" && rest[0][0] != '-' {
		var err error
		if n, err = strconv.Atoi(rest[0]); err != nil || n < 0 {
			fmt.Fprintf(stderr, "api migrate down: %q is not a number of migrations\n", rest[0])
			return 2
		}
		rest = rest[1:]
	}
	v, err := config.Parse("api migrate", config.Select(config.APISettings, "database-url"), rest, getenv, stderr)
	if err != nil {
		return 2
	}
	dbURL := v["database-url"]
	if dbURL == "" {
		fmt.Fprintln(stderr, "api migrate: database-url: required (flag --database-url or LIMITR_DATABASE_URL)")
		return 2
	}
	switch sub {
	case "up":
		err = pg.MigrateUp(ctx, dbURL)
	case "down":
		err = pg.MigrateDown(ctx, dbURL, n)
	case "version":
		pool, cerr := pg.Connect(ctx, dbURL)
		if cerr != nil {
			err = cerr
			break
		}
		defer pool.Close()
		latest, _ := pg.LatestVersion()
		if cerr := pg.CheckCurrent(ctx, pool); cerr != nil {
			fmt.Fprintf(stdout, "binary at %d; %v\n", latest, cerr)
		} else {
			fmt.Fprintf(stdout, "current: %d\n", latest)
		}
	default:
		fmt.Fprintf(stderr, "api migrate: unknown command %q (up, down, version)\n", sub)
		return 2
	}
	if err != nil {
		fmt.Fprintln(stderr, "api migrate:", err)
		return 1
	}
	return 0
}

// serve runs until ctx ends, then drains in-flight requests. ready, when not nil,
// receives the listening address.
func serve(ctx context.Context, cfg config.API, logOut io.Writer, ready chan<- string) error {
	logger := slog.New(slog.NewJSONHandler(logOut, &slog.HandlerOptions{Level: cfg.LogLevel}))
	pool, err := pg.Open(ctx, cfg.DatabaseURL, cfg.MigrateOnStart)
	if err != nil {
		return err
	}
	defer pool.Close()
	var rdb redis.UniversalClient
	if cfg.RedisURL != "" {
		client, err := bus.NewRedisClient(cfg.RedisURL)
		if err != nil {
			return fmt.Errorf("redis-url: %w", err)
		}
		rdb = client
		defer rdb.Close()
		if err := rdb.Ping(ctx).Err(); err != nil {
			logger.Warn("redis is not answering yet; the API works without it and the client keeps retrying", "err", err)
		}
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
	}, api.Deps{Pool: pool, Redis: rdb, Logger: logger, Registry: reg, Secrets: cfg.Secrets, StripeAPIBase: cfg.StripeAPIBase,
		SlackAPIURL: cfg.SlackAPIURL, PublicURL: cfg.PublicURL,
		AllowPrivateAlertDestinations: cfg.AllowPrivateAlertDestinations})
	if err != nil {
		return err
	}
	defer srv.Close()
	if cfg.MetricsAddr != "" {
		msrv, addr, err := httpx.ServeInternal(cfg.MetricsAddr, srv.MetricsHandler())
		if err != nil {
			return fmt.Errorf("metrics-addr: %w", err)
		}
		defer msrv.Close()
		logger.Info("api: metrics", "addr", addr)
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return err
	}
	httpSrv := httpx.NewServer(srv.Handler(), httpx.Timeouts{ReadHeader: cfg.ReadHeaderTimeout, Read: cfg.ReadTimeout})
	// Push streams never end on their own: closing the server ends them, so Shutdown
	// only waits for ordinary requests.
	httpSrv.RegisterOnShutdown(func() { _ = srv.Close() })
	errc := make(chan error, 1)
	go func() { errc <- httpSrv.Serve(ln) }()
	logger.Info("api: listening", "addr", ln.Addr().String(), "redis", cfg.RedisURL != "")
	if ready != nil {
		ready <- ln.Addr().String()
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	logger.Info("api: shutting down", "timeout", cfg.ShutdownTimeout.String())
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := httpSrv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}
