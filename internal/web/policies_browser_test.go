package web_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/limitr/limitr/internal/web/webtest"

	"github.com/chromedp/chromedp"

	"github.com/limitr/limitr/internal/api"
	"github.com/limitr/limitr/internal/platform/pgtest"
	"github.com/limitr/limitr/internal/tenancy"
	"github.com/limitr/limitr/internal/users"
	"github.com/limitr/limitr/internal/web"
	limitr "github.com/limitr/limitr/sdk/go"
)

const browserPassword = "correct horse battery"

const seatsOne = `policy:
  credits:
    seat:
      description: A seat.
  plans:
    free:
      entitlements:
        seats:
          limit:
            credit: seat
            value: 1
`

// restCall sends a JSON (or raw) request to the API with a bearer key.
func restCall(t *testing.T, base, method, path, key, contentType string, body []byte) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, base+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	if body != nil {
		req.Header.Set("Content-Type", contentType)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	data, _ := io.ReadAll(res.Body)
	return res, data
}

// TestBrowserPolicyPublishReachesSDK is the "change pricing without a deploy" path in a
// real Chromium against the whole server (API and dashboard, one process): an editor
// writes a version, sees a validation error with its path, fixes it, sees the diff,
// runs the what-if, publishes with confirmation, and a connected SDK enforces it.
func TestBrowserPolicyPublishReachesSDK(t *testing.T) {
	_, pool := pgtest.NewMigrated(t)
	ctx := t.Context()
	hash := users.Config{Hash: users.HashParams{Memory: 1024, Time: 1, Threads: 1}}
	srv, err := api.New(api.Config{OperatorToken: "op", Sessions: hash}, api.Deps{Pool: pool, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(func() { ts.Close(); _ = srv.Close() })

	// A tenant with version 1 published to production, an SDK key, a customer, and an editor.
	b, err := tenancy.NewService(pool).CreateTenant(ctx, tenancy.CreateTenantInput{Slug: "acme", Name: "Acme Inc"})
	if err != nil {
		t.Fatal(err)
	}
	admin := b.Secret
	if res, data := restCall(t, ts.URL, http.MethodPost, "/v1/policies", admin, "application/yaml", []byte(seatsOne)); res.StatusCode != http.StatusCreated {
		t.Fatalf("create v1: %d %s", res.StatusCode, data)
	}
	if res, data := restCall(t, ts.URL, http.MethodPost, "/v1/environments/production/publish", admin, "application/json", []byte(`{"version":1}`)); res.StatusCode != http.StatusOK {
		t.Fatalf("publish v1: %d %s", res.StatusCode, data)
	}
	if res, data := restCall(t, ts.URL, http.MethodPost, "/v1/environments/production/customers", admin, "application/json", []byte(`{"id":"c1","plan":"free"}`)); res.StatusCode != http.StatusCreated {
		t.Fatalf("create customer: %d %s", res.StatusCode, data)
	}
	res, data := restCall(t, ts.URL, http.MethodPost, "/v1/keys", admin, "application/json", []byte(`{"kind":"sdk","environment":"production","name":"app"}`))
	var key struct {
		Secret string `json:"secret"`
	}
	if res.StatusCode != http.StatusCreated || json.Unmarshal(data, &key) != nil {
		t.Fatalf("create sdk key: %d %s", res.StatusCode, data)
	}
	us, err := users.NewService(pool, hash)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := us.CreateUser(ctx, users.CreateUserInput{TenantID: b.Tenant.ID, Email: "editor@acme.test", Password: browserPassword, Role: users.RoleEditor}); err != nil {
		t.Fatal(err)
	}

	// The app: an SDK in cloud mode, enforcing version 1 (one seat).
	sdkCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	sdk, err := limitr.Cloud(sdkCtx, key.Secret, limitr.WithBaseURL(ts.URL), limitr.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatalf("limitr.Cloud: %v", err)
	}
	t.Cleanup(func() {
		c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = sdk.Close(c)
	})
	if ok, err := sdk.Allow(ctx, "c1", "seats", 3); err != nil || ok || sdk.VersionNumber() != 1 {
		t.Fatalf("under v1, 3 seats: %v %v (version %d)", ok, err, sdk.VersionNumber())
	}

	tab := web.SharedBrowser(t).Tab(t, 60*time.Second)
	bad := strings.Replace(seatsOne, "value: 1", "value: 5", 1)
	bad = strings.Replace(bad, "credit: seat", "credit: sofa", 1)
	good := strings.Replace(seatsOne, "value: 1", "value: 5", 1)
	text := func(sel string) string {
		t.Helper()
		v, err := chromedp.Run(tab, chromedp.Text(sel))
		if err != nil {
			t.Fatalf("read %s: %v", sel, err)
		}
		return v
	}
	if err := chromedp.Do(tab,
		chromedp.Navigate(ts.URL+"/login"),
		chromedp.WaitVisible("#login"),
		chromedp.SendKeys(`#login input[name="email"]`, "editor@acme.test"),
		chromedp.SendKeys(`#login input[name="password"]`, browserPassword),
		chromedp.Click(`#login button[type="submit"]`),
		chromedp.WaitVisible("#nav"), webtest.Settled(),
		// Look at production.
		chromedp.SetValue(`select[name="environment"]`, "production"),
		chromedp.Click(`form.env button`),
		chromedp.WaitReady(`option[value="production"][selected]`), webtest.Settled(),
		// The editor: an invalid document first.
		chromedp.Navigate(ts.URL+"/policies/new"),
		chromedp.WaitVisible(`#editor textarea[name="source"]`), webtest.Settled(),
		chromedp.SetValue(`#editor textarea[name="source"]`, bad),
		chromedp.Click("#validate"),
		chromedp.WaitVisible(".problem .path"),
	); err != nil {
		t.Fatalf("validate in the editor: %v", err)
	}
	if problems := text("#problems"); !strings.Contains(problems, "policy.plans.free.entitlements.seats.limit.credit") {
		t.Fatalf("the validation error lacks its path: %q", problems)
	}
	kept, err := chromedp.Run(tab, chromedp.Value(`#editor textarea[name="source"]`))
	if err != nil || !strings.Contains(kept, "credit: sofa") {
		t.Errorf("the editor lost the text on error: %q %v", kept, err)
	}
	if err := chromedp.Do(tab,
		// The validation's swap may still be settling: a click on a node htmx is about
		// to replace goes nowhere.
		webtest.Settled(),
		chromedp.SetValue(`#editor textarea[name="source"]`, good),
		chromedp.Click("#save"),
		chromedp.WaitVisible("table.diff"), webtest.Settled(),
	); err != nil {
		t.Fatalf("save: %v", err)
	}
	if diff := text("#diff"); !strings.Contains(diff, "plans.free.entitlements.seats.limit.value") || !strings.Contains(diff, "5") {
		t.Fatalf("the diff against the active version: %q", diff)
	}
	// The what-if, computed now.
	if err := chromedp.Do(tab, chromedp.Click("#dry-run"), chromedp.WaitVisible("#sim-totals")); err != nil {
		t.Fatalf("what-if: %v", err)
	}
	if status, totals := text("#sim-status"), text("#sim-totals"); status != "succeeded" || !strings.Contains(totals, "Margin") {
		t.Fatalf("what-if result: %q %q", status, totals)
	}
	// Publish, confirmed.
	if err := chromedp.Do(tab,
		chromedp.Navigate(ts.URL+"/policies/2"),
		chromedp.WaitVisible("#publish"), webtest.Settled(),
		chromedp.Click(`#publish input[name="confirm"]`),
		chromedp.Click(`#publish button[type="submit"]`),
		chromedp.WaitVisible("#notice"),
	); err != nil {
		t.Fatalf("publish: %v", err)
	}
	if notice := text("#notice"); !strings.Contains(notice, "Published") {
		t.Fatalf("after publish: %q", notice)
	}

	// The SDK key's poll path serves version 2, and the connected SDK enforces it.
	res, data = restCall(t, ts.URL, http.MethodGet, "/v1/sdk/policy", key.Secret, "", nil)
	if res.StatusCode != http.StatusOK || res.Header.Get(api.HeaderPolicyVersion) != "2" {
		t.Fatalf("GET /v1/sdk/policy: %d version %q %s", res.StatusCode, res.Header.Get(api.HeaderPolicyVersion), data)
	}
	deadline := time.Now().Add(10 * time.Second)
	for sdk.VersionNumber() != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("the connected SDK still runs version %d", sdk.VersionNumber())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if ok, err := sdk.Allow(ctx, "c1", "seats", 3); err != nil || !ok {
		t.Fatalf("under v2 (5 seats), 3 seats: %v %v", ok, err)
	}
}
