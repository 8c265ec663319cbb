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

const grantIDPolicy = `{"policy": {
  "credits": {"tok": {}},
  "plans": {"p": {"default": true,
    "entitlements": {"e": {"limit": {"credit": "tok", "value": 10}}},
    "topups": {"t": {"credit": "tok", "value": 5}, "x": {"credit": "tok", "value": 5, "expires_after": "1day"}}}}}}`

func TestGrantTopupWithIDIsIdempotent(t *testing.T) {
	p, err := policies.Load([]byte(grantIDPolicy), doctree.FormatJSON)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 10, 0, 0, 0, 0, time.UTC)
	e, _ := New(p, WithClock(func() time.Time { return now }), WithUsageRecording())
	ctx := context.Background()
	if _, err := e.CreateCustomer(ctx, CustomerSpec{ID: "c"}); err != nil {
		t.Fatal(err)
	}
	price := num.MustParse("3")
	for range 2 {
		if _, err := e.GrantTopupWithID(ctx, "c", "t", "lgrnt_server1", &price, now.Add(-time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	if added, _ := e.GrantTopupWithID(ctx, "c", "x", "lgrnt_old", nil, now.Add(-48*time.Hour)); added {
		t.Fatal("granted an expired topup")
	}
	if _, err := e.GrantTopupWithID(ctx, "c", "nope", "lgrnt_2", nil, time.Time{}); !errors.Is(err, ErrUnknownTopup) {
		t.Fatalf("unknown topup: %v", err)
	}
	snap, _ := e.Customer(ctx, "c")
	if len(snap.Grants) != 1 || snap.Grants["lgrnt_server1"].Value != 5 || *snap.Grants["lgrnt_server1"].Price != 3 {
		t.Fatalf("grants %+v", snap.Grants)
	}
}

func TestInsertCustomerNeverOverwrites(t *testing.T) {
	p, _ := policies.Load([]byte(grantIDPolicy), doctree.FormatJSON)
	e, _ := New(p, WithUsageRecording())
	ctx := context.Background()
	if ok, err := e.InsertCustomer(ctx, &Customer{ID: "c", Plan: "p", AltIDs: []string{"alias"}}); !ok || err != nil {
		t.Fatalf("insert: %v %v", ok, err)
	}
	if ok, _ := e.Allow(ctx, Call{Customer: "alias", Entitlement: "e", Amount: num.MustParse("4")}); !ok {
		t.Fatal("denied")
	}
	for _, id := range []string{"c", "alias"} {
		if ok, err := e.InsertCustomer(ctx, &Customer{ID: id, Plan: "p"}); ok || err != nil {
			t.Fatalf("overwrote %s: %v %v", id, ok, err)
		}
	}
	if v, _ := e.Value(ctx, "c", "e"); !v.Equal(num.MustParse("4")) {
		t.Fatalf("value %v", v)
	}
	if _, d := e.DrainUsage(ctx, 0); len(d) != 1 {
		t.Fatalf("pending usage lost: %+v", d)
	}
}

// A grant granted again after this instance drew it down (and dropped it) starts at
// what is left: the topup less the fleet's committed draws and this instance's own
// draws not committed yet, in one step. One with nothing left is not granted.
func TestGrantTopupDrawnTakesOffEveryDraw(t *testing.T) {
	p, _ := policies.Load([]byte(grantIDPolicy), doctree.FormatJSON)
	now := time.Date(2026, 1, 10, 0, 0, 0, 0, time.UTC)
	e, _ := New(p, WithClock(func() time.Time { return now }), WithUsageRecording())
	ctx := context.Background()
	if _, err := e.CreateCustomer(ctx, CustomerSpec{ID: "c"}); err != nil {
		t.Fatal(err)
	}
	bought := now.Add(-time.Hour)
	if _, err := e.GrantTopupWithID(ctx, "c", "t", "lgrnt_a", nil, bought); err != nil {
		t.Fatal(err)
	}
	if ok, _ := e.Allow(ctx, Call{Customer: "c", Entitlement: "e", Amount: num.MustParse("15")}); !ok {
		t.Fatal("denied") // the limit and all of the grant: it is dropped
	}
	if snap, _ := e.Customer(ctx, "c"); len(snap.Grants) != 0 {
		t.Fatalf("grants %+v", snap.Grants)
	}
	// Nothing committed yet: this instance's own pending draw takes all of it.
	if ok, err := e.GrantTopupDrawn(ctx, "c", "t", "lgrnt_a", nil, bought, nil); ok || err != nil {
		t.Fatalf("granted again with nothing left: %v %v", ok, err)
	}
	if r := remaining(t, e); !r.IsZero() {
		t.Fatalf("remaining %v", r)
	}
	// Another grant the fleet has drawn 2 of (committed) and this instance 1 (pending).
	if ok, err := e.GrantTopupDrawn(ctx, "c", "t", "lgrnt_b", nil, bought,
		[]RemoteGrantDraw{{GrantID: "lgrnt_b", PeriodStart: bought, Units: num.MustParse("2")}, {GrantID: "lgrnt_other", PeriodStart: bought, Units: num.One}}); !ok || err != nil {
		t.Fatalf("grant: %v %v", ok, err)
	}
	if r := remaining(t, e); !r.Equal(num.MustParse("3")) {
		t.Fatalf("remaining %v", r)
	}
}
