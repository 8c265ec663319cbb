package web

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/limitr/limitr/internal/alerts"
	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/store"
	"github.com/limitr/limitr/internal/users"
	"github.com/limitr/limitr/internal/validation"
)

// alertRoutes registers the pages of the alerts section. Alerts: channels, rules (with a test send), fired alerts and deliveries.
// Everyone may look; changing anything takes users.PermManageAlerts. Each change goes
// through the alerts service like POST/PATCH/DELETE /v1/environments/:env/alert-*.
func (s *Server) alertRoutes(e *echo.Echo, in permitted) {
	view, manage := in(users.PermView), in(users.PermManageAlerts)
	e.GET("/alerts", s.alertsPage, view...)
	e.GET("/alerts/channels/new", s.newChannelPage, manage...)
	e.POST("/alerts/channels", s.createChannel, manage...)
	e.GET("/alerts/channels/:id", s.channelPage, view...)
	e.POST("/alerts/channels/:id", s.updateChannel, manage...)
	e.POST("/alerts/channels/:id/delete", s.deleteChannel, manage...)
	e.POST("/alerts/channels/:id/test", s.testChannel, manage...)
	e.GET("/alerts/rules/new", s.newRulePage, manage...)
	e.POST("/alerts/rules", s.createRule, manage...)
	e.GET("/alerts/rules/:id", s.rulePage, view...)
	e.POST("/alerts/rules/:id", s.updateRule, manage...)
	e.POST("/alerts/rules/:id/enabled", s.setRuleEnabled, manage...)
	e.POST("/alerts/rules/:id/delete", s.deleteRule, manage...)
	e.GET("/alerts/fired", s.firedPage, view...)
	e.GET("/alerts/deliveries", s.deliveriesPage, view...)
	e.POST("/alerts/deliveries/:id/resend", s.resendDelivery, manage...)
}

// alertNotices are the confirmations after a redirect, by code.
var alertNotices = map[string]string{
	"channel-created": "Channel created.", "channel-saved": "Channel saved.", "channel-deleted": "Channel deleted.",
	"rule-created": "Rule created.", "rule-saved": "Rule saved.", "rule-deleted": "Rule deleted.",
	"rule-enabled": "Rule enabled.", "rule-disabled": "Rule disabled.", "resent": "Delivery queued to be sent again.",
}

type alertsData struct {
	Channels []alerts.Channel
	Rules    []*alerts.Rule
	// ChannelNames names the channels a rule lists.
	ChannelNames map[uuid.UUID]string
	Notice       string
	Error        string
	// Test is the answer of a test send to TestChannel.
	Test        *alerts.TestResult
	TestChannel string
	// SigningSecret is a new webhook channel's signing secret, shown this once.
	SigningSecret string
}

func (s *Server) alertsPage(c echo.Context) error {
	return s.renderAlerts(c, http.StatusOK, alertsData{Notice: alertNotices[c.QueryParam("done")]})
}

func (s *Server) renderAlerts(c echo.Context, status int, d alertsData) error {
	ctx := c.Request().Context()
	env, err := s.environment(c)
	if err != nil {
		return err
	}
	if d.Channels, err = s.deps.Alerts.Channels(ctx, env); err != nil {
		return err
	}
	if d.Rules, err = s.deps.Alerts.Rules(ctx, env); err != nil {
		return err
	}
	d.ChannelNames = make(map[uuid.UUID]string, len(d.Channels))
	for _, ch := range d.Channels {
		d.ChannelNames[ch.ID] = ch.Name
	}
	return s.render(c, status, "alerts", d)
}

// alertTarget is the session's environment and the :id of an alert resource.
func (s *Server) alertTarget(c echo.Context, what string) (store.Environment, uuid.UUID, error) {
	env, err := s.environment(c)
	if err != nil {
		return env, uuid.Nil, err
	}
	id, err := uuid.Parse(c.Param("id"))
	if err != nil {
		return env, uuid.Nil, echo.NewHTTPError(http.StatusNotFound, "There is no such "+what+".")
	}
	return env, id, nil
}

