package api

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/limitr/limitr/internal/wire"
)

var voucherIDRE = regexp.MustCompile(`^vch_[0-9a-f]{24}$`)

func decodeVoucher(t *testing.T, body []byte) wire.CustomerVoucher {
	t.Helper()
	var v wire.CustomerVoucher
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("decode voucher: %v: %s", err, body)
	}
	return v
}

func numStr(n *json.Number) string {
	if n == nil {
		return "<absent>"
	}
	return n.String()
}

func TestCustomerVoucherSetGetReplaceRemove(t *testing.T) {
	h, tn := newFixture(t)
	sdk, sdkID := h.sdkKey(tn, "production")
	h.createCustomer(tn.secret, "production", map[string]any{"id": "u1", "alt_ids": []string{"cus_u1"}})
	vp := custPath("production", "u1", "voucher")

	code, body := h.do(http.MethodGet, vp, tn.secret, nil)
	wantProblem(t, "get before any voucher", code, body, 404, "")

	feedBefore := len(h.feed(tn))
	expires := time.Now().Add(48 * time.Hour).UTC().Truncate(time.Second)
	code, body = h.do(http.MethodPut, vp, tn.secret, map[string]any{"runes": "25.50", "expires_at": expires.Format(time.RFC3339)})
	if code != http.StatusOK {
		t.Fatalf("put: %d %s", code, body)
	}
	v1 := decodeVoucher(t, body)
	if !voucherIDRE.MatchString(v1.ID) || numStr(v1.Runes) != "25.5" || v1.Debited != "0" || numStr(v1.Balance) != "25.5" ||
		!v1.ExpiresAt.Equal(expires) || v1.SetAt.IsZero() || v1.SetBy != tn.keyID.String() {
		t.Fatalf("voucher = %s", body)
	}
	// The change feed carries op voucher with the record after the change.
	f := h.feed(tn)
	var ch customerChange
	_ = json.Unmarshal(f[len(f)-1].Payload, &ch)
	if len(f) != feedBefore+1 || ch.Op != opVoucher || ch.Customer == nil || ch.Customer.Voucher == nil || ch.Customer.Voucher.ID != v1.ID ||
		ch.Revision != 2 || ch.Removed || f[len(f)-1].Subject != "u1" {
		t.Fatalf("voucher feed = %s", f[len(f)-1].Payload)
	}
	if a := h.lastAudit(tn); a.Action != "customer.voucher.set" || len(a.Before) != 0 || !strings.Contains(string(a.After), v1.ID) {
		t.Fatalf("voucher audit = %+v", a)
	}
	// GET voucher (by alt id too), GET customer and the list carry it.
	code, body = h.do(http.MethodGet, custPath("production", "cus_u1", "voucher"), sdk, nil)
	if got := decodeVoucher(t, body); code != 200 || got.ID != v1.ID || numStr(got.Balance) != "25.5" {
		t.Fatalf("get voucher: %d %s", code, body)
	}
	_, body = h.do(http.MethodGet, custPath("production", "u1"), tn.secret, nil)
	if c := decodeCustomer(t, body); c.Voucher == nil || c.Voucher.ID != v1.ID || c.Revision != 2 {
		t.Fatalf("customer = %s", body)
	}
	_, body = h.do(http.MethodGet, custPath("production"), tn.secret, nil)
	if !strings.Contains(string(body), v1.ID) {
		t.Fatalf("list lacks the voucher: %s", body)
	}

	// Replacing (an SDK key may): a new id, no runes means no balance.
	code, body = h.do(http.MethodPut, vp, sdk, map[string]any{"expires_at": expires.Add(time.Hour).Format(time.RFC3339)})
	v2 := decodeVoucher(t, body)
	if code != 200 || v2.ID == v1.ID || v2.Runes != nil || v2.Balance != nil || v2.Debited != "0" || v2.SetBy != sdkID.String() {
		t.Fatalf("replace: %d %s", code, body)
	}
	if a := h.lastAudit(tn); !strings.Contains(string(a.Before), v1.ID) || !strings.Contains(string(a.After), v2.ID) {
		t.Fatalf("replace audit = %+v", a)
	}
	if n := h.count(`select count(*) from customer_vouchers`); n != 1 {
		t.Fatalf("%d voucher rows, want 1", n)
	}
	// Exact amounts: what was sent comes back.
	code, body = h.do(http.MethodPut, vp, tn.secret, `{"runes": 0.1000000001, "expires_at": "2999-01-01T00:00:00Z"}`)
	if v := decodeVoucher(t, body); code != 200 || numStr(v.Runes) != "0.1000000001" {
		t.Fatalf("exact runes: %d %s", code, body)
	}

	// Removing.
	code, body = h.do(http.MethodDelete, vp, tn.secret, nil)
	if code != http.StatusNoContent {
		t.Fatalf("delete: %d %s", code, body)
	}
	f = h.feed(tn)
	ch = customerChange{}
	_ = json.Unmarshal(f[len(f)-1].Payload, &ch)
	if ch.Op != opVoucher || !ch.Removed || ch.Customer == nil || ch.Customer.Voucher != nil {
		t.Fatalf("remove feed = %s", f[len(f)-1].Payload)
	}
	if a := h.lastAudit(tn); a.Action != "customer.voucher.delete" || len(a.After) != 0 {
		t.Fatalf("remove audit = %+v", a)
	}
	code, body = h.do(http.MethodDelete, vp, tn.secret, nil)
	wantProblem(t, "delete again", code, body, 404, "")
	code, body = h.do(http.MethodGet, vp, tn.secret, nil)
	wantProblem(t, "get after delete", code, body, 404, "")
	_, body = h.do(http.MethodGet, custPath("production", "u1"), tn.secret, nil)
	if c := decodeCustomer(t, body); c.Voucher != nil || strings.Contains(string(body), `"voucher"`) {
		t.Fatalf("customer after delete = %s", body)
	}
	for _, m := range []string{http.MethodGet, http.MethodPut, http.MethodDelete} {
		code, body = h.do(m, custPath("production", "ghost", "voucher"), tn.secret, map[string]any{"expires_at": "2999-01-01T00:00:00Z"})
		wantProblem(t, m+" unknown customer", code, body, 404, "")
	}
	// Deleting the customer takes its voucher with it.
	h.do(http.MethodPut, vp, tn.secret, map[string]any{"expires_at": "2999-01-01T00:00:00Z"})
	if code, _ := h.do(http.MethodDelete, custPath("production", "u1"), tn.secret, nil); code != 204 {
		t.Fatal("delete customer")
	}
	if n := h.count(`select count(*) from customer_vouchers`); n != 0 {
		t.Fatalf("%d voucher rows after the customer's deletion", n)
	}
}

