package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/limitr/limitr/internal/platform/pgtest"
	"github.com/limitr/limitr/internal/policies"
	"github.com/limitr/limitr/internal/policies/doctree"
	"github.com/limitr/limitr/internal/wire"
)

// polHarness is a server on a fresh database, driven through its HTTP handler.
type polHarness struct {
	t    testing.TB
	s    *Server
	pool *pgxpool.Pool
}

func newPolHarness(t testing.TB) *polHarness {
	t.Helper()
	return newPolHarnessConfig(t, Config{OperatorToken: "op"})
}

func newPolHarnessConfig(t testing.TB, cfg Config) *polHarness {
	t.Helper()
	_, pool := pgtest.NewMigrated(t)
	s, err := New(cfg, Deps{Pool: pool, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return &polHarness{t: t, s: s, pool: pool}
}

type polResp struct {
	Code   int
	Header http.Header
	Body   []byte
}

func (r polResp) obj(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.Body, &m); err != nil {
		t.Fatalf("response is not a JSON object (%d): %v: %s", r.Code, err, r.Body)
	}
	return m
}

// do sends a request; hdr is name, value pairs.
func (h *polHarness) do(method, path, key string, body []byte, hdr ...string) polResp {
	h.t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req := httptest.NewRequest(method, path, rd)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	h.s.Handler().ServeHTTP(rec, req)
	if rec.Code >= 500 {
		h.t.Errorf("%s %s: %d: %s", method, path, rec.Code, rec.Body.Bytes())
	}
	return polResp{Code: rec.Code, Header: rec.Header(), Body: rec.Body.Bytes()}
}

func (h *polHarness) want(r polResp, code int, what string) polResp {
	h.t.Helper()
	if r.Code != code {
		h.t.Fatalf("%s: status %d, want %d: %s", what, r.Code, code, r.Body)
	}
	return r
}

// tenant bootstraps a tenant and returns its first admin key.
func (h *polHarness) tenant(slug string) string {
	h.t.Helper()
	r := h.want(h.do("POST", "/v1/tenants", "op", []byte(`{"slug":"`+slug+`"}`), "Content-Type", "application/json"), 201, "bootstrap")
	return r.obj(h.t)["secret"].(string)
}

// key creates a key and returns its secret and id.
func (h *polHarness) key(admin, body string) (string, string) {
	h.t.Helper()
	r := h.want(h.do("POST", "/v1/keys", admin, []byte(body), "Content-Type", "application/json"), 201, "create key")
	m := r.obj(h.t)
	return m["secret"].(string), m["id"].(string)
}

func (h *polHarness) create(admin string, src []byte, contentType string) map[string]any {
	h.t.Helper()
	r := h.do("POST", "/v1/policies", admin, src, "Content-Type", contentType)
	if r.Code != 201 {
		h.t.Fatalf("create: %d: %s", r.Code, r.Body)
	}
	return r.obj(h.t)
}

func (h *polHarness) publish(admin, env string, version int) map[string]any {
	h.t.Helper()
	body, _ := json.Marshal(map[string]int{"version": version})
	return h.want(h.do("POST", "/v1/environments/"+env+"/publish", admin, body, "Content-Type", "application/json"), 200, "publish").obj(h.t)
}

func polExample(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("../../examples/policies/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func polHash(t *testing.T, src []byte, f doctree.Format) string {
	t.Helper()
	p, err := policies.Load(src, f)
	if err != nil {
		t.Fatal(err)
	}
	return p.Hash
}

func polNum(v any) int { f, _ := v.(float64); return int(f) }

func TestPolicyCreate(t *testing.T) {
	h := newPolHarness(t)
	admin := h.tenant("acme")

	seats := polExample(t, "seats.yaml")
	seatsDoc, err := policies.Parse(seats, doctree.FormatYAML)
	if err != nil {
		t.Fatal(err)
	}
	seatsTOML, err := policies.Encode(seatsDoc, doctree.FormatTOML)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, file, contentType, query, wantFormat string
		src                                        []byte
	}{
		{name: "json", file: "quickstart-ai.json", contentType: "application/json", wantFormat: "json"},
		{name: "yaml", file: "ai-credits.yaml", contentType: "application/yaml", wantFormat: "yaml"},
		{name: "toml", src: seatsTOML, contentType: "application/toml", wantFormat: "toml"},
		{name: "detect", file: "storage-units.json", wantFormat: "json"},
		{name: "x-yaml", file: "seats.yaml", contentType: "application/x-yaml; charset=utf-8", wantFormat: "yaml"},
		{name: "query wins", file: "ai-credits.yaml", contentType: "text/plain", query: "?format=yaml", wantFormat: "yaml"},
	}
	last := 0
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := tc.src
			if src == nil {
				src = polExample(t, tc.file)
			}
			// Make every case a distinct policy so each creates a version.
			if tc.name == "x-yaml" || tc.name == "query wins" {
				src = append(append([]byte{}, src...), []byte("\n  timezone: Europe/"+strings.ToUpper(tc.name[:1])+"\n")...)
				src = bytes.Replace(src, []byte("Europe/X"), []byte("Europe/Paris"), 1)
				src = bytes.Replace(src, []byte("Europe/Q"), []byte("Europe/Berlin"), 1)
			}
			var hdr []string
			if tc.contentType != "" {
				hdr = []string{"Content-Type", tc.contentType}
			}
			r := h.do("POST", "/v1/policies"+tc.query, admin, src, hdr...)
			if r.Code != 201 {
				t.Fatalf("status %d: %s", r.Code, r.Body)
			}
			m := r.obj(t)
			f, _ := doctree.ParseFormat(tc.wantFormat)
			if m["format"] != tc.wantFormat || m["hash"] != polHash(t, src, f) || polNum(m["number"]) != last+1 {
				t.Errorf("got %v", m)
			}
			last = polNum(m["number"])
			if m["created_by"] == nil || m["created_at"] == nil || m["id"] == nil {
				t.Errorf("missing metadata: %v", m)
			}
			if got := r.Header.Get("Location"); got != "/v1/policies/"+strconv.Itoa(last) {
				t.Errorf("Location = %q", got)
			}
		})
	}

	t.Run("same policy as the newest version returns it", func(t *testing.T) {
		// The newest is ai-credits.yaml + timezone; the same document as JSON is the
		// same policy.
		var latest struct{ Document json.RawMessage }
		if err := json.Unmarshal(h.want(h.do("GET", "/v1/policies/"+strconv.Itoa(last), admin, nil), 200, "get").Body, &latest); err != nil {
			t.Fatal(err)
		}
		doc := latest.Document
		r := h.want(h.do("POST", "/v1/policies", admin, doc, "Content-Type", "application/json"), 200, "re-create")
		if m := r.obj(t); polNum(m["number"]) != last || m["format"] != "yaml" {
			t.Errorf("got %v", m)
		}
		// An older version's document is a change from the newest: a new version.
		r = h.want(h.do("POST", "/v1/policies", admin, polExample(t, "seats.yaml"), "Content-Type", "application/yaml"), 201, "old doc")
		last = polNum(r.obj(t)["number"])
	})

	t.Run("every problem is reported with its path", func(t *testing.T) {
		src := `
policy:
  credits:
    seat: { stof_units: bogus }
  plans:
    free:
      bogus_field: 1
      entitlements:
        seats:
          limit: { credit: missing, value: -1, mode: sometimes }
`
		r := h.want(h.do("POST", "/v1/policies", admin, []byte(src), "Content-Type", "application/yaml"), 422, "invalid")
		if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/problem+json") {
			t.Errorf("Content-Type %q", ct)
		}
		var p struct {
			Status int
			Errors []struct{ Path, Message string }
		}
		if err := json.Unmarshal(r.Body, &p); err != nil {
			t.Fatal(err)
		}
		want := []string{
			"policy.plans.free.bogus_field",
			"policy.credits.seat.stof_units",
			"policy.plans.free.entitlements.seats.limit.credit",
			"policy.plans.free.entitlements.seats.limit.mode",
			"policy.plans.free.entitlements.seats.limit.value",
		}
		got := map[string]bool{}
		for _, e := range p.Errors {
			got[e.Path] = true
			if e.Message == "" {
				t.Errorf("%s: empty message", e.Path)
			}
		}
		for _, w := range want {
			if !got[w] {
				t.Errorf("missing %s in %s", w, r.Body)
			}
		}
	})

	bad := []struct {
		name, body, contentType, query string
		code                           int
	}{
		{"malformed json", `{"policy": {`, "application/json", "", 422},
		{"yaml declared, json sent broken", "policy: [", "application/yaml", "", 422},
		{"empty", "  \n", "application/json", "", 400},
		{"unsupported type", `{"policy":{}}`, "application/xml", "", 415},
		{"bad content-type", `{"policy":{}}`, "a/b/c;;", "", 415},
		{"bad format query", `{"policy":{}}`, "", "?format=xml", 422},
		{"not a policy", `[1,2,3]`, "application/json", "", 422},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			var hdr []string
			if tc.contentType != "" {
				hdr = []string{"Content-Type", tc.contentType}
			}
			r := h.do("POST", "/v1/policies"+tc.query, admin, []byte(tc.body), hdr...)
			if r.Code != tc.code {
				t.Errorf("status %d, want %d: %s", r.Code, tc.code, r.Body)
			}
		})
	}
	t.Run("oversized", func(t *testing.T) {
		big := bytes.Repeat([]byte("#"), 2<<20)
		if r := h.do("POST", "/v1/policies", admin, big, "Content-Type", "application/yaml"); r.Code != 413 {
			t.Errorf("status %d", r.Code)
		}
	})
	// Nothing invalid was stored.
	list := h.want(h.do("GET", "/v1/policies?limit=200", admin, nil), 200, "list").obj(t)
	if n := len(list["data"].([]any)); n != last {
		t.Errorf("%d versions, want %d", n, last)
	}
}

