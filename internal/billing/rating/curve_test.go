package rating

import (
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/limitr/limitr/internal/num"
)

func d(s string) num.Dec { return num.MustParse(s) }

func upTo(s string) *num.Dec { v := d(s); return &v }

// storage is mb_storage from examples/policies/ai-credits.yaml.
var storage = Curve{Model: Tiered, Tiers: []Tier{
	{UpTo: upTo("5"), Price: d("0.80")},
	{UpTo: upTo("10"), Price: d("0.70")},
	{UpTo: upTo("50"), Price: d("0.60")},
	{Price: d("0.55")},
}}

// volume gets cheaper per unit as the total grows.
var volume = Curve{Model: Volume, Tiers: []Tier{
	{UpTo: upTo("10"), Price: d("1")},
	{UpTo: upTo("100"), Price: d("0.5")},
	{Price: d("0.25")},
}}

// stairs charges a fee per band: 1-10 → 5, 11-100 → 20, above → 50.
var stairs = Curve{Model: Stairstep, Tiers: []Tier{
	{UpTo: upTo("10"), Price: d("5")},
	{UpTo: upTo("100"), Price: d("20")},
	{Price: d("50")},
}}

func eq(a, b num.Dec) bool { return a.Cmp(b) == 0 }

type priceCase struct {
	name      string
	curve     Curve
	qty, pos  string
	want      string
	wantError error
}

func TestPriceOf(t *testing.T) {
	flat := Curve{Price: d("0.000006")}
	cases := []priceCase{
		{"flat", flat, "1000", "0", "0.006", nil},
		{"flat ignores position", flat, "1000", "999", "0.006", nil},
		{"flat negative position", flat, "1000", "-50", "0.006", nil},
		{"flat refund", flat, "-2", "5", "-0.000012", nil},
		{"flat zero price", Curve{}, "7", "0", "0", nil},

		{"tiered across three bands", storage, "12", "0", "8.7", nil},           // 5×0.8 + 5×0.7 + 2×0.6
		{"tiered from inside first band", storage, "3", "4", "2.2", nil},        // 1×0.8 + 2×0.7
		{"tiered included units at first rate", storage, "3", "-2", "2.4", nil}, // 2×0.8 + 1×0.8
		{"tiered wholly included", storage, "10", "-10", "8", nil},
		{"tiered refund walks back", storage, "-3", "12", "-1.9", nil}, // −(2×0.6 + 1×0.7)
		{"tiered refund into included", storage, "-5", "2", "-4", nil}, // −(3×0.8 + 2×0.8)
		{"tiered all bands", storage, "60", "0", "37", nil},            // 4 + 3.5 + 24 + 5.5
		{"tiered fractional", storage, "2.5", "9", "1.6", nil},         // 1×0.7 + 1.5×0.6
		{"tiered top band", storage, "1", "100", "0.55", nil},
		{"tiered zero qty", storage, "0", "7", "0", nil},
		{"tiered boundary exact", storage, "5", "0", "4", nil},
		{"tiered starts on boundary", storage, "1", "5", "0.7", nil},

		{"volume first band", volume, "5", "0", "5", nil},
		{"volume band top", volume, "10", "0", "10", nil},
		{"volume whole total repriced", volume, "11", "0", "5.5", nil},
		{"volume crossing into cheaper band is negative", volume, "2", "9", "-3.5", nil}, // 11×0.5 − 9×1
		{"volume inside band", volume, "5", "20", "2.5", nil},
		{"volume refund back into dearer band", volume, "-2", "11", "3.5", nil}, // 9×1 − 11×0.5
		{"volume negative position at first rate", volume, "5", "-3", "5", nil}, // 2×1 − (−3×1)
		{"volume wholly included", volume, "3", "-5", "3", nil},                 // −2 − (−5)
		{"volume top band", volume, "100", "50", "12.5", nil},                   // 150×0.25 − 50×0.5

		{"stairstep first unit pays first fee", stairs, "1", "0", "5", nil},
		{"stairstep band top", stairs, "10", "0", "5", nil},
		{"stairstep second band", stairs, "11", "0", "20", nil},
		{"stairstep marginal step", stairs, "1", "10", "15", nil},
		{"stairstep within band free", stairs, "5", "2", "0", nil},
		{"stairstep included units free", stairs, "5", "-5", "0", nil},
		{"stairstep leaving included", stairs, "6", "-5", "5", nil},
		{"stairstep refund", stairs, "-5", "12", "-15", nil},
		{"stairstep top", stairs, "1000", "0", "50", nil},

		{"tiered without tiers", Curve{Model: Tiered}, "1", "0", "0", ErrNoPrice},
		{"stairstep without tiers", Curve{Model: Stairstep}, "1", "0", "0", ErrNoPrice},
		{"unknown model", Curve{Model: 9, Tiers: storage.Tiers}, "1", "0", "0", ErrNoPrice},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.curve.PriceOf(d(tc.qty), d(tc.pos))
			if !errors.Is(err, tc.wantError) {
				t.Fatalf("PriceOf(%s, %s) error = %v, want %v", tc.qty, tc.pos, err, tc.wantError)
			}
			if err == nil && !eq(got, d(tc.want)) {
				t.Fatalf("PriceOf(%s, %s) = %s, want %s", tc.qty, tc.pos, got, tc.want)
			}
		})
	}
}

