package web

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// Over HTTPS the cookies are Secure and __Host- prefixed with no setting at all.
func TestHTTPSCookies(t *testing.T) {
	e := newEnv(t, Config{})
	ts := httptest.NewTLSServer(e.handler)
	t.Cleanup(ts.Close)
	client := ts.Client()
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	res, err := client.Get(ts.URL + "/login")
	if err != nil {
		t.Fatal(err)
	}
	body := readAll(t, res)
	csrf := cookieNamed(res.Cookies(), "__Host-limitr_csrf")
	m := csrfInput.FindStringSubmatch(body)
	if csrf == nil || !csrf.Secure || !csrf.HttpOnly || m == nil {
		t.Fatalf("csrf cookie over https: %+v", res.Cookies())
	}
	form := url.Values{"csrf_token": {m[1]}, "email": {"owner@acme.test"}, "password": {testPassword}}
	req, _ := http.NewRequest(http.MethodPost, ts.URL+"/login", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", ts.URL)
	req.AddCookie(csrf)
	res, err = client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, res)
	c := cookieNamed(res.Cookies(), "__Host-limitr_session")
	if res.StatusCode != http.StatusSeeOther || c == nil || !c.Secure || !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Path != "/" {
		t.Fatalf("https login: %d %+v", res.StatusCode, res.Cookies())
	}
	// An http:// origin posting to the https site is another origin.
	req, _ = http.NewRequest(http.MethodPost, ts.URL+"/login", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", strings.Replace(ts.URL, "https://", "http://", 1))
	req.AddCookie(csrf)
	if res, err = client.Do(req); err != nil || res.StatusCode != http.StatusForbidden {
		t.Fatalf("http origin to https: %v %v", res.StatusCode, err)
	}
	readAll(t, res)
}

// Ten failures in a row: the login form refuses even the right password, and says for
// how long.
func TestLoginThrottledPage(t *testing.T) {
	e := newEnv(t, Config{})
	b := e.browser()
	for i := 0; i < 10; i++ {
		r := b.do(http.MethodPost, "/login", url.Values{"csrf_token": {b.csrf("/login")}, "email": {"owner@acme.test"}, "password": {"wrong password"}}, nil)
		if r.status != http.StatusUnauthorized {
			t.Fatalf("failure %d: %d", i, r.status)
		}
	}
	r := b.login("owner@acme.test")
	if r.status != http.StatusTooManyRequests || !strings.Contains(r.body, "Too many failed logins: try again in 15 minute(s).") {
		t.Fatalf("throttled: %d\n%s", r.status, r.body)
	}
}

func readAll(t *testing.T, res *http.Response) string {
	t.Helper()
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(raw)
}
