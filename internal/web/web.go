// Package web is the dashboard: server-rendered HTML pages (html/template, embedded)
// over the same domain services as the REST API. It owns no SQL. Every page and form
// works without JavaScript; htmx (vendored in static/) only boosts links and forms.
//
// Adding a page: write templates/NAME.html defining "title" and "content", register a
// route in routes() with in(users.PermSomething)... (login, CSRF, actor, permission),
// and answer with s.render(c, status, "NAME", data). Pages reach the session with sessionOf(c) and hide what the role may
// not do with {{if .Can "perm"}}: the same users.Can that requirePerm enforces.
package web

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/limitr/limitr/internal/alerts"
	"github.com/limitr/limitr/internal/analytics"
	"github.com/limitr/limitr/internal/analytics/simulate"
	"github.com/limitr/limitr/internal/billing"
	"github.com/limitr/limitr/internal/billing/stripesync"
	"github.com/limitr/limitr/internal/customers"
	"github.com/limitr/limitr/internal/httpx/requestlog"
	"github.com/limitr/limitr/internal/policies/pgstore"
	"github.com/limitr/limitr/internal/store"
	"github.com/limitr/limitr/internal/tenancy"
	"github.com/limitr/limitr/internal/users"
)

// Config is the dashboard's settings.
type Config struct {
	// SecureCookies marks cookies Secure (and names them __Host-…) even on plain-HTTP
	// requests: set it behind a proxy that terminates TLS. Requests made over TLS get
	// Secure cookies regardless.
	SecureCookies bool
	// PublicURL is the dashboard's public base URL, for invite links; empty: the
	// request's own scheme and host.
	PublicURL string
	Logger    *slog.Logger
}

// Deps are the domain services the pages call: the REST API's own, so a page and an
// endpoint share validation, audit and the change feed.
type Deps struct {
	Users       *users.Service
	Tenancy     *tenancy.Service
	Policies    *pgstore.Service
	Customers   *customers.Service
	Billing     *billing.Service
	Stripe      *stripesync.Service
	Alerts      *alerts.Service
	Analytics   *analytics.Service
	Simulations *simulate.Service
	// KeyRevoked, when set, hears of an API key revoked from the dashboard, so the API
	// drops it from every replica's cache at once (as DELETE /v1/keys/:id does).
	KeyRevoked func(ctx context.Context, id uuid.UUID)
}

// Server serves the dashboard.
type Server struct {
	cfg   Config
	deps  Deps
	log   *slog.Logger
	pages *pages
	echo  *echo.Echo
	// rankings keeps slow worst-margin rankings for the Overview (overview_cache.go).
	rankings rankings
}

// New builds the dashboard.
func New(cfg Config, deps Deps) (*Server, error) {
	if deps.Users == nil || deps.Tenancy == nil {
		return nil, errors.New("web: the users and tenancy services are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	p, err := parsePages()
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, deps: deps, log: cfg.Logger, pages: p}
	s.echo = s.newEcho()
	return s, nil
}

// Handler is the dashboard's HTTP handler, to be mounted at "/".
func (s *Server) Handler() http.Handler { return s.echo }

// maxFormBytes bounds a form post: the policy editor posts whole documents, which the
// REST API takes up to 1 MiB of; every other form is small.
const maxFormBytes = 1 << 20

func (s *Server) newEcho() *echo.Echo {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = s.errorHandler
	e.IPExtractor = echo.ExtractIPFromXFFHeader() // as the API: a proxy's header only from private networks
	e.Use(requestlog.Middleware(s.log))
	e.Use(middleware.RecoverWithConfig(middleware.RecoverConfig{DisableStackAll: true, LogErrorFunc: func(c echo.Context, err error, stack []byte) error {
		s.log.Error("web: panic", "err", err, "request_id", requestlog.RequestID(c.Request().Context()), "stack", string(stack))
		return echo.NewHTTPError(http.StatusInternalServerError)
	}}))
	e.Use(securityHeaders)
	e.Use(middleware.BodyLimit(fmt.Sprintf("%dB", maxFormBytes)))
	s.routes(e)
	return e
}

func (s *Server) routes(e *echo.Echo) {
	e.GET("/static/*", echo.WrapHandler(staticHandler()))

	// Middleware is per route, not per group: a group's middleware would also answer
	// unknown paths (with a login redirect) instead of a 404.
	anon := []echo.MiddlewareFunc{s.loadSession, s.csrfProtect}
	e.GET("/login", s.loginPage, anon...)
	e.POST("/login", s.login, anon...)
	e.GET("/invite/:token", s.invitePage, anon...)
	e.POST("/invite/:token", s.acceptInvite, anon...)

	in := func(perm users.Permission) []echo.MiddlewareFunc {
		return append(anon[:len(anon):len(anon)], s.requireLogin, withActor, s.requirePerm(perm))
	}
	e.POST("/logout", s.logout, in(users.PermView)...)
	e.GET("/", s.overview, in(users.PermView)...)
	e.POST("/environment", s.switchEnvironment, in(users.PermView)...)
	for _, n := range navItems {
		if n.Section {
			e.GET(n.Path, s.section(n), in(users.PermView)...)
		}
	}
	e.GET("/settings", func(c echo.Context) error { return c.Redirect(http.StatusSeeOther, "/settings/users") }, in(users.PermView)...)
	e.GET("/settings/users", s.usersPage, in(users.PermView)...)
	e.POST("/settings/users/invite", s.invite, in(users.PermManageUsers)...)
	e.POST("/settings/users/:id/role", s.changeRole, in(users.PermManageUsers)...)
	e.POST("/settings/users/:id/remove", s.removeMember, in(users.PermManageUsers)...)
	e.POST("/settings/invites/:id/revoke", s.revokeInvite, in(users.PermManageUsers)...)
	s.policyRoutes(e, in)
	s.customerRoutes(e, in)
	s.invoiceRoutes(e, in)
	s.alertRoutes(e, in)
	s.settingsRoutes(e, in)
}

// permitted builds a route's middleware for a permission.
type permitted func(users.Permission) []echo.MiddlewareFunc

// environment is the environment the session's pages show: its choice, else the
// tenant's first.
func (s *Server) environment(c echo.Context) (store.Environment, error) {
	sess := sessionOf(c)
	envs, err := s.deps.Tenancy.ListEnvironments(c.Request().Context(), sess.TenantID)
	if err != nil {
		return store.Environment{}, err
	}
	name := currentEnvironment(sess, envs)
	for _, e := range envs {
		if e.Name == name {
			return e, nil
		}
	}
	return store.Environment{}, echo.NewHTTPError(http.StatusNotFound, "This tenant has no environment.")
}

// errorHandler answers errors with an HTML page; 5xx are logged, not shown.
func (s *Server) errorHandler(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	code, msg := http.StatusInternalServerError, "Something went wrong on our side."
	var he *echo.HTTPError
	if errors.As(err, &he) {
		code = he.Code
		if m, ok := he.Message.(string); ok && code < 500 {
			msg = m
		} else if code < 500 {
			msg = http.StatusText(code)
		}
	}
	if code >= 500 {
		s.log.Error("web: request failed", "err", err, "path", c.Path(), "request_id", requestlog.RequestID(c.Request().Context()))
	}
	if rerr := s.render(c, code, "error", errorData{Status: code, Message: msg}); rerr != nil {
		s.log.Error("web: render error page", "err", rerr)
	}
}

type errorData struct {
	Status  int
	Message string
}
