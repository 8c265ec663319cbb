package web

import (
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/limitr/limitr/internal/httpx/requestlog"
	"github.com/limitr/limitr/internal/store"
	"github.com/limitr/limitr/internal/users"
)

// Cookie names. The __Host- prefix (only with Secure) makes the browser refuse the
// cookie unless it was set by this host over HTTPS with Path=/ and no Domain, so a
// sibling subdomain cannot plant one.
const (
	sessionCookie       = "limitr_session"
	secureSessionCookie = "__Host-limitr_session"
	csrfCookie          = "limitr_csrf"
	secureCSRFCookie    = "__Host-limitr_csrf"
	// csrfField and csrfHeader carry the synchronizer token: the form field for plain
	// forms, the header for htmx (hx-headers on <body>).
	csrfField  = "csrf_token"
	csrfHeader = "X-CSRF-Token"
)

const sessionKey = "web.session"

// sessionOf is the request's live session, nil when logged out.
func sessionOf(c echo.Context) *users.Session {
	s, _ := c.Get(sessionKey).(*users.Session)
	return s
}

// secure reports whether this request's cookies are Secure.
func (s *Server) secure(c echo.Context) bool {
	return s.cfg.SecureCookies || c.Request().TLS != nil
}

func (s *Server) cookieName(c echo.Context, plain, hostPrefixed string) string {
	if s.secure(c) {
		return hostPrefixed
	}
	return plain
}

func (s *Server) sessionToken(c echo.Context) string {
	ck, err := c.Cookie(s.cookieName(c, sessionCookie, secureSessionCookie))
	if err != nil {
		return ""
	}
	return ck.Value
}

// setCookie sets an HttpOnly, SameSite=Lax cookie on Path=/ (Secure when s.secure).
// maxAge 0 makes a browser-session cookie; < 0 deletes it.
func (s *Server) setCookie(c echo.Context, name, value string, maxAge int) {
	c.SetCookie(&http.Cookie{Name: name, Value: value, Path: "/", MaxAge: maxAge,
		HttpOnly: true, Secure: s.secure(c), SameSite: http.SameSiteLaxMode})
}

// setSessionCookie sets the session cookie, expiring with the session's lifetime.
func (s *Server) setSessionCookie(c echo.Context, token string, expires time.Time) {
	s.setCookie(c, s.cookieName(c, sessionCookie, secureSessionCookie), token, int(time.Until(expires).Seconds()))
}

// loadSession puts the live session of the request's cookie, if any, in the context.
// A cookie that names no live session is ignored (the request is logged out).
func (s *Server) loadSession(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if tok := s.sessionToken(c); tok != "" {
			sess, err := s.deps.Users.Authenticate(c.Request().Context(), tok)
			switch {
			case err == nil:
				c.Set(sessionKey, &sess)
			case !errors.Is(err, users.ErrSessionInvalid):
				return err
			}
		}
		return next(c)
	}
}

// requireLogin sends logged-out visitors to the login page.
func (s *Server) requireLogin(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if sessionOf(c) == nil {
			if c.Request().Method != http.MethodGet {
				return echo.NewHTTPError(http.StatusUnauthorized, "Your session has ended: log in again.")
			}
			return c.Redirect(http.StatusSeeOther, "/login")
		}
		return next(c)
	}
}

// requirePerm refuses (403) a member whose role lacks perm. Templates hide the same
// actions with {{if .Can "perm"}}, through the same users.Can.
func (s *Server) requirePerm(perm users.Permission) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			sess := sessionOf(c)
			if sess == nil || !users.Can(sess.Role, perm) {
				return echo.NewHTTPError(http.StatusForbidden, "Your role does not allow this.")
			}
			return next(c)
		}
	}
}

// withActor names the logged-in user in the audit entries the domains write.
func withActor(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		a := store.Actor{RequestID: requestlog.RequestID(r.Context())}
		if sess := sessionOf(c); sess != nil {
			id := sess.User.ID
			a.UserID = &id
		}
		c.SetRequest(r.WithContext(store.WithActor(r.Context(), a)))
		return next(c)
	}
}

// csrfToken is the token this request's forms must send back: the session's
// synchronizer token, or before login the random one of the CSRF cookie (set here when
// missing; a double-submit token, as there is no session to keep it in).
func (s *Server) csrfToken(c echo.Context) string {
	if sess := sessionOf(c); sess != nil {
		return sess.CSRFToken
	}
	name := s.cookieName(c, csrfCookie, secureCSRFCookie)
	if ck, err := c.Cookie(name); err == nil && len(ck.Value) >= 20 {
		return ck.Value
	}
	if v, ok := c.Get("web.csrf.new").(string); ok {
		return v // already set on this response
	}
	v := rand.Text()
	c.Set("web.csrf.new", v)
	s.setCookie(c, name, v, 0)
	return v
}

// csrfProtect refuses (403) a state-changing request that comes from another origin or
// does not carry this session's token.
func (s *Server) csrfProtect(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		switch c.Request().Method {
		case http.MethodGet, http.MethodHead, http.MethodOptions:
			return next(c)
		}
		if !sameOrigin(c.Request()) {
			return echo.NewHTTPError(http.StatusForbidden, "This request came from another site and was refused.")
		}
		var want string
		if sess := sessionOf(c); sess != nil {
			want = sess.CSRFToken
		} else if ck, err := c.Cookie(s.cookieName(c, csrfCookie, secureCSRFCookie)); err == nil {
			want = ck.Value
		}
		matches := func(got string) bool { return subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1 }
		if want == "" || !(matches(c.Request().Header.Get(csrfHeader)) || matches(c.FormValue(csrfField))) {
			return echo.NewHTTPError(http.StatusForbidden, "This form has expired or was not sent from the dashboard: reload the page and try again.")
		}
		return next(c)
	}
}
