package aggregate

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the aggregation job's Prometheus series.
type Metrics struct {
	// Backlog is the number of unaggregated usage rows (capped at BacklogCap).
	Backlog prometheus.Gauge
	// Lag is the age of the oldest unaggregated usage row.
	Lag prometheus.Gauge
	// Rows and Batches count what has been folded into meters.
	Rows, Batches prometheus.Counter
	// Errors counts batches that failed and were rolled back.
	Errors prometheus.Counter
	// CommitLag is, per row, the time from its received_at to the commit of its batch.
	CommitLag prometheus.Histogram
}

// NewMetrics registers the aggregation series on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Backlog: prometheus.NewGauge(prometheus.GaugeOpts{Name: "limitr_aggregation_backlog",
			Help: fmt.Sprintf("Usage rows not yet folded into meters (sampled; saturates at %d).", BacklogCap)}),
		Lag: prometheus.NewGauge(prometheus.GaugeOpts{Name: "limitr_aggregation_lag_seconds",
			Help: "Age of the oldest usage row not yet folded into meters (sampled; 0 when none)."}),
		Rows: prometheus.NewCounter(prometheus.CounterOpts{Name: "limitr_aggregation_rows_total",
			Help: "Usage rows folded into meters."}),
		Batches: prometheus.NewCounter(prometheus.CounterOpts{Name: "limitr_aggregation_batches_total",
			Help: "Aggregation transactions committed with at least one row."}),
		Errors: prometheus.NewCounter(prometheus.CounterOpts{Name: "limitr_aggregation_errors_total",
			Help: "Aggregation batches that failed and were rolled back."}),
		CommitLag: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "limitr_aggregation_commit_lag_seconds",
			Help:    "Per usage row, time from its arrival (received_at) to the commit that folded it into its meter.",
			Buckets: []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300}}),
	}
	reg.MustRegister(m.Backlog, m.Lag, m.Rows, m.Batches, m.Errors, m.CommitLag)
	return m
}

func (m *Metrics) observe(b Batch) {
	m.Batches.Inc()
	m.Rows.Add(float64(b.Rows))
	for _, l := range b.CommitLags {
		m.CommitLag.Observe(l.Seconds())
	}
}

func (m *Metrics) set(s Backlog) {
	m.Backlog.Set(float64(s.Rows))
	m.Lag.Set(s.Lag.Seconds())
}

// BacklogCap bounds the rows Measure counts, so sampling stays cheap when the worker
// has fallen far behind.
const BacklogCap = 1_000_000

// Backlog is a sample of the aggregation queue.
type Backlog struct {
	// Rows is the number of unaggregated rows, at most BacklogCap.
	Rows int64
	// Oldest is the received_at of the oldest unaggregated row (zero when none) and Lag
	// its age on the database's clock.
	Oldest time.Time
	Lag    time.Duration
}

// Querier is a pool, a connection or a transaction.
type Querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Measure samples the queue: both queries read only the partial index of pending rows.
// Benchmarks call it to watch the lag. The query goes over the simple protocol, so it is
// planned afresh each time against the table's current size: a prepared statement's
// generic plan, made while the table was empty, scans the whole table twice (see Plan
// safety in the package doc).
func Measure(ctx context.Context, q Querier) (Backlog, error) {
	var s Backlog
	var oldest *time.Time
	var lagSeconds float64
	err := q.QueryRow(ctx, `
		select (select count(*) from (select 1 from usage_deltas where aggregated_at is null limit $1) p),
		       o.oldest, coalesce(extract(epoch from statement_timestamp() - o.oldest)::float8, 0)
		from (select min(received_at) as oldest from usage_deltas where aggregated_at is null) o`,
		pgx.QueryExecModeSimpleProtocol, BacklogCap).Scan(&s.Rows, &oldest, &lagSeconds)
	if err != nil {
		return Backlog{}, fmt.Errorf("aggregate: measure: %w", err)
	}
	if oldest != nil {
		s.Oldest = *oldest
		s.Lag = max(time.Duration(lagSeconds*float64(time.Second)), 0)
	}
	return s, nil
}
