package bench

// The margins query (DESIGN.md, performance budgets): 30 days × 100k customers, p95 ≤
// 200 ms. The rollups are seeded in the shape the analytics booker writes them (dense
// per-customer running totals, per-customer daily rows, per-group daily rows), then
// analytics.Service.Margins answers the queries a dashboard sends.
// bench/analyticsload is the command; bench/README.md has the figures.

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/limitr/limitr/internal/analytics"
	"github.com/limitr/limitr/internal/billing"
	"github.com/limitr/limitr/internal/customers"
	"github.com/limitr/limitr/internal/store"
)

// MarginsOptions shape one margins run.
type MarginsOptions struct {
	Customers, Days int
	// Runs is how many times each query is timed (default 30).
	Runs int
}

// MarginsQueryResult is one query's latencies.
type MarginsQueryResult struct {
	Name          string        `json:"name"`
	P50, P95, Max time.Duration `json:"-"`
	P95ms         float64       `json:"p95_ms"`
	Groups        int           `json:"groups"`
}

// MarginsResult is a run: the seeded rollups and each query's latencies.
type MarginsResult struct {
	Customers int                  `json:"customers"`
	Days      int                  `json:"days"`
	Rows      int64                `json:"running_total_rows"`
	Seed      time.Duration        `json:"seed_ns"`
	Queries   []MarginsQueryResult `json:"queries"`
}

func (r MarginsResult) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "margins: %d customers × %d days (%d running-total rows, seeded in %s)\n", r.Customers, r.Days, r.Rows, r.Seed.Round(time.Millisecond))
	for _, q := range r.Queries {
		fmt.Fprintf(&b, "  %-44s p50 %7.1f ms  p95 %7.1f ms  max %7.1f ms  (%d groups)\n", q.Name, msf(q.P50), msf(q.P95), msf(q.Max), q.Groups)
	}
	return b.String()
}

func msf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// WorstP95 is the slowest query's p95.
func (r MarginsResult) WorstP95() time.Duration {
	var w time.Duration
	for _, q := range r.Queries {
		w = max(w, q.P95)
	}
	return w
}

// Margins creates a fresh database next to adminURL, seeds the rollups of opt.Customers
// customers over opt.Days days ending now, and times the margins queries.
func Margins(ctx context.Context, adminURL string, opt MarginsOptions) (MarginsResult, error) {
	res := MarginsResult{Customers: opt.Customers, Days: opt.Days}
	if opt.Customers <= 0 || opt.Days <= 0 {
		return res, fmt.Errorf("margins: %d customers over %d days", opt.Customers, opt.Days)
	}
	if opt.Runs <= 0 {
		opt.Runs = 30
	}
	pool, closeDB, err := freshPool(ctx, adminURL)
	if err != nil {
		return res, err
	}
	defer closeDB()
	env, pols, err := stagingWithPolicy(ctx, pool)
	if err != nil {
		return res, err
	}
	now := time.Now().UTC()
	start := time.Now()
	if err := seedRollups(ctx, pool, env, opt.Customers, opt.Days, now); err != nil {
		return res, err
	}
	res.Seed = time.Since(start)
	if err := pool.QueryRow(ctx, `select count(*) from analytics_customer_days`).Scan(&res.Rows); err != nil {
		return res, err
	}
	svc := analytics.NewService(pool, billing.NewService(pool, pols, customers.NewService(pool, pols, nil)))
	from := now.AddDate(0, 0, -opt.Days)
	first, err := svc.Margins(ctx, env, analytics.MarginsQuery{From: from})
	if err != nil {
		return res, err
	}
	queries := []struct {
		name string
		q    analytics.MarginsQuery
	}{
		{"customers, worst margin first, by day", analytics.MarginsQuery{From: from}},
		{"customers, most revenue first, by day", analytics.MarginsQuery{From: from, Sort: "-revenue"}},
		{"customers, second page (cursor)", analytics.MarginsQuery{From: from, Cursor: first.NextCursor}},
		{"customers, last 3 days by hour", analytics.MarginsQuery{From: now.Add(-72*time.Hour + 30*time.Minute), Interval: analytics.Hour}},
		{"plans, by day", analytics.MarginsQuery{From: from, GroupBy: analytics.ByPlan}},
		{"entitlements, by month", analytics.MarginsQuery{From: from, GroupBy: analytics.ByEntitlement, Interval: analytics.Month}},
	}
	for _, q := range queries {
		var took []time.Duration
		var groups int
		for range opt.Runs {
			t0 := time.Now()
			m, err := svc.Margins(ctx, env, q.q)
			if err != nil {
				return res, fmt.Errorf("margins: %s: %w", q.name, err)
			}
			took, groups = append(took, time.Since(t0)), len(m.Groups)
		}
		slices.Sort(took)
		r := MarginsQueryResult{Name: q.name, P50: took[len(took)/2], P95: took[(len(took)*95+99)/100-1], Max: took[len(took)-1], Groups: groups}
		r.P95ms = msf(r.P95)
		res.Queries = append(res.Queries, r)
	}
	return res, nil
}

