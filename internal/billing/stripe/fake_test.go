package stripe

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	stripego "github.com/stripe/stripe-go/v76"
)

const testKey = "sk_test_FakeKey0123456789abcdef"

type seenRequest struct {
	method, path, idemKey, auth, version string
	form                                 url.Values
}

// fakeStripe answers like Stripe, with objects just complete enough for stripe-go, and
// records what it was sent. reply, when set, answers instead.
type fakeStripe struct {
	srv   *httptest.Server
	mu    sync.Mutex
	seen  []seenRequest
	reply func(w http.ResponseWriter, r *http.Request)
}

func newFake(t *testing.T) *fakeStripe {
	f := &fakeStripe{}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeStripe) serve(w http.ResponseWriter, r *http.Request) {
	_ = r.ParseForm()
	f.mu.Lock()
	f.seen = append(f.seen, seenRequest{
		method: r.Method, path: r.URL.Path, idemKey: r.Header.Get("Idempotency-Key"),
		auth: r.Header.Get("Authorization"), version: r.Header.Get("Stripe-Version"), form: r.Form,
	})
	reply := f.reply
	f.mu.Unlock()
	if reply != nil {
		reply(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	invoice := map[string]any{
		"id": "in_fake", "object": "invoice", "status": "open", "number": "ABC-0001", "currency": "usd",
		"customer": "cus_1", "total": 1234, "amount_due": 1234, "amount_paid": 0, "created": 1772323200,
		"metadata": map[string]string{MetaInvoiceID: invoiceUUID},
		"lines":    map[string]any{"object": "list", "data": []any{map[string]any{"id": "il_1", "object": "line_item"}}, "has_more": false},
	}
	var body any
	switch p := r.URL.Path; {
	case p == "/v1/customers" || strings.HasPrefix(p, "/v1/customers/"):
		body = map[string]any{"id": "cus_fake", "object": "customer"}
	case strings.HasPrefix(p, "/v1/products"):
		body = map[string]any{"id": "prod_fake", "object": "product"}
	case strings.HasPrefix(p, "/v1/prices"):
		body = map[string]any{"id": "price_fake", "object": "price"}
	case p == "/v1/invoiceitems":
		body = map[string]any{"id": "ii_fake", "object": "invoiceitem"}
	case p == "/v1/credit_notes":
		body = map[string]any{"id": "cn_fake", "object": "credit_note"}
	case strings.HasPrefix(p, "/v1/invoices/") && strings.HasSuffix(p, "/lines"):
		lines := []any{map[string]any{"id": "il_1", "object": "line_item"}, map[string]any{"id": "il_2", "object": "line_item"}}
		body = map[string]any{"object": "list", "url": p, "has_more": false, "data": lines}
	case p == "/v1/invoices" && r.Method == http.MethodGet:
		body = map[string]any{"object": "list", "url": "/v1/invoices", "has_more": false, "data": []any{invoice}}
	case strings.HasPrefix(p, "/v1/invoices"):
		body = invoice
	default:
		w.WriteHeader(http.StatusNotFound)
		body = map[string]any{"error": map[string]any{"type": "invalid_request_error", "message": "Unrecognized request URL"}}
	}
	_ = json.NewEncoder(w).Encode(body)
}

func (f *fakeStripe) requests() []seenRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]seenRequest(nil), f.seen...)
}

func (f *fakeStripe) setReply(reply func(http.ResponseWriter, *http.Request)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reply = reply
}

func (f *fakeStripe) reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seen = nil
}

// Every call reaches the API base given, with our key, stripe-go's API version, the
// idempotency key exactly as given on every POST (none on reads), and the parameters
// this package promises.
func TestRequestsAsSent(t *testing.T) {
	f := newFake(t)
	c := newTestClient(t, testKey, f.srv.URL)
	for _, call := range everyCall() {
		f.reset()
		id, err := call.run(context.Background(), c)
		if err != nil || id == "" {
			t.Errorf("%s: %q, %v", call.name, id, err)
			continue
		}
		reqs := f.requests()
		if len(reqs) != 1 {
			t.Errorf("%s: %d requests, want 1", call.name, len(reqs))
			continue
		}
		r := reqs[0]
		if r.auth != "Bearer "+testKey || r.version != stripego.APIVersion {
			t.Errorf("%s: Authorization %q, Stripe-Version %q", call.name, r.auth, r.version)
		}
		wantMethod := http.MethodPost
		if call.idemKey == "" {
			wantMethod = http.MethodGet
		}
		if r.method != wantMethod || r.idemKey != call.idemKey {
			t.Errorf("%s: %s with Idempotency-Key %q; want %s with %q", call.name, r.method, r.idemKey, wantMethod, call.idemKey)
		}
		for k, want := range call.form {
			if got := r.form.Get(k); got != want {
				t.Errorf("%s: %s=%q, want %q (form %v)", call.name, k, got, want, r.form)
			}
		}
	}
}

