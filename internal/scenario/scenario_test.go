package scenario

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

const header = "name: t\npolicy: ../../examples/policies/seats.yaml\nsteps:\n"

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name, doc string
		want      []string // substrings of the problem list, in any order
	}{
		{"unknown top-level field", "name: t\npolicy: p.yaml\nstpes: []\n",
			[]string{`f.yaml:3: stpes: unknown field (did you mean "steps"?)`, "steps: required"}},
		{"no policy", "name: t\nsteps:\n  - advance: 1day\n", []string{"policy: required"}},
		{"steps not a list", "policy: p.yaml\nsteps: {advance: 1day}\n", []string{"f.yaml:2: steps: must be a list of steps"}},
		{"empty steps", "policy: p.yaml\nsteps: []\n", []string{"steps: no steps"}},
		{"bad start", "policy: p.yaml\nstart: yesterday\nsteps:\n  - advance: 1day\n", []string{`f.yaml:2: start: invalid time "yesterday"`}},
		{"step not a mapping", header + "  - allow\n", []string{"f.yaml:4: step 1: a step is a mapping"}},
		{"unknown kind", header + "  - alow: {customer: c, entitlement: e}\n", []string{`f.yaml:4: step 1: unknown step kind "alow" (did you mean "allow"?)`}},
		{"no kind", header + "  - expect: true\n", []string{"f.yaml:4: step 1: no step kind"}},
		{"two kinds", header + "  - advance: 1day\n    allow: {customer: c, entitlement: e}\n", []string{"f.yaml:5: step 1 (advance): two step kinds (advance and allow)"}},
		{"unknown field", header + "  - allow: {customer: c, entitlement: e, amout: 1}\n",
			[]string{`f.yaml:4: step 1 (allow): amout: unknown field (did you mean "amount"?) (known: amount, call_cap, customer, entitlement, event_data, events, idempotency_key, overhead, quantity)`}},
		{"missing fields", header + "  - allow: {amount: 1}\n", []string{"step 1 (allow): customer: required", "step 1 (allow): entitlement: required"}},
		{"missing id", header + "  - create_customer: {plan: free}\n", []string{"step 1 (create_customer): id: required"}},
		{"bad amount", header + "  - allow: {customer: c, entitlement: e, amount: lots}\n", []string{`f.yaml:4: step 1 (allow): amount: quantity "lots": malformed number`}},
		{"amount and quantity", header + "  - allow: {customer: c, entitlement: e, amount: 1, quantity: 1MB}\n", []string{"quantity: amount and quantity exclude each other"}},
		{"bad duration", header + "  - advance: soon\n", []string{`step 1 (advance): invalid duration "soon"`}},
		{"unitless duration", header + "  - advance: 5\n", []string{`duration "5" needs a unit`}},
		{"negative duration", header + "  - advance: -1day\n", []string{"the clock only moves forward"}},
		{"expect on non-decision", header + "  - create_customer: {id: c, plan: free}\n    expect: true\n", []string{"f.yaml:5: step 1 (create_customer): expect: create_customer has no true/false result"}},
		{"expect not bool", header + "  - allow: {customer: c, entitlement: e}\n    expect: maybe\n", []string{"expect: must be true or false"}},
		{"expect and expect_error", header + "  - allow: {customer: c, entitlement: e}\n    expect: true\n    expect_error: x\n", []string{"expect and expect_error exclude each other"}},
		{"expect_error on assertion", header + "  - expect_value: {customer: c, entitlement: e, equals: 1}\n    expect_error: x\n", []string{"use its error field"}},
		{"equals and error", header + "  - expect_value: {customer: c, entitlement: e, equals: 1, error: x}\n", []string{"equals: give exactly one of equals"}},
		{"neither equals nor error", header + "  - expect_limit: {customer: c, entitlement: e}\n", []string{"step 1 (expect_limit): equals: give exactly one"}},
		{"equals not a number", header + "  - expect_value: {customer: c, entitlement: e, equals: ten}\n", []string{`equals: want a number, got "ten"`}},
		{"bad resets", header + "  - expect_resets: {customer: c, entitlement: e, equals: tomorrow}\n", []string{`invalid time "tomorrow"`}},
		{"events not a list", header + "  - allow: {customer: c, entitlement: e}\n    expect_events: {type: meter-changed}\n", []string{"f.yaml:5: step 1 (allow): expect_events: want a list of events"}},
		{"event without type", header + "  - allow: {customer: c, entitlement: e}\n    expect_events: [{meter: {value: 1}}]\n", []string{"expect_events.[0]: type: required"}},
		{"events on assertion", header + "  - expect_value: {customer: c, entitlement: e, equals: 1}\n    expect_events: []\n", []string{"put expect_events on the step that acts"}},
		{"unknown customer field", header + "  - expect_customer: {id: c, plna: free}\n", []string{`plna: unknown field (did you mean "plan"?)`}},
		{"override exclusive expiry", header + "  - override: {customer: c, entitlement: e, expires_in: 1h, expires_at: 2026-01-02}\n", []string{"expires_in and expires_at exclude each other"}},
		{"nested wrong type", header + "  - create_customer: {id: c, refs: org}\n", []string{"step 1 (create_customer): "}},
		{"every problem reported", header + "  - alow: {}\n  - advance: 5\n  - allow: {}\n",
			[]string{"step 1: unknown step kind", "step 2 (advance)", "step 3 (allow): customer: required"}},
		{"yaml syntax", "steps: [\n", []string{"f.yaml: "}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.doc), "f.yaml")
			var le *LoadError
			if !errors.As(err, &le) {
				t.Fatalf("got %v, want a *LoadError", err)
			}
			msg := err.Error()
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error lacks %q:\n%s", w, msg)
				}
			}
		})
	}
}

