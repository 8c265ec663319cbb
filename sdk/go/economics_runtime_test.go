package limitr_test

import (
	"errors"
	"math"
	"testing"
	"time"

	limitr "github.com/limitr/limitr/sdk/go"
)

// governorPolicy: token buckets under hard limits. refill is tokens per millisecond.
const governorPolicy = `{"policy": {
  "credits": {"req": {}},
  "plans": {"p": {"default": true, "entitlements": {
    "g":  {"limit": {"credit": "req", "value": 100, "governor_enabled": true, "governor_capacity": 10, "governor_refill_rate": 0.001}},
    "g2": {"limit": {"credit": "req", "value": 12, "governor_enabled": true, "governor_capacity": 10, "governor_refill_rate": 0.001}},
    "gr": {"limit": {"credit": "req", "value": 100, "resets": true, "reset_inc": "1day",
                     "governor_enabled": true, "governor_capacity": 10, "governor_refill_rate": 0.000000001}}
  }}}
}}`

func (e *env) allowance(id, ent string) float64 {
	e.t.Helper()
	v, err := e.p.Allowance(e.ctx, id, ent)
	if err != nil {
		e.t.Fatalf("Allowance(%q, %q): %v", id, ent, err)
	}
	return v
}

// §13, §5 step 13: capacity, refill per ms, meter-governed payload, Allowance.
func TestGovernorBucket(t *testing.T) {
	e := newEnv(t, governorPolicy)
	e.customer("u", "")
	if got := e.allowance("u", "g"); got != 10 {
		t.Errorf("fresh Allowance = %v, want the full bucket 10", got)
	}
	if !e.allow("u", "g", 10) {
		t.Fatal("a full bucket denied its capacity")
	}
	e.rec.reset()
	if e.check("u", "g", 1) {
		t.Error("Check passed an empty bucket")
	}
	if e.allow("u", "g", 1) {
		t.Fatal("empty bucket allowed a call")
	}
	if got := e.rec.types(); !eqStrings(got, []string{limitr.EventMeterGoverned}) {
		t.Fatalf("events = %v, want meter-governed", got)
	}
	ev, _ := e.rec.last(limitr.EventMeterGoverned)
	m := payload(t, ev)
	if tok, _ := pf(m, "governor", "tokens"); tok != 0 {
		t.Errorf("governor.tokens = %v, want 0", tok)
	}
	if c, _ := pf(m, "governor", "capacity"); c != 10 {
		t.Errorf("governor.capacity = %v", c)
	}
	if r, _ := pf(m, "governor", "requested"); r != 1 {
		t.Errorf("governor.requested = %v", r)
	}
	if v, _ := pf(m, "meter", "value"); v != 10 {
		t.Errorf("meter.value = %v, want 10", v)
	}
	if l, _ := pf(m, "meter", "limit"); l != 100 {
		t.Errorf("meter.limit = %v, want 100", l)
	}
	if has(m, "remaining") {
		t.Error("meter-governed carries remaining")
	}
	if got := e.value("u", "g"); got != 10 {
		t.Errorf("governed call metered: %v", got)
	}
	e.clock.Advance(500 * time.Millisecond)
	if got := e.allowance("u", "g"); !closeTo(got, 0.5, 1e-12) {
		t.Errorf("Allowance after 500ms = %v, want 0.5", got)
	}
	if e.allow("u", "g", 1) {
		t.Error("0.5 tokens allowed 1")
	}
	if !e.allow("u", "g", 0.5) {
		t.Error("0.5 tokens denied 0.5")
	}
	e.clock.Advance(time.Hour)
	if got := e.allowance("u", "g"); got != 10 {
		t.Errorf("Allowance after an hour = %v, want capacity 10", got)
	}
	// Decrements never use tokens.
	if !e.allow("u", "g", -5) {
		t.Error("decrement denied")
	}
	if got := e.allowance("u", "g"); got != 10 {
		t.Errorf("Allowance after a decrement = %v, want 10", got)
	}
}

