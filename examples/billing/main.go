// Command billing is the billing part of `make demo`: what the control plane bills for
// the usage SDKs send. It runs after examples/cloud, against the same `limitr dev`, and
// shows:
//
//  1. the environment's billing settings (GET /v1/environments/{env}/billing);
//  2. the upcoming invoice of user_growth, the customer examples/cloud served: rated on
//     the server from committed usage, and equal to the SDK's own live estimate
//     (CustomerMarginSnapshot: revenue − grant-covered revenue, to the cent);
//  3. a month of billing in seconds on a test clock in a non-live environment: a
//     customer created on the clock, a topup, usage through the SDK, the clock advanced
//     past the period's end and its grace period, and the finalized invoice: number,
//     lines and total.
//
// scripts/demo.sh runs it with:
//
//	LIMITR_BASE_URL          the API, e.g. http://127.0.0.1:8080
//	LIMITR_ADMIN_KEY         an admin key (billing settings, invoices, test clocks)
//	LIMITR_SDK_KEY           an SDK key of LIMITR_ENVIRONMENT (default production)
//	LIMITR_TEST_SDK_KEY      an SDK key of LIMITR_TEST_ENVIRONMENT (default staging), a
//	                         non-live environment the quick-start policy is published to
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
	"strconv"
	"strings"
	"time"

	limitr "github.com/limitr/limitr/sdk/go"
)

func main() {
	if err := run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "billing demo:", err)
		os.Exit(1)
	}
}

type settings struct {
	base, adminKey, sdkKey, testSDKKey, env, testEnv string
}