func TestParseGood(t *testing.T) {
	s, err := Parse([]byte(`
name: good
policy: ../p.yaml
start: 2026-03-01
steps:
  - create_customer: { id: c, plan: free, refs: [o], metadata: { tier: 1 } }
  - allow: { customer: c, entitlement: e, amount: 1_000 }
    expect: true
    note: n
  - allow: { customer: c, entitlement: e, amount: 500MB }
  - delete_customer: c
  - delete_customer: { id: c }
  - advance: 1h30m
  - advance: 30days
  - expect_resets: { customer: c, entitlement: e, equals: never }
  - expect_events: []
`), "dir/s.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if s.PolicyPath != "p.yaml" || !s.Start.Equal(time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)) || len(s.Steps) != 9 {
		t.Fatalf("%+v", s)
	}
	if a := s.Steps[1].Action.(*allowStep); a.Amount.Number != 1000 || a.Amount.Quantity != "" || *s.Steps[1].Expect != true || s.Steps[1].Note != "n" {
		t.Errorf("allow: %+v", a)
	}
	if a := s.Steps[2].Action.(*allowStep); a.Amount.Quantity != "500MB" {
		t.Errorf("quantity: %+v", a)
	}
	if d := s.Steps[5].Action.(*advance); d.D != 90*time.Minute {
		t.Errorf("advance %v", d.D)
	}
	if d := s.Steps[6].Action.(*advance); d.D != 30*24*time.Hour {
		t.Errorf("advance %v", d.D)
	}
	if s.Steps[1].Summary != "{customer: c, entitlement: e, amount: 1_000}" {
		t.Errorf("summary %q", s.Steps[1].Summary)
	}
}

