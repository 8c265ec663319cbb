package limitr_test

import (
	"testing"
	"time"

	limitr "github.com/limitr/limitr/sdk/go"
)

// §6 reads: Value / Remaining / Limit / ValuePercent in the current period.
func TestReads(t *testing.T) {
	cases := []struct {
		name, ent  string
		use        []float64
		value      float64
		remaining  float64
		limit      float64
		percent    float64
		noLimitErr bool
	}{
		{"fresh", "api", nil, 0, 10, 10, 0, false},
		{"partly used", "api", []float64{4}, 4, 6, 10, 40, false},
		{"full", "api", []float64{10}, 10, 0, 10, 100, false},
		// §6: remaining raw can be negative past a soft limit; percent clamps at 100.
		{"soft over", "soft", []float64{13}, 13, -3, 10, 100, false},
		// §6 quirk kept: a zero limit reads as 100% used even when nothing was used.
		{"zero limit", "zero", nil, 0, 0, 0, 100, false},
		// §6: remaining% = max(0, lval−mval)/lval×100 = 150, so value% = 100 − 150.
		{"negative meter", "api", []float64{-5}, -5, 15, 10, -50, false},
		{"units", "storage", []float64{1250}, 1250, 3750, 5000, 25, false},
		// §5.1: remaining()/limit() are null (ErrNoLimit) on observe limits; value works.
		{"observe", "obs", []float64{7}, 7, 0, 0, 0, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, basePolicy)
			e.customer("u", "free")
			for _, a := range tc.use {
				e.allow("u", tc.ent, a)
			}
			if v := e.value("u", tc.ent); !approx(v, tc.value) {
				t.Errorf("Value = %v, want %v", v, tc.value)
			}
			r, rerr := e.p.Remaining(e.ctx, "u", tc.ent)
			l, lerr := e.p.Limit(e.ctx, "u", tc.ent)
			pct, perr := e.p.ValuePercent(e.ctx, "u", tc.ent)
			if tc.noLimitErr {
				wantErr(t, "Remaining", rerr, limitr.ErrNoLimit)
				wantErr(t, "Limit", lerr, limitr.ErrNoLimit)
				if perr == nil {
					t.Errorf("ValuePercent on observe = %v, want an error (§6: 100 − null)", pct)
				}
				return
			}
			if rerr != nil || !approx(r, tc.remaining) {
				t.Errorf("Remaining = (%v, %v), want %v", r, rerr, tc.remaining)
			}
			if lerr != nil || !approx(l, tc.limit) {
				t.Errorf("Limit = (%v, %v), want %v", l, lerr, tc.limit)
			}
			if perr != nil || !approx(pct, tc.percent) {
				t.Errorf("ValuePercent = (%v, %v), want %v", pct, perr, tc.percent)
			}
		})
	}
}

// §6 / §10 lazy resets: reads show the new period without moving the meter; the next
// Allow applies the reset (meter-reset).
func TestReadsAfterDueReset(t *testing.T) {
	cases := []struct {
		name, ent string
		advance   time.Duration
	}{
		{"reset_inc", "daily", 25 * time.Hour},
		{"reset_sch", "monthly", 20 * 24 * time.Hour}, // Jan 15 → Feb 4
		{"soft reset_inc", "softd", 49 * time.Hour},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, basePolicy)
			e.customer("u", "free")
			e.allow("u", tc.ent, 4)
			e.clock.Advance(tc.advance)
			for i := 0; i < 3; i++ { // reading repeatedly never applies the reset
				if v := e.value("u", tc.ent); v != 0 {
					t.Errorf("Value after the period ended = %v, want 0", v)
				}
				if r, _ := e.p.Remaining(e.ctx, "u", tc.ent); r != 5 && r != 10 {
					t.Errorf("Remaining after the period ended = %v, want the full limit", r)
				}
				c, _ := e.p.Customer(e.ctx, "u")
				if m := c.Meters[tc.ent]; m.Value != 0 {
					t.Errorf("snapshot meter value %v after the period ended, want 0", m.Value)
				}
			}
			e.rec.reset()
			e.allow("u", tc.ent, 1)
			if got := e.rec.meterTypes(); !eqStrings(got, []string{limitr.EventMeterReset, limitr.EventMeterChanged}) {
				t.Errorf("first Allow of the new period emitted %v, want [meter-reset meter-changed]", got)
			}
			if v := e.value("u", tc.ent); v != 1 {
				t.Errorf("Value = %v, want 1", v)
			}
		})
	}
}