func TestPolicyListGetSource(t *testing.T) {
	h := newPolHarness(t)
	admin := h.tenant("acme")
	files := []struct{ name, ct string }{{"seats.yaml", "application/yaml"}, {"quickstart-ai.json", "application/json"}, {"ai-credits.yaml", "application/yaml"}}
	hashes := map[int]string{}
	for i, f := range files {
		m := h.create(admin, polExample(t, f.name), f.ct)
		hashes[i+1] = m["hash"].(string)
	}
	h.publish(admin, "production", 1)
	h.publish(admin, "staging", 1)
	h.publish(admin, "production", 2)

	t.Run("list newest first with publications and cursor", func(t *testing.T) {
		r := h.want(h.do("GET", "/v1/policies?limit=2", admin, nil), 200, "list").obj(t)
		data := r["data"].([]any)
		if len(data) != 2 || polNum(data[0].(map[string]any)["number"]) != 3 || polNum(data[1].(map[string]any)["number"]) != 2 {
			t.Fatalf("page 1: %v", r)
		}
		if r["next_cursor"] != "2" {
			t.Fatalf("next_cursor = %v", r["next_cursor"])
		}
		v2 := data[1].(map[string]any)
		pubs := v2["publications"].([]any)
		if len(pubs) != 1 || pubs[0].(map[string]any)["environment"] != "production" || pubs[0].(map[string]any)["action"] != "publish" ||
			pubs[0].(map[string]any)["published_by"] == nil || pubs[0].(map[string]any)["published_at"] == nil {
			t.Errorf("v2 publications: %v", pubs)
		}
		if v := data[0].(map[string]any); len(v["publications"].([]any)) != 0 || v["document"] != nil || v["created_by"] == nil {
			t.Errorf("v3: %v", v)
		}
		r = h.want(h.do("GET", "/v1/policies?limit=2&cursor=2", admin, nil), 200, "page 2").obj(t)
		data = r["data"].([]any)
		if len(data) != 1 || polNum(data[0].(map[string]any)["number"]) != 1 || r["next_cursor"] != nil {
			t.Fatalf("page 2: %v", r)
		}
		if pubs := data[0].(map[string]any)["publications"].([]any); len(pubs) != 2 {
			t.Errorf("v1 publications: %v", pubs)
		}
		for _, q := range []string{"?cursor=abc", "?cursor=-1", "?limit=0", "?limit=1000", "?cursor=1%27%20or%201=1"} {
			if r := h.do("GET", "/v1/policies"+q, admin, nil); r.Code != 422 {
				t.Errorf("%s: %d", q, r.Code)
			}
		}
	})

	t.Run("get", func(t *testing.T) {
		r := h.want(h.do("GET", "/v1/policies/2", admin, nil), 200, "get")
		var m struct {
			Number       int
			Hash         string
			Format       string
			Document     json.RawMessage
			Publications []map[string]any
		}
		if err := json.Unmarshal(r.Body, &m); err != nil {
			t.Fatal(err)
		}
		if m.Number != 2 || m.Hash != hashes[2] || m.Format != "json" || len(m.Publications) != 1 {
			t.Errorf("got %+v", m)
		}
		// The document is the canonical form: its hash is the version hash.
		if got := polHash(t, m.Document, doctree.FormatJSON); got != hashes[2] {
			t.Errorf("document hash %s", got)
		}
		if !bytes.HasPrefix(bytes.TrimSpace(m.Document), []byte(`{"policy"`)) && !bytes.HasPrefix(bytes.TrimSpace(m.Document), []byte("{\n")) {
			t.Errorf("document is not an object: %.40s", m.Document)
		}
	})

	t.Run("source as uploaded and re-encoded", func(t *testing.T) {
		r := h.want(h.do("GET", "/v1/policies/1/source", admin, nil), 200, "source")
		if !bytes.Equal(r.Body, polExample(t, "seats.yaml")) || r.Header.Get("Content-Type") != "application/yaml" {
			t.Errorf("source: %q %s", r.Header.Get("Content-Type"), r.Body)
		}
		r = h.want(h.do("GET", "/v1/policies/2/source", admin, nil), 200, "source json")
		if !bytes.Equal(r.Body, polExample(t, "quickstart-ai.json")) || r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("source: %q", r.Header.Get("Content-Type"))
		}
		for _, f := range []string{"json", "yaml", "toml"} {
			r := h.want(h.do("GET", "/v1/policies/3/source?format="+f, admin, nil), 200, "re-encode "+f)
			ff, _ := doctree.ParseFormat(f)
			if got := polHash(t, r.Body, ff); got != hashes[3] {
				t.Errorf("%s: re-encoded hash %s, want %s", f, got, hashes[3])
			}
			if ct := r.Header.Get("Content-Type"); ct != "application/"+f {
				t.Errorf("%s: Content-Type %q", f, ct)
			}
		}
		if r := h.do("GET", "/v1/policies/3/source?format=xml", admin, nil); r.Code != 422 {
			t.Errorf("bad format: %d", r.Code)
		}
	})

	t.Run("bad numbers are 404s", func(t *testing.T) {
		for _, n := range []string{"0", "-1", "abc", "4", "99999999999", "2147483648", "1%27%20OR%20%271%27=%271", "1;DROP%20TABLE%20policy_versions", strings.Repeat("9", 300), "1.5", "%00"} {
			for _, suffix := range []string{"", "/source"} {
				if r := h.do("GET", "/v1/policies/"+n+suffix, admin, nil); r.Code != 404 {
					t.Errorf("%s%s: %d %s", n, suffix, r.Code, r.Body)
				}
			}
		}
	})
}