func TestRequestDetails(t *testing.T) {
	f := newFake(t)
	c := newTestClient(t, testKey, f.srv.URL+"/") // a trailing slash is fine
	ctx := context.Background()

	inv, err := c.GetInvoice(ctx, "in_fake")
	if err != nil {
		t.Fatal(err)
	}
	want := RemoteInvoice{
		ID: "in_fake", Status: "open", Number: "ABC-0001", Currency: "usd", CustomerID: "cus_1", Total: 1234, AmountDue: 1234,
		LimitrInvoiceID: invoiceUUID, Lines: 1, Created: time.Unix(1772323200, 0).UTC(),
	}
	if inv != want {
		t.Errorf("GetInvoice:\n got %+v\nwant %+v", inv, want)
	}
	if r := f.requests()[0]; r.path != "/v1/invoices/in_fake" {
		t.Errorf("GET %s", r.path)
	}

	// An update keeps what is not given: no empty email or name is sent.
	f.reset()
	if _, err := c.UpsertCustomer(ctx, "k1", Customer{StripeID: "cus_1", LimitrCustomerID: "c1"}); err != nil {
		t.Fatal(err)
	}
	if r := f.requests()[0]; r.path != "/v1/customers/cus_1" || r.form.Has("email") || r.form.Has("name") {
		t.Errorf("update sent %s %v", r.path, r.form)
	}
	// A send_invoice invoice without a term is due in DefaultDaysUntilDue days; one
	// charged automatically sends no term (Stripe refuses one).
	f.reset()
	if _, err := c.CreateInvoice(ctx, "k2", Invoice{CustomerID: "cus_1", Currency: "usd", LimitrInvoiceID: "i"}); err != nil {
		t.Fatal(err)
	}
	if r := f.requests()[0]; r.form.Get("days_until_due") != fmt.Sprint(DefaultDaysUntilDue) || r.form.Has("metadata[limitr_invoice_number]") {
		t.Errorf("invoice sent %v", r.form)
	}
	f.reset()
	if _, err := c.CreateInvoice(ctx, "k3", Invoice{CustomerID: "cus_1", Currency: "usd", LimitrInvoiceID: "i", ChargeAutomatically: true}); err != nil {
		t.Fatal(err)
	}
	if r := f.requests()[0]; r.form.Has("days_until_due") {
		t.Errorf("invoice sent %v", r.form)
	}

	// ListInvoices follows pages, from the created time given.
	f.reset()
	f.setReply(func(w http.ResponseWriter, r *http.Request) {
		page := []any{map[string]any{"id": "in_a", "object": "invoice"}, map[string]any{"id": "in_b", "object": "invoice"}}
		more := true
		if r.Form.Get("starting_after") == "in_b" {
			page, more = []any{map[string]any{"id": "in_c", "object": "invoice"}}, false
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"object": "list", "url": "/v1/invoices", "has_more": more, "data": page})
	})
	var ids []string
	since := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := c.ListInvoices(ctx, since, func(r RemoteInvoice) error { ids = append(ids, r.ID); return nil }); err != nil {
		t.Fatal(err)
	}
	reqs := f.requests()
	if strings.Join(ids, ",") != "in_a,in_b,in_c" || len(reqs) != 2 {
		t.Fatalf("listed %v in %d requests", ids, len(reqs))
	}
	if got := reqs[0].form.Get("created[gte]"); got != fmt.Sprint(since.Unix()) || reqs[0].form.Get("limit") != "100" {
		t.Errorf("list sent %v", reqs[0].form)
	}
}

func stripeErrorReply(status int, typ, code string, header map[string]string) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, _ *http.Request) {
		for k, v := range header {
			w.Header().Set(k, v)
		}
		w.Header().Set("Request-Id", "req_123")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{
			"type": typ, "code": code, "message": "something " + code, "param": "customer",
		}})
	}
}

