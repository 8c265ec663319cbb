package period

import (
	"errors"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // tests must not depend on the host's zoneinfo
)

func mustLoc(t testing.TB, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

func mustParse(t testing.TB, s string) Schedule {
	t.Helper()
	sch, err := ParseSchedule(s)
	if err != nil {
		t.Fatal(err)
	}
	return sch
}

// at builds a wall-clock time in loc (nil = UTC).
func at(loc *time.Location, y int, m time.Month, d, h, min int) time.Time {
	if loc == nil {
		loc = time.UTC
	}
	return time.Date(y, m, d, h, min, 0, 0, loc)
}

func TestParseSchedule(t *testing.T) {
	valid := []struct{ in, canon string }{
		{"", ""},
		{"monthly:1", "monthly:1"},
		{"monthly:01", "monthly:1"},
		{"monthly:31", "monthly:31"},
		{"Monthly:Last", "monthly:last"},
		{"monthly:anchor", "monthly:anchor"},
		{" weekly:mon ", "weekly:mon"},
		{"weekly:SUNDAY", "weekly:sun"},
		{"weekly:Wednesday", "weekly:wed"},
		{"nth_weekday:1:mon", "nth_weekday:1:mon"},
		{"nth_weekday:4:fri", "nth_weekday:4:fri"},
		{"nth_weekday:5:friday", "nth_weekday:5:fri"},
		{"nth_weekday:last:fri", "nth_weekday:last:fri"},
		{"yearly:2-29", "yearly:2-29"},
		{"yearly:01-01", "yearly:1-1"},
		{"yearly:12-31", "yearly:12-31"},
		{"quarterly:1", "quarterly:1"},
		{"quarterly:31", "quarterly:31"},
	}
	for _, tc := range valid {
		sch, err := ParseSchedule(tc.in)
		if err != nil {
			t.Errorf("ParseSchedule(%q): %v", tc.in, err)
			continue
		}
		if got := sch.String(); got != tc.canon {
			t.Errorf("ParseSchedule(%q).String() = %q, want %q", tc.in, got, tc.canon)
		}
		if again := mustParse(t, sch.String()); again != sch {
			t.Errorf("%q does not round-trip", tc.in)
		}
		if sch.IsZero() != (tc.canon == "") {
			t.Errorf("%q: IsZero = %v", tc.in, sch.IsZero())
		}
		if sch.UsesAnchor() != (tc.canon == "monthly:anchor") {
			t.Errorf("%q: UsesAnchor = %v", tc.in, sch.UsesAnchor())
		}
	}

	invalid := []struct{ in, reason string }{
		{"monthly", "<kind>:<value>"},
		{"monthly:", "day must be"},
		{"monthly:0", "day must be"},
		{"monthly:32", "day must be"},
		{"monthly:-1", "day must be"},
		{"monthly:+1", "day must be"},
		{"monthly:001", "day must be"},
		{"monthly:1:2", "field"},
		{"daily:1", "unknown kind"},
		{"weekly:funday", "weekday"},
		{"weekly:", "weekday"},
		{"weekly:mon:tue", "field"},
		{"nth_weekday:0:mon", "occurrence"},
		{"nth_weekday:6:mon", "occurrence"},
		{"nth_weekday:1", "field"},
		{"nth_weekday:1:mon:x", "field"},
		{"nth_weekday:1:xyz", "weekday"},
		{"yearly:2-30", "day must be 1..29"},
		{"yearly:4-31", "day must be 1..30"},
		{"yearly:13-1", "month-day"},
		{"yearly:0-1", "month-day"},
		{"yearly:1", "month-day"},
		{"yearly:1-1-1", "day must be"},
		{"quarterly:0", "day must be"},
		{"quarterly:last", "day must be"},
		{"garbage", "<kind>:<value>"},
		{":", "unknown kind"},
	}
	for _, tc := range invalid {
		_, err := ParseSchedule(tc.in)
		if !errors.Is(err, ErrInvalidSchedule) {
			t.Errorf("ParseSchedule(%q) err = %v, want ErrInvalidSchedule", tc.in, err)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, strconv.Quote(tc.in)) || !strings.Contains(msg, tc.reason) {
			t.Errorf("ParseSchedule(%q) err = %q, want input and %q", tc.in, msg, tc.reason)
		}
	}
	if _, err := ParseSchedule("monthly:32"); err.Error() != `reset schedule "monthly:32": day must be 1..31, "last" or "anchor"` {
		t.Errorf("message: %v", err)
	}
}

func TestScheduleStartNext(t *testing.T) {
	ny := mustLoc(t, "America/New_York")
	tokyo := mustLoc(t, "Asia/Tokyo")
	sp := mustLoc(t, "America/Sao_Paulo")
	var noAnchor time.Time
	tests := []struct {
		name       string
		sch        string
		loc        *time.Location
		anchor     time.Time
		now        time.Time
		start, nxt time.Time
	}{
		// monthly:N, clamping and boundaries.
		{"31 in leap Feb", "monthly:31", nil, noAnchor, at(nil, 2024, 2, 15, 12, 0), at(nil, 2024, 1, 31, 0, 0), at(nil, 2024, 2, 29, 0, 0)},
		{"31 on leap Feb 29", "monthly:31", nil, noAnchor, at(nil, 2024, 2, 29, 0, 0), at(nil, 2024, 2, 29, 0, 0), at(nil, 2024, 3, 31, 0, 0)},
		{"31 on Feb 28", "monthly:31", nil, noAnchor, at(nil, 2023, 2, 28, 10, 0), at(nil, 2023, 2, 28, 0, 0), at(nil, 2023, 3, 31, 0, 0)},
		{"31 day before Feb 28", "monthly:31", nil, noAnchor, at(nil, 2023, 2, 27, 23, 59), at(nil, 2023, 1, 31, 0, 0), at(nil, 2023, 2, 28, 0, 0)},
		{"31 in April", "monthly:31", nil, noAnchor, at(nil, 2024, 4, 30, 0, 0), at(nil, 2024, 4, 30, 0, 0), at(nil, 2024, 5, 31, 0, 0)},
		{"31 just before April 30", "monthly:31", nil, noAnchor, at(nil, 2024, 4, 30, 0, 0).Add(-time.Nanosecond), at(nil, 2024, 3, 31, 0, 0), at(nil, 2024, 4, 30, 0, 0)},
		{"1 on boundary", "monthly:1", nil, noAnchor, at(nil, 2024, 3, 1, 0, 0), at(nil, 2024, 3, 1, 0, 0), at(nil, 2024, 4, 1, 0, 0)},
		{"1 day before", "monthly:1", nil, noAnchor, at(nil, 2024, 2, 29, 23, 59), at(nil, 2024, 2, 1, 0, 0), at(nil, 2024, 3, 1, 0, 0)},
		{"15 across year", "monthly:15", nil, noAnchor, at(nil, 2024, 1, 14, 0, 0), at(nil, 2023, 12, 15, 0, 0), at(nil, 2024, 1, 15, 0, 0)},
		{"15 day after", "monthly:15", nil, noAnchor, at(nil, 2024, 1, 16, 0, 0), at(nil, 2024, 1, 15, 0, 0), at(nil, 2024, 2, 15, 0, 0)},
		{"last Feb 28 leap", "monthly:last", nil, noAnchor, at(nil, 2024, 2, 28, 0, 0), at(nil, 2024, 1, 31, 0, 0), at(nil, 2024, 2, 29, 0, 0)},
		{"last on Feb 29", "monthly:last", nil, noAnchor, at(nil, 2024, 2, 29, 12, 0), at(nil, 2024, 2, 29, 0, 0), at(nil, 2024, 3, 31, 0, 0)},
		{"last on Dec 31", "monthly:last", nil, noAnchor, at(nil, 2023, 12, 31, 0, 0), at(nil, 2023, 12, 31, 0, 0), at(nil, 2024, 1, 31, 0, 0)},

		// Timezones: the UTC instant is on a different local day.
		{"Tokyo already next day", "monthly:1", tokyo, noAnchor, at(nil, 2024, 2, 29, 16, 0), at(tokyo, 2024, 3, 1, 0, 0), at(tokyo, 2024, 4, 1, 0, 0)},
		{"New York still previous day", "monthly:1", ny, noAnchor, at(nil, 2024, 3, 1, 3, 0), at(ny, 2024, 2, 1, 0, 0), at(ny, 2024, 3, 1, 0, 0)},
		{"Tokyo weekly", "weekly:mon", tokyo, noAnchor, at(nil, 2024, 1, 7, 15, 30), at(tokyo, 2024, 1, 8, 0, 0), at(tokyo, 2024, 1, 15, 0, 0)},
		{"Tokyo yearly", "yearly:1-1", tokyo, noAnchor, at(nil, 2024, 12, 31, 23, 0), at(tokyo, 2025, 1, 1, 0, 0), at(tokyo, 2026, 1, 1, 0, 0)},

		// DST: boundaries stay at local midnight on both sides of a shift.
		{"NY spring forward week", "weekly:sun", ny, noAnchor, at(nil, 2024, 3, 10, 12, 0), at(nil, 2024, 3, 10, 5, 0), at(nil, 2024, 3, 17, 4, 0)},
		{"NY fall back month", "monthly:1", ny, noAnchor, at(nil, 2024, 11, 15, 0, 0), at(nil, 2024, 11, 1, 4, 0), at(nil, 2024, 12, 1, 5, 0)},
		{"NY fall back day", "weekly:sun", ny, noAnchor, at(ny, 2024, 11, 3, 23, 0), at(nil, 2024, 11, 3, 4, 0), at(nil, 2024, 11, 10, 5, 0)},
		// Sao Paulo 2018-11-04: midnight did not exist (00:00 -03 -> 01:00 -02).
		{"Sao Paulo missing midnight", "weekly:sun", sp, noAnchor, at(nil, 2018, 11, 4, 12, 0), at(nil, 2018, 11, 4, 3, 0), at(nil, 2018, 11, 11, 2, 0)},

		// weekly.
		{"weekly today is the day", "weekly:mon", nil, noAnchor, at(nil, 2024, 1, 1, 0, 0), at(nil, 2024, 1, 1, 0, 0), at(nil, 2024, 1, 8, 0, 0)},
		{"weekly mid-week", "weekly:mon", nil, noAnchor, at(nil, 2024, 1, 3, 9, 0), at(nil, 2024, 1, 1, 0, 0), at(nil, 2024, 1, 8, 0, 0)},
		{"weekly day before", "weekly:mon", nil, noAnchor, at(nil, 2024, 1, 7, 23, 59), at(nil, 2024, 1, 1, 0, 0), at(nil, 2024, 1, 8, 0, 0)},
		{"weekly full name across year", "weekly:Sunday", nil, noAnchor, at(nil, 2024, 1, 6, 0, 0), at(nil, 2023, 12, 31, 0, 0), at(nil, 2024, 1, 7, 0, 0)},

		// nth_weekday.
		{"2nd tue not reached", "nth_weekday:2:tue", nil, noAnchor, at(nil, 2024, 1, 8, 0, 0), at(nil, 2023, 12, 12, 0, 0), at(nil, 2024, 1, 9, 0, 0)},
		{"2nd tue on day", "nth_weekday:2:tue", nil, noAnchor, at(nil, 2024, 1, 9, 0, 0), at(nil, 2024, 1, 9, 0, 0), at(nil, 2024, 2, 13, 0, 0)},
		{"1st mon on the 1st", "nth_weekday:1:mon", nil, noAnchor, at(nil, 2024, 1, 1, 0, 0), at(nil, 2024, 1, 1, 0, 0), at(nil, 2024, 2, 5, 0, 0)},
		{"last fri before", "nth_weekday:last:fri", nil, noAnchor, at(nil, 2024, 2, 1, 0, 0), at(nil, 2024, 1, 26, 0, 0), at(nil, 2024, 2, 23, 0, 0)},
		{"last fri on day", "nth_weekday:last:fri", nil, noAnchor, at(nil, 2024, 2, 23, 0, 0), at(nil, 2024, 2, 23, 0, 0), at(nil, 2024, 3, 29, 0, 0)},
		{"5th fri missing in Feb", "nth_weekday:5:fri", nil, noAnchor, at(nil, 2024, 3, 10, 0, 0), at(nil, 2024, 2, 23, 0, 0), at(nil, 2024, 3, 29, 0, 0)},
		{"5th fri present", "nth_weekday:5:fri", nil, noAnchor, at(nil, 2024, 3, 29, 0, 0), at(nil, 2024, 3, 29, 0, 0), at(nil, 2024, 4, 26, 0, 0)},

		// yearly.
		{"2-29 after leap day", "yearly:2-29", nil, noAnchor, at(nil, 2024, 3, 1, 0, 0), at(nil, 2024, 2, 29, 0, 0), at(nil, 2025, 2, 28, 0, 0)},
		{"2-29 day before common", "yearly:2-29", nil, noAnchor, at(nil, 2025, 2, 27, 0, 0), at(nil, 2024, 2, 29, 0, 0), at(nil, 2025, 2, 28, 0, 0)},
		{"2-29 common year", "yearly:2-29", nil, noAnchor, at(nil, 2025, 6, 1, 0, 0), at(nil, 2025, 2, 28, 0, 0), at(nil, 2026, 2, 28, 0, 0)},
		{"2-29 Feb 28 leap", "yearly:2-29", nil, noAnchor, at(nil, 2028, 2, 28, 0, 0), at(nil, 2027, 2, 28, 0, 0), at(nil, 2028, 2, 29, 0, 0)},
		{"2-29 on leap day", "yearly:2-29", nil, noAnchor, at(nil, 2028, 2, 29, 0, 0), at(nil, 2028, 2, 29, 0, 0), at(nil, 2029, 2, 28, 0, 0)},

		// quarterly.
		{"quarterly mid", "quarterly:1", nil, noAnchor, at(nil, 2024, 5, 20, 0, 0), at(nil, 2024, 4, 1, 0, 0), at(nil, 2024, 7, 1, 0, 0)},
		{"quarterly on boundary", "quarterly:1", nil, noAnchor, at(nil, 2024, 1, 1, 0, 0), at(nil, 2024, 1, 1, 0, 0), at(nil, 2024, 4, 1, 0, 0)},
		{"quarterly day before", "quarterly:1", nil, noAnchor, at(nil, 2023, 12, 31, 23, 59), at(nil, 2023, 10, 1, 0, 0), at(nil, 2024, 1, 1, 0, 0)},
		{"quarterly 31 clamps April", "quarterly:31", nil, noAnchor, at(nil, 2024, 5, 1, 0, 0), at(nil, 2024, 4, 30, 0, 0), at(nil, 2024, 7, 31, 0, 0)},
		{"quarterly 31 not reached", "quarterly:31", nil, noAnchor, at(nil, 2024, 4, 15, 0, 0), at(nil, 2024, 1, 31, 0, 0), at(nil, 2024, 4, 30, 0, 0)},
		{"quarterly 31 across year", "quarterly:31", nil, noAnchor, at(nil, 2024, 1, 15, 0, 0), at(nil, 2023, 10, 31, 0, 0), at(nil, 2024, 1, 31, 0, 0)},

		// monthly:anchor.
		{"anchor 31 Feb leap", "monthly:anchor", nil, at(nil, 2024, 1, 31, 10, 0), at(nil, 2024, 2, 15, 0, 0), at(nil, 2024, 1, 31, 0, 0), at(nil, 2024, 2, 29, 0, 0)},
		{"anchor 31 on Feb 29", "monthly:anchor", nil, at(nil, 2024, 1, 31, 10, 0), at(nil, 2024, 2, 29, 0, 0), at(nil, 2024, 2, 29, 0, 0), at(nil, 2024, 3, 31, 0, 0)},
		{"anchor 31 April", "monthly:anchor", nil, at(nil, 2024, 1, 31, 10, 0), at(nil, 2024, 4, 30, 1, 0), at(nil, 2024, 4, 30, 0, 0), at(nil, 2024, 5, 31, 0, 0)},
		{"anchor 31 common Feb", "monthly:anchor", nil, at(nil, 2024, 1, 31, 10, 0), at(nil, 2023, 3, 1, 0, 0), at(nil, 2023, 2, 28, 0, 0), at(nil, 2023, 3, 31, 0, 0)},
		{"anchor 30 Feb", "monthly:anchor", nil, at(nil, 2023, 11, 30, 0, 0), at(nil, 2024, 2, 29, 0, 0), at(nil, 2024, 2, 29, 0, 0), at(nil, 2024, 3, 30, 0, 0)},
		{"anchor 30 day before", "monthly:anchor", nil, at(nil, 2023, 11, 30, 0, 0), at(nil, 2024, 3, 29, 23, 0), at(nil, 2024, 2, 29, 0, 0), at(nil, 2024, 3, 30, 0, 0)},
		{"anchor 30 on day", "monthly:anchor", nil, at(nil, 2023, 11, 30, 0, 0), at(nil, 2024, 3, 30, 0, 0), at(nil, 2024, 3, 30, 0, 0), at(nil, 2024, 4, 30, 0, 0)},
		{"anchor 30 in 31-day month", "monthly:anchor", nil, at(nil, 2023, 11, 30, 0, 0), at(nil, 2024, 5, 31, 0, 0), at(nil, 2024, 5, 30, 0, 0), at(nil, 2024, 6, 30, 0, 0)},
		// The anchor's day is read in loc: Jan 31 20:00 UTC is Feb 1 in Tokyo.
		{"anchor day in loc", "monthly:anchor", tokyo, at(nil, 2024, 1, 31, 20, 0), at(nil, 2024, 3, 15, 0, 0), at(tokyo, 2024, 3, 1, 0, 0), at(tokyo, 2024, 4, 1, 0, 0)},
		{"zero anchor is day 1", "monthly:anchor", ny, noAnchor, at(ny, 2024, 3, 15, 0, 0), at(ny, 2024, 3, 1, 0, 0), at(ny, 2024, 4, 1, 0, 0)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sch := mustParse(t, tc.sch)
			start := sch.Start(tc.now, tc.loc, tc.anchor)
			next := sch.Next(tc.now, tc.loc, tc.anchor)
			if !start.Equal(tc.start) {
				t.Errorf("Start(%v) = %v, want %v", tc.now, start, tc.start)
			}
			if !next.Equal(tc.nxt) {
				t.Errorf("Next(%v) = %v, want %v", tc.now, next, tc.nxt)
			}
			if !next.After(tc.now) {
				t.Errorf("Next(%v) = %v is not after now", tc.now, next)
			}
			if s := sch.Start(next, tc.loc, tc.anchor); !s.Equal(next) {
				t.Errorf("Start(Next) = %v, want %v", s, next)
			}
		})
	}
}

