package simulate

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"

	"github.com/limitr/limitr/internal/billing"
	"github.com/limitr/limitr/internal/customers"
	"github.com/limitr/limitr/internal/platform/pgtest"
	"github.com/limitr/limitr/internal/policies"
	"github.com/limitr/limitr/internal/policies/doctree"
	"github.com/limitr/limitr/internal/policies/pgstore"
	"github.com/limitr/limitr/internal/store"
	"github.com/limitr/limitr/internal/tenancy"
	"github.com/limitr/limitr/internal/validation"
)

type fixture struct {
	t     *testing.T
	ctx   context.Context
	pool  *pgxpool.Pool
	env   store.Environment
	pols  *pgstore.Service
	custs *customers.Service
	bill  *billing.Service
	src   string
}

func at(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

// newFixture: a tenant whose staging environment has the replay goldens' policy
// published as version 1.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	_, pool := pgtest.NewMigrated(t)
	ctx := context.Background()
	out, err := tenancy.NewService(pool).CreateTenant(ctx, tenancy.CreateTenantInput{Slug: "sim"})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, ctx: ctx, pool: pool}
	for _, e := range out.Environments {
		if e.Name == "staging" {
			f.env = e
		}
	}
	b, err := os.ReadFile("../replay/testdata/current.yaml")
	if err != nil {
		t.Fatal(err)
	}
	f.src = string(b)
	f.pols = pgstore.NewService(pool, nil)
	f.custs = customers.NewService(pool, f.pols, nil)
	f.bill = billing.NewService(pool, f.pols, f.custs)
	f.publish(f.saveVersion(f.src))
	return f
}

func (f *fixture) saveVersion(src string) int {
	f.t.Helper()
	c, err := f.pols.Create(f.ctx, f.env.TenantID, pgstore.CreateInput{Format: doctree.FormatYAML, Source: []byte(src)})
	if err != nil {
		f.t.Fatal(err)
	}
	return c.Version.Number
}

func (f *fixture) publish(n int) {
	f.t.Helper()
	if _, err := f.pols.Publish(f.ctx, f.env, pgstore.PublishInput{Version: &n}); err != nil {
		f.t.Fatal(err)
	}
}

// customer creates a customer billed from created (its anchor and first plan record
// are moved back there, as if it had been created then).
func (f *fixture) customer(id string, created time.Time) {
	f.t.Helper()
	anchor := created.Format(time.RFC3339)
	if _, err := f.custs.Create(f.ctx, f.env, customers.CreateInput{ID: id, Plan: "basic", BillingAnchor: &anchor}); err != nil {
		f.t.Fatal(err)
	}
	_, err := f.pool.Exec(f.ctx, `with c as (update customers set created_at = $3 where tenant_id = $1 and id = $2 returning uid)
		update customer_plan_history h set effective_at = $3 from c where h.customer_uid = c.uid`, f.env.TenantID, id, created)
	if err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) usage(id, ent, start, units, granted, overhead string) {
	f.t.Helper()
	_, err := f.pool.Exec(f.ctx, `insert into meter_aggregates (tenant_id, environment_id, customer_id, customer_uid, entitlement, period_start, credit, units, grant_covered, overhead)
		select tenant_id, environment_id, id, uid, $2, $3, 'x', $4::numeric, $5::numeric, $6::numeric from customers where id = $1 and tenant_id = $7`,
		id, ent, at(start), units, granted, overhead, f.env.TenantID)
	if err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) service(jobs JobInserter) *Service {
	s := New(f.pool, jobs, f.pols, f.bill)
	s.SetClock(func() time.Time { return at("2026-03-05T12:00:00Z") })
	return s
}

func (f *fixture) seed() {
	f.customer("acme", at("2026-01-01T00:00:00Z"))
	f.customer("mid", at("2026-01-15T00:00:00Z"))
	f.usage("acme", "tokens", "2026-02-01T00:00:00Z", "1600000", "250000", "6.4")
	f.usage("acme", "images", "2026-02-01T00:00:00Z", "900", "0", "9")
	f.usage("acme", "minutes", "2026-02-01T00:00:00Z", "300", "0", "3")
	f.usage("mid", "tokens", "2026-01-15T00:00:00Z", "3000000", "0", "12")
	f.usage("mid", "minutes", "2026-01-15T00:00:00Z", "120", "0", "1")
	f.usage("mid", "minutes", "2026-02-15T00:00:00Z", "999", "0", "1") // its period ends in March
}

