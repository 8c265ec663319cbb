package web

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/limitr/limitr/internal/users"
	"github.com/limitr/limitr/internal/validation"
)

type loginData struct {
	Email string
	Error string
}

func (s *Server) loginPage(c echo.Context) error {
	if sessionOf(c) != nil {
		return c.Redirect(http.StatusSeeOther, "/")
	}
	return s.render(c, http.StatusOK, "login", loginData{})
}

// login checks the form and starts a new session. The session cookie the browser sent,
// whatever it was, is revoked and replaced: it never becomes the logged-in one.
func (s *Server) login(c echo.Context) error {
	email := c.FormValue("email")
	sess, token, err := s.deps.Users.Login(c.Request().Context(), users.LoginInput{
		Email: email, Password: c.FormValue("password"), ClientIP: c.RealIP(),
		UserAgent: c.Request().UserAgent(), PreviousToken: s.sessionToken(c),
	})
	if err != nil {
		status, msg := loginFailure(err)
		if status == 0 {
			return err
		}
		c.Set(sessionKey, nil) // the page re-renders logged out, whatever the old cookie was
		return s.render(c, status, "login", loginData{Email: email, Error: msg})
	}
	s.setSessionCookie(c, token, sess.ExpiresAt)
	return c.Redirect(http.StatusSeeOther, "/")
}

// loginFailure words a failed login; status 0 is an unexpected error.
func loginFailure(err error) (int, string) {
	var terr *users.ThrottledError
	switch {
	case errors.As(err, &terr):
		return http.StatusTooManyRequests, fmt.Sprintf("Too many failed logins: try again in %d minute(s).", terr.Minutes())
	case errors.Is(err, users.ErrInvalidCredentials):
		return http.StatusUnauthorized, "Wrong email or password."
	case errors.Is(err, users.ErrNoMembership):
		return http.StatusForbidden, "This account has no access to any tenant any more."
	case errors.Is(err, validation.ErrInvalid):
		return http.StatusUnprocessableEntity, "Enter your email and password."
	}
	return 0, ""
}

// logout revokes the session and clears its cookie.
func (s *Server) logout(c echo.Context) error {
	if err := s.deps.Users.Logout(c.Request().Context(), s.sessionToken(c)); err != nil {
		return err
	}
	s.setCookie(c, s.cookieName(c, sessionCookie, secureSessionCookie), "", -1)
	return c.Redirect(http.StatusSeeOther, "/login")
}

type inviteData struct {
	Invite users.PendingInvite
	Name   string
	Error  string
	Done   bool
}

func (s *Server) invitePage(c echo.Context) error {
	inv, err := s.deps.Users.PendingInviteByToken(c.Request().Context(), c.Param("token"))
	if errors.Is(err, users.ErrInviteInvalid) {
		return echo.NewHTTPError(http.StatusNotFound, users.ErrInviteInvalid.Error())
	} else if err != nil {
		return err
	}
	return s.render(c, http.StatusOK, "invite", inviteData{Invite: inv})
}

// acceptInvite uses the invite: a new user chooses a name and password; an existing
// one just joins. Either then logs in as usual.
func (s *Server) acceptInvite(c echo.Context) error {
	ctx := c.Request().Context()
	token := c.Param("token")
	inv, err := s.deps.Users.PendingInviteByToken(ctx, token)
	if errors.Is(err, users.ErrInviteInvalid) {
		return echo.NewHTTPError(http.StatusNotFound, users.ErrInviteInvalid.Error())
	} else if err != nil {
		return err
	}
	in := users.AcceptInviteInput{Token: token, Name: c.FormValue("name"), Password: c.FormValue("password")}
	if !inv.UserExists && in.Password != c.FormValue("password_confirm") {
		return s.render(c, http.StatusUnprocessableEntity, "invite", inviteData{Invite: inv, Name: in.Name, Error: "The passwords do not match."})
	}
	if _, err := s.deps.Users.AcceptInvite(ctx, in); err != nil {
		var verr *validation.Error
		switch {
		case errors.As(err, &verr):
			return s.render(c, http.StatusUnprocessableEntity, "invite", inviteData{Invite: inv, Name: in.Name, Error: fieldMessage(verr)})
		case errors.Is(err, users.ErrInviteInvalid):
			return echo.NewHTTPError(http.StatusNotFound, users.ErrInviteInvalid.Error())
		case errors.Is(err, users.ErrAlreadyMember):
			return s.render(c, http.StatusOK, "invite", inviteData{Invite: inv, Done: true})
		}
		return err
	}
	return s.render(c, http.StatusOK, "invite", inviteData{Invite: inv, Done: true})
}

// fieldMessage words a validation error for a form: its first problem.
func fieldMessage(verr *validation.Error) string {
	if len(verr.Fields) == 0 {
		return verr.Title
	}
	f := verr.Fields[0]
	return f.Path + " " + f.Message + "."
}
