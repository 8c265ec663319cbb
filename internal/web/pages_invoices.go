package web

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/limitr/limitr/internal/billing"
	"github.com/limitr/limitr/internal/billing/document"
	"github.com/limitr/limitr/internal/store"
	"github.com/limitr/limitr/internal/users"
	"github.com/limitr/limitr/internal/validation"
)

// invoicePageSize is how many invoices a list page shows.
const invoicePageSize = 50

// invoiceRoutes registers the pages of the invoices section. Invoices: list, detail, lifecycle, credit notes, the printable document, Stripe status.
func (s *Server) invoiceRoutes(e *echo.Echo, in permitted) {
	if s.deps.Billing == nil {
		// A dashboard built without billing (some tests) keeps the placeholder.
		e.GET("/invoices", s.section(navItem{Key: "invoices", Label: "Invoices", Path: "/invoices"}), in(users.PermView)...)
		return
	}
	e.GET("/invoices", s.invoicesPage, in(users.PermView)...)
	e.GET("/invoices/:invoice", s.invoicePage, in(users.PermView)...)
	e.GET("/invoices/:invoice/document", s.invoiceDocument, in(users.PermView)...)
	for _, a := range invoiceActions {
		e.POST("/invoices/:invoice/"+a.path, s.invoiceAction(a), in(users.PermManageBilling)...)
	}
	e.POST("/invoices/:invoice/credit-notes", s.createCreditNote, in(users.PermManageBilling)...)
}

func invoiceURL(id string) string { return "/invoices/" + url.PathEscape(id) }

// invoiceStatuses are the list's status filter's choices.
var invoiceStatuses = []string{billing.StatusDraft, billing.StatusFinalized, billing.StatusPaid, billing.StatusVoid, billing.StatusUncollectible}

type invoicesData struct {
	Status, Customer string
	Statuses         []string
	Rows             []invoiceRow
	Next             string
	Error            string
}

// invoicesPage lists the environment's invoices, newest first, a page at a time,
// filtered by status and customer.
func (s *Server) invoicesPage(c echo.Context) error {
	env, err := s.environment(c)
	if err != nil {
		return err
	}
	d := invoicesData{Status: c.QueryParam("status"), Customer: strings.TrimSpace(c.QueryParam("customer")), Statuses: invoiceStatuses}
	f := billing.InvoiceFilter{Customer: d.Customer, Status: d.Status, After: c.QueryParam("after"), Limit: invoicePageSize}
	page, next, err := s.deps.Billing.List(c.Request().Context(), env, f)
	var verr *validation.Error
	if errors.As(err, &verr) {
		d.Error = fieldMessage(verr)
		return s.render(c, http.StatusUnprocessableEntity, "invoices", d)
	} else if err != nil {
		return err
	}
	for _, inv := range page {
		d.Rows = append(d.Rows, invoiceRow{Invoice: inv, URL: invoiceURL(inv.ID)})
	}
	if next != "" {
		q := url.Values{"after": {next}}
		if d.Status != "" {
			q.Set("status", d.Status)
		}
		if d.Customer != "" {
			q.Set("customer", d.Customer)
		}
		d.Next = "/invoices?" + q.Encode()
	}
	return s.render(c, http.StatusOK, "invoices", d)
}

type invoiceData struct {
	Inv         billing.Invoice
	URL         string
	CustomerURL string
	Notes       []billing.CreditNote
	// Actions are the lifecycle actions the invoice's status allows.
	Actions []invoiceActionDef
	// Creditable: a credit note may be made.
	Creditable bool
	// Blank is the number of empty credit-note line rows the form offers.
	Blank  []int
	Notice string
	Error  string
}

var invoiceNotices = map[string]string{
	"finalize":           "Invoice finalized.",
	"void":               "Invoice voided.",
	"mark-paid":          "Invoice marked paid.",
	"mark-uncollectible": "Invoice marked uncollectible.",
	"credit":             "Credit note created.",
}

// invoicePage shows an invoice: lines, totals, status, Stripe status, credit notes.
func (s *Server) invoicePage(c echo.Context) error {
	return s.renderInvoice(c, http.StatusOK, invoiceData{Notice: invoiceNotices[c.QueryParam("done")]})
}

