package e2e

import (
	"context"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/limitr/limitr/internal/platform/bus"
	limitr "github.com/limitr/limitr/sdk/go"
)

// TestGrantBalanceSurvivesRestart spends part of a purchased topup through one SDK
// instance, restarts the SDK, and checks that the new instance holds what was left of
// the grant (hydrated from the committed grant draws), not the topup at full value:
// overage past the remaining grant is billed, not covered.
func TestGrantBalanceSurvivesRestart(t *testing.T) {
	_, pool := newDB(t)
	rurl := sharedRedisURL(t)
	apiLog, sdkLog, workerLog := newSink(t, "api"), newSink(t, "sdk"), newSink(t, "worker")
	a := startAPI(t, pool, redisClient(t, rurl), apiLog, "")
	startWorker(t, pool, bus.NewRedis(redisClient(t, rurl), workerLog.logger(slog.LevelWarn)), 500*time.Millisecond, workerLog)
	cp := newControlPlane(t, a.URL)
	cp.setup(quickstart(t))
	cp.createCustomer("grant-user", "growth")
	code, data := cp.do(http.MethodPost, "/v1/environments/production/customers/grant-user/topups", cp.admin, map[string]string{"topup": "ai-token-small"})
	cp.decode(code, http.StatusCreated, data, "apply topup", nil)

	ctx := context.Background()
	first := connectSDK(t, a.URL, cp.sdk, sdkLog)
	// The growth plan's soft limit is 700,000 input tokens a day; 1 input token is
	// 0.000004 ai-token, so 1,250,000 tokens past the limit draw 5 of the topup's 10.
	for _, n := range []float64{700_000, 1_250_000} {
		if ok, err := first.Allow(ctx, "grant-user", "ai-chat-input", n); !ok || err != nil {
			t.Fatalf("first instance: Allow(%v) = %v, %v", n, ok, err)
		}
	}
	before, err := first.RemainingCredit(ctx, "grant-user", "ai-token")
	if err != nil || before != 5 {
		t.Fatalf("first instance: remaining %v, %v; want 5", before, err)
	}
	closeAll(t, []*limitr.Policy{first}, 10*time.Second)

	var drawn float64
	if err := pool.QueryRow(ctx, `select coalesce(sum(units), 0)::float8 from grant_draw_totals where customer_id = 'grant-user'`).Scan(&drawn); err != nil {
		t.Fatal(err)
	}
	if drawn != 5 {
		t.Fatalf("committed draws %v, want 5", drawn)
	}

	second := connectSDK(t, a.URL, cp.sdk, sdkLog)
	after, err := second.RemainingCredit(ctx, "grant-user", "ai-token")
	if err != nil || after != before {
		t.Fatalf("restarted instance: remaining %v, %v; want %v (the first instance's at Close)", after, err, before)
	}
	// 2,000,000 more tokens: the remaining 5 ai-tokens cover 1,250,000; the other
	// 750,000 are billed overage.
	if ok, err := second.Allow(ctx, "grant-user", "ai-chat-input", 2_000_000); !ok || err != nil {
		t.Fatalf("restarted instance: Allow = %v, %v", ok, err)
	}
	c, err := second.Customer(ctx, "grant-user")
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Meters["ai-chat-input"].GrantCovered; got != 1_250_000 {
		t.Fatalf("restarted instance: grant-covered %v, want 1250000 (the rest billed)", got)
	}
	if rc, _ := second.RemainingCredit(ctx, "grant-user", "ai-token"); rc != 0 {
		t.Fatalf("restarted instance: remaining %v, want 0", rc)
	}
	closeAll(t, []*limitr.Policy{second}, 10*time.Second)
	if err := pool.QueryRow(ctx, `select coalesce(sum(units), 0)::float8 from grant_draw_totals where customer_id = 'grant-user'`).Scan(&drawn); err != nil {
		t.Fatal(err)
	}
	if drawn != 10 {
		t.Fatalf("committed draws %v, want the topup's 10", drawn)
	}
	// Both instances said how much of their overage the grant paid for; the worker sums
	// it into the meter (what an invoice credits): 1,250,000 tokens each.
	var covered float64
	deadline := time.Now().Add(15 * time.Second)
	for {
		if err := pool.QueryRow(ctx, `select coalesce(sum(grant_covered), 0)::float8 from meter_aggregates where customer_id = 'grant-user'`).Scan(&covered); err != nil {
			t.Fatal(err)
		}
		if covered == 2_500_000 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if covered != 2_500_000 {
		t.Fatalf("aggregated grant coverage %v, want 2500000", covered)
	}
}
