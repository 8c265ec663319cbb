package web

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/limitr/limitr/internal/analytics/replay"
	"github.com/limitr/limitr/internal/analytics/simulate"
	"github.com/limitr/limitr/internal/policies"
	"github.com/limitr/limitr/internal/policies/diff"
	"github.com/limitr/limitr/internal/policies/doctree"
	"github.com/limitr/limitr/internal/policies/pgstore"
	"github.com/limitr/limitr/internal/store"
	"github.com/limitr/limitr/internal/tenancy"
	"github.com/limitr/limitr/internal/users"
)

// changeRecorder is the policy service's notifier: what a connected SDK's stream
// would be woken with.
type changeRecorder struct {
	mu      sync.Mutex
	changes []int64
}

func (r *changeRecorder) ChangeCommitted(_ context.Context, _, _ uuid.UUID, id int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.changes = append(r.changes, id)
}

func (r *changeRecorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.changes)
}

// queuedJobs stands for the River client: it counts queued simulations and runs none.
type queuedJobs struct{ n int }

func (q *queuedJobs) InsertManyTx(_ context.Context, _ pgx.Tx, ps []river.InsertManyParams) ([]*rivertype.JobInsertResult, error) {
	q.n += len(ps)
	return make([]*rivertype.JobInsertResult, len(ps)), nil
}

const seatsV1 = `policy:
  credits:
    seat:
      description: A seat.
  plans:
    free:
      entitlements:
        seats:
          limit:
            credit: seat
            value: 1
`

type policyEnv struct {
	*env
	policies *pgstore.Service
	notified *changeRecorder
	jobs     *queuedJobs
	prod     store.Environment
}

