package analytics

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/limitr/limitr/internal/aggregate"
	"github.com/limitr/limitr/internal/billing"
	"github.com/limitr/limitr/internal/customers"
	"github.com/limitr/limitr/internal/platform/pgtest"
	"github.com/limitr/limitr/internal/policies/pgstore"
	"github.com/limitr/limitr/internal/policies/pgstore/pgstoretest"
	"github.com/limitr/limitr/internal/store"
)

// jan1 is when the test clock starts: customers are created then, so their billing
// periods and monthly meters run from the first of each month.
var jan1 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// harness is an environment with billing's golden policy published (flat, tiered,
// volume and stairstep curves, an exchanged credit, fees with and without a trial,
// daily meters), a test clock, and the services analytics composes.
type harness struct {
	t     testing.TB
	ctx   context.Context
	pool  *pgxpool.Pool
	env   store.Environment
	clock string
	custs *customers.Service
	bill  *billing.Service
	svc   *Service
	agg   *aggregate.Aggregator
	seq   int64
	uids  map[string]uuid.UUID
}

func newHarness(t testing.TB) *harness {
	t.Helper()
	_, pool := pgtest.NewMigrated(t)
	ctx := context.Background()
	h := &harness{t: t, ctx: ctx, pool: pool, uids: map[string]uuid.UUID{},
		env: store.Environment{ID: uuid.New(), TenantID: uuid.New(), Name: "staging", CreatedAt: time.Now()}}
	h.exec(`insert into tenants (id, slug, name) values ($1, $2, 'Test')`, h.env.TenantID, "t-"+h.env.TenantID.String()[:8])
	h.exec(`insert into environments (id, tenant_id, name) values ($1, $2, 'staging')`, h.env.ID, h.env.TenantID)
	src, err := os.ReadFile("../billing/testdata/policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	h.publish(string(src))
	pols := pgstore.NewService(pool, nil)
	h.custs = customers.NewService(pool, pols, nil)
	h.bill = billing.NewService(pool, pols, h.custs)
	h.svc = NewService(pool, h.bill)
	clock, err := h.bill.CreateTestClock(ctx, h.env, billing.TestClockInput{FrozenTime: jan1.Format(time.RFC3339)})
	if err != nil {
		t.Fatal(err)
	}
	h.clock = clock.ID
	h.agg = aggregate.New(pool, aggregate.Options{})
	return h
}

func (h *harness) exec(sql string, args ...any) {
	h.t.Helper()
	if _, err := h.pool.Exec(h.ctx, sql, args...); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) publish(src string) {
	h.t.Helper()
	pgstoretest.Publish(h.t, h.pool, h.env.TenantID, h.env.ID, src)
}

// customer creates a customer on the test clock, on plan ("" for the default).
func (h *harness) customer(id, plan string) {
	h.t.Helper()
	if _, err := h.custs.Create(h.ctx, h.env, customers.CreateInput{ID: id, Plan: plan, TestClock: h.clock}); err != nil {
		h.t.Fatal(err)
	}
	c, err := h.custs.GetRecord(h.ctx, h.env, id)
	if err != nil {
		h.t.Fatal(err)
	}
	h.uids[id] = c.UID
}

// at moves the test clock.
func (h *harness) at(t time.Time) {
	h.exec(`update test_clocks set frozen_time = $1 where id = $2::uuid`, t, h.clock)
}

// usage commits one usage delta for the meter period starting at period.
func (h *harness) usage(customer, ent string, period time.Time, units, overhead string) {
	h.t.Helper()
	h.usageGranted(customer, ent, period, units, "", overhead)
}

// usageGranted commits a usage delta of which grants paid for granted units.
func (h *harness) usageGranted(customer, ent string, period time.Time, units, granted, overhead string) {
	h.t.Helper()
	if granted == "" {
		granted = "0"
	}
	h.seq++
	h.exec(`insert into usage_deltas (tenant_id, environment_id, instance_id, sequence, customer_id, customer_uid, entitlement, credit,
			period_start, units, overhead, price, calls, grant_covered)
		values ($1, $2, 'inst', $3, $4, $5, $6, 'x', $7, $8::numeric, $9::numeric, 0, 1, $10::numeric)`,
		h.env.TenantID, h.env.ID, h.seq, customer, h.uids[customer], ent, period, units, overhead, granted)
}

// book folds pending usage and books every customer, as the worker does.
func (h *harness) book() Booked {
	h.t.Helper()
	if _, err := h.agg.Drain(h.ctx); err != nil {
		h.t.Fatal(err)
	}
	uids := make([]uuid.UUID, 0, len(h.uids))
	for _, u := range h.uids {
		uids = append(uids, u)
	}
	b, err := h.svc.Book(h.ctx, h.env, uids)
	if err != nil {
		h.t.Fatal(err)
	}
	return b
}

// close runs billing at the clock's time now.
func (h *harness) close(now time.Time) {
	h.t.Helper()
	h.at(now)
	if _, err := h.bill.Close(h.ctx, h.env, h.clock, now); err != nil {
		h.t.Fatal(err)
	}
}

// invoiced sums each customer's invoice totals for billing periods starting at from.
func (h *harness) invoiced(from time.Time) map[string]string {
	h.t.Helper()
	rows, err := h.pool.Query(h.ctx, `select customer_id, sum(total)::text from invoices
		where environment_id = $1 and kind = 'period' and period_start = $2 and status <> 'void' group by 1`, h.env.ID, from)
	if err != nil {
		h.t.Fatal(err)
	}
	out := map[string]string{}
	for rows.Next() {
		var id, total string
		if err := rows.Scan(&id, &total); err != nil {
			h.t.Fatal(err)
		}
		out[id] = total
	}
	rows.Close()
	return out
}
