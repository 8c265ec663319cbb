package api

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"

	"github.com/labstack/echo/v4"

	"github.com/limitr/limitr/internal/customers"
	"github.com/limitr/limitr/internal/httpx/problem"
	"github.com/limitr/limitr/internal/store"
	"github.com/limitr/limitr/internal/validation"
	"github.com/limitr/limitr/internal/wire"
)

// Customers are managed per environment by the tenant's admin keys or the
// environment's SDK key (internal/customers).
//
//	POST   /v1/environments/:env/customers                            create
//	GET    /v1/environments/:env/customers                            list (cursor, limit)
//	GET    /v1/environments/:env/customers/:id                        get (id or alt id)
//	PATCH  /v1/environments/:env/customers/:id                        update profile fields
//	DELETE /v1/environments/:env/customers/:id                        delete
//	PUT    /v1/environments/:env/customers/:id/plan                   change plan
//	PUT    /v1/environments/:env/customers/:id/overrides/:entitlement set an override
//	DELETE /v1/environments/:env/customers/:id/overrides/:entitlement remove it
//	POST   /v1/environments/:env/customers/:id/topups                 apply a topup
//	PUT    /v1/environments/:env/customers/:id/voucher                set the voucher (replacing any)
//	GET    /v1/environments/:env/customers/:id/voucher                get it, with what was debited
//	DELETE /v1/environments/:env/customers/:id/voucher                remove it
//	PUT    /v1/environments/:env/customers/:id/caps/:cap              create or replace a cap (201 created, 200 replaced)
//	GET    /v1/environments/:env/customers/:id/caps                   list the caps
//	GET    /v1/environments/:env/customers/:id/caps/:cap              get a cap, with its committed usage
//	DELETE /v1/environments/:env/customers/:id/caps/:cap              remove it
//	POST   /v1/environments/:env/customers/:id/caps/:cap/reset        start it from zero (a new key)
func (s *Server) customerRoutes(g *echo.Group) {
	cg := g.Group("/environments/:env/customers")
	cg.POST("", s.createCustomer)
	cg.GET("", s.listCustomers)
	cg.GET("/:id", s.getCustomer)
	cg.PATCH("/:id", s.patchCustomer)
	cg.DELETE("/:id", s.deleteCustomer)
	cg.PUT("/:id/plan", s.setCustomerPlan)
	cg.PUT("/:id/overrides/:entitlement", s.putCustomerOverride)
	cg.DELETE("/:id/overrides/:entitlement", s.deleteCustomerOverride)
	cg.POST("/:id/topups", s.applyCustomerTopup)
	cg.PUT("/:id/voucher", s.putCustomerVoucher)
	cg.GET("/:id/voucher", s.getCustomerVoucher)
	cg.DELETE("/:id/voucher", s.deleteCustomerVoucher)
	cg.PUT("/:id/caps/:cap", s.putCustomerCap)
	cg.GET("/:id/caps", s.listCustomerCaps)
	cg.GET("/:id/caps/:cap", s.getCustomerCap)
	cg.DELETE("/:id/caps/:cap", s.deleteCustomerCap)
	cg.POST("/:id/caps/:cap/reset", s.resetCustomerCap)
}

func (s *Server) createCustomer(c echo.Context) error {
	env, err := s.environment(c, c.Param("env"))
	if err != nil {
		return err
	}
	var in customers.CreateInput
	if err := bindJSON(c, &in); err != nil {
		return err
	}
	out, err := s.customers.Create(c.Request().Context(), env, in)
	if err != nil {
		return customerProblem(err)
	}
	c.Response().Header().Set(echo.HeaderLocation, c.Request().URL.Path+"/"+url.PathEscape(out.ID))
	return c.JSON(http.StatusCreated, out)
}