// §6 allowance = min(tokens, remaining).
func TestAllowanceBoundedByRemaining(t *testing.T) {
	e := newEnv(t, governorPolicy)
	e.customer("u", "")
	e.allow("u", "g2", 5)
	e.clock.Advance(time.Hour)
	if got := e.allowance("u", "g2"); got != 7 {
		t.Errorf("Allowance = %v, want min(10 tokens, 7 remaining)", got)
	}
	if got := e.remaining("u", "g2"); got != 7 {
		t.Errorf("Remaining = %v", got)
	}
}

// Ours (DESIGN "differ" 2): a call the hard limit denies spends no governor tokens.
func TestGovernorTokensNotSpentOnLimitDenial(t *testing.T) {
	e := newEnv(t, governorPolicy)
	e.customer("u", "")
	e.allow("u", "g2", 10)
	e.clock.Advance(10 * time.Second) // full again
	before := e.snapshotJSON("u")
	if e.allow("u", "g2", 5) {
		t.Fatal("hard limit 12 allowed 10 + 5")
	}
	if after := e.snapshotJSON("u"); after != before {
		t.Errorf("denied call changed the customer:\n%s\n%s", before, after)
	}
	e.allow("u", "g2", -10) // back to 0; decrements take no tokens
	if !e.allow("u", "g2", 10) {
		t.Error("the limit-denied call spent tokens: a full bucket refused 10")
	}
}

// §13: the bucket is full again after a period reset.
func TestGovernorResetsWithPeriod(t *testing.T) {
	e := newEnv(t, governorPolicy)
	e.customer("u", "")
	e.allow("u", "gr", 10)
	if e.allow("u", "gr", 1) {
		t.Fatal("empty bucket allowed")
	}
	e.clock.Advance(24*time.Hour + time.Second) // refill alone would give 0.0864
	if got := e.allowance("u", "gr"); got != 10 {
		t.Errorf("Allowance with a due reset = %v, want 10 (full bucket)", got)
	}
	if !e.check("u", "gr", 10) {
		t.Error("Check with a due reset refused a full bucket")
	}
	if !e.allow("u", "gr", 10) {
		t.Error("bucket not full after the period reset")
	}
	if got := e.value("u", "gr"); got != 10 {
		t.Errorf("meter = %v, want 10 in the new period", got)
	}
}

// reservePolicy: holds against a hard limit; est for estimates.
const reservePolicy = `{"policy": {
  "credits": {"tok": {"price": {"amount": 0.01}, "overhead_cost": 0.001}},
  "plans": {"p": {"default": true, "entitlements": {
    "llm": {"limit": {"credit": "tok", "value": 100}},
    "est": {"limit": {"credit": "tok", "value": 1000000000, "increment": 7}}
  }}}
}}`

func (e *env) reserve(id, ent string, amt float64, opts ...limitr.CallOption) limitr.Hold {
	e.t.Helper()
	h, err := e.p.Reserve(e.ctx, id, ent, amt, opts...)
	if err != nil {
		e.t.Fatalf("Reserve(%q, %q, %v): %v", id, ent, amt, err)
	}
	return h
}

func (e *env) held(id, ent string) float64 {
	e.t.Helper()
	v, err := e.p.Held(e.ctx, id, ent)
	if err != nil {
		e.t.Fatalf("Held: %v", err)
	}
	return v
}

