package worker

import (
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/limitr/limitr/internal/aggregate"
	"github.com/limitr/limitr/internal/platform/pgtest"
	"github.com/limitr/limitr/internal/retention"
)

// A retention policy of zeros means "keep everything forever", as the README says of
// the 0 settings; it is not replaced by the defaults.
func TestZeroRetentionKeepsEverything(t *testing.T) {
	_, pool := pgtest.NewMigrated(t)
	w, err := New(Deps{Pool: pool}, Config{})
	if err != nil {
		t.Fatal(err)
	}
	if w.cfg.Retention != (retention.Policy{}) {
		t.Fatalf("retention = %+v, want keep-forever zeros", w.cfg.Retention)
	}
	w, err = New(Deps{Pool: pool}, Config{Retention: retention.Defaults()})
	if err != nil || w.cfg.Retention != retention.Defaults() {
		t.Fatalf("defaults: %+v %v", w.cfg.Retention, err)
	}
}

// Usage alert rules are evaluated by default, fed by every aggregation batch, and can
// be turned off.
func TestAlertEvaluationOnByDefault(t *testing.T) {
	_, pool := pgtest.NewMigrated(t)
	seen := 0
	w, err := New(Deps{Pool: pool}, Config{OnBatch: func(aggregate.Batch) { seen++ }})
	if err != nil {
		t.Fatal(err)
	}
	if w.eval == nil || w.cfg.AlertSweepInterval != 5*time.Minute {
		t.Fatalf("evaluator %v, sweep every %v", w.eval, w.cfg.AlertSweepInterval)
	}
	onBatch := w.newOnBatch()
	for range 1000 { // far more than the queue holds: the surplus is dropped, never waited for
		onBatch(aggregate.Batch{Rows: 1, Touched: []aggregate.Touched{{CustomerUID: uuid.New()}}})
	}
	if seen != 1000 || w.eval.Stats().Dropped == 0 {
		t.Fatalf("configured OnBatch saw %d batches; evaluator stats %+v", seen, w.eval.Stats())
	}
	w, err = New(Deps{Pool: pool}, Config{DisableAlertEvaluation: true})
	if err != nil || w.eval != nil {
		t.Fatalf("disabled: evaluator %v, %v", w.eval, err)
	}
}