func TestPolicyPublishAndActive(t *testing.T) {
	h := newPolHarness(t)
	admin := h.tenant("acme")
	prodSDK, _ := h.key(admin, `{"kind":"sdk","environment":"production"}`)
	stagingSDK, _ := h.key(admin, `{"kind":"sdk","environment":"staging"}`)
	v1 := h.create(admin, polExample(t, "seats.yaml"), "application/yaml")
	h.create(admin, polExample(t, "storage-units.json"), "application/json")

	// Nothing published yet.
	for _, k := range []string{admin, prodSDK} {
		if r := h.do("GET", "/v1/environments/production/policy", k, nil); r.Code != 404 {
			t.Errorf("before publish: %d", r.Code)
		}
	}
	if r := h.do("GET", "/v1/sdk/policy", prodSDK, nil); r.Code != 404 {
		t.Errorf("sdk before publish: %d", r.Code)
	}

	// Follow the wake-ups a publish sends.
	envID := h.envID(admin, "production")
	tenantID := h.tenantID(admin)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wake := h.s.bus.Subscribe(ctx, wire.ChangesChannel(tenantID, envID))
	time.Sleep(10 * time.Millisecond)

	out := h.publish(admin, "production", 1)
	if out["changed"] != true || polNum(out["version"]) != 1 || out["hash"] != v1["hash"] || out["previous_version"] != nil || out["environment"] != "production" {
		t.Fatalf("publish: %v", out)
	}
	pub := out["publication"].(map[string]any)
	if pub["action"] != "publish" || polNum(pub["version"]) != 1 || pub["published_by"] == nil {
		t.Errorf("publication: %v", pub)
	}
	select {
	case msg := <-wake:
		var changeID int64
		if err := h.pool.QueryRow(context.Background(), `select max(id) from change_feed where kind = 'policy'`).Scan(&changeID); err != nil {
			t.Fatal(err)
		}
		if string(msg) != strconv.Itoa(int(changeID)) {
			t.Errorf("wake-up %q, want change id %d", msg, changeID)
		}
	case <-time.After(2 * time.Second):
		t.Error("no wake-up on the bus")
	}

	t.Run("change feed and audit in the publish transaction", func(t *testing.T) {
		// now() is the transaction's start time: equal timestamps on the three rows
		// show they were written by one transaction.
		var kind, subject string
		var payload map[string]any
		var feedAt, pubAt, auditAt time.Time
		err := h.pool.QueryRow(context.Background(), `select c.kind, c.subject, c.payload, c.created_at, p.published_at, a.at
			from change_feed c, policy_publications p, audit_log a
			where c.environment_id = $1 and p.environment_id = $1 and a.action = 'policy.publish'`, envID).
			Scan(&kind, &subject, &payload, &feedAt, &pubAt, &auditAt)
		if err != nil {
			t.Fatal(err)
		}
		if kind != "policy" || subject != "1" || polNum(payload["version"]) != 1 || payload["hash"] != v1["hash"] {
			t.Errorf("change: %s %s %v", kind, subject, payload)
		}
		if !feedAt.Equal(pubAt) || !auditAt.Equal(pubAt) {
			t.Errorf("not one transaction: feed %v, publication %v, audit %v", feedAt, pubAt, auditAt)
		}
	})

	var etag string
	t.Run("active policy with ETag", func(t *testing.T) {
		for _, c := range []struct{ key, path string }{
			{admin, "/v1/environments/production/policy"},
			{prodSDK, "/v1/environments/production/policy"},
			{prodSDK, "/v1/sdk/policy"},
		} {
			r := h.want(h.do("GET", c.path, c.key, nil), 200, c.path)
			sum := sha256.Sum256(r.Body)
			etag = r.Header.Get("ETag")
			if etag != `"`+v1["hash"].(string)+`"` || etag != `"`+hex.EncodeToString(sum[:])+`"` {
				t.Errorf("ETag %s, body hash %x, version hash %s", etag, sum, v1["hash"])
			}
			if r.Header.Get(HeaderPolicyVersion) != "1" || !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
				t.Errorf("headers: %v", r.Header)
			}
			var doc map[string]any
			if err := json.Unmarshal(r.Body, &doc); err != nil || doc["policy"] == nil {
				t.Errorf("body: %s", r.Body)
			}
		}
	})

	t.Run("If-None-Match", func(t *testing.T) {
		hash := strings.Trim(etag, `"`)
		for _, inm := range []string{etag, "W/" + etag, "*", `"nope", ` + etag, hash} {
			for _, path := range []string{"/v1/environments/production/policy", "/v1/sdk/policy"} {
				r := h.do("GET", path, prodSDK, nil, "If-None-Match", inm)
				if r.Code != 304 || len(r.Body) != 0 || r.Header.Get("ETag") != etag || r.Header.Get(HeaderPolicyVersion) != "1" {
					t.Errorf("%s %s: %d %q %v", path, inm, r.Code, r.Body, r.Header)
				}
			}
		}
		for _, inm := range []string{`"nope"`, `W/"` + hash[:10] + `"`, `""`} {
			if r := h.do("GET", "/v1/sdk/policy", prodSDK, nil, "If-None-Match", inm); r.Code != 200 {
				t.Errorf("%s: %d", inm, r.Code)
			}
		}
	})

	t.Run("publishing the active version is a no-op", func(t *testing.T) {
		out := h.publish(admin, "production", 1)
		if out["changed"] != false || out["publication"] != nil || polNum(out["previous_version"]) != 1 {
			t.Errorf("got %v", out)
		}
		var n int
		_ = h.pool.QueryRow(context.Background(), `select count(*) from policy_publications`).Scan(&n)
		var feed int
		_ = h.pool.QueryRow(context.Background(), `select count(*) from change_feed`).Scan(&feed)
		if n != 1 || feed != 1 {
			t.Errorf("%d publications, %d changes", n, feed)
		}
	})

	t.Run("a new version changes the ETag", func(t *testing.T) {
		out := h.publish(admin, "production", 2)
		if out["changed"] != true || polNum(out["previous_version"]) != 1 {
			t.Fatalf("got %v", out)
		}
		r := h.want(h.do("GET", "/v1/sdk/policy", prodSDK, nil, "If-None-Match", etag), 200, "stale etag")
		if r.Header.Get("ETag") == etag || r.Header.Get(HeaderPolicyVersion) != "2" {
			t.Errorf("headers %v", r.Header)
		}
	})

	t.Run("SDK keys are bound to their environment", func(t *testing.T) {
		if r := h.do("GET", "/v1/environments/production/policy", stagingSDK, nil); r.Code != 403 {
			t.Errorf("staging key on production: %d", r.Code)
		}
		if r := h.do("GET", "/v1/environments/production/policy", stagingSDK, nil, "If-None-Match", "*"); r.Code != 403 {
			t.Errorf("staging key on production with *: %d", r.Code)
		}
		if r := h.do("GET", "/v1/sdk/policy", stagingSDK, nil); r.Code != 404 {
			t.Errorf("staging has nothing published: %d", r.Code)
		}
		if r := h.do("GET", "/v1/sdk/policy", admin, nil); r.Code != 403 {
			t.Errorf("admin on sdk path: %d", r.Code)
		}
	})

	t.Run("bad input", func(t *testing.T) {
		cases := []struct {
			method, path, body string
			code               int
		}{
			{"POST", "/v1/environments/production/publish", `{"version": 99}`, 404},
			{"POST", "/v1/environments/production/publish", `{"version": 0}`, 422},
			{"POST", "/v1/environments/production/publish", `{}`, 422},
			{"POST", "/v1/environments/production/publish", `{"version": "1"}`, 422},
			{"POST", "/v1/environments/production/publish", `{"version": 1, "force": true}`, 422},
			{"POST", "/v1/environments/production/publish", `{"version": 1.5}`, 422},
			{"POST", "/v1/environments/production/publish", `{"version": 99999999999999}`, 422},
			{"POST", "/v1/environments/production/publish", `not json`, 400},
			{"POST", "/v1/environments/production/publish", ``, 400},
			{"POST", "/v1/environments/nope/publish", `{"version": 1}`, 404},
			{"POST", "/v1/environments/prod%27%3B--/publish", `{"version": 1}`, 404},
			{"POST", "/v1/environments/" + strings.Repeat("p", 300) + "/publish", `{"version": 1}`, 404},
			{"POST", "/v1/environments/production/rollback", `{"version": "x"}`, 422},
			{"POST", "/v1/environments/production/rollback", `{"version": -3}`, 422},
			{"POST", "/v1/environments/production/rollback", `[`, 400},
			{"GET", "/v1/environments/nope/policy", "", 404},
			{"GET", "/v1/environments/prod%27%20or%201=1/policy", "", 404},
			{"GET", "/v1/environments/" + strings.Repeat("p", 300) + "/policy", "", 404},
			{"GET", "/v1/environments/nope/publications", "", 404},
			{"GET", "/v1/environments/production/publications?cursor=x", "", 422},
		}
		for _, c := range cases {
			var body []byte
			if c.method == "POST" {
				body = []byte(c.body)
			}
			if r := h.do(c.method, c.path, admin, body, "Content-Type", "application/json"); r.Code != c.code {
				t.Errorf("%s %.60s %s: %d, want %d: %s", c.method, c.path, c.body, r.Code, c.code, r.Body)
			}
		}
		// None of it changed what production serves.
		r := h.want(h.do("GET", "/v1/sdk/policy", prodSDK, nil), 200, "after bad input")
		if r.Header.Get(HeaderPolicyVersion) != "2" {
			t.Errorf("active version %s", r.Header.Get(HeaderPolicyVersion))
		}
	})
}