// newPolicyEnv is newEnv with the policy and simulation services, an editor and a
// billing member, and version 1 (seatsV1) published to production.
func newPolicyEnv(t *testing.T) *policyEnv {
	t.Helper()
	e := newEnv(t, Config{})
	ctx := t.Context()
	for _, u := range []struct {
		email string
		role  users.Role
	}{{"editor@acme.test", users.RoleEditor}, {"billing@acme.test", users.RoleBilling}} {
		if _, err := e.users.CreateUser(ctx, users.CreateUserInput{TenantID: e.tenant.ID, Email: u.email, Password: testPassword, Role: u.role}); err != nil {
			t.Fatal(err)
		}
	}
	pe := &policyEnv{env: e, notified: &changeRecorder{}, jobs: &queuedJobs{}}
	pe.policies = pgstore.NewService(e.pool, pe.notified)
	ts := tenancy.NewService(e.pool)
	deps := testDeps(t, e.pool, e.users, ts)
	deps.Policies = pe.policies
	deps.Simulations = simulate.New(e.pool, pe.jobs, pe.policies, deps.Billing)
	s, err := New(Config{Logger: slog.New(slog.DiscardHandler)}, deps)
	if err != nil {
		t.Fatal(err)
	}
	e.handler = s.Handler()
	e.srv = httptest.NewServer(e.handler)
	t.Cleanup(e.srv.Close)

	envs, err := ts.ListEnvironments(ctx, e.tenant.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, env := range envs {
		if env.Name == "production" {
			pe.prod = env
		}
	}
	out, err := pe.policies.Create(ctx, e.tenant.ID, pgstore.CreateInput{Format: doctree.FormatYAML, Source: []byte(seatsV1)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pe.policies.Publish(ctx, pe.prod, pgstore.PublishInput{Version: &out.Version.Number}); err != nil {
		t.Fatal(err)
	}
	return pe
}

// loginTo logs in and switches the session to production.
func (pe *policyEnv) loginTo(email string) *browser {
	pe.t.Helper()
	b := pe.browser()
	if r := b.login(email); r.status != http.StatusSeeOther {
		pe.t.Fatalf("login %s: %d", email, r.status)
	}
	tok := b.csrf("/")
	if r := b.do(http.MethodPost, "/environment", url.Values{"csrf_token": {tok}, "environment": {"production"}}, nil); r.status != http.StatusSeeOther {
		pe.t.Fatalf("switch to production: %d", r.status)
	}
	return b
}

func (pe *policyEnv) active() int {
	pe.t.Helper()
	ref, err := pe.policies.ActiveRef(pe.t.Context(), pe.prod)
	if err != nil {
		pe.t.Fatal(err)
	}
	return ref.Number
}

func replyHas(t *testing.T, what string, r reply, status int, wants ...string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("%s: status %d, want %d\n%s", what, r.status, status, r.body)
	}
	for _, w := range wants {
		if !strings.Contains(r.body, w) {
			t.Errorf("%s: the page lacks %q\n%s", what, w, r.body)
		}
	}
}

func TestPolicyEditSavePublishRollback(t *testing.T) {
	pe := newPolicyEnv(t)
	b := pe.loginTo("editor@acme.test")

	r := b.do(http.MethodGet, "/policies", nil, nil)
	replyHas(t, "list", r, http.StatusOK, `href="/policies/1"`, "active in production", `id="new-version"`)

	// The editor starts from the active version's source.
	r = b.do(http.MethodGet, "/policies/new", nil, nil)
	replyHas(t, "editor", r, http.StatusOK, "credit: seat", `<option value="yaml" selected>`)
	tok := csrfInput.FindStringSubmatch(r.body)[1]

	// An invalid document: every problem with its path, the text kept, nothing stored.
	bad := strings.Replace(seatsV1, "credit: seat", "credit: sofa", 1)
	for _, action := range []string{"validate", "save"} {
		r = b.do(http.MethodPost, "/policies/new", url.Values{"csrf_token": {tok}, "format": {"yaml"}, "source": {bad}, "action": {action}}, nil)
		replyHas(t, action+" invalid", r, http.StatusUnprocessableEntity, `class="path">policy.plans.free.entitlements.seats.limit.credit</code>`, "credit: sofa")
	}
	if vs, _ := pe.policies.List(t.Context(), pe.tenant.ID, 0, 10); len(vs) != 1 {
		t.Fatalf("an invalid document was stored: %d versions", len(vs))
	}
	// Validate a good one, then save it: the version page shows the diff.
	good := strings.Replace(seatsV1, "value: 1", "value: 5", 1)
	r = b.do(http.MethodPost, "/policies/new", url.Values{"csrf_token": {tok}, "format": {"yaml"}, "source": {good}, "action": {"validate"}}, nil)
	replyHas(t, "validate", r, http.StatusOK, `id="valid"`, "value: 5")
	r = b.do(http.MethodPost, "/policies/new", url.Values{"csrf_token": {tok}, "format": {"yaml"}, "source": {good}, "action": {"save"}}, nil)
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/policies/2?done=created" {
		t.Fatalf("save: %d %s\n%s", r.status, r.header.Get("Location"), r.body)
	}
	r = b.do(http.MethodGet, "/policies/2?done=created", nil, nil)
	replyHas(t, "version 2", r, http.StatusOK, "Saved as a new version", "Changes against the active version (1)",
		"plans.free.entitlements.seats.limit.value</code>", `id="publish"`, `id="simulate"`, "value: 5")

	// Publishing needs the confirmation box.
	r = b.do(http.MethodPost, "/policies/2/publish", url.Values{"csrf_token": {tok}}, nil)
	replyHas(t, "publish unconfirmed", r, http.StatusUnprocessableEntity, "confirmation box")
	if pe.active() != 1 || pe.notified.count() != 1 {
		t.Fatalf("an unconfirmed publish changed something: active %d, %d notifications", pe.active(), pe.notified.count())
	}
	r = b.do(http.MethodPost, "/policies/2/publish", url.Values{"csrf_token": {tok}, "confirm": {"yes"}}, nil)
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/policies/2?done=published" {
		t.Fatalf("publish: %d %s\n%s", r.status, r.header.Get("Location"), r.body)
	}
	// The same service call as the API's: publication, change feed, wake-up, audit.
	if pe.active() != 2 {
		t.Fatalf("active after publish: %d", pe.active())
	}
	if pe.notified.count() != 2 {
		t.Fatalf("the change-feed notifier was called %d times, want 2", pe.notified.count())
	}
	var feed int
	if err := pe.pool.QueryRow(t.Context(), `select count(*) from change_feed where tenant_id = $1 and environment_id = $2 and kind = 'policy' and subject = '2'`,
		pe.tenant.ID, pe.prod.ID).Scan(&feed); err != nil || feed != 1 {
		t.Fatalf("change feed entries for version 2: %d, %v", feed, err)
	}
	var actor string
	if err := pe.pool.QueryRow(t.Context(), `select coalesce(actor_user_id::text, '') from audit_log where tenant_id = $1 and action = 'policy.publish'
		order by id desc limit 1`, pe.tenant.ID).Scan(&actor); err != nil || actor == "" {
		t.Fatalf("the publish's audit entry names no user: %q %v", actor, err)
	}
	r = b.do(http.MethodGet, "/policies", nil, nil)
	replyHas(t, "list after publish", r, http.StatusOK, "by editor@acme.test", `<a href="/policies/2">version 2</a>`)

	// Version 1 was active here before: the page offers a rollback, confirmed.
	r = b.do(http.MethodGet, "/policies/1", nil, nil)
	replyHas(t, "version 1", r, http.StatusOK, `id="rollback"`, "Roll back to this")
	r = b.do(http.MethodPost, "/policies/1/rollback", url.Values{"csrf_token": {tok}}, nil)
	replyHas(t, "rollback unconfirmed", r, http.StatusUnprocessableEntity, "confirmation box")
	r = b.do(http.MethodPost, "/policies/1/rollback", url.Values{"csrf_token": {tok}, "confirm": {"yes"}}, nil)
	if r.status != http.StatusSeeOther || pe.active() != 1 || pe.notified.count() != 3 {
		t.Fatalf("rollback: %d, active %d, %d notifications", r.status, pe.active(), pe.notified.count())
	}
	// A version never published here cannot be rolled back to.
	good3 := strings.Replace(seatsV1, "value: 1", "value: 9", 1)
	if _, err := pe.policies.Create(t.Context(), pe.tenant.ID, pgstore.CreateInput{Format: doctree.FormatYAML, Source: []byte(good3)}); err != nil {
		t.Fatal(err)
	}
	r = b.do(http.MethodPost, "/policies/3/rollback", url.Values{"csrf_token": {tok}, "confirm": {"yes"}}, nil)
	replyHas(t, "rollback to unpublished", r, http.StatusConflict, "never published")
	if r := b.do(http.MethodGet, "/policies/99", nil, nil); r.status != http.StatusNotFound {
		t.Errorf("unknown version: %d", r.status)
	}
}

