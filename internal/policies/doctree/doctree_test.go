package doctree

import (
	"errors"
	"strings"
	"testing"
)

// tree builds expected trees tersely: maps are written as alternating
// key/value arguments to m.
func m(kv ...any) *Node {
	n := NewMap()
	for i := 0; i < len(kv); i += 2 {
		n.Set(kv[i].(string), kv[i+1].(*Node))
	}
	return n
}

func TestFormat(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Format
		err  bool
	}{
		{"json", FormatJSON, false},
		{"YAML", FormatYAML, false},
		{"yml", FormatYAML, false},
		{" Toml ", FormatTOML, false},
		{"xml", FormatUnknown, true},
		{"", FormatUnknown, true},
	} {
		got, err := ParseFormat(tc.in)
		if got != tc.want || (err != nil) != tc.err {
			t.Errorf("ParseFormat(%q) = %v, %v", tc.in, got, err)
		}
	}
	for path, want := range map[string]Format{
		"policy.json":      FormatJSON,
		"a/b/policy.YML":   FormatYAML,
		"policy.yaml":      FormatYAML,
		"policy.toml":      FormatTOML,
		"policy":           FormatUnknown,
		"policy.txt":       FormatUnknown,
		"dir.json/policy":  FormatUnknown,
		"policy.json.toml": FormatTOML,
	} {
		if got := FormatFromPath(path); got != want {
			t.Errorf("FormatFromPath(%q) = %v, want %v", path, got, want)
		}
	}
	if FormatJSON.String() != "json" || FormatYAML.String() != "yaml" || FormatTOML.String() != "toml" {
		t.Error("Format.String")
	}
	if Map.String() != "object" || Bool.String() != "boolean" || List.String() != "list" {
		t.Error("Kind.String")
	}
}

func TestDetect(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want Format
	}{
		{"json object", `{"a": 1}`, FormatJSON},
		{"json with BOM and space", "\xef\xbb\xbf\n  [1, 2]", FormatJSON},
		{"broken json", `{"a": `, FormatJSON},
		{"toml section first", "[policy]\nname = \"x\"\n", FormatTOML},
		{"toml key value", "name = \"x\"\n[plans.free]\nprice = 0\n", FormatTOML},
		{"yaml mapping", "policy:\n  name: x\n", FormatYAML},
		{"yaml flow map", "{a: 1}", FormatJSON}, // documented: '{' means JSON
		{"yaml list", "- a\n- b\n", FormatYAML},
		{"empty", "", FormatYAML},
		{"broken toml", "[policy]\nname = \nfoo = 1\n", FormatTOML},
		{"broken yaml", "policy:\n  name: x\n bad: : y\n", FormatYAML},
		{"toml key value only", "a = 1", FormatTOML},
		{"yaml plain string with equals", "a = b", FormatYAML},
	} {
		if got := Detect([]byte(tc.in)); got != tc.want {
			t.Errorf("%s: Detect = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestNodeAPI(t *testing.T) {
	n := NewMap()
	n.Set("b", Num("1"))
	n.Set("a", Str("x"))
	n.Set("b", BoolNode(true)) // replaces in place
	if strings.Join(n.Keys, ",") != "b,a" || n.Get("b").Kind != Bool || !n.Get("b").Bool {
		t.Fatalf("Set: %v", n.Keys)
	}
	if n.Get("missing") != nil || Str("x").Get("a") != nil || (*Node)(nil).Get("a") != nil {
		t.Error("Get on absent / non-map / nil")
	}
	if n.Get("b").Get("x").Get("y") != nil {
		t.Error("chained Get")
	}
	n.Set("c", NullNode())
	n.Delete("a")
	n.Delete("zzz")
	if strings.Join(n.Keys, ",") != "b,c" || len(n.Vals) != 2 || n.Get("c").Kind != Null {
		t.Fatalf("Delete: %v", n.Keys)
	}
	l := NewList(Num("1"), Str("2"))
	if l.Kind != List || len(l.Items) != 2 {
		t.Error("NewList")
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("Set on a list should panic")
			}
		}()
		l.Set("a", Num("1"))
	}()
}

