package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/limitr/limitr/internal/httpx/problem"
)

// Bad input: every endpoint that takes a body gets malformed, mistyped, oversized and
// hostile bodies; every path parameter gets hostile values. Every answer must be a 4xx
// problem with a detail, never a 5xx, and nothing may change.

// biField is one top-level field of a request body.
type biField struct {
	name string
	kind string // string, text (free text up to 1 KiB), int, bool, strings, object, qty, number
	// valid is the field's value in the baseline body (nil: absent from it).
	valid any
}

// biRoute is a body-taking route: its fields, with a baseline body that is valid.
type biRoute struct {
	fields   []biField
	raw      bool // the policy endpoint: a document, not a request object
	operator bool
	sdk      bool // an SDK key of secEnv, not the admin key
	// optionalBody: no body (or {}) is itself a valid request.
	optionalBody bool
	// webhook: no API key; never a 2xx here (the environment is not connected).
	webhook bool
}

const biCustomer = "acme-user-4412" // from newSecWorld

func biRoutes() map[string]biRoute {
	var usage struct {
		Deltas []map[string]any `json:"deltas"`
	}
	_ = json.Unmarshal([]byte(secUsageBatch(biCustomer)), &usage)
	var lease struct {
		Leases []map[string]any `json:"leases"`
	}
	_ = json.Unmarshal([]byte(secLeaseRequest(biCustomer)), &lease)
	return map[string]biRoute{
		"POST /v1/sdk/usage": {sdk: true, fields: []biField{{"instance_id", "string", "bi-instance"}, {"sequence", "int", 1},
			{"sent_at", "string", time.Now().UTC().Format(time.RFC3339)}, {"policy_version", "count", 3},
			{"deltas", "list", usage.Deltas}, {"events", "list", nil},
			{"voucher_debits", "list", []map[string]any{{"customer": biCustomer, "voucher_id": "vch_bi", "runes": "0.5"}}},
			{"cap_uses", "list", []map[string]any{{"customer": biCustomer, "cap_key": "cap_bi", "period_start": usage.Deltas[0]["period_start"], "units": "0.5"}}}}},
		"POST /v1/sdk/leases": {sdk: true, fields: []biField{{"instance_id", "string", "bi-instance"}, {"leases", "list", append(lease.Leases,
			map[string]any{"customer": biCustomer, "cap": "cap_bi", "period_start": lease.Leases[0]["period_start"], "limit": "10", "target": "1", "used": "0"})}}},
		"POST /v1/sdk/leases/return": {sdk: true, fields: []biField{{"instance_id", "string", "bi-instance"}}},
		"POST /v1/tenants":           {operator: true, fields: []biField{{"slug", "string", "bi-tenant"}, {"name", "text", "Bi"}}},
		"POST /v1/environments":      {fields: []biField{{"name", "string", "bi-env"}, {"live", "bool", true}}},
		"POST /v1/keys": {fields: []biField{{"kind", "string", "admin"}, {"environment", "string", ""},
			{"name", "text", "bi-key"}}},
		"POST /v1/policies":                    {raw: true},
		"POST /v1/environments/{env}/publish":  {fields: []biField{{"version", "int", 2}, {"dry_run", "bool", nil}}},
		"POST /v1/environments/{env}/rollback": {optionalBody: true, fields: []biField{{"version", "int", 2}}},
		"POST /v1/environments/{env}/customers": {fields: []biField{{"id", "string", "bi-new"}, {"plan", "string", "base"},
			{"type", "string", "user"}, {"label", "text", "Bi"}, {"refs", "strings", []string{"acme-org-4412"}},
			{"alt_ids", "strings", []string{"bi-alt"}}, {"metadata", "object", map[string]any{"k": "v"}},
			{"timezone", "string", "Europe/Paris"}, {"billing_anchor", "string", "2025-01-31T00:00:00Z"}}},
		"PATCH /v1/environments/{env}/customers/{id}": {fields: []biField{{"type", "string", "member"}, {"label", "text", "Bi2"},
			{"refs", "strings", []string{"acme-org-4412"}}, {"metadata", "object", map[string]any{"k": "v2"}},
			{"timezone", "string", "UTC"}, {"billing_anchor", "string", "2025-02-01T00:00:00Z"}}},
		"PUT /v1/environments/{env}/customers/{id}/plan": {fields: []biField{{"plan", "string", "base"}, {"overwrite_meters", "bool", true}}},
		"PUT /v1/environments/{env}/customers/{id}/overrides/{entitlement}": {fields: []biField{{"value", "qty", 7},
			{"expires_at", "string", "2999-01-01T00:00:00Z"}, {"credit", "string", "ai_input_token"}, {"mode", "string", "soft"},
			{"increment", "qty", nil}, {"minimum", "qty", nil}, {"resets", "bool", true}, {"reset_inc", "string", "1day"},
			{"reset_sch", "string", nil}, {"hard_trailing", "bool", nil}, {"grants_apply", "bool", nil}}},
		"POST /v1/environments/{env}/customers/{id}/topups": {fields: []biField{{"topup", "string", "boost"}, {"price", "number", 4.5}}},
		"PUT /v1/environments/{env}/customers/{id}/voucher": {fields: []biField{{"runes", "number", 12.5},
			{"expires_at", "string", "2999-01-01T00:00:00Z"}}},
		"PUT /v1/environments/{env}/customers/{id}/caps/{cap}": {fields: []biField{{"credit", "string", "rune"}, {"value", "number", 12.5},
			{"ignore_grants", "bool", nil}, {"overage_only", "bool", nil}, {"observe_only", "bool", nil}, {"overhead_cost", "bool", nil},
			{"follow_decrements", "bool", nil}, {"hard_trailing", "bool", nil}, {"shared", "bool", nil}, {"shared_with", "strings", nil},
			{"scope", "strings", []string{"ai_input"}}, {"resets", "bool", true}, {"reset_inc", "string", "1day"}, {"reset_sch", "string", nil},
			{"expires_at", "string", "2999-01-01T00:00:00Z"}}},
		"POST /v1/environments/{env}/customers/{id}/caps/{cap}/reset": {optionalBody: true},

		"PUT /v1/environments/{env}/billing": {fields: []biField{{"currency", "string", "EUR"},
			{"rune_rate", "string", "0.9"}, {"grace_period", "string", "30m"}, {"days_until_due", "count", 15},
			{"invoice_prefix", "string", "BI"}, {"seller", "object", map[string]any{"name": "Bi"}}}},
		"POST /v1/environments/{env}/invoices/{invoice}/finalize":           {optionalBody: true},
		"POST /v1/environments/{env}/invoices/{invoice}/void":               {optionalBody: true},
		"POST /v1/environments/{env}/invoices/{invoice}/mark-paid":          {optionalBody: true},
		"POST /v1/environments/{env}/invoices/{invoice}/mark-uncollectible": {optionalBody: true},
		"POST /v1/environments/{env}/invoices/{invoice}/credit-notes": {fields: []biField{{"reason", "text", "goodwill"},
			{"lines", "list", []map[string]string{{"description": "sorry", "amount": "0.50"}}}}},
		"POST /v1/environments/{env}/test-clocks": {fields: []biField{{"frozen_time", "string", "2030-01-01T00:00:00Z"},
			{"name", "text", "bi"}}},
		"POST /v1/environments/{env}/test-clocks/{clock}/advance": {fields: []biField{{"frozen_time", "string", "2031-01-01T00:00:00Z"}}},
		"PUT /v1/environments/{env}/integrations/stripe": {fields: []biField{{"secret_key", "string", "sk_test_bi"},
			{"webhook_secret", "string", "whsec_bi"}}},
		// Signed by Stripe, not by an API key: A's environment is not connected, so
		// every body is refused (TestStripeWebhooks covers the signed ones).
		"POST /v1/webhooks/stripe/{environment_id}": {webhook: true},

		"POST /v1/environments/{env}/alert-channels": {fields: []biField{{"name", "string", "bi-chan"}, {"kind", "string", "webhook"},
			{"webhook", "object", map[string]any{"url": "http://127.0.0.1:9/bi-hook"}}, {"slack", "object", nil}, {"email", "object", nil}}},
		"PATCH /v1/environments/{env}/alert-channels/{id}": {fields: []biField{{"name", "string", "bi-chan-renamed"}, {"kind", "string", nil},
			{"webhook", "object", map[string]any{"url": "http://127.0.0.1:9/bi-hook-2"}}, {"slack", "object", nil}, {"email", "object", nil}}},
		// The receiver refuses the connection: the test still answers 200, saying so.
		"POST /v1/environments/{env}/alert-channels/{id}/test": {optionalBody: true},
		"POST /v1/environments/{env}/alert-rules": {fields: []biField{{"name", "string", "bi-rule"}, {"kind", "string", "cap_hit"},
			{"params", "object", nil}, {"filters", "object", nil}, {"condition", "text", nil},
			{"channels", "strings", []string{biAlertChannel}}, {"enabled", "bool", true}}},
		"PATCH /v1/environments/{env}/alert-rules/{id}": {fields: []biField{{"name", "string", "bi-rule-renamed"}, {"params", "object", nil},
			{"filters", "object", nil}, {"condition", "text", nil}, {"channels", "strings", nil}, {"enabled", "bool", false}}},
		// newBiEnv marks A's delivery dead, so the baseline can resend it.
		"POST /v1/environments/{env}/alert-deliveries/{id}/resend": {optionalBody: true},
		"POST /v1/environments/{env}/simulations": {fields: []biField{{"version", "int", 2}, {"document", "text", nil},
			{"baseline_version", "int", nil}, {"from", "string", nil}, {"to", "string", nil}}},
		"POST /v1/sdk/events": {sdk: true, fields: []biField{{"instance_id", "string", "bi-events"}, {"sequence", "int", 1},
			{"sent_at", "string", time.Now().UTC().Format(time.RFC3339)}, {"policy_version", "count", 3},
			{"events", "list", []map[string]any{{"type": "cap-limit", "customer": biCustomer, "entitlement": "ai_input", "cap_id": "bi-cap",
				"at": time.Now().UTC().Format(time.RFC3339), "count": 1}}}}},
	}
}

