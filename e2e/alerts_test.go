package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/limitr/limitr/internal/alerts/alerttest"
	"github.com/limitr/limitr/internal/api"
	"github.com/limitr/limitr/internal/platform/bus"
	"github.com/limitr/limitr/internal/secrets"
	"github.com/limitr/limitr/internal/worker"
	limitr "github.com/limitr/limitr/sdk/go"
)

// alertPolicy has one hard limit of 1,000 tokens whose meter resets every period ms.
func alertPolicy(period time.Duration) []byte {
	return fmt.Appendf(nil, `{"policy": {"credits": {"token": {}}, "plans": {"pro": {"default": true, "entitlements": {
  "tokens": {"limit": {"credit": "token", "value": 1000, "resets": true, "reset_inc": %d}}}}}}}`, period.Milliseconds())
}

// alertStack is the API and the whole worker (aggregation, rule evaluation, River
// deliveries) in this process, with Slack and SMTP servers on loopback.
type alertStack struct {
	t     *testing.T
	pool  *pgxpool.Pool
	cp    *controlPlane
	slack *alerttest.Slack
	smtp  *alerttest.SMTP
}

func startAlertStack(t *testing.T, policy []byte) *alertStack {
	t.Helper()
	slack := alerttest.NewSlack()
	t.Cleanup(slack.Close)
	smtp, err := alerttest.NewSMTP()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(smtp.Close)
	key, err := secrets.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	kr, err := secrets.ParseKeyring(key)
	if err != nil {
		t.Fatal(err)
	}
	_, pool := newDB(t)
	sink := newSink(t, "alerts")
	b := bus.NewMemory()
	srv, err := api.New(api.Config{OperatorToken: "op", RateLimit: 10_000_000},
		api.Deps{Pool: pool, Logger: sink.logger(slog.LevelWarn), Bus: b, Secrets: kr, SlackAPIURL: slack.APIURL(),
			AllowPrivateAlertDestinations: true})
	if err != nil {
		t.Fatal(err)
	}
	a := serve(t, srv)
	w, err := worker.New(worker.Deps{Pool: pool, Bus: b, Logger: sink.logger(slog.LevelWarn), Secrets: kr, SlackAPIURL: slack.APIURL(),
		AllowPrivateAlertDestinations: true},
		worker.Config{PollInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	cp := newControlPlane(t, a.URL)
	cp.setup(policy)
	st := &alertStack{t: t, pool: pool, cp: cp, slack: slack, smtp: smtp}
	t.Cleanup(func() {
		if t.Failed() {
			st.dump()
		}
	})
	return st
}

// dump logs what the control plane holds, to explain a failure.
func (s *alertStack) dump() {
	for _, q := range []string{
		`select customer_id || ' ' || entitlement || ' ' || period_start || ' ' || units from meter_aggregates`,
		`select kind || ' ' || threshold || ' ' || coalesce(period_start::text, '') || ' superseded=' || superseded from alerts`,
		`select channel_kind || ' ' || status || ' attempts=' || attempts || ' ' || last_error from alert_deliveries`,
		`select kind || ' ' || state || ' ' || coalesce(array_to_string(errors, ';'), '') from river_job where queue = 'alerts'`,
	} {
		rows, err := s.pool.Query(context.Background(), q)
		if err != nil {
			s.t.Logf("%s: %v", q, err)
			continue
		}
		for rows.Next() {
			var line string
			_ = rows.Scan(&line)
			s.t.Log(line)
		}
		rows.Close()
	}
}

// channels creates a Slack and an email channel and returns their ids.
func (s *alertStack) channels() []string {
	c := s.cp
	var slackCh, mailCh struct {
		ID string `json:"id"`
	}
	code, data := c.do(http.MethodPost, "/v1/environments/production/alert-channels", c.admin, map[string]any{
		"name": "ops-slack", "kind": "slack", "slack": map[string]string{"token": "xoxb-e2e-token", "channel": "C0ALERTS"}})
	c.decode(code, http.StatusCreated, data, "slack channel", &slackCh)
	code, data = c.do(http.MethodPost, "/v1/environments/production/alert-channels", c.admin, map[string]any{
		"name": "ops-mail", "kind": "email", "email": map[string]any{"to": []string{"ops@acme.test"}, "from": "alerts@limitr.test",
			"smtp": map[string]any{"host": "127.0.0.1", "port": s.smtp.Port, "tls": "none"}}})
	c.decode(code, http.StatusCreated, data, "email channel", &mailCh)
	return []string{slackCh.ID, mailCh.ID}
}

func (s *alertStack) rule(body map[string]any) {
	c := s.cp
	code, data := c.do(http.MethodPost, "/v1/environments/production/alert-rules", c.admin, body)
	c.decode(code, http.StatusCreated, data, "alert rule", nil)
}

// TestAlertOncePerPeriod: an SDK in cloud mode crosses 80 % of a limit; exactly one
// Slack message and one email arrive. Crossing further in the same period sends
// nothing; after the meter resets, crossing again fires again.
func TestAlertOncePerPeriod(t *testing.T) {
	const period = 8 * time.Second
	st := startAlertStack(t, alertPolicy(period))
	st.rule(map[string]any{"name": "tokens at 80%", "kind": "usage_percent", "params": map[string]any{"thresholds": []int{80}},
		"filters": map[string]any{"entitlements": []string{"tokens"}}, "channels": st.channels()})

	ctx := context.Background()
	p, err := limitr.Cloud(ctx, st.cp.sdk, limitr.WithBaseURL(st.cp.base), limitr.WithFlushInterval(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(ctx)
	if _, err := p.CreateCustomer(ctx, "acme", "pro"); err != nil {
		t.Fatal(err)
	}
	arrived := func(n int) func() bool {
		return func() bool { return len(st.slack.Posted()) >= n && len(st.smtp.Received()) >= n }
	}
	allow := func(units float64) {
		t.Helper()
		if ok, err := p.Allow(ctx, "acme", "tokens", units); err != nil || !ok {
			t.Fatalf("Allow(%v) = %v, %v", units, ok, err)
		}
	}

	allow(500)
	first := time.Now()
	allow(350) // 85 %: crosses 80
	waitUntil(t, 5*time.Second, "the first alert by Slack and email", arrived(1))
	t.Logf("crossing → Slack and email in %s", time.Since(first).Round(time.Millisecond))
	allow(50) // 90 %: the same period, the same threshold
	time.Sleep(1500 * time.Millisecond)
	if len(st.slack.Posted()) != 1 || len(st.smtp.Received()) != 1 {
		t.Fatalf("after crossing again in the period: %d Slack, %d mail; want 1 and 1", len(st.slack.Posted()), len(st.smtp.Received()))
	}

	// The next period: the meter starts again from 0.
	start, err := p.Resets(ctx, "acme", "tokens")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(start) + 100*time.Millisecond)
	allow(900)
	waitUntil(t, 5*time.Second, "the alert of the next period", arrived(2))
	time.Sleep(time.Second)
	posted, mails := st.slack.Posted(), st.smtp.Received()
	if len(posted) != 2 || len(mails) != 2 {
		t.Fatalf("%d Slack messages and %d mails, want 2 and 2", len(posted), len(mails))
	}
	if posted[0].Channel != "C0ALERTS" || posted[0].Token != "xoxb-e2e-token" || posted[0].DeliveryID == posted[1].DeliveryID {
		t.Fatalf("slack messages %+v", posted)
	}
}

func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
