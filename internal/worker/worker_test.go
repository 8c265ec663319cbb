package worker

import (
	"testing"

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
