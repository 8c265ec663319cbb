package doctree

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

const (
	yamlStr       = "!!str"
	yamlInt       = "!!int"
	yamlFloat     = "!!float"
	yamlBool      = "!!bool"
	yamlNull      = "!!null"
	yamlTimestamp = "!!timestamp"
	yamlMap       = "!!map"
	yamlSeq       = "!!seq"
	yamlMerge     = "!!merge"
)

var yamlErrLine = regexp.MustCompile(`(?s)^yaml: line (\d+): (.*)$`)

type yamlDecoder struct {
	// budget bounds the nodes produced, so that alias expansion ("billion
	// laughs") cannot turn a small document into an enormous tree.
	budget int
}

func decodeYAML(data []byte) (n *Node, err error) {
	defer func() {
		// yaml.v3 has had panics on malformed input; a loader must not crash
		// the process because of a user's file.
		if r := recover(); r != nil {
			n, err = nil, syntaxErr(FormatYAML, 0, 0, "%v", r)
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return &Node{Kind: Null}, nil
		}
		return nil, yamlError(err)
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, yamlError(err)
	default:
		return nil, unsupportedErr(FormatYAML, extra.Line, 0, "multiple documents in one stream")
	}
	root := &doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) != 1 {
			return &Node{Kind: Null}, nil
		}
		root = root.Content[0]
	}
	d := &yamlDecoder{budget: 10000 + 10*len(data)}
	return d.node(root, 0)
}

func yamlError(err error) error {
	msg := err.Error()
	if m := yamlErrLine.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return syntaxErr(FormatYAML, line, 0, "%s", m[2])
	}
	return syntaxErr(FormatYAML, 0, 0, "%s", strings.TrimPrefix(msg, "yaml: "))
}

func (d *yamlDecoder) node(y *yaml.Node, depth int) (*Node, error) {
	if depth > maxDepth {
		return nil, unsupportedErr(FormatYAML, y.Line, y.Column, "nesting deeper than %d", maxDepth)
	}
	d.budget--
	if d.budget < 0 {
		return nil, unsupportedErr(FormatYAML, y.Line, y.Column, "document too large after expanding aliases")
	}
	switch y.Kind {
	case yaml.AliasNode:
		if y.Alias == nil {
			return nil, syntaxErr(FormatYAML, y.Line, y.Column, "unknown alias %q", y.Value)
		}
		// Aliases are copied rather than shared so that mutating one
		// occurrence (Set, Delete) cannot silently change another.
		n, err := d.node(y.Alias, depth+1)
		if err != nil {
			return nil, err
		}
		n.Line = y.Line
		return n, nil
	case yaml.ScalarNode:
		return yamlScalar(y)
	case yaml.MappingNode:
		if tag := y.ShortTag(); tag != yamlMap {
			return nil, unsupportedErr(FormatYAML, y.Line, y.Column, "mapping tag %s", tag)
		}
		n := &Node{Kind: Map, Line: y.Line}
		seen := make(map[string]struct{}, len(y.Content)/2)
		for i := 0; i+1 < len(y.Content); i += 2 {
			kn, vn := y.Content[i], y.Content[i+1]
			key, err := yamlKey(kn)
			if err != nil {
				return nil, err
			}
			if _, dup := seen[key]; dup {
				return nil, syntaxErr(FormatYAML, kn.Line, kn.Column, "duplicate key %s", strconv.Quote(key))
			}
			seen[key] = struct{}{}
			v, err := d.node(vn, depth+1)
			if err != nil {
				return nil, err
			}
			n.Keys = append(n.Keys, key)
			n.Vals = append(n.Vals, v)
		}
		return n, nil
	case yaml.SequenceNode:
		if tag := y.ShortTag(); tag != yamlSeq {
			return nil, unsupportedErr(FormatYAML, y.Line, y.Column, "sequence tag %s", tag)
		}
		n := &Node{Kind: List, Line: y.Line, Items: make([]*Node, 0, len(y.Content))}
		for _, c := range y.Content {
			v, err := d.node(c, depth+1)
			if err != nil {
				return nil, err
			}
			n.Items = append(n.Items, v)
		}
		return n, nil
	case yaml.DocumentNode:
		return nil, unsupportedErr(FormatYAML, y.Line, y.Column, "nested document")
	}
	return nil, syntaxErr(FormatYAML, y.Line, y.Column, "unexpected node kind %d", y.Kind)
}

// yamlKey accepts any non-null scalar as a key, using its source text: JSON
// and TOML keys are strings, and `200: ok` or `true: x` in YAML is far more
// likely meant as text than as a reason to reject the document.
func yamlKey(k *yaml.Node) (string, error) {
	if k.Kind == yaml.AliasNode && k.Alias != nil {
		k = k.Alias
	}
	if k.Kind != yaml.ScalarNode {
		return "", unsupportedErr(FormatYAML, k.Line, k.Column, "non-scalar mapping key")
	}
	switch tag := k.ShortTag(); tag {
	case yamlStr, yamlInt, yamlFloat, yamlBool, yamlTimestamp:
		return k.Value, nil
	case yamlMerge:
		return "", unsupportedErr(FormatYAML, k.Line, k.Column, "merge keys (<<) are not supported")
	case yamlNull:
		return "", unsupportedErr(FormatYAML, k.Line, k.Column, "null mapping key")
	default:
		return "", unsupportedErr(FormatYAML, k.Line, k.Column, "mapping key with tag %s", tag)
	}
}

const yamlQuotedStyles = yaml.SingleQuotedStyle | yaml.DoubleQuotedStyle | yaml.LiteralStyle | yaml.FoldedStyle

