package enforcement

import (
	"math"
	"time"

	"github.com/limitr/limitr/internal/burnrate"
	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/policies"
)

// burn is a meter's recent consumption, as Limitr's meter history keeps it (the last
// three calls that moved the meter in this period) reduced to what the burn-rate reads
// need. It lives inline in the meter in 24 bytes, so a warm call updates it without
// allocating, and a call in the same millisecond as the one before only adds its
// amount. Amounts and rates are kept in single precision (about 7 digits), enough for
// an estimate; decisions never read them.
type burn struct {
	last     int64   // unix milliseconds of the newest call
	gap      uint32  // low 30 bits: milliseconds from the call before to the newest; top 2: calls seen (0-3)
	delta    float32 // the newest call's amount (calls in its millisecond added)
	prevRate float32 // the rate the call before the newest made (from the third call)
	ewma     float32 // the smoothed rate up to the call before the newest (from the third call)
}

const (
	gapBits = 30
	gapMask = 1<<gapBits - 1
)

func (b *burn) n() uint32     { return b.gap >> gapBits }
func (b *burn) gapMs() uint32 { return b.gap & gapMask }

// push records a call of delta units at nowMs. Calls in the same millisecond as the
// newest add to it (Limitr records them apart and then reads a zero rate). A newest
// call is folded into the smoothed rate once the next one comes, when its amount is
// final.
func (b *burn) push(nowMs int64, delta float32, alpha float32) {
	n := b.n()
	if n > 0 && nowMs <= b.last {
		b.delta += delta
		return
	}
	if n >= 2 {
		r := b.delta / float32(b.gapMs())
		if n == 2 {
			// Seeded with the first rate there is; Limitr seeds it with 0, which makes
			// a smoothed projection far too late for the first calls.
			b.ewma = r
		} else {
			b.ewma = alpha*r + (1-alpha)*b.ewma
		}
		b.prevRate = r
	}
	gap := nowMs - b.last
	if n == 0 {
		gap = 0
	} else if gap > gapMask {
		gap = gapMask // 12 days: the rate is as good as 0 either way
	}
	b.last, b.delta, b.gap = nowMs, delta, min(n+1, 3)<<gapBits|uint32(gap)
}

// rateNow is units per millisecond: the newest call's amount over the time since the
// one before it (Limitr's rate).
func (b *burn) rateNow() float64 {
	if b.n() < 2 {
		return 0
	}
	return float64(b.delta) / float64(b.gapMs())
}

// acceleration is how the rate changed between the last two calls, in units per
// millisecond per millisecond: (newest rate − previous rate) / time between them.
// Limitr subtracts the two rates without dividing by time (and pairs each amount with
// the wrong interval); this is the quantity its documentation describes.
func (b *burn) acceleration() float64 {
	if b.n() < 3 {
		return 0
	}
	return (b.rateNow() - float64(b.prevRate)) / float64(b.gapMs())
}

// smoothed is the exponentially smoothed rate including the newest call.
func (b *burn) smoothed(alpha float32) float64 {
	switch b.n() {
	case 0, 1:
		return 0
	case 2:
		return b.rateNow()
	}
	return float64(alpha)*b.rateNow() + float64(1-alpha)*float64(b.ewma)
}

// toFloat32 converts a decimal without formatting it: the hot path calls it.
func toFloat32(d num.Dec) float32 {
	f := float64(d.Coef())
	if sc := d.Scale(); sc > 0 {
		f /= math.Pow10(sc)
	}
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
	return b.rateNow(), err
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
	rate := b.rateNow()
	if o.Smoothed {
		rate = b.smoothed(r.limit.EWMAAlphaF)
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
