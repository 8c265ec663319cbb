package api

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/limitr/limitr/internal/usage"
	"github.com/limitr/limitr/internal/wire"
)

// One unknown customer in a batch must not cost the others their usage: the known
// customers' deltas, draws and events commit, the rest are listed in the
// acknowledgement and kept for an operator. (Before: 422 for the whole batch, which
// the SDK dropped.)
func TestUsageUnknownCustomerKeepsTheRest(t *testing.T) {
	f := newSyncFixture(t)
	b := batch("web-1", 1, delta("alice", "ai-chat-input", "10"), delta("ghost", "ai-chat-input", "7"),
		delta("cus_alice", "ai-chat-output", "2"), delta("bob", "ai-chat-input", "5"), delta("ghost", "ai-chat-output", "1"))
	b.GrantDraws = []wire.GrantDraw{draw("ghost", "g1", "3"), draw("alice", "g2", "1")}
	b.Events = []wire.UsageEvent{
		{ID: "e1", Customer: "alice", Entitlement: "ai-chat-input", Units: "10", Overhead: "0", Allowed: true, At: time.Now()},
		{ID: "e2", Customer: "ghost", Entitlement: "ai-chat-input", Units: "7", Overhead: "0", Allowed: true, At: time.Now()},
	}
	ack := f.ack(f.usage(f.sdk, b, true))
	if ack.Duplicate || ack.Accepted != 3 {
		t.Fatalf("ack = %+v, want 3 accepted", ack)
	}
	want := []wire.Unattributed{
		{Kind: wire.RecordDelta, Index: 1, Customer: "ghost", Reason: wire.ReasonUnknownCustomer},
		{Kind: wire.RecordDelta, Index: 4, Customer: "ghost", Reason: wire.ReasonUnknownCustomer},
		{Kind: wire.RecordGrantDraw, Index: 0, Customer: "ghost", Reason: wire.ReasonUnknownCustomer},
		{Kind: wire.RecordEvent, Index: 1, Customer: "ghost", Reason: wire.ReasonUnknownCustomer},
	}
	if len(ack.Unattributed) != len(want) {
		t.Fatalf("unattributed = %+v", ack.Unattributed)
	}
	for i := range want {
		if ack.Unattributed[i] != want[i] {
			t.Fatalf("unattributed[%d] = %+v, want %+v", i, ack.Unattributed[i], want[i])
		}
	}
	// Known customers' usage is committed under their canonical id.
	if n := f.count(`select count(*) from usage_deltas where customer_id = 'alice'`); n != 2 {
		t.Fatalf("alice's deltas: %d", n)
	}
	if n := f.count(`select count(*) from usage_deltas where customer_id = 'bob'`); n != 1 {
		t.Fatalf("bob's deltas: %d", n)
	}
	if n := f.count(`select count(*) from usage_deltas where customer_id = 'ghost'`); n != 0 {
		t.Fatalf("ghost's deltas were attributed: %d", n)
	}
	if n := f.count(`select count(*) from grant_draw_totals`); n != 1 {
		t.Fatalf("grant draws: %d", n)
	}
	if n := f.count(`select count(*) from usage_events`); n != 1 {
		t.Fatalf("events: %d", n)
	}
	// The rest is kept, with the record as the SDK sent it.
	if n := f.count(`select count(*) from unattributed_usage`); n != 4 {
		t.Fatalf("unattributed rows: %d", n)
	}
	code, body := f.do(http.MethodGet, "/v1/environments/production/usage/unattributed", f.tn.secret, nil)
	if code != http.StatusOK {
		t.Fatalf("list: %d %s", code, body)
	}
	var page list[usage.UnattributedRecord]
	if err := json.Unmarshal(body, &page); err != nil || len(page.Data) != 4 {
		t.Fatalf("list: %v %s", err, body)
	}
	newest := page.Data[0] // newest first: the event
	var rec wire.UsageEvent
	if err := json.Unmarshal(newest.Record, &rec); err != nil || newest.Kind != wire.RecordEvent || rec.ID != "e2" ||
		newest.InstanceID != "web-1" || newest.Sequence != 1 {
		t.Fatalf("newest unattributed = %+v (%v)", newest, err)
	}
	// Paging.
	code, body = f.do(http.MethodGet, "/v1/environments/production/usage/unattributed?limit=3", f.tn.secret, nil)
	page = list[usage.UnattributedRecord]{}
	_ = json.Unmarshal(body, &page)
	if code != http.StatusOK || len(page.Data) != 3 || page.NextCursor == "" {
		t.Fatalf("page 1: %d %s", code, body)
	}
	code, body = f.do(http.MethodGet, "/v1/environments/production/usage/unattributed?limit=3&cursor="+page.NextCursor, f.tn.secret, nil)
	page = list[usage.UnattributedRecord]{}
	_ = json.Unmarshal(body, &page)
	if code != http.StatusOK || len(page.Data) != 1 || page.NextCursor != "" {
		t.Fatalf("page 2: %d %s", code, body)
	}
	// Another environment sees none of it; SDK keys cannot list.
	code, body = f.do(http.MethodGet, "/v1/environments/staging/usage/unattributed", f.tn.secret, nil)
	page = list[usage.UnattributedRecord]{}
	_ = json.Unmarshal(body, &page)
	if code != http.StatusOK || len(page.Data) != 0 {
		t.Fatalf("staging: %d %s", code, body)
	}
	code, body = f.do(http.MethodGet, "/v1/environments/production/usage/unattributed", f.sdk, nil)
	wantProblem(t, "sdk key lists unattributed", code, body, http.StatusForbidden, "")

	// A retry is a duplicate and keeps nothing twice.
	again := f.ack(f.usage(f.sdk, b, true))
	if !again.Duplicate || len(again.Unattributed) != 0 {
		t.Fatalf("retry ack = %+v", again)
	}
	if n := f.count(`select count(*) from unattributed_usage`); n != 4 {
		t.Fatalf("a retry kept unattributed records again: %d", n)
	}
	if n := f.count(`select count(*) from usage_deltas`); n != 3 {
		t.Fatalf("a retry wrote deltas again: %d", n)
	}
	// A batch naming only unknown customers is committed too (its sequence is used).
	only := f.ack(f.usage(f.sdk, batch("web-1", 2, delta("ghost", "ai-chat-input", "1")), true))
	if only.Duplicate || only.Accepted != 0 || len(only.Unattributed) != 1 {
		t.Fatalf("all-unknown ack = %+v", only)
	}
}