// §14, §5 steps 8/14: holds count against later Allow and Check; expiry gives
// capacity back; Release drops a hold.
func TestReservationsGate(t *testing.T) {
	e := newEnv(t, reservePolicy)
	e.customer("u", "")
	h := e.reserve("u", "llm", 60, limitr.WithHoldTTL(time.Minute))
	if h.ID == "" || h.Amount != 60 || !h.Expires.Equal(t0.Add(time.Minute)) {
		t.Errorf("hold = %+v", h)
	}
	if got := e.held("u", "llm"); got != 60 {
		t.Errorf("Held = %v, want 60", got)
	}
	if e.check("u", "llm", 50) {
		t.Error("Check ignored the hold")
	}
	e.rec.reset()
	if e.allow("u", "llm", 50) {
		t.Fatal("Allow ignored the hold")
	}
	if got := e.rec.meterTypes(); !eqStrings(got, []string{limitr.EventMeterLimit}) {
		t.Errorf("events = %v, want meter-limit", got)
	}
	if !e.allow("u", "llm", 40) {
		t.Fatal("40 + 60 held denied under 100")
	}
	if _, err := e.p.Reserve(e.ctx, "u", "llm", 1); !errors.Is(err, limitr.ErrReservationDenied) {
		t.Errorf("Reserve past the limit: err = %v, want ErrReservationDenied", err)
	}
	// The hold is never metered.
	if got := e.value("u", "llm"); got != 40 {
		t.Errorf("meter = %v, want 40", got)
	}
	e.clock.Advance(time.Minute)
	if got := e.held("u", "llm"); got != 0 {
		t.Errorf("Held at expiry = %v, want 0", got)
	}
	if !e.allow("u", "llm", 60) {
		t.Error("expired hold still counted")
	}
	// Release.
	e.allow("u", "llm", -100)
	h2 := e.reserve("u", "llm", 30)
	if err := e.p.Release(e.ctx, "u", "llm", h2); err != nil {
		t.Fatal(err)
	}
	if got := e.held("u", "llm"); got != 0 {
		t.Errorf("Held after release = %v", got)
	}
	if err := e.p.Release(e.ctx, "u", "llm", h2); !errors.Is(err, limitr.ErrUnknownHold) {
		t.Errorf("second release: err = %v, want ErrUnknownHold", err)
	}
	// Default hold_ttl is 10 minutes.
	h3 := e.reserve("u", "llm", 10)
	if !h3.Expires.Equal(e.clock.Now().Add(10 * time.Minute)) {
		t.Errorf("default expiry = %v, want now + 10min", h3.Expires)
	}
}

// §14 settle = drop hold + forced allow: meters even past the hard limit and even when
// the hold expired (ours).
func TestSettle(t *testing.T) {
	e := newEnv(t, reservePolicy)
	e.customer("u", "")
	h := e.reserve("u", "llm", 60)
	ok, err := e.p.Settle(e.ctx, "u", "llm", h, 80)
	if err != nil || !ok {
		t.Fatalf("Settle = %v, %v", ok, err)
	}
	if got := e.value("u", "llm"); got != 80 {
		t.Errorf("meter = %v, want 80", got)
	}
	if got := e.held("u", "llm"); got != 0 {
		t.Errorf("Held after settle = %v", got)
	}
	h = e.reserve("u", "llm", 10)
	e.rec.reset()
	ok, err = e.p.Settle(e.ctx, "u", "llm", h, 50)
	if err != nil || !ok {
		t.Fatalf("Settle past the hard limit = %v, %v", ok, err)
	}
	if got := e.value("u", "llm"); got != 130 {
		t.Errorf("meter = %v, want 130 (settle meters past the limit)", got)
	}
	ev, ok2 := e.rec.last(limitr.EventMeterOverage)
	if !ok2 {
		t.Fatalf("no meter-overage for a forced call past the limit; got %v", e.rec.types())
	}
	if got, _ := pf(payload(t, ev), "overage"); got != 30 {
		t.Errorf("overage = %v, want 30", got)
	}
	e.allow("u", "llm", -130)
	h = e.reserve("u", "llm", 10, limitr.WithHoldTTL(time.Minute))
	e.clock.Advance(2 * time.Minute)
	ok, err = e.p.Settle(e.ctx, "u", "llm", h, 5)
	if err != nil || !ok {
		t.Fatalf("Settle of an expired hold = %v, %v", ok, err)
	}
	if got := e.value("u", "llm"); got != 5 {
		t.Errorf("expired-hold settle metered %v, want 5", got)
	}
	// §5 step 4: overhead is units × overhead_cost, so the −130 decrement refunds 0.13.
	if got := e.cust("u").Meters["llm"].Overhead; !closeTo(got, (80+50-130+5)*0.001, 1e-12) {
		t.Errorf("meter overhead = %v, want %v", got, (80+50-130+5)*0.001)
	}
}

