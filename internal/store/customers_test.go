package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/limitr/limitr/internal/platform/pgtest"
	"github.com/limitr/limitr/internal/store"
	"github.com/limitr/limitr/internal/wire"
)

func customerFixture(t *testing.T) (*pgxpool.Pool, uuid.UUID, uuid.UUID) {
	t.Helper()
	_, pool := pgtest.NewMigrated(t)
	ctx := context.Background()
	ten, err := store.CreateTenant(ctx, pool, "acme-"+uuid.NewString()[:8], "Acme")
	if err != nil {
		t.Fatal(err)
	}
	env, err := store.CreateEnvironment(ctx, pool, ten.ID, "production", true)
	if err != nil {
		t.Fatal(err)
	}
	return pool, ten.ID, env.ID
}

func inTx(t *testing.T, pool *pgxpool.Pool, fn func(tx pgx.Tx) error) error {
	t.Helper()
	return store.New(pool).InTx(context.Background(), fn)
}

func insert(t *testing.T, pool *pgxpool.Pool, ten, env uuid.UUID, c *store.Customer) error {
	t.Helper()
	return inTx(t, pool, func(tx pgx.Tx) error {
		names := append([]string{c.ID}, c.AltIDs...)
		if err := store.LockCustomerNames(context.Background(), tx, env, names...); err != nil {
			return err
		}
		return store.InsertCustomer(context.Background(), tx, ten, env, c)
	})
}

