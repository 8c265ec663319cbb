package problem_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/limitr/limitr/internal/httpx/problem"
	"github.com/limitr/limitr/internal/httpx/requestlog"
)

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func newServer(t *testing.T) (*echo.Echo, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e := echo.New()
	e.HTTPErrorHandler = problem.ErrorHandler(logger)
	e.Use(requestlog.Middleware(logger))
	e.Use(middleware.BodyLimit("16B"))

	e.GET("/problem", func(echo.Context) error {
		p := problem.New(http.StatusNotFound, "customer c_1 does not exist").WithType("not-found")
		return fmt.Errorf("get customer: %w", p)
	})
	e.POST("/validate", func(echo.Context) error {
		return problem.Validation("the policy is invalid", []problem.FieldError{
			{Path: "plans[0].limits.ai_tokens", Message: "must be positive"},
		})
	})
	e.POST("/bind", func(c echo.Context) error {
		var v struct {
			N int `json:"n"`
		}
		return c.Bind(&v)
	})
	e.GET("/boom", func(echo.Context) error {
		return errors.New("pq: password authentication failed for user secret_admin")
	})
	e.GET("/http500", func(echo.Context) error {
		return echo.NewHTTPError(http.StatusInternalServerError, "dial tcp 10.0.0.1:5432: secret")
	})
	e.GET("/canceled", func(echo.Context) error {
		return fmt.Errorf("query: %w", context.Canceled)
	})
	e.GET("/deadline", func(echo.Context) error {
		return fmt.Errorf("query: %w", context.DeadlineExceeded)
	})
	e.GET("/retry", func(echo.Context) error {
		p := problem.New(http.StatusServiceUnavailable, "publishing is paused")
		p.RetryAfter = 1500 * time.Millisecond
		return p
	})
	e.GET("/committed", func(c echo.Context) error {
		if err := c.String(http.StatusOK, "partial"); err != nil {
			return err
		}
		return errors.New("stream broke")
	})
	return e, logs
}

type response struct {
	code    int
	header  http.Header
	body    []byte
	problem map[string]any
}

func do(t *testing.T, e *echo.Echo, method, target, body string, hdr ...string) response {
	t.Helper()
	var req *http.Request
	if body != "" {
		req = httptest.NewRequest(method, target, strings.NewReader(body))
		req.Header.Set(echo.HeaderContentType, echo.MIMEApplicationJSON)
	} else {
		req = httptest.NewRequest(method, target, nil)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, req)
	r := response{code: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}
	if len(r.body) > 0 && strings.HasPrefix(rec.Header().Get(echo.HeaderContentType), problem.ContentType) {
		if err := json.Unmarshal(r.body, &r.problem); err != nil {
			t.Fatalf("decode problem %q: %v", r.body, err)
		}
	}
	return r
}

func TestErrorHandlerKinds(t *testing.T) {
	t.Parallel()
	e, _ := newServer(t)

	tests := []struct {
		name       string
		method     string
		target     string
		body       string
		wantStatus int
		wantType   string
		wantDetail string // substring
	}{
		{"wrapped problem", http.MethodGet, "/problem", "", 404, problem.TypeBase + "not-found", "customer c_1 does not exist"},
		{"validation", http.MethodPost, "/validate", "", 422, problem.TypeBase + "validation-error", "the policy is invalid"},
		{"unknown route", http.MethodGet, "/nope", "", 404, "about:blank", "No resource exists"},
		{"method not allowed", http.MethodDelete, "/problem", "", 405, "about:blank", "does not support the request method"},
		{"body too large", http.MethodPost, "/bind", `{"n": 1234567890123456789}`, 413, "about:blank", "too large"},
		{"bind error", http.MethodPost, "/bind", `{"n":"x"}`, 400, "about:blank", "Unmarshal type error"},
		{"client canceled", http.MethodGet, "/canceled", "", 499, "about:blank", "client closed"},
		{"deadline", http.MethodGet, "/deadline", "", 503, "about:blank", "took too long"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := do(t, e, tt.method, tt.target, tt.body)
			if r.code != tt.wantStatus {
				t.Fatalf("status = %d, want %d; body %s", r.code, tt.wantStatus, r.body)
			}
			if ct := r.header.Get(echo.HeaderContentType); ct != problem.ContentType {
				t.Errorf("Content-Type = %q", ct)
			}
			p := r.problem
			if p["type"] != tt.wantType {
				t.Errorf("type = %v, want %s", p["type"], tt.wantType)
			}
			if int(p["status"].(float64)) != tt.wantStatus {
				t.Errorf("body status = %v", p["status"])
			}
			if p["title"] == "" || p["title"] == nil {
				t.Errorf("no title: %s", r.body)
			}
			if d, _ := p["detail"].(string); !strings.Contains(d, tt.wantDetail) {
				t.Errorf("detail = %q, want it to contain %q", d, tt.wantDetail)
			}
			rid := r.header.Get(requestlog.Header)
			if rid == "" || p["request_id"] != rid {
				t.Errorf("request_id = %v, header %q", p["request_id"], rid)
			}
			if p["instance"] != strings.SplitN(tt.target, "?", 2)[0] {
				t.Errorf("instance = %v", p["instance"])
			}
		})
	}
}

