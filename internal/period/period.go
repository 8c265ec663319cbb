package period

import "time"

// GridStart returns the start of the fixed-grid period containing now, for
// periods of length inc anchored at started. As in the reference engine a
// boundary instant belongs to the period it closes: elapsed == inc is still
// the first period. Instants before started, and inc <= 0, yield started.
func GridStart(started, now time.Time, inc time.Duration) time.Time {
	if inc <= 0 || !now.After(started) {
		return started
	}
	// ceil(elapsed/inc) - 1 == (elapsed-1)/inc for positive integers; the
	// multiplication cannot overflow because the result is at most elapsed.
	elapsed := now.Sub(started)
	return started.Add(inc * ((elapsed - 1) / inc))
}

// GridNext returns the start of the grid period after the one containing
// now. Because boundaries belong to the old period, at an exact boundary
// this equals now. inc <= 0 (never resets) yields the zero time.
func GridNext(started, now time.Time, inc time.Duration) time.Time {
	if inc <= 0 {
		return time.Time{}
	}
	return GridStart(started, now, inc).Add(inc)
}

// Spec describes how a limit resets: a duration grid (Every) or a calendar
// schedule. The two are meant to be exclusive; if both are set Every wins.
// The zero Spec never resets.
type Spec struct {
	Every    time.Duration
	Schedule Schedule
}

// IsZero reports whether sp never resets.
func (sp Spec) IsZero() bool { return sp.Every <= 0 && sp.Schedule.IsZero() }

// CurrentStart returns the start of the current period for a meter anchored
// at started. A meter that started inside the current calendar period keeps
// its own start, so creating it mid-period does not count as a reset.
func (sp Spec) CurrentStart(started, now time.Time, loc *time.Location, anchor time.Time) time.Time {
	switch {
	case sp.Every > 0:
		return GridStart(started, now, sp.Every)
	case !sp.Schedule.IsZero():
		if st := sp.Schedule.Start(now, loc, anchor); started.Before(st) {
			return st
		}
	}
	return started
}

// Pending reports whether a reset is due, i.e. the current period no longer
// starts at started.
func (sp Spec) Pending(started, now time.Time, loc *time.Location, anchor time.Time) bool {
	return !sp.CurrentStart(started, now, loc, anchor).Equal(started)
}

// NextReset returns the instant the current period ends. It is the zero
// time for a Spec that never resets. For schedules whose meter starts in
// the future, the first reset is the first boundary after started.
func (sp Spec) NextReset(started, now time.Time, loc *time.Location, anchor time.Time) time.Time {
	switch {
	case sp.Every > 0:
		return sp.CurrentStart(started, now, loc, anchor).Add(sp.Every)
	case !sp.Schedule.IsZero():
		if started.After(now) {
			now = started
		}
		return sp.Schedule.Next(now, loc, anchor)
	}
	return time.Time{}
}
