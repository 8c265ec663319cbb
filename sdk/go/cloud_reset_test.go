package limitr_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"strconv"
	"testing"
	"time"

	limitr "github.com/limitr/limitr/sdk/go"
)

// heldIDs lists the customers the Policy holds locally (Customers does not hydrate).
func heldIDs(t *testing.T, p *limitr.Policy) []string {
	t.Helper()
	cs, err := p.Customers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, c := range cs {
		ids = append(ids, c.ID)
	}
	return ids
}

// When the change feed no longer holds the changes after this instance's position,
// the server sends a reset: the SDK re-reads the policy and every customer it holds,
// so its state matches the server's, and continues the stream from the reset's cursor.
func TestCloudStreamResetResyncs(t *testing.T) {
	f := newFakeCP(t, cloudPolicy("10"))
	f.set(func() { f.helloNoHash = true }) // only the reset can tell the SDK of version 2
	// Nothing is flushed (or polled) before Close: pending usage stays pending.
	logs := &logCapture{}
	p := connect(t, f, limitr.WithFlushInterval(time.Hour), limitr.WithRetryTiming(5*time.Millisecond, 20*time.Millisecond),
		limitr.WithLogger(slog.New(logs)))
	ctx := context.Background()
	for _, id := range []string{"a", "b", "c", "d"} {
		if _, err := p.CreateCustomer(ctx, id, ""); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.CreateCustomerOverride(ctx, "b", "api", limitr.Override{Value: "5"}); err != nil {
		t.Fatal(err)
	}
	mustAllow(t, p, "a", 2, true)
	mustAllow(t, p, "c", 1, true)
	mustAllow(t, p, "d", 3, true)
	eventually(t, "stream up", func() bool { return p.SyncStats().StreamConnected })

	// Changes made while this instance is disconnected, whose feed entries are gone by
	// the time it comes back.
	f.set(func() { f.streamStatus = 503 })
	f.dropStreams()
	eventually(t, "stream down", func() bool { return !p.SyncStats().StreamConnected })
	f.publish(cloudPolicy("50"))
	var aCreated, dOldCreated time.Time
	f.mutate("a", "plan", func(rec *fakeRecord, ch map[string]any) {
		rec.Plan, aCreated = "pro", rec.CreatedAt
		rec.Overrides["api"] = json.RawMessage(`{"value":"70"}`)
	})
	f.commitUsage("a", "api", "req", aCreated, "30") // another instance's usage
	var grantID string
	f.mutate("b", "upsert", func(rec *fakeRecord, ch map[string]any) {
		rec.Label = "Bea"
		delete(rec.Overrides, "api")
		grantID = f.topupLocked(rec, "t20").GrantID
	})
	f.mutate("c", "delete", func(*fakeRecord, map[string]any) {})
	f.mutate("d", "delete", func(rec *fakeRecord, _ map[string]any) { dOldCreated = rec.CreatedAt })
	dNew := f.addCustomer("d", "free") // created again: another customer under the id
	f.set(func() { dNew.CreatedAt = dNew.CreatedAt.Add(time.Second) })
	f.expireFeed()
	var cursor int64
	f.get(func() { cursor = f.nextID })
	f.set(func() { f.streamStatus = 0 })

	eventually(t, "resynced", func() bool { return logs.count("resynchronised") == 1 })
	eventually(t, "committed totals re-read", func() bool {
		a, err := p.Customer(ctx, "a")
		if err != nil || p.VersionNumber() != 2 {
			return false
		}
		return a.Plan == "pro" && a.Overrides["api"].Value == "70" && a.Meters["api"].Value == 32
	})
	if l, _ := p.Limit(ctx, "a", "api"); l != 70 {
		t.Fatalf("a's limit %v", l)
	}
	b, err := p.Customer(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := b.Grants[grantID]; !ok || b.Label != "Bea" || len(b.Overrides) != 0 {
		t.Fatalf("b after the reset: %+v", b)
	}
	if l, _ := p.Limit(ctx, "b", "api"); l != 70 { // version 2's 50, no override, and the topup's 20
		t.Fatalf("b's limit %v", l)
	}
	if held := heldIDs(t, p); !slices.Equal(held, []string{"a", "b"}) {
		t.Fatalf("held after the reset: %v; c (deleted) and d (created again) must be gone", held)
	}
	// The new d is hydrated on first touch, without the old one's usage.
	d, err := p.Customer(ctx, "d")
	if err != nil || !d.Created.Equal(dNew.CreatedAt) || d.Meters["api"].Value != 0 {
		t.Fatalf("d: %+v %v", d, err)
	}
	if _, err := p.Customer(ctx, "c"); !errors.Is(err, limitr.ErrUnknownCustomer) {
		t.Fatalf("c: %v", err)
	}

	// The stream goes on from the reset's cursor: a later change arrives.
	f.mutate("b", "upsert", func(rec *fakeRecord, _ map[string]any) { rec.Label = "Bo" })
	eventually(t, "a change after the reset", func() bool { c, _ := p.Customer(ctx, "b"); return c.Label == "Bo" })
	f.dropStreams()
	eventually(t, "reconnected", func() bool {
		n := 0
		f.get(func() { n = f.streamConns })
		return n >= 3
	})
	f.get(func() {
		if f.resets != 1 {
			t.Errorf("%d resets", f.resets)
		}
		if last, _ := strconv.ParseInt(f.lastEventIDs[len(f.lastEventIDs)-1], 10, 64); last < cursor {
			t.Errorf("resumed from %d, before the reset's cursor %d", last, cursor)
		}
	})

	closeNow(t, p)
	if dl, g, e := sentFor(f, "c"); dl+g+e != 0 {
		t.Fatalf("usage of deleted c sent: %d deltas", dl)
	}
	f.get(func() {
		for _, bt := range f.committed {
			for _, dl := range bt.Deltas {
				if dl.Customer == "d" && dl.CustomerCreatedAt != nil && dl.CustomerCreatedAt.Equal(dOldCreated) {
					t.Errorf("usage of the deleted d sent: %+v", dl)
				}
			}
		}
	})
	if got := f.units("a", "api"); got != 32 {
		t.Fatalf("server has %v for a", got)
	}
}

// A reset the SDK cannot complete (the customers cannot be read) is not skipped: the
// stream reconnects from the old position, gets the reset again, and resyncs once the
// server answers.
func TestCloudStreamResetIsRetriedUntilComplete(t *testing.T) {
	f := newFakeCP(t, cloudPolicy("10"))
	p := connect(t, f, limitr.WithRetryTiming(5*time.Millisecond, 20*time.Millisecond))
	ctx := context.Background()
	if _, err := p.CreateCustomer(ctx, "a", ""); err != nil {
		t.Fatal(err)
	}
	eventually(t, "stream up", func() bool { return p.SyncStats().StreamConnected })
	f.set(func() { f.streamStatus = 503 })
	f.dropStreams()
	eventually(t, "stream down", func() bool { return !p.SyncStats().StreamConnected })
	f.mutate("a", "plan", func(rec *fakeRecord, ch map[string]any) { rec.Plan = "pro" })
	f.expireFeed()
	f.set(func() { f.streamStatus, f.stateDown = 0, true })
	eventually(t, "resets repeated", func() bool {
		n := 0
		f.get(func() { n = f.resets })
		return n >= 3
	})
	if c, _ := p.Customer(ctx, "a"); c.Plan != "free" {
		t.Fatalf("plan %s with the state unreadable", c.Plan)
	}
	f.set(func() { f.stateDown = false })
	eventually(t, "resynced", func() bool { c, _ := p.Customer(ctx, "a"); return c.Plan == "pro" })
}

// missWhileDown makes changes this instance does not hear of: its stream is cut while
// change runs, and the feed's retention drops the changes' events before it is back.
func missWhileDown(t *testing.T, f *fakeCP, p *limitr.Policy, change func()) {
	t.Helper()
	eventually(t, "stream up", func() bool { return p.SyncStats().StreamConnected })
	f.set(func() { f.streamStatus = 503 })
	f.dropStreams()
	eventually(t, "stream down", func() bool { return !p.SyncStats().StreamConnected })
	change()
	f.expireFeed()
	f.set(func() { f.streamStatus = 0 })
}

// A topup drained here and removed (it does not reset) is not granted again by a
// resync, whether its draws are committed yet or not.
func TestCloudStreamResetDoesNotRestoreADrainedTopup(t *testing.T) {
	f := newFakeCP(t, cloudPolicy("10"))
	logs := &logCapture{}
	opts := []limitr.CloudOption{limitr.WithFlushInterval(time.Hour), limitr.WithRetryTiming(5*time.Millisecond, 20*time.Millisecond),
		limitr.WithLogger(slog.New(logs))}
	p := connect(t, f, opts...)
	ctx := context.Background()
	if _, err := p.CreateCustomer(ctx, "g", ""); err != nil {
		t.Fatal(err)
	}
	if err := p.ApplyCustomerTopup(ctx, "g", "t20"); err != nil {
		t.Fatal(err)
	}
	mustAllow(t, p, "g", 30, true) // the limit, then all of the topup: pending, not committed
	for round, wantResets := range []int{1, 2} {
		missWhileDown(t, f, p, func() {
			f.mutate("g", "upsert", func(rec *fakeRecord, _ map[string]any) { rec.Label = "round " + strconv.Itoa(round) })
		})
		eventually(t, "resynced", func() bool { return logs.count("resynchronised") == wantResets })
		if c, _ := p.Customer(ctx, "g"); c.Label != "round "+strconv.Itoa(round) {
			t.Fatalf("round %d: not resynced: %+v", round, c)
		}
		if rc, _ := p.RemainingCredit(ctx, "g", "req"); rc != 0 {
			t.Fatalf("round %d: %v credit left of a drained topup", round, rc)
		}
		mustAllow(t, p, "g", 1, false)
		if round == 0 {
			closeNow(t, p) // the draws are committed now
			if got := f.drawn("g"); got != 20 {
				t.Fatalf("server has %v drawn", got)
			}
			p = connect(t, f, opts...)
			mustAllow(t, p, "g", 1, false) // hydrated: no credit left
		}
	}
}
