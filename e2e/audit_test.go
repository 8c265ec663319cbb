package e2e

import (
	"context"
	"testing"
	"time"

	limitr "github.com/limitr/limitr/sdk/go"
)

// TestAuditModeStoresEveryCall: an SDK in audit mode sends a record per metered call,
// and the server stores each one once, with the allowed and denied ones told apart.
func TestAuditModeStoresEveryCall(t *testing.T) {
	_, pool := newDB(t)
	apiLog, sdkLog := newSink(t, "api"), newSink(t, "sdk")
	a := startAPI(t, pool, nil, apiLog, "")
	cp := newControlPlane(t, a.URL)
	cp.setup(quickstart(t))
	ctx := context.Background()
	sdk := connectSDK(t, a.URL, cp.sdk, sdkLog, limitr.WithAuditMode(), limitr.WithFlushInterval(50*time.Millisecond))
	if _, err := sdk.CreateCustomer(ctx, "aud-1", "starter"); err != nil {
		t.Fatal(err)
	}
	allowed, denied := 0, 0
	for range 6 { // 120,000 × 5 passes a 500,000 hard limit on the fifth call
		ok, err := sdk.Allow(ctx, "aud-1", "ai-chat-input", 120000)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			allowed++
		} else {
			denied++
		}
	}
	closeCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := sdk.Close(closeCtx); err != nil {
		t.Fatal(err)
	}
	var rows, yes, distinct int
	if err := pool.QueryRow(ctx, `select count(*), count(*) filter (where allowed), count(distinct event_id)
		from usage_events where customer_id = 'aud-1'`).Scan(&rows, &yes, &distinct); err != nil {
		t.Fatal(err)
	}
	if rows != allowed+denied || yes != allowed || distinct != rows || denied == 0 {
		t.Fatalf("usage_events: %d rows (%d allowed, %d distinct ids); the SDK made %d allowed and %d denied calls",
			rows, yes, distinct, allowed, denied)
	}
}
