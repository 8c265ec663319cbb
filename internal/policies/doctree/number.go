package doctree

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"
)

// decimalNumber is the union of the decimal number spellings the three
// formats accept: optional sign, digits with underscores, optional fraction
// (possibly bare "1." or ".5") and optional exponent. Radix-prefixed integers
// never reach the tree as such (they are converted to decimal on decode).
var decimalNumber = regexp.MustCompile(`^[+-]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)(?:[eE][+-]?[0-9][0-9_]*)?$`)

func validNumber(s string) bool {
	if !decimalNumber.MatchString(s) {
		return false
	}
	// Underscores are spelling, never digits: "_" alone or "1e_" must fail.
	m := strings.ReplaceAll(s, "_", "")
	return decimalNumber.MatchString(m)
}

// canonicalNumber rewrites a valid number into the strict common subset of
// JSON, YAML and TOML: no underscores, no '+' signs, no redundant leading
// zeros, lowercase exponent, digits on both sides of a decimal point. It keeps
// the distinction between 1, 1.0 and 1e0 because the source did.
func canonicalNumber(s string) string {
	s = strings.ReplaceAll(s, "_", "")
	neg := false
	switch {
	case strings.HasPrefix(s, "+"):
		s = s[1:]
	case strings.HasPrefix(s, "-"):
		neg = true
		s = s[1:]
	}
	mant, exp, hasExp := strings.Cut(strings.ToLower(s), "e")
	ip, fp, hasDot := strings.Cut(mant, ".")
	ip = strings.TrimLeft(ip, "0")
	if ip == "" {
		ip = "0"
	}
	var b strings.Builder
	if neg {
		b.WriteByte('-')
	}
	b.WriteString(ip)
	if hasDot {
		if fp == "" {
			fp = "0"
		}
		b.WriteByte('.')
		b.WriteString(fp)
	}
	if hasExp {
		b.WriteByte('e')
		switch {
		case strings.HasPrefix(exp, "+"):
			exp = exp[1:]
		case strings.HasPrefix(exp, "-"):
			b.WriteByte('-')
			exp = exp[1:]
		}
		exp = strings.TrimLeft(exp, "0")
		if exp == "" {
			exp = "0"
		}
		b.WriteString(exp)
	}
	return b.String()
}

func isIntegerText(s string) bool {
	return !strings.ContainsAny(s, ".eE")
}

// radixToDecimal converts 0x/0o/0b integers (optionally signed, with
// underscores) to decimal text; ok is false if s has no radix prefix or does
// not fit in 64 bits.
func radixToDecimal(s string) (string, bool) {
	t := strings.ReplaceAll(s, "_", "")
	body := strings.TrimLeft(t, "+-")
	if len(body) < 3 || body[0] != '0' || !strings.ContainsRune("xXoObB", rune(body[1])) {
		return "", false
	}
	if v, err := strconv.ParseInt(t, 0, 64); err == nil {
		return strconv.FormatInt(v, 10), true
	}
	if v, err := strconv.ParseUint(strings.TrimPrefix(t, "+"), 0, 64); err == nil {
		return strconv.FormatUint(v, 10), true
	}
	return "", false
}

var (
	jsonNumber      = regexp.MustCompile(`^-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?$`)
	tomlNumber      = regexp.MustCompile(`^[+-]?(?:0|[1-9](?:_?[0-9])*)(?:\.[0-9](?:_?[0-9])*)?(?:[eE][+-]?[0-9](?:_?[0-9])*)?$`)
	yamlPlainNumber = regexp.MustCompile(`^[+-]?(?:0|[1-9][0-9_]*)(?:\.[0-9][0-9_]*)?(?:[eE][+-]?[0-9]+)?$`)
)

// numberFor picks the spelling of a number in format f: the source text when
// f accepts it verbatim (so "100_000" stays readable in YAML and TOML),
// otherwise the canonical form, which every format accepts.
func numberFor(text string, f Format) string {
	switch f {
	case FormatJSON:
		if jsonNumber.MatchString(text) {
			return text
		}
	case FormatTOML:
		if tomlNumber.MatchString(text) {
			return text
		}
	case FormatYAML:
		if yamlPlainNumber.MatchString(text) {
			return text
		}
	}
	return canonicalNumber(text)
}

// tomlNumberRange rejects numbers TOML decoders cannot hold: integers are
// int64 and floats float64 by the TOML spec.
func tomlNumberRange(text string) error {
	c := canonicalNumber(text)
	if isIntegerText(c) {
		if _, err := strconv.ParseInt(c, 10, 64); err != nil {
			return fmt.Errorf("%w: toml: integer %s does not fit in 64 bits", ErrUnsupported, text)
		}
		return nil
	}
	f, err := strconv.ParseFloat(c, 64)
	if err != nil || math.IsInf(f, 0) {
		return fmt.Errorf("%w: toml: float %s is out of range", ErrUnsupported, text)
	}
	return nil
}

// checkEncodable rejects trees no encoder could write faithfully, so that the
// format-specific encoders can assume well-formed input.
func checkEncodable(n *Node, depth int) error {
	if n == nil {
		return errors.New("doctree: encode: nil node in tree")
	}
	if depth > maxDepth {
		return fmt.Errorf("%w: doctree: encode: nesting deeper than %d", ErrUnsupported, maxDepth)
	}
	switch n.Kind {
	case Null, Bool:
	case Number:
		if !validNumber(n.Text) {
			return fmt.Errorf("doctree: encode: invalid number text %q", n.Text)
		}
	case String:
		if !utf8.ValidString(n.Text) {
			return fmt.Errorf("doctree: encode: string %q is not valid UTF-8", n.Text)
		}
	case Map:
		if len(n.Keys) != len(n.Vals) {
			return errors.New("doctree: encode: map with mismatched Keys and Vals")
		}
		seen := make(map[string]struct{}, len(n.Keys))
		for i, k := range n.Keys {
			if !utf8.ValidString(k) {
				return fmt.Errorf("doctree: encode: key %q is not valid UTF-8", k)
			}
			if _, dup := seen[k]; dup {
				return fmt.Errorf("doctree: encode: duplicate key %q", k)
			}
			seen[k] = struct{}{}
			if err := checkEncodable(n.Vals[i], depth+1); err != nil {
				return err
			}
		}
	case List:
		for _, it := range n.Items {
			if err := checkEncodable(it, depth+1); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("doctree: encode: invalid kind %d", n.Kind)
	}
	return nil
}

// maxDepth matches encoding/json's nesting limit; it keeps hostile documents
// (or alias expansion) from exhausting the stack in the recursive walkers.
const maxDepth = 10000
