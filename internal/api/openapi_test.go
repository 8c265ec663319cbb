package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
)

// The OpenAPI document is checked three ways: it is well formed (every $ref resolves,
// every operation has responses), it matches the router route for route, and real
// responses conform to the schemas it documents.

// oaDoc is the embedded document, decoded with numbers kept exact.
func oaDoc(t testing.TB) map[string]any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(openapiDoc))
	dec.UseNumber()
	var doc map[string]any
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("openapi.json is not valid JSON: %v", err)
	}
	if dec.More() {
		t.Fatal("openapi.json has data after the document")
	}
	return doc
}

// oaResolve follows a local JSON pointer ("#/components/schemas/X").
func oaResolve(doc map[string]any, ref string) (any, error) {
	if !strings.HasPrefix(ref, "#/") {
		return nil, fmt.Errorf("%q is not a local reference", ref)
	}
	var cur any = doc
	for _, tok := range strings.Split(ref[2:], "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%q: %q is not inside an object", ref, tok)
		}
		if cur, ok = m[tok]; !ok {
			return nil, fmt.Errorf("%q: no %q", ref, tok)
		}
	}
	return cur, nil
}

// oaDeref resolves v while it is a {"$ref": ...} object.
func oaDeref(t testing.TB, doc map[string]any, v any) map[string]any {
	t.Helper()
	for range 32 {
		m, ok := v.(map[string]any)
		if !ok {
			t.Fatalf("not an object: %v", v)
		}
		r, ok := m["$ref"].(string)
		if !ok {
			return m
		}
		var err error
		if v, err = oaResolve(doc, r); err != nil {
			t.Fatal(err)
		}
	}
	t.Fatal("$ref chain too long")
	return nil
}

var oaMethods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

// oaServer builds a server on a pool that never connects: enough to list routes and
// serve /openapi.json without Postgres.
func oaServer(t testing.TB) *Server {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), "postgres://nobody@127.0.0.1:1/none?sslmode=disable&connect_timeout=1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	s, err := New(Config{OperatorToken: "op"}, Deps{Pool: pool, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

var echoParam = regexp.MustCompile(`:([A-Za-z0-9_]+)`)

// routerRoutes lists "METHOD /path/{param}" for every route a client can call; echo's
// own not-found routes (registered for group middleware) are left out.
func routerRoutes(s *Server) []string {
	var out []string
	for _, r := range s.Echo().Routes() {
		if !slices.Contains(oaMethods, strings.ToLower(r.Method)) {
			continue // echo_route_not_found and other internal entries
		}
		out = append(out, r.Method+" "+echoParam.ReplaceAllString(r.Path, "{$1}"))
	}
	sort.Strings(out)
	return slices.Compact(out)
}

