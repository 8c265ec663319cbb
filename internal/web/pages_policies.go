package web

import "github.com/labstack/echo/v4"

// policyRoutes registers the pages of the policies section. Policies: versions, the document editor, the diff, the what-if result, publish and rollback.
func (s *Server) policyRoutes(e *echo.Echo, in permitted) {}
