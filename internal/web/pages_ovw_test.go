package web

import (
	"html"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/limitr/limitr/internal/alerts"
	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/store"
	"github.com/limitr/limitr/internal/tenancy"
)

// production is the test tenant's environment the pages show.
func (e *env) production() store.Environment {
	e.t.Helper()
	envs, err := e.deps.Tenancy.ListEnvironments(e.t.Context(), e.tenant.ID)
	if err != nil || len(envs) == 0 {
		e.t.Fatalf("environments: %v %v", envs, err)
	}
	return envs[0]
}

// seedMargins writes what the analytics booker would have for two customers of plan
// "pro" over the last three days: cus_loss costs more than it brings.
func (e *env) seedMargins(environment store.Environment) {
	e.t.Helper()
	ctx := e.t.Context()
	today := time.Now().UTC().Truncate(24 * time.Hour)
	for _, st := range []struct {
		sql  string
		args []any
	}{
		{`insert into analytics_customer_days (environment_id, day, customer_uid, customer_id, plan, customer_type, calls, cost,
			usage_revenue, grant_revenue, fee_revenue, topup_revenue, rank_revenue, rank_cost)
		  select $1::uuid, d::date, c.uid, c.id, 'pro', 'user', 10 * n, c.cost * n, c.rev * n, 0, 0, 0, c.rev * n, c.cost * n
		  from (values ($2::uuid, 'cus_loss', 3.0, 2.0), ($3::uuid, 'cus_good', 1.0, 5.0)) c(uid, id, cost, rev),
		       generate_series($4::date - 2, $4::date, interval '1 day') with ordinality g(d, n)`,
			[]any{environment.ID, uuid.New(), uuid.New(), today}},
		{`insert into analytics_group_daily (environment_id, bucket, plan, customer_type, entitlement, units, calls, cost,
			usage_revenue, grant_revenue, fee_revenue, topup_revenue)
		  select $1::uuid, d, 'pro', 'user', 'ai_input_token', 100, 20, 4, 7, 0, 0, 0
		  from generate_series($2::date - 2, $2::date, interval '1 day') d`, []any{environment.ID, today}},
		{`insert into analytics_carried (environment_id, through_day) values ($1::uuid, $2::date)`, []any{environment.ID, today}},
	} {
		if _, err := e.pool.Exec(ctx, st.sql, st.args...); err != nil {
			e.t.Fatal(err)
		}
	}
}

// webhookChannel creates a webhook channel through the service, to url.
func (e *env) webhookChannel(environment store.Environment, name, to string) alerts.Channel {
	e.t.Helper()
	kind := alerts.ChannelWebhook
	ch, err := e.deps.Alerts.CreateChannel(e.t.Context(), environment, alerts.ChannelInput{Name: &name, Kind: &kind,
		Webhook: &alerts.WebhookInput{URL: to}})
	if err != nil {
		e.t.Fatal(err)
	}
	return ch
}

