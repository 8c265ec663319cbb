package api

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/limitr/limitr/internal/enforcement"
	"github.com/limitr/limitr/internal/httpx/problem"
	"github.com/limitr/limitr/internal/platform/pgtest"
	"github.com/limitr/limitr/internal/policies"
	"github.com/limitr/limitr/internal/policies/doctree"
	"github.com/limitr/limitr/internal/policies/pgstore"
	"github.com/limitr/limitr/internal/secrets"
	"github.com/limitr/limitr/internal/store"
	"github.com/limitr/limitr/internal/wire"
)

// custProPlan extends examples/policies/ai-credits.yaml with a second plan, a
// plan-only entitlement and a priced topup with an expiry.
const custProPlan = `    pro:
      entitlements:
        ai_input:
          limit: { credit: ai_input_token, mode: soft, value: 1_000_000, resets: true }
        file_storage:
          limit: { credit: mb_storage, mode: soft, value: 500 }
        priority_support: {}
      topups:
        boost:
          credit: ai_credit
          value: 2.5
          price: { amount: 4.99 }
          expires_after: 30days
`

type custHarness struct {
	t    *testing.T
	srv  *Server
	pool *pgxpool.Pool
}

type custTenant struct {
	secret   string
	tenantID uuid.UUID
	keyID    uuid.UUID
	envs     map[string]uuid.UUID
}

