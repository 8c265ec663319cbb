package api

import (
	"bytes"
	"context"
	"errors"
	"net/http"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/limitr/limitr/internal/billing"
	"github.com/limitr/limitr/internal/billing/document"
	"github.com/limitr/limitr/internal/billing/stripe"
	"github.com/limitr/limitr/internal/billing/stripesync"
	"github.com/limitr/limitr/internal/customers"
	"github.com/limitr/limitr/internal/httpx/problem"
	"github.com/limitr/limitr/internal/store"
)

func (s *Server) billingRoutes(g *echo.Group) {
	eg := g.Group("/environments/:env", adminOnly)
	eg.GET("/billing", s.getBillingSettings)
	eg.PUT("/billing", s.putBillingSettings)
	eg.GET("/customers/:id/invoices/upcoming", s.upcomingInvoice)
	eg.GET("/invoices", s.listInvoices)
	eg.GET("/invoices/:invoice", s.getInvoice)
	eg.GET("/invoices/:invoice/document", s.invoiceDocument)
	eg.POST("/invoices/:invoice/finalize", s.invoiceAction(s.billing.Finalize))
	eg.POST("/invoices/:invoice/void", s.invoiceAction(s.billing.Void))
	eg.POST("/invoices/:invoice/mark-paid", s.invoiceAction(s.billing.MarkPaid))
	eg.POST("/invoices/:invoice/mark-uncollectible", s.invoiceAction(s.billing.MarkUncollectible))
	eg.GET("/invoices/:invoice/credit-notes", s.listCreditNotes)
	eg.POST("/invoices/:invoice/credit-notes", s.createCreditNote)
	eg.POST("/test-clocks", s.createTestClock)
	eg.GET("/test-clocks/:clock", s.getTestClock)
	eg.POST("/test-clocks/:clock/advance", s.advanceTestClock)
	eg.GET("/integrations/stripe", s.getStripe)
	eg.PUT("/integrations/stripe", s.putStripe)
	eg.DELETE("/integrations/stripe", s.deleteStripe)
}

// billingProblem maps the billing domain's errors.
func billingProblem(err error) error {
	var te *billing.TransitionError
	switch {
	case errors.As(err, &te):
		return problem.New(http.StatusConflict, te.Error())
	case errors.Is(err, billing.ErrNotFound):
		return problem.New(http.StatusNotFound, err.Error())
	case errors.Is(err, billing.ErrLiveEnvironment):
		return problem.New(http.StatusConflict, err.Error()+": mark the environment as not live, or use a test environment")
	case errors.Is(err, billing.ErrClockAdvancing):
		return problem.New(http.StatusConflict, err.Error()+": wait until its status is ready")
	case errors.Is(err, billing.ErrNoPolicy):
		return problem.New(http.StatusConflict, err.Error()+": publish a policy first")
	case errors.Is(err, customers.ErrNotFound):
		return customerProblem(err)
	case errors.Is(err, stripesync.ErrNotConnected):
		return problem.New(http.StatusNotFound, err.Error())
	case errors.Is(err, stripesync.ErrEphemeralKeyring):
		return problem.New(http.StatusConflict, err.Error()+" (set LIMITR_SECRET_KEY on the API and the worker)")
	}
	return commonProblem(err)
}

