package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/riverqueue/river/rivertype"
	"github.com/stripe/stripe-go/v76/webhook"

	"github.com/limitr/limitr/internal/billing"
	"github.com/limitr/limitr/internal/billing/stripe/stripemock"
	"github.com/limitr/limitr/internal/billing/stripesync"
	"github.com/limitr/limitr/internal/platform/pgtest"
	"github.com/limitr/limitr/internal/secrets"
	"github.com/limitr/limitr/internal/store"
	"github.com/limitr/limitr/internal/worker"
)

// stripeProxy stands in front of stripe-mock (which checks every request's shape but
// keeps no state) and adds what a crash test needs from Stripe: idempotency. A POST
// runs once per Idempotency-Key; retries get the saved reply. It can also lose the
// reply of chosen calls after they ran, as a worker killed between a Stripe call and
// recording its result would.
type stripeProxy struct {
	mu       sync.Mutex
	proxy    *httputil.ReverseProxy
	saved    map[string]savedReply
	executed map[string]int // POST path → calls that ran
	keys     []string
	loseNext map[string]int // path prefix → replies to lose
}

type savedReply struct {
	status int
	body   []byte
}

func newStripeProxy(t *testing.T) (*stripeProxy, string) {
	target, err := url.Parse(stripemock.Start(t))
	if err != nil {
		t.Fatal(err)
	}
	p := &stripeProxy{proxy: httputil.NewSingleHostReverseProxy(target), saved: map[string]savedReply{},
		executed: map[string]int{}, loseNext: map[string]int{}}
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	return p, srv.URL
}

func (p *stripeProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	key := r.Header.Get("Idempotency-Key")
	if r.Method != http.MethodPost {
		p.proxy.ServeHTTP(w, r)
		return
	}
	p.mu.Lock()
	if s, ok := p.saved[key]; ok {
		p.mu.Unlock()
		w.Header().Set("Idempotent-Replayed", "true")
		w.WriteHeader(s.status)
		_, _ = w.Write(s.body)
		return
	}
	p.mu.Unlock()
	rec := httptest.NewRecorder()
	p.proxy.ServeHTTP(rec, r)
	p.mu.Lock()
	p.saved[key] = savedReply{rec.Code, rec.Body.Bytes()}
	p.executed[pathKind(r.URL.Path)]++
	p.keys = append(p.keys, key)
	lose := false
	for prefix, n := range p.loseNext {
		if n > 0 && strings.HasPrefix(r.URL.Path, prefix) {
			p.loseNext[prefix] = n - 1
			lose = true
		}
	}
	p.mu.Unlock()
	if lose {
		http.Error(w, `{"error":{"type":"api_error","message":"connection lost"}}`, http.StatusBadGateway)
		return
	}
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}

// pathKind names a Stripe endpoint: /v1/invoices/in_x/finalize → invoices/finalize.
func pathKind(path string) string {
	parts := strings.Split(strings.TrimPrefix(path, "/v1/"), "/")
	if len(parts) >= 3 {
		return parts[0] + "/" + parts[2]
	}
	return parts[0]
}

func (p *stripeProxy) count(kind string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.executed[kind]
}

type stripeFixture struct {
	*billingFixture
	proxy *stripeProxy
	envID uuid.UUID
}