func TestMatchValue(t *testing.T) {
	got := map[string]any{
		"type":     "meter-changed",
		"customer": map[string]any{"id": "org_1", "plan": "base"},
		"credit":   map[string]any{"name": "seat"},
		"meter":    map[string]any{"value": 0.30000000000000004, "old": 0.0, "price_diff": nil},
		"refs":     []any{"a", "b"},
	}
	ok := []map[string]any{
		{"type": "meter-changed"},
		{"customer": "org_1", "credit": "seat"},
		{"meter": map[string]any{"value": 0.3}},
		{"meter": map[string]any{"price_diff": nil, "missing": nil}},
		{"refs": []any{"a", "b"}},
		{"customer": map[string]any{"plan": "base"}},
	}
	for _, w := range ok {
		if d := matchValue("", w, got); len(d) > 0 {
			t.Errorf("%v: %v", w, d)
		}
	}
	wants := []map[string]any{
		{"customer": "org_2"},
		{"meter": map[string]any{"value": 0.4}},
		{"refs": []any{"a"}},
		{"meter": map[string]any{"nope": 1}},
		{"meter": map[string]any{"old": nil}},
		{"type": true},
	}
	for _, w := range wants {
		if d := matchValue("", w, got); len(d) == 0 {
			t.Errorf("%v matched", w)
		}
	}
}

func TestNumbersMatch(t *testing.T) {
	for _, c := range []struct {
		a, b float64
		ok   bool
	}{
		{1, 1 + 1e-10, true},
		{1, 1 + 1e-8, false},
		{1099511.627776, 1099511.6277760002, true},
		{0, 1e-10, true},
		{0, 1e-8, false},
	} {
		if NumbersMatch(c.a, c.b) != c.ok {
			t.Errorf("%v vs %v: want %v", c.a, c.b, c.ok)
		}
	}
}

func TestRunInlineAndPending(t *testing.T) {
	doc := `
name: inline
pending: the limit is 1, so the second increment is denied
policy:
  credits: { seat: {} }
  plans:
    free:
      default: true
      entitlements:
        seats: { limit: { credit: seat, value: 1 } }
steps:
  - create_customer: { id: c }
  - increment: { customer: c, entitlement: seats }
    expect: true
  - increment: { customer: c, entitlement: seats }
    expect: true
`
	s, err := Parse([]byte(doc), "inline.yaml")
	if err != nil {
		t.Fatal(err)
	}
	res := s.Run(context.Background())
	if res.Err != nil || res.Failed() != 1 || !res.Passed() || !res.Pending() {
		t.Fatalf("err %v failed %d passed %v", res.Err, res.Failed(), res.Passed())
	}
	var b strings.Builder
	res.Write(&b, Report{})
	if !strings.Contains(b.String(), "--- PENDING inline: 1 of 3 steps fail as expected") {
		t.Errorf("output:\n%s", b.String())
	}

	// A pending scenario that passes fails the run.
	s.Steps = s.Steps[:2]
	res = s.Run(context.Background())
	if res.Passed() {
		t.Error("a passing pending scenario should fail")
	}
	b.Reset()
	res.Write(&b, Report{})
	if !strings.Contains(b.String(), "remove `pending`") {
		t.Errorf("output:\n%s", b.String())
	}
}

func TestRunBadPolicy(t *testing.T) {
	s, err := Parse([]byte("policy: {plans: {free: {entitlements: {x: {limit: {credit: nope}}}}}}\nsteps:\n  - advance: 1day\n"), "bad.yaml")
	if err != nil {
		t.Fatal(err)
	}
	res := s.Run(context.Background())
	if res.Err == nil || res.Passed() || !strings.Contains(res.Err.Error(), `credit "nope" does not exist`) {
		t.Fatalf("%v", res.Err)
	}
}

func TestStandaloneExpectEventsSeesLastActingStep(t *testing.T) {
	s, err := Parse([]byte(header+`  - create_customer: { id: c, plan: free }
  - increment: { customer: c, entitlement: seats }
  - expect_value: { customer: c, entitlement: seats, equals: 1 }
  - expect_events:
      - { type: meter-changed, customer: c, meter: { value: 1 } }
  - advance: 1min
  - expect_events: []
`), "x.yaml")
	if err != nil {
		t.Fatal(err)
	}
	res := s.Run(context.Background())
	if res.Err != nil || res.Failed() != 0 {
		var b strings.Builder
		res.Write(&b, Report{})
		t.Fatalf("%v\n%s", res.Err, b.String())
	}
}

