package expr

import (
	"errors"
	"testing"

	"github.com/limitr/limitr/internal/num"
)

func FuzzCompile(f *testing.F) {
	for _, s := range []string{
		"units * (context.model == 'opus' ? 0.000015 : 0.000003)",
		"has(context.output_tokens) ? double(context.output_tokens) * 0.00003 + units * 0.000003 : units * 0.000003",
		halfSeats,
		"units * ", "(((", "[1,2,3].map(x, [1,2].map(y, x * y))", "'\\u00", "b'\\xff'", "{'a': 1}['a']",
		"context.a.b.c[0]", "units / 0", "1e999", "-9223372036854775808", "type.matches('[')",
		"event.x.all(k, k > 1)", "optional.of(1)", "`a`", "units ? 1 : 2", "\x00", "💸",
	} {
		f.Add(s)
	}
	event := map[string]any{"entitlement": "seats", "remaining": 1.0, "meter": map[string]any{"limit": 10.0}, "x": []any{1.0, "a"}}
	f.Fuzz(func(t *testing.T, src string) {
		c, err := CompileCost(src)
		if err != nil {
			if !errors.Is(err, ErrCompile) || c != nil {
				t.Fatalf("CompileCost(%q) = %v, %v", src, c, err)
			}
		} else if _, err := c.Eval(num.One, num.Zero, event); err != nil && !errors.Is(err, ErrEval) {
			t.Fatalf("Cost.Eval(%q): %v does not wrap ErrEval", src, err)
		}
		m, err := CompileMatch(src)
		if err != nil {
			if !errors.Is(err, ErrCompile) || m != nil {
				t.Fatalf("CompileMatch(%q) = %v, %v", src, m, err)
			}
		} else if _, err := m.Eval("meter-changed", event); err != nil && !errors.Is(err, ErrEval) {
			t.Fatalf("Match.Eval(%q): %v does not wrap ErrEval", src, err)
		}
	})
}
