package doctree

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// decodeTOML runs two passes. The unstable parser preserves document order but
// is deliberately lenient (it does not check table redefinition, number
// ranges, date contents, ...), so go-toml's own decoder validates the
// document first and the parser only supplies order, text and lines.
func decodeTOML(data []byte) (n *Node, err error) {
	defer func() {
		if r := recover(); r != nil {
			n, err = nil, syntaxErr(FormatTOML, 0, 0, "%v", r)
		}
	}()
	var sink map[string]any
	if err := toml.Unmarshal(data, &sink); err != nil {
		var de *toml.DecodeError
		if errors.As(err, &de) {
			line, col := de.Position()
			return nil, syntaxErr(FormatTOML, line, col, "%s", strings.TrimPrefix(de.Error(), "toml: "))
		}
		return nil, syntaxErr(FormatTOML, 0, 0, "%s", strings.TrimPrefix(err.Error(), "toml: "))
	}
	b := &tomlBuilder{data: data}
	return b.build()
}

type tomlBuilder struct {
	data     []byte
	p        unstable.Parser
	newlines []int
	// index speeds up key lookups while building; tables can be reopened by
	// later expressions, so it has to outlive a single expression.
	index map[*Node]map[string]int
}

func (b *tomlBuilder) build() (*Node, error) {
	for i, c := range b.data {
		if c == '\n' {
			b.newlines = append(b.newlines, i)
		}
	}
	b.index = map[*Node]map[string]int{}
	root := &Node{Kind: Map, Line: 1}
	cur := root
	b.p.Reset(b.data)
	for b.p.NextExpression() {
		e := b.p.Expression()
		var err error
		switch e.Kind {
		case unstable.KeyValue:
			err = b.keyValue(cur, e, 0)
		case unstable.Table:
			cur, err = b.table(root, e, false)
		case unstable.ArrayTable:
			cur, err = b.table(root, e, true)
		}
		if err != nil {
			return nil, err
		}
	}
	if err := b.p.Error(); err != nil {
		var pe *unstable.ParserError
		if errors.As(err, &pe) && pe.Highlight != nil {
			line, col := b.pos(b.p.Range(pe.Highlight))
			return nil, syntaxErr(FormatTOML, line, col, "%s", pe.Message)
		}
		return nil, syntaxErr(FormatTOML, 0, 0, "%s", err.Error())
	}
	return root, nil
}

func (b *tomlBuilder) pos(r unstable.Range) (line, col int) {
	off := int(r.Offset)
	i := sort.SearchInts(b.newlines, off)
	start := 0
	if i > 0 {
		start = b.newlines[i-1] + 1
	}
	return i + 1, off - start + 1
}

func (b *tomlBuilder) line(n *unstable.Node) int {
	l, _ := b.pos(n.Raw)
	return l
}

func (b *tomlBuilder) keyParts(n *unstable.Node) ([]string, int) {
	var parts []string
	line := 0
	it := n.Key()
	for it.Next() {
		k := it.Node()
		if line == 0 {
			line = b.line(k)
		}
		parts = append(parts, string(k.Data))
	}
	return parts, line
}

func (b *tomlBuilder) lookup(m *Node, key string) *Node {
	idx := b.index[m]
	if i, ok := idx[key]; ok {
		return m.Vals[i]
	}
	return nil
}

func (b *tomlBuilder) add(m *Node, key string, v *Node) {
	idx := b.index[m]
	if idx == nil {
		idx = map[string]int{}
		b.index[m] = idx
	}
	idx[key] = len(m.Keys)
	m.Keys = append(m.Keys, key)
	m.Vals = append(m.Vals, v)
}

// descend follows one key of a header or dotted key, creating missing tables.
// Arrays of tables resolve to their last element, as TOML specifies.
func (b *tomlBuilder) descend(m *Node, key string, line int) (*Node, error) {
	v := b.lookup(m, key)
	switch {
	case v == nil:
		v = &Node{Kind: Map, Line: line}
		b.add(m, key, v)
		return v, nil
	case v.Kind == Map:
		return v, nil
	case v.Kind == List && len(v.Items) > 0 && v.Items[len(v.Items)-1].Kind == Map:
		return v.Items[len(v.Items)-1], nil
	}
	return nil, syntaxErr(FormatTOML, line, 0, "key %s is already defined as a %s", strconv.Quote(key), v.Kind)
}