func TestEqual(t *testing.T) {
	for _, tc := range []struct {
		a, b *Node
		want bool
	}{
		{Num("100_000"), Num("100000"), true},
		{Num("+5"), Num("5"), true},
		{Num("6E-6"), Num("6e-6"), true},
		{Num("1e+05"), Num("1e5"), true},
		{Num(".5"), Num("0.5"), true},
		{Num("1."), Num("1.0"), true},
		{Num("1.0"), Num("1"), false},
		{Num("1"), Str("1"), false},
		{m("a", Num("1"), "b", Num("2")), m("a", Num("1"), "b", Num("2")), true},
		{m("a", Num("1"), "b", Num("2")), m("b", Num("2"), "a", Num("1")), false},
		{NewList(Num("1"), Num("2")), NewList(Num("2"), Num("1")), false},
		{NewList(), &Node{Kind: List, Items: []*Node{}}, true},
		{&Node{Kind: String, Text: "a", Line: 3}, Str("a"), true},
		{BoolNode(true), BoolNode(false), false},
		{NullNode(), NullNode(), true},
		{nil, nil, true},
		{nil, NullNode(), false},
	} {
		if got := Equal(tc.a, tc.b); got != tc.want {
			t.Errorf("Equal(%s, %s) = %v", dump(tc.a), dump(tc.b), got)
		}
	}
}

// dump is a compact, deterministic rendering for failure messages.
func dump(n *Node) string {
	if n == nil {
		return "<nil>"
	}
	out, err := Encode(n, FormatJSON)
	if err != nil {
		return "<" + err.Error() + ">"
	}
	return strings.Join(strings.Fields(string(out)), " ")
}

type decodeCase struct {
	name string
	in   string
	want *Node  // nil: expect an error
	err  error  // ErrSyntax or ErrUnsupported when want == nil
	msg  string // substring of the error message, if set
	line int    // expected error line, if set
}

func runDecodeCases(t *testing.T, f Format, cases []decodeCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Decode([]byte(tc.in), f)
			if tc.want != nil {
				if err != nil {
					t.Fatalf("Decode: %v", err)
				}
				if !Equal(got, tc.want) {
					t.Fatalf("got %s\nwant %s", dump(got), dump(tc.want))
				}
				return
			}
			if err == nil {
				t.Fatalf("want error, got %s", dump(got))
			}
			if !errors.Is(err, tc.err) {
				t.Errorf("error %q does not wrap %v", err, tc.err)
			}
			if tc.msg != "" && !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not contain %q", err, tc.msg)
			}
			var de *Error
			if !errors.As(err, &de) {
				t.Fatalf("error %T is not *Error", err)
			}
			if tc.line != 0 && de.Line != tc.line {
				t.Errorf("error %q: line %d, want %d", err, de.Line, tc.line)
			}
		})
	}
}