func newStripeFixture(t *testing.T) *stripeFixture {
	proxy, base := newStripeProxy(t)
	_, pool := pgtest.NewMigrated(t)
	spec, err := secrets.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	kr, err := secrets.ParseKeyring(spec)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(Config{OperatorToken: "op"}, Deps{Pool: pool, Logger: slog.New(slog.DiscardHandler), Secrets: kr, StripeAPIBase: base})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	h := &custHarness{t: t, srv: srv, pool: pool}
	tn := h.bootstrap("stripe")
	src, err := os.ReadFile("../billing/testdata/policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	h.publish(tn, "staging", string(src))
	f := &stripeFixture{billingFixture: &billingFixture{h: h, tn: tn, env: "staging"}, proxy: proxy, envID: tn.envs["staging"]}
	return f
}

// finalizedInvoice makes customer id's first invoice (tokens past the limit) and
// finalizes it on a test clock.
func (f *stripeFixture) finalizedInvoice(id string) billing.Invoice {
	t := f.h.t
	t.Helper()
	var clock billing.TestClock
	_ = json.Unmarshal(f.call(http.MethodPost, f.path("test-clocks"), map[string]string{"frozen_time": "2026-01-10T09:30:00Z"}, http.StatusCreated), &clock)
	f.clock = clock.ID
	f.call(http.MethodPost, f.path("customers"), map[string]any{"id": id, "plan": "basic", "test_clock": clock.ID,
		"metadata": map[string]string{"name": "Acme " + id, "email": id + "@example.com"}}, http.StatusCreated)
	f.setUsage(id, "tokens", time.Date(2026, 1, 10, 9, 30, 0, 0, time.UTC), "1600000", "250000")
	f.advance("2026-02-10T02:00:00Z")
	var page struct {
		Data []billing.Invoice `json:"data"`
	}
	_ = json.Unmarshal(f.call(http.MethodGet, f.path("invoices")+"?customer="+id, nil, http.StatusOK), &page)
	if len(page.Data) != 1 || page.Data[0].Status != "finalized" {
		t.Fatalf("invoice: %+v", page.Data)
	}
	return page.Data[0]
}

// jobs returns the args of the queued River jobs of a kind, oldest first.
func (f *stripeFixture) jobs(kind string) []json.RawMessage {
	rows, err := f.h.pool.Query(context.Background(), `select args from river_job where kind = $1 order by id`, kind)
	if err != nil {
		f.h.t.Fatal(err)
	}
	defer rows.Close()
	var out []json.RawMessage
	for rows.Next() {
		var a json.RawMessage
		if err := rows.Scan(&a); err != nil {
			f.h.t.Fatal(err)
		}
		out = append(out, a)
	}
	return out
}

func (f *stripeFixture) connect() {
	f.call(http.MethodPut, f.path("integrations", "stripe"), map[string]string{"secret_key": "sk_test_123", "webhook_secret": "whsec_abc"}, http.StatusOK)
}

func TestStripeConnectionIsSealed(t *testing.T) {
	f := newStripeFixture(t)
	code, body := f.h.do(http.MethodPut, f.path("integrations", "stripe"), f.tn.secret, map[string]string{"secret_key": "pk_test_1", "webhook_secret": ""})
	wantProblem(t, "bad secrets", code, body, http.StatusUnprocessableEntity, "secret_key")
	wantProblem(t, "bad secrets", code, body, http.StatusUnprocessableEntity, "webhook_secret")
	out := f.call(http.MethodPut, f.path("integrations", "stripe"), map[string]string{"secret_key": "sk_test_51SuperSecret9876", "webhook_secret": "whsec_TopSecretSigning"}, http.StatusOK)
	got := f.call(http.MethodGet, f.path("integrations", "stripe"), nil, http.StatusOK)
	for _, b := range [][]byte{out, got} {
		if bytes.Contains(b, []byte("SuperSecret")) || bytes.Contains(b, []byte("TopSecretSigning")) {
			t.Fatalf("a secret was returned: %s", b)
		}
	}
	var conn stripesync.Connection
	_ = json.Unmarshal(got, &conn)
	if !conn.Connected || conn.KeyHint != "9876" || conn.Livemode {
		t.Fatalf("connection: %s", got)
	}
	if n := f.h.count(`select count(*) from stripe_connections where secret_key_sealed like '%SuperSecret%' or webhook_secret_sealed like '%TopSecret%'`); n != 0 {
		t.Fatal("a secret is stored in plaintext")
	}
	if n := f.h.count(`select count(*) from audit_log where after::text like '%SuperSecret%' or after::text like '%TopSecret%'`); n != 0 {
		t.Fatal("a secret is in the audit log")
	}
	f.call(http.MethodDelete, f.path("integrations", "stripe"), nil, http.StatusNoContent)
	f.call(http.MethodDelete, f.path("integrations", "stripe"), nil, http.StatusNotFound)
}

func TestStripePushesAFinalizedInvoiceOnce(t *testing.T) {
	f := newStripeFixture(t)
	f.connect()
	inv := f.finalizedInvoice("acme")
	pushes := f.jobs("limitr.stripe_push_invoice")
	if len(pushes) != 1 {
		t.Fatalf("%d push jobs queued with the finalization, want 1", len(pushes))
	}
	var args stripesync.PushInvoiceArgs
	_ = json.Unmarshal(pushes[0], &args)
	ctx := context.Background()
	// Every step's reply is lost once after Stripe ran it: the worker died between the
	// call and recording its result. Each retry resends the same key.
	f.proxy.loseNext = map[string]int{"/v1/customers": 1, "/v1/invoiceitems": 2, "/v1/invoices": 1, "/v1/invoices/": 1}
	var lastErr error
	for attempt := range 10 {
		if lastErr = f.h.srv.stripe.PushInvoice(ctx, args); lastErr == nil {
			break
		}
		t.Logf("attempt %d: %v", attempt, lastErr)
	}
	if lastErr != nil {
		t.Fatal(lastErr)
	}
	got := f.invoice(f.call(http.MethodGet, f.path("invoices", inv.ID), nil, http.StatusOK))
	if got.StripeInvoiceID == nil || got.StripeStatus != "synced" {
		t.Fatalf("after push: %+v", got)
	}
	if n := f.proxy.count("customers"); n != 1 {
		t.Errorf("%d Stripe customers created, want 1", n)
	}
	if n := f.proxy.count("invoices"); n != 1 {
		t.Errorf("%d Stripe invoices created, want 1", n)
	}
	if n := f.proxy.count("invoiceitems"); n != len(inv.Lines) {
		t.Errorf("%d invoice items, want %d", n, len(inv.Lines))
	}
	if n := f.proxy.count("invoices/finalize"); n != 1 {
		t.Errorf("%d finalizations, want 1", n)
	}
	// A second run (a duplicate job) calls Stripe for nothing new.
	before := len(f.proxy.keys)
	if err := f.h.srv.stripe.PushInvoice(ctx, args); err != nil {
		t.Fatal(err)
	}
	if len(f.proxy.keys) != before {
		t.Fatalf("a finished push called Stripe again: %v", f.proxy.keys[before:])
	}
	for _, k := range f.proxy.keys {
		if !strings.HasPrefix(k, "limitr:") {
			t.Fatalf("idempotency key %q is not ours", k)
		}
	}
	// Our lifecycle follows into Stripe.
	f.call(http.MethodPost, f.path("invoices", inv.ID, "credit-notes"),
		map[string]any{"reason": "goodwill", "lines": []map[string]string{{"description": "sorry", "amount": "2.00"}}}, http.StatusCreated)
	var cn stripesync.CreditNoteArgs
	_ = json.Unmarshal(f.jobs("limitr.stripe_credit_note")[0], &cn)
	if err := f.h.srv.stripe.PushCreditNote(ctx, cn); err != nil {
		t.Fatal(err)
	}
	if n := f.proxy.count("credit_notes"); n != 1 {
		t.Fatalf("%d credit notes in Stripe", n)
	}
	f.call(http.MethodPost, f.path("invoices", inv.ID, "mark-paid"), nil, http.StatusOK)
	var st stripesync.InvoiceStatusArgs
	_ = json.Unmarshal(f.jobs("limitr.stripe_invoice_status")[0], &st)
	if err := f.h.srv.stripe.PushStatus(ctx, st); err != nil {
		t.Fatal(err)
	}
	if n := f.proxy.count("invoices/pay"); n != 1 {
		t.Fatalf("%d pay calls", n)
	}
}

func TestStripePermanentErrorIsOnTheInvoice(t *testing.T) {
	f := newStripeFixture(t)
	f.call(http.MethodPut, f.path("integrations", "stripe"), map[string]string{"secret_key": "sk_test_123", "webhook_secret": "whsec_abc"}, http.StatusOK)
	inv := f.finalizedInvoice("acme")
	// A currency Stripe does not take makes stripe-mock answer 400.
	if _, err := f.h.pool.Exec(context.Background(), `update invoices set currency = 'XTS' where id = $1`, inv.ID); err != nil {
		t.Fatal(err)
	}
	var args stripesync.PushInvoiceArgs
	_ = json.Unmarshal(f.jobs("limitr.stripe_push_invoice")[0], &args)
	err := f.h.srv.stripe.RunPushInvoice(context.Background(), args)
	var cancel *rivertype.JobCancelError
	if !errors.As(err, &cancel) {
		t.Fatalf("a permanent error must stop the job: %v", err)
	}
	got := f.invoice(f.call(http.MethodGet, f.path("invoices", inv.ID), nil, http.StatusOK))
	if got.StripeStatus != "failed" || !strings.Contains(got.StripeError, "currency") {
		t.Fatalf("the reason is not on the invoice: %+v", got)
	}
}

func signedEvent(t *testing.T, secret, id, typ, invoiceID string, at time.Time) ([]byte, string) {
	t.Helper()
	payload := fmt.Appendf(nil, `{"id": %q, "object": "event", "api_version": "2023-10-16", "created": %d, "livemode": false,
		"type": %q, "data": {"object": {"id": "in_123", "object": "invoice", "status": "paid", "currency": "usd", "amount_paid": 2700,
		"metadata": {"limitr_invoice_id": %q}}}}`, id, at.Unix(), typ, invoiceID)
	return payload, webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: payload, Secret: secret, Timestamp: at}).Header
}

