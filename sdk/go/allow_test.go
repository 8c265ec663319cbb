package limitr_test

import (
	"math/rand"
	"testing"
	"time"

	limitr "github.com/limitr/limitr/sdk/go"
)

type step struct {
	amt     float64
	want    bool
	wantVal float64
}

// §5 step 14 / §5.1 / §5.2: sequences of calls on one entitlement and the meter after each.
func TestAllowSequences(t *testing.T) {
	cases := []struct {
		name, ent string
		steps     []step
	}{
		// §5 step 14: hard limit is inclusive; a denial meters nothing.
		{"hard within at over", "api", []step{{4, true, 4}, {6, true, 10}, {1, false, 10}, {0, true, 10}}},
		// §5.1: a single call over the limit is denied outright.
		{"hard single call over", "api", []step{{11, false, 0}, {10, true, 10}}},
		// DESIGN difference 1: exact decimals, ten 0.1s fit a limit of 1.
		{"exact decimals", "one", []step{
			{0.1, true, 0.1}, {0.1, true, 0.2}, {0.1, true, 0.3}, {0.1, true, 0.4}, {0.1, true, 0.5},
			{0.1, true, 0.6}, {0.1, true, 0.7}, {0.1, true, 0.8}, {0.1, true, 0.9}, {0.1, true, 1}, {0.1, false, 1}}},
		// §5.1: soft limits meter past the limit.
		{"soft overage", "soft", []step{{8, true, 8}, {5, true, 13}, {100, true, 113}}},
		// §5.1: observe never denies.
		{"observe", "obs", []step{{4, true, 4}, {100, true, 104}, {1000, true, 1104}}},
		// §5 step 14 / §5.1: hard_trailing lets one call cross, then denies.
		{"hard trailing", "trail", []step{{4, true, 4}, {3, true, 7}, {1, false, 7}, {-3, true, 4}, {10, true, 14}, {1, false, 14}}},
		// §5 step 6 / §5.2: minimum clamps a decrement, and the call is still allowed.
		{"minimum clamp", "floor", []step{{3, true, 3}, {-5, true, 0}, {-1, true, 0}, {2, true, 2}}},
		// §5.2: negative amounts are never denied, and without minimum the meter goes negative.
		{"negative never denied", "api", []step{{10, true, 10}, {-3, true, 7}, {-20, true, -13}, {23, true, 10}, {1, false, 10}}},
		// §5.2: a decrement on a meter over a soft limit is allowed.
		{"soft decrement over limit", "soft", []step{{15, true, 15}, {-2, true, 13}}},
		// §3: 'int' credits truncate each call toward zero.
		{"int truncation", "tokens", []step{{1.7, true, 1}, {-1.7, true, 0}, {0.9, true, 0}, {2.5, true, 2}, {-0.5, true, 2}}},
		// §5 step 14 with a zero limit: any positive call is denied, zero is a no-op.
		{"zero limit", "zero", []step{{1, false, 0}, {0, true, 0}, {-1, true, -1}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, basePolicy)
			e.customer("u", "free")
			for i, s := range tc.steps {
				got := e.allow("u", tc.ent, s.amt)
				if got != s.want {
					t.Errorf("step %d: Allow(%v) = %v, want %v", i, s.amt, got, s.want)
				}
				if v := e.value("u", tc.ent); !approx(v, s.wantVal) {
					t.Errorf("step %d: Value after Allow(%v) = %v, want %v", i, s.amt, v, s.wantVal)
				}
			}
		})
	}
}

