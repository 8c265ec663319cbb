package ratelimit

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/limitr/limitr/internal/httpx/problem"
)

// Response headers (draft-ietf-httpapi-ratelimit-headers).
const (
	HeaderLimit     = "RateLimit-Limit"
	HeaderRemaining = "RateLimit-Remaining"
)

// Middleware returns echo middleware that asks l whether the request may
// proceed, keyed by keyFunc (typically the authenticated API key id; run it
// after authentication). An empty key skips limiting.
//
// Every limited response carries RateLimit-Limit and RateLimit-Remaining. A
// denied request gets a 429 *problem.Problem with Retry-After (whole seconds,
// at least 1).
//
// If the limiter fails (Redis down or slow), the request is ALLOWED and
// onError, if not nil, is called with the error (log it, count it). This is
// deliberate: Redis only speeds things up and is never the only copy of
// anything, and rate limiting protects the API, so an outage of Redis must
// not take the API down with it. Postgres and per-request limits (body size,
// timeouts) still bound the damage while limits are not enforced.
func Middleware(l Limiter, keyFunc func(echo.Context) string, onError func(error)) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			key := keyFunc(c)
			if key == "" {
				return next(c)
			}
			d, err := l.Allow(c.Request().Context(), key)
			if err != nil {
				if onError != nil {
					onError(err)
				}
				return next(c)
			}
			h := c.Response().Header()
			h.Set(HeaderLimit, strconv.Itoa(d.Limit))
			h.Set(HeaderRemaining, strconv.Itoa(max(d.Remaining, 0)))
			if d.Allowed {
				return next(c)
			}
			p := problem.New(http.StatusTooManyRequests, fmt.Sprintf(
				"rate limit of %d requests per %s exceeded for this API key; retry after %d s",
				d.Limit, periodString(d.Per), problem.RetryAfterSeconds(d.RetryAfter)))
			p.RetryAfter = d.RetryAfter
			if p.RetryAfter <= 0 {
				p.RetryAfter = time.Second
			}
			return p.WithType("rate-limited")
		}
	}
}

func periodString(d time.Duration) string {
	switch d {
	case 0:
		return "period"
	case time.Second:
		return "second"
	case time.Minute:
		return "minute"
	case time.Hour:
		return "hour"
	case 24 * time.Hour:
		return "day"
	}
	return d.String()
}
