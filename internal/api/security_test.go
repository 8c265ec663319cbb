package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/limitr/limitr/internal/httpx/problem"
	"github.com/limitr/limitr/internal/platform/pgtest"
)

// The security matrix: every route (taken from the router, so a new route without a
// table entry fails), called with no key, malformed keys, a revoked key, another
// tenant's keys, another environment's SDK key and an SDK key on admin routes. Tenant
// A owns the data under attack; tenant B is the attacker with data of its own.

// secEnv is an environment only tenant A has, so that tenant B's keys name an
// environment that does not exist for them.
const secEnv = "apac"

type secResp struct {
	Code   int
	Header http.Header
	Body   []byte
}

// secDo sends a request with a raw Authorization header ("" for none). A body is sent
// as application/json unless hdr sets another Content-Type. A 5xx fails the test.
func secDo(t testing.TB, h http.Handler, method, path, authz string, body []byte, hdr ...string) secResp {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req := httptest.NewRequest(method, path, rd)
	// The push stream answers until the client goes: give it a moment, then hang up.
	timeout := 30 * time.Second
	if strings.Contains(path, "/sdk/stream") {
		timeout = 300 * time.Millisecond
	}
	ctx, cancel := context.WithTimeout(req.Context(), timeout)
	defer cancel()
	req = req.WithContext(ctx)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code >= 500 {
		t.Errorf("%s %s: %d (a 5xx): %s", method, secTrim(path), rec.Code, rec.Body.Bytes())
	}
	return secResp{Code: rec.Code, Header: rec.Header(), Body: rec.Body.Bytes()}
}

func secTrim(s string) string {
	if len(s) > 120 {
		return s[:120] + fmt.Sprintf("...(%d bytes)", len(s))
	}
	return s
}

// secProblem checks a problem+json response with a detail and the wanted status.
func secProblem(t testing.TB, what string, r secResp, want ...int) {
	t.Helper()
	ok := false
	for _, w := range want {
		ok = ok || r.Code == w
	}
	if !ok {
		t.Errorf("%s: status %d, want %v: %s", what, r.Code, want, secTrim(string(r.Body)))
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != problem.ContentType {
		t.Errorf("%s: Content-Type %q, want %s", what, ct, problem.ContentType)
	}
	var p problem.Problem
	if err := json.Unmarshal(r.Body, &p); err != nil || p.Status != r.Code || strings.TrimSpace(p.Detail) == "" {
		t.Errorf("%s: not a problem with a detail (%v): %s", what, err, secTrim(string(r.Body)))
	}
}

// secSnapshot fingerprints every row a tenant owns, table by table: every table with a
// tenant_id column (so tables added later are covered), and the tenant's own row.
func secSnapshot(t testing.TB, pool *pgxpool.Pool, tenantID uuid.UUID) map[string]string {
	t.Helper()
	ctx := context.Background()
	rows, err := pool.Query(ctx, `select c.table_name from information_schema.columns c
		join information_schema.tables t on t.table_schema = c.table_schema and t.table_name = c.table_name
		where c.table_schema = current_schema() and c.column_name = 'tenant_id' and t.table_type = 'BASE TABLE'
		order by 1`)
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			t.Fatal(err)
		}
		tables = append(tables, name)
	}
	rows.Close()
	if len(tables) < 10 {
		t.Fatalf("only %d tenant tables: %v", len(tables), tables)
	}
	out := map[string]string{}
	fingerprint := func(name, from, where string) {
		var v string
		err := pool.QueryRow(ctx, `select count(*)::text || ':' || coalesce(md5(string_agg(t::text, '|' order by t::text)), '')
			from `+from+` t where `+where, tenantID.String()).Scan(&v)
		if err != nil {
			t.Fatalf("snapshot %s: %v", name, err)
		}
		out[name] = v
	}
	for _, table := range tables {
		fingerprint(table, pgxIdent(table), "tenant_id::text = $1")
	}
	fingerprint("tenants", "tenants", "id::text = $1")
	return out
}

func pgxIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

func secSameSnapshot(t testing.TB, what string, before, after map[string]string) {
	t.Helper()
	for k, v := range before {
		if after[k] != v {
			t.Errorf("%s: tenant rows in %s changed: %s -> %s", what, k, v, after[k])
		}
	}
}

// secWorld is two tenants with data on one server.
type secWorld struct {
	h *custHarness
	a custTenant
	b custTenant
	// Tenant A's keys: an SDK key of secEnv, one of staging, a revoked admin key.
	aSDK, aStaging, aRevoked string
	aSDKID                   uuid.UUID
	bSDK                     string
	// A's invoice (of its priced topup) and test clock.
	aInvoice, aClock string
	aVoucher         string // the voucher id of acme-user-4412
	aCapKey          string // the key of acme-user-4412's cap acme-cap-4412
	// A's alert channel, rule, and a delivery the rule made (pending).
	aChannel, aRule, aDelivery string
	// aSecrets are strings that identify tenant A's data: none may reach tenant B.
	aSecrets []string
}

