package enforcement

import (
	"hash/maphash"
	"math/rand/v2"
	"strconv"
	"testing"
)

// TestIDTable runs random puts and removes against a map, with few shards' worth of
// hash bits in play so probe sequences collide and wrap around often.
func TestIDTable(t *testing.T) {
	seed := maphash.MakeSeed()
	hash := func(id string) idHash { return idHash(maphash.String(seed, id)) }
	rng := rand.New(rand.NewPCG(1, 2))
	var tab idTable
	want := map[string]*customer{}
	check := func(step int) {
		t.Helper()
		if tab.n != len(want) {
			t.Fatalf("step %d: n = %d, want %d", step, tab.n, len(want))
		}
		for id, c := range want {
			if got := tab.get(hash(id), id); got != c {
				t.Fatalf("step %d: get(%q) = %v, want %v", step, id, got, c)
			}
		}
		seen := 0
		tab.each(func(c *customer) {
			if want[c.id] != c {
				t.Fatalf("step %d: each visits %q, not held", step, c.id)
			}
			seen++
		})
		if seen != len(want) {
			t.Fatalf("step %d: each visits %d, want %d", step, seen, len(want))
		}
	}
	for step := range 20000 {
		id := "c" + strconv.Itoa(rng.IntN(600))
		h := hash(id)
		if c, ok := want[id]; ok {
			if rng.IntN(3) == 0 {
				// Removing a customer the table does not hold changes nothing.
				tab.remove(h, &customer{id: id})
			} else {
				tab.remove(h, c)
				delete(want, id)
			}
		} else {
			if tab.get(h, id) != nil {
				t.Fatalf("step %d: get(%q) found a removed customer", step, id)
			}
			c := &customer{id: id}
			tab.put(seed, h, c)
			want[id] = c
		}
		if step%500 == 0 {
			check(step)
		}
	}
	check(-1)
}

// TestIDTableConcurrentReads looks customers up without a lock while a writer adds and
// removes others (growing, tombstoning and rebuilding the table): a customer that
// stays in the table must always be found. Run with -race.
func TestIDTableConcurrentReads(t *testing.T) {
	seed := maphash.MakeSeed()
	hash := func(id string) idHash { return idHash(maphash.String(seed, id)) }
	var tab idTable
	stable := make([]*customer, 64)
	for i := range stable {
		stable[i] = &customer{id: "stable" + strconv.Itoa(i)}
		tab.put(seed, hash(stable[i].id), stable[i])
	}
	done := make(chan struct{})
	errs := make(chan string, 2)
	for r := range 2 {
		go func() {
			for i := r; ; i++ {
				select {
				case <-done:
					errs <- ""
					return
				default:
				}
				c := stable[i%len(stable)]
				if got := tab.get(hash(c.id), c.id); got != c {
					errs <- c.id + " not found"
					return
				}
			}
		}()
	}
	churn := map[string]*customer{}
	for i := range 20000 {
		id := "churn" + strconv.Itoa(i%700)
		if c, ok := churn[id]; ok {
			tab.remove(hash(id), c)
			delete(churn, id)
		} else {
			c := &customer{id: id}
			tab.put(seed, hash(id), c)
			churn[id] = c
		}
	}
	close(done)
	for range 2 {
		if e := <-errs; e != "" {
			t.Fatal(e)
		}
	}
}