// §14 estimates: customer estimate after ≥ 5 settles; quantile 0.5 ≈ mean; per basis;
// per segment; fallback to the increment.
func TestReservationEstimates(t *testing.T) {
	e := newEnv(t, reservePolicy)
	e.customer("u", "")
	if h := e.reserve("u", "est", 0); h.Amount != 7 {
		t.Errorf("no history: estimate = %v, want the increment 7", h.Amount)
	}
	for _, v := range []float64{10, 20, 30, 40, 50} {
		h := e.reserve("u", "est", 1)
		if _, err := e.p.Settle(e.ctx, "u", "est", h, v); err != nil {
			t.Fatal(err)
		}
	}
	h := e.reserve("u", "est", 0, limitr.WithQuantile(0.5))
	if math.Abs(h.Amount-30) > 0.05 {
		t.Errorf("median estimate = %v, want ≈ mean 30", h.Amount)
	}
	h90 := e.reserve("u", "est", 0)
	if h90.Amount <= h.Amount {
		t.Errorf("q0.9 estimate %v not above the median %v", h90.Amount, h.Amount)
	}
	sd := math.Sqrt(200) // population variance of 10..50
	if math.Abs(h90.Amount-(30+1.2816*sd)) > 0.05 {
		t.Errorf("q0.9 estimate = %v, want ≈ %v", h90.Amount, 30+1.2816*sd)
	}
	// Per basis: settle 1..5 per unit of a 100-unit basis.
	for i, v := range []float64{100, 200, 300, 400, 500} {
		hb := e.reserve("u", "est", 1, limitr.WithBasis(100), limitr.WithSegment("gpt.4o"))
		if _, err := e.p.Settle(e.ctx, "u", "est", hb, v); err != nil {
			t.Fatal(i, err)
		}
	}
	hb := e.reserve("u", "est", 0, limitr.WithBasis(50), limitr.WithSegment("gpt.4o"), limitr.WithQuantile(0.5))
	if math.Abs(hb.Amount-150) > 0.05 {
		t.Errorf("per-basis estimate = %v, want ≈ 3 × 50", hb.Amount)
	}
	if hb.Segment != "gpt_4o" {
		t.Errorf("segment = %q, want gpt_4o (dots → _)", hb.Segment)
	}
	// The default segment is unaffected by the gpt.4o samples.
	if h := e.reserve("u", "est", 0, limitr.WithQuantile(0.5)); math.Abs(h.Amount-30) > 0.05 {
		t.Errorf("default segment estimate = %v, want ≈ 30", h.Amount)
	}
	// Another customer has no samples: the policy-wide estimate applies.
	e.customer("v", "")
	if h := e.reserve("v", "est", 0, limitr.WithQuantile(0.5)); math.Abs(h.Amount-30) > 0.05 {
		t.Errorf("policy-wide estimate = %v, want ≈ 30", h.Amount)
	}
}

// costPolicy: a CEL cost expression over units and context, and a flat overhead_cost.
const costPolicy = `{"policy": {
  "credits": {
    "tok":  {"overhead_cost": 0.000003, "overhead": "units * (context.model == 'opus' ? 0.000015 : 0.000003)"},
    "flat": {"overhead_cost": 0.5, "price": {"amount": 2}}
  },
  "plans": {"p": {"default": true, "entitlements": {
    "ai": {"limit": {"credit": "tok", "mode": "soft", "value": 1000000000}},
    "f":  {"limit": {"credit": "flat", "mode": "soft", "value": 1000}}
  }}}
}}`

