//go:build !race

// The race detector changes allocation counts, so this runs only without it.

package enforcement

import (
	"context"
	"testing"

	"github.com/limitr/limitr/internal/num"
)

// TestHandlerInterestAllocs: with only a handler for alert-worthy types, an allowed
// call under its limit builds no event and allocates nothing.
func TestHandlerInterestAllocs(t *testing.T) {
	e := newInterestEngine(t, "1e15", false)
	e.AddHandlerFor("fwd", []string{EventMeterLimit, EventMeterOverage, EventCapLimit, EventCapThresholdCrossed,
		EventMeterGoverned, NotificationEvents}, func(Event) { t.Error("handler called") })
	ctx := context.Background()
	c := Call{Customer: "c", Entitlement: "e", Amount: num.MustParse("7")}
	if ok, err := e.Allow(ctx, c); !ok || err != nil {
		t.Fatal(ok, err)
	}
	if n := testing.AllocsPerRun(1000, func() { _, _ = e.Allow(ctx, c) }); n != 0 {
		t.Fatalf("%v allocations per call", n)
	}
}