func TestOpenAPIDocument(t *testing.T) {
	doc := oaDoc(t)
	if v, _ := doc["openapi"].(string); !strings.HasPrefix(v, "3.") {
		t.Fatalf("openapi = %q, want 3.x", doc["openapi"])
	}
	info, _ := doc["info"].(map[string]any)
	if info["title"] == nil || info["version"] == nil {
		t.Fatal("info needs a title and a version")
	}
	paths, _ := doc["paths"].(map[string]any)
	if len(paths) == 0 {
		t.Fatal("no paths")
	}

	// Every $ref resolves.
	refs := 0
	var walk func(at string, v any)
	walk = func(at string, v any) {
		switch v := v.(type) {
		case map[string]any:
			if r, ok := v["$ref"]; ok {
				refs++
				rs, ok := r.(string)
				if !ok {
					t.Errorf("%s: $ref is not a string", at)
				} else if _, err := oaResolve(doc, rs); err != nil {
					t.Errorf("%s: %v", at, err)
				}
			}
			for k, e := range v {
				walk(at+"/"+k, e)
			}
		case []any:
			for i, e := range v {
				walk(at+"/"+strconv.Itoa(i), e)
			}
		}
	}
	walk("#", doc)
	if refs == 0 {
		t.Error("no $ref at all: the walk is broken")
	}

	comps, _ := doc["components"].(map[string]any)
	schemes, _ := comps["securitySchemes"].(map[string]any)
	for _, name := range []string{"apiKey", "operatorToken"} {
		if s, _ := schemes[name].(map[string]any); s["type"] != "http" || s["scheme"] != "bearer" {
			t.Errorf("security scheme %s: %v", name, schemes[name])
		}
	}
	opIDs := map[string]string{}
	for path, item := range paths {
		pi := item.(map[string]any)
		for _, m := range oaMethods {
			raw, ok := pi[m]
			if !ok {
				continue
			}
			op := raw.(map[string]any)
			name := strings.ToUpper(m) + " " + path
			id, _ := op["operationId"].(string)
			if id == "" {
				t.Errorf("%s: no operationId", name)
			} else if prev, dup := opIDs[id]; dup {
				t.Errorf("%s: operationId %q is also %s", name, id, prev)
			}
			opIDs[id] = name
			resps, _ := op["responses"].(map[string]any)
			if len(resps) == 0 {
				t.Errorf("%s: no responses", name)
			}
			has2xx := false
			for code, r := range resps {
				if len(code) == 3 && code[0] == '2' || code == "304" {
					has2xx = true
				}
				rm := oaDeref(t, doc, r)
				if d, _ := rm["description"].(string); d == "" {
					t.Errorf("%s %s: a response needs a description", name, code)
				}
				if code >= "400" && name+" "+code != "GET /readyz 503" { // readyz reports its checks
					c, _ := rm["content"].(map[string]any)
					pj, ok := c["application/problem+json"].(map[string]any)
					if !ok || pj["schema"].(map[string]any)["$ref"] != "#/components/schemas/Problem" {
						t.Errorf("%s %s: errors must be application/problem+json Problems", name, code)
					}
				}
			}
			if !has2xx {
				t.Errorf("%s: no success response", name)
			}
			// Every {param} of the path is declared, and every declared path parameter
			// is in the path.
			declared := map[string]bool{}
			var headers []string
			params, _ := op["parameters"].([]any)
			for _, p := range params {
				pm := oaDeref(t, doc, p)
				switch pm["in"] {
				case "path":
					declared[pm["name"].(string)] = true
					if pm["required"] != true {
						t.Errorf("%s: path parameter %v must be required", name, pm["name"])
					}
				case "header":
					headers = append(headers, pm["name"].(string))
				}
			}
			for _, sub := range regexp.MustCompile(`\{([^}]+)\}`).FindAllStringSubmatch(path, -1) {
				if !declared[sub[1]] {
					t.Errorf("%s: path parameter %q is not declared", name, sub[1])
				}
				delete(declared, sub[1])
			}
			for p := range declared {
				t.Errorf("%s: declares path parameter %q that is not in the path", name, p)
			}
			// Hygiene the API promises: Idempotency-Key on every authenticated POST,
			// rate limits and 401 on every authenticated route, ETag on policy polls.
			sec, hasSec := op["security"].([]any)
			public := hasSec && len(sec) == 0
			if m == "post" && !public && !slices.Contains(headers, "Idempotency-Key") {
				t.Errorf("%s: no Idempotency-Key parameter", name)
			}
			if !public {
				for _, code := range []string{"401", "500"} {
					if resps[code] == nil {
						t.Errorf("%s: %s is not documented", name, code)
					}
				}
				if !hasSec && resps["429"] == nil {
					t.Errorf("%s: 429 is not documented", name)
				}
				if !hasSec {
					for code, r := range resps {
						if code[0] == '2' {
							hs, _ := oaDeref(t, doc, r)["headers"].(map[string]any)
							if hs["RateLimit-Limit"] == nil || hs["RateLimit-Remaining"] == nil {
								t.Errorf("%s %s: RateLimit headers are not documented", name, code)
							}
						}
					}
				}
			}
			if strings.HasSuffix(path, "/policy") && m == "get" {
				ok := oaDeref(t, doc, resps["200"])
				hs, _ := ok["headers"].(map[string]any)
				if hs["ETag"] == nil || resps["304"] == nil || !slices.Contains(headers, "If-None-Match") {
					t.Errorf("%s: ETag, If-None-Match and 304 must be documented", name)
				}
			}
		}
	}
	// Request bodies reject unknown fields, as bindJSON does.
	schemas, _ := comps["schemas"].(map[string]any)
	for name, s := range schemas {
		if strings.HasSuffix(name, "Request") && s.(map[string]any)["additionalProperties"] != false {
			t.Errorf("schema %s: request bodies must say additionalProperties: false", name)
		}
	}
	for _, name := range []string{"type", "title", "status", "detail", "instance", "errors", "request_id"} {
		p := schemas["Problem"].(map[string]any)["properties"].(map[string]any)
		if p[name] == nil {
			t.Errorf("Problem has no %q", name)
		}
	}
}

