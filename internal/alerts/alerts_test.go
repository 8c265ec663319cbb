package alerts

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/mail"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/riverqueue/river"

	"github.com/limitr/limitr/internal/alerts/alerttest"
	"github.com/limitr/limitr/internal/alerts/channels"
	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/secrets"
	"github.com/limitr/limitr/internal/validation"
	"github.com/limitr/limitr/internal/wire"
)

func decs(ss ...string) []num.Dec {
	out := make([]num.Dec, len(ss))
	for i, s := range ss {
		out[i] = num.MustParse(s)
	}
	return out
}

func TestRuleMatch(t *testing.T) {
	t.Parallel()
	sub := Subject{UID: uuid.New(), ID: "acme", Type: "org", Plan: "pro"}
	period := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name       string
		rule       Rule
		obs        Observation
		thresholds []string
	}{
		{"below every threshold", Rule{Kind: KindUsagePercent, Params: Params{Thresholds: decs("50", "80")}},
			usage(sub, "tokens", "49.99", period), nil},
		{"crosses two at once", Rule{Kind: KindUsagePercent, Params: Params{Thresholds: decs("50", "80", "100")}},
			usage(sub, "tokens", "85", period), []string{"50", "80"}},
		{"exactly at the threshold", Rule{Kind: KindUsagePercent, Params: Params{Thresholds: decs("80")}},
			usage(sub, "tokens", "80", period), []string{"80"}},
		{"plan filter excludes", Rule{Kind: KindUsagePercent, Params: Params{Thresholds: decs("80")}, Filters: Filters{Plans: []string{"free"}}},
			usage(sub, "tokens", "90", period), nil},
		{"entitlement filter includes", Rule{Kind: KindUsagePercent, Params: Params{Thresholds: decs("80")}, Filters: Filters{Entitlements: []string{"tokens"}}},
			usage(sub, "tokens", "90", period), []string{"80"}},
		{"customer type filter excludes", Rule{Kind: KindUsagePercent, Params: Params{Thresholds: decs("80")}, Filters: Filters{CustomerTypes: []string{"user"}}},
			usage(sub, "tokens", "90", period), nil},
		{"condition holds", Rule{Kind: KindUsagePercent, Params: Params{Thresholds: decs("80")}, Condition: `event.plan == "pro"`},
			usage(sub, "tokens", "90", period), []string{"80"}},
		{"condition fails", Rule{Kind: KindUsagePercent, Params: Params{Thresholds: decs("80")}, Condition: `event.plan == "free"`},
			usage(sub, "tokens", "90", period), nil},
		{"condition on a missing key does not match", Rule{Kind: KindUsagePercent, Params: Params{Thresholds: decs("80")}, Condition: `event.nope > 1`},
			usage(sub, "tokens", "90", period), nil},
		{"spend reached", Rule{Kind: KindSpend, Params: Params{Amount: ptr(num.MustParse("100"))}},
			Observation{Kind: KindSpend, Customer: sub, Value: num.MustParse("100.00")}, []string{"100"}},
		{"spend not reached", Rule{Kind: KindSpend, Params: Params{Amount: ptr(num.MustParse("100"))}},
			Observation{Kind: KindSpend, Customer: sub, Value: num.MustParse("99.99")}, nil},
		{"grant balance below", Rule{Kind: KindGrantBalanceBelow, Params: Params{Balance: ptr(num.MustParse("10")), Credit: "token"}},
			Observation{Kind: KindGrantBalanceBelow, Customer: sub, Credit: "token", Value: num.MustParse("9.5")}, []string{"10"}},
		{"grant balance of another credit", Rule{Kind: KindGrantBalanceBelow, Params: Params{Balance: ptr(num.MustParse("10")), Credit: "token"}},
			Observation{Kind: KindGrantBalanceBelow, Customer: sub, Credit: "seat", Value: num.MustParse("1")}, nil},
		{"margin below", Rule{Kind: KindMarginBelow, Params: Params{Percent: ptr(num.MustParse("20"))}},
			Observation{Kind: KindMarginBelow, Customer: sub, Value: num.MustParse("19.9")}, []string{"20"}},
		{"margin at the line", Rule{Kind: KindMarginBelow, Params: Params{Percent: ptr(num.MustParse("20"))}},
			Observation{Kind: KindMarginBelow, Customer: sub, Value: num.MustParse("20")}, nil},
		{"notification by name", Rule{Kind: KindNotification, Params: Params{Notification: "half-seats"}},
			Observation{Kind: KindNotification, Customer: sub, Notification: "half-seats"}, []string{""}},
		{"another notification", Rule{Kind: KindNotification, Params: Params{Notification: "half-seats"}},
			Observation{Kind: KindNotification, Customer: sub, Notification: "other"}, nil},
		{"kind mismatch", Rule{Kind: KindSpend, Params: Params{Amount: ptr(num.MustParse("1"))}},
			usage(sub, "tokens", "90", period), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.rule
			r.Enabled = true
			if err := r.compile(); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, f := range r.match(&tc.obs) {
				got = append(got, f.threshold)
			}
			if strings.Join(got, ",") != strings.Join(tc.thresholds, ",") || len(got) != len(tc.thresholds) {
				t.Fatalf("thresholds %q, want %q", got, tc.thresholds)
			}
		})
	}
}

