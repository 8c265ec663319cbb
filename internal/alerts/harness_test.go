package alerts

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/platform/pgtest"
	"github.com/limitr/limitr/internal/policies"
	"github.com/limitr/limitr/internal/policies/doctree"
	"github.com/limitr/limitr/internal/secrets"
	"github.com/limitr/limitr/internal/store"
)

// fixedPolicy is the active policy the tests run under (nil: none published).
type fixedPolicy struct{ p *policies.Policy }

func (f fixedPolicy) ActivePolicy(context.Context, store.Environment) (*policies.Policy, error) {
	return f.p, nil
}

// recordsByUID resolves customers without plan inheritance: their own plan.
type recordsByUID struct{ pool *pgxpool.Pool }

func (r recordsByUID) RecordsByUID(ctx context.Context, env store.Environment, _ *policies.Policy, uids []uuid.UUID) ([]store.Customer, error) {
	cs, err := store.CustomersByUID(ctx, r.pool, env.TenantID, env.ID, uids)
	for i := range cs {
		cs[i].ResolvedPlan = cs[i].Plan
	}
	return cs, err
}

type harness struct {
	t       *testing.T
	ctx     context.Context
	pool    *pgxpool.Pool
	svc     *Service
	env     store.Environment
	workers *river.Workers
	cfg     Config
	keySpec string // LIMITR_SECRET_KEY of the keyring
}

func examplePolicy(t testing.TB, name string) *policies.Policy {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "examples", "policies", name))
	if err != nil {
		t.Fatal(err)
	}
	p, err := policies.Load(raw, doctree.FormatYAML)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// newHarness makes a database, a tenant and environment, and the service with a real
// keyring. Deliveries run only once start is called.
func newHarness(t *testing.T, p *policies.Policy, cfg Config) *harness {
	t.Helper()
	_, pool := pgtest.NewMigrated(t)
	ctx := context.Background()
	tn, err := store.CreateTenant(ctx, pool, "t"+strings.ReplaceAll(uuid.NewString()[:8], "-", ""), "Acme")
	if err != nil {
		t.Fatal(err)
	}
	env, err := store.CreateEnvironment(ctx, pool, tn.ID, "test", false)
	if err != nil {
		t.Fatal(err)
	}
	key, err := secrets.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	kr, err := secrets.ParseKeyring(key)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.RetryBase == 0 {
		cfg.RetryBase = 100 * time.Millisecond
	}
	cfg.AllowPrivateDestinations = true // the destinations are on loopback
	h := &harness{t: t, ctx: ctx, pool: pool, env: env, workers: river.NewWorkers(), cfg: cfg, keySpec: key}
	h.svc = New(pool, kr, nil, fixedPolicy{p}, cfg)
	h.svc.SetCustomers(recordsByUID{pool})
	h.svc.AddWorkers(h.workers)
	h.svc.jobs = h.client() // an insert-only client until start
	return h
}

func (h *harness) client() *river.Client[pgx.Tx] {
	h.t.Helper()
	c, err := river.NewClient(riverpgxv5.New(h.pool), &river.Config{
		Queues:               map[string]river.QueueConfig{Queue: {MaxWorkers: 4}},
		Workers:              h.workers,
		FetchCooldown:        20 * time.Millisecond,
		FetchPollInterval:    50 * time.Millisecond,
		JobTimeout:           time.Second,
		RescueStuckJobsAfter: 2 * time.Second,
		TestOnly:             true,
	})
	if err != nil {
		h.t.Fatal(err)
	}
	return c
}

// start runs a River client working deliveries until the test ends or stop is called.
func (h *harness) start() (stop func(cancelJobs bool)) {
	h.t.Helper()
	c := h.client()
	ctx, cancel := context.WithCancel(h.ctx)
	if err := c.Start(ctx); err != nil {
		h.t.Fatal(err)
	}
	stopped := false
	stop = func(cancelJobs bool) {
		if stopped {
			return
		}
		stopped = true
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		if cancelJobs {
			_ = c.StopAndCancel(sctx)
		} else {
			_ = c.Stop(sctx)
		}
		cancel()
	}
	h.t.Cleanup(func() { stop(false) })
	return stop
}

func ptr[T any](v T) *T { return &v }

func (h *harness) channel(in ChannelInput) Channel {
	h.t.Helper()
	c, err := h.svc.CreateChannel(h.ctx, h.env, in)
	if err != nil {
		h.t.Fatal(err)
	}
	return c
}

func (h *harness) rule(name, kind string, params Params, chans ...Channel) *Rule {
	h.t.Helper()
	ids := make([]string, len(chans))
	for i, c := range chans {
		ids[i] = c.ID.String()
	}
	r, err := h.svc.CreateRule(h.ctx, h.env, RuleInput{Name: &name, Kind: &kind, Params: &params, Channels: &ids})
	if err != nil {
		h.t.Fatal(err)
	}
	return r
}

func (h *harness) customer(id, plan string) Subject {
	h.t.Helper()
	c := store.Customer{}
	c.ID, c.Plan, c.Type = id, plan, "org"
	if err := store.InsertCustomer(h.ctx, h.pool, h.env.TenantID, h.env.ID, &c); err != nil {
		h.t.Fatal(err)
	}
	return Subject{UID: c.UID, ID: id, Type: "org", Plan: plan}
}

// usage is a usage_percent observation.
func usage(sub Subject, ent string, percent string, period time.Time) Observation {
	v := num.MustParse(percent)
	return Observation{Kind: KindUsagePercent, Customer: sub, Entitlement: ent, Value: v, Limit: num.FromInt(1000),
		PeriodStart: period, PeriodEnd: period.AddDate(0, 1, 0), At: time.Now(),
		Data: map[string]any{"value": percent, "limit": "1000", "plan": sub.Plan}}
}

func (h *harness) count(q string, args ...any) int {
	h.t.Helper()
	var n int
	if err := h.pool.QueryRow(h.ctx, q, args...).Scan(&n); err != nil {
		h.t.Fatal(err)
	}
	return n
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (h *harness) onlyAlert() Alert {
	h.t.Helper()
	as, err := h.svc.Alerts(h.ctx, h.env, Page{})
	if err != nil {
		h.t.Fatal(err)
	}
	var live []Alert
	for _, a := range as {
		if !a.Superseded {
			live = append(live, a)
		}
	}
	if len(live) != 1 {
		h.t.Fatalf("%d delivered alerts, want 1: %+v", len(live), live)
	}
	return live[0]
}

func (h *harness) allDelivered(n int) func() bool {
	return func() bool {
		return h.count(`select count(*) from alert_deliveries where status = 'delivered'`) == n
	}
}