func TestCustomerVoucherValidation(t *testing.T) {
	h, tn := newFixture(t)
	h.createCustomer(tn.secret, "production", map[string]any{"id": "u1"})
	vp := custPath("production", "u1", "voucher")
	future := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	feedBefore := len(h.feed(tn))
	for _, tc := range []struct {
		body any
		code int
		path string
	}{
		{map[string]any{"runes": -1, "expires_at": future}, 422, "runes"},
		{map[string]any{"runes": "-0.01", "expires_at": future}, 422, "runes"},
		{map[string]any{"runes": "1e3", "expires_at": future}, 422, "runes"},
		{`{"runes": 1e400, "expires_at": "` + future + `"}`, 422, "runes"},
		{`{"runes": "abc", "expires_at": "` + future + `"}`, 400, ""},
		{`{"runes": true, "expires_at": "` + future + `"}`, 422, "runes"},
		{map[string]any{"runes": "10"}, 422, "expires_at"},
		{map[string]any{"runes": "10", "expires_at": ""}, 422, "expires_at"},
		{map[string]any{"runes": "10", "expires_at": "2020-01-01T00:00:00Z"}, 422, "expires_at"},
		{map[string]any{"runes": "10", "expires_at": "tomorrow"}, 422, "expires_at"},
		{map[string]any{"runes": "10", "expires_at": future, "code": "x"}, 422, "code"},
		{`[]`, 400, ""},
	} {
		code, body := h.do(http.MethodPut, vp, tn.secret, tc.body)
		wantProblem(t, "put "+string(mustJSON(t, tc.body)), code, body, tc.code, tc.path)
	}
	// Both problems at once.
	code, body := h.do(http.MethodPut, vp, tn.secret, map[string]any{"runes": "-5", "expires_at": "2000-01-01T00:00:00Z"})
	if p := wantProblem(t, "two problems", code, body, 422, "runes"); len(p.Errors) != 2 {
		t.Fatalf("two problems: %s", body)
	}
	if len(h.feed(tn)) != feedBefore || h.count(`select count(*) from customer_vouchers`) != 0 {
		t.Fatal("failed puts wrote rows")
	}
}

