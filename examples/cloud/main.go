// Command cloud is the cloud-mode half of `make demo`: the quick-start application code
// run with limitr.Cloud against a control plane (`limitr dev`). It enforces the policy
// published to the SDK key's environment, creates customers through the API, sees a
// changed limit pushed to it and enforces it, flushes its usage on Close, and prints
// the usage the server committed for each customer.
//
// scripts/demo.sh starts the control plane, bootstraps a tenant, publishes
// examples/quickstart/policy.json and runs this with:
//
//	LIMITR_BASE_URL   the API, e.g. http://127.0.0.1:8080
//	LIMITR_SDK_KEY    an SDK key of the environment (lk_sdk_...)
//	LIMITR_ADMIN_KEY  an admin key, used only to publish the changed limit (the operator's part)
//	LIMITR_ENVIRONMENT the environment (default production)
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	limitr "github.com/limitr/limitr/sdk/go"
)

func main() {
	if err := run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "cloud demo:", err)
		os.Exit(1)
	}
}

type settings struct {
	base, sdkKey, adminKey, env string
}

func load() (settings, error) {
	s := settings{base: os.Getenv("LIMITR_BASE_URL"), sdkKey: os.Getenv("LIMITR_SDK_KEY"),
		adminKey: os.Getenv("LIMITR_ADMIN_KEY"), env: os.Getenv("LIMITR_ENVIRONMENT")}
	if s.env == "" {
		s.env = "production"
	}
	var missing []string
	for _, v := range [][2]string{{"LIMITR_BASE_URL", s.base}, {"LIMITR_SDK_KEY", s.sdkKey}, {"LIMITR_ADMIN_KEY", s.adminKey}} {
		if v[1] == "" {
			missing = append(missing, v[0])
		}
	}
	if len(missing) > 0 {
		return s, fmt.Errorf("%s not set: run it through `make demo` (scripts/demo.sh), which starts `limitr dev` and creates the keys",
			strings.Join(missing, ", "))
	}
	s.base = strings.TrimRight(s.base, "/")
	return s, nil
}

