package bench

// What-if replay (DESIGN.md, performance budgets): one month of N customers × 5
// entitlements in Postgres, replayed by the simulations job (a River job on the
// simulations queue, run by a River client with the worker's registration) through
// the active policy and a candidate. The figure is the whole job: from the API's
// insert (row and job in one transaction) to the stored report.
// bench/simulateload is the command; bench/README.md has the figures.

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/limitr/limitr/internal/analytics/simulate"
	"github.com/limitr/limitr/internal/billing"
	"github.com/limitr/limitr/internal/customers"
	"github.com/limitr/limitr/internal/policies/doctree"
	"github.com/limitr/limitr/internal/policies/pgstore"
	"github.com/limitr/limitr/internal/store"
)

// SimulationResult is one run.
type SimulationResult struct {
	Customers int `json:"customers"`
	// Load is the bulk load; Job is the whole simulation, queued to stored.
	Load time.Duration `json:"load_ns"`
	Job  time.Duration `json:"job_ns"`
	// Ran is the job alone (started_at to finished_at, as stored).
	Ran        time.Duration `json:"ran_ns"`
	Current    string        `json:"current_revenue"`
	Candidate  string        `json:"candidate_revenue"`
	Difference string        `json:"difference"`
	LoadAvg    string        `json:"load_average"`
}

func (r SimulationResult) String() string {
	return fmt.Sprintf("%d customers × %d entitlements: job %.2f s (run %.2f s; queued to stored), load %.1f s; revenue %s → %s (%s); load average %s",
		r.Customers, len(BillingMeters), r.Job.Seconds(), r.Ran.Seconds(), r.Load.Seconds(), r.Current, r.Candidate, r.Difference, r.LoadAvg)
}

// simulationMonth is the month the benchmark's usage is in; its periods end in it+1.
var simulationMonth = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// ReplaySimulation creates a fresh database next to adminURL, bulk-loads n customers
// on real time with one month of BillingMeters each, saves a candidate (tokens 50 %
// dearer, a cheaper image tier), and times the simulation job.
func ReplaySimulation(ctx context.Context, adminURL string, n int) (SimulationResult, error) {
	res := SimulationResult{Customers: n}
	pool, closeDB, err := freshPool(ctx, adminURL)
	if err != nil {
		return res, err
	}
	defer closeDB()
	env, pols, candidate, err := simulationTenant(ctx, pool)
	if err != nil {
		return res, err
	}
	start := time.Now()
	if err := loadSimulationCustomers(ctx, pool, env, n); err != nil {
		return res, err
	}
	if _, err := pool.Exec(ctx, "analyze"); err != nil {
		return res, err
	}
	res.Load = time.Since(start)

	bill := billing.NewService(pool, pols, customers.NewService(pool, pols, nil))
	workers := river.NewWorkers()
	client, err := river.NewClient(riverpgxv5.New(pool), &river.Config{Logger: slog.New(slog.DiscardHandler),
		Queues: map[string]river.QueueConfig{simulate.Queue: {MaxWorkers: 1}}, Workers: workers,
		FetchCooldown: 20 * time.Millisecond, FetchPollInterval: 20 * time.Millisecond})
	if err != nil {
		return res, err
	}
	sims := simulate.New(pool, client, pols, bill)
	sims.AddWorkers(workers)
	if err := client.Start(ctx); err != nil {
		return res, err
	}
	defer func() { _ = client.Stop(context.WithoutCancel(ctx)) }()
	runtime.GC()
	from, to := simulationMonth.AddDate(0, 1, 0), simulationMonth.AddDate(0, 2, 0)
	start = time.Now()
	sim, err := sims.Create(ctx, env, simulate.CreateInput{Version: &candidate, From: &from, To: &to})
	if err != nil {
		return res, err
	}
	for sim.Status == simulate.StatusQueued || sim.Status == simulate.StatusRunning {
		time.Sleep(5 * time.Millisecond)
		if sim, err = sims.Get(ctx, env, sim.ID); err != nil {
			return res, err
		}
	}
	res.Job = time.Since(start)
	res.LoadAvg = loadAverage()
	if sim.Status != simulate.StatusSucceeded {
		return res, fmt.Errorf("simulation: %s: %s", sim.Status, sim.Error)
	}
	res.Ran = sim.FinishedAt.Sub(*sim.StartedAt)
	t := sim.Result.Totals
	res.Current, res.Candidate, res.Difference = t.Current.Revenue, t.Candidate.Revenue, t.Difference.Revenue
	if t.Customers != n {
		return res, fmt.Errorf("simulation: %d customers replayed, want %d", t.Customers, n)
	}
	// Every customer's invoice is BillingInvoiceCents (the billing benchmark's check).
	want := BillingInvoiceCents() * int64(n)
	if w := fmt.Sprintf("%d.%02d", want/100, want%100); t.Current.Revenue != w {
		return res, fmt.Errorf("simulation: current revenue %s, want %s", t.Current.Revenue, w)
	}
	return res, nil
}

