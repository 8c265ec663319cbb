package analytics

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/limitr/limitr/internal/store"
)

// Ranking customers reads two rows a customer (its running totals at the window's
// start and end) in two steps: every customer is ranked on float copies of revenue and
// cost (rank_revenue, rank_cost, with calls, in a covering index: an index-only scan,
// no numeric arithmetic on 100k rows), then the page's customers alone are read
// exactly. Float ranking can only misorder customers whose figures agree to 15
// significant digits; every figure shown is exact.

// edgeColumns are what an edge reads: for ranking, or exact.
type edgeColumns struct {
	day, hourly, sums string
}

var (
	rankCols = edgeColumns{
		day:    `calls, rank_revenue as rev, rank_cost as cost`,
		hourly: `calls, (usage_revenue - grant_revenue + fee_revenue + topup_revenue)::float8, cost::float8`,
		sums:   `sum(calls) as calls, sum(rev) as rev, sum(cost) as cost`,
	}
	exactCols = edgeColumns{
		day:    `calls, cost, usage_revenue as ur, grant_revenue as gr, fee_revenue as fr, topup_revenue as tr`,
		hourly: `calls, cost, usage_revenue, grant_revenue, fee_revenue, topup_revenue`,
		sums:   `sum(calls) as calls, sum(cost) as cost, sum(ur) as ur, sum(gr) as gr, sum(fr) as fr, sum(tr) as tr`,
	}
)

// edge is the SQL of the customers' running totals at t, with its arguments numbered
// from n; filter, if set, narrows the customers. Rows hold totals through the end of a
// day (through now for today); an edge inside a day adds that day's hours before it.
func edge(cols edgeColumns, t, now time.Time, n int, filter string) (string, []any) {
	row := fmt.Sprintf(`select customer_uid, customer_id, %s from analytics_customer_days
		where environment_id = $1 and day = $%d%s`, cols.day, n, filter)
	if t.After(now) {
		return row, []any{day(now)} // today's row holds the totals through now
	}
	if day(t).Equal(t) {
		return row, []any{day(t).AddDate(0, 0, -1)}
	}
	return fmt.Sprintf(`select customer_uid, max(customer_id) as customer_id, %s
		from (%s union all
		      select customer_uid, customer_id, %s from analytics_hourly
		      where environment_id = $1 and bucket >= $%d and bucket < $%d%s) x
		group by customer_uid`, cols.sums, row, cols.hourly, n+1, n+2, filter), []any{day(t).AddDate(0, 0, -1), day(t), t}
}

// rankCustomers ranks the customers with any change in the window and reads the
// page's figures exactly.
func rankCustomers(ctx context.Context, tx pgx.Tx, env store.Environment, q MarginsQuery, offset int, now time.Time) ([]sumsRow, error) {
	endSQL, endArgs := edge(rankCols, q.To, now, 4, "")
	startSQL, startArgs := edge(rankCols, q.From, now, 4+len(endArgs), "")
	sql := `with e as (` + endSQL + `), s as (` + startSQL + `),
		w as (select e.customer_uid, e.customer_id as key, e.calls - coalesce(s.calls, 0) as calls,
		             e.rev - coalesce(s.rev, 0) as rev, e.cost - coalesce(s.cost, 0) as cost
		      from e left join s on s.customer_uid = e.customer_uid)
		select customer_uid from w where calls <> 0 or rev <> 0 or cost <> 0
		order by ` + rankKey(q.Sort) + ` offset $2 limit $3`
	args := append([]any{env.ID, offset, q.Limit + 1}, endArgs...)
	rows, err := tx.Query(ctx, sql, append(args, startArgs...)...)
	if err != nil {
		return nil, fmt.Errorf("analytics: ranking: %w", err)
	}
	uids, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil || len(uids) == 0 {
		return nil, wrapRank(err)
	}
	endSQL, endArgs = edge(exactCols, q.To, now, 3, " and customer_uid = any($2)")
	startSQL, startArgs = edge(exactCols, q.From, now, 3+len(endArgs), " and customer_uid = any($2)")
	sql = `with e as (` + endSQL + `), s as (` + startSQL + `)
		select e.customer_uid, e.customer_id, e.calls - coalesce(s.calls, 0), (e.cost - coalesce(s.cost, 0))::text,
		       (e.ur - coalesce(s.ur, 0))::text, (e.gr - coalesce(s.gr, 0))::text, (e.fr - coalesce(s.fr, 0))::text, (e.tr - coalesce(s.tr, 0))::text
		from e left join s on s.customer_uid = e.customer_uid`
	args = append([]any{env.ID, uids}, endArgs...)
	rows, err = tx.Query(ctx, sql, append(args, startArgs...)...)
	if err != nil {
		return nil, fmt.Errorf("analytics: ranked figures: %w", err)
	}
	exact := map[uuid.UUID]sumsRow{}
	for rows.Next() {
		var uid uuid.UUID
		var r sumsRow
		if err := rows.Scan(&uid, &r.key, &r.calls, &r.cost, &r.ur, &r.gr, &r.fr, &r.tr); err != nil {
			rows.Close()
			return nil, fmt.Errorf("analytics: ranked figures: %w", err)
		}
		exact[uid] = r
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("analytics: ranked figures: %w", err)
	}
	out := make([]sumsRow, 0, len(uids))
	for _, uid := range uids {
		out = append(out, exact[uid])
	}
	return out, nil
}

func wrapRank(err error) error {
	if err != nil {
		return fmt.Errorf("analytics: ranking: %w", err)
	}
	return nil
}
