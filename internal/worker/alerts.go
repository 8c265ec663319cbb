package worker

import (
	"github.com/limitr/limitr/internal/aggregate"
	"github.com/limitr/limitr/internal/alerts/evaluate"
	"github.com/limitr/limitr/internal/analytics"
)

// newOnBatch builds what the aggregator calls after each batch: the configured
// OnBatch, the usage alert evaluator's (unless turned off) and the analytics booker's.
// The last two only queue the batch's customers, so aggregation never waits on rules
// or rollups.
func (w *Worker) newOnBatch() func(aggregate.Batch) {
	calls := []func(aggregate.Batch){}
	if w.cfg.OnBatch != nil {
		calls = append(calls, w.cfg.OnBatch)
	}
	if !w.cfg.DisableAlertEvaluation {
		w.eval = evaluate.New(w.deps.Pool, w.alerts, w.billing, evaluate.Config{SweepInterval: w.cfg.AlertSweepInterval, Logger: w.log,
			Metrics: evaluate.NewMetrics(w.reg)})
		calls = append(calls, w.eval.OnBatch)
	}
	w.booker = analytics.NewService(w.deps.Pool, w.billing).NewBooker(analytics.BookerConfig{SweepInterval: w.cfg.AnalyticsSweepInterval, Logger: w.log,
		Metrics: analytics.NewMetrics(w.reg)})
	calls = append(calls, w.booker.OnBatch)
	return func(b aggregate.Batch) {
		for _, call := range calls {
			call(b)
		}
	}
}
