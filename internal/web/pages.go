package web

import (
	"net/http"

	"github.com/labstack/echo/v4"
)

// section serves a navigation entry whose page is not built yet.
func (s *Server) section(n navItem) echo.HandlerFunc {
	return func(c echo.Context) error {
		return s.render(c, http.StatusOK, "section", n)
	}
}

// switchEnvironment changes the environment the session's pages show, then goes back.
func (s *Server) switchEnvironment(c echo.Context) error {
	ctx := c.Request().Context()
	sess := sessionOf(c)
	envs, err := s.deps.Tenancy.ListEnvironments(ctx, sess.TenantID)
	if err != nil {
		return err
	}
	name := c.FormValue("environment")
	found := false
	for _, e := range envs {
		found = found || e.Name == name
	}
	if !found {
		return echo.NewHTTPError(http.StatusUnprocessableEntity, "There is no such environment.")
	}
	if err := s.deps.Users.SetEnvironment(ctx, sess.ID, name); err != nil {
		return err
	}
	return c.Redirect(http.StatusSeeOther, localPath(c.FormValue("return_to")))
}
