package stripe

import (
	"errors"
	"math"
	"regexp"
	"strings"
	"testing"

	"github.com/limitr/limitr/internal/num"
)

func TestCurrencyExponent(t *testing.T) {
	for _, tc := range []struct {
		code string
		want int
	}{
		{"USD", 2}, {"usd", 2}, {"Eur", 2}, {"GBP", 2}, {"CHF", 2},
		{"JPY", 0}, {"KRW", 0}, {"VND", 0}, {"CLP", 0}, {"ISK", 0}, {"UGX", 0}, {"XAF", 0}, {"XOF", 0}, {"XPF", 0},
		{"BHD", 3}, {"JOD", 3}, {"KWD", 3}, {"OMR", 3}, {"TND", 3}, {"IQD", 3}, {"LYD", 3},
		{"CLF", 4}, {"UYW", 4},
		{"MGA", 2}, {"HUF", 2}, {"TWD", 2},
	} {
		got, err := CurrencyExponent(tc.code)
		if err != nil || got != tc.want {
			t.Errorf("CurrencyExponent(%q) = %d, %v; want %d", tc.code, got, err, tc.want)
		}
	}
	for _, code := range []string{"", "US", "USDD", "XXX", "XAU", "XTS", "ABC", "HRK", "US1", "ÜSD", " usd"} {
		if _, err := CurrencyExponent(code); !errors.Is(err, ErrUnknownCurrency) {
			t.Errorf("CurrencyExponent(%q) = %v; want ErrUnknownCurrency", code, err)
		}
	}
}

func TestMinorUnits(t *testing.T) {
	for _, tc := range []struct {
		amount, currency string
		want             int64
		err              error
	}{
		{"12.34", "USD", 1234, nil},
		{"12.34", "usd", 1234, nil},
		{"0", "USD", 0, nil},
		{"-0", "USD", 0, nil},
		{"-0.00", "EUR", 0, nil},
		{"0.01", "USD", 1, nil},
		{"-12.34", "USD", -1234, nil},
		{"12.3", "USD", 1230, nil},
		{"12", "USD", 1200, nil},
		{"12.340", "USD", 1234, nil}, // trailing zeros below the minor unit are exact
		{"12.34000000000000000000", "USD", 1234, nil},
		{"007.50", "USD", 750, nil},
		{"1200", "JPY", 1200, nil},
		{"1200.00", "JPY", 1200, nil},
		{"5", "ISK", 5, nil},
		{"1.234", "KWD", 1234, nil},
		{"1.23", "BHD", 1230, nil},
		{"1.2345", "CLF", 12345, nil},
		{"92233720368547758.07", "USD", math.MaxInt64, nil},
		{"-92233720368547758.08", "USD", math.MinInt64, nil},
		{"9223372036854775807", "JPY", math.MaxInt64, nil},
		{"-9223372036854775808", "JPY", math.MinInt64, nil},

		{"1.234", "USD", 0, ErrInexactAmount},
		{"0.001", "USD", 0, ErrInexactAmount},
		{"12.5", "JPY", 0, ErrInexactAmount},
		{"0.0001", "KWD", 0, ErrInexactAmount},
		{"12.3400001", "USD", 0, ErrInexactAmount},

		{"92233720368547758.08", "USD", 0, ErrAmountOverflow},
		{"-92233720368547758.09", "USD", 0, ErrAmountOverflow},
		{"9223372036854775808", "JPY", 0, ErrAmountOverflow},
		{"100000000000000000000", "USD", 0, ErrAmountOverflow},

		{"", "USD", 0, ErrInvalidAmount},
		{"-", "USD", 0, ErrInvalidAmount},
		{".5", "USD", 0, ErrInvalidAmount},
		{"5.", "USD", 0, ErrInvalidAmount},
		{"+5", "USD", 0, ErrInvalidAmount},
		{"--5", "USD", 0, ErrInvalidAmount},
		{"1e3", "USD", 0, ErrInvalidAmount},
		{"1,000.00", "USD", 0, ErrInvalidAmount},
		{" 12.34", "USD", 0, ErrInvalidAmount},
		{"12.34 ", "USD", 0, ErrInvalidAmount},
		{"1.2.3", "USD", 0, ErrInvalidAmount},
		{"NaN", "USD", 0, ErrInvalidAmount},
		{"١٢", "USD", 0, ErrInvalidAmount}, // non-ASCII digits

		{"12.34", "XXX", 0, ErrUnknownCurrency},
		{"12.34", "", 0, ErrUnknownCurrency},
	} {
		got, err := MinorUnits(tc.amount, tc.currency)
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("MinorUnits(%q, %q) = %d, %v; want %v", tc.amount, tc.currency, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("MinorUnits(%q, %q) = %d, %v; want %d", tc.amount, tc.currency, got, err, tc.want)
		}
	}
}