func (w *secWorld) mustDo(method, path, secret string, body any, want int) []byte {
	w.h.t.Helper()
	code, b := w.h.do(method, path, secret, body)
	if code != want {
		w.h.t.Fatalf("setup %s %s: %d, want %d: %s", method, path, code, want, b)
	}
	return b
}

func newSecWorld(t *testing.T) *secWorld {
	t.Helper()
	h := newCustHarness(t)
	w := &secWorld{h: h, a: h.bootstrap("acme"), b: h.bootstrap("globex")}
	var env struct{ ID uuid.UUID }
	_ = json.Unmarshal(w.mustDo("POST", "/v1/environments", w.a.secret, map[string]string{"name": secEnv}, 201), &env)
	w.a.envs[secEnv] = env.ID

	// Versions: A has 1 (production), 2 and 3 (apac, 3 active); B has only 1.
	src := custPolicySource(t)
	h.publish(w.a, "production", src)
	h.publish(w.a, secEnv, src+"  timezone: Europe/Paris\n")
	h.publish(w.a, secEnv, src+"  timezone: Europe/Berlin\n")
	h.publish(w.b, "production", src+"  timezone: Asia/Tokyo\n")

	var sdkID uuid.UUID
	w.aSDK, sdkID = h.sdkKey(w.a, secEnv)
	w.aSDKID = sdkID
	w.aStaging, _ = h.sdkKey(w.a, "staging")
	w.bSDK, _ = h.sdkKey(w.b, "production")
	var spare struct {
		ID     uuid.UUID
		Secret string
	}
	_ = json.Unmarshal(w.mustDo("POST", "/v1/keys", w.a.secret, map[string]string{"kind": "admin", "name": "spare"}, 201), &spare)
	w.aRevoked = spare.Secret
	w.mustDo("DELETE", "/v1/keys/"+spare.ID.String(), w.a.secret, nil, 200)

	cp := "/v1/environments/" + secEnv + "/customers"
	w.mustDo("POST", cp, w.a.secret, map[string]any{"id": "acme-org-4412", "type": "org", "plan": "pro"}, 201)
	w.mustDo("POST", cp, w.aSDK, map[string]any{"id": "acme-user-4412", "refs": []string{"acme-org-4412"},
		"alt_ids": []string{"acme-alt-4412"}, "metadata": map[string]any{"marker": "acme-meta-4412"}, "label": "Acme Label 4412"}, 201)
	w.mustDo("PUT", cp+"/acme-user-4412/overrides/ai_input", w.a.secret, map[string]any{"value": 5}, 200)
	var topup struct {
		GrantID string `json:"grant_id"`
	}
	_ = json.Unmarshal(w.mustDo("POST", cp+"/acme-user-4412/topups", w.a.secret, map[string]any{"topup": "boost"}, 201), &topup)
	var voucher struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(w.mustDo("PUT", cp+"/acme-user-4412/voucher", w.aSDK, map[string]any{"runes": "4412.25", "expires_at": "2099-01-01T00:00:00Z"}, 200), &voucher)
	w.aVoucher = voucher.ID
	var cp4412 struct {
		Key string `json:"key"`
	}
	_ = json.Unmarshal(w.mustDo("PUT", cp+"/acme-user-4412/caps/acme-cap-4412", w.aSDK, map[string]any{"value": "4412.75"}, 201), &cp4412)
	w.aCapKey = cp4412.Key
	w.mustDo("POST", custPath("production"), w.a.secret, map[string]any{"id": "acme-prod-4412"}, 201)
	w.mustDo("POST", custPath("production"), w.b.secret, map[string]any{"id": "globex-cust-1"}, 201)

	var invoices list[struct {
		ID string `json:"id"`
	}]
	_ = json.Unmarshal(w.mustDo("GET", "/v1/environments/"+secEnv+"/invoices", w.a.secret, nil, 200), &invoices)
	if len(invoices.Data) != 1 {
		t.Fatalf("tenant A has %d invoices, want its topup's", len(invoices.Data))
	}
	w.aInvoice = invoices.Data[0].ID
	var clock struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(w.mustDo("POST", "/v1/environments/"+secEnv+"/test-clocks", w.a.secret, map[string]string{"frozen_time": "2026-01-01T00:00:00Z"}, 201), &clock)
	w.aClock = clock.ID

	w.setUpAlerts()

	// Everything that identifies A's data.
	w.aSecrets = []string{w.aChannel, w.aRule, w.aDelivery, "acme-chan-4412", "acme-rule-4412", "acme-hook-4412", w.a.tenantID.String(), w.a.keyID.String(), w.a.secret, w.a.secret[:17], sdkID.String(),
		w.aSDK, w.aSDK[:15], w.aStaging, w.aStaging[:15], w.aRevoked, spare.ID.String(),
		"acme-org-4412", "acme-user-4412", "acme-alt-4412", "acme-meta-4412", "Acme Label 4412", "acme-prod-4412", topup.GrantID,
		voucher.ID, "4412.25", w.aInvoice, w.aClock, "acme-cap-4412", w.aCapKey, "4412.75"}
	for _, id := range w.a.envs {
		w.aSecrets = append(w.aSecrets, id.String())
	}
	var keys list[struct {
		ID     uuid.UUID `json:"id"`
		Prefix string    `json:"prefix"`
	}]
	_ = json.Unmarshal(w.mustDo("GET", "/v1/keys", w.a.secret, nil, 200), &keys)
	for _, k := range keys.Data {
		w.aSecrets = append(w.aSecrets, k.ID.String(), k.Prefix)
	}
	var vs list[struct {
		ID   uuid.UUID `json:"id"`
		Hash string    `json:"hash"`
	}]
	_ = json.Unmarshal(w.mustDo("GET", "/v1/policies", w.a.secret, nil, 200), &vs)
	if len(vs.Data) != 3 {
		t.Fatalf("tenant A has %d versions", len(vs.Data))
	}
	for _, v := range vs.Data {
		w.aSecrets = append(w.aSecrets, v.ID.String(), v.Hash)
	}
	return w
}

