package usage

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/limitr/limitr/internal/validation"
	"github.com/limitr/limitr/internal/wire"
)

// FuzzDecodeBatch: any body either decodes and checks into a batch whose every record
// is usable, or fails with a validation or malformed-input error (a 4xx), never a
// panic.
func FuzzDecodeBatch(f *testing.F) {
	now := time.Date(2026, 1, 15, 0, 0, 0, 0, time.UTC)
	good, _ := json.Marshal(wire.UsageBatch{InstanceID: "web-1", Sequence: 1, SentAt: now,
		Deltas:     []wire.UsageDelta{{Customer: "alice", Entitlement: "e", Credit: "c", PeriodStart: now, Units: "1.5", Overhead: "0", Price: "0", Calls: 1}},
		GrantDraws: []wire.GrantDraw{{Customer: "alice", GrantID: "g", PeriodStart: now, Units: "1"}},
		Events:     []wire.UsageEvent{{ID: "e1", Customer: "alice", Entitlement: "e", Units: "1", Overhead: "0", At: now}}})
	f.Add(good)
	f.Add([]byte(`{"instance_id":"a","sequence":1,"deltas":[{"customer":"c","units":"-1e5"}]}`))
	f.Add([]byte(`{"instance_id":"a","sequence":1,"events":[{"id":"x"},{"id":"x"}]}`))
	f.Add([]byte(`{"instance_id":"a","sequence":1} trailing`))
	f.Add([]byte(`{"instance_id":"a","sequence":1,"cap_uses":[{"customer":"c","cap_key":"cap_1","period_start":"2026-01-15T00:00:00Z","units":"-0.5"}]}`))
	f.Add([]byte(`{"instance_id":"a","sequence":1,"cap_uses":[{"customer":"","cap_key":"","units":"1e3"}]}`))
	f.Add([]byte(`{"instance_id":"a","sequence":1,"deltas":[{"customer_created_at":"never"}]}`))
	f.Add([]byte(`{"instance_id":"a","sequence":1,"deltas":[{"customer":"c","entitlement":"e","credit":"c","period_start":"2026-01-15T00:00:00Z","units":"1","overhead":"0","price":"0","grant_covered":"-0.5"}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		in, err := DecodeBatch(body)
		if err != nil {
			if !errors.Is(err, validation.ErrMalformed) && !errors.Is(err, validation.ErrInvalid) {
				t.Fatalf("decode error %v is neither malformed nor invalid", err)
			}
			return
		}
		v := check(in, now)
		if err := v.errs.Err("x"); err != nil {
			if !errors.Is(err, validation.ErrInvalid) {
				t.Fatalf("check error %v is not a validation error", err)
			}
			return
		}
		for _, d := range v.batch.Deltas {
			if d.Calls < 0 || d.CustomerID == "" || d.PeriodStart.IsZero() || d.Entitlement == "" || d.GrantCovered.IsNeg() {
				t.Fatalf("accepted %+v", d)
			}
		}
		for _, u := range v.batch.CapUses {
			if u.CustomerID == "" || u.CapKey == "" || len(u.CapKey) > MaxCapKeyLength || u.PeriodStart.IsZero() {
				t.Fatalf("accepted cap use %+v", u)
			}
		}
		for _, d := range v.batch.GrantDraws {
			if d.Units.IsNeg() || d.CustomerID == "" || d.GrantID == "" {
				t.Fatalf("accepted draw %+v", d)
			}
		}
		if in.Sequence < 1 || in.InstanceID == "" {
			t.Fatalf("accepted batch key %q/%d", in.InstanceID, in.Sequence)
		}
	})
}

// grant_covered is optional: absent is 0 (SDKs before it), present is parsed exactly,
// and a negative or malformed one names its field.
func TestCheckGrantCovered(t *testing.T) {
	now := time.Date(2026, 1, 15, 0, 0, 0, 0, time.UTC)
	d := func(g string) wire.UsageDelta {
		return wire.UsageDelta{Customer: "a", Entitlement: "e", Credit: "c", PeriodStart: now, Units: "12", Overhead: "0", Price: "4", Calls: 3, GrantCovered: g}
	}
	v := check(&wire.UsageBatch{InstanceID: "i", Sequence: 1, Deltas: []wire.UsageDelta{d(""), d("2.50")}}, now)
	if err := v.errs.Err("x"); err != nil {
		t.Fatal(err)
	}
	if g := v.batch.Deltas[0].GrantCovered; !g.IsZero() {
		t.Fatalf("absent grant_covered = %v, want 0", g)
	}
	if g := v.batch.Deltas[1].GrantCovered.String(); g != "2.50" {
		t.Fatalf("grant_covered = %s, want 2.50", g)
	}
	for _, bad := range []string{"-1", "NaN", "1e3", "2,5", " 1"} {
		v := check(&wire.UsageBatch{InstanceID: "i", Sequence: 1, Deltas: []wire.UsageDelta{d("1"), d(bad)}}, now)
		var ve *validation.Error
		if err := v.errs.Err("x"); !errors.As(err, &ve) || len(ve.Fields) != 1 || ve.Fields[0].Path != "deltas[1].grant_covered" {
			t.Fatalf("grant_covered %q: %v, want one problem at deltas[1].grant_covered", bad, err)
		}
	}
}

// Attribution, without a database: unknown names and records of an earlier customer
// of the same id are set aside, in batch order, with the reason.
func TestAttribute(t *testing.T) {
	now := time.Date(2026, 1, 15, 0, 0, 0, 0, time.UTC)
	created := now.Add(-time.Hour)
	older := created.Add(-time.Minute)
	slightly := created.Add(-500 * time.Microsecond) // lost precision, same customer
	in := &wire.UsageBatch{InstanceID: "i", Sequence: 1, Deltas: []wire.UsageDelta{
		{Customer: "a", Entitlement: "e", Credit: "c", PeriodStart: now, Units: "1", Overhead: "0", Price: "0", Calls: 1},
		{Customer: "ghost", Entitlement: "e", Credit: "c", PeriodStart: now, Units: "2", Overhead: "0", Price: "0", Calls: 1},
		{Customer: "alt-a", Entitlement: "e", Credit: "c", PeriodStart: now, Units: "3", Overhead: "0", Price: "0", Calls: 1, CustomerCreatedAt: &older},
		{Customer: "a", Entitlement: "e", Credit: "c", PeriodStart: now, Units: "4", Overhead: "0", Price: "0", Calls: 1, CustomerCreatedAt: &slightly},
		{Customer: "a", Entitlement: "e", Credit: "c", PeriodStart: now.AddDate(-3, 0, 0), Units: "5", Overhead: "0", Price: "0", Calls: 1},
	}}
	v := check(in, now)
	if err := v.errs.Err("x"); err != nil {
		t.Fatal(err)
	}
	c := storeCustomer("a", created)
	if err := v.attribute(map[string]storeUsageCustomer{"a": c, "alt-a": c}); err != nil {
		t.Fatal(err)
	}
	var units []string
	for _, d := range v.batch.Deltas {
		if d.CustomerID != "a" || d.CustomerUID != c.UID {
			t.Fatalf("attributed to %q/%v", d.CustomerID, d.CustomerUID)
		}
		units = append(units, d.Units.String())
	}
	if len(units) != 2 || units[0] != "1" || units[1] != "4" {
		t.Fatalf("attributed units %v", units)
	}
	want := []struct {
		index  int
		reason string
	}{{1, wire.ReasonUnknownCustomer}, {2, wire.ReasonCustomerRecreated}, {4, wire.ReasonCustomerRecreated}}
	if len(v.batch.Unattributed) != len(want) {
		t.Fatalf("unattributed %+v", v.batch.Unattributed)
	}
	for i, w := range want {
		u := v.batch.Unattributed[i]
		if u.Index != w.index || u.Reason != w.reason || u.Kind != wire.RecordDelta {
			t.Fatalf("unattributed[%d] = %+v, want %+v", i, u, w)
		}
		var rec wire.UsageDelta
		if err := json.Unmarshal(u.Record, &rec); err != nil || rec.Units != in.Deltas[w.index].Units {
			t.Fatalf("kept record %s (%v)", u.Record, err)
		}
	}
}

// cap_uses: every problem names its field; negative units (a follow_decrements cap)
// are accepted; an unknown customer's or an earlier customer's use is set aside as a
// cap_use.
func TestCheckCapUses(t *testing.T) {
	now := time.Date(2026, 1, 15, 0, 0, 0, 0, time.UTC)
	u := func(cust, key, units string, start time.Time) wire.CapUse {
		return wire.CapUse{Customer: cust, CapKey: key, PeriodStart: start, Units: units}
	}
	longKey := strings.Repeat("k", MaxCapKeyLength+1)
	for _, tc := range []struct {
		use  wire.CapUse
		path string // "" = valid
	}{
		{u("a", "cap_1", "1.5", now), ""},
		{u("a", "cap_1", "-2", now), ""},
		{u("a", "cap_1", "0", now), ""},
		{u("", "cap_1", "1", now), "cap_uses[0].customer"},
		{u("a", "", "1", now), "cap_uses[0].cap_key"},
		{u("a", longKey, "1", now), "cap_uses[0].cap_key"},
		{u("a", "cap_1", "1", time.Time{}), "cap_uses[0].period_start"},
		{u("a", "cap_1", "1", now.AddDate(2, 0, 0)), "cap_uses[0].period_start"},
		{u("a", "cap_1", "", now), "cap_uses[0].units"},
		{u("a", "cap_1", "1e3", now), "cap_uses[0].units"},
		{u("a", "cap_1", "ten", now), "cap_uses[0].units"},
	} {
		v := check(&wire.UsageBatch{InstanceID: "i", Sequence: 1, CapUses: []wire.CapUse{tc.use}}, now)
		err := v.errs.Err("x")
		var ve *validation.Error
		switch {
		case tc.path == "" && err != nil:
			t.Errorf("%+v: %v", tc.use, err)
		case tc.path != "" && (!errors.As(err, &ve) || len(ve.Fields) != 1 || ve.Fields[0].Path != tc.path):
			t.Errorf("%+v: %v, want one problem at %s", tc.use, err, tc.path)
		}
	}
	many := &wire.UsageBatch{InstanceID: "i", Sequence: 1, CapUses: make([]wire.CapUse, wire.MaxDeltas+1)}
	var ve *validation.Error
	if err := check(many, now).errs.Err("x"); !errors.As(err, &ve) || ve.Fields[0].Path != "cap_uses" {
		t.Fatalf("too many cap uses: %v", err)
	}

	created := now.Add(-time.Hour)
	older := created.Add(-time.Minute)
	in := &wire.UsageBatch{InstanceID: "i", Sequence: 1, CapUses: []wire.CapUse{
		u("a", "cap_1", "1", now), u("ghost", "cap_1", "2", now), u("alt-a", "cap_2", "3", now),
		{Customer: "a", CapKey: "cap_1", PeriodStart: now, Units: "4", CustomerCreatedAt: &older},
	}}
	v := check(in, now)
	if err := v.errs.Err("x"); err != nil {
		t.Fatal(err)
	}
	c := storeCustomer("a", created)
	if err := v.attribute(map[string]storeUsageCustomer{"a": c, "alt-a": c}); err != nil {
		t.Fatal(err)
	}
	if len(v.batch.CapUses) != 2 || v.batch.CapUses[1].CustomerID != "a" || v.batch.CapUses[1].CustomerUID != c.UID ||
		v.batch.CapUses[1].CapKey != "cap_2" || v.batch.CapUses[1].Units.String() != "3" {
		t.Fatalf("attributed cap uses %+v", v.batch.CapUses)
	}
	if len(v.batch.Unattributed) != 2 || v.batch.Unattributed[0].Kind != wire.RecordCapUse || v.batch.Unattributed[0].Index != 1 ||
		v.batch.Unattributed[0].Reason != wire.ReasonUnknownCustomer || v.batch.Unattributed[1].Index != 3 ||
		v.batch.Unattributed[1].Reason != wire.ReasonCustomerRecreated {
		t.Fatalf("unattributed %+v", v.batch.Unattributed)
	}
}