// alertFailure words a refused change for a form; ok is false for an unexpected error.
func alertFailure(err error) (status int, msg string, ok bool) {
	var verr *validation.Error
	switch {
	case errors.As(err, &verr):
		return http.StatusUnprocessableEntity, fieldMessage(verr), true
	case errors.As(err, new(*formError)):
		return http.StatusUnprocessableEntity, err.Error(), true
	case errors.Is(err, alerts.ErrConflict):
		return http.StatusConflict, "That name is already used in this environment.", true
	case errors.Is(err, alerts.ErrEphemeralKeyring):
		return http.StatusConflict, "The server has no LIMITR_SECRET_KEY, so it refuses to store channel secrets it could not read after a restart.", true
	case errors.Is(err, alerts.ErrNotResendable):
		return http.StatusConflict, "Only a delivered or dead delivery can be sent again.", true
	case errors.Is(err, alerts.ErrNotFound):
		return http.StatusNotFound, "There is no such channel, rule or delivery in this environment.", true
	}
	return 0, "", false
}

// formError is a form field the page could not even parse.
type formError struct{ field, msg string }

func (e *formError) Error() string { return e.field + " " + e.msg + "." }

// list splits a comma- or newline-separated form field, dropping blanks.
func list(v string) []string {
	out := []string{}
	for _, f := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == '\n' || r == '\r' }) {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// ---- Channels ----

// channelForm is the channel form's values: the secrets are never filled in.
type channelForm struct {
	Name, Kind                                string
	SlackChannel, SlackToken, SlackWebhook    string
	EmailTo, EmailFrom                        string
	SMTPHost, SMTPPort, SMTPUsername, SMTPTLS string
	WebhookURL                                string
}

type channelData struct {
	// Channel is the stored channel (nil on the new-channel form).
	Channel *alerts.Channel
	Form    channelForm
	Error   string
}

func formOfChannel(ch alerts.Channel) channelForm {
	f := channelForm{Name: ch.Name, Kind: ch.Kind, SMTPTLS: "starttls"}
	switch {
	case ch.Slack != nil:
		f.SlackChannel = ch.Slack.Channel
	case ch.Email != nil:
		f.EmailTo, f.EmailFrom = strings.Join(ch.Email.To, ", "), ch.Email.From
		f.SMTPHost, f.SMTPPort, f.SMTPUsername, f.SMTPTLS = ch.Email.SMTP.Host, strconv.Itoa(ch.Email.SMTP.Port), ch.Email.SMTP.Username, ch.Email.SMTP.TLS
	case ch.Webhook != nil:
		f.WebhookURL = ch.Webhook.URL
	}
	return f
}

// channelInput reads the form: only the channel kind's own fields, and on an edit
// nothing for a kind whose fields are all blank (the stored settings stay).
func channelInput(c echo.Context, kind string, edit bool) (alerts.ChannelInput, channelForm, error) {
	f := channelForm{Name: c.FormValue("name"), Kind: kind, SlackChannel: c.FormValue("slack_channel"),
		EmailTo: c.FormValue("email_to"), EmailFrom: c.FormValue("email_from"), SMTPHost: c.FormValue("smtp_host"),
		SMTPPort: c.FormValue("smtp_port"), SMTPUsername: c.FormValue("smtp_username"), SMTPTLS: c.FormValue("smtp_tls"),
		WebhookURL: c.FormValue("webhook_url")}
	in := alerts.ChannelInput{Name: &f.Name}
	if !edit {
		in.Kind = &f.Kind
	}
	switch kind {
	case alerts.ChannelSlack:
		sl := &alerts.SlackInput{Token: c.FormValue("slack_token"), Channel: f.SlackChannel, WebhookURL: c.FormValue("slack_webhook_url")}
		if !edit || *sl != (alerts.SlackInput{}) {
			in.Slack = sl
		}
	case alerts.ChannelEmail:
		port := 0
		if f.SMTPPort != "" {
			p, err := strconv.Atoi(f.SMTPPort)
			if err != nil {
				return in, f, &formError{"email.smtp.port", "must be a number"}
			}
			port = p
		}
		in.Email = &alerts.EmailInput{To: list(f.EmailTo), From: f.EmailFrom, SMTP: alerts.SMTPInput{Host: f.SMTPHost, Port: port,
			Username: f.SMTPUsername, Password: c.FormValue("smtp_password"), TLS: f.SMTPTLS}}
	case alerts.ChannelWebhook:
		wh := &alerts.WebhookInput{URL: f.WebhookURL, RotateSecret: c.FormValue("webhook_rotate") == "on"}
		if !edit || *wh != (alerts.WebhookInput{}) {
			in.Webhook = wh
		}
	}
	return in, f, nil
}

func (s *Server) newChannelPage(c echo.Context) error {
	kind := c.QueryParam("kind")
	if kind == "" {
		kind = alerts.ChannelSlack
	}
	return s.render(c, http.StatusOK, "alert_channel", channelData{Form: channelForm{Kind: kind, SMTPTLS: "starttls"}})
}

func (s *Server) createChannel(c echo.Context) error {
	env, err := s.environment(c)
	if err != nil {
		return err
	}
	in, form, err := channelInput(c, c.FormValue("kind"), false)
	var out alerts.Channel
	if err == nil {
		out, err = s.deps.Alerts.CreateChannel(c.Request().Context(), env, in)
	}
	if err != nil {
		status, msg, ok := alertFailure(err)
		if !ok {
			return err
		}
		return s.render(c, status, "alert_channel", channelData{Form: form, Error: msg})
	}
	if out.Webhook != nil && out.Webhook.SigningSecret != "" {
		return s.renderAlerts(c, http.StatusOK, alertsData{Notice: alertNotices["channel-created"], SigningSecret: out.Webhook.SigningSecret})
	}
	return c.Redirect(http.StatusSeeOther, "/alerts?done=channel-created")
}

func (s *Server) channelPage(c echo.Context) error {
	env, id, err := s.alertTarget(c, "channel")
	if err != nil {
		return err
	}
	ch, err := s.deps.Alerts.Channel(c.Request().Context(), env, id)
	if errors.Is(err, alerts.ErrNotFound) {
		return echo.NewHTTPError(http.StatusNotFound, "There is no such channel in this environment.")
	} else if err != nil {
		return err
	}
	return s.render(c, http.StatusOK, "alert_channel", channelData{Channel: &ch, Form: formOfChannel(ch)})
}

func (s *Server) updateChannel(c echo.Context) error {
	env, id, err := s.alertTarget(c, "channel")
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	ch, err := s.deps.Alerts.Channel(ctx, env, id)
	if errors.Is(err, alerts.ErrNotFound) {
		return echo.NewHTTPError(http.StatusNotFound, "There is no such channel in this environment.")
	} else if err != nil {
		return err
	}
	in, form, err := channelInput(c, ch.Kind, true)
	var out alerts.Channel
	if err == nil {
		out, err = s.deps.Alerts.UpdateChannel(ctx, env, id, in)
	}
	if err != nil {
		status, msg, ok := alertFailure(err)
		if !ok {
			return err
		}
		return s.render(c, status, "alert_channel", channelData{Channel: &ch, Form: form, Error: msg})
	}
	if out.Webhook != nil && out.Webhook.SigningSecret != "" {
		return s.renderAlerts(c, http.StatusOK, alertsData{Notice: alertNotices["channel-saved"], SigningSecret: out.Webhook.SigningSecret})
	}
	return c.Redirect(http.StatusSeeOther, "/alerts?done=channel-saved")
}

func (s *Server) deleteChannel(c echo.Context) error {
	env, id, err := s.alertTarget(c, "channel")
	if err != nil {
		return err
	}
	if err := s.deps.Alerts.DeleteChannel(c.Request().Context(), env, id); err != nil {
		return s.alertsFailure(c, err)
	}
	return c.Redirect(http.StatusSeeOther, "/alerts?done=channel-deleted")
}

// testChannel sends a test message now and shows what the destination answered.
func (s *Server) testChannel(c echo.Context) error {
	env, id, err := s.alertTarget(c, "channel")
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	ch, err := s.deps.Alerts.Channel(ctx, env, id)
	if err != nil {
		return s.alertsFailure(c, err)
	}
	res, err := s.deps.Alerts.TestChannel(ctx, env, id)
	if err != nil {
		return s.alertsFailure(c, err)
	}
	return s.renderAlerts(c, http.StatusOK, alertsData{Test: &res, TestChannel: ch.Name})
}

// alertsFailure shows a refused change on the alerts page.
func (s *Server) alertsFailure(c echo.Context, err error) error {
	status, msg, ok := alertFailure(err)
	if !ok {
		return err
	}
	return s.renderAlerts(c, status, alertsData{Error: msg})
}

// ---- Rules ----

// ruleForm is the rule form's values, as typed.
type ruleForm struct {
	Name, Kind                                    string
	Thresholds, Amount, Balance, Credit, Percent  string
	MinElapsedPercent, Notification               string
	Plans, Customers, CustomerTypes, Entitlements string
	Condition                                     string
	Channels                                      map[string]bool
	Enabled                                       bool
}

type ruleData struct {
	Rule     *alerts.Rule
	Form     ruleForm
	Kinds    []string
	Channels []alerts.Channel
	Error    string
}

func decText(d *num.Dec) string {
	if d == nil {
		return ""
	}
	return d.String()
}

func formOfRule(r *alerts.Rule) ruleForm {
	f := ruleForm{Name: r.Name, Kind: r.Kind, Credit: r.Params.Credit, Notification: r.Params.Notification,
		Amount: decText(r.Params.Amount), Balance: decText(r.Params.Balance), Percent: decText(r.Params.Percent),
		MinElapsedPercent: decText(r.Params.MinElapsedPercent), Plans: strings.Join(r.Filters.Plans, ", "),
		Customers: strings.Join(r.Filters.Customers, ", "), CustomerTypes: strings.Join(r.Filters.CustomerTypes, ", "),
		Entitlements: strings.Join(r.Filters.Entitlements, ", "), Condition: r.Condition, Enabled: r.Enabled, Channels: map[string]bool{}}
	ts := make([]string, len(r.Params.Thresholds))
	for i, t := range r.Params.Thresholds {
		ts[i] = t.String()
	}
	f.Thresholds = strings.Join(ts, ", ")
	for _, id := range r.Channels {
		f.Channels[id.String()] = true
	}
	return f
}

// ruleInput reads the rule form into the same input the API's JSON binds to: the
// params of the chosen kind, the filters, the condition and the channels.
func ruleInput(c echo.Context) (alerts.RuleInput, ruleForm, error) {
	form, err := c.FormParams()
	if err != nil {
		return alerts.RuleInput{}, ruleForm{}, err
	}
	f := ruleForm{Name: form.Get("name"), Kind: form.Get("kind"), Thresholds: form.Get("thresholds"), Amount: form.Get("amount"),
		Balance: form.Get("balance"), Credit: strings.TrimSpace(form.Get("credit")), Percent: form.Get("percent"),
		MinElapsedPercent: form.Get("min_elapsed_percent"), Notification: strings.TrimSpace(form.Get("notification")),
		Plans: form.Get("plans"), Customers: form.Get("customers"), CustomerTypes: form.Get("customer_types"),
		Entitlements: form.Get("entitlements"), Condition: form.Get("condition"), Enabled: form.Get("enabled") == "on",
		Channels: map[string]bool{}}
	chans := form["channels"]
	for _, id := range chans {
		f.Channels[id] = true
	}
	if chans == nil {
		chans = []string{}
	}
	dec := func(field, v string) (*num.Dec, error) {
		v = strings.TrimSpace(v)
		if v == "" {
			return nil, nil
		}
		d, err := num.Parse(v)
		if err != nil {
			return nil, &formError{"params." + field, "must be a number"}
		}
		return &d, nil
	}
	var p alerts.Params
	switch f.Kind {
	case alerts.KindUsagePercent:
		for _, t := range list(f.Thresholds) {
			d, err := dec("thresholds", t)
			if err != nil {
				return alerts.RuleInput{}, f, err
			}
			p.Thresholds = append(p.Thresholds, *d)
		}
	case alerts.KindSpend:
		p.Amount, err = dec("amount", f.Amount)
	case alerts.KindGrantBalanceBelow:
		p.Credit = f.Credit
		p.Balance, err = dec("balance", f.Balance)
	case alerts.KindMarginBelow:
		p.Percent, err = dec("percent", f.Percent)
	case alerts.KindForecastExceedsLimit:
		p.MinElapsedPercent, err = dec("min_elapsed_percent", f.MinElapsedPercent)
	case alerts.KindNotification:
		p.Notification = f.Notification
	}
	if err != nil {
		return alerts.RuleInput{}, f, err
	}
	filters := alerts.Filters{Plans: list(f.Plans), Customers: list(f.Customers), CustomerTypes: list(f.CustomerTypes),
		Entitlements: list(f.Entitlements)}
	return alerts.RuleInput{Name: &f.Name, Kind: &f.Kind, Params: &p, Filters: &filters, Condition: &f.Condition,
		Channels: &chans, Enabled: &f.Enabled}, f, nil
}

func (s *Server) renderRule(c echo.Context, status int, d ruleData) error {
	env, err := s.environment(c)
	if err != nil {
		return err
	}
	if d.Channels, err = s.deps.Alerts.Channels(c.Request().Context(), env); err != nil {
		return err
	}
	d.Kinds = alerts.Kinds
	return s.render(c, status, "alert_rule", d)
}

func (s *Server) newRulePage(c echo.Context) error {
	kind := c.QueryParam("kind")
	if kind == "" {
		kind = alerts.KindUsagePercent
	}
	return s.renderRule(c, http.StatusOK, ruleData{Form: ruleForm{Kind: kind, Thresholds: "80, 100", Enabled: true, Channels: map[string]bool{}}})
}

func (s *Server) createRule(c echo.Context) error {
	env, err := s.environment(c)
	if err != nil {
		return err
	}
	in, form, err := ruleInput(c)
	if err == nil {
		_, err = s.deps.Alerts.CreateRule(c.Request().Context(), env, in)
	}
	if err != nil {
		status, msg, ok := alertFailure(err)
		if !ok {
			return err
		}
		return s.renderRule(c, status, ruleData{Form: form, Error: msg})
	}
	return c.Redirect(http.StatusSeeOther, "/alerts?done=rule-created")
}

func (s *Server) rulePage(c echo.Context) error {
	env, id, err := s.alertTarget(c, "rule")
	if err != nil {
		return err
	}
	r, err := s.deps.Alerts.Rule(c.Request().Context(), env, id)
	if errors.Is(err, alerts.ErrNotFound) {
		return echo.NewHTTPError(http.StatusNotFound, "There is no such rule in this environment.")
	} else if err != nil {
		return err
	}
	return s.renderRule(c, http.StatusOK, ruleData{Rule: r, Form: formOfRule(r)})
}

func (s *Server) updateRule(c echo.Context) error {
	env, id, err := s.alertTarget(c, "rule")
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	r, err := s.deps.Alerts.Rule(ctx, env, id)
	if errors.Is(err, alerts.ErrNotFound) {
		return echo.NewHTTPError(http.StatusNotFound, "There is no such rule in this environment.")
	} else if err != nil {
		return err
	}
	in, form, err := ruleInput(c)
	if err == nil {
		_, err = s.deps.Alerts.UpdateRule(ctx, env, id, in)
	}
	if err != nil {
		status, msg, ok := alertFailure(err)
		if !ok {
			return err
		}
		return s.renderRule(c, status, ruleData{Rule: r, Form: form, Error: msg})
	}
	return c.Redirect(http.StatusSeeOther, "/alerts?done=rule-saved")
}

// setRuleEnabled turns a rule on or off (PATCH {"enabled": …}).
func (s *Server) setRuleEnabled(c echo.Context) error {
	env, id, err := s.alertTarget(c, "rule")
	if err != nil {
		return err
	}
	on := c.FormValue("enabled") == "true"
	if _, err := s.deps.Alerts.UpdateRule(c.Request().Context(), env, id, alerts.RuleInput{Enabled: &on}); err != nil {
		return s.alertsFailure(c, err)
	}
	if on {
		return c.Redirect(http.StatusSeeOther, "/alerts?done=rule-enabled")
	}
	return c.Redirect(http.StatusSeeOther, "/alerts?done=rule-disabled")
}

func (s *Server) deleteRule(c echo.Context) error {
	env, id, err := s.alertTarget(c, "rule")
	if err != nil {
		return err
	}
	if err := s.deps.Alerts.DeleteRule(c.Request().Context(), env, id); err != nil {
		return s.alertsFailure(c, err)
	}
	return c.Redirect(http.StatusSeeOther, "/alerts?done=rule-deleted")
}

// ---- What fired, and its deliveries ----

// alertsPageSize is how many fired alerts or deliveries a page lists.
const alertsPageSize = 50

// pageOf reads ?before= (the last id of the previous page); limit is one more than a
// page, to know whether another follows.
func pageOf(c echo.Context) (alerts.Page, error) {
	p := alerts.Page{Limit: alertsPageSize + 1}
	if v := c.QueryParam("before"); v != "" {
		id, err := uuid.Parse(v)
		if err != nil {
			return p, echo.NewHTTPError(http.StatusBadRequest, "That page link is not one the dashboard made.")
		}
		p.Before = &id
	}
	return p, nil
}

type firedData struct {
	Alerts   []alerts.Alert
	Customer string
	// Next is the query of the next page ("" on the last).
	Next string
}

func (s *Server) firedPage(c echo.Context) error {
	env, err := s.environment(c)
	if err != nil {
		return err
	}
	p, err := pageOf(c)
	if err != nil {
		return err
	}
	p.CustomerID = strings.TrimSpace(c.QueryParam("customer"))
	if len(p.CustomerID) > 256 {
		return echo.NewHTTPError(http.StatusBadRequest, "That customer id is too long.")
	}
	out, err := s.deps.Alerts.Alerts(c.Request().Context(), env, p)
	if err != nil {
		return err
	}
	d := firedData{Alerts: out, Customer: p.CustomerID}
	if len(out) > alertsPageSize {
		d.Alerts = out[:alertsPageSize]
		d.Next = fmt.Sprintf("before=%s", d.Alerts[alertsPageSize-1].ID)
		if p.CustomerID != "" {
			d.Next += "&customer=" + url.QueryEscape(p.CustomerID)
		}
	}
	return s.render(c, http.StatusOK, "alerts_fired", d)
}

var deliveryStatuses = []string{"pending", "sending", "delivered", "dead"}

type deliveriesData struct {
	Deliveries []alerts.Delivery
	Statuses   []string
	Status     string
	Alert      string
	Next       string
	Notice     string
	Error      string
}

func (s *Server) deliveriesPage(c echo.Context) error {
	return s.renderDeliveries(c, http.StatusOK, deliveriesData{Notice: alertNotices[c.QueryParam("done")]})
}

func (s *Server) renderDeliveries(c echo.Context, status int, d deliveriesData) error {
	env, err := s.environment(c)
	if err != nil {
		return err
	}
	p, err := pageOf(c)
	if err != nil {
		return err
	}
	d.Statuses = deliveryStatuses
	if d.Status = c.QueryParam("status"); d.Status != "" {
		ok := false
		for _, st := range deliveryStatuses {
			ok = ok || st == d.Status
		}
		if !ok {
			return echo.NewHTTPError(http.StatusBadRequest, "The status must be pending, sending, delivered or dead.")
		}
		p.Status = d.Status
	}
	if d.Alert = c.QueryParam("alert"); d.Alert != "" {
		id, err := uuid.Parse(d.Alert)
		if err != nil {
			return echo.NewHTTPError(http.StatusBadRequest, "That is not an alert id.")
		}
		p.AlertID = &id
	}
	out, err := s.deps.Alerts.Deliveries(c.Request().Context(), env, p)
	if err != nil {
		return err
	}
	d.Deliveries = out
	if len(out) > alertsPageSize {
		d.Deliveries = out[:alertsPageSize]
		d.Next = "before=" + d.Deliveries[alertsPageSize-1].ID.String()
		if d.Status != "" {
			d.Next += "&status=" + d.Status
		}
		if d.Alert != "" {
			d.Next += "&alert=" + d.Alert
		}
	}
	return s.render(c, status, "alert_deliveries", d)
}

func (s *Server) resendDelivery(c echo.Context) error {
	env, id, err := s.alertTarget(c, "delivery")
	if err != nil {
		return err
	}
	if _, err := s.deps.Alerts.Resend(c.Request().Context(), env, id); err != nil {
		status, msg, ok := alertFailure(err)
		if !ok {
			return err
		}
		return s.renderDeliveries(c, status, deliveriesData{Error: msg})
	}
	return c.Redirect(http.StatusSeeOther, "/alerts/deliveries?done=resent")
}