// biAlertChannel is tenant A's alert channel in the last world built: the bad-input
// table's rule bodies name it.
var biAlertChannel string

// setUpAlerts gives tenant A a webhook channel (its receiver is never called: no worker
// runs here), a cap_hit rule on it, and the delivery an SDK's cap-limit event made.
func (w *secWorld) setUpAlerts() {
	t := w.h.t
	t.Helper()
	ap := "/v1/environments/" + secEnv
	var ch, rule struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(w.mustDo("POST", ap+"/alert-channels", w.a.secret, map[string]any{"name": "acme-chan-4412", "kind": "webhook",
		"webhook": map[string]any{"url": "http://127.0.0.1:9/acme-hook-4412"}}, 201), &ch)
	_ = json.Unmarshal(w.mustDo("POST", ap+"/alert-rules", w.a.secret, map[string]any{"name": "acme-rule-4412", "kind": "cap_hit",
		"channels": []string{ch.ID}}, 201), &rule)
	w.mustDo("POST", "/v1/sdk/events", w.aSDK, secEventBatch("acme-events", "acme-user-4412"), 200)
	var ds list[struct {
		ID string `json:"id"`
	}]
	_ = json.Unmarshal(w.mustDo("GET", ap+"/alert-deliveries", w.a.secret, nil, 200), &ds)
	if len(ds.Data) != 1 {
		t.Fatalf("tenant A has %d alert deliveries, want the cap_hit rule's one", len(ds.Data))
	}
	w.aChannel, w.aRule, w.aDelivery = ch.ID, rule.ID, ds.Data[0].ID
	biAlertChannel = ch.ID
}

// alertIDs fills {id} in an alert route with A's resource.
func (w *secWorld) alertIDs(p string) string {
	for prefix, id := range map[string]string{"/alert-channels/": w.aChannel, "/alert-rules/": w.aRule, "/alert-deliveries/": w.aDelivery} {
		if strings.Contains(p, prefix+"{id}") {
			return strings.Replace(p, "{id}", id, 1)
		}
	}
	return p
}

// secEventBatch is a valid event batch of one cap-limit event for customer.
func secEventBatch(instance, customer string) string {
	return fmt.Sprintf(`{"instance_id":%q,"sequence":1,"sent_at":%q,"policy_version":3,"events":[{"type":"cap-limit","customer":%q,"entitlement":"ai_input","cap_id":"matrix-cap","at":%q,"count":1}]}`,
		instance, time.Now().UTC().Format(time.RFC3339), customer, time.Now().UTC().Format(time.RFC3339))
}

// leaks reports tenant A's strings in a response, leaving out those the request itself
// carried (a problem may quote the caller's own input).
func (w *secWorld) leaks(r secResp, path string, body []byte) []string {
	var out []string
	for _, s := range w.aSecrets {
		if s == "" || strings.Contains(path, s) || bytes.Contains(body, []byte(s)) {
			continue
		}
		if bytes.Contains(r.Body, []byte(s)) || strings.Contains(fmt.Sprint(r.Header), s) {
			out = append(out, s)
		}
	}
	return out
}

// secRoute describes one route for the matrix.
type secRoute struct {
	body      string // a valid body, "" for none
	public    bool   // no authentication
	operator  bool   // the operator token, not API keys
	adminOnly bool   // SDK keys get 403
	sdkOnly   bool   // admin keys get 403
	signed    bool   // no API key: a signature in the request (Stripe webhooks)
	// own: another tenant's admin key acts on its own tenant (lists, creations) rather
	// than reaching for one of A's resources (which is then a 404).
	own bool
}

