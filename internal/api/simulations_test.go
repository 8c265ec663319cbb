package api

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/limitr/limitr/internal/analytics/simulate"
	"github.com/limitr/limitr/internal/worker"
)

// backdate makes a customer billed from created, as if it had been created then.
func (f *billingFixture) backdate(id string, created time.Time) {
	f.h.t.Helper()
	_, err := f.h.pool.Exec(context.Background(), `with c as (update customers set created_at = $3, billing_anchor = $3
		where tenant_id = $1 and id = $2 returning uid)
		update customer_plan_history h set effective_at = $3 from c where h.customer_uid = c.uid`, f.tn.tenantID, id, created)
	if err != nil {
		f.h.t.Fatal(err)
	}
}

func (f *billingFixture) simulation(body []byte) simulate.Simulation {
	f.h.t.Helper()
	var sim simulate.Simulation
	if err := json.Unmarshal(body, &sim); err != nil {
		f.h.t.Fatal(err)
	}
	return sim
}

// A simulation is queued (202), run by the worker's River client on the simulations
// queue, and read back succeeded with its report; another environment does not see
// it; a bad document is a 422 naming its paths.
func TestSimulationsAPI(t *testing.T) {
	f := newBillingFixture(t)
	doc := oaDoc(t)
	jan := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	feb := jan.AddDate(0, 1, 0)
	f.call(http.MethodPost, f.path("customers"), map[string]any{"id": "acme", "plan": "basic"}, http.StatusCreated)
	f.backdate("acme", jan)
	f.setUsage("acme", "tokens", feb, "1600000", "250000")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w, err := worker.New(worker.Deps{Pool: f.h.pool, Logger: slog.New(slog.DiscardHandler), Secrets: f.h.srv.secrets},
		worker.Config{BillingInterval: time.Hour, MaintenanceInterval: time.Hour, DisableAlertEvaluation: true})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()

	src := strings.Replace(policySource(t), "token: { price: { amount: 0.00002 } }", "token: { price: { amount: 0.00003 } }", 1)
	body := map[string]any{"document": src, "from": "2026-02-01T00:00:00Z", "to": "2026-03-01T00:00:00Z"}
	code, out := f.h.do(http.MethodPost, f.path("simulations"), f.tn.secret, body)
	if code != http.StatusAccepted {
		t.Fatalf("create: %d %s", code, out)
	}
	sim := f.simulation(out)
	if sim.Status != simulate.StatusQueued || sim.Result != nil {
		t.Fatalf("%+v", sim)
	}
	path := f.path("simulations", sim.ID.String())
	deadline := time.Now().Add(30 * time.Second)
	for sim.Status != simulate.StatusSucceeded {
		if sim.Status == simulate.StatusFailed || time.Now().After(deadline) {
			t.Fatalf("not succeeded: %+v", sim)
		}
		time.Sleep(50 * time.Millisecond)
		sim = f.simulation(f.call(http.MethodGet, path, nil, http.StatusOK))
	}
	f.conform(doc, http.MethodGet, "/v1/environments/{env}/simulations/{id}", path, nil)
	r := sim.Result
	if r.Totals.Customers != 1 || r.Customers[0].Customer != "acme" {
		t.Fatalf("%+v", r)
	}
	// 600k tokens past the included million, 250k of them from grants: 12 − 5 = 7, then 18 − 7.5.
	if r.Totals.Current.Revenue != "27.00" || r.Totals.Difference.Revenue != "3.50" {
		t.Errorf("totals %+v", r.Totals)
	}

	list := f.conform(doc, http.MethodGet, "/v1/environments/{env}/simulations", f.path("simulations")+"?limit=1", nil)
	if !strings.Contains(string(list), sim.ID.String()) || strings.Contains(string(list), `"customers"`) {
		t.Errorf("list: %s", list)
	}

	// Another environment of the tenant does not have it.
	code, out = f.h.do(http.MethodGet, "/v1/environments/production/simulations/"+sim.ID.String(), f.tn.secret, nil)
	wantProblem(t, "another environment", code, out, http.StatusNotFound, "")

	// A bad document: 422 with the document's paths.
	code, out = f.h.do(http.MethodPost, f.path("simulations"), f.tn.secret,
		map[string]any{"document": "policy:\n  plans:\n    basic:\n      entitlements:\n        x: { limit: { credit: nope, value: 1 } }\n"})
	wantProblem(t, "bad document", code, out, http.StatusUnprocessableEntity, "policy.plans.basic.entitlements.x.limit.credit")
	code, out = f.h.do(http.MethodPost, f.path("simulations"), f.tn.secret, map[string]any{"version": 1, "document": "x"})
	wantProblem(t, "both", code, out, http.StatusUnprocessableEntity, "document")
	code, out = f.h.do(http.MethodPost, f.path("simulations"), f.tn.secret, map[string]any{"version": 42})
	wantProblem(t, "unknown version", code, out, http.StatusUnprocessableEntity, "version")
}

// A dry-run publish returns the simulation of the version against the active one and
// publishes nothing.
func TestPublishDryRun(t *testing.T) {
	f := newBillingFixture(t)
	src := strings.Replace(policySource(t), "basic_fee: { price: { amount: 20 } }", "basic_fee: { price: { amount: 25 } }", 1)
	code, out := f.h.do(http.MethodPost, "/v1/policies?format=yaml", f.tn.secret, src)
	if code != http.StatusCreated {
		t.Fatalf("create version: %d %s", code, out)
	}
	out = f.conform(oaDoc(t), http.MethodPost, "/v1/environments/{env}/publish", f.path("publish"), []byte(`{"version": 2, "dry_run": true}`))
	sim := f.simulation(out)
	if sim.Status != simulate.StatusSucceeded || sim.Result == nil || *sim.CandidateVersion != 2 || *sim.CurrentVersion != 1 {
		t.Fatalf("%s", out)
	}
	pubs := f.call(http.MethodGet, f.path("publications"), nil, http.StatusOK)
	if strings.Count(string(pubs), `"version"`) != 1 {
		t.Fatalf("a dry run published: %s", pubs)
	}
	// The dry run's simulation is kept.
	f.call(http.MethodGet, f.path("simulations", sim.ID.String()), nil, http.StatusOK)
	code, out = f.h.do(http.MethodPost, f.path("publish"), f.tn.secret, map[string]any{"dry_run": true})
	wantProblem(t, "dry run without a version", code, out, http.StatusUnprocessableEntity, "version")
}

func policySource(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../billing/testdata/policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// conform sends a request that must answer 200 and checks the answer against the
// OpenAPI document.
func (f *billingFixture) conform(doc map[string]any, method, template, path string, body []byte) []byte {
	f.h.t.Helper()
	req := httptest.NewRequest(method, path, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+f.tn.secret)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	rec := httptest.NewRecorder()
	f.h.srv.Handler().ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		f.h.t.Fatalf("%s %s: %d %s", method, path, rec.Code, rec.Body.Bytes())
	}
	oaConform(f.h.t, doc, method, template, rec.Code, rec.Header(), rec.Body.Bytes())
	return rec.Body.Bytes()
}