// A customer deleted and created again under the same id is a new customer: its
// hydration starts at zero, and usage recorded for the old one (stamped with the old
// creation time, or a period that started before the new one existed) is not counted
// against it. The old usage stays, for billing. (Before: hydration brought the old
// meters back.)
func TestUsageRecreatedCustomerStartsAtZero(t *testing.T) {
	f := newSyncFixture(t)
	f.createCustomer(f.tn.secret, "production", map[string]any{"id": "carol"})
	old := f.customerRecord("carol")
	d := delta("carol", "ai-chat-input", "500")
	d.CustomerCreatedAt = &old.CreatedAt
	f.ack(f.usage(f.sdk, batch("web-1", 1, d), true))
	if units := f.stateUnits("carol", "ai-chat-input"); units != "500" {
		t.Fatalf("before delete: %q", units)
	}

	if code, body := f.do(http.MethodDelete, custPath("production", "carol"), f.tn.secret, nil); code != http.StatusNoContent {
		t.Fatalf("delete: %d %s", code, body)
	}
	f.createCustomer(f.tn.secret, "production", map[string]any{"id": "carol"})
	fresh := f.customerRecord("carol")
	if units := f.stateUnits("carol", "ai-chat-input"); units != "" {
		t.Fatalf("a re-created customer inherited %q units", units)
	}
	// The deleted customer's record and usage are kept.
	if n := f.count(`select count(*) from deleted_customers where id = 'carol'`); n != 1 {
		t.Fatalf("deleted_customers rows: %d", n)
	}
	if n := f.count(`select count(*) from usage_deltas where customer_id = 'carol'`); n != 1 {
		t.Fatalf("old usage rows: %d", n)
	}

	// Late usage of the old customer (an instance that had not heard of the delete)
	// is not the new one's; usage stamped with the new one's creation is.
	late := delta("carol", "ai-chat-input", "70")
	late.CustomerCreatedAt = &old.CreatedAt
	now := delta("carol", "ai-chat-input", "3")
	now.CustomerCreatedAt = &fresh.CreatedAt
	unstamped := delta("carol", "ai-chat-input", "4") // an SDK that does not stamp: attributed
	ancient := delta("carol", "ai-chat-input", "9")
	ancient.PeriodStart = time.Date(1, 1, 1, 0, 0, 1, 0, time.UTC) // older than any meter of the new customer
	ack := f.ack(f.usage(f.sdk, batch("web-2", 1, late, now, unstamped, ancient), true))
	if ack.Accepted != 2 || len(ack.Unattributed) != 2 ||
		ack.Unattributed[0] != (wire.Unattributed{Kind: wire.RecordDelta, Index: 0, Customer: "carol", Reason: wire.ReasonCustomerRecreated}) ||
		ack.Unattributed[1] != (wire.Unattributed{Kind: wire.RecordDelta, Index: 3, Customer: "carol", Reason: wire.ReasonCustomerRecreated}) {
		t.Fatalf("ack = %+v", ack)
	}
	if units := f.stateUnits("carol", "ai-chat-input"); units != "7" {
		t.Fatalf("new customer's units = %q, want 7", units)
	}
	// A snapshot's creation time loses sub-millisecond precision: still the same customer.
	ms := fresh.CreatedAt.Truncate(time.Millisecond)
	trunc := delta("carol", "ai-chat-input", "1")
	trunc.CustomerCreatedAt = &ms
	if ack := f.ack(f.usage(f.sdk, batch("web-3", 1, trunc), true)); ack.Accepted != 1 {
		t.Fatalf("millisecond creation time: %+v", ack)
	}
}

func (f *syncFixture) customerRecord(id string) wire.Customer {
	f.t.Helper()
	code, body := f.do(http.MethodGet, custPath("production", id), f.tn.secret, nil)
	if code != http.StatusOK {
		f.t.Fatalf("get %s: %d %s", id, code, body)
	}
	var c wire.Customer
	if err := json.Unmarshal(body, &c); err != nil {
		f.t.Fatal(err)
	}
	return c
}

// stateUnits is the newest committed total of a meter in the customer's hydration
// state ("" when it has none).
func (f *syncFixture) stateUnits(id, ent string) string {
	f.t.Helper()
	code, body := f.do(http.MethodGet, wire.PathCustomer+id+"/state", f.sdk, nil)
	if code != http.StatusOK {
		f.t.Fatalf("state %s: %d %s", id, code, body)
	}
	var st wire.CustomerState
	if err := json.Unmarshal(body, &st); err != nil {
		f.t.Fatal(err)
	}
	if ts := st.Meters[ent]; len(ts) > 0 {
		return ts[0].Units
	}
	return ""
}
