package limitr_test

import (
	"sort"
	"testing"
	"time"

	limitr "github.com/limitr/limitr/sdk/go"
)

func keysOf(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func hasKeys(t *testing.T, what string, m map[string]any, keys ...string) {
	t.Helper()
	for _, k := range keys {
		if _, ok := m[k]; !ok {
			t.Errorf("%s: missing key %q (have %v)", what, k, keysOf(m))
		}
	}
}

func num(t *testing.T, what string, v any, want float64) {
	t.Helper()
	f, ok := v.(float64)
	if !ok || !approx(f, want) {
		t.Errorf("%s = %v, want %v", what, v, want)
	}
}

// §11.2: the order of meter events in one call.
func TestMeterEventOrder(t *testing.T) {
	day := 24 * time.Hour
	cases := []struct {
		name    string
		ent     string
		setup   []float64
		advance time.Duration
		amt     float64
		want    []string
	}{
		{"changed", "api", nil, 0, 3, []string{"meter-changed"}},
		{"limit", "api", []float64{9}, 0, 5, []string{"meter-limit"}},
		{"overage", "soft", []float64{8}, 0, 5, []string{"meter-overage"}},
		{"observe over its value", "obs", []float64{4}, 0, 5, []string{"meter-changed"}},
		// §11.2 meter-reset: before meter-changed, after meter-overage, before meter-limit.
		{"reset then changed", "daily", []float64{5}, 2 * day, 1, []string{"meter-reset", "meter-changed"}},
		{"overage then reset", "softd", []float64{8}, 2 * day, 15, []string{"meter-overage", "meter-reset"}},
		{"reset then limit", "daily", []float64{5}, 2 * day, 6, []string{"meter-reset", "meter-limit"}},
		// §5 step 15: a clamped decrement changes nothing and emits nothing.
		{"clamped no-op", "floor", nil, 0, -1, nil},
		// §5 step 15: value 0 without overhead emits nothing.
		{"zero call", "api", []float64{2}, 0, 0, nil},
		// Check never emits.
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, basePolicy)
			e.customer("u", "free")
			for _, a := range tc.setup {
				e.allow("u", tc.ent, a)
			}
			e.clock.Advance(tc.advance)
			e.rec.reset()
			e.allow("u", tc.ent, tc.amt)
			if got := e.rec.types(); !eqStrings(got, tc.want) {
				t.Errorf("events = %v, want %v", got, tc.want)
			}
			e.rec.reset()
			if _, err := e.p.Check(e.ctx, "u", tc.ent, tc.amt); err != nil {
				t.Fatal(err)
			}
			if got := e.rec.types(); len(got) != 0 {
				t.Errorf("Check emitted %v", got)
			}
		})
	}
}

// §11.2 meter-changed payload.
func TestMeterChangedPayload(t *testing.T) {
	e := newEnv(t, basePolicy)
	e.customer("u", "free")
	e.allow("u", "soft", 3)
	e.rec.reset()
	e.allow("u", "soft", 4, limitr.WithEventData(map[string]any{"model": "x"}))
	ev, ok := e.rec.last(limitr.EventMeterChanged)
	if !ok {
		t.Fatalf("no meter-changed; got %v", e.rec.types())
	}
	m := payload(t, ev)
	hasKeys(t, "meter-changed", m, "meter", "customer", "entitlement", "plan", "credit", "remaining", "event_data")
	meter, _ := m["meter"].(map[string]any)
	hasKeys(t, "meter-changed.meter", meter, "old", "value", "limit", "diff", "overhead", "overhead_diff", "price_diff")
	num(t, "meter.old", meter["old"], 3)
	num(t, "meter.value", meter["value"], 7)
	num(t, "meter.limit", meter["limit"], 10)
	num(t, "meter.diff", meter["diff"], 4)
	num(t, "meter.overhead", meter["overhead"], 3.5) // (3+4) × 0.5
	num(t, "meter.overhead_diff", meter["overhead_diff"], 2)
	num(t, "meter.price_diff", meter["price_diff"], 0) // still inside the limit
	num(t, "remaining", m["remaining"], 3)
	if m["entitlement"] != "soft" || m["plan"] != "free" {
		t.Errorf("entitlement/plan = %v/%v", m["entitlement"], m["plan"])
	}
	if ed, _ := m["event_data"].(map[string]any); ed["model"] != "x" {
		t.Errorf("event_data = %v", m["event_data"])
	}
	// §11.1: the customer in the payload already contains the new meter.
	cust, _ := m["customer"].(map[string]any)
	if cm, _ := cust["meters"].(map[string]any)["soft"].(map[string]any); cm == nil || cm["value"] != float64(7) {
		t.Errorf("payload customer meter = %v, want value 7", cust["meters"])
	}
	if _, ok := m["overage"]; ok {
		t.Errorf("meter-changed without grants carries overage: %v", m["overage"])
	}
	if ev.Meter == nil || ev.Meter.Old != 3 || ev.Meter.Value != 7 || ev.Entitlement != "soft" {
		t.Errorf("typed event fields: %+v %+v", ev, ev.Meter)
	}
}

