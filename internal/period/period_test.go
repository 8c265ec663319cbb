package period

import (
	"testing"
	"time"
)

func TestGrid(t *testing.T) {
	started := at(nil, 2024, 1, 1, 0, 0)
	const day = 24 * time.Hour
	inc := 30 * day
	tests := []struct {
		name          string
		started, now  time.Time
		inc           time.Duration
		start, gridNx time.Time
	}{
		{"at start", started, started, inc, started, started.Add(inc)},
		{"before start", started, started.Add(-time.Hour), inc, started, started.Add(inc)},
		{"inside first", started, started.Add(10 * day), inc, started, started.Add(inc)},
		{"boundary belongs to old period", started, started.Add(inc), inc, started, started.Add(inc)},
		{"just after boundary", started, started.Add(inc + time.Nanosecond), inc, started.Add(inc), started.Add(2 * inc)},
		{"second boundary", started, started.Add(2 * inc), inc, started.Add(inc), started.Add(2 * inc)},
		{"exactly two steps", started, started.Add(2*inc + time.Nanosecond), inc, started.Add(2 * inc), started.Add(3 * inc)},
		{"huge idle gap", at(nil, 2000, 1, 1, 0, 0), at(nil, 2200, 1, 1, 0, 0).Add(time.Second / 2), day,
			at(nil, 2200, 1, 1, 0, 0), at(nil, 2200, 1, 2, 0, 0)},
		{"huge gap odd increment", at(nil, 2000, 1, 1, 0, 0), at(nil, 2200, 1, 1, 0, 0), 7*time.Hour + 13*time.Second,
			at(nil, 2000, 1, 1, 0, 0).Add((7*time.Hour + 13*time.Second) * ((at(nil, 2200, 1, 1, 0, 0).Sub(at(nil, 2000, 1, 1, 0, 0)) - 1) / (7*time.Hour + 13*time.Second))), time.Time{}},
		{"no increment", started, started.Add(100 * day), 0, started, time.Time{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := GridStart(tc.started, tc.now, tc.inc)
			if !got.Equal(tc.start) {
				t.Errorf("GridStart = %v, want %v", got, tc.start)
			}
			next := GridNext(tc.started, tc.now, tc.inc)
			if !tc.gridNx.IsZero() && !next.Equal(tc.gridNx) {
				t.Errorf("GridNext = %v, want %v", next, tc.gridNx)
			}
			if tc.inc > 0 && tc.now.After(tc.started) && (!got.Before(tc.now) || next.Before(tc.now)) {
				t.Errorf("period (%v, %v] does not contain %v", got, next, tc.now)
			}
			if tc.inc <= 0 && !next.IsZero() {
				t.Errorf("GridNext without increment = %v, want zero", next)
			}
		})
	}
}

func TestSpec(t *testing.T) {
	ny := mustLoc(t, "America/New_York")
	monthly := mustParse(t, "monthly:1")
	anchorSch := mustParse(t, "monthly:anchor")
	started := at(nil, 2024, 1, 10, 12, 0)
	tests := []struct {
		name            string
		spec            Spec
		started, now    time.Time
		loc             *time.Location
		anchor          time.Time
		current, nextRs time.Time
		pending         bool
	}{
		{"zero never resets", Spec{}, started, started.AddDate(5, 0, 0), nil, time.Time{}, started, time.Time{}, false},
		{"grid same period", Spec{Every: time.Hour}, started, started.Add(time.Hour), nil, time.Time{}, started, started.Add(time.Hour), false},
		{"grid idle collapses", Spec{Every: time.Hour}, started, started.Add(100*time.Hour + time.Minute), nil, time.Time{},
			started.Add(100 * time.Hour), started.Add(101 * time.Hour), true},
		{"schedule started mid-period", Spec{Schedule: monthly}, started, at(nil, 2024, 1, 31, 0, 0), nil, time.Time{},
			started, at(nil, 2024, 2, 1, 0, 0), false},
		{"schedule reset due", Spec{Schedule: monthly}, started, at(nil, 2024, 5, 3, 0, 0), nil, time.Time{},
			at(nil, 2024, 5, 1, 0, 0), at(nil, 2024, 6, 1, 0, 0), true},
		{"schedule started on boundary", Spec{Schedule: monthly}, at(nil, 2024, 2, 1, 0, 0), at(nil, 2024, 2, 1, 0, 0), nil, time.Time{},
			at(nil, 2024, 2, 1, 0, 0), at(nil, 2024, 3, 1, 0, 0), false},
		{"schedule in loc", Spec{Schedule: monthly}, started, at(nil, 2024, 2, 1, 3, 0), ny, time.Time{},
			started, at(ny, 2024, 2, 1, 0, 0), false},
		{"schedule with anchor", Spec{Schedule: anchorSch}, started, at(nil, 2024, 3, 1, 0, 0), nil, at(nil, 2023, 1, 31, 0, 0),
			at(nil, 2024, 2, 29, 0, 0), at(nil, 2024, 3, 31, 0, 0), true},
		{"schedule meter starts in future", Spec{Schedule: monthly}, at(nil, 2024, 3, 15, 0, 0), at(nil, 2024, 1, 20, 0, 0), nil, time.Time{},
			at(nil, 2024, 3, 15, 0, 0), at(nil, 2024, 4, 1, 0, 0), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.spec.CurrentStart(tc.started, tc.now, tc.loc, tc.anchor); !got.Equal(tc.current) {
				t.Errorf("CurrentStart = %v, want %v", got, tc.current)
			}
			if got := tc.spec.Pending(tc.started, tc.now, tc.loc, tc.anchor); got != tc.pending {
				t.Errorf("Pending = %v, want %v", got, tc.pending)
			}
			if got := tc.spec.NextReset(tc.started, tc.now, tc.loc, tc.anchor); !got.Equal(tc.nextRs) {
				t.Errorf("NextReset = %v, want %v", got, tc.nextRs)
			}
		})
	}
	if !(Spec{}).IsZero() || (Spec{Every: time.Second}).IsZero() || (Spec{Schedule: monthly}).IsZero() {
		t.Error("Spec.IsZero")
	}
}
