package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/limitr/limitr/internal/httpx/metrics"
	"github.com/limitr/limitr/internal/httpx/problem"
	"github.com/limitr/limitr/internal/httpx/ratelimit"
	"github.com/limitr/limitr/internal/httpx/requestlog"
	"github.com/limitr/limitr/internal/platform/bus"
	"github.com/limitr/limitr/internal/store"
	"github.com/limitr/limitr/internal/wire"
)

// Principal is who is calling: an API key of a tenant.
type Principal struct {
	KeyID         uuid.UUID
	TenantID      uuid.UUID
	Kind          string
	EnvironmentID *uuid.UUID
	Environment   string
}

// IsAdmin reports an admin key.
func (p *Principal) IsAdmin() bool { return p.Kind == store.KindAdmin }

const principalKey = "limitr.principal"

func principal(c echo.Context) *Principal {
	p, _ := c.Get(principalKey).(*Principal)
	return p
}

func unauthorized(detail string) error {
	p := problem.New(http.StatusUnauthorized, detail)
	return p
}

// bearer extracts the token from "Authorization: Bearer <token>".
func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	const prefix = "Bearer "
	if len(h) <= len(prefix) || !strings.EqualFold(h[:len(prefix)], prefix) {
		return "", false
	}
	return strings.TrimSpace(h[len(prefix):]), true
}

// authenticate resolves the API key, from a short-lived cache when possible. A secret
// that is not in the cache costs a Postgres lookup, so unknown secrets are guarded: one
// already found unknown is answered from a negative cache, and an address that keeps
// presenting unknown secrets (guessing) gets 429 before any lookup.
func (s *Server) authenticate(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		c.Response().Header().Set("WWW-Authenticate", `Bearer realm="limitr"`)
		secret, ok := bearer(c.Request())
		if !ok {
			return unauthorized("missing API key: send it as Authorization: Bearer <key>")
		}
		if _, err := store.ParsePrefix(secret); err != nil {
			return unauthorized("malformed API key")
		}
		ctx := c.Request().Context()
		key, ok := s.keys.get(secret)
		if !ok {
			sum := sha256.Sum256([]byte(secret))
			if s.auth.unknown.has(sum) {
				return unauthorized("unknown or revoked API key")
			}
			ip := c.RealIP()
			if wait, blocked := s.auth.blocked.get(ip); blocked {
				return s.auth.tooManyFailures(c, wait)
			}
			k, err := store.Authenticate(ctx, s.pool, secret)
			if errors.Is(err, store.ErrInvalidKey) {
				s.auth.lookups.unknown.Inc()
				s.auth.unknown.add(sum)
				if wait, limited := s.auth.failed(ctx, ip, s.logger); limited {
					return s.auth.tooManyFailures(c, wait)
				}
				return unauthorized("unknown or revoked API key")
			}
			if err != nil {
				s.auth.lookups.err.Inc()
				return commonProblem(err)
			}
			s.auth.lookups.found.Inc()
			key = k
			s.keys.put(secret, key)
		}
		c.Response().Header().Del("WWW-Authenticate")
		c.Set(principalKey, &Principal{KeyID: key.ID, TenantID: key.TenantID, Kind: key.Kind,
			EnvironmentID: key.EnvironmentID, Environment: key.Environment})
		requestlog.SetActor(ctx, key.ID.String())
		return next(c)
	}
}

// adminOnly rejects SDK keys.
func adminOnly(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if p := principal(c); p == nil || !p.IsAdmin() {
			return problem.New(http.StatusForbidden, "this endpoint needs an admin key")
		}
		return next(c)
	}
}

// operatorOnly guards tenant creation with the operator token from the environment.
func (s *Server) operatorOnly(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if s.cfg.OperatorToken == "" {
			return problem.New(http.StatusForbidden, "tenant creation is disabled: set LIMITR_OPERATOR_TOKEN to enable it")
		}
		token, ok := bearer(c.Request())
		if !ok {
			return unauthorized("missing operator token")
		}
		if subtle.ConstantTimeCompare([]byte(token), []byte(s.cfg.OperatorToken)) != 1 {
			return unauthorized("invalid operator token")
		}
		return next(c)
	}
}

