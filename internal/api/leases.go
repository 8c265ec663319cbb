package api

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/limitr/limitr/internal/wire"
)

// Allowance leases (internal/leases), for SDK keys only (the environment comes from
// the key; admin keys get 403):
//
//	POST /v1/sdk/leases          grant or renew leases (wire.LeaseRequest → wire.LeaseReply)
//	POST /v1/sdk/leases/return   give back every lease of an instance (wire.LeaseReturn → 204)
func (s *Server) leaseRoutes(g *echo.Group) {
	g.POST("/sdk/leases", s.postLeases, sdkOnly)
	g.POST("/sdk/leases/return", s.postLeaseReturn, sdkOnly)
}

// postLeases grants an instance's asks atomically, a grant per ask in order; an ask
// naming an unknown customer gets its error in its grant, the others proceed.
func (s *Server) postLeases(c echo.Context) error {
	var in wire.LeaseRequest
	if err := bindJSON(c, &in); err != nil {
		return err
	}
	reply, err := s.leases.Grant(c.Request().Context(), sdkEnvironment(c), in)
	if err != nil {
		return commonProblem(err)
	}
	c.Response().Header().Set(echo.HeaderCacheControl, "private, no-store")
	return c.JSON(http.StatusOK, reply)
}

// postLeaseReturn removes every lease of the instance: their unused parts are free for
// the fleet at once.
func (s *Server) postLeaseReturn(c echo.Context) error {
	var in wire.LeaseReturn
	if err := bindJSON(c, &in); err != nil {
		return err
	}
	if err := s.leases.Return(c.Request().Context(), sdkEnvironment(c), in.InstanceID); err != nil {
		return commonProblem(err)
	}
	return c.NoContent(http.StatusNoContent)
}
