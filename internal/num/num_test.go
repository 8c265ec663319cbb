package num

import (
	"math"
	"testing"

	"github.com/govalues/decimal"
)

func TestFromFloat64(t *testing.T) {
	cases := []struct {
		in   float64
		want string
	}{
		{0, "0"}, {0.1, "0.1"}, {-0.1, "-0.1"}, {1, "1"}, {120000, "120000"},
		{6e-6, "0.000006"}, {1.25, "1.25"}, {1e15, "1000000000000000"},
		{123456.789, "123456.789"}, {-2.5e-3, "-0.0025"}, {1e-19, "0.0000000000000000001"},
		{math.Copysign(0, -1), "0"}, {-4200, "-4200"}, {1 << 53, "9007199254740992"}, {-(1 << 53) + 1, "-9007199254740991"},
	}
	for _, c := range cases {
		got, err := FromFloat64(c.in)
		if err != nil {
			t.Fatalf("%v: %v", c.in, err)
		}
		if !got.Equal(MustParse(c.want)) {
			t.Errorf("FromFloat64(%v) = %v, want %v", c.in, got, c.want)
		}
	}
	for _, bad := range []float64{math.NaN(), math.Inf(1), math.Inf(-1), 1e18, -1e19, -(1 << 63), 1 << 63} {
		if _, err := FromFloat64(bad); err == nil {
			t.Errorf("FromFloat64(%v): want error", bad)
		}
	}
}

func TestTenTenthsFitOne(t *testing.T) {
	var c Calc
	sum := Zero
	tenth, _ := FromFloat64(0.1)
	for range 10 {
		sum = c.Add(sum, tenth)
	}
	if c.Err != nil || !sum.Equal(One) {
		t.Fatalf("sum = %v, err %v", sum, c.Err)
	}
}

func TestFromFloat64NoAlloc(t *testing.T) {
	allocs := testing.AllocsPerRun(100, func() { _, _ = FromFloat64(4200.5) })
	if allocs != 0 {
		t.Fatalf("allocs = %v", allocs)
	}
}

func TestCalcKeepsFirstError(t *testing.T) {
	var c Calc
	big := MustParse("9999999999999999999")
	_ = c.Add(big, big)
	_ = c.Quo(One, Zero)
	if c.Err == nil {
		t.Fatal("want overflow error")
	}
}

// TestAddCmpMatchDecimal checks the shortcuts of Add and Cmp against Decimal's own
// methods, bit for bit (value, scale, sign, error), on operands around their edges.
func TestAddCmpMatchDecimal(t *testing.T) {
	coefs := []int64{0, 1, 9, 10, 4200, 1e14, math.MaxInt64 / 2, math.MaxInt64/2 + 1, math.MaxInt64 - 1, math.MaxInt64}
	var ds []Dec
	for _, c := range coefs {
		for _, sc := range []int{0, 1, 6, 19} {
			for _, neg := range []bool{false, true} {
				v := c
				if neg {
					v = -c
				}
				d, err := decimal.New(v, sc)
				if err != nil {
					t.Fatal(err)
				}
				ds = append(ds, d)
			}
		}
	}
	ds = append(ds, MustParse("9999999999999999999"), MustParse("0.0000000000000000001"))
	for _, a := range ds {
		for _, b := range ds {
			got, gerr := Add(a, b)
			want, werr := a.Add(b)
			if (gerr != nil) != (werr != nil) || got != want {
				t.Fatalf("Add(%v, %v) = %#v, %v; Decimal.Add: %#v, %v", a, b, got, gerr, want, werr)
			}
			if got, want := Cmp(a, b), a.Cmp(b); got != want {
				t.Fatalf("Cmp(%v, %v) = %d, want %d", a, b, got, want)
			}
		}
	}
}