// §11.2 meter-overage payload: overage (uncovered units) and overage_price.
func TestMeterOveragePayload(t *testing.T) {
	e := newEnv(t, basePolicy)
	e.customer("u", "free")
	e.allow("u", "soft", 8)
	steps := []struct {
		amt, overage, price, remaining float64
	}{
		{5, 3, 6, -3}, // 13: 3 past the limit, price 2/unit
		{2, 2, 4, -5}, // 15: the whole call is overage
	}
	for i, s := range steps {
		e.rec.reset()
		e.allow("u", "soft", s.amt)
		ev, ok := e.rec.last(limitr.EventMeterOverage)
		if !ok {
			t.Fatalf("step %d: no meter-overage; got %v", i, e.rec.types())
		}
		m := payload(t, ev)
		hasKeys(t, "meter-overage", m, "meter", "customer", "entitlement", "plan", "credit", "remaining", "overage", "overage_price", "event_data")
		num(t, "overage", m["overage"], s.overage)
		num(t, "overage_price", m["overage_price"], s.price)
		num(t, "remaining", m["remaining"], s.remaining)
		meter, _ := m["meter"].(map[string]any)
		num(t, "meter.price_diff", meter["price_diff"], s.price)
		if ev.Overage == nil || !approx(*ev.Overage, s.overage) {
			t.Errorf("step %d: typed Overage = %v", i, ev.Overage)
		}
	}
}

// §11.2 meter-limit payload: meter.value is the prior value, meter.invalid / invalid_value the would-be value.
func TestMeterLimitPayload(t *testing.T) {
	e := newEnv(t, basePolicy)
	e.customer("u", "free")
	e.allow("u", "api", 9)
	e.rec.reset()
	e.allow("u", "api", 5)
	ev, ok := e.rec.last(limitr.EventMeterLimit)
	if !ok {
		t.Fatalf("no meter-limit; got %v", e.rec.types())
	}
	m := payload(t, ev)
	hasKeys(t, "meter-limit", m, "meter", "customer", "entitlement", "plan", "credit", "invalid_value", "overage", "event_data")
	meter, _ := m["meter"].(map[string]any)
	hasKeys(t, "meter-limit.meter", meter, "value", "limit", "invalid", "diff", "overhead", "overhead_diff", "price_diff")
	num(t, "meter.value", meter["value"], 9)
	num(t, "meter.limit", meter["limit"], 10)
	num(t, "meter.invalid", meter["invalid"], 14)
	num(t, "invalid_value", m["invalid_value"], 14)
	num(t, "overage", m["overage"], 4)
	if _, ok := m["remaining"]; ok {
		t.Error("meter-limit carries remaining (§11.3: absent on meter-limit)")
	}
}

// §5 step 5: "prior_value (reported as meter.old/meter.value in events) is the pre-reset value",
// also for a denied first call of a new period (§5 step 16: meter-limit value = prior value).
func TestResetEventsReportPreResetPrior(t *testing.T) {
	t.Run("meter-changed old", func(t *testing.T) {
		e := newEnv(t, basePolicy)
		e.customer("u", "free")
		e.allow("u", "daily", 4)
		e.clock.Advance(49 * time.Hour)
		e.rec.reset()
		e.allow("u", "daily", 2)
		ev, ok := e.rec.last(limitr.EventMeterChanged)
		if !ok {
			t.Fatalf("no meter-changed: %v", e.rec.types())
		}
		m := payload(t, ev)
		meter, _ := m["meter"].(map[string]any)
		num(t, "meter.old", meter["old"], 4)
		num(t, "meter.value", meter["value"], 2)
		rs, _ := e.rec.last(limitr.EventMeterReset)
		rm := payload(t, rs)
		hasKeys(t, "meter-reset (same payload as the call's main event)", rm, "meter", "customer", "entitlement", "plan", "credit", "remaining")
	})
	t.Run("meter-limit value", func(t *testing.T) {
		e := newEnv(t, basePolicy)
		e.customer("u", "free")
		e.allow("u", "daily", 5)
		e.clock.Advance(49 * time.Hour)
		e.rec.reset()
		e.allow("u", "daily", 6)
		ev, ok := e.rec.last(limitr.EventMeterLimit)
		if !ok {
			t.Fatalf("no meter-limit: %v", e.rec.types())
		}
		m := payload(t, ev)
		meter, _ := m["meter"].(map[string]any)
		num(t, "meter.value (prior, pre-reset)", meter["value"], 5)
		num(t, "meter.invalid", meter["invalid"], 6)
		num(t, "invalid_value", m["invalid_value"], 6)
	})
}

