// Package period computes lazy reset periods for limits and grants.
//
// Periods are never accumulated: every function derives the current period
// from an anchor and the call time, so idle stretches collapse into a single
// reset and results do not depend on how often they are asked for.
package period

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ErrInvalidSchedule is wrapped by every ParseSchedule error.
var ErrInvalidSchedule = errors.New("invalid reset schedule")

type scheduleError struct{ input, reason string }

func (e *scheduleError) Error() string {
	return fmt.Sprintf("reset schedule %q: %s", e.input, e.reason)
}

func (e *scheduleError) Unwrap() error { return ErrInvalidSchedule }

type kind uint8

const (
	kindNone kind = iota
	kindMonthly
	kindMonthlyLast
	kindMonthlyAnchor
	kindWeekly
	kindNthWeekday
	kindYearly
	kindQuarterly
)

// lastNth marks nth_weekday:last.
const lastNth = -1

// Schedule is a calendar reset schedule. The zero value means no schedule.
// Schedules are comparable with ==.
type Schedule struct {
	kind  kind
	day   int8 // monthly, quarterly, yearly: day of month 1..31
	nth   int8 // nth_weekday: 1..5 or lastNth
	month time.Month
	dow   time.Weekday
}

var weekdays = map[string]time.Weekday{
	"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday, "wed": time.Wednesday,
	"thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday,
	"sunday": time.Sunday, "monday": time.Monday, "tuesday": time.Tuesday, "wednesday": time.Wednesday,
	"thursday": time.Thursday, "friday": time.Friday, "saturday": time.Saturday,
}

// ParseSchedule parses a reset_sch value such as "monthly:1", "monthly:last",
// "monthly:anchor", "weekly:mon", "nth_weekday:2:tue", "nth_weekday:last:fri",
// "yearly:2-29" or "quarterly:15". Matching is case-insensitive and ignores
// surrounding whitespace. The empty string yields the zero Schedule, so
// that String() of the zero value round-trips.
func ParseSchedule(text string) (Schedule, error) {
	in := strings.ToLower(strings.TrimSpace(text))
	if in == "" {
		return Schedule{}, nil
	}
	fail := func(reason string) (Schedule, error) {
		return Schedule{}, &scheduleError{input: text, reason: reason}
	}
	name, rest, ok := strings.Cut(in, ":")
	if !ok {
		return fail(`expected "<kind>:<value>"`)
	}
	args := strings.Split(rest, ":")
	want := 1
	if name == "nth_weekday" {
		want = 2
	}
	switch name {
	case "monthly", "weekly", "nth_weekday", "yearly", "quarterly":
		if len(args) != want {
			return fail(fmt.Sprintf("%s takes %d field(s) after the kind, got %d", name, want, len(args)))
		}
	default:
		return fail(`unknown kind (want monthly, weekly, nth_weekday, yearly or quarterly)`)
	}

	switch name {
	case "monthly":
		switch args[0] {
		case "last":
			return Schedule{kind: kindMonthlyLast}, nil
		case "anchor":
			return Schedule{kind: kindMonthlyAnchor}, nil
		}
		d, ok := number(args[0], 1, 31)
		if !ok {
			return fail(`day must be 1..31, "last" or "anchor"`)
		}
		return Schedule{kind: kindMonthly, day: int8(d)}, nil
	case "weekly":
		dow, ok := weekdays[args[0]]
		if !ok {
			return fail("weekday must be mon..sun")
		}
		return Schedule{kind: kindWeekly, dow: dow}, nil
	case "nth_weekday":
		n, ok := number(args[0], 1, 5)
		if args[0] == "last" {
			n, ok = lastNth, true
		}
		if !ok {
			return fail(`occurrence must be 1..5 or "last"`)
		}
		dow, ok := weekdays[args[1]]
		if !ok {
			return fail("weekday must be mon..sun")
		}
		return Schedule{kind: kindNthWeekday, nth: int8(n), dow: dow}, nil
	case "yearly":
		ms, ds, ok := strings.Cut(args[0], "-")
		m, mok := number(ms, 1, 12)
		if !ok || !mok {
			return fail("expected month-day such as 1-31")
		}
		// February allows 29 so leap-day anniversaries can be expressed; they
		// clamp to Feb 28 in common years.
		d, ok := number(ds, 1, daysIn(2000, time.Month(m)))
		if !ok {
			return fail(fmt.Sprintf("day must be 1..%d for month %d", daysIn(2000, time.Month(m)), m))
		}
		return Schedule{kind: kindYearly, month: time.Month(m), day: int8(d)}, nil
	default: // quarterly
		d, ok := number(args[0], 1, 31)
		if !ok {
			return fail("day must be 1..31")
		}
		return Schedule{kind: kindQuarterly, day: int8(d)}, nil
	}
}

