package web

import (
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/limitr/limitr/internal/web/webtest"
)

// shared is the package's one Chromium, started by the first browser test and closed
// by TestMain.
var shared struct {
	once    sync.Once
	browser *webtest.Browser
	err     error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.browser != nil {
		shared.browser.Close()
	}
	os.Exit(code)
}

func browserFor(t *testing.T) *webtest.Browser {
	t.Helper()
	shared.once.Do(func() { shared.browser, shared.err = webtest.Start() })
	if shared.err != nil {
		t.Fatal(shared.err) // never a skip: a missing browser must fail CI
	}
	return shared.browser
}

// TestBrowserLoginLogout logs in through the form in a real Chromium, lands on the
// Overview with its navigation, and logs out, with htmx loaded under the CSP.
func TestBrowserLoginLogout(t *testing.T) {
	e := newEnv(t, Config{})
	ctx := browserFor(t).Tab(t, 30*time.Second)
	if err := chromedp.Do(ctx,
		chromedp.Navigate(e.srv.URL+"/"),
		chromedp.WaitVisible("#login"),
		chromedp.SendKeys(`#login input[name="email"]`, "owner@acme.test"),
		chromedp.SendKeys(`#login input[name="password"]`, testPassword),
		chromedp.Click(`#login button[type="submit"]`),
		chromedp.WaitVisible("#nav"),
	); err != nil {
		t.Fatalf("log in: %v", err)
	}
	nav, err := chromedp.Run(ctx, chromedp.Text("#nav"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Overview", "Policies", "Customers", "Invoices", "Alerts", "Settings"} {
		if !strings.Contains(nav, want) {
			t.Errorf("the navigation lacks %q: %q", want, nav)
		}
	}
	loc, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil || loc != e.srv.URL+"/" {
		t.Fatalf("landed on %q (%v), want the Overview", loc, err)
	}
	htmx, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`typeof htmx === "object"`))
	if err != nil || !htmx {
		t.Errorf("htmx is not loaded (CSP?): %v", err)
	}
	if err := chromedp.Do(ctx, webtest.Settled(),
		chromedp.Click("#logout"),
		chromedp.WaitVisible("#login"),
	); err != nil {
		t.Fatalf("log out: %v", err)
	}
	// Logged out for real: the Overview sends the browser back to the login form.
	if err := chromedp.Do(ctx, chromedp.Navigate(e.srv.URL+"/"), chromedp.WaitVisible("#login")); err != nil {
		t.Fatalf("after logout: %v", err)
	}
}

// TestBrowserOverviewAndAlertRule logs in, sees the Overview's SVG chart, and creates
// an alert rule through the form, which is then listed.
func TestBrowserOverviewAndAlertRule(t *testing.T) {
	e := newEnv(t, Config{})
	prod := e.production()
	publishExample(t, e.deps, prod)
	e.seedMargins(prod)
	ch := e.webhookChannel(prod, "ops", "https://example.com/hook")
	ctx := browserFor(t).Tab(t, 45*time.Second)
	if err := chromedp.Do(ctx,
		chromedp.Navigate(e.srv.URL+"/login"),
		chromedp.WaitVisible("#login"),
		chromedp.SendKeys(`#login input[name="email"]`, "owner@acme.test"),
		chromedp.SendKeys(`#login input[name="password"]`, testPassword),
		chromedp.Click(`#login button[type="submit"]`),
		chromedp.WaitVisible("#trend svg.chart"),
	); err != nil {
		t.Fatalf("log in and see the chart: %v", err)
	}
	lines, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("#trend svg.chart polyline").length`))
	if err != nil || lines != 3 {
		t.Errorf("the trend chart has %d lines (%v), want revenue, cost and margin", lines, err)
	}
	if err := chromedp.Do(ctx,
		chromedp.Navigate(e.srv.URL+"/alerts/rules/new"),
		chromedp.WaitVisible("#rule-form"),
		chromedp.SendKeys(`#rule-form input[name="name"]`, "Input tokens at 90%"),
		chromedp.SetValue(`#rule-form input[name="thresholds"]`, "90"),
		chromedp.Click(`#rule-form input[name="channels"][value="`+ch.ID.String()+`"]`),
		chromedp.Click(`#rule-form button[type="submit"]`),
		chromedp.WaitVisible("#rules"),
	); err != nil {
		t.Fatalf("create a rule: %v", err)
	}
	rules, err := chromedp.Run(ctx, chromedp.Text("#rules"))
	if err != nil || !strings.Contains(rules, "Input tokens at 90%") || !strings.Contains(rules, "ops") {
		t.Fatalf("the rule is not listed: %q %v", rules, err)
	}
}
