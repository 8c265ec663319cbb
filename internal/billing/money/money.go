// Package money rounds and formats amounts in ISO 4217 currencies. It holds the one
// table of currencies and their minor units, for invoices and for Stripe (which converts
// to its own integer amounts in internal/billing/stripe).
package money

import (
	"errors"
	"fmt"
	"strings"

	"github.com/govalues/decimal"

	"github.com/limitr/limitr/internal/num"
)

// ErrUnknownCurrency reports a code that is not an active ISO 4217 currency.
var ErrUnknownCurrency = errors.New("unknown currency")

// Normalize upper-cases a currency code and checks it is an active ISO 4217 code.
func Normalize(code string) (string, error) {
	c := strings.ToUpper(strings.TrimSpace(code))
	if _, ok := iso4217[c]; !ok {
		return "", fmt.Errorf("%w: %q", ErrUnknownCurrency, code)
	}
	return c, nil
}

// Exponent is the number of decimals of the currency's minor unit (2 for USD, 0 for
// JPY, 3 for KWD).
func Exponent(code string) (int, error) {
	c, err := Normalize(code)
	if err != nil {
		return 0, err
	}
	return iso4217[c], nil
}

// Round rounds d half away from zero to scale decimals: 0.005 → 0.01, -0.005 → -0.01,
// as invoices round each line.
func Round(d num.Dec, scale int) num.Dec {
	if d.Scale() <= scale {
		return d
	}
	t := d.Trunc(scale)
	rem, err := d.Sub(t)
	if err != nil {
		return d.Round(scale) // unreachable: |rem| < 1 always fits
	}
	half, _ := decimal.New(5, scale+1)
	if rem.Abs().Cmp(half) < 0 {
		return t
	}
	step := pow10(-scale)
	if d.IsNeg() {
		step = step.Neg()
	}
	out, err := t.Add(step)
	if err != nil {
		return d.Round(scale)
	}
	return out
}

// pow10 is 10^e for -19 < e <= 0.
func pow10(e int) num.Dec {
	if e >= 0 {
		return num.One
	}
	v, err := decimal.New(1, -e)
	if err != nil {
		return num.Zero
	}
	return v
}

// RoundTo rounds d to the currency's minor unit, half away from zero.
func RoundTo(d num.Dec, currency string) (num.Dec, error) {
	e, err := Exponent(currency)
	if err != nil {
		return num.Zero, err
	}
	return Round(d, e), nil
}

// Format writes an amount with exactly the currency's decimals ("12.30", "-0.05",
// "1200" for JPY), rounding half away from zero first.
func Format(d num.Dec, currency string) (string, error) {
	e, err := Exponent(currency)
	if err != nil {
		return "", err
	}
	r := Round(d, e)
	if r.IsZero() {
		r = num.Zero // no "-0.00"
	}
	return r.Pad(e).String(), nil
}
