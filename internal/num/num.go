// Package num holds the exact decimal arithmetic every decision in the engine uses.
//
// Float64 only appears at the API edge: amounts arrive as float64 and are converted
// through their shortest decimal representation, so Allow(0.1) means exactly 0.1 and
// ten of them fit a limit of 1.
package num

import (
	"errors"
	"fmt"
	"math"
	"strconv"

	"github.com/govalues/decimal"
)

// Dec is an exact decimal with 19 significant digits.
type Dec = decimal.Decimal

// ErrOutOfRange is returned for values the decimal type cannot hold exactly enough
// to make a billing decision (NaN, infinities, magnitudes of 1e18 and above).
var ErrOutOfRange = errors.New("number out of range")

var (
	// Zero is the decimal 0.
	Zero = decimal.Zero
	// One is the decimal 1.
	One = decimal.One
	// Hundred is the decimal 100.
	Hundred = decimal.Hundred
)

// MaxMagnitude bounds every amount accepted at the edge. Keeping inputs well below the
// 19-digit ceiling leaves headroom for sums and products inside a decision.
const MaxMagnitude = 1e18

// FromFloat64 converts f through its shortest decimal representation without
// allocating, so the hot path can take float64 arguments.
func FromFloat64(f float64) (Dec, error) {
	// Whole amounts (token counts, seats, bytes) are the common case and need no
	// formatting, nor the range checks: f converts to an integer and back unchanged
	// (NaN, infinities and magnitudes past 2^63 do not), and |f| < 2^53 is below
	// MaxMagnitude. This part is small enough to be inlined into callers.
	if i := int64(f); float64(i) == f && i != 0 && i > -1<<53 && i < 1<<53 {
		return decimal.New(i, 0)
	}
	return fromFloat64(f)
}

func fromFloat64(f float64) (Dec, error) {
	if math.IsNaN(f) || math.IsInf(f, 0) || math.Abs(f) >= MaxMagnitude {
		return Dec{}, fmt.Errorf("%w: %v", ErrOutOfRange, f)
	}
	if f == 0 {
		return Zero, nil
	}
	var buf [32]byte
	b := strconv.AppendFloat(buf[:0], f, 'e', -1, 64)
	neg := false
	if b[0] == '-' {
		neg = true
		b = b[1:]
	}
	// b is d[.ddd]e±XX
	var coef int64
	digits := 0
	i := 0
	for ; i < len(b) && b[i] != 'e'; i++ {
		if b[i] == '.' {
			continue
		}
		coef = coef*10 + int64(b[i]-'0')
		digits++
	}
	exp := 0
	expNeg := false
	i++ // skip 'e'
	if i < len(b) && (b[i] == '-' || b[i] == '+') {
		expNeg = b[i] == '-'
		i++
	}
	for ; i < len(b); i++ {
		exp = exp*10 + int(b[i]-'0')
	}
	if expNeg {
		exp = -exp
	}
	// value = coef × 10^(exp-(digits-1))
	power := exp - (digits - 1)
	for power > 0 {
		coef *= 10
		power--
	}
	scale := -power
	if scale > decimal.MaxScale {
		// Below 1e-19 the decimal type rounds; that rare path may allocate.
		d, err := decimal.NewFromFloat64(f)
		if err != nil {
			return Dec{}, fmt.Errorf("%w: %v", ErrOutOfRange, f)
		}
		return d, nil
	}
	d, err := decimal.New(coef, scale)
	if err != nil {
		return Dec{}, fmt.Errorf("%w: %v", ErrOutOfRange, f)
	}
	if neg {
		d = d.Neg()
	}
	return d, nil
}

// Float64 converts for reads and event payloads. The nearest float64 is fine there:
// decisions never come back through it.
func Float64(d Dec) float64 {
	f, _ := d.Float64()
	return f
}

// FromInt returns the decimal for an integer.
func FromInt(i int64) Dec {
	d, _ := decimal.New(i, 0)
	return d
}

// Parse parses a plain decimal literal.
func Parse(s string) (Dec, error) { return decimal.Parse(s) }

// MustParse is for tests and constants known at compile time.
func MustParse(s string) Dec { return decimal.MustParse(s) }

// Add returns a.Add(b). Two non-negative operands of the same scale (a meter and a
// call, both in the credit's units) whose sum fits an int64 are added directly: the
// same decimal Decimal.Add returns, without its alignment and overflow machinery.
// Every other case is Decimal.Add's.
func Add(a, b Dec) (Dec, error) {
	if a.Scale() == b.Scale() && !a.IsNeg() && !b.IsNeg() {
		if ca, cb := a.Coef(), b.Coef(); ca <= math.MaxInt64 && cb <= math.MaxInt64-ca {
			return decimal.New(int64(ca+cb), a.Scale())
		}
	}
	return a.Add(b)
}

// Cmp returns a.Cmp(b): -1, 0 or +1. Operands of the same scale (a meter and its
// limit) compare by sign and coefficient, without the alignment Decimal.Cmp sets up.
func Cmp(a, b Dec) int {
	if a.Scale() != b.Scale() {
		return a.Cmp(b)
	}
	sa, sb := a.Sign(), b.Sign()
	switch {
	case sa > sb:
		return 1
	case sa < sb:
		return -1
	case a.Coef() > b.Coef():
		return sa
	case a.Coef() < b.Coef():
		return -sa
	}
	return 0
}

// Calc chains arithmetic and keeps the first overflow, so decision code reads as
// formulas and checks one error at the end instead of after every operation.
type Calc struct{ Err error }

func (c *Calc) keep(d Dec, err error) Dec {
	if err != nil {
		c.fail(err)
	}
	return d
}

func (c *Calc) fail(err error) {
	if c.Err == nil {
		c.Err = fmt.Errorf("%w: %w", ErrOutOfRange, err)
	}
}

// Parse reads an exact decimal: rows read as text from numeric columns.
func (c *Calc) Parse(s string) Dec { return c.keep(Parse(s)) }

// Add returns a+b.
func (c *Calc) Add(a, b Dec) Dec { return c.keep(Add(a, b)) }

// Sub returns a-b.
func (c *Calc) Sub(a, b Dec) Dec { return c.keep(a.Sub(b)) }

// Mul returns a×b.
func (c *Calc) Mul(a, b Dec) Dec { return c.keep(a.Mul(b)) }

// Quo returns a÷b rounded half-even to 19 significant digits; b == 0 yields 0 and an error.
func (c *Calc) Quo(a, b Dec) Dec {
	if b.IsZero() {
		if c.Err == nil {
			c.Err = fmt.Errorf("%w: division by zero", ErrOutOfRange)
		}
		return Zero
	}
	return c.keep(a.Quo(b))
}

// Max returns the larger of a and b.
func Max(a, b Dec) Dec { return a.Max(b) }

// Min returns the smaller of a and b.
func Min(a, b Dec) Dec { return a.Min(b) }
