package limitr_test

import (
	"testing"
	"time"

	limitr "github.com/limitr/limitr/sdk/go"
)

// §10 duration resets: a fixed grid anchored at creation; the boundary instant belongs to the
// old period; idle periods collapse into one reset.
func TestResetIncGrid(t *testing.T) {
	e := newEnv(t, basePolicy)
	e.customer("u", "free") // created at t0: the daily grid is t0 + k days
	e.allow("u", "daily", 5)
	day := 24 * time.Hour
	steps := []struct {
		at        time.Duration // since t0
		amt       float64
		want      bool
		wantVal   float64
		wantReset bool
		nextReset time.Duration // Resets() after the call, since t0
	}{
		{day - time.Millisecond, 1, false, 5, false, day},
		{day, 1, false, 5, false, day},                      // boundary instant: still the old period
		{day + time.Millisecond, 3, true, 3, true, 2 * day}, // new period
		{day + 20*time.Hour, 2, true, 5, false, 2 * day},    // grid, not sliding from first use
		{2*day + time.Hour, 5, true, 5, true, 3 * day},      // next grid period
		{7*day + 5*time.Hour, 1, true, 1, true, 8 * day},    // idle periods collapse into one reset
	}
	for i, s := range steps {
		e.clock.Set(t0.Add(s.at))
		e.rec.reset()
		if got := e.allow("u", "daily", s.amt); got != s.want {
			t.Errorf("step %d (t0+%v): Allow(%v) = %v, want %v", i, s.at, s.amt, got, s.want)
		}
		if v := e.value("u", "daily"); v != s.wantVal {
			t.Errorf("step %d: Value = %v, want %v", i, v, s.wantVal)
		}
		resets := 0
		for _, typ := range e.rec.types() {
			if typ == limitr.EventMeterReset {
				resets++
			}
		}
		if (resets == 1) != s.wantReset || resets > 1 {
			t.Errorf("step %d: %d meter-reset events, want reset=%v", i, resets, s.wantReset)
		}
		r, err := e.p.Resets(e.ctx, "u", "daily")
		if err != nil || !r.Equal(t0.Add(s.nextReset)) {
			t.Errorf("step %d: Resets = (%v, %v), want %v", i, r, err, t0.Add(s.nextReset))
		}
	}
}

// §10 calendar resets: monthly:1 in UTC vs a customer in America/New_York (DESIGN difference 5).
func TestResetSchTimezone(t *testing.T) {
	e := newEnv(t, basePolicy)
	e.customer("utc", "free")
	e.customer("ny", "free", limitr.WithTimezone("America/New_York"))
	e.allow("utc", "monthly", 5)
	e.allow("ny", "monthly", 5)
	febUTC := time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)
	febNY := time.Date(2026, 2, 1, 5, 0, 0, 0, time.UTC) // midnight EST
	cases := []struct {
		id        string
		wantReset time.Time
	}{{"utc", febUTC}, {"ny", febNY}}
	for _, c := range cases {
		if r, err := e.p.Resets(e.ctx, c.id, "monthly"); err != nil || !r.Equal(c.wantReset) {
			t.Errorf("%s: Resets = (%v, %v), want %v", c.id, r, err, c.wantReset)
		}
	}
	steps := []struct {
		at            time.Time
		utcVal, nyVal float64 // reads before any call
	}{
		{time.Date(2026, 1, 31, 23, 59, 0, 0, time.UTC), 5, 5},
		{time.Date(2026, 2, 1, 2, 0, 0, 0, time.UTC), 0, 5}, // 21:00 Jan 31 in New York
		{time.Date(2026, 2, 1, 6, 0, 0, 0, time.UTC), 0, 0}, // 01:00 Feb 1 in New York
	}
	for i, s := range steps {
		e.clock.Set(s.at)
		if v := e.value("utc", "monthly"); v != s.utcVal {
			t.Errorf("step %d: utc Value = %v, want %v", i, v, s.utcVal)
		}
		if v := e.value("ny", "monthly"); v != s.nyVal {
			t.Errorf("step %d: ny Value = %v, want %v", i, v, s.nyVal)
		}
	}
	// In the middle of the window only the UTC customer may meter again.
	e2 := newEnv(t, basePolicy)
	e2.customer("utc", "free")
	e2.customer("ny", "free", limitr.WithTimezone("America/New_York"))
	e2.allow("utc", "monthly", 5)
	e2.allow("ny", "monthly", 5)
	e2.clock.Set(time.Date(2026, 2, 1, 2, 0, 0, 0, time.UTC))
	if !e2.allow("utc", "monthly", 1) {
		t.Error("utc customer denied after its month reset")
	}
	if e2.allow("ny", "monthly", 1) {
		t.Error("ny customer allowed before its local month reset")
	}
	e2.clock.Set(time.Date(2026, 2, 1, 5, 0, 0, 0, time.UTC))
	if !e2.allow("ny", "monthly", 1) {
		t.Error("ny customer denied at local midnight Feb 1")
	}
	if r, _ := e2.p.Resets(e2.ctx, "ny", "monthly"); !r.Equal(time.Date(2026, 3, 1, 5, 0, 0, 0, time.UTC)) {
		t.Errorf("ny next reset = %v, want 2026-03-01T05:00Z", r)
	}
}