func TestPriceOfOverflow(t *testing.T) {
	c := Curve{Price: d("1000000000000")}
	if _, err := c.PriceOf(d("100000000000"), num.Zero); !errors.Is(err, num.ErrOutOfRange) {
		t.Fatalf("want ErrOutOfRange, got %v", err)
	}
}

func TestQuantityFor(t *testing.T) {
	unbounded := UnboundedQuantity.String()
	cases := []priceCase{ // qty holds the runes
		{"flat", Curve{Price: d("0.000006")}, "0.006", "0", "1000", nil},
		{"flat refund is linear", Curve{Price: d("0.000006")}, "-0.000012", "3", "-2", nil},
		{"flat rounds once, half-even to 19 digits", Curve{Price: d("3")}, "1", "0", "0.3333333333333333333", nil},
		{"flat two thirds", Curve{Price: d("3")}, "2", "0", "0.6666666666666666667", nil},
		{"flat free is unbounded", Curve{}, "1", "0", unbounded, nil},
		{"flat zero runes", Curve{}, "0", "0", "0", nil},
		{"flat free refund has no inverse", Curve{}, "-1", "0", "0", ErrNoPrice},

		{"tiered inverse across bands", storage, "8.7", "0", "12", nil},
		{"tiered inverse from inside band", storage, "2.2", "4", "3", nil},
		{"tiered inverse through included", storage, "2.4", "-2", "3", nil},
		{"tiered all bands", storage, "37", "0", "60", nil},
		{"tiered fraction of first band", storage, "1", "0", "1.25", nil},
		{"tiered zero runes", storage, "0", "3", "0", nil},
		{"tiered negative runes at first rate", storage, "-1.6", "30", "-2", nil},
		{"tiered free last band is unbounded", Curve{Model: Tiered, Tiers: []Tier{{UpTo: upTo("5"), Price: d("1")}, {Price: num.Zero}}}, "6", "0", unbounded, nil},
		{"tiered free first band walked through", Curve{Model: Tiered, Tiers: []Tier{{UpTo: upTo("5"), Price: num.Zero}, {Price: d("2")}}}, "1", "0", "5.5", nil},
		{"tiered without tiers", Curve{Model: Tiered}, "1", "0", "0", ErrNoPrice},

		{"volume within first band", volume, "5", "0", "5", nil},
		{"volume cheaper band refunds entry", volume, "10.4", "0", "20.8", nil}, // 20.8 × 0.5 = 10.4
		{"volume from inside band", volume, "2.5", "20", "5", nil},
		{"volume included units", volume, "3", "-5", "3", nil},
		{"volume negative runes at first rate", volume, "-3.5", "11", "-3.5", nil},
		// Dearer second band: 10 units cost 5, the 11th reprices all at 1 (jump to 11).
		{"volume never enters unaffordable band", Curve{Model: Volume, Tiers: []Tier{{UpTo: upTo("10"), Price: d("0.5")}, {Price: d("1")}}}, "6", "0", "10", nil},
		{"volume enters band once affordable", Curve{Model: Volume, Tiers: []Tier{{UpTo: upTo("10"), Price: d("0.5")}, {Price: d("1")}}}, "12", "0", "12", nil},

		{"stairstep can't afford first fee", stairs, "4", "0", "0", nil},
		{"stairstep fee buys the whole band", stairs, "5", "0", "10", nil},
		{"stairstep stops before next fee", stairs, "20", "0", "100", nil},
		{"stairstep top band is unbounded", stairs, "50", "0", unbounded, nil},
		{"stairstep from band edge", stairs, "15", "10", "90", nil},
		{"stairstep included units are free", stairs, "1", "-5", "5", nil},
		{"stairstep rest of paid band is free", stairs, "5", "3", "7", nil},
		{"stairstep top from inside", stairs, "30", "100", unbounded, nil},
		{"stairstep refund has no inverse", stairs, "-1", "0", "0", ErrNoPrice},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.curve.QuantityFor(d(tc.qty), d(tc.pos))
			if !errors.Is(err, tc.wantError) {
				t.Fatalf("QuantityFor(%s, %s) error = %v, want %v", tc.qty, tc.pos, err, tc.wantError)
			}
			if err == nil && !eq(got, d(tc.want)) {
				t.Fatalf("QuantityFor(%s, %s) = %s, want %s", tc.qty, tc.pos, got, tc.want)
			}
		})
	}
}

