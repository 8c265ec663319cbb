package policies

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// ErrInvalidPolicy is wrapped by every error that rejects a document.
var ErrInvalidPolicy = errors.New("invalid policy")

// Problem is one thing wrong with a document, located by its path
// (for example policy.plans.free.entitlements.seats.limit.credit).
type Problem struct {
	Path    string `json:"path"`
	Message string `json:"message"`
	Line    int    `json:"line,omitempty"`
}

func (p Problem) String() string {
	if p.Path == "" {
		return p.Message
	}
	return p.Path + ": " + p.Message
}

// ValidationError lists every problem found in a document, so a user fixes them all
// in one pass instead of one per run.
type ValidationError struct {
	Problems []Problem
}

func (e *ValidationError) Error() string {
	if len(e.Problems) == 1 {
		return "invalid policy: " + e.Problems[0].String()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "invalid policy: %d problems:", len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("\n  ")
		b.WriteString(p.String())
	}
	return b.String()
}

// Is lets callers test errors.Is(err, ErrInvalidPolicy).
func (e *ValidationError) Is(target error) bool { return target == ErrInvalidPolicy }

type problems struct{ list []Problem }

func (ps *problems) add(path string, format string, args ...any) {
	ps.list = append(ps.list, Problem{Path: path, Message: fmt.Sprintf(format, args...)})
}

func (ps *problems) err() error {
	if len(ps.list) == 0 {
		return nil
	}
	return &ValidationError{Problems: ps.list}
}

var plainKey = regexp.MustCompile(`^[A-Za-z0-9_\-]+$`)

// join appends a key to a document path, quoting keys that would make the path ambiguous.
func join(path, key string) string {
	if !plainKey.MatchString(key) {
		key = fmt.Sprintf("[%q]", key)
		return path + key
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

func index(path string, i int) string { return fmt.Sprintf("%s[%d]", path, i) }
