package web

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/limitr/limitr/internal/billing"
	"github.com/limitr/limitr/internal/billing/stripesync"
	"github.com/limitr/limitr/internal/tenancy"
	"github.com/limitr/limitr/internal/users"
	"github.com/limitr/limitr/internal/validation"
)

// settingsRoutes registers the pages of the settings section. Settings beyond users: environments, API keys, billing settings, the Stripe connection, the audit log.
// Everyone may look; environments take users.PermManageSettings, keys
// users.PermManageKeys, billing settings and Stripe users.PermManageBilling. Each change
// goes through the service the matching /v1 endpoint calls.
func (s *Server) settingsRoutes(e *echo.Echo, in permitted) {
	view := in(users.PermView)
	e.GET("/settings/environments", s.environmentsPage, view...)
	e.POST("/settings/environments", s.createEnvironment, in(users.PermManageSettings)...)
	e.GET("/settings/keys", s.keysPage, view...)
	e.POST("/settings/keys", s.createKey, in(users.PermManageKeys)...)
	e.POST("/settings/keys/:id/revoke", s.revokeKey, in(users.PermManageKeys)...)
	e.GET("/settings/billing", s.billingSettingsPage, view...)
	e.POST("/settings/billing", s.saveBillingSettings, in(users.PermManageBilling)...)
	e.GET("/settings/stripe", s.stripePage, view...)
	e.POST("/settings/stripe", s.connectStripe, in(users.PermManageBilling)...)
	e.POST("/settings/stripe/disconnect", s.disconnectStripe, in(users.PermManageBilling)...)
	e.GET("/settings/audit", s.auditPage, view...)
}

var settingsNotices = map[string]string{
	"env-created": "Environment created.", "key-revoked": "Key revoked.", "billing-saved": "Billing settings saved.",
	"stripe-connected": "Stripe connected.", "stripe-disconnected": "Stripe disconnected.",
}

// settingsFailure words a refused settings change; ok is false for an unexpected error.
func settingsFailure(err error) (status int, msg string, ok bool) {
	var verr *validation.Error
	var rerr *tenancy.ResourceError
	switch {
	case errors.As(err, &verr):
		return http.StatusUnprocessableEntity, fieldMessage(verr), true
	case errors.As(err, new(*formError)):
		return http.StatusUnprocessableEntity, err.Error(), true
	case errors.Is(err, tenancy.ErrLastAdminKey):
		return http.StatusConflict, "This is the tenant's last active admin key: create another admin key first, then revoke this one.", true
	case errors.As(err, &rerr) && errors.Is(err, tenancy.ErrConflict):
		return http.StatusConflict, fmt.Sprintf("The %s %q already exists.", rerr.Resource, rerr.Name), true
	case errors.As(err, &rerr) && errors.Is(err, tenancy.ErrNotFound):
		return http.StatusNotFound, "There is no such " + rerr.Resource + ".", true
	case errors.Is(err, stripesync.ErrEphemeralKeyring):
		return http.StatusConflict, "The server has no LIMITR_SECRET_KEY, so it refuses to store Stripe secrets it could not read after a restart.", true
	case errors.Is(err, stripesync.ErrNotConnected):
		return http.StatusNotFound, "This environment is not connected to Stripe.", true
	}
	return 0, "", false
}

// ---- Environments ----

type environmentsData struct {
	Environments []tenancy.Environment
	Name         string
	Notice       string
	Error        string
}

func (s *Server) environmentsPage(c echo.Context) error {
	return s.renderEnvironments(c, http.StatusOK, environmentsData{Notice: settingsNotices[c.QueryParam("done")]})
}

func (s *Server) renderEnvironments(c echo.Context, status int, d environmentsData) error {
	var err error
	if d.Environments, err = s.deps.Tenancy.ListEnvironments(c.Request().Context(), sessionOf(c).TenantID); err != nil {
		return err
	}
	return s.render(c, status, "settings_environments", d)
}

func (s *Server) createEnvironment(c echo.Context) error {
	in := tenancy.CreateEnvironmentInput{TenantID: sessionOf(c).TenantID, Name: strings.TrimSpace(c.FormValue("name"))}
	switch c.FormValue("live") {
	case "live":
		in.Live = new(bool)
		*in.Live = true
	case "test":
		in.Live = new(bool)
	}
	if _, err := s.deps.Tenancy.CreateEnvironment(c.Request().Context(), in); err != nil {
		status, msg, ok := settingsFailure(err)
		if !ok {
			return err
		}
		return s.renderEnvironments(c, status, environmentsData{Name: in.Name, Error: msg})
	}
	return c.Redirect(http.StatusSeeOther, "/settings/environments?done=env-created")
}

// ---- API keys ----

