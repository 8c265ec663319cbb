package limitr_test

import (
	"encoding/json"
	"sort"
	"strings"
	"testing"
	"time"

	limitr "github.com/limitr/limitr/sdk/go"
)

const restorePolicy = `{"policy": {
  "credits": {"tok": {"price": {"amount": 0.01}, "overhead_cost": 0.001}, "gem": {}, "req": {}},
  "exchange": {"gem": {"value": 0.5, "currency": "rune"}},
  "plans": {"p": {"default": true,
    "entitlements": {
      "h": {"limit": {"credit": "tok", "value": 50, "resets": true, "reset_inc": "1day"}},
      "s": {"limit": {"credit": "tok", "mode": "soft", "value": 30}},
      "g": {"limit": {"credit": "req", "value": 1000, "governor_enabled": true, "governor_capacity": 5, "governor_refill_rate": 0.0001}}
    },
    "topups": {
      "t5":  {"credit": "tok", "value": 5},
      "g1":  {"credit": "gem", "value": 1, "expires_after": "2days"},
      "r":   {"credit": "tok", "value": 3, "resets": true, "reset_inc": "12h", "reset_mode": "rollover", "rollover_pct": 0.5, "max_balance": 5}
    }}}
}}`

type restoreOp struct {
	kind string // allow, check, topup, advance, reserve
	id   string
	ent  string
	amt  float64
}

// §2.8 state types: Customers → JSON → LoadCustomers into a fresh policy restores
// grants, caps, holds, governor state and overrides exactly; both engines then decide
// alike and report identical customers.
func TestSaveRestoreRoundTrip(t *testing.T) {
	a := newEnv(t, restorePolicy)
	a.customer("org", "", withType("org"))
	a.customer("u1", "", withRefs("org"))
	a.customer("u2", "")
	if err := a.p.CreateCustomerOverride(a.ctx, "u1", "h", limitr.Override{Value: "40"}); err != nil {
		t.Fatal(err)
	}
	for _, tp := range []string{"t5", "g1", "r"} {
		a.topup("u1", tp)
		a.clock.Advance(time.Second)
	}
	a.addCap("org", limitr.Cap{ID: "budget", Credit: "rune", Value: 3, Shared: true, Resets: true, ResetInc: "1day"})
	a.addCap("u1", limitr.Cap{ID: "mine", Credit: "tok", Value: 200, FollowDecrements: true, ExpiresAt: t0.Add(72 * time.Hour)})
	for range 10 {
		a.allow("u1", "s", 0.1)
		a.allow("u1", "s", 0.2)
	}
	a.allow("u1", "s", 5) // 3 + 5 = 8, inside 30
	a.allow("u1", "h", 39)
	a.allow("u1", "h", 4) // 3 over the override of 40: drawn from t5
	a.allow("u1", "g", 3)
	if _, err := a.p.Reserve(a.ctx, "u1", "h", 2, limitr.WithHoldTTL(time.Hour)); err != nil {
		t.Fatal(err)
	}
	a.clock.Advance(10 * time.Minute)

	saved := a.customersJSON()
	var loaded []*limitr.Customer
	if err := json.Unmarshal(saved, &loaded); err != nil {
		t.Fatal(err)
	}
	b := newEnv(t, restorePolicy)
	b.clock.Set(a.clock.Now())
	if err := b.p.LoadCustomers(b.ctx, loaded); err != nil {
		t.Fatalf("LoadCustomers: %v", err)
	}
	if got := string(b.customersJSON()); got != string(saved) {
		t.Fatalf("restored customers differ:\nsaved    %s\nrestored %s", saved, got)
	}
	// The state that matters came back.
	u1 := b.cust("u1")
	if len(u1.Grants) != 3 || len(u1.Overrides) != 1 || len(u1.Caps) != 1 {
		t.Errorf("restored u1 grants/overrides/caps = %d/%d/%d, want 3/1/1", len(u1.Grants), len(u1.Overrides), len(u1.Caps))
	}
	if len(u1.Meters["h"].Holds) != 1 || u1.Meters["g"].GovernorTokens == nil || *u1.Meters["g"].GovernorTokens != 2 {
		t.Errorf("restored holds/governor: %+v / %+v", u1.Meters["h"].Holds, u1.Meters["g"].GovernorTokens)
	}
	if got := b.value("u1", "s"); got != 8 {
		t.Errorf("restored s = %v, want exactly 8", got)
	}
	if got := b.held("u1", "h"); got != 2 {
		t.Errorf("restored Held = %v, want 2", got)
	}

	ops := []restoreOp{
		{"check", "u1", "h", 1}, {"allow", "u1", "h", 1}, // 43 + 2 held + 1 past 40: grants 2 + r 3
		{"allow", "u1", "h", 10}, {"allow", "u1", "g", 3}, {"allow", "u1", "g", 1},
		{"advance", "", "", 30}, {"allow", "u1", "g", 3}, {"allow", "u1", "s", 100},
		{"allow", "u2", "s", 0.1}, {"allow", "u2", "s", 0.2}, {"allow", "u1", "s", -0.3},
		{"topup", "u1", "t5", 0}, {"allow", "u1", "h", 5},
		{"advance", "", "", 60 * 13}, {"allow", "u1", "h", 10}, {"allow", "u1", "s", 50},
		{"advance", "", "", 60 * 24}, {"check", "u1", "h", 45}, {"allow", "u1", "h", 45},
		{"advance", "", "", 60 * 48}, {"allow", "u1", "s", 500}, {"allow", "u1", "h", 50},
	}
	for i, op := range ops {
		var ra, rb bool
		switch op.kind {
		case "allow":
			ra, rb = a.allow(op.id, op.ent, op.amt), b.allow(op.id, op.ent, op.amt)
		case "check":
			ra, rb = a.check(op.id, op.ent, op.amt), b.check(op.id, op.ent, op.amt)
		case "topup":
			a.topup(op.id, op.ent)
			b.topup(op.id, op.ent)
		case "advance":
			a.clock.Advance(time.Duration(op.amt) * time.Minute)
			b.clock.Advance(time.Duration(op.amt) * time.Minute)
		}
		if ra != rb {
			t.Errorf("op %d %+v: original %v, restored %v", i, op, ra, rb)
		}
		if ja, jb := normGrantIDs(t, a.customersJSON()), normGrantIDs(t, b.customersJSON()); ja != jb {
			t.Fatalf("op %d %+v: customers differ:\noriginal %s\nrestored %s", i, op, ja, jb)
		}
	}
}

