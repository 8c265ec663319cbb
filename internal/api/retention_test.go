package api

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/limitr/limitr/internal/httpx"
	"github.com/limitr/limitr/internal/retention"
	"github.com/limitr/limitr/internal/wire"
)

// A stream resuming from a cursor that retention has removed changes after is told to
// resynchronise (a reset event), not left silently behind; a cursor the feed still
// covers replays as before.
func TestStreamResetAfterRetention(t *testing.T) {
	f := newSyncFixture(t)
	f.srv.setStreamTimings(time.Hour, time.Hour)
	ts := httptest.NewServer(f.srv.Handler())
	t.Cleanup(ts.Close)
	ctx := context.Background()
	old := f.latestChange()
	f.createCustomer(f.sdk, "production", map[string]any{"id": "dave"})
	f.createCustomer(f.sdk, "production", map[string]any{"id": "erin"})
	// Every change so far is eight days old; retention keeps seven.
	if _, err := f.pool.Exec(ctx, `update change_feed set created_at = now() - interval '8 days'`); err != nil {
		t.Fatal(err)
	}
	if _, err := retention.Run(ctx, f.pool, time.Now(), retention.Policy{ChangeFeed: 7 * 24 * time.Hour}, nil); err != nil {
		t.Fatal(err)
	}
	horizon := f.latestChange() // nothing newer: the horizon
	if horizon <= old {
		t.Fatalf("horizon %d, old cursor %d", horizon, old)
	}
	st := openStream(t, ts.URL, f.sdk, "", "Last-Event-ID", strconv.FormatInt(old, 10))
	if ev := st.next(2*time.Second, false); ev.name != wire.EventHello || ev.id != strconv.FormatInt(old, 10) {
		t.Fatalf("hello %+v", ev)
	}
	ev := st.next(2*time.Second, false)
	var r wire.Reset
	if ev.name != wire.EventReset || json.Unmarshal([]byte(ev.data), &r) != nil || r.Cursor != horizon || ev.id != strconv.FormatInt(horizon, 10) {
		t.Fatalf("want a reset to %d, got %+v", horizon, ev)
	}
	// Then live changes flow from the horizon.
	f.createCustomer(f.sdk, "production", map[string]any{"id": "fred"})
	if ev := st.next(2*time.Second, false); ev.name != wire.EventCust || !strings.Contains(ev.data, `"id":"fred"`) {
		t.Fatalf("after the reset %+v", ev)
	}
	// A cursor at or after the horizon needs no reset.
	st2 := openStream(t, ts.URL, f.sdk, "", "Last-Event-ID", strconv.FormatInt(horizon, 10))
	if ev := st2.next(2*time.Second, false); ev.name != wire.EventHello {
		t.Fatalf("hello %+v", ev)
	}
	if ev := st2.next(2*time.Second, false); ev.name != wire.EventCust || !strings.Contains(ev.data, `"id":"fred"`) {
		t.Fatalf("resume at the horizon %+v", ev)
	}
}

// A batch first sent before the deduplication window cannot be told apart from a
// retry of one whose key retention removed: it is kept as unattributed
// (batch_expired) rather than counted, unless its key is still there (a duplicate).
func TestUsageBatchBeforeTheDedupWindow(t *testing.T) {
	f := newSyncFixture(t)
	ctx := context.Background()
	sent := time.Now().Add(-50 * 24 * time.Hour)
	b := batch("web-9", 1, delta("alice", "ai-chat-input", "10"))
	b.SentAt = sent
	b.CapUses = []wire.CapUse{{Customer: "alice", CapKey: "cap_expiry", PeriodStart: thisMonth(), Units: "2"}}
	// Committed while its key is kept.
	if a := f.ack(f.usage(f.sdk, b, true)); a.Accepted != 1 {
		t.Fatalf("first: %+v", a)
	}
	if _, err := f.pool.Exec(ctx, `insert into retention_horizons (name, before) values ('usage_batches', now() - interval '35 days')`); err != nil {
		t.Fatal(err)
	}
	f.srv.usage.ForgetHorizon()
	// Its key is still there: a retry is a duplicate.
	if a := f.ack(f.usage(f.sdk, b, true)); !a.Duplicate {
		t.Fatalf("retry with the key kept: %+v", a)
	}
	// Its key gone, the same batch is kept, not counted again.
	if _, err := f.pool.Exec(ctx, `delete from usage_batches where instance_id = 'web-9'`); err != nil {
		t.Fatal(err)
	}
	before := f.count(`select count(*) from usage_deltas`)
	a := f.ack(f.usage(f.sdk, b, true))
	if a.Duplicate || a.Accepted != 0 || len(a.Unattributed) != 2 || a.Unattributed[0].Reason != wire.ReasonBatchExpired ||
		a.Unattributed[1].Kind != wire.RecordCapUse || a.Unattributed[1].Reason != wire.ReasonBatchExpired {
		t.Fatalf("expired batch: %+v", a)
	}
	if n := f.count(`select count(*) from cap_usage_totals where cap_key = 'cap_expiry' and units = 2`); n != 1 {
		t.Fatalf("the cap use was counted again (or not at first): %d rows of 2", n)
	}
	if n := f.count(`select count(*) from usage_deltas`); n != before {
		t.Fatalf("an expired batch wrote usage")
	}
	// A recent batch is unaffected.
	fresh := batch("web-9", 2, delta("alice", "ai-chat-input", "1"))
	fresh.SentAt = time.Now()
	if a := f.ack(f.usage(f.sdk, fresh, true)); a.Accepted != 1 {
		t.Fatalf("fresh batch: %+v", a)
	}
}

// The server's read timeouts: a client that sends its headers a byte at a time (or
// not at all) is cut off, while a push stream outlives them.
func TestServerTimeouts(t *testing.T) {
	f := newSyncFixture(t)
	f.srv.setStreamTimings(100*time.Millisecond, time.Hour)
	srv := httpx.NewServer(f.srv.Handler(), httpx.Timeouts{ReadHeader: 300 * time.Millisecond, Read: 600 * time.Millisecond})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	base := "http://" + ln.Addr().String()

	// Slow headers: the connection is closed after ReadHeader.
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	if _, err := io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: x\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(conn); err != nil && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("slow headers: %v", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("a client without a full header held the connection %v", took)
	}
	// A slow body is cut off after Read.
	conn2, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close()
	start = time.Now()
	fmt.Fprintf(conn2, "POST /v1/environments/production/customers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{", f.sdk)
	_ = conn2.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn2), nil)
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode < 400 {
			t.Fatalf("a truncated body was answered %d", resp.StatusCode)
		}
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("a client sending its body slowly held the connection %v", took)
	}
	// A stream lives on well past both timeouts, with heartbeats.
	st := openStream(t, base, f.sdk, "")
	if ev := st.next(2*time.Second, false); ev.name != wire.EventHello {
		t.Fatalf("hello %+v", ev)
	}
	time.Sleep(1500 * time.Millisecond)
	if ev := st.next(2*time.Second, true); !ev.comment {
		t.Fatalf("no heartbeat after the read timeout: %+v", ev)
	}
	f.createCustomer(f.sdk, "production", map[string]any{"id": "late"})
	if ev := st.next(2*time.Second, false); !strings.Contains(ev.data, `"id":"late"`) {
		t.Fatalf("the stream died with the read timeout: %+v", ev)
	}
}
