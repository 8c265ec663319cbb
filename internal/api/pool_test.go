package api

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/limitr/limitr/internal/billing"
	"github.com/limitr/limitr/internal/customers"
	"github.com/limitr/limitr/internal/policies/pgstore"
	"github.com/limitr/limitr/internal/store"
	"github.com/limitr/limitr/internal/usage"
	"github.com/limitr/limitr/internal/wire"
)

// TestTransactionsTakeOneConnection runs usage ingest of a test-clock customer (whose
// usage is re-dated from the active policy inside the ingest transaction) on a pool of
// one connection. A transaction that asked the pool for a second connection while it
// held the only one would wait forever; every read inside it goes through it.
func TestTransactionsTakeOneConnection(t *testing.T) {
	f := newBillingFixture(t)
	var clock billing.TestClock
	_ = json.Unmarshal(f.call(http.MethodPost, f.path("test-clocks"), map[string]string{"frozen_time": "2030-01-10T09:30:00Z"}, http.StatusCreated), &clock)
	f.call(http.MethodPost, f.path("customers"), map[string]any{"id": "clocked", "plan": "basic", "test_clock": clock.ID}, http.StatusCreated)

	cfg := f.h.pool.Config()
	cfg.MaxConns = 1
	one, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer one.Close()
	pols := pgstore.NewService(one, nil)
	svc := usage.NewService(one, customers.NewService(one, pols, nil), nil, nil)
	svc.SetPolicies(pols)
	env := store.Environment{TenantID: f.tn.tenantID, ID: f.tn.envs[f.env], Name: f.env}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ack, err := svc.Commit(ctx, env, &wire.UsageBatch{InstanceID: "one-conn", Sequence: 1, Deltas: []wire.UsageDelta{{Customer: "clocked",
		Entitlement: "tokens", Credit: "token", PeriodStart: time.Now().UTC().Truncate(time.Second), Units: "5", Overhead: "0", Price: "0", Calls: 1}}})
	if err != nil || ack.Accepted != 1 {
		t.Fatalf("ingest on one connection: %+v %v", ack, err)
	}
	var start time.Time
	if err := f.h.pool.QueryRow(context.Background(), `select period_start from usage_deltas where customer_id = 'clocked'`).Scan(&start); err != nil {
		t.Fatal(err)
	}
	if want := time.Date(2030, 1, 10, 9, 30, 0, 0, time.UTC); !start.Equal(want) {
		t.Fatalf("usage dated %s, want the clock's period %s", start, want)
	}

	// The billing pass on one connection: the period ends and, past its grace, the
	// draft is refreshed (the policy and the customers read) and finalized in one
	// transaction.
	if _, err := f.h.pool.Exec(ctx, `insert into meter_aggregates (tenant_id, environment_id, customer_id, customer_uid, entitlement, period_start, credit, units)
		select tenant_id, environment_id, customer_id, customer_uid, entitlement, period_start, credit, units from usage_deltas where customer_id = 'clocked'`); err != nil {
		t.Fatal(err)
	}
	bill := billing.NewService(one, pols, customers.NewService(one, pols, nil))
	if _, err := bill.AdvanceTestClock(ctx, env, clock.ID, billing.AdvanceInput{FrozenTime: "2030-02-10T01:30:00Z"}); err != nil {
		t.Fatal(err)
	}
	if _, err := bill.RunTestClock(ctx, env, clock.ID); err != nil {
		t.Fatalf("billing pass on one connection: %v", err)
	}
	var status string
	if err := f.h.pool.QueryRow(ctx, `select status from invoices where customer_id = 'clocked'`).Scan(&status); err != nil || status != "finalized" {
		t.Fatalf("invoice %q (%v), want finalized", status, err)
	}
}