func (s *Server) rateLimit() echo.MiddlewareFunc {
	return ratelimit.Middleware(s.limiter, func(c echo.Context) string {
		if p := principal(c); p != nil {
			return p.KeyID.String()
		}
		return c.RealIP()
	}, func(err error) {
		s.logger.Warn("api: rate limiter unavailable, allowing requests", "err", err)
	})
}

func (s *Server) idempotencyScope(c echo.Context) (string, string, bool) {
	p := principal(c)
	if p == nil {
		return "", "", false
	}
	return p.TenantID.String(), p.KeyID.String(), true
}

// keyCache remembers authenticated keys by the hash of their secret for a short while.
// Revocations are broadcast on the bus and evict at once on every replica.
type keyCache struct {
	ttl time.Duration
	mu  sync.Mutex
	m   map[[32]byte]cachedKey
}

type cachedKey struct {
	key     store.APIKey
	expires time.Time
}

func newKeyCache(ttl time.Duration) *keyCache {
	return &keyCache{ttl: ttl, m: map[[32]byte]cachedKey{}}
}

func (k *keyCache) get(secret string) (store.APIKey, bool) {
	h := sha256.Sum256([]byte(secret))
	k.mu.Lock()
	defer k.mu.Unlock()
	e, ok := k.m[h]
	if !ok || time.Now().After(e.expires) {
		delete(k.m, h)
		return store.APIKey{}, false
	}
	return e.key, true
}

func (k *keyCache) put(secret string, key store.APIKey) {
	h := sha256.Sum256([]byte(secret))
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.m) > 100_000 {
		clear(k.m) // a crude bound; the cache refills from Postgres
	}
	k.m[h] = cachedKey{key: key, expires: time.Now().Add(k.ttl)}
}

func (k *keyCache) evict(id uuid.UUID) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for h, e := range k.m {
		if e.key.ID == id {
			delete(k.m, h)
		}
	}
}

func (k *keyCache) follow(ctx context.Context, b bus.Bus) {
	for msg := range b.Subscribe(ctx, wire.ChannelKeyRevoked) {
		if id, err := uuid.ParseBytes(msg); err == nil {
			k.evict(id)
		}
	}
}

// authGuard keeps unknown API keys from costing a Postgres lookup each.
type authGuard struct {
	// unknown holds the hashes of secrets Postgres did not know (or had revoked).
	unknown *secretSet
	// failures counts failed authentications per client address; blocked remembers, in
	// this process, the addresses over the limit until they may try again, so that a
	// limited address costs neither Postgres nor Redis.
	failures ratelimit.Limiter
	blocked  *blockList
	limit    int
	per      time.Duration
	lookups  keyLookups
}

// keyLookups counts Postgres key lookups by result.
type keyLookups struct {
	found, unknown, err prometheus.Counter
}

// newAuthGuard builds the guard. The failure limit is shared through Redis when there is
// one, so spreading guesses over replicas does not multiply it.
func newAuthGuard(cfg Config, rdb redis.UniversalClient, reg prometheus.Registerer) *authGuard {
	g := &authGuard{
		unknown: newSecretSet(cfg.UnknownKeyCacheTTL, 100_000),
		blocked: newBlockList(100_000),
		limit:   cfg.AuthFailureLimit,
		per:     cfg.AuthFailurePer,
	}
	if rdb != nil {
		g.failures = ratelimit.NewRedis(rdb, "limitr:rl:authfail:", cfg.AuthFailureLimit, cfg.AuthFailurePer, cfg.AuthFailureBurst)
	} else {
		g.failures = ratelimit.NewMemory(cfg.AuthFailureLimit, cfg.AuthFailurePer, cfg.AuthFailureBurst)
	}
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "limitr_api_key_lookups_total",
		Help: "API key lookups in Postgres, by result: found, unknown (unknown or revoked key) or error.",
	}, []string{"result"})
	vec = metrics.Register(reg, vec)
	// Created up front, so every result is exported (as 0) before it first happens.
	g.lookups = keyLookups{found: vec.WithLabelValues("found"), unknown: vec.WithLabelValues("unknown"), err: vec.WithLabelValues("error")}
	return g
}