func TestRuleValidation(t *testing.T) {
	t.Parallel()
	h := newHarness(t, examplePolicy(t, "ai-credits.yaml"), Config{})
	hook := alerttest.NewWebhook()
	defer hook.Close()
	c := h.channel(ChannelInput{Name: ptr("ops"), Kind: ptr(ChannelWebhook), Webhook: &WebhookInput{URL: hook.URL()}})
	for _, tc := range []struct {
		name string
		in   RuleInput
		path string
	}{
		{"unknown entitlement", RuleInput{Kind: ptr(KindUsagePercent), Params: &Params{Thresholds: decs("80")},
			Filters: &Filters{Entitlements: []string{"nope"}}}, "filters.entitlements[0]"},
		{"bad CEL", RuleInput{Kind: ptr(KindUsagePercent), Params: &Params{Thresholds: decs("80")}, Condition: ptr("event.value >")}, "condition"},
		{"unknown channel", RuleInput{Kind: ptr(KindSpend), Params: &Params{Amount: ptr(num.MustParse("5"))},
			Channels: &[]string{uuid.NewString()}}, "channels[0]"},
		{"unknown notification", RuleInput{Kind: ptr(KindNotification), Params: &Params{Notification: "nope"}}, "params.notification"},
		{"no thresholds", RuleInput{Kind: ptr(KindUsagePercent), Params: &Params{}}, "params.thresholds"},
		{"negative threshold", RuleInput{Kind: ptr(KindUsagePercent), Params: &Params{Thresholds: decs("-1")}}, "params.thresholds[0]"},
		{"unknown kind", RuleInput{Kind: ptr("usage")}, "kind"},
		{"unknown plan", RuleInput{Kind: ptr(KindSpend), Params: &Params{Amount: ptr(num.MustParse("5"))}, Filters: &Filters{Plans: []string{"gold"}}}, "filters.plans[0]"},
		{"unknown credit", RuleInput{Kind: ptr(KindGrantBalanceBelow), Params: &Params{Balance: ptr(num.MustParse("5")), Credit: "gold"}}, "params.credit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.in
			in.Name = ptr("r-" + tc.name)
			if in.Channels == nil {
				in.Channels = &[]string{c.ID.String()}
			}
			_, err := h.svc.CreateRule(h.ctx, h.env, in)
			var ve *validation.Error
			if !errors.As(err, &ve) {
				t.Fatalf("err %v, want a validation error", err)
			}
			for _, f := range ve.Fields {
				if f.Path == tc.path {
					return
				}
			}
			t.Fatalf("fields %+v, want %s", ve.Fields, tc.path)
		})
	}
	ok := h.rule("half", KindNotification, Params{Notification: "half-seats"}, c)
	if _, err := h.svc.CreateRule(h.ctx, h.env, RuleInput{Name: ptr("half"), Kind: ptr(KindNotification),
		Params: &Params{Notification: "half-seats"}, Channels: &[]string{c.ID.String()}}); !errors.Is(err, ErrConflict) {
		t.Fatalf("same name: %v", err)
	}
	upd, err := h.svc.UpdateRule(h.ctx, h.env, ok.ID, RuleInput{Enabled: ptr(false)})
	if err != nil || upd.Enabled || upd.Params.Notification != "half-seats" {
		t.Fatalf("update: %+v %v", upd, err)
	}
	if err := h.svc.DeleteChannel(h.ctx, h.env, c.ID); err != nil {
		t.Fatal(err)
	}
	r, err := h.svc.Rule(h.ctx, h.env, ok.ID)
	if err != nil || len(r.Channels) != 0 {
		t.Fatalf("deleting the channel leaves %v in the rule (%v)", r.Channels, err)
	}
}

