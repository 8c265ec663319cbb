package web

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/limitr/limitr/internal/platform/pgtest"
	"github.com/limitr/limitr/internal/tenancy"
	"github.com/limitr/limitr/internal/users"
)

const testPassword = "correct horse battery"

type env struct {
	t       *testing.T
	srv     *httptest.Server
	handler http.Handler
	pool    *pgxpool.Pool
	users   *users.Service
	tenant  tenancy.Tenant
	owner   users.Member
	viewer  users.Member
	deps    Deps
	server  *Server
}

// newEnv serves the dashboard over a fresh database with a tenant, an owner and a viewer.
func newEnv(t *testing.T, cfg Config) *env {
	t.Helper()
	_, pool := pgtest.NewMigrated(t)
	ctx := t.Context()
	us, err := users.NewService(pool, users.Config{Hash: users.HashParams{Memory: 1024, Time: 1, Threads: 1}})
	if err != nil {
		t.Fatal(err)
	}
	ts := tenancy.NewService(pool)
	b, err := ts.CreateTenant(ctx, tenancy.CreateTenantInput{Slug: "acme", Name: "Acme Inc"})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, users: us, tenant: b.Tenant, pool: pool}
	if e.owner, err = us.CreateUser(ctx, users.CreateUserInput{TenantID: b.Tenant.ID, Email: "owner@acme.test", Password: testPassword, Role: users.RoleOwner}); err != nil {
		t.Fatal(err)
	}
	if e.viewer, err = us.CreateUser(ctx, users.CreateUserInput{TenantID: b.Tenant.ID, Email: "viewer@acme.test", Password: testPassword, Role: users.RoleViewer}); err != nil {
		t.Fatal(err)
	}
	cfg.Logger = slog.New(slog.DiscardHandler)
	e.deps = testDeps(t, pool, us, ts)
	s, err := New(cfg, e.deps)
	if err != nil {
		t.Fatal(err)
	}
	e.server, e.handler = s, s.Handler()
	e.srv = httptest.NewServer(e.handler)
	t.Cleanup(e.srv.Close)
	return e
}

// browser is a minimal cookie-keeping client that does not follow redirects, so the
// tests see every Set-Cookie and Location.
type browser struct {
	e       *env
	cookies map[string]*http.Cookie
	// origin is sent as the Origin header of POSTs ("" sends none).
	origin string
}

func (e *env) browser() *browser {
	return &browser{e: e, cookies: map[string]*http.Cookie{}, origin: e.srv.URL}
}

type reply struct {
	status  int
	header  http.Header
	body    string
	cookies []*http.Cookie
}

