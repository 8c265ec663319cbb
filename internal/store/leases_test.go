package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/store"
)

// A leased batch adds its deltas' units, summed per meter, to the committed part of
// the instance's own leases of the same customer incarnation, and to nothing else.
func TestCommitLeasedUsage(t *testing.T) {
	pool, ten, envID := customerFixture(t)
	ctx := context.Background()
	env := store.Environment{ID: envID, TenantID: ten}
	period := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	uid, other := uuid.New(), uuid.New()
	now := time.Now().UTC()
	grant := func(instance string, m store.LeaseMeter) store.LeaseGrant {
		t.Helper()
		var g []store.LeaseGrant
		if err := inTx(t, pool, func(tx pgx.Tx) error {
			var err error
			g, err = store.GrantLeases(ctx, tx, env, instance, []store.LeaseAsk{{LeaseMeter: m, Limit: "100", Target: "10", Used: "0"}}, now, now.Add(time.Minute))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return g[0]
	}
	m := store.LeaseMeter{CustomerID: "c1", CustomerUID: uid, Entitlement: "tokens", PeriodStart: period}
	if g := grant("i-1", m); g.Granted != "10" || g.Available != "90" || g.Previous != "0" {
		t.Fatalf("grant %+v", g)
	}
	if g := grant("i-2", m); g.Granted != "10" || g.Available != "80" {
		t.Fatalf("grant %+v", g)
	}
	d := func(cust string, u uuid.UUID, ent, units string) store.UsageDelta {
		return store.UsageDelta{CustomerID: cust, CustomerUID: u, Entitlement: ent, Credit: "tok", PeriodStart: period,
			Units: num.MustParse(units), Overhead: num.Zero, Price: num.Zero, GrantCovered: num.Zero}
	}
	b := store.UsageBatch{TenantID: ten, EnvironmentID: envID, InstanceID: "i-1", Sequence: 1, Deltas: []store.UsageDelta{
		d("c1", uid, "tokens", "2.5"), d("c1", uid, "tokens", "1"), d("c1", uid, "other", "7"), d("c1", other, "tokens", "9")}}
	if err := inTx(t, pool, func(tx pgx.Tx) error { return store.CommitLeasedUsage(ctx, tx, b) }); err != nil {
		t.Fatal(err)
	}
	var c1, c2 string
	if err := pool.QueryRow(ctx, `select (select committed::text from fleet_leases where instance_id = 'i-1'),
		(select committed::text from fleet_leases where instance_id = 'i-2')`).Scan(&c1, &c2); err != nil {
		t.Fatal(err)
	}
	if c1 != "3.5" || c2 != "0" {
		t.Fatalf("committed %s and %s, want 3.5 and 0", c1, c2)
	}
	// The renewal reports it; another incarnation's lease of the id starts afresh.
	if g := grant("i-1", m); g.Granted != "10" || g.Committed != "3.5" || g.Previous != "10" {
		t.Fatalf("renewal %+v", g)
	}
	m.CustomerUID = other
	if g := grant("i-1", m); g.Granted != "10" || g.Committed != "0" || g.Previous != "0" || g.Available != "90" {
		t.Fatalf("a re-created customer's lease %+v", g)
	}
	if n, err := store.ReturnLeases(ctx, pool, env, "i-1"); err != nil || n != 1 {
		t.Fatalf("return: %d %v", n, err)
	}
}
