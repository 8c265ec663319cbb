package limitr_test

import (
	"context"
	"runtime"
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

func newBenchPolicy(b *testing.B, customers int, opts ...limitr.Option) *limitr.Policy {
	b.Helper()
	p, err := limitr.New([]byte(benchPolicy), append([]limitr.Option{limitr.WithClock(benchClock())}, opts...)...)
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

// BenchmarkAllowParallel: 100k customers, calls spread over all cores. It reads the
// system clock, as production does: benchClock's one shared counter would be a cache
// line every core fights over, which no real deployment has.
func BenchmarkAllowParallel(b *testing.B) {
	const n = 100_000
	p := newBenchPolicy(b, n, limitr.WithClock(time.Now))
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

// BenchmarkAllowSerial100k is BenchmarkAllowParallel's access pattern on one
// goroutine: the one-goroutine rate the parallel speed-up is measured against.
func BenchmarkAllowSerial100k(b *testing.B) {
	const n = 100_000
	p := newBenchPolicy(b, n, limitr.WithClock(time.Now))
	ids := make([]string, n)
	for i := range ids {
		ids[i] = "user_" + strconv.Itoa(i)
	}
	ctx := context.Background()
	i := uint64(7919)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		i = i*6364136223846793005 + 1442695040888963407
		if ok, _ := p.Allow(ctx, ids[(i>>33)%n], "ai_tokens", 4200); !ok {
			b.Fatal("denied")
		}
	}
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

// econPolicy prices tokens through an abstract credit, as ai-credits.yaml does.
const econPolicy = `
policy:
  credits:
    token: { stof_units: int, overhead_cost: 0.000003, price: { amount: 0.000006 } }
    abstract: {}
  exchange:
    abstract: { value: 1, currency: rune }
    token: { value: 0.000006, currency: abstract }
  plans:
    soft:
      entitlements:
        ai_tokens: { limit: { credit: token, mode: soft, value: 0 } }
      topups:
        big: { credit: abstract, value: 1000000000000 }
    capped:
      entitlements:
        ai_tokens: { limit: { credit: token, mode: hard, value: 100000000000000 } }
`

// BenchmarkAllowSoftWithGrant: every call is soft overage paid from an abstract grant
// through the exchange.
func BenchmarkAllowSoftWithGrant(b *testing.B) {
	p, err := limitr.New([]byte(econPolicy), limitr.WithClock(benchClock()))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if _, err := p.CreateCustomer(ctx, "user_0", "soft"); err != nil {
		b.Fatal(err)
	}
	if err := p.ApplyCustomerTopup(ctx, "user_0", "big"); err != nil {
		b.Fatal(err)
	}
	if ok, err := p.Allow(ctx, "user_0", "ai_tokens", 4200); !ok || err != nil {
		b.Fatal(ok, err)
	}
	before, _ := p.RemainingCredit(ctx, "user_0", "abstract")
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if ok, _ := p.Allow(ctx, "user_0", "ai_tokens", 4200); !ok {
			b.Fatal("denied")
		}
	}
	b.StopTimer()
	if after, _ := p.RemainingCredit(ctx, "user_0", "abstract"); after >= before {
		b.Fatalf("the grant did not pay: %v → %v", before, after)
	}
}

// BenchmarkAllowCapped: a user whose calls count against its org's shared rune cap.
func BenchmarkAllowCapped(b *testing.B) {
	p, err := limitr.New([]byte(econPolicy), limitr.WithClock(benchClock()))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if _, err := p.CreateCustomer(ctx, "org_0", "capped", limitr.WithCustomerType("org")); err != nil {
		b.Fatal(err)
	}
	if _, err := p.CreateCustomer(ctx, "user_0", "capped", limitr.WithRefs("org_0")); err != nil {
		b.Fatal(err)
	}
	if err := p.AddCustomerCap(ctx, "org_0", limitr.Cap{ID: "budget", Credit: "rune", Value: 1e15, Shared: true}); err != nil {
		b.Fatal(err)
	}
	if ok, err := p.Allow(ctx, "user_0", "ai_tokens", 4200); !ok || err != nil {
		b.Fatal(ok, err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if ok, _ := p.Allow(ctx, "user_0", "ai_tokens", 4200); !ok {
			b.Fatal("denied")
		}
	}
	b.StopTimer()
	if c, _ := p.CustomerCap(ctx, "org_0", "budget"); c.MeterValue <= 0 {
		b.Fatalf("the org cap did not move: %+v", c)
	}
}

// BenchmarkResident1M measures resident state for 1M customers × 3 metered
// entitlements (budget ≤ 1 GiB). Run alone: go test -run '^$' -bench Resident1M -benchtime 1x.
func BenchmarkResident1M(b *testing.B) {
	const doc = `{"policy": {"credits": {"t": {"stof_units": "int"}}, "plans": {"p": {"default": true, "entitlements": {
	  "a": {"limit": {"credit": "t", "value": 1000000, "resets": true, "reset_inc": "1day"}},
	  "b": {"limit": {"credit": "t", "value": 1000000, "resets": true, "reset_inc": "30days"}},
	  "c": {"limit": {"credit": "t", "value": 1000000}}}}}}}`
	for b.Loop() {
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		p, err := limitr.New([]byte(doc), limitr.WithClock(benchClock()))
		if err != nil {
			b.Fatal(err)
		}
		ctx := context.Background()
		const n = 1_000_000
		for i := range n {
			id := "user_" + strconv.Itoa(i)
			if _, err := p.CreateCustomer(ctx, id, ""); err != nil {
				b.Fatal(err)
			}
			for _, ent := range []string{"a", "b", "c"} {
				if ok, _ := p.Allow(ctx, id, ent, 1); !ok {
					b.Fatal("denied")
				}
			}
		}
		runtime.GC()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapInuse-before.HeapInuse)/(1<<20), "MiB")
		b.ReportMetric(float64(after.HeapInuse-before.HeapInuse)/n, "B/customer")
		runtime.KeepAlive(p)
	}
}
