package analytics

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/limitr/limitr/internal/store"
)

// Margins is the answer to a MarginsQuery.
type Margins struct {
	Currency   string    `json:"currency"`
	GroupBy    string    `json:"group_by"`
	Interval   string    `json:"interval"`
	From       time.Time `json:"from"`
	To         time.Time `json:"to"`
	Sort       string    `json:"sort"`
	Totals     Figures   `json:"totals"`
	Groups     []Group   `json:"groups"`
	NextCursor string    `json:"next_cursor,omitempty"`
}

// Group is one group's figures over the window and per interval (intervals without
// any change are left out).
type Group struct {
	Key    string  `json:"key"`
	Totals Figures `json:"totals"`
	Series []Point `json:"series"`
}

// Point is one interval's figures.
type Point struct {
	Start time.Time `json:"start"`
	Figures
}

// sumCols are the rollup columns a figure needs, summed.
const sumCols = `coalesce(sum(calls), 0)::int8, coalesce(sum(cost), 0)::text, coalesce(sum(usage_revenue), 0)::text,
	coalesce(sum(grant_revenue), 0)::text, coalesce(sum(fee_revenue), 0)::text, coalesce(sum(topup_revenue), 0)::text`

// rankKey is the SQL of a sort key over columns rev (revenue) and cost; a customer
// that cost something and brought nothing has the worst margin there is.
func rankKey(sort string) string {
	key := strings.TrimPrefix(sort, "-")
	dir := "asc"
	if strings.HasPrefix(sort, "-") {
		dir = "desc"
	}
	expr := map[string]string{
		"margin_percent": `case when rev = 0 then case when cost > 0 then '-infinity'::float8 else 0 end else ((rev - cost) / rev)::float8 end`,
		"margin":         `rev - cost`,
		"revenue":        `rev`,
		"cost":           `cost`,
		"key":            `key`,
	}[key]
	return expr + " " + dir + ", key " + dir
}

