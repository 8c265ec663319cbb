// Package burnrate holds the projection rule shared by the engine's burn-rate reads
// (ProjectedExhaustion) and the control plane's forecast_exceeds_limit alert: when
// what is left runs out at a rate.
package burnrate

import (
	"math"
	"time"
)

// Exhaustion is when left units run out from now at perMs units per millisecond. It is
// the zero time when they never do: nothing left, no rate or a falling one, or a
// moment past what time.Time holds.
func Exhaustion(now time.Time, left, perMs float64) time.Time {
	if !(left > 0) || !(perMs > 0) || math.IsInf(left, 0) || math.IsInf(perMs, 0) {
		return time.Time{}
	}
	ms := left / perMs
	if ms >= float64(math.MaxInt64/int64(time.Millisecond)) {
		return time.Time{}
	}
	at := now.Add(time.Duration(ms * float64(time.Millisecond)))
	if at.Before(now) {
		return time.Time{}
	}
	return at.UTC()
}
