package expr

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/limitr/limitr/internal/num"
)

func dec(s string) num.Dec { return num.MustParse(s) }

// bigList renders a CEL list literal [1, 2, ..., n].
func bigList(n int) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = fmt.Sprint(i + 1)
	}
	return "[" + strings.Join(parts, ",") + "]"
}

func TestCompileErrors(t *testing.T) {
	cases := []struct {
		name, src string
		match     bool
		want      []string // substrings of the error
	}{
		{"syntax", "units * ", false, []string{"<input>:1:9", "Syntax error"}},
		{"syntax unbalanced", "(units * 2", false, []string{"<input>:1:", "Syntax error"}},
		{"empty", "", false, []string{"Syntax error"}},
		{"unknown variable", "units * rate", false, []string{"<input>:1:9", "undeclared reference to 'rate'"}},
		{"unknown variable line 2", "units *\n  rate", false, []string{"<input>:2:3", "undeclared reference to 'rate'"}},
		{"match variable in cost", "event.x == 1", false, []string{"<input>:1:1", "undeclared reference to 'event'"}},
		{"string cost", "'cheap'", false, []string{"<input>:1:1", "result is string"}},
		{"bool cost", "units > 1.0", false, []string{"<input>:1:7", "result is bool"}},
		{"no such overload", "units * 'x'", false, []string{"<input>:1:7", "no matching overload"}},
		{"unknown function", "cost(units)", false, []string{"<input>:1:5", "undeclared reference to 'cost'"}},
		{"int match", "1", true, []string{"<input>:1:1", "result is int, want bool"}},
		{"string match", "type", true, []string{"<input>:1:1", "result is string, want bool"}},
		{"cost variable in match", "units > 1.0", true, []string{"<input>:1:1", "undeclared reference to 'units'"}},
		{"match syntax", "type == 'a' &&", true, []string{"<input>:1:15", "Syntax error"}},
		{"always over the cost limit", bigList(200) + ".map(x, " + bigList(200) + ".map(y, x * y)).size() * 1.0",
			false, []string{"estimated cost at least", "exceeds the limit"}},
		{"too long", "units" + strings.Repeat(" + units", MaxSourceLen/8+1), false, []string{"<input>:1:1", "code points long"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if tc.match {
				_, err = CompileMatch(tc.src)
			} else {
				_, err = CompileCost(tc.src)
			}
			if !errors.Is(err, ErrCompile) {
				t.Fatalf("err = %v, want ErrCompile", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestCompileAcceptsResultTypes(t *testing.T) {
	for _, src := range []string{
		"units * overhead_cost",
		"units * 2",                 // double * int promotes
		"2 * units",                 // int * double promotes
		"units / 4 + 1",             // mixed chains
		"10",                        // int
		"10u",                       // uint
		"context.flat",              // dyn
		"dyn(units)",                // dyn
		"math.greatest(units, 1.0)", // ext.Math
	} {
		if c, err := CompileCost(src); err != nil {
			t.Errorf("CompileCost(%q): %v", src, err)
		} else if c.Source() != src {
			t.Errorf("Source() = %q, want %q", c.Source(), src)
		}
	}
	for _, src := range []string{"true", "event.flag", "type.startsWith('meter-')", "event.name.lowerAscii() == 'x'"} {
		if m, err := CompileMatch(src); err != nil {
			t.Errorf("CompileMatch(%q): %v", src, err)
		} else if m.Source() != src {
			t.Errorf("Source() = %q, want %q", m.Source(), src)
		}
	}
}

func TestCostEval(t *testing.T) {
	const model = "units * (context.model == 'opus' ? 0.000015 : 0.000003)"
	const output = "has(context.output_tokens) ? double(context.output_tokens) * 0.00003 + units * 0.000003 : units * 0.000003"
	cases := []struct {
		name    string
		src     string
		units   string
		rate    string
		context map[string]any
		want    string // decimal; empty when an error is expected
		costLim bool   // error must also wrap ErrCostLimit
	}{
		// CEL computes in float64; the result is its shortest decimal: 1000 * 0.000015 in
		// binary floating point is 0.015000000000000001.
		{"model opus", model, "1000", "0", map[string]any{"model": "opus"}, "0.015000000000000001", false},
		{"model other", model, "1000", "0", map[string]any{"model": "haiku"}, "0.003", false},
		{"model missing", model, "1000", "0", map[string]any{}, "", false},
		{"model nil context", model, "1000", "0", nil, "", false},
		{"has present float", output, "1000", "0", map[string]any{"output_tokens": 500.0}, "0.018000000000000002", false},
		{"has present int", output, "1000", "0", map[string]any{"output_tokens": 500}, "0.018000000000000002", false},
		{"has present int64", output, "1000", "0", map[string]any{"output_tokens": int64(500)}, "0.018000000000000002", false},
		{"has absent", output, "1000", "0", nil, "0.003", false},
		{"flat rate fallback", "has(context.rate) ? units * context.rate : units * overhead_cost", "4", "0.25", nil, "1", false},
		{"dyn float rate", "units * context.rate", "4", "0", map[string]any{"rate": 0.5}, "2", false},
		{"dyn int rate promotes", "units * context.rate", "4", "0", map[string]any{"rate": 3}, "12", false},
		{"int times double literal", "context.tokens * 0.5", "0", "0", map[string]any{"tokens": 7}, "3.5", false},
		{"int result", "size(context.items) * 2", "0", "0", map[string]any{"items": []any{1, 2, 3}}, "6", false},
		{"uint result", "7u", "0", "0", nil, "7", false},
		{"shortest repr", "units * 0.1", "3", "0", nil, "0.30000000000000004", false},
		{"zero units", "units * overhead_cost", "0", "0.5", nil, "0", false},
		{"nested json", "double(context.usage.input) * 0.001", "0", "0",
			jsonMap(t, `{"usage":{"input":1234}}`), "1.234", false},
		{"string value in arithmetic", "units * context.rate", "4", "0", map[string]any{"rate": "x"}, "", false},
		{"missing key", "units * context.rate", "4", "0", map[string]any{"other": 1.0}, "", false},
		{"negative double", "units - 10.0", "4", "0", nil, "", false},
		{"negative int", "-3", "0", "0", nil, "", false},
		{"null from dyn", "context.v", "0", "0", map[string]any{"v": nil}, "", false},
		{"string from dyn", "context.v", "0", "0", map[string]any{"v": "1"}, "", false},
		{"infinite", "units / 0.0", "1", "0", nil, "", false},
		{"nan", "0.0 / 0.0", "1", "0", nil, "", false},
		{"too large", "1e30", "1", "0", nil, "", false},
		{"int division by zero", "1 / 0", "1", "0", nil, "", false},
		{"runtime cost limit literal", "units > 0.0 ? " + bigList(300) + ".map(x, " + bigList(300) + ".map(y, x * y)).size() * 1.0 : 0.0",
			"1", "0", nil, "", true},
		{"runtime cost limit context", "context.items.map(x, context.items.map(y, x * y)).size() * 1.0",
			"1", "0", map[string]any{"items": floats(2000)}, "", true},
		{"runtime cost limit exists", "context.items.exists(x, context.items.exists(y, x + y < 0.0)) ? 1.0 : 0.0",
			"1", "0", map[string]any{"items": floats(5000)}, "", true},
		{"small comprehension fits", "context.items.filter(x, x > 2.0).size() * units", "2", "0",
			map[string]any{"items": []any{1.0, 2.0, 3.0, 4.0}}, "4", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := CompileCost(tc.src)
			if err != nil {
				t.Fatalf("CompileCost: %v", err)
			}
			start := time.Now()
			got, err := c.Eval(dec(tc.units), dec(tc.rate), tc.context)
			if elapsed := time.Since(start); elapsed > 2*time.Second {
				t.Errorf("evaluation took %v", elapsed)
			}
			if tc.want == "" {
				if !errors.Is(err, ErrEval) {
					t.Fatalf("Eval = %v, %v; want ErrEval", got, err)
				}
				if tc.costLim != errors.Is(err, ErrCostLimit) {
					t.Errorf("errors.Is(%v, ErrCostLimit) = %v, want %v", err, !tc.costLim, tc.costLim)
				}
				return
			}
			if err != nil {
				t.Fatalf("Eval: %v", err)
			}
			if want := dec(tc.want); got.Cmp(want) != 0 {
				t.Errorf("Eval = %v, want %v", got, want)
			}
		})
	}
}

func floats(n int) []any {
	s := make([]any, n)
	for i := range s {
		s[i] = float64(i)
	}
	return s
}

func jsonMap(t testing.TB, s string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// halfSeats is the notification condition of examples/policies/ai-credits.yaml.
const halfSeats = "type == 'meter-changed' && event.entitlement == 'seats' && event.remaining < event.meter.limit / 2"

func TestMatchEval(t *testing.T) {
	cases := []struct {
		name, src, typ, event string
		want, wantErr         bool
	}{
		{"seats below half", halfSeats, "meter-changed",
			`{"entitlement":"seats","customer":"org1","remaining":4,"meter":{"old":5,"value":6,"limit":10,"diff":1}}`, true, false},
		{"seats odd limit uses real division", halfSeats, "meter-changed",
			`{"entitlement":"seats","remaining":2,"meter":{"value":3,"limit":5}}`, true, false},
		{"seats at half", halfSeats, "meter-changed",
			`{"entitlement":"seats","remaining":5,"meter":{"value":5,"limit":10}}`, false, false},
		{"seats negative remaining", halfSeats, "meter-changed",
			`{"entitlement":"seats","remaining":-2,"meter":{"value":12,"limit":10}}`, true, false},
		{"other entitlement", halfSeats, "meter-changed",
			`{"entitlement":"ai_input","remaining":1,"meter":{"limit":100000}}`, false, false},
		{"other type", halfSeats, "meter-reset", `{"entitlement":"seats"}`, false, false},
		{"remaining absent", halfSeats, "meter-changed",
			`{"entitlement":"seats","meter":{"value":3,"limit":10}}`, false, true},
		{"meter absent", halfSeats, "meter-changed", `{"entitlement":"seats","remaining":3}`, false, true},
		{"empty event", halfSeats, "meter-changed", `{}`, false, true},
		{"has guard", "has(event.remaining) && event.remaining < 1", "meter-changed", `{"entitlement":"seats"}`, false, false},
		{"int literal comparison", "event.remaining < 5", "meter-changed", `{"remaining":4.5}`, true, false},
		{"null field", "event.plan == null", "meter-changed", `{"plan":null}`, true, false},
		{"list field", "event.tags.exists(t, t == 'vip')", "customer-set", `{"tags":["a","vip"]}`, true, false},
		{"dyn non-bool", "event.flag", "x", `{"flag":"yes"}`, false, true},
		{"dyn bool", "event.flag", "x", `{"flag":true}`, true, false},
		{"cost limit", "event.items.all(x, event.items.all(y, x + y >= 0.0))", "x",
			`{"items":[` + strings.Repeat("1,", 3000) + `1]}`, false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, err := CompileMatch(tc.src)
			if err != nil {
				t.Fatalf("CompileMatch: %v", err)
			}
			got, err := m.Eval(tc.typ, jsonMap(t, tc.event))
			if got != tc.want {
				t.Errorf("Eval = %v, want %v (err %v)", got, tc.want, err)
			}
			if tc.wantErr != (err != nil) {
				t.Errorf("err = %v, want error %v", err, tc.wantErr)
			}
			if err != nil && !errors.Is(err, ErrEval) {
				t.Errorf("err = %v, does not wrap ErrEval", err)
			}
		})
	}
	m, err := CompileMatch(halfSeats)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := m.Eval("meter-changed", nil); got || !errors.Is(err, ErrEval) {
		t.Errorf("nil event: %v, %v", got, err)
	}
}

func TestConcurrentEval(t *testing.T) {
	c, err := CompileCost("has(context.output_tokens) ? double(context.output_tokens) * 0.00003 + units * 0.000003 : units * overhead_cost")
	if err != nil {
		t.Fatal(err)
	}
	m, err := CompileMatch(halfSeats)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				tokens := float64(g*1000 + i)
				got, err := c.Eval(num.FromInt(int64(i)), dec("0.5"), map[string]any{"output_tokens": tokens})
				want := tokens*0.00003 + float64(i)*0.000003
				wantDec, _ := num.FromFloat64(want)
				if err != nil || got.Cmp(wantDec) != 0 {
					errs <- fmt.Errorf("cost(%d, %v) = %v, %v; want %v", i, tokens, got, err, wantDec)
					return
				}
				remaining := float64(i % 10)
				ok, err := m.Eval("meter-changed", map[string]any{
					"entitlement": "seats", "remaining": remaining,
					"meter": map[string]any{"limit": 10.0},
				})
				if err != nil || ok != (remaining < 5) {
					errs <- fmt.Errorf("match(remaining %v) = %v, %v", remaining, ok, err)
					return
				}
				if i%50 == 0 {
					if ok, err := m.Eval("meter-changed", map[string]any{"entitlement": "seats"}); ok || err == nil {
						errs <- fmt.Errorf("match(no remaining) = %v, %v", ok, err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func BenchmarkCostEval(b *testing.B) {
	c, err := CompileCost("has(context.output_tokens) ? double(context.output_tokens) * 0.00003 + units * 0.000003 : units * overhead_cost")
	if err != nil {
		b.Fatal(err)
	}
	units, rate := dec("1500"), dec("0.000004")
	ctx := map[string]any{"output_tokens": 420.0, "model": "opus"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Eval(units, rate, ctx); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCostEvalSimple(b *testing.B) {
	c, err := CompileCost("units * (context.model == 'opus' ? 0.000015 : 0.000003)")
	if err != nil {
		b.Fatal(err)
	}
	units, rate := dec("1500"), dec("0.000004")
	ctx := map[string]any{"model": "opus"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Eval(units, rate, ctx); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMatchEval(b *testing.B) {
	m, err := CompileMatch(halfSeats)
	if err != nil {
		b.Fatal(err)
	}
	event := jsonMap(b, `{"entitlement":"seats","customer":"org1","plan":"base","remaining":4,"meter":{"old":5,"value":6,"limit":10,"diff":1}}`)
	b.ReportAllocs()
	for b.Loop() {
		if ok, err := m.Eval("meter-changed", event); err != nil || !ok {
			b.Fatal(ok, err)
		}
	}
}

func BenchmarkMatchEvalOtherType(b *testing.B) {
	m, err := CompileMatch(halfSeats)
	if err != nil {
		b.Fatal(err)
	}
	event := jsonMap(b, `{"entitlement":"seats","remaining":4,"meter":{"limit":10}}`)
	b.ReportAllocs()
	for b.Loop() {
		if ok, err := m.Eval("meter-reset", event); err != nil || ok {
			b.Fatal(ok, err)
		}
	}
}

func BenchmarkCompileCost(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := CompileCost("units * (context.model == 'opus' ? 0.000015 : 0.000003)"); err != nil {
			b.Fatal(err)
		}
	}
}
