package worker

import (
	"github.com/limitr/limitr/internal/aggregate"
	"github.com/limitr/limitr/internal/alerts/evaluate"
)

// newEvaluator builds the usage alert evaluator (unless turned off) and returns what
// the aggregator calls after each batch: the configured OnBatch and the evaluator's,
// which only queues the batch's customers, so aggregation never waits on rules.
func (w *Worker) newEvaluator() func(aggregate.Batch) {
	onBatch := w.cfg.OnBatch
	if w.cfg.DisableAlertEvaluation {
		return onBatch
	}
	w.eval = evaluate.New(w.deps.Pool, w.alerts, w.billing, evaluate.Config{SweepInterval: w.cfg.AlertSweepInterval, Logger: w.log,
		Metrics: evaluate.NewMetrics(w.reg)})
	if onBatch == nil {
		return w.eval.OnBatch
	}
	return func(b aggregate.Batch) {
		onBatch(b)
		w.eval.OnBatch(b)
	}
}
