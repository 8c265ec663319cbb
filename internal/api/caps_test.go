package api

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/limitr/limitr/internal/store"
	"github.com/limitr/limitr/internal/wire"
)

var capKeyRE = regexp.MustCompile(`^cap_[0-9a-f]{24}$`)

func decodeCap(t *testing.T, body []byte) wire.CustomerCap {
	t.Helper()
	var k wire.CustomerCap
	if err := json.Unmarshal(body, &k); err != nil {
		t.Fatalf("decode cap: %v: %s", err, body)
	}
	return k
}

func capPath(cust string, parts ...string) string {
	return custPath("production", append([]string{cust, "caps"}, parts...)...)
}

func capUse(cust, key, units string, start time.Time) wire.CapUse {
	return wire.CapUse{Customer: cust, CapKey: key, PeriodStart: start, Units: units}
}

// lastChange decodes the newest change-feed entry of acme's production.
func (f *syncFixture) lastChange() (customerChange, string) {
	f.t.Helper()
	feed, err := store.ChangesSince(context.Background(), f.pool, f.tn.tenantID, f.tn.envs["production"], 0, 1000)
	if err != nil || len(feed) == 0 {
		f.t.Fatalf("feed: %v", err)
	}
	var ch customerChange
	if err := json.Unmarshal(feed[len(feed)-1].Payload, &ch); err != nil {
		f.t.Fatal(err)
	}
	return ch, feed[len(feed)-1].Subject
}

