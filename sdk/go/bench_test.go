package limitr_test

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	limitr "github.com/limitr/limitr/sdk/go"
)

// benchPolicy has a hard limit far above what a benchmark run can use, so every
// call takes the full allow-and-commit path.
const benchPolicy = `{"policy": {
  "credits": {"token": {"stof_units": "int"}},
  "plans": {"pro": {"default": true, "entitlements": {
    "ai_tokens": {"limit": {"credit": "token", "mode": "hard", "value": 100000000000000, "resets": true, "reset_inc": "30days"}}
  }}}
}}`

func benchClock() func() time.Time {
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var tick atomic.Int64
	return func() time.Time { return base.Add(time.Duration(tick.Add(1))) }
}

func newBenchPolicy(b *testing.B, customers int) *limitr.Policy {
	b.Helper()
	p, err := limitr.New([]byte(benchPolicy), limitr.WithClock(benchClock()))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for i := range customers {
		if _, err := p.CreateCustomer(ctx, "user_"+strconv.Itoa(i), "pro"); err != nil {
			b.Fatal(err)
		}
	}
	return p
}

// BenchmarkAllowHard: a warm customer, a hard limit, one goroutine.
func BenchmarkAllowHard(b *testing.B) {
	p := newBenchPolicy(b, 1)
	ctx := context.Background()
	if ok, err := p.Allow(ctx, "user_0", "ai_tokens", 1); !ok || err != nil {
		b.Fatal(ok, err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if ok, _ := p.Allow(ctx, "user_0", "ai_tokens", 4200); !ok {
			b.Fatal("denied")
		}
	}
}

// BenchmarkAllowParallel: 100k customers, calls spread over all cores.
func BenchmarkAllowParallel(b *testing.B) {
	const n = 100_000
	p := newBenchPolicy(b, n)
	ids := make([]string, n)
	for i := range ids {
		ids[i] = "user_" + strconv.Itoa(i)
	}
	ctx := context.Background()
	var seed atomic.Uint64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := seed.Add(7919)
		for pb.Next() {
			i = i*6364136223846793005 + 1442695040888963407
			if ok, _ := p.Allow(ctx, ids[(i>>33)%n], "ai_tokens", 4200); !ok {
				b.Error("denied")
				return
			}
		}
	})
}

// BenchmarkBaselineMutexCounter is the floor: a mutex and a map doing the same job
// (look up the customer's counter, compare with the limit, add).
func BenchmarkBaselineMutexCounter(b *testing.B) {
	var mu sync.Mutex
	counters := map[string]float64{"user_0": 1}
	const limit = 1e14
	allow := func(id string, amount float64) bool {
		mu.Lock()
		defer mu.Unlock()
		v := counters[id] + amount
		if v > limit {
			return false
		}
		counters[id] = v
		return true
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if !allow("user_0", 4200) {
			b.Fatal("denied")
		}
	}
}