func TestOverview(t *testing.T) {
	e := newEnv(t, Config{})
	b := e.browser()
	b.login("owner@acme.test")
	if r := b.do(http.MethodGet, "/", nil, nil); r.status != http.StatusOK || !strings.Contains(r.body, "No data yet") {
		t.Fatalf("overview without data: %d\n%s", r.status, r.body)
	}
	prod := e.production()
	publishExample(t, e.deps, prod)
	e.seedMargins(prod)
	// A usage alert fired for cus_loss, so it is near its limit.
	ch := e.webhookChannel(prod, "ops", "https://example.com/hook")
	name, kind, chans := "usage", alerts.KindUsagePercent, []string{ch.ID.String()}
	if _, err := e.deps.Alerts.CreateRule(t.Context(), prod, alerts.RuleInput{Name: &name, Kind: &kind,
		Params: &alerts.Params{Thresholds: []num.Dec{num.FromInt(80)}}, Channels: &chans}); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	if _, err := e.deps.Alerts.Observe(t.Context(), prod, []alerts.Observation{{Kind: alerts.KindUsagePercent,
		Customer: alerts.Subject{UID: uuid.New(), ID: "cus_loss", Plan: "pro"}, Entitlement: "ai_input_token",
		Value: num.FromInt(85), Limit: num.FromInt(100), PeriodStart: now.Add(-time.Hour), PeriodEnd: now.Add(time.Hour), At: now}}); err != nil {
		t.Fatal(err)
	}

	for _, path := range []string{"/", "/?window=30d"} {
		r := b.do(http.MethodGet, path, nil, nil)
		if r.status != http.StatusOK {
			t.Fatalf("GET %s: %d\n%s", path, r.status, r.body)
		}
		for _, want := range []string{`<svg`, `class="chart"`, `>Revenue</text>`, `>Cost</text>`, `>Margin</text>`, `>pro</text>`,
			`id="worst-margins"`, `href="/customers/cus_loss"`, `id="near-limits"`, `ai_input_token`, `80 %`, `id="recent-alerts"`} {
			if !strings.Contains(r.body, want) {
				t.Errorf("GET %s lacks %q", path, want)
			}
		}
		if strings.Contains(r.body, "style=") {
			t.Errorf("GET %s uses a style attribute, which the CSP refuses", path)
		}
		// Worst margin first: cus_loss (−33 %) before cus_good.
		if i, j := strings.Index(r.body, "/customers/cus_loss"), strings.Index(r.body, "/customers/cus_good"); i < 0 || j < 0 || i > j {
			t.Errorf("GET %s: the worst margin is not listed first", path)
		}
	}
}

func TestAlertsAndSettingsViewer(t *testing.T) {
	e := newEnv(t, Config{})
	prod := e.production()
	publishExample(t, e.deps, prod)
	ch := e.webhookChannel(prod, "ops", "https://example.com/hook")
	b := e.browser()
	b.login("viewer@acme.test")
	for _, path := range []string{"/alerts", "/alerts/channels/" + ch.ID.String(), "/alerts/fired", "/alerts/deliveries",
		"/settings/environments", "/settings/keys", "/settings/billing", "/settings/stripe", "/settings/audit"} {
		r := b.do(http.MethodGet, path, nil, nil)
		if r.status != http.StatusOK {
			t.Fatalf("viewer GET %s: %d\n%s", path, r.status, r.body)
		}
		for _, manage := range []string{"New channel", "New rule", "Send test", ">Delete<", ">Revoke<", "Create key", "Create environment",
			">Save<", ">Connect<", "Disconnect", "Create channel"} {
			if strings.Contains(r.body, manage) {
				t.Errorf("viewer sees %q on %s", manage, path)
			}
		}
	}
	if r := b.do(http.MethodGet, "/alerts/rules/new", nil, nil); r.status != http.StatusForbidden {
		t.Errorf("viewer GET /alerts/rules/new: %d", r.status)
	}
	tok := b.csrf("/alerts")
	for _, path := range []string{"/alerts/channels", "/alerts/channels/" + ch.ID.String(), "/alerts/channels/" + ch.ID.String() + "/test",
		"/alerts/channels/" + ch.ID.String() + "/delete", "/alerts/rules", "/alerts/deliveries/" + uuid.NewString() + "/resend",
		"/settings/environments", "/settings/keys", "/settings/keys/" + uuid.NewString() + "/revoke", "/settings/billing",
		"/settings/stripe", "/settings/stripe/disconnect"} {
		if r := b.do(http.MethodPost, path, url.Values{"csrf_token": {tok}, "name": {"x"}, "kind": {"webhook"}}, nil); r.status != http.StatusForbidden {
			t.Errorf("viewer POST %s: %d, want 403", path, r.status)
		}
	}
	if chs, _ := e.deps.Alerts.Channels(t.Context(), prod); len(chs) != 1 {
		t.Errorf("the viewer's posts changed the channels: %d", len(chs))
	}
}

var secretInput = regexp.MustCompile(`readonly value="([^"]+)"`)

