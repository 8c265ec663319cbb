package limitr_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	limitr "github.com/limitr/limitr/sdk/go"
)

// 1 tok = 0.01 rune; "meter" is a soft limit of 100 tok, "hard" a hard one, "free"
// a soft limit on a credit with no price at all.
const voucherPolicy = `{"policy": {
  "credits": {"tok": {}, "abstract": {}, "plain": {}},
  "exchange": {"abstract": {"value": 1, "currency": "rune"}, "tok": {"value": 0.01, "currency": "abstract"}},
  "plans": {"p": {"default": true,
    "entitlements": {
      "meter": {"limit": {"credit": "tok", "mode": "soft", "value": 100}},
      "hard":  {"limit": {"credit": "tok", "mode": "hard", "value": 100}},
      "free":  {"limit": {"credit": "plain", "mode": "soft", "value": 100}}
    },
    "topups": {"pack": {"credit": "abstract", "value": 0.2}}
  }}
}}`

func voucherEnv(t *testing.T) *env { return newEnv(t, voucherPolicy) }

func (e *env) voucher(id string) limitr.Voucher {
	e.t.Helper()
	v, err := e.p.CustomerVoucher(e.ctx, id)
	if err != nil {
		e.t.Fatalf("CustomerVoucher(%q): %v", id, err)
	}
	return v
}

func (e *env) setVoucher(id string, v limitr.Voucher) {
	e.t.Helper()
	if err := e.p.SetCustomerVoucher(e.ctx, id, v); err != nil {
		e.t.Fatalf("SetCustomerVoucher(%q): %v", id, err)
	}
}

// Spec §5.9: the uncovered soft overage is priced in runes and paid from the voucher;
// a call it cannot pay is denied and changes nothing, and Check agrees with Allow.
func TestVoucherPaysSoftOverage(t *testing.T) {
	e := voucherEnv(t)
	e.customer("c", "")
	e.setVoucher("c", limitr.Voucher{ID: "v1", Runes: 1, ExpiresAt: t0.Add(24 * time.Hour)})
	steps := []struct {
		name      string
		amount    float64
		allowed   bool
		value     float64
		balance   float64
		checkSays bool
	}{
		{"within the limit: the voucher is not touched", 100, true, 100, 1, true},
		{"50 over: 0.5 rune paid", 50, true, 150, 0.5, true},
		{"60 over is 0.6 rune, more than the 0.5 left: denied", 60, false, 150, 0.5, false},
		{"exactly what is left", 50, true, 200, 0, true},
		{"nothing left", 1, false, 200, 0, false},
		{"a decrement is never overage", -10, true, 190, 0, true},
	}
	for _, s := range steps {
		e.rec.reset()
		if got := e.check("c", "meter", s.amount); got != s.checkSays {
			t.Errorf("%s: Check = %v, want %v", s.name, got, s.checkSays)
		}
		if got := e.allow("c", "meter", s.amount); got != s.allowed {
			t.Errorf("%s: Allow = %v, want %v", s.name, got, s.allowed)
		}
		if got := e.value("c", "meter"); got != s.value {
			t.Errorf("%s: value %v, want %v", s.name, got, s.value)
		}
		if got := e.voucher("c").Runes; !near(got, s.balance) {
			t.Errorf("%s: voucher balance %v, want %v", s.name, got, s.balance)
		}
		if !s.allowed && len(e.rec.types()) != 0 {
			t.Errorf("%s: a voucher denial sent events %v (Limitr sends none)", s.name, e.rec.types())
		}
	}
}

func TestVoucherExpiry(t *testing.T) {
	e := voucherEnv(t)
	e.customer("c", "")
	e.customer("x", "")
	expires := t0.Add(time.Hour)
	e.setVoucher("c", limitr.Voucher{Runes: 10, ExpiresAt: expires})
	e.setVoucher("x", limitr.Voucher{ExpiryOnly: true, ExpiresAt: expires})
	if !e.allow("c", "meter", 150) || !e.allow("x", "meter", 150) {
		t.Fatal("overage before expiry denied")
	}
	if v := e.voucher("x"); !v.ExpiryOnly || v.Runes != 0 {
		t.Errorf("expiry-only voucher read back as %+v", v)
	}
	e.clock.Set(expires)
	for _, id := range []string{"c", "x"} {
		if e.check(id, "meter", 1) || e.allow(id, "meter", 1) {
			t.Errorf("%s: overage at the expiry allowed", id)
		}
		if !e.allow(id, "meter", -60) || !e.allow(id, "meter", 10) {
			t.Errorf("%s: calls back within the limit denied after the expiry", id)
		}
	}
	if got := e.voucher("c").Runes; !near(got, 9.5) {
		t.Errorf("balance %v, want 9.5", got)
	}
}

