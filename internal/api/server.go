// Package api is the control plane's REST API: tenants, environments, keys, versioned
// policies and customers, over Postgres, with Redis for fan-out and rate limits.
package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/limitr/limitr/internal/alerts"
	"github.com/limitr/limitr/internal/analytics"
	"github.com/limitr/limitr/internal/analytics/simulate"
	"github.com/limitr/limitr/internal/billing"
	"github.com/limitr/limitr/internal/billing/stripesync"
	"github.com/limitr/limitr/internal/customers"
	"github.com/limitr/limitr/internal/httpx/idempotency"
	"github.com/limitr/limitr/internal/httpx/metrics"
	"github.com/limitr/limitr/internal/httpx/problem"
	"github.com/limitr/limitr/internal/httpx/ratelimit"
	"github.com/limitr/limitr/internal/httpx/requestlog"
	"github.com/limitr/limitr/internal/leases"
	"github.com/limitr/limitr/internal/platform/bus"
	"github.com/limitr/limitr/internal/policies/pgstore"
	"github.com/limitr/limitr/internal/secrets"
	"github.com/limitr/limitr/internal/store"
	"github.com/limitr/limitr/internal/tenancy"
	"github.com/limitr/limitr/internal/usage"
	"github.com/limitr/limitr/internal/users"
	"github.com/limitr/limitr/internal/web"
	"github.com/limitr/limitr/internal/wire"
)

// Config is the server's tunables; zero values take the defaults.
type Config struct {
	// OperatorToken authorises POST /v1/tenants; empty disables it.
	OperatorToken string
	// MaxBodyBytes bounds request bodies (default 1 MiB).
	MaxBodyBytes int64
	// RateLimit is requests per RatePer per API key (default 60000 per minute: a fleet of
	// SDK instances shares one key), with RateBurst.
	RateLimit int
	RatePer   time.Duration
	RateBurst int
	// KeyCacheTTL bounds how long a key lookup is trusted without Postgres; revocations
	// are also broadcast, so this only matters when the broadcast is lost (default 2s).
	KeyCacheTTL time.Duration
	// UnknownKeyCacheTTL is how long an unknown or revoked secret is answered 401 without
	// asking Postgres again (default 5s). Only negatives are kept there, so it never
	// delays a revocation.
	UnknownKeyCacheTTL time.Duration
	// AuthFailureLimit is how many failed authentications a client address may make per
	// AuthFailurePer (default 60 per minute), with bursts of AuthFailureBurst (default
	// 30); past it the address gets 429 without a Postgres lookup.
	AuthFailureLimit int
	AuthFailurePer   time.Duration
	AuthFailureBurst int
	// Dashboard configures the web dashboard served under "/" (internal/web). Its
	// Logger and PublicURL default to the server's.
	Dashboard web.Config
	// Sessions configures dashboard users and sessions (zero: the defaults).
	Sessions users.Config
	// LeaseTTL is how long an allowance lease lives without being renewed (default
	// leases.DefaultTTL, 15s).
	LeaseTTL time.Duration
}

func (c *Config) defaults() {
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = 1 << 20
	}
	if c.RateLimit <= 0 {
		c.RateLimit = 60000
	}
	if c.RatePer <= 0 {
		c.RatePer = time.Minute
	}
	if c.RateBurst <= 0 {
		c.RateBurst = c.RateLimit / 10
		if c.RateBurst < 50 {
			c.RateBurst = 50
		}
	}
	if c.KeyCacheTTL <= 0 {
		c.KeyCacheTTL = 2 * time.Second
	}
	if c.UnknownKeyCacheTTL <= 0 {
		c.UnknownKeyCacheTTL = 5 * time.Second
	}
	if c.AuthFailureLimit <= 0 {
		c.AuthFailureLimit = 60
	}
	if c.AuthFailurePer <= 0 {
		c.AuthFailurePer = time.Minute
	}
	if c.AuthFailureBurst <= 0 {
		c.AuthFailureBurst = 30
	}
	if c.LeaseTTL <= 0 {
		c.LeaseTTL = leases.DefaultTTL
	}
}