// §5 step 16 / DESIGN difference 2: a denied call changes no state at all.
func TestDeniedCallChangesNothing(t *testing.T) {
	cases := []struct {
		name, ent  string
		fill, call float64
	}{
		{"hard over", "api", 8, 5},                 // §5.1 hard
		{"hard at limit", "api", 10, 1},            // §5.1 hard, meter full
		{"trailing after crossing", "trail", 6, 1}, // §5 step 14 hard_trailing
		{"zero limit", "zero", 0, 1},
		{"int credit", "tokens", 100, 1.9},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, basePolicy)
			e.customer("u", "free")
			if tc.fill != 0 {
				if tc.ent == "trail" {
					e.allow("u", tc.ent, 4)
					e.allow("u", tc.ent, tc.fill-4)
				} else if !e.allow("u", tc.ent, tc.fill) {
					t.Fatalf("fill denied")
				}
			}
			before := e.snapshotJSON("u")
			e.clock.Advance(1) // time moves, but nothing resets on these limits
			if e.allow("u", tc.ent, tc.call) {
				t.Fatalf("Allow(%v) allowed, want denied", tc.call)
			}
			if after := e.snapshotJSON("u"); after != before {
				t.Errorf("denied call changed the customer:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

// §5 step 5 / DESIGN difference 2: the one change a denied call may make is a due reset.
func TestDeniedCallOnlyAppliesDueReset(t *testing.T) {
	e := newEnv(t, basePolicy)
	e.customer("u", "free")
	e.allow("u", "daily", 5)
	e.clock.Advance(36 * time.Hour)
	e.rec.reset()
	if e.allow("u", "daily", 6) {
		t.Fatal("Allow(6) on a limit of 5 allowed")
	}
	if got := e.rec.meterTypes(); !eqStrings(got, []string{limitr.EventMeterReset, limitr.EventMeterLimit}) {
		t.Errorf("events = %v, want [meter-reset meter-limit]", got)
	}
	if v := e.value("u", "daily"); v != 0 {
		t.Errorf("Value after denied first call of a new period = %v, want 0", v)
	}
	// §10: the denied call already zeroed the meter, so the next call does not reset again.
	e.rec.reset()
	if !e.allow("u", "daily", 1) {
		t.Fatal("Allow(1) denied in a fresh period")
	}
	if got := e.rec.meterTypes(); !eqStrings(got, []string{limitr.EventMeterChanged}) {
		t.Errorf("events after the reset was applied = %v, want [meter-changed]", got)
	}
}

// §5 (feature flags): a gate allows when entitled, never steps, checks true and has no limit.
func TestFeatureGate(t *testing.T) {
	e := newEnv(t, basePolicy)
	e.customer("u", "free")
	e.rec.reset()
	cases := []struct {
		name string
		call func() (bool, error)
		want bool
	}{
		{"allow", func() (bool, error) { return e.p.Allow(e.ctx, "u", "gate", 1) }, true},
		{"allow zero", func() (bool, error) { return e.p.Allow(e.ctx, "u", "gate", 0) }, true},
		{"check", func() (bool, error) { return e.p.Check(e.ctx, "u", "gate", 1) }, true},
		{"increment", func() (bool, error) { return e.p.Increment(e.ctx, "u", "gate") }, false},
		{"decrement", func() (bool, error) { return e.p.Decrement(e.ctx, "u", "gate") }, false},
		// §5.3: an entitlement not on the caller's plan is false (DESIGN difference 7).
		{"not on plan", func() (bool, error) { return e.p.Allow(e.ctx, "u", "pro_only", 1) }, false},
		{"check not on plan", func() (bool, error) { return e.p.Check(e.ctx, "u", "pro_only", 1) }, false},
	}
	for _, tc := range cases {
		got, err := tc.call()
		if err != nil || got != tc.want {
			t.Errorf("%s: got (%v, %v), want (%v, nil)", tc.name, got, err, tc.want)
		}
	}
	if evs := e.rec.meterTypes(); len(evs) != 0 {
		t.Errorf("gate calls emitted meter events %v", evs)
	}
	_, err := e.p.Remaining(e.ctx, "u", "gate")
	wantErr(t, "Remaining(gate)", err, limitr.ErrNoLimit)
	_, err = e.p.Limit(e.ctx, "u", "gate")
	wantErr(t, "Limit(gate)", err, limitr.ErrNoLimit)
}

// §5.3 / DESIGN difference 7: unknown things are errors, not-entitled is false.
func TestUnknownThings(t *testing.T) {
	e := newEnv(t, basePolicy)
	e.customer("u", "free")
	ok, err := e.p.Allow(e.ctx, "nobody", "api", 1)
	if ok {
		t.Error("unknown customer allowed")
	}
	wantErr(t, "Allow unknown customer", err, limitr.ErrUnknownCustomer)
	ok, err = e.p.Allow(e.ctx, "u", "apii", 1)
	if ok {
		t.Error("unknown entitlement allowed")
	}
	wantErr(t, "Allow unknown entitlement", err, limitr.ErrUnknownEntitlement)
	_, err = e.p.Check(e.ctx, "nobody", "api", 1)
	wantErr(t, "Check unknown customer", err, limitr.ErrUnknownCustomer)
	_, err = e.p.Value(e.ctx, "nobody", "api")
	wantErr(t, "Value unknown customer", err, limitr.ErrUnknownCustomer)
	_, err = e.p.Value(e.ctx, "u", "apii")
	wantErr(t, "Value unknown entitlement", err, limitr.ErrUnknownEntitlement)
	_, err = e.p.Value(e.ctx, "u", "pro_only")
	wantErr(t, "Value not entitled", err, limitr.ErrNotEntitled)
	_, err = e.p.Remaining(e.ctx, "u", "pro_only")
	wantErr(t, "Remaining not entitled", err, limitr.ErrNotEntitled)
	_, err = e.p.Limit(e.ctx, "u", "pro_only")
	wantErr(t, "Limit not entitled", err, limitr.ErrNotEntitled)
}

// §5.5: Increment/Decrement step by the limit's increment (default 1).
func TestIncrementDecrement(t *testing.T) {
	e := newEnv(t, basePolicy)
	e.customer("u", "free")
	type op struct {
		inc     bool
		want    bool
		wantVal float64
	}
	cases := []struct {
		ent string
		ops []op
	}{
		{"step", []op{{true, true, 3}, {true, true, 6}, {true, true, 9}, {true, false, 9}, {false, true, 6}, {true, true, 9}}},
		{"api", []op{{true, true, 1}, {true, true, 2}, {false, true, 1}, {false, true, 0}, {false, true, -1}}},
		// §5.2 + minimum: decrement at the floor clamps and still returns true.
		{"floor", []op{{false, true, 0}, {true, true, 1}}},
	}
	for _, tc := range cases {
		for i, o := range tc.ops {
			var got bool
			var err error
			if o.inc {
				got, err = e.p.Increment(e.ctx, "u", tc.ent)
			} else {
				got, err = e.p.Decrement(e.ctx, "u", tc.ent)
			}
			if err != nil || got != o.want {
				t.Errorf("%s op %d: got (%v, %v), want %v", tc.ent, i, got, err, o.want)
			}
			if v := e.value("u", tc.ent); v != o.wantVal {
				t.Errorf("%s op %d: value %v, want %v", tc.ent, i, v, o.wantVal)
			}
		}
	}
}

// §16 set = allow(value − current).
func TestSet(t *testing.T) {
	e := newEnv(t, basePolicy)
	e.customer("u", "free")
	steps := []struct {
		to      float64
		want    bool
		wantVal float64
	}{{7, true, 7}, {2, true, 2}, {11, false, 2}, {10, true, 10}, {0, true, 0}, {-4, true, -4}}
	for i, s := range steps {
		got, err := e.p.Set(e.ctx, "u", "api", s.to)
		if err != nil || got != s.want {
			t.Errorf("step %d: Set(%v) = (%v, %v), want %v", i, s.to, got, err, s.want)
		}
		if v := e.value("u", "api"); v != s.wantVal {
			t.Errorf("step %d: value %v, want %v", i, v, s.wantVal)
		}
	}
}

// §5 step 4 / §5.8: overhead is recorded on the meter, from the credit's rate or explicitly.
func TestOverheadRecorded(t *testing.T) {
	e := newEnv(t, basePolicy)
	e.customer("u", "free")
	e.allow("u", "soft", 4)                            // 4 × 0.5 = 2 runes
	e.allow("u", "soft", 2, limitr.WithOverhead(1.25)) // explicit
	e.rec.reset()
	e.allow("u", "soft", 0, limitr.WithOverhead(0.75)) // §5.8: zero units, overhead only
	c, err := e.p.Customer(e.ctx, "u")
	if err != nil {
		t.Fatal(err)
	}
	m := c.Meters["soft"]
	if m.Value != 6 || !approx(m.Overhead, 4) {
		t.Errorf("meter = {value %v, overhead %v}, want {6, 4}", m.Value, m.Overhead)
	}
	if got := e.rec.meterTypes(); !eqStrings(got, []string{limitr.EventMeterChanged}) {
		t.Errorf("overhead-only call events = %v, want [meter-changed] (§5.8)", got)
	}
}

// §5.6: WithoutEvents suppresses events but the state still changes.
func TestWithoutEvents(t *testing.T) {
	e := newEnv(t, basePolicy)
	e.customer("u", "free")
	e.rec.reset()
	if !e.allow("u", "api", 3, limitr.WithoutEvents()) {
		t.Fatal("denied")
	}
	e.allow("u", "api", 30, limitr.WithoutEvents())
	e.allow("u", "soft", 30, limitr.WithoutEvents())
	if evs := e.rec.all(); len(evs) != 0 {
		t.Errorf("events delivered despite WithoutEvents: %v", e.rec.types())
	}
	if v := e.value("u", "api"); v != 3 {
		t.Errorf("value %v, want 3", v)
	}
}

// DESIGN "one decision path" / §5.4: Check answers what the next Allow does, in every state.
func TestCheckMatchesAllowProperty(t *testing.T) {
	ents := []string{"api", "soft", "softd", "obs", "trail", "floor", "tokens", "step", "daily", "monthly", "zero", "one", "gate"}
	rng := rand.New(rand.NewSource(42))
	e := newEnv(t, basePolicy)
	e.customer("u", "free")
	for i := 0; i < 4000; i++ {
		ent := ents[rng.Intn(len(ents))]
		amt := float64(rng.Intn(80)-20) / 4 // -5 .. 14.75 in quarters
		if rng.Intn(10) == 0 {
			e.clock.Advance(time.Duration(rng.Intn(48)) * time.Hour)
		}
		before := e.snapshotJSON("u")
		chk, err := e.p.Check(e.ctx, "u", ent, amt)
		if err != nil {
			t.Fatalf("Check: %v", err)
		}
		if after := e.snapshotJSON("u"); after != before {
			t.Fatalf("iteration %d: Check(%s, %v) changed state", i, ent, amt)
		}
		got := e.allow("u", ent, amt)
		if chk != got {
			t.Fatalf("iteration %d: Check(%s, %v) = %v but Allow = %v", i, ent, amt, chk, got)
		}
	}
}
