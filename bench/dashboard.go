package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/limitr/limitr/internal/alerts"
	"github.com/limitr/limitr/internal/api"
	"github.com/limitr/limitr/internal/billing"
	"github.com/limitr/limitr/internal/customers"
	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/policies/doctree"
	"github.com/limitr/limitr/internal/policies/pgstore"
	"github.com/limitr/limitr/internal/secrets"
	"github.com/limitr/limitr/internal/store"
	"github.com/limitr/limitr/internal/tenancy"
	"github.com/limitr/limitr/internal/users"
)

// DashboardOptions sizes the dashboard benchmark.
type DashboardOptions struct {
	// Customers are written to the customers table, each with analytics rollups for
	// every one of Days days ending today.
	Customers, Days int
	// Alerts is how many usage alerts fire (each with a pending delivery).
	Alerts int
	// Invoices is how many customers have an ended period, invoiced.
	Invoices int
	// Runs is how many times each page is timed (after 3 untimed warm-ups).
	Runs int
	// Pages are the paths to time; nil: DashboardPages.
	Pages []string
}

// DashboardPages are the pages timed by default; %s is a customer id.
var DashboardPages = []string{"/", "/policies", "/customers", "/customers/%s", "/invoices", "/alerts", "/alerts/fired",
	"/alerts/deliveries", "/settings/users", "/settings/environments", "/settings/keys", "/settings/billing", "/settings/stripe",
	"/settings/audit"}

// DashboardPage is one page's timings.
type DashboardPage struct {
	Path   string `json:"path"`
	Status int    `json:"status"`
	Bytes  int    `json:"bytes"`
	// First is the first GET, before any warm-up (the Overview ranks every customer then).
	First, P50, P95, Max  time.Duration `json:"-"`
	FirstMs, P50ms, P95ms float64
}

// DashboardResult is the benchmark's outcome.
type DashboardResult struct {
	Customers, Days, Runs int
	Seed                  time.Duration `json:"-"`
	Pages                 []DashboardPage
}

// WorstP95 is the slowest page's p95.
func (r DashboardResult) WorstP95() time.Duration {
	var w time.Duration
	for _, p := range r.Pages {
		w = max(w, p.P95)
	}
	return w
}

func (r DashboardResult) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "dashload: %d customers × %d days of rollups, seeded in %s; %d timed GETs a page, logged in as an owner\n",
		r.Customers, r.Days, r.Seed.Round(time.Second), r.Runs)
	fmt.Fprintf(&b, "%-28s %6s %8s %9s %9s %9s %9s\n", "page", "status", "bytes", "first", "p50", "p95", "max")
	for _, p := range r.Pages {
		fmt.Fprintf(&b, "%-28s %6d %8d %9s %9s %9s %9s\n", p.Path, p.Status, p.Bytes, ms(p.First), ms(p.P50), ms(p.P95), ms(p.Max))
	}
	return b.String()
}

// Dashboard creates a fresh database next to adminURL, seeds a tenant with
// opt.Customers customers and their analytics rollups, an alert channel and rule and
// opt.Alerts fired alerts, serves the API with its dashboard in process, logs in as
// an owner and times GETs of each page through the real handler.
func Dashboard(ctx context.Context, adminURL string, opt DashboardOptions) (DashboardResult, error) {
	res := DashboardResult{Customers: opt.Customers, Days: opt.Days, Runs: opt.Runs}
	if opt.Customers <= 0 || opt.Days <= 0 || opt.Runs <= 0 {
		return res, fmt.Errorf("dashboard: %d customers, %d days, %d runs", opt.Customers, opt.Days, opt.Runs)
	}
	pool, closeDB, err := freshPool(ctx, adminURL)
	if err != nil {
		return res, err
	}
	defer closeDB()
	spec, err := secrets.GenerateKey()
	if err != nil {
		return res, err
	}
	kr, err := secrets.ParseKeyring(spec)
	if err != nil {
		return res, err
	}
	srv, err := api.New(api.Config{OperatorToken: "op"}, api.Deps{Pool: pool, Logger: slog.New(slog.DiscardHandler), Secrets: kr})
	if err != nil {
		return res, err
	}
	defer srv.Close()
	start := time.Now()
	_, err = SeedDashboard(ctx, pool, kr, DemoOptions{Customers: opt.Customers, Days: opt.Days, Alerts: opt.Alerts, Invoices: opt.Invoices})
	if err != nil {
		return res, err
	}
	res.Seed = time.Since(start)
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	client, err := LoginDashboard(ctx, hs.URL, DemoOwnerEmail, DemoPassword)
	if err != nil {
		return res, err
	}
	pages := opt.Pages
	if pages == nil {
		pages = DashboardPages
	}
	for _, p := range pages {
		if strings.Contains(p, "%s") {
			p = fmt.Sprintf(p, DemoCustomerID(42))
		}
		page, err := timePage(ctx, client, hs.URL+p, opt.Runs)
		if err != nil {
			return res, err
		}
		page.Path = p
		res.Pages = append(res.Pages, page)
	}
	return res, nil
}