func (b *tomlBuilder) table(root *Node, e *unstable.Node, array bool) (*Node, error) {
	parts, line := b.keyParts(e)
	cur := root
	for i, k := range parts {
		if array && i == len(parts)-1 {
			break
		}
		var err error
		if cur, err = b.descend(cur, k, line); err != nil {
			return nil, err
		}
	}
	if !array {
		return cur, nil
	}
	last := parts[len(parts)-1]
	elem := &Node{Kind: Map, Line: line}
	switch v := b.lookup(cur, last); {
	case v == nil:
		b.add(cur, last, &Node{Kind: List, Line: line, Items: []*Node{elem}})
	case v.Kind == List:
		v.Items = append(v.Items, elem)
	default:
		return nil, syntaxErr(FormatTOML, line, 0, "key %s is already defined as a %s", strconv.Quote(last), v.Kind)
	}
	return elem, nil
}

func (b *tomlBuilder) keyValue(m *Node, e *unstable.Node, depth int) error {
	parts, line := b.keyParts(e)
	cur := m
	for _, k := range parts[:len(parts)-1] {
		var err error
		if cur, err = b.descend(cur, k, line); err != nil {
			return err
		}
	}
	last := parts[len(parts)-1]
	if b.lookup(cur, last) != nil {
		return syntaxErr(FormatTOML, line, 0, "duplicate key %s", strconv.Quote(last))
	}
	v, err := b.value(e.Value(), line, depth)
	if err != nil {
		return err
	}
	b.add(cur, last, v)
	return nil
}

func (b *tomlBuilder) value(v *unstable.Node, line, depth int) (*Node, error) {
	if depth > maxDepth {
		return nil, unsupportedErr(FormatTOML, line, 0, "nesting deeper than %d", maxDepth)
	}
	if v.Raw.Length > 0 {
		line = b.line(v)
	}
	switch v.Kind {
	case unstable.String:
		return &Node{Kind: String, Text: string(v.Data), Line: line}, nil
	case unstable.Bool:
		n := BoolNode(string(v.Data) == "true")
		n.Line = line
		return n, nil
	case unstable.Integer:
		text := string(v.Data)
		if dec, ok := radixToDecimal(text); ok {
			text = dec
		}
		return &Node{Kind: Number, Text: text, Line: line}, nil
	case unstable.Float:
		text := string(v.Data)
		if strings.Contains(text, "inf") || strings.Contains(text, "nan") {
			return nil, unsupportedErr(FormatTOML, line, 0, "non-finite number %s", text)
		}
		return &Node{Kind: Number, Text: text, Line: line}, nil
	case unstable.LocalDate, unstable.LocalTime, unstable.LocalDateTime, unstable.DateTime:
		// Policies have no date type; keeping the text lets the typed layer
		// parse dates from strings if it ever needs them.
		return &Node{Kind: String, Text: string(v.Data), Line: line}, nil
	case unstable.Array:
		n := &Node{Kind: List, Line: line, Items: []*Node{}}
		it := v.Children()
		for it.Next() {
			c := it.Node()
			if c.Kind == unstable.Comment {
				continue
			}
			item, err := b.value(c, line, depth+1)
			if err != nil {
				return nil, err
			}
			n.Items = append(n.Items, item)
		}
		return n, nil
	case unstable.InlineTable:
		n := &Node{Kind: Map, Line: line}
		it := v.Children()
		for it.Next() {
			c := it.Node()
			if c.Kind != unstable.KeyValue {
				continue
			}
			if err := b.keyValue(n, c, depth+1); err != nil {
				return nil, err
			}
		}
		return n, nil
	}
	return nil, syntaxErr(FormatTOML, line, 0, "unexpected value kind %s", v.Kind)
}

// TOML encoding.
//
// TOML forces a table's key/value lines before its sub-table headers, but
// the tree's order must survive a round trip. So within each table, every
// entry up to the last one that can only be written as `key = value` is
// written inline (nested maps as dotted keys, which keep their order), and
// only the trailing maps and lists of maps become [table] and [[array]]
// sections.

var tomlBareKey = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

type tomlEncoder struct {
	buf bytes.Buffer
}

func encodeTOML(n *Node) ([]byte, error) {
	if n.Kind != Map {
		return nil, fmt.Errorf("%w: toml: top-level value must be an object, got %s", ErrUnsupported, n.Kind)
	}
	e := &tomlEncoder{}
	if err := e.table(nil, n, tomlRoot); err != nil {
		return nil, err
	}
	return e.buf.Bytes(), nil
}

type tomlHeader uint8

const (
	tomlRoot tomlHeader = iota
	tomlTable
	tomlArrayTable
)

func isArrayOfTables(n *Node) bool {
	if n.Kind != List || len(n.Items) == 0 {
		return false
	}
	for _, it := range n.Items {
		if it.Kind != Map {
			return false
		}
	}
	return true
}

