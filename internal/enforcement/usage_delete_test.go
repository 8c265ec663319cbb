package enforcement

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/policies"
	"github.com/limitr/limitr/internal/policies/doctree"
)

// Every delta and grant draw carries the creation time of the customer it was
// recorded for, including deltas of a period that closed before the drain.
func TestDrainedUsageCarriesTheCustomerCreationTime(t *testing.T) {
	ctx := context.Background()
	created := time.Date(2026, 1, 1, 0, 0, 0, 123456789, time.UTC)
	now := created.Add(2 * time.Hour)
	e := newGrantDrawEngine(t, &now)
	if _, err := e.CreateCustomer(ctx, CustomerSpec{ID: "c", Created: &created}); err != nil {
		t.Fatal(err)
	}
	allow(t, e, "12") // 2 over the soft limit: drawn from the included grant
	_, deltas, draws := e.DrainUsageAll(ctx, 0)
	if len(deltas) != 1 || !deltas[0].CustomerCreatedAt.Equal(created) {
		t.Fatalf("deltas %+v", deltas)
	}
	if len(draws) != 1 || !draws[0].CustomerCreatedAt.Equal(created) {
		t.Fatalf("draws %+v", draws)
	}

	// A period that closes before the drain.
	ue, clock := newUsageEngine(t)
	snap, _ := ue.Customer(ctx, "c")
	allow(t, ue, "1")
	*clock = clock.Add(25 * time.Hour)
	allow(t, ue, "1")
	_, deltas = ue.DrainUsage(ctx, 0)
	if len(deltas) != 2 {
		t.Fatalf("deltas %+v", deltas)
	}
	for _, d := range deltas {
		if d.CustomerCreatedAt.IsZero() || !d.CustomerCreatedAt.Equal(snap.Created) {
			t.Fatalf("delta %+v; customer created %v", d, snap.Created)
		}
	}
}

const deletePolicy = `{"policy": {
  "credits": {"tok": {}},
  "plans": {"p": {"default": true,
    "entitlements": {"e": {"limit": {"credit": "tok", "mode": "soft", "value": 10, "resets": true, "reset_inc": "1day"}}},
    "topups": {"inc": {"credit": "tok", "value": 30, "included": true}}}}}}`