// Margins answers a margins query from the rollups: per customer from the running
// totals (two rows a customer, whatever the window), per plan, customer type or
// entitlement from the group rollups.
func (s *Service) Margins(ctx context.Context, env store.Environment, q MarginsQuery) (Margins, error) {
	if err := q.Validate(s.now()); err != nil {
		return Margins{}, err
	}
	offset, err := q.offset()
	if err != nil {
		return Margins{}, err
	}
	set, err := s.valuer.Settings(ctx, env)
	if err != nil {
		return Margins{}, err
	}
	out := Margins{Currency: set.Currency, GroupBy: q.GroupBy, Interval: q.Interval, From: q.From, To: q.To, Sort: q.Sort, Groups: []Group{}}
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly, IsoLevel: pgx.RepeatableRead})
	if err != nil {
		return Margins{}, fmt.Errorf("analytics: margins: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // read only
	// Ranking joins two rows of every customer: enough memory to hash 100k of them in
	// one batch, in one process (parallel workers double its time on two cores: the
	// hash is built once per worker).
	if _, err := tx.Exec(ctx, `set local work_mem = '64MB'; set local max_parallel_workers_per_gather = 0`); err != nil {
		return Margins{}, fmt.Errorf("analytics: margins: %w", err)
	}
	table := "analytics_group_daily"
	if q.Interval == Hour {
		table = "analytics_group_hourly"
	}
	var total sumsRow
	if err := tx.QueryRow(ctx, `select `+sumCols+` from `+table+` where environment_id = $1 and bucket >= $2 and bucket < $3`,
		env.ID, q.From, q.To).Scan(&total.calls, &total.cost, &total.ur, &total.gr, &total.fr, &total.tr); err != nil {
		return Margins{}, fmt.Errorf("analytics: margins: totals: %w", err)
	}
	if out.Totals, err = total.figures(set.Currency); err != nil {
		return Margins{}, err
	}
	var ranked []sumsRow
	if q.GroupBy == ByCustomer {
		ranked, err = rankCustomers(ctx, tx, env, q, offset, s.now())
	} else {
		ranked, err = rankGroups(ctx, tx, table, env, q, offset)
	}
	if err != nil {
		return Margins{}, err
	}
	if len(ranked) > q.Limit {
		ranked = ranked[:q.Limit]
		out.NextCursor = q.next(offset + q.Limit)
	}
	keys := make([]string, len(ranked))
	for i, r := range ranked {
		keys[i] = r.key
	}
	series, err := s.series(ctx, tx, env, q.GroupBy, q.Interval, q.From, q.To, keys)
	if err != nil {
		return Margins{}, err
	}
	for _, r := range ranked {
		g := Group{Key: r.key, Series: []Point{}}
		if g.Totals, err = r.figures(set.Currency); err != nil {
			return Margins{}, err
		}
		for _, p := range series[r.key] {
			f, err := p.figures(set.Currency)
			if err != nil {
				return Margins{}, err
			}
			g.Series = append(g.Series, Point{Start: p.start, Figures: f})
		}
		out.Groups = append(out.Groups, g)
	}
	return out, nil
}

var groupColumn = map[string]string{ByPlan: "plan", ByEntitlement: "entitlement", ByCustomerType: "customer_type"}

func rankGroups(ctx context.Context, tx pgx.Tx, table string, env store.Environment, q MarginsQuery, offset int) ([]sumsRow, error) {
	col := groupColumn[q.GroupBy]
	sql := `with w as (select ` + col + ` as key, sum(calls) as calls, sum(cost) as cost, sum(usage_revenue) as ur, sum(grant_revenue) as gr,
			sum(fee_revenue) as fr, sum(topup_revenue) as tr
		from ` + table + ` where environment_id = $1 and bucket >= $4 and bucket < $5 group by 1),
		r as (select *, ur - gr + fr + tr as rev from w)
		select key, calls, cost::text, ur::text, gr::text, fr::text, tr::text from r
		order by ` + rankKey(q.Sort) + ` offset $2 limit $3`
	return collectRanked(ctx, tx, sql, []any{env.ID, offset, q.Limit + 1, q.From, q.To})
}

func collectRanked(ctx context.Context, tx pgx.Tx, sql string, args []any) ([]sumsRow, error) {
	rows, err := tx.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("analytics: ranking: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (sumsRow, error) {
		var s sumsRow
		return s, r.Scan(&s.key, &s.calls, &s.cost, &s.ur, &s.gr, &s.fr, &s.tr)
	})
	if err != nil {
		return nil, fmt.Errorf("analytics: ranking: %w", err)
	}
	return out, nil
}

// series reads the page's groups per interval.
func (s *Service) series(ctx context.Context, tx pgx.Tx, env store.Environment, groupBy, interval string, from, to time.Time, keys []string) (map[string][]sumsRow, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	table, col := "analytics_group_daily", groupColumn[groupBy]
	if groupBy == ByCustomer {
		table, col = "analytics_daily", "customer_id"
	}
	if interval == Hour {
		table = strings.Replace(table, "daily", "hourly", 1)
	}
	rows, err := tx.Query(ctx, `select `+col+`, date_trunc($5, bucket, 'UTC'), `+sumCols+`
		from `+table+` where environment_id = $1 and `+col+` = any($2) and bucket >= $3 and bucket < $4
		group by 1, 2 order by 1, 2`, env.ID, keys, from, to, interval)
	if err != nil {
		return nil, fmt.Errorf("analytics: series: %w", err)
	}
	list, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (sumsRow, error) {
		var s sumsRow
		return s, r.Scan(&s.key, &s.start, &s.calls, &s.cost, &s.ur, &s.gr, &s.fr, &s.tr)
	})
	if err != nil {
		return nil, fmt.Errorf("analytics: series: %w", err)
	}
	out := map[string][]sumsRow{}
	for _, r := range list {
		r.start = r.start.UTC()
		out[r.key] = append(out[r.key], r)
	}
	return out, nil
}