func TestStripeWebhooks(t *testing.T) {
	f := newStripeFixture(t)
	f.connect()
	inv := f.finalizedInvoice("acme")
	path := "/v1/webhooks/stripe/" + f.envID.String()
	post := func(payload []byte, sig string) (int, []byte) {
		req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(payload))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Stripe-Signature", sig)
		rec := httptest.NewRecorder()
		f.h.srv.Handler().ServeHTTP(rec, req)
		return rec.Code, rec.Body.Bytes()
	}
	now := time.Now()
	payload, sig := signedEvent(t, "whsec_wrong", "evt_1", "invoice.paid", inv.ID, now)
	if code, body := post(payload, sig); code != http.StatusBadRequest {
		t.Fatalf("bad signature: %d %s", code, body)
	}
	payload, sig = signedEvent(t, "whsec_abc", "evt_1", "invoice.paid", inv.ID, now.Add(-6*time.Minute))
	if code, body := post(payload, sig); code != http.StatusBadRequest {
		t.Fatalf("old signature: %d %s", code, body)
	}
	if got := f.invoice(f.call(http.MethodGet, f.path("invoices", inv.ID), nil, http.StatusOK)); got.Status != "finalized" {
		t.Fatalf("a refused webhook changed the invoice: %s", got.Status)
	}
	payload, sig = signedEvent(t, "whsec_abc", "evt_1", "invoice.paid", inv.ID, now)
	code, body := post(payload, sig)
	if code != http.StatusOK || !bytes.Contains(body, []byte(`"status":"paid"`)) {
		t.Fatalf("paid: %d %s", code, body)
	}
	if got := f.invoice(f.call(http.MethodGet, f.path("invoices", inv.ID), nil, http.StatusOK)); got.Status != "paid" || got.PaidAt == nil {
		t.Fatalf("after invoice.paid: %+v", got)
	}
	if n := len(f.jobs("limitr.stripe_invoice_status")); n != 0 {
		t.Fatalf("a status Stripe reported was pushed back to it (%d jobs)", n)
	}
	if code, body := post(payload, sig); code != http.StatusOK || !bytes.Contains(body, []byte(`"duplicate":true`)) {
		t.Fatalf("redelivery: %d %s", code, body)
	}
	payload, sig = signedEvent(t, "whsec_abc", "evt_2", "customer.created", "", now)
	if code, body := post(payload, sig); code != http.StatusOK || !bytes.Contains(body, []byte(`"ignored"`)) {
		t.Fatalf("other event: %d %s", code, body)
	}
	req := httptest.NewRequest(http.MethodPost, "/v1/webhooks/stripe/"+uuid.NewString(), strings.NewReader("{}"))
	rec := httptest.NewRecorder()
	f.h.srv.Handler().ServeHTTP(rec, req)
	if rec.Code != http.StatusNotFound {
		t.Fatalf("unknown environment: %d", rec.Code)
	}
	_, _ = io.Copy(io.Discard, rec.Body)
}

