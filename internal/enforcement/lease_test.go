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

const leasePolicy = `{"policy": {
  "credits": {"req": {}},
  "plans": {"p": {"default": true, "entitlements": {
    "hard":    {"limit": {"credit": "req", "value": 100, "resets": true, "reset_inc": "1day"}},
    "bounded": {"limit": {"credit": "req", "value": 100, "fleet_mode": "bounded"}},
    "soft":    {"limit": {"credit": "req", "mode": "soft", "value": 100}}
  }}}}}`

type leaseEnv struct {
	t   *testing.T
	e   *Engine
	now *time.Time
	low []LeaseKey
}

func newLeaseEnv(t *testing.T, withHandler bool) *leaseEnv {
	t.Helper()
	p, err := policies.Load([]byte(leasePolicy), doctree.FormatJSON)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	env := &leaseEnv{t: t, now: &now}
	env.e, err = New(p, WithClock(func() time.Time { return *env.now }), WithUsageRecording(),
		WithLeases(LeaseOptions{Exact: true, Low: func(k LeaseKey) { env.low = append(env.low, k) }}))
	if err != nil {
		t.Fatal(err)
	}
	if withHandler {
		env.e.AddHandler("all", func(Event) {}) // sends calls down the full decision path
	}
	if _, err := env.e.CreateCustomer(context.Background(), CustomerSpec{ID: "c"}); err != nil {
		t.Fatal(err)
	}
	return env
}

func (l *leaseEnv) allow(ent string, n int64) (bool, error) {
	return l.e.Allow(context.Background(), Call{Customer: "c", Entitlement: ent, Amount: num.FromInt(n)})
}

func (l *leaseEnv) grant(ent string, granted, need int64) {
	l.t.Helper()
	ask, ok, err := l.e.LeaseAsk(context.Background(), LeaseKey{Customer: "c", Entitlement: ent}, num.FromInt(need), time.Second)
	if err != nil || !ok {
		l.t.Fatalf("LeaseAsk: %v %v", ok, err)
	}
	if err := l.e.ApplyLease(context.Background(), LeaseGrant{Owner: ask.Owner, Entitlement: ent, PeriodStart: ask.PeriodStart,
		Granted: num.FromInt(granted), Expires: l.now.Add(10 * time.Second), Need: num.FromInt(need), Recheck: 100 * time.Millisecond}); err != nil {
		l.t.Fatal(err)
	}
}

