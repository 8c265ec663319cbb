package enforcement

import (
	"math/rand/v2"
	"strconv"
	"testing"
)

// TestIDTable runs random puts and removes against a map, with few shards' worth of
// hash bits in play so probe sequences collide and wrap around often.
func TestIDTable(t *testing.T) {
	k := newIDHasher()
	hash := k.hash
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
			tab.put(&k, h, c)
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
	k := newIDHasher()
	hash := k.hash
	var tab idTable
	stable := make([]*customer, 64)
	for i := range stable {
		stable[i] = &customer{id: "stable" + strconv.Itoa(i)}
		tab.put(&k, hash(stable[i].id), stable[i])
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
			tab.put(&k, hash(id), c)
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

// TestIDHash checks the inline hash of short ids: every byte of every length counts,
// and sequential ids spread evenly over shards, tags and slots.
func TestIDHash(t *testing.T) {
	k := newIDHasher()
	base := "abcdefghijklmnopq"
	for n := 0; n <= len(base); n++ {
		id := base[:n]
		for i := range n {
			other := id[:i] + "#" + id[i+1:]
			if k.hash(other) == k.hash(id) {
				t.Errorf("len %d: byte %d does not change the hash", n, i)
			}
		}
		if n > 0 && k.hash(id) == k.hash(id[:n-1]) {
			t.Errorf("len %d: same hash as its prefix", n)
		}
	}
	const ids = 1 << 18
	var shards [256]int
	var tags [128]int
	var slots [1024]int
	seen := make(map[idHash]bool, ids)
	for i := range ids {
		h := k.hash("user_" + strconv.Itoa(i))
		if seen[h] {
			t.Fatalf("user_%d: repeated hash", i)
		}
		seen[h] = true
		shards[h.shard()]++
		tags[h.tag()&0x7f]++
		slots[uint64(h)&1023]++
	}
	// Each bucket should be within a few standard deviations of the mean.
	within := func(name string, counts []int) {
		mean := float64(ids) / float64(len(counts))
		for b, c := range counts {
			if d := float64(c) - mean; d*d > 36*mean { // six σ
				t.Errorf("%s %d: %d, mean %.0f", name, b, c, mean)
			}
		}
	}
	within("shard", shards[:])
	within("tag", tags[:])
	within("slot", slots[:])
}