func secRoutes(t *testing.T) map[string]secRoute {
	quickstart, err := os.ReadFile("../../examples/policies/quickstart-ai.json")
	if err != nil {
		t.Fatal(err)
	}
	return map[string]secRoute{
		"GET /healthz":      {public: true},
		"GET /readyz":       {public: true},
		"GET /openapi.json": {public: true},

		"POST /v1/tenants": {operator: true, body: `{"slug":"matrix-tenant"}`},

		"GET /v1/tenant":        {adminOnly: true, own: true},
		"GET /v1/environments":  {adminOnly: true, own: true},
		"POST /v1/environments": {adminOnly: true, own: true, body: `{"name":"matrix-env"}`},
		"GET /v1/keys":          {adminOnly: true, own: true},
		"POST /v1/keys":         {adminOnly: true, own: true, body: `{"kind":"sdk","environment":"production","name":"matrix"}`},
		"DELETE /v1/keys/{id}":  {adminOnly: true},
		"GET /v1/audit":         {adminOnly: true, own: true},

		"POST /v1/policies":                             {adminOnly: true, own: true, body: string(quickstart)},
		"GET /v1/policies":                              {adminOnly: true, own: true},
		"GET /v1/policies/diff":                         {adminOnly: true},
		"GET /v1/policies/{number}":                     {adminOnly: true},
		"GET /v1/policies/{number}/source":              {adminOnly: true},
		"POST /v1/environments/{env}/publish":           {adminOnly: true, body: `{"version":1}`},
		"POST /v1/environments/{env}/rollback":          {adminOnly: true, body: `{"version":2}`},
		"GET /v1/environments/{env}/policy":             {},
		"GET /v1/environments/{env}/publications":       {adminOnly: true},
		"GET /v1/sdk/policy":                            {sdkOnly: true},
		"GET /v1/sdk/stream":                            {sdkOnly: true},
		"GET /v1/sdk/customers/{id}/state":              {sdkOnly: true},
		"GET /v1/environments/{env}/usage/unattributed": {adminOnly: true},
		"POST /v1/sdk/usage":                            {sdkOnly: true, body: secUsageBatch("acme-user-4412")},
		"POST /v1/sdk/leases":                           {sdkOnly: true, body: secLeaseRequest("acme-user-4412")},
		"POST /v1/sdk/leases/return":                    {sdkOnly: true, body: `{"instance_id":"matrix-1"}`},

		"POST /v1/environments/{env}/customers":                                {body: `{"id":"matrix-cust"}`},
		"GET /v1/environments/{env}/customers":                                 {},
		"GET /v1/environments/{env}/customers/{id}":                            {},
		"PATCH /v1/environments/{env}/customers/{id}":                          {body: `{"label":"pwned"}`},
		"DELETE /v1/environments/{env}/customers/{id}":                         {},
		"PUT /v1/environments/{env}/customers/{id}/plan":                       {body: `{"plan":"base"}`},
		"PUT /v1/environments/{env}/customers/{id}/overrides/{entitlement}":    {body: `{"value":1}`},
		"DELETE /v1/environments/{env}/customers/{id}/overrides/{entitlement}": {},
		"POST /v1/environments/{env}/customers/{id}/topups":                    {body: `{"topup":"monthly_included"}`},
		"PUT /v1/environments/{env}/customers/{id}/voucher":                    {body: `{"runes":"1","expires_at":"2099-01-01T00:00:00Z"}`},
		"GET /v1/environments/{env}/customers/{id}/voucher":                    {},
		"DELETE /v1/environments/{env}/customers/{id}/voucher":                 {},
		"PUT /v1/environments/{env}/customers/{id}/caps/{cap}":                 {body: `{"value":"1"}`},
		"GET /v1/environments/{env}/customers/{id}/caps":                       {},
		"GET /v1/environments/{env}/customers/{id}/caps/{cap}":                 {},
		"DELETE /v1/environments/{env}/customers/{id}/caps/{cap}":              {},
		"POST /v1/environments/{env}/customers/{id}/caps/{cap}/reset":          {},

		"GET /v1/environments/{env}/billing":                                {adminOnly: true},
		"PUT /v1/environments/{env}/billing":                                {adminOnly: true, body: `{"currency":"EUR"}`},
		"GET /v1/environments/{env}/customers/{id}/invoices/upcoming":       {adminOnly: true},
		"GET /v1/environments/{env}/invoices":                               {adminOnly: true},
		"GET /v1/environments/{env}/invoices/{invoice}":                     {adminOnly: true},
		"GET /v1/environments/{env}/invoices/{invoice}/document":            {adminOnly: true},
		"POST /v1/environments/{env}/invoices/{invoice}/finalize":           {adminOnly: true},
		"POST /v1/environments/{env}/invoices/{invoice}/void":               {adminOnly: true},
		"POST /v1/environments/{env}/invoices/{invoice}/mark-paid":          {adminOnly: true},
		"POST /v1/environments/{env}/invoices/{invoice}/mark-uncollectible": {adminOnly: true},
		"GET /v1/environments/{env}/invoices/{invoice}/credit-notes":        {adminOnly: true},
		"POST /v1/environments/{env}/invoices/{invoice}/credit-notes":       {adminOnly: true, body: `{"reason":"x","lines":[{"description":"a","amount":"1.00"}]}`},
		"POST /v1/environments/{env}/test-clocks":                           {adminOnly: true, body: `{"frozen_time":"2030-01-01T00:00:00Z"}`},
		"GET /v1/environments/{env}/test-clocks/{clock}":                    {adminOnly: true},
		"POST /v1/environments/{env}/test-clocks/{clock}/advance":           {adminOnly: true, body: `{"frozen_time":"2031-01-01T00:00:00Z"}`},
		"GET /v1/environments/{env}/integrations/stripe":                    {adminOnly: true},
		"PUT /v1/environments/{env}/integrations/stripe":                    {adminOnly: true, body: `{"secret_key":"sk_test_1","webhook_secret":"whsec_1"}`},
		"DELETE /v1/environments/{env}/integrations/stripe":                 {adminOnly: true},
		"POST /v1/webhooks/stripe/{environment_id}":                         {signed: true, body: `{"id":"evt_1","type":"invoice.paid"}`},

		"POST /v1/environments/{env}/alert-channels":               {adminOnly: true, body: `{"name":"matrix-chan","kind":"webhook","webhook":{"url":"http://127.0.0.1:9/matrix"}}`},
		"GET /v1/environments/{env}/alert-channels":                {adminOnly: true},
		"GET /v1/environments/{env}/alert-channels/{id}":           {adminOnly: true},
		"PATCH /v1/environments/{env}/alert-channels/{id}":         {adminOnly: true, body: `{"name":"pwned"}`},
		"DELETE /v1/environments/{env}/alert-channels/{id}":        {adminOnly: true},
		"POST /v1/environments/{env}/alert-channels/{id}/test":     {adminOnly: true},
		"POST /v1/environments/{env}/alert-rules":                  {adminOnly: true, body: `{"name":"matrix-rule","kind":"cap_hit","channels":["00000000-0000-0000-0000-000000000001"]}`},
		"GET /v1/environments/{env}/alert-rules":                   {adminOnly: true},
		"GET /v1/environments/{env}/alert-rules/{id}":              {adminOnly: true},
		"PATCH /v1/environments/{env}/alert-rules/{id}":            {adminOnly: true, body: `{"enabled":false}`},
		"DELETE /v1/environments/{env}/alert-rules/{id}":           {adminOnly: true},
		"GET /v1/environments/{env}/alerts":                        {adminOnly: true},
		"GET /v1/environments/{env}/alert-deliveries":              {adminOnly: true},
		"GET /v1/environments/{env}/alert-deliveries/{id}":         {adminOnly: true},
		"POST /v1/environments/{env}/alert-deliveries/{id}/resend": {adminOnly: true},
		"POST /v1/sdk/events":                                      {sdkOnly: true, body: secEventBatch("matrix-1", "acme-user-4412")},

		"GET /v1/environments/{env}/analytics/margins":     {adminOnly: true},
		"GET /v1/environments/{env}/analytics/usage":       {adminOnly: true},
		"GET /v1/environments/{env}/customers/{id}/margin": {adminOnly: true},
		"POST /v1/environments/{env}/simulations":          {adminOnly: true, body: `{"version":2}`},
		"GET /v1/environments/{env}/simulations":           {adminOnly: true},
		"GET /v1/environments/{env}/simulations/{id}":      {adminOnly: true},
	}
}