func TestDecodeJSON(t *testing.T) {
	runDecodeCases(t, FormatJSON, []decodeCase{
		{name: "scalars", in: `{"n": null, "t": true, "f": false, "i": 100000, "d": 0.000004, "e": 6E-6, "s": "x\u00e9\n"}`,
			want: m("n", NullNode(), "t", BoolNode(true), "f", BoolNode(false), "i", Num("100000"), "d", Num("0.000004"), "e", Num("6E-6"), "s", Str("xé\n"))},
		{name: "top-level scalar", in: ` 42 `, want: Num("42")},
		{name: "top-level string", in: `"hi"`, want: Str("hi")},
		{name: "nesting and order", in: `{"z": {"b": [1, {"y": 2, "x": 3}], "a": []}, "a": {}}`,
			want: m("z", m("b", NewList(Num("1"), m("y", Num("2"), "x", Num("3"))), "a", NewList()), "a", NewMap())},
		{name: "big number text kept", in: `123456789012345678901234567890.000000000000000001`,
			want: Num("123456789012345678901234567890.000000000000000001")},
		{name: "BOM", in: "\xef\xbb\xbf{}", want: NewMap()},
		{name: "duplicate key", in: "{\n  \"a\": 1,\n  \"a\": 2\n}", err: ErrSyntax, msg: `duplicate key "a"`, line: 3},
		{name: "nested duplicate key", in: `{"a": {"b": 1, "b": 1}}`, err: ErrSyntax, msg: `duplicate key "b"`},
		{name: "syntax error line", in: "{\n  \"a\": 1,\n  \"b\": }\n", err: ErrSyntax, msg: "line 3, column 8", line: 3},
		{name: "trailing comma", in: `{"a": 1,}`, err: ErrSyntax},
		{name: "trailing garbage", in: "{\"a\": 1}\n\nx", err: ErrSyntax, msg: "after top-level value", line: 3},
		{name: "second value", in: `{} {}`, err: ErrSyntax},
		{name: "stray bracket", in: `{}]`, err: ErrSyntax},
		{name: "truncated", in: `{"a": [1, 2`, err: ErrSyntax, msg: "end of input"},
		{name: "empty", in: "", err: ErrSyntax, msg: "empty"},
		{name: "blank", in: " \n\t", err: ErrSyntax},
		{name: "bad number", in: `[01]`, err: ErrSyntax},
		{name: "NaN", in: `[NaN]`, err: ErrSyntax},
	})
	n, err := Decode([]byte("{\n  \"a\": {\n    \"b\": 1\n  },\n  \"c\": [\n    true\n  ]\n}"), FormatJSON)
	if err != nil {
		t.Fatal(err)
	}
	if n.Line != 1 || n.Get("a").Line != 2 || n.Get("a").Get("b").Line != 3 || n.Get("c").Items[0].Line != 6 {
		t.Errorf("lines: %d %d %d %d", n.Line, n.Get("a").Line, n.Get("a").Get("b").Line, n.Get("c").Items[0].Line)
	}
}

