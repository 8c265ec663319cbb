package api

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v4"

	"github.com/limitr/limitr/internal/httpx/problem"
	"github.com/limitr/limitr/internal/httpx/requestlog"
	"github.com/limitr/limitr/internal/store"
)

type createTenantRequest struct {
	Slug string `json:"slug"`
	Name string `json:"name"`
}

func (s *Server) createTenant(c echo.Context) error {
	var req createTenantRequest
	if err := bindJSON(c, &req); err != nil {
		return err
	}
	if !store.ValidSlug(req.Slug) {
		return problem.Validation("invalid tenant", []problem.FieldError{{Path: "slug", Message: "use 1-63 lowercase letters, digits and dashes, starting with a letter or digit"}})
	}
	if fe := checkText("name", req.Name, 200); fe != nil {
		return problem.Validation("invalid tenant", []problem.FieldError{*fe})
	}
	out, err := s.store.Bootstrap(c.Request().Context(), req.Slug, req.Name, requestlog.RequestID(c.Request().Context()))
	if errors.Is(err, store.ErrConflict) {
		return problem.New(http.StatusConflict, fmt.Sprintf("tenant %q already exists", req.Slug))
	}
	if err != nil {
		return s.unavailable(err)
	}
	return c.JSON(http.StatusCreated, out)
}

func (s *Server) getTenant(c echo.Context) error {
	t, err := store.TenantByID(c.Request().Context(), s.pool, principal(c).TenantID)
	if err != nil {
		return s.unavailable(err)
	}
	return c.JSON(http.StatusOK, t)
}

func (s *Server) listEnvironments(c echo.Context) error {
	envs, err := store.ListEnvironments(c.Request().Context(), s.pool, principal(c).TenantID)
	if err != nil {
		return s.unavailable(err)
	}
	return c.JSON(http.StatusOK, list[store.Environment]{Data: envs})
}

type createEnvironmentRequest struct {
	Name string `json:"name"`
}

func (s *Server) createEnvironment(c echo.Context) error {
	var req createEnvironmentRequest
	if err := bindJSON(c, &req); err != nil {
		return err
	}
	if !store.ValidSlug(req.Name) {
		return problem.Validation("invalid environment", []problem.FieldError{{Path: "name", Message: "use 1-63 lowercase letters, digits and dashes"}})
	}
	p := principal(c)
	var env store.Environment
	err := s.store.InTx(c.Request().Context(), func(tx pgx.Tx) error {
		var err error
		if env, err = store.CreateEnvironment(c.Request().Context(), tx, p.TenantID, req.Name); err != nil {
			return err
		}
		return s.audit(c, tx, &env.ID, "environment.create", "environment", env.ID.String(), nil, env)
	})
	if errors.Is(err, store.ErrConflict) {
		return problem.New(http.StatusConflict, fmt.Sprintf("environment %q already exists", req.Name))
	}
	if err != nil {
		return s.unavailable(err)
	}
	return c.JSON(http.StatusCreated, env)
}

func (s *Server) listKeys(c echo.Context) error {
	keys, err := store.ListKeys(c.Request().Context(), s.pool, principal(c).TenantID)
	if err != nil {
		return s.unavailable(err)
	}
	return c.JSON(http.StatusOK, list[store.APIKey]{Data: keys})
}

type createKeyRequest struct {
	Kind        string `json:"kind"`
	Environment string `json:"environment"`
	Name        string `json:"name"`
}

type createdKey struct {
	store.APIKey
	Secret string `json:"secret"`
}

func (s *Server) createKey(c echo.Context) error {
	var req createKeyRequest
	if err := bindJSON(c, &req); err != nil {
		return err
	}
	var errs []problem.FieldError
	switch req.Kind {
	case store.KindAdmin:
		if req.Environment != "" {
			errs = append(errs, problem.FieldError{Path: "environment", Message: "admin keys are not bound to an environment"})
		}
	case store.KindSDK:
		if req.Environment == "" {
			errs = append(errs, problem.FieldError{Path: "environment", Message: "is required for an sdk key"})
		}
	default:
		errs = append(errs, problem.FieldError{Path: "kind", Message: `must be "admin" or "sdk"`})
	}
	if fe := checkText("name", req.Name, 200); fe != nil {
		errs = append(errs, *fe)
	}
	if len(errs) > 0 {
		return problem.Validation("invalid key", errs)
	}
	p := principal(c)
	var env *store.Environment
	if req.Kind == store.KindSDK {
		e, err := s.environment(c, req.Environment)
		if err != nil {
			return err
		}
		env = &e
	}
	var out createdKey
	err := s.store.InTx(c.Request().Context(), func(tx pgx.Tx) error {
		k, secret, err := store.CreateKey(c.Request().Context(), tx, p.TenantID, req.Kind, env, req.Name, &p.KeyID)
		if err != nil {
			return err
		}
		out = createdKey{APIKey: k, Secret: secret}
		var envID *uuid.UUID
		if env != nil {
			envID = &env.ID
		}
		return s.audit(c, tx, envID, "key.create", "api_key", k.ID.String(), nil, k)
	})
	if err != nil {
		return s.unavailable(err)
	}
	return c.JSON(http.StatusCreated, out)
}

func (s *Server) revokeKey(c echo.Context) error {
	id, err := uuid.Parse(c.Param("id"))
	if err != nil {
		return problem.New(http.StatusNotFound, "no such key")
	}
	p := principal(c)
	ctx := c.Request().Context()
	var after store.APIKey
	err = s.store.InTx(ctx, func(tx pgx.Tx) error {
		before, err := store.KeyByID(ctx, tx, p.TenantID, id)
		if err != nil {
			return err
		}
		if after, err = store.RevokeKey(ctx, tx, p.TenantID, id); err != nil {
			return err
		}
		return s.audit(c, tx, before.EnvironmentID, "key.revoke", "api_key", id.String(), before, after)
	})
	if errors.Is(err, store.ErrNotFound) {
		return problem.New(http.StatusNotFound, "no such key")
	}
	if err != nil {
		return s.unavailable(err)
	}
	// Every replica drops the key from its cache now; the cache TTL covers a lost message.
	s.keys.evict(id)
	if err := s.bus.Publish(ctx, channelKeyRevoked, []byte(id.String())); err != nil {
		s.logger.Warn("api: could not broadcast a key revocation; other replicas see it within the cache TTL", "err", err, "key", id)
	}
	return c.JSON(http.StatusOK, after)
}

func (s *Server) listAudit(c echo.Context) error {
	limit, err := page(c)
	if err != nil {
		return err
	}
	var before int64
	if cur := c.QueryParam("cursor"); cur != "" {
		if before, err = strconv.ParseInt(cur, 10, 64); err != nil || before <= 0 {
			return problem.Validation("invalid query", []problem.FieldError{{Path: "cursor", Message: "is not a cursor this API returned"}})
		}
	}
	entries, err := store.ListAudit(c.Request().Context(), s.pool, principal(c).TenantID, before, limit+1)
	if err != nil {
		return s.unavailable(err)
	}
	out := list[store.AuditEntry]{Data: entries}
	if len(entries) > limit {
		out.Data = entries[:limit]
		out.NextCursor = strconv.FormatInt(entries[limit-1].ID, 10)
	}
	return c.JSON(http.StatusOK, out)
}