func TestFiresOncePerThresholdAndPeriod(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil, Config{})
	hook := alerttest.NewWebhook()
	defer hook.Close()
	c := h.channel(ChannelInput{Name: ptr("ops"), Kind: ptr(ChannelWebhook), Webhook: &WebhookInput{URL: hook.URL()}})
	h.rule("usage", KindUsagePercent, Params{Thresholds: decs("50", "80", "100")}, c)
	acme := h.customer("acme", "pro")
	dec := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)

	steps := []struct {
		percent       string
		period        time.Time
		alerts, super int
	}{
		{"85", dec, 1, 1},                  // 80 fires; 50 is recorded as superseded
		{"79", dec, 0, 0},                  // dips below
		{"81", dec, 0, 0},                  // and crosses again: nothing (hysteresis)
		{"100", dec, 1, 0},                 // the next threshold
		{"150", dec, 0, 0},                 // nothing left
		{"55", dec.AddDate(0, 1, 0), 1, 0}, // re-armed in the next period
	}
	for i, st := range steps {
		f, err := h.svc.Observe(h.ctx, h.env, []Observation{usage(acme, "tokens", st.percent, st.period)})
		if err != nil {
			t.Fatal(err)
		}
		if f.Alerts != st.alerts || f.Superseded != st.super || f.Deliveries != st.alerts {
			t.Fatalf("step %d (%s%%): %+v, want %d alerts, %d superseded", i, st.percent, f, st.alerts, st.super)
		}
	}
	if n := h.count(`select count(*) from river_job where kind = 'limitr.alert_delivery'`); n != 3 {
		t.Fatalf("%d delivery jobs, want 3", n)
	}
	as, err := h.svc.Alerts(h.ctx, h.env, Page{CustomerID: "acme"})
	if err != nil || len(as) != 4 {
		t.Fatalf("%d alerts (%v)", len(as), err)
	}
	if as[0].Threshold != "50" || as[0].PeriodStart == nil || !as[0].PeriodStart.Equal(dec.AddDate(0, 1, 0)) {
		t.Fatalf("newest alert %+v", as[0])
	}
}

func TestDeliversToSlackEmailAndWebhook(t *testing.T) {
	t.Parallel()
	slack := alerttest.NewSlack()
	defer slack.Close()
	smtpSrv, err := alerttest.NewSMTP()
	if err != nil {
		t.Fatal(err)
	}
	defer smtpSrv.Close()
	hook := alerttest.NewWebhook()
	defer hook.Close()
	reg := prometheus.NewRegistry()
	h := newHarness(t, nil, Config{SlackAPIURL: slack.APIURL(), PublicURL: "https://limitr.example", Metrics: NewMetrics(reg)})
	sc := h.channel(ChannelInput{Name: ptr("slack"), Kind: ptr(ChannelSlack), Slack: &SlackInput{Token: "xoxb-secret-token-1234", Channel: "C0123"}})
	ec := h.channel(ChannelInput{Name: ptr("email"), Kind: ptr(ChannelEmail), Email: &EmailInput{To: []string{"ops@acme.test"}, From: "alerts@limitr.test",
		SMTP: SMTPInput{Host: "127.0.0.1", Port: smtpSrv.Port, TLS: "none"}}})
	wc := h.channel(ChannelInput{Name: ptr("webhook"), Kind: ptr(ChannelWebhook), Webhook: &WebhookInput{URL: hook.URL()}})
	hook.SetSecrets(wc.Webhook.SigningSecret)
	h.rule("usage", KindUsagePercent, Params{Thresholds: decs("80")}, sc, ec, wc)
	acme := h.customer("acme", "pro")
	if _, err := h.svc.Observe(h.ctx, h.env, []Observation{usage(acme, "tokens", "85", time.Now().UTC().Truncate(time.Hour))}); err != nil {
		t.Fatal(err)
	}
	h.start()
	waitFor(t, 10*time.Second, "three deliveries", h.allDelivered(3))

	posted := slack.Posted()
	if len(posted) != 1 || posted[0].Channel != "C0123" || posted[0].Token != "xoxb-secret-token-1234" {
		t.Fatalf("slack got %+v", posted)
	}
	blocks := blockText(posted[0])
	for _, want := range []string{"acme", "pro", "tokens", "85 / 1000", "https://limitr.example/dashboard/customers/acme"} {
		if !strings.Contains(blocks, want) {
			t.Errorf("slack blocks lack %q: %s", want, blocks)
		}
	}
	mails := smtpSrv.Received()
	if len(mails) != 1 {
		t.Fatalf("%d mails", len(mails))
	}
	msg, err := mail.ReadMessage(bytes.NewReader(mails[0].Data))
	if err != nil {
		t.Fatal(err)
	}
	a := h.onlyAlert()
	ds, err := h.svc.Deliveries(h.ctx, h.env, Page{AlertID: &a.ID})
	if err != nil || len(ds) != 3 {
		t.Fatalf("%d deliveries (%v)", len(ds), err)
	}
	byKind := map[string]Delivery{}
	for _, d := range ds {
		byKind[d.ChannelKind] = d
		if d.Attempts != 1 || len(d.Log) != 1 || d.Log[0].Outcome != outcomeDelivered {
			t.Errorf("%s delivery %+v", d.ChannelKind, d)
		}
	}
	if got, want := msg.Header.Get("Message-Id"), "<"+channels.MessageID(byKind["email"].ID.String())+">"; got != want {
		t.Errorf("Message-ID %s, want %s", got, want)
	}
	hooks := hook.Received()
	if len(hooks) != 1 || hooks[0].ID != byKind["webhook"].ID.String() || hook.Rejected() != 0 {
		t.Fatalf("webhook got %+v (rejected %d)", hooks, hook.Rejected())
	}
	if posted[0].DeliveryID != byKind["slack"].ID.String() {
		t.Errorf("slack metadata delivery id %q", posted[0].DeliveryID)
	}
	m := h.cfg.Metrics.Attempts
	for _, kind := range []string{ChannelSlack, ChannelEmail, ChannelWebhook} {
		if n := testutil.ToFloat64(m.WithLabelValues(kind, outcomeDelivered)); n != 1 {
			t.Errorf("limitr_alert_delivery_attempts_total{channel=%q,outcome=delivered} = %v", kind, n)
		}
	}
}

