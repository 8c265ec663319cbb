package api

import (
	"bytes"
	"errors"
	"net/http"
	"slices"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/limitr/limitr/internal/alerts"
	"github.com/limitr/limitr/internal/httpx/problem"
	"github.com/limitr/limitr/internal/store"
	"github.com/limitr/limitr/internal/validation"
	"github.com/limitr/limitr/internal/wire"
)

// Alerts (internal/alerts), for admin keys; SDK keys forward engine events.
//
//	POST, GET              /v1/environments/:env/alert-channels             create, list
//	GET, PATCH, DELETE     /v1/environments/:env/alert-channels/:id
//	POST                   /v1/environments/:env/alert-channels/:id/test    send a test message now
//	POST, GET              /v1/environments/:env/alert-rules                create, list
//	GET, PATCH, DELETE     /v1/environments/:env/alert-rules/:id
//	GET                    /v1/environments/:env/alerts                     what fired (limit, before, customer)
//	GET                    /v1/environments/:env/alert-deliveries           (limit, before, alert, status)
//	GET                    /v1/environments/:env/alert-deliveries/:id       with its attempts
//	POST                   /v1/environments/:env/alert-deliveries/:id/resend
//	POST                   /v1/sdk/events                                   an SDK's engine events (wire.EventBatch)
func (s *Server) alertRoutes(g *echo.Group) {
	eg := g.Group("/environments/:env", adminOnly)
	eg.POST("/alert-channels", s.createAlertChannel)
	eg.GET("/alert-channels", s.listAlertChannels)
	eg.GET("/alert-channels/:id", s.getAlertChannel)
	eg.PATCH("/alert-channels/:id", s.patchAlertChannel)
	eg.DELETE("/alert-channels/:id", s.deleteAlertChannel)
	eg.POST("/alert-channels/:id/test", s.testAlertChannel)
	eg.POST("/alert-rules", s.createAlertRule)
	eg.GET("/alert-rules", s.listAlertRules)
	eg.GET("/alert-rules/:id", s.getAlertRule)
	eg.PATCH("/alert-rules/:id", s.patchAlertRule)
	eg.DELETE("/alert-rules/:id", s.deleteAlertRule)
	eg.GET("/alerts", s.listAlerts)
	eg.GET("/alert-deliveries", s.listAlertDeliveries)
	eg.GET("/alert-deliveries/:id", s.getAlertDelivery)
	eg.POST("/alert-deliveries/:id/resend", s.resendAlertDelivery)
	g.POST("/sdk/events", s.postEvents, sdkOnly)
}

// alertProblem maps the alerts domain's errors.
func alertProblem(err error) error {
	switch {
	case errors.Is(err, alerts.ErrNotFound):
		return problem.New(http.StatusNotFound, err.Error())
	case errors.Is(err, alerts.ErrConflict):
		pb := problem.New(http.StatusConflict, err.Error()).WithType("conflict")
		pb.Errors = []problem.FieldError{{Path: "name", Message: "is already used in this environment"}}
		return pb
	case errors.Is(err, alerts.ErrEphemeralKeyring):
		return problem.New(http.StatusConflict, err.Error()+" (set LIMITR_SECRET_KEY on the API and the worker)")
	case errors.Is(err, alerts.ErrNotResendable):
		return problem.New(http.StatusConflict, err.Error())
	}
	return commonProblem(err)
}

// alertTarget resolves the environment and the :id of an alert resource; an id that
// is not a UUID names nothing (404).
func (s *Server) alertTarget(c echo.Context, what string) (store.Environment, uuid.UUID, error) {
	env, err := s.environment(c, c.Param("env"))
	if err != nil {
		return env, uuid.Nil, err
	}
	id, err := uuid.Parse(c.Param("id"))
	if err != nil {
		return env, uuid.Nil, problem.New(http.StatusNotFound, "no such "+what)
	}
	return env, id, nil
}

func (s *Server) createAlertChannel(c echo.Context) error {
	env, err := s.environment(c, c.Param("env"))
	if err != nil {
		return err
	}
	var in alerts.ChannelInput
	if err := bindJSON(c, &in); err != nil {
		return err
	}
	out, err := s.alerts.CreateChannel(c.Request().Context(), env, in)
	if err != nil {
		return alertProblem(err)
	}
	c.Response().Header().Set(echo.HeaderLocation, c.Request().URL.Path+"/"+out.ID.String())
	return c.JSON(http.StatusCreated, out)
}

