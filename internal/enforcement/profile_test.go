package enforcement

import (
	"context"
	"testing"
	"time"

	"github.com/limitr/limitr/internal/policies"
	"github.com/limitr/limitr/internal/policies/doctree"
)

const sharingPolicy = `{"policy": {
  "credits": {"tok": {}},
  "plans": {
    "a": {"default": true, "entitlements": {"e": {"limit": {"credit": "tok", "value": 10, "resets": true, "reset_inc": "1day"}}}},
    "b": {"entitlements": {"e": {"limit": {"credit": "tok", "value": 20}}}}
  }}}`

// TestSharedProfiles checks that customers with the same plain profile share it, and
// that changing one customer never shows on another: profiles are replaced, not
// mutated, and the plan cached on a shared profile is the same for every holder.
func TestSharedProfiles(t *testing.T) {
	p, err := policies.Load([]byte(sharingPolicy), doctree.FormatJSON)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	e, err := New(p, WithClock(func() time.Time { now = now.Add(time.Second); return now }))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, id := range []string{"u1", "u2", "u3"} {
		if _, err := e.CreateCustomer(ctx, CustomerSpec{ID: id}); err != nil {
			t.Fatal(err)
		}
	}
	u1, u2, u3 := e.lookup("u1"), e.lookup("u2"), e.lookup("u3")
	if u1.info.Load() != u2.info.Load() || u2.info.Load() != u3.info.Load() {
		t.Fatal("identical plain profiles are not shared")
	}
	if u1.planLocked(e, p).Name != "a" || u2.planLocked(e, p).Name != "a" {
		t.Fatal("plan a expected")
	}

	// A label change on u1, a plan change on u2: u3 keeps its own.
	label := "Someone"
	if _, err := e.CreateCustomer(ctx, CustomerSpec{ID: "u1", Label: &label}); err != nil {
		t.Fatal(err)
	}
	if err := e.SetCustomerPlan(ctx, "u2", "b", false); err != nil {
		t.Fatal(err)
	}
	s1, _ := e.Customer(ctx, "u1")
	s2, _ := e.Customer(ctx, "u2")
	s3, _ := e.Customer(ctx, "u3")
	if s1.Label != "Someone" || s1.Plan != "a" || s2.Label != "User" || s2.Plan != "b" || s3.Label != "User" || s3.Plan != "a" {
		t.Fatalf("profiles leaked between customers: u1 %s/%s, u2 %s/%s, u3 %s/%s", s1.Label, s1.Plan, s2.Label, s2.Plan, s3.Label, s3.Plan)
	}
	if u2.planLocked(e, p).Name != "b" || u3.planLocked(e, p).Name != "a" {
		t.Fatal("cached plans leaked between customers")
	}

	// Each keeps its own creation time and billing anchor (the creation time unless set).
	if s1.Created.Equal(s3.Created) || !s3.BillingAnchor.Equal(s3.Created) {
		t.Fatalf("created %v / %v, anchor %v", s1.Created, s3.Created, s3.BillingAnchor)
	}
	anchor := time.Date(2025, 6, 15, 0, 0, 0, 0, time.UTC)
	if _, err := e.CreateCustomer(ctx, CustomerSpec{ID: "u3", Anchor: &anchor}); err != nil {
		t.Fatal(err)
	}
	if s3, _ = e.Customer(ctx, "u3"); !s3.BillingAnchor.Equal(anchor) {
		t.Fatalf("anchor %v, want %v", s3.BillingAnchor, anchor)
	}
	if u1.info.Load() == u3.info.Load() {
		t.Fatal("a customer with its own anchor shares a profile")
	}

	// A restore brings back the snapshot's creation time and anchor.
	snap, _ := e.Customer(ctx, "u3")
	snap.ID = "u4"
	if err := e.SetCustomer(ctx, snap, false); err != nil {
		t.Fatal(err)
	}
	s4, _ := e.Customer(ctx, "u4")
	if !s4.Created.Equal(snap.Created) || !s4.BillingAnchor.Equal(anchor) {
		t.Fatalf("restored created %v anchor %v, want %v %v", s4.Created, s4.BillingAnchor, snap.Created, anchor)
	}
}