func TestCustomerStoreLifecycle(t *testing.T) {
	pool, ten, env := customerFixture(t)
	ctx := context.Background()
	anchor := time.Date(2025, 1, 31, 12, 0, 0, 0, time.UTC)
	c := store.Customer{Customer: wire.Customer{ID: "org_1", Plan: "base", Type: "org", Label: "Org", AltIDs: []string{"stripe_cus_1"},
		Metadata: json.RawMessage(`{"tier":"gold"}`), Timezone: "Europe/Paris", BillingAnchor: anchor}}
	if err := insert(t, pool, ten, env, &c); err != nil {
		t.Fatal(err)
	}
	if c.Revision != 1 || c.CreatedAt.IsZero() {
		t.Fatalf("insert did not fill revision/created_at: %+v", c)
	}

	// By id and by alt id.
	for _, key := range []string{"org_1", "stripe_cus_1"} {
		got, err := store.GetCustomer(ctx, pool, ten, env, key, false)
		if err != nil {
			t.Fatalf("get %q: %v", key, err)
		}
		if got.ID != "org_1" || got.Type != "org" || !got.BillingAnchor.Equal(anchor) || got.Timezone != "Europe/Paris" {
			t.Fatalf("get %q = %+v", key, got)
		}
		if len(got.AltIDs) != 1 || got.AltIDs[0] != "stripe_cus_1" {
			t.Fatalf("alt ids = %v", got.AltIDs)
		}
	}
	if _, err := store.GetCustomer(ctx, pool, ten, env, "nope", false); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown customer: %v", err)
	}
	// Another tenant sees nothing.
	if _, err := store.GetCustomer(ctx, pool, uuid.New(), env, "org_1", false); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("other tenant: %v", err)
	}

	// Conflicts: the id again, an alt id that is a customer's id, an id that is an alt id.
	dup := store.Customer{Customer: wire.Customer{ID: "org_1", BillingAnchor: anchor}}
	if err := insert(t, pool, ten, env, &dup); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("duplicate id: %v", err)
	}
	var ae *store.AltIDConflictError
	u := store.Customer{Customer: wire.Customer{ID: "user_1", AltIDs: []string{"x", "org_1"}, BillingAnchor: anchor}}
	if err := insert(t, pool, ten, env, &u); !errors.As(err, &ae) || ae.Field != "alt_ids[1]" || ae.Owner != "org_1" {
		t.Fatalf("alt id = existing id: %v", err)
	}
	u = store.Customer{Customer: wire.Customer{ID: "stripe_cus_1", BillingAnchor: anchor}}
	if err := insert(t, pool, ten, env, &u); !errors.As(err, &ae) || ae.Field != "id" {
		t.Fatalf("id = existing alt id: %v", err)
	}
	u = store.Customer{Customer: wire.Customer{ID: "user_1", Refs: []string{"org_1"}, AltIDs: []string{"stripe_cus_1"}, BillingAnchor: anchor}}
	if err := insert(t, pool, ten, env, &u); !errors.As(err, &ae) || ae.Name != "stripe_cus_1" {
		t.Fatalf("alt id = existing alt id: %v", err)
	}
	u.AltIDs = nil
	if err := insert(t, pool, ten, env, &u); err != nil {
		t.Fatal(err)
	}

	// Update bumps the revision.
	err := inTx(t, pool, func(tx pgx.Tx) error {
		cur, err := store.GetCustomer(ctx, tx, ten, env, "org_1", true)
		if err != nil {
			return err
		}
		cur.Label = "Renamed"
		if err := store.UpdateCustomer(ctx, tx, ten, env, &cur); err != nil {
			return err
		}
		if cur.Revision != 2 {
			return fmt.Errorf("revision after update = %d", cur.Revision)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// Overrides: put, replace, hide when expired, delete.
	err = inTx(t, pool, func(tx pgx.Tx) error {
		if err := store.PutOverride(ctx, tx, ten, env, "org_1", store.CustomerOverride{Entitlement: "seats", Spec: json.RawMessage(`{"value":"20"}`)}); err != nil {
			return err
		}
		if err := store.PutOverride(ctx, tx, ten, env, "org_1", store.CustomerOverride{Entitlement: "seats", Spec: json.RawMessage(`{"value":"30"}`)}); err != nil {
			return err
		}
		past := time.Now().Add(-time.Hour)
		return store.PutOverride(ctx, tx, ten, env, "org_1", store.CustomerOverride{Entitlement: "old", Spec: json.RawMessage(`{"value":"1"}`), ExpiresAt: &past})
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := store.GetCustomer(ctx, pool, ten, env, "org_1", false)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Overrides) != 1 || string(got.Overrides["seats"]) != `{"value": "30"}` {
		t.Fatalf("overrides = %s", mustJSON(got.Overrides))
	}

	// Topups keep exact decimals.
	kid := uuid.New()
	tp := store.CustomerTopup{Topup: "pack", GrantID: "lgrnt_abc", Credit: "ai_credit", Value: "0.000000000000000001",
		Price: "4.99", Currency: "rune", AppliedBy: kid.String()}
	err = inTx(t, pool, func(tx pgx.Tx) error { return store.InsertTopup(ctx, tx, ten, env, "org_1", &tp) })
	if err != nil {
		t.Fatal(err)
	}
	free := store.CustomerTopup{Topup: "gift", GrantID: "lgrnt_def", Credit: "ai_credit", Value: "12345678901234567890.5"}
	err = inTx(t, pool, func(tx pgx.Tx) error { return store.InsertTopup(ctx, tx, ten, env, "org_1", &free) })
	if err != nil {
		t.Fatal(err)
	}
	got, _ = store.GetCustomer(ctx, pool, ten, env, "org_1", false)
	if len(got.Topups) != 2 || got.Topups[0].Value != "0.000000000000000001" || got.Topups[0].Price != "4.99" ||
		got.Topups[0].AppliedBy != kid.String() || got.Topups[1].Price != "" || got.Topups[1].Value != "12345678901234567890.5" {
		t.Fatalf("topups = %s", mustJSON(got.Topups))
	}

	// Delete cascades, and keeps the record under the customer's uid.
	org, err := store.GetCustomer(ctx, pool, ten, env, "org_1", false)
	if err != nil || org.UID == uuid.Nil {
		t.Fatalf("uid: %v %v", org.UID, err)
	}
	by := uuid.New()
	err = inTx(t, pool, func(tx pgx.Tx) error { return store.DeleteCustomer(ctx, tx, ten, env, org, &by) })
	if err != nil {
		t.Fatal(err)
	}
	var kept wire.Customer
	var deletedBy uuid.UUID
	if err := pool.QueryRow(ctx, `select record, deleted_by from deleted_customers where uid = $1`, org.UID).Scan(&kept, &deletedBy); err != nil ||
		kept.ID != "org_1" || len(kept.Topups) != 2 || deletedBy != by {
		t.Fatalf("deleted record = %+v by %v: %v", kept, deletedBy, err)
	}
	for _, table := range []string{"customer_alt_ids", "customer_overrides", "customer_topups"} {
		var n int
		if err := pool.QueryRow(ctx, "select count(*) from "+table+" where customer_id = 'org_1'").Scan(&n); err != nil || n != 0 {
			t.Fatalf("%s rows after delete: %d %v", table, n, err)
		}
	}
	err = inTx(t, pool, func(tx pgx.Tx) error { return store.DeleteCustomer(ctx, tx, ten, env, org, nil) })
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	// The alt id is free again.
	again := store.Customer{Customer: wire.Customer{ID: "stripe_cus_1", BillingAnchor: anchor}}
	if err := insert(t, pool, ten, env, &again); err != nil {
		t.Fatal(err)
	}
	// And the id too, under a new uid.
	reborn := store.Customer{Customer: wire.Customer{ID: "org_1", BillingAnchor: anchor}}
	if err := insert(t, pool, ten, env, &reborn); err != nil || reborn.UID == org.UID || reborn.UID == uuid.Nil {
		t.Fatalf("re-created uid %v (old %v): %v", reborn.UID, org.UID, err)
	}
}

func TestCustomerStoreListAndProfiles(t *testing.T) {
	pool, ten, env := customerFixture(t)
	ctx := context.Background()
	want := []string{}
	for i := range 7 {
		id := fmt.Sprintf("c%02d", i)
		want = append(want, id)
		c := store.Customer{Customer: wire.Customer{ID: id, Plan: "p", Refs: []string{"c00"}, BillingAnchor: time.Now()}}
		if i == 0 {
			c.Refs = nil
		}
		if err := insert(t, pool, ten, env, &c); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	after := ""
	for pages := 0; ; pages++ {
		if pages > 5 {
			t.Fatal("pagination does not end")
		}
		cs, err := store.ListCustomers(ctx, pool, ten, env, after, 3)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cs {
			got = append(got, c.ID)
		}
		if len(cs) < 3 {
			break
		}
		after = cs[len(cs)-1].ID
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("listed %v, want %v", got, want)
	}
	profs, err := store.CustomerProfiles(ctx, pool, ten, env, []string{"c00", "c03", "missing"})
	if err != nil {
		t.Fatal(err)
	}
	if len(profs) != 2 || profs["c03"].Refs[0] != "c00" {
		t.Fatalf("profiles = %+v", profs)
	}
	// Other tenants' rows never appear.
	cs, err := store.ListCustomers(ctx, pool, uuid.New(), env, "", 50)
	if err != nil || len(cs) != 0 {
		t.Fatalf("other tenant list = %v %v", cs, err)
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