func blockText(m alerttest.SlackMessage) string {
	j, _ := m.Blocks.MarshalJSON()
	return string(j)
}

func TestSlackRateLimitIsHonoured(t *testing.T) {
	t.Parallel()
	slack := alerttest.NewSlack()
	defer slack.Close()
	h := newHarness(t, nil, Config{SlackAPIURL: slack.APIURL()})
	sc := h.channel(ChannelInput{Name: ptr("slack"), Kind: ptr(ChannelSlack), Slack: &SlackInput{Token: "xoxb-1", Channel: "C1"}})
	h.rule("usage", KindUsagePercent, Params{Thresholds: decs("80")}, sc)
	slack.RateLimit(1, time.Second)
	if _, err := h.svc.Observe(h.ctx, h.env, []Observation{usage(h.customer("acme", "pro"), "tokens", "90", time.Now().UTC())}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	h.start()
	waitFor(t, 10*time.Second, "delivery after the 429", h.allDelivered(1))
	if took := time.Since(start); took < 900*time.Millisecond {
		t.Errorf("delivered %s after a 429 with Retry-After: 1", took)
	}
	a := h.onlyAlert()
	ds, _ := h.svc.Deliveries(h.ctx, h.env, Page{AlertID: &a.ID})
	if len(ds) != 1 || ds[0].Attempts != 2 || ds[0].Log[0].Outcome != outcomeRetry || ds[0].Log[0].StatusCode != 429 {
		t.Fatalf("delivery %+v", ds)
	}
	if len(slack.Posted()) != 1 || slack.Refused() != 1 {
		t.Fatalf("posted %d, refused %d", len(slack.Posted()), slack.Refused())
	}
}

// TestSlackDownForAMinute keeps Slack down for a minute: the delivery backs off
// (1 s doubling, jittered), is delivered once Slack is back, and only once.
func TestSlackDownForAMinute(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("a minute-long outage")
	}
	slack := alerttest.NewSlack()
	defer slack.Close()
	h := newHarness(t, nil, Config{SlackAPIURL: slack.APIURL(), RetryBase: time.Second})
	sc := h.channel(ChannelInput{Name: ptr("slack"), Kind: ptr(ChannelSlack), Slack: &SlackInput{Token: "xoxb-1", Channel: "C1"}})
	h.rule("usage", KindUsagePercent, Params{Thresholds: decs("80")}, sc)
	slack.SetDown(true)
	if _, err := h.svc.Observe(h.ctx, h.env, []Observation{usage(h.customer("acme", "pro"), "tokens", "90", time.Now().UTC())}); err != nil {
		t.Fatal(err)
	}
	h.start()
	down := time.Now()
	time.Sleep(time.Minute)
	slack.SetDown(false)
	refused := slack.Refused()
	waitFor(t, 90*time.Second, "delivery once Slack is back", h.allDelivered(1))
	took := time.Since(down)
	time.Sleep(time.Second)
	if n := len(slack.Posted()); n != 1 {
		t.Fatalf("%d messages, want exactly 1", n)
	}
	// 1 s doubling with jitter: at least 4 refused attempts in a minute, and at most 7.
	if refused < 4 || refused > 7 {
		t.Errorf("%d attempts refused during the minute", refused)
	}
	t.Logf("delivered %s after the outage began, after %d refused attempts", took.Round(time.Second), refused)
}

// TestKillDuringDelivery stops the worker while Slack has accepted the message but
// not answered: the retry asks Slack (conversations.history) and does not post again.
func TestKillDuringDelivery(t *testing.T) {
	t.Parallel()
	slack := alerttest.NewSlack()
	defer slack.Close()
	h := newHarness(t, nil, Config{SlackAPIURL: slack.APIURL()})
	sc := h.channel(ChannelInput{Name: ptr("slack"), Kind: ptr(ChannelSlack), Slack: &SlackInput{Token: "xoxb-1", Channel: "C1"}})
	h.rule("usage", KindUsagePercent, Params{Thresholds: decs("80")}, sc)
	release := slack.Hold()
	defer release()
	if _, err := h.svc.Observe(h.ctx, h.env, []Observation{usage(h.customer("acme", "pro"), "tokens", "90", time.Now().UTC())}); err != nil {
		t.Fatal(err)
	}
	stop := h.start()
	waitFor(t, 10*time.Second, "Slack to receive the message", func() bool { return len(slack.Posted()) == 1 })
	stop(true) // the worker dies mid-request
	release()
	if n := h.count(`select count(*) from alert_deliveries where status = 'sending'`); n != 1 {
		t.Fatalf("%d deliveries left sending, want 1", n)
	}
	h.start() // restart
	waitFor(t, 15*time.Second, "the delivery to be confirmed", h.allDelivered(1))
	if n := len(slack.Posted()); n != 1 {
		t.Fatalf("Slack got %d messages, want exactly 1", n)
	}
	a := h.onlyAlert()
	ds, _ := h.svc.Deliveries(h.ctx, h.env, Page{AlertID: &a.ID})
	outcomes := []string{}
	for _, l := range ds[0].Log {
		outcomes = append(outcomes, l.Outcome)
	}
	if strings.Join(outcomes, ",") != outcomeInDoubt+","+outcomeConfirmed || slack.HistoryCalls() == 0 {
		t.Fatalf("attempts %v, history calls %d", outcomes, slack.HistoryCalls())
	}
}

