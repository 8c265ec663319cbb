package bench

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/limitr/limitr/internal/alerts/alerttest"
	limitr "github.com/limitr/limitr/sdk/go"
)

// AlertPolicy is a one-plan policy whose entitlement "tokens" has a hard limit of
// 1,000 tokens a day, and a policy notification "tokens-80" that matches a call taking
// a meter to 80 % or more of its limit.
const AlertPolicy = `{"policy": {"credits": {"token": {}},
  "plans": {"pro": {"default": true, "entitlements": {
    "tokens": {"limit": {"credit": "token", "value": 1000, "resets": true, "reset_inc": "1day"}}}}},
  "notifications": {"tokens-80": {"matches": "type == 'meter-changed' && event.entitlement == 'tokens' && event.meter.value >= 0.8 * event.meter.limit"}}}}`

// AlertOptions shape an alert-latency run.
type AlertOptions struct {
	Customers int // crossing at once (default 1,000)
	// Path is how the crossing reaches the server: "usage" (a usage_percent rule the
	// worker evaluates as it aggregates the SDK's usage) or "notification" (the
	// policy notification the SDK forwards, and a notification rule).
	Path  string
	Slack *alerttest.Slack // the Slack server the stack's --slack-api-url points at
	Flush time.Duration    // the SDK's flush interval (default 100 ms)
}

// AlertResult is the time from the Allow that crossed 80 % to Slack accepting the
// message, per customer.
type AlertResult struct {
	Path       string
	Customers  int
	Arrived    int
	Duplicates int
	Latency    Dist
	// The stages of Latency: crossing → alert fired (committed), fired → the
	// delivery's attempt started (River picked it up), attempt started → Slack accepted.
	Fired, Picked, Sent Dist
	Crossing            time.Duration // how long the crossing calls took, all customers
	Elapsed             time.Duration
}

func (r AlertResult) String() string {
	return fmt.Sprintf("alerts (%s path): %d of %d customers alerted, %d duplicates; Allow crossing 80%% → Slack accepted: %s (crossings took %s)\n"+
		"  crossing → alert fired:   %s\n  fired → attempt started:  %s\n  attempt → Slack accepted: %s",
		r.Path, r.Arrived, r.Customers, r.Duplicates, r.Latency, r.Crossing.Round(time.Millisecond), r.Fired, r.Picked, r.Sent)
}

// Meets reports the budget: every customer alerted once, p99 ≤ 2 s.
func (r AlertResult) Meets() bool {
	return r.Arrived == r.Customers && r.Duplicates == 0 && r.Latency.P99 <= 2*time.Second
}