// TestOpenAPIServed checks /openapi.json serves the embedded document.
func TestOpenAPIServed(t *testing.T) {
	s := oaServer(t)
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/openapi.json", nil))
	if rec.Code != 200 || !strings.HasPrefix(rec.Header().Get("Content-Type"), "application/json") || !bytes.Equal(rec.Body.Bytes(), openapiDoc) {
		t.Fatalf("GET /openapi.json: %d %s", rec.Code, rec.Header().Get("Content-Type"))
	}
}

// TestOpenAPIMatchesRouter: every route is documented and every documented route exists.
func TestOpenAPIMatchesRouter(t *testing.T) {
	s := oaServer(t)
	routes := routerRoutes(s)
	if len(routes) < 20 {
		t.Fatalf("only %d routes: %v", len(routes), routes)
	}
	documented := map[string]bool{}
	for path, item := range oaDoc(t)["paths"].(map[string]any) {
		for _, m := range oaMethods {
			if _, ok := item.(map[string]any)[m]; ok {
				documented[strings.ToUpper(m)+" "+path] = true
			}
		}
	}
	for _, r := range routes {
		if !documented[r] {
			t.Errorf("route %s is not in openapi.json", r)
		}
		delete(documented, r)
	}
	for r := range documented {
		t.Errorf("openapi.json documents %s, which the router does not serve", r)
	}
}

// ---- a light JSON Schema check of real responses ----

// oaCheck validates v against schema (OpenAPI 3.0 subset: $ref, type, nullable,
// properties, required, additionalProperties, items, allOf, oneOf, enum) and returns
// the violations.
func oaCheck(doc map[string]any, schema any, v any, at string) []string {
	s, ok := schema.(map[string]any)
	if !ok {
		return nil
	}
	if r, ok := s["$ref"].(string); ok {
		target, err := oaResolve(doc, r)
		if err != nil {
			return []string{at + ": " + err.Error()}
		}
		return oaCheck(doc, target, v, at)
	}
	if v == nil {
		if s["nullable"] == true || s["type"] == nil && s["allOf"] == nil && s["oneOf"] == nil {
			return nil
		}
		return []string{at + ": null is not allowed"}
	}
	var errs []string
	if all, ok := s["allOf"].([]any); ok {
		for _, sub := range all {
			errs = append(errs, oaCheck(doc, sub, v, at)...)
		}
	}
	if one, ok := s["oneOf"].([]any); ok {
		n := 0
		for _, sub := range one {
			if len(oaCheck(doc, sub, v, at)) == 0 {
				n++
			}
		}
		if n != 1 {
			errs = append(errs, fmt.Sprintf("%s: %v matches %d oneOf alternatives", at, v, n))
		}
	}
	if enum, ok := s["enum"].([]any); ok && !slices.ContainsFunc(enum, func(e any) bool { return fmt.Sprint(e) == fmt.Sprint(v) }) {
		errs = append(errs, fmt.Sprintf("%s: %v is not one of %v", at, v, enum))
	}
	typ, _ := s["type"].(string)
	switch typ {
	case "object":
		m, ok := v.(map[string]any)
		if !ok {
			return append(errs, fmt.Sprintf("%s: want an object, got %T", at, v))
		}
		props, _ := s["properties"].(map[string]any)
		req, _ := s["required"].([]any)
		for _, r := range req {
			if _, ok := m[r.(string)]; !ok {
				errs = append(errs, fmt.Sprintf("%s: required property %q is missing", at, r))
			}
		}
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if ps, ok := props[k]; ok {
				errs = append(errs, oaCheck(doc, ps, m[k], at+"."+k)...)
				continue
			}
			switch ap := s["additionalProperties"].(type) {
			case bool:
				if !ap {
					errs = append(errs, fmt.Sprintf("%s: property %q is not documented", at, k))
				}
			case map[string]any:
				errs = append(errs, oaCheck(doc, ap, m[k], at+"."+k)...)
			}
		}
	case "array":
		a, ok := v.([]any)
		if !ok {
			return append(errs, fmt.Sprintf("%s: want an array, got %T", at, v))
		}
		for i, e := range a {
			errs = append(errs, oaCheck(doc, s["items"], e, fmt.Sprintf("%s[%d]", at, i))...)
		}
	case "string":
		if _, ok := v.(string); !ok {
			errs = append(errs, fmt.Sprintf("%s: want a string, got %T %v", at, v, v))
		}
	case "integer":
		n, ok := v.(json.Number)
		if _, isInt := new(big.Int).SetString(string(n), 10); !ok || !isInt {
			errs = append(errs, fmt.Sprintf("%s: want an integer, got %v", at, v))
		}
	case "number":
		if _, ok := v.(json.Number); !ok {
			errs = append(errs, fmt.Sprintf("%s: want a number, got %T %v", at, v, v))
		}
	case "boolean":
		if _, ok := v.(bool); !ok {
			errs = append(errs, fmt.Sprintf("%s: want a boolean, got %T", at, v))
		}
	}
	return errs
}