// The whole path: the finalization queues the push in its transaction, a worker's River
// client runs it, and the invoice reads synced.
func TestStripeWorkerPushesThroughRiver(t *testing.T) {
	f := newStripeFixture(t)
	f.connect()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w, err := worker.New(worker.Deps{Pool: f.h.pool, Logger: slog.New(slog.DiscardHandler), Secrets: f.h.srv.secrets,
		StripeAPIBase: f.h.srv.stripe.APIBase()}, worker.Config{BillingInterval: time.Hour, MaintenanceInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	inv := f.finalizedInvoice("acme")
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := f.invoice(f.call(http.MethodGet, f.path("invoices", inv.ID), nil, http.StatusOK))
		if got.StripeStatus == "synced" && got.StripeInvoiceID != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not synced by the worker: %+v", got)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := f.proxy.count("invoices/finalize"); n != 1 {
		t.Fatalf("%d finalizations in Stripe", n)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// Customers created or changed since their last sync, and plans with a priced
// subscription, are mirrored; a second pass with nothing new calls Stripe for nothing.
func TestStripeCatalogSync(t *testing.T) {
	f := newStripeFixture(t)
	f.connect()
	ctx := context.Background()
	f.call(http.MethodPost, f.path("customers"), map[string]any{"id": "c1", "plan": "basic", "metadata": map[string]string{"email": "c1@example.com"}}, http.StatusCreated)
	f.call(http.MethodPost, f.path("customers"), map[string]any{"id": "c2", "plan": "pro"}, http.StatusCreated)
	if err := f.h.srv.stripe.SyncCatalog(ctx); err != nil {
		t.Fatal(err)
	}
	if n := f.proxy.count("customers"); n != 2 {
		t.Fatalf("%d customer calls, want 2 creations", n)
	}
	// basic (20) and pro (99): a product and a monthly price each.
	if p, pr := f.proxy.count("products"), f.proxy.count("prices"); p != 2 || pr != 2 {
		t.Fatalf("%d products and %d prices, want 2 and 2", p, pr)
	}
	before := len(f.proxy.keys)
	if err := f.h.srv.stripe.SyncCatalog(ctx); err != nil {
		t.Fatal(err)
	}
	if len(f.proxy.keys) != before {
		t.Fatalf("a pass with nothing new called Stripe: %v", f.proxy.keys[before:])
	}
	// A changed customer is updated (a new revision, a new key).
	f.call(http.MethodPatch, f.path("customers", "c1"), map[string]any{"metadata": map[string]string{"name": "C One"}}, http.StatusOK)
	// A new fee is a new price; the old one is deactivated, never edited.
	f.call(http.MethodPut, f.path("billing"), map[string]any{"rune_rate": "2"}, http.StatusOK)
	if err := f.h.srv.stripe.SyncCatalog(ctx); err != nil {
		t.Fatal(err)
	}
	if n := f.proxy.count("customers"); n != 3 {
		t.Fatalf("%d customer calls, want 2 creations and 1 update", n)
	}
	var updates int
	for _, k := range f.proxy.keys[before:] {
		if strings.HasPrefix(k, "limitr:price:") {
			updates++
		}
	}
	if updates != 4 {
		t.Fatalf("price calls after the fees changed: %v", f.proxy.keys[before:])
	}
}

// The reconciliation reports invoices Stripe does not have, and those on which it
// disagrees with us (stripe-mock keeps no state: its invoices are never "open").
func TestStripeReconcileReportsDrift(t *testing.T) {
	f := newStripeFixture(t)
	f.connect()
	ctx := context.Background()
	inv := f.finalizedInvoice("acme")
	env, err := store.EnvironmentByName(ctx, f.h.pool, f.tn.tenantID, f.env)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := f.h.srv.stripe.Reconcile(ctx, env)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Drift) != 1 || rep.Drift[0].Invoice != inv.ID || rep.Drift[0].Problem != "not in Stripe yet" {
		t.Fatalf("before the push: %+v", rep)
	}
	var args stripesync.PushInvoiceArgs
	_ = json.Unmarshal(f.jobs("limitr.stripe_push_invoice")[0], &args)
	if err := f.h.srv.stripe.PushInvoice(ctx, args); err != nil {
		t.Fatal(err)
	}
	if rep, err = f.h.srv.stripe.Reconcile(ctx, env); err != nil {
		t.Fatal(err)
	}
	if rep.Checked != 1 || len(rep.Drift) != 1 || !strings.Contains(rep.Drift[0].Problem, "status: ours finalized") {
		t.Fatalf("after the push: %+v", rep)
	}
	var conn stripesync.Connection
	_ = json.Unmarshal(f.call(http.MethodGet, f.path("integrations", "stripe"), nil, http.StatusOK), &conn)
	if conn.LastReconcile == nil || conn.LastReconcile.Checked != 1 || len(conn.LastReconcile.Drift) != 1 {
		t.Fatalf("the report is not on the connection: %+v", conn)
	}
}