// A hard limit kept with leases allows a call only inside the allowance granted to this
// instance; without room the call asks (ErrLeaseNeeded) and changes nothing.
func TestLeaseGatesHardLimit(t *testing.T) {
	for _, handler := range []bool{false, true} {
		l := newLeaseEnv(t, handler)
		if ok, err := l.allow("hard", 5); ok || !errors.Is(err, ErrLeaseNeeded) {
			t.Fatalf("handler=%v: without a lease: %v, %v", handler, ok, err)
		}
		if _, err := l.e.Check(context.Background(), Call{Customer: "c", Entitlement: "hard", Amount: num.FromInt(5)}); !errors.Is(err, ErrLeaseNeeded) {
			t.Errorf("handler=%v: Check without a lease: %v", handler, err)
		}
		if v, _ := l.e.Value(context.Background(), "c", "hard"); !v.IsZero() {
			t.Fatalf("a call that asked for a lease moved the meter to %v", v)
		}
		ask, _, _ := l.e.LeaseAsk(context.Background(), LeaseKey{Customer: "c", Entitlement: "hard"}, num.FromInt(5), time.Second)
		if !ask.Used.IsZero() || ask.Target.Cmp(num.FromInt(5)) != 0 || ask.Limit.Cmp(num.FromInt(100)) != 0 {
			t.Errorf("handler=%v: first ask %+v", handler, ask)
		}
		l.grant("hard", 10, 5)
		for _, n := range []int64{4, 6} {
			if ok, err := l.allow("hard", n); !ok || err != nil {
				t.Fatalf("handler=%v: %d inside the lease: %v, %v", handler, n, ok, err)
			}
		}
		if len(l.low) != 1 {
			t.Errorf("handler=%v: low-water calls %v, want one", handler, l.low)
		}
		if ok, err := l.allow("hard", 1); ok || !errors.Is(err, ErrLeaseNeeded) {
			t.Fatalf("handler=%v: past the lease: %v, %v", handler, ok, err)
		}
		ask, _, _ = l.e.LeaseAsk(context.Background(), LeaseKey{Customer: "c", Entitlement: "hard"}, num.FromInt(1), time.Second)
		if ask.Used.Cmp(num.FromInt(10)) != 0 {
			t.Errorf("handler=%v: ask after 10 used: %+v", handler, ask)
		}
		// The fleet had nothing more: the call is denied, and so are the next ones until
		// the recheck, without asking.
		l.grant("hard", 10, 1)
		if ok, err := l.allow("hard", 1); ok || err != nil {
			t.Errorf("handler=%v: the fleet's limit reached: %v, %v", handler, ok, err)
		}
		*l.now = l.now.Add(150 * time.Millisecond)
		if _, err := l.allow("hard", 1); !errors.Is(err, ErrLeaseNeeded) {
			t.Errorf("handler=%v: after the recheck: %v", handler, err)
		}
		l.grant("hard", 30, 1)
		if ok, err := l.allow("hard", 20); !ok || err != nil {
			t.Errorf("handler=%v: more granted: %v, %v", handler, ok, err)
		}
		// Decrements need no lease and give room back.
		if ok, err := l.allow("hard", -5); !ok || err != nil {
			t.Errorf("handler=%v: decrement: %v, %v", handler, ok, err)
		}
		if ok, err := l.allow("hard", 5); !ok || err != nil {
			t.Errorf("handler=%v: the room a decrement gave back: %v, %v", handler, ok, err)
		}
		// A lease not renewed in time is void.
		*l.now = l.now.Add(11 * time.Second)
		if _, err := l.allow("hard", 1); !errors.Is(err, ErrLeaseNeeded) {
			t.Errorf("handler=%v: expired lease: %v", handler, err)
		}
		// A new period needs a new lease; its ask starts from nothing used.
		l.grant("hard", 40, 1)
		*l.now = l.now.Add(24 * time.Hour)
		if _, err := l.allow("hard", 1); !errors.Is(err, ErrLeaseNeeded) {
			t.Errorf("handler=%v: new period: %v", handler, err)
		}
		if ask, _, _ := l.e.LeaseAsk(context.Background(), LeaseKey{Customer: "c", Entitlement: "hard"}, num.One, time.Second); !ask.Used.IsZero() || !ask.PeriodStart.After(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)) {
			t.Errorf("handler=%v: ask in the new period %+v", handler, ask)
		}
	}
}

// Soft limits and hard limits with fleet_mode: bounded decide locally, as before.
func TestLeaseOnlyForExactHardLimits(t *testing.T) {
	l := newLeaseEnv(t, false)
	for _, ent := range []string{"bounded", "soft"} {
		if ok, err := l.allow(ent, 50); !ok || err != nil {
			t.Errorf("%s: %v, %v", ent, ok, err)
		}
		if _, ok, _ := l.e.LeaseAsk(context.Background(), LeaseKey{Customer: "c", Entitlement: ent}, num.One, time.Second); ok {
			t.Errorf("%s: asks for a lease", ent)
		}
	}
	// A hard limit's own check comes first: past the limit is denied, no lease asked.
	l.grant("hard", 100, 1)
	if ok, err := l.allow("hard", 101); ok || err != nil {
		t.Errorf("past the limit: %v, %v", ok, err)
	}
}

