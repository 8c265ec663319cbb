package limitr_test

import (
	"sync"
	"sync/atomic"
	"testing"
)

const concurrencyPolicy = `{"policy": {
  "credits": {"req": {}},
  "plans": {"p": {"default": true, "entitlements": {
    "api": {"limit": {"credit": "req", "value": 5000}}
  }}}
}}`

// DESIGN "A *Policy is safe for concurrent use" + §5 step 14: concurrent calls on one customer
// never overshoot a hard limit. Run once with -race.
func TestConcurrentAllowExactLimit(t *testing.T) {
	e := newEnv(t, concurrencyPolicy)
	e.customer("u", "p")
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 1000; i++ {
				ok, err := e.p.Allow(e.ctx, "u", "api", 1)
				if err != nil {
					t.Error(err)
					return
				}
				if ok {
					allowed.Add(1)
				}
				if i%100 == 0 { // interleave reads and checks
					if _, err := e.p.Value(e.ctx, "u", "api"); err != nil {
						t.Error(err)
					}
					if _, err := e.p.Check(e.ctx, "u", "api", 1); err != nil {
						t.Error(err)
					}
				}
			}
		}()
	}
	wg.Wait()
	if n := allowed.Load(); n != 5000 {
		t.Errorf("allowed %d calls, want exactly 5000", n)
	}
	if v := e.value("u", "api"); v != 5000 {
		t.Errorf("Value = %v, want 5000", v)
	}
	limitEvents := 0
	for _, ev := range e.rec.all() {
		if ev.Type == "meter-limit" {
			limitEvents++
		}
	}
	if limitEvents != 3000 {
		t.Errorf("%d meter-limit events, want 3000", limitEvents)
	}
}

// Concurrent calls on many customers, creation and plan changes racing with calls.
func TestConcurrentMixedOperations(t *testing.T) {
	e := newEnv(t, basePolicy)
	e.customer("org", "free", withType("org"))
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			id := string(rune('a' + g))
			if _, err := e.p.CreateCustomer(e.ctx, id, "", withRefs("org")); err != nil {
				t.Error(err)
				return
			}
			for i := 0; i < 200; i++ {
				e.p.Allow(e.ctx, id, "api", 1)
				if ok, _ := e.p.Allow(e.ctx, id, "seats", 1); ok {
					e.p.Allow(e.ctx, id, "seats", -1)
				}
				if i == 100 {
					e.p.SetCustomerPlan(e.ctx, id, "pro", false)
				}
			}
		}(g)
	}
	wg.Wait()
	if v := e.value("org", "seats"); v != 0 {
		t.Errorf("org seats = %v, want 0: every allowed +1 was given back", v)
	}
}
