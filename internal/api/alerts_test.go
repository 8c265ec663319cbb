package api

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/slack-go/slack/slacktest"

	"github.com/limitr/limitr/internal/alerts/channels"
	"github.com/limitr/limitr/internal/httpx/problem"
	"github.com/limitr/limitr/internal/platform/pgtest"
	"github.com/limitr/limitr/internal/secrets"
)

// alertHarness is a server with a keyring of its own (channel secrets are refused
// without one), Slack's API at slackURL, and a tenant with a published policy.
type alertHarness struct {
	*custHarness
	doc   map[string]any
	admin string
	sdk   string
}

func newAlertHarness(t *testing.T, slackURL string) *alertHarness {
	t.Helper()
	_, pool := pgtest.NewMigrated(t)
	spec, err := secrets.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	kr, err := secrets.ParseKeyring(spec)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(Config{OperatorToken: "op"}, Deps{Pool: pool, Logger: slog.New(slog.DiscardHandler), Secrets: kr,
		SlackAPIURL: slackURL, PublicURL: "https://dash.example.com", AllowPrivateAlertDestinations: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	h := &alertHarness{custHarness: &custHarness{t: t, srv: srv, pool: pool}, doc: oaDoc(t)}
	a := h.bootstrap("acme")
	h.publish(a, "production", custPolicySource(t))
	h.admin = a.secret
	h.sdk, _ = h.sdkKey(a, "production")
	return h
}

// call sends a request, checks its status and that the response conforms to the
// OpenAPI document, and returns the body. template is the documented path.
func (h *alertHarness) call(method, template, path, secret string, body any, want int, hdr ...string) []byte {
	h.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	case string:
		rd = strings.NewReader(b)
	default:
		enc, err := json.Marshal(b)
		if err != nil {
			h.t.Fatal(err)
		}
		rd = bytes.NewReader(enc)
	}
	req := httptest.NewRequest(method, path, rd)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+secret)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	h.srv.Handler().ServeHTTP(rec, req)
	if rec.Code != want {
		h.t.Fatalf("%s %s: %d, want %d: %s", method, path, rec.Code, want, rec.Body.Bytes())
	}
	oaConform(h.t, h.doc, method, template, rec.Code, rec.Header(), rec.Body.Bytes())
	return rec.Body.Bytes()
}

const (
	apChannels = "/v1/environments/{env}/alert-channels"
	apRules    = "/v1/environments/{env}/alert-rules"
	apProd     = "/v1/environments/production"
)

func idOf(t *testing.T, body []byte) string {
	t.Helper()
	var v struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(body, &v); err != nil || v.ID == "" {
		t.Fatalf("no id in %s (%v)", body, err)
	}
	return v.ID
}

// problemFields are the field paths of a 422 problem.
func problemFields(t *testing.T, body []byte) []string {
	t.Helper()
	var p problem.Problem
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatal(err)
	}
	out := make([]string, len(p.Errors))
	for i, e := range p.Errors {
		out[i] = e.Path
	}
	return out
}