func TestDiscover(t *testing.T) {
	files, err := Discover([]string{"../../examples/scenarios", "../../examples/scenarios/seats.yaml"})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, f := range files {
		seen[f]++
	}
	if seen["../../examples/scenarios/seats.yaml"] != 1 || seen["../../examples/scenarios/ai-credits-grants.yaml"] != 1 || len(files) != len(seen) {
		t.Errorf("%v", files)
	}
}

func TestParseErrorsEconomics(t *testing.T) {
	for _, tc := range []struct {
		name, step string
		want       []string
	}{
		{"topup missing fields", "apply_topup: {}", []string{"step 1 (apply_topup): customer: required", "step 1 (apply_topup): topup: required"}},
		{"topup typo", "apply_topup: {customer: c, topp: t}", []string{`topp: unknown field (did you mean "topup"?)`}},
		{"remaining credit needs equals", "expect_remaining_credit: {customer: c, credit: x}", []string{"equals: give exactly one of equals"}},
		{"remaining credit needs credit", "expect_remaining_credit: {customer: c, equals: 1}", []string{"credit: required"}},
		{"exchange needs in", "expect_exchange: {out: rune, equals: 1}", []string{"step 1 (expect_exchange): in: required"}},
		{"exchange value not a number", "expect_exchange: {in: a, value: ten, equals: 1}", []string{`value: want a number, got "ten"`}},
		{"cap needs value", "add_cap: {customer: c, id: b}", []string{"step 1 (add_cap): value: required"}},
		{"cap needs id", "add_cap: {customer: c, value: 1}", []string{"step 1 (add_cap): id: required"}},
		{"cap negative", "add_cap: {customer: c, id: b, value: -1}", []string{"value: must not be negative"}},
		{"cap shared_with without shared", "add_cap: {customer: c, id: b, value: 1, shared_with: [user]}", []string{"shared_with: only shared caps bind other customers; add shared: true"}},
		{"cap shared_with not a list", "add_cap: {customer: c, id: b, value: 1, shared: true, shared_with: user}", []string{"shared_with: want a list"}},
		{"cap bad reset_inc", "add_cap: {customer: c, id: b, value: 1, reset_inc: weekly}", []string{`reset_inc: want a positive duration such as 1day or 30days, got "weekly"`}},
		{"cap exclusive resets", "add_cap: {customer: c, id: b, value: 1, reset_inc: 1day, reset_sch: monthly:1}", []string{"reset_sch: reset_inc and reset_sch exclude each other"}},
		{"cap exclusive expiry", "add_cap: {customer: c, id: b, value: 1, expires_in: 1h, expires_at: 2026-02-01}", []string{"expires_in and expires_at exclude each other"}},
		{"cap typo", "add_cap: {customer: c, id: b, value: 1, overage_ony: true}", []string{`overage_ony: unknown field (did you mean "overage_only"?)`}},
		{"reset_cap needs id", "reset_cap: {customer: c}", []string{"step 1 (reset_cap): id: required"}},
		{"remove_cap needs customer", "remove_cap: {id: b}", []string{"step 1 (remove_cap): customer: required"}},
		{"expect_cap typo", "expect_cap: {customer: c, id: b, meter_valeu: 1}", []string{`meter_valeu: unknown field (did you mean "meter_value"?)`}},
		{"expect_cap needs id", "expect_cap: {customer: c, meter_value: 1}", []string{"step 1 (expect_cap): id: required"}},
		{"call_cap needs value", "allow: {customer: c, entitlement: e, amount: 1, call_cap: {credit: rune}}", []string{"step 1 (allow): call_cap.value: required"}},
		{"call_cap typo", "allow: {customer: c, entitlement: e, call_cap: {credt: rune, value: 1}}", []string{`call_cap.credt: unknown field (did you mean "credit"?)`}},
		{"call_cap negative", "check: {customer: c, entitlement: e, call_cap: {value: -1}}", []string{"call_cap.value: must not be negative"}},
		{"allowance needs entitlement", "expect_allowance: {customer: c, equals: 1}", []string{"step 1 (expect_allowance): entitlement: required"}},
		{"reserve bad amount", "reserve: {customer: c, entitlement: e, amount: 0}", []string{"amount: must be positive; leave it out to let the engine estimate it"}},
		{"reserve bad quantile", "reserve: {customer: c, entitlement: e, quantile: 1.5}", []string{"quantile: must be between 0 and 1"}},
		{"reserve bad ttl", "reserve: {customer: c, entitlement: e, ttl: 10}", []string{`ttl: duration "10" needs a unit`}},
		{"reserve typo", "reserve: {customer: c, entitlement: e, ass: h}", []string{`ass: unknown field (did you mean "as"?)`}},
		{"settle needs hold and amount", "settle: {customer: c, entitlement: e}", []string{"step 1 (settle): hold: required", "step 1 (settle): amount: required"}},
		{"release needs hold", "release: {customer: c}", []string{"step 1 (release): hold: required"}},
		{"release no expect", "release: {hold: h}\n    expect: true", []string{"release has no true/false result"}},
		{"held needs equals", "expect_held: {customer: c, entitlement: e}", []string{"equals: give exactly one"}},
		{"margin needs customer", "expect_margin: {revenue: 1}", []string{"step 1 (expect_margin): customer: required"}},
		{"margin typo", "expect_margin: {customer: c, revnue: 1}", []string{`revnue: unknown field (did you mean "revenue"?)`}},
		{"margin entitlement typo", "expect_margin: {customer: c, entitlements: {chat: {cots: 1}}}", []string{`entitlements.chat.cots: unknown field (did you mean "cost"?)`}},
		{"margin nothing to check", "expect_margin: {customer: c}", []string{"nothing to check"}},
		{"margin error and numbers", "expect_margin: {customer: c, revenue: 1, error: x}", []string{"error: error excludes revenue"}},
		{"snapshot needs plan and usage", "expect_margin_snapshot: {revenue: 1}", []string{"step 1 (expect_margin_snapshot): plan: required", "usage: required"}},
		{"snapshot usage typo", "expect_margin_snapshot: {plan: p, usage: {e: {valu: 1}}, revenue: 1}", []string{`usage.e.valu: unknown field (did you mean "value"?)`}},
		{"snapshot usage both", "expect_margin_snapshot: {plan: p, usage: {e: {value: 1, quantity: 1GB}}, revenue: 1}", []string{"usage.e.quantity: value and quantity exclude each other"}},
		{"snapshot usage empty", "expect_margin_snapshot: {plan: p, usage: {e: {limit: 1}}, revenue: 1}", []string{"usage.e.value: required"}},
		{"snapshot usage bad scalar", "expect_margin_snapshot: {plan: p, usage: {e: lots}, revenue: 1}", []string{`usage.e: quantity "lots"`}},
		{"subscription needs customer", "ensure_subscription: {}", []string{"step 1 (ensure_subscription): customer: required"}},
		{"save_and_restore takes nothing", "save_and_restore: {keep: true}", []string{"step 1 (save_and_restore): takes no arguments"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(header+"  - "+tc.step+"\n"), "f.yaml")
			var le *LoadError
			if !errors.As(err, &le) {
				t.Fatalf("got %v, want a *LoadError", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%s", w, err)
				}
			}
		})
	}
}