func TestCustomerVoucherMetadataForm(t *testing.T) {
	h, tn := newFixture(t)
	exp := time.Now().Add(72 * time.Hour).UTC().Truncate(time.Millisecond)
	// On create: milliseconds since the epoch, runes as a number.
	code, body := h.do(http.MethodPost, custPath("production"), tn.secret, map[string]any{"id": "m1",
		"metadata": map[string]any{"limitr_voucher": "SPRING", "limitr_voucher_expires": exp.UnixMilli(), "limitr_voucher_runes": 12.75, "other": 1}})
	if code != 201 {
		t.Fatalf("create: %d %s", code, body)
	}
	c := decodeCustomer(t, body)
	if c.Voucher == nil || !voucherIDRE.MatchString(c.Voucher.ID) || numStr(c.Voucher.Runes) != "12.75" || !c.Voucher.ExpiresAt.Equal(exp) ||
		c.Voucher.Debited != "0" || c.Revision != 1 {
		t.Fatalf("created = %s", body)
	}
	if !strings.Contains(string(c.Metadata), "limitr_voucher") {
		t.Fatalf("the metadata is kept as given: %s", c.Metadata)
	}
	f := h.feed(tn)
	var ch customerChange
	_ = json.Unmarshal(f[len(f)-1].Payload, &ch)
	if ch.Op != opUpsert || ch.Customer == nil || ch.Customer.Voucher == nil || ch.Customer.Voucher.ID != c.Voucher.ID {
		t.Fatalf("create feed = %s", f[len(f)-1].Payload)
	}
	first := c.Voucher.ID

	// A PATCH of other keys that keeps the voucher keys as they were keeps the voucher.
	code, body = h.do(http.MethodPatch, custPath("production", "m1"), tn.secret, map[string]any{
		"metadata": map[string]any{"limitr_voucher": "SPRING", "limitr_voucher_expires": exp.UnixMilli(), "limitr_voucher_runes": 12.75, "other": 2}})
	if c := decodeCustomer(t, body); code != 200 || c.Voucher == nil || c.Voucher.ID != first {
		t.Fatalf("patch of other keys: %d %s", code, body)
	}
	// Metadata without the voucher keys leaves the voucher alone.
	code, body = h.do(http.MethodPatch, custPath("production", "m1"), tn.secret, map[string]any{"metadata": map[string]any{"other": 3}})
	if c := decodeCustomer(t, body); code != 200 || c.Voucher == nil || c.Voucher.ID != first {
		t.Fatalf("patch without voucher keys: %d %s", code, body)
	}
	// A PATCH with a new voucher (RFC 3339, runes as a string) sets a new one.
	exp2 := exp.Add(24 * time.Hour).Truncate(time.Second)
	code, body = h.do(http.MethodPatch, custPath("production", "m1"), tn.secret, map[string]any{
		"metadata": map[string]any{"limitr_voucher": "SUMMER", "limitr_voucher_expires": exp2.Format(time.RFC3339), "limitr_voucher_runes": "99.99"}})
	c = decodeCustomer(t, body)
	if code != 200 || c.Voucher == nil || c.Voucher.ID == first || numStr(c.Voucher.Runes) != "99.99" || !c.Voucher.ExpiresAt.Equal(exp2) {
		t.Fatalf("patch with a new voucher: %d %s", code, body)
	}
	if a := h.lastAudit(tn); a.Action != "customer.update" || !strings.Contains(string(a.After), c.Voucher.ID) {
		t.Fatalf("patch audit = %+v", a)
	}

	// Errors name the metadata key; nothing is written.
	feedBefore, customersBefore := len(h.feed(tn)), h.count(`select count(*) from customers`)
	for _, tc := range []struct {
		method, path string
		meta         map[string]any
		field        string
	}{
		{http.MethodPost, custPath("production"), map[string]any{"limitr_voucher": "x"}, "metadata.limitr_voucher_expires"},
		{http.MethodPost, custPath("production"), map[string]any{"limitr_voucher": "x", "limitr_voucher_expires": "2001-01-01T00:00:00Z"}, "metadata.limitr_voucher_expires"},
		{http.MethodPost, custPath("production"), map[string]any{"limitr_voucher": "x", "limitr_voucher_expires": "soon"}, "metadata.limitr_voucher_expires"},
		{http.MethodPost, custPath("production"), map[string]any{"limitr_voucher": "x", "limitr_voucher_expires": exp.UnixMilli(), "limitr_voucher_runes": -3}, "metadata.limitr_voucher_runes"},
		{http.MethodPatch, custPath("production", "m1"), map[string]any{"limitr_voucher": "y", "limitr_voucher_expires": exp.UnixMilli(), "limitr_voucher_runes": "lots"}, "metadata.limitr_voucher_runes"},
		{http.MethodPatch, custPath("production", "m1"), map[string]any{"limitr_voucher": "y", "limitr_voucher_expires": 1000}, "metadata.limitr_voucher_expires"},
	} {
		body := map[string]any{"metadata": tc.meta}
		if tc.method == http.MethodPost {
			body["id"] = "m2"
		}
		code, resp := h.do(tc.method, tc.path, tn.secret, body)
		wantProblem(t, tc.method+" "+string(mustJSON(t, tc.meta)), code, resp, 422, tc.field)
	}
	if len(h.feed(tn)) != feedBefore || h.count(`select count(*) from customers`) != customersBefore {
		t.Fatal("rejected metadata wrote rows")
	}
	// An empty limitr_voucher is not a voucher: the other keys are plain metadata.
	code, body = h.do(http.MethodPost, custPath("production"), tn.secret, map[string]any{"id": "m3",
		"metadata": map[string]any{"limitr_voucher": "", "limitr_voucher_expires": "whenever"}})
	if c := decodeCustomer(t, body); code != 201 || c.Voucher != nil {
		t.Fatalf("empty limitr_voucher: %d %s", code, body)
	}
}

