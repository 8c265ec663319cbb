package idempotency

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/limitr/limitr/internal/httpx/problem"
)

// Headers.
const (
	HeaderKey      = "Idempotency-Key"
	HeaderReplayed = "Idempotent-Replayed"
)

// maxKeyLen bounds an Idempotency-Key.
const maxKeyLen = 255

// storedHeaders are the response headers kept and replayed with the body.
// Per-request headers (X-Request-Id, RateLimit-*) are deliberately absent.
var storedHeaders = []string{
	echo.HeaderContentType,
	"Content-Language",
	"ETag",
	"Last-Modified",
	echo.HeaderLocation,
	"Link",
}

// finishTimeout bounds storing or releasing the outcome; it runs even if the
// client has gone, since the request did run.
const finishTimeout = 5 * time.Second

// Middleware returns echo middleware that honours Idempotency-Key on POST
// requests. scopeFunc returns the caller's tenant and principal (API key id);
// when it reports !ok (unauthenticated), or the request is not a POST or has
// no Idempotency-Key header, the request passes through untouched. Run it
// after authentication and after the server's body size limit: the body is
// read into memory (to hash it) and handed to the handler again.
//
// The request hash is SHA-256 over method, path with query, and body. See
// the package documentation for the semantics. Errors returned by the
// handler are rendered (c.Error) inside the middleware, so that 4xx problem
// responses are stored and replayed like any other; the error is still
// returned up the chain.
func Middleware(store Store, scopeFunc func(echo.Context) (tenant, principal string, ok bool)) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			req := c.Request()
			if req.Method != http.MethodPost {
				return next(c)
			}
			values, present := req.Header[HeaderKey]
			if !present {
				return next(c)
			}
			tenant, principal, ok := scopeFunc(c)
			if !ok {
				return next(c)
			}
			key := ""
			if len(values) > 0 {
				key = values[0]
			}
			if len(values) != 1 || !validKey(key) {
				return problem.New(http.StatusBadRequest,
					"Idempotency-Key must be a single value of 1 to 255 printable ASCII characters.").
					WithType("invalid-idempotency-key")
			}

			body, err := readBody(req)
			if err != nil {
				return err
			}
			req.Body = io.NopCloser(bytes.NewReader(body))
			req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }

			scope := Scope{Tenant: tenant, Principal: principal, Key: key, Method: req.Method, Path: req.URL.RequestURI()}
			hash := requestHash(scope.Method, scope.Path, body)

			rec, existing, err := store.Begin(req.Context(), scope, hash)
			if err != nil {
				return fmt.Errorf("idempotency: %w", err)
			}
			if existing {
				return replay(c, rec, hash)
			}
			return run(c, next, store, scope)
		}
	}
}

func replay(c echo.Context, rec Record, hash []byte) error {
	if !bytes.Equal(rec.RequestHash, hash) {
		return problem.New(http.StatusUnprocessableEntity,
			"Idempotency-Key reused with a different request; use a new key for a new request.").
			WithType("idempotency-key-reused")
	}
	if rec.Response == nil {
		p := problem.New(http.StatusConflict,
			"A request with this Idempotency-Key is still being processed; retry later.").
			WithType("idempotency-key-in-use")
		p.RetryAfter = time.Second
		return p
	}
	if rec.Response.Withheld {
		return problem.New(http.StatusConflict, fmt.Sprintf(
			"The request with this Idempotency-Key already completed (status %d), but its reply cannot be replayed: "+
				"it was sealed with a server key (LIMITR_SECRET_KEY) this server does not have. Look the result up instead of retrying.",
			rec.Response.Status)).WithType("idempotency-reply-unavailable")
	}
	res := c.Response()
	h := res.Header()
	for k, v := range rec.Response.Header {
		h[http.CanonicalHeaderKey(k)] = v
	}
	h.Set(HeaderReplayed, "true")
	h.Set("Content-Length", strconv.Itoa(len(rec.Response.Body)))
	res.WriteHeader(rec.Response.Status)
	if _, err := res.Write(rec.Response.Body); err != nil {
		return fmt.Errorf("idempotency: replay: %w", err)
	}
	return nil
}

// run executes the request, capturing the response, and stores it or
// releases the key.
func run(c echo.Context, next echo.HandlerFunc, store Store, scope Scope) (err error) {
	res := c.Response()
	rec := &recorder{ResponseWriter: res.Writer}
	res.Writer = rec
	defer func() { res.Writer = rec.ResponseWriter }()

	finishCtx := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.WithoutCancel(c.Request().Context()), finishTimeout)
	}
	defer func() {
		if r := recover(); r != nil {
			ctx, cancel := finishCtx()
			_ = store.Abandon(ctx, scope) // the panic matters more than this error
			cancel()
			panic(r)
		}
	}()

	err = next(c)
	if err != nil {
		c.Error(err) // render now, so the response is captured
	}

	status := res.Status
	if !res.Committed && err == nil {
		status = http.StatusOK // nothing written: net/http sends an empty 200
	}

	ctx, cancel := finishCtx()
	defer cancel()
	if !storable(status) || (err != nil && !res.Committed) {
		if aerr := store.Abandon(ctx, scope); aerr != nil {
			return errors.Join(err, fmt.Errorf("idempotency: %w", aerr))
		}
		return err
	}
	header := http.Header{}
	for _, k := range storedHeaders {
		if v := res.Header().Values(k); len(v) > 0 {
			header[k] = append([]string(nil), v...)
		}
	}
	if cerr := store.Complete(ctx, scope, Response{Status: status, Header: header, Body: rec.body.Bytes()}); cerr != nil {
		return errors.Join(err, fmt.Errorf("idempotency: store response: %w", cerr))
	}
	return err
}

// storable reports whether a response with status is the outcome of running
// the request, to be replayed; other statuses say it did not (really) run.
func storable(status int) bool {
	switch {
	case status >= 500,
		status == http.StatusRequestTimeout,
		status == http.StatusTooManyRequests,
		status == problem.StatusClientClosedRequest:
		return false
	}
	return true
}

func validKey(k string) bool {
	if k == "" || len(k) > maxKeyLen {
		return false
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x20 || k[i] > 0x7e {
			return false
		}
	}
	return true
}

func readBody(req *http.Request) ([]byte, error) {
	if req.Body == nil || req.Body == http.NoBody {
		return []byte{}, nil
	}
	body, err := io.ReadAll(req.Body)
	_ = req.Body.Close()
	if err != nil {
		var he *echo.HTTPError // e.g. 413 from echo's BodyLimit reader
		if errors.As(err, &he) {
			return nil, err
		}
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, echo.ErrStatusRequestEntityTooLarge
		}
		return nil, problem.New(http.StatusBadRequest, "The request body could not be read.")
	}
	return body, nil
}

func requestHash(method, path string, body []byte) []byte {
	h := sha256.New()
	_, _ = io.WriteString(h, method)
	_, _ = h.Write([]byte{0})
	_, _ = io.WriteString(h, path)
	_, _ = h.Write([]byte{0})
	_, _ = h.Write(body)
	return h.Sum(nil)
}

// recorder tees the response body into a buffer.
type recorder struct {
	http.ResponseWriter
	body bytes.Buffer
}

func (r *recorder) Write(b []byte) (int, error) {
	r.body.Write(b)
	return r.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