func run(ctx context.Context) error {
	cfg, err := load()
	if err != nil {
		return err
	}
	fmt.Printf("Limitr for Go — cloud mode against %s (environment %s)\n\n", cfg.base, cfg.env)

	// 1. The only change from local mode: Cloud instead of Open.
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	policy, err := limitr.Cloud(ctx, cfg.sdkKey, limitr.WithBaseURL(cfg.base),
		limitr.WithFlushInterval(200*time.Millisecond), limitr.WithLogger(logger))
	if err != nil {
		return err
	}
	closed := false
	defer func() {
		if !closed {
			_ = policy.Close(ctx)
		}
	}()
	for i := 0; i < 200 && !policy.SyncStats().StreamConnected; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	fmt.Printf("1. limitr.Cloud(ctx, sdkKey, WithBaseURL(...), WithFlushInterval(200ms))\n")
	fmt.Printf("   enforcing policy version %d (%s…), push stream connected: %v\n",
		policy.VersionNumber(), policy.Version()[:12], policy.SyncStats().StreamConnected)

	fmt.Println()
	fmt.Println("2. Customers are created through the API, then applied locally")
	for _, c := range [][2]string{{"user_starter", "starter"}, {"user_growth", "growth"}} {
		if _, err := policy.CreateCustomer(ctx, c[0], c[1]); err != nil {
			return fmt.Errorf("create %s: %w", c[0], err)
		}
		fmt.Printf("   CreateCustomer(%s, %s) ✓\n", c[0], c[1])
	}

	fmt.Println()
	fmt.Println("3. The starter customer: 500,000 input tokens a day, hard limit — decided locally, no network call")
	for range 5 {
		if err := step(ctx, policy, "user_starter", "ai-chat-input", 120000); err != nil {
			return err
		}
	}

	fmt.Println()
	fmt.Println("4. The operator raises the starter plan's daily input limit to 1,000,000 and publishes it")
	before := policy.VersionNumber()
	ver, took, err := publishChangedLimit(ctx, cfg, "starter", "ai-chat-input", 1_000_000)
	if err != nil {
		return err
	}
	fmt.Printf("   POST /v1/policies → version %d; POST /v1/environments/%s/publish (%s)\n", ver, cfg.env, took.Round(time.Millisecond))
	start := time.Now()
	for policy.VersionNumber() == before {
		if time.Since(start) > 15*time.Second {
			return fmt.Errorf("the client did not switch to version %d within 15 s", ver)
		}
		time.Sleep(time.Millisecond)
	}
	limit, err := policy.Limit(ctx, "user_starter", "ai-chat-input")
	if err != nil {
		return err
	}
	fmt.Printf("   the client switched to version %d %s after the publish answered (push stream); limit now %.0f\n",
		policy.VersionNumber(), time.Since(start).Round(time.Millisecond), limit)
	fmt.Println("   the same call that was denied a moment ago:")
	if err := step(ctx, policy, "user_starter", "ai-chat-input", 120000); err != nil {
		return err
	}

	fmt.Println()
	fmt.Println("5. The growth customer: 700,000 input tokens a day, soft limit billed past it")
	for _, amount := range []float64{400000, 250000, 100000} {
		if err := step(ctx, policy, "user_growth", "ai-chat-input", amount); err != nil {
			return err
		}
	}
	if err := step(ctx, policy, "user_growth", "ai-chat-output", 50000); err != nil {
		return err
	}
	if err := capStep(ctx, policy); err != nil {
		return err
	}

	local := map[string]map[string]float64{}
	for _, c := range []string{"user_starter", "user_growth"} {
		local[c] = map[string]float64{}
		for _, e := range []string{"ai-chat-input", "ai-chat-output"} {
			v, err := policy.Value(ctx, c, e)
			if err != nil {
				return err
			}
			local[c][e] = v
		}
	}

	fmt.Println()
	fmt.Println("6. Close(ctx) flushes the usage still in memory and waits for the server to commit it")
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = policy.Close(cctx)
	cancel()
	closed = true
	if err != nil {
		return err
	}
	st := policy.SyncStats()
	fmt.Printf("   sent %d usage records in %d batches (duplicates %d, dropped %d, unattributed %d)\n", st.Sent, st.Batches, st.Duplicates, st.Dropped, st.Unattributed)

	fmt.Println()
	fmt.Println("7. The server's usage for each customer (GET /v1/sdk/customers/{id}/state: what the worker aggregated")
	fmt.Println("   plus anything it has not folded in yet)")
	match := true
	for _, c := range []string{"user_starter", "user_growth"} {
		state, err := customerState(ctx, cfg, c)
		if err != nil {
			return err
		}
		for _, e := range []string{"ai-chat-input", "ai-chat-output"} {
			for _, m := range state.Meters[e] {
				fmt.Printf("   %-13s %-15s period %s  units %8s  provider cost $%-8s  price $%s\n",
					c, e, m.PeriodStart.Format("2006-01-02"), m.Units, m.Overhead, m.Price)
			}
			if got := units(state.Meters[e]); got != local[c][e] {
				match = false
				fmt.Printf("   %-13s %-15s server %v ≠ client %v\n", c, e, got, local[c][e])
			}
		}
	}
	if !match {
		return errors.New("the server's totals differ from the client's meters")
	}
	fmt.Println("   every server total equals the client's local meter: nothing lost, nothing counted twice")
	return nil
}

// capStep puts a spend cap on the growth customer's output tokens. In cloud mode a cap
// lives on the control plane, so every instance enforces it against the fleet's total
// (with leases of its allowance, as hard limits are kept).
func capStep(ctx context.Context, policy *limitr.Policy) error {
	fmt.Println("   AddCustomerCap(user_growth, budget: 15,000 output tokens from now) — held by the control plane")
	err := policy.AddCustomerCap(ctx, "user_growth", limitr.Cap{ID: "budget", Credit: "claude-sonnet-4-output", Value: 15000,
		Scope: []string{"ai-chat-output"}})
	if err != nil {
		return err
	}
	for _, amount := range []float64{20000, 10000} {
		if err := step(ctx, policy, "user_growth", "ai-chat-output", amount); err != nil {
			return err
		}
	}
	cp, err := policy.CustomerCap(ctx, "user_growth", "budget")
	if err != nil {
		return err
	}
	fmt.Printf("   the cap denied the call it had no room for; budget used %.0f of %.0f (key %s)\n", cp.MeterValue, cp.Value, cp.Key)
	return nil
}