// auditedBy finds the newest audit entry of action and checks it names the user.
func (e *env) auditedBy(action string, user uuid.UUID) {
	e.t.Helper()
	pg, err := e.deps.Tenancy.ListAudit(e.t.Context(), tenancy.ListAuditInput{TenantID: e.tenant.ID, Limit: 200})
	if err != nil {
		e.t.Fatal(err)
	}
	for _, en := range pg.Entries {
		if en.Action == action {
			if en.ActorUserID == nil || *en.ActorUserID != user {
				e.t.Errorf("audit %s: actor %v, want user %s", action, en.ActorUserID, user)
			}
			return
		}
	}
	e.t.Errorf("no audit entry %s", action)
}

func TestAlertsManage(t *testing.T) {
	e := newEnv(t, Config{})
	prod := e.production()
	publishExample(t, e.deps, prod)
	got := make(chan string, 4)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got <- r.Header.Get("webhook-signature") + " " + string(body)
	}))
	defer hook.Close()
	b := e.browser()
	b.login("owner@acme.test")
	tok := b.csrf("/alerts")

	// A webhook channel: its signing secret is shown once, then only a hint.
	r := b.do(http.MethodPost, "/alerts/channels", url.Values{"csrf_token": {tok}, "kind": {"webhook"}, "name": {"ops hook"},
		"webhook_url": {hook.URL}}, nil)
	m := secretInput.FindStringSubmatch(r.body)
	if r.status != http.StatusOK || m == nil || !strings.HasPrefix(m[1], "whsec_") {
		t.Fatalf("create channel: %d\n%s", r.status, r.body)
	}
	secret := m[1]
	e.auditedBy("alert_channel.create", e.owner.ID)
	chs, err := e.deps.Alerts.Channels(t.Context(), prod)
	if err != nil || len(chs) != 1 {
		t.Fatalf("channels: %v %v", chs, err)
	}
	ch := chs[0]
	r = b.do(http.MethodGet, "/alerts", nil, nil)
	// Compared as the browser reads the page: the hint may hold a '+', which the
	// template writes as &#43;.
	if page := html.UnescapeString(r.body); !strings.Contains(page, "ops hook") || strings.Contains(page, secret) || !strings.Contains(page, ch.Webhook.SecretHint) {
		t.Errorf("the list shows the secret or no hint:\n%s", r.body)
	}
	if r := b.do(http.MethodGet, "/alerts/channels/"+ch.ID.String(), nil, nil); strings.Contains(html.UnescapeString(r.body), secret) {
		t.Error("the channel page shows the secret")
	}
	// A bad URL is refused on the form, with the reason.
	if r := b.do(http.MethodPost, "/alerts/channels", url.Values{"csrf_token": {tok}, "kind": {"webhook"}, "name": {"bad"},
		"webhook_url": {"ftp://x"}}, nil); r.status != http.StatusUnprocessableEntity || !strings.Contains(r.body, "webhook") {
		t.Errorf("bad channel: %d\n%s", r.status, r.body)
	}

	// Send test: the message reaches the webhook, signed.
	r = b.do(http.MethodPost, "/alerts/channels/"+ch.ID.String()+"/test", url.Values{"csrf_token": {tok}}, nil)
	if r.status != http.StatusOK || !strings.Contains(r.body, "was delivered") {
		t.Fatalf("test send: %d\n%s", r.status, r.body)
	}
	select {
	case msg := <-got:
		if !strings.HasPrefix(msg, "v1,") || !strings.Contains(msg, "test") {
			t.Errorf("test message: %s", msg)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the test message did not arrive")
	}

	// A rule, then off, on, edited and deleted.
	form := url.Values{"csrf_token": {tok}, "name": {"Tokens 80%"}, "kind": {"usage_percent"}, "thresholds": {"80, 100"},
		"entitlements": {"ai_input"}, "channels": {ch.ID.String()}, "enabled": {"on"}}
	if r := b.do(http.MethodPost, "/alerts/rules", form, nil); r.status != http.StatusSeeOther {
		t.Fatalf("create rule: %d\n%s", r.status, regexp.MustCompile(`(?s)<p class="error".*?</p>`).FindString(r.body))
	}
	e.auditedBy("alert_rule.create", e.owner.ID)
	rules, err := e.deps.Alerts.Rules(t.Context(), prod)
	if err != nil || len(rules) != 1 || !rules[0].Enabled || len(rules[0].Params.Thresholds) != 2 || rules[0].Filters.Entitlements[0] != "ai_input" {
		t.Fatalf("rules: %+v %v", rules, err)
	}
	id := rules[0].ID.String()
	if r := b.do(http.MethodGet, "/alerts?done=rule-created", nil, nil); !strings.Contains(r.body, "Tokens 80%") || !strings.Contains(r.body, "Rule created.") {
		t.Errorf("the rule is not listed:\n%s", r.body)
	}
	bad := url.Values{"csrf_token": {tok}, "name": {"x"}, "kind": {"usage_percent"}, "thresholds": {"eighty"}, "channels": {ch.ID.String()}}
	if r := b.do(http.MethodPost, "/alerts/rules", bad, nil); r.status != http.StatusUnprocessableEntity || !strings.Contains(r.body, "params.thresholds must be a number") {
		t.Errorf("bad threshold: %d", r.status)
	}
	bad.Set("thresholds", "80")
	bad.Set("entitlements", "nope")
	if r := b.do(http.MethodPost, "/alerts/rules", bad, nil); r.status != http.StatusUnprocessableEntity || !strings.Contains(r.body, "entitlements") {
		t.Errorf("unknown entitlement: %d", r.status)
	}
	if r := b.do(http.MethodPost, "/alerts/rules/"+id+"/enabled", url.Values{"csrf_token": {tok}, "enabled": {"false"}}, nil); r.status != http.StatusSeeOther {
		t.Fatalf("disable: %d", r.status)
	}
	if rr, _ := e.deps.Alerts.Rule(t.Context(), prod, rules[0].ID); rr.Enabled {
		t.Error("the rule is still enabled")
	}
	form.Set("name", "Tokens 90%")
	form.Set("thresholds", "90")
	if r := b.do(http.MethodPost, "/alerts/rules/"+id, form, nil); r.status != http.StatusSeeOther {
		t.Fatalf("edit rule: %d\n%s", r.status, r.body)
	}
	if rr, _ := e.deps.Alerts.Rule(t.Context(), prod, rules[0].ID); rr.Name != "Tokens 90%" || !rr.Enabled || rr.Params.Thresholds[0].String() != "90" {
		t.Errorf("edited rule: %+v", rr)
	}
	if r := b.do(http.MethodGet, "/alerts/rules/"+id, nil, nil); r.status != http.StatusOK || !strings.Contains(r.body, `value="Tokens 90%"`) {
		t.Errorf("rule page: %d", r.status)
	}

	// Fired alerts and their deliveries: the new delivery is pending, so it cannot be
	// resent yet.
	now := time.Now().UTC()
	if _, err := e.deps.Alerts.Observe(t.Context(), prod, []alerts.Observation{{Kind: alerts.KindUsagePercent,
		Customer: alerts.Subject{UID: uuid.New(), ID: "cus_1", Plan: "pro"}, Entitlement: "ai_input",
		Value: num.FromInt(95), Limit: num.FromInt(100), PeriodStart: now.Add(-time.Hour), PeriodEnd: now.Add(time.Hour), At: now}}); err != nil {
		t.Fatal(err)
	}
	if r := b.do(http.MethodGet, "/alerts/fired", nil, nil); r.status != http.StatusOK || !strings.Contains(r.body, "cus_1") {
		t.Errorf("fired: %d\n%s", r.status, r.body)
	}
	if r := b.do(http.MethodGet, "/alerts/deliveries?status=pending", nil, nil); r.status != http.StatusOK || !strings.Contains(r.body, "ops hook") {
		t.Errorf("deliveries: %d\n%s", r.status, r.body)
	}
	if r := b.do(http.MethodGet, "/alerts/deliveries?status=bogus", nil, nil); r.status != http.StatusBadRequest {
		t.Errorf("bogus status: %d", r.status)
	}
	ds, err := e.deps.Alerts.Deliveries(t.Context(), prod, alerts.Page{})
	if err != nil || len(ds) != 1 {
		t.Fatalf("deliveries: %v %v", ds, err)
	}
	if r := b.do(http.MethodPost, "/alerts/deliveries/"+ds[0].ID.String()+"/resend", url.Values{"csrf_token": {tok}}, nil); r.status != http.StatusConflict {
		t.Errorf("resend a pending delivery: %d, want 409", r.status)
	}

	if r := b.do(http.MethodPost, "/alerts/rules/"+id+"/delete", url.Values{"csrf_token": {tok}}, nil); r.status != http.StatusSeeOther {
		t.Fatalf("delete rule: %d", r.status)
	}
	if r := b.do(http.MethodPost, "/alerts/channels/"+ch.ID.String()+"/delete", url.Values{"csrf_token": {tok}}, nil); r.status != http.StatusSeeOther {
		t.Fatalf("delete channel: %d", r.status)
	}
	e.auditedBy("alert_channel.delete", e.owner.ID)
}