func (h *polHarness) envID(admin, name string) string {
	h.t.Helper()
	r := h.want(h.do("GET", "/v1/environments", admin, nil), 200, "environments").obj(h.t)
	for _, e := range r["data"].([]any) {
		if m := e.(map[string]any); m["name"] == name {
			return m["id"].(string)
		}
	}
	h.t.Fatalf("no environment %s", name)
	return ""
}

func (h *polHarness) tenantID(admin string) string {
	h.t.Helper()
	return h.want(h.do("GET", "/v1/tenant", admin, nil), 200, "tenant").obj(h.t)["id"].(string)
}

func TestPolicyRollback(t *testing.T) {
	h := newPolHarness(t)
	admin := h.tenant("acme")
	sdk, _ := h.key(admin, `{"kind":"sdk","environment":"production"}`)
	for _, f := range []string{"seats.yaml", "storage-units.json", "ai-credits.yaml", "quickstart-ai.json"} {
		ct := "application/yaml"
		if strings.HasSuffix(f, ".json") {
			ct = "application/json"
		}
		h.create(admin, polExample(t, f), ct)
	}
	active := func() string {
		t.Helper()
		return h.want(h.do("GET", "/v1/sdk/policy", sdk, nil), 200, "active").Header.Get(HeaderPolicyVersion)
	}
	rollback := func(env, body string, code int) map[string]any {
		t.Helper()
		var b []byte
		if body != "" {
			b = []byte(body)
		}
		r := h.want(h.do("POST", "/v1/environments/"+env+"/rollback", admin, b, "Content-Type", "application/json"), code, "rollback "+body)
		return r.obj(t)
	}

	// Nothing published: nothing to roll back to.
	rollback("production", "", 409)
	h.publish(admin, "production", 1)
	// One version ever: still nothing.
	p := rollback("production", "", 409)
	if p["detail"] == nil || p["status"] != 409.0 {
		t.Errorf("problem: %v", p)
	}
	h.publish(admin, "production", 2)
	h.publish(admin, "production", 3)

	out := rollback("production", "", 200)
	if polNum(out["version"]) != 2 || polNum(out["previous_version"]) != 3 || out["changed"] != true ||
		out["publication"].(map[string]any)["action"] != "rollback" {
		t.Fatalf("default rollback: %v", out)
	}
	if a := active(); a != "2" {
		t.Fatalf("active %s after rollback", a)
	}
	// Rolling back again undoes the rollback.
	if out := rollback("production", "{}", 200); polNum(out["version"]) != 3 {
		t.Fatalf("second rollback: %v", out)
	}
	// Explicit: any version that was active here before.
	if out := rollback("production", `{"version": 1}`, 200); polNum(out["version"]) != 1 || polNum(out["previous_version"]) != 3 {
		t.Fatalf("explicit rollback: %v", out)
	}
	if a := active(); a != "1" {
		t.Fatalf("active %s after explicit rollback", a)
	}
	// To the active version: a no-op.
	if out := rollback("production", `{"version": 1}`, 200); out["changed"] != false {
		t.Errorf("rollback to active: %v", out)
	}
	// Never published here: publish it instead.
	rollback("production", `{"version": 4}`, 409)
	// No such version.
	rollback("production", `{"version": 40}`, 404)
	// Staging never had anything.
	rollback("staging", "", 409)
	rollback("staging", `{"version": 1}`, 409)

	t.Run("publication history", func(t *testing.T) {
		r := h.want(h.do("GET", "/v1/environments/production/publications", admin, nil), 200, "history").obj(t)
		var got []string
		for _, d := range r["data"].([]any) {
			m := d.(map[string]any)
			got = append(got, m["action"].(string)+":"+strconv.Itoa(polNum(m["version"])))
			if m["environment"] != "production" || m["published_by"] == nil || m["published_at"] == nil || m["hash"] == nil {
				t.Errorf("publication: %v", m)
			}
		}
		want := "rollback:1 rollback:3 rollback:2 publish:3 publish:2 publish:1"
		if strings.Join(got, " ") != want {
			t.Errorf("history %v, want %s", got, want)
		}
		r = h.want(h.do("GET", "/v1/environments/production/publications?limit=4", admin, nil), 200, "page 1").obj(t)
		next, _ := r["next_cursor"].(string)
		if len(r["data"].([]any)) != 4 || next == "" {
			t.Fatalf("page 1: %v", r)
		}
		r = h.want(h.do("GET", "/v1/environments/production/publications?limit=4&cursor="+next, admin, nil), 200, "page 2").obj(t)
		if len(r["data"].([]any)) != 2 || r["next_cursor"] != nil {
			t.Errorf("page 2: %v", r)
		}
		r = h.want(h.do("GET", "/v1/environments/staging/publications", admin, nil), 200, "staging").obj(t)
		if len(r["data"].([]any)) != 0 {
			t.Errorf("staging: %v", r)
		}
	})

	t.Run("audit", func(t *testing.T) {
		r := h.want(h.do("GET", "/v1/audit?limit=200", admin, nil), 200, "audit").obj(t)
		counts := map[string]int{}
		for _, d := range r["data"].([]any) {
			m := d.(map[string]any)
			counts[m["action"].(string)]++
			switch m["action"] {
			case "policy.create":
				if m["resource"] != "policy" || m["after"].(map[string]any)["hash"] == nil || m["actor_key_id"] == nil {
					t.Errorf("create entry: %v", m)
				}
			case "policy.publish", "policy.rollback":
				after := m["after"].(map[string]any)
				if after["version"] == nil || after["hash"] == nil || m["resource_id"] != "production" || m["environment_id"] == nil {
					t.Errorf("publish entry: %v", m)
				}
				if polNum(after["version"]) == 3 && m["action"] == "policy.publish" && polNum(m["before"].(map[string]any)["version"]) != 2 {
					t.Errorf("publish 3 before: %v", m["before"])
				}
			}
		}
		if counts["policy.create"] != 4 || counts["policy.publish"] != 3 || counts["policy.rollback"] != 3 {
			t.Errorf("audit counts %v", counts)
		}
	})
}