// The replay's current revenue is what the invoices of the same periods bill: the
// billing pass drafts them, the simulation of the active version against itself
// reads the same figures.
func TestCurrentRevenueEqualsTheInvoices(t *testing.T) {
	f := newFixture(t)
	f.seed()
	if _, err := f.bill.Close(f.ctx, f.env, "", at("2026-03-20T00:00:00Z")); err != nil {
		t.Fatal(err)
	}
	one := 1
	sim, err := f.service(nil).RunNow(f.ctx, f.env, CreateInput{Version: &one})
	if err != nil {
		t.Fatal(err)
	}
	if sim.Status != StatusSucceeded || sim.Result == nil || sim.Window.From != at("2026-02-01T00:00:00Z") {
		t.Fatalf("%+v", sim)
	}
	invs, _, err := f.bill.List(f.ctx, f.env, billing.InvoiceFilter{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	billed := map[string]string{}
	for _, inv := range invs {
		if inv.PeriodEnd.After(sim.Window.From) && !inv.PeriodEnd.After(sim.Window.To) {
			billed[inv.Customer] = inv.Total
		}
	}
	if len(billed) != 2 || len(sim.Result.Customers) != 2 {
		t.Fatalf("invoices %v, replayed %+v", billed, sim.Result.Customers)
	}
	for _, c := range sim.Result.Customers {
		if c.Current.Revenue != billed[c.Customer] || c.Candidate.Revenue != c.Current.Revenue {
			t.Errorf("%s: replay %s / %s, invoice %s", c.Customer, c.Current.Revenue, c.Candidate.Revenue, billed[c.Customer])
		}
	}
	// acme: fee 20 + tokens 12 - 5 + minutes 10; mid (Jan 15 - Feb 15): fee 20 + 40 + 4.6.
	if sim.Result.Totals.Current.Revenue != "101.60" {
		t.Errorf("total %s", sim.Result.Totals.Current.Revenue)
	}
}

// A queued simulation runs as a River job on the simulations queue and stores its
// report; a bad document is refused with its paths; another environment sees none.
func TestQueuedSimulationRunsAsAJob(t *testing.T) {
	f := newFixture(t)
	f.seed()
	workers := river.NewWorkers()
	client, err := river.NewClient(riverpgxv5.New(f.pool), &river.Config{Logger: slog.New(slog.DiscardHandler),
		Queues: map[string]river.QueueConfig{Queue: {MaxWorkers: 1}}, Workers: workers,
		FetchCooldown: 20 * time.Millisecond, FetchPollInterval: 50 * time.Millisecond, TestOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	s := f.service(client)
	s.AddWorkers(workers)
	cand := strings.Replace(f.src, "token: { price: { amount: 0.00002 } }", "token: { price: { amount: 0.00003 } }", 1)
	sim, err := s.Create(f.ctx, f.env, CreateInput{Document: cand})
	if err != nil {
		t.Fatal(err)
	}
	if sim.Status != StatusQueued || sim.CandidateVersion != nil {
		t.Fatalf("%+v", sim)
	}
	ctx, cancel := context.WithCancel(f.ctx)
	defer cancel()
	if err := client.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = client.Stop(context.Background()) }()
	deadline := time.Now().Add(20 * time.Second)
	for sim.Status != StatusSucceeded {
		if sim.Status == StatusFailed || time.Now().After(deadline) {
			t.Fatalf("%+v", sim)
		}
		time.Sleep(50 * time.Millisecond)
		if sim, err = s.Get(f.ctx, f.env, sim.ID); err != nil {
			t.Fatal(err)
		}
	}
	if d := sim.Result.Totals.Difference.Revenue; d != "23.50" { // acme +3.50 (600k past the included, 250k of it from grants), mid +20 (2M)
		t.Errorf("difference %s", d)
	}
	if *sim.CurrentVersion != 1 || sim.StartedAt == nil || sim.FinishedAt == nil {
		t.Errorf("%+v", sim)
	}
	list, err := s.List(f.ctx, f.env, 0, 10)
	if err != nil || len(list) != 1 || list[0].ID != sim.ID || list[0].Result != nil {
		t.Fatalf("list: %+v %v", list, err)
	}
	var prod store.Environment
	err = f.pool.QueryRow(f.ctx, `select id, tenant_id, name from environments where tenant_id = $1 and name = 'production'`, f.env.TenantID).
		Scan(&prod.ID, &prod.TenantID, &prod.Name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(f.ctx, prod, sim.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("another environment's simulation: %v", err)
	}
	_, err = s.Create(f.ctx, f.env, CreateInput{Document: "policy:\n  plans:\n    basic:\n      entitlements:\n        x: { limit: { credit: nope, value: 1 } }\n"})
	var pe *policies.ValidationError
	if !errors.As(err, &pe) || len(pe.Problems) == 0 || !strings.Contains(pe.Problems[0].Path, "policy.") {
		t.Fatalf("bad document: %v", err)
	}
	_, err = s.Create(f.ctx, f.env, CreateInput{})
	var ve *validation.Error
	if !errors.As(err, &ve) || ve.Fields[0].Path != "version" {
		t.Fatalf("nothing to simulate: %v", err)
	}
	if _, err := s.Create(f.ctx, f.env, CreateInput{Version: ptr(99)}); !errors.Is(err, pgstore.ErrNotFound) {
		t.Fatalf("unknown version: %v", err)
	}
}

// A replay that fails is stored as failed with its error, not retried.
func TestFailedSimulationIsStored(t *testing.T) {
	f := newFixture(t)
	f.seed()
	s := f.service(noJobs{})
	two := f.saveVersion(strings.Replace(f.src, "default: true", "default: true\n      label: two", 1))
	sim, err := s.Create(f.ctx, f.env, CreateInput{Version: &two, BaselineVersion: ptr(two)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.pool.Exec(f.ctx, `delete from policy_publications`); err != nil {
		t.Fatal(err)
	}
	if _, err := f.pool.Exec(f.ctx, `delete from environment_policies`); err != nil {
		t.Fatal(err)
	}
	if err := s.run(f.ctx, sim.ID); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(f.ctx, f.env, sim.ID)
	if err != nil || got.Status != StatusFailed || !strings.Contains(got.Error, "no policy") {
		t.Fatalf("%+v %v", got, err)
	}
}

func ptr[T any](v T) *T { return &v }

// noJobs queues nothing: the test runs the job by hand.
type noJobs struct{}

func (noJobs) InsertManyTx(context.Context, pgx.Tx, []river.InsertManyParams) ([]*rivertype.JobInsertResult, error) {
	return nil, nil
}