func TestDeadLetterAndResend(t *testing.T) {
	t.Parallel()
	hook := alerttest.NewWebhook() // no secrets yet: every request is refused 401
	defer hook.Close()
	h := newHarness(t, nil, Config{})
	wc := h.channel(ChannelInput{Name: ptr("hook"), Kind: ptr(ChannelWebhook), Webhook: &WebhookInput{URL: hook.URL()}})
	h.rule("usage", KindUsagePercent, Params{Thresholds: decs("80")}, wc)
	if _, err := h.svc.Observe(h.ctx, h.env, []Observation{usage(h.customer("acme", "pro"), "tokens", "90", time.Now().UTC())}); err != nil {
		t.Fatal(err)
	}
	h.start()
	waitFor(t, 10*time.Second, "the delivery to be dead-lettered", func() bool {
		return h.count(`select count(*) from alert_deliveries where status = 'dead'`) == 1
	})
	a := h.onlyAlert()
	ds, _ := h.svc.Deliveries(h.ctx, h.env, Page{AlertID: &a.ID})
	if ds[0].Log[0].Outcome != outcomeFailed || ds[0].Log[0].StatusCode != 401 || ds[0].LastError == "" {
		t.Fatalf("delivery %+v", ds[0])
	}
	hook.SetSecrets(wc.Webhook.SigningSecret)
	d, err := h.svc.Resend(h.ctx, h.env, ds[0].ID)
	if err != nil || d.Status != "pending" || d.Resends != 1 {
		t.Fatalf("resend: %+v %v", d, err)
	}
	waitFor(t, 10*time.Second, "the resend to be delivered", h.allDelivered(1))
	if got := hook.Received(); len(got) != 1 || got[0].ID != ds[0].ID.String()+"-r1" {
		t.Fatalf("webhook got %+v", got)
	}
	if _, err := h.svc.Resend(h.ctx, h.env, uuid.New()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("resend of nothing: %v", err)
	}
}

func TestRetriesStopAfterMaxAge(t *testing.T) {
	t.Parallel()
	slack := alerttest.NewSlack()
	defer slack.Close()
	h := newHarness(t, nil, Config{SlackAPIURL: slack.APIURL(), MaxAge: time.Second, RetryBase: 100 * time.Millisecond})
	sc := h.channel(ChannelInput{Name: ptr("slack"), Kind: ptr(ChannelSlack), Slack: &SlackInput{Token: "xoxb-1", Channel: "C1"}})
	h.rule("usage", KindUsagePercent, Params{Thresholds: decs("80")}, sc)
	slack.SetDown(true)
	if _, err := h.svc.Observe(h.ctx, h.env, []Observation{usage(h.customer("acme", "pro"), "tokens", "90", time.Now().UTC())}); err != nil {
		t.Fatal(err)
	}
	h.start()
	waitFor(t, 15*time.Second, "the delivery to be dead-lettered", func() bool {
		return h.count(`select count(*) from alert_deliveries where status = 'dead'`) == 1
	})
	if n := len(slack.Posted()); n != 0 || slack.Refused() < 2 {
		t.Fatalf("posted %d, refused %d", n, slack.Refused())
	}
}

