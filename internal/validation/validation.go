// Package validation is the one shape of "this input is invalid" shared by the
// control plane's domain services: a list of problems, each naming the offending
// field or document path. The HTTP layer turns it into a 422 problem listing them.
package validation

import (
	"errors"
	"fmt"
	"strings"
)

// ErrInvalid matches every *Error with errors.Is.
var ErrInvalid = errors.New("invalid input")

// FieldError is one problem with one field: Path names it as the caller sent it
// ("refs[2]", "deltas[0].units", "policy.plans.free").
type FieldError struct {
	Path    string `json:"path"`
	Message string `json:"message"`
}

// Error is an input that failed validation: a title for the whole and every problem.
type Error struct {
	Title  string
	Fields []FieldError
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Title)
	for i, f := range e.Fields {
		if i == 3 {
			fmt.Fprintf(&b, "; and %d more", len(e.Fields)-i)
			break
		}
		fmt.Fprintf(&b, "; %s: %s", f.Path, f.Message)
	}
	return b.String()
}

// Is makes every *Error match ErrInvalid.
func (e *Error) Is(target error) bool { return target == ErrInvalid }

// New returns an *Error with one problem.
func New(title, path, message string) *Error {
	return &Error{Title: title, Fields: []FieldError{{Path: path, Message: message}}}
}

// Errors collects problems while an input is checked.
type Errors struct {
	fields []FieldError
}

// Add records a problem with the field at path.
func (e *Errors) Add(path, message string) {
	e.fields = append(e.fields, FieldError{Path: path, Message: message})
}

// Addf records a problem with a formatted message.
func (e *Errors) Addf(path, format string, args ...any) {
	e.Add(path, fmt.Sprintf(format, args...))
}

// AddField records fe when it is not nil (checks return *FieldError for "fine").
func (e *Errors) AddField(fe *FieldError) {
	if fe != nil {
		e.fields = append(e.fields, *fe)
	}
}

// Len is the number of problems so far.
func (e *Errors) Len() int { return len(e.fields) }

// Err is nil without problems, else an *Error titled title.
func (e *Errors) Err(title string) error {
	if len(e.fields) == 0 {
		return nil
	}
	return &Error{Title: title, Fields: e.fields}
}