func newDeleteEngine(t *testing.T, now *time.Time) *Engine {
	t.Helper()
	p, err := policies.Load([]byte(deletePolicy), doctree.FormatJSON)
	if err != nil {
		t.Fatal(err)
	}
	e, err := New(p, WithClock(func() time.Time { return *now }), WithCallAudit(0))
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"gone", "kept"} {
		if _, err := e.CreateCustomer(context.Background(), CustomerSpec{ID: id}); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

func call(t *testing.T, e *Engine, customer, amount string) {
	t.Helper()
	if ok, err := e.Allow(context.Background(), Call{Customer: customer, Entitlement: "e", Amount: num.MustParse(amount)}); !ok || err != nil {
		t.Fatalf("allow %s %s: %v %v", customer, amount, ok, err)
	}
}

// Deleting a customer discards its usage not yet drained: dirty meters, deltas of
// closed periods, grant draws and call records. Other customers' usage is untouched,
// and usage drained before the delete stays in flight until acknowledged.
func TestDeleteCustomerDiscardsPendingUsage(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	e := newDeleteEngine(t, &now)
	call(t, e, "gone", "4")
	id, inflight, _ := e.DrainUsageAll(ctx, 0) // cut before the delete: may still be sent
	e.DrainCallEvents(0)
	call(t, e, "gone", "3")
	now = now.Add(25 * time.Hour) // the period closes with 3 pending
	call(t, e, "gone", "15")      // 5 over the limit: a grant draw
	call(t, e, "kept", "12")
	call(t, e, "kept", "1")
	if err := e.DeleteCustomer(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Allow(ctx, Call{Customer: "gone", Entitlement: "e", Amount: num.One}); !errors.Is(err, ErrUnknownCustomer) {
		t.Fatalf("call after delete: %v", err)
	}
	if n := e.PendingUsage(); n != 2 { // kept's meter and its grant draw
		t.Fatalf("pending %d", n)
	}
	_, deltas, draws := e.DrainUsageAll(ctx, 0)
	events := e.DrainCallEvents(0)
	for _, d := range deltas {
		if d.Customer != "kept" {
			t.Fatalf("delta of a deleted customer: %+v", d)
		}
	}
	for _, d := range draws {
		if d.Customer != "kept" {
			t.Fatalf("grant draw of a deleted customer: %+v", d)
		}
	}
	for _, ev := range events {
		if ev.Customer != "kept" {
			t.Fatalf("call record of a deleted customer: %+v", ev)
		}
	}
	if len(deltas) != 1 || !deltas[0].Units.Equal(num.MustParse("13")) || len(draws) != 1 || len(events) != 2 {
		t.Fatalf("kept's usage: %+v %+v %+v", deltas, draws, events)
	}
	// What was cut before the delete is acknowledged as usual.
	if len(inflight) != 1 || inflight[0].Customer != "gone" {
		t.Fatalf("in flight %+v", inflight)
	}
	e.AckUsage(id, inflight)
	if e.PendingUsage() != 0 {
		t.Fatalf("pending after ack %d", e.PendingUsage())
	}

	// A customer created again under the id starts clean; its usage is its own.
	later := now.Add(time.Hour)
	if _, err := e.CreateCustomer(ctx, CustomerSpec{ID: "gone", Created: &later}); err != nil {
		t.Fatal(err)
	}
	call(t, e, "gone", "2")
	_, deltas, _ = e.DrainUsageAll(ctx, 0)
	if len(deltas) != 1 || !deltas[0].Units.Equal(num.MustParse("2")) || !deltas[0].CustomerCreatedAt.Equal(later) {
		t.Fatalf("re-created customer's usage: %+v", deltas)
	}
}

// A customer deleted and created again under the same id does not inherit the old
// one's in-flight usage: the local meter counts only its own.
func TestRecreatedCustomerDoesNotCountTheOldInflightUsage(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 3, 5, 0, 0, 0, 0, time.UTC)
	p, err := policies.Load([]byte(`{"policy": {"credits": {"tok": {}},
	  "plans": {"p": {"default": true, "entitlements": {"e": {"limit": {"credit": "tok", "value": 100, "resets": true, "reset_sch": "monthly:1"}}}}}}}`), doctree.FormatJSON)
	if err != nil {
		t.Fatal(err)
	}
	e, _ := New(p, WithClock(func() time.Time { return now }), WithUsageRecording())
	first, second := time.Date(2026, 2, 10, 0, 0, 0, 0, time.UTC), time.Date(2026, 2, 20, 0, 0, 0, 0, time.UTC)
	if _, err := e.CreateCustomer(ctx, CustomerSpec{ID: "c", Created: &first}); err != nil {
		t.Fatal(err)
	}
	call(t, e, "c", "40")
	_, inflight := e.DrainUsage(ctx, 0)
	if err := e.DeleteCustomer(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.CreateCustomer(ctx, CustomerSpec{ID: "c", Created: &second}); err != nil {
		t.Fatal(err)
	}
	call(t, e, "c", "1")
	// Both meters are in March's period; the server has nothing committed for the new
	// customer yet.
	march := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	if !inflight[0].PeriodStart.Equal(march) {
		t.Fatalf("in flight %+v", inflight)
	}
	if err := e.ApplyRemoteTotals(ctx, "c", []RemoteTotal{{Entitlement: "e", Credit: "tok", PeriodStart: march, Units: num.Zero, Overhead: num.Zero}}); err != nil {
		t.Fatal(err)
	}
	if v, _ := e.Value(ctx, "c", "e"); !v.Equal(num.One) {
		t.Fatalf("value %v; want 1 (the old customer's 40 in flight is not this one's)", v)
	}
}