// Alerts runs opt.Customers customers of t (whose active policy is AlertPolicy) up to
// 70 % of their limit through one cloud-mode SDK, lets that settle, then takes every
// one past 80 % at once and measures, per customer, from its crossing Allow to the
// Slack server accepting its message.
func Alerts(ctx context.Context, c *http.Client, t Target, pool *pgxpool.Pool, opt AlertOptions) (AlertResult, error) {
	if opt.Customers <= 0 {
		opt.Customers = 1000
	}
	if opt.Flush <= 0 {
		opt.Flush = 100 * time.Millisecond
	}
	res := AlertResult{Path: opt.Path, Customers: opt.Customers}
	if err := alertRule(ctx, c, t, opt.Path); err != nil {
		return res, err
	}
	ids := make([]string, opt.Customers)
	for i := range ids {
		ids[i] = fmt.Sprintf("cus_%05d", i)
	}
	if err := AddCustomers(ctx, c, t, ids, "", 8); err != nil {
		return res, err
	}
	p, err := limitr.Cloud(ctx, t.SDKKey, limitr.WithBaseURL(t.BaseURL), limitr.WithFlushInterval(opt.Flush))
	if err != nil {
		return res, err
	}
	defer p.Close(context.WithoutCancel(ctx))
	for _, id := range ids {
		if ok, err := p.Allow(ctx, id, "tokens", 700); err != nil || !ok {
			return res, fmt.Errorf("prime %s: %v %w", id, ok, err)
		}
	}
	time.Sleep(3 * time.Second) // synced and aggregated: 70 % fires nothing

	var mu sync.Mutex
	arrived := map[string]time.Time{}
	opt.Slack.OnPost(func(m alerttest.SlackMessage) {
		id := ""
		if i := strings.Index(m.Text, "cus_"); i >= 0 && len(m.Text) >= i+9 {
			id = m.Text[i : i+9]
		}
		mu.Lock()
		defer mu.Unlock()
		if _, dup := arrived[id]; dup {
			res.Duplicates++
			return
		}
		arrived[id] = m.At
	})
	defer opt.Slack.OnPost(nil)
	crossed := make(map[string]time.Time, len(ids))
	start := time.Now()
	for _, id := range ids {
		crossed[id] = time.Now()
		if ok, err := p.Allow(ctx, id, "tokens", 150); err != nil || !ok {
			return res, fmt.Errorf("cross %s: %v %w", id, ok, err)
		}
	}
	res.Crossing = time.Since(start)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		n := len(arrived)
		mu.Unlock()
		if n == len(ids) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(time.Second) // duplicates would arrive now
	res.Elapsed = time.Since(start)
	mu.Lock()
	defer mu.Unlock()
	lat := make([]time.Duration, 0, len(arrived))
	for id, at := range arrived {
		if c, ok := crossed[id]; ok {
			lat = append(lat, at.Sub(c))
		}
	}
	slices.Sort(lat)
	res.Arrived, res.Latency = len(lat), NewDist(lat)
	return res, res.stages(ctx, pool, crossed, arrived)
}

// stages splits each customer's latency at the alert's commit and its attempt's start.
func (r *AlertResult) stages(ctx context.Context, pool *pgxpool.Pool, crossed, arrived map[string]time.Time) error {
	rows, err := pool.Query(ctx, `select a.customer_id, a.fired_at, t.started_at from alerts a
		join alert_deliveries d on d.alert_id = a.id join alert_attempts t on t.delivery_id = d.id and t.attempt = 1`)
	if err != nil {
		return err
	}
	defer rows.Close()
	var fired, picked, sent []time.Duration
	for rows.Next() {
		var id string
		var firedAt, started time.Time
		if err := rows.Scan(&id, &firedAt, &started); err != nil {
			return err
		}
		c, ok1 := crossed[id]
		a, ok2 := arrived[id]
		if ok1 && ok2 {
			fired, picked, sent = append(fired, firedAt.Sub(c)), append(picked, started.Sub(firedAt)), append(sent, a.Sub(started))
		}
	}
	for _, d := range [][]time.Duration{fired, picked, sent} {
		slices.Sort(d)
	}
	r.Fired, r.Picked, r.Sent = NewDist(fired), NewDist(picked), NewDist(sent)
	return rows.Err()
}

// alertRule creates a Slack channel and the rule of the path.
func alertRule(ctx context.Context, c *http.Client, t Target, path string) error {
	base := t.BaseURL + "/v1/environments/" + url.PathEscape(t.Environment)
	var ch struct {
		ID string `json:"id"`
	}
	if err := call(ctx, c, http.MethodPost, base+"/alert-channels", t.AdminKey, "application/json",
		[]byte(`{"name": "bench", "kind": "slack", "slack": {"token": "xoxb-bench", "channel": "C0BENCH"}}`), http.StatusCreated, &ch); err != nil {
		return fmt.Errorf("alert channel: %w", err)
	}
	rule := `{"name": "tokens 80%", "kind": "usage_percent", "params": {"thresholds": [80]}, "channels": ["` + ch.ID + `"]}`
	if path == "notification" {
		rule = `{"name": "tokens-80", "kind": "notification", "params": {"notification": "tokens-80"}, "channels": ["` + ch.ID + `"]}`
	}
	if err := call(ctx, c, http.MethodPost, base+"/alert-rules", t.AdminKey, "application/json", []byte(rule), http.StatusCreated, nil); err != nil {
		return fmt.Errorf("alert rule: %w", err)
	}
	return nil
}
