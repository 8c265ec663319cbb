package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/limitr/limitr/internal/httpx/problem"
	"github.com/limitr/limitr/internal/tenancy"
	"github.com/limitr/limitr/internal/wire"
)

// The tenancy handlers bind the request, call the tenancy service and respond; every
// error goes through tenancyProblem.

type createTenantRequest struct {
	Slug string `json:"slug"`
	Name string `json:"name"`
}

func (s *Server) createTenant(c echo.Context) error {
	var req createTenantRequest
	if err := bindJSON(c, &req); err != nil {
		return err
	}
	// The operator token is not a key: the audit entry has no actor key.
	out, err := s.tenancy.CreateTenant(c.Request().Context(), tenancy.CreateTenantInput{Slug: req.Slug, Name: req.Name})
	if err != nil {
		return tenancyProblem(err)
	}
	return c.JSON(http.StatusCreated, out)
}

func (s *Server) getTenant(c echo.Context) error {
	t, err := s.tenancy.Tenant(c.Request().Context(), principal(c).TenantID)
	if err != nil {
		return tenancyProblem(err)
	}
	return c.JSON(http.StatusOK, t)
}

func (s *Server) listEnvironments(c echo.Context) error {
	envs, err := s.tenancy.ListEnvironments(c.Request().Context(), principal(c).TenantID)
	if err != nil {
		return tenancyProblem(err)
	}
	return c.JSON(http.StatusOK, list[tenancy.Environment]{Data: envs})
}

type createEnvironmentRequest struct {
	Name string `json:"name"`
	// Live: bills real money (no test clocks); default: live when named "production".
	Live *bool `json:"live,omitempty"`
}

func (s *Server) createEnvironment(c echo.Context) error {
	var req createEnvironmentRequest
	if err := bindJSON(c, &req); err != nil {
		return err
	}
	p := principal(c)
	env, err := s.tenancy.CreateEnvironment(c.Request().Context(), tenancy.CreateEnvironmentInput{
		TenantID: p.TenantID, Name: req.Name, Live: req.Live})
	if err != nil {
		return tenancyProblem(err)
	}
	return c.JSON(http.StatusCreated, env)
}

func (s *Server) listKeys(c echo.Context) error {
	keys, err := s.tenancy.ListKeys(c.Request().Context(), principal(c).TenantID)
	if err != nil {
		return tenancyProblem(err)
	}
	return c.JSON(http.StatusOK, list[tenancy.APIKey]{Data: keys})
}

type createKeyRequest struct {
	Kind        string `json:"kind"`
	Environment string `json:"environment"`
	Name        string `json:"name"`
}

func (s *Server) createKey(c echo.Context) error {
	var req createKeyRequest
	if err := bindJSON(c, &req); err != nil {
		return err
	}
	p := principal(c)
	out, err := s.tenancy.CreateKey(c.Request().Context(), tenancy.CreateKeyInput{
		TenantID: p.TenantID, Kind: req.Kind, Environment: req.Environment, Name: req.Name})
	if err != nil {
		return tenancyProblem(err)
	}
	return c.JSON(http.StatusCreated, out)
}

func (s *Server) revokeKey(c echo.Context) error {
	id, err := uuid.Parse(c.Param("id"))
	if err != nil {
		return problem.New(http.StatusNotFound, "no such key")
	}
	ctx := c.Request().Context()
	after, err := s.tenancy.RevokeKey(ctx, tenancy.RevokeKeyInput{TenantID: principal(c).TenantID, KeyID: id})
	if err != nil {
		return tenancyProblem(err)
	}
	s.keyRevoked(ctx, id)
	return c.JSON(http.StatusOK, after)
}

// keyRevoked makes every replica drop a revoked key from its cache now; the cache TTL
// covers a lost message.
func (s *Server) keyRevoked(ctx context.Context, id uuid.UUID) {
	s.keys.evict(id)
	if err := s.bus.Publish(ctx, wire.ChannelKeyRevoked, []byte(id.String())); err != nil {
		s.logger.Warn("api: could not broadcast a key revocation; other replicas see it within the cache TTL", "err", err, "key", id)
	}
}

func (s *Server) listAudit(c echo.Context) error {
	limit, before, err := idPage(c)
	if err != nil {
		return err
	}
	pg, err := s.tenancy.ListAudit(c.Request().Context(), tenancy.ListAuditInput{TenantID: principal(c).TenantID, Before: before, Limit: limit})
	if err != nil {
		return tenancyProblem(err)
	}
	out := list[tenancy.AuditEntry]{Data: pg.Entries}
	if pg.NextCursor != 0 {
		out.NextCursor = strconv.FormatInt(pg.NextCursor, 10)
	}
	return c.JSON(http.StatusOK, out)
}

// tenancyProblem maps the tenancy service's errors to problems; anything else is a
// database failure (503 or 500, see unavailable).
func tenancyProblem(err error) error {
	var rerr *tenancy.ResourceError
	switch {
	case errors.Is(err, tenancy.ErrLastAdminKey):
		return problem.New(http.StatusConflict,
			"this is the tenant's last active admin key: create another admin key first, then revoke this one").WithType("last-admin-key")
	case errors.As(err, &rerr) && errors.Is(err, tenancy.ErrConflict):
		return problem.New(http.StatusConflict, fmt.Sprintf("%s %q already exists", rerr.Resource, rerr.Name))
	case errors.As(err, &rerr) && errors.Is(err, tenancy.ErrNotFound):
		switch {
		case rerr.Resource == tenancy.ResourceEnvironment && rerr.Name != "":
			return problem.New(http.StatusNotFound, fmt.Sprintf("no environment %q", rerr.Name))
		default:
			return problem.New(http.StatusNotFound, "no such "+rerr.Resource)
		}
	}
	return commonProblem(err)
}