// Grants pay first; the voucher pays what they leave, priced from where they stop. A
// call the voucher cannot pay draws no grants (Limitr draws them, then denies).
func TestVoucherAfterGrants(t *testing.T) {
	e := voucherEnv(t)
	e.customer("c", "")
	e.topup("c", "pack") // 0.2 abstract = 20 tok
	e.setVoucher("c", limitr.Voucher{Runes: 0.25, ExpiresAt: t0.Add(time.Hour)})
	// 50 over: 20 from the grant, 30 × 0.01 = 0.3 rune > 0.25: denied, grant untouched.
	if e.allow("c", "meter", 150) {
		t.Fatal("call the voucher cannot pay was allowed")
	}
	if got := e.credit("c", "tok"); !near(got, 20) {
		t.Errorf("a denied call drew the grant: %v tok left", got)
	}
	// 40 over: 20 from the grant, 20 × 0.01 = 0.2 rune from the voucher.
	if !e.allow("c", "meter", 140) {
		t.Fatal("call within grant + voucher denied")
	}
	if got := e.credit("c", "tok"); !near(got, 0) {
		t.Errorf("grant left %v, want 0", got)
	}
	if got := e.voucher("c").Runes; !near(got, 0.05) {
		t.Errorf("voucher left %v, want 0.05", got)
	}
}