// seedRollups writes what the booker would have written for n customers with usage
// of two entitlements every day for days days: dense running totals, per-customer
// daily rows, per-group daily rows, and the last three days by hour.
func seedRollups(ctx context.Context, pool *pgxpool.Pool, env store.Environment, n, days int, now time.Time) error {
	return seedRollupsOf(ctx, pool, env, `create temporary table bench_customers as
			select gen_random_uuid() as uid, 'cust_' || lpad(i::text, 7, '0') as id, 'plan_' || (i % 5) as plan,
			       case when i % 3 = 0 then 'team' else 'user' end as ty, 1 + (i % 97) / 10.0 as weight
			from generate_series(1, $1::int) i`, []any{n}, days, now)
}

// seedRollupsOf is seedRollups for the customers the statement customers puts in the
// temporary table bench_customers (uid, id, plan, ty, weight).
func seedRollupsOf(ctx context.Context, pool *pgxpool.Pool, env store.Environment, customers string, customerArgs []any, days int, now time.Time) error {
	today := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)
	first := today.AddDate(0, 0, -days)
	hour := now.Truncate(time.Hour)
	stmts := []struct {
		sql  string
		args []any
	}{
		{customers, customerArgs},
		{`insert into analytics_customer_days (environment_id, day, customer_uid, customer_id, plan, customer_type, calls, cost,
			usage_revenue, grant_revenue, fee_revenue, topup_revenue, rank_revenue, rank_cost)
		 select $1::uuid, day, uid, id, plan, ty, calls, cost, ur, gr, 20, 0, (ur - gr + 20)::float8, cost::float8
		 from (select d::date as day, c.*, 40 * (d::date - $2::date + 1) as calls, round(c.weight * 0.37 * (d::date - $2::date + 1), 6) as cost,
		              round(1.25 * (d::date - $2::date + 1), 2) as ur, round(0.10 * (d::date - $2::date + 1), 2) as gr
		       from bench_customers c, generate_series($2::date, $3::date, interval '1 day') d) x
		 order by 2, 3`, []any{env.ID, first, today}},
		{`insert into analytics_daily (environment_id, bucket, customer_uid, entitlement, version, tenant_id, customer_id, plan, customer_type,
			units, calls, cost, usage_revenue, grant_revenue, fee_revenue, topup_revenue)
		 select $1::uuid, d, c.uid, e, 1, $4::uuid, c.id, c.plan, c.ty, 1000, 20, round(c.weight * 0.185, 6), 0.625, 0.05, 0, 0
		 from bench_customers c, generate_series($2::date, $3::date, interval '1 day') d, unnest(array['tokens', 'images']) e
		 order by 2, 3`, []any{env.ID, first, today, env.TenantID}},
		{`insert into analytics_group_daily (environment_id, bucket, plan, customer_type, entitlement, units, calls, cost,
			usage_revenue, grant_revenue, fee_revenue, topup_revenue)
		 select $1::uuid, d, plan, ty, e, sum(1000), sum(20), sum(round(weight * 0.185, 6)), sum(0.625), sum(0.05), 0, 0
		 from bench_customers, generate_series($2::date, $3::date, interval '1 day') d, unnest(array['tokens', 'images']) e
		 group by 1, 2, 3, 4, 5`, []any{env.ID, first, today}},
		{`insert into analytics_hourly (environment_id, bucket, customer_uid, entitlement, version, tenant_id, customer_id, plan, customer_type,
			units, calls, cost, usage_revenue, grant_revenue, fee_revenue, topup_revenue)
		 select $1::uuid, h, c.uid, 'tokens', 1, $2::uuid, c.id, c.plan, c.ty, 40, 1, 0.01, 0.05, 0, 0, 0
		 from bench_customers c, generate_series($3::timestamptz, $4::timestamptz, interval '1 hour') h
		 where c.id like '%7'
		 order by 2, 3`, []any{env.ID, env.TenantID, today.AddDate(0, 0, -2), hour}},
		{`insert into analytics_carried (environment_id, through_day) values ($1::uuid, $2::date)`, []any{env.ID, today}},
		// Past days are settled (autovacuum has marked them all-visible); today's rows
		// of the customers active today are being rewritten by bookings.
		{`vacuum analyze`, nil},
		{`update analytics_customer_days set calls = calls + 1 where environment_id = $1::uuid and day = $2::date and right(customer_id, 1) in ('1', '2', '3')`, []any{env.ID, today}},
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	for _, st := range stmts {
		if _, err := conn.Exec(ctx, st.sql, st.args...); err != nil {
			return fmt.Errorf("margins: seed: %w", err)
		}
	}
	return nil
}