func yamlScalar(y *yaml.Node) (*Node, error) {
	plain := y.Style&yamlQuotedStyles == 0
	explicit := y.Style&yaml.TaggedStyle != 0
	line, col := y.Line, y.Column
	v := y.Value
	switch tag := y.ShortTag(); tag {
	case yamlStr:
		// yaml.v3 leaves numbers it cannot hold in 64 bits (1e400, 1.5e999)
		// as strings; written unquoted they are numbers to a reader and to the
		// exact-decimal layer above.
		if plain && !explicit && validNumber(v) {
			return yamlNumber(v, line, col)
		}
		return &Node{Kind: String, Text: v, Line: line}, nil
	case yamlTimestamp:
		// Policies have no date type; the typed layer parses dates from
		// strings if it wants them.
		return &Node{Kind: String, Text: v, Line: line}, nil
	case yamlInt:
		if dec, ok := radixToDecimal(v); ok {
			return &Node{Kind: Number, Text: dec, Line: line}, nil
		}
		if !validNumber(v) || !isIntegerText(v) {
			return nil, syntaxErr(FormatYAML, line, col, "invalid integer %q", v)
		}
		return yamlNumber(v, line, col)
	case yamlFloat:
		if l := strings.ToLower(v); strings.Contains(l, "inf") || strings.Contains(l, "nan") {
			return nil, unsupportedErr(FormatYAML, line, col, "non-finite number %s", v)
		}
		if !validNumber(v) {
			return nil, syntaxErr(FormatYAML, line, col, "invalid float %q", v)
		}
		return yamlNumber(v, line, col)
	case yamlBool:
		switch strings.ToLower(v) {
		case "true":
			n := BoolNode(true)
			n.Line = line
			return n, nil
		case "false":
			n := BoolNode(false)
			n.Line = line
			return n, nil
		}
		return nil, unsupportedErr(FormatYAML, line, col, "boolean spelling %q (use true or false)", v)
	case yamlNull:
		return &Node{Kind: Null, Line: line}, nil
	case yamlMerge:
		return nil, unsupportedErr(FormatYAML, line, col, "merge keys (<<) are not supported")
	default:
		return nil, unsupportedErr(FormatYAML, line, col, "scalar tag %s", tag)
	}
}

// yamlNumber rejects integers with leading zeros: yaml.v3 reads 017 as octal
// 15 (YAML 1.1) while YAML 1.2 and humans read 17, and in a price list that
// ambiguity is worse than an error.
func yamlNumber(v string, line, col int) (*Node, error) {
	t := strings.TrimLeft(strings.ReplaceAll(v, "_", ""), "+-")
	if isIntegerText(t) && len(t) > 1 && t[0] == '0' {
		return nil, unsupportedErr(FormatYAML, line, col, "integer %s has a leading zero (octal?)", v)
	}
	return &Node{Kind: Number, Text: v, Line: line}, nil
}

// yamlPlainIsString reports whether s, written unquoted, decodes back to the
// same string, so that the encoder only quotes when it must.
func yamlPlainIsString(s string) bool {
	if s == "" {
		return false
	}
	y := &yaml.Node{Kind: yaml.ScalarNode, Value: s}
	return y.ShortTag() == yamlStr && !validNumber(s)
}

func encodeYAML(n *Node) (out []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			out, err = nil, fmt.Errorf("doctree: yaml encode: %v", r)
		}
	}()
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(toYAML(n)); err != nil {
		return nil, fmt.Errorf("doctree: yaml encode: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("doctree: yaml encode: %w", err)
	}
	return buf.Bytes(), nil
}

func yamlString(s string) *yaml.Node {
	y := &yaml.Node{Kind: yaml.ScalarNode, Tag: yamlStr, Value: s}
	if strings.Contains(s, "\n") {
		if !yamlLiteralSafe(s) {
			y.Style = yaml.DoubleQuotedStyle
		}
	} else if !yamlPlainIsString(s) {
		y.Style = yaml.DoubleQuotedStyle
	}
	return y
}

// yamlLiteralSafe limits block literals (which read best for multi-line
// descriptions) to text that yaml.v3 round-trips reliably; its emitter
// mangles edge cases such as leading blank lines or a lone "\n".
func yamlLiteralSafe(s string) bool {
	if s[0] == ' ' || s[0] == '\n' || s[0] == '\t' {
		return false
	}
	body := strings.TrimSuffix(s, "\n")
	if strings.HasSuffix(body, "\n") {
		return false
	}
	for _, line := range strings.Split(body, "\n") {
		if line == "" || strings.HasSuffix(line, " ") || strings.HasSuffix(line, "\t") {
			return false
		}
		for _, r := range line {
			if r == '\t' || (r < 0x20) || r == 0x7f || r == '\u0085' || r == '\u2028' || r == '\u2029' || r == '\ufeff' {
				return false
			}
		}
	}
	return true
}

func toYAML(n *Node) *yaml.Node {
	switch n.Kind {
	case Null:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: yamlNull, Value: "null"}
	case Bool:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: yamlBool, Value: strconv.FormatBool(n.Bool)}
	case Number:
		// No tag: yaml.v3 would otherwise add an explicit !!float to numbers
		// it cannot resolve itself (1e400), which is noise for readers.
		return &yaml.Node{Kind: yaml.ScalarNode, Value: numberFor(n.Text, FormatYAML)}
	case String:
		return yamlString(n.Text)
	case Map:
		y := &yaml.Node{Kind: yaml.MappingNode, Tag: yamlMap}
		for i, k := range n.Keys {
			y.Content = append(y.Content, yamlString(k), toYAML(n.Vals[i]))
		}
		return y
	case List:
		y := &yaml.Node{Kind: yaml.SequenceNode, Tag: yamlSeq}
		for _, it := range n.Items {
			y.Content = append(y.Content, toYAML(it))
		}
		return y
	}
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: yamlNull, Value: "null"}
}
