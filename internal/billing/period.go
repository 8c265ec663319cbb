package billing

import (
	"time"

	"github.com/limitr/limitr/internal/period"
)

// monthlyAnchor is the schedule billing periods follow: monthly on the anchor's day
// (clamped to the month's end), at local midnight in the customer's time zone; the
// same rule as a limit's `reset_sch: monthly:anchor`, so such limits and billing
// periods line up.
var monthlyAnchor = func() period.Schedule {
	s, err := period.ParseSchedule("monthly:anchor")
	if err != nil {
		panic(err) // a constant that parses in period's own tests
	}
	return s
}()

// PeriodAt returns the billing period containing t for a customer created at created,
// anchored at anchor, in loc. The first period starts at creation.
func PeriodAt(t, created, anchor time.Time, loc *time.Location) Period {
	if loc == nil {
		loc = time.UTC
	}
	if t.Before(created) {
		t = created
	}
	start := monthlyAnchor.Start(t, loc, anchor)
	if start.Before(created) {
		start = created
	}
	return Period{Start: start.UTC(), End: monthlyAnchor.Next(t, loc, anchor).UTC()}
}

// NextPeriod returns the period after p.
func NextPeriod(p Period, created, anchor time.Time, loc *time.Location) Period {
	return PeriodAt(p.End, created, anchor, loc)
}