// Deps are the server's connections. Redis may be nil: fan-out and rate limits then
// stay in-process, which is right for a single node.
type Deps struct {
	Pool     *pgxpool.Pool
	Redis    redis.UniversalClient
	Logger   *slog.Logger
	Registry *prometheus.Registry
	// Bus, when set, carries fan-out instead of one built from Redis: a process that runs
	// the API and the worker together shares one in-process bus this way.
	Bus bus.Bus
	// Secrets seals what the server stores that a reader of the database must not see
	// (idempotent replies, which can hold a new API key). Nil makes an ephemeral keyring:
	// sealed values then open only in this process.
	Secrets *secrets.Keyring
	// StripeAPIBase is Stripe's API URL (empty: Stripe's own).
	StripeAPIBase string
	// SlackAPIURL is Slack's Web API base URL for test alerts (empty: Slack's own).
	SlackAPIURL string
	// PublicURL is the dashboard's public base URL alert messages link to (empty: none).
	PublicURL string
	// AllowPrivateAlertDestinations lets test sends reach private addresses.
	AllowPrivateAlertDestinations bool
}

// Server serves the API.
type Server struct {
	cfg     Config
	secrets *secrets.Keyring
	pool    *pgxpool.Pool
	store   *store.Store
	tenancy *tenancy.Service
	logger  *slog.Logger
	bus     bus.Bus
	echo    *echo.Echo
	keys    *keyCache
	auth    *authGuard
	metrics *metrics.Metrics
	reg     *prometheus.Registry
	limiter ratelimit.Limiter
	ctx     context.Context
	cancel  context.CancelFunc

	// The domains the handlers call.
	policies     *pgstore.Service
	customers    *customers.Service
	billing      *billing.Service
	stripe       *stripesync.Service
	alerts       *alerts.Service
	analytics    *analytics.Service
	simulations  *simulate.Service
	usage        *usage.Service
	usageMetrics *usage.Metrics
	leases       *leases.Service
	users        *users.Service

	// root serves the API's paths from echo and every other path from the dashboard.
	root http.Handler

	// hub shares bus subscriptions among this replica's push streams (stream.go).
	hub             *bus.Hub
	streams         prometheus.Gauge
	streamHeartbeat atomic.Int64 // nanoseconds
	streamPoll      atomic.Int64 // nanoseconds
	// usageWake queues aggregation-worker wake-ups, published off the request path.
	usageWake chan string
}

