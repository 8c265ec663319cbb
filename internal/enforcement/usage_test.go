package enforcement

import (
	"context"
	"testing"
	"time"

	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/policies"
	"github.com/limitr/limitr/internal/policies/doctree"
)

const usagePolicy = `{"policy": {
  "credits": {"tok": {"overhead_cost": 0.5, "price": {"amount": 2}}},
  "plans": {"p": {"default": true, "entitlements": {
    "e": {"limit": {"credit": "tok", "mode": "soft", "value": 10, "resets": true, "reset_inc": "1day"}}
  }}}}}`

func newUsageEngine(t *testing.T) (*Engine, *time.Time) {
	t.Helper()
	p, err := policies.Load([]byte(usagePolicy), doctree.FormatJSON)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	e, err := New(p, WithClock(func() time.Time { return now }), WithUsageRecording())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.CreateCustomer(context.Background(), CustomerSpec{ID: "c"}); err != nil {
		t.Fatal(err)
	}
	return e, &now
}

func allow(t *testing.T, e *Engine, amount string) {
	t.Helper()
	if ok, err := e.Allow(context.Background(), Call{Customer: "c", Entitlement: "e", Amount: num.MustParse(amount)}); !ok || err != nil {
		t.Fatalf("allow %s: %v %v", amount, ok, err)
	}
}

func TestUsageDeltasSumPerPeriodAndPriceOverage(t *testing.T) {
	e, now := newUsageEngine(t)
	ctx := context.Background()
	allow(t, e, "4")
	allow(t, e, "4")
	allow(t, e, "4") // crosses the soft limit of 10 by 2: priced 2 × 2 = 4 runes
	id, deltas := e.DrainUsage(ctx, 0)
	if len(deltas) != 1 {
		t.Fatalf("deltas %+v", deltas)
	}
	d := deltas[0]
	if !d.Units.Equal(num.MustParse("12")) || !d.Overhead.Equal(num.MustParse("6")) || !d.Price.Equal(num.MustParse("4")) || d.Calls != 3 {
		t.Fatalf("delta %+v", d)
	}
	if _, again := e.DrainUsage(ctx, 0); len(again) != 0 {
		t.Fatalf("drained twice: %+v", again)
	}
	// The fleet committed 30 units, including these 12 once acknowledged.
	e.AckUsage(id, deltas)
	if err := e.ApplyRemoteTotals(ctx, "c", []RemoteTotal{{Entitlement: "e", Credit: "tok", PeriodStart: d.PeriodStart, Units: num.MustParse("30"), Overhead: num.MustParse("15")}}); err != nil {
		t.Fatal(err)
	}
	if v, _ := e.Value(ctx, "c", "e"); !v.Equal(num.MustParse("30")) {
		t.Fatalf("value %v", v)
	}
	// Usage of a period that ended before the drain keeps its own period.
	allow(t, e, "1")
	*now = now.Add(25 * time.Hour)
	allow(t, e, "2")
	_, deltas = e.DrainUsage(ctx, 0)
	if len(deltas) != 2 || deltas[0].PeriodStart.Equal(deltas[1].PeriodStart) {
		t.Fatalf("periods %+v", deltas)
	}
}

func TestInflightUsageStaysInTheMeterUntilAcknowledged(t *testing.T) {
	e, _ := newUsageEngine(t)
	ctx := context.Background()
	allow(t, e, "3")
	id, deltas := e.DrainUsage(ctx, 0)
	allow(t, e, "2")
	// The server has nothing committed yet: the local meter keeps 3 in flight + 2 pending.
	if err := e.ApplyRemoteTotals(ctx, "c", []RemoteTotal{{Entitlement: "e", Credit: "tok", PeriodStart: deltas[0].PeriodStart, Units: num.Zero, Overhead: num.Zero}}); err != nil {
		t.Fatal(err)
	}
	if v, _ := e.Value(ctx, "c", "e"); !v.Equal(num.MustParse("5")) {
		t.Fatalf("value %v", v)
	}
	e.AckUsage(id, deltas)
	if e.PendingUsage() != 1 {
		t.Fatalf("pending %d", e.PendingUsage())
	}
}

func TestNoRecordingWithoutTheOption(t *testing.T) {
	p, _ := policies.Load([]byte(usagePolicy), doctree.FormatJSON)
	e, _ := New(p)
	if _, err := e.CreateCustomer(context.Background(), CustomerSpec{ID: "c"}); err != nil {
		t.Fatal(err)
	}
	allow(t, e, "1")
	if _, d := e.DrainUsage(context.Background(), 0); d != nil {
		t.Fatal("recorded without WithUsageRecording")
	}
}