func (e *tomlEncoder) table(path []string, n *Node, header tomlHeader) error {
	split := -1
	hasSections := false
	for i, v := range n.Vals {
		switch {
		case v.Kind == Null:
		case v.Kind == Map || isArrayOfTables(v):
			hasSections = true
		default:
			split = i
		}
	}
	switch header {
	case tomlArrayTable:
		e.headerLine("[[", path, "]]")
	case tomlTable:
		// A table that has key/values, or nothing that would create it
		// implicitly, needs its own header.
		if split >= 0 || !hasSections {
			e.headerLine("[", path, "]")
		}
	}
	for i := 0; i <= split; i++ {
		if err := e.dotted([]string{n.Keys[i]}, n.Vals[i]); err != nil {
			return err
		}
	}
	for i := split + 1; i < len(n.Keys); i++ {
		v := n.Vals[i]
		sub := append(slices.Clip(path), n.Keys[i])
		switch v.Kind {
		case Map:
			if err := e.table(sub, v, tomlTable); err != nil {
				return err
			}
		case List:
			for _, it := range v.Items {
				if err := e.table(sub, it, tomlArrayTable); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func (e *tomlEncoder) headerLine(open string, path []string, closing string) {
	if e.buf.Len() > 0 {
		e.buf.WriteByte('\n')
	}
	e.buf.WriteString(open)
	e.writeKeyPath(path)
	e.buf.WriteString(closing)
	e.buf.WriteByte('\n')
}

func (e *tomlEncoder) writeKeyPath(path []string) {
	for i, k := range path {
		if i > 0 {
			e.buf.WriteByte('.')
		}
		writeTOMLKey(&e.buf, k)
	}
}

func hasVisible(n *Node) bool {
	for _, v := range n.Vals {
		if v.Kind != Null {
			return true
		}
	}
	return false
}

// dotted writes one table entry as `a.b.c = value` lines, expanding nested
// maps into dotted keys because they read better than long inline tables.
func (e *tomlEncoder) dotted(keys []string, v *Node) error {
	switch {
	case v.Kind == Null:
		return nil
	case v.Kind == Map && hasVisible(v):
		for i, k := range v.Keys {
			if err := e.dotted(append(slices.Clip(keys), k), v.Vals[i]); err != nil {
				return err
			}
		}
		return nil
	}
	e.writeKeyPath(keys)
	e.buf.WriteString(" = ")
	if err := e.inline(v); err != nil {
		return err
	}
	e.buf.WriteByte('\n')
	return nil
}

func (e *tomlEncoder) inline(v *Node) error {
	switch v.Kind {
	case Null:
		return fmt.Errorf("%w: toml has no null (null list element)", ErrUnsupported)
	case Bool:
		e.buf.WriteString(strconv.FormatBool(v.Bool))
	case Number:
		if err := tomlNumberRange(v.Text); err != nil {
			return err
		}
		e.buf.WriteString(numberFor(v.Text, FormatTOML))
	case String:
		writeTOMLString(&e.buf, v.Text)
	case List:
		e.buf.WriteByte('[')
		for i, it := range v.Items {
			if i > 0 {
				e.buf.WriteString(", ")
			}
			if err := e.inline(it); err != nil {
				return err
			}
		}
		e.buf.WriteByte(']')
	case Map:
		if !hasVisible(v) {
			e.buf.WriteString("{}")
			return nil
		}
		e.buf.WriteString("{ ")
		first := true
		for i, k := range v.Keys {
			if v.Vals[i].Kind == Null {
				continue
			}
			if !first {
				e.buf.WriteString(", ")
			}
			first = false
			writeTOMLKey(&e.buf, k)
			e.buf.WriteString(" = ")
			if err := e.inline(v.Vals[i]); err != nil {
				return err
			}
		}
		e.buf.WriteString(" }")
	}
	return nil
}

func writeTOMLKey(b *bytes.Buffer, k string) {
	if tomlBareKey.MatchString(k) {
		b.WriteString(k)
		return
	}
	writeTOMLString(b, k)
}

// writeTOMLString writes a basic string. TOML forbids raw control characters
// (other than tab) and DEL in basic strings, so those are escaped too.
func writeTOMLString(b *bytes.Buffer, s string) {
	const hex = "0123456789ABCDEF"
	b.WriteByte('"')
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			_, size := utf8.DecodeRuneInString(s[i:])
			b.WriteString(s[i : i+size])
			i += size
			continue
		}
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c == '\n':
			b.WriteString(`\n`)
		case c == '\r':
			b.WriteString(`\r`)
		case c == '\t':
			b.WriteString(`\t`)
		case c < 0x20 || c == 0x7f:
			b.WriteString(`\u00`)
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&0xf])
		default:
			b.WriteByte(c)
		}
		i++
	}
	b.WriteByte('"')
}