// New builds a server. Call Close when done.
func New(cfg Config, deps Deps) (*Server, error) {
	if deps.Pool == nil {
		return nil, errors.New("api: a Postgres pool is required")
	}
	cfg.defaults()
	logger := deps.Logger
	if logger == nil {
		logger = slog.Default()
	}
	reg := deps.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	if deps.Secrets == nil {
		kr, err := secrets.NewEphemeral()
		if err != nil {
			return nil, err
		}
		logger.Warn("api: LIMITR_SECRET_KEY is not set: idempotent replies are sealed with a key that lives only in this process, " +
			"so a retry after a restart or on another replica learns the request completed but gets no reply; set it in production " +
			"(generate one with `limitr admin gen-secret-key`)")
		deps.Secrets = kr
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{secrets: deps.Secrets,
		cfg: cfg, pool: deps.Pool, store: store.New(deps.Pool), tenancy: tenancy.NewService(deps.Pool), logger: logger, reg: reg,
		ctx: ctx, cancel: cancel, usageWake: make(chan string, 1024),
	}
	if deps.Redis != nil {
		s.bus = bus.NewRedis(deps.Redis, logger)
		s.limiter = ratelimit.NewRedis(deps.Redis, "limitr:rl:", cfg.RateLimit, cfg.RatePer, cfg.RateBurst)
	} else {
		logger.Info("api: no Redis configured: fan-out, key revocation and rate limits stay in this process (single node only)")
		s.bus = bus.NewMemory()
		s.limiter = ratelimit.NewMemory(cfg.RateLimit, cfg.RatePer, cfg.RateBurst)
	}
	if deps.Bus != nil {
		s.bus = deps.Bus
	}
	s.keys = newKeyCache(cfg.KeyCacheTTL)
	s.auth = newAuthGuard(cfg, deps.Redis, reg)
	go s.keys.follow(ctx, s.bus)
	s.metrics = metrics.New(reg)

	notify := notifier{s}
	s.policies = pgstore.NewService(deps.Pool, notify)
	s.customers = customers.NewService(deps.Pool, s.policies, notify)
	s.billing = billing.NewService(deps.Pool, s.policies, s.customers)
	s.customers.SetTopupBiller(s.billing)
	// An insert-only River client: the API queues the Stripe jobs its changes cause, in
	// their transactions; workers run them.
	jobs, err := river.NewClient(riverpgxv5.New(deps.Pool), &river.Config{Logger: logger.With("component", "river")})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("api: river: %w", err)
	}
	s.stripe = stripesync.New(deps.Pool, deps.Secrets, jobs, s.billing, stripesync.Config{APIBase: deps.StripeAPIBase, Logger: logger})
	s.billing.SetMirror(s.stripe)
	s.alerts = alerts.New(deps.Pool, deps.Secrets, jobs, s.policies, alerts.Config{SlackAPIURL: deps.SlackAPIURL, PublicURL: deps.PublicURL,
		AllowPrivateDestinations: deps.AllowPrivateAlertDestinations, Logger: logger})
	s.alerts.SetCustomers(s.customers)
	s.billing.SetAlerts(s.alerts)
	s.analytics = analytics.NewService(deps.Pool, s.billing)
	s.simulations = simulate.New(deps.Pool, jobs, s.policies, s.billing)
	s.usageMetrics = usage.NewMetrics()
	s.usageMetrics.Batches = metrics.Register(reg, s.usageMetrics.Batches)
	s.usageMetrics.Deltas = metrics.Register(reg, s.usageMetrics.Deltas)
	s.usageMetrics.Unattributed = metrics.Register(reg, s.usageMetrics.Unattributed)
	s.usage = usage.NewService(deps.Pool, s.customers, notify, s.usageMetrics)
	s.usage.SetPolicies(s.policies)
	leaseMetrics := leases.NewMetrics()
	leaseMetrics.Grants = metrics.Register(reg, leaseMetrics.Grants)
	leaseMetrics.GrantedUnits = metrics.Register(reg, leaseMetrics.GrantedUnits)
	leaseMetrics.Returns = metrics.Register(reg, leaseMetrics.Returns)
	s.leases = leases.NewService(deps.Pool, cfg.LeaseTTL, leaseMetrics)
	s.hub = bus.NewHub(ctx, s.bus)
	s.streams = prometheus.NewGauge(prometheus.GaugeOpts{Name: "limitr_sdk_streams", Help: "Open SDK push streams on this replica."})
	s.streams = metrics.Register(reg, s.streams)
	s.streamHeartbeat.Store(int64(defaultStreamHeartbeat))
	s.streamPoll.Store(int64(defaultStreamPoll))
	go s.publishUsageWakeUps()

	s.echo = s.newEcho()
	if err := s.mountDashboard(cfg, deps, logger); err != nil {
		cancel()
		return nil, err
	}
	return s, nil
}

// mountDashboard builds the dashboard over the server's domain services and routes to
// it every path the API does not own, so the API's routes and errors stay as they are.
func (s *Server) mountDashboard(cfg Config, deps Deps, logger *slog.Logger) error {
	var err error
	if s.users, err = users.NewService(deps.Pool, cfg.Sessions); err != nil {
		return fmt.Errorf("api: users: %w", err)
	}
	dc := cfg.Dashboard
	if dc.Logger == nil {
		dc.Logger = logger
	}
	if dc.PublicURL == "" {
		dc.PublicURL = deps.PublicURL
	}
	dash, err := web.New(dc, web.Deps{Users: s.users, Tenancy: s.tenancy, Policies: s.policies, Customers: s.customers,
		Billing: s.billing, Stripe: s.stripe, Alerts: s.alerts, Analytics: s.analytics, Simulations: s.simulations,
		KeyRevoked: s.keyRevoked})
	if err != nil {
		return err
	}
	api, pages := s.echo, dash.Handler()
	s.root = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isAPIPath(r.URL.Path) {
			api.ServeHTTP(w, r)
			return
		}
		pages.ServeHTTP(w, r)
	})
	return nil
}

