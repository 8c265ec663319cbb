package doctree

import (
	"bytes"
	"encoding/json"
	"errors"
	"regexp"
)

var (
	tomlHeaderLine = regexp.MustCompile(`^\[\[?[ \t]*[A-Za-z0-9_"'-][A-Za-z0-9_."' -]*\]\]?[ \t]*(?:#[^\n]*)?\r?(?:\n|$)`)
	tomlishLine    = regexp.MustCompile(`(?m)^[ \t]*(?:\[\[?[ \t]*[A-Za-z0-9_."' -]+[ \t]*\]\]?|[A-Za-z0-9_"'.-][A-Za-z0-9_"'. -]*=)`)
	yamlishLine    = regexp.MustCompile(`(?m)^[ \t]*(?:-[ \t]|[^\s#:=\[\]{}][^:=]*:(?:[ \t]|$)|---)`)
)

// Detect guesses the format of data:
//
//  1. Input whose first significant byte (after a UTF-8 BOM and whitespace) is
//     '{' or '[' is JSON if it is valid JSON. A '[' that is not valid JSON
//     is TOML if the document parses as TOML or its first line looks like a
//     table header (`[policy]`, `[[plans]]`); otherwise it stays JSON, so
//     that a broken JSON file gets JSON error messages.
//  2. Otherwise, input that parses as TOML and contains a `[section]` or
//     `key = value` line is TOML.
//  3. Otherwise, input that parses as YAML is YAML.
//  4. Input that parses as neither is attributed to whichever of TOML and
//     YAML it has more characteristic lines of (ties go to YAML), so the
//     error message comes from the parser the author most likely targeted.
//
// Detect never returns FormatUnknown; empty input is YAML (a null document).
func Detect(data []byte) Format {
	trimmed := bytes.TrimLeft(bytes.TrimPrefix(data, utf8BOM), " \t\r\n")
	if len(trimmed) > 0 && (trimmed[0] == '{' || trimmed[0] == '[') {
		if json.Valid(trimmed) {
			return FormatJSON
		}
		if trimmed[0] == '[' && (tomlHeaderLine.Match(trimmed) || parsesAs(data, FormatTOML)) {
			return FormatTOML
		}
		return FormatJSON
	}
	tomlLines := len(tomlishLine.FindAllIndex(data, -1))
	if tomlLines > 0 && parsesAs(data, FormatTOML) {
		return FormatTOML
	}
	if parsesAs(data, FormatYAML) {
		return FormatYAML
	}
	if tomlLines > len(yamlishLine.FindAllIndex(data, -1)) {
		return FormatTOML
	}
	return FormatYAML
}

func parsesAs(data []byte, f Format) bool {
	_, err := Decode(data, f)
	// Unsupported content (a NaN, an alias) still proves the syntax.
	return err == nil || errors.Is(err, ErrUnsupported)
}
