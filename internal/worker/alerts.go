package worker

import (
	"github.com/limitr/limitr/internal/aggregate"
	"github.com/limitr/limitr/internal/alerts"
	"github.com/limitr/limitr/internal/alerts/evaluate"
	"github.com/limitr/limitr/internal/policies/pgstore"
)

// newEvaluator builds the usage alert evaluator (unless turned off) and returns what
// the aggregator calls after each batch: the configured OnBatch and the evaluator's,
// which only queues the batch's customers, so aggregation never waits on rules.
func (w *Worker) newEvaluator() func(aggregate.Batch) {
	onBatch := w.cfg.OnBatch
	if w.cfg.DisableAlertEvaluation {
		return onBatch
	}
	svc := w.deps.Alerts
	if svc == nil {
		svc = alerts.New(w.deps.Pool, w.deps.Secrets, lateInserter{w}, pgstore.NewService(w.deps.Pool, nil),
			alerts.Config{Logger: w.log})
	}
	w.eval = evaluate.New(w.deps.Pool, svc, w.billing, evaluate.Config{SweepInterval: w.cfg.AlertSweepInterval, Logger: w.log})
	if onBatch == nil {
		return w.eval.OnBatch
	}
	return func(b aggregate.Batch) {
		onBatch(b)
		w.eval.OnBatch(b)
	}
}
