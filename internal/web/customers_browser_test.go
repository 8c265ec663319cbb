package web

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/limitr/limitr/internal/billing"
	"github.com/limitr/limitr/internal/customers"
	"github.com/limitr/limitr/internal/web/webtest"
)

// TestBrowserCustomerAndInvoice finds a customer by alt id in a real Chromium, sees
// its meters as bars and its live margin, then finalizes its draft invoice through the
// confirmation step and sees it numbered.
func TestBrowserCustomerAndInvoice(t *testing.T) {
	f := newFullEnv(t)
	ctx := t.Context()
	clock, err := f.billing.CreateTestClock(ctx, f.staging, billing.TestClockInput{FrozenTime: "2026-01-10T09:30:00Z"})
	if err != nil {
		t.Fatal(err)
	}
	f.createCustomer(customers.CreateInput{ID: "acme", Plan: "basic", AltIDs: []string{"acme-alt"}, TestClock: clock.ID})
	start := time.Date(2026, 1, 10, 9, 30, 0, 0, time.UTC)
	f.setUsage("acme", "tokens", start, "600000", "0")
	f.setUsage("acme", "images", start, "20", "0")

	tab := browserFor(t).Tab(t, 60*time.Second)
	if err := chromedp.Do(tab,
		chromedp.Navigate(f.srv.URL+"/login"),
		chromedp.WaitVisible("#login"),
		chromedp.SendKeys(`#login input[name="email"]`, "owner@acme.test"),
		chromedp.SendKeys(`#login input[name="password"]`, testPassword),
		chromedp.Click(`#login button[type="submit"]`),
		chromedp.WaitVisible("#nav"), webtest.Settled(),
		chromedp.SetValue(`header select[name="environment"]`, "staging"),
		chromedp.Click(`header form.env button`),
		chromedp.WaitReady(`header option[value="staging"][selected]`), webtest.Settled(),
		chromedp.Click(`#nav a[href="/customers"]`),
		chromedp.WaitVisible("#customer-search"), webtest.Settled(),
		chromedp.SendKeys(`#customer-search input[name="q"]`, "acme-alt"),
		chromedp.Click(`#customer-search button`),
		chromedp.WaitVisible(`#customers a[href="/customers/acme"]`), webtest.Settled(),
		chromedp.Click(`#customers a[href="/customers/acme"]`),
		chromedp.WaitVisible(`#meters meter.usage`), webtest.Settled(),
	); err != nil {
		t.Fatalf("find the customer: %v", err)
	}
	bars, err := chromedp.Run(tab, chromedp.Evaluate[[]string](
		`Array.from(document.querySelectorAll("#meters meter.usage")).map(m => m.closest("tr").dataset.entitlement + "=" + m.value + "/" + m.max)`))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(bars, " ") != "tokens=600000/1000000 images=20/50" {
		t.Fatalf("meter bars: %q", bars)
	}
	margin, err := chromedp.Run(tab, chromedp.Text("#margin"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(margin, "tokens") || !strings.Contains(margin, "images") || !regexp.MustCompile(`Total \(USD\)\s+\d+\.\d\d`).MatchString(margin) {
		t.Fatalf("margin: %q", margin)
	}

	// The period ends on the clock: a draft.
	if _, err := f.billing.Close(ctx, f.staging, clock.ID, time.Date(2026, 2, 10, 0, 30, 0, 0, time.UTC)); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(tab, chromedp.Click(`#nav a[href="/invoices"]`), chromedp.WaitVisible(`#invoices tbody a`), webtest.Settled()); err != nil {
		t.Fatalf("the invoices: %v", err)
	}
	// The invoice is opened by its address: a click on its link can land while htmx is
	// still swapping the list in, and go nowhere.
	href, err := chromedp.Run(tab, chromedp.AttributeValue(`#invoices tbody a`, "href"))
	if err != nil || href.Value == "" {
		t.Fatalf("the invoice's link: %q, %v", href.Value, err)
	}
	for i, a := range []chromedp.Action[chromedp.Void]{
		chromedp.Navigate(f.srv.URL + href.Value),
		chromedp.WaitVisible(`#action-finalize`), webtest.Settled(),
		chromedp.Click(`#action-finalize`),
		chromedp.WaitVisible(`#confirm-yes`), webtest.Settled(),
		chromedp.Click(`#confirm-yes`),
		chromedp.WaitVisible(`#invoice-status.status-finalized`),
	} {
		if err := chromedp.Do(tab, a); err != nil {
			t.Fatalf("finalize, step %d: %v", i, err)
		}
	}
	status, err := chromedp.Run(tab, chromedp.Text("#invoice-status"))
	if err != nil || status != "finalized" {
		t.Fatalf("status %q, %v", status, err)
	}
	number, err := chromedp.Run(tab, chromedp.Text("#invoice-number"))
	if err != nil || number != "INV-000001" {
		t.Fatalf("number %q, %v", number, err)
	}
}