func (s *Server) getCustomer(c echo.Context) error {
	env, id, err := s.customerTarget(c)
	if err != nil {
		return err
	}
	out, err := s.customers.Get(c.Request().Context(), env, id)
	if err != nil {
		return customerProblem(err)
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) listCustomers(c echo.Context) error {
	limit, err := page(c)
	if err != nil {
		return err
	}
	after := ""
	if cur := c.QueryParam("cursor"); cur != "" {
		b, err := base64.RawURLEncoding.DecodeString(cur)
		if err != nil || validation.ID("cursor", string(b)) != nil {
			return problem.Validation("invalid query", []problem.FieldError{{Path: "cursor", Message: "is not a cursor this API returned"}})
		}
		after = string(b)
	}
	env, err := s.environment(c, c.Param("env"))
	if err != nil {
		return err
	}
	cs, next, err := s.customers.List(c.Request().Context(), env, after, limit)
	if err != nil {
		return customerProblem(err)
	}
	out := list[wire.Customer]{Data: cs}
	if next != "" {
		out.NextCursor = base64.RawURLEncoding.EncodeToString([]byte(next))
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) patchCustomer(c echo.Context) error {
	env, id, err := s.customerTarget(c)
	if err != nil {
		return err
	}
	var in customers.UpdateInput
	if err := bindJSON(c, &in); err != nil {
		return err
	}
	out, err := s.customers.Update(c.Request().Context(), env, id, in)
	if err != nil {
		return customerProblem(err)
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) deleteCustomer(c echo.Context) error {
	env, id, err := s.customerTarget(c)
	if err != nil {
		return err
	}
	if err := s.customers.Delete(c.Request().Context(), env, id); err != nil {
		return customerProblem(err)
	}
	return c.NoContent(http.StatusNoContent)
}

func (s *Server) setCustomerPlan(c echo.Context) error {
	env, id, err := s.customerTarget(c)
	if err != nil {
		return err
	}
	var in customers.SetPlanInput
	if err := bindJSON(c, &in); err != nil {
		return err
	}
	out, err := s.customers.SetPlan(c.Request().Context(), env, id, in)
	if err != nil {
		return customerProblem(err)
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) putCustomerOverride(c echo.Context) error {
	env, id, err := s.customerTarget(c)
	if err != nil {
		return err
	}
	var in customers.OverrideInput
	if err := bindJSON(c, &in); err != nil {
		return err
	}
	ent, err := pathParam(c, "entitlement")
	if err != nil {
		return err
	}
	out, err := s.customers.SetOverride(c.Request().Context(), env, id, ent, in)
	if err != nil {
		return customerProblem(err)
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) deleteCustomerOverride(c echo.Context) error {
	env, id, err := s.customerTarget(c)
	if err != nil {
		return err
	}
	ent, err := pathParam(c, "entitlement")
	if err != nil {
		return err
	}
	if err := s.customers.RemoveOverride(c.Request().Context(), env, id, ent); err != nil {
		return customerProblem(err)
	}
	return c.NoContent(http.StatusNoContent)
}

func (s *Server) applyCustomerTopup(c echo.Context) error {
	env, id, err := s.customerTarget(c)
	if err != nil {
		return err
	}
	var in customers.TopupInput
	if err := bindJSON(c, &in); err != nil {
		return err
	}
	out, err := s.customers.ApplyTopup(c.Request().Context(), env, id, in)
	if err != nil {
		return customerProblem(err)
	}
	return c.JSON(http.StatusCreated, out)
}

func (s *Server) putCustomerVoucher(c echo.Context) error {
	env, id, err := s.customerTarget(c)
	if err != nil {
		return err
	}
	var in customers.VoucherInput
	if err := bindJSON(c, &in); err != nil {
		return err
	}
	out, err := s.customers.SetVoucher(c.Request().Context(), env, id, in)
	if err != nil {
		return customerProblem(err)
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) getCustomerVoucher(c echo.Context) error {
	env, id, err := s.customerTarget(c)
	if err != nil {
		return err
	}
	out, err := s.customers.GetVoucher(c.Request().Context(), env, id)
	if err != nil {
		return customerProblem(err)
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) deleteCustomerVoucher(c echo.Context) error {
	env, id, err := s.customerTarget(c)
	if err != nil {
		return err
	}
	if err := s.customers.RemoveVoucher(c.Request().Context(), env, id); err != nil {
		return customerProblem(err)
	}
	return c.NoContent(http.StatusNoContent)
}

func (s *Server) putCustomerCap(c echo.Context) error {
	env, id, err := s.customerTarget(c)
	if err != nil {
		return err
	}
	var in customers.CapInput
	if err := bindJSON(c, &in); err != nil {
		return err
	}
	capID, err := pathParam(c, "cap")
	if err != nil {
		return err
	}
	out, created, err := s.customers.PutCap(c.Request().Context(), env, id, capID, in)
	if err != nil {
		return customerProblem(err)
	}
	if created {
		return c.JSON(http.StatusCreated, out)
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) listCustomerCaps(c echo.Context) error {
	env, id, err := s.customerTarget(c)
	if err != nil {
		return err
	}
	out, err := s.customers.ListCaps(c.Request().Context(), env, id)
	if err != nil {
		return customerProblem(err)
	}
	return c.JSON(http.StatusOK, list[wire.CustomerCap]{Data: out})
}

func (s *Server) getCustomerCap(c echo.Context) error {
	env, id, err := s.customerTarget(c)
	if err != nil {
		return err
	}
	capID, err := pathParam(c, "cap")
	if err != nil {
		return err
	}
	out, err := s.customers.GetCap(c.Request().Context(), env, id, capID)
	if err != nil {
		return customerProblem(err)
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) deleteCustomerCap(c echo.Context) error {
	env, id, err := s.customerTarget(c)
	if err != nil {
		return err
	}
	capID, err := pathParam(c, "cap")
	if err != nil {
		return err
	}
	if err := s.customers.RemoveCap(c.Request().Context(), env, id, capID); err != nil {
		return customerProblem(err)
	}
	return c.NoContent(http.StatusNoContent)
}

func (s *Server) resetCustomerCap(c echo.Context) error {
	env, id, err := s.customerTarget(c)
	if err != nil {
		return err
	}
	if err := bindNothing(c); err != nil {
		return err
	}
	capID, err := pathParam(c, "cap")
	if err != nil {
		return err
	}
	out, err := s.customers.ResetCap(c.Request().Context(), env, id, capID)
	if err != nil {
		return customerProblem(err)
	}
	return c.JSON(http.StatusOK, out)
}

// pathParam returns a path parameter, percent-decoded. Echo routes on the raw path
// when the request escapes characters the default encoding would not, and then hands
// over the parameter still escaped.
func pathParam(c echo.Context, name string) (string, error) {
	v := c.Param(name)
	if c.Request().URL.RawPath == "" {
		return v, nil
	}
	u, err := url.PathUnescape(v)
	if err != nil {
		return "", problem.New(http.StatusBadRequest, fmt.Sprintf("malformed %s in the path", name))
	}
	return u, nil
}

// customerTarget resolves the environment and the customer id (or alt id) in the path.
// An id that no customer could have is a 404, like any unknown id.
func (s *Server) customerTarget(c echo.Context) (store.Environment, string, error) {
	env, err := s.environment(c, c.Param("env"))
	if err != nil {
		return store.Environment{}, "", err
	}
	id, err := pathParam(c, "id")
	if err != nil {
		return store.Environment{}, "", err
	}
	if validation.ID("id", id) != nil {
		return store.Environment{}, "", problem.New(http.StatusNotFound, "no such customer")
	}
	return env, id, nil
}
