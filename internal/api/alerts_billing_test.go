package api

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/limitr/limitr/internal/alerts"
	"github.com/limitr/limitr/internal/billing/stripesync"
)

// TestBillingEventsFireAlerts: an invoice finalized by the billing pass, a failed
// payment Stripe reports and a push Stripe refuses each fire their rule once, in the
// transaction that records them, with a delivery queued for the channel.
func TestBillingEventsFireAlerts(t *testing.T) {
	f := newStripeFixture(t)
	f.connect()
	var ch struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(f.call(http.MethodPost, f.path("alert-channels"), map[string]any{"name": "billing", "kind": "webhook",
		"webhook": map[string]string{"url": "https://hooks.example.test/billing"}}, http.StatusCreated), &ch)
	for _, kind := range []string{alerts.KindInvoiceFinalized, alerts.KindPaymentFailed, alerts.KindStripeSyncFailed} {
		f.call(http.MethodPost, f.path("alert-rules"), map[string]any{"name": kind, "kind": kind, "channels": []string{ch.ID}},
			http.StatusCreated)
	}
	fired := func() map[string][]alerts.Alert {
		t.Helper()
		var page struct {
			Data []alerts.Alert `json:"data"`
		}
		_ = json.Unmarshal(f.call(http.MethodGet, f.path("alerts")+"?customer=acme", nil, http.StatusOK), &page)
		out := map[string][]alerts.Alert{}
		for _, a := range page.Data {
			out[a.Kind] = append(out[a.Kind], a)
		}
		return out
	}

	inv := f.finalizedInvoice("acme")
	got := fired()
	if fin := got[alerts.KindInvoiceFinalized]; len(fin) != 1 || fin[0].Data["invoice_id"] != inv.ID || fin[0].Data["number"] != "INV-000001" || fin[0].Data["total"] != "27.00" {
		t.Fatalf("invoice_finalized alerts: %+v", fin)
	}

	// Stripe reports a failed payment, twice (a redelivery): one alert.
	path := "/v1/webhooks/stripe/" + f.envID.String()
	payload, sig := signedEvent(t, "whsec_abc", "evt_fail_1", "invoice.payment_failed", inv.ID, time.Now())
	for range 2 {
		req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(payload))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Stripe-Signature", sig)
		rec := httptest.NewRecorder()
		f.h.srv.Handler().ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			t.Fatalf("payment_failed webhook: %d %s", rec.Code, rec.Body)
		}
	}
	if pf := fired()[alerts.KindPaymentFailed]; len(pf) != 1 || pf[0].Data["invoice_id"] != inv.ID {
		t.Fatalf("payment_failed alerts: %+v", pf)
	}

	// Stripe refuses the push (a currency it does not take): stripe_sync_failed, once
	// however often the job runs.
	if _, err := f.h.pool.Exec(context.Background(), `update invoices set currency = 'XTS' where id = $1`, inv.ID); err != nil {
		t.Fatal(err)
	}
	var args stripesync.PushInvoiceArgs
	_ = json.Unmarshal(f.jobs("limitr.stripe_push_invoice")[0], &args)
	for range 2 {
		if err := f.h.srv.stripe.RunPushInvoice(context.Background(), args); err == nil {
			t.Fatal("the push was not refused")
		}
	}
	if sf := fired()[alerts.KindStripeSyncFailed]; len(sf) != 1 || sf[0].Data["reason"] == "" {
		t.Fatalf("stripe_sync_failed alerts: %+v", sf)
	}
	var deliveries int
	if err := f.h.pool.QueryRow(context.Background(), `select count(*) from alert_deliveries d join river_job j
		on j.kind = 'limitr.alert_delivery' and (j.args->>'delivery_id')::uuid = d.id where d.status = 'pending'`).Scan(&deliveries); err != nil {
		t.Fatal(err)
	}
	if deliveries != 3 {
		t.Fatalf("%d pending deliveries with their jobs, want 3", deliveries)
	}
}
