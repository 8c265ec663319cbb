// Package money rounds and formats amounts in ISO 4217 currencies. It is the one place
// that knows how many minor units a currency has, for invoices and for Stripe.
package money

import (
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/govalues/decimal"

	"github.com/limitr/limitr/internal/num"
)

// ErrUnknownCurrency reports a code that is not an active ISO 4217 currency.
var ErrUnknownCurrency = errors.New("unknown currency")

// ErrInexact reports an amount with more decimals than its currency's minor unit.
var ErrInexact = errors.New("amount is not a whole number of minor units")

// exponents lists the currencies whose minor unit is not the cent. Every other code
// in active lists exponent 2.
var exponents = map[string]int{
	"BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0,
	"PYG": 0, "RWF": 0, "UGX": 0, "UYI": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0, "XPF": 0,
	"BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
	"CLF": 4, "UYW": 4,
}

// active holds the active ISO 4217 codes (2024 list, funds and metals excluded).
var active = func() map[string]struct{} {
	codes := strings.Fields(`AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB
	BRL BSD BTN BWP BYN BZD CAD CDF CHF CLF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB
	EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY
	KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR
	MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF
	SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS
	UAH UGX USD UYI UYU UYW UZS VES VED VND VUV WST XAF XCD XOF XPF YER ZAR ZMW ZWG`)
	m := make(map[string]struct{}, len(codes))
	for _, c := range codes {
		m[c] = struct{}{}
	}
	return m
}()

// Normalize upper-cases a currency code and checks it is an active ISO 4217 code.
func Normalize(code string) (string, error) {
	c := strings.ToUpper(strings.TrimSpace(code))
	if _, ok := active[c]; !ok {
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
	if e, ok := exponents[c]; ok {
		return e, nil
	}
	return 2, nil
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

// MinorUnits converts an amount already rounded to the currency's minor unit into an
// integer count of minor units (1234 for "12.34" USD). An amount with more decimals is
// refused rather than rounded: rounding is the invoice's job.
func MinorUnits(d num.Dec, currency string) (int64, error) {
	e, err := Exponent(currency)
	if err != nil {
		return 0, err
	}
	if d.Trim(0).Scale() > e {
		return 0, fmt.Errorf("%w: %s %s", ErrInexact, d, currency)
	}
	whole, frac, ok := d.Int64(e)
	if !ok {
		return 0, fmt.Errorf("money: %s %s: %w", d, currency, num.ErrOutOfRange)
	}
	scale := int64(1)
	for range e {
		scale *= 10
	}
	if whole > math.MaxInt64/scale || whole < math.MinInt64/scale {
		return 0, fmt.Errorf("money: %s %s does not fit in 64-bit minor units: %w", d, currency, num.ErrOutOfRange)
	}
	return whole*scale + frac, nil
}
