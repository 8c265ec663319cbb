package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/limitr/limitr/internal/httpx/problem"
	"github.com/limitr/limitr/internal/httpx/ratelimit"
	"github.com/limitr/limitr/internal/httpx/requestlog"
	"github.com/limitr/limitr/internal/platform/bus"
	"github.com/limitr/limitr/internal/store"
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

// channelKeyRevoked carries revoked key ids to every replica's key cache.
const channelKeyRevoked = "limitr:keys:revoked"

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

// authenticate resolves the API key, from a short-lived cache when possible.
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
			k, err := store.Authenticate(ctx, s.pool, secret)
			if errors.Is(err, store.ErrInvalidKey) {
				return unauthorized("unknown or revoked API key")
			}
			if err != nil {
				return s.unavailable(err)
			}
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
	for msg := range b.Subscribe(ctx, channelKeyRevoked) {
		if id, err := uuid.ParseBytes(msg); err == nil {
			k.evict(id)
		}
	}
}
