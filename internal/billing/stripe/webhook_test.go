package stripe

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v76/webhook"
)

const whsec = "whsec_test_secret"

// invoiceEvent is a webhook payload in Stripe's shape, trimmed to what matters.
func invoiceEvent(typ, apiVersion, status string, amountPaid int64, created time.Time) []byte {
	return fmt.Appendf(nil, `{
  "id": "evt_1PaidTest",
  "object": "event",
  "api_version": %q,
  "created": %d,
  "livemode": false,
  "pending_webhooks": 1,
  "type": %q,
  "data": {
    "object": {
      "id": "in_1Test",
      "object": "invoice",
      "status": %q,
      "currency": "eur",
      "amount_due": 1234,
      "amount_paid": %d,
      "customer": "cus_1",
      "lines": {"object": "list", "data": [], "has_more": false, "url": "/v1/invoices/in_1Test/lines"},
      "metadata": {"limitr_invoice_id": "3f0c6f5e-7c52-4d0a-9b8e-1a2b3c4d5e6f"}
    }
  }
}`, apiVersion, created.Unix(), typ, status, amountPaid)
}

func sign(payload []byte, secret string, at time.Time) string {
	return webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: payload, Secret: secret, Timestamp: at}).Header
}

func TestParseWebhookInvoiceEvents(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct{ typ, status string }{
		{EventInvoicePaid, "paid"},
		{EventInvoicePaymentFailed, "open"},
		{EventInvoiceVoided, "void"},
		{EventInvoiceMarkedUncollectible, "uncollectible"},
	} {
		// An API version other than stripe-go's still reads.
		for _, version := range []string{"2023-10-16", "2020-08-27", "2025-06-30.basil"} {
			var paid int64
			if tc.status == "paid" {
				paid = 1234
			}
			payload := invoiceEvent(tc.typ, version, tc.status, paid, now.Add(-time.Minute))
			ev, err := ParseWebhook(payload, sign(payload, whsec, now.Add(-30*time.Second)), whsec, now)
			if err != nil {
				t.Fatalf("%s %s: %v", tc.typ, version, err)
			}
			want := Event{
				ID: "evt_1PaidTest", Type: tc.typ, Created: now.Add(-time.Minute),
				InvoiceID: "in_1Test", LimitrInvoiceID: "3f0c6f5e-7c52-4d0a-9b8e-1a2b3c4d5e6f",
				Status: tc.status, AmountPaid: paid, Currency: "eur",
			}
			if ev != want {
				t.Errorf("%s %s:\n got %+v\nwant %+v", tc.typ, version, ev, want)
			}
		}
	}
}

func TestParseWebhookOtherTypes(t *testing.T) {
	now := time.Now()
	payload := []byte(`{"id":"evt_2","object":"event","api_version":"2023-10-16","created":1700000000,"livemode":true,
		"type":"customer.created","data":{"object":{"id":"cus_1","object":"customer"}}}`)
	ev, err := ParseWebhook(payload, sign(payload, whsec, now), whsec, now)
	if err != nil {
		t.Fatal(err)
	}
	want := Event{ID: "evt_2", Type: "customer.created", Created: time.Unix(1700000000, 0).UTC(), Livemode: true}
	if ev != want {
		t.Errorf("got %+v, want %+v", ev, want)
	}
}

