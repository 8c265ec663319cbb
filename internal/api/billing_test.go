package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/limitr/limitr/internal/billing"
	"github.com/limitr/limitr/internal/store"
	"github.com/limitr/limitr/internal/wire"
)

type billingFixture struct {
	h     *custHarness
	tn    custTenant
	env   string
	clock string
}

func newBillingFixture(t *testing.T) *billingFixture {
	h := newCustHarness(t)
	tn := h.bootstrap("billing")
	src, err := os.ReadFile("../billing/testdata/policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	h.publish(tn, "staging", string(src))
	return &billingFixture{h: h, tn: tn, env: "staging"}
}

func (f *billingFixture) path(parts ...string) string {
	p := "/v1/environments/" + f.env
	for _, s := range parts {
		p += "/" + s
	}
	return p
}

func (f *billingFixture) call(method, path string, body any, want int) []byte {
	f.h.t.Helper()
	code, out := f.h.do(method, path, f.tn.secret, body)
	if code != want {
		f.h.t.Fatalf("%s %s: %d %s (want %d)", method, path, code, out, want)
	}
	return out
}

func (f *billingFixture) invoice(body []byte) billing.Invoice {
	f.h.t.Helper()
	var inv billing.Invoice
	if err := json.Unmarshal(body, &inv); err != nil {
		f.h.t.Fatal(err)
	}
	return inv
}

// advance moves the test clock and waits until it is ready again.
func (f *billingFixture) advance(to string) {
	f.h.t.Helper()
	out := f.call(http.MethodPost, f.path("test-clocks", f.clock, "advance"), map[string]string{"frozen_time": to}, http.StatusOK)
	var c billing.TestClock
	_ = json.Unmarshal(out, &c)
	if c.Status != billing.ClockAdvancing {
		f.h.t.Fatalf("advance: status %q", c.Status)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		_ = json.Unmarshal(f.call(http.MethodGet, f.path("test-clocks", f.clock), nil, http.StatusOK), &c)
		if c.Status == billing.ClockReady {
			return
		}
		if time.Now().After(deadline) {
			f.h.t.Fatalf("test clock still %s", c.Status)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// setUsage writes a customer's committed meter total, as aggregation would.
func (f *billingFixture) setUsage(customer, ent string, start time.Time, units, granted string) {
	f.h.t.Helper()
	_, err := f.h.pool.Exec(context.Background(), `insert into meter_aggregates (tenant_id, environment_id, customer_id, customer_uid, entitlement, period_start, credit, units, grant_covered)
		select tenant_id, environment_id, id, uid, $2, $3, 'x', $4::numeric, $5::numeric from customers where id = $1 and tenant_id = $6
		on conflict (customer_uid, entitlement, period_start) do update set units = excluded.units, grant_covered = excluded.grant_covered, updated_at = now()`,
		customer, ent, start, units, granted, f.tn.tenantID)
	if err != nil {
		f.h.t.Fatal(err)
	}
}

func amounts(inv billing.Invoice) map[string]string {
	out := map[string]string{}
	for _, l := range inv.Lines {
		out[l.Kind+":"+l.Entitlement] = l.Amount
	}
	return out
}

func TestBillingLifecycleOnATestClock(t *testing.T) {
	f := newBillingFixture(t)
	// Settings: defaults, validation naming fields, then a save.
	var set billing.Settings
	_ = json.Unmarshal(f.call(http.MethodGet, f.path("billing"), nil, http.StatusOK), &set)
	if set.Currency != "USD" || set.RuneRate != "1" || set.InvoicePrefix != "INV" || set.DaysUntilDue != 30 {
		t.Fatalf("defaults: %+v", set)
	}
	code, body := f.h.do(http.MethodPut, f.path("billing"), f.tn.secret, map[string]any{"currency": "XYZ", "rune_rate": "-1", "grace_period": "soon"})
	wantProblem(t, "bad settings", code, body, http.StatusUnprocessableEntity, "currency")
	for _, field := range []string{"rune_rate", "grace_period"} {
		wantProblem(t, "bad settings", code, body, http.StatusUnprocessableEntity, field)
	}
	f.call(http.MethodPut, f.path("billing"), map[string]any{"currency": "usd", "grace_period": "1h", "invoice_prefix": "ACME",
		"seller": map[string]string{"name": "Acme Inc"}}, http.StatusOK)

	// Test clocks are refused in the live environment.
	code, body = f.h.do(http.MethodPost, "/v1/environments/production/test-clocks", f.tn.secret, map[string]string{"frozen_time": "2026-01-10T09:30:00Z"})
	if code != http.StatusConflict {
		t.Fatalf("live environment: %d %s", code, body)
	}
	var clock billing.TestClock
	_ = json.Unmarshal(f.call(http.MethodPost, f.path("test-clocks"), map[string]string{"frozen_time": "2026-01-10T09:30:00Z"}, http.StatusCreated), &clock)
	f.clock = clock.ID
	f.call(http.MethodPost, f.path("customers"), map[string]any{"id": "acme", "plan": "basic", "test_clock": clock.ID}, http.StatusCreated)
	code, body = f.h.do(http.MethodPost, f.path("customers"), f.tn.secret, map[string]any{"id": "x", "test_clock": uuid.NewString()})
	wantProblem(t, "unknown clock", code, body, http.StatusUnprocessableEntity, "test_clock")

	start := time.Date(2026, 1, 10, 9, 30, 0, 0, time.UTC)
	f.setUsage("acme", "tokens", start, "1600000", "250000")
	up := f.invoice(f.call(http.MethodGet, f.path("customers", "acme", "invoices", "upcoming"), nil, http.StatusOK))
	if up.Status != "upcoming" || up.Number != nil || up.Total != "27.00" || !up.PeriodStart.Equal(start) ||
		!up.PeriodEnd.Equal(time.Date(2026, 2, 10, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("upcoming: %+v", up)
	}
	if a := amounts(up); a["plan_fee:"] != "20.00" || a["usage:tokens"] != "12.00" || a["credit:tokens"] != "-5.00" {
		t.Fatalf("upcoming lines: %v", a)
	}

	// The period ends: a draft, refreshed by late usage until its grace passes.
	f.advance("2026-02-10T00:30:00Z")
	var page struct {
		Data []billing.Invoice `json:"data"`
	}
	_ = json.Unmarshal(f.call(http.MethodGet, f.path("invoices")+"?customer=acme", nil, http.StatusOK), &page)
	if len(page.Data) != 1 || page.Data[0].Status != "draft" || page.Data[0].Number != nil || page.Data[0].Total != "27.00" {
		t.Fatalf("draft: %+v", page.Data)
	}
	first := page.Data[0].ID
	f.setUsage("acme", "tokens", start, "1650000", "250000")
	// Late usage lands on the draft as it arrives (the next pass), before the grace ends.
	f.advance("2026-02-10T00:40:00Z")
	if d := f.invoice(f.call(http.MethodGet, f.path("invoices", first), nil, http.StatusOK)); d.Status != "draft" || d.Total != "28.00" {
		t.Fatalf("draft after late usage: %s %s", d.Status, d.Total)
	}
	f.advance("2026-02-10T01:30:00Z")
	inv := f.invoice(f.call(http.MethodGet, f.path("invoices", first), nil, http.StatusOK))
	if inv.Status != "finalized" || inv.Number == nil || *inv.Number != "ACME-000001" || inv.Total != "28.00" || inv.DueAt == nil {
		t.Fatalf("finalized: %+v", inv)
	}
	// Frozen: usage after finalization changes nothing on it, and is billed as an
	// adjustment on the next invoice.
	f.setUsage("acme", "tokens", start, "1700000", "250000")
	f.advance("2026-03-10T02:00:00Z")
	if again := f.invoice(f.call(http.MethodGet, f.path("invoices", first), nil, http.StatusOK)); again.Total != "28.00" {
		t.Fatalf("finalized invoice changed: %+v", again)
	}
	_ = json.Unmarshal(f.call(http.MethodGet, f.path("invoices")+"?customer=acme&status=finalized", nil, http.StatusOK), &page)
	if len(page.Data) != 2 || *page.Data[0].Number != "ACME-000002" {
		t.Fatalf("second invoice: %+v", page.Data)
	}
	second := page.Data[0]
	if a := amounts(second); a["adjustment:tokens"] != "1.00" || a["plan_fee:"] != "20.00" || second.Total != "21.00" {
		t.Fatalf("adjustment: %v %s", a, second.Total)
	}

	// Credit notes never exceed the invoice.
	code, body = f.h.do(http.MethodPost, f.path("invoices", first, "credit-notes"), f.tn.secret,
		map[string]any{"reason": "goodwill", "lines": []map[string]string{{"description": "too much", "amount": "28.01"}}})
	wantProblem(t, "credit too large", code, body, http.StatusUnprocessableEntity, "lines")
	f.call(http.MethodPost, f.path("invoices", first, "credit-notes"),
		map[string]any{"reason": "goodwill", "lines": []map[string]string{{"description": "sorry", "amount": "5.50"}}}, http.StatusCreated)
	inv = f.invoice(f.call(http.MethodGet, f.path("invoices", first), nil, http.StatusOK))
	if inv.Credited != "5.50" || inv.AmountDue != "22.50" {
		t.Fatalf("after credit note: %+v", inv)
	}
	// Transitions.
	f.call(http.MethodPost, f.path("invoices", first, "mark-paid"), nil, http.StatusOK)
	f.call(http.MethodPost, f.path("invoices", first, "void"), nil, http.StatusConflict)
	f.call(http.MethodPost, f.path("invoices", second.ID, "void"), nil, http.StatusOK)
	f.call(http.MethodPost, f.path("invoices", second.ID, "finalize"), nil, http.StatusConflict)
	f.call(http.MethodGet, f.path("invoices", uuid.NewString()), nil, http.StatusNotFound)
	if n := f.h.count(`select count(*) from audit_log where action like 'invoice.%'`); n < 5 {
		t.Fatalf("audit entries: %d", n)
	}
	if n := f.h.count(`select count(*) from change_feed where kind = 'invoice'`); n < 5 {
		t.Fatalf("change feed entries: %d", n)
	}
}

// Several passes racing over the same customers make one invoice per period and
// numbers without gaps.
func TestBillingConcurrentClosesMakeOneInvoicePerPeriod(t *testing.T) {
	f := newBillingFixture(t)
	var clock billing.TestClock
	_ = json.Unmarshal(f.call(http.MethodPost, f.path("test-clocks"), map[string]string{"frozen_time": "2026-01-01T00:00:00Z"}, http.StatusCreated), &clock)
	for i := range 30 {
		f.call(http.MethodPost, f.path("customers"), map[string]any{"id": fmt.Sprintf("c%02d", i), "plan": "basic", "test_clock": clock.ID}, http.StatusCreated)
	}
	ctx := context.Background()
	env, err := store.EnvironmentByName(ctx, f.h.pool, f.tn.tenantID, f.env)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			_, err := f.h.srv.billing.Close(ctx, env, clock.ID, time.Date(2026, 4, 1, 3, 0, 0, 0, time.UTC))
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := f.h.count(`select count(*) from invoices`); n != 90 {
		t.Fatalf("%d invoices, want 30 customers × 3 periods", n)
	}
	if n := f.h.count(`select count(distinct sequence) from invoices where sequence between 1 and 90`); n != 90 {
		t.Fatalf("numbers: %d distinct in 1..90", n)
	}
}

// A purchased topup is billed when applied, at its price, on an invoice of its own.
func TestBillingTopupInvoice(t *testing.T) {
	f := newBillingFixture(t)
	f.call(http.MethodPut, f.path("billing"), map[string]any{"currency": "EUR", "rune_rate": "0.5"}, http.StatusOK)
	f.call(http.MethodPost, f.path("customers"), map[string]any{"id": "buyer", "plan": "basic"}, http.StatusCreated)
	f.call(http.MethodPost, f.path("customers", "buyer", "topups"), map[string]any{"topup": "token_pack"}, http.StatusCreated)
	var page struct {
		Data []billing.Invoice `json:"data"`
	}
	_ = json.Unmarshal(f.call(http.MethodGet, f.path("invoices")+"?customer=buyer", nil, http.StatusOK), &page)
	if len(page.Data) != 1 {
		t.Fatalf("invoices: %+v", page.Data)
	}
	inv := page.Data[0]
	// 8 runes at 0.5 EUR a rune.
	if inv.Kind != "topup" || inv.Status != "finalized" || inv.Number == nil || *inv.Number != "INV-000001" ||
		inv.Total != "4.00" || inv.Currency != "EUR" || len(inv.Lines) != 1 || inv.Lines[0].Kind != "topup" {
		t.Fatalf("topup invoice: %+v", inv)
	}
	// A free topup is not invoiced.
	f.call(http.MethodPost, f.path("customers", "buyer", "topups"), map[string]any{"topup": "token_pack", "price": "0"}, http.StatusCreated)
	if n := f.h.count(`select count(*) from invoices where kind = 'topup'`); n != 1 {
		t.Fatalf("%d topup invoices", n)
	}
}

// The SDK meters by real time; a customer on a test clock has its usage re-dated on the
// server into the period that contains the clock's time, and billed there.
func TestBillingTestClockUsageFollowsTheClock(t *testing.T) {
	f := newBillingFixture(t)
	var clock billing.TestClock
	_ = json.Unmarshal(f.call(http.MethodPost, f.path("test-clocks"), map[string]string{"frozen_time": "2030-01-10T09:30:00Z"}, http.StatusCreated), &clock)
	f.clock = clock.ID
	f.call(http.MethodPost, f.path("customers"), map[string]any{"id": "clocked", "plan": "basic", "test_clock": clock.ID}, http.StatusCreated)
	sdk, _ := f.h.sdkKey(f.tn, f.env)
	sf := &syncFixture{custHarness: f.h}
	d := wire.UsageDelta{Customer: "clocked", Entitlement: "tokens", Credit: "token", PeriodStart: time.Now().UTC().Truncate(time.Second),
		Units: "1100000", Overhead: "0", Price: "0", Calls: 1}
	if code, body := sf.usage(sdk, batch("i1", 1, d), false); code != http.StatusOK {
		t.Fatalf("usage: %d %s", code, body)
	}
	var start time.Time
	if err := f.h.pool.QueryRow(context.Background(), `select period_start from usage_deltas where customer_id = 'clocked'`).Scan(&start); err != nil {
		t.Fatal(err)
	}
	if want := time.Date(2030, 1, 10, 9, 30, 0, 0, time.UTC); !start.Equal(want) {
		t.Fatalf("usage dated %s, want the clock's period %s", start, want)
	}
	// Aggregate it as the worker would, then close the clock's period.
	if _, err := f.h.pool.Exec(context.Background(), `insert into meter_aggregates (tenant_id, environment_id, customer_id, customer_uid, entitlement, period_start, credit, units)
		select tenant_id, environment_id, customer_id, customer_uid, entitlement, period_start, credit, units from usage_deltas where customer_id = 'clocked'`); err != nil {
		t.Fatal(err)
	}
	f.advance("2030-02-10T01:30:00Z")
	var page struct {
		Data []billing.Invoice `json:"data"`
	}
	_ = json.Unmarshal(f.call(http.MethodGet, f.path("invoices")+"?customer=clocked", nil, http.StatusOK), &page)
	if len(page.Data) != 1 || page.Data[0].Total != "22.00" || page.Data[0].Status != "finalized" {
		t.Fatalf("invoice: %+v", page.Data)
	}
}

// A pass killed at any point (its transaction rolled back mid-way) and run again
// leaves one invoice per customer and period and numbers without gaps.
func TestBillingInterruptedClosesLeaveNoGaps(t *testing.T) {
	f := newBillingFixture(t)
	var clock billing.TestClock
	_ = json.Unmarshal(f.call(http.MethodPost, f.path("test-clocks"), map[string]string{"frozen_time": "2026-01-01T00:00:00Z"}, http.StatusCreated), &clock)
	ctx := context.Background()
	env, err := store.EnvironmentByName(ctx, f.h.pool, f.tn.tenantID, f.env)
	if err != nil {
		t.Fatal(err)
	}
	const n = 1200
	if _, err := f.h.pool.Exec(ctx, `insert into customers (tenant_id, environment_id, id, plan, billing_anchor, test_clock_id)
		select $1, $2, 'c' || lpad(i::text, 5, '0'), 'basic', '2026-01-01T00:00:00Z', $3::uuid from generate_series(1, $4) i`,
		env.TenantID, env.ID, clock.ID, n); err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 4, 1, 3, 0, 0, 0, time.UTC)
	interrupted := 0
	for timeout := 5 * time.Millisecond; ; timeout *= 2 {
		cctx, cancel := context.WithTimeout(ctx, timeout)
		_, err := f.h.srv.billing.Close(cctx, env, clock.ID, now)
		cancel()
		if err == nil {
			break
		}
		interrupted++
		if timeout > time.Minute {
			t.Fatal(err)
		}
	}
	t.Logf("%d interrupted passes before one finished", interrupted)
	if interrupted == 0 {
		t.Fatal("no pass was interrupted: the test proved nothing")
	}
	if got := f.h.count(`select count(*) from invoices`); got != 3*n {
		t.Fatalf("%d invoices, want %d", got, 3*n)
	}
	if got := f.h.count(`select count(*) from (select distinct sequence from invoices) s where sequence between 1 and $1`, 3*n); got != 3*n {
		t.Fatalf("%d distinct numbers in 1..%d", got, 3*n)
	}
	if got := f.h.count(`select coalesce(max(last_number), 0) from invoice_counters`); got != 3*n {
		t.Fatalf("counter at %d, want %d", got, 3*n)
	}
}

// A plan change mid-period (dated by the database, on the clock's time) is prorated
// to the second on that period's invoice.
func TestBillingPlanChangeIsProrated(t *testing.T) {
	f := newBillingFixture(t)
	var clock billing.TestClock
	_ = json.Unmarshal(f.call(http.MethodPost, f.path("test-clocks"), map[string]string{"frozen_time": "2026-02-01T00:00:00Z"}, http.StatusCreated), &clock)
	f.clock = clock.ID
	f.call(http.MethodPost, f.path("customers"), map[string]any{"id": "mover", "plan": "basic", "test_clock": clock.ID}, http.StatusCreated)
	f.advance("2026-02-08T00:00:00Z") // a quarter of February
	f.call(http.MethodPut, f.path("customers", "mover", "plan"), map[string]any{"plan": "pro"}, http.StatusOK)
	up := f.invoice(f.call(http.MethodGet, f.path("customers", "mover", "invoices", "upcoming"), nil, http.StatusOK))
	// basic 20 in full, −15 for its unused three quarters, and pro from the end of its
	// 14-day trial (counted from the customer's start, 02-01) on 02-15: half of the
	// period, 49.50.
	var kinds []string
	for _, l := range up.Lines {
		kinds = append(kinds, l.Kind+" "+l.Amount)
	}
	if got := strings.Join(kinds, ", "); got != "plan_fee 20.00, proration -15.00, proration 49.50" || up.Total != "54.50" {
		t.Fatalf("upcoming after the upgrade: %s = %s", got, up.Total)
	}
	f.advance("2026-03-01T01:30:00Z")
	var page struct {
		Data []billing.Invoice `json:"data"`
	}
	_ = json.Unmarshal(f.call(http.MethodGet, f.path("invoices")+"?customer=mover", nil, http.StatusOK), &page)
	if len(page.Data) != 1 || page.Data[0].Total != "54.50" || page.Data[0].Status != "finalized" {
		t.Fatalf("invoice: %+v", page.Data)
	}
}

// The printable document of a finalized invoice: HTML with its number, lines, totals
// and credit notes, every value escaped; unknown invoices are 404 problems.
func TestInvoiceDocument(t *testing.T) {
	f := newBillingFixture(t)
	f.call(http.MethodPut, f.path("billing"), map[string]any{"seller": map[string]any{"name": "Acme <script>alert(1)</script> Inc",
		"address": []string{"1 Rue de la Paix", "75002 Paris"}, "email": "billing@acme.test", "tax_id": "FR123"}}, http.StatusOK)
	var clock billing.TestClock
	_ = json.Unmarshal(f.call(http.MethodPost, f.path("test-clocks"), map[string]string{"frozen_time": "2026-01-10T09:30:00Z"}, http.StatusCreated), &clock)
	f.clock = clock.ID
	f.call(http.MethodPost, f.path("customers"), map[string]any{"id": "acme", "plan": "basic", "test_clock": clock.ID,
		"metadata": map[string]any{"name": "Globex & Co", "email": "ap@globex.test", "crm_notes": "churn risk"}}, http.StatusCreated)
	f.setUsage("acme", "tokens", time.Date(2026, 1, 10, 9, 30, 0, 0, time.UTC), "1600000", "250000")
	f.advance("2026-02-10T01:30:00Z")
	var page struct {
		Data []billing.Invoice `json:"data"`
	}
	_ = json.Unmarshal(f.call(http.MethodGet, f.path("invoices")+"?customer=acme", nil, http.StatusOK), &page)
	if len(page.Data) != 1 || page.Data[0].Status != billing.StatusFinalized {
		t.Fatalf("invoices: %+v", page.Data)
	}
	inv := page.Data[0]
	f.call(http.MethodPost, f.path("invoices", inv.ID, "credit-notes"),
		map[string]any{"reason": "goodwill", "lines": []map[string]string{{"description": "outage on the 3rd", "amount": "5.50"}}}, http.StatusCreated)

	get := func(id string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodGet, f.path("invoices", id, "document"), nil)
		req.Header.Set("Authorization", "Bearer "+f.tn.secret)
		rec := httptest.NewRecorder()
		f.h.srv.Handler().ServeHTTP(rec, req)
		return rec
	}
	rec := get(inv.ID)
	body := rec.Body.String()
	if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "text/html; charset=utf-8" {
		t.Fatalf("document: %d %s\n%s", rec.Code, rec.Header().Get("Content-Type"), body)
	}
	if csp := rec.Header().Get("Content-Security-Policy"); !strings.HasPrefix(csp, "default-src 'none'") {
		t.Errorf("Content-Security-Policy %q", csp)
	}
	oaConform(t, oaDoc(t), http.MethodGet, "/v1/environments/{env}/invoices/{invoice}/document", rec.Code, rec.Header(), rec.Body.Bytes())
	for _, want := range []string{"<!DOCTYPE html>", "INV-000001", "Acme &lt;script&gt;alert(1)&lt;/script&gt; Inc", "75002 Paris",
		"Globex &amp; Co", "ap@globex.test", "<span>Customer ID:</span> acme",
		"<td>Plan basic</td>", ">20.00<", "tokens: 600000 token over the 1000000 included", ">12.00<", ">-5.00<",
		"27.00 USD", "5.50 USD", "21.50 USD", "outage on the 3rd"} {
		if !strings.Contains(body, want) {
			t.Errorf("document lacks %q", want)
		}
	}
	if strings.Contains(body, "<script") || strings.Contains(body, "churn risk") {
		t.Errorf("document shows markup or private metadata:\n%s", body)
	}
	for _, id := range []string{uuid.NewString(), "not-an-id"} {
		rec := get(id)
		if rec.Code != http.StatusNotFound || !strings.HasPrefix(rec.Header().Get("Content-Type"), "application/problem+json") {
			t.Errorf("unknown invoice %s: %d %s %s", id, rec.Code, rec.Header().Get("Content-Type"), rec.Body)
		}
	}
}

// A pass that catches up several periods of a customer bills late usage of an
// invoiced meter period once: on the first of the new invoices, which records it.
func TestBillingCatchUpBillsLateUsageOnce(t *testing.T) {
	f := newBillingFixture(t)
	f.call(http.MethodPut, f.path("billing"), map[string]any{"grace_period": "0s"}, http.StatusOK)
	var clock billing.TestClock
	_ = json.Unmarshal(f.call(http.MethodPost, f.path("test-clocks"), map[string]string{"frozen_time": "2026-01-10T09:30:00Z"}, http.StatusCreated), &clock)
	f.call(http.MethodPost, f.path("customers"), map[string]any{"id": "acme", "plan": "basic", "test_clock": clock.ID}, http.StatusCreated)
	ctx := context.Background()
	env, err := store.EnvironmentByName(ctx, f.h.pool, f.tn.tenantID, f.env)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 1, 10, 9, 30, 0, 0, time.UTC)
	f.setUsage("acme", "tokens", start, "1600000", "0")
	if res, err := f.h.srv.billing.Close(ctx, env, clock.ID, time.Date(2026, 2, 15, 0, 0, 0, 0, time.UTC)); err != nil || res.Finalized != 1 {
		t.Fatalf("first close: %+v %v", res, err)
	}
	f.setUsage("acme", "tokens", start, "1700000", "0")
	if res, err := f.h.srv.billing.Close(ctx, env, clock.ID, time.Date(2026, 4, 15, 0, 0, 0, 0, time.UTC)); err != nil || res.Finalized != 2 {
		t.Fatalf("catch-up close: %+v %v", res, err)
	}
	var page struct {
		Data []billing.Invoice `json:"data"`
	}
	_ = json.Unmarshal(f.call(http.MethodGet, f.path("invoices")+"?customer=acme", nil, http.StatusOK), &page)
	adjusted := map[string]string{}
	for _, inv := range page.Data {
		adjusted[*inv.Number] = amounts(inv)["adjustment:tokens"]
	}
	if adjusted["INV-000002"] != "2.00" || adjusted["INV-000003"] != "" {
		t.Fatalf("late usage billed as %v, want +2.00 once, on INV-000002", adjusted)
	}
	var number, units string
	if err := f.h.pool.QueryRow(ctx, `select i.number, b.units::text from billed_meter_periods b join invoices i on i.id = b.invoice_id
		where b.entitlement = 'tokens' and b.period_start = $1`, start).Scan(&number, &units); err != nil {
		t.Fatal(err)
	}
	if number != "INV-000002" || units != "1700000" {
		t.Fatalf("billed meter period: invoice %s, units %s", number, units)
	}
	if n := f.h.count(`select count(*) from audit_log where action = 'invoice.finalized'`); n != 3 {
		t.Fatalf("%d audit entries, want 3", n)
	}
}

// An environment is live (no test clocks) when it says so; production by default.
func TestBillingLiveEnvironments(t *testing.T) {
	f := newBillingFixture(t)
	var env struct {
		Live bool `json:"live"`
	}
	_ = json.Unmarshal(f.call(http.MethodPost, "/v1/environments", map[string]any{"name": "eu-prod", "live": true}, http.StatusCreated), &env)
	if !env.Live {
		t.Fatal("eu-prod is not live")
	}
	code, body := f.h.do(http.MethodPost, "/v1/environments/eu-prod/test-clocks", f.tn.secret, map[string]string{"frozen_time": "2026-01-01T00:00:00Z"})
	if code != http.StatusConflict {
		t.Fatalf("a test clock in a live environment: %d %s", code, body)
	}
	_ = json.Unmarshal(f.call(http.MethodPost, "/v1/environments", map[string]any{"name": "sandbox"}, http.StatusCreated), &env)
	if env.Live {
		t.Fatal("sandbox is live by default")
	}
	f.call(http.MethodPost, "/v1/environments/sandbox/test-clocks", map[string]string{"frozen_time": "2026-01-01T00:00:00Z"}, http.StatusCreated)
}

// A customer deleted mid-period still owes what it used: its last period is invoiced
// when it ends, from the record kept at deletion, and nothing after it.
func TestBillingDeletedCustomerIsBilledForItsLastPeriod(t *testing.T) {
	f := newBillingFixture(t)
	ctx := context.Background()
	var c struct {
		CreatedAt time.Time `json:"created_at"`
	}
	_ = json.Unmarshal(f.call(http.MethodPost, f.path("customers"), map[string]any{"id": "leaver", "plan": "basic"}, http.StatusCreated), &c)
	f.setUsage("leaver", "tokens", c.CreatedAt, "1500000", "0")
	f.call(http.MethodDelete, f.path("customers", "leaver"), nil, http.StatusNoContent)
	env, err := store.EnvironmentByName(ctx, f.h.pool, f.tn.tenantID, f.env)
	if err != nil {
		t.Fatal(err)
	}
	later := c.CreatedAt.AddDate(0, 3, 0)
	for range 2 {
		if _, err := f.h.srv.billing.Close(ctx, env, "", later); err != nil {
			t.Fatal(err)
		}
	}
	var page struct {
		Data []billing.Invoice `json:"data"`
	}
	_ = json.Unmarshal(f.call(http.MethodGet, f.path("invoices")+"?customer=leaver", nil, http.StatusOK), &page)
	if len(page.Data) != 1 || page.Data[0].Status != "finalized" || page.Data[0].Total != "30.00" || !page.Data[0].PeriodStart.Equal(c.CreatedAt) {
		t.Fatalf("invoices of the deleted customer: %+v", page.Data)
	}
}
