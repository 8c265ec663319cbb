package enforcement

import (
	"math"
	"testing"
	"unsafe"
)

// The history the burn-rate reads come from, call by call.
func TestBurnPush(t *testing.T) {
	type call struct {
		atMs  int64
		delta float32
	}
	cases := []struct {
		name        string
		calls       []call
		rate, accel float64
		smoothed    float64
	}{
		{"none", nil, 0, 0, 0},
		{"one call", []call{{1000, 5}}, 0, 0, 0},
		{"two calls", []call{{1000, 5}, {1100, 2000}}, 20, 0, 20},
		{"three calls", []call{{1000, 1000}, {1100, 2000}, {1300, 3000}}, 15, -0.025, 19},
		{"four calls drop the oldest", []call{{0, 9}, {1000, 1000}, {1100, 2000}, {1300, 3000}}, 15, -0.025, 0.2*15 + 0.8*(0.2*20+0.8*1)},
		{"same millisecond adds up", []call{{1000, 1}, {1050, 100}, {1050, 400}}, 10, 0, 10},
		{"same millisecond as the first call", []call{{1000, 1}, {1000, 7}, {1010, 50}}, 5, 0, 5},
		{"a gap longer than 12 days counts as 12 days", []call{{0, 1}, {20 * 86_400_000, float32(gapMask)}}, 1, 0, 1},
		{"a decrement is a negative rate", []call{{0, 1}, {10, -50}}, -5, 0, -5},
	}
	for _, c := range cases {
		var b burn
		for _, x := range c.calls {
			b.push(x.atMs, x.delta, 0.2)
		}
		if got := b.rateNow(); math.Abs(got-c.rate) > 1e-6*math.Max(1, math.Abs(c.rate)) {
			t.Errorf("%s: rate %v, want %v", c.name, got, c.rate)
		}
		if got := b.acceleration(); math.Abs(got-c.accel) > 1e-9 {
			t.Errorf("%s: acceleration %v, want %v", c.name, got, c.accel)
		}
		if got := b.smoothed(0.2); math.Abs(got-c.smoothed) > 1e-4 {
			t.Errorf("%s: smoothed rate %v, want %v", c.name, got, c.smoothed)
		}
	}
	if s := unsafe.Sizeof(burn{}); s != 24 {
		t.Errorf("burn is %d bytes; every meter carries one", s)
	}
}
