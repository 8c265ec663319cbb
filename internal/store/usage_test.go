package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/store"
	"github.com/limitr/limitr/internal/wire"
)

func usageCount(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestUsageBatchInsertOnce(t *testing.T) {
	pool, ten, env := customerFixture(t)
	ctx := context.Background()
	period := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	c1, c2 := uuid.New(), uuid.New()
	b := store.UsageBatch{TenantID: ten, EnvironmentID: env, InstanceID: "i-1", Sequence: 1, PolicyVersion: 3,
		Deltas: []store.UsageDelta{
			{CustomerID: "c1", CustomerUID: c1, Entitlement: "tokens", Credit: "tok", PeriodStart: period,
				Units: num.MustParse("12.5"), Overhead: num.MustParse("0.0000375"), Price: num.MustParse("-0.1"), Calls: 2},
			{CustomerID: "c2", CustomerUID: c2, Entitlement: "tokens", Credit: "tok", PeriodStart: period,
				Units: num.MustParse("-3"), Overhead: num.Zero, Price: num.Zero, Calls: 0},
		},
		Events: []store.UsageEvent{{EventID: "e1", CustomerID: "c1", CustomerUID: c1, Entitlement: "tokens", Units: num.MustParse("12.5"),
			Overhead: num.MustParse("0.0000375"), Allowed: true, At: period.Add(time.Hour)}},
	}
	insert := func(b store.UsageBatch) bool {
		t.Helper()
		var dup bool
		if err := inTx(t, pool, func(tx pgx.Tx) error {
			var err error
			dup, err = store.InsertUsageBatch(ctx, tx, b)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return dup
	}
	if insert(b) {
		t.Fatal("first insert reported a duplicate")
	}
	if !insert(b) {
		t.Fatal("second insert of the same key was not a duplicate")
	}
	if n := usageCount(t, pool, `select count(*) from usage_deltas`); n != 2 {
		t.Fatalf("%d delta rows, want 2", n)
	}
	if n := usageCount(t, pool, `select count(*) from usage_events`); n != 1 {
		t.Fatalf("%d event rows, want 1", n)
	}
	var units, overhead, price string
	if err := pool.QueryRow(ctx, `select units::text, overhead::text, price::text from usage_deltas where customer_id = 'c1'`).Scan(&units, &overhead, &price); err != nil {
		t.Fatal(err)
	}
	if units != "12.5" || overhead != "0.0000375" || price != "-0.1" {
		t.Fatalf("stored %s %s %s", units, overhead, price)
	}
	// The same sequence from another instance is another batch.
	b2 := b
	b2.InstanceID = "i-2"
	if insert(b2) {
		t.Fatal("another instance's batch was a duplicate")
	}
	if n := usageCount(t, pool, `select count(*) from usage_batches`); n != 2 {
		t.Fatalf("%d batches, want 2", n)
	}
	done, err := store.UsageBatchCommitted(ctx, pool, ten, env, "i-2", 1)
	if err != nil || !done {
		t.Fatalf("committed: %v %v", done, err)
	}
	done, err = store.UsageBatchCommitted(ctx, pool, ten, env, "i-2", 2)
	if err != nil || done {
		t.Fatalf("uncommitted: %v %v", done, err)
	}
	// A failing transaction leaves nothing: the batch key is free again.
	b3 := b
	b3.Sequence = 9
	b3.Events = append(b3.Events, b3.Events[0]) // duplicate event id: primary key violation
	if err := inTx(t, pool, func(tx pgx.Tx) error {
		_, err := store.InsertUsageBatch(ctx, tx, b3)
		return err
	}); err == nil {
		t.Fatal("duplicate event ids were accepted")
	}
	if done, _ := store.UsageBatchCommitted(ctx, pool, ten, env, "i-1", 9); done {
		t.Fatal("a failed batch left its key")
	}
}

func TestResolveUsageCustomers(t *testing.T) {
	pool, ten, env := customerFixture(t)
	ctx := context.Background()
	anchor := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, c := range []store.Customer{{Customer: wire.Customer{ID: "alice", AltIDs: []string{"cus_alice"}, BillingAnchor: anchor}},
		{Customer: wire.Customer{ID: "bob", BillingAnchor: anchor}}} {
		if err := insert(t, pool, ten, env, &c); err != nil {
			t.Fatal(err)
		}
	}
	other, err := store.CreateEnvironment(ctx, pool, ten, "staging", false)
	if err != nil {
		t.Fatal(err)
	}
	if err := insert(t, pool, ten, other.ID, &store.Customer{Customer: wire.Customer{ID: "carol", BillingAnchor: anchor}}); err != nil {
		t.Fatal(err)
	}
	got, err := store.ResolveUsageCustomers(ctx, pool, ten, env, []string{"alice", "cus_alice", "bob", "carol", "nobody"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got["alice"].ID != "alice" || got["cus_alice"].ID != "alice" || got["bob"].ID != "bob" || got["alice"].CreatedAt.IsZero() ||
		got["alice"].UID == uuid.Nil || got["alice"].UID != got["cus_alice"].UID || got["alice"].UID == got["bob"].UID {
		t.Fatalf("resolved %+v", got)
	}
	got, err = store.ResolveUsageCustomers(ctx, pool, uuid.New(), env, []string{"alice"})
	if err != nil || len(got) != 0 {
		t.Fatalf("another tenant resolved %+v %v", got, err)
	}
}

func TestCommittedTotals(t *testing.T) {
	pool, ten, env := customerFixture(t)
	ctx := context.Background()
	p := func(m time.Month) time.Time { return time.Date(2025, m, 1, 0, 0, 0, 0, time.UTC) }
	// c1 is the customer; c1old a deleted customer with the same id, whose usage must
	// not count.
	c1, c1old, c2 := uuid.New(), uuid.New(), uuid.New()
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{`insert into meter_aggregates (tenant_id, environment_id, customer_id, customer_uid, entitlement, period_start, credit, units, overhead, price, calls)
			values ($1, $2, 'c1', $6, 'tokens', $3, 'tok', 100.50, 0.3, 1, 3), ($1, $2, 'c1', $6, 'tokens', $4, 'tok', 7, 0, 0, 1),
			($1, $2, 'c1', $6, 'tokens', $5, 'tok', 1, 0, 0, 1), ($1, $2, 'c2', $7, 'tokens', $3, 'tok', 999, 0, 0, 1),
			($1, $2, 'c1', $8, 'tokens', $3, 'tok', 5000, 0, 0, 1)`,
			[]any{ten, env, p(3), p(2), p(1), c1, c2, c1old}},
		// pending rows for the newest period and a new entitlement; an aggregated row
		// that must not count twice; another environment's row.
		{`insert into usage_deltas (tenant_id, environment_id, instance_id, sequence, customer_id, customer_uid, entitlement, credit, period_start, units, overhead, price, calls, aggregated_at)
			values ($1, $2, 'i', 1, 'c1', $5, 'tokens', 'tok', $3, 0.25, 0.0001, 0.5, 1, null),
			       ($1, $2, 'i', 1, 'c1', $5, 'tokens', 'tok', $3, -0.75, 0, 0, 1, null),
			       ($1, $2, 'i', 1, 'c1', $5, 'tokens', 'tok', $3, 1000, 0, 0, 1, now()),
			       ($1, $2, 'i', 1, 'c1', $5, 'seats', 'seat', $3, 2, 0, 0, 1, null),
			       ($1, $2, 'i', 1, 'c1', $6, 'seats', 'seat', $3, 77, 0, 0, 1, null),
			       ($1, $4, 'i', 1, 'c1', $7, 'seats', 'seat', $3, 50, 0, 0, 1, null)`,
			[]any{ten, env, p(3), uuid.New(), c1, c1old, uuid.New()}},
	} {
		if _, err := pool.Exec(ctx, q.sql, q.args...); err != nil {
			t.Fatal(err)
		}
	}
	got, err := store.CommittedTotals(ctx, pool, c1, 2)
	if err != nil {
		t.Fatal(err)
	}
	want := []store.MeterTotal{
		{Entitlement: "seats", Credit: "seat", PeriodStart: p(3), Units: "2", Overhead: "0", Price: "0", Calls: 1},
		{Entitlement: "tokens", Credit: "tok", PeriodStart: p(3), Units: "100", Overhead: "0.3001", Price: "1.5", Calls: 5},
		{Entitlement: "tokens", Credit: "tok", PeriodStart: p(2), Units: "7", Overhead: "0", Price: "0", Calls: 1},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v", got)
	}
	for i := range want {
		g := got[i]
		if !g.PeriodStart.Equal(want[i].PeriodStart) {
			t.Fatalf("total %d: period %s, want %s", i, g.PeriodStart, want[i].PeriodStart)
		}
		g.PeriodStart = want[i].PeriodStart
		if g != want[i] {
			t.Fatalf("total %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
	none, err := store.CommittedTotals(ctx, pool, uuid.New(), 2)
	if err != nil || len(none) != 0 {
		t.Fatalf("unknown customer: %+v %v", none, err)
	}
}

func TestLatestChangeID(t *testing.T) {
	pool, ten, env := customerFixture(t)
	ctx := context.Background()
	if id, err := store.LatestChangeID(ctx, pool, ten, env); err != nil || id != 0 {
		t.Fatalf("empty feed: %d %v", id, err)
	}
	var last int64
	for range 3 {
		id, err := store.AppendChange(ctx, pool, ten, env, "customer", "c1", map[string]any{"op": "upsert"})
		if err != nil {
			t.Fatal(err)
		}
		last = id
	}
	if id, err := store.LatestChangeID(ctx, pool, ten, env); err != nil || id != last {
		t.Fatalf("latest %d, want %d (%v)", id, last, err)
	}
}