var simLink = regexp.MustCompile(`^/policies/2/simulations/[0-9a-f-]{36}$`)

func TestPolicyWhatIf(t *testing.T) {
	pe := newPolicyEnv(t)
	good := strings.Replace(seatsV1, "value: 1", "value: 5", 1)
	if _, err := pe.policies.Create(t.Context(), pe.tenant.ID, pgstore.CreateInput{Format: doctree.FormatYAML, Source: []byte(good)}); err != nil {
		t.Fatal(err)
	}
	b := pe.loginTo("editor@acme.test")
	tok := b.csrf("/policies/2")

	// Queued: the page says so and refreshes itself.
	r := b.do(http.MethodPost, "/policies/2/simulations", url.Values{"csrf_token": {tok}, "mode": {"queue"}}, nil)
	if r.status != http.StatusSeeOther || !simLink.MatchString(r.header.Get("Location")) || pe.jobs.n != 1 {
		t.Fatalf("queue a simulation: %d %q, %d jobs\n%s", r.status, r.header.Get("Location"), pe.jobs.n, r.body)
	}
	r = b.do(http.MethodGet, r.header.Get("Location"), nil, nil)
	replyHas(t, "queued simulation", r, http.StatusOK, `<meta http-equiv="refresh"`, `id="sim-status">queued<`)

	// The dry run computes now.
	r = b.do(http.MethodPost, "/policies/2/simulations", url.Values{"csrf_token": {tok}, "mode": {"now"}}, nil)
	if r.status != http.StatusSeeOther || !simLink.MatchString(r.header.Get("Location")) {
		t.Fatalf("dry run: %d %q\n%s", r.status, r.header.Get("Location"), r.body)
	}
	sim := r.header.Get("Location")
	r = b.do(http.MethodGet, sim, nil, nil)
	replyHas(t, "dry run", r, http.StatusOK, `id="sim-status">succeeded<`, `id="sim-totals"`, "Revenue", "Margin", `id="sim-enforcement"`, `id="sim-customers"`)
	if strings.Contains(r.body, `http-equiv="refresh"`) {
		t.Error("a finished simulation's page still refreshes")
	}
	// The version page lists its simulations; another version's path does not show them.
	replyHas(t, "version page", b.do(http.MethodGet, "/policies/2", nil, nil), http.StatusOK, `id="simulations"`)
	if r := b.do(http.MethodGet, strings.Replace(sim, "/policies/2/", "/policies/1/", 1), nil, nil); r.status != http.StatusNotFound {
		t.Errorf("a simulation under another version: %d", r.status)
	}
	// Over the current period so far (each customer's period in progress), and a
	// window the form does not offer.
	r = b.do(http.MethodPost, "/policies/2/simulations", url.Values{"csrf_token": {tok}, "mode": {"now"}, "window": {"current"}}, nil)
	if r.status != http.StatusSeeOther || !simLink.MatchString(r.header.Get("Location")) {
		t.Fatalf("dry run of the current period: %d %q\n%s", r.status, r.header.Get("Location"), r.body)
	}
	replyHas(t, "current period", b.do(http.MethodGet, r.header.Get("Location"), nil, nil), http.StatusOK, `id="sim-status">succeeded<`)
	if r := b.do(http.MethodPost, "/policies/2/simulations", url.Values{"csrf_token": {tok}, "mode": {"now"}, "window": {"decade"}}, nil); r.status != http.StatusUnprocessableEntity {
		t.Errorf("an unknown window: %d", r.status)
	}
	// A viewer reads the result but cannot start one.
	v := pe.loginTo("viewer@acme.test")
	replyHas(t, "viewer's result", v.do(http.MethodGet, sim, nil, nil), http.StatusOK, `id="sim-totals"`)
}

