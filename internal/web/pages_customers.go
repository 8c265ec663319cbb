package web

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/limitr/limitr/internal/alerts"
	"github.com/limitr/limitr/internal/analytics"
	"github.com/limitr/limitr/internal/billing"
	"github.com/limitr/limitr/internal/billing/money"
	"github.com/limitr/limitr/internal/customers"
	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/policies"
	"github.com/limitr/limitr/internal/store"
	"github.com/limitr/limitr/internal/users"
	"github.com/limitr/limitr/internal/validation"
	"github.com/limitr/limitr/internal/wire"
)

// customerPageSize is how many customers a list page shows (a var for tests): the list pages with the
// service's cursor, never loading the environment's customers whole.
var customerPageSize = 50

// customerRoutes registers the pages of the customers section. Customers: search, detail (meters, overrides, grants, voucher, spend caps, margin, invoices, alerts) and their actions.
func (s *Server) customerRoutes(e *echo.Echo, in permitted) {
	if s.deps.Customers == nil || s.deps.Billing == nil || s.deps.Analytics == nil || s.deps.Alerts == nil {
		// A dashboard built without these services (some tests) keeps the placeholder.
		e.GET("/customers", s.section(navItem{Key: "customers", Label: "Customers", Path: "/customers"}), in(users.PermView)...)
		return
	}
	e.GET("/customers", s.customersPage, in(users.PermView)...)
	e.GET("/customers/:id", s.customerPage, in(users.PermView)...)
	e.POST("/customers/:id/plan", s.changeCustomerPlan, in(users.PermManageCustomers)...)
	e.POST("/customers/:id/overrides", s.setCustomerOverride, in(users.PermManageCustomers)...)
	e.POST("/customers/:id/overrides/:entitlement/remove", s.removeCustomerOverride, in(users.PermManageCustomers)...)
	e.POST("/customers/:id/topups", s.applyCustomerTopup, in(users.PermManageCustomers)...)
	e.POST("/customers/:id/voucher", s.setCustomerVoucher, in(users.PermManageCustomers)...)
	e.POST("/customers/:id/voucher/remove", s.removeCustomerVoucher, in(users.PermManageCustomers)...)
	e.POST("/customers/:id/caps/:cap/reset", s.resetCustomerCap, in(users.PermManageCustomers)...)
	e.POST("/customers/:id/caps/:cap/remove", s.removeCustomerCap, in(users.PermManageCustomers)...)
}

// customerURL is a customer's page; ids may hold characters a path must escape.
func customerURL(id string) string { return "/customers/" + url.PathEscape(id) }

// unescapedParam is a path parameter, percent-decoded (echo hands it over still escaped
// when the request escaped characters the default encoding would not).
func unescapedParam(c echo.Context, name string) string {
	v := c.Param(name)
	if c.Request().URL.RawPath == "" {
		return v
	}
	if u, err := url.PathUnescape(v); err == nil {
		return u
	}
	return v
}

type customerRow struct {
	wire.Customer
	URL string
}

type customersData struct {
	// Query is the id or alt id searched for; Rows then holds its customer, if any.
	Query    string
	Searched bool
	Rows     []customerRow
	// Next is the link to the following page ("" on the last).
	Next  string
	Error string
}

