package web

import (
	"net/http"

	"github.com/labstack/echo/v4"
)

// Spend caps on the customer page: the caps the control plane holds for a customer
// (every SDK instance enforces them against the fleet's total), with what was
// committed of each in its newest period. Editors reset or remove one; creating caps
// stays with the API and the SDK, which take the full configuration.

// resetCustomerCap starts a customer's cap from zero (a new key), once confirmed.
func (s *Server) resetCustomerCap(c echo.Context) error {
	id, capID := unescapedParam(c, "id"), unescapedParam(c, "cap")
	if !confirmedPost(c) {
		return s.confirmStep(c, confirmData{Title: "Reset spend cap", Message: "Start spend cap " + capID + " of customer " + id +
			" from zero? What was consumed of it no longer counts, on every SDK instance.", Button: "Reset cap", Cancel: customerURL(id)})
	}
	env, err := s.environment(c)
	if err != nil {
		return err
	}
	if _, err := s.deps.Customers.ResetCap(c.Request().Context(), env, id, capID); err != nil {
		return s.customerFailure(c, id, err)
	}
	return c.Redirect(http.StatusSeeOther, customerURL(id)+"?done=capreset")
}

// removeCustomerCap removes a customer's cap, once confirmed.
func (s *Server) removeCustomerCap(c echo.Context) error {
	id, capID := unescapedParam(c, "id"), unescapedParam(c, "cap")
	if !confirmedPost(c) {
		return s.confirmStep(c, confirmData{Title: "Remove spend cap", Message: "Remove spend cap " + capID + " of customer " + id +
			"? Calls are no longer held to it.", Button: "Remove cap", Danger: true, Cancel: customerURL(id)})
	}
	env, err := s.environment(c)
	if err != nil {
		return err
	}
	if err := s.deps.Customers.RemoveCap(c.Request().Context(), env, id, capID); err != nil {
		return s.customerFailure(c, id, err)
	}
	return c.Redirect(http.StatusSeeOther, customerURL(id)+"?done=capremoved")
}