func TestCustomerCapPutGetListResetRemove(t *testing.T) {
	f := newSyncFixture(t)
	_, sdkID := f.sdkKey(f.tn, "production")
	sdk2, sdk2ID := f.sdkKey(f.tn, "production")
	_ = sdkID

	code, body := f.do(http.MethodGet, capPath("alice"), f.tn.secret, nil)
	if code != 200 || strings.TrimSpace(string(body)) != `{"data":[]}` {
		t.Fatalf("list before any cap: %d %s", code, body)
	}
	code, body = f.do(http.MethodGet, capPath("alice", "monthly"), f.tn.secret, nil)
	wantProblem(t, "get before any cap", code, body, 404, "")
	if c := f.customerRecord("alice"); c.Caps != nil {
		t.Fatalf("a customer without caps has %+v", c.Caps)
	}
	revBefore := f.customerRecord("alice").Revision

	// Create (by alt id): 201, a new key, nothing consumed.
	feedBefore := len(f.feed(f.tn))
	code, body = f.do(http.MethodPut, capPath("cus_alice", "monthly"), f.tn.secret, map[string]any{"value": "100.50", "credit": "ai-token",
		"resets": true, "reset_inc": "30days", "scope": []string{"ai-chat-input"}, "expires_at": "2999-01-01T00:00:00Z", "ignore_grants": true})
	if code != http.StatusCreated {
		t.Fatalf("put: %d %s", code, body)
	}
	k1 := decodeCap(t, body)
	if !capKeyRE.MatchString(k1.Key) || k1.ID != "monthly" || k1.Value != "100.5" || k1.Credit != "ai-token" || !k1.Resets || k1.ResetInc != "30days" ||
		!k1.IgnoreGrants || k1.OverageOnly || len(k1.Scope) != 1 || k1.Scope[0] != "ai-chat-input" || k1.SharedWith == nil || len(k1.SharedWith) != 0 ||
		k1.ExpiresAt == nil || k1.ExpiresAt.Year() != 2999 || k1.CreatedAt.IsZero() || !k1.ResetAt.Equal(k1.CreatedAt) || k1.Usage == nil || len(k1.Usage) != 0 {
		t.Fatalf("created cap = %s", body)
	}
	if !strings.Contains(string(body), `"usage":[]`) || !strings.Contains(string(body), `"value":100.5`) {
		t.Fatalf("created cap JSON = %s", body)
	}
	ch, subject := f.lastChange()
	if len(f.feed(f.tn)) != feedBefore+1 || ch.Op != opCap || subject != "alice" || ch.Removed || ch.Customer == nil ||
		len(ch.Customer.Caps) != 1 || ch.Customer.Caps[0].Key != k1.Key || ch.Revision != revBefore+1 {
		t.Fatalf("cap feed = %+v", ch)
	}
	if a := f.lastAudit(f.tn); a.Action != "customer.cap.set" || len(a.Before) != 0 || !strings.Contains(string(a.After), k1.Key) || a.ResourceID != "alice" {
		t.Fatalf("cap audit = %+v", a)
	}

	// Consumption of the key, committed by a batch.
	b := batch("web-1", 1)
	b.Deltas = []wire.UsageDelta{}
	b.CapUses = []wire.CapUse{capUse("alice", k1.Key, "7.25", k1.ResetAt)}
	f.ack(f.usage(f.sdk, b, false))

	// Replace (an SDK key may): 200, the same key, the consumption kept.
	code, body = f.do(http.MethodPut, capPath("alice", "monthly"), sdk2, map[string]any{"value": 250, "hard_trailing": true,
		"shared": true, "shared_with": []string{"bob"}})
	k2 := decodeCap(t, body)
	if code != 200 || k2.Key != k1.Key || k2.Value != "250" || k2.Credit != "rune" || !k2.HardTrailing || k2.IgnoreGrants || k2.Resets ||
		k2.ResetInc != "" || k2.ExpiresAt != nil || !k2.CreatedAt.Equal(k1.CreatedAt) || !k2.ResetAt.Equal(k1.ResetAt) ||
		len(k2.Usage) != 1 || k2.Usage[0].Units != "7.25" || !k2.Usage[0].PeriodStart.Equal(k1.ResetAt) || len(k2.SharedWith) != 1 {
		t.Fatalf("replaced cap: %d %s", code, body)
	}
	if a := f.lastAudit(f.tn); a.Action != "customer.cap.set" || decodeCap(t, a.Before).Credit != "ai-token" || !decodeCap(t, a.After).HardTrailing {
		t.Fatalf("replace audit = %s / %s", a.Before, a.After)
	}
	var setBy string
	if err := f.pool.QueryRow(t.Context(), `select set_by::text from customer_caps where cap_key = $1`, k1.Key).Scan(&setBy); err != nil || setBy != sdk2ID.String() {
		t.Fatalf("set_by = %q, %v", setBy, err)
	}

	// A second cap; the list and the customer record carry both, by id.
	code, body = f.do(http.MethodPut, capPath("alice", "daily"), f.tn.secret, map[string]any{"value": "0", "reset_sch": "weekly:mon"})
	kd := decodeCap(t, body)
	if code != 201 || kd.Key == k1.Key || !kd.Resets || kd.ResetSch != "weekly:mon" || kd.Value != "0" {
		t.Fatalf("second cap: %d %s", code, body)
	}
	code, body = f.do(http.MethodGet, capPath("alice"), f.sdk, nil)
	var caps list[wire.CustomerCap]
	if err := json.Unmarshal(body, &caps); code != 200 || err != nil || len(caps.Data) != 2 || caps.Data[0].ID != "daily" || caps.Data[1].ID != "monthly" ||
		caps.Data[1].Usage[0].Units != "7.25" {
		t.Fatalf("list: %d %s", code, body)
	}
	c := f.customerRecord("alice")
	if len(c.Caps) != 2 || c.Caps[1].Key != k1.Key || c.Revision != revBefore+3 {
		t.Fatalf("customer = %+v", c)
	}
	code, body = f.do(http.MethodGet, custPath("production"), f.tn.secret, nil)
	if code != 200 || !strings.Contains(string(body), k1.Key) || !strings.Contains(string(body), kd.Key) {
		t.Fatalf("customer list lacks the caps: %s", body)
	}
	code, body = f.do(http.MethodGet, capPath("cus_alice", "monthly"), f.tn.secret, nil)
	if got := decodeCap(t, body); code != 200 || got.Key != k1.Key || len(got.Usage) != 1 {
		t.Fatalf("get: %d %s", code, body)
	}

	// Reset: a new key, its first period now, nothing consumed; the old key's use is kept.
	time.Sleep(2 * time.Millisecond)
	code, body = f.do(http.MethodPost, capPath("alice", "monthly", "reset"), f.tn.secret, nil)
	kr := decodeCap(t, body)
	if code != 200 || !capKeyRE.MatchString(kr.Key) || kr.Key == k1.Key || len(kr.Usage) != 0 || !kr.ResetAt.After(k1.ResetAt) ||
		!kr.CreatedAt.Equal(k1.CreatedAt) || kr.Value != "250" || !kr.HardTrailing {
		t.Fatalf("reset: %d %s", code, body)
	}
	ch, _ = f.lastChange()
	if ch.Op != opCap || ch.Removed || ch.Customer == nil || ch.Customer.Caps[1].Key != kr.Key {
		t.Fatalf("reset feed = %+v", ch)
	}
	if a := f.lastAudit(f.tn); a.Action != "customer.cap.reset" || !strings.Contains(string(a.Before), k1.Key) || !strings.Contains(string(a.After), kr.Key) {
		t.Fatalf("reset audit = %+v", a)
	}
	if n := f.count(`select count(*) from cap_usage_totals where cap_key = $1`, k1.Key); n != 1 {
		t.Fatalf("the old key's use: %d rows", n)
	}
	code, body = f.do(http.MethodPost, capPath("alice", "monthly", "reset"), f.tn.secret, `{"x":1}`)
	wantProblem(t, "reset with a body", code, body, 422, "x")

	// Remove.
	code, body = f.do(http.MethodDelete, capPath("alice", "monthly"), f.sdk, nil)
	if code != http.StatusNoContent {
		t.Fatalf("delete: %d %s", code, body)
	}
	ch, _ = f.lastChange()
	if ch.Op != opCap || !ch.Removed || ch.Customer == nil || len(ch.Customer.Caps) != 1 || ch.Customer.Caps[0].ID != "daily" {
		t.Fatalf("remove feed = %+v", ch)
	}
	if a := f.lastAudit(f.tn); a.Action != "customer.cap.delete" || len(a.After) != 0 || !strings.Contains(string(a.Before), kr.Key) {
		t.Fatalf("remove audit = %+v", a)
	}
	for _, m := range []string{http.MethodGet, http.MethodDelete} {
		code, body = f.do(m, capPath("alice", "monthly"), f.tn.secret, nil)
		wantProblem(t, m+" after delete", code, body, 404, "")
	}
	code, body = f.do(http.MethodPost, capPath("alice", "monthly", "reset"), f.tn.secret, nil)
	wantProblem(t, "reset after delete", code, body, 404, "")

	// Unknown customers, and another tenant's key, are 404s.
	for _, r := range []struct{ method, path string }{{http.MethodGet, capPath("ghost")}, {http.MethodGet, capPath("ghost", "daily")},
		{http.MethodPut, capPath("ghost", "daily")}, {http.MethodDelete, capPath("ghost", "daily")}, {http.MethodPost, capPath("ghost", "daily", "reset")}} {
		var in any
		if r.method == http.MethodPut {
			in = map[string]any{"value": 1}
		}
		code, body = f.do(r.method, r.path, f.tn.secret, in)
		wantProblem(t, r.method+" "+r.path, code, body, 404, "")
	}
	code, body = f.do(http.MethodGet, capPath("alice", "daily"), f.other.secret, nil)
	wantProblem(t, "another tenant", code, body, 404, "")

	// Deleting the customer takes its caps with it; what was consumed stays.
	if code, _ := f.do(http.MethodDelete, custPath("production", "alice"), f.tn.secret, nil); code != 204 {
		t.Fatal("delete customer")
	}
	if n := f.count(`select count(*) from customer_caps`); n != 0 {
		t.Fatalf("%d cap rows after the customer's deletion", n)
	}
	if n := f.count(`select count(*) from cap_usage_totals`); n != 1 {
		t.Fatalf("%d cap usage rows after the customer's deletion, want 1", n)
	}
}