func (s *Server) renderInvoice(c echo.Context, status int, d invoiceData) error {
	env, err := s.environment(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	inv, err := s.deps.Billing.Get(ctx, env, unescapedParam(c, "invoice"))
	if errors.Is(err, billing.ErrNotFound) {
		return echo.NewHTTPError(http.StatusNotFound, "There is no such invoice.")
	} else if err != nil {
		return err
	}
	if d.Notes, err = s.deps.Billing.CreditNotes(ctx, env, inv.ID); err != nil {
		return err
	}
	d.Inv, d.URL, d.CustomerURL = inv, invoiceURL(inv.ID), customerURL(inv.Customer)
	for _, a := range invoiceActions {
		if slices.Contains(a.from, inv.Status) {
			d.Actions = append(d.Actions, a)
		}
	}
	d.Creditable = inv.Status == billing.StatusFinalized || inv.Status == billing.StatusPaid || inv.Status == billing.StatusUncollectible
	d.Blank = []int{1, 2, 3}
	return s.render(c, status, "invoices_detail", d)
}

// invoiceDocument serves the printable invoice: the API's document, with its own CSP
// (it carries inline styles).
func (s *Server) invoiceDocument(c echo.Context) error {
	env, err := s.environment(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	inv, err := s.deps.Billing.Get(ctx, env, unescapedParam(c, "invoice"))
	if errors.Is(err, billing.ErrNotFound) {
		return echo.NewHTTPError(http.StatusNotFound, "There is no such invoice.")
	} else if err != nil {
		return err
	}
	notes, err := s.deps.Billing.CreditNotes(ctx, env, inv.ID)
	if err != nil {
		return err
	}
	var page bytes.Buffer
	if err := document.Render(&page, inv, notes); err != nil {
		return err
	}
	c.Response().Header().Set("Content-Security-Policy", document.ContentSecurityPolicy+"; frame-ancestors 'none'")
	return c.Blob(http.StatusOK, "text/html; charset=utf-8", page.Bytes())
}

// invoiceActionDef is a lifecycle action: its path, the statuses it applies to, the
// service call, and its wording.
type invoiceActionDef struct {
	path, Label, question string
	Danger                bool
	from                  []string
	op                    func(*billing.Service) func(context.Context, store.Environment, string) (billing.Invoice, error)
}

// Path is the action's path under the invoice.
func (a invoiceActionDef) Path() string { return a.path }

var invoiceActions = []invoiceActionDef{
	{path: "finalize", Label: "Finalize", question: "Finalize this invoice? It gets a number and is frozen: corrections are then credit notes.",
		from: []string{billing.StatusDraft}, op: func(b *billing.Service) func(context.Context, store.Environment, string) (billing.Invoice, error) {
			return b.Finalize
		}},
	{path: "mark-paid", Label: "Mark paid", question: "Mark this invoice paid?",
		from: []string{billing.StatusFinalized, billing.StatusUncollectible}, op: func(b *billing.Service) func(context.Context, store.Environment, string) (billing.Invoice, error) {
			return b.MarkPaid
		}},
	{path: "mark-uncollectible", Label: "Mark uncollectible", question: "Mark this invoice uncollectible?", Danger: true,
		from: []string{billing.StatusFinalized}, op: func(b *billing.Service) func(context.Context, store.Environment, string) (billing.Invoice, error) {
			return b.MarkUncollectible
		}},
	{path: "void", Label: "Void", question: "Void this invoice? This cannot be undone.", Danger: true,
		from: []string{billing.StatusDraft, billing.StatusFinalized, billing.StatusUncollectible}, op: func(b *billing.Service) func(context.Context, store.Environment, string) (billing.Invoice, error) {
			return b.Void
		}},
}

// invoiceAction moves an invoice through its lifecycle, once confirmed, with the
// service call the API makes (audited as the logged-in user).
func (s *Server) invoiceAction(a invoiceActionDef) echo.HandlerFunc {
	return func(c echo.Context) error {
		id := unescapedParam(c, "invoice")
		if !confirmedPost(c) {
			return s.confirmStep(c, confirmData{Title: a.Label, Message: a.question, Button: a.Label, Danger: a.Danger, Cancel: invoiceURL(id)})
		}
		env, err := s.environment(c)
		if err != nil {
			return err
		}
		if _, err := a.op(s.deps.Billing)(c.Request().Context(), env, id); err != nil {
			return s.invoiceFailure(c, err)
		}
		return c.Redirect(http.StatusSeeOther, invoiceURL(id)+"?done="+a.path)
	}
}

// createCreditNote credits part of a finalized invoice, once confirmed. The form sends
// parallel description and amount fields; rows left empty are skipped.
func (s *Server) createCreditNote(c echo.Context) error {
	id := unescapedParam(c, "invoice")
	form, err := c.FormParams()
	if err != nil {
		return err
	}
	in := billing.CreditNoteInput{Reason: strings.TrimSpace(form.Get("reason"))}
	descs, amounts := form["description"], form["amount"]
	for i := range max(len(descs), len(amounts)) {
		var l billing.CreditNoteLine
		if i < len(descs) {
			l.Description = strings.TrimSpace(descs[i])
		}
		if i < len(amounts) {
			l.Amount = strings.TrimSpace(amounts[i])
		}
		if l != (billing.CreditNoteLine{}) {
			in.Lines = append(in.Lines, l)
		}
	}
	if err := in.Validate(); err != nil {
		return s.invoiceFailure(c, err)
	}
	if !confirmedPost(c) {
		return s.confirmStep(c, confirmData{Title: "Credit note", Message: "Credit " + creditTotal(in) + " on this invoice (" + in.Reason + ")?",
			Button: "Create credit note", Cancel: invoiceURL(id)})
	}
	env, err := s.environment(c)
	if err != nil {
		return err
	}
	if _, err := s.deps.Billing.CreateCreditNote(c.Request().Context(), env, id, in); err != nil {
		return s.invoiceFailure(c, err)
	}
	return c.Redirect(http.StatusSeeOther, invoiceURL(id)+"?done=credit")
}

// creditTotal words the lines' amounts for the confirmation.
func creditTotal(in billing.CreditNoteInput) string {
	parts := make([]string, len(in.Lines))
	for i, l := range in.Lines {
		parts[i] = l.Amount
	}
	return strings.Join(parts, " and ")
}

// invoiceFailure shows a refused action on the invoice's page, with its reason.
func (s *Server) invoiceFailure(c echo.Context, err error) error {
	var verr *validation.Error
	var te *billing.TransitionError
	status, msg := http.StatusConflict, ""
	switch {
	case errors.As(err, &verr):
		status, msg = http.StatusUnprocessableEntity, fieldMessage(verr)
	case errors.As(err, &te):
		msg = strings.ToUpper(te.Error()[:1]) + te.Error()[1:] + "."
	case errors.Is(err, billing.ErrNotFound):
		return echo.NewHTTPError(http.StatusNotFound, "There is no such invoice.")
	default:
		return err
	}
	return s.renderInvoice(c, status, invoiceData{Error: msg})
}

// sortStableBy sorts xs stably by key.
func sortStableBy[T any](xs []T, key func(T) string) {
	slices.SortStableFunc(xs, func(a, b T) int { return cmp.Compare(key(a), key(b)) })
}
