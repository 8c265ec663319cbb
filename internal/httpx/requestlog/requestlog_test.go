package requestlog_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/limitr/limitr/internal/httpx/problem"
	"github.com/limitr/limitr/internal/httpx/requestlog"
)

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(b.buf.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

// requestLines returns the "http request" log lines.
func requestLines(t *testing.T, b *syncBuffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, m := range b.lines(t) {
		if m["msg"] == "http request" {
			out = append(out, m)
		}
	}
	return out
}

func newServer(t *testing.T) (*echo.Echo, *syncBuffer, *string) {
	t.Helper()
	logs := &syncBuffer{}
	logger := slog.New(slog.NewJSONHandler(logs, nil))
	e := echo.New()
	e.HTTPErrorHandler = problem.ErrorHandler(logger)
	e.Use(requestlog.Middleware(logger))
	seen := new(string)
	e.GET("/v1/customers/:id", func(c echo.Context) error {
		ctx := c.Request().Context()
		*seen = requestlog.RequestID(ctx)
		requestlog.SetActor(ctx, "key:k_123")
		return c.String(http.StatusOK, "hello")
	})
	e.POST("/v1/fail", func(echo.Context) error { return errors.New("boom") })
	return e, logs, seen
}

func TestRequestIDGeneratedAndLogged(t *testing.T) {
	t.Parallel()
	e, logs, seen := newServer(t)
	req := httptest.NewRequest(http.MethodGet, "/v1/customers/c_42?x=1", nil)
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, req)

	id := rec.Header().Get(requestlog.Header)
	if len(id) < 16 || id != *seen {
		t.Fatalf("response id %q, handler saw %q", id, *seen)
	}
	lines := requestLines(t, logs)
	if len(lines) != 1 {
		t.Fatalf("want 1 line, got %v", lines)
	}
	l := lines[0]
	want := map[string]any{
		"level": "INFO", "method": "GET", "route": "/v1/customers/:id", "status": float64(200),
		"bytes": float64(5), "request_id": id, "actor": "key:k_123",
	}
	for k, v := range want {
		if l[k] != v {
			t.Errorf("%s = %v, want %v", k, l[k], v)
		}
	}
	if d, ok := l["duration_ms"].(float64); !ok || d < 0 {
		t.Errorf("duration_ms = %v", l["duration_ms"])
	}
	if strings.Contains(l["route"].(string), "c_42") {
		t.Errorf("route holds the raw URL: %v", l["route"])
	}
}

func TestIncomingRequestID(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a", 65)
	tests := []struct {
		in   string
		keep bool
	}{
		{"abc-DEF_123.xyz", true},
		{strings.Repeat("a", 64), true},
		{long, false},
		{"has space", false},
		{"semi;colon", false},
		{"ünï", false},
		{"", false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			e, logs, seen := newServer(t)
			req := httptest.NewRequest(http.MethodGet, "/v1/customers/c_1", nil)
			if tt.in != "" {
				req.Header.Set(requestlog.Header, tt.in)
			}
			rec := httptest.NewRecorder()
			e.ServeHTTP(rec, req)
			got := rec.Header().Get(requestlog.Header)
			if tt.keep != (got == tt.in) {
				t.Fatalf("incoming %q, got %q", tt.in, got)
			}
			if got == "" || *seen != got || requestLines(t, logs)[0]["request_id"] != got {
				t.Errorf("id %q not propagated (handler %q)", got, *seen)
			}
		})
	}
}

func TestErrorStatusLogged(t *testing.T) {
	t.Parallel()
	e, logs, _ := newServer(t)
	req := httptest.NewRequest(http.MethodPost, "/v1/fail", nil)
	req.Header.Set(requestlog.Header, "req-fail")
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, req)
	if rec.Code != http.StatusInternalServerError {
		t.Fatalf("status %d", rec.Code)
	}
	lines := requestLines(t, logs)
	if len(lines) != 1 {
		t.Fatalf("lines = %v", lines)
	}
	l := lines[0]
	if l["status"] != float64(500) || l["level"] != "ERROR" || l["request_id"] != "req-fail" || l["route"] != "/v1/fail" {
		t.Errorf("line = %v", l)
	}
	if _, ok := l["actor"]; ok {
		t.Errorf("actor logged though never set: %v", l)
	}
	if l["bytes"].(float64) != float64(rec.Body.Len()) {
		t.Errorf("bytes = %v, body %d", l["bytes"], rec.Body.Len())
	}
	// The response body is written once.
	if n := strings.Count(rec.Body.String(), `"status":500`); n != 1 {
		t.Errorf("body = %s", rec.Body.String())
	}
}

func TestNotFoundLogged(t *testing.T) {
	t.Parallel()
	e, logs, _ := newServer(t)
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/nope", nil))
	lines := requestLines(t, logs)
	if len(lines) != 1 || lines[0]["status"] != float64(404) || lines[0]["level"] != "INFO" {
		t.Fatalf("lines = %v", lines)
	}
}

func TestContextHelpersOutsideRequest(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	requestlog.SetActor(ctx, "x") // no-op, no panic
	if requestlog.RequestID(ctx) != "" || requestlog.Actor(ctx) != "" {
		t.Fatal("expected empty values outside a request")
	}
	ctx = requestlog.WithRequestID(ctx, "job-1")
	requestlog.SetActor(ctx, "worker")
	if requestlog.RequestID(ctx) != "job-1" || requestlog.Actor(ctx) != "worker" {
		t.Fatal("WithRequestID context lost values")
	}
}
