package rating

import (
	"github.com/limitr/limitr/internal/num"
)

// Built-in currency names. "rune" ends every chain; "usd" is 1 rune unless the policy
// gives it its own pair (as the reference's overridable `usd` field allows).
const (
	Rune = "rune"
	USD  = "usd"
)

// Pair is one exchange-table row: 1 Name = Value Currency.
type Pair struct {
	Name     string
	Value    num.Dec
	Currency string
}

// resolution is the precomputed answer for one name.
type resolution struct {
	factor num.Dec
	curve  *Curve // nil: factor is the rune value of one unit
}

// Exchange converts credits to runes and back. It is built once per policy and is
// read-only afterwards, so it is safe for concurrent use.
type Exchange struct {
	table map[string]resolution
}

// NewExchange builds the exchange from the policy's pairs and the curves of its priced
// credits (credits with a flat price or tiers; curves of non-flat models without tiers are
// treated as unpriced).
//
// Resolution of a name c walks pairs c → currency, multiplying their values, until it
// reaches "rune", giving (factor, nil): 1 c = factor runes. A name on the walk with no pair
// that is a priced credit ends it with (factor, that credit's curve): 1 c = factor units of
// that credit, which prices itself into runes. Pairs take precedence over credit prices.
// A pair named "rune" is display only and ignored. A cycle, a dead end (a name with neither
// pair nor price), or a factor that overflows leaves the name unresolvable.
//
// Later pairs with the same name replace earlier ones. The curves' tiers are copied.
func NewExchange(pairs []Pair, curves map[string]Curve) *Exchange {
	next := make(map[string]Pair, len(pairs)+1)
	next[USD] = Pair{Name: USD, Value: num.One, Currency: Rune}
	for _, p := range pairs {
		if p.Name == Rune {
			continue
		}
		next[p.Name] = p
	}
	priced := make(map[string]*Curve, len(curves))
	for name, c := range curves {
		if !c.Priced() {
			continue
		}
		c.Tiers = append([]Tier(nil), c.Tiers...)
		priced[name] = &c
	}

	x := &Exchange{table: make(map[string]resolution, len(next)+len(priced)+1)}
	x.table[Rune] = resolution{factor: num.One}
	visited := make(map[string]bool)
	resolve := func(c string) (resolution, bool) {
		clear(visited)
		var k num.Calc
		factor := num.One
		for c != Rune {
			if visited[c] {
				return resolution{}, false // cycle
			}
			visited[c] = true
			p, ok := next[c]
			if !ok {
				if curve := priced[c]; curve != nil {
					return resolution{factor: factor, curve: curve}, true
				}
				return resolution{}, false // dead end
			}
			factor = k.Mul(factor, p.Value)
			c = p.Currency
		}
		if k.Err != nil {
			return resolution{}, false
		}
		return resolution{factor: factor}, true
	}
	for name := range next {
		if r, ok := resolve(name); ok {
			x.table[name] = r
		}
	}
	for name := range priced {
		if _, done := next[name]; done {
			continue
		}
		x.table[name] = resolution{factor: num.One, curve: priced[name]}
	}
	return x
}

// Resolve returns how one unit of name turns into runes: factor runes when curve is nil,
// otherwise factor units of a credit priced by curve. ok is false for unknown and
// unresolvable names. The returned curve is shared and must not be modified.
func (x *Exchange) Resolve(name string) (factor num.Dec, curve *Curve, ok bool) {
	r, ok := x.table[name]
	return r.factor, r.curve, ok
}

// ToRunes returns the runes for v units of credit starting at billable position offset
// (in units of credit): v × factor, or curve.PriceOf(v × factor, offset × factor).
func (x *Exchange) ToRunes(v num.Dec, credit string, offset num.Dec) (num.Dec, error) {
	r, ok := x.table[credit]
	if !ok {
		return num.Zero, ErrNoPrice
	}
	var k num.Calc
	qty := k.Mul(v, r.factor)
	if r.curve == nil {
		return qty, k.Err
	}
	pos := k.Mul(offset, r.factor)
	if k.Err != nil {
		return num.Zero, k.Err
	}
	return r.curve.PriceOf(qty, pos)
}

// FromRunes returns how many units of credit r runes buy starting at billable position
// offset (in units of credit): r ÷ factor, or curve.QuantityFor(r, offset × factor) ÷
// factor. Like the reference it also divides UnboundedQuantity by the factor. A zero
// factor has no inverse (ErrNoPrice).
func (x *Exchange) FromRunes(r num.Dec, credit string, offset num.Dec) (num.Dec, error) {
	res, ok := x.table[credit]
	if !ok || !res.factor.IsPos() {
		return num.Zero, ErrNoPrice
	}
	var k num.Calc
	if res.curve == nil {
		if res.factor.IsOne() {
			return r, nil // runes and usd: no division to round
		}
		q := k.Quo(r, res.factor)
		return q, k.Err
	}
	pos := k.Mul(offset, res.factor)
	if k.Err != nil {
		return num.Zero, k.Err
	}
	q, err := res.curve.QuantityFor(r, pos)
	if err != nil {
		return num.Zero, err
	}
	if res.factor.IsOne() {
		return q, nil
	}
	q = k.Quo(q, res.factor)
	return q, k.Err
}

// Convert exchanges v units of in for units of out through runes:
// FromRunes(ToRunes(v, in, inOffset), out, outOffset). It is the identity when in == out,
// whether or not the name resolves.
func (x *Exchange) Convert(v num.Dec, in, out string, inOffset, outOffset num.Dec) (num.Dec, error) {
	if in == out {
		return v, nil
	}
	r, err := x.ToRunes(v, in, inOffset)
	if err != nil {
		return num.Zero, err
	}
	return x.FromRunes(r, out, outOffset)
}