// failed counts a failed authentication from ip and reports whether ip is now over the
// limit, and for how long. If the limiter fails (Redis down), it allows: the negative
// cache still spares Postgres the repeats.
func (g *authGuard) failed(ctx context.Context, ip string, logger *slog.Logger) (time.Duration, bool) {
	d, err := g.failures.Allow(ctx, ip)
	if err != nil {
		logger.Warn("api: failed-authentication limiter unavailable, not limiting", "err", err)
		return 0, false
	}
	if d.Allowed {
		return 0, false
	}
	wait := max(d.RetryAfter, time.Second)
	g.blocked.add(ip, time.Now().Add(wait))
	return wait, true
}

func (g *authGuard) tooManyFailures(c echo.Context, wait time.Duration) error {
	c.Response().Header().Del("WWW-Authenticate")
	p := problem.New(http.StatusTooManyRequests, fmt.Sprintf(
		"too many failed authentications from this address (more than %d per %s); retry after %d s",
		g.limit, periodName(g.per), problem.RetryAfterSeconds(wait)))
	p.RetryAfter = wait
	return p.WithType("rate-limited")
}

func periodName(d time.Duration) string {
	switch d {
	case time.Second:
		return "second"
	case time.Minute:
		return "minute"
	case time.Hour:
		return "hour"
	}
	return d.String()
}

// secretSet remembers hashes of secrets for ttl, holding at most max of them.
type secretSet struct {
	ttl time.Duration
	max int
	mu  sync.Mutex
	m   map[[32]byte]time.Time // expiry
}

func newSecretSet(ttl time.Duration, maxEntries int) *secretSet {
	return &secretSet{ttl: ttl, max: maxEntries, m: map[[32]byte]time.Time{}}
}

func (s *secretSet) has(h [32]byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	exp, ok := s.m[h]
	if ok && time.Now().After(exp) {
		delete(s.m, h)
		return false
	}
	return ok
}

func (s *secretSet) add(h [32]byte) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.m) >= s.max {
		// Full: drop the expired entries, then arbitrary ones. Dropping an entry only
		// costs a lookup, and the per-address limit bounds those.
		for k, exp := range s.m {
			if now.After(exp) || len(s.m) >= s.max*9/10 {
				delete(s.m, k)
			}
		}
	}
	s.m[h] = now.Add(s.ttl)
}

// blockList remembers client addresses that are over their failure limit, and until when.
type blockList struct {
	max int
	mu  sync.Mutex
	m   map[string]time.Time
}

func newBlockList(maxEntries int) *blockList {
	return &blockList{max: maxEntries, m: map[string]time.Time{}}
}

// get reports whether ip is blocked and for how much longer.
func (b *blockList) get(ip string) (time.Duration, bool) {
	now := time.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	until, ok := b.m[ip]
	if !ok {
		return 0, false
	}
	if !now.Before(until) {
		delete(b.m, ip)
		return 0, false
	}
	return until.Sub(now), true
}

func (b *blockList) add(ip string, until time.Time) {
	now := time.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.m) >= b.max {
		// Full: drop the expired entries, then arbitrary ones (they only lose their
		// shortcut: the limiter still denies them at their next failure).
		for k, u := range b.m {
			if !now.Before(u) || len(b.m) >= b.max*9/10 {
				delete(b.m, k)
			}
		}
	}
	b.m[ip] = until
}