// §11.2 customer-set / customer-removed carry the Customer; customer-plan-changed its own shape.
func TestCustomerEventPayloads(t *testing.T) {
	e := newEnv(t, basePolicy)
	e.customer("u", "free", limitr.WithAltIDs("ua"))
	ev, ok := e.rec.last(limitr.EventCustomerSet)
	if !ok {
		t.Fatalf("no customer-set on create; got %v", e.rec.types())
	}
	m := payload(t, ev)
	hasKeys(t, "customer-set", m, "id", "plan", "alt_ids", "refs", "type", "label", "meters", "overrides", "grants", "metadata")
	if m["id"] != "u" {
		t.Errorf("customer-set id = %v", m["id"])
	}
	// Overrides emit customer-set too (§11.2).
	e.rec.reset()
	if err := e.p.CreateCustomerOverride(e.ctx, "u", "api", limitr.Override{Value: "3"}); err != nil {
		t.Fatal(err)
	}
	if got := e.rec.types(); !eqStrings(got, []string{limitr.EventCustomerSet}) {
		t.Errorf("override events = %v", got)
	}
	e.rec.reset()
	if err := e.p.SetCustomerPlan(e.ctx, "u", "pro", false); err != nil {
		t.Fatal(err)
	}
	pc, _ := e.rec.last(limitr.EventCustomerPlanChanged)
	pm := payload(t, pc)
	hasKeys(t, "customer-plan-changed", pm, "previous_plan", "new_plan", "customer")
	e.rec.reset()
	if err := e.p.DeleteCustomer(e.ctx, "u"); err != nil {
		t.Fatal(err)
	}
	rm, ok := e.rec.last(limitr.EventCustomerRemoved)
	if !ok {
		t.Fatal("no customer-removed")
	}
	hasKeys(t, "customer-removed", payload(t, rm), "id", "plan", "meters")
}

// §16 removeHandler stops delivery; other handlers keep receiving.
func TestRemoveHandler(t *testing.T) {
	e := newEnv(t, basePolicy)
	e.customer("u", "free")
	other := &recorder{}
	e.p.AddHandler("other", other.handle)
	e.allow("u", "api", 1)
	e.p.RemoveHandler("recorder")
	e.rec.reset()
	e.allow("u", "api", 1)
	if n := len(e.rec.all()); n != 0 {
		t.Errorf("removed handler got %d events", n)
	}
	if n := len(other.meterTypes()); n != 2 {
		t.Errorf("remaining handler got %d meter events, want 2", n)
	}
	// Re-adding under the same name replaces, not duplicates.
	e.p.AddHandler("other", other.handle)
	other.reset()
	e.allow("u", "api", 1)
	if n := len(other.all()); n != 1 {
		t.Errorf("handler re-added under the same name got %d events, want 1", n)
	}
}

// DESIGN "Handlers run synchronously after the state change": a handler may call back into the policy.
func TestHandlerReentrancy(t *testing.T) {
	e := newEnv(t, basePolicy)
	e.customer("u", "free")
	e.customer("v", "free")
	seen := make(chan float64, 16)
	e.p.AddHandler("reenter", func(ev limitr.Event) {
		if ev.Type != limitr.EventMeterChanged || ev.Customer == nil || ev.Customer.ID != "u" {
			return
		}
		v, err := e.p.Value(e.ctx, "u", "api") // same customer, after the change
		if err != nil {
			t.Errorf("Value in handler: %v", err)
		}
		seen <- v
		if _, err := e.p.Allow(e.ctx, "v", "api", 1); err != nil { // another customer
			t.Errorf("Allow in handler: %v", err)
		}
		if _, err := e.p.Customer(e.ctx, "u"); err != nil {
			t.Errorf("Customer in handler: %v", err)
		}
		if _, err := e.p.CreateCustomer(e.ctx, "w", "free"); err != nil {
			t.Errorf("CreateCustomer in handler: %v", err)
		}
	})
	done := make(chan bool)
	go func() {
		done <- e.allow("u", "api", 2)
		if _, err := e.p.Allow(e.ctx, "u", "api", 1); err != nil {
			t.Error(err)
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("deadlock: Allow with a re-entrant handler did not return")
	}
	<-done
	if v := <-seen; v != 2 {
		t.Errorf("handler saw Value %v, want 2 (state changed before delivery)", v)
	}
	if v := e.value("v", "api"); v != 2 {
		t.Errorf("v's meter = %v, want 2", v)
	}
}