func voucherDebit(cust, voucher, runes string) wire.VoucherDebit {
	return wire.VoucherDebit{Customer: cust, VoucherID: voucher, Runes: runes}
}

func TestSyncVoucherDebitsCommitOnceAndHydrate(t *testing.T) {
	f := newSyncFixture(t)
	sdk2, _ := f.sdkKey(f.tn, "production") // a second instance's key
	code, body := f.do(http.MethodPut, custPath("production", "alice", "voucher"), f.tn.secret,
		map[string]any{"runes": "10", "expires_at": "2999-01-01T00:00:00Z"})
	if code != 200 {
		t.Fatalf("put: %d %s", code, body)
	}
	v := decodeVoucher(t, body)

	// Instance 1: a debit by alt id, one by id, and one of an unknown customer.
	b1 := batch("web-1", 1)
	b1.Deltas = []wire.UsageDelta{}
	b1.VoucherDebits = []wire.VoucherDebit{voucherDebit("cus_alice", v.ID, "2.5"), voucherDebit("alice", v.ID, "0.25"),
		voucherDebit("ghost", "vch_ghost", "1")}
	a := f.ack(f.usage(f.sdk, b1, true))
	if a.Duplicate || len(a.Unattributed) != 1 || a.Unattributed[0] != (wire.Unattributed{Kind: wire.RecordVoucherDebit, Index: 2,
		Customer: "ghost", Reason: wire.ReasonUnknownCustomer}) {
		t.Fatalf("ack %+v", a)
	}
	// The same batch again is a duplicate and adds nothing.
	if a := f.ack(f.usage(f.sdk, b1, false)); !a.Duplicate {
		t.Fatalf("retry ack %+v", a)
	}
	// Instance 2 debits too.
	b2 := batch("web-2", 1)
	b2.Deltas = []wire.UsageDelta{delta("alice", "ai-chat-input", "1")}
	b2.VoucherDebits = []wire.VoucherDebit{voucherDebit("alice", v.ID, "1.25")}
	f.ack(f.usage(sdk2, b2, false))

	code, body = f.do(http.MethodGet, custPath("production", "alice", "voucher"), f.tn.secret, nil)
	got := decodeVoucher(t, body)
	if code != 200 || got.Debited != "4" || numStr(got.Balance) != "6" || numStr(got.Runes) != "10" {
		t.Fatalf("voucher after debits: %d %s", code, body)
	}
	// Hydration carries the voucher with the committed debits.
	code, body = f.do(http.MethodGet, wire.PathCustomer+"cus_alice/state", f.sdk, nil)
	var st wire.CustomerState
	if code != 200 || json.Unmarshal(body, &st) != nil {
		t.Fatalf("state: %d %s", code, body)
	}
	var rec wire.Customer
	if err := json.Unmarshal(st.Customer, &rec); err != nil || rec.Voucher == nil || rec.Voucher.ID != v.ID || rec.Voucher.Debited != "4" ||
		numStr(rec.Voucher.Balance) != "6" {
		t.Fatalf("state customer = %s", st.Customer)
	}
	// The unknown customer's debit is kept for an operator.
	if n := f.count(`select count(*) from unattributed_usage where kind = 'voucher_debit' and customer = 'ghost'`); n != 1 {
		t.Fatalf("%d unattributed voucher debits, want 1", n)
	}
	code, body = f.do(http.MethodGet, "/v1/environments/production/usage/unattributed", f.tn.secret, nil)
	if code != 200 || !strings.Contains(string(body), `"kind":"voucher_debit"`) || !strings.Contains(string(body), `"vch_ghost"`) {
		t.Fatalf("unattributed list: %d %s", code, body)
	}

	// A new voucher starts at zero; a late debit of the old one is still committed
	// against the old id.
	code, body = f.do(http.MethodPut, custPath("production", "alice", "voucher"), f.tn.secret,
		map[string]any{"runes": "5", "expires_at": "2999-01-01T00:00:00Z"})
	v2 := decodeVoucher(t, body)
	if code != 200 || v2.Debited != "0" || numStr(v2.Balance) != "5" {
		t.Fatalf("new voucher: %d %s", code, body)
	}
	b3 := batch("web-1", 2)
	b3.Deltas = []wire.UsageDelta{}
	b3.VoucherDebits = []wire.VoucherDebit{voucherDebit("alice", v.ID, "0.5"), voucherDebit("alice", v2.ID, "1.5")}
	f.ack(f.usage(f.sdk, b3, false))
	var old string
	if err := f.pool.QueryRow(t.Context(), `select runes::text from voucher_debit_totals where voucher_id = $1`, v.ID).Scan(&old); err != nil || old != "4.50" && old != "4.5" {
		t.Fatalf("old voucher's debits = %q, %v", old, err)
	}
	_, body = f.do(http.MethodGet, custPath("production", "alice", "voucher"), f.tn.secret, nil)
	if got := decodeVoucher(t, body); got.ID != v2.ID || got.Debited != "1.5" || numStr(got.Balance) != "3.5" {
		t.Fatalf("new voucher after debits: %s", body)
	}

	// A debit stamped with an earlier incarnation of the customer is not the new one's.
	created := time.Now().Add(-time.Hour)
	b4 := batch("web-1", 3)
	b4.Deltas = []wire.UsageDelta{}
	d := voucherDebit("alice", v2.ID, "1")
	d.CustomerCreatedAt = &created
	b4.VoucherDebits = []wire.VoucherDebit{d}
	if a := f.ack(f.usage(f.sdk, b4, false)); len(a.Unattributed) != 1 || a.Unattributed[0].Reason != wire.ReasonCustomerRecreated {
		t.Fatalf("recreated ack %+v", a)
	}
	// Another tenant's key naming alice never reaches tenant acme's voucher.
	b5 := batch("evil-1", 1)
	b5.Deltas = []wire.UsageDelta{}
	b5.VoucherDebits = []wire.VoucherDebit{voucherDebit("alice", v2.ID, "1")}
	if a := f.ack(f.usage(f.otherSDK, b5, false)); len(a.Unattributed) != 1 {
		t.Fatalf("other tenant ack %+v", a)
	}
	_, body = f.do(http.MethodGet, custPath("production", "alice", "voucher"), f.tn.secret, nil)
	if got := decodeVoucher(t, body); got.Debited != "1.5" {
		t.Fatalf("voucher after other tenants' debits: %s", body)
	}
}