func TestCustomerCapValidation(t *testing.T) {
	f := newSyncFixture(t)
	feedBefore := len(f.feed(f.tn))
	for _, tc := range []struct {
		cap  string
		body any
		code int
		path string
	}{
		{"c", map[string]any{}, 422, "value"},
		{"c", map[string]any{"value": nil}, 422, "value"},
		{"c", map[string]any{"value": -1}, 422, "value"},
		{"c", map[string]any{"value": "-0.5"}, 422, "value"},
		{"c", map[string]any{"value": "1e3"}, 422, "value"},
		{"c", `{"value": "abc"}`, 400, ""},
		{"c", map[string]any{"value": 1, "credit": "gold"}, 422, "credit"},
		{"c", map[string]any{"value": 1, "reset_inc": "soon"}, 422, "reset_inc"},
		{"c", map[string]any{"value": 1, "reset_inc": "0day"}, 422, "reset_inc"},
		{"c", map[string]any{"value": 1, "reset_sch": "fortnightly"}, 422, "reset_sch"},
		{"c", map[string]any{"value": 1, "reset_inc": "1day", "reset_sch": "monthly"}, 422, "reset_sch"},
		{"c", map[string]any{"value": 1, "expires_at": "tomorrow"}, 422, "expires_at"},
		{"c", map[string]any{"value": 1, "scope": []string{""}}, 422, "scope[0]"},
		{"c", map[string]any{"value": 1, "shared_with": []string{"ok", "a\tb"}}, 422, "shared_with[1]"},
		{"c", map[string]any{"value": 1, "code": "x"}, 422, "code"},
		{strings.Repeat("k", 129), map[string]any{"value": 1}, 422, "cap"},
		{"a\tb", map[string]any{"value": 1}, 422, "cap"},
	} {
		code, body := f.do(http.MethodPut, capPath("alice", tc.cap), f.tn.secret, tc.body)
		wantProblem(t, "put "+tc.cap+" "+string(mustJSON(t, tc.body)), code, body, tc.code, tc.path)
	}
	// Every problem at once, each naming its field.
	code, body := f.do(http.MethodPut, capPath("alice", "c"), f.tn.secret, map[string]any{"value": "-1", "credit": "gold",
		"reset_inc": "x", "reset_sch": "y", "expires_at": "z"})
	if p := wantProblem(t, "every problem", code, body, 422, "credit"); len(p.Errors) != 6 {
		t.Fatalf("problems: %s", body)
	}
	if len(f.feed(f.tn)) != feedBefore || f.count(`select count(*) from customer_caps`) != 0 {
		t.Fatal("failed puts wrote rows")
	}
	// The limits themselves are fine: a 128-byte id, the policy's credits and exchange
	// currencies, usd, a zero ceiling.
	for i, body := range []map[string]any{{"value": 0}, {"value": "1", "credit": "usd"}, {"value": 2, "credit": "claude-sonnet-4-input"},
		{"value": 3, "credit": "ai-token", "reset_sch": "monthly:1"}} {
		id := strings.Repeat("k", 128)
		if i > 0 {
			id = "ok-" + string(rune('a'+i))
		}
		if code, b := f.do(http.MethodPut, capPath("alice", id), f.tn.secret, body); code != 201 {
			t.Errorf("put %v: %d %s", body, code, b)
		}
	}
}