type keysData struct {
	Keys         []tenancy.APIKey
	Environments []tenancy.Environment
	// Created is a key just made, with its secret, shown this once.
	Created *tenancy.CreatedKey
	Name    string
	Notice  string
	Error   string
}

func (s *Server) keysPage(c echo.Context) error {
	return s.renderKeys(c, http.StatusOK, keysData{Notice: settingsNotices[c.QueryParam("done")]})
}

func (s *Server) renderKeys(c echo.Context, status int, d keysData) error {
	ctx := c.Request().Context()
	tid := sessionOf(c).TenantID
	var err error
	if d.Keys, err = s.deps.Tenancy.ListKeys(ctx, tid); err != nil {
		return err
	}
	if d.Environments, err = s.deps.Tenancy.ListEnvironments(ctx, tid); err != nil {
		return err
	}
	return s.render(c, status, "settings_keys", d)
}

// memberEmails maps the tenant's members' ids to their emails.
func (s *Server) memberEmails(c echo.Context) (map[uuid.UUID]string, error) {
	ms, err := s.deps.Users.ListMembers(c.Request().Context(), sessionOf(c).TenantID)
	if err != nil {
		return nil, err
	}
	out := make(map[uuid.UUID]string, len(ms))
	for _, m := range ms {
		out[m.ID] = m.Email
	}
	return out, nil
}

func (s *Server) createKey(c echo.Context) error {
	in := tenancy.CreateKeyInput{TenantID: sessionOf(c).TenantID, Kind: c.FormValue("kind"), Name: strings.TrimSpace(c.FormValue("name"))}
	if in.Kind == tenancy.KindSDK {
		in.Environment = c.FormValue("environment")
	}
	out, err := s.deps.Tenancy.CreateKey(c.Request().Context(), in)
	if err != nil {
		status, msg, ok := settingsFailure(err)
		if !ok {
			return err
		}
		return s.renderKeys(c, status, keysData{Name: in.Name, Error: msg})
	}
	return s.renderKeys(c, http.StatusOK, keysData{Created: &out})
}

func (s *Server) revokeKey(c echo.Context) error {
	id, err := uuid.Parse(c.Param("id"))
	if err != nil {
		return echo.NewHTTPError(http.StatusNotFound, "There is no such key.")
	}
	ctx := c.Request().Context()
	if _, err := s.deps.Tenancy.RevokeKey(ctx, tenancy.RevokeKeyInput{TenantID: sessionOf(c).TenantID, KeyID: id}); err != nil {
		status, msg, ok := settingsFailure(err)
		if !ok {
			return err
		}
		return s.renderKeys(c, status, keysData{Error: msg})
	}
	if s.deps.KeyRevoked != nil {
		s.deps.KeyRevoked(ctx, id)
	}
	return c.Redirect(http.StatusSeeOther, "/settings/keys?done=key-revoked")
}

// ---- Billing settings ----

// billingForm is the billing settings form's values, as typed.
type billingForm struct {
	Currency, RuneRate, GracePeriod, DaysUntilDue, InvoicePrefix, Seller string
}

type billingData struct {
	Settings billing.Settings
	Form     billingForm
	Notice   string
	Error    string
}

func (s *Server) billingSettingsPage(c echo.Context) error {
	env, err := s.environment(c)
	if err != nil {
		return err
	}
	set, err := s.deps.Billing.Settings(c.Request().Context(), env)
	if err != nil {
		return err
	}
	seller := string(set.Seller)
	if seller == "{}" {
		seller = ""
	}
	f := billingForm{Currency: set.Currency, RuneRate: set.RuneRate, GracePeriod: set.GracePeriod,
		DaysUntilDue: strconv.Itoa(set.DaysUntilDue), InvoicePrefix: set.InvoicePrefix, Seller: seller}
	return s.render(c, http.StatusOK, "settings_billing", billingData{Settings: set, Form: f, Notice: settingsNotices[c.QueryParam("done")]})
}

