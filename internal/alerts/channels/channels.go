// Package channels delivers one alert message to one destination: Slack (bot
// token or incoming webhook), email over SMTP, or a signed webhook. It is
// self-contained: it knows nothing of the control plane and defines its own
// types. Failures are *DeliveryError values that say whether a retry can help.
package channels

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Message is what every channel renders.
type Message struct {
	DeliveryID string          `json:"delivery_id"` // unique per (alert, channel): idempotency / Message-ID / webhook-id
	Title      string          `json:"title"`
	Text       string          `json:"text"`             // plain text summary
	Fields     []Field         `json:"fields,omitempty"` // label/value pairs (customer, plan, entitlement, value/limit)
	Link       string          `json:"link,omitempty"`   // optional URL (the customer in the dashboard)
	OccurredAt time.Time       `json:"occurred_at"`
	Data       json.RawMessage `json:"data,omitempty"` // the full event, for webhooks
}

// Field is one label/value pair of a Message.
type Field struct {
	Label string `json:"label"`
	Value string `json:"value"`
}

// Validate checks what every channel needs from a message.
func (m Message) Validate() error {
	if strings.TrimSpace(m.DeliveryID) == "" {
		return fieldError("message.delivery_id", "is required")
	}
	if strings.TrimSpace(m.Title) == "" && strings.TrimSpace(m.Text) == "" {
		return fieldError("message.title", "title or text is required")
	}
	if len(m.Data) > 0 && !json.Valid(m.Data) {
		return fieldError("message.data", "must be valid JSON")
	}
	return nil
}

// Sender is implemented by every channel.
type Sender interface {
	Send(ctx context.Context, m Message) error
}

var (
	_ Sender = Slack{}
	_ Sender = Email{}
	_ Sender = Webhook{}
)

// Sentinels for errors.Is on a *DeliveryError.
var (
	ErrRetryable = errors.New("retryable delivery failure")
	ErrPermanent = errors.New("permanent delivery failure")
)

// DeliveryError is the error of a failed delivery. It never carries secrets.
type DeliveryError struct {
	Channel    string        // "slack", "email", "webhook"
	Status     int           // HTTP status or SMTP reply code, 0 if none
	RetryAfter time.Duration // a hint from the destination (Slack 429, webhook Retry-After)
	Retryable  bool
	Err        error
}

func (e *DeliveryError) Error() string {
	kind := "permanent"
	if e.Retryable {
		kind = "retryable"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s delivery failure", e.Channel, kind)
	if e.Status != 0 {
		fmt.Fprintf(&b, " (status %d)", e.Status)
	}
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, ", retry after %s", e.RetryAfter)
	}
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	return b.String()
}

func (e *DeliveryError) Unwrap() error { return e.Err }

// Is matches ErrRetryable or ErrPermanent according to Retryable.
func (e *DeliveryError) Is(target error) bool {
	switch target {
	case ErrRetryable:
		return e.Retryable
	case ErrPermanent:
		return !e.Retryable
	}
	return false
}

// IsRetryable reports whether err is a delivery failure worth retrying.
func IsRetryable(err error) bool { return errors.Is(err, ErrRetryable) }

// ValidationError names the invalid field of a channel's input.
type ValidationError struct {
	Field   string
	Message string
}

func (e *ValidationError) Error() string { return e.Field + ": " + e.Message }

// Is makes validation errors permanent failures.
func (e *ValidationError) Is(target error) bool { return target == ErrPermanent }

func fieldError(field, msg string) error { return &ValidationError{Field: field, Message: msg} }

func permanent(channel string, err error) error {
	return &DeliveryError{Channel: channel, Err: err}
}

// redact removes every non-empty secret from s.
func redact(s string, secrets ...string) string {
	for _, sec := range secrets {
		if sec != "" {
			s = strings.ReplaceAll(s, sec, "[redacted]")
		}
	}
	return s
}

// redactedError keeps an error's chain but hides secrets in its text.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

func scrub(err error, secrets ...string) error {
	if err == nil {
		return nil
	}
	msg := redact(err.Error(), secrets...)
	if msg == err.Error() {
		return err
	}
	return &redactedError{msg: msg, err: err}
}
