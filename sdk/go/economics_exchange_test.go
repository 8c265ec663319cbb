package limitr_test

import (
	"errors"
	"os"
	"testing"

	limitr "github.com/limitr/limitr/sdk/go"
)

// curvesPolicy has one credit per pricing model (no exchange pairs, so each is priced
// through its own curve) and soft limits of 10 on each.
const curvesPolicy = `{"policy": {
  "credits": {
    "tk":    {"pricing_model": "tiered", "tiers": [
               {"up_to": 10, "price": {"amount": 1}}, {"up_to": 20, "price": {"amount": 0.5}}, {"price": {"amount": 0.25}}]},
    "vol":   {"pricing_model": "volume", "tiers": [
               {"up_to": 10, "price": {"amount": 1}}, {"up_to": 20, "price": {"amount": 0.5}}, {"price": {"amount": 0.25}}]},
    "stair": {"pricing_model": "stairstep", "tiers": [
               {"up_to": 10, "price": {"amount": 5}}, {"up_to": 20, "price": {"amount": 8}}, {"price": {"amount": 12}}]},
    "flat":  {"price": {"amount": 0.01}}
  },
  "plans": {
    "p": {"default": true, "entitlements": {
      "t":  {"limit": {"credit": "tk", "mode": "soft", "value": 10}},
      "th": {"limit": {"credit": "tk", "mode": "hard", "value": 10}},
      "v":  {"limit": {"credit": "vol", "mode": "soft", "value": 10}},
      "s":  {"limit": {"credit": "stair", "mode": "soft", "value": 10}},
      "f":  {"limit": {"credit": "flat", "mode": "soft", "value": 10}}
    }}
  }
}}`

