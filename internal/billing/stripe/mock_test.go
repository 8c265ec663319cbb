package stripe

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/limitr/limitr/internal/billing/stripe/stripemock"
	stripego "github.com/stripe/stripe-go/v76"
)

// Every method against stripe-mock, which refuses parameters that Stripe's API (version
// 2023-10-16) does not take: a 400 here is a request Stripe would refuse too.
func TestAgainstStripeMock(t *testing.T) {
	base := stripemock.Start(t)
	c := newTestClient(t, "sk_test_123", base, WithHTTPClient(&http.Client{Timeout: 30 * time.Second}))
	ctx := context.Background()

	t.Run("every method", func(t *testing.T) {
		for _, call := range everyCall() {
			id, err := call.run(ctx, c)
			if err != nil {
				t.Errorf("%s: %v", call.name, err)
				continue
			}
			if id == "" {
				t.Errorf("%s: empty id", call.name)
			}
		}
	})

	t.Run("invoice read back", func(t *testing.T) {
		inv, err := c.FinalizeInvoice(ctx, "limitr:inv:x:finalize", "in_1")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(inv.ID, "in_") || inv.Status == "" || inv.Currency == "" || inv.Lines == 0 || inv.Created.IsZero() {
			t.Errorf("finalized invoice read back as %+v", inv)
		}
		pages := 0
		err = c.ListInvoices(ctx, time.Time{}, func(r RemoteInvoice) error {
			pages++
			if !strings.HasPrefix(r.ID, "in_") {
				t.Errorf("listed %+v", r)
			}
			return nil
		})
		if err != nil || pages == 0 {
			t.Errorf("ListInvoices: %d invoices, %v", pages, err)
		}
		stop := errors.New("stop")
		if err := c.ListInvoices(ctx, time.Time{}, func(RemoteInvoice) error { return stop }); err != stop {
			t.Errorf("ListInvoices returned %v, want the callback's error as it is", err)
		}
	})

	t.Run("a bad key is permanent and redacted", func(t *testing.T) {
		// stripe-mock quotes the Authorization header it refuses, key included.
		const key = "sk_live_NotATestKey0123456789"
		bad := newTestClient(t, key, base)
		_, err := bad.CreateInvoice(ctx, "limitr:inv:y:create", Invoice{CustomerID: "cus_1", Currency: "usd", LimitrInvoiceID: "y"})
		var se *Error
		if !errors.As(err, &se) || se.HTTPStatus != http.StatusUnauthorized || !errors.Is(err, ErrPermanent) || IsRetryable(err) {
			t.Fatalf("got %#v", err)
		}
		if strings.Contains(err.Error(), key) || strings.Contains(se.Message, key) {
			t.Errorf("the error shows the key: %v", err)
		}
		if !strings.Contains(se.Message, "[redacted]") {
			t.Errorf("expected stripe-mock to quote the (redacted) key: %q", se.Message)
		}
	})

	t.Run("a parameter Stripe does not take is permanent", func(t *testing.T) {
		// The point of stripe-mock: it validates parameters against Stripe's spec.
		params := &stripego.CustomerParams{}
		params.AddExtra("not_a_stripe_param", "1")
		_, err := post(ctx, c, "Probe", "limitr:probe", &params.Params, func() (*stripego.Customer, error) {
			return c.api.Customers.New(params)
		})
		var se *Error
		if !errors.As(err, &se) || se.HTTPStatus != http.StatusBadRequest || se.Type != "invalid_request_error" || !errors.Is(err, ErrPermanent) {
			t.Fatalf("got %#v", err)
		}
	})
}