func TestCallAuditRecordsEveryDecidedCall(t *testing.T) {
	p, err := policies.Load([]byte(`{"policy": {"credits": {"tok": {"overhead_cost": 0.5}},
	  "plans": {"p": {"default": true, "entitlements": {"e": {"limit": {"credit": "tok", "value": 5}}}}}}}`), doctree.FormatJSON)
	if err != nil {
		t.Fatal(err)
	}
	e, _ := New(p, WithCallAudit(0))
	ctx := context.Background()
	if _, err := e.CreateCustomer(ctx, CustomerSpec{ID: "c"}); err != nil {
		t.Fatal(err)
	}
	for _, amount := range []string{"2", "2", "2"} { // the third is denied by the hard limit of 5
		_, _ = e.Allow(ctx, Call{Customer: "c", Entitlement: "e", Amount: num.MustParse(amount)})
	}
	_, _ = e.Check(ctx, Call{Customer: "c", Entitlement: "e", Amount: num.One}) // checks are not calls
	events := e.DrainCallEvents(0)
	if len(events) != 3 || !events[0].Allowed || !events[1].Allowed || events[2].Allowed {
		t.Fatalf("events %+v", events)
	}
	if events[0].ID == events[1].ID || !events[0].Overhead.Equal(num.One) || events[0].Caller != "c" {
		t.Fatalf("event fields %+v", events[0])
	}
	if len(e.DrainCallEvents(0)) != 0 {
		t.Fatal("drained twice")
	}
	e.RequeueCallEvents(events[:1])
	if again := e.DrainCallEvents(0); len(again) != 1 || again[0].ID != events[0].ID {
		t.Fatalf("requeue %+v", again)
	}
}

// Past its bound, audit mode drops new call records and counts them; the usage sums
// stay whole, and draining makes room again.
func TestCallAuditIsBounded(t *testing.T) {
	p, err := policies.Load([]byte(`{"policy": {"credits": {"tok": {}},
	  "plans": {"p": {"default": true, "entitlements": {"e": {"limit": {"credit": "tok", "value": 1000}}}}}}}`), doctree.FormatJSON)
	if err != nil {
		t.Fatal(err)
	}
	e, _ := New(p, WithCallAudit(3))
	ctx := context.Background()
	if _, err := e.CreateCustomer(ctx, CustomerSpec{ID: "c"}); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if ok, err := e.Allow(ctx, Call{Customer: "c", Entitlement: "e", Amount: num.One}); !ok || err != nil {
			t.Fatal(ok, err)
		}
	}
	if n, dropped := e.PendingCallEvents(), e.CallEventsDropped(); n != 3 || dropped != 7 {
		t.Fatalf("held %d, dropped %d", n, dropped)
	}
	_, deltas := e.DrainUsage(ctx, 0)
	if len(deltas) != 1 || !deltas[0].Units.Equal(num.MustParse("10")) || deltas[0].Calls != 10 {
		t.Fatalf("usage sums %+v", deltas)
	}
	if evs := e.DrainCallEvents(0); len(evs) != 3 || evs[0].ID == evs[2].ID {
		t.Fatalf("kept %+v", evs)
	}
	_, _ = e.Allow(ctx, Call{Customer: "c", Entitlement: "e", Amount: num.One})
	if e.PendingCallEvents() != 1 || e.CallEventsDropped() != 7 {
		t.Fatalf("after a drain: held %d, dropped %d", e.PendingCallEvents(), e.CallEventsDropped())
	}
}

// BenchmarkAllowRecorded is a warm hard-limit call with usage recording on, as in
// cloud mode: recording must not allocate either.
func BenchmarkAllowRecorded(b *testing.B) {
	p, err := policies.Load([]byte(`{"policy": {"credits": {"tok": {}},
	  "plans": {"p": {"default": true, "entitlements": {"e": {"limit": {"credit": "tok", "value": 1e15}}}}}}}`), doctree.FormatJSON)
	if err != nil {
		b.Fatal(err)
	}
	e, _ := New(p, WithUsageRecording())
	ctx := context.Background()
	if _, err := e.CreateCustomer(ctx, CustomerSpec{ID: "c"}); err != nil {
		b.Fatal(err)
	}
	call := Call{Customer: "c", Entitlement: "e", Amount: num.One}
	if _, err := e.Allow(ctx, call); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if ok, _ := e.Allow(ctx, call); !ok {
			b.Fatal("denied")
		}
	}
}
