// Package quantity parses and converts the unit-suffixed amounts that appear
// in Limitr policy documents ("3GB", "1.5day", "6e-6", "2_000_000bytes").
//
// All arithmetic is exact decimal (github.com/govalues/decimal, 19 significant
// digits); floating point is never involved, so limits and prices compare
// exactly. Unit names are case-sensitive, as in Stof: "m" is metres (not
// minutes) and "MB" is megabytes (not millibytes).
//
// Zetta- and yotta-byte units (ZB, ZiB, YB, YiB) are deliberately absent:
// their factors to bytes need more than 19 digits.
package quantity

import (
	"errors"
	"fmt"
	"math/big"
	"strconv"
	"strings"
	"time"

	"github.com/govalues/decimal"
)

var (
	// ErrInvalid is wrapped by every parse error.
	ErrInvalid = errors.New("invalid quantity")
	// ErrIncompatible is wrapped by conversions between different dimensions.
	ErrIncompatible = errors.New("incompatible units")
)

// Dimension is the physical dimension of a unit; only units of the same
// dimension convert into one another.
type Dimension uint8

const (
	None Dimension = iota
	Time
	Memory
	Length
	Mass
)

func (d Dimension) String() string {
	switch d {
	case None:
		return "none"
	case Time:
		return "time"
	case Memory:
		return "memory"
	case Length:
		return "length"
	case Mass:
		return "mass"
	}
	return "Dimension(" + strconv.Itoa(int(d)) + ")"
}

// Unit is a measurement unit. The zero Unit means "unitless". Units are
// comparable with ==; every alias of a unit yields the same value.
type Unit struct {
	name   string
	dim    Dimension
	factor decimal.Decimal // exact size in the dimension's base unit (ms, byte, metre, gram)
}

// String returns the canonical symbol, or "" for the unitless unit.
func (u Unit) String() string { return u.name }

// Dimension reports the unit's dimension (None when unitless).
func (u Unit) Dimension() Dimension { return u.dim }

// IsZero reports whether u is the unitless unit.
func (u Unit) IsZero() bool { return u.name == "" }

// Factor returns the exact size of u in its dimension's base unit
// (millisecond, byte, metre or gram); 1 for the unitless unit.
func (u Unit) Factor() decimal.Decimal {
	if u.IsZero() {
		return decimal.One
	}
	return u.factor
}

// units maps every accepted spelling to its canonical Unit.
var units = func() map[string]Unit {
	m := make(map[string]Unit)
	add := func(dim Dimension, factor string, names ...string) {
		u := Unit{name: names[0], dim: dim, factor: decimal.MustParse(factor)}
		for _, n := range names {
			if _, dup := m[n]; dup {
				panic("quantity: duplicate unit alias " + n)
			}
			m[n] = u
		}
	}
	add(Time, "0.000001", "ns", "nanosecond", "nanoseconds")
	add(Time, "0.001", "us", "microsecond", "microseconds")
	add(Time, "1", "ms", "millisecond", "milliseconds")
	add(Time, "1000", "s", "sec", "secs", "second", "seconds")
	add(Time, "60000", "min", "mins", "minute", "minutes")
	add(Time, "3600000", "h", "hr", "hrs", "hour", "hours")
	add(Time, "86400000", "day", "days")
	add(Time, "604800000", "week", "weeks")

	add(Memory, "0.125", "bit", "bits")
	add(Memory, "1", "B", "byte", "bytes")
	dec := []string{"K", "M", "G", "T", "P", "E"}
	decLong := []string{"kilo", "mega", "giga", "tera", "peta", "exa"}
	binLong := []string{"kibi", "mebi", "gibi", "tebi", "pebi", "exbi"}
	for i := range dec {
		// 10^(3(i+1)) and 2^(10(i+1)) both fit in 19 digits up to exa.
		p10 := "1" + strings.Repeat("000", i+1)
		p2 := strconv.FormatUint(1<<(10*(i+1)), 10)
		add(Memory, p10, dec[i]+"B", decLong[i]+"byte", decLong[i]+"bytes")
		add(Memory, p2, dec[i]+"iB", binLong[i]+"byte", binLong[i]+"bytes")
	}

	add(Length, "0.001", "mm")
	add(Length, "0.01", "cm")
	add(Length, "1", "m")
	add(Length, "1000", "km")

	add(Mass, "0.001", "mg")
	add(Mass, "1", "g")
	add(Mass, "1000", "kg")
	return m
}()