// TestPolicyReadOnlyRoles: viewers and billing members see versions, diffs and
// results, get no edit, publish or rollback controls, and their POSTs are refused.
func TestPolicyReadOnlyRoles(t *testing.T) {
	pe := newPolicyEnv(t)
	ctx := t.Context()
	good := strings.Replace(seatsV1, "value: 1", "value: 5", 1)
	if _, err := pe.policies.Create(ctx, pe.tenant.ID, pgstore.CreateInput{Format: doctree.FormatYAML, Source: []byte(good)}); err != nil {
		t.Fatal(err)
	}
	for _, email := range []string{"viewer@acme.test", "billing@acme.test"} {
		b := pe.loginTo(email)
		r := b.do(http.MethodGet, "/policies", nil, nil)
		replyHas(t, email+" list", r, http.StatusOK, `href="/policies/2"`)
		if strings.Contains(r.body, `href="/policies/new"`) {
			t.Errorf("%s: the list offers a new version", email)
		}
		r = b.do(http.MethodGet, "/policies/2", nil, nil)
		replyHas(t, email+" version", r, http.StatusOK, "plans.free.entitlements.seats.limit.value</code>", "value: 5")
		for _, absent := range []string{`id="actions"`, `id="publish"`, `id="rollback"`, `id="simulate"`, ">Publish<", "Roll back to this", "Simulate against active", "/policies/new"} {
			if strings.Contains(r.body, absent) {
				t.Errorf("%s: the version page shows %q", email, absent)
			}
		}
		if r := b.do(http.MethodGet, "/policies/new", nil, nil); r.status != http.StatusForbidden {
			t.Errorf("%s GET /policies/new: %d", email, r.status)
		}
		tok := csrfInput.FindStringSubmatch(r.body)[1]
		for path, form := range map[string]url.Values{
			"/policies/new":           {"format": {"yaml"}, "source": {good}, "action": {"save"}},
			"/policies/2/publish":     {"confirm": {"yes"}},
			"/policies/1/rollback":    {"confirm": {"yes"}},
			"/policies/2/simulations": {"mode": {"now"}},
		} {
			form.Set("csrf_token", tok)
			if r := b.do(http.MethodPost, path, form, nil); r.status != http.StatusForbidden {
				t.Errorf("%s POST %s: %d, want 403", email, path, r.status)
			}
		}
	}
	if pe.active() != 1 || pe.notified.count() != 1 || pe.jobs.n != 0 {
		t.Fatalf("a read-only role changed something: active %d, %d notifications, %d jobs", pe.active(), pe.notified.count(), pe.jobs.n)
	}
	if vs, _ := pe.policies.List(ctx, pe.tenant.ID, 0, 10); len(vs) != 2 {
		t.Fatalf("versions: %d", len(vs))
	}
}