// normGrantIDs rewrites customers JSON so grants are compared without their random ids
// (a topup applied on both sides mints different ids).
func normGrantIDs(t *testing.T, b []byte) string {
	t.Helper()
	var cs []map[string]any
	if err := json.Unmarshal(b, &cs); err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		gs, _ := c["grants"].(map[string]any)
		var list []string
		for _, g := range gs {
			gm := g.(map[string]any)
			delete(gm, "id")
			out, _ := json.Marshal(gm)
			list = append(list, string(out))
		}
		sort.Strings(list)
		c["grants"] = list
	}
	out, _ := json.Marshal(cs)
	return string(out)
}

func itoa(v int64) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// §5.7/ours: exact decimals survive a JSON round trip at 19 significant digits.
func TestRestoreExactDecimals(t *testing.T) {
	e := newEnv(t, restorePolicy)
	started := t0.UnixMilli()
	doc := `[{"id":"x","plan":"p","type":"user","label":"User","alt_ids":[],"refs":[],
	  "meters":{"s":{"credit":"tok","started":` + itoa(started) + `,"value":1.234567890123456789,"overhead":0.1000000000000000003}},
	  "overrides":{},"grants":{"lgrnt_A":{"id":"lgrnt_A","credit":"tok","topup":"t5","value":0.3000000000000000001,"starting_value":5,"created_on":` + itoa(started) + `}},
	  "caps":{},"metadata":null}]`
	var cs []*limitr.Customer
	if err := json.Unmarshal([]byte(doc), &cs); err != nil {
		t.Fatal(err)
	}
	if err := e.p.LoadCustomers(e.ctx, cs); err != nil {
		t.Fatal(err)
	}
	j := e.snapshotJSON("x")
	for _, want := range []string{`"value":1.234567890123456789`, `"overhead":0.1000000000000000003`, `"value":0.3000000000000000001`} {
		if !strings.Contains(j, want) {
			t.Errorf("snapshot lost precision: want %s in\n%s", want, j)
		}
	}
	e.allow("x", "s", 1e-18)
	if j := e.snapshotJSON("x"); !strings.Contains(j, `"value":1.23456789012345679`) {
		t.Errorf("1.234567890123456789 + 1e-18 not exact:\n%s", j)
	}
	// Ten (0.1 + 0.2) calls are exactly 3.
	e.customer("y", "")
	for range 10 {
		e.allow("y", "s", 0.1)
		e.allow("y", "s", 0.2)
	}
	if j := e.snapshotJSON("y"); !strings.Contains(j, `"value":3`) || strings.Contains(j, "3.0000") || strings.Contains(j, "2.9999") {
		t.Errorf("0.1+0.2 ×10 not exactly 3:\n%s", j)
	}
	var saved []*limitr.Customer
	if err := json.Unmarshal(e.customersJSON(), &saved); err != nil {
		t.Fatal(err)
	}
	f := newEnv(t, restorePolicy)
	if err := f.p.LoadCustomers(f.ctx, saved); err != nil {
		t.Fatal(err)
	}
	if a, b := string(e.customersJSON()), string(f.customersJSON()); a != b {
		t.Errorf("round trip differs:\n%s\n%s", a, b)
	}
	// Decisions at the exact edge of the hard limit: 3 + 40 + 7 = 50.
	for range 10 {
		f.allow("y", "h", 0.1)
		f.allow("y", "h", 0.2)
	}
	for range 20 {
		f.allow("y", "h", 2)
	}
	if !f.check("y", "h", 7) || !f.allow("y", "h", 7) {
		t.Errorf("exact edge: 3 + 40 + 7 = 50 must fit the hard limit 50")
	}
	if f.check("y", "h", 1e-9) {
		t.Error("past the exact edge allowed")
	}
}