func TestSyncCapUsesCommitOnceAndHydrate(t *testing.T) {
	f := newSyncFixture(t)
	sdk2, _ := f.sdkKey(f.tn, "production")
	code, body := f.do(http.MethodPut, capPath("alice", "spend"), f.tn.secret, map[string]any{"value": "10", "resets": true})
	if code != 201 {
		t.Fatalf("put: %d %s", code, body)
	}
	k := decodeCap(t, body)
	p1 := k.ResetAt
	p0, p2 := p1.Add(-60*24*time.Hour), p1.Add(-30*24*time.Hour)

	// Instance 1: uses by alt id and id, an older period, and an unknown customer's.
	b1 := batch("web-1", 1)
	b1.Deltas = []wire.UsageDelta{}
	b1.CapUses = []wire.CapUse{capUse("cus_alice", k.Key, "2.5", p1), capUse("alice", k.Key, "0.25", p1), capUse("alice", k.Key, "4", p2),
		capUse("alice", k.Key, "9", p0), capUse("ghost", "cap_ghost", "1", p1)}
	a := f.ack(f.usage(f.sdk, b1, true))
	if a.Duplicate || len(a.Unattributed) != 1 || a.Unattributed[0] != (wire.Unattributed{Kind: wire.RecordCapUse, Index: 4,
		Customer: "ghost", Reason: wire.ReasonUnknownCustomer}) {
		t.Fatalf("ack %+v", a)
	}
	// The same batch again is a duplicate and adds nothing.
	if a := f.ack(f.usage(f.sdk, b1, false)); !a.Duplicate {
		t.Fatalf("retry ack %+v", a)
	}
	// Instance 2 consumes too (and gives some back: follow_decrements).
	b2 := batch("web-2", 1, delta("alice", "ai-chat-input", "1"))
	b2.CapUses = []wire.CapUse{capUse("alice", k.Key, "1.5", p1), capUse("alice", k.Key, "-0.25", p1)}
	f.ack(f.usage(sdk2, b2, false))

	want := func(what string, got wire.CustomerCap) {
		t.Helper()
		if got.Key != k.Key || len(got.Usage) != 2 || got.Usage[0].Units != "4" || !got.Usage[0].PeriodStart.Equal(p1) ||
			got.Usage[1].Units != "4" || !got.Usage[1].PeriodStart.Equal(p2) {
			t.Fatalf("%s: usage %+v, want 4 in %s then 4 in %s", what, got.Usage, p1, p2)
		}
	}
	code, body = f.do(http.MethodGet, capPath("alice", "spend"), f.tn.secret, nil)
	if code != 200 {
		t.Fatalf("get: %d %s", code, body)
	}
	want("GET cap", decodeCap(t, body))
	_, body = f.do(http.MethodGet, custPath("production", "alice"), f.tn.secret, nil)
	c := decodeCustomer(t, body)
	if len(c.Caps) != 1 {
		t.Fatalf("customer = %s", body)
	}
	want("GET customer", c.Caps[0])
	// Hydration carries the caps with the fleet's committed use.
	code, body = f.do(http.MethodGet, wire.PathCustomer+"cus_alice/state", f.sdk, nil)
	var st wire.CustomerState
	if code != 200 || json.Unmarshal(body, &st) != nil {
		t.Fatalf("state: %d %s", code, body)
	}
	var rec wire.Customer
	if err := json.Unmarshal(st.Customer, &rec); err != nil || len(rec.Caps) != 1 {
		t.Fatalf("state customer = %s", st.Customer)
	}
	want("state", rec.Caps[0])
	// The unknown customer's use is kept for an operator.
	if n := f.count(`select count(*) from unattributed_usage where kind = 'cap_use' and customer = 'ghost'`); n != 1 {
		t.Fatalf("%d unattributed cap uses, want 1", n)
	}
	code, body = f.do(http.MethodGet, "/v1/environments/production/usage/unattributed", f.tn.secret, nil)
	if code != 200 || !strings.Contains(string(body), `"kind":"cap_use"`) || !strings.Contains(string(body), `"cap_ghost"`) {
		t.Fatalf("unattributed list: %d %s", code, body)
	}

	// After a reset, late use of the old key is committed under it, not the new one's.
	code, body = f.do(http.MethodPost, capPath("alice", "spend", "reset"), f.tn.secret, nil)
	kr := decodeCap(t, body)
	if code != 200 || len(kr.Usage) != 0 {
		t.Fatalf("reset: %d %s", code, body)
	}
	b3 := batch("web-1", 2)
	b3.Deltas = []wire.UsageDelta{}
	b3.CapUses = []wire.CapUse{capUse("alice", k.Key, "1", p1), capUse("alice", kr.Key, "0.5", kr.ResetAt)}
	f.ack(f.usage(f.sdk, b3, false))
	_, body = f.do(http.MethodGet, capPath("alice", "spend"), f.tn.secret, nil)
	if got := decodeCap(t, body); len(got.Usage) != 1 || got.Usage[0].Units != "0.5" {
		t.Fatalf("new key after uses: %s", body)
	}
	var old string
	if err := f.pool.QueryRow(t.Context(), `select units::text from cap_usage_totals where cap_key = $1 and period_start = $2`, k.Key, p1).Scan(&old); err != nil ||
		!strings.HasPrefix(old, "5") || strings.Trim(strings.TrimPrefix(old, "5"), ".0") != "" {
		t.Fatalf("old key's use = %q, %v", old, err)
	}

	// Use stamped with an earlier incarnation of the customer is not the new one's.
	created := time.Now().Add(-time.Hour)
	b4 := batch("web-1", 3)
	b4.Deltas = []wire.UsageDelta{}
	u := capUse("alice", kr.Key, "1", kr.ResetAt)
	u.CustomerCreatedAt = &created
	b4.CapUses = []wire.CapUse{u}
	if a := f.ack(f.usage(f.sdk, b4, false)); len(a.Unattributed) != 1 || a.Unattributed[0].Reason != wire.ReasonCustomerRecreated {
		t.Fatalf("recreated ack %+v", a)
	}
	// Another tenant's key naming alice never reaches tenant acme's cap.
	b5 := batch("evil-1", 1)
	b5.Deltas = []wire.UsageDelta{}
	b5.CapUses = []wire.CapUse{capUse("alice", kr.Key, "1", kr.ResetAt)}
	if a := f.ack(f.usage(f.otherSDK, b5, false)); len(a.Unattributed) != 1 {
		t.Fatalf("other tenant ack %+v", a)
	}
	_, body = f.do(http.MethodGet, capPath("alice", "spend"), f.tn.secret, nil)
	if got := decodeCap(t, body); got.Usage[0].Units != "0.5" {
		t.Fatalf("cap after other tenants' uses: %s", body)
	}
}

