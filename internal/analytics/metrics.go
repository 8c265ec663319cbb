package analytics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/limitr/limitr/internal/httpx/metrics"
)

// Metrics count what the booker did, and how long committed usage took to reach the
// margins.
type Metrics struct {
	Changes prometheus.Counter
	// Lag is from a meter's aggregation to the booking of its new value: what a
	// margins query lags the aggregates by.
	Lag prometheus.Histogram
}

// NewMetrics registers the booker's metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	return &Metrics{
		Changes: metrics.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{Name: "limitr_analytics_booked_changes_total",
			Help: "Changes booked into the analytics rollups (usage, reprices, fees, topups)."})),
		Lag: metrics.Register(reg, prometheus.NewHistogram(prometheus.HistogramOpts{Name: "limitr_analytics_booking_lag_seconds",
			Help:    "From a meter's aggregation to the booking of its new value in the analytics rollups.",
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300}})),
	}
}
