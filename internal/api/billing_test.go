package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/limitr/limitr/internal/billing"
	"github.com/limitr/limitr/internal/store"
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

// A pass that catches up several periods of a customer finalizes them together; when
// late usage of an invoiced meter period is adjusted on more than one of them, the
// meter period is recorded once, as the later-numbered invoice billed it.
func TestBillingCatchUpRecordsAMeterPeriodOnce(t *testing.T) {
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
	var number, units string
	if err := f.h.pool.QueryRow(ctx, `select i.number, b.units::text from billed_meter_periods b join invoices i on i.id = b.invoice_id
		where b.entitlement = 'tokens' and b.period_start = $1`, start).Scan(&number, &units); err != nil {
		t.Fatal(err)
	}
	if number != "INV-000003" || units != "1700000" {
		t.Fatalf("billed meter period: invoice %s, units %s", number, units)
	}
	if n := f.h.count(`select count(*) from audit_log where action = 'invoice.finalized'`); n != 3 {
		t.Fatalf("%d audit entries, want 3", n)
	}
}