// saveBillingSettings replaces the settings, like PUT /v1/environments/:env/billing.
func (s *Server) saveBillingSettings(c echo.Context) error {
	env, err := s.environment(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	f := billingForm{Currency: c.FormValue("currency"), RuneRate: c.FormValue("rune_rate"), GracePeriod: c.FormValue("grace_period"),
		DaysUntilDue: c.FormValue("days_until_due"), InvoicePrefix: c.FormValue("invoice_prefix"), Seller: strings.TrimSpace(c.FormValue("seller"))}
	in, err := billingInput(f)
	if err == nil {
		_, err = s.deps.Billing.PutSettings(ctx, env, in)
	}
	if err != nil {
		status, msg, ok := settingsFailure(err)
		if !ok {
			return err
		}
		set, serr := s.deps.Billing.Settings(ctx, env)
		if serr != nil {
			return serr
		}
		return s.render(c, status, "settings_billing", billingData{Settings: set, Form: f, Error: msg})
	}
	return c.Redirect(http.StatusSeeOther, "/settings/billing?done=billing-saved")
}

func billingInput(f billingForm) (billing.SettingsInput, error) {
	in := billing.SettingsInput{Currency: &f.Currency, RuneRate: &f.RuneRate, GracePeriod: &f.GracePeriod, InvoicePrefix: &f.InvoicePrefix}
	days, err := strconv.Atoi(strings.TrimSpace(f.DaysUntilDue))
	if err != nil {
		return in, &formError{"days_until_due", "must be a whole number of days"}
	}
	in.DaysUntilDue = &days
	if f.Seller != "" {
		if !json.Valid([]byte(f.Seller)) {
			return in, &formError{"seller", "must be a JSON object, like {\"name\": \"Acme Inc\", \"address\": \"…\"}"}
		}
		in.Seller = json.RawMessage(f.Seller)
	}
	return in, nil
}

// ---- Stripe ----

type stripeData struct {
	Connection stripesync.Connection
	Notice     string
	Error      string
}

func (s *Server) stripePage(c echo.Context) error {
	return s.renderStripe(c, http.StatusOK, stripeData{Notice: settingsNotices[c.QueryParam("done")]})
}

func (s *Server) renderStripe(c echo.Context, status int, d stripeData) error {
	env, err := s.environment(c)
	if err != nil {
		return err
	}
	if d.Connection, err = s.deps.Stripe.Connection(c.Request().Context(), env); err != nil {
		return err
	}
	return s.render(c, status, "settings_stripe", d)
}

// connectStripe stores the secret key and webhook secret, sealed; neither is shown again.
func (s *Server) connectStripe(c echo.Context) error {
	env, err := s.environment(c)
	if err != nil {
		return err
	}
	in := stripesync.ConnectInput{SecretKey: strings.TrimSpace(c.FormValue("secret_key")), WebhookSecret: strings.TrimSpace(c.FormValue("webhook_secret"))}
	if _, err := s.deps.Stripe.Connect(c.Request().Context(), env, in); err != nil {
		status, msg, ok := settingsFailure(err)
		if !ok {
			return err
		}
		return s.renderStripe(c, status, stripeData{Error: msg})
	}
	return c.Redirect(http.StatusSeeOther, "/settings/stripe?done=stripe-connected")
}

func (s *Server) disconnectStripe(c echo.Context) error {
	env, err := s.environment(c)
	if err != nil {
		return err
	}
	if err := s.deps.Stripe.Disconnect(c.Request().Context(), env); err != nil {
		status, msg, ok := settingsFailure(err)
		if !ok {
			return err
		}
		return s.renderStripe(c, status, stripeData{Error: msg})
	}
	return c.Redirect(http.StatusSeeOther, "/settings/stripe?done=stripe-disconnected")
}

// ---- Audit log ----

// auditPageSize is how many entries a page of the audit log shows.
const auditPageSize = 50

type auditData struct {
	Entries []auditRow
	// Next is the cursor of the next page (0 on the last).
	Next int64
}

// auditRow is an audit entry with its actor and environment named.
type auditRow struct {
	tenancy.AuditEntry
	// Actor is the member's email, "API key <id>", or "" (the operator, the system).
	Actor, Environment string
}

func (s *Server) auditPage(c echo.Context) error {
	ctx := c.Request().Context()
	tid := sessionOf(c).TenantID
	var before int64
	if v := c.QueryParam("before"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return echo.NewHTTPError(http.StatusBadRequest, "That page link is not one the dashboard made.")
		}
		before = n
	}
	pg, err := s.deps.Tenancy.ListAudit(ctx, tenancy.ListAuditInput{TenantID: tid, Before: before, Limit: auditPageSize})
	if err != nil {
		return err
	}
	emails, err := s.memberEmails(c)
	if err != nil {
		return err
	}
	envs, err := s.deps.Tenancy.ListEnvironments(ctx, tid)
	if err != nil {
		return err
	}
	envNames := make(map[uuid.UUID]string, len(envs))
	for _, e := range envs {
		envNames[e.ID] = e.Name
	}
	d := auditData{Next: pg.NextCursor}
	for _, en := range pg.Entries {
		r := auditRow{AuditEntry: en}
		switch {
		case en.ActorUserID != nil:
			if r.Actor = emails[*en.ActorUserID]; r.Actor == "" {
				r.Actor = "former member " + en.ActorUserID.String()[:8]
			}
		case en.ActorKeyID != nil:
			r.Actor = "API key " + en.ActorKeyID.String()[:8]
		}
		if en.EnvironmentID != nil {
			r.Environment = envNames[*en.EnvironmentID]
		}
		d.Entries = append(d.Entries, r)
	}
	return s.render(c, http.StatusOK, "settings_audit", d)
}