func TestSyncCapUsesValidation(t *testing.T) {
	f := newSyncFixture(t)
	start := thisMonth()
	b := batch("web-1", 1)
	b.CapUses = []wire.CapUse{capUse("alice", "cap_a", "1", start), capUse("", "cap_a", "1", start), capUse("alice", "", "1", start),
		capUse("alice", strings.Repeat("k", 129), "1", start), capUse("alice", "cap_a", "1", time.Time{}), capUse("alice", "cap_a", "ten", start),
		capUse("alice", "cap_a", "", start)}
	code, body := f.usage(f.sdk, b, false)
	p := wantProblem(t, "bad cap uses", code, body, 422, "cap_uses[1].customer")
	for _, path := range []string{"cap_uses[2].cap_key", "cap_uses[3].cap_key", "cap_uses[4].period_start", "cap_uses[5].units", "cap_uses[6].units"} {
		found := false
		for _, e := range p.Errors {
			found = found || e.Path == path
		}
		if !found {
			t.Errorf("the problem does not name %s: %s", path, body)
		}
	}
	if len(p.Errors) != 6 {
		t.Errorf("%d problems, want 6: %s", len(p.Errors), body)
	}
	many := batch("web-1", 1)
	many.CapUses = make([]wire.CapUse, wire.MaxDeltas+1)
	for i := range many.CapUses {
		many.CapUses[i] = capUse("alice", "cap_a", "1", start)
	}
	code, body = f.usage(f.sdk, many, true)
	wantProblem(t, "too many cap uses", code, body, 422, "cap_uses")
	if n := f.count(`select count(*) from cap_usage_totals`) + f.count(`select count(*) from usage_batches`); n != 0 {
		t.Fatalf("rejected batches wrote %d rows", n)
	}
}