// LookupUnit returns the unit spelled name (any alias, case-sensitive).
// The empty name is the unitless unit.
func LookupUnit(name string) (Unit, bool) {
	if name == "" {
		return Unit{}, true
	}
	u, ok := units[name]
	return u, ok
}

// Quantity is an exact decimal amount of a unit.
type Quantity struct {
	Value decimal.Decimal
	Unit  Unit
}

// String formats q so that Parse(q.String()) yields q again.
func (q Quantity) String() string { return q.Value.String() + q.Unit.String() }

// In returns q's value expressed in target. A unitless quantity is taken to
// already be in target, and a unitless target keeps the number as is
// (Limitr's plain-number credits); otherwise the dimensions must match.
func (q Quantity) In(target Unit) (decimal.Decimal, error) {
	return Convert(q.Value, q.Unit, target)
}

// quantityError carries the offending input so every message names it.
type quantityError struct {
	kind, input, msg string
	err              error
}

func (e *quantityError) Error() string { return fmt.Sprintf("%s %q: %s", e.kind, e.input, e.msg) }
func (e *quantityError) Unwrap() error { return e.err }

// Parse parses an amount with an optional unit suffix:
//
//	[-+] digits ['_' digits]... ['.' digits ['_' digits]...] [(e|E) [-+] digits] [spaces] [unit]
//
// Leading and trailing whitespace is ignored. The number must be exactly
// representable as a decimal; it is never rounded.
func Parse(s string) (Quantity, error) {
	fail := func(format string, args ...any) (Quantity, error) {
		return Quantity{}, &quantityError{"quantity", s, fmt.Sprintf(format, args...), ErrInvalid}
	}
	t := strings.TrimSpace(s)
	if t == "" {
		return fail("empty")
	}
	num, rest, ok := scanNumber(t)
	if !ok {
		return fail("malformed number")
	}
	unitName := strings.TrimLeft(rest, " \t")
	if rest != "" && unitName == rest && !isUnitStart(rest[0]) {
		return fail("malformed number")
	}
	u, ok := LookupUnit(unitName)
	if !ok {
		return fail("unknown unit %q", unitName)
	}
	v, err := decimal.Parse(num)
	if err != nil {
		return fail("number out of range")
	}
	// decimal.Parse silently rounds to 19 digits; a policy amount must not
	// change value behind the author's back.
	want, _ := new(big.Rat).SetString(num)
	got, _ := new(big.Rat).SetString(v.String())
	if want.Cmp(got) != 0 {
		return fail("number not representable exactly in %d digits", decimal.MaxPrec)
	}
	return Quantity{Value: v, Unit: u}, nil
}

// isUnitStart reports whether c may begin a unit name; anything else directly
// after the digits (like a second '_' or '.') is a broken number.
func isUnitStart(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80 }

// scanNumber splits t into a leading number (underscores removed) and the
// remainder. An 'e' starts an exponent only when a digit follows (after an
// optional sign), so "1EB" is one exabyte rather than a broken exponent.
func scanNumber(t string) (num, rest string, ok bool) {
	var b strings.Builder
	i := 0
	if i < len(t) && (t[i] == '-' || t[i] == '+') {
		b.WriteByte(t[i])
		i++
	}
	digits := func() bool {
		start := i
		for i < len(t) {
			switch c := t[i]; {
			case isDigit(c):
				b.WriteByte(c)
			case c == '_' && i > start && isDigit(t[i-1]) && i+1 < len(t) && isDigit(t[i+1]):
			default:
				return i > start
			}
			i++
		}
		return i > start
	}
	if !digits() {
		return "", "", false
	}
	if i < len(t) && t[i] == '.' {
		b.WriteByte('.')
		i++
		if !digits() {
			return "", "", false
		}
	}
	if i < len(t) && (t[i] == 'e' || t[i] == 'E') {
		j := i + 1
		if j < len(t) && (t[j] == '-' || t[j] == '+') {
			j++
		}
		if j < len(t) && isDigit(t[j]) {
			b.WriteString(t[i:j])
			i = j
			for i < len(t) && isDigit(t[i]) {
				b.WriteByte(t[i])
				i++
			}
		}
	}
	return b.String(), t[i:], true
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// Convert expresses v, measured in from, in the unit to. Unitless on either
// side returns v unchanged (see Quantity.In). The result is exact whenever
// decimal can hold it; otherwise it is rounded once, half-to-even, to 19
// significant digits or 19 decimal places, whichever is coarser (as
// decimal.Quo does). Results whose integer part exceeds 19 digits are an error.
func Convert(v decimal.Decimal, from, to Unit) (decimal.Decimal, error) {
	if from.IsZero() || to.IsZero() || from == to {
		return v, nil
	}
	if from.dim != to.dim {
		return decimal.Decimal{}, fmt.Errorf("%w: cannot convert %s (%s) to %s (%s)", ErrIncompatible, from, from.dim, to, to.dim)
	}
	num, den := ratio(v, from, to)
	d, err := roundRat(v.IsNeg(), num, den)
	if err != nil {
		return decimal.Decimal{}, fmt.Errorf("converting %s%s to %s: %w", v, from, to, err)
	}
	return d, nil
}

func pow10(n int) *big.Int { return new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(n)), nil) }

