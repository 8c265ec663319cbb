package rating

import (
	"errors"
	"testing"

	"github.com/limitr/limitr/internal/num"
)

// aiCreditsPairs is the exchange table of examples/policies/ai-credits.yaml.
func aiCreditsPairs() []Pair {
	return []Pair{
		{"rune", d("1"), "usd"},
		{"abstract", d("1"), "rune"},
		{"ai_credit", d("1.25"), "abstract"},
		{"ai_input_token", d("0.000006"), "ai_credit"},
		{"ai_output_token", d("0.00003"), "ai_credit"},
		{"mb_storage", d("0.00003"), "abstract"},
	}
}

// aiCreditsCurves are its priced credits.
func aiCreditsCurves() map[string]Curve {
	return map[string]Curve{
		"ai_input_token":  {Price: d("0.000006")},
		"ai_output_token": {Price: d("0.00003")},
		"mb_storage":      storage,
	}
}

func TestResolve(t *testing.T) {
	x := NewExchange(append(aiCreditsPairs(),
		Pair{"loop_a", d("2"), "loop_b"},
		Pair{"loop_b", d("3"), "loop_a"},
		Pair{"into_loop", d("1"), "loop_a"},
		Pair{"self", d("1"), "self"},
		Pair{"dead", d("1"), "nowhere"},
		Pair{"seat_pack", d("10"), "seat"}, // seat is a credit without a price
		Pair{"free", d("0"), "rune"},
	), aiCreditsCurves())

	cases := []struct {
		name   string
		factor string
		curve  bool
		ok     bool
	}{
		{"rune", "1", false, true},
		{"usd", "1", false, true},
		{"abstract", "1", false, true},
		{"ai_credit", "1.25", false, true},
		{"ai_input_token", "0.0000075", false, true}, // pair wins over its flat price
		{"ai_output_token", "0.0000375", false, true},
		{"mb_storage", "0.00003", false, true}, // pair wins over its tiers
		{"free", "0", false, true},
		{"loop_a", "", false, false},
		{"loop_b", "", false, false},
		{"into_loop", "", false, false},
		{"self", "", false, false},
		{"dead", "", false, false},
		{"seat_pack", "", false, false},
		{"seat", "", false, false},
		{"unknown", "", false, false},
		{"", "", false, false},
	}
	for _, tc := range cases {
		factor, curve, ok := x.Resolve(tc.name)
		if ok != tc.ok || (curve != nil) != tc.curve {
			t.Errorf("Resolve(%q) = %s, %v, %v; want ok=%v curve=%v", tc.name, factor, curve, ok, tc.ok, tc.curve)
			continue
		}
		if ok && !eq(factor, d(tc.factor)) {
			t.Errorf("Resolve(%q) factor = %s, want %s", tc.name, factor, tc.factor)
		}
	}
}

func TestExchangeAICredits(t *testing.T) {
	x := NewExchange(aiCreditsPairs(), aiCreditsCurves())
	z := num.Zero
	cases := []struct {
		name string
		f    func() (num.Dec, error)
		want string
	}{
		{"1000 input tokens", func() (num.Dec, error) { return x.ToRunes(d("1000"), "ai_input_token", z) }, "0.0075"},
		{"1000 output tokens", func() (num.Dec, error) { return x.ToRunes(d("1000"), "ai_output_token", z) }, "0.0375"},
		{"offset irrelevant for pairs", func() (num.Dec, error) { return x.ToRunes(d("1000"), "ai_input_token", d("5000")) }, "0.0075"},
		{"storage via pair is linear", func() (num.Dec, error) { return x.ToRunes(d("12"), "mb_storage", d("3")) }, "0.00036"},
		{"usd", func() (num.Dec, error) { return x.ToRunes(d("2.5"), "usd", z) }, "2.5"},
		{"runes back to tokens", func() (num.Dec, error) { return x.FromRunes(d("0.0075"), "ai_input_token", z) }, "1000"},
		{"10 abstract in input tokens", func() (num.Dec, error) { return x.Convert(d("10"), "abstract", "ai_input_token", z, z) }, "1333333.333333333333"},
		{"10 abstract in ai credits", func() (num.Dec, error) { return x.Convert(d("10"), "abstract", "ai_credit", z, z) }, "8"},
		{"input to output tokens", func() (num.Dec, error) { return x.Convert(d("1000"), "ai_input_token", "ai_output_token", z, z) }, "200"},
		{"identity", func() (num.Dec, error) { return x.Convert(d("7"), "seat", "seat", z, z) }, "7"},
	}
	for _, tc := range cases {
		got, err := tc.f()
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if !eq(got, d(tc.want)) {
			t.Errorf("%s = %s, want %s", tc.name, got, tc.want)
		}
	}

	for _, f := range []func() (num.Dec, error){
		func() (num.Dec, error) { return x.ToRunes(d("1"), "seat", z) },
		func() (num.Dec, error) { return x.FromRunes(d("1"), "seat", z) },
		func() (num.Dec, error) { return x.Convert(d("1"), "seat", "abstract", z, z) },
		func() (num.Dec, error) { return x.Convert(d("1"), "abstract", "seat", z, z) },
	} {
		if _, err := f(); !errors.Is(err, ErrNoPrice) {
			t.Errorf("want ErrNoPrice, got %v", err)
		}
	}
}