func timePage(ctx context.Context, c *http.Client, u string, runs int) (DashboardPage, error) {
	var out DashboardPage
	get := func() (time.Duration, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return 0, err
		}
		t0 := time.Now()
		resp, err := c.Do(req)
		if err != nil {
			return 0, err
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		took := time.Since(t0)
		out.Status, out.Bytes = resp.StatusCode, len(body)
		return took, err
	}
	for i := range 3 {
		d, err := get()
		if err != nil {
			return out, err
		}
		if i == 0 {
			out.First, out.FirstMs = d, msf(d)
		}
	}
	took := make([]time.Duration, 0, runs)
	for range runs {
		d, err := get()
		if err != nil {
			return out, err
		}
		took = append(took, d)
	}
	slices.Sort(took)
	out.P50, out.P95, out.Max = took[len(took)/2], took[(len(took)*95+99)/100-1], took[len(took)-1]
	out.P50ms, out.P95ms = msf(out.P50), msf(out.P95)
	return out, nil
}

// The demo tenant's owner, as SeedDashboard makes it.
const (
	DemoOwnerEmail = "owner@acme.test"
	DemoPassword   = "correct horse battery staple"
)

// DemoCustomerID is the id of the i-th seeded customer.
func DemoCustomerID(i int) string { return fmt.Sprintf("cust_%07d", i) }

// DemoOptions size SeedDashboard's data.
type DemoOptions struct {
	// Customers have analytics rollups for every one of Days days ending today.
	Customers, Days int
	// Alerts is how many of them a usage alert fired for.
	Alerts int
	// Invoices is how many of them have a billing period that ended, invoiced.
	Invoices int
}

// SeedDashboard makes a tenant "acme" with an owner (DemoOwnerEmail, DemoPassword),
// publishes BillingPolicy to its production environment, writes the customers with
// analytics rollups, a webhook alert channel, a usage_percent rule and fired alerts of
// it, and the invoices of the customers whose first period ended.
func SeedDashboard(ctx context.Context, pool *pgxpool.Pool, kr *secrets.Keyring, opt DemoOptions) (store.Environment, error) {
	n, days, nAlerts := opt.Customers, opt.Days, opt.Alerts
	boot, err := tenancy.NewService(pool).CreateTenant(ctx, tenancy.CreateTenantInput{Slug: "acme", Name: "Acme Inc"})
	if err != nil {
		return store.Environment{}, err
	}
	env := boot.Environments[0]
	us, err := users.NewService(pool, users.Config{})
	if err != nil {
		return env, err
	}
	if _, err := us.CreateUser(ctx, users.CreateUserInput{TenantID: boot.Tenant.ID, Email: DemoOwnerEmail, Name: "Ana Owner",
		Password: DemoPassword, Role: users.RoleOwner}); err != nil {
		return env, err
	}
	pols := pgstore.NewService(pool, nil)
	created, err := pols.Create(ctx, boot.Tenant.ID, pgstore.CreateInput{Format: doctree.FormatYAML, Source: []byte(BillingPolicy)})
	if err != nil {
		return env, fmt.Errorf("dashboard: create policy: %w", err)
	}
	if _, err := pols.Publish(ctx, env, pgstore.PublishInput{Version: &created.Version.Number}); err != nil {
		return env, fmt.Errorf("dashboard: publish policy: %w", err)
	}
	if err := copyCustomers(ctx, pool, env, n, opt.Invoices); err != nil {
		return env, err
	}
	if err := seedRollupsOf(ctx, pool, env, `create temporary table bench_customers as
			select uid, id, plan, type as ty, 1 + (row_number() over (order by id) % 97) / 10.0 as weight
			from customers where environment_id = $1::uuid`, []any{env.ID}, days, time.Now().UTC()); err != nil {
		return env, err
	}
	// What the customer pages read live: each customer's meters in its current period,
	// some past their included amounts.
	if _, err := pool.Exec(ctx, `insert into meter_aggregates (tenant_id, environment_id, customer_id, customer_uid, entitlement,
			period_start, credit, units, overhead, calls)
		select c.tenant_id, c.environment_id, c.id, c.uid, m.ent, c.created_at + make_interval(months => floor(extract(epoch from now() - c.created_at) / 2629746)::int),
		       m.credit, round(m.base * (0.4 + (i % 9) / 6.0)), round(m.cost * (0.4 + (i % 9) / 6.0) * (1 + (i % 5) / 4.0), 4), 50 + i % 40
		from (select *, row_number() over (order by id) as i from customers where environment_id = $1) c,
		     (values ('tokens', 'token', 1600000, 9.0), ('images', 'image', 1250, 12.0), ('minutes', 'minute', 12345, 30.0),
		             ('renders', 'render', 9, 25.0), ('assistant', 'ai_credit', 5000, 20.0)) m(ent, credit, base, cost)`, env.ID); err != nil {
		return env, fmt.Errorf("dashboard: meters: %w", err)
	}
	if nAlerts > 0 {
		if err := fireDemoAlerts(ctx, pool, env, kr, pols, min(nAlerts, n)); err != nil {
			return env, err
		}
	}
	if opt.Invoices > 0 {
		bill := billing.NewService(pool, pols, customers.NewService(pool, pols, nil))
		if _, err := bill.Close(ctx, env, "", time.Now().UTC()); err != nil {
			return env, fmt.Errorf("dashboard: invoices: %w", err)
		}
	}
	return env, nil
}

