package retention_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/limitr/limitr/internal/partitions"
	"github.com/limitr/limitr/internal/platform/pgtest"
	"github.com/limitr/limitr/internal/retention"
	"github.com/limitr/limitr/internal/store"
)

func count(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func exec(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) {
	t.Helper()
	if _, err := pool.Exec(context.Background(), sql, args...); err != nil {
		t.Fatal(err)
	}
}

func TestRunRemovesWhatIsPastItsTime(t *testing.T) {
	t.Parallel()
	_, pool := pgtest.NewMigrated(t)
	ctx := context.Background()
	ten, err := store.CreateTenant(ctx, pool, "acme", "Acme")
	if err != nil {
		t.Fatal(err)
	}
	var envs [2]store.Environment
	for i, name := range []string{"production", "staging"} {
		if envs[i], err = store.CreateEnvironment(ctx, pool, ten.ID, name, false); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	day := 24 * time.Hour
	// Idempotency records: one past 24 hours, one fresh.
	exec(t, pool, `insert into idempotency_keys (tenant_id, principal, key, method, path, request_hash, created_at)
		values ('t', 'p', 'old', 'POST', '/x', '\x00', $1), ('t', 'p', 'new', 'POST', '/x', '\x00', $2)`, now.Add(-25*time.Hour), now)
	// Usage-batch keys: 40 and 10 days old.
	exec(t, pool, `insert into usage_batches (tenant_id, environment_id, instance_id, sequence, deltas, received_at)
		values ($1, $2, 'i', 1, 0, $3), ($1, $2, 'i', 2, 0, $4)`, ten.ID, envs[0].ID, now.Add(-40*day), now.Add(-10*day))
	// Change feed: in production, three old entries and a fresh one; in staging only old ones.
	var ids []int64
	for _, c := range []struct {
		env int
		at  time.Time
	}{{0, now.Add(-9 * day)}, {1, now.Add(-9 * day)}, {0, now.Add(-8 * day)}, {0, now.Add(-8 * day)}, {1, now.Add(-8 * day)}, {0, now}} {
		id, err := store.AppendChange(ctx, pool, ten.ID, envs[c.env].ID, "customer", "c1", map[string]any{"op": "upsert"})
		if err != nil {
			t.Fatal(err)
		}
		exec(t, pool, `update change_feed set created_at = $2 where id = $1`, id, c.at)
		ids = append(ids, id)
	}
	// Audit log: 500 days and 1 day old. Unattributed usage: 100 days and 1 day old.
	exec(t, pool, `insert into audit_log (tenant_id, action, resource, resource_id, at) values ($1, 'x', 'y', 'z', $2), ($1, 'x', 'y', 'z', $3)`,
		ten.ID, now.Add(-500*day), now.Add(-day))
	exec(t, pool, `insert into unattributed_usage (tenant_id, environment_id, instance_id, sequence, kind, index, customer, reason, record, received_at)
		values ($1, $2, 'i', 1, 'delta', 0, 'ghost', 'unknown_customer', '{}', $3), ($1, $2, 'i', 1, 'delta', 1, 'ghost', 'unknown_customer', '{}', $4)`,
		ten.ID, envs[0].ID, now.Add(-100*day), now.Add(-day))
	// Forwarded SDK events and their batch keys: 100 days and 1 day old.
	exec(t, pool, `insert into sdk_event_batches (tenant_id, environment_id, instance_id, sequence, events, received_at)
		values ($1, $2, 'i', 1, 1, $3), ($1, $2, 'i', 2, 1, $4)`, ten.ID, envs[0].ID, now.Add(-100*day), now.Add(-day))
	exec(t, pool, `insert into sdk_events (tenant_id, environment_id, instance_id, sequence, customer_id, type, at, count, received_at)
		values ($1, $2, 'i', 1, 'c', 'meter-limit', $3, 1, $3), ($1, $2, 'i', 2, 'c', 'meter-limit', $4, 1, $4)`,
		ten.ID, envs[0].ID, now.Add(-100*day), now.Add(-day))

	// Allowance leases: expired 2 days and 1 hour ago.
	exec(t, pool, `insert into fleet_leases (tenant_id, environment_id, customer_id, customer_uid, entitlement, period_start, instance_id, expires_at)
		values ($1, $2, 'c', gen_random_uuid(), 'e', $3, 'i-1', $3), ($1, $2, 'c', gen_random_uuid(), 'e', $3, 'i-2', $4)`,
		ten.ID, envs[0].ID, now.Add(-2*day), now.Add(-time.Hour))

	// A policy of zeros keeps everything.
	res, err := retention.Run(ctx, pool, now, retention.Policy{}, nil)
	if err != nil || len(res.Deleted) != 0 {
		t.Fatalf("zero policy: %+v %v", res, err)
	}
	res, err = retention.Run(ctx, pool, now, retention.Defaults(), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{"idempotency_keys": 1, "usage_batches": 1, "change_feed": 5, "audit_log": 1, "unattributed_usage": 1,
		"sdk_events": 1, "sdk_event_batches": 1, "fleet_leases": 1}
	for table, n := range want {
		if res.Deleted[table] != n {
			t.Errorf("%s: removed %d, want %d (%+v)", table, res.Deleted[table], n, res.Deleted)
		}
	}
	if n := count(t, pool, `select count(*) from change_feed`); n != 1 {
		t.Fatalf("change feed rows left: %d", n)
	}
	// Each environment's horizon is the newest id removed from it.
	for i, wantID := range []int64{ids[3], ids[4]} {
		if got := count(t, pool, `select purged_through from change_feed_horizon where environment_id = $1`, envs[i].ID); got != wantID {
			t.Errorf("%s horizon %d, want %d", envs[i].Name, got, wantID)
		}
		latest, err := store.LatestChangeID(ctx, pool, ten.ID, envs[i].ID)
		if err != nil || latest < wantID {
			t.Errorf("%s latest change %d < horizon %d (%v)", envs[i].Name, latest, wantID, err)
		}
	}
	// The deduplication horizon is recorded for the API.
	h, err := store.RetentionHorizon(ctx, pool, "usage_batches")
	if err != nil || h.IsZero() || h.Before(now.Add(-36*day)) || h.After(now.Add(-34*day)) {
		t.Fatalf("usage_batches horizon %v (%v)", h, err)
	}
	// A second run finds nothing more, and the horizons do not move back.
	res, err = retention.Run(ctx, pool, now, retention.Defaults(), nil)
	if err != nil || res.Deleted["change_feed"] != 0 || res.Deleted["usage_batches"] != 0 {
		t.Fatalf("second run: %+v %v", res, err)
	}
	if got := count(t, pool, `select purged_through from change_feed_horizon where environment_id = $1`, envs[0].ID); got != ids[3] {
		t.Fatalf("horizon moved: %d", got)
	}
}

// Deletes happen in bounded batches: more rows than one batch are all removed.
func TestRunDeletesInBatches(t *testing.T) {
	t.Parallel()
	_, pool := pgtest.NewMigrated(t)
	exec(t, pool, `insert into idempotency_keys (tenant_id, principal, key, method, path, request_hash, created_at)
		select 't', 'p', 'k' || g, 'POST', '/x', '\x00', now() - interval '2 days' from generate_series(1, 25000) g`)
	res, err := retention.Run(context.Background(), pool, time.Now(), retention.Policy{IdempotencyKeys: 24 * time.Hour}, nil)
	if err != nil || res.Deleted["idempotency_keys"] != 25000 {
		t.Fatalf("removed %+v %v", res, err)
	}
}

// Raw usage partitions older than the window are dropped once aggregated; one still
// holding unaggregated usage is kept.
func TestUsagePartitionsDroppedOnceAggregated(t *testing.T) {
	t.Parallel()
	_, pool := pgtest.NewMigrated(t)
	ctx := context.Background()
	old := time.Date(2025, 1, 10, 0, 0, 0, 0, time.UTC)
	if _, err := partitions.Ensure(ctx, pool, old, 1, nil); err != nil { // Jan 10 and 11
		t.Fatal(err)
	}
	ten, env := uuid.New(), uuid.New()
	for _, r := range []struct {
		at         time.Time
		aggregated bool
	}{{old.Add(time.Hour), true}, {old.Add(25 * time.Hour), false}} {
		var agg *time.Time
		if r.aggregated {
			agg = &r.at
		}
		exec(t, pool, `insert into usage_deltas (received_at, tenant_id, environment_id, instance_id, sequence, customer_id, customer_uid,
			entitlement, credit, period_start, units, overhead, price, calls, aggregated_at)
			values ($1, $2, $3, 'i', 1, 'c', gen_random_uuid(), 'e', 'c', $1, 1, 0, 0, 1, $4)`, r.at, ten, env, agg)
	}
	now := old.AddDate(0, 0, 100)
	res, err := retention.Run(ctx, pool, now, retention.Policy{UsagePartitions: 90 * 24 * time.Hour}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Dropped) != 3 || len(res.Kept) != 1 || res.Kept[0] != "usage_deltas_20250111" {
		t.Fatalf("dropped %v, kept %v", res.Dropped, res.Kept)
	}
	if n := count(t, pool, `select count(*) from usage_deltas`); n != 1 {
		t.Fatalf("rows left: %d", n)
	}
	// Recent partitions stay.
	if _, err := partitions.Ensure(ctx, pool, now, 0, nil); err != nil {
		t.Fatal(err)
	}
	res, err = retention.Run(ctx, pool, now, retention.Policy{UsagePartitions: 90 * 24 * time.Hour}, nil)
	if err != nil || len(res.Dropped) != 0 {
		t.Fatalf("second run dropped %v (%v)", res.Dropped, err)
	}
}

func TestPolicyValidate(t *testing.T) {
	t.Parallel()
	if err := retention.Defaults().Validate(); err != nil {
		t.Fatal(err)
	}
	if err := (retention.Policy{}).Validate(); err != nil {
		t.Fatalf("keep-forever policy: %v", err)
	}
	for _, p := range []retention.Policy{{IdempotencyKeys: time.Minute}, {UsageBatches: time.Hour}, {UsagePartitions: time.Hour}, {AuditLog: -1}} {
		if err := p.Validate(); err == nil {
			t.Errorf("%+v accepted", p)
		}
	}
}
