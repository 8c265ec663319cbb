// Package rating prices credits: it turns units of a credit into runes (the engine's common
// currency, 1 rune = 1 USD by default) and back, along a credit's pricing curve (flat,
// tiered, volume, stairstep) and through the policy's exchange table.
//
// The numbers follow the reference engine (Limitr 0.7.0, Credit.price_of / quantity_for and
// Exchange.resolve / to_runes / from_runes) but use exact decimals instead of float64.
//
// # Positions
//
// A curve is defined over billable units: the units past whatever a plan includes. A
// position is where a quantity starts on that curve: 0 is the first billable unit and a
// negative position is still inside the included amount. Included units are priced
// linearly at the first tier's unit rate (tiered, volume) or are free (stairstep), so a
// spend cap that counts raw consumption still sees them.
//
// # Rounding
//
// Division is the single rounding point. A non-terminating quotient is rounded half-even
// to 19 significant digits by num.Calc.Quo: the budget ÷ unit rate in QuantityFor (one
// division per call, in the band where the budget ends) and the ÷ exchange factor in
// FromRunes. Additions, subtractions and multiplications are exact whenever the result
// fits in 19 significant digits, which policy-sized amounts do (only beyond that would the
// decimal type drop fractional digits, half-even); losing integer digits is never silent
// and is returned as num.ErrOutOfRange. So PriceOf is exact and additive:
// PriceOf(a, p) + PriceOf(b, p+a) == PriceOf(a+b, p) for every model.
//
// All types are immutable after construction and safe for concurrent use.
package rating

import (
	"errors"
	"fmt"

	"github.com/limitr/limitr/internal/num"
)

// UnboundedQuantity is what QuantityFor returns when a budget reaches a band where every
// further unit is already paid for (the top band of a stairstep curve, a free last tier, a
// free flat price). The reference engine uses the same finite stand-in (1e15) for infinity.
var UnboundedQuantity = num.MustParse("1000000000000000")

// ErrNoPrice reports that there is no way to turn a credit into runes or back: the name
// does not resolve through the exchange table, the curve has no tiers, or the inverse is
// undefined (a negative budget on a stairstep curve, a zero exchange factor).
var ErrNoPrice = errors.New("no price path")

// Model is a credit's pricing model.
type Model uint8

// Pricing models. The zero value is Flat, the policy default.
const (
	// Flat charges one price per unit regardless of volume.
	Flat Model = iota
	// Tiered (graduated) charges each band's units at that band's rate, like tax brackets.
	Tiered
	// Volume charges every unit at the rate of the band the total falls into.
	Volume
	// Stairstep charges the fixed fee of the band the total falls into.
	Stairstep
)

var modelNames = [...]string{Flat: "flat", Tiered: "tiered", Volume: "volume", Stairstep: "stairstep"}

// String returns the policy spelling of the model.
func (m Model) String() string {
	if int(m) < len(modelNames) {
		return modelNames[m]
	}
	return fmt.Sprintf("Model(%d)", uint8(m))
}

// ParseModel reads a policy's pricing_model ("" means flat).
func ParseModel(s string) (Model, error) {
	if s == "" {
		return Flat, nil
	}
	for m, name := range modelNames {
		if name == s {
			return Model(m), nil
		}
	}
	return Flat, fmt.Errorf("unknown pricing model %q: want flat, tiered, volume or stairstep", s)
}

// Tier is one band of a curve. Bands are (previous UpTo, UpTo]; the first band starts at 0.
type Tier struct {
	// UpTo is the band's inclusive upper bound; nil means unbounded and must come last.
	UpTo *num.Dec
	// Price is the per-unit rate (tiered, volume) or the band's whole fee (stairstep).
	Price num.Dec
}

// Curve is a credit's pricing curve in runes per unit.
//
// Tiers must be sorted by UpTo with the unbounded tier last (policy validation does that,
// as the reference's valid() does). A non-flat curve without tiers has no price: its
// methods return ErrNoPrice.
type Curve struct {
	Model Model
	// Price is the flat per-unit price; unused by the other models.
	Price num.Dec
	// Tiers are the bands of a tiered, volume or stairstep curve.
	Tiers []Tier
}

// Priced reports whether the curve can price anything: always for flat, and when it has
// tiers for the other models.
func (c Curve) Priced() bool { return c.Model == Flat || len(c.Tiers) > 0 }

