package rating

import (
	"testing"

	"github.com/limitr/limitr/internal/num"
)

// scaled builds v / 10^(s%4) so the fuzzer explores fractional amounts.
func scaled(v int64, s uint8) num.Dec {
	p := int64(1)
	for range s % 4 {
		p *= 10
	}
	q, err := num.FromInt(v).Quo(num.FromInt(p))
	if err != nil {
		panic(err)
	}
	return q
}

// FuzzCurves builds random curves and checks that pricing never panics, that PriceOf is
// exactly additive (for tiered as a walk, for volume/stairstep as telescoping totals),
// and that QuantityFor never buys more than its budget.
func FuzzCurves(f *testing.F) {
	f.Add(uint8(1), uint8(4), int64(50), int64(80), int64(7), int64(12), int64(-3), int64(9), uint8(1), int64(870))
	f.Add(uint8(2), uint8(3), int64(100), int64(100), int64(20), int64(2), int64(9), int64(-4), uint8(0), int64(104))
	f.Add(uint8(3), uint8(3), int64(10), int64(500), int64(30), int64(15), int64(-7), int64(0), uint8(2), int64(5000))
	f.Add(uint8(0), uint8(0), int64(0), int64(6), int64(0), int64(1000), int64(0), int64(-1000), uint8(3), int64(-2))
	f.Fuzz(func(t *testing.T, model, ntiers uint8, width, price, step, a, b, pos int64, scale uint8, budget int64) {
		clampAbs := func(v, m int64) int64 {
			v %= m
			return v
		}
		width = 1 + abs64(clampAbs(width, 10_000))
		price = abs64(clampAbs(price, 100_000))
		step = clampAbs(step, 1_000)
		c := Curve{Model: Model(model % 5), Price: scaled(price, 3+scale)}
		n := int(ntiers % 6)
		bound := num.Zero
		for i := range n {
			tier := Tier{Price: scaled(abs64(price+int64(i)*step), 3+scale)}
			if i < n-1 {
				bound, _ = bound.Add(scaled(width+int64(i)*abs64(step), 1))
				u := bound
				tier.UpTo = &u
			}
			c.Tiers = append(c.Tiers, tier)
		}
		qa := scaled(clampAbs(a, 10_000_000), scale)
		qb := scaled(clampAbs(b, 10_000_000), scale)
		p := scaled(clampAbs(pos, 10_000_000), scale+1)

		pa, errA := c.PriceOf(qa, p)
		pab, errAB := c.PriceOf(mustAdd(qa, qb), p)
		pb, errB := c.PriceOf(qb, mustAdd(p, qa))
		if (errA == nil) != (errAB == nil) || (errA == nil) != (errB == nil) {
			t.Fatalf("inconsistent errors: %v %v %v", errA, errAB, errB)
		}
		if errA == nil {
			if sum := mustAdd(pa, pb); sum.Cmp(pab) != 0 {
				t.Fatalf("%v %v: PriceOf(%s,%s)=%s + PriceOf(%s,+)=%s = %s, PriceOf(sum)=%s", c.Model, c.Tiers, qa, p, pa, qb, pb, sum, pab)
			}
		}

		r := scaled(clampAbs(budget, 10_000_000), scale)
		q, err := c.QuantityFor(r, p)
		if err != nil || !r.IsPos() || q.Cmp(UnboundedQuantity) == 0 {
			return
		}
		cost, err := c.PriceOf(q, p)
		if err != nil {
			t.Fatalf("PriceOf(QuantityFor) error: %v", err)
		}
		if over := mustSub(cost, r); over.Cmp(num.MustParse("0.000000001")) > 0 {
			t.Fatalf("%v %v: QuantityFor(%s, %s) = %s costs %s", c.Model, c.Tiers, r, p, q, cost)
		}
	})
}

func abs64(v int64) int64 {
	if v < 0 {
		return -v
	}
	return v
}

func mustAdd(a, b num.Dec) num.Dec {
	s, err := a.Add(b)
	if err != nil {
		panic(err)
	}
	return s
}

func mustSub(a, b num.Dec) num.Dec {
	s, err := a.Sub(b)
	if err != nil {
		panic(err)
	}
	return s
}