func TestPolicyDiff(t *testing.T) {
	h := newPolHarness(t)
	admin := h.tenant("acme")
	src := polExample(t, "ai-credits.yaml")
	h.create(admin, src, "application/yaml")
	changed := bytes.Replace(src, []byte("value: 100_000"), []byte("value: 250_000"), 1)
	changed = bytes.Replace(changed, []byte("        pdf_export: {}\n"), nil, 1)
	changed = bytes.Replace(changed, []byte("  notifications:"), []byte("    team:\n      entitlements:\n        seats:\n          limit: { credit: seat, value: 100 }\n  notifications:"), 1)
	h.create(admin, changed, "application/yaml")
	// The same policy as JSON: a new version (v2 is newer), no structural change from v1.
	doc, err := policies.Parse(src, doctree.FormatYAML)
	if err != nil {
		t.Fatal(err)
	}
	asJSON, _ := policies.Encode(doc, doctree.FormatJSON)
	h.create(admin, asJSON, "application/json")

	r := h.want(h.do("GET", "/v1/policies/diff?from=1&to=2", admin, nil), 200, "diff")
	var d struct {
		From, To struct {
			Number int
			Hash   string
		}
		Empty bool
		Plans struct {
			Added   []string
			Removed []string
			Changed map[string]struct {
				Entitlements struct {
					Added, Removed []string
					Changed        map[string]struct {
						Limit map[string]struct{ From, To json.RawMessage }
					}
				}
			}
		}
		Credits       map[string]any
		Exchange      map[string]any
		Notifications map[string]any
		Policy        map[string]any
	}
	if err := json.Unmarshal(r.Body, &d); err != nil {
		t.Fatal(err)
	}
	if d.From.Number != 1 || d.To.Number != 2 || d.From.Hash == d.To.Hash || d.Empty {
		t.Errorf("header: %s", r.Body)
	}
	if len(d.Plans.Added) != 1 || d.Plans.Added[0] != "team" || len(d.Plans.Removed) != 0 {
		t.Errorf("plans: %s", r.Body)
	}
	base := d.Plans.Changed["base"].Entitlements
	if len(base.Removed) != 1 || base.Removed[0] != "pdf_export" {
		t.Errorf("entitlements removed: %s", r.Body)
	}
	if v := base.Changed["ai_input"].Limit["value"]; string(v.From) != "100000" || string(v.To) != "250000" {
		t.Errorf("limit value: %s", r.Body)
	}
	if len(base.Changed) != 1 {
		t.Errorf("only ai_input changed: %s", r.Body)
	}
	if d.Credits == nil || d.Exchange == nil || d.Notifications == nil || d.Policy == nil {
		t.Errorf("sections missing: %s", r.Body)
	}

	r = h.want(h.do("GET", "/v1/policies/diff?from=1&to=3", admin, nil), 200, "same policy")
	if m := r.obj(t); m["empty"] != true {
		t.Errorf("v1 → v3: %s", r.Body)
	}
	r = h.want(h.do("GET", "/v1/policies/diff?from=2&to=1", admin, nil), 200, "reverse")
	if !strings.Contains(string(r.Body), `"removed":["team"]`) {
		t.Errorf("reverse: %s", r.Body)
	}
	for q, code := range map[string]int{
		"":                       422,
		"?from=1":                422,
		"?from=x&to=2":           422,
		"?from=1&to=0":           422,
		"?from=1&to=9":           404,
		"?from=1%27--&to=2":      422,
		"?from=99999999999&to=1": 422,
	} {
		if r := h.do("GET", "/v1/policies/diff"+q, admin, nil); r.Code != code {
			t.Errorf("%s: %d, want %d: %s", q, r.Code, code, r.Body)
		}
	}
}

