// Package metrics records Prometheus metrics for the control-plane HTTP API
// and serves them.
//
// Requests are labelled by route pattern (echo's c.Path(), e.g.
// "/v1/customers/:id"), never by raw URL, and unknown methods are folded
// into "OTHER", so label cardinality stays bounded whatever clients send.
package metrics

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// UnmatchedRoute labels requests that matched no route (404s for unknown URLs).
const UnmatchedRoute = "unmatched"

// Metrics holds the HTTP collectors.
type Metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// New creates the HTTP collectors and registers them with reg:
//
//	limitr_http_requests_total{method,route,status}           counter
//	limitr_http_request_duration_seconds{method,route}        histogram
//
// If equal collectors are already registered (a second New on the same
// registry), those are reused. Any other registration error is a programming
// error and panics, as with prometheus.MustRegister.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "limitr_http_requests_total",
			Help: "HTTP requests handled, by method, route pattern and status code.",
		}, []string{"method", "route", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "limitr_http_request_duration_seconds",
			Help:    "Time to handle an HTTP request, by method and route pattern.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"method", "route"}),
	}
	m.requests = Register(reg, m.requests)
	m.duration = Register(reg, m.duration)
	return m
}

// Register registers c with reg, or returns the equal collector already registered
// there (a second server on the same registry shares it). Any other registration error
// is a programming error and panics, as with prometheus.MustRegister.
func Register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic("metrics: " + err.Error())
	}
	return c
}

// Middleware returns echo middleware that counts and times every request.
// Register it with e.Use (after routing, so the route pattern is known).
//
// An error returned by the rest of the chain is rendered at once through
// echo's HTTPErrorHandler (c.Error) so the status recorded is the one the
// client got; the error is still returned up the chain.
func (m *Metrics) Middleware() echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			start := time.Now()
			err := next(c)
			if err != nil {
				c.Error(err)
			}
			status := c.Response().Status
			if !c.Response().Committed && err == nil {
				status = http.StatusOK
			}
			method := normalizeMethod(c.Request().Method)
			route := c.Path()
			if route == "" {
				route = UnmatchedRoute
			}
			m.requests.WithLabelValues(method, route, strconv.Itoa(status)).Inc()
			m.duration.WithLabelValues(method, route).Observe(time.Since(start).Seconds())
			return err
		}
	}
}

// Handler serves the metrics gathered by g in the Prometheus exposition
// format, for GET /metrics.
func Handler(g prometheus.Gatherer) http.Handler {
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

func normalizeMethod(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m
	}
	return "OTHER"
}