func step(ctx context.Context, policy *limitr.Policy, customer, entitlement string, amount float64) error {
	ok, err := policy.Allow(ctx, customer, entitlement, amount)
	if err != nil {
		return err
	}
	used, err := policy.Value(ctx, customer, entitlement)
	if err != nil {
		return err
	}
	limit, err := policy.Limit(ctx, customer, entitlement)
	if err != nil {
		return err
	}
	verdict := "allowed"
	if !ok {
		verdict = "DENIED "
	}
	fmt.Printf("   Allow(%s, %s, %7.0f) → %s  used %7.0f of %7.0f\n", customer, entitlement, amount, verdict, used, limit)
	return nil
}

// policyPath finds examples/quickstart/policy.json whatever the working directory.
func policyPath() string {
	if _, file, _, ok := runtime.Caller(0); ok {
		p := filepath.Join(filepath.Dir(file), "..", "quickstart", "policy.json")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return filepath.Join("examples", "quickstart", "policy.json")
}

// publishChangedLimit uploads the quick-start policy with one limit changed and
// publishes it, as an operator would (admin key). It returns the version number and
// how long the publish request took.
func publishChangedLimit(ctx context.Context, cfg settings, plan, ent string, value float64) (int, time.Duration, error) {
	raw, err := os.ReadFile(policyPath())
	if err != nil {
		return 0, 0, err
	}
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		return 0, 0, err
	}
	node := doc["policy"]
	for _, k := range []string{"plans", plan, "entitlements", ent, "limit"} {
		m, ok := node.(map[string]any)
		if !ok {
			return 0, 0, fmt.Errorf("the quick-start policy has no plans.%s.entitlements.%s.limit", plan, ent)
		}
		node = m[k]
	}
	lim, ok := node.(map[string]any)
	if !ok {
		return 0, 0, fmt.Errorf("the quick-start policy has no plans.%s.entitlements.%s.limit", plan, ent)
	}
	lim["value"] = value
	body, err := json.Marshal(doc)
	if err != nil {
		return 0, 0, err
	}
	var ver struct {
		Number int `json:"number"`
	}
	if err := api(ctx, cfg.adminKey, http.MethodPost, cfg.base+"/v1/policies", body, http.StatusCreated, &ver); err != nil {
		return 0, 0, err
	}
	start := time.Now()
	err = api(ctx, cfg.adminKey, http.MethodPost, cfg.base+"/v1/environments/"+url.PathEscape(cfg.env)+"/publish",
		fmt.Appendf(nil, `{"version": %d}`, ver.Number), http.StatusOK, nil)
	return ver.Number, time.Since(start), err
}

type meterTotal struct {
	PeriodStart time.Time `json:"period_start"`
	Units       string    `json:"units"`
	Overhead    string    `json:"overhead"`
	Price       string    `json:"price"`
}

type customerStateReply struct {
	Meters map[string][]meterTotal `json:"meters"`
}

func customerState(ctx context.Context, cfg settings, id string) (customerStateReply, error) {
	var st customerStateReply
	err := api(ctx, cfg.sdkKey, http.MethodGet, cfg.base+"/v1/sdk/customers/"+url.PathEscape(id)+"/state", nil, http.StatusOK, &st)
	return st, err
}

// units is the current period's committed units (the newest period comes first).
func units(ms []meterTotal) float64 {
	if len(ms) == 0 {
		return 0
	}
	f, _, err := big.ParseFloat(ms[0].Units, 10, 128, big.ToNearestEven)
	if err != nil {
		return -1
	}
	v, _ := f.Float64()
	return v
}

func api(ctx context.Context, key, method, u string, body []byte, want int, out any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+key)
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
		return fmt.Errorf("%s %s: %d %s", method, u, res.StatusCode, bytes.TrimSpace(data))
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}
