package stripe

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/stripe/stripe-go/v76/webhook"
)

// WebhookTolerance is how far a webhook's signed timestamp may be from now, either way,
// as in Stripe's libraries: an older delivery is refused as a possible replay.
const WebhookTolerance = 5 * time.Minute

// Event types that carry an invoice's payment status back to us.
const (
	EventInvoicePaid                = "invoice.paid"
	EventInvoicePaymentFailed       = "invoice.payment_failed"
	EventInvoiceVoided              = "invoice.voided"
	EventInvoiceMarkedUncollectible = "invoice.marked_uncollectible"
)

var (
	// ErrBadSignature: the Stripe-Signature header is missing, malformed, does not match
	// the payload and secret, or is outside WebhookTolerance. Answer 400 and do not act.
	ErrBadSignature = errors.New("stripe webhook: bad signature")
	// ErrMalformedEvent: the payload is signed but is not an event this package can read.
	ErrMalformedEvent = errors.New("stripe webhook: malformed event")
)

// Event is a verified webhook event. For the invoice event types above, the invoice
// fields are set; for any other type only ID, Type, Created and Livemode are, and
// callers ignore it. Deduplicate by ID: Stripe delivers at least once.
type Event struct {
	ID      string
	Type    string
	Created time.Time
	// InvoiceID is the Stripe invoice and LimitrInvoiceID ours, from its metadata
	// (empty for an invoice not made by us).
	InvoiceID       string
	LimitrInvoiceID string
	// Status is the invoice's status when the event happened.
	Status string
	// AmountPaid is in Stripe's unit for Currency (see FormatStripeAmount).
	AmountPaid int64
	Currency   string
	Livemode   bool
}

// ParseWebhook verifies a webhook's Stripe-Signature header against the endpoint's
// signing secret (whsec_...) and reads the event. now is the caller's clock: the signed
// timestamp must be within WebhookTolerance of it. Events of any API version are read
// (stripe-mock and fixtures use others than stripe-go's), since only a few invoice
// fields are taken from them.
func ParseWebhook(payload []byte, sigHeader, secret string, now time.Time) (Event, error) {
	if secret == "" {
		// An empty HMAC key would accept signatures anyone can compute.
		return Event{}, fmt.Errorf("%w: no webhook signing secret is configured", ErrBadSignature)
	}
	signedAt, err := signatureTimestamp(sigHeader)
	if err != nil {
		return Event{}, err
	}
	if d := now.Sub(signedAt); d > WebhookTolerance || d < -WebhookTolerance {
		return Event{}, fmt.Errorf("%w: signed at %s, %s from now, outside the %s tolerance",
			ErrBadSignature, signedAt.UTC().Format(time.RFC3339), d.Round(time.Second), WebhookTolerance)
	}
	// The tolerance was checked above against the injected clock; stripe-go would read
	// the wall clock.
	ev, err := webhook.ConstructEventWithOptions(payload, sigHeader, secret, webhook.ConstructEventOptions{
		IgnoreTolerance:          true,
		IgnoreAPIVersionMismatch: true,
	})
	if err != nil {
		if errors.Is(err, webhook.ErrNotSigned) || errors.Is(err, webhook.ErrInvalidHeader) ||
			errors.Is(err, webhook.ErrNoValidSignature) || errors.Is(err, webhook.ErrTooOld) {
			return Event{}, fmt.Errorf("%w: %w", ErrBadSignature, err)
		}
		return Event{}, fmt.Errorf("%w: %w", ErrMalformedEvent, err)
	}
	if ev.ID == "" || ev.Type == "" {
		return Event{}, fmt.Errorf("%w: no id or type", ErrMalformedEvent)
	}
	out := Event{ID: ev.ID, Type: string(ev.Type), Livemode: ev.Livemode}
	if ev.Created != 0 {
		out.Created = time.Unix(ev.Created, 0).UTC()
	}
	switch out.Type {
	case EventInvoicePaid, EventInvoicePaymentFailed, EventInvoiceVoided, EventInvoiceMarkedUncollectible:
	default:
		return out, nil
	}
	if ev.Data == nil || len(ev.Data.Raw) == 0 {
		return Event{}, fmt.Errorf("%w: %s %s has no data.object", ErrMalformedEvent, out.Type, out.ID)
	}
	// Only the fields we use, so that an invoice of another API version still reads.
	var inv struct {
		ID         string            `json:"id"`
		Object     string            `json:"object"`
		Status     string            `json:"status"`
		AmountPaid int64             `json:"amount_paid"`
		Currency   string            `json:"currency"`
		Metadata   map[string]string `json:"metadata"`
	}
	if err := json.Unmarshal(ev.Data.Raw, &inv); err != nil {
		return Event{}, fmt.Errorf("%w: %s %s: %w", ErrMalformedEvent, out.Type, out.ID, err)
	}
	if inv.Object != "invoice" || inv.ID == "" {
		return Event{}, fmt.Errorf("%w: %s %s does not carry an invoice", ErrMalformedEvent, out.Type, out.ID)
	}
	out.InvoiceID = inv.ID
	out.LimitrInvoiceID = inv.Metadata[MetaInvoiceID]
	out.Status = inv.Status
	out.AmountPaid = inv.AmountPaid
	out.Currency = inv.Currency
	return out, nil
}

// signatureTimestamp reads the t= of a Stripe-Signature header ("t=...,v1=...,v1=...").
// A header with several is refused: stripe-go signs with the last one, so checking
// another's age would let an old signature through.
func signatureTimestamp(header string) (time.Time, error) {
	if header == "" {
		return time.Time{}, fmt.Errorf("%w: %w", ErrBadSignature, webhook.ErrNotSigned)
	}
	var ts string
	found := 0
	for part := range strings.SplitSeq(header, ",") {
		if v, ok := strings.CutPrefix(part, "t="); ok {
			ts = v
			found++
		}
	}
	if found != 1 {
		return time.Time{}, fmt.Errorf("%w: want one timestamp in the header, found %d", ErrBadSignature, found)
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: %w", ErrBadSignature, webhook.ErrInvalidHeader)
	}
	return time.Unix(sec, 0), nil
}
