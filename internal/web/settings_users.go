package web

import (
	"errors"
	"net/http"
	"strings"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/limitr/limitr/internal/users"
	"github.com/limitr/limitr/internal/validation"
)

type usersData struct {
	Members []users.Member
	Invites []users.Invite
	Roles   []users.Role
	// InviteLink is the link of an invite just made, shown this once.
	InviteLink  string
	InviteEmail string
	Notice      string
	Error       string
}

// notices are the confirmations a redirect after a change may show, by code: only
// fixed texts, so a crafted link cannot put words in the dashboard's mouth.
var notices = map[string]string{
	"role":    "Role changed.",
	"removed": "Member removed.",
	"revoked": "Invite withdrawn.",
}

// usersPage is Settings → Users & roles.
func (s *Server) usersPage(c echo.Context) error {
	return s.renderUsers(c, http.StatusOK, usersData{Notice: notices[c.QueryParam("done")]})
}

func (s *Server) renderUsers(c echo.Context, status int, d usersData) error {
	ctx := c.Request().Context()
	sess := sessionOf(c)
	var err error
	if d.Members, err = s.deps.Users.ListMembers(ctx, sess.TenantID); err != nil {
		return err
	}
	if users.Can(sess.Role, users.PermManageUsers) {
		if d.Invites, err = s.deps.Users.ListInvites(ctx, sess.TenantID); err != nil {
			return err
		}
	}
	d.Roles = assignableRoles(sess.Role)
	return s.render(c, status, "users", d)
}

// assignableRoles are the roles role may give: an admin cannot make owners.
func assignableRoles(role users.Role) []users.Role {
	var out []users.Role
	for _, r := range users.Roles {
		if r != users.RoleOwner || users.Can(role, users.PermManageOwners) {
			out = append(out, r)
		}
	}
	return out
}

func actor(sess *users.Session) users.Actor {
	return users.Actor{UserID: sess.User.ID, Role: sess.Role}
}

// invite makes an invite and shows its link, once.
func (s *Server) invite(c echo.Context) error {
	sess := sessionOf(c)
	inv, token, err := s.deps.Users.CreateInvite(c.Request().Context(), users.InviteInput{TenantID: sess.TenantID,
		Email: c.FormValue("email"), Role: users.Role(c.FormValue("role")), By: actor(sess)})
	if err != nil {
		return s.usersFailure(c, err)
	}
	return s.renderUsers(c, http.StatusOK, usersData{InviteLink: s.baseURL(c) + "/invite/" + token, InviteEmail: inv.Email})
}

func (s *Server) changeRole(c echo.Context) error {
	sess := sessionOf(c)
	id, err := uuid.Parse(c.Param("id"))
	if err != nil {
		return echo.NewHTTPError(http.StatusNotFound, "There is no such member.")
	}
	if _, err := s.deps.Users.ChangeRole(c.Request().Context(), users.ChangeRoleInput{TenantID: sess.TenantID, UserID: id,
		Role: users.Role(c.FormValue("role")), By: actor(sess)}); err != nil {
		return s.usersFailure(c, err)
	}
	return c.Redirect(http.StatusSeeOther, "/settings/users?done=role")
}

func (s *Server) removeMember(c echo.Context) error {
	sess := sessionOf(c)
	id, err := uuid.Parse(c.Param("id"))
	if err != nil {
		return echo.NewHTTPError(http.StatusNotFound, "There is no such member.")
	}
	if err := s.deps.Users.RemoveMember(c.Request().Context(), users.RemoveMemberInput{TenantID: sess.TenantID, UserID: id,
		By: actor(sess)}); err != nil {
		return s.usersFailure(c, err)
	}
	if id == sess.User.ID {
		return c.Redirect(http.StatusSeeOther, "/login") // they left; their session ended with it
	}
	return c.Redirect(http.StatusSeeOther, "/settings/users?done=removed")
}

func (s *Server) revokeInvite(c echo.Context) error {
	sess := sessionOf(c)
	id, err := uuid.Parse(c.Param("id"))
	if err != nil {
		return echo.NewHTTPError(http.StatusNotFound, "There is no such invite.")
	}
	if err := s.deps.Users.RevokeInvite(c.Request().Context(), users.RevokeInviteInput{TenantID: sess.TenantID, InviteID: id,
		By: actor(sess)}); err != nil {
		return s.usersFailure(c, err)
	}
	return c.Redirect(http.StatusSeeOther, "/settings/users?done=revoked")
}

// usersFailure shows a refused change on the page, with its reason.
func (s *Server) usersFailure(c echo.Context, err error) error {
	var verr *validation.Error
	status, msg := http.StatusConflict, ""
	switch {
	case errors.As(err, &verr):
		status, msg = http.StatusUnprocessableEntity, fieldMessage(verr)
	case errors.Is(err, users.ErrLastOwner), errors.Is(err, users.ErrAlreadyMember):
		msg = rootMessage(err)
	case errors.Is(err, users.ErrForbidden):
		status, msg = http.StatusForbidden, "Your role does not allow this: only an owner may grant or take away the owner role."
	case errors.Is(err, users.ErrNotFound):
		status, msg = http.StatusNotFound, "There is no such member or invite."
	default:
		return err
	}
	return s.renderUsers(c, status, usersData{Error: msg})
}

// rootMessage is the sentinel's text, without the "users: change role:" wrapping.
func rootMessage(err error) string {
	for _, e := range []error{users.ErrLastOwner, users.ErrAlreadyMember} {
		if errors.Is(err, e) {
			m := e.Error()
			return strings.ToUpper(m[:1]) + m[1:] + "."
		}
	}
	return err.Error()
}

// baseURL is where links to the dashboard point: the configured public URL, or this
// request's scheme and host.
func (s *Server) baseURL(c echo.Context) string {
	if s.cfg.PublicURL != "" {
		return strings.TrimRight(s.cfg.PublicURL, "/")
	}
	return c.Scheme() + "://" + c.Request().Host
}
