package limitr_test

import (
	"context"
	"math"
	"testing"
	"time"

	limitr "github.com/limitr/limitr/sdk/go"
)

const burnPolicy = `{"policy": {
  "credits": {"tok": {}, "abstract": {}},
  "exchange": {"abstract": {"value": 1, "currency": "rune"}, "tok": {"value": 0.001, "currency": "abstract"}},
  "plans": {"base": {"default": true,
    "entitlements": {
      "ai":     {"limit": {"credit": "tok", "value": 10000, "resets": true, "reset_inc": "1day"}},
      "smooth": {"limit": {"credit": "tok", "value": 10000, "ewma_alpha": 0.5}},
      "zero":   {"limit": {"credit": "tok", "value": 0}},
      "watch":  {"limit": {"credit": "tok", "mode": "observe"}},
      "gate":   {}
    },
    "topups": {"pack": {"credit": "abstract", "value": 10}}
  }}
}}`

// burnEnv returns a policy with or without an event handler: with one, calls take the
// full decision path; without, the warm fast path. Both must keep the history.
func burnEnv(t *testing.T, handler bool) (*limitr.Policy, *fakeClock) {
	t.Helper()
	clock := newClock(t0)
	p, err := limitr.New([]byte(burnPolicy), limitr.WithClock(clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	if handler {
		p.AddHandler("all", func(limitr.Event) {})
	}
	if _, err := p.CreateCustomer(context.Background(), "c", ""); err != nil {
		t.Fatal(err)
	}
	return p, clock
}

func near(got, want float64) bool { return math.Abs(got-want) <= 1e-6*math.Max(1, math.Abs(want)) }

// Spec §6 (rate, acceleration, projected_exhaustion) from the meter's last three
// calls; Limitr's governor and burndown tests (1k, 2k, 3k).
func TestBurnRateReads(t *testing.T) {
	for _, handler := range []bool{false, true} {
		p, clock := burnEnv(t, handler)
		ctx := context.Background()
		rate := func() float64 {
			v, err := p.Rate(ctx, "c", "ai")
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
		accel := func() float64 {
			v, err := p.Acceleration(ctx, "c", "ai")
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
		exhaust := func(opts ...limitr.ReadOption) time.Time {
			v, err := p.ProjectedExhaustion(ctx, "c", "ai", opts...)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
		allow := func(n float64) {
			if ok, err := p.Allow(ctx, "c", "ai", n); err != nil || !ok {
				t.Fatalf("Allow(%v) = %v, %v", n, ok, err)
			}
		}
		if rate() != 0 || accel() != 0 || !exhaust().IsZero() {
			t.Fatalf("handler=%v: reads before any call: %v %v %v", handler, rate(), accel(), exhaust())
		}
		allow(1000)
		if rate() != 0 || !exhaust().IsZero() {
			t.Errorf("handler=%v: one call has no rate: %v %v", handler, rate(), exhaust())
		}
		clock.Advance(100 * time.Millisecond)
		allow(2000) // 2000 over 100 ms
		if got := rate(); !near(got, 20) {
			t.Errorf("handler=%v: rate after 2 calls = %v, want 20 units/ms", handler, got)
		}
		if accel() != 0 {
			t.Errorf("handler=%v: acceleration needs three calls: %v", handler, accel())
		}
		clock.Advance(200 * time.Millisecond)
		allow(3000) // 3000 over 200 ms: 15/ms, down from 20/ms over 200 ms
		if got := rate(); !near(got, 15) {
			t.Errorf("handler=%v: rate = %v, want 15", handler, got)
		}
		if got := accel(); !near(got, -0.025) {
			t.Errorf("handler=%v: acceleration = %v, want (15-20)/200 = -0.025", handler, got)
		}
		// 4000 left at 15/ms: 266.67 ms from now.
		if got, want := exhaust(), clock.Now().Add(266666667*time.Nanosecond); got.Sub(want).Abs() > time.Millisecond {
			t.Errorf("handler=%v: projected exhaustion %v, want %v", handler, got, want)
		}
		// The smoothed rate (alpha 0.2) was seeded with 20, then 0.2·15 + 0.8·20 = 19.
		if got, want := exhaust(limitr.Smoothed()), clock.Now().Add(210526316*time.Nanosecond); got.Sub(want).Abs() > time.Millisecond {
			t.Errorf("handler=%v: smoothed projection %v, want %v", handler, got, want)
		}

		// A fourth call drops the oldest; calls in the same millisecond add up.
		clock.Advance(50 * time.Millisecond)
		allow(100)
		allow(400)
		if got := rate(); !near(got, 10) {
			t.Errorf("handler=%v: rate with two calls in one millisecond = %v, want 500/50 = 10", handler, got)
		}
		// A denied call (over the hard limit) changes nothing, history included.
		if ok, _ := p.Allow(ctx, "c", "ai", 1e6); ok {
			t.Fatal("call past the hard limit allowed")
		}
		if got := rate(); !near(got, 10) {
			t.Errorf("handler=%v: a denied call moved the rate: %v", handler, got)
		}
		// Check never records.
		clock.Advance(time.Millisecond)
		if _, err := p.Check(ctx, "c", "ai", 5); err != nil {
			t.Fatal(err)
		}
		if got := rate(); !near(got, 10) {
			t.Errorf("handler=%v: Check moved the rate: %v", handler, got)
		}
		// A decrement is a negative rate: the limit is never reached.
		allow(-500)
		if rate() >= 0 || !exhaust().IsZero() {
			t.Errorf("handler=%v: after a decrement: rate %v, exhaustion %v", handler, rate(), exhaust())
		}
		// A new period has no history yet (the reset is pending until the next call).
		clock.Advance(24 * time.Hour)
		if rate() != 0 || accel() != 0 || !exhaust().IsZero() {
			t.Errorf("handler=%v: reads after the period ended: %v %v %v", handler, rate(), accel(), exhaust())
		}
		allow(10)
		clock.Advance(10 * time.Millisecond)
		allow(10)
		if got := rate(); !near(got, 1) {
			t.Errorf("handler=%v: first rate of the new period = %v, want 1", handler, got)
		}
	}
}

// Rate reads of things that have none, and errors.
func TestBurnRateEdges(t *testing.T) {
	p, clock := burnEnv(t, false)
	ctx := context.Background()
	for _, ent := range []string{"gate", "watch"} {
		if r, err := p.Rate(ctx, "c", ent); err != nil || r != 0 {
			t.Errorf("Rate(%s) = %v, %v", ent, r, err)
		}
		if at, err := p.ProjectedExhaustion(ctx, "c", ent); err != nil || !at.IsZero() {
			t.Errorf("ProjectedExhaustion(%s) = %v, %v", ent, at, err)
		}
	}
	// An observe meter has a rate but no limit to reach.
	_, _ = p.Allow(ctx, "c", "watch", 5)
	clock.Advance(time.Second)
	_, _ = p.Allow(ctx, "c", "watch", 5)
	if r, _ := p.Rate(ctx, "c", "watch"); !near(r, 0.005) {
		t.Errorf("observe rate = %v, want 0.005", r)
	}
	if at, _ := p.ProjectedExhaustion(ctx, "c", "watch"); !at.IsZero() {
		t.Errorf("observe limit projected to run out at %v", at)
	}
	if _, err := p.Rate(ctx, "nobody", "ai"); err == nil {
		t.Error("Rate of an unknown customer: no error")
	}
	if _, err := p.ProjectedExhaustion(ctx, "c", "nope"); err == nil {
		t.Error("ProjectedExhaustion of an unknown entitlement: no error")
	}
}

// Limitr's reads take grants=false to report the plan limit alone (burndown.stof:
// limit(..., false) is 0 on a zero limit a topup extends; value(percent, grants=false)
// is clamped at 100).
func TestReadsWithoutGrants(t *testing.T) {
	p, clock := burnEnv(t, false)
	ctx := context.Background()
	if err := p.ApplyCustomerTopup(ctx, "c", "pack"); err != nil {
		t.Fatal(err)
	}
	// 10 abstract = 10,000 tok past the zero limit.
	type read func(context.Context, string, string, ...limitr.ReadOption) (float64, error)
	cases := []struct {
		name            string
		f               read
		grants, without float64
	}{
		{"Limit", p.Limit, 10000, 0},
		{"Remaining", p.Remaining, 10000, 0},
		{"RemainingPercent", p.RemainingPercent, 100, 0},
		{"ValuePercent", p.ValuePercent, 0, 100},
	}
	for _, c := range cases {
		if got, err := c.f(ctx, "c", "zero"); err != nil || !near(got, c.grants) {
			t.Errorf("%s = %v, %v; want %v", c.name, got, err, c.grants)
		}
		if got, err := c.f(ctx, "c", "zero", limitr.WithoutGrants()); err != nil || !near(got, c.without) {
			t.Errorf("%s(WithoutGrants) = %v, %v; want %v", c.name, got, err, c.without)
		}
	}
	if ok, _ := p.Allow(ctx, "c", "zero", 2500); !ok {
		t.Fatal("grant-covered call denied")
	}
	// Remaining and value percentages add up to 100 (burndown.stof).
	rp, _ := p.RemainingPercent(ctx, "c", "zero")
	vp, _ := p.ValuePercent(ctx, "c", "zero")
	if !near(rp, 75) || !near(rp+vp, 100) {
		t.Errorf("RemainingPercent %v + ValuePercent %v, want 75 + 25", rp, vp)
	}
	if vp, _ := p.ValuePercent(ctx, "c", "zero", limitr.WithoutGrants()); vp != 100 {
		t.Errorf("ValuePercent without grants past a zero limit = %v, want 100", vp)
	}
	if r, _ := p.Remaining(ctx, "c", "zero", limitr.WithoutGrants()); r != -2500 {
		t.Errorf("Remaining without grants = %v, want -2500", r)
	}
	// The projection counts the grants unless told not to.
	clock.Advance(100 * time.Millisecond)
	_, _ = p.Allow(ctx, "c", "zero", 500) // 5/ms; 7000 of grants left
	with, _ := p.ProjectedExhaustion(ctx, "c", "zero")
	if want := clock.Now().Add(1400 * time.Millisecond); with.Sub(want).Abs() > time.Millisecond {
		t.Errorf("projection with grants %v, want %v", with, want)
	}
	if without, _ := p.ProjectedExhaustion(ctx, "c", "zero", limitr.WithoutGrants()); !without.IsZero() {
		t.Errorf("projection without grants past the limit = %v, want never (zero time)", without)
	}
}
