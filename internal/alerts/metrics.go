package alerts

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/limitr/limitr/internal/httpx/metrics"
)

// Metrics count deliveries by channel kind and outcome, as their attempts are
// recorded: limitr_alert_delivery_attempts_total{channel,outcome} with the outcomes of
// the attempt log (delivered, confirmed, retry, failed, dead).
type Metrics struct {
	Attempts *prometheus.CounterVec
}

// NewMetrics registers the alerts metrics on reg (an already registered set is reused).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	return &Metrics{Attempts: metrics.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "limitr_alert_delivery_attempts_total",
		Help: "Alert delivery attempts recorded, by channel kind and outcome (delivered, confirmed, retry, failed, dead).",
	}, []string{"channel", "outcome"}))}
}

func (m *Metrics) attempt(channel, outcome string) {
	if m != nil {
		m.Attempts.WithLabelValues(channel, outcome).Inc()
	}
}
