package limitr_test

import (
	"testing"
	"time"

	limitr "github.com/limitr/limitr/sdk/go"
)

// DESIGN difference 6: an idempotency key answers a retry the same and counts once.
func TestIdempotencyKeys(t *testing.T) {
	type call struct {
		key     string
		amt     float64
		want    bool
		wantVal float64
	}
	cases := []struct {
		name  string
		ent   string
		calls []call
	}{
		{"same key counts once", "api", []call{{"k1", 4, true, 4}, {"k1", 4, true, 4}, {"k1", 4, true, 4}}},
		{"different keys count again", "api", []call{{"k1", 4, true, 4}, {"k2", 4, true, 8}, {"k1", 4, true, 8}, {"", 1, true, 9}}},
		// A denied answer is replayed too, even once there is room again.
		{"denied answer replayed", "api", []call{{"a", 9, true, 9}, {"b", 5, false, 9}, {"c", -9, true, 0}, {"b", 5, false, 0}, {"d", 5, true, 5}}},
		{"soft", "soft", []call{{"s", 15, true, 15}, {"s", 15, true, 15}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, basePolicy)
			e.customer("u", "free")
			for i, c := range tc.calls {
				var opts []limitr.CallOption
				if c.key != "" {
					opts = append(opts, limitr.WithIdempotencyKey(c.key))
				}
				if got := e.allow("u", tc.ent, c.amt, opts...); got != c.want {
					t.Errorf("call %d (key %q): Allow(%v) = %v, want %v", i, c.key, c.amt, got, c.want)
				}
				if v := e.value("u", tc.ent); v != c.wantVal {
					t.Errorf("call %d: Value = %v, want %v", i, v, c.wantVal)
				}
			}
		})
	}
}

// Keys are per customer, and a retry emits no second meter event.
func TestIdempotencyScope(t *testing.T) {
	e := newEnv(t, basePolicy)
	e.customer("u", "free")
	e.customer("v", "free")
	key := limitr.WithIdempotencyKey("req-1")
	e.allow("u", "api", 3, key)
	e.rec.reset()
	e.allow("u", "api", 3, key)
	if got := e.rec.meterTypes(); len(got) != 0 {
		t.Errorf("retry emitted %v; a replayed answer changes nothing", got)
	}
	if !e.allow("v", "api", 3, key) || e.value("v", "api") != 3 {
		t.Error("the same key on another customer must count")
	}
	// Default TTL is 24h: after it the key counts again.
	e.clock.Advance(25 * time.Hour)
	e.allow("u", "api", 3, key)
	if v := e.value("u", "api"); v != 6 {
		t.Errorf("after the key expired Value = %v, want 6", v)
	}
}
