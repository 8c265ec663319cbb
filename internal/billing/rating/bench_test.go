package rating

import (
	"testing"

	"github.com/limitr/limitr/internal/num"
)

func BenchmarkPriceOfFlat(b *testing.B) {
	c := Curve{Price: d("0.000006")}
	q, p := d("4200"), d("120000")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.PriceOf(q, p); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPriceOfTiered(b *testing.B) {
	q, p := d("12.5"), d("3")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := storage.PriceOf(q, p); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkQuantityForTiered(b *testing.B) {
	r, p := d("8.7"), d("3")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := storage.QuantityFor(r, p); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkToRunesChain(b *testing.B) {
	x := NewExchange(aiCreditsPairs(), aiCreditsCurves())
	v := d("4200")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := x.ToRunes(v, "ai_input_token", num.Zero); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkConvert(b *testing.B) {
	x := NewExchange(aiCreditsPairs(), aiCreditsCurves())
	v := d("10")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := x.Convert(v, "abstract", "ai_input_token", num.Zero, num.Zero); err != nil {
			b.Fatal(err)
		}
	}
}
