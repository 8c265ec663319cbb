package evaluate

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/limitr/limitr/internal/httpx/metrics"
)

// Metrics count what the evaluator did: customers evaluated, and batches dropped
// because the queue was full (their environments are swept instead).
type Metrics struct {
	Customers prometheus.Counter
	Dropped   prometheus.Counter
}

// NewMetrics registers the evaluator's metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	return &Metrics{
		Customers: metrics.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{Name: "limitr_alert_evaluated_customers_total",
			Help: "Customers whose standing was evaluated against usage alert rules (after batches and in sweeps)."})),
		Dropped: metrics.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{Name: "limitr_alert_evaluation_dropped_batches_total",
			Help: "Aggregation batches not queued for evaluation because the queue was full; their environments are swept."})),
	}
}