// The reference's default_exchange_rates example: a credit priced 6e-6 with no pair.
func TestExchangePricedCredit(t *testing.T) {
	gbStorage := storage // priced by tiers per MB, no pair of its own
	x := NewExchange(
		[]Pair{
			{"bundle", d("100"), "token"},  // 1 bundle = 100 tokens
			{"gb", d("1000"), "mb_tiered"}, // 1 gb = 1000 MB on the tiered curve
			{"zero", d("0"), "rune"},
		},
		map[string]Curve{
			"token":     {Price: d("0.000006")},
			"mb_tiered": gbStorage,
			"no_tiers":  {Model: Tiered},
		})
	z := num.Zero
	if f, c, ok := x.Resolve("token"); !ok || c == nil || !eq(f, num.One) {
		t.Fatalf("Resolve(token) = %s, %v, %v", f, c, ok)
	}
	if _, _, ok := x.Resolve("no_tiers"); ok {
		t.Fatal("a tiered credit without tiers is not priced")
	}
	cases := []struct {
		name string
		f    func() (num.Dec, error)
		want string
	}{
		{"to_runes(2, token)", func() (num.Dec, error) { return x.ToRunes(d("2"), "token", z) }, "0.000012"},
		{"bundle through token price", func() (num.Dec, error) { return x.ToRunes(d("3"), "bundle", z) }, "0.0018"},
		{"gb through tiers", func() (num.Dec, error) { return x.ToRunes(d("0.012"), "gb", z) }, "8.7"},
		{"gb offset scaled by factor", func() (num.Dec, error) { return x.ToRunes(d("0.003"), "gb", d("0.004")) }, "2.2"},
		{"gb refund", func() (num.Dec, error) { return x.ToRunes(d("-0.003"), "gb", d("0.012")) }, "-1.9"},
		{"runes to gb", func() (num.Dec, error) { return x.FromRunes(d("8.7"), "gb", z) }, "0.012"},
		{"runes to gb at offset", func() (num.Dec, error) { return x.FromRunes(d("2.2"), "gb", d("0.004")) }, "0.003"},
		{"runes to tokens", func() (num.Dec, error) { return x.FromRunes(d("0.000012"), "token", z) }, "2"},
		{"gb to bundles", func() (num.Dec, error) { return x.Convert(d("0.012"), "gb", "bundle", z, z) }, "14500"},
		{"zero factor to runes", func() (num.Dec, error) { return x.ToRunes(d("5"), "zero", z) }, "0"},
	}
	for _, tc := range cases {
		got, err := tc.f()
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if !eq(got, d(tc.want)) {
			t.Errorf("%s = %s, want %s", tc.name, got, tc.want)
		}
	}
	if _, err := x.FromRunes(d("1"), "zero", z); !errors.Is(err, ErrNoPrice) {
		t.Errorf("zero factor has no inverse, got %v", err)
	}
}

// quickstart-ai.json: claude-sonnet-4-input → ai-token (0.000004) → rune (1.25).
func TestExchangeQuickstart(t *testing.T) {
	x := NewExchange(
		[]Pair{
			{"rune", d("1"), "usd"},
			{"ai-token", d("1.25"), "rune"},
			{"claude-sonnet-4-input", d("0.000004"), "ai-token"},
			{"claude-sonnet-4-output", d("0.00002"), "ai-token"},
		},
		map[string]Curve{
			"claude-sonnet-4-input":  {Price: d("0.000004")},
			"claude-sonnet-4-output": {Price: d("0.00002")},
		})
	z := num.Zero
	check := func(name string, got num.Dec, err error, want string) {
		t.Helper()
		if err != nil || !eq(got, d(want)) {
			t.Errorf("%s = %s, %v; want %s", name, got, err, want)
		}
	}
	got, err := x.ToRunes(d("50000"), "claude-sonnet-4-input", z)
	check("ToRunes(50000 input)", got, err, "0.25")
	got, err = x.Convert(d("0.25"), "rune", "ai-token", z, z)
	check("0.25 runes in ai-token", got, err, "0.2")
	got, err = x.Convert(d("10"), "ai-token", "claude-sonnet-4-input", z, z)
	check("10 ai-token in input tokens", got, err, "2500000")
	got, err = x.Convert(d("10"), "ai-token", "claude-sonnet-4-output", z, z)
	check("10 ai-token in output tokens", got, err, "500000")
}

func TestNewExchangeCopiesTiers(t *testing.T) {
	tiers := append([]Tier(nil), storage.Tiers...)
	curves := map[string]Curve{"mb": {Model: Tiered, Tiers: tiers}}
	x := NewExchange(nil, curves)
	tiers[0].Price = d("100")
	got, err := x.ToRunes(d("1"), "mb", num.Zero)
	if err != nil || !eq(got, d("0.8")) {
		t.Fatalf("got %s, %v", got, err)
	}
}
