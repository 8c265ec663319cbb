package web

import "github.com/labstack/echo/v4"

// alertRoutes registers the pages of the alerts section. Alerts: channels, rules (with a test send), fired alerts and deliveries.
func (s *Server) alertRoutes(e *echo.Echo, in permitted) {}