// TestPolicyAccess tries every policy endpoint with another tenant's admin key, SDK
// keys, a revoked key, a malformed key and no key.
func TestPolicyAccess(t *testing.T) {
	h := newPolHarness(t)
	admin := h.tenant("acme")
	v1 := h.create(admin, polExample(t, "seats.yaml"), "application/yaml")
	v2 := h.create(admin, polExample(t, "storage-units.json"), "application/json")
	h.publish(admin, "production", 1)
	h.publish(admin, "production", 2)
	prodSDK, _ := h.key(admin, `{"kind":"sdk","environment":"production"}`)
	stagingSDK, _ := h.key(admin, `{"kind":"sdk","environment":"staging"}`)
	revoked, revokedID := h.key(admin, `{"kind":"admin"}`)
	h.want(h.do("DELETE", "/v1/keys/"+revokedID, admin, nil), 200, "revoke")
	revokedSDK, revokedSDKID := h.key(admin, `{"kind":"sdk","environment":"production"}`)
	h.want(h.do("DELETE", "/v1/keys/"+revokedSDKID, admin, nil), 200, "revoke sdk")

	other := h.tenant("globex")
	otherSDK, _ := h.key(other, `{"kind":"sdk","environment":"production"}`)
	secrets := []string{v1["hash"].(string), v2["hash"].(string), v1["id"].(string), v2["id"].(string), v1["created_by"].(string)}

	type endpoint struct{ method, path, body string }
	endpoints := []endpoint{
		{"POST", "/v1/policies", `{"policy":{"credits":{"seat":{}},"plans":{"free":{"entitlements":{"seats":{"limit":{"credit":"seat","value":1}}}}}}}`},
		{"GET", "/v1/policies", ""},
		{"GET", "/v1/policies/1", ""},
		{"GET", "/v1/policies/1/source", ""},
		{"GET", "/v1/policies/diff?from=1&to=2", ""},
		{"POST", "/v1/environments/production/publish", `{"version": 1}`},
		{"POST", "/v1/environments/production/rollback", `{"version": 1}`},
		{"GET", "/v1/environments/production/policy", ""},
		{"GET", "/v1/environments/production/publications", ""},
		{"GET", "/v1/sdk/policy", ""},
	}
	check := func(t *testing.T, e endpoint, key string, want ...int) {
		t.Helper()
		var body []byte
		if e.method == "POST" {
			body = []byte(e.body)
		}
		r := h.do(e.method, e.path, key, body, "Content-Type", "application/json")
		ok := false
		for _, w := range want {
			ok = ok || r.Code == w
		}
		if !ok {
			t.Errorf("%s %s: %d, want %v: %s", e.method, e.path, r.Code, want, r.Body)
		}
		for _, s := range secrets {
			if strings.Contains(string(r.Body), s) {
				t.Errorf("%s %s leaks %s: %s", e.method, e.path, s, r.Body)
			}
		}
	}

	t.Run("no key, malformed key, revoked keys", func(t *testing.T) {
		for _, e := range endpoints {
			for _, k := range []string{"", "garbage", "lk_admin_short", revoked, revokedSDK, admin + "x"} {
				check(t, e, k, 401)
			}
		}
	})
	t.Run("SDK keys only read their environment's policy", func(t *testing.T) {
		for _, e := range endpoints {
			switch e.path {
			case "/v1/environments/production/policy":
				check(t, e, stagingSDK, 403)
			case "/v1/sdk/policy":
				check(t, e, stagingSDK, 404) // staging has nothing published
			default:
				check(t, e, prodSDK, 403)
				check(t, e, stagingSDK, 403)
			}
		}
	})
	t.Run("another tenant sees none of it", func(t *testing.T) {
		for _, e := range endpoints {
			switch {
			case e.path == "/v1/policies" && e.method == "GET":
				r := h.want(h.do("GET", e.path, other, nil), 200, "other list")
				if !strings.Contains(string(r.Body), `"data":[]`) {
					t.Errorf("other tenant's list: %s", r.Body)
				}
				check(t, e, other, 200)
			case e.path == "/v1/environments/production/publications":
				// Its own production: empty.
				r := h.want(h.do("GET", e.path, other, nil), 200, "other publications")
				if !strings.Contains(string(r.Body), `"data":[]`) {
					t.Errorf("other tenant's publications: %s", r.Body)
				}
			case e.method == "POST" && e.path == "/v1/policies":
				// Creates the other tenant's own version 1; skip so the rest stay 404.
			case e.path == "/v1/sdk/policy":
				check(t, e, otherSDK, 404)
				check(t, e, other, 403)
			default:
				check(t, e, other, 404)
			}
		}
		check(t, endpoint{"GET", "/v1/environments/production/policy", ""}, otherSDK, 404)
		// Once the other tenant has versions of its own, it sees only those.
		mine := h.create(other, polExample(t, "ai-credits.yaml"), "application/yaml")
		if polNum(mine["number"]) != 1 {
			t.Errorf("other tenant's first version is %v", mine["number"])
		}
		r := h.want(h.do("GET", "/v1/policies/1", other, nil), 200, "own v1")
		if strings.Contains(string(r.Body), v1["hash"].(string)) {
			t.Error("other tenant sees acme's v1")
		}
		check(t, endpoint{"GET", "/v1/policies/2", ""}, other, 404)
		check(t, endpoint{"GET", "/v1/policies/diff?from=1&to=2", ""}, other, 404)
		check(t, endpoint{"POST", "/v1/environments/production/publish", `{"version": 2}`}, other, 404)
		// acme's production still serves acme's v2.
		r = h.want(h.do("GET", "/v1/sdk/policy", prodSDK, nil), 200, "acme")
		if r.Header.Get(HeaderPolicyVersion) != "2" || r.Header.Get("ETag") != `"`+v2["hash"].(string)+`"` {
			t.Errorf("acme's active policy changed: %v", r.Header)
		}
	})
}