func TestSyncVoucherDebitsValidation(t *testing.T) {
	f := newSyncFixture(t)
	b := batch("web-1", 1)
	b.VoucherDebits = []wire.VoucherDebit{voucherDebit("alice", "vch_a", "1"), voucherDebit("", "vch_a", "1"),
		voucherDebit("alice", "", "1"), voucherDebit("alice", "vch_a", "0"), voucherDebit("alice", "vch_a", "-2"),
		voucherDebit("alice", "vch_a", "ten"), voucherDebit("alice", "vch_a", "")}
	code, body := f.usage(f.sdk, b, false)
	p := wantProblem(t, "bad voucher debits", code, body, 422, "voucher_debits[1].customer")
	for _, path := range []string{"voucher_debits[2].voucher_id", "voucher_debits[3].runes", "voucher_debits[4].runes",
		"voucher_debits[5].runes", "voucher_debits[6].runes"} {
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
	many.VoucherDebits = make([]wire.VoucherDebit, wire.MaxDeltas+1)
	for i := range many.VoucherDebits {
		many.VoucherDebits[i] = voucherDebit("alice", "vch_a", "1")
	}
	code, body = f.usage(f.sdk, many, true)
	wantProblem(t, "too many voucher debits", code, body, 422, "voucher_debits")
	if n := f.count(`select count(*) from voucher_debit_totals`) + f.count(`select count(*) from usage_batches`); n != 0 {
		t.Fatalf("rejected batches wrote %d rows", n)
	}
}

func TestSyncStreamVoucher(t *testing.T) {
	f := newSyncFixture(t)
	f.srv.setStreamTimings(time.Hour, time.Hour) // only the bus can deliver
	ts := httptest.NewServer(f.srv.Handler())
	t.Cleanup(ts.Close)
	st := openStream(t, ts.URL, f.sdk, "")
	st.hello()

	code, body := f.do(http.MethodPut, custPath("production", "bob", "voucher"), f.tn.secret,
		map[string]any{"runes": "3", "expires_at": "2999-01-01T00:00:00Z"})
	if code != 200 {
		t.Fatalf("put: %d %s", code, body)
	}
	v := decodeVoucher(t, body)
	ev := st.next(time.Second, false)
	var cc wire.CustomerChanged
	if ev.name != wire.EventCust || json.Unmarshal([]byte(ev.data), &cc) != nil || cc.ID != "bob" || cc.Op != opVoucher || cc.Removed {
		t.Fatalf("voucher event %+v", ev)
	}
	var rec wire.Customer
	if err := json.Unmarshal(cc.Customer, &rec); err != nil || rec.Voucher == nil || rec.Voucher.ID != v.ID || numStr(rec.Voucher.Balance) != "3" {
		t.Fatalf("voucher event record %s", cc.Customer)
	}
	if code, _ := f.do(http.MethodDelete, custPath("production", "bob", "voucher"), f.sdk, nil); code != 204 {
		t.Fatalf("delete: %d", code)
	}
	ev = st.next(time.Second, false)
	cc = wire.CustomerChanged{}
	rec = wire.Customer{}
	if json.Unmarshal([]byte(ev.data), &cc) != nil || cc.Op != opVoucher || !cc.Removed || json.Unmarshal(cc.Customer, &rec) != nil || rec.Voucher != nil || rec.ID != "bob" {
		t.Fatalf("voucher removal event %+v", ev)
	}
}