// copyCustomers writes n customers on the default plan with COPY; the first invoiced
// ones started 40 days ago, so their first monthly period has ended.
func copyCustomers(ctx context.Context, pool *pgxpool.Pool, env store.Environment, n, invoiced int) error {
	tenant, envID := pgtype.UUID{Bytes: env.TenantID, Valid: true}, pgtype.UUID{Bytes: env.ID, Valid: true}
	now := time.Now().UTC()
	i := 0
	_, err := pool.CopyFrom(ctx, pgx.Identifier{"customers"}, []string{"tenant_id", "environment_id", "id", "plan", "metadata", "billing_anchor", "created_at", "uid"},
		pgx.CopyFromFunc(func() ([]any, error) {
			if i == n {
				return nil, nil
			}
			i++
			meta := fmt.Sprintf(`{"name":"Customer %d","email":"billing+%d@example.com"}`, i, i)
			anchor := now.AddDate(0, 0, -i%28)
			if i <= invoiced {
				anchor = now.AddDate(0, 0, -40)
			}
			return []any{tenant, envID, DemoCustomerID(i), "standard", meta, anchor, anchor, pgtype.UUID{Bytes: uuid.New(), Valid: true}}, nil
		}))
	if err != nil {
		return fmt.Errorf("dashboard: copy customers: %w", err)
	}
	_, err = pool.Exec(ctx, `analyze customers`)
	return err
}

// fireDemoAlerts makes a webhook channel and a usage rule, then fires it for the first
// n customers.
func fireDemoAlerts(ctx context.Context, pool *pgxpool.Pool, env store.Environment, kr *secrets.Keyring, pols *pgstore.Service, n int) error {
	jobs, err := river.NewClient(riverpgxv5.New(pool), &river.Config{}) // insert-only: the deliveries stay pending
	if err != nil {
		return err
	}
	svc := alerts.New(pool, kr, jobs, pols, alerts.Config{})
	name, kind := "ops webhook", alerts.ChannelWebhook
	ch, err := svc.CreateChannel(ctx, env, alerts.ChannelInput{Name: &name, Kind: &kind, Webhook: &alerts.WebhookInput{URL: "https://hooks.example.com/limitr"}})
	if err != nil {
		return fmt.Errorf("dashboard: channel: %w", err)
	}
	rname, rkind, chans := "Tokens at 80 % and 100 %", alerts.KindUsagePercent, []string{ch.ID.String()}
	if _, err := svc.CreateRule(ctx, env, alerts.RuleInput{Name: &rname, Kind: &rkind,
		Params: &alerts.Params{Thresholds: []num.Dec{num.FromInt(80), num.FromInt(100)}}, Channels: &chans}); err != nil {
		return fmt.Errorf("dashboard: rule: %w", err)
	}
	rows, err := pool.Query(ctx, `select uid, id from customers where environment_id = $1 order by id limit $2`, env.ID, n)
	if err != nil {
		return err
	}
	type cust struct {
		uid uuid.UUID
		id  string
	}
	cs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (cust, error) {
		var c cust
		return c, r.Scan(&c.uid, &c.id)
	})
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	period := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
	obs := make([]alerts.Observation, 0, len(cs))
	for i, c := range cs {
		obs = append(obs, alerts.Observation{Kind: alerts.KindUsagePercent, Customer: alerts.Subject{UID: c.uid, ID: c.id, Plan: "standard"},
			Entitlement: "tokens", Value: num.FromInt(int64(80 + i%40)), Limit: num.FromInt(1_000_000), PeriodStart: period,
			PeriodEnd: period.AddDate(0, 1, 0), At: now.Add(-time.Duration(len(cs)-i) * time.Minute)})
	}
	for len(obs) > 0 {
		k := min(len(obs), 500)
		if _, err := svc.Observe(ctx, env, obs[:k]); err != nil {
			return fmt.Errorf("dashboard: fire: %w", err)
		}
		obs = obs[k:]
	}
	return nil
}

// LoginDashboard logs in through the dashboard's form and returns a client that
// keeps the session cookie.
func LoginDashboard(ctx context.Context, baseURL, email, password string) (*http.Client, error) {
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, baseURL+"/login", nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := regexp.MustCompile(`name="csrf_token" value="([^"]+)"`).FindSubmatch(body)
	if m == nil {
		return nil, fmt.Errorf("dashboard: the login page has no CSRF token (%d)", resp.StatusCode)
	}
	form := url.Values{"csrf_token": {string(m[1])}, "email": {email}, "password": {password}}
	req, err = http.NewRequestWithContext(ctx, http.MethodPost, baseURL+"/login", strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", baseURL)
	resp, err = c.Do(req)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
		return nil, fmt.Errorf("dashboard: login: %d", resp.StatusCode)
	}
	return c, nil
}