func readExample(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile("../../examples/policies/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// §9, §2.3: CreditExchange walks exchange pairs to runes and back; pairs win over prices;
// priced credits without a pair go through their curve at position 0.
func TestCreditExchangeChains(t *testing.T) {
	ai := newEnv(t, readExample(t, "ai-credits.yaml"))
	curves := newEnv(t, curvesPolicy)
	quick := newEnv(t, readExample(t, "quickstart-ai.json"))
	cases := []struct {
		name     string
		e        *env
		in, out  string
		value    float64
		want     float64
		wantFail bool
	}{
		// §9 resolve: ai_input_token → ai_credit (×0.000006) → abstract (×1.25) → rune (×1).
		{"token to rune through the chain", ai, "ai_input_token", "rune", 1e6, 7.5, false},
		{"default out is money (usd = 1 rune)", ai, "ai_input_token", "usd", 1e6, 7.5, false},
		{"ai_credit to tokens", ai, "ai_credit", "ai_input_token", 3, 3 / 0.000006, false},
		{"output token is worth 5 input tokens", ai, "ai_output_token", "ai_input_token", 1, 5, false},
		{"abstract to ai_credit", ai, "abstract", "ai_credit", 10, 8, false},
		{"identity", ai, "ai_credit", "ai_credit", 4.2, 4.2, false},
		// §9: exchange pairs take precedence over the credit's own tiers.
		{"pair wins over tiers", ai, "mb_storage", "rune", 1000, 0.03, false},
		{"unpriced credit has no path", ai, "seat", "rune", 1, 0, true},
		{"unknown credit", ai, "nope", "rune", 1, 0, true},
		// §2.3 quickstart: 1 ai-token = 1.25 runes; claude input 0.000004 ai-token.
		{"quickstart claude input to runes", quick, "claude-sonnet-4-input", "rune", 1e6, 5, false},
		{"quickstart ai-token to claude output", quick, "ai-token", "claude-sonnet-4-output", 10, 10 / 0.00002, false},
		// §9 tiered: graduated bands (0,10]@1, (10,20]@0.5, rest @0.25.
		{"tiered to runes", curves, "tk", "rune", 15, 12.5, false},
		{"tiered to runes, three bands", curves, "tk", "rune", 30, 10 + 5 + 2.5, false},
		{"runes to tiered", curves, "rune", "tk", 12.5, 15, false},
		// §9 volume: total(n) = n × rate(band(n)).
		{"volume to runes", curves, "vol", "rune", 15, 7.5, false},
		{"volume to runes, top band", curves, "vol", "rune", 40, 10, false},
		// §9 stairstep: total(n) = fee(band(n)).
		{"stairstep to runes", curves, "stair", "rune", 15, 8, false},
		{"stairstep first band", curves, "stair", "rune", 3, 5, false},
		{"flat to runes", curves, "flat", "rune", 250, 2.5, false},
		{"flat between priced credits", curves, "flat", "tk", 1000, 10, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.e.p.CreditExchange(tc.in, tc.out, tc.value)
			if tc.wantFail {
				if err == nil {
					t.Fatalf("CreditExchange(%s→%s) = %v, want an error", tc.in, tc.out, got)
				}
				if !errors.Is(err, limitr.ErrNoPrice) {
					t.Errorf("err = %v, want ErrNoPrice", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("CreditExchange(%s→%s, %v): %v", tc.in, tc.out, tc.value, err)
			}
			if !closeTo(got, tc.want, 1e-12) {
				t.Errorf("CreditExchange(%s→%s, %v) = %v, want %v", tc.in, tc.out, tc.value, got, tc.want)
			}
		})
	}
}

// §5 step 10, §9, §11.2: price_diff prices the billable units a call adds at the
// customer's position on the curve; included units are free; decrements past the
// limit refund at the position.
func TestPriceDiffAtPosition(t *testing.T) {
	type step struct {
		amt       float64
		wantType  string
		wantPrice *float64
		wantOver  *float64 // meter-overage: overage
	}
	cases := []struct {
		name  string
		ent   string
		steps []step
	}{
		{"tiered", "t", []step{
			{5, limitr.EventMeterChanged, ptr(0.0), nil},                // inside the included 10
			{10, limitr.EventMeterOverage, ptr(5.0), ptr(5.0)},          // 5 billable units in band 1
			{10, limitr.EventMeterOverage, ptr(5*1 + 5*0.5), ptr(10.0)}, // position 5: 5@1 then 5@0.5
			{-8, limitr.EventMeterChanged, ptr(-(5*0.5 + 3*1.0)), nil},  // refund walking back from 15 to 7
			{-10, limitr.EventMeterChanged, ptr(-7.0), nil},             // back inside: refund the last 7
			{-5, limitr.EventMeterChanged, ptr(0.0), nil},               // included units are free
		}},
		{"volume", "v", []step{
			{10, limitr.EventMeterChanged, ptr(0.0), nil},
			{12, limitr.EventMeterOverage, ptr(6.0), ptr(12.0)}, // total(12) = 12 × 0.5 (band 2)
			{-2, limitr.EventMeterChanged, ptr(10.0 - 6), nil},  // total(10)−total(12): back to a dearer band
		}},
		{"stairstep", "s", []step{
			{10, limitr.EventMeterChanged, ptr(0.0), nil},
			{1, limitr.EventMeterOverage, ptr(5.0), ptr(1.0)}, // entering band 1 costs its fee
			{9, limitr.EventMeterOverage, ptr(0.0), ptr(9.0)}, // still band 1
			{1, limitr.EventMeterOverage, ptr(3.0), ptr(1.0)}, // 8 − 5
		}},
		{"flat", "f", []step{
			{12, limitr.EventMeterOverage, ptr(0.02), ptr(2.0)},
			{-4, limitr.EventMeterChanged, ptr(-0.02), nil},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, curvesPolicy)
			e.customer("c", "")
			for i, s := range tc.steps {
				e.rec.reset()
				if !e.allow("c", tc.ent, s.amt) {
					t.Fatalf("step %d: Allow(%v) denied on a soft limit", i, s.amt)
				}
				ev, ok := e.rec.last(s.wantType)
				if !ok {
					t.Fatalf("step %d: no %s event; got %v", i, s.wantType, e.rec.types())
				}
				m := payload(t, ev)
				got, ok := pf(m, "meter", "price_diff")
				if !ok || !closeTo(got, *s.wantPrice, 1e-12) {
					t.Errorf("step %d (%v): price_diff = %v (present %v), want %v", i, s.amt, got, ok, *s.wantPrice)
				}
				if s.wantOver != nil {
					if ov, _ := pf(m, "overage"); !closeTo(ov, *s.wantOver, 1e-12) {
						t.Errorf("step %d: overage = %v, want %v", i, ov, *s.wantOver)
					}
					// §5 step 15: with no grants, overage_price = price_diff.
					if op, _ := pf(m, "overage_price"); !closeTo(op, *s.wantPrice, 1e-12) {
						t.Errorf("step %d: overage_price = %v, want %v", i, op, *s.wantPrice)
					}
				}
			}
		})
	}
}

// §11.2 meter-limit: a denied call on a hard tiered limit still reports the price it
// would have added.
func TestPriceDiffOnDeniedCall(t *testing.T) {
	e := newEnv(t, curvesPolicy)
	e.customer("c", "")
	e.allow("c", "th", 8)
	if e.allow("c", "th", 7) {
		t.Fatal("hard limit 10 allowed 8+7")
	}
	ev, ok := e.rec.last(limitr.EventMeterLimit)
	if !ok {
		t.Fatalf("no meter-limit; got %v", e.rec.types())
	}
	m := payload(t, ev)
	if got, _ := pf(m, "meter", "price_diff"); !closeTo(got, 5, 1e-12) {
		t.Errorf("price_diff = %v, want 5 (5 billable units in band 1)", got)
	}
	if got, _ := pf(m, "overage"); got != 5 {
		t.Errorf("overage = %v, want 5", got)
	}
}