func TestDecodeYAML(t *testing.T) {
	runDecodeCases(t, FormatYAML, []decodeCase{
		{name: "scalars", in: "n: null\nt: ~\nb: true\nB: False\ni: 100_000\nd: 0.000004\ne: 6e-6\nx: 0x1F\no: 0o17\ns: hello\nq: '123'\nqq: \"true\"\nts: 2024-01-01\nbig: 1e400\nhuge: 123456789012345678901234567890\nplus: +5\nhalf: .5\nneg: -3\n",
			want: m("n", NullNode(), "t", NullNode(), "b", BoolNode(true), "B", BoolNode(false), "i", Num("100_000"),
				"d", Num("0.000004"), "e", Num("6e-6"), "x", Num("31"), "o", Num("15"), "s", Str("hello"), "q", Str("123"),
				"qq", Str("true"), "ts", Str("2024-01-01"), "big", Num("1e400"), "huge", Num("123456789012345678901234567890"),
				"plus", Num("5"), "half", Num("0.5"), "neg", Num("-3"))},
		{name: "yes is a string", in: "a: yes\nb: on\n", want: m("a", Str("yes"), "b", Str("on"))},
		{name: "explicit str tag", in: "a: !!str 12\n", want: m("a", Str("12"))},
		{name: "block strings", in: "a: |\n  line1\n  line2\nb: >-\n  folded\n  text\n",
			want: m("a", Str("line1\nline2\n"), "b", Str("folded text"))},
		{name: "nesting and order", in: "z:\n  b:\n    - 1\n    - {y: 2, x: 3}\n  a: []\na: {}\n",
			want: m("z", m("b", NewList(Num("1"), m("y", Num("2"), "x", Num("3"))), "a", NewList()), "a", NewMap())},
		{name: "top-level list", in: "- a\n- 1\n", want: NewList(Str("a"), Num("1"))},
		{name: "numeric keys are text", in: "200: ok\ntrue: x\n", want: m("200", Str("ok"), "true", Str("x"))},
		{name: "alias resolved", in: "base: &b {limit: 5}\nplan: *b\n", want: m("base", m("limit", Num("5")), "plan", m("limit", Num("5")))},
		{name: "explicit document", in: "---\na: 1\n...\n", want: m("a", Num("1"))},
		{name: "empty", in: "", want: NullNode()},
		{name: "comment only", in: "# nothing\n", want: NullNode()},
		{name: "duplicate key", in: "a: 1\nb:\n  c: 1\n  c: 2\n", err: ErrSyntax, msg: `line 4, column 3: duplicate key "c"`, line: 4},
		{name: "syntax error line", in: "a: 1\nb: 2\nc:\nd: e: f\n", err: ErrSyntax, msg: "yaml: line 4: mapping values are not allowed", line: 4},
		{name: "bad indentation", in: "a:\n  b: 1\n c: 2\n", err: ErrSyntax},
		{name: "unclosed flow", in: "a: [1, 2\n", err: ErrSyntax},
		{name: "trailing garbage", in: "a: 1\n]\n", err: ErrSyntax},
		{name: "multiple documents", in: "a: 1\n---\nb: 2\n", err: ErrUnsupported, msg: "multiple documents"},
		{name: "merge key", in: "base: &b {x: 1}\nplan:\n  <<: *b\n", err: ErrUnsupported, msg: "merge", line: 3},
		{name: "inf", in: "a: .inf\n", err: ErrUnsupported, msg: "non-finite"},
		{name: "nan", in: "a: [.NaN]\n", err: ErrUnsupported},
		{name: "octal-looking", in: "a: 017\n", err: ErrUnsupported, msg: "leading zero"},
		{name: "custom tag", in: "a: !money 5\n", err: ErrUnsupported},
		{name: "binary", in: "a: !!binary aGk=\n", err: ErrUnsupported},
		{name: "null key", in: "~: 1\n", err: ErrUnsupported},
		{name: "complex key", in: "? [a]\n: 1\n", err: ErrUnsupported},
		{name: "unknown alias", in: "a: *nope\n", err: ErrSyntax},
		{name: "tab indent", in: "a:\n\tb: 1\n", err: ErrSyntax},
		{name: "alias bomb", in: yamlBomb(), err: ErrUnsupported, msg: "aliases"},
	})
	n, err := Decode([]byte("a:\n  b: 1\nc:\n  - true\n"), FormatYAML)
	if err != nil {
		t.Fatal(err)
	}
	if n.Get("a").Get("b").Line != 2 || n.Get("c").Items[0].Line != 4 {
		t.Errorf("lines: %d %d", n.Get("a").Get("b").Line, n.Get("c").Items[0].Line)
	}
}

func yamlBomb() string {
	var b strings.Builder
	b.WriteString("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n")
	for i := 1; i < 10; i++ {
		b.WriteString("a" + string(rune('0'+i)) + ": &a" + string(rune('0'+i)) + " [")
		for j := range 10 {
			if j > 0 {
				b.WriteString(", ")
			}
			b.WriteString("*a" + string(rune('0'+i-1)))
		}
		b.WriteString("]\n")
	}
	return b.String()
}

