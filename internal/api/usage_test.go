package api

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/limitr/limitr/internal/aggregate"
	"github.com/limitr/limitr/internal/httpx/problem"
	"github.com/limitr/limitr/internal/platform/pgtest"
	"github.com/limitr/limitr/internal/store"
	"github.com/limitr/limitr/internal/wire"
)

// ---- fixture ----

type syncFixture struct {
	*custHarness
	tn    custTenant
	sdk   string // production SDK key
	other custTenant
	// otherSDK is tenant "other"'s production SDK key.
	otherSDK string
}

func quickstartPolicy(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile("../../examples/policies/quickstart-ai.json")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// publishJSON creates a version from a JSON document and publishes it to env.
func (h *custHarness) publishJSON(tn custTenant, env string, src []byte) int {
	h.t.Helper()
	code, body := h.do(http.MethodPost, "/v1/policies", tn.secret, src)
	if code != http.StatusCreated && code != http.StatusOK {
		h.t.Fatalf("create policy: %d %s", code, body)
	}
	var v struct {
		Number int `json:"number"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		h.t.Fatal(err)
	}
	code, body = h.do(http.MethodPost, "/v1/environments/"+env+"/publish", tn.secret, map[string]int{"version": v.Number})
	if code != http.StatusOK {
		h.t.Fatalf("publish: %d %s", code, body)
	}
	return v.Number
}

func (h *custHarness) createCustomer(secret, env string, body map[string]any) {
	h.t.Helper()
	if code, b := h.do(http.MethodPost, custPath(env), secret, body); code != http.StatusCreated {
		h.t.Fatalf("create customer %v: %d %s", body["id"], code, b)
	}
}

func newSyncFixture(t *testing.T) *syncFixture {
	t.Helper()
	return newSyncFixtureOn(t, newCustHarness(t))
}

func newSyncFixtureOn(t *testing.T, h *custHarness) *syncFixture {
	t.Helper()
	f := &syncFixture{custHarness: h}
	f.tn = h.bootstrap("acme")
	f.other = h.bootstrap("other")
	src := quickstartPolicy(t)
	for _, tn := range []custTenant{f.tn, f.other} {
		for _, env := range []string{"production", "staging"} {
			h.publishJSON(tn, env, src)
		}
	}
	f.sdk, _ = h.sdkKey(f.tn, "production")
	f.otherSDK, _ = h.sdkKey(f.other, "production")
	h.createCustomer(f.tn.secret, "production", map[string]any{"id": "alice", "alt_ids": []string{"cus_alice"}})
	h.createCustomer(f.tn.secret, "production", map[string]any{"id": "bob", "plan": "growth"})
	h.createCustomer(f.tn.secret, "staging", map[string]any{"id": "stella"})
	h.createCustomer(f.other.secret, "production", map[string]any{"id": "mallory"})
	return f
}

// usage posts a batch; body is a wire.UsageBatch, or raw bytes sent as they are.
func (f *syncFixture) usage(secret string, body any, gz bool, hdr ...string) (int, []byte) {
	f.t.Helper()
	var raw []byte
	switch b := body.(type) {
	case []byte:
		raw = b
	case string:
		raw = []byte(b)
	default:
		var err error
		if raw, err = json.Marshal(b); err != nil {
			f.t.Fatal(err)
		}
	}
	if gz {
		raw = gzipBytes(f.t, raw)
	}
	req := httptest.NewRequest(http.MethodPost, wire.PathUsage, bytes.NewReader(raw))
	req.Header.Set("Content-Type", "application/json")
	if gz {
		req.Header.Set("Content-Encoding", "gzip")
	}
	req.Header.Set("Authorization", "Bearer "+secret)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	f.srv.Handler().ServeHTTP(rec, req)
	return rec.Code, rec.Body.Bytes()
}

func gzipBytes(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func (f *syncFixture) ack(code int, body []byte) wire.UsageAck {
	f.t.Helper()
	if code != http.StatusOK {
		f.t.Fatalf("usage: %d %s", code, body)
	}
	var a wire.UsageAck
	if err := json.Unmarshal(body, &a); err != nil {
		f.t.Fatal(err)
	}
	return a
}

func (f *syncFixture) usageRows() (batches, deltas, events int) {
	f.t.Helper()
	return f.count(`select count(*) from usage_batches`), f.count(`select count(*) from usage_deltas`), f.count(`select count(*) from usage_events`)
}

func thisMonth() time.Time {
	n := time.Now().UTC()
	return time.Date(n.Year(), n.Month(), 1, 0, 0, 0, 0, time.UTC)
}

func delta(cust, ent, units string) wire.UsageDelta {
	return wire.UsageDelta{Customer: cust, Entitlement: ent, Credit: "claude-sonnet-4-input", PeriodStart: thisMonth(),
		Units: units, Overhead: "0.000003", Price: "0.000004", Calls: 1}
}

func draw(cust, grant, units string) wire.GrantDraw {
	return wire.GrantDraw{Customer: cust, GrantID: grant, PeriodStart: thisMonth(), Units: units}
}

func batch(instance string, seq int64, ds ...wire.UsageDelta) wire.UsageBatch {
	return wire.UsageBatch{InstanceID: instance, Sequence: seq, SentAt: time.Now().UTC(), PolicyVersion: 1, Deltas: ds}
}

// ---- POST /v1/sdk/usage ----

func TestSyncUsageCommitsOnce(t *testing.T) {
	f := newSyncFixture(t)
	ctx := context.Background()
	woke := f.srv.bus.Subscribe(t.Context(), wire.ChannelUsage)

	b1 := batch("web-1", 1, delta("alice", "ai-chat-input", "1500"), delta("cus_alice", "ai-chat-output", "-2.25"),
		delta("bob", "ai-chat-input", "0.0000000000000000001"))
	b1.Events = []wire.UsageEvent{{ID: "ev-1", Customer: "alice", Caller: "alice", Entitlement: "ai-chat-input", Units: "1500", Overhead: "0.0045", Allowed: true, At: time.Now().UTC()}}
	a := f.ack(f.usage(f.sdk, b1, true))
	if a.Sequence != 1 || a.Duplicate || a.Accepted != 3 {
		t.Fatalf("ack %+v", a)
	}
	select {
	case msg := <-woke:
		if want := f.tn.tenantID.String() + ":" + f.tn.envs["production"].String(); string(msg) != want {
			t.Fatalf("usage wake-up %q, want %q", msg, want)
		}
	case <-time.After(time.Second):
		t.Fatal("no wake-up on " + wire.ChannelUsage)
	}
	// Plain JSON works too.
	a = f.ack(f.usage(f.sdk, batch("web-1", 2, delta("alice", "ai-chat-input", "10")), false))
	if a.Sequence != 2 || a.Duplicate || a.Accepted != 1 {
		t.Fatalf("plain ack %+v", a)
	}
	// The same batch again, gzip or not: a duplicate, nothing written.
	for _, gz := range []bool{true, false} {
		a = f.ack(f.usage(f.sdk, b1, gz))
		if !a.Duplicate || a.Sequence != 1 || a.Accepted != 0 {
			t.Fatalf("retry ack %+v", a)
		}
	}
	// The same sequence from another instance is another batch.
	a = f.ack(f.usage(f.sdk, batch("web-2", 1, delta("alice", "ai-chat-input", "5")), true))
	if a.Duplicate {
		t.Fatalf("another instance's batch was a duplicate: %+v", a)
	}
	if b, d, e := f.usageRows(); b != 3 || d != 5 || e != 1 {
		t.Fatalf("rows: %d batches, %d deltas, %d events; want 3, 5, 1", b, d, e)
	}
	// Exact values, alt ids stored as the customer id, the batch's metadata.
	var sum, tiny string
	if err := f.pool.QueryRow(ctx, `select sum(units)::text from usage_deltas where customer_id = 'alice' and entitlement = 'ai-chat-input'`).Scan(&sum); err != nil {
		t.Fatal(err)
	}
	if err := f.pool.QueryRow(ctx, `select units::text from usage_deltas where customer_id = 'bob'`).Scan(&tiny); err != nil {
		t.Fatal(err)
	}
	if sum != "1515" || tiny != "0.0000000000000000001" {
		t.Fatalf("stored sum %s, tiny %s", sum, tiny)
	}
	if n := f.count(`select count(*) from usage_deltas where customer_id = 'alice' and units = -2.25 and entitlement = 'ai-chat-output'`); n != 1 {
		t.Fatalf("alt id delta stored %d times under alice", n)
	}
	if n := f.count(`select count(*) from usage_batches where instance_id = 'web-1' and sequence = 1 and deltas = 3 and events = 1 and policy_version = 1 and sent_at is not null
		and tenant_id = $1 and environment_id = $2`, f.tn.tenantID, f.tn.envs["production"]); n != 1 {
		t.Fatal("batch row does not record its counts and environment")
	}
	if n := f.count(`select count(*) from usage_events where event_id = 'ev-1' and customer_id = 'alice' and caller_id = 'alice' and allowed and units = 1500`); n != 1 {
		t.Fatal("audit event not stored")
	}
}

// Grant coverage rides with the deltas: each batch's grant_covered is stored with its
// row, the worker sums it per meter period into meter_aggregates (invoices credit it),
// a delta without it counts 0, and an unattributed record keeps it as sent.
func TestSyncGrantCoveredSumsIntoMeterAggregates(t *testing.T) {
	f := newSyncFixture(t)
	ctx := context.Background()
	covered := func(d wire.UsageDelta, g string) wire.UsageDelta { d.GrantCovered = g; return d }
	f.ack(f.usage(f.sdk, batch("web-1", 1, covered(delta("alice", "ai-chat-input", "1500"), "400.5"),
		delta("bob", "ai-chat-input", "7")), true))
	a := f.ack(f.usage(f.sdk, batch("web-2", 1, covered(delta("cus_alice", "ai-chat-input", "200"), "0.0000000000000000001"),
		covered(delta("ghost", "ai-chat-input", "9"), "9")), false))
	if len(a.Unattributed) != 1 || a.Unattributed[0].Customer != "ghost" {
		t.Fatalf("ack %+v, want ghost unattributed", a)
	}
	if n := f.count(`select count(*) from usage_deltas where grant_covered > 0`); n != 2 {
		t.Fatalf("%d delta rows carry grant coverage, want 2", n)
	}
	var kept string
	if err := f.pool.QueryRow(ctx, `select record->>'grant_covered' from unattributed_usage where customer = 'ghost'`).Scan(&kept); err != nil || kept != "9" {
		t.Fatalf("unattributed record's grant_covered = %q, %v; want 9", kept, err)
	}
	// A retry of a committed batch adds nothing.
	if a := f.ack(f.usage(f.sdk, batch("web-1", 1, covered(delta("alice", "ai-chat-input", "1500"), "400.5")), true)); !a.Duplicate {
		t.Fatalf("retry ack %+v", a)
	}
	if _, err := aggregate.New(f.pool, aggregate.Options{}).Drain(ctx); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	rows, err := f.pool.Query(ctx, `select customer_id, grant_covered::text from meter_aggregates where entitlement = 'ai-chat-input'`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var c, g string
		if err := rows.Scan(&c, &g); err != nil {
			t.Fatal(err)
		}
		got[c] = g
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got["alice"] != "400.5000000000000000001" || got["bob"] != "0" {
		t.Fatalf("meter_aggregates grant_covered = %v, want alice 400.5000000000000000001 (both batches, exactly), bob 0", got)
	}
}

func TestSyncUsageConcurrentRetries(t *testing.T) {
	f := newSyncFixture(t)
	b := batch("web-1", 7, delta("alice", "ai-chat-input", "3"), delta("bob", "ai-chat-input", "4"))
	const n = 8
	acks := make([]wire.UsageAck, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			code, body := f.usage(f.sdk, b, true)
			if code == http.StatusOK {
				_ = json.Unmarshal(body, &acks[i])
			} else {
				t.Errorf("attempt %d: %d %s", i, code, body)
			}
		})
	}
	wg.Wait()
	fresh := 0
	for _, a := range acks {
		if !a.Duplicate {
			fresh++
		}
	}
	if fresh != 1 {
		t.Fatalf("%d attempts committed, want exactly 1: %+v", fresh, acks)
	}
	if _, d, _ := f.usageRows(); d != 2 {
		t.Fatalf("%d delta rows, want 2", d)
	}
}

func TestSyncUsageRejectsBadInput(t *testing.T) {
	f := newSyncFixture(t)
	ok := delta("alice", "ai-chat-input", "1")
	with := func(mut func(*wire.UsageBatch)) wire.UsageBatch {
		b := batch("web-1", 1, ok, delta("bob", "ai-chat-input", "2"))
		mut(&b)
		return b
	}
	d := func(mut func(*wire.UsageDelta)) func(*wire.UsageBatch) {
		return func(b *wire.UsageBatch) { mut(&b.Deltas[1]) }
	}
	g := func(mut func(*wire.GrantDraw)) func(*wire.UsageBatch) {
		return func(b *wire.UsageBatch) {
			b.GrantDraws = []wire.GrantDraw{draw("alice", "lgrnt_a", "1"), draw("bob", "included:x", "2")}
			mut(&b.GrantDraws[1])
		}
	}
	many := make([]wire.UsageDelta, wire.MaxDeltas+1)
	for i := range many {
		many[i] = ok
	}
	bomb := gzipBytes(t, bytes.Repeat([]byte(" "), wire.MaxBatchRaw+1024))
	noise := make([]byte, (1<<20)+10)
	_, _ = rand.Read(noise)
	good, _ := json.Marshal(batch("web-1", 1, ok))
	cases := []struct {
		name string
		body any
		gz   bool
		hdr  []string
		code int
		path string
	}{
		{name: "malformed gzip", body: []byte("\x1f\x8b\x08\x00garbage"), hdr: []string{"Content-Encoding", "gzip"}, code: 400},
		{name: "plain JSON labelled gzip", body: good, hdr: []string{"Content-Encoding", "gzip"}, code: 400},
		{name: "truncated gzip", body: gzipBytes(t, good)[:20], hdr: []string{"Content-Encoding", "gzip"}, code: 400},
		{name: "gzip bomb", body: bomb, hdr: []string{"Content-Encoding", "gzip"}, code: 413},
		{name: "compressed body over the body limit", body: noise, hdr: []string{"Content-Encoding", "gzip"}, code: 413},
		{name: "unknown encoding", body: good, hdr: []string{"Content-Encoding", "br"}, code: 415},
		{name: "empty body", body: "", code: 400},
		{name: "bad JSON", body: `{"instance_id": "web-1", "sequence": 1, "deltas": [`, code: 400},
		{name: "bad JSON gzip", body: `{"instance_id": `, gz: true, code: 400},
		{name: "trailing data", body: string(good) + `{}`, code: 400},
		{name: "not an object", body: `[1,2]`, code: 422},
		{name: "unknown field", body: `{"instance_id": "web-1", "sequence": 1, "deltas": [], "tenant_id": "x"}`, code: 422, path: "tenant_id"},
		{name: "unknown delta field", body: `{"instance_id": "web-1", "sequence": 1, "deltas": [{"customer": "alice", "tenant": "other"}]}`, code: 422, path: "tenant"},
		{name: "wrong type", body: `{"instance_id": "web-1", "sequence": "1", "deltas": []}`, code: 422, path: "sequence"},
		{name: "numeric units", body: `{"instance_id": "web-1", "sequence": 1, "deltas": [{"customer": "alice", "units": 5}]}`, code: 422, path: "deltas.units"},
		{name: "bad time", body: `{"instance_id": "web-1", "sequence": 1, "deltas": [{"customer": "alice", "period_start": "yesterday"}]}`, code: 400},
		{name: "too many deltas", body: batch("web-1", 1, many...), gz: true, code: 422, path: "deltas"},
		{name: "empty instance id", body: with(func(b *wire.UsageBatch) { b.InstanceID = "" }), gz: true, code: 422, path: "instance_id"},
		{name: "instance id with a slash", body: with(func(b *wire.UsageBatch) { b.InstanceID = "web/1" }), code: 422, path: "instance_id"},
		{name: "instance id too long", body: with(func(b *wire.UsageBatch) { b.InstanceID = strings.Repeat("i", 65) }), code: 422, path: "instance_id"},
		{name: "sequence 0", body: with(func(b *wire.UsageBatch) { b.Sequence = 0 }), code: 422, path: "sequence"},
		{name: "negative sequence", body: with(func(b *wire.UsageBatch) { b.Sequence = -4 }), code: 422, path: "sequence"},
		{name: "negative policy version", body: with(func(b *wire.UsageBatch) { b.PolicyVersion = -1 }), code: 422, path: "policy_version"},
		{name: "bad decimal", body: with(d(func(x *wire.UsageDelta) { x.Units = "12,5" })), gz: true, code: 422, path: "deltas[1].units"},
		{name: "empty decimal", body: with(d(func(x *wire.UsageDelta) { x.Overhead = "" })), code: 422, path: "deltas[1].overhead"},
		{name: "NaN", body: with(d(func(x *wire.UsageDelta) { x.Price = "NaN" })), code: 422, path: "deltas[1].price"},
		{name: "exponent", body: with(d(func(x *wire.UsageDelta) { x.Units = "1e3" })), code: 422, path: "deltas[1].units"},
		{name: "rounding decimal", body: with(d(func(x *wire.UsageDelta) { x.Units = "0.00000000000000000001" })), code: 422, path: "deltas[1].units"},
		{name: "overflowing decimal", body: with(d(func(x *wire.UsageDelta) { x.Units = "123456789012345678901" })), code: 422, path: "deltas[1].units"},
		{name: "negative calls", body: with(d(func(x *wire.UsageDelta) { x.Calls = -1 })), gz: true, code: 422, path: "deltas[1].calls"},
		{name: "negative grant coverage", body: with(d(func(x *wire.UsageDelta) { x.GrantCovered = "-0.5" })), code: 422, path: "deltas[1].grant_covered"},
		{name: "garbage grant coverage", body: with(d(func(x *wire.UsageDelta) { x.GrantCovered = "lots" })), gz: true, code: 422, path: "deltas[1].grant_covered"},
		{name: "grant coverage with an exponent", body: with(d(func(x *wire.UsageDelta) { x.GrantCovered = "1e2" })), code: 422, path: "deltas[1].grant_covered"},
		{name: "numeric grant coverage", body: `{"instance_id": "web-1", "sequence": 1, "deltas": [{"customer": "alice", "grant_covered": 5}]}`, code: 422, path: "deltas.grant_covered"},
		{name: "empty customer", body: with(d(func(x *wire.UsageDelta) { x.Customer = "" })), code: 422, path: "deltas[1].customer"},
		{name: "long entitlement", body: with(d(func(x *wire.UsageDelta) { x.Entitlement = strings.Repeat("e", 257) })), code: 422, path: "deltas[1].entitlement"},
		{name: "NUL in credit", body: with(d(func(x *wire.UsageDelta) { x.Credit = "a\x00b" })), code: 422, path: "deltas[1].credit"},
		{name: "no period start", body: with(d(func(x *wire.UsageDelta) { x.PeriodStart = time.Time{} })), code: 422, path: "deltas[1].period_start"},
		{name: "period far in the future", body: with(d(func(x *wire.UsageDelta) { x.PeriodStart = time.Now().AddDate(2, 0, 0) })), code: 422, path: "deltas[1].period_start"},
		{name: "repeated event id", body: with(func(b *wire.UsageBatch) {
			e := wire.UsageEvent{ID: "e1", Customer: "alice", Entitlement: "x", Units: "1", Overhead: "0", At: time.Now()}
			b.Events = []wire.UsageEvent{e, e}
		}), code: 422, path: "events[1].id"},
		{name: "event without a time", body: with(func(b *wire.UsageBatch) {
			b.Events = []wire.UsageEvent{{ID: "e1", Customer: "alice", Entitlement: "x", Units: "1", Overhead: "0"}}
		}), code: 422, path: "events[0].at"},
		{name: "event with a bad decimal", body: with(func(b *wire.UsageBatch) {
			b.Events = []wire.UsageEvent{{ID: "e1", Customer: "alice", Entitlement: "x", Units: "one", Overhead: "0", At: time.Now()}}
		}), code: 422, path: "events[0].units"},
		{name: "draw without a grant id", body: with(g(func(x *wire.GrantDraw) { x.GrantID = "" })), code: 422, path: "grant_draws[1].grant_id"},
		{name: "draw with a long grant id", body: with(g(func(x *wire.GrantDraw) { x.GrantID = strings.Repeat("g", 257) })), code: 422, path: "grant_draws[1].grant_id"},
		{name: "draw with a bad decimal", body: with(g(func(x *wire.GrantDraw) { x.Units = "1e3" })), code: 422, path: "grant_draws[1].units"},
		{name: "negative draw", body: with(g(func(x *wire.GrantDraw) { x.Units = "-1" })), code: 422, path: "grant_draws[1].units"},
		{name: "draw without a period", body: with(g(func(x *wire.GrantDraw) { x.PeriodStart = time.Time{} })), code: 422, path: "grant_draws[1].period_start"},
		{name: "too many draws", body: with(func(b *wire.UsageBatch) {
			b.GrantDraws = make([]wire.GrantDraw, wire.MaxDeltas+1)
			for i := range b.GrantDraws {
				b.GrantDraws[i] = draw("alice", "g", "1")
			}
		}), gz: true, code: 422, path: "grant_draws"},
	}
	for _, tc := range cases {
		code, body := f.usage(f.sdk, tc.body, tc.gz, tc.hdr...)
		if tc.path == "deltas[1].period_start" && strings.Contains(string(body), "unknown-customer") {
			t.Fatalf("%s: a period problem is typed as an unknown customer: %s", tc.name, body)
		}
		if code >= 500 {
			t.Fatalf("%s: %d %s", tc.name, code, body)
		}
		p := wantProblem(t, tc.name, code, body, tc.code, tc.path)
		if p.Detail == "" {
			t.Fatalf("%s: problem without detail: %s", tc.name, body)
		}
	}
	if b, d, e := f.usageRows(); b+d+e != 0 {
		t.Fatalf("rejected batches wrote rows: %d batches, %d deltas, %d events", b, d, e)
	}
	if n := f.count(`select count(*) from grant_draw_totals`); n != 0 {
		t.Fatalf("rejected batches wrote %d grant draw rows", n)
	}
	// A rejected batch commits nothing, so its sequence is still free.
	a := f.ack(f.usage(f.sdk, batch("web-1", 1, ok), true))
	if a.Duplicate || a.Accepted != 1 {
		t.Fatalf("after rejections: %+v", a)
	}
}

func TestSyncUsageAccess(t *testing.T) {
	f := newSyncFixture(t)
	b := batch("web-1", 1, delta("alice", "ai-chat-input", "1"))
	for _, tc := range []struct {
		method, path string
	}{{http.MethodPost, wire.PathUsage}, {http.MethodGet, wire.PathStream}, {http.MethodGet, wire.PathCustomer + "alice/state"}} {
		var body any
		if tc.method == http.MethodPost {
			body = b
		}
		code, resp := f.do(tc.method, tc.path, f.tn.secret, body)
		wantProblem(t, "admin key on "+tc.path, code, resp, http.StatusForbidden, "")
		code, resp = f.do(tc.method, tc.path, "", body)
		wantProblem(t, "no key on "+tc.path, code, resp, http.StatusUnauthorized, "")
	}
	if _, d, _ := f.usageRows(); d != 0 {
		t.Fatal("an admin key wrote usage")
	}
	// The policy endpoints name the key's environment.
	for _, tc := range []struct{ path, key string }{{wire.PathPolicy, f.sdk}, {"/v1/environments/staging/policy", f.tn.secret}} {
		req := httptest.NewRequest(http.MethodGet, tc.path, nil)
		req.Header.Set("Authorization", "Bearer "+tc.key)
		rec := httptest.NewRecorder()
		f.srv.Handler().ServeHTTP(rec, req)
		want := "production"
		if strings.Contains(tc.path, "staging") {
			want = "staging"
		}
		if rec.Code != 200 || rec.Header().Get(wire.HeaderEnv) != want || rec.Header().Get(wire.HeaderVer) != "1" {
			t.Fatalf("%s: %d, %s=%q", tc.path, rec.Code, wire.HeaderEnv, rec.Header().Get(wire.HeaderEnv))
		}
		etag := rec.Header().Get("ETag")
		req = httptest.NewRequest(http.MethodGet, tc.path, nil)
		req.Header.Set("Authorization", "Bearer "+tc.key)
		req.Header.Set("If-None-Match", etag)
		rec = httptest.NewRecorder()
		f.srv.Handler().ServeHTTP(rec, req)
		if rec.Code != http.StatusNotModified || rec.Header().Get(wire.HeaderEnv) != want {
			t.Fatalf("%s 304: %d, %s=%q", tc.path, rec.Code, wire.HeaderEnv, rec.Header().Get(wire.HeaderEnv))
		}
	}
}

// tcpProxy forwards to Postgres until cut, then refuses and drops connections.
type tcpProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	down   bool
	conns  []net.Conn
}

func newTCPProxy(t *testing.T, target string) *tcpProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{ln: ln, target: target}
	t.Cleanup(func() { _ = ln.Close(); p.cut() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			if p.down {
				p.mu.Unlock()
				_ = c.Close()
				continue
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				p.mu.Unlock()
				_ = c.Close()
				continue
			}
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(u, c); _ = u.Close() }()
			go func() { _, _ = io.Copy(c, u); _ = c.Close() }()
		}
	}()
	return p
}

func (p *tcpProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
}

func (p *tcpProxy) restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = false
}

func TestSyncUsageDatabaseDown(t *testing.T) {
	dbURL, pool := pgtest.NewMigrated(t)
	cfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := newTCPProxy(t, net.JoinHostPort(cfg.ConnConfig.Host, strconv.Itoa(int(cfg.ConnConfig.Port))))
	host, port, _ := net.SplitHostPort(proxy.ln.Addr().String())
	cfg.ConnConfig.Host = host
	p, _ := strconv.Atoi(port)
	cfg.ConnConfig.Port = uint16(p)
	cfg.ConnConfig.ConnectTimeout = time.Second
	flaky, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(flaky.Close)
	srv, err := New(Config{OperatorToken: "op", KeyCacheTTL: time.Hour}, Deps{Pool: flaky, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	h := &custHarness{t: t, srv: srv, pool: pool}
	f := &syncFixture{custHarness: h}
	f.tn = h.bootstrap("acme")
	h.publishJSON(f.tn, "production", quickstartPolicy(t))
	f.sdk, _ = h.sdkKey(f.tn, "production")
	h.createCustomer(f.tn.secret, "production", map[string]any{"id": "alice"})
	b := batch("web-1", 1, delta("alice", "ai-chat-input", "1"))
	f.ack(f.usage(f.sdk, batch("web-1", 99, delta("alice", "ai-chat-input", "1")), true)) // warms the key cache

	proxy.cut()
	for _, gz := range []bool{true, false} {
		req := httptest.NewRequest(http.MethodPost, wire.PathUsage, bytes.NewReader(mustJSON(t, b)))
		if gz {
			req = httptest.NewRequest(http.MethodPost, wire.PathUsage, bytes.NewReader(gzipBytes(t, mustJSON(t, b))))
			req.Header.Set("Content-Encoding", "gzip")
		}
		req.Header.Set("Authorization", "Bearer "+f.sdk)
		rec := httptest.NewRecorder()
		srv.Handler().ServeHTTP(rec, req)
		if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
			t.Fatalf("database down: %d (Retry-After %q) %s", rec.Code, rec.Header().Get("Retry-After"), rec.Body.Bytes())
		}
	}
	code, body := f.do(http.MethodGet, wire.PathCustomer+"alice/state", f.sdk, nil)
	wantProblem(t, "state with the database down", code, body, http.StatusServiceUnavailable, "")

	proxy.restore()
	var a wire.UsageAck
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body := f.usage(f.sdk, b, true)
		if code == http.StatusOK {
			a = f.ack(code, body)
			break
		}
		if code != http.StatusServiceUnavailable || time.Now().After(deadline) {
			t.Fatalf("after restore: %d %s", code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if a.Duplicate || a.Accepted != 1 {
		t.Fatalf("after restore: %+v", a)
	}
	if n := f.count(`select count(*) from usage_deltas where sequence = 1`); n != 1 {
		t.Fatalf("%d rows for the retried batch", n)
	}
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ---- GET /v1/sdk/customers/:id/state ----

func TestSyncCustomerState(t *testing.T) {
	f := newSyncFixture(t)
	ctx := context.Background()
	tenant, env := f.tn.tenantID, f.tn.envs["production"]
	cur := thisMonth()
	prev, old := cur.AddDate(0, -1, 0), cur.AddDate(0, -2, 0)
	// Committed batches, all pending.
	at := func(ds []wire.UsageDelta, p time.Time) []wire.UsageDelta {
		for i := range ds {
			ds[i].PeriodStart = p
		}
		return ds
	}
	f.ack(f.usage(f.sdk, batch("web-1", 1, at([]wire.UsageDelta{delta("alice", "ai-chat-input", "100.5"), delta("bob", "ai-chat-input", "7")}, cur)...), true))
	f.ack(f.usage(f.sdk, batch("web-2", 1, at([]wire.UsageDelta{delta("cus_alice", "ai-chat-input", "-0.5"), delta("alice", "ai-chat-output", "3")}, cur)...), true))
	f.ack(f.usage(f.sdk, batch("web-1", 2, at([]wire.UsageDelta{delta("alice", "ai-chat-input", "40")}, prev)...), true))
	// The worker folded web-1#1 and an older period into the aggregates: simulate it
	// as the worker does, in one transaction.
	tx, err := f.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // a no-op after the commit
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{`insert into meter_aggregates (tenant_id, environment_id, customer_id, customer_uid, entitlement, period_start, credit, units, overhead, price, calls)
			select tenant_id, environment_id, customer_id, customer_uid, entitlement, period_start, credit, sum(units), sum(overhead), sum(price), sum(calls)
			from usage_deltas where instance_id = 'web-1' and sequence = 1 group by 1, 2, 3, 4, 5, 6, 7`, nil},
		{`update usage_deltas set aggregated_at = now() where instance_id = 'web-1' and sequence = 1`, nil},
		{`insert into meter_aggregates (tenant_id, environment_id, customer_id, customer_uid, entitlement, period_start, credit, units, overhead, price, calls)
			values ($1, $2, 'alice', (select uid from customers where id = 'alice' and tenant_id = $1), 'ai-chat-input', $3, 'claude-sonnet-4-input', 999, 1, 2, 5)`, []any{tenant, env, old}},
	} {
		if _, err := tx.Exec(ctx, q.sql, q.args...); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}

	for _, id := range []string{"alice", "cus_alice"} {
		code, body := f.do(http.MethodGet, wire.PathCustomer+id+"/state", f.sdk, nil)
		if code != http.StatusOK {
			t.Fatalf("state %s: %d %s", id, code, body)
		}
		var st wire.CustomerState
		if err := json.Unmarshal(body, &st); err != nil {
			t.Fatal(err)
		}
		_, rec := f.do(http.MethodGet, custPath("production", "alice"), f.sdk, nil)
		if !jsonEqual(st.Customer, rec) {
			t.Fatalf("state customer differs from GET customer:\n%s\n%s", st.Customer, rec)
		}
		in := st.Meters["ai-chat-input"]
		if len(in) != 2 || len(st.Meters) != 2 {
			t.Fatalf("meters %s", body)
		}
		// 100.5 (aggregated) - 0.5 (pending); 40 pending last month; the older period is cut.
		want := []wire.MeterTotal{
			{Credit: "claude-sonnet-4-input", PeriodStart: cur, Units: "100", Overhead: "0.000006", Price: "0.000008"},
			{Credit: "claude-sonnet-4-input", PeriodStart: prev, Units: "40", Overhead: "0.000003", Price: "0.000004"},
		}
		for i := range want {
			if !in[i].PeriodStart.Equal(want[i].PeriodStart) || in[i].Units != want[i].Units || in[i].Overhead != want[i].Overhead ||
				in[i].Price != want[i].Price || in[i].Credit != want[i].Credit {
				t.Fatalf("%s ai-chat-input[%d] = %+v, want %+v", id, i, in[i], want[i])
			}
		}
		if out := st.Meters["ai-chat-output"]; len(out) != 1 || out[0].Units != "3" {
			t.Fatalf("ai-chat-output %+v", out)
		}
	}
	// bob's meter is his own; a customer without usage has an empty map.
	code, body := f.do(http.MethodGet, wire.PathCustomer+"bob/state", f.sdk, nil)
	if code != 200 || !strings.Contains(string(body), `"units":"7"`) {
		t.Fatalf("bob: %d %s", code, body)
	}
	f.createCustomer(f.sdk, "production", map[string]any{"id": "carol"})
	code, body = f.do(http.MethodGet, wire.PathCustomer+"carol/state", f.sdk, nil)
	if code != 200 || !strings.Contains(string(body), `"meters":{}`) {
		t.Fatalf("carol: %d %s", code, body)
	}
	for _, id := range []string{"nobody", "stella", "mallory", "a%2Fb"} {
		code, body := f.do(http.MethodGet, wire.PathCustomer+id+"/state", f.sdk, nil)
		wantProblem(t, "state of "+id, code, body, http.StatusNotFound, "")
	}
}

func TestSyncGrantDrawsCommitOnceAndHydrate(t *testing.T) {
	f := newSyncFixture(t)
	cur := thisMonth()
	prev, old := cur.AddDate(0, -1, 0), cur.AddDate(0, -2, 0)
	at := func(d wire.GrantDraw, p time.Time) wire.GrantDraw { d.PeriodStart = p; return d }
	b1 := batch("web-1", 1, delta("alice", "ai-chat-input", "1"))
	b1.GrantDraws = []wire.GrantDraw{draw("alice", "lgrnt_a", "2.5"), draw("cus_alice", "lgrnt_a", "0.5"),
		at(draw("alice", "included:x", "4"), prev), draw("bob", "lgrnt_b", "1")}
	if a := f.ack(f.usage(f.sdk, b1, true)); a.Duplicate {
		t.Fatalf("ack %+v", a)
	}
	// The same batch again adds nothing; another batch adds to the totals.
	if a := f.ack(f.usage(f.sdk, b1, false)); !a.Duplicate {
		t.Fatalf("retry ack %+v", a)
	}
	// A draws-only batch is a batch too.
	b2 := batch("web-2", 1)
	b2.Deltas = []wire.UsageDelta{}
	b2.GrantDraws = []wire.GrantDraw{draw("alice", "lgrnt_a", "1"), at(draw("alice", "included:x", "1"), cur), at(draw("alice", "included:x", "9"), old)}
	f.ack(f.usage(f.sdk, b2, true))
	if n := f.count(`select count(*) from grant_draw_totals where customer_id = 'alice'`); n != 4 {
		t.Fatalf("alice has %d draw rows, want 4", n)
	}
	code, body := f.do(http.MethodGet, wire.PathCustomer+"cus_alice/state", f.sdk, nil)
	if code != http.StatusOK {
		t.Fatalf("state: %d %s", code, body)
	}
	var st wire.CustomerState
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatal(err)
	}
	// Grants in id order, the last two periods each, newest first.
	want := []wire.GrantDraw{
		{Customer: "alice", GrantID: "included:x", PeriodStart: cur, Units: "1"},
		{Customer: "alice", GrantID: "included:x", PeriodStart: prev, Units: "4"},
		{Customer: "alice", GrantID: "lgrnt_a", PeriodStart: cur, Units: "4"},
	}
	if len(st.GrantDraws) != len(want) {
		t.Fatalf("grant draws %s", body)
	}
	for i, w := range want {
		g := st.GrantDraws[i]
		if g.Customer != w.Customer || g.GrantID != w.GrantID || !g.PeriodStart.Equal(w.PeriodStart) || g.Units != w.Units {
			t.Fatalf("grant_draws[%d] = %+v, want %+v", i, g, w)
		}
	}
	// bob's draws are his own.
	_, body = f.do(http.MethodGet, wire.PathCustomer+"bob/state", f.sdk, nil)
	if !strings.Contains(string(body), `"grant_id":"lgrnt_b"`) {
		t.Fatalf("bob: %s", body)
	}
}

// ---- GET /v1/sdk/stream ----

type sseEvent struct {
	id, name, data string
	comment        bool
}

type sseClient struct {
	t      *testing.T
	resp   *http.Response
	events chan sseEvent
	done   chan struct{}
}

// openStream connects to the stream; hdr are header pairs, query is "" or "?cursor=N".
func openStream(t *testing.T, base, secret, query string, hdr ...string) *sseClient {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, base+wire.PathStream+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+secret)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("stream: %d %s", resp.StatusCode, b)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("stream Content-Type %q", ct)
	}
	c := &sseClient{t: t, resp: resp, events: make(chan sseEvent, 256), done: make(chan struct{})}
	t.Cleanup(func() { resp.Body.Close() })
	go func() {
		defer close(c.done)
		sc := bufio.NewScanner(resp.Body)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.name != "" || ev.data != "" {
					c.events <- ev
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, ":"):
				c.events <- sseEvent{comment: true, data: strings.TrimSpace(line[1:])}
			case strings.HasPrefix(line, "id: "):
				ev.id = line[4:]
			case strings.HasPrefix(line, "event: "):
				ev.name = line[7:]
			case strings.HasPrefix(line, "data: "):
				ev.data += line[6:]
			}
		}
	}()
	return c
}

// next returns the next event (comments skipped unless wantComment) within d.
func (c *sseClient) next(d time.Duration, wantComment bool) sseEvent {
	c.t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case ev := <-c.events:
			if ev.comment != wantComment {
				continue
			}
			return ev
		case <-c.done:
			select {
			case ev := <-c.events:
				if ev.comment == wantComment {
					return ev
				}
				continue
			default:
			}
			c.t.Fatal("the stream ended")
		case <-timer.C:
			c.t.Fatalf("no event within %s", d)
		}
	}
}

func (c *sseClient) hello() wire.Hello {
	c.t.Helper()
	ev := c.next(2*time.Second, false)
	if ev.name != wire.EventHello {
		c.t.Fatalf("first event %q, want hello", ev.name)
	}
	var h wire.Hello
	if err := json.Unmarshal([]byte(ev.data), &h); err != nil {
		c.t.Fatal(err)
	}
	if ev.id == "" {
		c.t.Fatal("hello without an id")
	}
	return h
}

func (f *syncFixture) latestChange() int64 {
	f.t.Helper()
	id, err := store.LatestChangeID(context.Background(), f.pool, f.tn.tenantID, f.tn.envs["production"])
	if err != nil {
		f.t.Fatal(err)
	}
	return id
}

// changedPolicy is the quick start with another limit.
func changedPolicy(t testing.TB) []byte {
	src := quickstartPolicy(t)
	out := bytes.Replace(src, []byte(`"value": 500000`), []byte(`"value": 400000`), 1)
	if bytes.Equal(out, src) {
		t.Fatal("quickstart-ai.json changed shape")
	}
	return out
}

func TestSyncStreamLive(t *testing.T) {
	f := newSyncFixture(t)
	f.srv.setStreamTimings(time.Hour, time.Hour) // only the bus can deliver
	ts := httptest.NewServer(f.srv.Handler())
	t.Cleanup(ts.Close)

	st := openStream(t, ts.URL, f.sdk, "")
	h := st.hello()
	if h.Environment != "production" || h.PolicyVersion != 1 || h.PolicyHash == "" || h.Cursor != f.latestChange() || h.Cursor == 0 {
		t.Fatalf("hello %+v (latest change %d)", h, f.latestChange())
	}

	start := time.Now()
	v := f.publishJSON(f.tn, "production", changedPolicy(t))
	ev := st.next(time.Second, false)
	var pc wire.PolicyChanged
	if ev.name != wire.EventPolicy || json.Unmarshal([]byte(ev.data), &pc) != nil || pc.Version != v || pc.Hash == "" || pc.Hash == h.PolicyHash {
		t.Fatalf("policy event %+v", ev)
	}
	if id, _ := strconv.ParseInt(ev.id, 10, 64); id <= h.Cursor {
		t.Fatalf("policy event id %s not after the hello cursor %d", ev.id, h.Cursor)
	}
	t.Logf("publish → event in %s", time.Since(start))

	code, body := f.do(http.MethodPatch, custPath("production", "alice"), f.tn.secret, map[string]any{"label": "Alice"})
	if code != 200 {
		t.Fatalf("patch: %d %s", code, body)
	}
	ev = st.next(time.Second, false)
	var cc wire.CustomerChanged
	if ev.name != wire.EventCust || json.Unmarshal([]byte(ev.data), &cc) != nil || cc.ID != "alice" || cc.Op != "upsert" || cc.Revision != 2 {
		t.Fatalf("customer event %+v", ev)
	}
	var rec store.Customer
	if err := json.Unmarshal(cc.Customer, &rec); err != nil || rec.Label != "Alice" || rec.ID != "alice" {
		t.Fatalf("customer event record %s", cc.Customer)
	}
	code, body = f.do(http.MethodPut, custPath("production", "bob", "plan"), f.sdk, map[string]any{"plan": "starter", "overwrite_meters": true})
	if code != 200 {
		t.Fatalf("plan: %d %s", code, body)
	}
	ev = st.next(time.Second, false)
	cc = wire.CustomerChanged{}
	if ev.name != wire.EventCust || json.Unmarshal([]byte(ev.data), &cc) != nil || cc.ID != "bob" || cc.Op != "plan" || cc.Plan != "starter" ||
		cc.PreviousPlan != "growth" || !cc.OverwriteMeters {
		t.Fatalf("plan event %+v", ev)
	}
	code, _ = f.do(http.MethodDelete, custPath("production", "bob"), f.tn.secret, nil)
	if code != http.StatusNoContent {
		t.Fatalf("delete: %d", code)
	}
	ev = st.next(time.Second, false)
	cc = wire.CustomerChanged{}
	if json.Unmarshal([]byte(ev.data), &cc) != nil || cc.ID != "bob" || cc.Op != "delete" || cc.Customer != nil {
		t.Fatalf("delete event %+v", ev)
	}
	// Another environment's changes do not reach this stream.
	code, _ = f.do(http.MethodPatch, custPath("staging", "stella"), f.tn.secret, map[string]any{"label": "S"})
	if code != 200 {
		t.Fatal("patch staging")
	}
	select {
	case ev := <-st.events:
		if !ev.comment {
			t.Fatalf("staging change reached production's stream: %+v", ev)
		}
	case <-time.After(300 * time.Millisecond):
	}
}

func TestSyncStreamReplay(t *testing.T) {
	f := newSyncFixture(t)
	f.srv.setStreamTimings(time.Hour, time.Hour)
	ts := httptest.NewServer(f.srv.Handler())
	t.Cleanup(ts.Close)
	from := f.latestChange()
	v := f.publishJSON(f.tn, "production", changedPolicy(t))
	f.createCustomer(f.sdk, "production", map[string]any{"id": "dave"})
	f.createCustomer(f.tn.secret, "staging", map[string]any{"id": "sam"}) // not replayed
	latest := f.latestChange()

	for _, how := range []struct {
		query string
		hdr   []string
	}{{hdr: []string{"Last-Event-ID", strconv.FormatInt(from, 10)}}, {query: "?cursor=" + strconv.FormatInt(from, 10)}} {
		st := openStream(t, ts.URL, f.sdk, how.query, how.hdr...)
		ev := st.next(2*time.Second, false)
		var h wire.Hello
		if ev.name != wire.EventHello || json.Unmarshal([]byte(ev.data), &h) != nil || h.Cursor != latest || h.PolicyVersion != v {
			t.Fatalf("hello %+v", ev)
		}
		if ev.id != strconv.FormatInt(from, 10) {
			t.Fatalf("a resuming hello has id %s, want the resume point %d", ev.id, from)
		}
		p := st.next(time.Second, false)
		c := st.next(time.Second, false)
		pid, _ := strconv.ParseInt(p.id, 10, 64)
		cid, _ := strconv.ParseInt(c.id, 10, 64)
		if p.name != wire.EventPolicy || c.name != wire.EventCust || !(from < pid && pid < cid && cid <= latest) ||
			!strings.Contains(p.data, fmt.Sprintf(`"version":%d`, v)) || !strings.Contains(c.data, `"id":"dave"`) {
			t.Fatalf("replay %+v %+v", p, c)
		}
		// Then live.
		code, _ := f.do(http.MethodPatch, custPath("production", "dave"), f.sdk, map[string]any{"label": "D" + how.query})
		if code != 200 {
			t.Fatal("patch")
		}
		if ev := st.next(time.Second, false); ev.name != wire.EventCust || !strings.Contains(ev.data, `"id":"dave"`) {
			t.Fatalf("live after replay %+v", ev)
		}
		latest = f.latestChange()
	}
	// A cursor past the feed's end replays nothing and resumes from the end.
	st := openStream(t, ts.URL, f.sdk, "?cursor=999999999")
	if ev := st.next(2*time.Second, false); ev.name != wire.EventHello || ev.id != strconv.FormatInt(latest, 10) {
		t.Fatalf("hello %+v", ev)
	}
	f.createCustomer(f.sdk, "production", map[string]any{"id": "erin"})
	if ev := st.next(time.Second, false); !strings.Contains(ev.data, `"id":"erin"`) {
		t.Fatalf("after a future cursor %+v", ev)
	}
	for _, q := range []string{"?cursor=abc", "?cursor=-1"} {
		code, body := f.do(http.MethodGet, wire.PathStream+q, f.sdk, nil)
		wantProblem(t, "cursor "+q, code, body, 422, "cursor")
	}
}

func TestSyncStreamHeartbeatPollAndClose(t *testing.T) {
	f := newSyncFixture(t)
	f.srv.setStreamTimings(50*time.Millisecond, 100*time.Millisecond)
	ts := httptest.NewServer(f.srv.Handler())
	t.Cleanup(ts.Close)
	st := openStream(t, ts.URL, f.sdk, "")
	st.hello()
	if ev := st.next(time.Second, true); ev.data != "ping" {
		t.Fatalf("heartbeat %+v", ev)
	}
	// A change whose wake-up was lost arrives by the safety poll.
	id, err := store.AppendChange(context.Background(), f.pool, f.tn.tenantID, f.tn.envs["production"], "customer", "alice",
		map[string]any{"op": "upsert", "revision": 9})
	if err != nil {
		t.Fatal(err)
	}
	ev := st.next(time.Second, false)
	if ev.id != strconv.FormatInt(id, 10) || ev.name != wire.EventCust || !strings.Contains(ev.data, `"revision":9`) {
		t.Fatalf("polled event %+v", ev)
	}
	// Close ends every stream, so a graceful shutdown does not wait on them.
	second := openStream(t, ts.URL, f.sdk, "")
	second.hello()
	start := time.Now()
	if err := f.srv.Close(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*sseClient{st, second} {
		select {
		case <-c.done:
		case <-time.After(time.Second):
			t.Fatal("a stream outlived Server.Close")
		}
	}
	t.Logf("streams ended %s after Close", time.Since(start))
	shutdown, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := ts.Config.Shutdown(shutdown); err != nil && !errors.Is(err, http.ErrServerClosed) {
		t.Fatalf("shutdown: %v", err)
	}
}

func TestSyncStreamRedisFanOut(t *testing.T) {
	u := os.Getenv("LIMITR_TEST_REDIS_URL")
	if u == "" {
		t.Skip("LIMITR_TEST_REDIS_URL is not set")
	}
	opts, err := redis.ParseURL(u)
	if err != nil {
		t.Fatal(err)
	}
	_, pool := pgtest.NewMigrated(t)
	replica := func() *Server {
		rdb := redis.NewClient(opts)
		t.Cleanup(func() { _ = rdb.Close() })
		if err := rdb.Ping(context.Background()).Err(); err != nil {
			t.Skipf("redis: %v", err)
		}
		srv, err := New(Config{OperatorToken: "op"}, Deps{Pool: pool, Redis: rdb, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = srv.Close() })
		srv.setStreamTimings(time.Hour, time.Hour) // only Redis can deliver
		return srv
	}
	a, b := replica(), replica()
	f := newSyncFixtureOn(t, &custHarness{t: t, srv: b, pool: pool})
	ts := httptest.NewServer(a.Handler())
	t.Cleanup(ts.Close)
	st := openStream(t, ts.URL, f.sdk, "")
	st2 := openStream(t, ts.URL, f.sdk, "") // shares replica a's subscription
	st.hello()
	st2.hello()
	time.Sleep(100 * time.Millisecond) // SUBSCRIBE is sent, not confirmed

	v := f.publishJSON(f.tn, "production", changedPolicy(t)) // through replica b
	for _, c := range []*sseClient{st, st2} {
		ev := c.next(time.Second, false)
		if ev.name != wire.EventPolicy || !strings.Contains(ev.data, fmt.Sprintf(`"version":%d`, v)) {
			t.Fatalf("policy over Redis %+v", ev)
		}
	}
	f.createCustomer(f.sdk, "production", map[string]any{"id": "zed"})
	for _, c := range []*sseClient{st, st2} {
		if ev := c.next(time.Second, false); ev.name != wire.EventCust || !strings.Contains(ev.data, `"id":"zed"`) {
			t.Fatalf("customer over Redis %+v", ev)
		}
	}
	// Usage commits wake the workers over Redis.
	woke := a.bus.Subscribe(t.Context(), wire.ChannelUsage)
	time.Sleep(100 * time.Millisecond)
	f.ack(f.usage(f.sdk, batch("web-1", 1, delta("alice", "ai-chat-input", "1")), true))
	select {
	case <-woke:
	case <-time.After(time.Second):
		t.Fatal("no usage wake-up over Redis")
	}
}

// ---- decoding, without a database ----

func FuzzUsageBody(f *testing.F) {
	good, _ := json.Marshal(batch("web-1", 1, delta("alice", "ai-chat-input", "1.5")))
	f.Add(good, false)
	f.Add(gzipBytes(f, good), true)
	f.Add([]byte("not gzip"), true)
	f.Fuzz(func(t *testing.T, body []byte, gz bool) {
		req := httptest.NewRequest(http.MethodPost, wire.PathUsage, bytes.NewReader(body))
		if gz {
			req.Header.Set("Content-Encoding", "gzip")
		}
		raw, err := readBatchBody(req, "usage batch")
		if err == nil {
			if len(raw) > wire.MaxBatchRaw {
				t.Fatalf("read %d bytes, over the bound", len(raw))
			}
			return
		}
		var p *problem.Problem
		if !errors.As(err, &p) || p.Status < 400 || p.Status >= 500 {
			t.Fatalf("error %v is not a 4xx problem", err)
		}
	})
}

// BenchmarkSyncUsageIngest commits gzip batches of 5,000 deltas through the handler
// (no network) and reports committed deltas per second.
func BenchmarkSyncUsageIngest(b *testing.B) {
	_, pool := pgtest.NewMigrated(b)
	srv, err := New(Config{OperatorToken: "op", RateLimit: 1 << 30}, Deps{Pool: pool, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = srv.Close() })
	h := &benchHarness{b: b, srv: srv}
	admin := h.bootstrap()
	h.post("/v1/policies", admin, quickstartPolicy(b), false)
	h.post("/v1/environments/production/publish", admin, []byte(`{"version":1}`), false)
	var key struct{ Secret string }
	_ = json.Unmarshal(h.post("/v1/keys", admin, []byte(`{"kind":"sdk","environment":"production","name":"b"}`), false), &key)
	const customers, perBatch = 200, 5000
	for i := range customers {
		h.post(custPath("production"), key.Secret, fmt.Appendf(nil, `{"id":"c%d"}`, i), false)
	}
	ds := make([]wire.UsageDelta, perBatch)
	for i := range ds {
		ds[i] = delta(fmt.Sprintf("c%d", i%customers), []string{"ai-chat-input", "ai-chat-output"}[i%2], "1234.5")
	}
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		body := gzipBytes(b, mustJSON(b, batch("bench", int64(i+1), ds...)))
		if out := h.post(wire.PathUsage, key.Secret, body, true); !bytes.Contains(out, []byte(`"accepted":5000`)) {
			b.Fatalf("ingest: %s", out)
		}
	}
	b.ReportMetric(float64(b.N*perBatch)/time.Since(start).Seconds(), "deltas/s")
}

type benchHarness struct {
	b   *testing.B
	srv *Server
}

func (h *benchHarness) post(path, secret string, body []byte, gz bool) []byte {
	req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+secret)
	if gz {
		req.Header.Set("Content-Encoding", "gzip")
	}
	rec := httptest.NewRecorder()
	h.srv.Handler().ServeHTTP(rec, req)
	if rec.Code >= 300 {
		h.b.Fatalf("%s: %d %s", path, rec.Code, rec.Body.Bytes())
	}
	return rec.Body.Bytes()
}

func (h *benchHarness) bootstrap() string {
	var out store.Bootstrapped
	_ = json.Unmarshal(h.post("/v1/tenants", "op", []byte(`{"slug":"bench"}`), false), &out)
	return out.Secret
}