// secUsageBatch is a valid usage batch of one delta for customer.
func secUsageBatch(customer string) string {
	start := time.Now().UTC()
	start = time.Date(start.Year(), start.Month(), 1, 0, 0, 0, 0, time.UTC)
	return fmt.Sprintf(`{"instance_id":"matrix-1","sequence":1,"sent_at":%q,"policy_version":3,"deltas":[{"customer":%q,"entitlement":"ai_input","credit":"ai_input_token","period_start":%q,"units":"5","overhead":"0","price":"0","calls":1}]}`,
		time.Now().UTC().Format(time.RFC3339), customer, start.Format(time.RFC3339))
}

// secLeaseRequest is a valid lease request of one meter of customer.
func secLeaseRequest(customer string) string {
	start := time.Now().UTC()
	start = time.Date(start.Year(), start.Month(), 1, 0, 0, 0, 0, time.UTC)
	return fmt.Sprintf(`{"instance_id":"matrix-1","leases":[{"customer":%q,"entitlement":"ai_input","period_start":%q,"limit":"100","target":"10","used":"0"}]}`,
		customer, start.Format(time.RFC3339))
}

// secPath fills a route template with tenant A's resources.
func (w *secWorld) secPath(template, env string) string {
	p := strings.NewReplacer("{env}", env, "{number}", "3", "{entitlement}", "ai_input", "{cap}", "acme-cap-4412", "{invoice}", w.aInvoice,
		"{clock}", w.aClock, "{environment_id}", w.a.envs[secEnv].String()).Replace(template)
	if strings.HasPrefix(p, "/v1/keys/") {
		p = strings.Replace(p, "{id}", w.aSDKID.String(), 1)
	}
	p = w.alertIDs(p)
	p = strings.Replace(p, "{id}", "acme-user-4412", 1)
	if strings.HasSuffix(p, "/diff") {
		p += "?from=1&to=3"
	}
	return p
}