// Each status maps to retryable or permanent, after exactly one request: stripe-go's
// own retries are off.
func TestErrorClasses(t *testing.T) {
	f := newFake(t)
	c := newTestClient(t, testKey, f.srv.URL)
	for _, tc := range []struct {
		name      string
		reply     func(http.ResponseWriter, *http.Request)
		status    int
		retryable bool
	}{
		{"rate limited", stripeErrorReply(429, "invalid_request_error", "rate_limit", nil), 429, true},
		{"lock timeout", stripeErrorReply(429, "invalid_request_error", "lock_timeout", nil), 429, true},
		{"key in use", stripeErrorReply(409, "idempotency_error", "idempotency_key_in_use", nil), 409, true},
		{"server error", stripeErrorReply(500, "api_error", "", nil), 500, true},
		{"server error, no retry advised", stripeErrorReply(500, "api_error", "", map[string]string{"Stripe-Should-Retry": "false"}), 500, true},
		{"unavailable", stripeErrorReply(503, "api_error", "", nil), 503, true},
		{"retry advised", stripeErrorReply(400, "invalid_request_error", "", map[string]string{"Stripe-Should-Retry": "true"}), 400, true},
		{"proxy html", func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusBadGateway)
			_, _ = w.Write([]byte("<html>502 Bad Gateway</html>"))
		}, 502, true},
		{"garbled success", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("{")) }, 200, true},
		{"invalid request", stripeErrorReply(400, "invalid_request_error", "parameter_missing", nil), 400, false},
		{"key reused with other params", stripeErrorReply(400, "idempotency_error", "", nil), 400, false},
		{"bad key", stripeErrorReply(401, "invalid_request_error", "", nil), 401, false},
		{"forbidden", stripeErrorReply(403, "invalid_request_error", "", nil), 403, false},
		{"missing", stripeErrorReply(404, "invalid_request_error", "resource_missing", nil), 404, false},
		{"not json, not found", func(w http.ResponseWriter, _ *http.Request) { http.NotFound(w, nil) }, 404, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f.reset()
			f.setReply(tc.reply)
			_, err := c.CreateInvoice(context.Background(), "limitr:inv:1:create", Invoice{CustomerID: "cus_1", Currency: "usd", LimitrInvoiceID: "1"})
			var se *Error
			if !errors.As(err, &se) {
				t.Fatalf("got %T %v", err, err)
			}
			if se.Op != "CreateInvoice" || se.HTTPStatus != tc.status || se.Retryable != tc.retryable || IsRetryable(err) != tc.retryable ||
				errors.Is(err, ErrRetryable) != tc.retryable || errors.Is(err, ErrPermanent) == tc.retryable {
				t.Errorf("got %+v", se)
			}
			if n := len(f.requests()); n != 1 {
				t.Errorf("%d requests, want 1 (no retries in stripe-go)", n)
			}
		})
	}

	f.setReply(stripeErrorReply(404, "invalid_request_error", "resource_missing", nil))
	_, err := c.GetInvoice(context.Background(), "in_nope")
	var se *Error
	var stripeErr *stripego.Error
	if !errors.As(err, &se) || se.Code != "resource_missing" || se.Type != "invalid_request_error" || se.Param != "customer" ||
		se.RequestID != "req_123" || se.Message != "something resource_missing" || !errors.As(err, &stripeErr) {
		t.Fatalf("got %#v", err)
	}
	if want := "stripe: GetInvoice: 404 invalid_request_error resource_missing something resource_missing (param customer) [request req_123]"; err.Error() != want {
		t.Errorf("Error() = %q\nwant      %q", err.Error(), want)
	}
}

func TestTransportErrors(t *testing.T) {
	inv := Invoice{CustomerID: "cus_1", Currency: "usd", LimitrInvoiceID: "1"}

	// Nothing listens: retryable, no status.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + l.Addr().String()
	_ = l.Close()
	_, err = newTestClient(t, testKey, closed).CreateInvoice(context.Background(), "k", inv)
	var se *Error
	if !errors.As(err, &se) || !se.Retryable || se.HTTPStatus != 0 {
		t.Errorf("connection refused: %#v", err)
	}

	// The connection drops mid-request.
	f := newFake(t)
	f.setReply(func(w http.ResponseWriter, _ *http.Request) {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			_ = conn.Close()
		}
	})
	if _, err := newTestClient(t, testKey, f.srv.URL).CreateInvoice(context.Background(), "k", inv); !IsRetryable(err) {
		t.Errorf("dropped connection: %v", err)
	}

	// The HTTP client's timeout is retryable, although it wraps DeadlineExceeded too.
	release := make(chan struct{})
	defer close(release)
	f.setReply(func(http.ResponseWriter, *http.Request) { <-release })
	slow := newTestClient(t, testKey, f.srv.URL, WithHTTPClient(&http.Client{Timeout: 50 * time.Millisecond}))
	if _, err := slow.CreateInvoice(context.Background(), "k", inv); !IsRetryable(err) {
		t.Errorf("client timeout: %v", err)
	}

	// The caller giving up is neither class, and says which way it gave up.
	c := newTestClient(t, testKey, f.srv.URL)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	_, err = c.CreateInvoice(ctx, "k", inv)
	if !errors.Is(err, context.Canceled) || errors.Is(err, ErrRetryable) || errors.Is(err, ErrPermanent) || errors.As(err, &se) {
		t.Errorf("canceled: %#v", err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err = c.GetInvoice(ctx, "in_1")
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrRetryable) || errors.Is(err, ErrPermanent) {
		t.Errorf("deadline: %#v", err)
	}

	// A TLS server whose certificate is not trusted: configuration, not bad luck.
	tlsSrv := httptest.NewTLSServer(http.NotFoundHandler())
	defer tlsSrv.Close()
	_, err = newTestClient(t, testKey, tlsSrv.URL).GetInvoice(context.Background(), "in_1")
	if !errors.Is(err, ErrPermanent) {
		t.Errorf("untrusted certificate: %v", err)
	}
}