func (s *Server) getBillingSettings(c echo.Context) error {
	env, err := s.environment(c, c.Param("env"))
	if err != nil {
		return err
	}
	out, err := s.billing.Settings(c.Request().Context(), env)
	if err != nil {
		return billingProblem(err)
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) putBillingSettings(c echo.Context) error {
	env, err := s.environment(c, c.Param("env"))
	if err != nil {
		return err
	}
	var in billing.SettingsInput
	if err := bindJSON(c, &in); err != nil {
		return err
	}
	out, err := s.billing.PutSettings(c.Request().Context(), env, in)
	if err != nil {
		return billingProblem(err)
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) upcomingInvoice(c echo.Context) error {
	env, err := s.environment(c, c.Param("env"))
	if err != nil {
		return err
	}
	out, err := s.billing.Upcoming(c.Request().Context(), env, c.Param("id"))
	if err != nil {
		return billingProblem(err)
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) listInvoices(c echo.Context) error {
	env, err := s.environment(c, c.Param("env"))
	if err != nil {
		return err
	}
	limit, err := page(c)
	if err != nil {
		return err
	}
	f := billing.InvoiceFilter{Customer: c.QueryParam("customer"), Status: c.QueryParam("status"), After: c.QueryParam("cursor"), Limit: limit}
	items, next, err := s.billing.List(c.Request().Context(), env, f)
	if err != nil {
		return billingProblem(err)
	}
	return c.JSON(http.StatusOK, list[billing.Invoice]{Data: items, NextCursor: next})
}

func (s *Server) getInvoice(c echo.Context) error {
	env, err := s.environment(c, c.Param("env"))
	if err != nil {
		return err
	}
	out, err := s.billing.Get(c.Request().Context(), env, c.Param("invoice"))
	if err != nil {
		return billingProblem(err)
	}
	return c.JSON(http.StatusOK, out)
}

// invoiceDocument serves an invoice, with its credit notes, as a printable HTML page.
func (s *Server) invoiceDocument(c echo.Context) error {
	env, err := s.environment(c, c.Param("env"))
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	inv, err := s.billing.Get(ctx, env, c.Param("invoice"))
	if err != nil {
		return billingProblem(err)
	}
	notes, err := s.billing.CreditNotes(ctx, env, inv.ID)
	if err != nil {
		return billingProblem(err)
	}
	var page bytes.Buffer
	if err := document.Render(&page, inv, notes); err != nil {
		return err
	}
	c.Response().Header().Set("Content-Security-Policy", document.ContentSecurityPolicy)
	return c.Blob(http.StatusOK, "text/html; charset=utf-8", page.Bytes())
}

// invoiceAction serves a POST that moves an invoice through its lifecycle.
func (s *Server) invoiceAction(op func(ctx context.Context, env store.Environment, id string) (billing.Invoice, error)) echo.HandlerFunc {
	return func(c echo.Context) error {
		env, err := s.environment(c, c.Param("env"))
		if err != nil {
			return err
		}
		if err := bindNothing(c); err != nil {
			return err
		}
		out, err := op(c.Request().Context(), env, c.Param("invoice"))
		if err != nil {
			return billingProblem(err)
		}
		return c.JSON(http.StatusOK, out)
	}
}

func (s *Server) listCreditNotes(c echo.Context) error {
	env, err := s.environment(c, c.Param("env"))
	if err != nil {
		return err
	}
	out, err := s.billing.CreditNotes(c.Request().Context(), env, c.Param("invoice"))
	if err != nil {
		return billingProblem(err)
	}
	return c.JSON(http.StatusOK, list[billing.CreditNote]{Data: out})
}

func (s *Server) createCreditNote(c echo.Context) error {
	env, err := s.environment(c, c.Param("env"))
	if err != nil {
		return err
	}
	var in billing.CreditNoteInput
	if err := bindJSON(c, &in); err != nil {
		return err
	}
	out, err := s.billing.CreateCreditNote(c.Request().Context(), env, c.Param("invoice"), in)
	if err != nil {
		return billingProblem(err)
	}
	return c.JSON(http.StatusCreated, out)
}

func (s *Server) createTestClock(c echo.Context) error {
	env, err := s.environment(c, c.Param("env"))
	if err != nil {
		return err
	}
	var in billing.TestClockInput
	if err := bindJSON(c, &in); err != nil {
		return err
	}
	out, err := s.billing.CreateTestClock(c.Request().Context(), env, in)
	if err != nil {
		return billingProblem(err)
	}
	return c.JSON(http.StatusCreated, out)
}

func (s *Server) getTestClock(c echo.Context) error {
	env, err := s.environment(c, c.Param("env"))
	if err != nil {
		return err
	}
	out, err := s.billing.GetTestClock(c.Request().Context(), env, c.Param("clock"))
	if err != nil {
		return billingProblem(err)
	}
	return c.JSON(http.StatusOK, out)
}

// advanceTestClock moves the clock and answers at once with status "advancing"; the
// billing that became due runs in the background (and, should this process stop
// first, on a worker's next pass), after which the clock reports "ready".
func (s *Server) advanceTestClock(c echo.Context) error {
	env, err := s.environment(c, c.Param("env"))
	if err != nil {
		return err
	}
	var in billing.AdvanceInput
	if err := bindJSON(c, &in); err != nil {
		return err
	}
	out, err := s.billing.AdvanceTestClock(c.Request().Context(), env, c.Param("clock"), in)
	if err != nil {
		return billingProblem(err)
	}
	go func() {
		if _, err := s.billing.RunTestClock(s.ctx, env, out.ID); err != nil && s.ctx.Err() == nil {
			s.logger.Error("api: test clock run failed; a worker retries it", "clock", out.ID, "err", err)
		}
	}()
	return c.JSON(http.StatusOK, out)
}

func (s *Server) getStripe(c echo.Context) error {
	env, err := s.environment(c, c.Param("env"))
	if err != nil {
		return err
	}
	out, err := s.stripe.Connection(c.Request().Context(), env)
	if err != nil {
		return billingProblem(err)
	}
	return c.JSON(http.StatusOK, out)
}

// putStripe connects the environment to a Stripe account. The secrets are sealed and
// never returned.
func (s *Server) putStripe(c echo.Context) error {
	env, err := s.environment(c, c.Param("env"))
	if err != nil {
		return err
	}
	var in stripesync.ConnectInput
	if err := bindJSON(c, &in); err != nil {
		return err
	}
	out, err := s.stripe.Connect(c.Request().Context(), env, in)
	if err != nil {
		return billingProblem(err)
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) deleteStripe(c echo.Context) error {
	env, err := s.environment(c, c.Param("env"))
	if err != nil {
		return err
	}
	if err := s.stripe.Disconnect(c.Request().Context(), env); err != nil {
		return billingProblem(err)
	}
	return c.NoContent(http.StatusNoContent)
}

// stripeWebhook takes a Stripe event for an environment: a bad signature is a 400 and
// changes nothing; a redelivered event is answered 200 and ignored.
func (s *Server) stripeWebhook(c echo.Context) error {
	envID, err := uuid.Parse(c.Param("environment_id"))
	if err != nil {
		return problem.New(http.StatusNotFound, "no environment connected to Stripe has this id")
	}
	body, err := readAll(c)
	if err != nil {
		return err
	}
	out, err := s.stripe.HandleWebhook(c.Request().Context(), envID, body, c.Request().Header.Get("Stripe-Signature"))
	switch {
	case errors.Is(err, stripesync.ErrUnknownEnvironment):
		return problem.New(http.StatusNotFound, err.Error())
	case errors.Is(err, stripe.ErrBadSignature), errors.Is(err, stripe.ErrMalformedEvent):
		return problem.New(http.StatusBadRequest, err.Error())
	case err != nil:
		return billingProblem(err)
	}
	return c.JSON(http.StatusOK, out)
}