// oaConform checks a real response against the document: its status is documented for
// the operation, its media type is one documented for that status, and a JSON body
// conforms to the schema (required properties present, no undocumented ones).
func oaConform(t *testing.T, doc map[string]any, method, template string, code int, header http.Header, body []byte) {
	t.Helper()
	name := method + " " + template
	item, ok := doc["paths"].(map[string]any)[template].(map[string]any)
	if !ok {
		t.Fatalf("%s: path not documented", name)
	}
	op, ok := item[strings.ToLower(method)].(map[string]any)
	if !ok {
		t.Fatalf("%s: method not documented", name)
	}
	raw, ok := op["responses"].(map[string]any)[strconv.Itoa(code)]
	if !ok {
		t.Errorf("%s: status %d is not documented: %s", name, code, body)
		return
	}
	resp := oaDeref(t, doc, raw)
	content, _ := resp["content"].(map[string]any)
	if len(content) == 0 {
		if len(body) != 0 {
			t.Errorf("%s %d: documented without a body, got %s", name, code, body)
		}
		return
	}
	ct := header.Get("Content-Type")
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	media, ok := content[strings.TrimSpace(ct)].(map[string]any)
	if !ok {
		t.Errorf("%s %d: Content-Type %q is not documented", name, code, ct)
		return
	}
	if ct != "application/json" && ct != "application/problem+json" {
		return
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Errorf("%s %d: body is not JSON: %v", name, code, err)
		return
	}
	for _, e := range oaCheck(doc, media["schema"], v, "body") {
		t.Errorf("%s %d: %s", name, code, e)
	}
	// Documented headers of success responses that the handler always sets.
	if code >= 400 {
		return
	}
	hs, _ := resp["headers"].(map[string]any)
	for _, h := range []string{"ETag", "Location", "Limitr-Policy-Version", "RateLimit-Limit", "X-Request-Id"} {
		if hs[h] != nil && header.Get(h) == "" {
			t.Errorf("%s %d: documented header %s is missing", name, code, h)
		}
	}
}

