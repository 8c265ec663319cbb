package api

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"unicode/utf8"

	"github.com/labstack/echo/v4"

	"github.com/limitr/limitr/internal/httpx/problem"
	"github.com/limitr/limitr/internal/store"
	"github.com/limitr/limitr/internal/validation"
)

// readAll reads the request body, mapping both ways a body can be too large (the
// http.MaxBytesReader error, and echo's BodyLimit error when there is no Content-Length)
// to 413.
func readAll(c echo.Context) ([]byte, error) {
	body, err := io.ReadAll(c.Request().Body)
	if err != nil {
		var tooLarge *http.MaxBytesError
		var he *echo.HTTPError
		switch {
		case errors.As(err, &tooLarge):
			return nil, problem.New(http.StatusRequestEntityTooLarge, fmt.Sprintf("request body is larger than %d bytes", tooLarge.Limit))
		case errors.As(err, &he) && he.Code == http.StatusRequestEntityTooLarge:
			return nil, problem.New(http.StatusRequestEntityTooLarge, "request body is larger than the server accepts")
		}
		return nil, problem.New(http.StatusBadRequest, "could not read the request body")
	}
	if !utf8.Valid(body) {
		return nil, problem.New(http.StatusBadRequest, "request body is not valid UTF-8")
	}
	return body, nil
}

// bindJSON decodes a JSON object body strictly: unknown fields, wrong types and trailing
// data are errors that name the field.
func bindJSON(c echo.Context, dst any) error {
	body, err := readAll(c)
	if err != nil {
		return err
	}
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return problem.New(http.StatusBadRequest, "request body is empty: send a JSON object")
	}
	if trimmed[0] != '{' {
		return problem.New(http.StatusBadRequest, "request body must be a JSON object")
	}
	return commonProblem(validation.DecodeJSON(body, dst))
}

// bindNothing reads the body of a request that takes no parameters: none, null or {}
// is fine; anything else is an error naming what was sent, never silently ignored.
func bindNothing(c echo.Context) error {
	body, err := readAll(c)
	if err != nil {
		return err
	}
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 || string(trimmed) == "null" {
		return nil
	}
	if trimmed[0] != '{' {
		return problem.New(http.StatusBadRequest, "request body must be empty or a JSON object")
	}
	var none struct{}
	return commonProblem(validation.DecodeJSON(body, &none))
}

// environment resolves an environment by name for the principal: admin keys reach every
// environment of their tenant; SDK keys only their own.
func (s *Server) environment(c echo.Context, name string) (store.Environment, error) {
	p := principal(c)
	if fe := validation.ID("environment", name); fe != nil {
		return store.Environment{}, problem.New(http.StatusNotFound, "no such environment")
	}
	if !p.IsAdmin() && p.Environment != name {
		return store.Environment{}, problem.New(http.StatusForbidden, fmt.Sprintf("this SDK key is bound to environment %q", p.Environment))
	}
	env, err := store.EnvironmentByName(c.Request().Context(), s.pool, p.TenantID, name)
	if errors.Is(err, store.ErrNotFound) {
		return store.Environment{}, problem.New(http.StatusNotFound, fmt.Sprintf("no environment %q", name))
	}
	if err != nil {
		return store.Environment{}, commonProblem(err)
	}
	return env, nil
}

// page reads ?limit= (1..200, default 50).
func page(c echo.Context) (int, error) {
	limit := 50
	if v := c.QueryParam("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 200 {
			return 0, problem.Validation("invalid query", []problem.FieldError{{Path: "limit", Message: "must be a whole number from 1 to 200"}})
		}
		limit = n
	}
	return limit, nil
}

// idPage reads ?limit= and ?cursor= for lists paged newest first by a numeric id: the
// cursor is the last id of the previous page (exclusive; 0: from the newest).
func idPage(c echo.Context) (limit int, before int64, err error) {
	if limit, err = page(c); err != nil {
		return 0, 0, err
	}
	if cur := c.QueryParam("cursor"); cur != "" {
		if before, err = strconv.ParseInt(cur, 10, 64); err != nil || before <= 0 {
			return 0, 0, problem.Validation("invalid query", []problem.FieldError{{Path: "cursor", Message: "is not a cursor this API returned"}})
		}
	}
	return limit, before, nil
}

// pageOf cuts items, read with limit+1 to see whether more follow, into a page whose
// next cursor is the id of its last item.
func pageOf[T any](items []T, limit int, id func(T) int64) list[T] {
	out := list[T]{Data: items}
	if len(items) > limit {
		out.Data = items[:limit]
		out.NextCursor = strconv.FormatInt(id(items[limit-1]), 10)
	}
	return out
}

// list is the shape of every paginated response.
type list[T any] struct {
	Data       []T    `json:"data"`
	NextCursor string `json:"next_cursor,omitempty"`
}