// isAPIPath reports whether the API (not the dashboard) serves path.
func isAPIPath(path string) bool {
	switch path {
	case "/v1", "/healthz", "/readyz", "/openapi.json":
		return true
	}
	return strings.HasPrefix(path, "/v1/")
}

// publishUsageWakeUps publishes queued aggregation-worker wake-ups until Close.
func (s *Server) publishUsageWakeUps() {
	for {
		select {
		case <-s.ctx.Done():
			return
		case p := <-s.usageWake:
			if err := s.bus.Publish(s.ctx, wire.ChannelUsage, []byte(p)); err != nil && s.ctx.Err() == nil {
				s.logger.Warn("api: could not wake the usage workers; they pick the batch up on their next poll", "err", err)
			}
		}
	}
}

// Handler is the HTTP handler: the API, and the dashboard on every other path.
func (s *Server) Handler() http.Handler { return s.root }

// MetricsHandler serves the server's Prometheus metrics. It is not on the API's
// router: serve it on an internal address (--metrics-addr).
func (s *Server) MetricsHandler() http.Handler { return metrics.Handler(s.reg) }

// Echo exposes the router (for tests that list routes).
func (s *Server) Echo() *echo.Echo { return s.echo }

// Close stops background work.
func (s *Server) Close() error {
	s.cancel()
	return nil
}

func (s *Server) newEcho() *echo.Echo {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = problem.ErrorHandler(s.logger)
	// The client address limits failed authentications: take X-Forwarded-For only from a
	// proxy on a private or loopback network, so a client cannot pick its own address.
	e.IPExtractor = echo.ExtractIPFromXFFHeader()
	e.Use(requestlog.Middleware(s.logger))
	e.Use(s.metrics.Middleware())
	e.Use(middleware.RecoverWithConfig(middleware.RecoverConfig{DisableStackAll: true, LogErrorFunc: func(c echo.Context, err error, stack []byte) error {
		s.logger.Error("api: panic", "err", err, "request_id", requestlog.RequestID(c.Request().Context()), "stack", string(stack))
		return problem.New(http.StatusInternalServerError, "internal error")
	}}))
	e.Use(middleware.BodyLimit(fmt.Sprintf("%dB", s.cfg.MaxBodyBytes)))

	e.GET("/healthz", s.healthz)
	e.GET("/readyz", s.readyz)
	e.GET("/openapi.json", s.openapi)

	idem := idempotency.NewPGStore(s.pool, s.secrets)
	v1 := e.Group("/v1")
	v1.POST("/tenants", s.createTenant, s.operatorOnly, withActor, idempotency.Middleware(idem, func(echo.Context) (string, string, bool) {
		return "", "operator", true
	}))

	// Stripe signs its webhooks; they carry no API key.
	v1.POST("/webhooks/stripe/:environment_id", s.stripeWebhook)

	authed := v1.Group("", s.authenticate, withActor, s.rateLimit(), idempotency.Middleware(idem, s.idempotencyScope))
	authed.GET("/tenant", s.getTenant, adminOnly)
	authed.GET("/environments", s.listEnvironments, adminOnly)
	authed.POST("/environments", s.createEnvironment, adminOnly)
	authed.GET("/keys", s.listKeys, adminOnly)
	authed.POST("/keys", s.createKey, adminOnly)
	authed.DELETE("/keys/:id", s.revokeKey, adminOnly)
	authed.GET("/audit", s.listAudit, adminOnly)
	s.policyRoutes(authed)
	s.customerRoutes(authed)
	s.billingRoutes(authed)
	s.syncRoutes(authed)
	s.leaseRoutes(authed)
	s.alertRoutes(authed)
	s.analyticsRoutes(authed)
	s.simulationRoutes(authed)
	return e
}

// withActor records who is calling in the request's context, for the audit entries
// the domains write: the API key (none for the operator) and the request id.
func withActor(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			return next(c) // reads write no audit entries: spare the hot poll path a copy
		}
		a := store.Actor{RequestID: requestlog.RequestID(r.Context())}
		if p := principal(c); p != nil {
			id := p.KeyID
			a.KeyID = &id
		}
		c.SetRequest(r.WithContext(store.WithActor(r.Context(), a)))
		return next(c)
	}
}
