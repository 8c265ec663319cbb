package validation

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// ErrMalformed is input that cannot be read at all (not JSON, truncated, trailing
// data), as opposed to readable input with invalid fields (*Error).
var ErrMalformed = errors.New("malformed input")

// DecodeJSON decodes one JSON value strictly: unknown fields and wrong types are an
// *Error naming the field; syntax errors, an early end and trailing data wrap
// ErrMalformed.
func DecodeJSON(data []byte, dst any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return jsonError(err)
	}
	if dec.More() {
		return fmt.Errorf("%w: request body has data after the JSON value", ErrMalformed)
	}
	var extra json.RawMessage
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: request body has data after the JSON value", ErrMalformed)
	}
	return nil
}

func jsonError(err error) error {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	var tpe *time.ParseError
	switch {
	case errors.As(err, &syntax):
		return fmt.Errorf("%w: malformed JSON at byte %d: %v", ErrMalformed, syntax.Offset, err)
	case errors.As(err, &typ):
		field := typ.Field
		if field == "" {
			field = "(body)"
		}
		return New("a field has the wrong type", field, fmt.Sprintf("must be %s, got %s", typ.Type, typ.Value))
	case errors.As(err, &tpe):
		return fmt.Errorf("%w: malformed timestamp: times are RFC 3339, such as 2025-01-31T00:00:00Z: %v", ErrMalformed, err)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		// encoding/json has no typed error for this one.
		name := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return New("the body has an unknown field", name, "unknown field")
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
		return fmt.Errorf("%w: malformed JSON: the body ends early", ErrMalformed)
	}
	return fmt.Errorf("%w: malformed JSON: %v", ErrMalformed, err)
}