func (s *Server) listAlertChannels(c echo.Context) error {
	env, err := s.environment(c, c.Param("env"))
	if err != nil {
		return err
	}
	out, err := s.alerts.Channels(c.Request().Context(), env)
	if err != nil {
		return alertProblem(err)
	}
	return c.JSON(http.StatusOK, list[alerts.Channel]{Data: out})
}

func (s *Server) getAlertChannel(c echo.Context) error {
	env, id, err := s.alertTarget(c, "alert channel")
	if err != nil {
		return err
	}
	out, err := s.alerts.Channel(c.Request().Context(), env, id)
	if err != nil {
		return alertProblem(err)
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) patchAlertChannel(c echo.Context) error {
	env, id, err := s.alertTarget(c, "alert channel")
	if err != nil {
		return err
	}
	var in alerts.ChannelInput
	if err := bindJSON(c, &in); err != nil {
		return err
	}
	out, err := s.alerts.UpdateChannel(c.Request().Context(), env, id, in)
	if err != nil {
		return alertProblem(err)
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) deleteAlertChannel(c echo.Context) error {
	env, id, err := s.alertTarget(c, "alert channel")
	if err != nil {
		return err
	}
	if err := s.alerts.DeleteChannel(c.Request().Context(), env, id); err != nil {
		return alertProblem(err)
	}
	return c.NoContent(http.StatusNoContent)
}

// testAlertChannel sends a test message now and reports what the destination said:
// 200 whether or not it took it.
func (s *Server) testAlertChannel(c echo.Context) error {
	env, id, err := s.alertTarget(c, "alert channel")
	if err != nil {
		return err
	}
	if err := bindNothing(c); err != nil {
		return err
	}
	out, err := s.alerts.TestChannel(c.Request().Context(), env, id)
	if err != nil {
		return alertProblem(err)
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) createAlertRule(c echo.Context) error {
	env, err := s.environment(c, c.Param("env"))
	if err != nil {
		return err
	}
	var in alerts.RuleInput
	if err := bindJSON(c, &in); err != nil {
		return err
	}
	out, err := s.alerts.CreateRule(c.Request().Context(), env, in)
	if err != nil {
		return alertProblem(err)
	}
	c.Response().Header().Set(echo.HeaderLocation, c.Request().URL.Path+"/"+out.ID.String())
	return c.JSON(http.StatusCreated, out)
}

func (s *Server) listAlertRules(c echo.Context) error {
	env, err := s.environment(c, c.Param("env"))
	if err != nil {
		return err
	}
	out, err := s.alerts.Rules(c.Request().Context(), env)
	if err != nil {
		return alertProblem(err)
	}
	return c.JSON(http.StatusOK, list[*alerts.Rule]{Data: out})
}

func (s *Server) getAlertRule(c echo.Context) error {
	env, id, err := s.alertTarget(c, "alert rule")
	if err != nil {
		return err
	}
	out, err := s.alerts.Rule(c.Request().Context(), env, id)
	if err != nil {
		return alertProblem(err)
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) patchAlertRule(c echo.Context) error {
	env, id, err := s.alertTarget(c, "alert rule")
	if err != nil {
		return err
	}
	var in alerts.RuleInput
	if err := bindJSON(c, &in); err != nil {
		return err
	}
	out, err := s.alerts.UpdateRule(c.Request().Context(), env, id, in)
	if err != nil {
		return alertProblem(err)
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) deleteAlertRule(c echo.Context) error {
	env, id, err := s.alertTarget(c, "alert rule")
	if err != nil {
		return err
	}
	if err := s.alerts.DeleteRule(c.Request().Context(), env, id); err != nil {
		return alertProblem(err)
	}
	return c.NoContent(http.StatusNoContent)
}

// alertPage reads ?limit= and ?before= (the next_cursor of the previous page).
func alertPage(c echo.Context) (alerts.Page, int, error) {
	limit, err := page(c)
	if err != nil {
		return alerts.Page{}, 0, err
	}
	p := alerts.Page{Limit: limit + 1}
	if v := c.QueryParam("before"); v != "" {
		id, err := uuid.Parse(v)
		if err != nil {
			return p, 0, problem.Validation("invalid query", []problem.FieldError{{Path: "before", Message: "is not a cursor this API returned"}})
		}
		p.Before = &id
	}
	return p, limit, nil
}

// uuidPageOf cuts items, read with limit+1, into a page whose next cursor is the id of
// its last item.
func uuidPageOf[T any](items []T, limit int, id func(T) uuid.UUID) list[T] {
	out := list[T]{Data: items}
	if len(items) > limit {
		out.Data = items[:limit]
		out.NextCursor = id(items[limit-1]).String()
	}
	return out
}

// listAlerts pages what fired, newest first, optionally for one customer.
func (s *Server) listAlerts(c echo.Context) error {
	env, err := s.environment(c, c.Param("env"))
	if err != nil {
		return err
	}
	p, limit, err := alertPage(c)
	if err != nil {
		return err
	}
	if p.CustomerID = c.QueryParam("customer"); p.CustomerID != "" {
		if fe := validation.Required("customer", p.CustomerID); fe != nil {
			return problem.Validation("invalid query", []problem.FieldError{{Path: fe.Path, Message: fe.Message}})
		}
	}
	out, err := s.alerts.Alerts(c.Request().Context(), env, p)
	if err != nil {
		return alertProblem(err)
	}
	return c.JSON(http.StatusOK, uuidPageOf(out, limit, func(a alerts.Alert) uuid.UUID { return a.ID }))
}

var deliveryStatuses = []string{"pending", "sending", "delivered", "dead"}

// listAlertDeliveries pages deliveries newest first, optionally of one alert or in one
// status.
func (s *Server) listAlertDeliveries(c echo.Context) error {
	env, err := s.environment(c, c.Param("env"))
	if err != nil {
		return err
	}
	p, limit, err := alertPage(c)
	if err != nil {
		return err
	}
	var errs []problem.FieldError
	if v := c.QueryParam("alert"); v != "" {
		if id, err := uuid.Parse(v); err != nil {
			errs = append(errs, problem.FieldError{Path: "alert", Message: "must be an alert id"})
		} else {
			p.AlertID = &id
		}
	}
	if p.Status = c.QueryParam("status"); p.Status != "" && !slices.Contains(deliveryStatuses, p.Status) {
		errs = append(errs, problem.FieldError{Path: "status", Message: "must be pending, sending, delivered or dead"})
	}
	if len(errs) > 0 {
		return problem.Validation("invalid query", errs)
	}
	out, err := s.alerts.Deliveries(c.Request().Context(), env, p)
	if err != nil {
		return alertProblem(err)
	}
	return c.JSON(http.StatusOK, uuidPageOf(out, limit, func(d alerts.Delivery) uuid.UUID { return d.ID }))
}

func (s *Server) getAlertDelivery(c echo.Context) error {
	env, id, err := s.alertTarget(c, "alert delivery")
	if err != nil {
		return err
	}
	out, err := s.alerts.Delivery(c.Request().Context(), env, id)
	if err != nil {
		return alertProblem(err)
	}
	return c.JSON(http.StatusOK, out)
}

// resendAlertDelivery sends a delivered or dead delivery again (409 while it is in
// progress).
func (s *Server) resendAlertDelivery(c echo.Context) error {
	env, id, err := s.alertTarget(c, "alert delivery")
	if err != nil {
		return err
	}
	if err := bindNothing(c); err != nil {
		return err
	}
	out, err := s.alerts.Resend(c.Request().Context(), env, id)
	if err != nil {
		return alertProblem(err)
	}
	return c.JSON(http.StatusOK, out)
}

// postEvents takes a batch of engine events an SDK forwards (gzip or plain JSON
// wire.EventBatch), once per (instance, sequence): a batch seen before answers 200
// with duplicate=true and writes nothing.
func (s *Server) postEvents(c echo.Context) error {
	env := sdkEnvironment(c)
	raw, err := readBatchBody(c.Request(), "event batch")
	if err != nil {
		return err
	}
	if !utf8.Valid(raw) {
		return problem.New(http.StatusBadRequest, "request body is not valid UTF-8")
	}
	if trimmed := bytes.TrimSpace(raw); len(trimmed) == 0 || trimmed[0] != '{' {
		return problem.New(http.StatusBadRequest, "request body must be a JSON event batch object")
	}
	var in wire.EventBatch
	if err := validation.DecodeJSON(raw, &in); err != nil {
		return commonProblem(err)
	}
	ack, err := s.alerts.IngestEvents(c.Request().Context(), env, in)
	if err != nil {
		return alertProblem(err)
	}
	return c.JSON(http.StatusOK, ack)
}