func TestValidationFieldErrors(t *testing.T) {
	t.Parallel()
	e, _ := newServer(t)
	r := do(t, e, http.MethodPost, "/validate", "")
	errs, _ := r.problem["errors"].([]any)
	if len(errs) != 1 {
		t.Fatalf("errors = %v", r.problem["errors"])
	}
	fe := errs[0].(map[string]any)
	if fe["path"] != "plans[0].limits.ai_tokens" || fe["message"] != "must be positive" {
		t.Errorf("field error = %v", fe)
	}
}

func TestMethodNotAllowedKeepsAllow(t *testing.T) {
	t.Parallel()
	e, _ := newServer(t)
	r := do(t, e, http.MethodDelete, "/problem", "")
	if allow := r.header.Get(echo.HeaderAllow); !strings.Contains(allow, http.MethodGet) {
		t.Errorf("Allow = %q", allow)
	}
}

func TestUnexpectedErrorDoesNotLeak(t *testing.T) {
	t.Parallel()
	for _, target := range []string{"/boom", "/http500"} {
		t.Run(target, func(t *testing.T) {
			t.Parallel()
			e, logs := newServer(t)
			r := do(t, e, http.MethodGet, target, "", requestlog.Header, "trace-"+strings.TrimPrefix(target, "/"))
			if r.code != http.StatusInternalServerError {
				t.Fatalf("status = %d", r.code)
			}
			if bytes.Contains(r.body, []byte("secret")) || bytes.Contains(r.body, []byte("10.0.0.1")) {
				t.Fatalf("body leaks internals: %s", r.body)
			}
			if r.problem["detail"] == "" || r.problem["request_id"] != "trace-"+strings.TrimPrefix(target, "/") {
				t.Errorf("problem = %v", r.problem)
			}
			// The cause is logged, once, with the request id.
			var found int
			for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
				var m map[string]any
				if err := json.Unmarshal([]byte(line), &m); err != nil {
					t.Fatalf("log line %q: %v", line, err)
				}
				if m["msg"] == "unhandled error" {
					found++
					if m["request_id"] != "trace-"+strings.TrimPrefix(target, "/") || !strings.Contains(m["error"].(string), "secret") || m["level"] != "ERROR" {
						t.Errorf("log line = %v", m)
					}
				}
			}
			if found != 1 {
				t.Errorf("found %d error log lines:\n%s", found, logs.String())
			}
		})
	}
}

func TestRetryAfter(t *testing.T) {
	t.Parallel()
	e, _ := newServer(t)
	r := do(t, e, http.MethodGet, "/retry", "")
	if r.code != http.StatusServiceUnavailable || r.header.Get("Retry-After") != "2" {
		t.Fatalf("status %d, Retry-After %q", r.code, r.header.Get("Retry-After"))
	}
}

func TestHeadHasNoBody(t *testing.T) {
	t.Parallel()
	e, _ := newServer(t)
	e.HEAD("/head", func(echo.Context) error { return problem.New(http.StatusForbidden, "no") })
	r := do(t, e, http.MethodHead, "/head", "")
	if r.code != http.StatusForbidden || len(r.body) != 0 {
		t.Fatalf("status %d, body %q", r.code, r.body)
	}
	if ct := r.header.Get(echo.HeaderContentType); ct != problem.ContentType {
		t.Errorf("Content-Type = %q", ct)
	}
}

func TestCommittedResponseOnlyLogs(t *testing.T) {
	t.Parallel()
	e, logs := newServer(t)
	r := do(t, e, http.MethodGet, "/committed", "")
	if r.code != http.StatusOK || string(r.body) != "partial" {
		t.Fatalf("status %d, body %q", r.code, r.body)
	}
	if n := strings.Count(logs.String(), "error after response was committed"); n != 1 {
		t.Errorf("logged %d times:\n%s", n, logs.String())
	}
}

func TestProblemValues(t *testing.T) {
	t.Parallel()
	p := problem.New(http.StatusTooManyRequests, "slow down")
	if p.Type != "about:blank" || p.Title != "Too Many Requests" || p.Status != 429 {
		t.Errorf("New = %+v", p)
	}
	if got := p.Error(); got != "429 Too Many Requests: slow down" {
		t.Errorf("Error() = %q", got)
	}
	for d, want := range map[time.Duration]int{0: 1, time.Millisecond: 1, time.Second: 1, 1001 * time.Millisecond: 2, 59 * time.Second: 59} {
		if got := problem.RetryAfterSeconds(d); got != want {
			t.Errorf("RetryAfterSeconds(%v) = %d, want %d", d, got, want)
		}
	}
	// A shared problem value is not modified by rendering.
	shared := problem.New(http.StatusNotFound, "gone")
	e := echo.New()
	e.HTTPErrorHandler = problem.ErrorHandler(nil)
	e.GET("/x", func(echo.Context) error { return shared })
	do(t, e, http.MethodGet, "/x", "")
	if shared.Instance != "" || shared.RequestID != "" {
		t.Errorf("shared problem modified: %+v", shared)
	}
}
