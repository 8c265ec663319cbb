package burnrate

import (
	"math"
	"testing"
	"time"
)

func TestExhaustion(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		name        string
		left, perMs float64
		want        time.Time
	}{
		{"4000 left at 15 a ms", 4000, 15, now.Add(266666666 * time.Nanosecond)},
		{"a day's worth", 86_400_000, 1, now.Add(24 * time.Hour)},
		{"nothing left", 0, 15, time.Time{}},
		{"past the limit", -5, 15, time.Time{}},
		{"no rate", 100, 0, time.Time{}},
		{"falling", 100, -2, time.Time{}},
		{"NaN rate", 100, math.NaN(), time.Time{}},
		{"beyond any clock", math.MaxFloat64, 1e-300, time.Time{}},
		{"infinite rate", 100, math.Inf(1), time.Time{}},
	}
	for _, c := range cases {
		got := Exhaustion(now, c.left, c.perMs)
		if got.Sub(c.want).Abs() > time.Microsecond || got.IsZero() != c.want.IsZero() {
			t.Errorf("%s: Exhaustion(%v, %v) = %v, want %v", c.name, c.left, c.perMs, got, c.want)
		}
	}
}
