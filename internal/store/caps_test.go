package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/store"
	"github.com/limitr/limitr/internal/wire"
)

// Caps are loaded with the customers that hold them (one query for a page), each with
// its key's last two periods of committed use; a replace keeps the key, a reset mints
// a new one, a delete removes the cap and keeps its use.
func TestCustomerCaps(t *testing.T) {
	pool, ten, env := customerFixture(t)
	ctx := context.Background()
	var cs []store.Customer
	for _, id := range []string{"a", "b", "c"} {
		c := store.Customer{Customer: wire.Customer{ID: id, Plan: "base"}}
		if err := insert(t, pool, ten, env, &c); err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
	}
	put := func(c store.Customer, id, key, value string) bool {
		t.Helper()
		var created bool
		if err := inTx(t, pool, func(tx pgx.Tx) error {
			var err error
			created, err = store.PutCap(ctx, tx, ten, env, c, store.NewCap{ID: id, Key: key, Credit: "rune", Value: num.MustParse(value),
				Config: store.CapConfig{Scope: []string{"tokens"}, Resets: true, ResetInc: "1day"}})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return created
	}
	if !put(cs[0], "z", "cap_a_z", "10") || !put(cs[0], "m", "cap_a_m", "5.50") || !put(cs[1], "m", "cap_b_m", "1") {
		t.Fatal("creations not reported as such")
	}
	if put(cs[0], "z", "cap_ignored", "12") {
		t.Fatal("a replace reported as a creation")
	}
	p := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	b := store.UsageBatch{TenantID: ten, EnvironmentID: env, InstanceID: "i", Sequence: 1}
	for i, u := range []struct {
		key   string
		start time.Time
		units string
	}{{"cap_a_z", p, "1.5"}, {"cap_a_z", p, "2"}, {"cap_a_z", p.AddDate(0, 0, -1), "4"}, {"cap_a_z", p.AddDate(0, 0, -2), "8"}, {"cap_b_m", p, "-0.25"}} {
		cust := cs[0]
		if i == 4 {
			cust = cs[1]
		}
		b.CapUses = append(b.CapUses, store.CapUse{CustomerID: cust.ID, CustomerUID: cust.UID, CapKey: u.key, PeriodStart: u.start, Units: num.MustParse(u.units)})
	}
	if dup, err := store.CommitUsageBatch(ctx, pool, &b, nil, func(context.Context, store.DBTX, map[string]store.UsageCustomer) error { return nil }); err != nil || dup {
		t.Fatalf("commit: %v %v", dup, err)
	}
	list, err := store.ListCustomers(ctx, pool, ten, env, "", 10)
	if err != nil || len(list) != 3 {
		t.Fatalf("list: %d %v", len(list), err)
	}
	a, bb, c := list[0], list[1], list[2]
	if len(a.Caps) != 2 || a.Caps[0].ID != "m" || a.Caps[1].ID != "z" || c.Caps != nil || len(bb.Caps) != 1 {
		t.Fatalf("caps %+v / %+v / %+v", a.Caps, bb.Caps, c.Caps)
	}
	z := a.Caps[1]
	if z.Key != "cap_a_z" || z.Value != "12" || z.Credit != "rune" || !z.Resets || z.ResetInc != "1day" || len(z.Scope) != 1 ||
		len(z.Usage) != 2 || z.Usage[0].Units != "3.5" || !z.Usage[0].PeriodStart.Equal(p) || z.Usage[1].Units != "4" {
		t.Fatalf("cap z = %+v", z)
	}
	if m := a.Caps[0]; m.Value != "5.5" || m.Usage == nil || len(m.Usage) != 0 {
		t.Fatalf("cap m = %+v", m)
	}
	if u := bb.Caps[0].Usage; len(u) != 1 || u[0].Units != "-0.25" {
		t.Fatalf("b's usage %+v", u)
	}
	// Reset: a new key, nothing consumed under it.
	if err := inTx(t, pool, func(tx pgx.Tx) error {
		return store.ResetCap(ctx, tx, ten, env, "a", "z", "cap_a_z2", nil)
	}); err != nil {
		t.Fatal(err)
	}
	got, err := store.GetCustomer(ctx, pool, ten, env, "a", false)
	if err != nil || got.Caps[1].Key != "cap_a_z2" || len(got.Caps[1].Usage) != 0 || !got.Caps[1].ResetAt.After(got.Caps[1].CreatedAt) {
		t.Fatalf("after reset %+v %v", got.Caps, err)
	}
	for _, f := range []func(tx pgx.Tx) error{
		func(tx pgx.Tx) error { return store.ResetCap(ctx, tx, ten, env, "a", "nope", "cap_x", nil) },
		func(tx pgx.Tx) error { return store.DeleteCap(ctx, tx, ten, env, "c", "m") },
	} {
		if err := inTx(t, pool, f); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("missing cap: %v", err)
		}
	}
	if err := inTx(t, pool, func(tx pgx.Tx) error { return store.DeleteCap(ctx, tx, ten, env, "a", "z") }); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := pool.QueryRow(ctx, `select count(*) from cap_usage_totals where cap_key = 'cap_a_z'`).Scan(&n); err != nil || n != 3 {
		t.Fatalf("the removed cap's use: %d rows, %v", n, err)
	}
}

// A leased batch's cap uses go to the instance's cap leases of the same key and period
// (and incarnation), its deltas to its meter leases; nothing else moves.
func TestCommitLeasedCapUses(t *testing.T) {
	pool, ten, envID := customerFixture(t)
	ctx := context.Background()
	env := store.Environment{ID: envID, TenantID: ten}
	period := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	uid, other := uuid.New(), uuid.New()
	now := time.Now().UTC()
	grant := func(instance string, ms ...store.LeaseMeter) {
		t.Helper()
		var asks []store.LeaseAsk
		for _, m := range ms {
			asks = append(asks, store.LeaseAsk{LeaseMeter: m, Limit: "100", Target: "10", Used: "0"})
		}
		if err := inTx(t, pool, func(tx pgx.Tx) error {
			_, err := store.GrantLeases(ctx, tx, env, instance, asks, now, now.Add(time.Minute))
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	capM := store.LeaseMeter{CustomerID: "c1", CustomerUID: uid, CapKey: "cap_1", PeriodStart: period}
	meter := store.LeaseMeter{CustomerID: "c1", CustomerUID: uid, Entitlement: "tokens", PeriodStart: period}
	grant("i-1", capM, meter)
	grant("i-2", capM)
	u := func(key, units string, id uuid.UUID) store.CapUse {
		return store.CapUse{CustomerID: "c1", CustomerUID: id, CapKey: key, PeriodStart: period, Units: num.MustParse(units)}
	}
	b := store.UsageBatch{TenantID: ten, EnvironmentID: envID, InstanceID: "i-1", Sequence: 1,
		Deltas:  []store.UsageDelta{{CustomerID: "c1", CustomerUID: uid, Entitlement: "tokens", Credit: "tok", PeriodStart: period, Units: num.MustParse("6")}},
		CapUses: []store.CapUse{u("cap_1", "2.5", uid), u("cap_1", "1", uid), u("cap_2", "7", uid), u("cap_1", "9", other)}}
	if err := inTx(t, pool, func(tx pgx.Tx) error { return store.CommitLeasedUsage(ctx, tx, b) }); err != nil {
		t.Fatal(err)
	}
	rows, err := pool.Query(ctx, `select instance_id, entitlement, cap_key, committed::text from fleet_leases order by 1, 2, 3`)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for rows.Next() {
		var inst, ent, key, c string
		if err := rows.Scan(&inst, &ent, &key, &c); err != nil {
			t.Fatal(err)
		}
		got[inst+"/"+ent+"/"+key] = c
	}
	rows.Close()
	want := map[string]string{"i-1//cap_1": "3.5", "i-1/tokens/": "6", "i-2//cap_1": "0"}
	if len(got) != len(want) {
		t.Fatalf("rows %v, want %v", got, want)
	}
	for k, v := range want {
		if num.MustParse(got[k]).Cmp(num.MustParse(v)) != 0 {
			t.Errorf("%s committed %s, want %s", k, got[k], v)
		}
	}
}
