package validation

import (
	"fmt"
	"strings"

	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/wire"
)

// MaxDecimalText bounds the text of a decimal an SDK sends.
const MaxDecimalText = 64

// InstanceID checks an SDK instance id (usage batches, event batches, lease requests):
// 1 to wire.MaxInstance characters of [A-Za-z0-9._-].
func InstanceID(id string) *FieldError {
	if id == "" {
		return &FieldError{Path: "instance_id", Message: "is required"}
	}
	if len(id) > wire.MaxInstance {
		return &FieldError{Path: "instance_id", Message: fmt.Sprintf("is longer than %d characters", wire.MaxInstance)}
	}
	for i := 0; i < len(id); i++ {
		ch := id[i]
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '.' || ch == '_' || ch == '-') {
			return &FieldError{Path: "instance_id", Message: "may contain only letters, digits, '.', '_' and '-'"}
		}
	}
	return nil
}

// ExactDecimal parses an exact decimal as the SDK writes it ("12.5", "-3"): no
// exponent, at most 19 fractional digits (after dropping trailing zeros) and 19
// integer digits, so nothing is rounded.
func ExactDecimal(path, s string) (num.Dec, *FieldError) {
	bad := func(msg string) (num.Dec, *FieldError) {
		return num.Zero, &FieldError{Path: path, Message: msg}
	}
	if s == "" {
		return bad("is required: an exact decimal written as a string, such as \"12.5\"")
	}
	if len(s) > MaxDecimalText {
		return bad(fmt.Sprintf("is longer than %d characters", MaxDecimalText))
	}
	if strings.IndexByte(s, 'e') >= 0 || strings.IndexByte(s, 'E') >= 0 { // faster than ContainsAny
		return bad(fmt.Sprintf("must be a plain decimal such as \"12.5\" (no exponent), got %q", s))
	}
	if i := strings.IndexByte(s, '.'); i >= 0 && len(strings.TrimRight(s[i+1:], "0")) > 19 {
		return bad(fmt.Sprintf("has more than 19 decimal places, got %q", s))
	}
	d, err := num.Parse(s)
	if err != nil {
		return bad(fmt.Sprintf("must be an exact decimal such as \"12.5\", got %q", s))
	}
	return d, nil
}