func TestChannelSecretsAreSealed(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil, Config{})
	const token, password = "xoxb-very-secret-token", "smtp-very-secret-password"
	sc := h.channel(ChannelInput{Name: ptr("slack"), Kind: ptr(ChannelSlack), Slack: &SlackInput{Token: token, Channel: "C1"}})
	ec := h.channel(ChannelInput{Name: ptr("mail"), Kind: ptr(ChannelEmail), Email: &EmailInput{To: []string{"a@b.test"}, From: "x@y.test",
		SMTP: SMTPInput{Host: "127.0.0.1", Port: 25, Username: "u", Password: password}}})
	hookURL := "https://hooks.slack.test/services/T000/B000/very-secret-path"
	wh := h.channel(ChannelInput{Name: ptr("incoming"), Kind: ptr(ChannelSlack), Slack: &SlackInput{WebhookURL: hookURL}})
	if sc.Slack.TokenHint == "" || strings.Contains(sc.Slack.TokenHint, "secret") || !ec.Email.SMTP.PasswordSet ||
		strings.Contains(wh.Slack.WebhookURLHint, "secret") {
		t.Fatalf("views leak or lack hints: %+v %+v %+v", sc.Slack, ec.Email, wh.Slack)
	}
	var dump string
	if err := h.pool.QueryRow(h.ctx, `select coalesce(string_agg(t::text, ' '), '') from (
		select c::text as t from alert_channels c union all select a::text from audit_log a) x`).Scan(&dump); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{token, password, "very-secret-path"} {
		if strings.Contains(dump, s) {
			t.Errorf("%q is stored in plaintext", s)
		}
	}
	// A patch that leaves the secrets out keeps them.
	upd, err := h.svc.UpdateChannel(h.ctx, h.env, ec.ID, ChannelInput{Email: &EmailInput{To: []string{"c@d.test"}, From: "x@y.test",
		SMTP: SMTPInput{Host: "127.0.0.1", Port: 25, Username: "u"}}})
	if err != nil || !upd.Email.SMTP.PasswordSet {
		t.Fatalf("update: %+v %v", upd, err)
	}
	stored, err := h.svc.getChannel(h.ctx, h.pool, h.env, ec.ID, false, true)
	if err != nil || stored.secrets.SMTPPassword != password {
		t.Fatalf("password after update: %v", err)
	}
	// Rotation keeps the old webhook secret signing for a day.
	wc := h.channel(ChannelInput{Name: ptr("hook"), Kind: ptr(ChannelWebhook), Webhook: &WebhookInput{URL: "https://example.test/hook"}})
	rot, err := h.svc.UpdateChannel(h.ctx, h.env, wc.ID, ChannelInput{Webhook: &WebhookInput{RotateSecret: true}})
	if err != nil || rot.Webhook.SigningSecret == "" || rot.Webhook.SigningSecret == wc.Webhook.SigningSecret || rot.Webhook.PreviousValidUntil == nil {
		t.Fatalf("rotate: %+v %v", rot.Webhook, err)
	}
	got, _ := h.svc.getChannel(h.ctx, h.pool, h.env, wc.ID, false, true)
	sender := h.svc.sender(got).(channels.Webhook)
	if len(sender.Secrets) != 2 || sender.Secrets[0] != rot.Webhook.SigningSecret || sender.Secrets[1] != wc.Webhook.SigningSecret {
		t.Fatalf("signing secrets %d", len(sender.Secrets))
	}
	// Without LIMITR_SECRET_KEY nothing is stored.
	eph, _ := secrets.NewEphemeral()
	h.svc.keyring = eph
	if _, err := h.svc.CreateChannel(h.ctx, h.env, ChannelInput{Name: ptr("x"), Kind: ptr(ChannelSlack), Slack: &SlackInput{Token: "t", Channel: "C"}}); !errors.Is(err, ErrEphemeralKeyring) {
		t.Fatalf("ephemeral keyring: %v", err)
	}
}

func TestIngestEventsFiresNotificationRules(t *testing.T) {
	t.Parallel()
	h := newHarness(t, examplePolicy(t, "ai-credits.yaml"), Config{})
	hook := alerttest.NewWebhook()
	defer hook.Close()
	wc := h.channel(ChannelInput{Name: ptr("hook"), Kind: ptr(ChannelWebhook), Webhook: &WebhookInput{URL: hook.URL()}})
	h.rule("half", KindNotification, Params{Notification: "half-seats"}, wc)
	h.rule("caps", KindCapHit, Params{}, wc)
	h.rule("usage", KindUsagePercent, Params{Thresholds: decs("80", "100")}, wc)
	h.customer("acme", "pro")
	at := time.Now().UTC()
	day := at.Truncate(24 * time.Hour)
	b := wire.EventBatch{InstanceID: "i-1", Sequence: 1, Events: []wire.Event{
		{Type: "half-seats", Notification: "half-seats", Source: "meter-changed", Customer: "acme", Entitlement: "seats", At: at, Count: 3,
			Payload: []byte(`{"meter":{"value":2,"limit":3}}`)},
		{Type: "cap-limit", Customer: "acme", Entitlement: "ai_tokens", CapID: "daily", At: at, Count: 1},
		{Type: "meter-limit", Customer: "acme", Entitlement: "seats", At: at, Count: 9},
		{Type: "meter-limit", Customer: "acme", Entitlement: "tokens", At: at, Count: 2, PeriodStart: &day,
			Payload: []byte(`{"meter":{"value":960,"limit":1000,"invalid":1200}}`)},
		{Type: "half-seats", Notification: "half-seats", Customer: "ghost", At: at, Count: 1},
	}}
	ack, err := h.svc.IngestEvents(h.ctx, h.env, b)
	if err != nil || ack.Accepted != 5 || ack.Alerts != 3 || ack.Duplicate {
		t.Fatalf("ack %+v %v", ack, err)
	}
	again, err := h.svc.IngestEvents(h.ctx, h.env, b)
	if err != nil || !again.Duplicate || again.Alerts != 0 {
		t.Fatalf("retry: %+v %v", again, err)
	}
	b.Sequence = 2 // the same events in the same period: stored, fire nothing
	if ack, err := h.svc.IngestEvents(h.ctx, h.env, b); err != nil || ack.Alerts != 0 {
		t.Fatalf("second batch %+v %v", ack, err)
	}
	var thr string
	var start time.Time
	if err := h.pool.QueryRow(h.ctx, `select threshold, period_start from alerts where kind = 'usage_percent' and not superseded`).Scan(&thr, &start); err != nil ||
		thr != "100" || !start.Equal(day) {
		t.Fatalf("denial alert: threshold %s from %s (%v), want 100 from %s", thr, start, err, day)
	}
	if n := h.count(`select count(*) from sdk_events`); n != 10 {
		t.Fatalf("%d events stored", n)
	}
	if n := h.count(`select count(*) from sdk_events where customer_uid is null`); n != 2 {
		t.Fatalf("%d unattributed events", n)
	}
	bad := wire.EventBatch{InstanceID: "", Sequence: 0, Events: []wire.Event{{Type: "", Customer: "a", Count: 0}}}
	_, err = h.svc.IngestEvents(h.ctx, h.env, bad)
	var ve *validation.Error
	if !errors.As(err, &ve) || len(ve.Fields) < 4 {
		t.Fatalf("bad batch: %v", err)
	}
}

