// Package problem renders errors as RFC 9457 problem details
// (application/problem+json) for the control-plane API.
//
// Handlers return a *Problem (possibly wrapped with %w) for errors the client
// should see; every other error becomes a generic 500 whose cause is logged,
// never sent. Install [ErrorHandler] as echo's HTTPErrorHandler so that
// *Problem, *echo.HTTPError (404, 405, 413, bind errors), context
// cancellation and unexpected errors all share one response shape.
package problem

import (
	"fmt"
	"net/http"
	"time"
)

// ContentType is the media type of a problem details document.
const ContentType = "application/problem+json"

// TypeBase prefixes the stable type URIs of Limitr's own problem types; see
// [Problem.WithType].
const TypeBase = "https://limitr.dev/problems/"

// StatusClientClosedRequest is the (non-standard, nginx) status recorded when
// the client went away before the response was written. The client never
// sees it; it keeps such requests apart from server errors in logs and metrics.
const StatusClientClosedRequest = 499

// Problem is an RFC 9457 problem details object. It implements error, so
// handlers and middleware can return it directly.
type Problem struct {
	// Type is a URI reference identifying the problem type. "about:blank"
	// means the problem has no semantics beyond the HTTP status.
	Type string `json:"type"`
	// Title is a short, human-readable summary of the problem type.
	Title string `json:"title"`
	// Status is the HTTP status code.
	Status int `json:"status"`
	// Detail explains this occurrence of the problem to the client.
	Detail string `json:"detail,omitempty"`
	// Instance identifies this occurrence; ErrorHandler fills it with the
	// request path when empty.
	Instance string `json:"instance,omitempty"`
	// Errors lists the invalid fields of a validation problem.
	Errors []FieldError `json:"errors,omitempty"`
	// RequestID is the id of the request, to quote to support.
	RequestID string `json:"request_id,omitempty"`
	// RetryAfter, when positive, is sent as a Retry-After header in whole
	// seconds (rounded up).
	RetryAfter time.Duration `json:"-"`
}

// FieldError is one invalid field of a request.
type FieldError struct {
	// Path locates the field in the request document, e.g. "plans[0].limits.ai_tokens".
	Path string `json:"path"`
	// Message says what is wrong with it.
	Message string `json:"message"`
}

// New returns a problem of type "about:blank" with the standard status text
// as its title.
func New(status int, detail string) *Problem {
	return &Problem{
		Type:   "about:blank",
		Title:  title(status),
		Status: status,
		Detail: detail,
	}
}

// Validation returns a 422 problem listing the invalid fields.
func Validation(detail string, errs []FieldError) *Problem {
	p := New(http.StatusUnprocessableEntity, detail).WithType("validation-error")
	p.Errors = errs
	return p
}

// WithType sets the problem type to TypeBase+slug and returns p, so that
// clients can tell problems with the same status apart.
func (p *Problem) WithType(slug string) *Problem {
	p.Type = TypeBase + slug
	return p
}

// Error implements error.
func (p *Problem) Error() string {
	if p.Detail == "" {
		return fmt.Sprintf("%d %s", p.Status, p.Title)
	}
	return fmt.Sprintf("%d %s: %s", p.Status, p.Title, p.Detail)
}

func title(status int) string {
	if status == StatusClientClosedRequest {
		return "Client Closed Request"
	}
	if t := http.StatusText(status); t != "" {
		return t
	}
	return fmt.Sprintf("HTTP %d", status)
}
