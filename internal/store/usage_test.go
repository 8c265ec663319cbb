package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
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

// attributed leaves a batch's records as they are: their customers are set already.
func attributed(context.Context, store.DBTX, map[string]store.UsageCustomer) error { return nil }

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
		dup, err := store.CommitUsageBatch(ctx, pool, &b, nil, attributed)
		if err != nil {
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
	if _, err := store.CommitUsageBatch(ctx, pool, &b3, nil, attributed); err == nil {
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

// CommitUsageBatch resolves the batch's names in its first round trip, hands them to
// attribute inside the transaction, and counts in the batch's row what attribution
// kept. A failure in the last round trip leaves nothing, and the key free; a duplicate
// leaves no transaction open on the connection.
func TestCommitUsageBatchAttributes(t *testing.T) {
	pool, ten, env := customerFixture(t)
	ctx := context.Background()
	anchor := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := insert(t, pool, ten, env, &store.Customer{Customer: wire.Customer{ID: "alice", AltIDs: []string{"cus_alice"}, BillingAnchor: anchor}}); err != nil {
		t.Fatal(err)
	}
	period := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	delta := func(customer string) store.UsageDelta {
		return store.UsageDelta{CustomerID: customer, Entitlement: "tokens", Credit: "tok", PeriodStart: period,
			Units: num.MustParse("1"), Overhead: num.Zero, Price: num.Zero, GrantCovered: num.Zero, Calls: 1}
	}
	batch := func(seq int64) store.UsageBatch {
		return store.UsageBatch{TenantID: ten, EnvironmentID: env, InstanceID: "i-1", Sequence: seq,
			Deltas: []store.UsageDelta{delta("cus_alice"), delta("ghost")}}
	}
	attribute := func(_ context.Context, tx store.DBTX, found map[string]store.UsageCustomer) error {
		if len(found) != 1 || found["cus_alice"].ID != "alice" {
			t.Fatalf("found %+v", found)
		}
		var n int
		if err := tx.QueryRow(ctx, `select count(*) from usage_batches where sequence = 1`).Scan(&n); err != nil || n != 1 {
			t.Fatalf("the batch's row is not visible to attribute: %d %v", n, err)
		}
		return nil
	}
	keepAlice := func(b *store.UsageBatch) store.AttributeFunc {
		return func(ctx context.Context, tx store.DBTX, found map[string]store.UsageCustomer) error {
			if err := attribute(ctx, tx, found); err != nil {
				return err
			}
			c := found["cus_alice"]
			b.Deltas = []store.UsageDelta{b.Deltas[0]}
			b.Deltas[0].CustomerID, b.Deltas[0].CustomerUID = c.ID, c.UID
			b.Unattributed = []store.Unattributed{{Kind: wire.RecordDelta, Index: 1, Customer: "ghost", Reason: wire.ReasonUnknownCustomer, Record: []byte(`{"customer":"ghost"}`)}}
			return nil
		}
	}
	b := batch(1)
	if dup, err := store.CommitUsageBatch(ctx, pool, &b, []string{"cus_alice", "ghost"}, keepAlice(&b)); err != nil || dup {
		t.Fatalf("commit: %v %v", dup, err)
	}
	if n := usageCount(t, pool, `select deltas from usage_batches where sequence = 1`); n != 1 {
		t.Fatalf("the batch's row counts %d deltas, want 1", n)
	}
	if n := usageCount(t, pool, `select count(*) from usage_deltas where customer_id = 'alice'`); n != 1 {
		t.Fatalf("%d deltas of alice, want 1", n)
	}
	if n := usageCount(t, pool, `select count(*) from unattributed_usage where customer = 'ghost'`); n != 1 {
		t.Fatalf("%d unattributed records, want 1", n)
	}

	// A record Postgres refuses in the last round trip (not JSON) fails the batch.
	b2 := batch(2)
	bad := func(ctx context.Context, tx store.DBTX, found map[string]store.UsageCustomer) error {
		b2.Deltas = b2.Deltas[:1]
		b2.Deltas[0].CustomerUID = found["cus_alice"].UID
		b2.Unattributed = []store.Unattributed{{Kind: wire.RecordDelta, Index: 1, Customer: "ghost", Reason: wire.ReasonUnknownCustomer, Record: []byte(`{`)}}
		return nil
	}
	if _, err := store.CommitUsageBatch(ctx, pool, &b2, []string{"cus_alice"}, bad); err == nil {
		t.Fatal("an unattributed record that is not JSON was accepted")
	}
	if n := usageCount(t, pool, `select count(*) from usage_batches where sequence = 2`) + usageCount(t, pool, `select count(*) from usage_deltas where sequence = 2`); n != 0 {
		t.Fatalf("a failed batch left %d rows", n)
	}

	// Duplicates: attribute is not called, and their connections are rolled back and
	// reused (the pool would replace one released in a transaction).
	conns := pool.Stat().NewConnsCount()
	// Enough of them that a connection runs the resolving statement six times, after
	// which Postgres may switch a prepared statement to its generic plan: ingest plans
	// it with its parameters instead (see resolveUsageCustomers).
	for range 6*int(pool.Config().MaxConns) + 1 {
		b := batch(1)
		dup, err := store.CommitUsageBatch(ctx, pool, &b, []string{"cus_alice"}, func(context.Context, store.DBTX, map[string]store.UsageCustomer) error {
			t.Fatal("attribute was called for a duplicate")
			return nil
		})
		if err != nil || !dup {
			t.Fatalf("duplicate: %v %v", dup, err)
		}
	}
	// A panic in attribute rolls back too.
	func() {
		defer func() { _ = recover() }()
		b := batch(3)
		_, _ = store.CommitUsageBatch(ctx, pool, &b, []string{"cus_alice"}, func(context.Context, store.DBTX, map[string]store.UsageCustomer) error {
			panic("attribute")
		})
		t.Fatal("the panic did not reach the caller")
	}()
	if n := pool.Stat().NewConnsCount() - conns; n > 1 {
		t.Errorf("%d new connections for batches run one at a time: they were not rolled back", n)
	}
	for _, c := range pool.AcquireAllIdle(ctx) {
		if s := c.Conn().PgConn().TxStatus(); s != 'I' {
			t.Errorf("a pooled connection is in transaction state %c", s)
		}
		var generic int
		if err := c.QueryRow(ctx, `select coalesce(sum(generic_plans), 0) from pg_prepared_statements where statement like '%a.alt_id = any($3::text[])%' and statement not like '%pg_prepared_statements%'`).Scan(&generic); err != nil || generic != 0 {
			t.Errorf("resolving customers took %d generic plans (%v)", generic, err)
		}
		c.Release()
	}
}