func TestResealUnderANewKey(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil, Config{})
	const token = "xoxb-reseal-me"
	c := h.channel(ChannelInput{Name: ptr("slack"), Kind: ptr(ChannelSlack), Slack: &SlackInput{Token: token, Channel: "C1"}})
	newKey, _ := secrets.GenerateKey()
	kr, err := secrets.ParseKeyring(newKey + "," + h.keySpec)
	if err != nil {
		t.Fatal(err)
	}
	h.svc.keyring = kr
	if n, err := h.svc.Reseal(h.ctx); err != nil || n != 1 {
		t.Fatalf("reseal: %d %v", n, err)
	}
	if n, _ := h.svc.Reseal(h.ctx); n != 0 {
		t.Fatalf("second reseal re-sealed %d", n)
	}
	only, _ := secrets.ParseKeyring(newKey)
	h.svc.keyring = only // the old key is retired
	got, err := h.svc.getChannel(h.ctx, h.pool, h.env, c.ID, false, true)
	if err != nil || got.secrets.SlackToken != token {
		t.Fatalf("after rotation: %v", err)
	}
}

// TestRescueAfterWorkerDied leaves a delivery as a SIGKILLed worker would: the
// attempt under way, its River job running for a client that is gone, the message
// already in Slack. RescueStuck queues it again within StuckAfter rather than after
// River's own rescue delay; the new attempt finds the message in Slack and does not
// post it again.
func TestRescueAfterWorkerDied(t *testing.T) {
	t.Parallel()
	slack := alerttest.NewSlack()
	defer slack.Close()
	h := newHarness(t, nil, Config{SlackAPIURL: slack.APIURL(), StuckAfter: time.Second})
	sc := h.channel(ChannelInput{Name: ptr("slack"), Kind: ptr(ChannelSlack), Slack: &SlackInput{Token: "xoxb-1", Channel: "C1"}})
	h.rule("usage", KindUsagePercent, Params{Thresholds: decs("80")}, sc)
	if _, err := h.svc.Observe(h.ctx, h.env, []Observation{usage(h.customer("acme", "pro"), "tokens", "90", time.Now().UTC())}); err != nil {
		t.Fatal(err)
	}
	var id uuid.UUID
	if err := h.pool.QueryRow(h.ctx, `select id from alert_deliveries`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	// What the dead worker did: claimed, recorded the attempt, sent, and died.
	if _, err := h.pool.Exec(h.ctx, `update alert_deliveries set status = 'sending', attempts = 1, updated_at = now() - interval '1 hour' where id = $1;`, id); err != nil {
		t.Fatal(err)
	}
	if _, err := h.pool.Exec(h.ctx, `insert into alert_attempts (delivery_id, attempt, started_at) values ($1, 1, now() - interval '1 hour')`, id); err != nil {
		t.Fatal(err)
	}
	if _, err := h.pool.Exec(h.ctx, `update river_job set state = 'running', attempt = 1, attempted_at = now(), attempted_by = '{dead-client}'
		where kind = 'limitr.alert_delivery'`); err != nil {
		t.Fatal(err)
	}
	a := h.onlyAlert()
	ch, err := h.svc.getChannel(h.ctx, h.pool, h.env, sc.ID, false, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.svc.sender(ch).Send(h.ctx, h.svc.message(id.String(), a)); err != nil {
		t.Fatal(err)
	}
	h.start() // River's own rescue waits 2 s here (an hour in production); ours runs now
	n, err := h.svc.RescueStuck(h.ctx)
	if err != nil || n != 1 {
		t.Fatalf("rescued %d (%v)", n, err)
	}
	waitFor(t, 10*time.Second, "the rescued delivery to be confirmed", h.allDelivered(1))
	if got := len(slack.Posted()); got != 1 || slack.HistoryCalls() == 0 {
		t.Fatalf("Slack has %d messages (history asked %d times), want exactly 1", got, slack.HistoryCalls())
	}
	if n, _ := h.svc.RescueStuck(h.ctx); n != 0 {
		t.Fatalf("a delivered delivery was rescued again (%d)", n)
	}
	time.Sleep(3 * time.Second) // River's rescue of the dead job runs it: it finds the delivery done
	if got := len(slack.Posted()); got != 1 {
		t.Fatalf("Slack has %d messages after River's rescue, want 1", got)
	}
}

// TestIngestUnderAFullPool sends event batches from more SDKs at once than the pool
// has connections: no transaction may wait for a second connection while it holds
// one, or every connection ends up waiting.
func TestIngestUnderAFullPool(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil, Config{})
	hook := alerttest.NewWebhook()
	defer hook.Close()
	wc := h.channel(ChannelInput{Name: ptr("hook"), Kind: ptr(ChannelWebhook), Webhook: &WebhookInput{URL: hook.URL()}})
	h.rule("caps", KindCapHit, Params{}, wc)
	h.customer("acme", "pro")
	cfg := h.pool.Config()
	cfg.MaxConns = 2
	small, err := pgxpool.NewWithConfig(h.ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer small.Close()
	svc := New(small, h.svc.keyring, h.svc.jobs, h.svc.policies, Config{})
	svc.SetCustomers(recordsByUID{small})
	ctx, cancel := context.WithTimeout(h.ctx, 20*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() {
			b := wire.EventBatch{InstanceID: fmt.Sprintf("i-%d", i), Sequence: 1, Events: []wire.Event{
				{Type: "cap-limit", Customer: "acme", Entitlement: "tokens", CapID: fmt.Sprintf("cap-%d", i), At: time.Now(), Count: 1}}}
			_, errs[i] = svc.IngestEvents(ctx, h.env, b)
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("batch %d: %v", i, err)
		}
	}
	if n := h.count(`select count(*) from alerts`); n != 8 {
		t.Fatalf("%d alerts, want 8", n)
	}
}

// TestPrivateDestinationsRefused: without AllowPrivateDestinations, a channel a tenant
// points at the control plane's own network is never reached: a test send reports
// why, a delivery is dead at its first attempt. Slack's Web API, which the operator
// chose, stays reachable.
func TestPrivateDestinationsRefused(t *testing.T) {
	t.Parallel()
	hook := alerttest.NewWebhook()
	defer hook.Close()
	slack := alerttest.NewSlack()
	defer slack.Close()
	h := newHarness(t, nil, Config{})
	h.svc = New(h.pool, h.svc.keyring, h.svc.jobs, h.svc.policies, Config{SlackAPIURL: slack.APIURL(), RetryBase: 50 * time.Millisecond})
	h.svc.SetCustomers(recordsByUID{h.pool})
	h.workers = river.NewWorkers()
	h.svc.AddWorkers(h.workers)
	wc := h.channel(ChannelInput{Name: ptr("hook"), Kind: ptr(ChannelWebhook), Webhook: &WebhookInput{URL: hook.URL()}})
	hook.SetSecrets(wc.Webhook.SigningSecret)
	sc := h.channel(ChannelInput{Name: ptr("slack"), Kind: ptr(ChannelSlack), Slack: &SlackInput{Token: "xoxb-1", Channel: "C1"}})
	res, err := h.svc.TestChannel(h.ctx, h.env, wc.ID)
	if err != nil || res.Delivered || res.Retryable || !strings.Contains(res.Error, "not a public address") {
		t.Fatalf("test send to loopback: %+v %v", res, err)
	}
	h.rule("usage", KindUsagePercent, Params{Thresholds: decs("80")}, wc, sc)
	if _, err := h.svc.Observe(h.ctx, h.env, []Observation{usage(h.customer("acme", "pro"), "tokens", "90", time.Now().UTC())}); err != nil {
		t.Fatal(err)
	}
	h.start()
	waitFor(t, 10*time.Second, "the webhook delivery dead and the Slack one delivered", func() bool {
		return h.count(`select count(*) from alert_deliveries where channel_kind = 'webhook' and status = 'dead'`) == 1 &&
			h.count(`select count(*) from alert_deliveries where channel_kind = 'slack' and status = 'delivered'`) == 1
	})
	if len(hook.Received()) != 0 || len(slack.Posted()) != 1 {
		t.Fatalf("webhook got %d, Slack %d", len(hook.Received()), len(slack.Posted()))
	}
}
