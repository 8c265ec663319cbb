package ratelimit

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func newTestMemory(rate int, per time.Duration, burst int) (*Memory, *fakeClock) {
	clk := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	m := NewMemory(rate, per, burst)
	m.now = clk.Now
	return m, clk
}

func TestMemoryBurstThenDeny(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	m, clk := newTestMemory(10, time.Second, 3) // one request per 100ms, bursts of 3

	for i := range 3 {
		d, err := m.Allow(ctx, "k")
		if err != nil || !d.Allowed || d.Remaining != 2-i || d.Limit != 10 || d.Per != time.Second {
			t.Fatalf("request %d: %+v, %v", i, d, err)
		}
	}
	d, _ := m.Allow(ctx, "k")
	if d.Allowed || d.Remaining != 0 || d.RetryAfter != 100*time.Millisecond {
		t.Fatalf("4th: %+v", d)
	}
	// Denied requests cost nothing: the wait does not grow.
	d, _ = m.Allow(ctx, "k")
	if d.RetryAfter != 100*time.Millisecond {
		t.Fatalf("5th: %+v", d)
	}

	clk.Advance(99 * time.Millisecond)
	if d, _ := m.Allow(ctx, "k"); d.Allowed || d.RetryAfter != time.Millisecond {
		t.Fatalf("before refill: %+v", d)
	}
	clk.Advance(time.Millisecond)
	if d, _ := m.Allow(ctx, "k"); !d.Allowed || d.Remaining != 0 {
		t.Fatalf("after refill: %+v", d)
	}
	// A full refill restores the whole burst, no more.
	clk.Advance(time.Hour)
	for i := range 3 {
		if d, _ := m.Allow(ctx, "k"); !d.Allowed {
			t.Fatalf("after idle, request %d denied", i)
		}
	}
	if d, _ := m.Allow(ctx, "k"); d.Allowed {
		t.Fatal("burst exceeded after idle")
	}
}

func TestMemoryKeyIsolation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	m, _ := newTestMemory(1, time.Minute, 1)
	if d, _ := m.Allow(ctx, "a"); !d.Allowed {
		t.Fatal("a denied")
	}
	if d, _ := m.Allow(ctx, "a"); d.Allowed {
		t.Fatal("a allowed twice")
	}
	if d, _ := m.Allow(ctx, "b"); !d.Allowed {
		t.Fatal("b denied because of a")
	}
}

func TestMemoryDefaultBurstIsRate(t *testing.T) {
	t.Parallel()
	m, _ := newTestMemory(4, time.Second, 0)
	n := 0
	for range 10 {
		if d, _ := m.Allow(context.Background(), "k"); d.Allowed {
			n++
		}
	}
	if n != 4 {
		t.Fatalf("allowed %d, want 4", n)
	}
}

func TestMemoryEvictsIdleKeys(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	m, clk := newTestMemory(10, time.Second, 10)
	for i := range 1000 {
		m.Allow(ctx, fmt.Sprintf("key-%d", i))
	}
	if n := m.keys(); n != 1000 {
		t.Fatalf("keys = %d", n)
	}
	clk.Advance(sweepEvery + time.Second)
	// Sweeps run lazily per shard; touch every shard.
	for i := range 1000 {
		m.Allow(ctx, fmt.Sprintf("other-%d", i))
	}
	if n := m.keys(); n != 1000 {
		t.Fatalf("keys after sweep = %d, want only the 1000 fresh ones", n)
	}
}

func TestMemoryConcurrent(t *testing.T) {
	t.Parallel()
	m := NewMemory(100, time.Hour, 100)
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for range 50 {
				if d, _ := m.Allow(context.Background(), "shared"); d.Allowed {
					allowed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if n := allowed.Load(); n != 100 {
		t.Fatalf("allowed %d of 800, want 100", n)
	}
}

func TestInvalidConfigPanics(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		rate int
		per  time.Duration
	}{{0, time.Second}, {1, 0}, {-1, time.Second}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("NewMemory(%d, %v) did not panic", tc.rate, tc.per)
				}
			}()
			NewMemory(tc.rate, tc.per, 1)
		}()
	}
}
