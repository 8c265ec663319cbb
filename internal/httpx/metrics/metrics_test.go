package metrics_test

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/limitr/limitr/internal/httpx/metrics"
	"github.com/limitr/limitr/internal/httpx/problem"
)

func TestCountsByRoutePattern(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)

	e := echo.New()
	e.HTTPErrorHandler = problem.ErrorHandler(nil)
	e.Use(m.Middleware())
	e.GET("/v1/customers/:id", func(c echo.Context) error { return c.NoContent(http.StatusNoContent) })
	e.POST("/v1/usage", func(echo.Context) error { return problem.New(http.StatusUnprocessableEntity, "bad") })
	e.GET("/v1/boom", func(echo.Context) error { return errors.New("boom") })
	e.GET("/metrics", echo.WrapHandler(metrics.Handler(reg)))

	serve := func(method, target string) {
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, httptest.NewRequest(method, target, nil))
	}
	for _, id := range []string{"c_1", "c_2", "c_3"} {
		serve(http.MethodGet, "/v1/customers/"+id)
	}
	serve(http.MethodPost, "/v1/usage")
	serve(http.MethodGet, "/v1/boom")
	serve(http.MethodGet, "/does/not/exist/1")
	serve(http.MethodGet, "/does/not/exist/2")
	serve("BREW", "/v1/usage")

	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("/metrics status %d", rec.Code)
	}
	text := rec.Body.String()

	want := `
# HELP limitr_http_requests_total HTTP requests handled, by method, route pattern and status code.
# TYPE limitr_http_requests_total counter
limitr_http_requests_total{method="GET",route="/metrics",status="200"} 1
limitr_http_requests_total{method="GET",route="/v1/boom",status="500"} 1
limitr_http_requests_total{method="GET",route="/v1/customers/:id",status="204"} 3
limitr_http_requests_total{method="GET",route="unmatched",status="404"} 2
limitr_http_requests_total{method="OTHER",route="/v1/usage",status="405"} 1
limitr_http_requests_total{method="POST",route="/v1/usage",status="422"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "limitr_http_requests_total"); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(reg, "limitr_http_request_duration_seconds"); n != 6 {
		t.Errorf("duration series = %d, want 6", n)
	}
	for _, s := range []string{"c_1", "/does/not/exist", "BREW"} {
		if strings.Contains(text, s) {
			t.Errorf("/metrics output contains %q (raw URL or method in a label)", s)
		}
	}
	if !strings.Contains(text, `limitr_http_request_duration_seconds_bucket{method="GET",route="/v1/customers/:id",le="0.1"}`) {
		t.Errorf("histogram missing from /metrics:\n%s", text)
	}
}

func TestNewTwiceOnSameRegistry(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m1 := metrics.New(reg)
	m2 := metrics.New(reg)

	e := echo.New()
	e.Use(m1.Middleware(), m2.Middleware())
	e.GET("/x", func(c echo.Context) error { return c.String(http.StatusOK, "ok") })
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/x", nil))

	h := httptest.NewServer(metrics.Handler(reg))
	defer h.Close()
	resp, err := http.Get(h.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(body), `limitr_http_requests_total{method="GET",route="/x",status="200"} 2`) {
		t.Errorf("shared collectors not reused:\n%s", body)
	}
}
