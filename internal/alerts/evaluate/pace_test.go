package evaluate

import (
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/limitr/limitr/internal/aggregate"
)

func TestPacerSpacesEachCustomer(t *testing.T) {
	env, a, b := uuid.New(), uuid.New(), uuid.New()
	touch := func(uids ...uuid.UUID) []aggregate.Touched {
		var out []aggregate.Touched
		for _, u := range uids {
			out = append(out, aggregate.Touched{EnvironmentID: env, CustomerUID: u})
		}
		return out
	}
	p := newPacer(500 * time.Millisecond)
	t0 := time.Unix(1_700_000_000, 0)
	if _, ok := p.nextDue(t0); ok {
		t.Fatal("due with nothing waiting")
	}
	p.add(touch(a))
	if got := p.take(t0); len(got[env]) != 1 || got[env][0] != a {
		t.Fatalf("first touch not due at once: %v", got)
	}
	// a again 100 ms later waits for its turn; b, never evaluated, goes at once.
	p.add(touch(a, b))
	p.add(touch(a)) // touched twice meanwhile: evaluated once
	got := p.take(t0.Add(100 * time.Millisecond))
	if len(got[env]) != 1 || got[env][0] != b {
		t.Fatalf("at +100ms took %v, want only b", got)
	}
	if wait, ok := p.nextDue(t0.Add(100 * time.Millisecond)); !ok || wait != 400*time.Millisecond {
		t.Fatalf("next due in %v (%v), want 400ms", wait, ok)
	}
	if got := p.take(t0.Add(499 * time.Millisecond)); len(got) != 0 {
		t.Fatalf("a taken before its turn: %v", got)
	}
	if got := p.take(t0.Add(500 * time.Millisecond)); len(got[env]) != 1 || got[env][0] != a {
		t.Fatalf("a not taken at its turn: %v", got)
	}
	if _, ok := p.nextDue(t0.Add(time.Second)); ok || len(p.waiting) != 0 {
		t.Fatal("something still waits")
	}
	if got := p.take(t0.Add(2 * time.Second)); len(got) != 0 || len(p.last) != 0 {
		t.Fatalf("old entries kept: %v %d", got, len(p.last))
	}
}