// Unreachable control plane: deny, or allow a bounded amount past the lease.
func TestLeaseUnreachable(t *testing.T) {
	l := newLeaseEnv(t, false)
	l.grant("hard", 10, 1)
	if ok, _ := l.allow("hard", 10); !ok {
		t.Fatal("inside the lease")
	}
	retry := l.now.Add(time.Second)
	if err := l.e.LeaseUnreachable(context.Background(), LeaseKey{Customer: "c", Entitlement: "hard"}, num.Zero, retry); err != nil {
		t.Fatal(err)
	}
	if ok, err := l.allow("hard", 1); ok || err != nil {
		t.Errorf("deny rule: %v, %v", ok, err)
	}
	*l.now = retry
	if _, err := l.allow("hard", 1); !errors.Is(err, ErrLeaseNeeded) {
		t.Errorf("after the retry time: %v", err)
	}
	if err := l.e.LeaseUnreachable(context.Background(), LeaseKey{Customer: "c", Entitlement: "hard"}, num.FromInt(3), l.now.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	for i, want := range []bool{true, true, true, false} {
		if ok, err := l.allow("hard", 1); ok != want || err != nil {
			t.Errorf("allow-bounded call %d: %v, %v; want %v", i+1, ok, err, want)
		}
	}
}

// What an instance asks for: its recent rate × the horizon, at most its share of what
// remains beyond what the control plane has committed from it; a waiting call that
// the lease's rest cannot serve stops the rest's use, so the answer may release it.
func TestLeaseAskSizing(t *testing.T) {
	l := newLeaseEnv(t, false)
	ctx := context.Background()
	ask, _, _ := l.e.LeaseAsk(ctx, LeaseKey{Customer: "c", Entitlement: "hard"}, num.FromInt(2), time.Hour)
	if ask.Target.Cmp(num.FromInt(2)) != 0 || ask.Need.Cmp(num.FromInt(2)) != 0 {
		t.Fatalf("first ask %+v: want target 2 and need 2 (no rate yet)", ask)
	}
	if err := l.e.ApplyLease(ctx, LeaseGrant{Owner: "c", Entitlement: "hard", PeriodStart: ask.PeriodStart, Granted: num.FromInt(40),
		Expires: l.now.Add(time.Minute), Remaining: num.FromInt(80), Holders: 4, Committed: num.FromInt(10)}); err != nil {
		t.Fatal(err)
	}
	for range 30 { // a steady rate: a unit a millisecond
		if ok, err := l.allow("hard", 1); !ok || err != nil {
			t.Fatalf("inside the lease: %v, %v", ok, err)
		}
		*l.now = l.now.Add(time.Millisecond)
	}
	// The rate asks for 3.6M in an hour, the limit allows 100; the share (80 / 4 = 20)
	// beyond the 10 committed caps the target at 30.
	ask, _, _ = l.e.LeaseAsk(ctx, LeaseKey{Customer: "c", Entitlement: "hard"}, num.Zero, time.Hour)
	if ask.Used.Cmp(num.FromInt(30)) != 0 || ask.Target.Cmp(num.FromInt(30)) != 0 {
		t.Errorf("renewal ask %+v: want used 30 and the target capped at committed + share = 30", ask)
	}
	if !ask.Need.IsZero() {
		t.Errorf("a renewal has no need: %+v", ask)
	}
	// 10 left; a call needing 15 asks with its need, and the rest is no longer used.
	ask, _, _ = l.e.LeaseAsk(ctx, LeaseKey{Customer: "c", Entitlement: "hard"}, num.FromInt(15), time.Hour)
	if ask.Need.Cmp(num.FromInt(15)) != 0 || ask.Target.Cmp(num.FromInt(45)) != 0 {
		t.Errorf("ask for a waiting call %+v: want need 15, target used + need = 45", ask)
	}
	if _, err := l.allow("hard", 1); !errors.Is(err, ErrLeaseNeeded) {
		t.Errorf("the rest was used after it was offered back: %v", err)
	}
}