// customersPage lists the environment's customers a page at a time, or finds one by
// id or alt id.
func (s *Server) customersPage(c echo.Context) error {
	env, err := s.environment(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	d := customersData{Query: strings.TrimSpace(c.QueryParam("q"))}
	if d.Query != "" {
		d.Searched = true
		if validation.ID("q", d.Query) != nil {
			d.Error = "No customer has this id or alt id."
			return s.render(c, http.StatusOK, "customers", d)
		}
		cu, err := s.deps.Customers.Get(ctx, env, d.Query)
		switch {
		case errors.Is(err, customers.ErrNotFound):
			d.Error = "No customer has this id or alt id."
		case err != nil:
			return err
		default:
			d.Rows = []customerRow{{Customer: cu, URL: customerURL(cu.ID)}}
		}
		return s.render(c, http.StatusOK, "customers", d)
	}
	after := c.QueryParam("after")
	if after != "" && validation.ID("after", after) != nil {
		return echo.NewHTTPError(http.StatusBadRequest, "This is not a page of the customer list.")
	}
	page, next, err := s.deps.Customers.List(ctx, env, after, customerPageSize)
	if err != nil {
		return err
	}
	for _, cu := range page {
		d.Rows = append(d.Rows, customerRow{Customer: cu, URL: customerURL(cu.ID)})
	}
	if next != "" {
		d.Next = "/customers?after=" + url.QueryEscape(next)
	}
	return s.render(c, http.StatusOK, "customers", d)
}

// meterRow is a meter against its limit, for a bar.
type meterRow struct {
	Entitlement, Credit string
	Units, Limit        string
	// Value, Max and High feed a <meter> (shown amber from High, 80% of the limit);
	// Max is "" when the limit is 0 (no bar).
	Value, Max, High string
	Over             bool
	PeriodEnd        time.Time
}

type grantRow struct {
	Topup, Credit, Balance string
	PeriodEnd              time.Time
}

type overrideRow struct {
	Entitlement string
	Value       string
	ExpiresAt   time.Time
	// Fields are the other fields it sets, as JSON.
	Raw       string
	RemoveURL string
}

type invoiceRow struct {
	billing.Invoice
	URL string
}

type customerData struct {
	C   wire.Customer
	URL string
	// Metadata is the customer's metadata, indented.
	Metadata string
	Standing *billing.Standing
	// InvoiceToDate is the upcoming invoice's total, in the standing's currency.
	InvoiceToDate string
	Meters        []meterRow
	Grants        []grantRow
	Overrides     []overrideRow
	Margin        *analytics.CustomerMargin
	Invoices      []invoiceRow
	// MoreInvoices links to the customer's full invoice list when this page shows only
	// the newest.
	MoreInvoices string
	Alerts       []alerts.Alert
	// VoucherExpired says the customer's voucher (C.Voucher) has expired: SDKs deny
	// the overage it would pay. VoucherExpires prefills the form's expiry with the
	// current one (datetime-local, UTC), so changing only the runes keeps it.
	VoucherExpired bool
	VoucherExpires string
	// Plans, Entitlements and Topups are the choices the action forms offer, from the
	// active policy.
	Plans        []string
	Entitlements []string
	Topups       []string
	// Unavailable says why meters and margin are not shown (no published policy).
	Unavailable string
	Notice      string
	Error       string
}

// customerNotices are the confirmations a redirect after an action may show.
var customerNotices = map[string]string{
	"plan":       "Plan changed.",
	"override":   "Override saved.",
	"removed":    "Override removed.",
	"topup":      "Topup applied.",
	"voucher":    "Voucher saved.",
	"unvouch":    "Voucher removed.",
	"capreset":   "Spend cap reset.",
	"capremoved": "Spend cap removed.",
}

const customerListLimit = 10

// customerPage shows one customer: profile, meters, grants, voucher, overrides, live
// margin, invoices and alerts.
func (s *Server) customerPage(c echo.Context) error {
	return s.renderCustomer(c, http.StatusOK, unescapedParam(c, "id"), customerData{Notice: customerNotices[c.QueryParam("done")]})
}

func (s *Server) renderCustomer(c echo.Context, status int, id string, d customerData) error {
	env, err := s.environment(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	if validation.ID("id", id) != nil {
		return echo.NewHTTPError(http.StatusNotFound, "There is no such customer.")
	}
	rec, err := s.deps.Customers.GetRecord(ctx, env, id)
	if errors.Is(err, customers.ErrNotFound) {
		return echo.NewHTTPError(http.StatusNotFound, "There is no such customer.")
	} else if err != nil {
		return err
	}
	d.C, d.URL = rec.Customer, customerURL(rec.ID)
	if len(rec.Metadata) > 0 && string(rec.Metadata) != "null" && string(rec.Metadata) != "{}" {
		var v any
		if json.Unmarshal(rec.Metadata, &v) == nil {
			b, _ := json.MarshalIndent(v, "", "  ")
			d.Metadata = string(b)
		}
	}
	d.Overrides = overrideRows(d.URL, rec.Overrides)
	if v := rec.Voucher; v != nil {
		d.VoucherExpired = !v.ExpiresAt.After(time.Now())
		d.VoucherExpires = v.ExpiresAt.UTC().Format("2006-01-02T15:04")
	}

	p, err := s.deps.Billing.ActivePolicy(ctx, env)
	switch {
	case errors.Is(err, billing.ErrNoPolicy):
		d.Unavailable = "No policy is published to this environment: publish one to see meters and margin."
	case err != nil:
		return err
	case p == nil:
		d.Unavailable = "No policy is published to this environment: publish one to see meters and margin."
	default:
		d.Plans, d.Entitlements, d.Topups = policyChoices(p, rec.ResolvedPlan)
		if err := s.fillStanding(c, env, rec, &d); err != nil {
			return err
		}
	}
	invs, next, err := s.deps.Billing.List(ctx, env, billing.InvoiceFilter{Customer: rec.ID, Limit: customerListLimit})
	if err != nil {
		return err
	}
	for _, inv := range invs {
		d.Invoices = append(d.Invoices, invoiceRow{Invoice: inv, URL: invoiceURL(inv.ID)})
	}
	if next != "" {
		d.MoreInvoices = "/invoices?customer=" + url.QueryEscape(rec.ID)
	}
	if d.Alerts, err = s.deps.Alerts.Alerts(ctx, env, alerts.Page{CustomerID: rec.ID, Limit: customerListLimit}); err != nil {
		return err
	}
	return s.render(c, status, "customers_detail", d)
}

// fillStanding adds the meters and grants (billing's standing) and the live margin.
func (s *Server) fillStanding(c echo.Context, env store.Environment, rec store.Customer, d *customerData) error {
	ctx := c.Request().Context()
	sts, err := s.deps.Billing.Standings(ctx, env, []uuid.UUID{rec.UID})
	if err != nil {
		return err
	}
	if len(sts) == 1 {
		st := sts[0]
		d.Standing = &st
		if d.InvoiceToDate, err = money.Format(st.InvoiceToDate, st.Currency); err != nil {
			return err
		}
		for _, m := range st.Meters {
			r := meterRow{Entitlement: m.Entitlement, Credit: m.Credit, Units: m.Units.Trim(0).String(), Limit: m.Limit.Trim(0).String(),
				Value: meterNumber(m.Units), PeriodEnd: m.PeriodEnd}
			if m.Limit.IsPos() {
				r.Max = meterNumber(m.Limit)
				r.High = strconv.FormatFloat(num.Float64(m.Limit)*0.8, 'f', -1, 64)
				r.Over = m.Units.Cmp(m.Limit) > 0
			}
			d.Meters = append(d.Meters, r)
		}
		for _, g := range st.Grants {
			d.Grants = append(d.Grants, grantRow{Topup: g.Topup, Credit: g.Credit, Balance: g.Balance.Trim(0).String(), PeriodEnd: g.PeriodEnd})
		}
	}
	m, err := s.deps.Analytics.CustomerMargin(ctx, env, rec.ID)
	if errors.Is(err, analytics.ErrNotFound) {
		return nil
	} else if err != nil {
		return err
	}
	d.Margin = &m
	return nil
}

// meterNumber writes a decimal for a <meter> attribute (a float there: display only).
func meterNumber(d num.Dec) string {
	return strconv.FormatFloat(num.Float64(d), 'f', -1, 64)
}

// policyChoices lists the plans, the resolved plan's limited entitlements (but its
// subscription) and its topups.
func policyChoices(p *policies.Policy, plan string) (plans, ents, topups []string) {
	for _, pl := range p.Plans {
		plans = append(plans, pl.Name)
	}
	if cp := p.Plan(plan); cp != nil {
		for _, ce := range cp.Limited {
			if ce.Name != cp.Subscription {
				ents = append(ents, ce.Name)
			}
		}
		for _, t := range cp.Compiled {
			topups = append(topups, t.Name)
		}
	}
	return plans, ents, topups
}

func overrideRows(base string, ovs map[string]json.RawMessage) []overrideRow {
	var out []overrideRow
	for ent, raw := range ovs {
		var o struct {
			Value     json.RawMessage `json:"value"`
			ExpiresOn int64           `json:"override_expires_on"` // Unix milliseconds, 0: never
		}
		_ = json.Unmarshal(raw, &o)
		r := overrideRow{Entitlement: ent, Value: strings.Trim(string(o.Value), `"`), Raw: string(raw),
			RemoveURL: base + "/overrides/" + url.PathEscape(ent) + "/remove"}
		if o.ExpiresOn > 0 {
			r.ExpiresAt = time.UnixMilli(o.ExpiresOn).UTC()
		}
		out = append(out, r)
	}
	sortStableBy(out, func(r overrideRow) string { return r.Entitlement })
	return out
}

// changeCustomerPlan moves the customer to another plan, once confirmed.
func (s *Server) changeCustomerPlan(c echo.Context) error {
	id := unescapedParam(c, "id")
	in := customers.SetPlanInput{Plan: c.FormValue("plan"), OverwriteMeters: c.FormValue("overwrite_meters") == "on"}
	if !confirmedPost(c) {
		msg := "Move customer " + id + " to plan " + in.Plan + "? Usage carries over."
		if in.OverwriteMeters {
			msg = "Move customer " + id + " to plan " + in.Plan + " and start its meters afresh? Its current usage is forgotten by the SDKs."
		}
		return s.confirmStep(c, confirmData{Title: "Change plan", Message: msg, Button: "Change plan", Cancel: customerURL(id)})
	}
	env, err := s.environment(c)
	if err != nil {
		return err
	}
	if _, err := s.deps.Customers.SetPlan(c.Request().Context(), env, id, in); err != nil {
		return s.customerFailure(c, id, err)
	}
	return c.Redirect(http.StatusSeeOther, customerURL(id)+"?done=plan")
}

// setCustomerOverride sets (or replaces) an override of one entitlement's limit.
func (s *Server) setCustomerOverride(c echo.Context) error {
	id := unescapedParam(c, "id")
	env, err := s.environment(c)
	if err != nil {
		return err
	}
	ent := strings.TrimSpace(c.FormValue("entitlement"))
	in := customers.OverrideInput{Value: wire.Quantity(strings.TrimSpace(c.FormValue("value")))}
	if exp := strings.TrimSpace(c.FormValue("expires_at")); exp != "" {
		t, err := parseFormTime(exp)
		if err != nil {
			return s.customerFailure(c, id, validation.New("invalid override", "expires_at", "must be a date and time, like 2026-12-31T23:59"))
		}
		v := t.Format(time.RFC3339)
		in.ExpiresAt = &v
	}
	if ent == "" || validation.ID("entitlement", ent) != nil {
		return s.customerFailure(c, id, validation.New("invalid override", "entitlement", "is required"))
	}
	if _, err := s.deps.Customers.SetOverride(c.Request().Context(), env, id, ent, in); err != nil {
		return s.customerFailure(c, id, err)
	}
	return c.Redirect(http.StatusSeeOther, customerURL(id)+"?done=override")
}

// parseFormTime reads a datetime-local field (UTC) or an RFC 3339 time.
func parseFormTime(v string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339, "2006-01-02T15:04", "2006-01-02T15:04:05", "2006-01-02"} {
		if t, err := time.Parse(layout, v); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, errors.New("not a time")
}

// removeCustomerOverride removes an override, once confirmed.
func (s *Server) removeCustomerOverride(c echo.Context) error {
	id, ent := unescapedParam(c, "id"), unescapedParam(c, "entitlement")
	if !confirmedPost(c) {
		return s.confirmStep(c, confirmData{Title: "Remove override", Message: "Remove the override of " + ent + " for customer " + id +
			"? The plan's limit applies again.", Button: "Remove override", Danger: true, Cancel: customerURL(id)})
	}
	env, err := s.environment(c)
	if err != nil {
		return err
	}
	if err := s.deps.Customers.RemoveOverride(c.Request().Context(), env, id, ent); err != nil {
		return s.customerFailure(c, id, err)
	}
	return c.Redirect(http.StatusSeeOther, customerURL(id)+"?done=removed")
}

// applyCustomerTopup applies one of the plan's topups (billed as the API bills it),
// once confirmed.
func (s *Server) applyCustomerTopup(c echo.Context) error {
	id := unescapedParam(c, "id")
	in := customers.TopupInput{Topup: c.FormValue("topup")}
	if p := strings.TrimSpace(c.FormValue("price")); p != "" {
		n := json.Number(p)
		in.Price = &n
	}
	if !confirmedPost(c) {
		msg := "Apply topup " + in.Topup + " to customer " + id + " at its own price?"
		if in.Price != nil {
			msg = "Apply topup " + in.Topup + " to customer " + id + " for " + in.Price.String() + "?"
		}
		return s.confirmStep(c, confirmData{Title: "Apply topup", Message: msg, Button: "Apply topup", Cancel: customerURL(id)})
	}
	env, err := s.environment(c)
	if err != nil {
		return err
	}
	if _, err := s.deps.Customers.ApplyTopup(c.Request().Context(), env, id, in); err != nil {
		return s.customerFailure(c, id, err)
	}
	return c.Redirect(http.StatusSeeOther, customerURL(id)+"?done=topup")
}

// setCustomerVoucher sets (or replaces) the customer's voucher. Empty runes make an
// expiry-only voucher; the service checks both fields, so its field errors show.
func (s *Server) setCustomerVoucher(c echo.Context) error {
	id := unescapedParam(c, "id")
	env, err := s.environment(c)
	if err != nil {
		return err
	}
	in := customers.VoucherInput{}
	if r := strings.TrimSpace(c.FormValue("runes")); r != "" {
		n := json.Number(r)
		in.Runes = &n
	}
	// An empty expiry goes through as "": the service's "is required" names the field.
	if exp := strings.TrimSpace(c.FormValue("expires_at")); exp != "" {
		t, err := parseFormTime(exp)
		if err != nil {
			return s.customerFailure(c, id, validation.New("invalid voucher", "expires_at", "must be a date and time, like 2026-12-31T23:59"))
		}
		in.ExpiresAt = t.Format(time.RFC3339)
	}
	if _, err := s.deps.Customers.SetVoucher(c.Request().Context(), env, id, in); err != nil {
		return s.customerFailure(c, id, err)
	}
	return c.Redirect(http.StatusSeeOther, customerURL(id)+"?done=voucher")
}

// removeCustomerVoucher removes the customer's voucher, once confirmed: what is left
// of its balance is gone (a new voucher starts afresh).
func (s *Server) removeCustomerVoucher(c echo.Context) error {
	id := unescapedParam(c, "id")
	if !confirmedPost(c) {
		return s.confirmStep(c, confirmData{Title: "Remove voucher", Message: "Remove the voucher of customer " + id +
			"? Its remaining balance no longer pays overage.", Button: "Remove voucher", Danger: true, Cancel: customerURL(id)})
	}
	env, err := s.environment(c)
	if err != nil {
		return err
	}
	if err := s.deps.Customers.RemoveVoucher(c.Request().Context(), env, id); err != nil {
		return s.customerFailure(c, id, err)
	}
	return c.Redirect(http.StatusSeeOther, customerURL(id)+"?done=unvouch")
}

// customerFailure shows a refused action on the customer's page, with its reason.
func (s *Server) customerFailure(c echo.Context, id string, err error) error {
	var verr *validation.Error
	var perr *policies.ValidationError
	status, msg := http.StatusConflict, ""
	switch {
	case errors.As(err, &verr):
		status, msg = http.StatusUnprocessableEntity, fieldMessage(verr)
	case errors.As(err, &perr):
		status, msg = http.StatusUnprocessableEntity, perr.Error()
	case errors.Is(err, customers.ErrNotFound):
		return echo.NewHTTPError(http.StatusNotFound, "There is no such customer.")
	case errors.Is(err, customers.ErrNoOverride):
		status, msg = http.StatusNotFound, "The customer has no override of this entitlement."
	case errors.Is(err, customers.ErrNoVoucher):
		status, msg = http.StatusNotFound, "The customer has no voucher."
	case errors.Is(err, customers.ErrNoCap):
		status, msg = http.StatusNotFound, "The customer has no spend cap of this id."
	case errors.Is(err, customers.ErrNoActivePolicy):
		msg = "No policy is published to this environment: publish one first."
	case errors.Is(err, customers.ErrNameTaken), errors.Is(err, customers.ErrExists):
		msg = err.Error()
	default:
		return err
	}
	return s.renderCustomer(c, status, id, customerData{Error: msg})
}

// confirmData is a confirmation step: the form posted again with confirm=yes. Its
// page (customers_confirm.html) serves the invoices section too.
type confirmData struct {
	Title, Message, Button string
	Danger                 bool
	// Action is where the confirmed form posts (the same path as the first post).
	Action string
	Fields []confirmField
	// Cancel is where "Cancel" goes.
	Cancel string
}

type confirmField struct{ Name, Value string }

// confirmedPost reports whether a destructive action's form carries the confirmation.
func confirmedPost(c echo.Context) bool { return c.FormValue("confirm") == "yes" }

// confirmStep asks before an action: a page with the posted fields, to post again with
// confirm=yes. It works without JavaScript (htmx swaps it in like any page).
func (s *Server) confirmStep(c echo.Context, d confirmData) error {
	form, err := c.FormParams()
	if err != nil {
		return err
	}
	for name, vals := range form {
		if name == "csrf_token" || name == "confirm" {
			continue
		}
		for _, v := range vals {
			d.Fields = append(d.Fields, confirmField{Name: name, Value: v})
		}
	}
	sortStableBy(d.Fields, func(f confirmField) string { return f.Name })
	d.Action = c.Request().URL.EscapedPath()
	return s.render(c, http.StatusOK, "customers_confirm", d)
}