// Hard limits deny past the limit whatever the voucher; a credit with no price cannot
// be paid for by a voucher with a balance (as in Limitr), only by an expiry-only one.
func TestVoucherLimitsAndPrices(t *testing.T) {
	e := voucherEnv(t)
	e.customer("c", "")
	e.setVoucher("c", limitr.Voucher{Runes: 100, ExpiresAt: t0.Add(time.Hour)})
	if e.allow("c", "hard", 101) {
		t.Error("a voucher let a call past a hard limit")
	}
	if !e.allow("c", "hard", 100) {
		t.Error("hard limit call within the limit denied")
	}
	if e.allow("c", "free", 101) {
		t.Error("a voucher with a balance paid for an unpriced credit")
	}
	e.setVoucher("c", limitr.Voucher{ExpiryOnly: true, ExpiresAt: t0.Add(time.Hour)})
	if !e.allow("c", "free", 101) {
		t.Error("an expiry-only voucher denied an unpriced overage")
	}
	if err := e.p.RemoveCustomerVoucher(e.ctx, "c"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.p.CustomerVoucher(e.ctx, "c"); !errors.Is(err, limitr.ErrNoVoucher) {
		t.Errorf("after removal: %v, want ErrNoVoucher", err)
	}
	if !e.allow("c", "meter", 500) {
		t.Error("without a voucher a soft overage is allowed")
	}
}

// Limitr's metadata form: limitr_voucher, limitr_voucher_expires (ms) and
// limitr_voucher_runes. The snapshot shows the debited balance there, and restoring it
// keeps it.
func TestVoucherMetadataForm(t *testing.T) {
	e := voucherEnv(t)
	e.customer("c", "", limitr.WithMetadata(map[string]any{
		"limitr_voucher": "vch_1", "limitr_voucher_expires": float64(t0.Add(time.Hour).UnixMilli()),
		"limitr_voucher_runes": 2, "team": "core",
	}))
	if !e.allow("c", "meter", 150) {
		t.Fatal("overage the metadata voucher pays was denied")
	}
	v := e.voucher("c")
	if v.ID != "vch_1" || !near(v.Runes, 1.5) || !v.ExpiresAt.Equal(t0.Add(time.Hour)) {
		t.Errorf("voucher from metadata = %+v", v)
	}
	snap := e.cust("c")
	if got := snap.Metadata["limitr_voucher_runes"]; got != 1.5 || snap.Metadata["team"] != "core" {
		t.Errorf("snapshot metadata %v, want the debited balance 1.5 beside the rest", snap.Metadata)
	}
	data, err := json.Marshal(snap)
	if err != nil {
		t.Fatal(err)
	}
	f := voucherEnv(t)
	var back limitr.Customer
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	if err := f.p.SetCustomer(f.ctx, &back); err != nil {
		t.Fatal(err)
	}
	if got := f.voucher("c"); got.ID != "vch_1" || !near(got.Runes, 1.5) {
		t.Errorf("restored voucher %+v", got)
	}
	// A profile update without the keys keeps the voucher; one with them replaces it.
	e.customer("c", "", limitr.WithMetadata(map[string]any{"team": "growth"}))
	if got := e.voucher("c"); !near(got.Runes, 1.5) {
		t.Errorf("metadata update without voucher keys changed the voucher: %+v", got)
	}
	e.customer("c", "", limitr.WithMetadata(map[string]any{"limitr_voucher": "vch_2", "limitr_voucher_expires": t0.Add(2 * time.Hour).Format(time.RFC3339)}))
	if got := e.voucher("c"); got.ID != "vch_2" || !got.ExpiryOnly {
		t.Errorf("metadata update with the keys: %+v", got)
	}
}

func TestVoucherInvalid(t *testing.T) {
	e := voucherEnv(t)
	e.customer("c", "")
	cases := []struct {
		name string
		md   map[string]any
		path string
	}{
		{"expiry not a time", map[string]any{"limitr_voucher": "v", "limitr_voucher_expires": "tomorrow"}, "metadata.limitr_voucher_expires"},
		{"negative runes", map[string]any{"limitr_voucher": "v", "limitr_voucher_expires": 1e12, "limitr_voucher_runes": -1}, "metadata.limitr_voucher_runes"},
		{"runes not a number", map[string]any{"limitr_voucher": "v", "limitr_voucher_expires": 1e12, "limitr_voucher_runes": "lots"}, "metadata.limitr_voucher_runes"},
	}
	for _, c := range cases {
		_, err := e.p.CreateCustomer(e.ctx, "bad", "", limitr.WithMetadata(c.md))
		if !errors.Is(err, limitr.ErrInvalidVoucher) || !strings.Contains(err.Error(), c.path) {
			t.Errorf("%s: %v, want ErrInvalidVoucher naming %s", c.name, err, c.path)
		}
	}
	for _, v := range []limitr.Voucher{{Runes: 1}, {Runes: -1, ExpiresAt: t0}} {
		if err := e.p.SetCustomerVoucher(e.ctx, "c", v); !errors.Is(err, limitr.ErrInvalidVoucher) {
			t.Errorf("SetCustomerVoucher(%+v) = %v, want ErrInvalidVoucher", v, err)
		}
	}
	if err := e.p.SetCustomerVoucher(e.ctx, "nobody", limitr.Voucher{Runes: 1, ExpiresAt: t0}); !errors.Is(err, limitr.ErrUnknownCustomer) {
		t.Errorf("unknown customer: %v", err)
	}
}

// Settle meters what was used even when the voucher cannot pay for it (the work
// happened); a voucher that can pay is debited.
func TestVoucherSettle(t *testing.T) {
	e := voucherEnv(t)
	e.customer("c", "")
	e.setVoucher("c", limitr.Voucher{Runes: 0.5, ExpiresAt: t0.Add(time.Hour)})
	h := e.reserve("c", "meter", 50)
	if _, err := e.p.Settle(e.ctx, "c", "meter", h, 130); err != nil { // 30 over: 0.3 rune
		t.Fatal(err)
	}
	if got := e.voucher("c").Runes; !near(got, 0.2) {
		t.Errorf("after a paid settle: %v, want 0.2", got)
	}
	h = e.reserve("c", "meter", 1)
	if _, err := e.p.Settle(e.ctx, "c", "meter", h, 50); err != nil { // 0.5 rune > 0.2 left
		t.Fatal(err)
	}
	if got := e.value("c", "meter"); got != 180 {
		t.Errorf("settle past what the voucher holds metered %v, want 180", got)
	}
	if got := e.voucher("c").Runes; !near(got, 0.2) {
		t.Errorf("a settle the voucher could not pay debited it: %v left", got)
	}
}