func TestSecurityMatrix(t *testing.T) {
	w := newSecWorld(t)
	srv := w.h.srv.Handler()
	table := secRoutes(t)

	// The table covers the router exactly.
	routes := routerRoutes(w.h.srv)
	for _, r := range routes {
		if _, ok := table[r]; !ok {
			t.Errorf("route %s has no entry in the security table: add one", r)
		}
	}
	for r := range table {
		found := false
		for _, rr := range routes {
			found = found || rr == r
		}
		if !found {
			t.Errorf("the security table has %s, which the router does not serve", r)
		}
	}

	before := secSnapshot(t, w.h.pool, w.a.tenantID)
	bearer := func(s string) string { return "Bearer " + s }
	type attempt struct {
		who, authz string
	}
	malformed := []attempt{
		{"no key", ""},
		{"short key", bearer("lk_admin_short")},
		{"bare Bearer", "Bearer"},
		{"Basic auth", "Basic xyz"},
		{"right shape, unknown", bearer("lk_admin_" + strings.Repeat("A", 32))},
		{"revoked admin key", bearer(w.aRevoked)},
	}
	names := make([]string, 0, len(table))
	for n := range table {
		names = append(names, n)
	}
	sort.Strings(names)
	requests := 0
	for _, name := range names {
		rt := table[name]
		method, template, _ := strings.Cut(name, " ")
		path := w.secPath(template, secEnv)
		var body []byte
		if rt.body != "" {
			body = []byte(rt.body)
		}
		send := func(authz string) secResp {
			requests++
			r := secDo(t, srv, method, path, authz, body)
			if authz != bearer(w.a.secret) {
				if l := w.leaks(r, path, body); len(l) > 0 {
					t.Errorf("%s with %q: tenant A's data in the response: %q: %s", name, secTrim(authz), l, secTrim(string(r.Body)))
				}
			}
			return r
		}
		if rt.public {
			if r := send(""); r.Code != 200 {
				t.Errorf("%s without a key: %d", name, r.Code)
			}
			continue
		}
		if rt.signed {
			// A's environment is not connected to Stripe; connected, an unsigned or
			// badly signed event is a 400 (TestStripeWebhooks).
			for _, a := range append(malformed, attempt{"A's admin key", bearer(w.a.secret)}) {
				secProblem(t, name+" with "+a.who, send(a.authz), 400, 404)
			}
			continue
		}
		for _, a := range malformed {
			r := send(a.authz)
			secProblem(t, name+" with "+a.who, r, 401)
			if !rt.operator && r.Header.Get("WWW-Authenticate") == "" {
				t.Errorf("%s with %s: no WWW-Authenticate", name, a.who)
			}
		}
		envScoped := strings.Contains(template, "{env}")
		// Tenant A's own SDK keys.
		switch {
		case rt.operator:
			secProblem(t, name+" with an SDK key", send(bearer(w.aSDK)), 401)
			secProblem(t, name+" with A's admin key", send(bearer(w.a.secret)), 401)
		case rt.adminOnly:
			secProblem(t, name+" with an SDK key of the right environment", send(bearer(w.aSDK)), 403)
			secProblem(t, name+" with a staging SDK key", send(bearer(w.aStaging)), 403)
		case envScoped:
			secProblem(t, name+" with a staging SDK key", send(bearer(w.aStaging)), 403)
		}
		// Tenant B's admin key.
		rb := send(bearer(w.b.secret))
		switch {
		case rt.operator:
			secProblem(t, name+" with another tenant's admin key", rb, 401)
		case rt.sdkOnly:
			secProblem(t, name+" with another tenant's admin key", rb, 403)
		case rt.own:
			if rb.Code != 200 && rb.Code != 201 {
				t.Errorf("%s with another tenant's admin key: %d, want its own data: %s", name, rb.Code, rb.Body)
			}
		default:
			secProblem(t, name+" with another tenant's admin key", rb, 404)
		}
		// Tenant B's SDK key (bound to B's production): never more than 403/404 on A's
		// resources; its own policy on /v1/sdk/policy.
		rs := send(bearer(w.bSDK))
		switch {
		case rt.operator:
			secProblem(t, name+" with another tenant's SDK key", rs, 401)
		case rt.sdkOnly:
			// Its own environment: A's customers are unknown there, so usage naming them
			// is committed to B's environment as unattributed, never to A's customers.
			want := map[string]int{"GET /v1/sdk/customers/{id}/state": 404, "POST /v1/sdk/leases/return": 204}[name]
			if want == 0 && rs.Code != 200 || want != 0 && rs.Code != want {
				t.Errorf("%s with another tenant's SDK key: %d: %s", name, rs.Code, secTrim(string(rs.Body)))
			}
			if name == "POST /v1/sdk/usage" && !strings.Contains(string(rs.Body), `"accepted":0,`) {
				t.Errorf("%s with another tenant's SDK key attributed usage: %s", name, secTrim(string(rs.Body)))
			}
			if name == "POST /v1/sdk/leases" && !strings.Contains(string(rs.Body), `"error":"unknown_customer"`) {
				t.Errorf("%s with another tenant's SDK key leased A's customer: %s", name, secTrim(string(rs.Body)))
			}
		default:
			secProblem(t, name+" with another tenant's SDK key", rs, 403, 404)
		}
	}

	// Environment-scoped reads of an environment both tenants have: tenant B sees its
	// own production, never A's.
	for _, name := range names {
		method, template, _ := strings.Cut(name, " ")
		if method != "GET" || !strings.Contains(template, "{env}") {
			continue
		}
		path := w.secPath(template, "production")
		requests++
		r := secDo(t, srv, method, path, "Bearer "+w.b.secret, nil)
		var sent []byte
		if strings.HasSuffix(template, "/usage/unattributed") {
			// B's SDK key sent usage naming A's customer into B's environment above:
			// B's own unattributed records echo the name B sent, nothing of A's.
			sent = []byte(secUsageBatch("acme-user-4412"))
		}
		if l := w.leaks(r, path, sent); len(l) > 0 {
			t.Errorf("%s on production with B's key: A's data: %q: %s", name, l, r.Body)
		}
		if strings.Contains(template, "{id}") || strings.Contains(template, "{invoice}") || strings.Contains(template, "{clock}") {
			secProblem(t, name+" on production with B's key", r, 404)
		} else if r.Code != 200 {
			t.Errorf("%s on production with B's key: %d %s", name, r.Code, r.Body)
		}
	}
	r := secDo(t, srv, "GET", "/v1/environments/production/customers", "Bearer "+w.b.secret, nil)
	if !bytes.Contains(r.Body, []byte("globex-cust-1")) {
		t.Errorf("B's own list lacks its customer: %s", r.Body)
	}
	// Unknown routes under /v1 need a key too, and are then a 404 problem.
	secProblem(t, "unknown route without a key", secDo(t, srv, "GET", "/v1/nothing-here", "", nil), 401)
	secProblem(t, "unknown route", secDo(t, srv, "GET", "/v1/nothing-here", "Bearer "+w.a.secret, nil), 404)

	secSameSnapshot(t, "after the security matrix", before, secSnapshot(t, w.h.pool, w.a.tenantID))
	t.Logf("%d routes, %d requests", len(names), requests)

	// The customer under attack is as it was.
	code, body := w.h.do("GET", "/v1/environments/"+secEnv+"/customers/acme-user-4412", w.aSDK, nil)
	if c := decodeCustomer(t, body); code != 200 || c.Label != "Acme Label 4412" || c.Revision != 5 || len(c.Topups) != 1 || len(c.Overrides) != 1 || c.Voucher == nil || c.Voucher.ID != w.aVoucher ||
		len(c.Caps) != 1 || c.Caps[0].Key != w.aCapKey || c.Caps[0].Value != "4412.75" {
		t.Errorf("after the matrix: %d %s", code, body)
	}
}