// PriceOf returns the runes for qty units starting at billable position `position`.
//
// A negative qty is a refund: it walks back from position and the result is negative.
//   - Flat: qty × price; position is irrelevant.
//   - Tiered: graduated; each band's units at that band's rate, units at negative
//     positions at the first tier's rate.
//   - Volume: total(position+qty) − total(position) where total(n) = n × rate(band(n)) and,
//     for n ≤ 0, n × first rate. It is negative when the step crosses into a cheaper band.
//   - Stairstep: total(position+qty) − total(position) where total(n) = fee(band(n)) and 0
//     for n ≤ 0.
//
// It does not allocate.
func (c Curve) PriceOf(qty, position num.Dec) (num.Dec, error) {
	var k num.Calc
	var p num.Dec
	switch {
	case c.Model == Flat:
		p = k.Mul(qty, c.Price)
	case len(c.Tiers) == 0:
		return num.Zero, ErrNoPrice
	case c.Model == Tiered:
		p = c.graduated(&k, qty, position)
	case c.Model == Volume || c.Model == Stairstep:
		p = k.Sub(c.total(&k, k.Add(position, qty)), c.total(&k, position))
	default:
		return num.Zero, fmt.Errorf("%w: pricing model %v", ErrNoPrice, c.Model)
	}
	if k.Err != nil {
		return num.Zero, k.Err
	}
	return p, nil
}

// graduated walks the tiered bands from position over qty units, slice by slice, so the
// result is a sum of exact slice prices (no subtraction of large totals).
func (c *Curve) graduated(k *num.Calc, qty, position num.Dec) num.Dec {
	sign := false
	if qty.IsNeg() {
		// A refund prices the same units forward from where it ends, negated.
		sign = true
		position = k.Add(position, qty)
		qty = qty.Neg()
	}
	total := num.Zero
	cur := position
	end := k.Add(position, qty)
	if cur.IsNeg() {
		top := num.Min(end, num.Zero)
		total = k.Mul(k.Sub(top, cur), c.Tiers[0].Price)
		cur = top
	}
	prev := num.Zero
	for i := range c.Tiers {
		if cur.Cmp(end) >= 0 {
			break
		}
		t := &c.Tiers[i]
		if t.UpTo == nil || cur.Less(*t.UpTo) {
			sliceEnd := end
			if t.UpTo != nil {
				sliceEnd = num.Min(end, *t.UpTo)
			}
			total = k.Add(total, k.Mul(k.Sub(sliceEnd, num.Max(cur, prev)), t.Price))
			cur = sliceEnd
		}
		if t.UpTo != nil {
			prev = *t.UpTo
		}
	}
	if sign {
		return total.Neg()
	}
	return total
}

// band returns the tier containing n (n > 0): the first whose UpTo is nil or ≥ n.
func (c *Curve) band(n num.Dec) *Tier {
	for i := range c.Tiers {
		t := &c.Tiers[i]
		if t.UpTo == nil || n.Cmp(*t.UpTo) <= 0 {
			return t
		}
	}
	return &c.Tiers[len(c.Tiers)-1]
}

// total is the runes for the cumulative billable quantity n (from 0 up to n) of a
// non-flat curve with at least one tier.
func (c *Curve) total(k *num.Calc, n num.Dec) num.Dec {
	if !n.IsPos() {
		if c.Model == Stairstep {
			return num.Zero
		}
		return k.Mul(n, c.Tiers[0].Price)
	}
	switch c.Model {
	case Tiered:
		total, prev := num.Zero, num.Zero
		for i := range c.Tiers {
			t := &c.Tiers[i]
			if t.UpTo == nil || n.Cmp(*t.UpTo) <= 0 {
				return k.Add(total, k.Mul(k.Sub(n, prev), t.Price))
			}
			total = k.Add(total, k.Mul(k.Sub(*t.UpTo, prev), t.Price))
			prev = *t.UpTo
		}
		return total
	case Volume:
		return k.Mul(n, c.band(n).Price)
	default: // Stairstep
		return c.band(n).Price
	}
}