func TestPolicyIdempotencyAndConcurrency(t *testing.T) {
	h := newPolHarness(t)
	admin := h.tenant("acme")
	src := polExample(t, "seats.yaml")
	first := h.want(h.do("POST", "/v1/policies", admin, src, "Content-Type", "application/yaml", "Idempotency-Key", "k1"), 201, "first")
	again := h.want(h.do("POST", "/v1/policies", admin, src, "Content-Type", "application/yaml", "Idempotency-Key", "k1"), 201, "replay")
	if !bytes.Equal(first.Body, again.Body) || again.Header.Get("Idempotent-Replayed") == "" {
		t.Errorf("replay: %s %v", again.Body, again.Header)
	}
	// The same key with another body is refused, not applied.
	if r := h.do("POST", "/v1/policies", admin, polExample(t, "ai-credits.yaml"), "Content-Type", "application/yaml", "Idempotency-Key", "k1"); r.Code < 400 || r.Code >= 500 {
		t.Errorf("reused key: %d", r.Code)
	}

	// Concurrent creations number consecutively; concurrent publishes serialise.
	docs := []string{"storage-units.json", "ai-credits.yaml", "quickstart-ai.json"}
	done := make(chan polResp, len(docs))
	for _, f := range docs {
		body := polExample(t, f)
		go func() {
			req := httptest.NewRequest("POST", "/v1/policies", bytes.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+admin)
			rec := httptest.NewRecorder()
			h.s.Handler().ServeHTTP(rec, req)
			done <- polResp{Code: rec.Code, Body: rec.Body.Bytes()}
		}()
	}
	seen := map[int]bool{}
	for range docs {
		r := <-done
		if r.Code != 201 {
			t.Fatalf("concurrent create: %d %s", r.Code, r.Body)
		}
		seen[polNum(r.obj(t)["number"])] = true
	}
	if !seen[2] || !seen[3] || !seen[4] {
		t.Errorf("numbers %v", seen)
	}
	for v := 1; v <= 4; v++ {
		go func() {
			req := httptest.NewRequest("POST", "/v1/environments/production/publish", strings.NewReader(`{"version":`+strconv.Itoa(v)+`}`))
			req.Header.Set("Authorization", "Bearer "+admin)
			rec := httptest.NewRecorder()
			h.s.Handler().ServeHTTP(rec, req)
			done <- polResp{Code: rec.Code, Body: rec.Body.Bytes()}
		}()
	}
	for range 4 {
		if r := <-done; r.Code != 200 {
			t.Errorf("concurrent publish: %d %s", r.Code, r.Body)
		}
	}
	// Each publication's predecessor is the one before it: nothing was lost.
	rows, err := h.pool.Query(context.Background(), `select after->>'version', before->>'version' from audit_log where action = 'policy.publish' order by id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	prev := ""
	n := 0
	for rows.Next() {
		var after string
		var before *string
		if err := rows.Scan(&after, &before); err != nil {
			t.Fatal(err)
		}
		if (before == nil) != (prev == "") || before != nil && *before != prev {
			t.Errorf("publish %s: before %v, want %q", after, before, prev)
		}
		prev = after
		n++
	}
	if n != 4 {
		t.Errorf("%d publishes", n)
	}
}

// BenchmarkActivePolicy304 is the SDK's poll: GET of the active policy with a matching
// If-None-Match, through the whole middleware stack, against real Postgres.
func BenchmarkActivePolicy304(b *testing.B) {
	h := newPolHarnessConfig(b, Config{OperatorToken: "op", RateLimit: 1 << 30, RateBurst: 1 << 30})
	admin := h.tenant("acme")
	sdk, _ := h.key(admin, `{"kind":"sdk","environment":"production"}`)
	v := h.create(admin, polExample(b, "quickstart-ai.json"), "application/json")
	h.publish(admin, "production", 1)
	etag := `"` + v["hash"].(string) + `"`
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req := httptest.NewRequest("GET", "/v1/sdk/policy", nil)
			req.Header.Set("Authorization", "Bearer "+sdk)
			req.Header.Set("If-None-Match", etag)
			rec := httptest.NewRecorder()
			h.s.Handler().ServeHTTP(rec, req)
			if rec.Code != http.StatusNotModified {
				b.Fatalf("status %d", rec.Code)
			}
		}
	})
}
