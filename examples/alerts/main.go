// Command alerts is the alerts part of `make demo`: a webhook receiver on 127.0.0.1
// that verifies signatures, an alert channel pointing at it, a usage_percent rule at
// 80 % and 100 % of the starter plan's input tokens, and an application in cloud mode
// whose starter customer uses its tokens until the limit denies it. The 80 % alert
// comes from the rule the worker evaluates as usage is aggregated; the 100 % one from
// the denial the SDK forwards. Each arrives once.
//
// scripts/demo.sh runs it after examples/cloud with:
//
//	LIMITR_BASE_URL    the API, e.g. http://127.0.0.1:8080
//	LIMITR_SDK_KEY     an SDK key of the environment (lk_sdk_...)
//	LIMITR_ADMIN_KEY   an admin key (channels and rules are admin operations)
//	LIMITR_ENVIRONMENT the environment (default production)
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/limitr/limitr/internal/alerts/alerttest"
	limitr "github.com/limitr/limitr/sdk/go"
)

func main() {
	if err := run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "alerts demo:", err)
		os.Exit(1)
	}
}

type settings struct {
	base, sdkKey, adminKey, env string
}

func load() (settings, error) {
	s := settings{base: strings.TrimRight(os.Getenv("LIMITR_BASE_URL"), "/"), sdkKey: os.Getenv("LIMITR_SDK_KEY"),
		adminKey: os.Getenv("LIMITR_ADMIN_KEY"), env: os.Getenv("LIMITR_ENVIRONMENT")}
	if s.env == "" {
		s.env = "production"
	}
	if s.base == "" || s.sdkKey == "" || s.adminKey == "" {
		return s, fmt.Errorf("LIMITR_BASE_URL, LIMITR_SDK_KEY and LIMITR_ADMIN_KEY must be set: run it through `make demo`")
	}
	return s, nil
}

const (
	customer    = "user_alerts"
	entitlement = "ai-chat-input"
)

func run(ctx context.Context) error {
	cfg, err := load()
	if err != nil {
		return err
	}
	receiver := alerttest.NewWebhook()
	defer receiver.Close()
	fmt.Printf("1. A webhook receiver on %s that checks Standard Webhooks signatures\n", receiver.URL())

	var channel struct {
		ID      string `json:"id"`
		Webhook struct {
			SigningSecret string `json:"signing_secret"`
		} `json:"webhook"`
	}
	if err := cfg.admin(ctx, http.MethodPost, "/alert-channels", map[string]any{"name": "demo-webhook", "kind": "webhook",
		"webhook": map[string]any{"url": receiver.URL()}}, http.StatusCreated, &channel); err != nil {
		return err
	}
	receiver.SetSecrets(channel.Webhook.SigningSecret)
	fmt.Printf("   POST …/alert-channels → %s (signing secret %s…, shown once)\n", channel.ID, channel.Webhook.SigningSecret[:10])

	rule := map[string]any{"name": "starter input tokens", "kind": "usage_percent", "params": map[string]any{"thresholds": []int{80, 100}},
		"filters": map[string]any{"plans": []string{"starter"}, "entitlements": []string{entitlement}}, "channels": []string{channel.ID}}
	if err := cfg.admin(ctx, http.MethodPost, "/alert-rules", rule, http.StatusCreated, nil); err != nil {
		return err
	}
	fmt.Println("2. POST …/alert-rules: usage_percent at 80 % and 100 % of starter's", entitlement)

	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	policy, err := limitr.Cloud(ctx, cfg.sdkKey, limitr.WithBaseURL(cfg.base), limitr.WithFlushInterval(200*time.Millisecond),
		limitr.WithLogger(logger))
	if err != nil {
		return err
	}
	defer policy.Close(ctx) //nolint:errcheck // closed below; this covers early returns
	if _, err := policy.CreateCustomer(ctx, customer, "starter"); err != nil {
		return err
	}
	limit, err := policy.Limit(ctx, customer, entitlement)
	if err != nil {
		return err
	}
	fmt.Printf("3. %s on starter uses its %s (limit %.0f) in steps of 30 %%\n", customer, entitlement, limit)
	step := limit * 0.3
	for i, want := range []int{0, 0, 1, 2} {
		start := time.Now()
		ok, err := policy.Allow(ctx, customer, entitlement, step)
		if err != nil {
			return err
		}
		used, _ := policy.Value(ctx, customer, entitlement)
		verdict := "allowed"
		if !ok {
			verdict = "denied: the limit is reached"
		}
		fmt.Printf("   Allow(%.0f) → %s (meter %.0f, %.0f %%)\n", step, verdict, used, 100*used/limit)
		if want == 0 {
			continue
		}
		if err := waitFor(receiver, want, 20*time.Second); err != nil {
			return fmt.Errorf("call %d: %w", i+1, err)
		}
		h := receiver.Received()[want-1]
		var m struct {
			Title string `json:"title"`
		}
		_ = json.Unmarshal(h.Body, &m)
		fmt.Printf("     → webhook %s, signature verified, %s after the call: %q\n", h.ID[:8], time.Since(start).Round(time.Millisecond), m.Title)
	}
	if err := policy.Close(ctx); err != nil {
		return err
	}
	time.Sleep(time.Second) // anything sent twice would arrive now
	if n := len(receiver.Received()); n != 2 {
		return fmt.Errorf("%d alerts arrived, want exactly 2 (80 %% and 100 %%)", n)
	}
	fmt.Println("4. Each alert arrived once. The delivery log:")
	var deliveries struct {
		Data []struct {
			Status   string `json:"status"`
			Attempts int    `json:"attempts"`
		} `json:"data"`
	}
	if err := cfg.admin(ctx, http.MethodGet, "/alert-deliveries", nil, http.StatusOK, &deliveries); err != nil {
		return err
	}
	for _, d := range deliveries.Data {
		fmt.Printf("   GET …/alert-deliveries: %s after %d attempt(s)\n", d.Status, d.Attempts)
	}
	return nil
}

// waitFor waits until the receiver has n deliveries.
func waitFor(r *alerttest.Webhook, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for len(r.Received()) < n {
		if time.Now().After(deadline) {
			return fmt.Errorf("no alert within %s (%d received)", timeout, len(r.Received()))
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

func (cfg settings) admin(ctx context.Context, method, path string, body any, want int, out any) error {
	var rd io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, cfg.base+"/v1/environments/"+cfg.env+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+cfg.adminKey)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil {
		return err
	}
	if res.StatusCode != want {
		return fmt.Errorf("%s %s: %d %s", method, path, res.StatusCode, bytes.TrimSpace(data))
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}