func TestDiffRows(t *testing.T) {
	parse := func(src string) *policies.Document {
		t.Helper()
		d, err := policies.Parse([]byte(src), doctree.FormatYAML)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	from := parse(seatsV1)
	to := parse(strings.Replace(seatsV1, "value: 1", "value: 3", 1) + `    team:
      entitlements:
        seats:
          limit:
            credit: seat
            value: 10
`)
	d := diff.Documents(from, to)
	rows, err := diffRows(pgstore.DiffResult{Diff: d, Empty: d.Empty()})
	if err != nil {
		t.Fatal(err)
	}
	want := []DiffRow{
		{Kind: "added", Path: "plans.team"},
		{Kind: "changed", Path: "plans.free.entitlements.seats.limit.value", From: "1", To: "3"},
	}
	if len(rows) != len(want) {
		t.Fatalf("rows: %+v", rows)
	}
	for i := range want {
		if rows[i] != want[i] {
			t.Errorf("row %d: %+v, want %+v", i, rows[i], want[i])
		}
	}
	if rows, err := diffRows(pgstore.DiffResult{Diff: diff.Documents(from, from), Empty: true}); err != nil || rows != nil {
		t.Errorf("no change: %+v %v", rows, err)
	}
}

func TestWorstFirst(t *testing.T) {
	cust := func(id, margin, denied string) replay.CustomerReport {
		c := replay.CustomerReport{Customer: id, Difference: replay.Figures{Margin: margin}}
		if denied != "" {
			c.HardLimits = []replay.HardLimitHit{{Entitlement: "seats", Denied: denied}}
		}
		return c
	}
	rows, more := worstFirst([]replay.CustomerReport{
		cust("a", "0.00", ""), cust("b", "-12.50", ""), cust("c", "3.00", ""), cust("d", "0.00", "2"), cust("e", "-1.00", ""),
	}, 4)
	var got []string
	for _, r := range rows {
		got = append(got, r.Customer)
	}
	if strings.Join(got, ",") != "b,e,d,a" || more != 1 || !rows[0].Worse || rows[3].Worse || !rows[2].Denied {
		t.Fatalf("order %v, %d more, rows %+v", got, more, rows)
	}
}