// §2.2 overhead, §5 step 4, §5.8: per-call overhead into meter.overhead and the event.
func TestCallOverhead(t *testing.T) {
	cases := []struct {
		name string
		ent  string
		amt  float64
		opts []limitr.CallOption
		want float64
	}{
		{"flat overhead_cost × units", "f", 4, nil, 2},
		{"expression with context (opus)", "ai", 1000, []limitr.CallOption{limitr.WithEventData(map[string]any{"model": "opus"})}, 0.015},
		{"expression with context (sonnet)", "ai", 1000, []limitr.CallOption{limitr.WithEventData(map[string]any{"model": "sonnet"})}, 0.003},
		{"expression fails on a missing key: units × overhead_cost", "ai", 2000, []limitr.CallOption{limitr.WithEventData(map[string]any{"other": 1})}, 0.006},
		{"no context at all: fallback", "ai", 1000, nil, 0.003},
		{"explicit WithOverhead wins", "ai", 1000, []limitr.CallOption{limitr.WithOverhead(0.7), limitr.WithEventData(map[string]any{"model": "opus"})}, 0.7},
		{"zero units: no overhead", "f", 0, nil, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, costPolicy)
			e.customer("u", "")
			e.allow("u", tc.ent, tc.amt, tc.opts...)
			if got := e.cust("u").Meters[tc.ent].Overhead; !closeTo(got, tc.want, 1e-12) {
				t.Errorf("meter.overhead = %v, want %v", got, tc.want)
			}
			if tc.amt == 0 {
				return
			}
			ev, ok := e.rec.last(limitr.EventMeterChanged)
			if !ok {
				t.Fatalf("no meter-changed; got %v", e.rec.types())
			}
			m := payload(t, ev)
			if got, _ := pf(m, "meter", "overhead_diff"); !closeTo(got, tc.want, 1e-12) {
				t.Errorf("overhead_diff = %v, want %v", got, tc.want)
			}
			if tc.opts != nil && m["event_data"] == nil {
				t.Error("event_data missing from the payload")
			}
		})
	}
	// Overhead accumulates over the period.
	e := newEnv(t, costPolicy)
	e.customer("u", "")
	e.allow("u", "f", 1)
	e.allow("u", "f", 3)
	if got := e.cust("u").Meters["f"].Overhead; got != 2 {
		t.Errorf("accumulated overhead = %v, want 2", got)
	}
}

// §11.1, §11.3: ai-credits half-seats fires under its name when remaining < limit/2.
func TestHalfSeatsNotification(t *testing.T) {
	e := newEnv(t, readExample(t, "ai-credits.yaml"))
	e.customer("org", "", withType("org"))
	e.customer("u", "", withRefs("org"))
	e.allow("u", "seats", 5) // remaining 5: not < 5
	if n := len(e.rec.ofType("half-seats")); n != 0 {
		t.Fatalf("half-seats fired at remaining 5 of 10 (%d)", n)
	}
	e.allow("u", "ai_input", 10)
	if n := len(e.rec.ofType("half-seats")); n != 0 {
		t.Fatalf("half-seats fired for another entitlement")
	}
	e.rec.reset()
	e.allow("u", "seats", 1)
	got := e.rec.types()
	if !eqStrings(got, []string{"half-seats", limitr.EventMeterChanged}) {
		t.Fatalf("events = %v, want half-seats then meter-changed", got)
	}
	ev := e.rec.all()[0]
	if ev.Source != limitr.EventMeterChanged || ev.Notification != "half-seats" {
		t.Errorf("notification Source/Notification = %q/%q", ev.Source, ev.Notification)
	}
	m := payload(t, ev)
	if r, _ := pf(m, "remaining"); r != 4 {
		t.Errorf("notification payload remaining = %v, want 4 (meter-changed shape)", r)
	}
	if m["entitlement"] != "seats" {
		t.Errorf("entitlement = %v", m["entitlement"])
	}
	// A denial (meter-limit) does not match the meter-changed condition.
	e.rec.reset()
	e.allow("u", "seats", 100)
	if n := len(e.rec.ofType("half-seats")); n != 0 {
		t.Errorf("half-seats fired on %v", e.rec.types())
	}
}
