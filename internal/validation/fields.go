package validation

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// MaxIDLength bounds caller-chosen identifiers (customer ids, entitlement names).
const MaxIDLength = 256

// ID checks a caller-chosen identifier: required, at most MaxIDLength bytes, and free
// of control characters and '/', so it can appear in a URL path.
func ID(path, v string) *FieldError {
	switch {
	case v == "":
		return &FieldError{Path: path, Message: "is required"}
	case len(v) > MaxIDLength:
		return &FieldError{Path: path, Message: fmt.Sprintf("is longer than %d bytes", MaxIDLength)}
	case strings.ContainsAny(v, "\x00\r\n\t/"):
		return &FieldError{Path: path, Message: "must not contain control characters or '/'"}
	}
	return Text(path, v, MaxIDLength)
}

// Text checks free text: at most max bytes of UTF-8 without control characters.
func Text(path, v string, max int) *FieldError {
	switch {
	case len(v) > max:
		return &FieldError{Path: path, Message: fmt.Sprintf("is longer than %d bytes", max)}
	case !utf8.ValidString(v):
		return &FieldError{Path: path, Message: "is not valid UTF-8"}
	case strings.IndexFunc(v, unicode.IsControl) >= 0:
		return &FieldError{Path: path, Message: "must not contain control characters"}
	}
	return nil
}

// Required checks a name that must be present: ID's rules without the '/' ban on
// names that never appear in paths (usage records name customers by id or alt id).
func Required(path, v string) *FieldError {
	if v == "" {
		return &FieldError{Path: path, Message: "is required"}
	}
	return Text(path, v, MaxIDLength)
}

// Time parses an RFC 3339 timestamp, in UTC, truncated to the microseconds Postgres
// keeps.
func Time(path, v string) (time.Time, *FieldError) {
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return time.Time{}, &FieldError{Path: path, Message: fmt.Sprintf("must be an RFC 3339 timestamp such as 2025-01-31T00:00:00Z, got %q", v)}
	}
	t = t.UTC()
	if t.Year() < 1 || t.Year() > 9999 {
		return time.Time{}, &FieldError{Path: path, Message: "is out of range"}
	}
	return t.Truncate(time.Microsecond), nil
}

// JSONObject checks a free-form JSON object (customer metadata, an invoice seller): an
// object of at most max bytes, without NUL characters, which Postgres' jsonb refuses.
// It returns the object without surrounding space.
func JSONObject(path string, raw json.RawMessage, max int) (json.RawMessage, *FieldError) {
	t := bytes.TrimSpace(raw)
	if len(t) > max {
		return nil, &FieldError{Path: path, Message: fmt.Sprintf("is larger than %d bytes", max)}
	}
	var m map[string]any
	if len(t) == 0 || t[0] != '{' || json.Unmarshal(t, &m) != nil {
		return nil, &FieldError{Path: path, Message: "must be a JSON object"}
	}
	if bytes.Contains(t, []byte(`\u0000`)) {
		return nil, &FieldError{Path: path, Message: "must not contain NUL characters"}
	}
	return json.RawMessage(t), nil
}