// DESIGN difference 5: monthly:anchor uses the billing anchor's day, clamped to month ends.
func TestResetSchMonthlyAnchor(t *testing.T) {
	cases := []struct {
		name       string
		anchor     time.Time
		firstReset time.Time
		thenReset  time.Time
	}{
		{"leap year", time.Date(2028, 1, 31, 10, 0, 0, 0, time.UTC),
			time.Date(2028, 2, 29, 0, 0, 0, 0, time.UTC), time.Date(2028, 3, 31, 0, 0, 0, 0, time.UTC)},
		{"common year", time.Date(2027, 1, 31, 10, 0, 0, 0, time.UTC),
			time.Date(2027, 2, 28, 0, 0, 0, 0, time.UTC), time.Date(2027, 3, 31, 0, 0, 0, 0, time.UTC)},
		{"mid-month anchor", time.Date(2027, 1, 15, 10, 0, 0, 0, time.UTC),
			time.Date(2027, 2, 15, 0, 0, 0, 0, time.UTC), time.Date(2027, 3, 15, 0, 0, 0, 0, time.UTC)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, basePolicy)
			e.clock.Set(tc.anchor)
			e.customer("u", "free", limitr.WithBillingAnchor(tc.anchor))
			e.allow("u", "anchor", 5)
			e.clock.Set(tc.anchor.Add(24 * time.Hour))
			if r, err := e.p.Resets(e.ctx, "u", "anchor"); err != nil || !r.Equal(tc.firstReset) {
				t.Errorf("Resets = (%v, %v), want %v", r, err, tc.firstReset)
			}
			e.clock.Set(tc.firstReset.Add(-time.Minute))
			if e.allow("u", "anchor", 1) {
				t.Error("allowed just before the anchor reset")
			}
			e.clock.Set(tc.firstReset.Add(time.Hour))
			if v := e.value("u", "anchor"); v != 0 {
				t.Errorf("Value after the anchor reset = %v, want 0", v)
			}
			e.rec.reset()
			if !e.allow("u", "anchor", 5) {
				t.Error("denied after the anchor reset")
			}
			if got := e.rec.meterTypes(); !eqStrings(got, []string{limitr.EventMeterReset, limitr.EventMeterChanged}) {
				t.Errorf("events = %v, want [meter-reset meter-changed]", got)
			}
			if r, _ := e.p.Resets(e.ctx, "u", "anchor"); !r.Equal(tc.thenReset) {
				t.Errorf("following reset = %v, want %v", r, tc.thenReset)
			}
		})
	}
	// Without WithBillingAnchor the anchor is the creation time (t0 = Jan 15).
	e := newEnv(t, basePolicy)
	e.customer("u", "free")
	if r, _ := e.p.Resets(e.ctx, "u", "anchor"); !r.Equal(time.Date(2026, 2, 15, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("default anchor: Resets = %v, want 2026-02-15", r)
	}
}

// §6 resets(): the zero time for a limit without periods; ErrNoLimit on a gate.
func TestResetsNonResetting(t *testing.T) {
	e := newEnv(t, basePolicy)
	e.customer("u", "free")
	if r, err := e.p.Resets(e.ctx, "u", "api"); err != nil || !r.IsZero() {
		t.Errorf("Resets(api) = (%v, %v), want zero time", r, err)
	}
	_, err := e.p.Resets(e.ctx, "u", "gate")
	wantErr(t, "Resets(gate)", err, limitr.ErrNoLimit)
}

// §10: "A denied first call of a new period still zeroes the meter (0.7.0 fix)."
func TestDeniedFirstCallOfPeriodZeroesMeter(t *testing.T) {
	e := newEnv(t, basePolicy)
	e.customer("u", "free")
	e.allow("u", "monthly", 4)
	e.clock.Set(time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC))
	if e.allow("u", "monthly", 6) {
		t.Fatal("Allow(6) on 5 allowed")
	}
	c := mustCustomer(t, e, "u")
	if m := c.Meters["monthly"]; m.Value != 0 || !m.Started.Equal(time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("meter after denied first call = {value %v, started %v}, want {0, 2026-03-01}", m.Value, m.Started)
	}
	e.rec.reset()
	if !e.allow("u", "monthly", 5) {
		t.Error("Allow(5) denied in the new period")
	}
	if got := e.rec.meterTypes(); !eqStrings(got, []string{limitr.EventMeterChanged}) {
		t.Errorf("second call emitted %v, want only meter-changed (reset already applied)", got)
	}
}