func TestOpenAPIResponsesConform(t *testing.T) {
	doc := oaDoc(t)
	h := newCustHarness(t)
	call := func(method, template, path, secret string, body string, wantCode int, hdr ...string) *httptest.ResponseRecorder {
		t.Helper()
		var rd io.Reader
		if body != "" {
			rd = strings.NewReader(body)
		}
		req := httptest.NewRequest(method, path, rd)
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		if secret != "" {
			req.Header.Set("Authorization", "Bearer "+secret)
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		rec := httptest.NewRecorder()
		h.srv.Handler().ServeHTTP(rec, req)
		if rec.Code != wantCode {
			t.Fatalf("%s %s: %d, want %d: %s", method, path, rec.Code, wantCode, rec.Body.Bytes())
		}
		oaConform(t, doc, method, template, rec.Code, rec.Header(), rec.Body.Bytes())
		return rec
	}
	field := func(rec *httptest.ResponseRecorder, k string) string {
		var m map[string]any
		_ = json.Unmarshal(rec.Body.Bytes(), &m)
		return fmt.Sprint(m[k])
	}

	call("GET", "/healthz", "/healthz", "", "", 200)
	call("GET", "/readyz", "/readyz", "", "", 200)
	call("GET", "/openapi.json", "/openapi.json", "", "", 200)
	boot := call("POST", "/v1/tenants", "/v1/tenants", "op", `{"slug":"acme","name":"Acme"}`, 201)
	admin := field(boot, "secret")
	call("POST", "/v1/tenants", "/v1/tenants", "op", `{"slug":"acme"}`, 409)
	call("POST", "/v1/tenants", "/v1/tenants", "wrong", `{"slug":"x"}`, 401)
	call("GET", "/v1/tenant", "/v1/tenant", admin, "", 200)
	call("GET", "/v1/tenant", "/v1/tenant", "", "", 401)
	call("GET", "/v1/environments", "/v1/environments", admin, "", 200)
	call("POST", "/v1/environments", "/v1/environments", admin, `{"name":"eu"}`, 201)
	call("POST", "/v1/environments", "/v1/environments", admin, `{"name":"EU!"}`, 422)
	sdk := call("POST", "/v1/keys", "/v1/keys", admin, `{"kind":"sdk","environment":"production","name":"app"}`, 201)
	call("POST", "/v1/keys", "/v1/keys", field(sdk, "secret"), `{"kind":"admin"}`, 403)
	spare := call("POST", "/v1/keys", "/v1/keys", admin, `{"kind":"admin","name":"spare"}`, 201)
	call("GET", "/v1/keys", "/v1/keys", admin, "", 200)
	call("DELETE", "/v1/keys/{id}", "/v1/keys/"+field(spare, "id"), admin, "", 200)
	call("DELETE", "/v1/keys/{id}", "/v1/keys/"+field(spare, "id")[:8], admin, "", 404)

	src := custPolicySource(t)
	y := []string{"Content-Type", "application/yaml"}
	call("POST", "/v1/policies", "/v1/policies", admin, src, 201, y...)
	call("POST", "/v1/policies", "/v1/policies", admin, src, 200, y...) // unchanged: the same version
	call("POST", "/v1/policies", "/v1/policies", admin, src+"  timezone: Europe/Paris\n", 201, y...)
	call("POST", "/v1/policies", "/v1/policies", admin, "policy:\n  plans: 3\n", 422, y...)
	call("POST", "/v1/policies", "/v1/policies", admin, "<policy/>", 415, "Content-Type", "application/xml")
	call("GET", "/v1/policies", "/v1/policies?limit=1", admin, "", 200)
	call("GET", "/v1/policies/{number}", "/v1/policies/1", admin, "", 200)
	call("GET", "/v1/policies/{number}", "/v1/policies/9", admin, "", 404)
	call("GET", "/v1/policies/{number}/source", "/v1/policies/1/source", admin, "", 200)
	call("GET", "/v1/policies/{number}/source", "/v1/policies/1/source?format=json", admin, "", 200)
	call("GET", "/v1/policies/{number}/source", "/v1/policies/1/source?format=xml", admin, "", 422)
	call("GET", "/v1/policies/diff", "/v1/policies/diff?from=1&to=2", admin, "", 200)
	call("GET", "/v1/policies/diff", "/v1/policies/diff?from=1", admin, "", 422)
	call("POST", "/v1/environments/{env}/publish", "/v1/environments/production/publish", admin, `{"version":1}`, 200)
	call("POST", "/v1/environments/{env}/publish", "/v1/environments/production/publish", admin, `{"version":1}`, 200) // changed: false
	call("POST", "/v1/environments/{env}/publish", "/v1/environments/production/publish", admin, `{"version":2}`, 200)
	call("POST", "/v1/environments/{env}/rollback", "/v1/environments/production/rollback", admin, "", 200)
	call("POST", "/v1/environments/{env}/rollback", "/v1/environments/eu/rollback", admin, "", 409)
	call("POST", "/v1/environments/{env}/publish", "/v1/environments/nowhere/publish", admin, `{"version":1}`, 404)
	active := call("GET", "/v1/environments/{env}/policy", "/v1/environments/production/policy", admin, "", 200)
	call("GET", "/v1/environments/{env}/policy", "/v1/environments/production/policy", admin, "", 304, "If-None-Match", active.Header().Get("ETag"))
	call("GET", "/v1/environments/{env}/policy", "/v1/environments/staging/policy", admin, "", 404)
	call("GET", "/v1/sdk/policy", "/v1/sdk/policy", field(sdk, "secret"), "", 200)
	call("GET", "/v1/sdk/policy", "/v1/sdk/policy", field(sdk, "secret"), "", 304, "If-None-Match", active.Header().Get("ETag"))
	call("GET", "/v1/sdk/policy", "/v1/sdk/policy", admin, "", 403)
	call("GET", "/v1/environments/{env}/publications", "/v1/environments/production/publications", admin, "", 200)

	cp := "/v1/environments/{env}/customers"
	call("POST", cp, "/v1/environments/production/customers", admin, `{"id":"org_1","type":"org","plan":"pro"}`, 201)
	call("POST", cp, "/v1/environments/production/customers", admin, `{"id":"u_1","refs":["org_1"],"alt_ids":["cus_1"],"label":"Ann",
		"metadata":{"a":{"b":[1,2]}},"timezone":"Europe/Paris","billing_anchor":"2025-01-31T00:00:00Z"}`, 201)
	call("POST", cp, "/v1/environments/production/customers", admin, `{"id":"u_1"}`, 409)
	call("POST", cp, "/v1/environments/production/customers", admin, `{"id":"","plan":"nope","refs":["u_1","u_1"]}`, 422)
	call("POST", cp, "/v1/environments/staging/customers", admin, `{"id":"x"}`, 409) // no policy there
	call("POST", cp, "/v1/environments/production/customers", field(sdk, "secret"), `{"id":"u_2"}`, 201)
	call("GET", cp, "/v1/environments/production/customers?limit=1", admin, "", 200)
	call("GET", cp, "/v1/environments/production/customers?limit=0", admin, "", 422)
	ci := cp + "/{id}"
	call("GET", ci, "/v1/environments/production/customers/cus_1", admin, "", 200)
	call("GET", ci, "/v1/environments/production/customers/nobody", admin, "", 404)
	call("PATCH", ci, "/v1/environments/production/customers/u_1", admin, `{"label":"Anne","metadata":{"x":1}}`, 200)
	call("PUT", ci+"/plan", "/v1/environments/production/customers/u_1/plan", admin, `{"plan":"base","overwrite_meters":true}`, 200)
	call("PUT", ci+"/overrides/{entitlement}", "/v1/environments/production/customers/u_1/overrides/ai_input", admin,
		`{"value":5,"expires_at":"2999-01-01T00:00:00Z","mode":"soft"}`, 200)
	call("PUT", ci+"/overrides/{entitlement}", "/v1/environments/production/customers/u_1/overrides/nope", admin, `{"value":5}`, 422)
	call("POST", ci+"/topups", "/v1/environments/production/customers/u_1/topups", admin, `{"topup":"monthly_included","price":"2.50"}`, 201)
	call("POST", ci+"/topups", "/v1/environments/production/customers/u_1/topups", admin, `{"topup":"monthly_included"}`, 201)
	vp := "/v1/environments/production/customers/u_1/voucher"
	call("GET", ci+"/voucher", vp, admin, "", 404) // none yet
	call("PUT", ci+"/voucher", vp, admin, `{"runes":"25.50","expires_at":"2999-01-01T00:00:00Z"}`, 200)
	call("PUT", ci+"/voucher", vp, field(sdk, "secret"), `{"runes":10,"expires_at":"2999-01-01T00:00:00Z"}`, 200)
	call("PUT", ci+"/voucher", vp, admin, `{"runes":"-1","expires_at":"2000-01-01T00:00:00Z"}`, 422)
	call("PUT", ci+"/voucher", "/v1/environments/production/customers/nobody/voucher", admin, `{"expires_at":"2999-01-01T00:00:00Z"}`, 404)
	call("GET", ci+"/voucher", vp, admin, "", 200)
	call("POST", cp, "/v1/environments/production/customers", admin, `{"id":"u_3","metadata":{"limitr_voucher":"V1","limitr_voucher_expires":32503680000000}}`, 201)
	call("DELETE", ci+"/voucher", "/v1/environments/production/customers/u_3/voucher", admin, "", 204)
	call("DELETE", ci+"/voucher", "/v1/environments/production/customers/u_3/voucher", admin, "", 404)
	kp := "/v1/environments/production/customers/u_1/caps"
	call("GET", ci+"/caps", kp, admin, "", 200) // none yet
	call("GET", ci+"/caps/{cap}", kp+"/monthly", admin, "", 404)
	call("PUT", ci+"/caps/{cap}", kp+"/monthly", admin, `{"value":"100.5","resets":true,"reset_inc":"30days","scope":["ai_input"],"expires_at":"2999-01-01T00:00:00Z"}`, 201)
	call("PUT", ci+"/caps/{cap}", kp+"/monthly", field(sdk, "secret"), `{"value":200,"credit":"usd","hard_trailing":true}`, 200)
	call("PUT", ci+"/caps/{cap}", kp+"/monthly", admin, `{"value":"-1","reset_inc":"1day","reset_sch":"monthly"}`, 422)
	call("PUT", ci+"/caps/{cap}", "/v1/environments/production/customers/nobody/caps/monthly", admin, `{"value":1}`, 404)
	call("PUT", ci+"/caps/{cap}", kp+"/spare", admin, `{"value":1}`, 201)
	call("POST", "/v1/sdk/usage", "/v1/sdk/usage", field(sdk, "secret"), `{"instance_id":"oa-caps","sequence":1,"deltas":[],
		"cap_uses":[{"customer":"u_1","cap_key":"cap_x","period_start":"2026-01-01T00:00:00Z","units":"1.5"},{"customer":"nobody","cap_key":"cap_y","period_start":"2026-01-01T00:00:00Z","units":"2"}]}`, 200)
	call("POST", "/v1/sdk/usage", "/v1/sdk/usage", field(sdk, "secret"), `{"instance_id":"oa-caps","sequence":2,"deltas":[],
		"cap_uses":[{"customer":"u_1","cap_key":"","units":"x"}]}`, 422)
	call("GET", ci+"/caps/{cap}", kp+"/monthly", admin, "", 200)
	call("GET", ci+"/caps", kp, admin, "", 200)
	call("POST", ci+"/caps/{cap}/reset", kp+"/monthly/reset", admin, "", 200)
	call("POST", ci+"/caps/{cap}/reset", kp+"/nope/reset", admin, "", 404)
	call("POST", ci+"/caps/{cap}/reset", kp+"/monthly/reset", admin, `{"x":1}`, 422)
	call("DELETE", ci+"/caps/{cap}", kp+"/spare", admin, "", 204)
	call("DELETE", ci+"/caps/{cap}", kp+"/spare", admin, "", 404)
	call("GET", "/v1/environments/{env}/usage/unattributed", "/v1/environments/production/usage/unattributed", admin, "", 200) // a cap_use
	// With overrides, topups, a voucher and caps.
	call("GET", ci, "/v1/environments/production/customers/u_1", admin, "", 200)
	call("DELETE", ci+"/overrides/{entitlement}", "/v1/environments/production/customers/u_1/overrides/ai_input", admin, "", 204)
	call("DELETE", ci+"/overrides/{entitlement}", "/v1/environments/production/customers/u_1/overrides/ai_input", admin, "", 404)
	call("GET", "/v1/sdk/customers/{id}/state", "/v1/sdk/customers/u_1/state", field(sdk, "secret"), "", 200)
	call("GET", "/v1/sdk/customers/{id}/state", "/v1/sdk/customers/nobody/state", field(sdk, "secret"), "", 404)
	call("POST", "/v1/sdk/usage", "/v1/sdk/usage", field(sdk, "secret"), secUsageBatch("u_1"), 200)
	call("POST", "/v1/sdk/usage", "/v1/sdk/usage", field(sdk, "secret"), secUsageBatch("u_1"), 200) // duplicate
	call("POST", "/v1/sdk/usage", "/v1/sdk/usage", field(sdk, "secret"), `{"instance_id":"","sequence":0,"deltas":[]}`, 422)
	call("POST", "/v1/sdk/usage", "/v1/sdk/usage", field(sdk, "secret"), `{"instance_id":"oa-vouchers","sequence":1,"deltas":[],
		"voucher_debits":[{"customer":"u_1","voucher_id":"vch_x","runes":"1.5"},{"customer":"nobody","voucher_id":"vch_y","runes":"2"}]}`, 200)
	call("POST", "/v1/sdk/usage", "/v1/sdk/usage", field(sdk, "secret"), `{"instance_id":"oa-vouchers","sequence":2,"deltas":[],
		"voucher_debits":[{"customer":"u_1","voucher_id":"","runes":"0"}]}`, 422)
	call("GET", "/v1/sdk/customers/{id}/state", "/v1/sdk/customers/u_1/state", field(sdk, "secret"), "", 200) // with meters
	call("POST", "/v1/sdk/leases", "/v1/sdk/leases", field(sdk, "secret"), secLeaseRequest("u_1"), 200)
	call("POST", "/v1/sdk/leases", "/v1/sdk/leases", field(sdk, "secret"), secLeaseRequest("nobody"), 200) // error: unknown_customer
	call("POST", "/v1/sdk/leases", "/v1/sdk/leases", field(sdk, "secret"), strings.Replace(secLeaseRequest("u_1"), `"entitlement":"ai_input"`, `"cap":"cap_x"`, 1), 200)
	call("POST", "/v1/sdk/leases", "/v1/sdk/leases", field(sdk, "secret"), strings.Replace(secLeaseRequest("u_1"), `"entitlement":"ai_input"`, `"entitlement":"ai_input","cap":"cap_x"`, 1), 422)
	call("POST", "/v1/sdk/leases", "/v1/sdk/leases", field(sdk, "secret"), `{"instance_id":"matrix-1","leases":[]}`, 422)
	call("POST", "/v1/sdk/leases", "/v1/sdk/leases", admin, secLeaseRequest("u_1"), 403)
	call("POST", "/v1/sdk/usage", "/v1/sdk/usage", field(sdk, "secret"), strings.Replace(secUsageBatch("u_1"), `"sequence":1,`, `"sequence":7,"leased":true,`, 1), 200)
	call("POST", "/v1/sdk/leases/return", "/v1/sdk/leases/return", field(sdk, "secret"), `{"instance_id":"matrix-1"}`, 204)
	call("POST", "/v1/sdk/leases/return", "/v1/sdk/leases/return", field(sdk, "secret"), `{"instance_id":"no such"}`, 422)
	ap := "/v1/environments/production/analytics"
	call("GET", "/v1/environments/{env}/analytics/margins", ap+"/margins?group_by=plan&interval=month&sort=-revenue", admin, "", 200)
	call("GET", "/v1/environments/{env}/analytics/margins", ap+"/margins?interval=week&from=yesterday", admin, "", 422)
	call("GET", "/v1/environments/{env}/analytics/usage", ap+"/usage?customer=u_1&interval=hour", admin, "", 200)
	call("GET", "/v1/environments/{env}/customers/{id}/margin", "/v1/environments/production/customers/u_1/margin", admin, "", 200)
	call("GET", "/v1/environments/{env}/customers/{id}/margin", "/v1/environments/production/customers/nobody/margin", admin, "", 404)
	call("DELETE", ci, "/v1/environments/production/customers/u_2", admin, "", 204)
	call("GET", ci, "/v1/environments/production/customers/u_1", field(sdk, "secret"), "", 200)
	call("GET", "/v1/audit", "/v1/audit?limit=200", admin, "", 200)
	call("GET", "/v1/audit", "/v1/audit?cursor=x", admin, "", 422)
}

// TestOpenAPILint checks what `make openapi-lint` (redocly) checks and the tests above
// do not: in OpenAPI 3.0, nullable only means something next to a type (a schema with
// nullable and no type, such as a bare oneOf, still rejects null), and the document
// states its license.
func TestOpenAPILint(t *testing.T) {
	doc := oaDoc(t)
	checked := 0
	var walk func(at string, v any)
	walk = func(at string, v any) {
		switch v := v.(type) {
		case map[string]any:
			// A bool "nullable" is the keyword; a property named "nullable" is an object.
			if _, ok := v["nullable"].(bool); ok {
				checked++
				if _, typed := v["type"].(string); !typed {
					t.Errorf("%s: nullable without a type: nullable has no effect there (put it on a typed alternative)", at)
				}
			}
			for k, e := range v {
				walk(at+"/"+strings.ReplaceAll(strings.ReplaceAll(k, "~", "~0"), "/", "~1"), e)
			}
		case []any:
			for i, e := range v {
				walk(at+"/"+strconv.Itoa(i), e)
			}
		}
	}
	walk("#", doc)
	if checked == 0 {
		t.Error("no nullable schema at all: the walk is broken")
	}
	info, _ := doc["info"].(map[string]any)
	license, _ := info["license"].(map[string]any)
	if name, _ := license["name"].(string); name == "" {
		t.Error("info.license.name is missing")
	}
}