func TestSettingsManage(t *testing.T) {
	e := newEnv(t, Config{})
	b := e.browser()
	b.login("owner@acme.test")
	tok := b.csrf("/settings/keys")

	// Environments.
	if r := b.do(http.MethodPost, "/settings/environments", url.Values{"csrf_token": {tok}, "name": {"eu-test"}, "live": {"test"}}, nil); r.status != http.StatusSeeOther {
		t.Fatalf("create environment: %d\n%s", r.status, r.body)
	}
	if r := b.do(http.MethodPost, "/settings/environments", url.Values{"csrf_token": {tok}, "name": {"eu-test"}}, nil); r.status != http.StatusConflict {
		t.Errorf("duplicate environment: %d", r.status)
	}
	if r := b.do(http.MethodGet, "/settings/environments", nil, nil); !strings.Contains(r.body, "eu-test") {
		t.Error("the new environment is not listed")
	}

	// Keys: the secret once, then only the prefix; revoking.
	r := b.do(http.MethodPost, "/settings/keys", url.Values{"csrf_token": {tok}, "kind": {"sdk"}, "environment": {"eu-test"}, "name": {"web app"}}, nil)
	m := secretInput.FindStringSubmatch(r.body)
	if r.status != http.StatusOK || m == nil || !strings.HasPrefix(m[1], "lk_sdk_") {
		t.Fatalf("create key: %d\n%s", r.status, r.body)
	}
	e.auditedBy("key.create", e.owner.ID)
	r = b.do(http.MethodGet, "/settings/keys", nil, nil)
	if strings.Contains(r.body, m[1]) || !strings.Contains(r.body, "web app") {
		t.Error("the key list shows the secret, or not the key")
	}
	keys, err := e.deps.Tenancy.ListKeys(t.Context(), e.tenant.ID)
	if err != nil {
		t.Fatal(err)
	}
	var sdk uuid.UUID
	for _, k := range keys {
		if k.Name == "web app" {
			sdk = k.ID
		}
	}
	if r := b.do(http.MethodPost, "/settings/keys/"+sdk.String()+"/revoke", url.Values{"csrf_token": {tok}}, nil); r.status != http.StatusSeeOther {
		t.Fatalf("revoke: %d\n%s", r.status, r.body)
	}
	e.auditedBy("key.revoke", e.owner.ID)

	// Billing settings.
	form := url.Values{"csrf_token": {tok}, "currency": {"eur"}, "rune_rate": {"1"}, "grace_period": {"2h"}, "days_until_due": {"14"},
		"invoice_prefix": {"ACME"}, "seller": {`{"name": "Acme Inc"}`}}
	if r := b.do(http.MethodPost, "/settings/billing", form, nil); r.status != http.StatusSeeOther {
		t.Fatalf("billing settings: %d\n%s", r.status, r.body)
	}
	if set, err := e.deps.Billing.Settings(t.Context(), e.production()); err != nil || set.Currency != "EUR" || set.DaysUntilDue != 14 {
		t.Errorf("settings: %+v %v", set, err)
	}
	form.Set("days_until_due", "soon")
	if r := b.do(http.MethodPost, "/settings/billing", form, nil); r.status != http.StatusUnprocessableEntity || !strings.Contains(r.body, "days_until_due") {
		t.Errorf("bad days: %d", r.status)
	}
	form.Set("days_until_due", "14")
	form.Set("currency", "euros")
	if r := b.do(http.MethodPost, "/settings/billing", form, nil); r.status != http.StatusUnprocessableEntity || !strings.Contains(r.body, "currency") {
		t.Errorf("bad currency: %d", r.status)
	}

	// Stripe: connected with hints only, then disconnected.
	if r := b.do(http.MethodPost, "/settings/stripe", url.Values{"csrf_token": {tok}, "secret_key": {"sk_test_abcdefgh1234"},
		"webhook_secret": {"whsec_topsecretvalue"}}, nil); r.status != http.StatusSeeOther {
		t.Fatalf("connect stripe: %d\n%s", r.status, r.body)
	}
	r = b.do(http.MethodGet, "/settings/stripe", nil, nil)
	if !strings.Contains(r.body, "Connected") || !strings.Contains(r.body, "1234") || strings.Contains(r.body, "sk_test_abcdefgh1234") ||
		strings.Contains(r.body, "topsecret") {
		t.Errorf("stripe page:\n%s", r.body)
	}
	if r := b.do(http.MethodPost, "/settings/stripe/disconnect", url.Values{"csrf_token": {tok}}, nil); r.status != http.StatusSeeOther {
		t.Fatalf("disconnect: %d", r.status)
	}

	// The audit log names the user.
	r = b.do(http.MethodGet, "/settings/audit", nil, nil)
	if r.status != http.StatusOK || !strings.Contains(r.body, "key.create") || !strings.Contains(r.body, "owner@acme.test") {
		t.Errorf("audit log: %d\n%s", r.status, r.body)
	}
}