// A cap's lease over HTTP: granted up to the ceiling less what was committed, a leased
// batch's cap uses committed against it, the grant echoing the cap.
func TestCapLeasesOverHTTP(t *testing.T) {
	f := newSyncFixture(t)
	code, body := f.do(http.MethodPut, capPath("alice", "spend"), f.tn.secret, map[string]any{"value": "10"})
	if code != 201 {
		t.Fatalf("put: %d %s", code, body)
	}
	k := decodeCap(t, body)
	b := batch("seed", 1)
	b.Deltas = []wire.UsageDelta{}
	b.CapUses = []wire.CapUse{capUse("alice", k.Key, "3", k.ResetAt)}
	f.ack(f.usage(f.sdk, b, false))
	ask := func(target, used string) wire.LeaseAsk {
		return wire.LeaseAsk{Customer: "cus_alice", Cap: k.Key, PeriodStart: k.ResetAt, Limit: "10", Target: target, Used: used}
	}
	code, r, body := f.lease(f.sdk, wire.LeaseRequest{InstanceID: "a", Leases: []wire.LeaseAsk{ask("5", "0")}})
	if g := r.Leases; code != 200 || len(g) != 1 || g[0].Cap != k.Key || g[0].Entitlement != "" || g[0].Granted != "5" || g[0].Available != "2" ||
		g[0].Remaining != "7" || !strings.Contains(string(body), `"cap":"`+k.Key+`"`) {
		t.Fatalf("grant: %d %s", code, body)
	}
	code, r, body = f.lease(f.sdk, wire.LeaseRequest{InstanceID: "b", Leases: []wire.LeaseAsk{ask("5", "0")}})
	if code != 200 || r.Leases[0].Granted != "2" || r.Leases[0].Available != "0" {
		t.Fatalf("b's grant: %d %s", code, body)
	}
	// a's leased batch: its 4 move from the lease to the cap's committed use.
	lb := batch("a", 1)
	lb.Deltas, lb.Leased = []wire.UsageDelta{}, true
	lb.CapUses = []wire.CapUse{capUse("alice", k.Key, "4", k.ResetAt)}
	f.ack(f.usage(f.sdk, lb, false))
	code, r, body = f.lease(f.sdk, wire.LeaseRequest{InstanceID: "a", Leases: []wire.LeaseAsk{ask("6", "4")}})
	if code != 200 || r.Leases[0].Granted != "5" || r.Leases[0].Committed != "4" || r.Leases[0].Remaining != "3" {
		t.Fatalf("a after its batch: %d %s", code, body)
	}
	// Bad asks name their fields.
	bad := ask("1", "0")
	bad.Entitlement = "ai_input"
	code, _, body = f.lease(f.sdk, wire.LeaseRequest{InstanceID: "a", Leases: []wire.LeaseAsk{bad}})
	wantProblem(t, "cap and entitlement", code, body, 422, "leases[0].entitlement")
}