// TestAlertChannelsCRUDKeepSecrets: channels of every kind round-trip, and their
// secrets never come back: not in any response, not in the audit log, not in the
// alert_channels table in plaintext.
func TestAlertChannelsCRUDKeepSecrets(t *testing.T) {
	h := newAlertHarness(t, "")
	const (
		slackToken = "xoxb-4412-SECRET-slack-token"
		slackHook  = "https://hooks.slack.com/services/T0/B0/SECRETslackhook4412"
		smtpPass   = "smtp-SECRET-password-4412"
		hookSecret = "whsec_c2VjcmV0LXdlYmhvb2stc2lnbmluZy00NDEy"
	)
	secretsOf := []string{slackToken, slackHook, "SECRETslackhook4412", smtpPass, hookSecret}
	var bodies [][]byte
	keep := func(b []byte) []byte { bodies = append(bodies, b); return b }
	empty := h.call("GET", apChannels, apProd+"/alert-channels", h.admin, nil, 200)
	if string(bytes.TrimSpace(empty)) != `{"data":[]}` {
		t.Errorf("empty list: %s", empty)
	}

	slackID := idOf(t, keep(h.call("POST", apChannels, apProd+"/alert-channels", h.admin,
		map[string]any{"name": "ops", "kind": "slack", "slack": map[string]any{"token": slackToken, "channel": "#ops"}}, 201)))
	hookSlackID := idOf(t, keep(h.call("POST", apChannels, apProd+"/alert-channels", h.admin,
		map[string]any{"name": "ops-hook", "kind": "slack", "slack": map[string]any{"webhook_url": slackHook}}, 201)))
	emailID := idOf(t, keep(h.call("POST", apChannels, apProd+"/alert-channels", h.admin,
		map[string]any{"name": "finance", "kind": "email", "email": map[string]any{"to": []string{"fin@example.com"}, "from": "alerts@example.com",
			"smtp": map[string]any{"host": "smtp.example.com", "port": 587, "username": "alerts", "password": smtpPass}}}, 201)))
	hookBody := keep(h.call("POST", apChannels, apProd+"/alert-channels", h.admin,
		map[string]any{"name": "receiver", "kind": "webhook", "webhook": map[string]any{"url": "https://hooks.example.com/limitr", "secret": hookSecret}}, 201))
	hookID := idOf(t, hookBody)
	// A generated secret is shown once, in the reply that made it.
	gen := h.call("POST", apChannels, apProd+"/alert-channels", h.admin,
		map[string]any{"name": "generated", "kind": "webhook", "webhook": map[string]any{"url": "https://hooks.example.com/gen"}}, 201)
	var genCh struct {
		ID      string `json:"id"`
		Webhook struct {
			SigningSecret string `json:"signing_secret"`
		} `json:"webhook"`
	}
	_ = json.Unmarshal(gen, &genCh)
	if !strings.HasPrefix(genCh.Webhook.SigningSecret, "whsec_") {
		t.Fatalf("generated channel: no signing secret: %s", gen)
	}
	secretsOf = append(secretsOf, genCh.Webhook.SigningSecret)
	keep(h.call("GET", apChannels+"/{id}", apProd+"/alert-channels/"+genCh.ID, h.admin, nil, 200))

	var all list[struct {
		Name string `json:"name"`
	}]
	_ = json.Unmarshal(keep(h.call("GET", apChannels, apProd+"/alert-channels", h.admin, nil, 200)), &all)
	if len(all.Data) != 5 || all.Data[0].Name != "finance" {
		t.Errorf("list: %+v", all.Data)
	}
	for _, id := range []string{slackID, hookSlackID, emailID, hookID} {
		keep(h.call("GET", apChannels+"/{id}", apProd+"/alert-channels/"+id, h.admin, nil, 200))
	}
	// A new channel name keeps the stored token; an email change of recipients keeps the
	// password; a rename is just that.
	patched := keep(h.call("PATCH", apChannels+"/{id}", apProd+"/alert-channels/"+slackID, h.admin,
		map[string]any{"slack": map[string]any{"channel": "#ops-2"}}, 200))
	if !bytes.Contains(patched, []byte(`"channel":"#ops-2"`)) || !bytes.Contains(patched, []byte(`"token_hint"`)) {
		t.Errorf("patched slack channel: %s", patched)
	}
	patched = keep(h.call("PATCH", apChannels+"/{id}", apProd+"/alert-channels/"+emailID, h.admin,
		map[string]any{"email": map[string]any{"to": []string{"cfo@example.com"}, "from": "alerts@example.com",
			"smtp": map[string]any{"host": "smtp.example.com", "port": 587, "username": "alerts"}}}, 200))
	if !bytes.Contains(patched, []byte(`"password_set":true`)) {
		t.Errorf("the password was not kept: %s", patched)
	}
	keep(h.call("PATCH", apChannels+"/{id}", apProd+"/alert-channels/"+hookID, h.admin, map[string]any{"name": "receiver-2"}, 200))
	// Rotation: a new secret, returned once, the old one valid for a while.
	rot := h.call("PATCH", apChannels+"/{id}", apProd+"/alert-channels/"+genCh.ID, h.admin,
		map[string]any{"webhook": map[string]any{"rotate_secret": true}}, 200)
	var rotated struct {
		Webhook struct {
			SigningSecret string  `json:"signing_secret"`
			Until         *string `json:"previous_secret_valid_until"`
		} `json:"webhook"`
	}
	_ = json.Unmarshal(rot, &rotated)
	if rotated.Webhook.SigningSecret == "" || rotated.Webhook.SigningSecret == genCh.Webhook.SigningSecret || rotated.Webhook.Until == nil {
		t.Errorf("rotation: %s", rot)
	}
	secretsOf = append(secretsOf, rotated.Webhook.SigningSecret)

	// Errors.
	taken := h.call("POST", apChannels, apProd+"/alert-channels", h.admin, map[string]any{"name": "ops", "kind": "webhook",
		"webhook": map[string]any{"url": "https://x.example.com"}}, 409)
	if f := problemFields(t, taken); !bytes.Contains(taken, []byte("an alert channel of that name exists")) || len(f) != 1 || f[0] != "name" {
		t.Errorf("a taken name: %s", taken)
	}
	bad := h.call("POST", apChannels, apProd+"/alert-channels", h.admin, map[string]any{"name": "x", "kind": "slack", "slack": map[string]any{"channel": "#x"}}, 422)
	if f := problemFields(t, bad); len(f) != 1 || f[0] != "slack.token" {
		t.Errorf("slack without a token: %v", f)
	}
	h.call("PATCH", apChannels+"/{id}", apProd+"/alert-channels/"+hookID, h.admin, map[string]any{"kind": "email"}, 422)
	h.call("GET", apChannels+"/{id}", apProd+"/alert-channels/not-a-uuid", h.admin, nil, 404)
	h.call("GET", apChannels+"/{id}", apProd+"/alert-channels/00000000-0000-0000-0000-000000000000", h.admin, nil, 404)
	h.call("GET", apChannels, apProd+"/alert-channels", h.sdk, nil, 403)

	keep(h.call("DELETE", apChannels+"/{id}", apProd+"/alert-channels/"+hookSlackID, h.admin, nil, 204))
	h.call("GET", apChannels+"/{id}", apProd+"/alert-channels/"+hookSlackID, h.admin, nil, 404)
	h.call("DELETE", apChannels+"/{id}", apProd+"/alert-channels/"+hookSlackID, h.admin, nil, 404)

	// The secrets are nowhere in the clear.
	var audit, table strings.Builder
	rows, err := h.pool.Query(context.Background(), `select coalesce(before::text, '') || coalesce(after::text, '') from audit_log where resource = 'alert_channel'`)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		audit.WriteString(s)
		n++
	}
	rows.Close()
	if n != 10 { // 5 creations, 4 updates, 1 deletion
		t.Errorf("%d audit entries for channels, want 10", n)
	}
	var dump string
	if err := h.pool.QueryRow(context.Background(), `select coalesce(string_agg(t::text, '|'), '') from alert_channels t`).Scan(&dump); err != nil {
		t.Fatal(err)
	}
	table.WriteString(dump)
	for _, s := range secretsOf {
		for i, b := range bodies {
			if bytes.Contains(b, []byte(s)) {
				t.Errorf("response %d holds the secret %q: %s", i, s, b)
			}
		}
		if strings.Contains(audit.String(), s) {
			t.Errorf("the audit log holds the secret %q", s)
		}
		if strings.Contains(table.String(), s) {
			t.Errorf("alert_channels holds the secret %q in plaintext", s)
		}
	}
	if !strings.Contains(table.String(), "hooks.example.com") {
		t.Errorf("the table dump is empty or wrong: %.200s", table.String())
	}
}

