// Package doctree loads pricing-policy documents (JSON, YAML or TOML) into an
// order-preserving generic tree and encodes such trees back out.
//
// The tree exists so that a typed decoder can walk a document in source
// order, report errors by document path and line, and parse numbers as exact
// decimals from their source text rather than from a lossy float64.
package doctree

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
)

// Format identifies a document syntax.
type Format uint8

const (
	FormatUnknown Format = iota
	FormatJSON
	FormatYAML
	FormatTOML
)

func (f Format) String() string {
	switch f {
	case FormatJSON:
		return "json"
	case FormatYAML:
		return "yaml"
	case FormatTOML:
		return "toml"
	}
	return "unknown"
}

// ParseFormat accepts the format names users type on command lines and in
// configuration ("yml" included), case-insensitively.
func ParseFormat(s string) (Format, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "json":
		return FormatJSON, nil
	case "yaml", "yml":
		return FormatYAML, nil
	case "toml":
		return FormatTOML, nil
	}
	return FormatUnknown, fmt.Errorf("unknown document format %q (want json, yaml or toml)", s)
}

// FormatFromPath maps a file extension to a Format; FormatUnknown means the
// caller should fall back to Detect.
func FormatFromPath(path string) Format {
	ext := strings.TrimPrefix(filepath.Ext(path), ".")
	if ext == "" {
		return FormatUnknown
	}
	f, err := ParseFormat(ext)
	if err != nil {
		return FormatUnknown
	}
	return f
}

var (
	// ErrSyntax is wrapped by every Decode error caused by malformed input.
	ErrSyntax = errors.New("syntax error")
	// ErrUnsupported is wrapped by errors about well-formed input that the tree
	// cannot represent faithfully (YAML merge keys and custom tags, NaN/Inf,
	// TOML null list elements on encode, ...).
	ErrUnsupported = errors.New("unsupported")
)

