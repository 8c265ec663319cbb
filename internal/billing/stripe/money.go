package stripe

import (
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/limitr/limitr/internal/billing/money"
)

// Sentinel errors of the money helpers, for errors.Is.
var (
	// ErrUnknownCurrency: not an active ISO 4217 currency with a minor unit (it is
	// money.ErrUnknownCurrency: one table of currencies for invoices and Stripe).
	ErrUnknownCurrency = money.ErrUnknownCurrency
	// ErrInvalidAmount: not a plain decimal string ("12.34", "-5", "0.5").
	ErrInvalidAmount = errors.New("invalid amount")
	// ErrInexactAmount: the amount has digits below the currency's minor unit. It was
	// supposed to be rounded already (invoices round each line), so rounding here would
	// hide a bug upstream.
	ErrInexactAmount = errors.New("amount is not exact in the currency's minor unit")
	// ErrAmountOverflow: the amount does not fit an int64 of minor units.
	ErrAmountOverflow = errors.New("amount overflows int64 minor units")
)

// CurrencyExponent returns the number of decimal places of the currency's minor unit in
// ISO 4217 (2 for USD, 0 for JPY, 3 for KWD). The code may be in either case, as our
// invoices spell it "USD" and Stripe "usd".
func CurrencyExponent(code string) (int, error) {
	if _, ok := normalizeCurrency(code); !ok {
		return 0, fmt.Errorf("%w: %q", ErrUnknownCurrency, code)
	}
	return money.Exponent(code)
}

// MinorUnits converts an already rounded decimal amount ("12.34", "-0.50", "1200") into
// integer minor units of the currency's ISO 4217 exponent: "12.34" USD is 1234, "1200"
// JPY is 1200, "1.250" KWD is 1250. Trailing zeros below the minor unit are fine
// ("12.340" USD is 1234), other digits there are refused with ErrInexactAmount rather
// than rounded, and amounts beyond int64 are refused with ErrAmountOverflow.
//
// Stripe's amounts are not ISO minor units for every currency: use StripeAmount for
// anything sent to Stripe.
func MinorUnits(amount, currency string) (int64, error) {
	exp, err := CurrencyExponent(currency)
	if err != nil {
		return 0, err
	}
	return toUnits(amount, exp)
}

// FormatMinorUnits is the inverse of MinorUnits: 1234 USD is "12.34", -5 JPY is "-5".
func FormatMinorUnits(units int64, currency string) (string, error) {
	exp, err := CurrencyExponent(currency)
	if err != nil {
		return "", err
	}
	return formatUnits(units, exp), nil
}

// StripeExponent returns the number of decimal places Stripe's API uses for amounts in
// the currency, which differs from ISO 4217 in two places (https://docs.stripe.com/currencies):
// ISK is two-decimal in Stripe's API (100 is 1 króna) although whole krónur only, and
// MGA is zero-decimal in Stripe although ISO gives it two decimals.
func StripeExponent(code string) (int, error) {
	exp, err := CurrencyExponent(code)
	if err != nil {
		return 0, err
	}
	c, _ := normalizeCurrency(code)
	switch c {
	case "ISK":
		return 2, nil
	case "MGA":
		return 0, nil
	}
	return exp, nil
}

// StripeAmount converts an already rounded decimal amount into the integer amount
// Stripe's API expects for the currency: MinorUnits, except "5" ISK is 500 (and
// fractions of a króna are refused, as Stripe refuses them) and "5" MGA is 5 (and
// fractions of an ariary are refused).
func StripeAmount(amount, currency string) (int64, error) {
	exp, err := StripeExponent(currency)
	if err != nil {
		return 0, err
	}
	if c, _ := normalizeCurrency(currency); c == "ISK" {
		whole, err := toUnits(amount, 0)
		if err != nil {
			return 0, err
		}
		if whole > math.MaxInt64/100 || whole < math.MinInt64/100 {
			return 0, fmt.Errorf("%w: %q", ErrAmountOverflow, amount)
		}
		return whole * 100, nil
	}
	return toUnits(amount, exp)
}

// FormatStripeAmount is the inverse of StripeAmount, for amounts read back from Stripe
// (invoice totals, webhook payments): 1234 USD is "12.34", 500 ISK is "5.00".
func FormatStripeAmount(units int64, currency string) (string, error) {
	exp, err := StripeExponent(currency)
	if err != nil {
		return "", err
	}
	return formatUnits(units, exp), nil
}

// normalizeCurrency upper-cases a three-letter ASCII code; anything else is not a code.
func normalizeCurrency(code string) (string, bool) {
	if len(code) != 3 {
		return "", false
	}
	var b [3]byte
	for i := range 3 {
		c := code[i]
		switch {
		case 'A' <= c && c <= 'Z':
		case 'a' <= c && c <= 'z':
			c -= 'a' - 'A'
		default:
			return "", false
		}
		b[i] = c
	}
	return string(b[:]), true
}

// toUnits parses [-]digits[.digits] exactly into units of 10^-exp.
func toUnits(amount string, exp int) (int64, error) {
	s := amount
	neg := strings.HasPrefix(s, "-")
	if neg {
		s = s[1:]
	}
	whole, frac, hasPoint := strings.Cut(s, ".")
	if whole == "" || (hasPoint && frac == "") || !allDigits(whole) || !allDigits(frac) {
		return 0, fmt.Errorf("%w: %q: want a decimal like \"12.34\"", ErrInvalidAmount, amount)
	}
	if len(frac) > exp {
		if strings.TrimRight(frac[exp:], "0") != "" {
			return 0, fmt.Errorf("%w: %q has more than %d decimal places", ErrInexactAmount, amount, exp)
		}
		frac = frac[:exp]
	}
	limit := uint64(math.MaxInt64)
	if neg {
		limit++ // math.MinInt64 has one more unit than math.MaxInt64
	}
	var u uint64
	add := func(d byte) bool {
		n := uint64(d - '0')
		if u > (limit-n)/10 {
			return false
		}
		u = u*10 + n
		return true
	}
	for i := range len(whole) {
		if !add(whole[i]) {
			return 0, fmt.Errorf("%w: %q", ErrAmountOverflow, amount)
		}
	}
	for i := range exp {
		d := byte('0')
		if i < len(frac) {
			d = frac[i]
		}
		if !add(d) {
			return 0, fmt.Errorf("%w: %q", ErrAmountOverflow, amount)
		}
	}
	if neg {
		return -int64(u-1) - 1, nil // no overflow at math.MinInt64
	}
	return int64(u), nil
}

func allDigits(s string) bool {
	for i := range len(s) {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// formatUnits writes units of 10^-exp as a decimal string with exactly exp places.
func formatUnits(units int64, exp int) string {
	neg := units < 0
	u := uint64(units)
	if neg {
		u = -u // two's complement: correct for math.MinInt64 too
	}
	digits := fmt.Sprintf("%0*d", exp+1, u)
	var b strings.Builder
	if neg {
		b.WriteByte('-')
	}
	b.WriteString(digits[:len(digits)-exp])
	if exp > 0 {
		b.WriteByte('.')
		b.WriteString(digits[len(digits)-exp:])
	}
	return b.String()
}
