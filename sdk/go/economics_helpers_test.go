package limitr_test

import (
	"encoding/json"
	"math"
	"sort"

	limitr "github.com/limitr/limitr/sdk/go"
)

// Helpers shared by the economics_*_test.go files.

func (e *env) check(id, ent string, amt float64, opts ...limitr.CallOption) bool {
	e.t.Helper()
	ok, err := e.p.Check(e.ctx, id, ent, amt, opts...)
	if err != nil {
		e.t.Fatalf("Check(%q, %q, %v): %v", id, ent, amt, err)
	}
	return ok
}

func (e *env) topup(id, name string) {
	e.t.Helper()
	if err := e.p.ApplyCustomerTopup(e.ctx, id, name); err != nil {
		e.t.Fatalf("ApplyCustomerTopup(%q, %q): %v", id, name, err)
	}
}

func (e *env) credit(id, credit string) float64 {
	e.t.Helper()
	v, err := e.p.RemainingCredit(e.ctx, id, credit)
	if err != nil {
		e.t.Fatalf("RemainingCredit(%q, %q): %v", id, credit, err)
	}
	return v
}

func (e *env) remaining(id, ent string) float64 {
	e.t.Helper()
	v, err := e.p.Remaining(e.ctx, id, ent)
	if err != nil {
		e.t.Fatalf("Remaining(%q, %q): %v", id, ent, err)
	}
	return v
}

func (e *env) limitOf(id, ent string) float64 {
	e.t.Helper()
	v, err := e.p.Limit(e.ctx, id, ent)
	if err != nil {
		e.t.Fatalf("Limit(%q, %q): %v", id, ent, err)
	}
	return v
}

func (e *env) cust(id string) *limitr.Customer {
	e.t.Helper()
	c, err := e.p.Customer(e.ctx, id)
	if err != nil {
		e.t.Fatalf("Customer(%q): %v", id, err)
	}
	return c
}

// grantList returns a customer's grants, oldest first (then by id).
func (e *env) grantList(id string) []limitr.Grant {
	e.t.Helper()
	c := e.cust(id)
	out := make([]limitr.Grant, 0, len(c.Grants))
	for _, g := range c.Grants {
		out = append(out, g)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Created.Equal(out[j].Created) {
			return out[i].Created.Before(out[j].Created)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// grantValues maps topup name → balances of its grants, oldest first.
func (e *env) grantValues(id string) map[string][]float64 {
	e.t.Helper()
	out := map[string][]float64{}
	for _, g := range e.grantList(id) {
		out[g.Topup] = append(out[g.Topup], g.Value)
	}
	return out
}

func (e *env) addCap(id string, c limitr.Cap) {
	e.t.Helper()
	if err := e.p.AddCustomerCap(e.ctx, id, c); err != nil {
		e.t.Fatalf("AddCustomerCap(%q, %+v): %v", id, c, err)
	}
}

func (e *env) capOf(id, capID string) limitr.Cap {
	e.t.Helper()
	c, err := e.p.CustomerCap(e.ctx, id, capID)
	if err != nil {
		e.t.Fatalf("CustomerCap(%q, %q): %v", id, capID, err)
	}
	return c
}

func (r *recorder) ofType(typ string) []limitr.Event {
	var out []limitr.Event
	for _, ev := range r.all() {
		if ev.Type == typ {
			out = append(out, ev)
		}
	}
	return out
}

// customersJSON is the JSON of every customer, as a persistence layer would store it.
func (e *env) customersJSON() []byte {
	e.t.Helper()
	cs, err := e.p.Customers(e.ctx)
	if err != nil {
		e.t.Fatalf("Customers: %v", err)
	}
	b, err := json.Marshal(cs)
	if err != nil {
		e.t.Fatalf("marshal customers: %v", err)
	}
	return b
}

func closeTo(a, b, tol float64) bool {
	if a == b {
		return true
	}
	d := math.Abs(a - b)
	return d <= tol || d <= tol*math.Max(math.Abs(a), math.Abs(b))
}

func ptr[T any](v T) *T { return &v }

// pf reads a number at a dotted path of a payload map (nil when absent).
func pf(m map[string]any, path ...string) (float64, bool) {
	var cur any = m
	for _, k := range path {
		mm, ok := cur.(map[string]any)
		if !ok {
			return 0, false
		}
		cur, ok = mm[k]
		if !ok {
			return 0, false
		}
	}
	f, ok := cur.(float64)
	return f, ok
}

func has(m map[string]any, key string) bool { _, ok := m[key]; return ok }