func TestZeroSchedule(t *testing.T) {
	var s Schedule
	now := time.Now()
	if !s.IsZero() || s.String() != "" || !s.Start(now, nil, now).IsZero() || !s.Next(now, nil, now).IsZero() {
		t.Fatal("zero Schedule must be inert")
	}
}

// TestScheduleProperties checks Start(now) <= now < Next(now), idempotence
// and Start(Next) == Next for random instants, including zones with odd DST
// (midnight transitions, 30-minute shifts, a skipped day in Apia).
func TestScheduleProperties(t *testing.T) {
	schedules := []string{
		"monthly:1", "monthly:15", "monthly:29", "monthly:30", "monthly:31", "monthly:last", "monthly:anchor",
		"weekly:mon", "weekly:wed", "weekly:sun",
		"nth_weekday:1:mon", "nth_weekday:3:thu", "nth_weekday:4:sat", "nth_weekday:5:fri", "nth_weekday:last:sun",
		"yearly:1-1", "yearly:2-29", "yearly:12-31", "quarterly:1", "quarterly:31",
	}
	zones := []string{"UTC", "America/New_York", "Asia/Tokyo", "America/Sao_Paulo", "America/Santiago",
		"America/Havana", "Asia/Beirut", "Australia/Lord_Howe", "Asia/Kathmandu", "Pacific/Apia", "Pacific/Kiritimati"}
	rng := rand.New(rand.NewPCG(1, 2))
	lo, hi := at(nil, 1970, 1, 1, 0, 0).Unix(), at(nil, 2100, 1, 1, 0, 0).Unix()
	random := func() time.Time { return time.Unix(lo+rng.Int64N(hi-lo), rng.Int64N(1e9)) }
	check := func(text string, sch Schedule, zone string, loc *time.Location, now, anchor time.Time) {
		t.Helper()
		start, next := sch.Start(now, loc, anchor), sch.Next(now, loc, anchor)
		if start.After(now) || !next.After(now) {
			t.Fatalf("%s %s: now %v: start %v next %v", text, zone, now, start, next)
		}
		if s := sch.Start(start, loc, anchor); !s.Equal(start) {
			t.Fatalf("%s %s: Start not idempotent at %v: %v then %v", text, zone, now, start, s)
		}
		if s := sch.Start(next, loc, anchor); !s.Equal(next) {
			t.Fatalf("%s %s: Start(Next(%v)) = %v, want %v", text, zone, now, s, next)
		}
		if n := sch.Next(start, loc, anchor); !n.Equal(next) {
			t.Fatalf("%s %s: Next(Start(%v)) = %v, want %v", text, zone, now, n, next)
		}
	}
	for _, zone := range zones {
		loc := mustLoc(t, zone)
		for _, text := range schedules {
			sch := mustParse(t, text)
			for range 400 {
				check(text, sch, zone, loc, random(), random())
			}
		}
	}
	// Dense scans over a skipped midnight (Sao Paulo) and a skipped day
	// (Apia jumped from 2011-12-29 to 2011-12-31).
	scans := []struct {
		zone     string
		from, to time.Time
	}{
		{"America/Sao_Paulo", at(nil, 2018, 10, 1, 0, 0), at(nil, 2018, 12, 1, 0, 0)},
		{"Pacific/Apia", at(nil, 2011, 11, 25, 0, 0), at(nil, 2012, 1, 5, 0, 0)},
	}
	for _, sc := range scans {
		loc := mustLoc(t, sc.zone)
		for _, text := range schedules {
			sch := mustParse(t, text)
			anchor := at(loc, 2011, 1, 30, 12, 0)
			for now := sc.from; now.Before(sc.to); now = now.Add(17 * time.Minute) {
				check(text, sch, sc.zone, loc, now, anchor)
			}
		}
	}
}

func FuzzParseSchedule(f *testing.F) {
	for _, s := range []string{"", "monthly:1", "monthly:last", "monthly:anchor", "weekly:Mon", "nth_weekday:last:fri",
		"nth_weekday:5:sunday", "yearly:2-29", "yearly:13-1", "quarterly:31", "monthly:32", "garbage", "a:b:c:d", "yearly:-"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		sch, err := ParseSchedule(in)
		if err != nil {
			if !errors.Is(err, ErrInvalidSchedule) {
				t.Fatalf("error %v does not wrap ErrInvalidSchedule", err)
			}
			if !strings.Contains(err.Error(), strconv.Quote(in)) {
				t.Fatalf("error %q does not quote the input", err)
			}
			return
		}
		again, err := ParseSchedule(sch.String())
		if err != nil || again != sch {
			t.Fatalf("%q: String() %q re-parses to %v, %v", in, sch.String(), again, err)
		}
	})
}