func TestDecodeTOML(t *testing.T) {
	runDecodeCases(t, FormatTOML, []decodeCase{
		{name: "scalars", in: "t = true\nf = false\ni = 100_000\nd = 0.000004\ne = 6e-6\nx = 0xff\no = 0o17\nb = 0b101\ns = \"a\\tb\"\nl = 'C:\\x'\nml = \"\"\"\nline\"\"\"\ndt = 2024-01-02T03:04:05Z\nld = 2024-01-02\nneg = -3\nplus = +5\n",
			want: m("t", BoolNode(true), "f", BoolNode(false), "i", Num("100_000"), "d", Num("0.000004"), "e", Num("6e-6"),
				"x", Num("255"), "o", Num("15"), "b", Num("5"), "s", Str("a\tb"), "l", Str(`C:\x`), "ml", Str("line"),
				"dt", Str("2024-01-02T03:04:05Z"), "ld", Str("2024-01-02"), "neg", Num("-3"), "plus", Num("+5"))},
		{name: "tables and order", in: "z = 1\n[b]\ny = 2\nx.q = 3\n[a]\n[b.c]\nw = 4\n",
			want: m("z", Num("1"), "b", m("y", Num("2"), "x", m("q", Num("3")), "c", m("w", Num("4"))), "a", NewMap())},
		{name: "arrays of tables", in: "[[tiers]]\nup_to = 5\n[tiers.price]\namount = 0.80\n[[tiers]]\nprice = { amount = 0.55 }\n",
			want: m("tiers", NewList(m("up_to", Num("5"), "price", m("amount", Num("0.80"))), m("price", m("amount", Num("0.55")))))},
		{name: "inline and arrays", in: "a = [1, [2, 3], { x = 1, y.z = 2 }, []]\nb = {}\n",
			want: m("a", NewList(Num("1"), NewList(Num("2"), Num("3")), m("x", Num("1"), "y", m("z", Num("2"))), NewList()), "b", NewMap())},
		{name: "quoted keys", in: "\"a.b\" = 1\n'c d' = 2\n[\"x y\".z]\n", want: m("a.b", Num("1"), "c d", Num("2"), "x y", m("z", NewMap()))},
		{name: "empty", in: "", want: NewMap()},
		{name: "comments only", in: "# hi\n\n", want: NewMap()},
		{name: "duplicate key", in: "a = 1\nb = 2\na = 3\n", err: ErrSyntax, msg: "line 3", line: 3},
		{name: "duplicate table", in: "[a]\nx = 1\n[a]\ny = 2\n", err: ErrSyntax, line: 3},
		{name: "inline table extended", in: "a = {x = 1}\n[a]\ny = 2\n", err: ErrSyntax},
		{name: "syntax error line", in: "a = 1\nb = \nc = 3\n", err: ErrSyntax, msg: "line 2", line: 2},
		{name: "trailing garbage", in: "a = 1 2\n", err: ErrSyntax, line: 1},
		{name: "unclosed table", in: "[a\n", err: ErrSyntax},
		{name: "int overflow", in: "a = 99999999999999999999\n", err: ErrSyntax},
		{name: "bad underscore", in: "a = 1__0\n", err: ErrSyntax},
		{name: "leading zero", in: "a = 01\n", err: ErrSyntax},
		{name: "nan", in: "a = nan\n", err: ErrUnsupported, msg: "non-finite"},
		{name: "inf", in: "a = [-inf]\n", err: ErrUnsupported},
		{name: "bad date", in: "a = 2024-13-45\n", err: ErrSyntax},
	})
	n, err := Decode([]byte("a = 1\n\n[t]\nb = [\n  1,\n  2,\n]\n[[l]]\nc = 'x'\n"), FormatTOML)
	if err != nil {
		t.Fatal(err)
	}
	if n.Get("a").Line != 1 || n.Get("t").Line != 3 || n.Get("t").Get("b").Line != 4 || n.Get("t").Get("b").Items[1].Line != 6 || n.Get("l").Items[0].Get("c").Line != 9 {
		t.Errorf("lines: %d %d %d %d %d", n.Get("a").Line, n.Get("t").Line, n.Get("t").Get("b").Line, n.Get("t").Get("b").Items[1].Line, n.Get("l").Items[0].Get("c").Line)
	}
}

func TestDecodeUnknownFormatDetects(t *testing.T) {
	for in, want := range map[string]*Node{
		`{"a": [1]}`:           m("a", NewList(Num("1"))),
		"a:\n  - 1\n":          m("a", NewList(Num("1"))),
		"[a]\nb = [1]\n":       m("a", m("b", NewList(Num("1")))),
		"a = 1\n[t]\nb = 2\n":  m("a", Num("1"), "t", m("b", Num("2"))),
		"plans:\n  free: {}\n": m("plans", m("free", NewMap())),
	} {
		got, err := Decode([]byte(in), FormatUnknown)
		if err != nil || !Equal(got, want) {
			t.Errorf("Decode(%q) = %s, %v", in, dump(got), err)
		}
	}
}
