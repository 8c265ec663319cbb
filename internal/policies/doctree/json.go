package doctree

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"unicode/utf8"
)

type jsonDecoder struct {
	data []byte
	dec  *json.Decoder
	// Line tracking is incremental so that locating every token stays
	// linear in the input size.
	lineOff int
	line    int
}

func decodeJSON(data []byte) (n *Node, err error) {
	d := &jsonDecoder{data: data, line: 1}
	d.dec = json.NewDecoder(bytes.NewReader(data))
	d.dec.UseNumber()
	tok, err := d.token()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, syntaxErr(FormatJSON, 0, 0, "empty document")
		}
		return nil, err
	}
	n, err = d.value(tok, 0)
	if err != nil {
		return nil, err
	}
	// Token() happily reads a second value, so trailing garbage has to be
	// rejected explicitly.
	off := d.dec.InputOffset()
	if _, err := d.dec.Token(); !errors.Is(err, io.EOF) {
		rest := bytes.TrimLeft(data[off:], " \t\r\n")
		line := d.lineAt(int(off) + len(data[off:]) - len(rest))
		return nil, syntaxErr(FormatJSON, line, 0, "unexpected data after top-level value")
	}
	return n, nil
}

func (d *jsonDecoder) lineAt(off int) int {
	if off > len(d.data) {
		off = len(d.data)
	}
	if off < d.lineOff {
		d.lineOff, d.line = 0, 1
	}
	d.line += bytes.Count(d.data[d.lineOff:off], []byte{'\n'})
	d.lineOff = off
	return d.line
}

// posAt locates an error. Unlike lineAt it also computes the column; it is
// only used once per decode, so rescanning from the start is fine.
func (d *jsonDecoder) posAt(off int) (line, col int) {
	off = min(max(off, 0), len(d.data))
	line = 1 + bytes.Count(d.data[:off], []byte{'\n'})
	col = off - bytes.LastIndexByte(d.data[:off], '\n')
	return line, col
}

func (d *jsonDecoder) token() (json.Token, error) {
	tok, err := d.dec.Token()
	if err == nil {
		return tok, nil
	}
	if errors.Is(err, io.EOF) {
		return nil, err
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		line, col := d.posAt(int(se.Offset))
		return nil, syntaxErr(FormatJSON, line, col, "%s", se.Error())
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return nil, syntaxErr(FormatJSON, d.lineAt(len(d.data)), 0, "unexpected end of input")
	}
	return nil, syntaxErr(FormatJSON, d.lineAt(int(d.dec.InputOffset())), 0, "%s", err.Error())
}

// next reads a token that must exist: EOF inside a value is a truncation.
func (d *jsonDecoder) next() (json.Token, error) {
	tok, err := d.token()
	if errors.Is(err, io.EOF) {
		return nil, syntaxErr(FormatJSON, d.lineAt(len(d.data)), 0, "unexpected end of input")
	}
	return tok, err
}

func (d *jsonDecoder) value(tok json.Token, depth int) (*Node, error) {
	line := d.lineAt(int(d.dec.InputOffset()))
	if depth > maxDepth {
		return nil, unsupportedErr(FormatJSON, line, 0, "nesting deeper than %d", maxDepth)
	}
	switch t := tok.(type) {
	case nil:
		return &Node{Kind: Null, Line: line}, nil
	case bool:
		n := BoolNode(t)
		n.Line = line
		return n, nil
	case json.Number:
		return &Node{Kind: Number, Text: string(t), Line: line}, nil
	case string:
		return &Node{Kind: String, Text: t, Line: line}, nil
	case json.Delim:
		switch t {
		case '{':
			n := &Node{Kind: Map, Line: line}
			seen := map[string]struct{}{}
			for {
				kt, err := d.next()
				if err != nil {
					return nil, err
				}
				if kt == json.Delim('}') {
					return n, nil
				}
				key, ok := kt.(string)
				if !ok {
					// Token() validates syntax, so this is unreachable in
					// practice; keep it an error rather than a panic.
					return nil, syntaxErr(FormatJSON, d.lineAt(int(d.dec.InputOffset())), 0, "object key must be a string")
				}
				kline := d.lineAt(int(d.dec.InputOffset()))
				if _, dup := seen[key]; dup {
					return nil, syntaxErr(FormatJSON, kline, 0, "duplicate key %s", strconv.Quote(key))
				}
				seen[key] = struct{}{}
				vt, err := d.next()
				if err != nil {
					return nil, err
				}
				v, err := d.value(vt, depth+1)
				if err != nil {
					return nil, err
				}
				n.Keys = append(n.Keys, key)
				n.Vals = append(n.Vals, v)
			}
		case '[':
			n := &Node{Kind: List, Line: line, Items: []*Node{}}
			for {
				it, err := d.next()
				if err != nil {
					return nil, err
				}
				if it == json.Delim(']') {
					return n, nil
				}
				v, err := d.value(it, depth+1)
				if err != nil {
					return nil, err
				}
				n.Items = append(n.Items, v)
			}
		}
	}
	return nil, syntaxErr(FormatJSON, line, 0, "unexpected token %v", tok)
}

func encodeJSON(n *Node) []byte {
	var b bytes.Buffer
	writeJSON(&b, n, 0)
	b.WriteByte('\n')
	return b.Bytes()
}

func writeJSONIndent(b *bytes.Buffer, depth int) {
	b.WriteByte('\n')
	for range depth {
		b.WriteString("  ")
	}
}

func writeJSON(b *bytes.Buffer, n *Node, depth int) {
	switch n.Kind {
	case Null:
		b.WriteString("null")
	case Bool:
		b.WriteString(strconv.FormatBool(n.Bool))
	case Number:
		b.WriteString(numberFor(n.Text, FormatJSON))
	case String:
		writeJSONString(b, n.Text)
	case Map:
		if len(n.Keys) == 0 {
			b.WriteString("{}")
			return
		}
		b.WriteByte('{')
		for i, k := range n.Keys {
			if i > 0 {
				b.WriteByte(',')
			}
			writeJSONIndent(b, depth+1)
			writeJSONString(b, k)
			b.WriteString(": ")
			writeJSON(b, n.Vals[i], depth+1)
		}
		writeJSONIndent(b, depth)
		b.WriteByte('}')
	case List:
		if len(n.Items) == 0 {
			b.WriteString("[]")
			return
		}
		b.WriteByte('[')
		for i, it := range n.Items {
			if i > 0 {
				b.WriteByte(',')
			}
			writeJSONIndent(b, depth+1)
			writeJSON(b, it, depth+1)
		}
		writeJSONIndent(b, depth)
		b.WriteByte(']')
	}
}

// writeJSONString escapes only what JSON requires (plus U+2028/2029 for
// JavaScript safety); encoding/json's HTML escaping would make policies with
// "<" or "&" in descriptions needlessly hard to read.
func writeJSONString(b *bytes.Buffer, s string) {
	const hex = "0123456789abcdef"
	b.WriteByte('"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
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
			case c < 0x20:
				b.WriteString(`\u00`)
				b.WriteByte(hex[c>>4])
				b.WriteByte(hex[c&0xf])
			default:
				b.WriteByte(c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch r {
		case '\u2028':
			b.WriteString(`\u2028`)
		case '\u2029':
			b.WriteString(`\u2029`)
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	b.WriteByte('"')
}
