package limitr_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	limitr "github.com/limitr/limitr/sdk/go"
)

// fakeClock is a controllable time source for limitr.WithClock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock(t time.Time) *fakeClock { return &fakeClock{now: t} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

var t0 = time.Date(2026, 1, 15, 10, 0, 0, 0, time.UTC)

// basePolicy exercises most limit shapes. Every entitlement is on the default plan
// "free" except pro_only; "pro" raises api and carries pro_only.
const basePolicy = `{"policy": {
  "credits": {
    "req":  {},
    "mb":   {"stof_units": "MB"},
    "tok":  {"stof_units": "int"},
    "seat": {},
    "cost": {"overhead_cost": 0.5, "price": {"amount": 2}}
  },
  "plans": {
    "free": {"default": true, "entitlements": {
      "api":     {"limit": {"credit": "req", "value": 10}},
      "soft":    {"limit": {"credit": "cost", "mode": "soft", "value": 10}},
      "softd":   {"limit": {"credit": "cost", "mode": "soft", "value": 10, "resets": true, "reset_inc": "1day"}},
      "obs":     {"limit": {"credit": "req", "mode": "observe", "value": 5}},
      "trail":   {"limit": {"credit": "req", "value": 5, "hard_trailing": true}},
      "floor":   {"limit": {"credit": "req", "value": 10, "minimum": 0}},
      "storage": {"limit": {"credit": "mb", "value": "5GB"}},
      "tokens":  {"limit": {"credit": "tok", "value": 100}},
      "gate":    {},
      "seats":   {"scope": "org", "limit": {"credit": "seat", "value": 3}},
      "step":    {"limit": {"credit": "req", "value": 10, "increment": 3}},
      "daily":   {"limit": {"credit": "req", "value": 5, "resets": true, "reset_inc": "1day"}},
      "monthly": {"limit": {"credit": "req", "value": 5, "resets": true, "reset_sch": "monthly:1"}},
      "anchor":  {"limit": {"credit": "req", "value": 5, "resets": true, "reset_sch": "monthly:anchor"}},
      "zero":    {"limit": {"credit": "req", "value": 0}},
      "one":     {"limit": {"credit": "req", "value": 1}}
    }},
    "pro": {"entitlements": {
      "api":      {"limit": {"credit": "req", "value": 100}},
      "soft":     {"limit": {"credit": "cost", "mode": "soft", "value": 50}},
      "seats":    {"scope": "org", "limit": {"credit": "seat", "value": 5}},
      "pro_only": {}
    }}
  }
}}`

type env struct {
	t     *testing.T
	p     *limitr.Policy
	clock *fakeClock
	ctx   context.Context
	rec   *recorder
}

func newEnv(t *testing.T, doc string, opts ...limitr.Option) *env {
	t.Helper()
	clock := newClock(t0)
	p, err := limitr.New([]byte(doc), append([]limitr.Option{limitr.WithClock(clock.Now)}, opts...)...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	e := &env{t: t, p: p, clock: clock, ctx: context.Background(), rec: &recorder{}}
	p.AddHandler("recorder", e.rec.handle)
	return e
}

func (e *env) customer(id, plan string, opts ...limitr.CustomerOption) *limitr.Customer {
	e.t.Helper()
	c, err := e.p.CreateCustomer(e.ctx, id, plan, opts...)
	if err != nil {
		e.t.Fatalf("CreateCustomer(%q, %q): %v", id, plan, err)
	}
	return c
}

func (e *env) allow(id, ent string, amt float64, opts ...limitr.CallOption) bool {
	e.t.Helper()
	ok, err := e.p.Allow(e.ctx, id, ent, amt, opts...)
	if err != nil {
		e.t.Fatalf("Allow(%q, %q, %v): %v", id, ent, amt, err)
	}
	return ok
}

func (e *env) value(id, ent string) float64 {
	e.t.Helper()
	v, err := e.p.Value(e.ctx, id, ent)
	if err != nil {
		e.t.Fatalf("Value(%q, %q): %v", id, ent, err)
	}
	return v
}

func (e *env) snapshotJSON(id string) string {
	e.t.Helper()
	c, err := e.p.Customer(e.ctx, id)
	if err != nil {
		e.t.Fatalf("Customer(%q): %v", id, err)
	}
	b, err := json.Marshal(c)
	if err != nil {
		e.t.Fatalf("marshal customer: %v", err)
	}
	return string(b)
}

// recorder keeps every event delivered to it.
type recorder struct {
	mu     sync.Mutex
	events []limitr.Event
}

func (r *recorder) handle(ev limitr.Event) {
	r.mu.Lock()
	r.events = append(r.events, ev)
	r.mu.Unlock()
}

func (r *recorder) reset() {
	r.mu.Lock()
	r.events = nil
	r.mu.Unlock()
}

func (r *recorder) all() []limitr.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]limitr.Event(nil), r.events...)
}

func (r *recorder) types() []string {
	var out []string
	for _, ev := range r.all() {
		out = append(out, ev.Type)
	}
	return out
}

func (r *recorder) meterTypes() []string {
	var out []string
	for _, ev := range r.all() {
		switch ev.Type {
		case limitr.EventMeterChanged, limitr.EventMeterOverage, limitr.EventMeterLimit, limitr.EventMeterReset:
			out = append(out, ev.Type)
		}
	}
	return out
}

func (r *recorder) last(typ string) (limitr.Event, bool) {
	evs := r.all()
	for i := len(evs) - 1; i >= 0; i-- {
		if evs[i].Type == typ {
			return evs[i], true
		}
	}
	return limitr.Event{}, false
}

func eqStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// payload parses an event's JSON form.
func payload(t *testing.T, ev limitr.Event) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(ev.JSON(), &m); err != nil {
		t.Fatalf("%s: JSON() is not valid JSON: %v\n%s", ev.Type, err, ev.JSON())
	}
	return m
}

func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Errorf("%s: err = %v, want %v", what, err, target)
	}
}

func approx(a, b float64) bool {
	d := a - b
	if d < 0 {
		d = -d
	}
	return d < 1e-9
}

func withType(t string) limitr.CustomerOption { return limitr.WithCustomerType(t) }

func withRefs(ids ...string) limitr.CustomerOption { return limitr.WithRefs(ids...) }