// QuantityFor is the inverse of PriceOf: how many units `runes` buys starting at billable
// position `position`.
//
// It walks forward band by band and stops where the budget runs out. A band whose entry
// jump it cannot afford (a stairstep fee, a volume reprice of the units so far) is not
// entered, so the answer is the units up to that band's start. When the budget reaches a
// band with no upper bound and no per-unit cost (stairstep top band, a free last tier) it
// returns UnboundedQuantity (absolute, not relative to position), as does a flat curve
// with price 0 for a positive budget.
//
// Zero runes buy 0 units. Negative runes (a refund) convert linearly, as in the
// reference: runes ÷ price for flat, runes ÷ first tier rate for tiered and volume;
// stairstep, or a zero rate, has no inverse for them and returns ErrNoPrice.
//
// The division by the unit rate is the only rounding point (half-even, 19 significant
// digits). It does not allocate.
func (c Curve) QuantityFor(runes, position num.Dec) (num.Dec, error) {
	var k num.Calc
	if c.Model == Flat {
		switch {
		case runes.IsZero():
			return num.Zero, nil
		case c.Price.IsPos():
			q := k.Quo(runes, c.Price)
			return q, k.Err
		case c.Price.IsZero() && runes.IsPos():
			return UnboundedQuantity, nil
		default:
			return num.Zero, ErrNoPrice
		}
	}
	if len(c.Tiers) == 0 || c.Model > Stairstep {
		return num.Zero, ErrNoPrice
	}
	if runes.IsZero() {
		return num.Zero, nil
	}
	if runes.IsNeg() {
		rate := c.Tiers[0].Price
		if c.Model == Stairstep || !rate.IsPos() {
			return num.Zero, ErrNoPrice
		}
		q := k.Quo(runes, rate)
		return q, k.Err
	}
	q, unbounded := c.walk(&k, runes, position)
	if k.Err != nil {
		return num.Zero, k.Err
	}
	if unbounded {
		return UnboundedQuantity, nil
	}
	return q, nil
}

// walk is QuantityFor's forward walk for a positive budget on a tiered curve. Each
// segment (cur, next] costs an entry jump plus a unit slope.
func (c *Curve) walk(k *num.Calc, runes, position num.Dec) (q num.Dec, unbounded bool) {
	cur := position
	spent := num.Zero
	// Every iteration either returns or moves cur strictly forward to the next breakpoint
	// (0, then each tier's UpTo), so the loop ends after at most len(Tiers)+1 rounds. The
	// bound is explicit so a malformed curve cannot spin.
	for range len(c.Tiers) + 2 {
		// Next breakpoint above cur: 0 (end of the included units), then each UpTo.
		var next *num.Dec
		if cur.IsNeg() {
			next = &num.Zero
		} else {
			for i := range c.Tiers {
				if u := c.Tiers[i].UpTo; u != nil && u.Cmp(cur) > 0 {
					next = u
					break
				}
			}
		}

		slope, entry := num.Zero, num.Zero
		if cur.IsNeg() {
			if c.Model != Stairstep {
				slope = c.Tiers[0].Price
			}
		} else {
			var t *Tier
			if next != nil {
				t = c.band(*next)
			} else {
				t = c.band(k.Add(cur, num.One))
			}
			switch c.Model {
			case Tiered:
				slope = t.Price
			case Volume:
				// Entering the band reprices every unit so far at its rate.
				slope = t.Price
				entry = k.Sub(k.Mul(cur, t.Price), c.total(k, cur))
			default: // Stairstep: pay the difference to this band's fee.
				entry = k.Sub(t.Price, c.total(k, cur))
			}
		}

		if k.Add(spent, entry).Cmp(runes) > 0 {
			return k.Sub(cur, position), false // can't afford to enter this band
		}
		spent = k.Add(spent, entry)

		if slope.IsPos() {
			// Compare costs rather than positions so passing through a band takes a
			// multiplication; the one division happens in the band where the budget ends.
			left := k.Sub(runes, spent)
			var segment num.Dec
			if next != nil {
				segment = k.Mul(k.Sub(*next, cur), slope)
			}
			if next == nil || left.Cmp(segment) <= 0 {
				return k.Sub(k.Add(cur, k.Quo(left, slope)), position), false
			}
			spent = k.Add(spent, segment)
		} else if next == nil {
			return num.Zero, true
		}
		cur = *next
		if k.Err != nil {
			return num.Zero, false
		}
	}
	return k.Sub(cur, position), false
}