func TestParseGoodEconomics(t *testing.T) {
	s, err := Parse([]byte(header+`  - apply_topup: { customer: c, topup: t }
  - add_cap: { customer: c, id: b, value: 5, shared: true, shared_with: [user], scope: [e], reset_inc: 1day, expires_in: 2h }
  - allow: { customer: c, entitlement: e, amount: 3, call_cap: { value: 0.25 } }
    expect: false
  - reserve: { customer: c, entitlement: e, as: h, ttl: 5min, quantile: 0.5, basis: 10, segment: m }
    expect: true
  - settle: { hold: h, amount: 3 }
    expect: true
  - ensure_subscription: c
    expect: false
  - save_and_restore: {}
  - save_and_restore:
  - expect_margin_snapshot: { plan: p, usage: { e: 1_000, f: 3GB, g: { value: 1, limit: 2, overhead: 0.5, context: { model: x } } }, margin: 10 }
  - expect_margin: { customer: c, entitlements: { e: { margin: null } } }
  - expect_cap: { customer: c, id: b, exists: false }
`), "x.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if a := s.Steps[1].Action.(*addCap); !a.Shared || a.ResetInc != "1day" || a.ExpiresIn.D != 2*time.Hour || a.Value.Value != 5 {
		t.Errorf("add_cap %+v", a)
	}
	if a := s.Steps[2].Action.(*allowStep); a.CallCap == nil || a.CallCap.Value.Value != 0.25 || a.CallCap.Credit != "" {
		t.Errorf("call_cap %+v", a.CallCap)
	}
	if a := s.Steps[3].Action.(*reserveStep); a.As != "h" || a.Amount.Set || a.TTL.D != 5*time.Minute || a.Basis.Value != 10 {
		t.Errorf("reserve %+v", a)
	}
	if a := s.Steps[5].Action.(*ensureSubscription); a.Customer != "c" {
		t.Errorf("ensure_subscription %+v", a)
	}
	m := s.Steps[8].Action.(*expectMarginSnapshot)
	if u := m.Usage["e"].usage(); u.Value != 1000 || u.Quantity != "" {
		t.Errorf("usage e %+v", u)
	}
	if u := m.Usage["f"].usage(); u.Quantity != "3GB" {
		t.Errorf("usage f %+v", u)
	}
	if u := m.Usage["g"].usage(); u.Limit == nil || *u.Limit != 2 || u.Overhead == nil || *u.Overhead != 0.5 || u.Context["model"] != "x" {
		t.Errorf("usage g %+v", u)
	}
}

