package api

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/limitr/limitr/internal/analytics"
	"github.com/limitr/limitr/internal/billing"
	"github.com/limitr/limitr/internal/httpx/problem"
	"github.com/limitr/limitr/internal/policies/pgstore"
)

// Analytics (internal/analytics), for admin keys.
//
//	GET /v1/environments/:env/analytics/margins   revenue, cost, margin per group and interval (group_by, from, to, interval, sort, limit, cursor)
//	GET /v1/environments/:env/analytics/usage     units, calls, cost over time (customer, entitlement, from, to, interval)
//	GET /v1/environments/:env/customers/:id/margin the current period, per entitlement, live
func (s *Server) analyticsRoutes(g *echo.Group) {
	eg := g.Group("/environments/:env", adminOnly)
	eg.GET("/analytics/margins", s.getMargins)
	eg.GET("/analytics/usage", s.getUsageAnalytics)
	eg.GET("/customers/:id/margin", s.getCustomerMargin)
}

// analyticsProblem maps the analytics domain's errors.
func analyticsProblem(err error) error {
	var fe *analytics.FieldError
	switch {
	case errors.As(err, &fe):
		return problem.Validation("invalid query", []problem.FieldError{{Path: fe.Field, Message: fe.Message}})
	case errors.Is(err, analytics.ErrNotFound):
		return problem.New(http.StatusNotFound, err.Error())
	case errors.Is(err, billing.ErrNoPolicy), errors.Is(err, pgstore.ErrNoActivePolicy):
		return problem.New(http.StatusConflict, "the environment has no published policy").WithType("no-policy")
	}
	return err
}

// queryTimes reads the optional RFC 3339 times of a query.
func queryTimes(c echo.Context, names ...string) ([]time.Time, error) {
	out := make([]time.Time, len(names))
	var errs []problem.FieldError
	for i, n := range names {
		v := c.QueryParam(n)
		if v == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			errs = append(errs, problem.FieldError{Path: n, Message: "is not an RFC 3339 time"})
		}
		out[i] = t
	}
	if len(errs) > 0 {
		return nil, problem.Validation("invalid query", errs)
	}
	return out, nil
}

func (s *Server) getMargins(c echo.Context) error {
	env, err := s.environment(c, c.Param("env"))
	if err != nil {
		return err
	}
	times, err := queryTimes(c, "from", "to")
	if err != nil {
		return err
	}
	q := analytics.MarginsQuery{GroupBy: c.QueryParam("group_by"), From: times[0], To: times[1], Interval: c.QueryParam("interval"),
		Sort: c.QueryParam("sort"), Cursor: c.QueryParam("cursor")}
	if v := c.QueryParam("limit"); v != "" {
		if q.Limit, err = strconv.Atoi(v); err != nil || q.Limit == 0 {
			return problem.Validation("invalid query", []problem.FieldError{{Path: "limit", Message: "must be between 1 and 500"}})
		}
	}
	out, err := s.analytics.Margins(c.Request().Context(), env, q)
	if err != nil {
		return analyticsProblem(err)
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) getUsageAnalytics(c echo.Context) error {
	env, err := s.environment(c, c.Param("env"))
	if err != nil {
		return err
	}
	times, err := queryTimes(c, "from", "to")
	if err != nil {
		return err
	}
	q := analytics.UsageQuery{Customer: c.QueryParam("customer"), Entitlement: c.QueryParam("entitlement"), From: times[0], To: times[1],
		Interval: c.QueryParam("interval")}
	out, err := s.analytics.Usage(c.Request().Context(), env, q)
	if err != nil {
		return analyticsProblem(err)
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) getCustomerMargin(c echo.Context) error {
	env, id, err := s.customerTarget(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	cust, err := s.customers.Get(ctx, env, id) // by id or alt id
	if err != nil {
		return customerProblem(err)
	}
	out, err := s.analytics.CustomerMargin(ctx, env, cust.ID)
	if err != nil {
		return analyticsProblem(err)
	}
	return c.JSON(http.StatusOK, out)
}
