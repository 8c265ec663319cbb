package api

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/limitr/limitr/internal/analytics"
	"github.com/limitr/limitr/internal/billing"
)

// The analytics endpoints over booked usage: the margins of the current period are the
// upcoming invoice's total, per customer and by plan, and the live customer margin says
// the same.
func TestAnalyticsEndpoints(t *testing.T) {
	t.Parallel()
	f := newBillingFixture(t)
	var clock billing.TestClock
	_ = json.Unmarshal(f.call(http.MethodPost, f.path("test-clocks"), map[string]string{"frozen_time": "2026-01-10T09:30:00Z"}, http.StatusCreated), &clock)
	f.clock = clock.ID
	f.call(http.MethodPost, f.path("customers"), map[string]any{"id": "acme", "plan": "basic", "test_clock": clock.ID, "alt_ids": []string{"cus_acme"}}, http.StatusCreated)
	start := time.Date(2026, 1, 10, 9, 30, 0, 0, time.UTC)
	f.setUsage("acme", "tokens", start, "1600000", "250000")
	f.setUsage("acme", "images", start, "2000", "0")

	svc := analytics.NewService(f.h.pool, f.h.srv.billing)
	booker := svc.NewBooker(analytics.BookerConfig{})
	if err := booker.Sweep(t.Context()); err != nil {
		t.Fatal(err)
	}
	up := f.invoice(f.call(http.MethodGet, f.path("customers", "acme", "invoices", "upcoming"), nil, http.StatusOK))

	var m analytics.Margins
	_ = json.Unmarshal(f.call(http.MethodGet, f.path("analytics", "margins")+"?from=2026-01-10T00:00:00Z&to=2026-02-10T00:00:00Z&interval=day", nil, http.StatusOK), &m)
	if len(m.Groups) != 1 || m.Groups[0].Key != "acme" || m.Groups[0].Totals.Revenue != up.Total || m.Totals.Revenue != up.Total || m.Currency != "USD" {
		t.Fatalf("margins: upcoming %s, %+v", up.Total, m)
	}
	if m.Groups[0].Totals.GrantCoveredRevenue != "5.00" {
		t.Fatalf("grant-covered revenue: %+v", m.Groups[0].Totals)
	}
	_ = json.Unmarshal(f.call(http.MethodGet, f.path("analytics", "margins")+"?group_by=plan&from=2026-01-01T00:00:00Z&to=2026-03-01T00:00:00Z&interval=month", nil, http.StatusOK), &m)
	if len(m.Groups) != 1 || m.Groups[0].Key != "basic" || m.Groups[0].Totals.Revenue != up.Total || len(m.Groups[0].Series) != 1 {
		t.Fatalf("by plan: %+v", m)
	}
	var live analytics.CustomerMargin
	_ = json.Unmarshal(f.call(http.MethodGet, f.path("customers", "cus_acme", "margin"), nil, http.StatusOK), &live)
	if live.Customer != "acme" || live.Totals.Revenue != up.Total || len(live.Entitlements) != 2 || !live.PeriodStart.Equal(start) {
		t.Fatalf("live margin: upcoming %s, %+v", up.Total, live)
	}
	var u analytics.Usage
	_ = json.Unmarshal(f.call(http.MethodGet, f.path("analytics", "usage")+"?customer=acme&entitlement=images&from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z", nil, http.StatusOK), &u)
	if len(u.Series) != 1 || u.Series[0].Points[0].Units != "2000" {
		t.Fatalf("usage: %+v", u)
	}
	for _, bad := range []struct{ query, field string }{
		{"?group_by=region", "group_by"}, {"?from=2026-02-01", "from"}, {"?limit=0", "limit"}, {"?sort=name", "sort"},
		{"?interval=hour&from=2025-01-01T00:00:00Z&to=2026-01-01T00:00:00Z", "to"}, {"?cursor=abc", "cursor"},
	} {
		code, body := f.h.do(http.MethodGet, f.path("analytics", "margins")+bad.query, f.tn.secret, nil)
		wantProblem(t, bad.query, code, body, http.StatusUnprocessableEntity, bad.field)
	}
}