func newCustHarness(t *testing.T) *custHarness {
	t.Helper()
	_, pool := pgtest.NewMigrated(t)
	// A keyring of its own, as in production (Stripe secrets are refused without one).
	spec, err := secrets.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	kr, err := secrets.ParseKeyring(spec)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(Config{OperatorToken: "op"}, Deps{Pool: pool, Logger: slog.New(slog.DiscardHandler), Secrets: kr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return &custHarness{t: t, srv: srv, pool: pool}
}

// do sends a request; body is raw bytes/string or a value to encode as JSON.
func (h *custHarness) do(method, path, secret string, body any) (int, []byte) {
	h.t.Helper()
	var r io.Reader
	ctype := "application/json"
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	case []byte:
		r = bytes.NewReader(b)
	default:
		enc, err := json.Marshal(b)
		if err != nil {
			h.t.Fatal(err)
		}
		r = bytes.NewReader(enc)
	}
	req := httptest.NewRequest(method, path, r)
	if body != nil {
		req.Header.Set("Content-Type", ctype)
	}
	if secret != "" {
		req.Header.Set("Authorization", "Bearer "+secret)
	}
	rec := httptest.NewRecorder()
	h.srv.Handler().ServeHTTP(rec, req)
	return rec.Code, rec.Body.Bytes()
}

func (h *custHarness) bootstrap(slug string) custTenant {
	h.t.Helper()
	code, body := h.do(http.MethodPost, "/v1/tenants", "op", map[string]string{"slug": slug})
	if code != http.StatusCreated {
		h.t.Fatalf("bootstrap %s: %d %s", slug, code, body)
	}
	var out store.Bootstrapped
	if err := json.Unmarshal(body, &out); err != nil {
		h.t.Fatal(err)
	}
	tn := custTenant{secret: out.Secret, tenantID: out.Tenant.ID, keyID: out.AdminKey.ID, envs: map[string]uuid.UUID{}}
	for _, e := range out.Environments {
		tn.envs[e.Name] = e.ID
	}
	return tn
}

// sdkKey creates an SDK key for env and returns its secret and id.
func (h *custHarness) sdkKey(tn custTenant, env string) (string, uuid.UUID) {
	h.t.Helper()
	code, body := h.do(http.MethodPost, "/v1/keys", tn.secret, map[string]string{"kind": "sdk", "environment": env, "name": "test"})
	if code != http.StatusCreated {
		h.t.Fatalf("create sdk key: %d %s", code, body)
	}
	var k struct {
		ID     uuid.UUID `json:"id"`
		Secret string    `json:"secret"`
	}
	if err := json.Unmarshal(body, &k); err != nil {
		h.t.Fatal(err)
	}
	return k.Secret, k.ID
}

func custPolicySource(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../examples/policies/ai-credits.yaml")
	if err != nil {
		t.Fatal(err)
	}
	src := string(b)
	if !strings.Contains(src, "  notifications:") {
		t.Fatal("ai-credits.yaml changed shape: no notifications block to insert the pro plan before")
	}
	return strings.Replace(src, "  notifications:", custProPlan+"  notifications:", 1)
}

// publish stores src as a new version and publishes it to env, through the policy
// endpoints when they exist, else straight into Postgres.
func (h *custHarness) publish(tn custTenant, env, src string) {
	h.t.Helper()
	req := httptest.NewRequest(http.MethodPost, "/v1/policies", strings.NewReader(src))
	req.Header.Set("Content-Type", "application/yaml")
	req.Header.Set("Authorization", "Bearer "+tn.secret)
	rec := httptest.NewRecorder()
	h.srv.Handler().ServeHTTP(rec, req)
	switch rec.Code {
	case http.StatusCreated, http.StatusOK:
		var v struct {
			Number int `json:"number"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil || v.Number < 1 {
			h.t.Fatalf("create policy: %s (%v)", rec.Body.Bytes(), err)
		}
		code, body := h.do(http.MethodPost, "/v1/environments/"+env+"/publish", tn.secret, map[string]int{"version": v.Number})
		if code != http.StatusOK && code != http.StatusCreated {
			h.t.Fatalf("publish: %d %s", code, body)
		}
		return
	case http.StatusNotFound, http.StatusMethodNotAllowed:
	default:
		h.t.Fatalf("create policy: %d %s", rec.Code, rec.Body.Bytes())
	}
	// The policy endpoints are not there: insert the version directly.
	ctx := context.Background()
	p, err := policies.Load([]byte(src), doctree.FormatYAML)
	if err != nil {
		h.t.Fatal(err)
	}
	canon, err := policies.Encode(p.Doc, doctree.FormatJSON)
	if err != nil {
		h.t.Fatal(err)
	}
	v, err := pgstore.CreateVersion(ctx, h.pool, tn.tenantID, "yaml", []byte(src), canon, p.Hash, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	if _, err := h.pool.Exec(ctx, `insert into environment_policies (tenant_id, environment_id, version_id) values ($1, $2, $3)
		on conflict (tenant_id, environment_id) do update set version_id = excluded.version_id, updated_at = now()`,
		tn.tenantID, tn.envs[env], v.ID); err != nil {
		h.t.Fatal(err)
	}
}

func (h *custHarness) count(sql string, args ...any) int {
	h.t.Helper()
	var n int
	if err := h.pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		h.t.Fatal(err)
	}
	return n
}

// feed returns the customer change-feed entries of a tenant, oldest first.
func (h *custHarness) feed(tn custTenant) []store.Change {
	h.t.Helper()
	var out []store.Change
	for _, envID := range tn.envs {
		cs, err := store.ChangesSince(context.Background(), h.pool, tn.tenantID, envID, 0, 1000)
		if err != nil {
			h.t.Fatal(err)
		}
		for _, c := range cs {
			if c.Kind == "customer" {
				out = append(out, c)
			}
		}
	}
	return out
}

func (h *custHarness) lastAudit(tn custTenant) store.AuditEntry {
	h.t.Helper()
	es, err := store.ListAudit(context.Background(), h.pool, tn.tenantID, 0, 1)
	if err != nil || len(es) == 0 {
		h.t.Fatalf("audit: %v %d", err, len(es))
	}
	return es[0]
}

func custPath(env string, parts ...string) string {
	p := "/v1/environments/" + env + "/customers"
	for _, s := range parts {
		p += "/" + url.PathEscape(s)
	}
	return p
}

func decodeCustomer(t *testing.T, body []byte) store.Customer {
	t.Helper()
	var c store.Customer
	if err := json.Unmarshal(body, &c); err != nil {
		t.Fatalf("decode customer: %v: %s", err, body)
	}
	return c
}

func decodeProblem(t *testing.T, body []byte) problem.Problem {
	t.Helper()
	var p problem.Problem
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatalf("decode problem: %v: %s", err, body)
	}
	return p
}

// wantProblem checks a status and, when path is set, that the problem names it.
func wantProblem(t *testing.T, what string, code int, body []byte, wantCode int, path string) problem.Problem {
	t.Helper()
	if code != wantCode {
		t.Fatalf("%s: status %d, want %d: %s", what, code, wantCode, body)
	}
	p := decodeProblem(t, body)
	if p.Status != wantCode {
		t.Fatalf("%s: problem status %d: %s", what, p.Status, body)
	}
	if path != "" {
		found := false
		for _, e := range p.Errors {
			found = found || e.Path == path
		}
		if !found {
			t.Fatalf("%s: problem does not name %q: %s", what, path, body)
		}
	}
	return p
}

func newFixture(t *testing.T) (*custHarness, custTenant) {
	h := newCustHarness(t)
	tn := h.bootstrap("acme")
	h.publish(tn, "production", custPolicySource(t))
	return h, tn
}

func TestCustomerCreateGetPatchDelete(t *testing.T) {
	h, tn := newFixture(t)
	events := h.srv.bus.Subscribe(t.Context(), wire.ChangesChannel(tn.tenantID.String(), tn.envs["production"].String()))

	code, body := h.do(http.MethodPost, custPath("production"), tn.secret, map[string]any{
		"id": "org_1", "plan": "pro", "type": "org", "label": "Acme Org", "alt_ids": []string{"cus_stripe_1", "cus_stripe_1"},
		"metadata": map[string]any{"tier": "gold", "n": 3}, "timezone": "Europe/Paris", "billing_anchor": "2025-01-31T09:30:00+01:00",
	})
	if code != http.StatusCreated {
		t.Fatalf("create: %d %s", code, body)
	}
	org := decodeCustomer(t, body)
	if org.ID != "org_1" || org.Plan != "pro" || org.ResolvedPlan != "pro" || org.Type != "org" || org.Label != "Acme Org" ||
		org.Timezone != "Europe/Paris" || !org.BillingAnchor.Equal(time.Date(2025, 1, 31, 8, 30, 0, 0, time.UTC)) ||
		org.Revision != 1 || len(org.AltIDs) != 1 || len(org.Refs) != 0 || len(org.Overrides) != 0 || len(org.Topups) != 0 {
		t.Fatalf("created = %s", body)
	}
	if !jsonEqual(org.Metadata, json.RawMessage(`{"n":3,"tier":"gold"}`)) {
		t.Fatalf("metadata = %s", org.Metadata)
	}
	// The wire shape has every documented field.
	var raw map[string]json.RawMessage
	_ = json.Unmarshal(body, &raw)
	for _, f := range []string{"id", "plan", "resolved_plan", "type", "label", "refs", "alt_ids", "metadata", "timezone",
		"billing_anchor", "created_at", "updated_at", "revision", "overrides", "topups"} {
		if _, ok := raw[f]; !ok {
			t.Errorf("customer JSON lacks %q: %s", f, body)
		}
	}
	select {
	case msg := <-events:
		if _, err := strconv.ParseInt(string(msg), 10, 64); err != nil {
			t.Fatalf("wake-up = %q", msg)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("no wake-up on the bus after create")
	}

	// A user inheriting its plan through refs, and one falling back to the default plan.
	code, body = h.do(http.MethodPost, custPath("production"), tn.secret, map[string]any{"id": "user_1", "refs": []string{"org_1"}})
	if code != http.StatusCreated {
		t.Fatalf("create user: %d %s", code, body)
	}
	if u := decodeCustomer(t, body); u.Plan != "" || u.ResolvedPlan != "pro" || u.Type != "user" || u.Label != "User" || time.Since(u.BillingAnchor) > time.Minute {
		t.Fatalf("inheriting user = %s", body)
	}
	code, body = h.do(http.MethodPost, custPath("production"), tn.secret, map[string]any{"id": "user_2"})
	if code != http.StatusCreated {
		t.Fatalf("create user_2: %d %s", code, body)
	}
	if u := decodeCustomer(t, body); u.Plan != "base" || u.ResolvedPlan != "base" {
		t.Fatalf("default-plan user = %s", body)
	}

	// Get by id and by alt id.
	for _, key := range []string{"org_1", "cus_stripe_1"} {
		code, body = h.do(http.MethodGet, custPath("production", key), tn.secret, nil)
		if code != http.StatusOK || decodeCustomer(t, body).ID != "org_1" {
			t.Fatalf("get %q: %d %s", key, code, body)
		}
	}
	code, body = h.do(http.MethodGet, custPath("production", "nobody"), tn.secret, nil)
	wantProblem(t, "get unknown", code, body, http.StatusNotFound, "")

	// PATCH: absent fields stay, the revision moves, audit has before and after.
	feedBefore := len(h.feed(tn))
	code, body = h.do(http.MethodPatch, custPath("production", "org_1"), tn.secret, map[string]any{"label": "Acme Inc", "metadata": map[string]any{"tier": "platinum"}})
	if code != http.StatusOK {
		t.Fatalf("patch: %d %s", code, body)
	}
	p := decodeCustomer(t, body)
	if p.Label != "Acme Inc" || p.Type != "org" || p.Timezone != "Europe/Paris" || p.Revision != 2 || !p.UpdatedAt.After(org.UpdatedAt) ||
		!jsonEqual(p.Metadata, json.RawMessage(`{"tier":"platinum"}`)) || len(p.AltIDs) != 1 {
		t.Fatalf("patched = %s", body)
	}
	a := h.lastAudit(tn)
	if a.Action != "customer.update" || a.ResourceID != "org_1" || a.ActorKeyID == nil || *a.ActorKeyID != tn.keyID {
		t.Fatalf("audit = %+v", a)
	}
	var ab, aa store.Customer
	_ = json.Unmarshal(a.Before, &ab)
	_ = json.Unmarshal(a.After, &aa)
	if ab.Label != "Acme Org" || aa.Label != "Acme Inc" || ab.Revision != 1 || aa.Revision != 2 {
		t.Fatalf("audit before/after = %s / %s", a.Before, a.After)
	}
	f := h.feed(tn)
	if len(f) != feedBefore+1 {
		t.Fatalf("feed grew by %d", len(f)-feedBefore)
	}
	var ch customerChange
	_ = json.Unmarshal(f[len(f)-1].Payload, &ch)
	if f[len(f)-1].Subject != "org_1" || ch.Op != opUpsert || ch.Revision != 2 || ch.Customer == nil || ch.Customer.Label != "Acme Inc" {
		t.Fatalf("feed entry = %s", f[len(f)-1].Payload)
	}
	// A PATCH that changes nothing writes nothing.
	code, body = h.do(http.MethodPatch, custPath("production", "org_1"), tn.secret, map[string]any{"label": "Acme Inc"})
	if code != http.StatusOK || decodeCustomer(t, body).Revision != 2 || len(h.feed(tn)) != feedBefore+1 {
		t.Fatalf("no-op patch: %d %s", code, body)
	}
	// Refs, timezone and anchor; PATCH through an alt id.
	code, body = h.do(http.MethodPatch, custPath("production", "cus_stripe_1"), tn.secret, map[string]any{
		"refs": []string{"user_2"}, "timezone": "", "billing_anchor": "2026-02-01T00:00:00Z", "type": "company"})
	if code != http.StatusOK {
		t.Fatalf("patch refs: %d %s", code, body)
	}
	if p := decodeCustomer(t, body); p.Refs[0] != "user_2" || p.Timezone != "" || p.Type != "company" || p.Revision != 3 ||
		!p.BillingAnchor.Equal(time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("patched refs = %s", body)
	}
	for _, tc := range []struct {
		body any
		path string
		code int
	}{
		{map[string]any{"refs": []string{"ghost"}}, "refs[0]", 422},
		{map[string]any{"refs": []string{"org_1"}}, "refs[0]", 422},
		{map[string]any{"type": ""}, "type", 422},
		{map[string]any{"timezone": "Mars/Olympus"}, "timezone", 422},
		{map[string]any{"billing_anchor": "yesterday"}, "billing_anchor", 422},
		{map[string]any{"metadata": []int{1}}, "metadata", 422},
		{map[string]any{"plan": "base"}, "plan", 422}, // plans change through PUT …/plan
		{map[string]any{"alt_ids": []string{"x"}}, "alt_ids", 422},
		{map[string]any{"label": 7}, "label", 422},
		{`{"label":`, "", 400},
	} {
		code, body := h.do(http.MethodPatch, custPath("production", "org_1"), tn.secret, tc.body)
		wantProblem(t, fmt.Sprintf("patch %v", tc.body), code, body, tc.code, tc.path)
	}
	code, body = h.do(http.MethodPatch, custPath("production", "ghost"), tn.secret, map[string]any{"label": "x"})
	wantProblem(t, "patch unknown", code, body, http.StatusNotFound, "")

	// DELETE, then it is gone (alt ids too), and a second delete is a 404.
	feedBefore = len(h.feed(tn))
	code, body = h.do(http.MethodDelete, custPath("production", "org_1"), tn.secret, nil)
	if code != http.StatusNoContent || len(body) != 0 {
		t.Fatalf("delete: %d %s", code, body)
	}
	for _, key := range []string{"org_1", "cus_stripe_1"} {
		code, body = h.do(http.MethodGet, custPath("production", key), tn.secret, nil)
		wantProblem(t, "get deleted", code, body, http.StatusNotFound, "")
	}
	f = h.feed(tn)
	ch = customerChange{}
	_ = json.Unmarshal(f[len(f)-1].Payload, &ch)
	if len(f) != feedBefore+1 || ch.Op != opDelete || ch.Revision != 4 || ch.Customer != nil || f[len(f)-1].Subject != "org_1" {
		t.Fatalf("delete feed entry = %s", f[len(f)-1].Payload)
	}
	if a := h.lastAudit(tn); a.Action != "customer.delete" || len(a.Before) == 0 || len(a.After) != 0 {
		t.Fatalf("delete audit = %+v", a)
	}
	code, body = h.do(http.MethodDelete, custPath("production", "org_1"), tn.secret, nil)
	wantProblem(t, "second delete", code, body, http.StatusNotFound, "")
	if n := h.count(`select count(*) from customer_alt_ids where alt_id = 'cus_stripe_1'`); n != 0 {
		t.Fatalf("alt id rows after delete: %d", n)
	}
	// user_1 still refers to the deleted org: it falls back to the default plan.
	code, body = h.do(http.MethodGet, custPath("production", "user_1"), tn.secret, nil)
	if code != http.StatusOK || decodeCustomer(t, body).ResolvedPlan != "base" {
		t.Fatalf("orphaned user: %d %s", code, body)
	}
}

func TestCustomerCreateValidation(t *testing.T) {
	h, tn := newFixture(t)
	mk := func(id string, extra map[string]any) map[string]any {
		m := map[string]any{"id": id}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	if code, body := h.do(http.MethodPost, custPath("production"), tn.secret, mk("org_1", map[string]any{"type": "org", "alt_ids": []string{"alt_1"}})); code != 201 {
		t.Fatalf("create: %d %s", code, body)
	}
	customersBefore := h.count(`select count(*) from customers`)
	feedBefore := len(h.feed(tn))
	auditBefore := h.count(`select count(*) from audit_log`)

	long := strings.Repeat("x", 300)
	cases := []struct {
		name string
		body any
		code int
		path string
	}{
		{"no id", map[string]any{"plan": "base"}, 422, "id"},
		{"300-byte id", mk(long, nil), 422, "id"},
		{"control char", mk("a\x01b", nil), 422, "id"},
		{"newline", mk("a\nb", nil), 422, "id"},
		{"slash", mk("a/b", nil), 422, "id"},
		{"invalid utf8", `{"id":"\udc00x"}`, 201, ""}, // JSON decoding replaces lone surrogates: valid data
		{"unknown plan", mk("c1", map[string]any{"plan": "x"}), 422, "plan"},
		{"long plan", mk("c1", map[string]any{"plan": long}), 422, "plan"},
		{"empty type", mk("c1", map[string]any{"type": ""}), 422, "type"},
		{"long label", mk("c1", map[string]any{"label": strings.Repeat("l", 2000)}), 422, "label"},
		{"bad timezone", mk("c1", map[string]any{"timezone": "Nowhere/City"}), 422, "timezone"},
		{"path timezone", mk("c1", map[string]any{"timezone": "../../etc/passwd"}), 422, "timezone"},
		{"bad anchor", mk("c1", map[string]any{"billing_anchor": "31/01/2025"}), 422, "billing_anchor"},
		{"anchor type", mk("c1", map[string]any{"billing_anchor": 5}), 422, "billing_anchor"},
		{"metadata array", mk("c1", map[string]any{"metadata": []int{1}}), 422, "metadata"},
		{"metadata string", mk("c1", map[string]any{"metadata": "x"}), 422, "metadata"},
		{"metadata NUL", `{"id":"c1","metadata":{"k":"a\u0000b"}}`, 422, "metadata"},
		{"unknown ref", mk("c1", map[string]any{"refs": []string{"org_1", "ghost"}}), 422, "refs[1]"},
		{"self ref", mk("c1", map[string]any{"refs": []string{"c1"}}), 422, "refs[0]"},
		{"dup ref", mk("c1", map[string]any{"refs": []string{"org_1", "org_1"}}), 422, "refs[1]"},
		{"bad alt", mk("c1", map[string]any{"alt_ids": []string{"ok", ""}}), 422, "alt_ids[1]"},
		{"ref by alt id", mk("c1", map[string]any{"refs": []string{"alt_1"}}), 422, "refs[0]"},
		{"unknown field", mk("c1", map[string]any{"color": "red"}), 422, "color"},
		{"wrong type", mk("c1", map[string]any{"refs": "org_1"}), 422, "refs"},
		{"malformed", `{"id": "c1"`, 400, ""},
		{"trailing", `{"id": "c2"} {}`, 400, ""},
		{"empty body", ``, 400, ""},
		{"existing id", mk("org_1", nil), 409, ""},
		{"id is an alt id", mk("alt_1", nil), 409, "id"},
		{"alt id is an id", mk("c1", map[string]any{"alt_ids": []string{"fresh", "org_1"}}), 409, "alt_ids[1]"},
		{"alt id taken", mk("c1", map[string]any{"alt_ids": []string{"alt_1"}}), 409, "alt_ids[0]"},
	}
	created := 0
	for _, tc := range cases {
		code, body := h.do(http.MethodPost, custPath("production"), tn.secret, tc.body)
		if tc.code == 201 {
			if code != 201 {
				t.Fatalf("%s: %d %s", tc.name, code, body)
			}
			created++
			continue
		}
		p := wantProblem(t, tc.name, code, body, tc.code, tc.path)
		if tc.name == "unknown plan" && (len(p.Errors) != 1 || p.Errors[0].Message != `unknown plan "x"`) {
			t.Fatalf("unknown plan problem = %s", body)
		}
		if tc.name == "existing id" && !strings.Contains(p.Detail, "already exists") {
			t.Fatalf("existing id problem = %s", body)
		}
		if tc.name == "alt id taken" && !strings.Contains(p.Detail, `"alt_1"`) {
			t.Fatalf("alt conflict problem = %s", body)
		}
	}
	// Failed creations wrote nothing: no customer, no feed entry, no audit entry.
	if n := h.count(`select count(*) from customers`); n != customersBefore+created {
		t.Fatalf("customers: %d, want %d", n, customersBefore+created)
	}
	if n := len(h.feed(tn)); n != feedBefore+created {
		t.Fatalf("feed: %d, want %d", n, feedBefore+created)
	}
	if n := h.count(`select count(*) from audit_log`); n != auditBefore+created {
		t.Fatalf("audit: %d, want %d", n, auditBefore+created)
	}
	if n := h.count(`select count(*) from customer_alt_ids where alt_id = 'fresh'`); n != 0 {
		t.Fatalf("a failed create left alt id rows")
	}

	// No published policy: 409 telling the caller to publish one.
	code, body := h.do(http.MethodPost, custPath("staging"), tn.secret, mk("c1", nil))
	p := wantProblem(t, "no policy", code, body, http.StatusConflict, "")
	if !strings.Contains(p.Detail, "publish a policy first") {
		t.Fatalf("no-policy problem = %s", body)
	}
	// Unknown environment.
	code, body = h.do(http.MethodPost, custPath("nope"), tn.secret, mk("c1", nil))
	wantProblem(t, "unknown env", code, body, http.StatusNotFound, "")
}

func TestCustomerListPagination(t *testing.T) {
	h, tn := newFixture(t)
	var want []string
	for i := range 11 {
		id := fmt.Sprintf("cust_%02d", i)
		want = append(want, id)
		if code, body := h.do(http.MethodPost, custPath("production"), tn.secret, map[string]any{"id": id, "plan": "base"}); code != 201 {
			t.Fatalf("create %s: %d %s", id, code, body)
		}
	}
	var got []string
	cursor := ""
	pages := 0
	for {
		path := custPath("production") + "?limit=4"
		if cursor != "" {
			path += "&cursor=" + url.QueryEscape(cursor)
		}
		code, body := h.do(http.MethodGet, path, tn.secret, nil)
		if code != http.StatusOK {
			t.Fatalf("list: %d %s", code, body)
		}
		var page list[store.Customer]
		if err := json.Unmarshal(body, &page); err != nil {
			t.Fatal(err)
		}
		pages++
		for _, c := range page.Data {
			got = append(got, c.ID)
			if c.ResolvedPlan != "base" {
				t.Fatalf("listed customer without resolved plan: %+v", c)
			}
		}
		if page.NextCursor == "" {
			break
		}
		if pages > 10 {
			t.Fatal("pagination does not end")
		}
		cursor = page.NextCursor
	}
	if pages != 3 || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("%d pages: %v, want %v", pages, got, want)
	}
	// Exactly a page's worth: no empty trailing page.
	code, body := h.do(http.MethodGet, custPath("production")+"?limit=11", tn.secret, nil)
	var page list[store.Customer]
	_ = json.Unmarshal(body, &page)
	if code != 200 || len(page.Data) != 11 || page.NextCursor != "" {
		t.Fatalf("limit=11: %d next=%q n=%d", code, page.NextCursor, len(page.Data))
	}
	for _, q := range []string{"limit=0", "limit=201", "limit=x", "cursor=%25%25%25", "cursor=" + base64.RawURLEncoding.EncodeToString([]byte(strings.Repeat("a", 300))), "cursor=" + base64.RawURLEncoding.EncodeToString([]byte("a\x00b"))} {
		code, body := h.do(http.MethodGet, custPath("production")+"?"+q, tn.secret, nil)
		wantProblem(t, q, code, body, 422, "")
	}
	// An empty environment lists nothing, with data as [].
	code, body = h.do(http.MethodGet, custPath("staging"), tn.secret, nil)
	if code != 200 || !strings.Contains(string(body), `"data":[]`) {
		t.Fatalf("empty list: %d %s", code, body)
	}
}

func TestCustomerPlanChange(t *testing.T) {
	h, tn := newFixture(t)
	if code, body := h.do(http.MethodPost, custPath("production"), tn.secret, map[string]any{"id": "u1"}); code != 201 {
		t.Fatalf("create: %d %s", code, body)
	}
	feedBefore := len(h.feed(tn))
	code, body := h.do(http.MethodPut, custPath("production", "u1", "plan"), tn.secret, map[string]any{"plan": "pro", "overwrite_meters": true})
	if code != http.StatusOK {
		t.Fatalf("set plan: %d %s", code, body)
	}
	c := decodeCustomer(t, body)
	if c.Plan != "pro" || c.ResolvedPlan != "pro" || c.Revision != 2 {
		t.Fatalf("after plan change = %s", body)
	}
	f := h.feed(tn)
	var ch customerChange
	_ = json.Unmarshal(f[len(f)-1].Payload, &ch)
	if len(f) != feedBefore+1 || ch.Op != opPlan || ch.Plan != "pro" || ch.PreviousPlan != "base" || ch.OverwriteMeters == nil ||
		!*ch.OverwriteMeters || ch.Revision != 2 {
		t.Fatalf("plan feed entry = %s", f[len(f)-1].Payload)
	}
	var rawCh map[string]any
	_ = json.Unmarshal(f[len(f)-1].Payload, &rawCh)
	if rawCh["overwrite_meters"] != true {
		t.Fatalf("payload lacks overwrite_meters: %s", f[len(f)-1].Payload)
	}
	a := h.lastAudit(tn)
	var ab, aa store.Customer
	_ = json.Unmarshal(a.Before, &ab)
	_ = json.Unmarshal(a.After, &aa)
	if a.Action != "customer.plan" || ab.Plan != "base" || aa.Plan != "pro" {
		t.Fatalf("plan audit = %+v", a)
	}
	// overwrite_meters=false is carried as false, not dropped.
	code, body = h.do(http.MethodPut, custPath("production", "u1", "plan"), tn.secret, map[string]any{"plan": "base"})
	f = h.feed(tn)
	rawCh = nil
	_ = json.Unmarshal(f[len(f)-1].Payload, &rawCh)
	if code != 200 || rawCh["overwrite_meters"] != false {
		t.Fatalf("back to base: %d %s / %s", code, body, f[len(f)-1].Payload)
	}
	// The current plan again: nothing changes, as in the engine.
	feedBefore = len(h.feed(tn))
	code, body = h.do(http.MethodPut, custPath("production", "u1", "plan"), tn.secret, map[string]any{"plan": "base"})
	if code != 200 || decodeCustomer(t, body).Revision != 3 || len(h.feed(tn)) != feedBefore {
		t.Fatalf("same plan: %d %s", code, body)
	}
	for _, tc := range []struct {
		body any
		code int
		path string
	}{
		{map[string]any{"plan": "gold"}, 422, "plan"},
		{map[string]any{"plan": ""}, 422, "plan"},
		{map[string]any{}, 422, "plan"},
		{map[string]any{"plan": "pro", "overwrite_meters": "yes"}, 422, "overwrite_meters"},
		{map[string]any{"plan": "pro", "meters": true}, 422, "meters"},
	} {
		code, body := h.do(http.MethodPut, custPath("production", "u1", "plan"), tn.secret, tc.body)
		wantProblem(t, fmt.Sprint(tc.body), code, body, tc.code, tc.path)
	}
	code, body = h.do(http.MethodPut, custPath("production", "ghost", "plan"), tn.secret, map[string]any{"plan": "pro"})
	wantProblem(t, "unknown customer", code, body, 404, "")
	if len(h.feed(tn)) != feedBefore {
		t.Fatal("failed plan changes wrote feed entries")
	}
}

func TestCustomerOverrides(t *testing.T) {
	h, tn := newFixture(t)
	for _, c := range []map[string]any{
		{"id": "org_1", "type": "org"},
		{"id": "u1", "refs": []string{"org_1"}, "plan": "base"},
		{"id": "pro_1", "plan": "pro"},
		{"id": "loner", "plan": "base"},
	} {
		if code, body := h.do(http.MethodPost, custPath("production"), tn.secret, c); code != 201 {
			t.Fatalf("create %v: %d %s", c["id"], code, body)
		}
	}
	ov := func(cust, ent string) string { return custPath("production", cust, "overrides", ent) }
	expires := time.Now().Add(48 * time.Hour).UTC().Truncate(time.Second)
	feedBefore := len(h.feed(tn))
	code, body := h.do(http.MethodPut, ov("u1", "ai_input"), tn.secret, map[string]any{"value": 250000, "mode": "soft", "expires_at": expires.Format(time.RFC3339)})
	if code != http.StatusOK {
		t.Fatalf("put override: %d %s", code, body)
	}
	c := decodeCustomer(t, body)
	// Overrides are served in the engine's own form, which SDKs decode as they are.
	var o enforcement.Override
	if err := json.Unmarshal(c.Overrides["ai_input"], &o); err != nil {
		t.Fatal(err)
	}
	if c.ID != "u1" || c.Revision != 2 || o.Value != "250000" || o.Mode != "soft" || !o.ExpiresAt.Equal(expires) {
		t.Fatalf("override stored = %s", body)
	}
	f := h.feed(tn)
	var ch customerChange
	_ = json.Unmarshal(f[len(f)-1].Payload, &ch)
	if len(f) != feedBefore+1 || ch.Op != opOverride || ch.Entitlement != "ai_input" || ch.Override == nil || ch.Override.Value != "250000" || ch.Revision != 2 {
		t.Fatalf("override feed = %s", f[len(f)-1].Payload)
	}
	if a := h.lastAudit(tn); a.Action != "customer.override.set" || len(a.Before) != 0 || !strings.Contains(string(a.After), `"250000"`) {
		t.Fatalf("override audit = %+v", a)
	}
	// Replacing it audits the previous one as before.
	code, body = h.do(http.MethodPut, ov("u1", "ai_input"), tn.secret, map[string]any{"value": "300_000"})
	if code != 200 {
		t.Fatalf("replace override: %d %s", code, body)
	}
	if a := h.lastAudit(tn); !strings.Contains(string(a.Before), `"250000"`) || !strings.Contains(string(a.After), `"300_000"`) {
		t.Fatalf("replace audit = %s / %s", a.Before, a.After)
	}
	// Unit strings convert into the credit's units.
	if code, body := h.do(http.MethodPut, ov("u1", "file_storage"), tn.secret, map[string]any{"value": "3 GB"}); code != 200 {
		t.Fatalf("unit override: %d %s", code, body)
	}
	// Feature gates take an override with an explicit credit.
	if code, body := h.do(http.MethodPut, ov("u1", "pdf_export"), tn.secret, map[string]any{"credit": "seat", "value": 3}); code != 200 {
		t.Fatalf("feature override: %d %s", code, body)
	}
	// A scoped entitlement is overridden on the customer that owns its meter.
	code, body = h.do(http.MethodPut, ov("u1", "seats"), tn.secret, map[string]any{"value": 25})
	if code != 200 || decodeCustomer(t, body).ID != "org_1" {
		t.Fatalf("scoped override: %d %s", code, body)
	}
	if _, ok := decodeCustomer(t, body).Overrides["seats"]; !ok {
		t.Fatalf("scoped override not on the org: %s", body)
	}

	feedBefore = len(h.feed(tn))
	for _, tc := range []struct {
		cust, ent string
		body      any
		code      int
		path      string
	}{
		{"u1", "warp_drive", map[string]any{"value": 1}, 422, "entitlement"},
		{"u1", "priority_support", map[string]any{"value": 1, "credit": "seat"}, 422, "entitlement"}, // not on base
		{"u1", "file_storage", map[string]any{"value": "3 GBs"}, 422, "value"},
		{"u1", "ai_input", map[string]any{"value": "3 GB"}, 422, "value"}, // unitless credit
		{"u1", "ai_input", map[string]any{"value": -5}, 422, "value"},
		{"u1", "ai_input", map[string]any{"value": true}, 422, "value"},
		{"u1", "ai_input", map[string]any{"mode": "strict"}, 422, "mode"},
		{"u1", "ai_input", map[string]any{"credit": "gold"}, 422, "credit"},
		{"u1", "ai_input", map[string]any{"reset_sch": "fortnightly"}, 422, "reset_sch"},
		{"u1", "ai_input", map[string]any{"reset_inc": "soon"}, 422, "reset_inc"},
		{"u1", "ai_input", map[string]any{"increment": 0}, 422, "increment"},
		{"u1", "ai_input", map[string]any{"expires_at": time.Now().Add(-time.Hour).Format(time.RFC3339)}, 422, "expires_at"},
		{"u1", "ai_input", map[string]any{"expires_at": "tomorrow"}, 422, "expires_at"},
		{"u1", "ai_input", map[string]any{"mode": "soft", "hard_trailing": true}, 422, "hard_trailing"},
		{"u1", "pdf_export", map[string]any{"value": 3}, 422, "credit"},
		{"u1", "ai_input", map[string]any{"governor": true}, 422, "governor"},
		{"u1", strings.Repeat("e", 300), map[string]any{"value": 1}, 422, "entitlement"},
		{"loner", "seats", map[string]any{"value": 1}, 422, "entitlement"}, // no org through refs
		{"ghost", "ai_input", map[string]any{"value": 1}, 404, ""},
		{"u1", "ai_input", `{"value": 1`, 400, ""},
	} {
		code, body := h.do(http.MethodPut, ov(tc.cust, tc.ent), tn.secret, tc.body)
		wantProblem(t, fmt.Sprintf("%s/%s %v", tc.cust, tc.ent, tc.body), code, body, tc.code, tc.path)
	}
	if len(h.feed(tn)) != feedBefore {
		t.Fatal("failed override calls wrote feed entries")
	}

	// Remove: 204, then 404; the scoped one through the member too.
	code, body = h.do(http.MethodDelete, ov("u1", "ai_input"), tn.secret, nil)
	if code != http.StatusNoContent {
		t.Fatalf("delete override: %d %s", code, body)
	}
	f = h.feed(tn)
	ch = customerChange{}
	_ = json.Unmarshal(f[len(f)-1].Payload, &ch)
	if ch.Op != opOverride || !ch.Removed || ch.Entitlement != "ai_input" {
		t.Fatalf("remove feed = %s", f[len(f)-1].Payload)
	}
	if a := h.lastAudit(tn); a.Action != "customer.override.delete" || len(a.After) != 0 || !strings.Contains(string(a.Before), "300_000") {
		t.Fatalf("remove audit = %+v", a)
	}
	code, body = h.do(http.MethodDelete, ov("u1", "ai_input"), tn.secret, nil)
	wantProblem(t, "delete missing override", code, body, 404, "")
	if code, body := h.do(http.MethodDelete, ov("u1", "seats"), tn.secret, nil); code != 204 {
		t.Fatalf("delete scoped override: %d %s", code, body)
	}
	code, body = h.do(http.MethodGet, custPath("production", "u1"), tn.secret, nil)
	if code != 200 {
		t.Fatalf("get after override removal: %d %s", code, body)
	}
	c = decodeCustomer(t, body)
	if _, ok := c.Overrides["ai_input"]; ok || len(c.Overrides) != 2 {
		t.Fatalf("overrides after removal = %s", body)
	}
	// An expired override is not served.
	if _, err := h.pool.Exec(context.Background(), `update customer_overrides set expires_at = now() - interval '1 minute' where customer_id = 'u1' and entitlement = 'file_storage'`); err != nil {
		t.Fatal(err)
	}
	_, body = h.do(http.MethodGet, custPath("production", "u1"), tn.secret, nil)
	if _, ok := decodeCustomer(t, body).Overrides["file_storage"]; ok {
		t.Fatalf("expired override served: %s", body)
	}
	// A plan-only entitlement works on that plan.
	if code, body := h.do(http.MethodPut, ov("pro_1", "priority_support"), tn.secret, map[string]any{"credit": "seat", "value": 1}); code != 200 {
		t.Fatalf("pro-only override: %d %s", code, body)
	}
}

var grantIDRE = regexp.MustCompile(`^lgrnt_[0-9A-Za-z]{14}$`)

func TestCustomerTopups(t *testing.T) {
	h, tn := newFixture(t)
	sdk, sdkID := h.sdkKey(tn, "production")
	for _, c := range []map[string]any{{"id": "u1", "plan": "base"}, {"id": "p1", "plan": "pro"}} {
		if code, body := h.do(http.MethodPost, custPath("production"), tn.secret, c); code != 201 {
			t.Fatalf("create: %d %s", code, body)
		}
	}
	top := func(cust string) string { return custPath("production", cust, "topups") }
	feedBefore := len(h.feed(tn))
	code, body := h.do(http.MethodPost, top("u1"), tn.secret, map[string]any{"topup": "monthly_included"})
	if code != http.StatusCreated {
		t.Fatalf("topup: %d %s", code, body)
	}
	var rec store.CustomerTopup
	if err := json.Unmarshal(body, &rec); err != nil {
		t.Fatal(err)
	}
	if rec.Topup != "monthly_included" || rec.Credit != "abstract" || rec.Value != "10" || rec.Price != "10" ||
		rec.AppliedBy != tn.keyID.String() || !grantIDRE.MatchString(rec.GrantID) || uuid.Validate(rec.ID) != nil || rec.AppliedAt.IsZero() {
		t.Fatalf("topup record = %s", body)
	}
	f := h.feed(tn)
	var ch customerChange
	_ = json.Unmarshal(f[len(f)-1].Payload, &ch)
	if len(f) != feedBefore+1 || ch.Op != opTopup || ch.Topup == nil || ch.Topup.GrantID != rec.GrantID || ch.Revision != 2 || f[len(f)-1].Subject != "u1" {
		t.Fatalf("topup feed = %s", f[len(f)-1].Payload)
	}
	if a := h.lastAudit(tn); a.Action != "customer.topup" || !strings.Contains(string(a.After), rec.GrantID) {
		t.Fatalf("topup audit = %+v", a)
	}
	// The caller may set the price (exactly), and an SDK key records itself.
	code, body = h.do(http.MethodPost, top("p1"), sdk, `{"topup": "boost", "price": 3.3300000001}`)
	if code != http.StatusCreated {
		t.Fatalf("priced topup: %d %s", code, body)
	}
	_ = json.Unmarshal(body, &rec)
	if rec.Price != "3.3300000001" || rec.Value != "2.5" || rec.Credit != "ai_credit" || rec.AppliedBy != sdkID.String() {
		t.Fatalf("priced topup = %s", body)
	}
	code, body = h.do(http.MethodPost, top("p1"), tn.secret, map[string]any{"topup": "boost"})
	_ = json.Unmarshal(body, &rec)
	if code != 201 || rec.Price != "4.99" {
		t.Fatalf("default-priced topup: %d %s", code, body)
	}
	code, body = h.do(http.MethodPost, top("p1"), tn.secret, map[string]any{"topup": "boost", "price": 0})
	_ = json.Unmarshal(body, &rec)
	if code != 201 || rec.Price != "0" {
		t.Fatalf("free topup: %d %s", code, body)
	}
	// Topups stack and appear on the customer, oldest first.
	_, body = h.do(http.MethodGet, custPath("production", "p1"), tn.secret, nil)
	c := decodeCustomer(t, body)
	if len(c.Topups) != 3 || c.Topups[0].Price != "3.3300000001" || c.Topups[2].Price != "0" || c.Revision != 4 {
		t.Fatalf("customer topups = %s", body)
	}
	if c.Topups[0].GrantID == c.Topups[1].GrantID {
		t.Fatal("grant ids repeat")
	}
	feedBefore = len(h.feed(tn))
	for _, tc := range []struct {
		cust string
		body any
		code int
		path string
	}{
		{"u1", map[string]any{"topup": "boost"}, 422, "topup"}, // a pro topup, u1 is on base
		{"u1", map[string]any{"topup": "nope"}, 422, "topup"},
		{"u1", map[string]any{}, 422, "topup"},
		{"u1", map[string]any{"topup": "monthly_included", "price": -1}, 422, "price"},
		{"u1", `{"topup": "monthly_included", "price": 1e400}`, 422, "price"},
		{"u1", `{"topup": "monthly_included", "price": "abc"}`, 400, ""},
		{"u1", `{"topup": "monthly_included", "price": true}`, 422, "price"},
		{"u1", map[string]any{"topup": "monthly_included", "by": "me"}, 422, "by"},
		{"ghost", map[string]any{"topup": "monthly_included"}, 404, ""},
	} {
		code, body := h.do(http.MethodPost, top(tc.cust), tn.secret, tc.body)
		wantProblem(t, fmt.Sprint(tc.body), code, body, tc.code, tc.path)
	}
	if len(h.feed(tn)) != feedBefore || h.count(`select count(*) from customer_topups`) != 4 {
		t.Fatal("failed topups wrote rows")
	}
}

func TestCustomerNeedsPolicy(t *testing.T) {
	h, tn := newFixture(t)
	// A customer in staging, where nothing is published (say, from before a rollback).
	c := store.Customer{Customer: wire.Customer{ID: "s1", Plan: "base", Type: "user", Label: "User", BillingAnchor: time.Now()}}
	err := h.srv.store.InTx(context.Background(), func(tx pgx.Tx) error {
		return store.InsertCustomer(context.Background(), tx, tn.tenantID, tn.envs["staging"], &c)
	})
	if err != nil {
		t.Fatal(err)
	}
	code, body := h.do(http.MethodGet, custPath("staging", "s1"), tn.secret, nil)
	if got := decodeCustomer(t, body); code != 200 || got.ResolvedPlan != "" || got.Plan != "base" {
		t.Fatalf("get without policy: %d %s", code, body)
	}
	for _, cl := range []struct {
		method, path string
		body         any
	}{
		{http.MethodPost, custPath("staging"), map[string]any{"id": "s2"}},
		{http.MethodPut, custPath("staging", "s1", "plan"), map[string]any{"plan": "pro"}},
		{http.MethodPut, custPath("staging", "s1", "overrides", "ai_input"), map[string]any{"value": 1}},
		{http.MethodPost, custPath("staging", "s1", "topups"), map[string]any{"topup": "monthly_included"}},
	} {
		code, body := h.do(cl.method, cl.path, tn.secret, cl.body)
		p := wantProblem(t, cl.method+" "+cl.path, code, body, http.StatusConflict, "")
		if !strings.Contains(p.Detail, "publish a policy first") {
			t.Fatalf("%s: %s", cl.path, body)
		}
	}
	// Profile edits and deletion do not need the policy.
	if code, body := h.do(http.MethodPatch, custPath("staging", "s1"), tn.secret, map[string]any{"label": "S"}); code != 200 {
		t.Fatalf("patch without policy: %d %s", code, body)
	}
	if code, body := h.do(http.MethodDelete, custPath("staging", "s1"), tn.secret, nil); code != 204 {
		t.Fatalf("delete without policy: %d %s", code, body)
	}
}

func TestCustomerSecurity(t *testing.T) {
	h, tn := newFixture(t)
	other := h.bootstrap("globex")
	h.publish(other, "production", custPolicySource(t))
	prodSDK, _ := h.sdkKey(tn, "production")
	stagingSDK, _ := h.sdkKey(tn, "staging")
	revoked, revokedID := h.sdkKey(tn, "production")
	if code, body := h.do(http.MethodDelete, "/v1/keys/"+revokedID.String(), tn.secret, nil); code != 200 {
		t.Fatalf("revoke: %d %s", code, body)
	}
	if code, body := h.do(http.MethodPost, custPath("production"), prodSDK, map[string]any{"id": "secret_cust", "alt_ids": []string{"secret_alt"},
		"metadata": map[string]any{"ssn": "ssn-987-65-4320"}}); code != 201 {
		t.Fatalf("sdk create: %d %s", code, body)
	}
	// The other tenant has its own production environment and customers.
	if code, body := h.do(http.MethodPost, custPath("production"), other.secret, map[string]any{"id": "globex_cust"}); code != 201 {
		t.Fatalf("other create: %d %s", code, body)
	}

	type call struct {
		method, path string
		body         any
	}
	calls := []call{
		{http.MethodGet, custPath("production"), nil},
		{http.MethodPost, custPath("production"), map[string]any{"id": "new_one"}},
		{http.MethodGet, custPath("production", "secret_cust"), nil},
		{http.MethodGet, custPath("production", "secret_alt"), nil},
		{http.MethodPatch, custPath("production", "secret_cust"), map[string]any{"label": "pwned"}},
		{http.MethodPut, custPath("production", "secret_cust", "plan"), map[string]any{"plan": "pro"}},
		{http.MethodPut, custPath("production", "secret_cust", "overrides", "ai_input"), map[string]any{"value": 1}},
		{http.MethodDelete, custPath("production", "secret_cust", "overrides", "ai_input"), nil},
		{http.MethodPost, custPath("production", "secret_cust", "topups"), map[string]any{"topup": "monthly_included"}},
		{http.MethodDelete, custPath("production", "secret_cust"), nil},
	}
	auditBefore := h.count(`select count(*) from audit_log where tenant_id = $1`, tn.tenantID)
	for _, cl := range calls {
		name := cl.method + " " + cl.path
		// No key, a malformed key, a revoked key: 401.
		for _, secret := range []string{"", "lk_admin_short", "Basic abc", revoked} {
			code, body := h.do(cl.method, cl.path, secret, cl.body)
			wantProblem(t, name+" with "+secret, code, body, http.StatusUnauthorized, "")
		}
		// Another environment's SDK key: 403.
		code, body := h.do(cl.method, cl.path, stagingSDK, cl.body)
		wantProblem(t, name+" staging sdk", code, body, http.StatusForbidden, "")
		// Another tenant's admin key: 404 for this tenant's customers, never their data.
		code, body = h.do(cl.method, cl.path, other.secret, cl.body)
		if strings.Contains(string(body), "secret_cust") && code < 400 || strings.Contains(string(body), "ssn-987") {
			t.Fatalf("%s: other tenant saw data: %d %s", name, code, body)
		}
		switch {
		case strings.HasSuffix(cl.path, "/customers") && cl.method == http.MethodGet:
			var page list[store.Customer]
			_ = json.Unmarshal(body, &page)
			if code != 200 || len(page.Data) != 1 || page.Data[0].ID != "globex_cust" {
				t.Fatalf("other tenant list: %d %s", code, body)
			}
		case strings.HasSuffix(cl.path, "/customers"):
			if code != 201 { // it creates in its own tenant
				t.Fatalf("other tenant create: %d %s", code, body)
			}
		default:
			wantProblem(t, name+" other tenant", code, body, http.StatusNotFound, "")
		}
	}
	if n := h.count(`select count(*) from audit_log where tenant_id = $1`, tn.tenantID); n != auditBefore {
		t.Fatalf("rejected calls wrote %d audit entries", n-auditBefore)
	}
	// The customer is untouched.
	code, body := h.do(http.MethodGet, custPath("production", "secret_cust"), prodSDK, nil)
	if c := decodeCustomer(t, body); code != 200 || c.Label != "User" || c.Revision != 1 {
		t.Fatalf("after attacks: %d %s", code, body)
	}
	// Another tenant's customers stay out of this tenant's list.
	_, body = h.do(http.MethodGet, custPath("production"), tn.secret, nil)
	if strings.Contains(string(body), "globex_cust") {
		t.Fatalf("list leaked: %s", body)
	}
	// The SDK key of production manages customers there.
	if code, body := h.do(http.MethodDelete, custPath("production", "secret_cust"), prodSDK, nil); code != 204 {
		t.Fatalf("sdk delete: %d %s", code, body)
	}
}

func TestCustomerHostileIDs(t *testing.T) {
	h, tn := newFixture(t)
	for _, id := range []string{
		"'; drop table customers; --",
		`" or 1=1 --`,
		"100%",
		"%2F..%2F",
		"a b?c#d",
		"ünïcødé ✓",
		"..",
		strings.Repeat("z", 256),
	} {
		code, body := h.do(http.MethodPost, custPath("production"), tn.secret, map[string]any{"id": id, "alt_ids": []string{"alt:" + id[:min(len(id), 200)]}})
		if code != 201 {
			t.Fatalf("create %q: %d %s", id, code, body)
		}
		if c := decodeCustomer(t, body); c.ID != id {
			t.Fatalf("created id %q, want %q", c.ID, id)
		}
		if id == ".." {
			continue // a path segment of ".." is resolved by clients before it is sent
		}
		for _, key := range []string{id, "alt:" + id[:min(len(id), 200)]} {
			code, body = h.do(http.MethodGet, custPath("production", key), tn.secret, nil)
			if code != 200 || decodeCustomer(t, body).ID != id {
				t.Fatalf("get %q: %d %s", key, code, body)
			}
		}
		code, body = h.do(http.MethodPut, custPath("production", id, "overrides", "ai_input"), tn.secret, map[string]any{"value": 7})
		if code != 200 {
			t.Fatalf("override on %q: %d %s", id, code, body)
		}
		code, body = h.do(http.MethodPatch, custPath("production", id), tn.secret, map[string]any{"label": id})
		if code != 200 || decodeCustomer(t, body).Label != id {
			t.Fatalf("patch %q: %d %s", id, code, body)
		}
	}
	if n := h.count(`select count(*) from customers`); n != 8 {
		t.Fatalf("customers = %d", n)
	}
	code, body := h.do(http.MethodDelete, custPath("production", "'; drop table customers; --"), tn.secret, nil)
	if code != 204 {
		t.Fatalf("delete: %d %s", code, body)
	}
	if n := h.count(`select count(*) from customers`); n != 7 {
		t.Fatalf("customers after delete = %d", n)
	}
	// Over-long ids: 422 on create, 404 on lookup.
	long := strings.Repeat("y", 300)
	code, body = h.do(http.MethodPost, custPath("production"), tn.secret, map[string]any{"id": long})
	wantProblem(t, "long id", code, body, 422, "id")
	code, body = h.do(http.MethodPost, custPath("production"), tn.secret, map[string]any{"id": "ok", "alt_ids": []string{long}})
	wantProblem(t, "long alt id", code, body, 422, "alt_ids[0]")
	for _, m := range []string{http.MethodGet, http.MethodDelete, http.MethodPatch} {
		code, body = h.do(m, custPath("production", long), tn.secret, map[string]any{"label": "x"})
		wantProblem(t, m+" long id", code, body, 404, "")
	}
}

func TestCustomerIdempotentCreate(t *testing.T) {
	h, tn := newFixture(t)
	send := func() (int, []byte) {
		req := httptest.NewRequest(http.MethodPost, custPath("production"), strings.NewReader(`{"id":"idem_1"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+tn.secret)
		req.Header.Set("Idempotency-Key", "create-idem-1")
		rec := httptest.NewRecorder()
		h.srv.Handler().ServeHTTP(rec, req)
		return rec.Code, rec.Body.Bytes()
	}
	c1, b1 := send()
	c2, b2 := send()
	if c1 != 201 || c2 != 201 || !bytes.Equal(b1, b2) {
		t.Fatalf("retried create: %d %s / %d %s", c1, b1, c2, b2)
	}
	if n := len(h.feed(tn)); n != 1 {
		t.Fatalf("feed entries = %d", n)
	}
}
