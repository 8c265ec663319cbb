package stripe

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	stripego "github.com/stripe/stripe-go/v76"
)

// Classes of Client errors, for errors.Is. Every *Error is exactly one of them; the
// caller's own context ending is neither (the error wraps context.Canceled or
// context.DeadlineExceeded instead), so the job queue decides.
var (
	// ErrRetryable: the same call, with the same idempotency key, may succeed later:
	// rate limits and lock timeouts (429), a concurrent request with the same key (409),
	// Stripe's 5xx, network errors and the HTTP client's own timeout.
	ErrRetryable = errors.New("stripe: retryable error")
	// ErrPermanent: repeating the call cannot help: a bad or revoked key (401), an invalid
	// request (400, 404), the idempotency key reused with other parameters
	// (idempotency_error), or input this package refused before calling Stripe.
	ErrPermanent = errors.New("stripe: permanent error")
	// ErrInvalidInput: the call's input was refused before anything was sent. Such
	// errors are also ErrPermanent.
	ErrInvalidInput = errors.New("invalid input")
)

// Error is a failed Client call.
type Error struct {
	// Op is the Client method, such as "CreateInvoice".
	Op string
	// HTTPStatus is the response's status code, or 0 if no response arrived.
	HTTPStatus int
	// Code is Stripe's error code ("resource_missing", "rate_limit", ...), if any.
	Code string
	// Type is Stripe's error type ("invalid_request_error", "api_error",
	// "idempotency_error", ...), if any.
	Type string
	// Param names the request parameter Stripe blamed, if any.
	Param string
	// RequestID is Stripe's Request-Id, to quote to Stripe's support.
	RequestID string
	// Message is Stripe's message, or the transport's, with the secret key removed.
	Message string
	// Retryable tells ErrRetryable from ErrPermanent.
	Retryable bool
	// Err is the cause: a *stripego.Error, a transport error or ErrInvalidInput.
	Err error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("stripe: ")
	b.WriteString(e.Op)
	b.WriteString(": ")
	if e.HTTPStatus != 0 {
		b.WriteString(strconv.Itoa(e.HTTPStatus))
		b.WriteByte(' ')
	}
	if e.Type != "" {
		b.WriteString(e.Type)
		b.WriteByte(' ')
	}
	if e.Code != "" {
		b.WriteString(e.Code)
		b.WriteByte(' ')
	}
	b.WriteString(e.Message)
	if e.Param != "" {
		b.WriteString(" (param ")
		b.WriteString(e.Param)
		b.WriteByte(')')
	}
	if e.RequestID != "" {
		b.WriteString(" [request ")
		b.WriteString(e.RequestID)
		b.WriteByte(']')
	}
	return b.String()
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Is matches ErrRetryable or ErrPermanent according to the error's class.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrRetryable:
		return e.Retryable
	case ErrPermanent:
		return !e.Retryable
	}
	return false
}

// IsRetryable reports whether err is a Client error worth retrying with the same
// idempotency key. It is false for nil, for permanent errors and for the caller's own
// context ending.
func IsRetryable(err error) bool { return errors.Is(err, ErrRetryable) }

func invalidInput(op, format string, args ...any) error {
	return &Error{Op: op, Message: fmt.Sprintf(format, args...), Err: ErrInvalidInput}
}

// classify turns what stripe-go returned into an *Error, except for the caller's own
// context ending. status is the HTTP status seen by the transport (0 if none): it
// classifies responses that were not Stripe's JSON errors, such as a proxy's HTML 502.
func (c *Client) classify(ctx context.Context, op string, status int, err error) error {
	if err == nil {
		return nil
	}
	var se *stripego.Error
	if errors.As(err, &se) {
		e := &Error{
			Op:         op,
			HTTPStatus: se.HTTPStatusCode,
			Code:       string(se.Code),
			Type:       string(se.Type),
			Param:      se.Param,
			RequestID:  se.RequestID,
			Message:    c.redact(se.Msg),
			Err:        se,
		}
		shouldRetry := ""
		if se.LastResponse != nil {
			shouldRetry = se.LastResponse.Header.Get("Stripe-Should-Retry")
		}
		e.Retryable = retryableStatus(e.HTTPStatus, shouldRetry)
		return e
	}
	// The HTTP client's own Timeout also wraps context.DeadlineExceeded, so ask the
	// caller's context rather than the error whether the caller gave up.
	if ctxErr := ctx.Err(); ctxErr != nil && errors.Is(err, ctxErr) {
		return fmt.Errorf("stripe: %s: %w", op, err)
	}
	e := &Error{Op: op, HTTPStatus: status, Message: c.redact(err.Error()), Err: err}
	switch {
	case status >= 400:
		e.Retryable = retryableStatus(status, "")
	case status != 0:
		// A success status whose body stripe-go could not decode. Retrying with the same
		// key replays the saved response, but a proxy may have garbled it.
		e.Retryable = true
	default:
		e.Retryable = !permanentTransportError(err)
	}
	return e
}

// retryableStatus classifies an HTTP error status. Stripe-Should-Retry: true wins (Stripe
// sends it for lock timeouts); "false" is not taken as final for 5xx, because Stripe
// replays a saved 500 for the key's 24 hours and a retry after that runs afresh.
func retryableStatus(status int, shouldRetry string) bool {
	if shouldRetry == "true" {
		return true
	}
	switch {
	case status == http.StatusConflict: // idempotency_key_in_use: the same key is running
		return true
	case status == http.StatusTooManyRequests: // rate_limit, lock_timeout
		return true
	case status == http.StatusRequestTimeout:
		return true
	case status >= 500:
		return true
	}
	return false
}

// permanentTransportError picks the transport failures that a retry cannot fix because
// they come from configuration (the same list stripe-go keeps for its own retries).
func permanentTransportError(err error) bool {
	var ue *url.Error
	if errors.As(err, &ue) {
		msg := ue.Err.Error()
		if strings.Contains(msg, "unsupported protocol scheme") || strings.Contains(msg, "stopped after") && strings.Contains(msg, "redirects") {
			return true
		}
	}
	var unknownAuthority x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	return errors.As(err, &unknownAuthority) || errors.As(err, &hostname) || errors.As(err, &invalid)
}