func TestSyncStreamCap(t *testing.T) {
	f := newSyncFixture(t)
	f.srv.setStreamTimings(time.Hour, time.Hour) // only the bus can deliver
	ts := httptest.NewServer(f.srv.Handler())
	t.Cleanup(ts.Close)
	st := openStream(t, ts.URL, f.sdk, "")
	st.hello()

	code, body := f.do(http.MethodPut, capPath("bob", "spend"), f.tn.secret, map[string]any{"value": "3"})
	if code != 201 {
		t.Fatalf("put: %d %s", code, body)
	}
	k := decodeCap(t, body)
	b := batch("web-1", 1)
	b.Deltas = []wire.UsageDelta{}
	b.CapUses = []wire.CapUse{capUse("bob", k.Key, "1.5", k.ResetAt)}
	f.ack(f.usage(f.sdk, b, false))

	event := func(what string) (wire.CustomerChanged, wire.Customer) {
		t.Helper()
		ev := st.next(time.Second, false)
		var cc wire.CustomerChanged
		var rec wire.Customer
		if ev.name != wire.EventCust || json.Unmarshal([]byte(ev.data), &cc) != nil || cc.ID != "bob" || cc.Op != opCap ||
			json.Unmarshal(cc.Customer, &rec) != nil {
			t.Fatalf("%s event %+v", what, ev)
		}
		return cc, rec
	}
	if cc, rec := event("put"); cc.Removed || len(rec.Caps) != 1 || rec.Caps[0].Key != k.Key || rec.Caps[0].Value != "3" {
		t.Fatalf("put event record %s", cc.Customer)
	}
	// A replace carries the cap with its committed use.
	if code, _ := f.do(http.MethodPut, capPath("bob", "spend"), f.sdk, map[string]any{"value": "4"}); code != 200 {
		t.Fatalf("replace: %d", code)
	}
	if cc, rec := event("replace"); len(rec.Caps) != 1 || rec.Caps[0].Value != "4" || len(rec.Caps[0].Usage) != 1 || rec.Caps[0].Usage[0].Units != "1.5" {
		t.Fatalf("replace event record %s", cc.Customer)
	}
	if code, _ := f.do(http.MethodPost, capPath("bob", "spend", "reset"), f.sdk, nil); code != 200 {
		t.Fatalf("reset: %d", code)
	}
	if cc, rec := event("reset"); len(rec.Caps) != 1 || rec.Caps[0].Key == k.Key || len(rec.Caps[0].Usage) != 0 {
		t.Fatalf("reset event record %s", cc.Customer)
	}
	if code, _ := f.do(http.MethodDelete, capPath("bob", "spend"), f.sdk, nil); code != 204 {
		t.Fatalf("delete: %d", code)
	}
	if cc, rec := event("delete"); !cc.Removed || rec.Caps != nil || rec.ID != "bob" || strings.Contains(string(cc.Customer), `"caps"`) {
		t.Fatalf("delete event record %s", cc.Customer)
	}
}
