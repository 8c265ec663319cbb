package evaluate

import (
	"time"

	"github.com/google/uuid"

	"github.com/limitr/limitr/internal/aggregate"
)

// pacer spaces the evaluations of each customer at least interval apart. A customer
// touched again before its turn waits (once, however many batches touch it
// meanwhile); one not evaluated within the interval is due at once. It is used by
// Run's goroutine only.
type pacer struct {
	interval time.Duration
	last     map[uuid.UUID]time.Time // when each customer was last evaluated, within interval
	waiting  map[uuid.UUID]uuid.UUID // customer → environment, touched and not yet evaluated
}

func newPacer(interval time.Duration) *pacer {
	return &pacer{interval: interval, last: map[uuid.UUID]time.Time{}, waiting: map[uuid.UUID]uuid.UUID{}}
}

func (p *pacer) add(ts []aggregate.Touched) {
	for _, t := range ts {
		p.waiting[t.CustomerUID] = t.EnvironmentID
	}
}

// take removes and returns, by environment, the waiting customers whose turn has
// come at now, and records them as evaluated now.
func (p *pacer) take(now time.Time) map[uuid.UUID][]uuid.UUID {
	for uid, at := range p.last {
		if now.Sub(at) >= p.interval {
			delete(p.last, uid)
		}
	}
	out := map[uuid.UUID][]uuid.UUID{}
	for uid, env := range p.waiting {
		if _, recent := p.last[uid]; recent {
			continue
		}
		out[env] = append(out[env], uid)
		p.last[uid] = now
		delete(p.waiting, uid)
	}
	return out
}

// nextDue is how long until the first waiting customer's turn (false: none waits).
func (p *pacer) nextDue(now time.Time) (time.Duration, bool) {
	if len(p.waiting) == 0 {
		return 0, false
	}
	var first time.Time
	for uid := range p.waiting {
		at, recent := p.last[uid]
		if !recent {
			return 0, true
		}
		if first.IsZero() || at.Before(first) {
			first = at
		}
	}
	return max(first.Add(p.interval).Sub(now), 0), true
}
