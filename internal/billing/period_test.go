package billing

import (
	"testing"
	"time"
)

func TestPeriodAt(t *testing.T) {
	ny, _ := time.LoadLocation("America/New_York")
	utc := time.UTC
	ts := func(s string, loc *time.Location) time.Time {
		v, err := time.ParseInLocation("2006-01-02 15:04", s, loc)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, tc := range []struct {
		name                string
		at, created, anchor time.Time
		loc                 *time.Location
		wantStart, wantEnd  time.Time
	}{
		{"first period starts at creation", ts("2026-01-10 12:00", utc), ts("2026-01-10 09:30", utc), ts("2026-01-10 09:30", utc), utc,
			ts("2026-01-10 09:30", utc), ts("2026-02-10 00:00", utc)},
		{"month-end anchor clamps to February", ts("2026-02-15 00:00", utc), ts("2026-01-31 08:00", utc), ts("2026-01-31 08:00", utc), utc,
			ts("2026-01-31 08:00", utc), ts("2026-02-28 00:00", utc)},
		{"and comes back to the 31st", ts("2026-03-05 00:00", utc), ts("2026-01-31 08:00", utc), ts("2026-01-31 08:00", utc), utc,
			ts("2026-02-28 00:00", utc), ts("2026-03-31 00:00", utc)},
		{"time zone: local midnight", ts("2026-03-20 00:00", ny), ts("2026-01-15 10:00", ny), ts("2026-01-15 10:00", ny), ny,
			ts("2026-03-15 00:00", ny), ts("2026-04-15 00:00", ny)},
		{"boundary belongs to the new period", ts("2026-02-10 00:00", utc), ts("2026-01-10 09:30", utc), ts("2026-01-10 09:30", utc), utc,
			ts("2026-02-10 00:00", utc), ts("2026-03-10 00:00", utc)},
	} {
		got := PeriodAt(tc.at, tc.created, tc.anchor, tc.loc)
		if !got.Start.Equal(tc.wantStart) || !got.End.Equal(tc.wantEnd) {
			t.Errorf("%s: got [%s, %s), want [%s, %s)", tc.name, got.Start, got.End, tc.wantStart.UTC(), tc.wantEnd.UTC())
		}
	}
}