// number parses one or two ASCII digits in [lo, hi]. strconv.Atoi alone
// would also accept signs and arbitrarily long inputs.
func number(s string, lo, hi int) (int, bool) {
	if len(s) == 0 || len(s) > 2 || strings.Trim(s, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	return n, err == nil && n >= lo && n <= hi
}

// String returns the canonical form, which ParseSchedule maps back to s.
func (s Schedule) String() string {
	switch s.kind {
	case kindMonthly:
		return fmt.Sprintf("monthly:%d", s.day)
	case kindMonthlyLast:
		return "monthly:last"
	case kindMonthlyAnchor:
		return "monthly:anchor"
	case kindWeekly:
		return "weekly:" + dowName(s.dow)
	case kindNthWeekday:
		n := strconv.Itoa(int(s.nth))
		if s.nth == lastNth {
			n = "last"
		}
		return "nth_weekday:" + n + ":" + dowName(s.dow)
	case kindYearly:
		return fmt.Sprintf("yearly:%d-%d", s.month, s.day)
	case kindQuarterly:
		return fmt.Sprintf("quarterly:%d", s.day)
	}
	return ""
}

func dowName(d time.Weekday) string { return strings.ToLower(d.String()[:3]) }

// IsZero reports whether s is the zero (absent) schedule.
func (s Schedule) IsZero() bool { return s.kind == kindNone }

// UsesAnchor reports whether s depends on the customer's billing anchor.
func (s Schedule) UsesAnchor() bool { return s.kind == kindMonthlyAnchor }

// Start returns the start (local midnight in loc, returned in UTC) of the
// period containing now. anchor is only consulted by monthly:anchor; its
// day of month is taken in loc, and a zero anchor means day 1. The zero
// Schedule returns the zero time.
func (s Schedule) Start(now time.Time, loc *time.Location, anchor time.Time) time.Time {
	b := s.boundaries(now, loc, anchor)
	if b == nil {
		return time.Time{}
	}
	// Boundary 0 is in now's local week/month/quarter/year; it lies after now
	// only when this period's reset day has not been reached yet. Comparing
	// instants (not dates) keeps this right across DST oddities.
	k := 0
	for b(k).After(now) {
		k--
	}
	return b(k).UTC()
}

// Next returns the smallest period boundary strictly after now, i.e. the
// start of the following period. The zero Schedule returns the zero time.
func (s Schedule) Next(now time.Time, loc *time.Location, anchor time.Time) time.Time {
	b := s.boundaries(now, loc, anchor)
	if b == nil {
		return time.Time{}
	}
	k := 0
	for !b(k).After(now) {
		k++
	}
	return b(k).UTC()
}

// boundaries returns the period starts as a monotonic function of an
// index, with index 0 being the boundary inside now's local calendar unit.
func (s Schedule) boundaries(now time.Time, loc *time.Location, anchor time.Time) func(k int) time.Time {
	if s.kind == kindNone {
		return nil
	}
	if loc == nil {
		loc = time.UTC
	}
	local := now.In(loc)
	y, m, d := local.Date()
	if s.kind == kindWeekly {
		d -= (int(local.Weekday()) - int(s.dow) + 7) % 7
		// midnight normalises day overflow, so stepping by weeks is plain addition.
		return func(k int) time.Time { return midnight(y, m, d+7*k, loc) }
	}
	step, first := 1, m
	switch s.kind {
	case kindQuarterly:
		step, first = 3, m-(m-1)%3
	case kindYearly:
		step, first = 12, s.month
	}
	anchorDay := 1
	if s.kind == kindMonthlyAnchor && !anchor.IsZero() {
		anchorDay = anchor.In(loc).Day()
	}
	return func(k int) time.Time {
		yy, mm, _ := time.Date(y, first+time.Month(step*k), 1, 0, 0, 0, 0, time.UTC).Date()
		return midnight(yy, mm, s.dayIn(yy, mm, anchorDay), loc)
	}
}

// dayIn returns the reset day within month (y, m), clamped to the month.
func (s Schedule) dayIn(y int, m time.Month, anchorDay int) int {
	last := daysIn(y, m)
	switch s.kind {
	case kindMonthlyLast:
		return last
	case kindMonthlyAnchor:
		return min(anchorDay, last)
	case kindNthWeekday:
		if s.nth == lastNth {
			lastDow := time.Date(y, m, last, 0, 0, 0, 0, time.UTC).Weekday()
			return last - (int(lastDow)-int(s.dow)+7)%7
		}
		firstDow := time.Date(y, m, 1, 0, 0, 0, 0, time.UTC).Weekday()
		d := 1 + (int(s.dow)-int(firstDow)+7)%7 + 7*(int(s.nth)-1)
		if d > last {
			d -= 7 // a missing 5th occurrence falls back to the last one
		}
		return d
	}
	return min(int(s.day), last)
}

// midnight returns the first instant of the (normalised) local date in loc.
// Where a DST jump skips midnight, time.Date may resolve 00:00 to an instant
// on the previous local day; the day then really begins at the transition,
// which keeps every boundary on its own date (and Start idempotent).
func midnight(y int, m time.Month, d int, loc *time.Location) time.Time {
	y, m, d = time.Date(y, m, d, 0, 0, 0, 0, time.UTC).Date()
	t := time.Date(y, m, d, 0, 0, 0, 0, loc)
	if ty, tm, td := t.Date(); ty != y || tm != m || td != d {
		if _, end := t.ZoneBounds(); !end.IsZero() {
			return end
		}
	}
	return t
}

func daysIn(y int, m time.Month) int {
	return time.Date(y, m+1, 0, 0, 0, 0, 0, time.UTC).Day()
}
