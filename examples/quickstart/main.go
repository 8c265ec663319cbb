// Command quickstart runs the AI-product quick start: a starter customer hits its
// daily input-token limit and gets it back the next day, and a growth customer runs
// past its soft limit into billed overage. Run it with `make demo`.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"time"

	limitr "github.com/limitr/limitr/sdk/go"
)

func main() {
	if err := run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

// policyPath finds policy.json beside this file, whatever the working directory.
func policyPath() string {
	if _, file, _, ok := runtime.Caller(0); ok {
		if p := filepath.Join(filepath.Dir(file), "policy.json"); fileExists(p) {
			return p
		}
	}
	return filepath.Join("examples", "quickstart", "policy.json")
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

func run(ctx context.Context) error {
	// A controllable clock lets the demo step into tomorrow instead of waiting for it.
	now := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }

	policy, err := limitr.Open(policyPath(), limitr.WithClock(clock))
	if err != nil {
		return err
	}
	defer policy.Close(ctx)

	policy.AddHandler("print", func(ev limitr.Event) {
		switch ev.Type {
		case limitr.EventMeterOverage:
			price := "unpriced"
			if ev.OveragePrice != nil {
				price = fmt.Sprintf("$%.6f", *ev.OveragePrice)
			}
			fmt.Printf("      event %-14s overage %.0f tokens, billed %s\n", ev.Type, *ev.Overage, price)
		case limitr.EventMeterLimit:
			fmt.Printf("      event %-14s would have reached %.0f of %.0f\n", ev.Type, *ev.InvalidValue, ev.Meter.Limit)
		case limitr.EventMeterChanged:
			if ev.GrantValueApplied != nil && *ev.GrantValueApplied > 0 {
				fmt.Printf("      event %-14s %.0f tokens past the limit paid from the topup\n", ev.Type, *ev.GrantValueApplied)
			}
		case limitr.EventMeterReset:
			fmt.Printf("      event %-14s a new daily period started\n", ev.Type)
		}
	})

	fmt.Println("Limitr for Go — quick start (policy: examples/quickstart/policy.json)")
	fmt.Println()
	fmt.Println("1. A starter customer: 500,000 input tokens a day, hard limit")
	if _, err := policy.CreateCustomer(ctx, "user_starter", "starter"); err != nil {
		return err
	}
	for i := 1; i <= 5; i++ {
		if err := step(ctx, policy, "user_starter", "ai-chat-input", 120000); err != nil {
			return err
		}
	}
	if ok, err := policy.Allow(ctx, "user_starter", "ai-chat-access", 0); err != nil {
		return err
	} else {
		fmt.Printf("   feature gate ai-chat-access: %v\n", ok)
	}
	resets, err := policy.Resets(ctx, "user_starter", "ai-chat-input")
	if err != nil {
		return err
	}
	fmt.Printf("   the limit resets at %s\n", resets.Format(time.RFC3339))
	now = resets.Add(time.Second)
	fmt.Printf("   … the clock moves to %s\n", now.Format(time.RFC3339))
	if err := step(ctx, policy, "user_starter", "ai-chat-input", 120000); err != nil {
		return err
	}

	fmt.Println()
	fmt.Println("2. A growth customer: 700,000 input tokens a day, soft limit billed past it")
	if _, err := policy.CreateCustomer(ctx, "user_growth", "growth"); err != nil {
		return err
	}
	for _, amount := range []float64{400000, 250000, 100000, 50000} {
		if err := step(ctx, policy, "user_growth", "ai-chat-input", amount); err != nil {
			return err
		}
	}

	fmt.Println()
	fmt.Println("3. The growth customer buys the ai-token-small topup: 10 ai-token (12.5 runes),")
	fmt.Println("   drawn before any overage is billed (1 input token = 0.000004 ai-token)")
	if _, err := policy.CreateCustomer(ctx, "user_topup", "growth"); err != nil {
		return err
	}
	if err := policy.ApplyCustomerTopup(ctx, "user_topup", "ai-token-small"); err != nil {
		return err
	}
	if err := credit(ctx, policy, "user_topup"); err != nil {
		return err
	}
	for _, amount := range []float64{400000, 1000000, 1000000, 1000000} {
		if err := step(ctx, policy, "user_topup", "ai-chat-input", amount); err != nil {
			return err
		}
		if err := credit(ctx, policy, "user_topup"); err != nil {
			return err
		}
	}
	m, err := policy.CustomerMarginSnapshot(ctx, "user_topup")
	if err != nil {
		return err
	}
	fmt.Printf("   margin today: revenue $%.2f (of which $%.2f paid by the topup), provider cost $%.2f, margin %.2f%%\n",
		m.Revenue, m.GrantCoveredRevenue, m.Cost, m.Margin)
	for name, e := range m.Entitlements {
		fmt.Printf("     %-15s usage %8.0f  limit %7.0f  revenue $%6.2f  cost $%6.2f\n", name, e.Usage, e.Limit, e.Revenue, e.Cost)
	}

	fmt.Println()
	fmt.Println("4. Mistakes come back as errors you can test for")
	_, err = policy.Allow(ctx, "user_growth", "ai-chat-inptu", 1)
	fmt.Printf("   typo in entitlement:  %v (errors.Is ErrUnknownEntitlement: %v)\n", err, errors.Is(err, limitr.ErrUnknownEntitlement))
	_, err = policy.Allow(ctx, "nobody", "ai-chat-input", 1)
	fmt.Printf("   unknown customer:     %v (errors.Is ErrUnknownCustomer: %v)\n", err, errors.Is(err, limitr.ErrUnknownCustomer))
	return nil
}

func credit(ctx context.Context, policy *limitr.Policy, customer string) error {
	left, err := policy.RemainingCredit(ctx, customer, "ai-token")
	if err != nil {
		return err
	}
	fmt.Printf("      topup balance: %.2f ai-token\n", left)
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
	remaining, err := policy.Remaining(ctx, customer, entitlement)
	if err != nil {
		return err
	}
	verdict := "allowed"
	if !ok {
		verdict = "DENIED "
	}
	fmt.Printf("   Allow(%s, %s, %7.0f) → %s  used %7.0f, remaining %8.0f\n", customer, entitlement, amount, verdict, used, remaining)
	return nil
}