func (b *browser) do(method, path string, form url.Values, header map[string]string) reply {
	b.e.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, b.e.srv.URL+path, body)
	if err != nil {
		b.e.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if method != http.MethodGet && b.origin != "" {
		req.Header.Set("Origin", b.origin)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	for _, c := range b.cookies {
		req.AddCookie(c)
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := client.Do(req)
	if err != nil {
		b.e.t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	for _, c := range res.Cookies() {
		if c.MaxAge < 0 {
			delete(b.cookies, c.Name)
		} else {
			b.cookies[c.Name] = c
		}
	}
	return reply{status: res.StatusCode, header: res.Header, body: string(raw), cookies: res.Cookies()}
}

var csrfInput = regexp.MustCompile(`name="csrf_token" value="([^"]+)"`)

// csrf fetches path and returns the token its forms carry.
func (b *browser) csrf(path string) string {
	b.e.t.Helper()
	r := b.do(http.MethodGet, path, nil, nil)
	m := csrfInput.FindStringSubmatch(r.body)
	if r.status != http.StatusOK || m == nil {
		b.e.t.Fatalf("GET %s: %d, no csrf token:\n%s", path, r.status, r.body)
	}
	return m[1]
}

func (b *browser) login(email string) reply {
	b.e.t.Helper()
	tok := b.csrf("/login")
	return b.do(http.MethodPost, "/login", url.Values{"csrf_token": {tok}, "email": {email}, "password": {testPassword}}, nil)
}

func cookieNamed(cs []*http.Cookie, name string) *http.Cookie {
	for _, c := range cs {
		if c.Name == name {
			return c
		}
	}
	return nil
}

func TestLoginCookieAndHeaders(t *testing.T) {
	e := newEnv(t, Config{})
	b := e.browser()
	r := b.do(http.MethodGet, "/", nil, nil)
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/login" {
		t.Fatalf("logged out /: %d %s", r.status, r.header.Get("Location"))
	}
	r = b.login("OWNER@acme.test")
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/" {
		t.Fatalf("login: %d\n%s", r.status, r.body)
	}
	c := cookieNamed(r.cookies, "limitr_session")
	if c == nil || !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Secure || c.Path != "/" || c.MaxAge <= 0 {
		t.Fatalf("session cookie over http: %+v", c)
	}
	r = b.do(http.MethodGet, "/", nil, nil)
	if r.status != http.StatusOK || !strings.Contains(r.body, "Acme Inc") || !strings.Contains(r.body, `id="nav"`) {
		t.Fatalf("overview: %d\n%s", r.status, r.body)
	}
	for k, want := range map[string]string{
		"Content-Security-Policy": "default-src 'self'", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin",
	} {
		if !strings.Contains(r.header.Get(k), want) {
			t.Errorf("%s = %q, want %q", k, r.header.Get(k), want)
		}
	}
	if !strings.Contains(r.header.Get("Content-Security-Policy"), "frame-ancestors 'none'") {
		t.Error("CSP allows framing")
	}
	for _, p := range []string{"/policies", "/customers", "/invoices", "/alerts", "/settings/users", "/static/htmx.min.js", "/static/app.css"} {
		if r := b.do(http.MethodGet, p, nil, nil); r.status != http.StatusOK {
			t.Errorf("GET %s: %d", p, r.status)
		}
	}
	// Logout revokes the session: the old cookie no longer works.
	old := b.cookies["limitr_session"]
	tok := b.csrf("/")
	if r := b.do(http.MethodPost, "/logout", url.Values{"csrf_token": {tok}}, nil); r.status != http.StatusSeeOther {
		t.Fatalf("logout: %d", r.status)
	}
	b.cookies["limitr_session"] = old
	if r := b.do(http.MethodGet, "/", nil, nil); r.status != http.StatusSeeOther {
		t.Fatalf("after logout: %d", r.status)
	}

	// Wrong password: 401 and a message; secure flag and __Host- name when configured.
	if r := b.do(http.MethodPost, "/login", url.Values{"csrf_token": {b.csrf("/login")}, "email": {"owner@acme.test"}, "password": {"nope"}}, nil); r.status != http.StatusUnauthorized ||
		!strings.Contains(r.body, "Wrong email or password") {
		t.Fatalf("wrong password: %d", r.status)
	}
	es := newEnv(t, Config{SecureCookies: true})
	bs := es.browser()
	// A Go client does not send Secure cookies over http, so keep them by hand.
	r = bs.login("owner@acme.test")
	c = cookieNamed(r.cookies, "__Host-limitr_session")
	if r.status != http.StatusSeeOther || c == nil || !c.Secure || !c.HttpOnly || c.Path != "/" || c.Domain != "" {
		t.Fatalf("secure session cookie: %d %+v", r.status, r.cookies)
	}
}

func TestCSRF(t *testing.T) {
	e := newEnv(t, Config{})
	b := e.browser()
	if r := b.login("owner@acme.test"); r.status != http.StatusSeeOther {
		t.Fatalf("login: %d", r.status)
	}
	tok := b.csrf("/settings/users")
	form := func(tok string) url.Values {
		return url.Values{"csrf_token": {tok}, "email": {"new@acme.test"}, "role": {"viewer"}}
	}
	if r := b.do(http.MethodPost, "/settings/users/invite", url.Values{"email": {"new@acme.test"}, "role": {"viewer"}}, nil); r.status != http.StatusForbidden {
		t.Errorf("no token: %d", r.status)
	}
	if r := b.do(http.MethodPost, "/settings/users/invite", form("wrong"), nil); r.status != http.StatusForbidden {
		t.Errorf("wrong token: %d", r.status)
	}
	b.origin = "https://evil.example"
	if r := b.do(http.MethodPost, "/settings/users/invite", form(tok), nil); r.status != http.StatusForbidden {
		t.Errorf("cross-origin: %d", r.status)
	}
	b.origin = ""
	if r := b.do(http.MethodPost, "/settings/users/invite", form(tok), map[string]string{"Referer": "https://evil.example/x"}); r.status != http.StatusForbidden {
		t.Errorf("cross-origin referer: %d", r.status)
	}
	b.origin = e.srv.URL
	// htmx sends the token as a header.
	r := b.do(http.MethodPost, "/settings/users/invite", url.Values{"email": {"new@acme.test"}, "role": {"viewer"}}, map[string]string{"X-CSRF-Token": tok})
	if r.status != http.StatusOK || !strings.Contains(r.body, "/invite/") {
		t.Fatalf("invite with header token: %d\n%s", r.status, r.body)
	}
	// Login is protected too, before there is a session.
	anon := e.browser()
	if r := anon.do(http.MethodPost, "/login", url.Values{"email": {"owner@acme.test"}, "password": {testPassword}}, nil); r.status != http.StatusForbidden {
		t.Errorf("login without token: %d", r.status)
	}
}

func TestSessionFixation(t *testing.T) {
	e := newEnv(t, Config{})
	b := e.browser()
	// A cookie planted before login (by a sibling site, or an attacker's own session).
	b.cookies["limitr_session"] = &http.Cookie{Name: "limitr_session", Value: "planted-by-attacker"}
	if r := b.login("owner@acme.test"); r.status != http.StatusSeeOther {
		t.Fatalf("login: %d", r.status)
	}
	after := b.cookies["limitr_session"].Value
	if after == "planted-by-attacker" {
		t.Fatal("the planted cookie survived login")
	}
	// An attacker's real session, planted, is revoked by the victim's login.
	attacker := e.browser()
	attacker.login("viewer@acme.test")
	planted := attacker.cookies["limitr_session"].Value
	victim := e.browser()
	victim.cookies["limitr_session"] = &http.Cookie{Name: "limitr_session", Value: planted}
	// Logged in as the attacker, the victim's forms carry that session's token.
	tok := victim.csrf("/")
	if r := victim.do(http.MethodPost, "/login", url.Values{"csrf_token": {tok}, "email": {"owner@acme.test"}, "password": {testPassword}}, nil); r.status != http.StatusSeeOther {
		t.Fatalf("victim login: %d", r.status)
	}
	if victim.cookies["limitr_session"].Value == planted {
		t.Fatal("login kept the planted session")
	}
	if r := attacker.do(http.MethodGet, "/", nil, nil); r.status != http.StatusSeeOther {
		t.Fatalf("the planted session still works: %d", r.status)
	}
	if r := victim.do(http.MethodGet, "/", nil, nil); r.status != http.StatusOK || !strings.Contains(r.body, "owner@acme.test") {
		t.Fatalf("the victim's new session: %d", r.status)
	}
}

func TestViewerCannotManageUsers(t *testing.T) {
	e := newEnv(t, Config{})
	b := e.browser()
	b.login("viewer@acme.test")
	r := b.do(http.MethodGet, "/settings/users", nil, nil)
	if r.status != http.StatusOK || !strings.Contains(r.body, "owner@acme.test") {
		t.Fatalf("viewer sees members: %d", r.status)
	}
	for _, absent := range []string{`id="invite"`, "Change role", ">Remove<"} {
		if strings.Contains(r.body, absent) {
			t.Errorf("viewer's page shows %q", absent)
		}
	}
	tok := csrfInput.FindStringSubmatch(r.body)[1]
	for path, form := range map[string]url.Values{
		"/settings/users/invite":                             {"email": {"x@acme.test"}, "role": {"owner"}},
		"/settings/users/" + e.viewer.ID.String() + "/role":  {"role": {"owner"}},
		"/settings/users/" + e.owner.ID.String() + "/remove": {},
	} {
		form.Set("csrf_token", tok)
		if r := b.do(http.MethodPost, path, form, nil); r.status != http.StatusForbidden {
			t.Errorf("viewer POST %s: %d", path, r.status)
		}
	}
	members, _ := e.users.ListMembers(t.Context(), e.tenant.ID)
	if len(members) != 2 || members[0].Role != users.RoleOwner || members[1].Role != users.RoleViewer {
		t.Fatalf("members changed: %+v", members)
	}
}

func TestUsersAndRoles(t *testing.T) {
	e := newEnv(t, Config{})
	b := e.browser()
	b.login("owner@acme.test")
	tok := b.csrf("/settings/users")
	// The last owner cannot leave.
	r := b.do(http.MethodPost, "/settings/users/"+e.owner.ID.String()+"/remove", url.Values{"csrf_token": {tok}}, nil)
	if r.status != http.StatusConflict || !strings.Contains(r.body, "last owner") {
		t.Fatalf("remove last owner: %d\n%s", r.status, r.body)
	}
	// Promote the viewer to editor.
	r = b.do(http.MethodPost, "/settings/users/"+e.viewer.ID.String()+"/role", url.Values{"csrf_token": {tok}, "role": {"editor"}}, nil)
	if r.status != http.StatusSeeOther {
		t.Fatalf("change role: %d\n%s", r.status, r.body)
	}
	// Invite, accept through the link, log in as the new member.
	r = b.do(http.MethodPost, "/settings/users/invite", url.Values{"csrf_token": {tok}, "email": {"billing@acme.test"}, "role": {"billing"}}, nil)
	link := regexp.MustCompile(`value="(http[^"]+/invite/[^"]+)"`).FindStringSubmatch(r.body)
	if r.status != http.StatusOK || link == nil {
		t.Fatalf("invite: %d\n%s", r.status, r.body)
	}
	path := strings.TrimPrefix(link[1], e.srv.URL)
	guest := e.browser()
	gtok := guest.csrf(path)
	r = guest.do(http.MethodPost, path, url.Values{"csrf_token": {gtok}, "name": {"Bill"}, "password": {testPassword}, "password_confirm": {testPassword}}, nil)
	if r.status != http.StatusOK || !strings.Contains(r.body, "You are now a member") {
		t.Fatalf("accept: %d\n%s", r.status, r.body)
	}
	if r := guest.do(http.MethodGet, path, nil, nil); r.status != http.StatusNotFound {
		t.Fatalf("used link: %d", r.status)
	}
	if r := guest.login("billing@acme.test"); r.status != http.StatusSeeOther {
		t.Fatalf("new member login: %d", r.status)
	}
	members, _ := e.users.ListMembers(t.Context(), e.tenant.ID)
	roles := map[string]users.Role{}
	for _, m := range members {
		roles[m.Email] = m.Role
	}
	if roles["viewer@acme.test"] != users.RoleEditor || roles["billing@acme.test"] != users.RoleBilling {
		t.Fatalf("roles: %v", roles)
	}
	// The audit log names the dashboard user behind each change.
	var actor, action string
	if err := e.pool.QueryRow(t.Context(), `select coalesce(actor_user_id::text, ''), action from audit_log
		where tenant_id = $1 and action = 'member.role_change'`, e.tenant.ID).Scan(&actor, &action); err != nil || actor != e.owner.ID.String() {
		t.Fatalf("audit of the role change: actor %q, %v", actor, err)
	}
	// Environment switcher.
	tok = b.csrf("/")
	if r := b.do(http.MethodPost, "/environment", url.Values{"csrf_token": {tok}, "environment": {"staging"}, "return_to": {"//evil.example"}}, nil); r.status != http.StatusSeeOther || r.header.Get("Location") != "/" {
		t.Fatalf("switch: %d %s", r.status, r.header.Get("Location"))
	}
	if r := b.do(http.MethodGet, "/", nil, nil); !strings.Contains(r.body, `value="staging" selected`) {
		t.Fatal("the switched environment is not selected")
	}
}

func TestUnknownPathIs404(t *testing.T) {
	e := newEnv(t, Config{})
	b := e.browser()
	for _, p := range []string{"/metrics", "/nope", "/static/", "/settings/nope"} {
		if r := b.do(http.MethodGet, p, nil, nil); r.status != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", p, r.status)
		}
	}
}