func load() (settings, error) {
	s := settings{base: os.Getenv("LIMITR_BASE_URL"), adminKey: os.Getenv("LIMITR_ADMIN_KEY"),
		sdkKey: os.Getenv("LIMITR_SDK_KEY"), testSDKKey: os.Getenv("LIMITR_TEST_SDK_KEY"),
		env: os.Getenv("LIMITR_ENVIRONMENT"), testEnv: os.Getenv("LIMITR_TEST_ENVIRONMENT")}
	if s.env == "" {
		s.env = "production"
	}
	if s.testEnv == "" {
		s.testEnv = "staging"
	}
	var missing []string
	for _, v := range [][2]string{{"LIMITR_BASE_URL", s.base}, {"LIMITR_ADMIN_KEY", s.adminKey},
		{"LIMITR_SDK_KEY", s.sdkKey}, {"LIMITR_TEST_SDK_KEY", s.testSDKKey}} {
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

// envPath is /v1/environments/{env} followed by the parts, escaped.
func envPath(env string, parts ...string) string {
	p := "/v1/environments/" + url.PathEscape(env)
	for _, s := range parts {
		p += "/" + url.PathEscape(s)
	}
	return p
}

func run(ctx context.Context) error {
	cfg, err := load()
	if err != nil {
		return err
	}
	fmt.Printf("Limitr for Go — billing against %s\n\n", cfg.base)

	// 1. Billing settings.
	var set billingSettings
	if err := cfg.admin(ctx, http.MethodGet, envPath(cfg.env, "billing"), nil, http.StatusOK, &set); err != nil {
		return err
	}
	fmt.Printf("1. Billing settings of %s (GET %s): the defaults\n", cfg.env, envPath(cfg.env, "billing"))
	fmt.Printf("   %s\n", set)

	// 2. The upcoming invoice of the customer examples/cloud served.
	fmt.Println()
	const grower = "user_growth"
	fmt.Printf("2. The upcoming invoice of %s (GET %s)\n", grower, envPath(cfg.env, "customers", grower, "invoices", "upcoming"))
	fmt.Println("   rated on the server from the usage the application above committed, with the policy version in force")
	est, err := liveEstimate(ctx, cfg, cfg.sdkKey, grower, nil)
	if err != nil {
		return err
	}
	inv, err := waitUpcoming(ctx, cfg, cfg.env, grower, est)
	if err != nil {
		return err
	}
	printInvoice(inv)
	fmt.Printf("   = the SDK's live estimate for the period, to the cent: CustomerMarginSnapshot on an instance that\n")
	fmt.Printf("     loaded %s (revenue %s − grant-covered %s); the same rating rule, over the committed totals\n",
		grower, est.revenue.FloatString(2), est.covered.FloatString(2))

	// 3. A month on a test clock.
	fmt.Println()
	fmt.Printf("3. A month of billing in seconds: a test clock in %s (a non-live environment)\n", cfg.testEnv)
	in := map[string]any{"invoice_prefix": "DEMO", "grace_period": "1h", "days_until_due": 14,
		"seller": map[string]string{"name": "Demo Inc", "email": "billing@demo.example"}}
	if err := cfg.admin(ctx, http.MethodPut, envPath(cfg.testEnv, "billing"), in, http.StatusOK, &set); err != nil {
		return err
	}
	fmt.Printf("   PUT %s → %s\n", envPath(cfg.testEnv, "billing"), set)

	// The SDK meters on real time, so the clock starts at the real time: the meters'
	// periods then fall in the clock customer's first billing period.
	var clock testClock
	start := time.Now().UTC().Truncate(time.Second)
	if err := cfg.admin(ctx, http.MethodPost, envPath(cfg.testEnv, "test-clocks"),
		map[string]string{"frozen_time": start.Format(time.RFC3339), "name": "demo month"}, http.StatusCreated, &clock); err != nil {
		return err
	}
	fmt.Printf("   POST %s {\"frozen_time\": %q} → clock %s…, %s\n", envPath(cfg.testEnv, "test-clocks"),
		start.Format(time.RFC3339), clock.ID[:8], clock.Status)
	const customer = "clock_co"
	body := map[string]any{"id": customer, "plan": "growth", "test_clock": clock.ID, "metadata": map[string]string{"name": "Clock Co"}}
	if err := cfg.admin(ctx, http.MethodPost, envPath(cfg.testEnv, "customers"), body, http.StatusCreated, nil); err != nil {
		return err
	}
	fmt.Printf("   POST %s {\"id\": %q, \"plan\": \"growth\", \"test_clock\": \"%s…\"}\n", envPath(cfg.testEnv, "customers"), customer, clock.ID[:8])
	if err := cfg.admin(ctx, http.MethodPost, envPath(cfg.testEnv, "customers", customer, "topups"),
		map[string]string{"topup": "ai-token-small"}, http.StatusCreated, nil); err != nil {
		return err
	}
	fmt.Printf("   POST %s {\"topup\": \"ai-token-small\"}: 10 ai-token that pay for overage\n", envPath(cfg.testEnv, "customers", customer, "topups"))

	fmt.Println("   the application serves it in cloud mode (an SDK key of " + cfg.testEnv + "):")
	calls := []struct {
		ent    string
		amount float64
	}{{"ai-chat-input", 500000}, {"ai-chat-output", 300000}, {"ai-chat-input", 500000}, {"ai-chat-output", 350000}, {"ai-chat-input", 1500000}}
	est, err = liveEstimate(ctx, cfg, cfg.testSDKKey, customer, func(p *limitr.Policy) error {
		for _, c := range calls {
			ok, err := p.Allow(ctx, customer, c.ent, c.amount)
			if err != nil {
				return err
			}
			// The margin snapshot has each meter's usage and its limit (Limit would add what
			// the topup can still pay for).
			m, err := p.CustomerMarginSnapshot(ctx, customer)
			if err != nil {
				return err
			}
			left, err := p.RemainingCredit(ctx, customer, "ai-token")
			if err != nil {
				return err
			}
			verdict := "allowed"
			if !ok {
				verdict = "DENIED "
			}
			fmt.Printf("     Allow(%s, %-15s %8.0f) → %s  used %8.0f of %7.0f included; topup left %g ai-token\n",
				customer, c.ent+",", c.amount, verdict, m.Entitlements[c.ent].Usage, m.Entitlements[c.ent].Limit, left)
		}
		return nil
	})
	if err != nil {
		return err
	}
	fmt.Printf("   Close: usage committed; the SDK's live estimate: revenue %s − grant-covered %s = %s\n",
		est.revenue.FloatString(2), est.covered.FloatString(2), est.net.FloatString(2))
	up, err := waitUpcoming(ctx, cfg, cfg.testEnv, customer, est)
	if err != nil {
		return err
	}
	fmt.Printf("   the upcoming invoice (on the clock's time; period %s) bills %s %s: the same\n", periodText(up.PeriodStart, up.PeriodEnd), up.Total, up.Currency)

	to := start.AddDate(0, 1, 0).Add(2 * time.Hour)
	if err := cfg.admin(ctx, http.MethodPost, envPath(cfg.testEnv, "test-clocks", clock.ID, "advance"),
		map[string]string{"frozen_time": to.Format(time.RFC3339)}, http.StatusOK, &clock); err != nil {
		return err
	}
	fmt.Printf("   POST …/test-clocks/%s…/advance {\"frozen_time\": %q}: a month and 2 h on → %s\n", clock.ID[:8], to.Format(time.RFC3339), clock.Status)
	began := time.Now()
	for clock.Status != "ready" {
		if time.Since(began) > 30*time.Second {
			return errors.New("the test clock was not ready 30 s after the advance")
		}
		time.Sleep(50 * time.Millisecond)
		if err := cfg.admin(ctx, http.MethodGet, envPath(cfg.testEnv, "test-clocks", clock.ID), nil, http.StatusOK, &clock); err != nil {
			return err
		}
	}
	fmt.Printf("   %s %s later: the period ended, its draft was created and, past the %s grace period, finalized\n",
		clock.Status, time.Since(began).Round(time.Millisecond), set.GracePeriod)

	// 4. The finalized invoice.
	fmt.Println()
	list := envPath(cfg.testEnv, "invoices") + "?customer=" + url.QueryEscape(customer)
	fmt.Printf("4. The finalized invoice (GET %s)\n", list)
	var page struct {
		Data []invoice `json:"data"`
	}
	if err := cfg.admin(ctx, http.MethodGet, list, nil, http.StatusOK, &page); err != nil {
		return err
	}
	var final *invoice
	for i := range page.Data {
		if page.Data[i].Status == "finalized" {
			final = &page.Data[i]
		}
	}
	if final == nil {
		return fmt.Errorf("no finalized invoice for %s after the advance (%d invoices)", customer, len(page.Data))
	}
	printInvoice(*final)
	if final.Total != up.Total {
		return fmt.Errorf("the finalized invoice bills %s, the upcoming one billed %s", final.Total, up.Total)
	}
	fmt.Println("   frozen from now on: later usage of that period would be an adjustment on the next invoice,")
	fmt.Println("   corrections are credit notes (POST …/invoices/{id}/credit-notes)")
	return nil
}

// ---- the SDK's estimate ----

// estimate is a customer's revenue for the period as an SDK instance sees it, net of
// what grants paid: what its invoice should bill for usage, to the cent.
type estimate struct {
	revenue, covered, net *big.Rat
}

// liveEstimate opens an SDK instance, runs use on it (nil: the instance only loads the
// customer, with the usage the fleet committed), reads the customer's
// CustomerMarginSnapshot and closes the instance, which sends its usage and waits
// until the server has committed it.
func liveEstimate(ctx context.Context, cfg settings, key, customer string, use func(*limitr.Policy) error) (estimate, error) {
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	p, err := limitr.Cloud(ctx, key, limitr.WithBaseURL(cfg.base), limitr.WithFlushInterval(200*time.Millisecond), limitr.WithLogger(logger))
	if err != nil {
		return estimate{}, err
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if use != nil {
		if err := use(p); err != nil {
			_ = p.Close(cctx)
			return estimate{}, err
		}
	}
	m, err := p.CustomerMarginSnapshot(ctx, customer)
	if cerr := p.Close(cctx); err == nil {
		err = cerr
	}
	if err != nil {
		return estimate{}, err
	}
	rev, cov := ratOf(m.Revenue), ratOf(m.GrantCoveredRevenue)
	return estimate{revenue: cents(rev), covered: cents(cov), net: cents(new(big.Rat).Sub(rev, cov))}, nil
}

// waitUpcoming reads the customer's upcoming invoice until its usage lines bill the
// estimate: until the worker has folded the committed usage into the customer's meters.
func waitUpcoming(ctx context.Context, cfg settings, env, customer string, est estimate) (invoice, error) {
	start := time.Now()
	path := envPath(env, "customers", customer, "invoices", "upcoming")
	for {
		var inv invoice
		if err := cfg.admin(ctx, http.MethodGet, path, nil, http.StatusOK, &inv); err != nil {
			return inv, err
		}
		got, err := inv.usageTotal()
		if err != nil {
			return inv, err
		}
		if got.Cmp(est.net) == 0 {
			return inv, nil
		}
		if time.Since(start) > 20*time.Second {
			printInvoice(inv)
			return inv, fmt.Errorf("the upcoming invoice of %s bills %s for usage; the SDK estimated %s", customer, got.FloatString(2), est.net.FloatString(2))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ratOf reads a float64 through its shortest decimal form.
func ratOf(f float64) *big.Rat {
	r, ok := new(big.Rat).SetString(strconv.FormatFloat(f, 'f', -1, 64))
	if !ok {
		return new(big.Rat)
	}
	return r
}

// cents rounds half away from zero to cents, as invoice lines are rounded.
func cents(r *big.Rat) *big.Rat {
	x := new(big.Rat).Mul(r, big.NewRat(100, 1))
	q, m := new(big.Int).QuoRem(x.Num(), x.Denom(), new(big.Int))
	if new(big.Int).Lsh(m.Abs(m), 1).Cmp(x.Denom()) >= 0 {
		q.Add(q, big.NewInt(int64(x.Num().Sign())))
	}
	return new(big.Rat).SetFrac(q, big.NewInt(100))
}

// ---- the REST API ----

type billingSettings struct {
	Currency      string          `json:"currency"`
	RuneRate      string          `json:"rune_rate"`
	GracePeriod   string          `json:"grace_period"`
	DaysUntilDue  int             `json:"days_until_due"`
	InvoicePrefix string          `json:"invoice_prefix"`
	Seller        json.RawMessage `json:"seller"`
}

func (s billingSettings) String() string {
	out := fmt.Sprintf("currency %s, 1 rune = %s %s, grace period %s, due %d days after, numbered %s-000001…",
		s.Currency, s.RuneRate, s.Currency, s.GracePeriod, s.DaysUntilDue, s.InvoicePrefix)
	if name := nameOf(s.Seller); name != "" {
		out += ", seller " + name
	}
	return out
}

type testClock struct {
	ID         string    `json:"id"`
	FrozenTime time.Time `json:"frozen_time"`
	Status     string    `json:"status"`
}

type invoiceLine struct {
	Kind        string `json:"kind"`
	Description string `json:"description"`
	Amount      string `json:"amount"`
}

type invoice struct {
	Number      *string         `json:"number"`
	Customer    string          `json:"customer"`
	Status      string          `json:"status"`
	Currency    string          `json:"currency"`
	PeriodStart time.Time       `json:"period_start"`
	PeriodEnd   time.Time       `json:"period_end"`
	DueAt       *time.Time      `json:"due_at"`
	Lines       []invoiceLine   `json:"lines"`
	Total       string          `json:"total"`
	AmountDue   string          `json:"amount_due"`
	Buyer       json.RawMessage `json:"buyer"`
	Seller      json.RawMessage `json:"seller"`
}

// usageTotal sums the usage and credit lines.
func (inv invoice) usageTotal() (*big.Rat, error) {
	sum := new(big.Rat)
	for _, l := range inv.Lines {
		if l.Kind != "usage" && l.Kind != "credit" {
			continue
		}
		a, ok := new(big.Rat).SetString(l.Amount)
		if !ok {
			return nil, fmt.Errorf("invoice line amount %q is not a decimal", l.Amount)
		}
		sum.Add(sum, a)
	}
	return sum, nil
}

func nameOf(raw json.RawMessage) string {
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
	s, _ := m["name"].(string)
	return s
}

func periodText(from, to time.Time) string {
	const layout = "2006-01-02 15:04"
	return from.UTC().Format(layout) + " → " + to.UTC().Format(layout) + " UTC"
}

func printInvoice(inv invoice) {
	head := inv.Status
	if inv.Number != nil {
		head = *inv.Number + "  " + head
	}
	who := inv.Customer
	if name := nameOf(inv.Buyer); name != "" {
		who += " (" + name + ")"
	}
	head += "  customer " + who
	if name := nameOf(inv.Seller); name != "" {
		head += ", seller " + name
	}
	fmt.Printf("   %s\n   period %s", head, periodText(inv.PeriodStart, inv.PeriodEnd))
	if inv.DueAt != nil {
		fmt.Printf(", due %s", inv.DueAt.UTC().Format("2006-01-02"))
	}
	fmt.Println()
	w := len("total")
	for _, l := range inv.Lines {
		w = max(w, len(l.Description))
	}
	for _, l := range inv.Lines {
		fmt.Printf("     %-7s %-*s %9s\n", l.Kind, w, l.Description, l.Amount)
	}
	if len(inv.Lines) == 0 {
		fmt.Println("     (no lines)")
	}
	fmt.Printf("     %-7s %*s %9s\n", "total", w, inv.Currency, inv.Total)
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
	req, err := http.NewRequestWithContext(ctx, method, cfg.base+path, rd)
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