// TestEconomicsStepsFail checks that the new assertions report mismatches and that
// settle/release name unknown holds.
func TestEconomicsStepsFail(t *testing.T) {
	s, err := Parse([]byte(`
policy:
  credits: { token: { price: { amount: 0.001 } }, pack: {} }
  exchange: { pack: { value: 1, currency: rune } }
  plans:
    p:
      default: true
      entitlements: { e: { limit: { credit: token, value: 100, mode: soft } } }
      topups: { t: { credit: pack, value: 1 } }
steps:
  - create_customer: { id: c }
  - apply_topup: { customer: c, topup: t }
  - expect_remaining_credit: { customer: c, credit: token, equals: 999 }
  - expect_exchange: { in: pack, out: token, equals: 1000 }
  - add_cap: { customer: c, id: b, value: 1 }
  - allow: { customer: c, entitlement: e, amount: 10 }
  - expect_cap: { customer: c, id: b, meter_value: 0.02 }
  - expect_held: { customer: c, entitlement: e, equals: 0 }
  - settle: { hold: nope, amount: 1 }
  - expect_margin: { customer: c, revenue: 1 }
  - save_and_restore: {}
  - allow: { customer: c, entitlement: e, amount: 1 }
    expect_events: [{ type: meter-changed, meter: { value: 11 } }]
`), "x.yaml")
	if err != nil {
		t.Fatal(err)
	}
	res := s.Run(context.Background())
	var b strings.Builder
	res.Write(&b, Report{})
	out := b.String()
	failed := map[int]bool{}
	for _, sr := range res.Steps {
		if !sr.Passed {
			failed[sr.Step.Index] = true
		}
	}
	for i := 1; i <= 13; i++ {
		want := i == 3 || i == 7 || i == 9 || i == 10
		if failed[i] != want {
			t.Errorf("step %d failed=%v, want %v\n%s", i, failed[i], want, out)
		}
	}
	for _, w := range []string{"remaining credit of c/token differs", "meter_value: expected 0.02, got 0.01", `no hold named "nope"`, "revenue: expected 1, got 0"} {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
}
