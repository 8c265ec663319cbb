package money

import (
	"errors"
	"testing"

	"github.com/limitr/limitr/internal/num"
)

func TestRoundHalfAwayFromZero(t *testing.T) {
	for _, tc := range []struct {
		in    string
		scale int
		want  string
	}{
		{"0.005", 2, "0.01"}, {"-0.005", 2, "-0.01"}, {"0.0049999", 2, "0.00"}, {"0.015", 2, "0.02"},
		{"0.025", 2, "0.03"}, {"2.5", 0, "3"}, {"-2.5", 0, "-3"}, {"1.2345", 3, "1.235"}, {"12.3", 2, "12.3"},
		{"0.000000000000000005", 2, "0.00"}, {"999999999999999.995", 2, "1000000000000000.00"},
	} {
		got := Round(num.MustParse(tc.in), tc.scale)
		if got.Cmp(num.MustParse(tc.want)) != 0 {
			t.Errorf("Round(%s, %d) = %s, want %s", tc.in, tc.scale, got, tc.want)
		}
	}
}

func TestFormatAndMinorUnits(t *testing.T) {
	for _, tc := range []struct {
		in, cur, text string
		minor         int64
	}{
		{"12.3", "usd", "12.30", 1230}, {"-0.004", "USD", "0.00", 0}, {"1200.5", "JPY", "1201", 1201},
		{"1.2345", "KWD", "1.235", 1235}, {"-7.125", "EUR", "-7.13", -713}, {"0", "USD", "0.00", 0},
	} {
		text, err := Format(num.MustParse(tc.in), tc.cur)
		if err != nil || text != tc.text {
			t.Errorf("Format(%s %s) = %q %v, want %q", tc.in, tc.cur, text, err, tc.text)
			continue
		}
		minor, err := MinorUnits(num.MustParse(text), tc.cur)
		if err != nil || minor != tc.minor {
			t.Errorf("MinorUnits(%s %s) = %d %v, want %d", text, tc.cur, minor, err, tc.minor)
		}
	}
	if _, err := MinorUnits(num.MustParse("1.234"), "USD"); !errors.Is(err, ErrInexact) {
		t.Errorf("inexact: %v", err)
	}
	if _, err := MinorUnits(num.MustParse("999999999999999999"), "USD"); !errors.Is(err, num.ErrOutOfRange) {
		t.Errorf("overflow: %v", err)
	}
	if _, err := Normalize("usx"); !errors.Is(err, ErrUnknownCurrency) {
		t.Errorf("unknown: %v", err)
	}
}

func FuzzRound(f *testing.F) {
	f.Add("0.005", uint8(2))
	f.Add("-123.4565", uint8(3))
	f.Fuzz(func(t *testing.T, s string, scale uint8) {
		d, err := num.Parse(s)
		if err != nil {
			return
		}
		sc := int(scale % 6)
		r := Round(d, sc)
		if r.Scale() > sc {
			t.Fatalf("Round(%s, %d) = %s keeps %d decimals", d, sc, r, r.Scale())
		}
		diff, err := d.Sub(r)
		if err != nil {
			return
		}
		half, _ := pow10(-sc).Mul(num.MustParse("0.5"))
		if diff.Abs().Cmp(half) > 0 {
			t.Fatalf("Round(%s, %d) = %s is more than half a unit away", d, sc, r)
		}
		if diff.Abs().Cmp(half) == 0 && r.Abs().Cmp(d.Abs()) < 0 {
			t.Fatalf("Round(%s, %d) = %s rounds a half towards zero", d, sc, r)
		}
	})
}