func TestFormatMinorUnits(t *testing.T) {
	for _, tc := range []struct {
		units    int64
		currency string
		want     string
	}{
		{1234, "USD", "12.34"},
		{-1234, "USD", "-12.34"},
		{5, "USD", "0.05"},
		{-5, "USD", "-0.05"},
		{0, "USD", "0.00"},
		{1200, "JPY", "1200"},
		{-7, "JPY", "-7"},
		{1250, "KWD", "1.250"},
		{math.MinInt64, "USD", "-92233720368547758.08"},
		{math.MaxInt64, "JPY", "9223372036854775807"},
	} {
		got, err := FormatMinorUnits(tc.units, tc.currency)
		if err != nil || got != tc.want {
			t.Errorf("FormatMinorUnits(%d, %q) = %q, %v; want %q", tc.units, tc.currency, got, err, tc.want)
		}
	}
	if _, err := FormatMinorUnits(1, "ABC"); !errors.Is(err, ErrUnknownCurrency) {
		t.Errorf("unknown currency: %v", err)
	}
}

// Stripe's amounts differ from ISO minor units for ISK (two-decimal in Stripe's API,
// whole krónur only) and MGA (zero-decimal in Stripe).
func TestStripeAmount(t *testing.T) {
	for _, tc := range []struct {
		amount, currency string
		want             int64
		err              error
	}{
		{"12.34", "USD", 1234, nil},
		{"500", "JPY", 500, nil},
		{"5", "ISK", 500, nil},
		{"5.00", "isk", 500, nil},
		{"5.5", "ISK", 0, ErrInexactAmount},
		{"92233720368547759", "ISK", 0, ErrAmountOverflow},
		{"-92233720368547759", "ISK", 0, ErrAmountOverflow},
		{"92233720368547758", "ISK", 9223372036854775800, nil},
		{"-92233720368547758", "ISK", -9223372036854775800, nil},
		{"12", "MGA", 12, nil},
		{"12.00", "MGA", 12, nil},
		{"12.50", "MGA", 0, ErrInexactAmount},
		{"1.230", "KWD", 1230, nil},
		{"1", "XXX", 0, ErrUnknownCurrency},
	} {
		got, err := StripeAmount(tc.amount, tc.currency)
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("StripeAmount(%q, %q) = %d, %v; want %v", tc.amount, tc.currency, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("StripeAmount(%q, %q) = %d, %v; want %d", tc.amount, tc.currency, got, err, tc.want)
		}
	}
	for _, tc := range []struct {
		units    int64
		currency string
		want     string
	}{{500, "ISK", "5.00"}, {12, "MGA", "12"}, {1234, "usd", "12.34"}} {
		got, err := FormatStripeAmount(tc.units, tc.currency)
		if err != nil || got != tc.want {
			t.Errorf("FormatStripeAmount(%d, %q) = %q, %v; want %q", tc.units, tc.currency, got, err, tc.want)
		}
	}
}

var plainDecimal = regexp.MustCompile(`^-?[0-9]+(\.[0-9]+)?$`)

// FuzzMinorUnits checks MinorUnits against an independent reading of the same string
// by the engine's decimal type, and against FormatMinorUnits.
func FuzzMinorUnits(f *testing.F) {
	for _, s := range []string{"12.34", "-0.01", "1.234", "0", "007.50", "12.340", "92233720368547758.07",
		"-92233720368547758.08", "9223372036854775808", "1e3", ".5", "5.", "+1", "-", ""} {
		for _, cur := range []string{"USD", "JPY", "KWD", "CLF", "ISK", "MGA"} {
			f.Add(s, cur)
		}
	}
	f.Fuzz(func(t *testing.T, amount, currency string) {
		units, err := MinorUnits(amount, currency)
		exp, expErr := CurrencyExponent(currency)
		if expErr != nil {
			if !errors.Is(err, ErrUnknownCurrency) {
				t.Fatalf("MinorUnits(%q, %q) = %d, %v with an unknown currency", amount, currency, units, err)
			}
			return
		}
		if err != nil {
			if !errors.Is(err, ErrInvalidAmount) && !errors.Is(err, ErrInexactAmount) && !errors.Is(err, ErrAmountOverflow) {
				t.Fatalf("MinorUnits(%q, %q): unexpected error %v", amount, currency, err)
			}
			if errors.Is(err, ErrInvalidAmount) && plainDecimal.MatchString(amount) {
				t.Fatalf("MinorUnits(%q, %q) = %v, but the amount is a plain decimal", amount, currency, err)
			}
			if errors.Is(err, ErrInexactAmount) {
				// Exactly the digits below the minor unit that are not zero.
				_, frac, _ := strings.Cut(strings.TrimPrefix(amount, "-"), ".")
				if len(frac) <= exp || strings.TrimRight(frac[exp:], "0") == "" {
					t.Fatalf("MinorUnits(%q, %q) = %v, but the amount is exact", amount, currency, err)
				}
			}
			return
		}
		// The formatted units read back to the same units, and say the same number.
		s, err := FormatMinorUnits(units, currency)
		if err != nil {
			t.Fatal(err)
		}
		back, err := MinorUnits(s, currency)
		if err != nil || back != units {
			t.Fatalf("MinorUnits(FormatMinorUnits(%d)) = %q -> %d, %v", units, s, back, err)
		}
		// An independent reading: the decimal, scaled by 10^exp, is the same integer.
		d, err := num.Parse(amount)
		if err != nil {
			return // beyond the decimal type's 19 digits, or a form it does not read
		}
		want, err := num.Parse(s)
		if err != nil {
			return
		}
		if d.Cmp(want) != 0 {
			t.Fatalf("MinorUnits(%q, %q) = %d (%s), but the amount is %s", amount, currency, units, s, d)
		}
	})
}
