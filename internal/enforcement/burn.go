package enforcement

import (
	"math"
	"time"

	"github.com/limitr/limitr/internal/burnrate"
	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/policies"
)

// burn is a meter's recent consumption: the amounts and times of the last three calls
// that moved it in this period, as Limitr's meter history keeps them, plus a smoothed
// rate. It feeds the burn-rate reads (Rate, Acceleration, ProjectedExhaustion) and is
// kept in 40 bytes inline in the meter, so a warm call updates it without allocating.
// Amounts are kept in single precision (about 7 digits), enough for an estimate;
// decisions never read them.
type burn struct {
	last  int64      // unix milliseconds of the newest sample
	gaps  [2]uint32  // milliseconds from the oldest to the middle sample, and from the middle to the newest
	delta [3]float32 // oldest first
	ewma  float32    // smoothed rate, units per millisecond; set from the second sample on
	n     uint8
}

// push records a call of delta units at nowMs. Calls in the same millisecond as the
// newest sample add to it: Limitr records them apart and then reads a zero rate.
func (b *burn) push(nowMs int64, delta float32, alpha float32) {
	if b.n > 0 && nowMs <= b.last {
		b.delta[b.n-1] += delta
	} else {
		switch b.n {
		case 3:
			b.delta[0], b.delta[1], b.gaps[0] = b.delta[1], b.delta[2], b.gaps[1]
			b.delta[2], b.gaps[1] = delta, gap(nowMs-b.last)
		case 2:
			b.delta[2], b.gaps[1] = delta, gap(nowMs-b.last)
			b.n = 3
		case 1:
			b.delta[1], b.gaps[0] = delta, gap(nowMs-b.last)
			b.n = 2
		default:
			b.delta[0], b.n = delta, 1
		}
		b.last = nowMs
	}
	if b.n < 2 {
		return
	}
	r := float32(b.rate())
	if b.n == 2 && b.ewma == 0 {
		// Seeded with the first rate there is; Limitr seeds it with 0, which makes a
		// smoothed projection far too late for the first calls.
		b.ewma = r
		return
	}
	b.ewma = alpha*r + (1-alpha)*b.ewma
}

func gap(ms int64) uint32 {
	if ms > math.MaxUint32 {
		return math.MaxUint32
	}
	return uint32(ms)
}

// rate is units per millisecond: the newest call's amount over the time since the
// one before it (Limitr's rate).
func (b *burn) rate() float64 {
	switch {
	case b.n < 2:
		return 0
	case b.n == 2:
		return float64(b.delta[1]) / float64(b.gaps[0])
	}
	return float64(b.delta[2]) / float64(b.gaps[1])
}

// acceleration is how the rate changed between the last two calls, in units per
// millisecond per millisecond: (newest rate − previous rate) / time between them.
// Limitr subtracts the two rates without dividing by time (and pairs each amount with
// the wrong interval); this is the quantity its documentation describes.
func (b *burn) acceleration() float64 {
	if b.n < 3 || b.gaps[0] == 0 || b.gaps[1] == 0 {
		return 0
	}
	newest := float64(b.delta[2]) / float64(b.gaps[1])
	previous := float64(b.delta[1]) / float64(b.gaps[0])
	return (newest - previous) / float64(b.gaps[1])
}

// toFloat32 converts a decimal without formatting it: the hot path calls it.
func toFloat32(d num.Dec) float32 {
	f := float64(d.Coef()) / math.Pow10(d.Scale())
	if d.IsNeg() {
		f = -f
	}
	return float32(f)
}

// BurnOptions tune the burn-rate reads.
type BurnOptions struct {
	ReadOptions
	// Smoothed projects with the exponentially smoothed rate (the limit's ewma_alpha)
	// instead of the newest one.
	Smoothed bool
}

// Rate returns the customer's current consumption rate of an entitlement, in units
// per millisecond (Limitr's rate): 0 without two calls this period.
func (e *Engine) Rate(id, ent string) (float64, error) {
	b, _, err := e.burnOf(id, ent, ReadOptions{})
	return b.rate(), err
}

// Acceleration returns how the consumption rate changed over the last three calls, in
// units per millisecond².
func (e *Engine) Acceleration(id, ent string) (float64, error) {
	b, _, err := e.burnOf(id, ent, ReadOptions{})
	return b.acceleration(), err
}

// ProjectedExhaustion returns when the limit (extended by grants unless
// WithoutGrants) is reached at the current rate: the zero time when it never is (no
// rate, a falling meter, already at the limit, or a limit without a value to reach:
// observe).
func (e *Engine) ProjectedExhaustion(id, ent string, o BurnOptions) (time.Time, error) {
	b, r, err := e.burnOf(id, ent, o.ReadOptions)
	if err != nil || r.limit == nil || r.limit.Mode == policies.Observe {
		return time.Time{}, err
	}
	rate := b.rate()
	if o.Smoothed && b.n >= 2 {
		rate = float64(b.ewma)
	}
	if rate <= 0 {
		return time.Time{}, nil
	}
	var c num.Calc
	left := c.Sub(r.extended(&c), r.value)
	if c.Err != nil || !left.IsPos() {
		return time.Time{}, c.Err
	}
	return burnrate.Exhaustion(e.now(), num.Float64(left), rate), nil
}

// burnOf reads a meter's burn history for the current period: empty while a reset is
// pending or before the first call.
func (e *Engine) burnOf(id, ent string, o ReadOptions) (burn, reading, error) {
	r, err := e.read(id, ent, o)
	if err != nil || !r.meter || r.pending {
		return burn{}, r, err
	}
	p := e.policy.Load()
	res, err := e.resolve(p, id, ent)
	if err != nil || res.ce == nil {
		return burn{}, r, err
	}
	res.owner.mu.Lock()
	defer res.owner.mu.Unlock()
	m := res.owner.meter(res.ce.Name)
	if m == nil {
		return burn{}, r, nil
	}
	return m.burn, r, nil
}