// randDec returns a decimal in [lo, hi) with the given number of decimal places.
func randDec(r *rand.Rand, lo, hi int64, scale int) num.Dec {
	p := int64(1)
	for range scale {
		p *= 10
	}
	v, err := num.FromInt(lo*p + r.Int64N((hi-lo)*p)).Quo(num.FromInt(p))
	if err != nil {
		panic(err)
	}
	return v
}

func randTiers(r *rand.Rand, positiveRates bool) []Tier {
	n := 1 + r.IntN(5)
	tiers := make([]Tier, n)
	bound := num.Zero
	for i := range tiers {
		lo := int64(0)
		if positiveRates {
			lo = 1
		}
		tiers[i].Price = randDec(r, lo, 1000, 3)
		if i < n-1 {
			bound, _ = bound.Add(randDec(r, 1, 100, 1))
			b := bound
			tiers[i].UpTo = &b
		}
	}
	return tiers
}

// TestQuantityForInvertsTiered: for positive rates the graduated curve is strictly
// increasing, so QuantityFor undoes PriceOf.
func TestQuantityForInvertsTiered(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	tol := d("0.000000000001")
	for i := range 5000 {
		c := Curve{Model: Tiered, Tiers: randTiers(r, true)}
		q := randDec(r, 0, 500, 3)
		p := randDec(r, -100, 500, 2)
		runes, err := c.PriceOf(q, p)
		if err != nil {
			t.Fatal(err)
		}
		back, err := c.QuantityFor(runes, p)
		if err != nil {
			t.Fatal(err)
		}
		diff, _ := back.Sub(q)
		if diff.Abs().Cmp(tol) > 0 {
			t.Fatalf("#%d tiers %v: QuantityFor(PriceOf(%s, %s) = %s) = %s", i, c.Tiers, q, p, runes, back)
		}
	}
}

// TestQuantityForNeverOverspends: whatever the model, the units QuantityFor returns cost
// at most the budget, and one more unit past a stairstep/volume stop costs more than it.
func TestQuantityForNeverOverspends(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	tol := d("0.000000001")
	for i := range 5000 {
		c := Curve{Model: Model(1 + r.IntN(3)), Tiers: randTiers(r, false)}
		budget := randDec(r, 0, 2000, 2)
		p := randDec(r, -50, 300, 1)
		q, err := c.QuantityFor(budget, p)
		if err != nil {
			t.Fatal(err)
		}
		if eq(q, UnboundedQuantity) {
			continue
		}
		cost, err := c.PriceOf(q, p)
		if err != nil {
			t.Fatal(err)
		}
		over, _ := cost.Sub(budget)
		if over.Cmp(tol) > 0 {
			t.Fatalf("#%d %v %v: QuantityFor(%s, %s) = %s costs %s", i, c.Model, c.Tiers, budget, p, q, cost)
		}
	}
}

func TestModelNames(t *testing.T) {
	for _, m := range []Model{Flat, Tiered, Volume, Stairstep} {
		got, err := ParseModel(m.String())
		if err != nil || got != m {
			t.Fatalf("ParseModel(%q) = %v, %v", m.String(), got, err)
		}
	}
	if m, err := ParseModel(""); err != nil || m != Flat {
		t.Fatalf("empty model: %v %v", m, err)
	}
	if _, err := ParseModel("graduated"); err == nil {
		t.Fatal("want error for unknown model")
	}
	if Model(7).String() != "Model(7)" {
		t.Fatal(Model(7).String())
	}
}

func TestNoAllocs(t *testing.T) {
	flat := Curve{Price: d("0.000006")}
	x := NewExchange(aiCreditsPairs(), aiCreditsCurves())
	q, p := d("1234.5"), d("3")
	for name, f := range map[string]func(){
		"flat price":     func() { _, _ = flat.PriceOf(q, p) },
		"flat quantity":  func() { _, _ = flat.QuantityFor(q, p) },
		"tiered price":   func() { _, _ = storage.PriceOf(q, p) },
		"tiered refund":  func() { _, _ = storage.PriceOf(q.Neg(), p) },
		"tiered qty":     func() { _, _ = storage.QuantityFor(q, p) },
		"volume price":   func() { _, _ = volume.PriceOf(q, p) },
		"volume qty":     func() { _, _ = volume.QuantityFor(q, p) },
		"stairstep qty":  func() { _, _ = stairs.QuantityFor(q, p) },
		"to runes chain": func() { _, _ = x.ToRunes(q, "ai_input_token", p) },
		"from runes":     func() { _, _ = x.FromRunes(q, "ai_input_token", p) },
		"convert":        func() { _, _ = x.Convert(q, "abstract", "ai_output_token", p, p) },
	} {
		if a := testing.AllocsPerRun(100, f); a != 0 {
			t.Errorf("%s: %v allocs", name, a)
		}
	}
}