// biBody is the baseline body with field set to the raw JSON value (nil: baseline).
func biBody(rt biRoute, field string, raw []byte) []byte {
	var buf bytes.Buffer
	buf.WriteByte('{')
	first := true
	add := func(k string, v []byte) {
		if !first {
			buf.WriteByte(',')
		}
		first = false
		kb, _ := json.Marshal(k)
		buf.Write(kb)
		buf.WriteByte(':')
		buf.Write(v)
	}
	for _, f := range rt.fields {
		switch {
		case f.name == field:
			add(f.name, raw)
		case f.valid != nil:
			v, _ := json.Marshal(f.valid)
			add(f.name, v)
		}
	}
	if field != "" && !bytes.Contains(buf.Bytes(), []byte(`"`+field+`":`)) {
		add(field, raw)
	}
	buf.WriteByte('}')
	return buf.Bytes()
}

// biStr is a JSON string literal with raw bytes inside, unescaped (json.Marshal would
// replace invalid UTF-8).
func biStr(s string) []byte { return []byte(`"` + s + `"`) }

// biAs puts a string value where the field expects it: in a one-element list for list
// fields, as an object key for objects.
func biAs(f biField, lit []byte) []byte {
	switch f.kind {
	case "strings":
		return append(append([]byte{'['}, lit...), ']')
	case "object":
		return append(append(append([]byte{'{'}, lit...), []byte(`:"v"`)...), '}')
	}
	return lit
}

