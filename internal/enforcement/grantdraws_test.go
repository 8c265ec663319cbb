package enforcement

import (
	"context"
	"testing"
	"time"

	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/policies"
	"github.com/limitr/limitr/internal/policies/doctree"
)

const grantDrawPolicy = `{"policy": {
  "credits": {"tok": {}},
  "plans": {"p": {"default": true,
    "entitlements": {"e": {"limit": {"credit": "tok", "mode": "soft", "value": 10}}},
    "topups": {"inc": {"credit": "tok", "value": 3, "included": true}, "t": {"credit": "tok", "value": 5}}}}}}`

func newGrantDrawEngine(t *testing.T, now *time.Time) *Engine {
	t.Helper()
	p, err := policies.Load([]byte(grantDrawPolicy), doctree.FormatJSON)
	if err != nil {
		t.Fatal(err)
	}
	e, err := New(p, WithClock(func() time.Time { return *now }), WithUsageRecording())
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func remaining(t *testing.T, e *Engine) num.Dec {
	t.Helper()
	v, err := e.RemainingCredit(context.Background(), "c", "tok")
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestGrantDrawsAreRecordedDrainedAndAcknowledged(t *testing.T) {
	ctx := context.Background()
	created := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := created.Add(2 * time.Hour)
	e := newGrantDrawEngine(t, &now)
	if _, err := e.CreateCustomer(ctx, CustomerSpec{ID: "c", Created: &created}); err != nil {
		t.Fatal(err)
	}
	bought := created.Add(time.Hour)
	if _, err := e.GrantTopupWithID(ctx, "c", "t", "lgrnt_s", nil, bought); err != nil {
		t.Fatal(err)
	}
	snap, _ := e.Customer(ctx, "c")
	if g, ok := snap.Grants[IncludedGrantID("inc")]; !ok || !g.Created.Equal(created) {
		t.Fatalf("included grant not deterministic: %+v", snap.Grants)
	}
	allow(t, e, "12") // 2 over: from the included grant (oldest)
	allow(t, e, "3")  // 1 more from it, 2 from the purchase
	id, deltas, draws := e.DrainUsageAll(ctx, 0)
	if len(draws) != 2 || draws[0].GrantID != "included:inc" || !draws[0].Units.Equal(num.MustParse("3")) || !draws[0].PeriodStart.Equal(created) ||
		draws[1].GrantID != "lgrnt_s" || !draws[1].Units.Equal(num.MustParse("2")) || !draws[1].PeriodStart.Equal(bought) || draws[1].Customer != "c" {
		t.Fatalf("draws %+v", draws)
	}
	if _, _, again := e.DrainUsageAll(ctx, 0); len(again) != 0 {
		t.Fatalf("drained twice: %+v", again)
	}
	// Another instance drew 1 from the purchase: 5 − (1 remote + 2 in flight).
	remote := func(u string) []RemoteGrantDraw {
		return []RemoteGrantDraw{{GrantID: "lgrnt_s", PeriodStart: bought, Units: num.MustParse(u)}}
	}
	if err := e.ApplyGrantDraws(ctx, "c", remote("1")); err != nil {
		t.Fatal(err)
	}
	if r := remaining(t, e); !r.Equal(num.MustParse("2")) {
		t.Fatalf("remaining %v", r)
	}
	allow(t, e, "1") // pending draw of 1
	if err := e.ApplyGrantDraws(ctx, "c", remote("1")); err != nil {
		t.Fatal(err)
	}
	if r := remaining(t, e); !r.Equal(num.MustParse("1")) {
		t.Fatalf("remaining with pending %v", r)
	}
	// Acknowledged: the server's total now holds this instance's 2.
	e.AckUsage(id, deltas)
	if err := e.ApplyGrantDraws(ctx, "c", remote("3")); err != nil {
		t.Fatal(err)
	}
	if r := remaining(t, e); !r.Equal(num.MustParse("1")) {
		t.Fatalf("remaining after ack %v", r)
	}
	// A refused batch's draws go back to pending.
	id2, d2, draws2 := e.DrainUsageAll(ctx, 0)
	if len(draws2) != 1 || !draws2[0].Units.Equal(num.MustParse("1")) {
		t.Fatalf("draws %+v", draws2)
	}
	e.RequeueUsage(id2, d2)
	if e.PendingUsage() == 0 {
		t.Fatal("requeued draws not pending")
	}
	if _, _, draws3 := e.DrainUsageAll(ctx, 0); len(draws3) != 1 || !draws3[0].Units.Equal(num.MustParse("1")) {
		t.Fatalf("requeued draws %+v", draws3)
	}
	// Periods that do not match, and other grants' draws, change nothing.
	if err := e.ApplyGrantDraws(ctx, "c", []RemoteGrantDraw{{GrantID: "lgrnt_s", PeriodStart: created, Units: num.MustParse("5")}}); err != nil {
		t.Fatal(err)
	}
	if r := remaining(t, e); !r.Equal(num.MustParse("1")) {
		t.Fatalf("remaining after a foreign period %v", r)
	}
}

func TestSecondInstanceSeesIncludedGrantDraws(t *testing.T) {
	ctx := context.Background()
	created := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := created.Add(48 * time.Hour)
	e := newGrantDrawEngine(t, &now)
	// Hydrated later: the included grant is still anchored at the customer's creation.
	if ok, err := e.InsertCustomer(ctx, &Customer{ID: "c", Plan: "p", Created: created}); !ok || err != nil {
		t.Fatalf("insert: %v %v", ok, err)
	}
	if err := e.ApplyGrantDraws(ctx, "c", []RemoteGrantDraw{{GrantID: "included:inc", PeriodStart: created.Add(300 * time.Nanosecond), Units: num.MustParse("2")}}); err != nil {
		t.Fatal(err)
	}
	if r := remaining(t, e); !r.Equal(num.MustParse("1")) {
		t.Fatalf("remaining %v", r)
	}
	// Without recording, nothing is recorded and drains are empty.
	p, _ := policies.Load([]byte(grantDrawPolicy), doctree.FormatJSON)
	plain, _ := New(p)
	if _, _, d := plain.DrainUsageAll(ctx, 0); d != nil {
		t.Fatalf("draws without recording: %+v", d)
	}
}