// TestAlertChannelsRefuseAnEphemeralKeyring: without LIMITR_SECRET_KEY, secrets would
// not open after a restart: channels are refused with a 409 saying why.
func TestAlertChannelsRefuseAnEphemeralKeyring(t *testing.T) {
	_, pool := pgtest.NewMigrated(t)
	srv, err := New(Config{OperatorToken: "op"}, Deps{Pool: pool, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	h := &alertHarness{custHarness: &custHarness{t: t, srv: srv, pool: pool}, doc: oaDoc(t)}
	a := h.bootstrap("acme")
	body := h.call("POST", apChannels, apProd+"/alert-channels", a.secret, map[string]any{"name": "ops", "kind": "webhook",
		"webhook": map[string]any{"url": "https://hooks.example.com/x"}}, 409)
	if !bytes.Contains(body, []byte("LIMITR_SECRET_KEY")) {
		t.Errorf("the refusal does not say what to set: %s", body)
	}
	if n := h.count(`select count(*) from alert_channels`); n != 0 {
		t.Errorf("%d channels stored", n)
	}
}

// TestAlertRuleValidation: every problem is a 422 naming its field; a valid rule
// round-trips.
func TestAlertRuleValidation(t *testing.T) {
	h := newAlertHarness(t, "")
	ch := idOf(t, h.call("POST", apChannels, apProd+"/alert-channels", h.admin, map[string]any{"name": "ops", "kind": "webhook",
		"webhook": map[string]any{"url": "https://hooks.example.com/x"}}, 201))
	cases := []struct {
		name string
		body map[string]any
		want []string
	}{
		{"unknown entitlement", map[string]any{"name": "r", "kind": "usage_percent", "params": map[string]any{"thresholds": []any{80, "100"}},
			"filters": map[string]any{"entitlements": []string{"nope"}}, "channels": []string{ch}}, []string{"filters.entitlements[0]"}},
		{"bad CEL", map[string]any{"name": "r", "kind": "cap_hit", "condition": "this is ((( not CEL", "channels": []string{ch}}, []string{"condition"}},
		{"unknown channel", map[string]any{"name": "r", "kind": "cap_hit", "channels": []string{"9b1f0c56-8d7e-4a3b-9c2d-1e0f5a6b7c8d"}}, []string{"channels[0]"}},
		{"unknown notification", map[string]any{"name": "r", "kind": "notification", "params": map[string]any{"notification": "nope"},
			"channels": []string{ch}}, []string{"params.notification"}},
		{"not a channel id", map[string]any{"name": "r", "kind": "cap_hit", "channels": []string{"ops"}}, []string{"channels[0]"}},
		{"unknown plan", map[string]any{"name": "r", "kind": "spend", "params": map[string]any{"amount": "100"},
			"filters": map[string]any{"plans": []string{"gold"}}, "channels": []string{ch}}, []string{"filters.plans[0]"}},
		{"missing everything", map[string]any{}, []string{"kind", "name"}},
		{"unknown kind", map[string]any{"name": "r", "kind": "weather", "channels": []string{ch}}, []string{"kind"}},
	}
	for _, c := range cases {
		body := h.call("POST", apRules, apProd+"/alert-rules", h.admin, c.body, 422)
		got := problemFields(t, body)
		for _, w := range c.want {
			found := false
			for _, g := range got {
				found = found || g == w
			}
			if !found {
				t.Errorf("%s: no error at %s: %s", c.name, w, body)
			}
		}
	}
	if n := h.count(`select count(*) from alert_rules`); n != 0 {
		t.Fatalf("%d rules stored by invalid requests", n)
	}

	created := h.call("POST", apRules, apProd+"/alert-rules", h.admin, map[string]any{"name": "usage", "kind": "usage_percent",
		"params": map[string]any{"thresholds": []any{100, "80", 80}}, "filters": map[string]any{"entitlements": []string{"ai_input"}},
		"condition": "event.value > 0", "channels": []string{ch}}, 201)
	id := idOf(t, created)
	if !bytes.Contains(created, []byte(`"thresholds":["80","100"]`)) || !bytes.Contains(created, []byte(`"enabled":true`)) {
		t.Errorf("created rule: %s", created)
	}
	h.call("POST", apRules, apProd+"/alert-rules", h.admin, map[string]any{"name": "usage", "kind": "cap_hit", "channels": []string{ch}}, 409)
	h.call("GET", apRules, apProd+"/alert-rules", h.admin, nil, 200)
	h.call("GET", apRules+"/{id}", apProd+"/alert-rules/"+id, h.admin, nil, 200)
	patched := h.call("PATCH", apRules+"/{id}", apProd+"/alert-rules/"+id, h.admin, map[string]any{"enabled": false, "name": "usage-2"}, 200)
	if !bytes.Contains(patched, []byte(`"enabled":false`)) || !bytes.Contains(patched, []byte(`"name":"usage-2"`)) {
		t.Errorf("patched rule: %s", patched)
	}
	body := h.call("PATCH", apRules+"/{id}", apProd+"/alert-rules/"+id, h.admin, map[string]any{"filters": map[string]any{"entitlements": []string{"ai_input", "nope"}}}, 422)
	if f := problemFields(t, body); len(f) != 1 || f[0] != "filters.entitlements[1]" {
		t.Errorf("patch with an unknown entitlement: %v", f)
	}
	// Deleting the channel takes it out of the rule.
	h.call("DELETE", apChannels+"/{id}", apProd+"/alert-channels/"+ch, h.admin, nil, 204)
	after := h.call("GET", apRules+"/{id}", apProd+"/alert-rules/"+id, h.admin, nil, 200)
	if !bytes.Contains(after, []byte(`"channels":[]`)) {
		t.Errorf("the deleted channel is still in the rule: %s", after)
	}
	h.call("DELETE", apRules+"/{id}", apProd+"/alert-rules/"+id, h.admin, nil, 204)
	h.call("GET", apRules+"/{id}", apProd+"/alert-rules/"+id, h.admin, nil, 404)
	h.call("GET", apRules+"/{id}", apProd+"/alert-rules/x", h.admin, nil, 404)
}

// TestAlertChannelTestSend: a test message reaches a webhook receiver signed with the
// channel's secret, and Slack (slacktest) with its token; a refusing receiver is a 200
// saying so.
func TestAlertChannelTestSend(t *testing.T) {
	var mu sync.Mutex
	var slackTokens []string
	slackSrv := slacktest.NewTestServer(func(c slacktest.Customize) {
		c.Handle("/chat.postMessage", func(w http.ResponseWriter, r *http.Request) {
			_ = r.ParseForm()
			tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
			if tok == "" {
				tok = r.FormValue("token")
			}
			mu.Lock()
			slackTokens = append(slackTokens, tok+" "+r.FormValue("channel"))
			mu.Unlock()
			_ = json.NewEncoder(w).Encode(map[string]any{"ok": true, "channel": r.FormValue("channel"), "ts": "1700000000.000100"})
		})
	})
	slackSrv.Start()
	t.Cleanup(slackSrv.Stop)
	h := newAlertHarness(t, slackSrv.GetAPIURL())

	const secret = "whsec_dGVzdC1zZW5kLXNpZ25pbmctc2VjcmV0"
	type received struct {
		id, ts, sig string
		body        []byte
	}
	got := make(chan received, 4)
	status := http.StatusNoContent
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- received{r.Header.Get("webhook-id"), r.Header.Get("webhook-timestamp"), r.Header.Get("webhook-signature"), b}
		w.WriteHeader(status)
	}))
	t.Cleanup(recv.Close)

	hook := idOf(t, h.call("POST", apChannels, apProd+"/alert-channels", h.admin, map[string]any{"name": "receiver", "kind": "webhook",
		"webhook": map[string]any{"url": recv.URL + "/limitr", "secret": secret}}, 201))
	res := h.call("POST", apChannels+"/{id}/test", apProd+"/alert-channels/"+hook+"/test", h.admin, nil, 200)
	if string(bytes.TrimSpace(res)) != `{"delivered":true}` {
		t.Errorf("test send: %s", res)
	}
	r := <-got
	if err := channels.Verify([]string{secret}, r.id, r.ts, r.sig, r.body, time.Now(), 5*time.Minute); err != nil {
		t.Errorf("the test message's signature does not verify: %v", err)
	}
	if err := channels.Verify([]string{"whsec_b3RoZXI="}, r.id, r.ts, r.sig, r.body, time.Now(), 5*time.Minute); err == nil {
		t.Error("another secret verifies the signature")
	}
	if !bytes.Contains(r.body, []byte("Limitr test alert")) {
		t.Errorf("test message: %s", r.body)
	}

	status = http.StatusInternalServerError
	res = h.call("POST", apChannels+"/{id}/test", apProd+"/alert-channels/"+hook+"/test", h.admin, "{}", 200)
	<-got
	var tr struct {
		Delivered bool `json:"delivered"`
		Status    int  `json:"status"`
		Retryable bool `json:"retryable"`
	}
	_ = json.Unmarshal(res, &tr)
	if tr.Delivered || tr.Status != 500 || !tr.Retryable {
		t.Errorf("a failing receiver: %s", res)
	}
	h.call("POST", apChannels+"/{id}/test", apProd+"/alert-channels/"+hook+"/test", h.admin, `{"x":1}`, 422)
	h.call("POST", apChannels+"/{id}/test", apProd+"/alert-channels/9b1f0c56-8d7e-4a3b-9c2d-1e0f5a6b7c8d/test", h.admin, nil, 404)

	sl := idOf(t, h.call("POST", apChannels, apProd+"/alert-channels", h.admin, map[string]any{"name": "ops", "kind": "slack",
		"slack": map[string]any{"token": "xoxb-test-send-token", "channel": "C0ALERTS"}}, 201))
	res = h.call("POST", apChannels+"/{id}/test", apProd+"/alert-channels/"+sl+"/test", h.admin, nil, 200)
	if string(bytes.TrimSpace(res)) != `{"delivered":true}` {
		t.Errorf("slack test send: %s", res)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(slackTokens) != 1 || slackTokens[0] != "xoxb-test-send-token C0ALERTS" {
		t.Errorf("slack received %q", slackTokens)
	}
}