// TestOverviewKeepsSlowRankings: a slow worst-margins ranking is served from memory for
// a minute, then refreshed in the background while the old one is shown.
func TestOverviewKeepsSlowRankings(t *testing.T) {
	saved := slowRanking
	slowRanking = 0 // every ranking counts as slow
	t.Cleanup(func() { slowRanking = saved })
	e := newEnv(t, Config{})
	prod := e.production()
	publishExample(t, e.deps, prod)
	e.seedMargins(prod)
	b := e.browser()
	b.login("owner@acme.test")
	if r := b.do(http.MethodGet, "/", nil, nil); !strings.Contains(r.body, "/customers/cus_loss") {
		t.Fatalf("overview:\n%s", r.body)
	}
	// A new customer with a worse margin: not shown while the ranking is kept.
	today := time.Now().UTC().Truncate(24 * time.Hour)
	if _, err := e.pool.Exec(t.Context(), `insert into analytics_customer_days (environment_id, day, customer_uid, customer_id, plan,
		customer_type, calls, cost, usage_revenue, grant_revenue, fee_revenue, topup_revenue, rank_revenue, rank_cost)
		values ($1, $2, $3, 'cus_worse', 'pro', 'user', 1, 9, 1, 0, 0, 0, 1, 9)`, prod.ID, today, uuid.New()); err != nil {
		t.Fatal(err)
	}
	if r := b.do(http.MethodGet, "/", nil, nil); strings.Contains(r.body, "cus_worse") {
		t.Fatal("the kept ranking was not used")
	}
	// Once it is a minute old, the next view still shows it and refreshes it.
	r := &e.server.rankings
	r.mu.Lock()
	for _, k := range r.m {
		k.at = k.at.Add(-rankingTTL)
	}
	r.mu.Unlock()
	if r := b.do(http.MethodGet, "/", nil, nil); strings.Contains(r.body, "cus_worse") {
		t.Fatal("a stale ranking was replaced synchronously")
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if r := b.do(http.MethodGet, "/", nil, nil); strings.Contains(r.body, "/customers/cus_worse") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the ranking was never refreshed")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
