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

func TestFormat(t *testing.T) {
	for _, tc := range []struct{ in, cur, text string }{
		{"12.3", "usd", "12.30"}, {"-0.004", "USD", "0.00"}, {"1200.5", "JPY", "1201"},
		{"1.2345", "KWD", "1.235"}, {"-7.125", "EUR", "-7.13"}, {"0", "USD", "0.00"},
	} {
		text, err := Format(num.MustParse(tc.in), tc.cur)
		if err != nil || text != tc.text {
			t.Errorf("Format(%s %s) = %q %v, want %q", tc.in, tc.cur, text, err, tc.text)
		}
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

func TestCurrencyTable(t *testing.T) {
	if n := len(iso4217); n < 150 {
		t.Errorf("the table has %d currencies: ISO 4217 lists more than 150", n)
	}
	for code := range iso4217 {
		if c, err := Normalize(code); err != nil || c != code || len(code) != 3 {
			t.Errorf("table key %q is not an upper-case code", code)
		}
	}
}