func coef(d decimal.Decimal) *big.Int { return new(big.Int).SetUint64(d.Coef()) }

// ratio returns |v| * from.factor / to.factor as the exact fraction num/den,
// so that conversion rounds at most once.
func ratio(v decimal.Decimal, from, to Unit) (num, den *big.Int) {
	num = coef(v)
	num.Mul(num, coef(from.factor))
	num.Mul(num, pow10(to.factor.Scale()))
	den = pow10(v.Scale() + from.factor.Scale())
	den.Mul(den, coef(to.factor))
	return num, den
}

// roundRat rounds num/den (both non-negative) half-to-even to the largest
// scale decimal can hold for it.
func roundRat(neg bool, num, den *big.Int) (decimal.Decimal, error) {
	maxCoef := pow10(decimal.MaxPrec) // exclusive bound
	q := new(big.Int).Quo(num, den)
	intDigits := 0
	if q.Sign() != 0 {
		intDigits = len(q.String())
	}
	for scale := decimal.MaxPrec - intDigits; scale >= 0; scale-- {
		n := new(big.Int).Mul(num, pow10(scale))
		c, r := new(big.Int).QuoRem(n, den, new(big.Int))
		if cmp := new(big.Int).Lsh(r, 1).Cmp(den); cmp > 0 || cmp == 0 && c.Bit(0) == 1 {
			c.Add(c, big.NewInt(1))
		}
		if c.Cmp(maxCoef) >= 0 {
			continue // rounding carried into a 20th digit
		}
		text := c.String() + "e-" + strconv.Itoa(scale)
		if neg {
			text = "-" + text
		}
		d, err := decimal.Parse(text)
		if err != nil {
			return decimal.Decimal{}, err
		}
		return d.Trim(0), nil
	}
	return decimal.Decimal{}, fmt.Errorf("result exceeds %d digits", decimal.MaxPrec)
}

// ParseDuration parses a time quantity into a time.Duration; a unitless
// number means milliseconds. Values that are not a whole number of
// nanoseconds or that overflow time.Duration are rejected rather than rounded.
func ParseDuration(s string) (time.Duration, error) {
	q, err := Parse(s)
	if err != nil {
		return 0, err
	}
	fail := func(sentinel error, format string, args ...any) (time.Duration, error) {
		return 0, &quantityError{"duration", s, fmt.Sprintf(format, args...), sentinel}
	}
	from := q.Unit
	if from.IsZero() {
		from = units["ms"]
	}
	if from.dim != Time {
		return fail(ErrIncompatible, "unit %s is %s, not time", from, from.dim)
	}
	num, den := ratio(q.Value, from, units["ns"])
	ns, rem := new(big.Int).QuoRem(num, den, new(big.Int))
	if rem.Sign() != 0 {
		return fail(ErrInvalid, "not a whole number of nanoseconds")
	}
	if q.Value.IsNeg() {
		ns.Neg(ns)
	}
	if !ns.IsInt64() {
		return fail(ErrInvalid, "overflows time.Duration")
	}
	return time.Duration(ns.Int64()), nil
}