// simulationTenant creates the tenant, publishes BillingPolicy to staging and saves
// the candidate version.
func simulationTenant(ctx context.Context, pool *pgxpool.Pool) (store.Environment, *pgstore.Service, int, error) {
	env, pols, err := stagingWithPolicy(ctx, pool)
	if err != nil {
		return env, nil, 0, err
	}
	src := strings.NewReplacer("token: { price: { amount: 0.00002 } }", "token: { price: { amount: 0.00003 } }",
		"- { up_to: 1000, price: { amount: 0.03 } }", "- { up_to: 1000, price: { amount: 0.025 } }").Replace(BillingPolicy)
	cand, err := pols.Create(ctx, env.TenantID, pgstore.CreateInput{Format: doctree.FormatYAML, Source: []byte(src)})
	if err != nil {
		return env, nil, 0, fmt.Errorf("simulation: create candidate: %w", err)
	}
	return env, pols, cand.Version.Number, nil
}

// loadSimulationCustomers writes n customers on real time, created at the start of
// simulationMonth (the database's trigger records their plan history then), and one
// month of meters each, with COPY.
func loadSimulationCustomers(ctx context.Context, pool *pgxpool.Pool, env store.Environment, n int) error {
	tenant, envID := pgtype.UUID{Bytes: env.TenantID, Valid: true}, pgtype.UUID{Bytes: env.ID, Valid: true}
	uids := make([]pgtype.UUID, n)
	for i := range uids {
		uids[i] = pgtype.UUID{Bytes: uuid.New(), Valid: true}
	}
	id := func(i int) string { return fmt.Sprintf("cus_%07d", i) }
	i := 0
	_, err := pool.CopyFrom(ctx, pgx.Identifier{"customers"},
		[]string{"tenant_id", "environment_id", "id", "plan", "billing_anchor", "created_at", "uid"},
		pgx.CopyFromFunc(func() ([]any, error) {
			if i == n {
				return nil, nil
			}
			row := []any{tenant, envID, id(i), "standard", simulationMonth, simulationMonth, uids[i]}
			i++
			return row, nil
		}))
	if err != nil {
		return fmt.Errorf("simulation: copy customers: %w", err)
	}
	i = 0
	_, err = pool.CopyFrom(ctx, pgx.Identifier{"meter_aggregates"},
		[]string{"tenant_id", "environment_id", "customer_id", "customer_uid", "entitlement", "period_start", "credit", "units", "overhead", "calls"},
		pgx.CopyFromFunc(func() ([]any, error) {
			if i == n*len(BillingMeters) {
				return nil, nil
			}
			c, m := i/len(BillingMeters), BillingMeters[i%len(BillingMeters)]
			i++
			return []any{tenant, envID, id(c), uids[c], m.Entitlement, simulationMonth.AddDate(0, 1, 0), m.Credit, m.Units, "1.5", int64(100)}, nil
		}))
	if err != nil {
		return fmt.Errorf("simulation: copy meters: %w", err)
	}
	return nil
}