// TestSecurityRevocationImmediate: a revoked key fails on the next request, even though
// it was cached a moment before.
func TestSecurityRevocationImmediate(t *testing.T) {
	h := newCustHarness(t)
	a := h.bootstrap("acme")
	h.publish(a, "production", custPolicySource(t))
	srv := h.srv.Handler()
	for _, kind := range []string{"admin", "sdk"} {
		body := map[string]string{"kind": kind, "name": "victim"}
		path := "/v1/tenant"
		if kind == "sdk" {
			body["environment"] = "production"
			path = "/v1/sdk/policy"
		}
		code, b := h.do("POST", "/v1/keys", a.secret, body)
		if code != 201 {
			t.Fatalf("create key: %d %s", code, b)
		}
		var k struct {
			ID     string
			Secret string
		}
		_ = json.Unmarshal(b, &k)
		if r := secDo(t, srv, "GET", path, "Bearer "+k.Secret, nil); r.Code != 200 {
			t.Fatalf("%s key before revocation: %d %s", kind, r.Code, r.Body)
		}
		if _, ok := h.srv.keys.get(k.Secret); !ok {
			t.Fatalf("%s key is not cached: the test would not exercise the cache", kind)
		}
		if r := secDo(t, srv, "DELETE", "/v1/keys/"+k.ID, "Bearer "+a.secret, nil); r.Code != 200 {
			t.Fatalf("revoke: %d %s", r.Code, r.Body)
		}
		secProblem(t, kind+" key right after revocation", secDo(t, srv, "GET", path, "Bearer "+k.Secret, nil), 401)
		// Nor can it do anything else.
		secProblem(t, kind+" key creating a customer", secDo(t, srv, "POST", custPath("production"), "Bearer "+k.Secret, []byte(`{"id":"x"}`)), 401)
		// Revoking twice is harmless.
		if r := secDo(t, srv, "DELETE", "/v1/keys/"+k.ID, "Bearer "+a.secret, nil); r.Code >= 500 {
			t.Fatalf("second revoke: %d", r.Code)
		}
	}
	// A key cannot revoke another tenant's key.
	b := h.bootstrap("globex")
	secProblem(t, "revoke another tenant's key", secDo(t, srv, "DELETE", "/v1/keys/"+a.keyID.String(), "Bearer "+b.secret, nil), 404)
	if r := secDo(t, srv, "GET", "/v1/tenant", "Bearer "+a.secret, nil); r.Code != 200 {
		t.Fatalf("A's key after B's attempt: %d", r.Code)
	}
}

