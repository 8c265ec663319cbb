package doctree

import (
	"errors"
	"testing"
)

func hasNull(n *Node) bool {
	switch n.Kind {
	case Null:
		return true
	case Map:
		for _, v := range n.Vals {
			if hasNull(v) {
				return true
			}
		}
	case List:
		for _, v := range n.Items {
			if hasNull(v) {
				return true
			}
		}
	}
	return false
}

// checkRoundTrip asserts the package's central promise for any decodable
// input: encoding in any format and decoding again yields an Equal tree.
// TOML is exempt where it cannot represent the tree (nulls, a non-map top
// level, numbers outside int64/float64), which Encode reports as
// ErrUnsupported.
func checkRoundTrip(t *testing.T, data []byte, from Format) {
	n, err := Decode(data, from)
	if err != nil {
		var de *Error
		if !errors.Is(err, ErrSyntax) && !errors.Is(err, ErrUnsupported) || !errors.As(err, &de) {
			t.Fatalf("Decode(%q): error %v (%T) wraps neither sentinel", data, err, err)
		}
		return
	}
	for _, f := range formats {
		out, err := Encode(n, f)
		if err != nil {
			if f == FormatTOML && errors.Is(err, ErrUnsupported) {
				continue
			}
			t.Fatalf("%s → %s: Encode(%s): %v", from, f, dump(n), err)
		}
		if f == FormatTOML && hasNull(n) {
			continue // nulls are dropped by design
		}
		back, err := Decode(out, f)
		if err != nil {
			t.Fatalf("%s → %s: Decode of encoded %q: %v\ninput %q", from, f, out, err, data)
		}
		if !Equal(n, back) {
			t.Fatalf("%s → %s: round trip mismatch\ninput %q\nencoded %q\ngot  %s\nwant %s", from, f, data, out, dump(back), dump(n))
		}
	}
}

func addSeeds(f *testing.F, seeds ...string) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
}

func FuzzDecodeJSON(f *testing.F) {
	addSeeds(f, samplePolicyJSON, `{"a": [1, 2.5, -0, 1E+2, "x\u0000", null, true, {}]}`, `"\ud800"`, `{"":{"":[]}}`, `[]`, `1e400`, `{"a":1}x`)
	f.Fuzz(func(t *testing.T, data []byte) { checkRoundTrip(t, data, FormatJSON) })
}

func FuzzDecodeYAML(f *testing.F) {
	addSeeds(f, samplePolicyYAML, "a: &x [1, 2]\nb: *x\n", "- 0x1F\n- 1_0\n- .5\n- +1\n- ~\n- '1'\n", "a: |\n  x\n   y \n", "? a\n: b\n", "a: !!str 1\n", "\"\\t\": 1e400\n", "- - - []\n")
	f.Fuzz(func(t *testing.T, data []byte) { checkRoundTrip(t, data, FormatYAML) })
}

func FuzzDecodeTOML(f *testing.F) {
	addSeeds(f, samplePolicyTOML, "a = 1\n[b]\nc.d = [1, {e = 2}]\n[[f]]\n[[f.g]]\nh = 0x10\n", "'a b' = \"\\u0001\"\n", "x = 1979-05-27T07:32:00Z\n", "a = {b = {c = {}}}\n", "a = [[1], [\"x\"]]\n")
	f.Fuzz(func(t *testing.T, data []byte) { checkRoundTrip(t, data, FormatTOML) })
}