type biEnv struct {
	t        *testing.T
	w        *secWorld
	srv      http.Handler      // the world's server
	small    http.Handler      // the same database, MaxBodyBytes 4096
	invoices map[string]string // invoice action → an invoice of A's for it
}

func newBiEnv(t *testing.T) *biEnv {
	w := newSecWorld(t)
	s, err := New(Config{OperatorToken: "op", MaxBodyBytes: 4096}, Deps{Pool: w.h.pool, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	e := &biEnv{t: t, w: w, srv: w.h.srv.Handler(), small: s.Handler(), invoices: map[string]string{}}
	if _, err := w.h.pool.Exec(context.Background(), `update alert_deliveries set status = 'dead' where id = $1`, w.aDelivery); err != nil {
		t.Fatal(err)
	}
	for action, status := range map[string]string{"finalize": "draft", "void": "finalized", "mark-paid": "finalized", "mark-uncollectible": "finalized"} {
		// Copies of A's topup invoice, one per action, in the status it starts from.
		var id string
		err := w.h.pool.QueryRow(context.Background(), `insert into invoices (id, tenant_id, environment_id, customer_uid, customer_id, kind,
				topup_id, period_start, period_end, status, sequence, number, currency, lines, subtotal, total, amount_due, finalize_after)
			select gen_random_uuid(), tenant_id, environment_id, customer_uid, customer_id, 'topup', gen_random_uuid(), period_start, period_end,
				$2, case when $2 = 'draft' then null else 1000 + (select count(*) from invoices) end,
				case when $2 = 'draft' then null else 'BI-' || (select count(*) from invoices) end,
				currency, lines, subtotal, total, amount_due, finalize_after
			from invoices where id = $1 returning id::text`, w.aInvoice, status).Scan(&id)
		if err != nil {
			t.Fatal(err)
		}
		e.invoices[action] = id
	}
	return e
}

func (e *biEnv) authFor(rt biRoute) string {
	if rt.operator {
		return "Bearer op"
	}
	if rt.sdk {
		return "Bearer " + e.w.aSDK
	}
	return "Bearer " + e.w.a.secret
}

// keyFor is the key a route takes: the SDK key for /v1/sdk routes, else the admin key.
func (e *biEnv) keyFor(template string) string {
	if strings.HasPrefix(template, "/v1/sdk/") {
		return "Bearer " + e.w.aSDK
	}
	return "Bearer " + e.w.a.secret
}

func (e *biEnv) path(template string) string {
	template = e.w.alertIDs(template)
	return strings.NewReplacer("{env}", secEnv, "{id}", biCustomer, "{entitlement}", "ai_input", "{cap}", "acme-cap-4412",
		"{invoice}", e.invoiceFor(template), "{clock}", e.w.aClock, "{environment_id}", e.w.a.envs[secEnv].String()).Replace(template)
}

// invoiceFor gives each invoice action its own invoice of A's, in a status where its
// baseline succeeds: a draft to finalize, finalized ones to void, pay and write off.
func (e *biEnv) invoiceFor(template string) string {
	if id, ok := e.invoices[template[strings.LastIndex(template, "/")+1:]]; ok {
		return id
	}
	return e.w.aInvoice
}

// reject checks a 4xx problem+json with a detail.
func biReject(t *testing.T, what string, r secResp) {
	t.Helper()
	if r.Code < 400 || r.Code >= 500 {
		t.Errorf("%s: status %d, want a 4xx: %s", what, r.Code, secTrim(string(r.Body)))
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != problem.ContentType {
		t.Errorf("%s: %d with Content-Type %q, want %s", what, r.Code, ct, problem.ContentType)
		return
	}
	var p problem.Problem
	if err := json.Unmarshal(r.Body, &p); err != nil || p.Status != r.Code || strings.TrimSpace(p.Detail) == "" {
		t.Errorf("%s: %d without a problem detail: %s", what, r.Code, secTrim(string(r.Body)))
	}
}

// worldSnapshot fingerprints both tenants and counts every tenant.
func (e *biEnv) snapshot() map[string]string {
	a := secSnapshot(e.t, e.w.h.pool, e.w.a.tenantID)
	for k, v := range secSnapshot(e.t, e.w.h.pool, e.w.b.tenantID) {
		a["B "+k] = v
	}
	a["tenant count"] = fmt.Sprint(e.w.h.count(`select count(*) from tenants`))
	return a
}

// phase runs f and checks it changed no data.
func (e *biEnv) phase(name string, f func()) {
	e.t.Helper()
	before := e.snapshot()
	f()
	secSameSnapshot(e.t, name, before, e.snapshot())
}

func (e *biEnv) bodyRoutes() []string {
	var out []string
	for _, r := range routerRoutes(e.w.h.srv) {
		m, _, _ := strings.Cut(r, " ")
		if m == "POST" || m == "PUT" || m == "PATCH" {
			out = append(out, r)
		}
	}
	return out
}

func TestBadInputBodies(t *testing.T) {
	e := newBiEnv(t)
	table := biRoutes()
	routes := e.bodyRoutes()
	for _, r := range routes {
		if _, ok := table[r]; !ok {
			t.Errorf("route %s takes a body but has no entry in the bad-input table", r)
		}
	}
	sort.Strings(routes)
	send := func(srv http.Handler, name string, rt biRoute, body []byte, hdr ...string) secResp {
		t.Helper()
		method, template, _ := strings.Cut(name, " ")
		return secDo(t, srv, method, e.path(template), e.authFor(rt), body, hdr...)
	}

	e.phase("malformed bodies", func() {
		for _, name := range routes {
			rt := table[name]
			if rt.raw {
				continue // TestBadInputPolicy
			}
			bad := map[string]string{
				"truncated":          `{"a": `,
				"unquoted key":       `{a: 1}`,
				"trailing comma":     `{"x":1,}`,
				"bare word":          `nul`,
				"single quotes":      `{'a':'b'}`,
				"two objects":        string(biBody(rt, "", nil)) + `{}`,
				"trailing garbage":   string(biBody(rt, "", nil)) + ` x`,
				"array":              `[]`,
				"array of the body":  "[" + string(biBody(rt, "", nil)) + "]",
				"string":             `"hello"`,
				"number":             `42`,
				"null":               `null`,
				"raw NUL":            "{\"a\":\"x\x00y\"}",
				"BOM":                "\xef\xbb\xbf" + string(biBody(rt, "", nil)),
				"deep nesting":       strings.Repeat("[", 10000) + strings.Repeat("]", 10000),
				"unknown field":      string(biBody(rt, "bogus_field", []byte(`1`))),
				"unknown nested":     string(biBody(rt, "bogus", []byte(`{"x":1}`))),
				"only unknown field": `{"bogus_field":true}`,
			}
			if !rt.optionalBody {
				bad["empty"] = ""
				bad["whitespace"] = " \n\t "
			}
			keys := make([]string, 0, len(bad))
			for k := range bad {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				if rt.optionalBody && k == "null" {
					continue // a null body is no body: the default rollback target
				}
				r := send(e.srv, name, rt, []byte(bad[k]))
				biReject(t, name+" "+k, r)
				if strings.HasPrefix(k, "unknown") && r.Code == 422 && !bytes.Contains(r.Body, []byte(`"bogus`)) {
					t.Errorf("%s %s: the problem does not name the unknown field: %s", name, k, r.Body)
				}
			}
		}
	})

	e.phase("wrong types", func() {
		wrong := map[string][]string{
			"string":  {`123`, `true`, `{}`, `[]`, `["a"]`, `1.5`},
			"text":    {`123`, `false`, `{"a":1}`, `[]`},
			"int":     {`"2"`, `true`, `1.5`, `{}`, `[]`, `"x"`, `1e400`, `-1`, `0`, `99999999999999999999`},
			"count":   {`"2"`, `true`, `1.5`, `{}`, `[]`, `-1`, `99999999999999999999`},
			"list":    {`"x"`, `{}`, `[1]`, `[[]]`, `["x"]`, `7`},
			"bool":    {`"true"`, `1`, `{}`, `[]`, `"yes"`},
			"strings": {`"x"`, `{}`, `[1]`, `[true]`, `[[]]`, `[{}]`, `7`},
			"object":  {`"x"`, `[]`, `1`, `true`, `[{}]`},
			"qty":     {`true`, `{}`, `[]`, `[1]`, `"lots"`},
			"number":  {`true`, `{}`, `[]`, `"abc"`, `-1`, `"NaN"`, `"Infinity"`, `1e999999999`},
		}
		for _, name := range routes {
			rt := table[name]
			for _, f := range rt.fields {
				for _, v := range wrong[f.kind] {
					r := send(e.srv, name, rt, biBody(rt, f.name, []byte(v)))
					biReject(t, fmt.Sprintf("%s %s=%s", name, f.name, v), r)
				}
			}
		}
	})

	e.phase("long values", func() {
		for _, name := range routes {
			rt := table[name]
			for _, f := range rt.fields {
				if f.kind != "string" && f.kind != "text" && f.kind != "strings" {
					continue
				}
				for _, n := range []int{300, 10_000} {
					if f.kind == "text" && n < maxLabelLength && f.name == "label" {
						continue // labels may be 1 KiB
					}
					v := biAs(f, biStr(strings.Repeat("x", n)))
					biReject(t, fmt.Sprintf("%s %s of %d bytes", name, f.name, n), send(e.srv, name, rt, biBody(rt, f.name, v)))
				}
			}
		}
	})

	e.phase("NUL bytes", func() {
		for _, name := range routes {
			rt := table[name]
			for _, f := range rt.fields {
				if f.kind != "string" && f.kind != "text" && f.kind != "strings" && f.kind != "object" {
					continue
				}
				for _, lit := range []string{`"a\u0000b"`, `"\u0000"`} {
					v := biAs(f, []byte(lit))
					if f.kind == "object" {
						v = []byte(`{"k":` + lit + `}`)
					}
					biReject(t, fmt.Sprintf("%s %s=%s", name, f.name, v), send(e.srv, name, rt, biBody(rt, f.name, v)))
				}
			}
		}
	})

	e.phase("timestamps out of range", func() {
		for _, name := range routes {
			rt := table[name]
			for _, f := range rt.fields {
				// (sent_at is informational: the usage endpoint ignores one it cannot use.)
				if f.name != "billing_anchor" && f.name != "expires_at" {
					continue
				}
				for _, v := range []string{"9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59", "0000-01-01T00:00:00Z",
					"2025-13-01T00:00:00Z", "2025-02-30T00:00:00Z", "2025-01-01", "2025-01-01T00:00:00", "yesterday", ""} {
					r := send(e.srv, name, rt, biBody(rt, f.name, biStr(v)))
					biReject(t, fmt.Sprintf("%s %s=%q", name, f.name, v), r)
				}
			}
		}
	})

	e.phase("invalid UTF-8", func() {
		for _, name := range routes {
			rt := table[name]
			for _, f := range rt.fields {
				if f.kind != "string" && f.kind != "text" && f.kind != "strings" && f.kind != "object" {
					continue
				}
				for _, s := range []string{"a\xffb", "\xc3\x28", "\xed\xa0\x80"} { // a stray byte, a bad continuation, a surrogate
					v := biAs(f, biStr(s))
					if f.kind == "object" {
						v = []byte(`{"k":"` + s + `"}`)
					}
					biReject(t, fmt.Sprintf("%s %s=%q", name, f.name, v), send(e.srv, name, rt, biBody(rt, f.name, v)))
				}
			}
		}
	})

	e.phase("oversized bodies", func() {
		for _, name := range routes {
			rt := table[name]
			body := biBody(rt, "", nil)
			if rt.raw {
				body = []byte(`{"policy":{"timezone":"UTC"}}`)
			}
			pad := []byte(` "` + strings.Repeat("x", 5000) + `" `)
			big := append(append([]byte(`{"pad":`), pad...), body[1:]...)
			if len(rt.fields) > 0 {
				big = biBody(rt, rt.fields[0].name, biStr(strings.Repeat("x", 5000)))
			}
			method, template, _ := strings.Cut(name, " ")
			for _, mode := range []string{"Content-Length", "chunked", "chunked with Idempotency-Key", "Content-Length with Idempotency-Key"} {
				req := httptest.NewRequest(method, e.path(template), bytes.NewReader(big))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Authorization", e.authFor(rt))
				if strings.HasPrefix(mode, "chunked") {
					req.ContentLength = -1 // the size is only found out by reading
				}
				if strings.HasSuffix(mode, "Idempotency-Key") {
					req.Header.Set("Idempotency-Key", "big-"+mode)
				}
				rec := httptest.NewRecorder()
				e.small.ServeHTTP(rec, req)
				r := secResp{Code: rec.Code, Header: rec.Header(), Body: rec.Body.Bytes()}
				biReject(t, name+" too large ("+mode+")", r)
				if r.Code != http.StatusRequestEntityTooLarge {
					t.Errorf("%s too large (%s): %d, want 413: %s", name, mode, r.Code, r.Body)
				}
			}
			// Just under the limit is fine as far as size goes.
			if r := send(e.small, name, rt, []byte(`{"bogus":"`+strings.Repeat("x", 3000)+`"}`)); r.Code == 413 {
				t.Errorf("%s: a 3 KB body is too large for a 4 KB limit", name)
			}
		}
	})

	// Every baseline body is valid: the rejections above were the faults' doing.
	for _, name := range routes {
		rt := table[name]
		if rt.raw || rt.webhook {
			continue
		}
		body := []byte(strings.NewReplacer("bi-new", "bi-final", "bi-tenant", "bi-final", "bi-env", "bi-final", "bi-alt", "bi-final-alt").Replace(string(biBody(rt, "", nil))))
		r := send(e.srv, name, rt, body)
		if r.Code >= 300 {
			t.Errorf("baseline %s: %d %s", name, r.Code, r.Body)
		}
	}
}

// TestBadInputHostileStrings: SQL metacharacters and unicode in every string field and
// every path parameter are data, never code: they are stored as given or rejected with
// a 4xx, and other tenants' rows are untouched.
func TestBadInputHostileStrings(t *testing.T) {
	e := newBiEnv(t)
	table := biRoutes()
	bBefore := secSnapshot(t, e.w.h.pool, e.w.b.tenantID)
	hostile := []string{
		`'; drop table customers; --`,
		`" or 1=1 --`,
		`'); delete from api_keys where ('1'='1`,
		`\'; truncate tenants cascade; --`,
		`%_\\`,
		`$1`,
		`ünïcødé ✓ 日本語 🚀`,
		"\u202egnp.exe",
		"Z\u0351\u0360a\u035b\u0307l\u0361g\u0315o",
		`<script>alert(1)</script>`,
	}
	routes := e.bodyRoutes()
	sort.Strings(routes)
	for _, name := range routes {
		rt := table[name]
		method, template, _ := strings.Cut(name, " ")
		for _, f := range rt.fields {
			if f.kind != "string" && f.kind != "text" && f.kind != "strings" {
				continue
			}
			for i, s := range hostile {
				v, _ := json.Marshal(s)
				if f.name == "id" || f.name == "alt_ids" || f.name == "slug" || f.name == "name" && strings.Contains(name, "environments") {
					// Fresh ids, so each create is a new attempt.
					v, _ = json.Marshal(fmt.Sprintf("%s-%d", s, i))
				}
				r := secDo(t, e.srv, method, e.path(template), e.authFor(rt), biBody(rt, f.name, biAs(f, v)))
				what := fmt.Sprintf("%s %s=%s", name, f.name, v)
				if r.Code >= 400 {
					biReject(t, what, r)
					continue
				}
				// Accepted: the value round-trips exactly.
				if f.name == "label" || f.name == "id" || f.name == "type" || f.name == "name" {
					var m map[string]any
					_ = json.Unmarshal(r.Body, &m)
					if tn, ok := m["tenant"].(map[string]any); ok {
						m = tn // a bootstrap answers with the tenant inside
					}
					want := ""
					_ = json.Unmarshal(v, &want)
					if m[f.name] != want {
						t.Errorf("%s: stored %q, want %q", what, m[f.name], want)
					}
				}
			}
		}
	}
	// Path parameters.
	for _, route := range routerRoutes(e.w.h.srv) {
		method, template, _ := strings.Cut(route, " ")
		if !strings.Contains(template, "{") {
			continue
		}
		var body []byte
		if rt, ok := table[route]; ok {
			body = biBody(rt, "", nil)
		}
		for _, param := range []string{"{env}", "{id}", "{entitlement}", "{number}", "{cap}"} {
			if !strings.Contains(template, param) {
				continue
			}
			for _, s := range hostile {
				p := strings.Replace(template, param, url.PathEscape(s), 1)
				p = e.path(p)
				p = strings.Replace(p, "{number}", "1", 1)
				r := secDo(t, e.srv, method, p, e.keyFor(template), body)
				if r.Code >= 400 {
					biReject(t, method+" "+p, r)
				} else if param != "{entitlement}" && param != "{cap}" { // cap ids are the caller's: stored as given
					t.Errorf("%s %s: %d, want a 4xx for a hostile %s", method, p, r.Code, param)
				}
			}
		}
	}
	secSameSnapshot(t, "another tenant after hostile strings", bBefore, secSnapshot(t, e.w.h.pool, e.w.b.tenantID))
	for _, table := range []string{"tenants", "api_keys", "customers", "environments", "policy_versions", "audit_log"} {
		if e.w.h.count(`select count(*) from `+table) == 0 {
			t.Errorf("table %s is empty", table)
		}
	}
	// The hostile customer ids can be read back by id.
	code, body := e.w.h.do("GET", custPath(secEnv, `'; drop table customers; ---0`), e.w.a.secret, nil)
	if code != 200 || decodeCustomer(t, body).ID != `'; drop table customers; ---0` {
		t.Errorf("read back a hostile id: %d %s", code, body)
	}
}

// TestBadInputPaths: very long, malformed and odd path parameters on every route.
func TestBadInputPaths(t *testing.T) {
	e := newBiEnv(t)
	table := biRoutes()
	e.phase("path parameters", func() {
		for _, route := range routerRoutes(e.w.h.srv) {
			method, template, _ := strings.Cut(route, " ")
			if !strings.Contains(template, "{") {
				continue
			}
			var body []byte
			if rt, ok := table[route]; ok {
				body = biBody(rt, "", nil)
			}
			for _, param := range []string{"{env}", "{id}", "{entitlement}", "{number}"} {
				if !strings.Contains(template, param) {
					continue
				}
				values := []string{strings.Repeat("x", 300), strings.Repeat("x", 10_000), strings.Repeat("9", 300), "%00", "a%00b", "%ff%fe", "%c3%28",
					"%0d%0aX-Injected:%201", "..%2f..%2fetc", "%2e%2e", "-1", "0", "1.5", "2147483648", "00000000-0000-0000-0000-000000000000", " "}
				for _, v := range values {
					p := strings.Replace(template, param, v, 1)
					if strings.HasPrefix(template, "/v1/keys/") {
						p = strings.Replace(p, "{id}", e.w.aSDKID.String(), 1) // only when {id} is not the fault
					}
					p = strings.Replace(e.path(p), "{number}", "1", 1)
					if strings.Contains(p, " ") {
						p = strings.ReplaceAll(p, " ", "%20")
					}
					r := secDo(t, e.srv, method, p, e.keyFor(template), body)
					biReject(t, fmt.Sprintf("%s with %s=%s", route, param, secTrim(v)), r)
					if r.Code == 403 {
						t.Errorf("%s with %s=%s: 403: the test uses the wrong key", route, param, secTrim(v))
					}
					if r.Header.Get("X-Injected") != "" {
						t.Errorf("%s: header injection through the path", route)
					}
				}
			}
		}
		// Query parameters.
		for _, q := range []string{"/v1/audit?limit=0", "/v1/audit?limit=201", "/v1/audit?limit=x", "/v1/audit?cursor=-1",
			"/v1/audit?cursor=" + strings.Repeat("9", 300), "/v1/policies?cursor=abc", "/v1/policies?limit=1e3",
			"/v1/policies/diff?from=1&to=" + strings.Repeat("9", 10_000), "/v1/policies/diff?from=a&to=b", "/v1/policies/diff",
			"/v1/policies/1/source?format=" + strings.Repeat("y", 10_000), "/v1/policies/1/source?format=%00",
			"/v1/environments/" + secEnv + "/customers?cursor=" + strings.Repeat("_", 10_000),
			"/v1/environments/" + secEnv + "/customers?cursor=%00", "/v1/environments/" + secEnv + "/customers?cursor=AA",
			"/v1/environments/" + secEnv + "/publications?cursor=0",
			"/v1/environments/" + secEnv + "/alerts?before=" + strings.Repeat("f", 10_000), "/v1/environments/" + secEnv + "/alerts?before=%00",
			"/v1/environments/" + secEnv + "/alerts?limit=201", "/v1/environments/" + secEnv + "/alerts?customer=a%00b",
			"/v1/environments/" + secEnv + "/alert-deliveries?status=lost", "/v1/environments/" + secEnv + "/alert-deliveries?alert=1",
			"/v1/environments/" + secEnv + "/alert-deliveries?before=-1"} {
			biReject(t, "GET "+secTrim(q), secDo(t, e.srv, "GET", q, "Bearer "+e.w.a.secret, nil))
		}
	})
}

// TestBadInputPolicy: malformed documents in every format, and a policy with many
// problems answered with all of them.
func TestBadInputPolicy(t *testing.T) {
	e := newBiEnv(t)
	admin := "Bearer " + e.w.a.secret
	post := func(ctype string, body []byte, query string) secResp {
		hdr := []string{}
		if ctype != "" {
			hdr = []string{"Content-Type", ctype}
		}
		return secDo(t, e.srv, "POST", "/v1/policies"+query, admin, body, hdr...)
	}
	valid := custPolicySource(t)
	e.phase("bad policies", func() {
		cases := []struct {
			name, ctype, body, query string
		}{
			{"malformed JSON", "application/json", `{"policy": {"plans": `, ""},
			{"JSON array", "application/json", `[{"policy":{}}]`, ""},
			{"JSON string", "application/json", `"policy"`, ""},
			{"JSON null", "application/json", `null`, ""},
			{"JSON with trailing data", "application/json", `{"policy":{}} {}`, ""},
			{"malformed YAML", "application/yaml", "policy:\n  plans: [\n  : :", ""},
			{"YAML tabs", "application/yaml", "policy:\n\tplans: {}\n", ""},
			{"YAML list", "application/yaml", "- policy\n- x\n", ""},
			{"YAML alias bomb", "application/yaml", "a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\npolicy: *g\n", ""},
			{"malformed TOML", "application/toml", "[policy\ntimezone = ", ""},
			{"TOML duplicate key", "application/toml", "[policy]\ntimezone = \"UTC\"\ntimezone = \"UTC\"\n", ""},
			{"YAML sent as JSON", "application/json", valid, ""},
			{"format query contradicts the body", "application/yaml", valid, "?format=toml"},
			{"unknown format", "application/yaml", valid, "?format=xml"},
			{"unsupported media type", "application/xml", "<policy/>", ""},
			{"malformed media type", "application/json; charset=\"", `{}`, ""},
			{"empty", "application/yaml", "", ""},
			{"whitespace", "application/yaml", "  \n ", ""},
			{"no policy key", "application/json", `{"plans":{}}`, ""},
			{"unknown top-level field", "application/yaml", valid + "bogus: 1\n", ""},
			{"NUL escape in JSON", "application/json", `{"policy":{"credits":{"seat":{"description":"a\u0000b"}},"plans":{"base":{"default":true,"entitlements":{"seats":{"limit":{"credit":"seat","value":10}}}}}}}`, ""},
			{"NUL escape in YAML", "application/yaml", "policy:\n  credits:\n    seat:\n      description: \"a\\0b\"\n  plans:\n    base:\n      default: true\n      entitlements:\n        seats:\n          limit: { credit: seat, value: 10 }\n", ""},
			{"raw NUL in YAML", "application/yaml", "policy:\n  credits:\n    seat:\n      description: a\x00b\n", ""},
			{"invalid UTF-8 in JSON", "application/json", "{\"policy\":{\"credits\":{\"seat\":{\"description\":\"a\xffb\"}},\"plans\":{\"base\":{\"default\":true,\"entitlements\":{\"seats\":{\"limit\":{\"credit\":\"seat\",\"value\":10}}}}}}}", ""},
			{"invalid UTF-8 in YAML", "application/yaml", "policy:\n  credits:\n    seat:\n      description: \"a\xffb\"\n", ""},
			{"invalid UTF-8 in TOML", "application/toml", "[policy.credits.seat]\ndescription = \"a\xffb\"\n", ""},
			{"SQL in names", "application/yaml", "policy:\n  plans:\n    \"'; drop table policy_versions; --\":\n      entitlements:\n        x:\n          limit: { credit: nope, value: 1 }\n", ""},
			{"huge number", "application/yaml", "policy:\n  credits:\n    seat: {}\n  plans:\n    base:\n      default: true\n      entitlements:\n        seats:\n          limit: { credit: seat, value: 1e999999999 }\n", ""},
		}
		for _, c := range cases {
			biReject(t, "policy "+c.name, post(c.ctype, []byte(c.body), c.query))
		}

		// Twenty problems: all of them come back, each with its path.
		var b strings.Builder
		b.WriteString("policy:\n  credits:\n    seat: {}\n  plans:\n    base:\n      default: true\n      entitlements:\n")
		for i := range 20 {
			fmt.Fprintf(&b, "        ent_%02d:\n          limit: { credit: missing_%02d, value: 1 }\n", i, i)
		}
		r := post("application/yaml", []byte(b.String()), "")
		biReject(t, "policy with 20 problems", r)
		var p problem.Problem
		_ = json.Unmarshal(r.Body, &p)
		if r.Code != 422 || p.Type != problem.TypeBase+"invalid-policy" {
			t.Errorf("20 problems: %d %s", r.Code, secTrim(string(r.Body)))
		}
		for i := range 20 {
			found := false
			for _, fe := range p.Errors {
				found = found || strings.Contains(fe.Path, fmt.Sprintf("ent_%02d", i)) && fe.Message != ""
			}
			if !found {
				t.Errorf("20 problems: none names ent_%02d: %s", i, secTrim(string(r.Body)))
			}
		}
		if len(p.Errors) < 20 || !strings.Contains(p.Detail, fmt.Sprint(len(p.Errors))) {
			t.Errorf("20 problems: %d listed, detail %q", len(p.Errors), p.Detail)
		}
	})
	// Control: the valid policy is accepted in each format (a new version each time).
	if r := post("application/yaml", []byte(valid+"  timezone: Asia/Seoul\n"), ""); r.Code != 201 {
		t.Errorf("valid YAML policy: %d %s", r.Code, r.Body)
	}
}

// TestBadInputIdempotency: Idempotency-Key replays, conflicts and rejects bad keys.
func TestBadInputIdempotency(t *testing.T) {
	e := newBiEnv(t)
	admin := "Bearer " + e.w.a.secret
	post := func(path, key string, body string, hdr ...string) secResp {
		h := append([]string{"Idempotency-Key", key}, hdr...)
		return secDo(t, e.srv, "POST", path, admin, []byte(body), h...)
	}
	cp := "/v1/environments/" + secEnv + "/customers"
	cases := []struct {
		path, body, other string
		hdr               []string
	}{
		{cp, `{"id":"idem-cust"}`, `{"id":"idem-cust-2"}`, nil},
		{"/v1/keys", `{"kind":"admin","name":"idem"}`, `{"kind":"admin","name":"idem2"}`, nil},
		{cp + "/" + biCustomer + "/topups", `{"topup":"boost"}`, `{"topup":"boost","price":1}`, nil},
		{"/v1/environments", `{"name":"idem-env"}`, `{"name":"idem-env-2"}`, nil},
		{"/v1/policies", custPolicySource(t) + "  timezone: Asia/Seoul\n", custPolicySource(t) + "  timezone: Asia/Tokyo\n", []string{"Content-Type", "application/yaml"}},
		{"/v1/environments/" + secEnv + "/publish", `{"version":1}`, `{"version":2}`, nil},
		{cp, `{"id":""}`, `{"id":"x","plan":"nope"}`, nil}, // a 422 is replayed too
	}
	for i, c := range cases {
		key := fmt.Sprintf("idem-key-%d", i)
		before := e.snapshot()
		r1 := post(c.path, key, c.body, c.hdr...)
		after1 := e.snapshot()
		r2 := post(c.path, key, c.body, c.hdr...)
		if r1.Code >= 500 || r2.Code != r1.Code || !bytes.Equal(r1.Body, r2.Body) {
			t.Errorf("%s: replay differs: %d %s / %d %s", c.path, r1.Code, r1.Body, r2.Code, r2.Body)
		}
		if r1.Header.Get("Idempotent-Replayed") != "" || r2.Header.Get("Idempotent-Replayed") != "true" {
			t.Errorf("%s: Idempotent-Replayed %q then %q", c.path, r1.Header.Get("Idempotent-Replayed"), r2.Header.Get("Idempotent-Replayed"))
		}
		for _, h := range []string{"Content-Type", "Location"} {
			if r1.Header.Get(h) != r2.Header.Get(h) {
				t.Errorf("%s: replayed %s %q, first %q", c.path, h, r2.Header.Get(h), r1.Header.Get(h))
			}
		}
		secSameSnapshot(t, c.path+" replay", after1, e.snapshot())
		// The same key with another body: 422, nothing done.
		r3 := post(c.path, key, c.other, c.hdr...)
		biReject(t, c.path+" key reused with another body", r3)
		if r3.Code != 422 || !bytes.Contains(r3.Body, []byte("idempotency-key-reused")) {
			t.Errorf("%s key reused: %d %s", c.path, r3.Code, r3.Body)
		}
		// ... or another path.
		r4 := post(c.path+"?x=1", key, c.body, c.hdr...)
		biReject(t, c.path+" key reused on another path", r4)
		secSameSnapshot(t, c.path+" reuse", after1, e.snapshot())
		if r1.Code >= 400 {
			// A rejected request changes nothing but the stored response to replay.
			delete(before, "idempotency_keys")
			secSameSnapshot(t, c.path+" rejected", before, after1)
		}
	}
	// Bad keys: 400, and nothing done.
	e.phase("bad idempotency keys", func() {
		for name, key := range map[string]string{
			"256 characters": strings.Repeat("k", 256),
			"10,000 bytes":   strings.Repeat("k", 10_000),
			"empty":          "",
			"non-ASCII":      "clé-ü",
			"control char":   "a\tb",
			"DEL":            "a\x7fb",
		} {
			r := post(cp, key, `{"id":"idem-bad"}`)
			biReject(t, "Idempotency-Key "+name, r)
			if r.Code != 400 {
				t.Errorf("Idempotency-Key %s: %d, want 400", name, r.Code)
			}
		}
		// Two Idempotency-Key headers.
		req := httptest.NewRequest("POST", cp, strings.NewReader(`{"id":"idem-bad"}`))
		req.Header.Set("Authorization", admin)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Add("Idempotency-Key", "one")
		req.Header.Add("Idempotency-Key", "two")
		rec := httptest.NewRecorder()
		e.srv.ServeHTTP(rec, req)
		biReject(t, "two Idempotency-Keys", secResp{Code: rec.Code, Header: rec.Header(), Body: rec.Body.Bytes()})
	})
	// 255 characters is the longest valid key.
	if r := post(cp, strings.Repeat("k", 255), `{"id":"idem-255"}`); r.Code != 201 {
		t.Errorf("255-character key: %d %s", r.Code, r.Body)
	}
	// Keys are per API key: another key's identical request is not a replay.
	sdk := "Bearer " + e.w.aSDK
	r := secDo(t, e.srv, "POST", cp, sdk, []byte(`{"id":"idem-cust"}`), "Idempotency-Key", "idem-key-0")
	if r.Header.Get("Idempotent-Replayed") != "" || r.Code != 409 {
		t.Errorf("another key's request with the same Idempotency-Key: %d %q %s", r.Code, r.Header.Get("Idempotent-Replayed"), r.Body)
	}
	// Operator requests are idempotent too.
	r1 := secDo(t, e.srv, "POST", "/v1/tenants", "Bearer op", []byte(`{"slug":"idem-tenant"}`), "Idempotency-Key", "t-1")
	r2 := secDo(t, e.srv, "POST", "/v1/tenants", "Bearer op", []byte(`{"slug":"idem-tenant"}`), "Idempotency-Key", "t-1")
	if r1.Code != 201 || r2.Code != 201 || !bytes.Equal(r1.Body, r2.Body) || r2.Header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("tenant creation replay: %d / %d %q", r1.Code, r2.Code, r2.Header.Get("Idempotent-Replayed"))
	}
}
