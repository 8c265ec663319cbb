package api

import (
	"errors"
	"net/http"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/limitr/limitr/internal/analytics/simulate"
	"github.com/limitr/limitr/internal/httpx/problem"
	"github.com/limitr/limitr/internal/policies/pgstore"
	"github.com/limitr/limitr/internal/store"
)

// Simulation endpoints (what-if replay, internal/analytics/simulate).
//
//	POST /v1/environments/:env/simulations       queue a simulation: 202 (admin)
//	GET  /v1/environments/:env/simulations       list them, newest first, without results (admin)
//	GET  /v1/environments/:env/simulations/:id   one, with its status and report (admin)
func (s *Server) simulationRoutes(g *echo.Group) {
	g.POST("/environments/:env/simulations", s.createSimulation, adminOnly)
	g.GET("/environments/:env/simulations", s.listSimulations, adminOnly)
	g.GET("/environments/:env/simulations/:id", s.getSimulation, adminOnly)
}

func (s *Server) createSimulation(c echo.Context) error {
	env, err := s.environment(c, c.Param("env"))
	if err != nil {
		return err
	}
	var in simulate.CreateInput
	if err := bindJSON(c, &in); err != nil {
		return err
	}
	sim, err := s.simulations.Create(c.Request().Context(), env, in)
	if err != nil {
		return simulationProblem(err)
	}
	c.Response().Header().Set(echo.HeaderLocation, "/v1/environments/"+env.Name+"/simulations/"+sim.ID.String())
	return c.JSON(http.StatusAccepted, sim)
}

func (s *Server) getSimulation(c echo.Context) error {
	env, err := s.environment(c, c.Param("env"))
	if err != nil {
		return err
	}
	id, err := uuid.Parse(c.Param("id"))
	if err != nil {
		return problem.New(http.StatusNotFound, "no such simulation")
	}
	sim, err := s.simulations.Get(c.Request().Context(), env, id)
	if err != nil {
		return simulationProblem(err)
	}
	return c.JSON(http.StatusOK, sim)
}

func (s *Server) listSimulations(c echo.Context) error {
	env, err := s.environment(c, c.Param("env"))
	if err != nil {
		return err
	}
	limit, before, err := idPage(c)
	if err != nil {
		return err
	}
	sims, err := s.simulations.List(c.Request().Context(), env, before, limit+1)
	if err != nil {
		return simulationProblem(err)
	}
	return c.JSON(http.StatusOK, pageOf(sims, limit, simulate.Simulation.Seq))
}

// simulationProblem maps the simulations domain's errors; an invalid candidate
// document is the policy's 422 with its document paths.
func simulationProblem(err error) error {
	switch {
	case errors.Is(err, simulate.ErrNotFound):
		return problem.New(http.StatusNotFound, "no such simulation")
	case errors.Is(err, simulate.ErrNoPolicy):
		return problem.New(http.StatusConflict, err.Error()+": publish one to compare with").WithType("no-active-policy")
	case errors.Is(err, pgstore.ErrNotFound):
		var vnf *pgstore.VersionNotFoundError
		if errors.As(err, &vnf) {
			return problem.Validation("invalid simulation", []problem.FieldError{{Path: "version", Message: vnf.Error()}})
		}
	}
	return policyProblem(err)
}

// publishRequest is publish's body: the version and, with dry_run, a request to
// price it instead of publishing it.
type publishRequest struct {
	pgstore.PublishInput
	DryRun bool `json:"dry_run"`
}

// dryRunPublish answers a dry run: the simulation of the version against the active
// one over the default window, computed now (and kept, like any simulation), and
// nothing published.
func (s *Server) dryRunPublish(c echo.Context, env store.Environment, in pgstore.PublishInput) error {
	if err := in.Validate(); err != nil {
		return policyProblem(err)
	}
	sim, err := s.simulations.RunNow(c.Request().Context(), env, simulate.CreateInput{Version: in.Version})
	if err != nil {
		return simulationProblem(err)
	}
	return c.JSON(http.StatusOK, sim)
}
