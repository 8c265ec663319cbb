// Package ratelimit limits request rates per key (an API key id, a tenant),
// either in Redis, shared by every API replica, or in process.
//
// Both limiters implement GCRA (the generic cell rate algorithm), which
// behaves like a token bucket holding burst tokens and refilling at rate per
// period, but keeps a single timestamp per key: the theoretical arrival time
// (TAT) of the next request. A key whose TAT has passed is in the same state
// as a key never seen, so idle keys can simply expire.
package ratelimit

import (
	"context"
	"fmt"
	"time"
)

// Limiter decides whether one more request for key may proceed now.
type Limiter interface {
	Allow(ctx context.Context, key string) (Decision, error)
}

// Decision is the outcome of one Allow call.
type Decision struct {
	// Allowed reports whether the request may proceed; if so it was counted.
	Allowed bool
	// Limit is the number of requests allowed per Per.
	Limit int
	// Remaining is how many more requests would be allowed right now.
	Remaining int
	// RetryAfter is, when denied, how long until one request will be allowed.
	RetryAfter time.Duration
	// Per is the period Limit refers to.
	Per time.Duration
}

// gcra holds the parameters shared by both limiters.
type gcra struct {
	rate     int
	per      time.Duration
	burst    int
	interval time.Duration // emission interval: per / rate
}

// newGCRA validates the configuration. rate and per must be positive: a
// limiter without a rate is a programming error, so it panics. burst < 1
// means burst = rate.
func newGCRA(rate int, per time.Duration, burst int) gcra {
	if rate < 1 || per <= 0 {
		panic(fmt.Sprintf("ratelimit: invalid rate %d per %v", rate, per))
	}
	if burst < 1 {
		burst = rate
	}
	interval := per / time.Duration(rate)
	if interval < time.Microsecond {
		interval = time.Microsecond
	}
	return gcra{rate: rate, per: per, burst: burst, interval: interval}
}

// decide applies GCRA at now to a key whose stored TAT is tat (zero time or
// in the past for a fresh key). It returns the decision and the new TAT,
// which the caller stores only if the request is allowed.
func (g gcra) decide(now, tat time.Time) (Decision, time.Time) {
	d := Decision{Limit: g.rate, Per: g.per}
	if tat.Before(now) {
		tat = now
	}
	tolerance := g.interval * time.Duration(g.burst)
	newTAT := tat.Add(g.interval)
	allowAt := newTAT.Add(-tolerance)
	if now.Before(allowAt) {
		d.RetryAfter = allowAt.Sub(now)
		return d, tat
	}
	d.Allowed = true
	d.Remaining = int((tolerance - newTAT.Sub(now)) / g.interval)
	return d, newTAT
}
