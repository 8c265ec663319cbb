package web

import "github.com/labstack/echo/v4"

// customerRoutes registers the pages of the customers section. Customers: search, detail (meters, overrides, grants, margin, invoices, alerts) and their actions.
func (s *Server) customerRoutes(e *echo.Echo, in permitted) {}