// Error is the concrete type of Decode errors. It carries the position so a
// caller can point users at the offending line without parsing the message.
type Error struct {
	Format Format
	Line   int // 1-based; 0 if unknown
	Column int // 1-based; 0 if unknown
	Msg    string
	Err    error // ErrSyntax or ErrUnsupported
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Format.String())
	b.WriteString(": ")
	if e.Line > 0 {
		fmt.Fprintf(&b, "line %d", e.Line)
		if e.Column > 0 {
			fmt.Fprintf(&b, ", column %d", e.Column)
		}
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

func syntaxErr(f Format, line, col int, format string, args ...any) error {
	return &Error{Format: f, Line: line, Column: col, Msg: fmt.Sprintf(format, args...), Err: ErrSyntax}
}

func unsupportedErr(f Format, line, col int, format string, args ...any) error {
	return &Error{Format: f, Line: line, Column: col, Msg: fmt.Sprintf(format, args...), Err: ErrUnsupported}
}

// Kind is the type of a Node.
type Kind uint8

const (
	Null Kind = iota
	Bool
	Number
	String
	Map
	List
)

// String uses the vocabulary of user-facing error messages ("expected an
// object, got a list") rather than Go's.
func (k Kind) String() string {
	switch k {
	case Null:
		return "null"
	case Bool:
		return "boolean"
	case Number:
		return "number"
	case String:
		return "string"
	case Map:
		return "object"
	case List:
		return "list"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Node is one value of a document tree.
//
// Number nodes keep the source text (e.g. "100_000", "6e-6", "+5") so that
// it can be parsed as an exact decimal later; radix-prefixed integers (0x1F,
// 0o17, 0b101) are converted to decimal text because decimal parsers don't
// understand them.
type Node struct {
	Kind  Kind
	Text  string   // String: value; Number: source text; Bool: "true"/"false"
	Bool  bool     // Bool only
	Keys  []string // Map: keys in document order, unique
	Vals  []*Node  // Map: values, parallel to Keys
	Items []*Node  // List
	Line  int      // 1-based source line; 0 if unknown
}

// Get returns the value stored under key, or nil if n is nil, not a map, or
// lacks the key. The nil-tolerance lets callers chain lookups.
func (n *Node) Get(key string) *Node {
	if n == nil || n.Kind != Map {
		return nil
	}
	for i, k := range n.Keys {
		if k == key {
			return n.Vals[i]
		}
	}
	return nil
}

// Set replaces the value under key in place, or appends key at the end, so
// existing order is never disturbed. It panics if n is not a map, because
// silently turning a scalar into a map would hide a programming error.
func (n *Node) Set(key string, v *Node) {
	if n.Kind != Map {
		panic("doctree: Set on " + n.Kind.String())
	}
	for i, k := range n.Keys {
		if k == key {
			n.Vals[i] = v
			return
		}
	}
	n.Keys = append(n.Keys, key)
	n.Vals = append(n.Vals, v)
}

// Delete removes key from a map, keeping the order of the remaining keys. It
// is a no-op for absent keys and non-map nodes.
func (n *Node) Delete(key string) {
	if n == nil || n.Kind != Map {
		return
	}
	for i, k := range n.Keys {
		if k == key {
			n.Keys = append(n.Keys[:i:i], n.Keys[i+1:]...)
			n.Vals = append(n.Vals[:i:i], n.Vals[i+1:]...)
			return
		}
	}
}

func Str(s string) *Node           { return &Node{Kind: String, Text: s} }
func Num(text string) *Node        { return &Node{Kind: Number, Text: text} }
func NullNode() *Node              { return &Node{Kind: Null} }
func NewMap() *Node                { return &Node{Kind: Map} }
func NewList(items ...*Node) *Node { return &Node{Kind: List, Items: items} }

func BoolNode(b bool) *Node {
	t := "false"
	if b {
		t = "true"
	}
	return &Node{Kind: Bool, Bool: b, Text: t}
}

// Equal reports structural equality, ignoring Line. Maps and lists are
// order-sensitive because document order is meaningful to policies. Numbers
// compare by normalised text (underscores, '+' signs, exponent case and
// similar spelling differences removed) so that re-encoding a number in a
// format with a stricter grammar still counts as the same value, while
// 1.0 and 1 stay distinct as the source distinguished them.
func Equal(a, b *Node) bool {
	if a == nil || b == nil {
		return a == b
	}
	if a.Kind != b.Kind {
		return false
	}
	switch a.Kind {
	case Null:
		return true
	case Bool:
		return a.Bool == b.Bool
	case Number:
		return a.Text == b.Text || canonicalNumber(a.Text) == canonicalNumber(b.Text)
	case String:
		return a.Text == b.Text
	case Map:
		if len(a.Keys) != len(b.Keys) || len(a.Vals) != len(b.Vals) {
			return false
		}
		for i := range a.Keys {
			if a.Keys[i] != b.Keys[i] || !Equal(a.Vals[i], b.Vals[i]) {
				return false
			}
		}
		return true
	case List:
		if len(a.Items) != len(b.Items) {
			return false
		}
		for i := range a.Items {
			if !Equal(a.Items[i], b.Items[i]) {
				return false
			}
		}
		return true
	}
	return false
}

var utf8BOM = []byte("\xef\xbb\xbf")

// Decode parses data in format f; FormatUnknown means Detect. All errors are
// *Error values wrapping ErrSyntax or ErrUnsupported.
//
// Empty input (only whitespace and comments) decodes to Null for YAML (that is
// what YAML says it means), to an empty Map for TOML (likewise) and is a syntax
// error for JSON.
func Decode(data []byte, f Format) (*Node, error) {
	if f == FormatUnknown {
		f = Detect(data)
	}
	switch f {
	case FormatJSON:
		// A BOM is harmless noise from editors, but encoding/json rejects it.
		return decodeJSON(bytes.TrimPrefix(data, utf8BOM))
	case FormatYAML:
		return decodeYAML(data)
	case FormatTOML:
		return decodeTOML(bytes.TrimPrefix(data, utf8BOM))
	}
	return nil, fmt.Errorf("doctree: decode: unknown format %d", f)
}

// Encode renders n deterministically in format f.
//
// TOML has no null: null map values are omitted (a map left with no visible
// entries is still written, as an empty table), and a null list element or a
// non-map top-level node is an error wrapping ErrUnsupported. TOML integers
// must fit in int64 and floats in float64; other numbers are an error too.
func Encode(n *Node, f Format) ([]byte, error) {
	if n == nil {
		return nil, errors.New("doctree: encode: nil node")
	}
	if err := checkEncodable(n, 0); err != nil {
		return nil, err
	}
	switch f {
	case FormatJSON:
		return encodeJSON(n), nil
	case FormatYAML:
		return encodeYAML(n)
	case FormatTOML:
		return encodeTOML(n)
	}
	return nil, fmt.Errorf("doctree: encode: unknown format %d", f)
}