// TestSDKEvents: an SDK's event batch is stored once per (instance, sequence), plain
// or gzip; invalid batches are 422 and write nothing; admin keys get 403.
func TestSDKEvents(t *testing.T) {
	h := newAlertHarness(t, "")
	h.call("POST", custPath("{env}"), apProd+"/customers", h.admin, map[string]any{"id": "u_1"}, 201)
	batch := secEventBatch("web-1", "u_1")
	ack := h.call("POST", "/v1/sdk/events", "/v1/sdk/events", h.sdk, batch, 200)
	if string(bytes.TrimSpace(ack)) != `{"sequence":1,"duplicate":false,"accepted":1,"alerts":0}` {
		t.Errorf("ack: %s", ack)
	}
	ack = h.call("POST", "/v1/sdk/events", "/v1/sdk/events", h.sdk, batch, 200)
	if string(bytes.TrimSpace(ack)) != `{"sequence":1,"duplicate":true,"accepted":0,"alerts":0}` {
		t.Errorf("resent ack: %s", ack)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = zw.Write([]byte(strings.Replace(batch, `"sequence":1`, `"sequence":2`, 1)))
	_ = zw.Close()
	ack = h.call("POST", "/v1/sdk/events", "/v1/sdk/events", h.sdk, gz.Bytes(), 200, "Content-Encoding", "gzip")
	if !bytes.Contains(ack, []byte(`"duplicate":false,"accepted":1`)) {
		t.Errorf("gzip ack: %s", ack)
	}
	// Unknown customers are stored too, without an alert.
	h.call("POST", "/v1/sdk/events", "/v1/sdk/events", h.sdk, secEventBatch("web-2", "nobody"), 200)
	if n := h.count(`select count(*) from sdk_events`); n != 3 {
		t.Errorf("%d events stored, want 3", n)
	}
	if n := h.count(`select count(*) from sdk_events where customer_uid is not null`); n != 2 {
		t.Errorf("%d events attributed, want 2", n)
	}
	body := h.call("POST", "/v1/sdk/events", "/v1/sdk/events", h.sdk,
		`{"instance_id":"","sequence":0,"events":[{"type":"cap-limit","customer":"u_1","count":0}]}`, 422)
	f := strings.Join(problemFields(t, body), ",")
	for _, want := range []string{"instance_id", "sequence", "events[0].count", "events[0].at"} {
		if !strings.Contains(f, want) {
			t.Errorf("invalid batch: no error at %s: %s", want, body)
		}
	}
	h.call("POST", "/v1/sdk/events", "/v1/sdk/events", h.sdk, "not gzip", 400, "Content-Encoding", "gzip")
	h.call("POST", "/v1/sdk/events", "/v1/sdk/events", h.sdk, batch, 415, "Content-Encoding", "br")
	h.call("POST", "/v1/sdk/events", "/v1/sdk/events", h.admin, batch, 403)
	if n := h.count(`select count(*) from sdk_event_batches`); n != 3 {
		t.Errorf("%d batches stored, want 3", n)
	}
}

// TestAlertsFireFromEventsAndResend: a notification rule fires from an SDK's event
// batch; the alert and its pending delivery are listed; a dead delivery is resent with
// a new River job.
func TestAlertsFireFromEventsAndResend(t *testing.T) {
	h := newAlertHarness(t, "")
	h.call("POST", custPath("{env}"), apProd+"/customers", h.admin, map[string]any{"id": "u_1"}, 201)
	h.call("POST", custPath("{env}"), apProd+"/customers", h.admin, map[string]any{"id": "u_2"}, 201)
	ch := idOf(t, h.call("POST", apChannels, apProd+"/alert-channels", h.admin, map[string]any{"name": "ops", "kind": "webhook",
		"webhook": map[string]any{"url": "http://127.0.0.1:9/never-called"}}, 201))
	rule := idOf(t, h.call("POST", apRules, apProd+"/alert-rules", h.admin, map[string]any{"name": "seats", "kind": "notification",
		"params": map[string]any{"notification": "half-seats"}, "channels": []string{ch}}, 201))
	jobs := func() int {
		return h.count(`select count(*) from river_job where kind = 'limitr.alert_delivery'`)
	}
	now := time.Now().UTC().Format(time.RFC3339)
	event := func(seq int, customer string) string {
		return `{"instance_id":"web-1","sequence":` + strconv.Itoa(seq) + `,"events":[{"type":"half-seats","notification":"half-seats","source":"meter-changed",` +
			`"customer":"` + customer + `","entitlement":"seats","at":"` + now + `","count":2,"payload":{"type":"meter-changed"}}]}`
	}
	ack := h.call("POST", "/v1/sdk/events", "/v1/sdk/events", h.sdk, event(1, "u_1"), 200)
	if !bytes.Contains(ack, []byte(`"alerts":1`)) {
		t.Fatalf("the notification fired nothing: %s", ack)
	}
	// Once per period: the same notification again fires nothing new.
	ack = h.call("POST", "/v1/sdk/events", "/v1/sdk/events", h.sdk, event(2, "u_1"), 200)
	if !bytes.Contains(ack, []byte(`"alerts":0`)) {
		t.Errorf("the notification fired twice: %s", ack)
	}
	h.call("POST", "/v1/sdk/events", "/v1/sdk/events", h.sdk, event(3, "u_2"), 200)
	if n := jobs(); n != 2 {
		t.Errorf("%d delivery jobs queued, want 2", n)
	}

	al := "/v1/environments/{env}/alerts"
	var alertsPage list[struct {
		ID         string `json:"id"`
		RuleID     string `json:"rule_id"`
		CustomerID string `json:"customer_id"`
	}]
	_ = json.Unmarshal(h.call("GET", al, apProd+"/alerts", h.admin, nil, 200), &alertsPage)
	if len(alertsPage.Data) != 2 || alertsPage.Data[0].RuleID != rule || alertsPage.NextCursor != "" {
		t.Fatalf("alerts: %+v", alertsPage)
	}
	_ = json.Unmarshal(h.call("GET", al, apProd+"/alerts?customer=u_1", h.admin, nil, 200), &alertsPage)
	if len(alertsPage.Data) != 1 || alertsPage.Data[0].CustomerID != "u_1" {
		t.Errorf("u_1's alerts: %+v", alertsPage)
	}
	u1Alert := alertsPage.Data[0].ID
	_ = json.Unmarshal(h.call("GET", al, apProd+"/alerts?limit=1", h.admin, nil, 200), &alertsPage)
	if len(alertsPage.Data) != 1 || alertsPage.NextCursor != alertsPage.Data[0].ID {
		t.Fatalf("first page: %+v", alertsPage)
	}
	first := alertsPage.Data[0].ID
	cursor := alertsPage.NextCursor
	alertsPage.NextCursor = ""
	_ = json.Unmarshal(h.call("GET", al, apProd+"/alerts?limit=1&before="+cursor, h.admin, nil, 200), &alertsPage)
	if len(alertsPage.Data) != 1 || alertsPage.Data[0].ID == first || alertsPage.NextCursor != "" {
		t.Errorf("second page: %+v", alertsPage)
	}
	h.call("GET", al, apProd+"/alerts?before=x", h.admin, nil, 422)
	h.call("GET", al, apProd+"/alerts?limit=0", h.admin, nil, 422)

	dl := "/v1/environments/{env}/alert-deliveries"
	var deliveries list[struct {
		ID      string `json:"id"`
		AlertID string `json:"alert_id"`
		Status  string `json:"status"`
	}]
	_ = json.Unmarshal(h.call("GET", dl, apProd+"/alert-deliveries?status=pending", h.admin, nil, 200), &deliveries)
	if len(deliveries.Data) != 2 || deliveries.Data[0].Status != "pending" {
		t.Fatalf("pending deliveries: %+v", deliveries)
	}
	_ = json.Unmarshal(h.call("GET", dl, apProd+"/alert-deliveries?alert="+u1Alert, h.admin, nil, 200), &deliveries)
	if len(deliveries.Data) != 1 || deliveries.Data[0].AlertID != u1Alert {
		t.Fatalf("u_1's alert's deliveries: %+v", deliveries)
	}
	d := deliveries.Data[0].ID
	_ = json.Unmarshal(h.call("GET", dl, apProd+"/alert-deliveries?status=dead", h.admin, nil, 200), &deliveries)
	if len(deliveries.Data) != 0 {
		t.Errorf("dead deliveries: %+v", deliveries)
	}
	h.call("GET", dl, apProd+"/alert-deliveries?status=lost", h.admin, nil, 422)
	h.call("GET", dl, apProd+"/alert-deliveries?alert=x", h.admin, nil, 422)
	h.call("GET", dl+"/{id}", apProd+"/alert-deliveries/"+d, h.admin, nil, 200)
	h.call("GET", dl+"/{id}", apProd+"/alert-deliveries/x", h.admin, nil, 404)

	// In progress: not resendable. Dead: resent, with a new job.
	if b := h.call("POST", dl+"/{id}/resend", apProd+"/alert-deliveries/"+d+"/resend", h.admin, nil, 409); !bytes.Contains(b, []byte("it is pending")) {
		t.Errorf("resending a pending delivery: %s", b)
	}
	if _, err := h.pool.Exec(context.Background(), `update alert_deliveries set status = 'dead', last_error = 'gave up' where id = $1`, d); err != nil {
		t.Fatal(err)
	}
	before := jobs()
	res := h.call("POST", dl+"/{id}/resend", apProd+"/alert-deliveries/"+d+"/resend", h.admin, nil, 200)
	if !bytes.Contains(res, []byte(`"status":"pending"`)) || !bytes.Contains(res, []byte(`"resends":1`)) {
		t.Errorf("resent delivery: %s", res)
	}
	if n := jobs(); n != before+1 {
		t.Errorf("%d delivery jobs after the resend, want %d", n, before+1)
	}
	if n := h.count(`select count(*) from river_job where kind = 'limitr.alert_delivery' and args->>'delivery_id' = $1 and state = 'available'`, d); n != 2 {
		t.Errorf("%d available jobs for the resent delivery, want 2 (the first, never worked here, and the resend)", n)
	}
	h.call("POST", dl+"/{id}/resend", apProd+"/alert-deliveries/"+d+"/resend", h.admin, nil, 409)
}
