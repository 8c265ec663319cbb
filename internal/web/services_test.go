package web

import (
	"os"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/limitr/limitr/internal/alerts"
	"github.com/limitr/limitr/internal/analytics"
	"github.com/limitr/limitr/internal/analytics/simulate"
	"github.com/limitr/limitr/internal/billing"
	"github.com/limitr/limitr/internal/billing/stripesync"
	"github.com/limitr/limitr/internal/customers"
	"github.com/limitr/limitr/internal/policies/doctree"
	"github.com/limitr/limitr/internal/policies/pgstore"
	"github.com/limitr/limitr/internal/secrets"
	"github.com/limitr/limitr/internal/store"
	"github.com/limitr/limitr/internal/tenancy"
	"github.com/limitr/limitr/internal/users"
)

// testDeps wires every domain service the pages call over pool, as internal/api does
// (an insert-only River client; a real keyring, so channel secrets can be sealed).
func testDeps(t *testing.T, pool *pgxpool.Pool, us *users.Service, ts *tenancy.Service) Deps {
	t.Helper()
	spec, err := secrets.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	kr, err := secrets.ParseKeyring(spec)
	if err != nil {
		t.Fatal(err)
	}
	jobs, err := river.NewClient(riverpgxv5.New(pool), &river.Config{})
	if err != nil {
		t.Fatal(err)
	}
	pols := pgstore.NewService(pool, nil)
	custs := customers.NewService(pool, pols, nil)
	bill := billing.NewService(pool, pols, custs)
	custs.SetTopupBiller(bill)
	stripe := stripesync.New(pool, kr, jobs, bill, stripesync.Config{})
	bill.SetMirror(stripe)
	al := alerts.New(pool, kr, jobs, pols, alerts.Config{AllowPrivateDestinations: true})
	al.SetCustomers(custs)
	bill.SetAlerts(al)
	return Deps{Users: us, Tenancy: ts, Policies: pols, Customers: custs, Billing: bill, Stripe: stripe, Alerts: al,
		Analytics: analytics.NewService(pool, bill), Simulations: simulate.New(pool, jobs, pols, bill)}
}

// publishExample publishes examples/policies/ai-credits.yaml to env.
func publishExample(t *testing.T, d Deps, env store.Environment) {
	t.Helper()
	src, err := os.ReadFile("../../examples/policies/ai-credits.yaml")
	if err != nil {
		t.Fatal(err)
	}
	created, err := d.Policies.Create(t.Context(), env.TenantID, pgstore.CreateInput{Format: doctree.FormatYAML, Source: src})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Policies.Publish(t.Context(), env, pgstore.PublishInput{Version: &created.Version.Number}); err != nil {
		t.Fatal(err)
	}
}
