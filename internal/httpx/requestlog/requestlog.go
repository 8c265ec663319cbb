// Package requestlog assigns every API request an id and logs one structured
// line per request.
//
// The id comes from the caller's X-Request-Id header when it is sane (at
// most 64 characters of [A-Za-z0-9-_.]); otherwise a random one is generated.
// It is echoed in the X-Request-Id response header and kept in the request
// context, where [RequestID] finds it (problem responses and error logs quote
// it). Authentication middleware records who made the request with
// [SetActor]; the log line then carries an "actor" attribute.
package requestlog

import (
	"context"
	"crypto/rand"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
)

// Header is the request and response header that carries the request id.
const Header = echo.HeaderXRequestID

// maxIDLen bounds an accepted incoming request id.
const maxIDLen = 64

type ctxKey struct{}

// info is the per-request state kept in the context. The actor is set after
// the context was created (by auth middleware), hence the pointer and lock.
type info struct {
	id string

	mu    sync.Mutex
	actor string
}

// RequestID returns the id of the request ctx belongs to, or "" outside one.
func RequestID(ctx context.Context) string {
	if in, ok := ctx.Value(ctxKey{}).(*info); ok {
		return in.id
	}
	return ""
}

// SetActor records who is making the request (for example "key:k_123" or
// "admin:k_456"), for the request's log line. Outside a request started by
// Middleware it does nothing. It is safe for concurrent use.
func SetActor(ctx context.Context, actor string) {
	if in, ok := ctx.Value(ctxKey{}).(*info); ok {
		in.mu.Lock()
		in.actor = actor
		in.mu.Unlock()
	}
}

// Actor returns what SetActor recorded for the request, or "".
func Actor(ctx context.Context) string {
	if in, ok := ctx.Value(ctxKey{}).(*info); ok {
		in.mu.Lock()
		defer in.mu.Unlock()
		return in.actor
	}
	return ""
}

// WithRequestID returns a context carrying id as its request id, for work
// that runs outside Middleware (tests, background jobs started by a request).
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, ctxKey{}, &info{id: id})
}

// Middleware returns echo middleware that assigns the request id and logs one
// line per request at the end of it: method, route (the pattern, not the
// URL), status, duration_ms, bytes, request_id and, when set, actor. Server
// errors (5xx) are logged at level ERROR, everything else at INFO.
//
// An error returned by the rest of the chain is rendered at once through
// echo's HTTPErrorHandler (c.Error), so the line shows the status the client
// got; the error is still returned, as echo's own logger middleware does, and
// an error handler that checks Response().Committed (problem.ErrorHandler
// does) will not write it twice.
//
// Register it with e.Use, early, so that the route is known and everything
// after it sees the request id.
func Middleware(logger *slog.Logger) echo.MiddlewareFunc {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			start := time.Now()
			req := c.Request()

			id := req.Header.Get(Header)
			if !validID(id) {
				id = newID()
			}
			in := &info{id: id}
			ctx := context.WithValue(req.Context(), ctxKey{}, in)
			c.SetRequest(req.WithContext(ctx))
			c.Response().Header().Set(Header, id)

			err := next(c)
			if err != nil {
				c.Error(err)
			}

			res := c.Response()
			status := res.Status
			if !res.Committed && err == nil {
				// Nothing written: net/http will send an empty 200.
				status = http.StatusOK
			}
			level := slog.LevelInfo
			if status >= 500 {
				level = slog.LevelError
			}
			attrs := make([]slog.Attr, 0, 8)
			attrs = append(attrs,
				slog.String("method", req.Method),
				slog.String("route", c.Path()),
				slog.Int("status", status),
				slog.Float64("duration_ms", float64(time.Since(start).Microseconds())/1000),
				slog.Int64("bytes", res.Size),
				slog.String("request_id", id),
			)
			if actor := Actor(ctx); actor != "" {
				attrs = append(attrs, slog.String("actor", actor))
			}
			logger.LogAttrs(ctx, level, "http request", attrs...)
			return err
		}
	}
}

func validID(id string) bool {
	if id == "" || len(id) > maxIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		b := id[i]
		switch {
		case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9', b == '-', b == '_', b == '.':
		default:
			return false
		}
	}
	return true
}

// newID returns 26 random base32 characters (130 bits).
func newID() string {
	return rand.Text()
}