// TestSecurityRevocationAcrossReplicas: two servers share Postgres and Redis; a key
// cached on server 2 is rejected there within 100 ms of its revocation on server 1.
func TestSecurityRevocationAcrossReplicas(t *testing.T) {
	redisURL := os.Getenv("LIMITR_TEST_REDIS_URL")
	if redisURL == "" {
		t.Skip("LIMITR_TEST_REDIS_URL is not set: run `eval \"$(scripts/services.sh)\"` first")
	}
	opt, err := redis.ParseURL(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	client := redis.NewClient(opt)
	t.Cleanup(func() { _ = client.Close() })
	if err := client.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("redis: %v", err)
	}
	_, pool := pgtest.NewMigrated(t)
	// A long cache TTL: only the broadcast can evict the key in time.
	cfg := Config{OperatorToken: "op", KeyCacheTTL: time.Hour}
	var servers [2]*Server
	for i := range servers {
		s, err := New(cfg, Deps{Pool: pool, Redis: client, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		servers[i] = s
	}
	s1, s2 := servers[0].Handler(), servers[1].Handler()
	r := secDo(t, s1, "POST", "/v1/tenants", "Bearer op", []byte(`{"slug":"acme"}`))
	if r.Code != 201 {
		t.Fatalf("bootstrap: %d %s", r.Code, r.Body)
	}
	var boot struct{ Secret string }
	_ = json.Unmarshal(r.Body, &boot)
	admin := "Bearer " + boot.Secret
	newKey := func() (id, secret string) {
		r := secDo(t, s1, "POST", "/v1/keys", admin, []byte(`{"kind":"admin","name":"victim"}`))
		if r.Code != 201 {
			t.Fatalf("create key: %d %s", r.Code, r.Body)
		}
		var k struct{ ID, Secret string }
		_ = json.Unmarshal(r.Body, &k)
		return k.ID, k.Secret
	}
	// revokeAndWait caches the key on server 2, revokes it on server 1 and returns how
	// long server 2 kept accepting it after the revocation answered (up to limit).
	revokeAndWait := func(limit time.Duration) (time.Duration, bool) {
		id, secret := newKey()
		if r := secDo(t, s2, "GET", "/v1/tenant", "Bearer "+secret, nil); r.Code != 200 {
			t.Fatalf("server 2 before revocation: %d", r.Code)
		}
		if _, ok := servers[1].keys.get(secret); !ok {
			t.Fatal("the key is not cached on server 2")
		}
		if r := secDo(t, s1, "DELETE", "/v1/keys/"+id, admin, nil); r.Code != 200 {
			t.Fatalf("revoke on server 1: %d %s", r.Code, r.Body)
		}
		revoked := time.Now()
		for {
			r := secDo(t, s2, "GET", "/v1/tenant", "Bearer "+secret, nil)
			if r.Code == 401 {
				return time.Since(revoked), true
			}
			if r.Code != 200 {
				t.Fatalf("server 2 during revocation: %d %s", r.Code, r.Body)
			}
			if time.Since(revoked) > limit {
				return time.Since(revoked), false
			}
			time.Sleep(500 * time.Microsecond)
		}
	}
	// The first revocation also proves server 2's subscription is live (it is set up
	// asynchronously when the server starts).
	if d, ok := revokeAndWait(5 * time.Second); !ok {
		t.Fatalf("server 2 still accepts a key revoked on server 1 after %v: the revocation broadcast does not arrive", d)
	}
	var worst time.Duration
	for range 5 {
		d, ok := revokeAndWait(2 * time.Second)
		if !ok {
			t.Fatalf("server 2 still accepts a revoked key after %v", d)
		}
		worst = max(worst, d)
	}
	t.Logf("worst time for server 2 to reject a key revoked on server 1: %v", worst)
	if worst > 100*time.Millisecond {
		t.Fatalf("server 2 accepted a revoked key for %v, want at most 100ms", worst)
	}
}