func TestParseWebhookSignature(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	payload := invoiceEvent(EventInvoicePaid, "2023-10-16", "paid", 1234, now)
	good := sign(payload, whsec, now)
	tampered := bytes.Replace(payload, []byte(`"amount_paid": 1234`), []byte(`"amount_paid": 9999`), 1)
	if bytes.Equal(tampered, payload) {
		t.Fatal("the payload was not tampered with")
	}

	for name, tc := range map[string]struct {
		payload   []byte
		header    string
		secret    string
		now       time.Time
		wantError error
	}{
		"valid":                           {payload, good, whsec, now, nil},
		"valid at the edge of the past":   {payload, good, whsec, now.Add(WebhookTolerance), nil},
		"valid at the edge of the future": {payload, good, whsec, now.Add(-WebhookTolerance), nil},
		"too old":                         {payload, good, whsec, now.Add(WebhookTolerance + time.Second), ErrBadSignature},
		"an hour old":                     {payload, good, whsec, now.Add(time.Hour), ErrBadSignature},
		"from the future":                 {payload, good, whsec, now.Add(-WebhookTolerance - time.Second), ErrBadSignature},
		"other secret":                    {payload, sign(payload, "whsec_other", now), whsec, now, ErrBadSignature},
		"tampered payload":                {tampered, good, whsec, now, ErrBadSignature},
		"no header":                       {payload, "", whsec, now, ErrBadSignature},
		"no signature":                    {payload, fmt.Sprintf("t=%d", now.Unix()), whsec, now, ErrBadSignature},
		"garbage header":                  {payload, "nonsense", whsec, now, ErrBadSignature},
		"bad timestamp":                   {payload, strings.Replace(good, "t=", "t=x", 1), whsec, now, ErrBadSignature},
		"empty secret":                    {payload, sign(payload, "", now), "", now, ErrBadSignature},
		"v0 scheme only": {payload, webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{
			Payload: payload, Secret: whsec, Timestamp: now, Scheme: "v0"}).Header, whsec, now, ErrBadSignature},
		// An old signature with a fresh timestamp in front: stripe-go verifies against the
		// last t=, so two are refused rather than checking the age of the wrong one.
		"two timestamps": {payload, fmt.Sprintf("t=%d,", now.Unix()) + sign(payload, whsec, now.Add(-time.Hour)), whsec, now, ErrBadSignature},
		// Rolled secrets: Stripe sends one v1 per secret; one matching is enough.
		"several signatures": {payload, good + ",v1=" + strings.Repeat("ab", 32), whsec, now, nil},
	} {
		t.Run(name, func(t *testing.T) {
			ev, err := ParseWebhook(tc.payload, tc.header, tc.secret, tc.now)
			if tc.wantError == nil {
				if err != nil || ev.InvoiceID != "in_1Test" {
					t.Fatalf("got %+v, %v", ev, err)
				}
				return
			}
			if !errors.Is(err, tc.wantError) {
				t.Fatalf("got %+v, %v; want %v", ev, err, tc.wantError)
			}
			if errors.Is(err, ErrMalformedEvent) {
				t.Fatalf("%v is both a bad signature and a malformed event", err)
			}
		})
	}
}

func TestParseWebhookMalformed(t *testing.T) {
	now := time.Now()
	for name, payload := range map[string]string{
		"not json":           `{"id": "evt_1", "type": `,
		"no id":              `{"object":"event","type":"invoice.paid","data":{"object":{"id":"in_1","object":"invoice"}}}`,
		"no type":            `{"id":"evt_1","object":"event","data":{"object":{"id":"in_1","object":"invoice"}}}`,
		"no data":            `{"id":"evt_1","object":"event","type":"invoice.paid"}`,
		"not an invoice":     `{"id":"evt_1","object":"event","type":"invoice.paid","data":{"object":{"id":"cus_1","object":"customer"}}}`,
		"invoice without id": `{"id":"evt_1","object":"event","type":"invoice.voided","data":{"object":{"object":"invoice"}}}`,
		"wrong field type":   `{"id":"evt_1","object":"event","type":"invoice.paid","data":{"object":{"id":"in_1","object":"invoice","amount_paid":"12"}}}`,
	} {
		t.Run(name, func(t *testing.T) {
			p := []byte(payload)
			_, err := ParseWebhook(p, sign(p, whsec, now), whsec, now)
			if !errors.Is(err, ErrMalformedEvent) || errors.Is(err, ErrBadSignature) {
				t.Fatalf("got %v, want ErrMalformedEvent only", err)
			}
		})
	}
}