// Input that cannot be right is refused before anything is sent, as permanent.
func TestInvalidInputSendsNothing(t *testing.T) {
	f := newFake(t)
	c := newTestClient(t, testKey, f.srv.URL)
	ctx := context.Background()
	inv := Invoice{CustomerID: "cus_1", Currency: "usd", LimitrInvoiceID: "i"}
	item := InvoiceItem{InvoiceID: "in_1", CustomerID: "cus_1", Currency: "usd", Description: "x"}
	for name, run := range map[string]func() error{
		"no idempotency key":      func() error { _, err := c.CreateInvoice(ctx, "", inv); return err },
		"key with spaces around":  func() error { _, err := c.CreateInvoice(ctx, " k ", inv); return err },
		"key with a newline":      func() error { _, err := c.CreateInvoice(ctx, "k\nX-Evil: 1", inv); return err },
		"key too long":            func() error { _, err := c.CreateInvoice(ctx, strings.Repeat("k", 256), inv); return err },
		"customer without our id": func() error { _, err := c.UpsertCustomer(ctx, "k", Customer{Email: "a@b.c"}); return err },
		"metadata overriding ours": func() error {
			_, err := c.UpsertCustomer(ctx, "k", Customer{LimitrCustomerID: "c", Metadata: map[string]string{MetaCustomerID: "x"}})
			return err
		},
		"metadata key with bracket": func() error {
			_, err := c.UpsertCustomer(ctx, "k", Customer{LimitrCustomerID: "c", Metadata: map[string]string{"a[b]": "x"}})
			return err
		},
		"metadata value too long": func() error {
			_, err := c.UpsertCustomer(ctx, "k", Customer{LimitrCustomerID: "c", Metadata: map[string]string{"a": strings.Repeat("é", 501)}})
			return err
		},
		"product without plan": func() error { _, err := c.EnsureProduct(ctx, "k", Product{Name: "Pro", Environment: "e"}); return err },
		"price in no currency": func() error { _, err := c.CreatePrice(ctx, "k", Price{ProductID: "p", Currency: "XXX"}); return err },
		"negative price": func() error {
			_, err := c.CreatePrice(ctx, "k", Price{ProductID: "p", Currency: "usd", UnitAmount: -1})
			return err
		},
		"price every fortnight": func() error {
			_, err := c.CreatePrice(ctx, "k", Price{ProductID: "p", Currency: "usd", Interval: "fortnight"})
			return err
		},
		"deactivate no price": func() error { return c.DeactivatePrice(ctx, "k", "") },
		"invoice without our id": func() error {
			_, err := c.CreateInvoice(ctx, "k", Invoice{CustomerID: "cus_1", Currency: "usd"})
			return err
		},
		"invoice due and charged": func() error {
			_, err := c.CreateInvoice(ctx, "k", Invoice{CustomerID: "c", Currency: "usd", LimitrInvoiceID: "i", ChargeAutomatically: true, DaysUntilDue: 3})
			return err
		},
		"invoice due in the past": func() error {
			_, err := c.CreateInvoice(ctx, "k", Invoice{CustomerID: "c", Currency: "usd", LimitrInvoiceID: "i", DaysUntilDue: -1})
			return err
		},
		"item without description": func() error { it := item; it.Description = ""; _, err := c.AddInvoiceItem(ctx, "k", it); return err },
		"item with half a period": func() error {
			it := item
			it.PeriodStart = time.Now()
			_, err := c.AddInvoiceItem(ctx, "k", it)
			return err
		},
		"item period reversed": func() error {
			it := item
			it.PeriodStart, it.PeriodEnd = time.Now(), time.Now().Add(-time.Hour)
			_, err := c.AddInvoiceItem(ctx, "k", it)
			return err
		},
		"finalize no invoice": func() error { _, err := c.FinalizeInvoice(ctx, "k", ""); return err },
		"get no invoice":      func() error { _, err := c.GetInvoice(ctx, ""); return err },
		"credit note of nothing": func() error {
			_, err := c.CreateCreditNote(ctx, "k", CreditNote{InvoiceID: "in_1", LimitrCreditNoteID: "n"})
			return err
		},
		"credit note lines and sum": func() error {
			_, err := c.CreateCreditNote(ctx, "k", CreditNote{InvoiceID: "in_1", LimitrCreditNoteID: "n", Amount: 1, Lines: []CreditNoteLine{{"x", 1}}})
			return err
		},
		"credit note negative line": func() error {
			_, err := c.CreateCreditNote(ctx, "k", CreditNote{InvoiceID: "in_1", LimitrCreditNoteID: "n", Lines: []CreditNoteLine{{"x", -1}}})
			return err
		},
		"credit note odd reason": func() error {
			_, err := c.CreateCreditNote(ctx, "k", CreditNote{InvoiceID: "in_1", LimitrCreditNoteID: "n", Amount: 1, Reason: "oops"})
			return err
		},
	} {
		err := run()
		if !errors.Is(err, ErrInvalidInput) || !errors.Is(err, ErrPermanent) || IsRetryable(err) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if n := len(f.requests()); n != 0 {
		t.Errorf("%d requests sent for invalid input", n)
	}
}

func TestNew(t *testing.T) {
	for name, tc := range map[string]struct {
		key  string
		opts []Option
	}{
		"empty key":        {"", nil},
		"key with a space": {"sk_test 1", nil},
		"key with newline": {"sk_test_1\n", nil},
		"base not a URL":   {"sk_test_1", []Option{WithAPIBase("127.0.0.1:12111")}},
		"base ftp":         {"sk_test_1", []Option{WithAPIBase("ftp://127.0.0.1")}},
		"base with query":  {"sk_test_1", []Option{WithAPIBase("http://127.0.0.1:1/?a=b")}},
	} {
		if c, err := New(tc.key, tc.opts...); err == nil {
			t.Errorf("%s: New returned %v", name, c)
		}
	}
	c, err := New(testKey)
	if err != nil || c.APIBase() != "https://api.stripe.com" {
		t.Fatalf("default base: %v, %v", c, err)
	}
}

// The secret key appears nowhere but in the Authorization header: not in errors, not in
// stripe-go's logs (at debug level, response bodies included), not when the Client is
// printed, even when the server quotes the key back.
func TestSecretKeyNeverShown(t *testing.T) {
	f := newFake(t)
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c := newTestClient(t, testKey, f.srv.URL, WithLogger(logger))

	// First successes (stripe-go logs each request and response body), then errors that
	// quote the Authorization header, in JSON and not.
	replies := []func(http.ResponseWriter, *http.Request){
		nil,
		func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusUnauthorized)
			_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{
				"type": "invalid_request_error", "message": "Invalid API Key provided: " + r.Header.Get("Authorization"),
			}})
		},
		func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusBadGateway)
			_, _ = w.Write([]byte("<html>bad gateway for " + r.Header.Get("Authorization") + "</html>"))
		},
		func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write([]byte(`{"id": 12, "echo": "` + r.Header.Get("Authorization") + `"`))
		},
	}
	var errs []string
	for _, reply := range replies {
		f.setReply(reply)
		for _, call := range everyCall() {
			if _, err := call.run(context.Background(), c); err != nil {
				errs = append(errs, err.Error(), fmt.Sprintf("%+v %#v", err, err))
			}
		}
	}
	if len(errs) == 0 {
		t.Fatal("no errors to check")
	}
	if logs.Len() == 0 {
		t.Fatal("stripe-go logged nothing at debug level")
	}
	shown := strings.Join(errs, "\n") + logs.String() + fmt.Sprintf("%v %+v %#v %v", c, c, c, *c)
	if strings.Contains(shown, testKey) {
		t.Errorf("the secret key was shown:\n%s", shown)
	}
	if !strings.Contains(shown, "[redacted]") {
		t.Errorf("expected the quoted key to show as [redacted]")
	}
	for _, r := range f.requests() {
		if r.auth != "Bearer "+testKey {
			t.Fatalf("sent Authorization %q", r.auth)
		}
	}
}
