package web

import "github.com/labstack/echo/v4"

// settingsRoutes registers the pages of the settings section. Settings beyond users: environments, API keys, billing settings, the Stripe connection, the audit log.
func (s *Server) settingsRoutes(e *echo.Echo, in permitted) {}
