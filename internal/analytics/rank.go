package analytics

import (
	"context"
	"fmt"
	"strings"
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

// edgeColumns are what an edge reads, for ranking or exact: the running-total row's
// columns (day), the same summed from hourly rollups (hourly), and how the two add up
// (sum, with %[1]s the row and %[2]s the hours).
type edgeColumns struct {
	day, hourly, sum string
}

var (
	rankCols = edgeColumns{
		day: `calls, rank_revenue as rev, rank_cost as cost`,
		hourly: `sum(calls) as calls, sum(usage_revenue - grant_revenue + fee_revenue + topup_revenue)::float8 as rev,
			sum(cost)::float8 as cost`,
		sum: `coalesce(%[1]s.calls, 0) + coalesce(%[2]s.calls, 0) as calls, coalesce(%[1]s.rev, 0) + coalesce(%[2]s.rev, 0) as rev,
			coalesce(%[1]s.cost, 0) + coalesce(%[2]s.cost, 0) as cost`,
	}
	exactCols = edgeColumns{
		day: `calls, cost, usage_revenue as ur, grant_revenue as gr, fee_revenue as fr, topup_revenue as tr`,
		hourly: `sum(calls) as calls, sum(cost) as cost, sum(usage_revenue) as ur, sum(grant_revenue) as gr,
			sum(fee_revenue) as fr, sum(topup_revenue) as tr`,
		sum: `coalesce(%[1]s.calls, 0) + coalesce(%[2]s.calls, 0) as calls, coalesce(%[1]s.cost, 0) + coalesce(%[2]s.cost, 0) as cost,
			coalesce(%[1]s.ur, 0) + coalesce(%[2]s.ur, 0) as ur, coalesce(%[1]s.gr, 0) + coalesce(%[2]s.gr, 0) as gr,
			coalesce(%[1]s.fr, 0) + coalesce(%[2]s.fr, 0) as fr, coalesce(%[1]s.tr, 0) + coalesce(%[2]s.tr, 0) as tr`,
	}
)

// edge is the SQL of the customers' running totals at t, with its arguments numbered
// from n; filter, if set, narrows the customers. Rows hold totals through the end of a
// day (through now for today); an edge inside a day adds that day's hours before it,
// which only the customers active in them have: they are summed apart and joined.
func edge(cols edgeColumns, t, now time.Time, n int, filter string) (string, []any) {
	row := fmt.Sprintf(`select customer_uid, %s from analytics_customer_days
		where environment_id = $1 and day = $%d%s`, cols.day, n, filter)
	if t.After(now) {
		return row, []any{day(now)} // today's row holds the totals through now
	}
	if day(t).Equal(t) {
		return row, []any{day(t).AddDate(0, 0, -1)}
	}
	return fmt.Sprintf(`select coalesce(d.customer_uid, h.customer_uid) as customer_uid, %s
		from (%s) d full join (select customer_uid, %s from analytics_hourly
		      where environment_id = $1 and bucket >= $%d and bucket < $%d%s group by customer_uid) h
		  on h.customer_uid = d.customer_uid`, fmt.Sprintf(cols.sum, "d", "h"), row, cols.hourly, n+1, n+2, filter),
		[]any{day(t).AddDate(0, 0, -1), day(t), t}
}

// rankCustomers ranks the customers with any change in the window and reads the
// page's figures exactly.
func rankCustomers(ctx context.Context, tx pgx.Tx, env store.Environment, q MarginsQuery, offset int, now time.Time) ([]sumsRow, error) {
	endSQL, endArgs := edge(rankCols, q.To, now, 4, "")
	startSQL, startArgs := edge(rankCols, q.From, now, 4+len(endArgs), "")
	// The ranking reads the covering index alone; ties (and sorting by key) fall back
	// on the customer's uid, not its id, which is not in the index.
	order := rankKey(q.Sort)
	sql := `with e as (` + endSQL + `), s as (` + startSQL + `),
		w as (select e.customer_uid, e.calls - coalesce(s.calls, 0) as calls,
		             e.rev - coalesce(s.rev, 0) as rev, e.cost - coalesce(s.cost, 0) as cost
		      from e left join s on s.customer_uid = e.customer_uid)
		select customer_uid from w where calls <> 0 or rev <> 0 or cost <> 0
		order by ` + order + ` offset $2 limit $3`
	if strings.TrimPrefix(q.Sort, "-") == "key" {
		sql = strings.Replace(sql, "w as (select e.customer_uid,", "w as (select e.customer_uid, (select customer_id from analytics_customer_days x where x.environment_id = $1 and x.customer_uid = e.customer_uid limit 1) as key,", 1)
	} else {
		order = strings.ReplaceAll(order, "key ", "customer_uid ")
		sql = strings.Replace(sql, rankKey(q.Sort), order, 1)
	}
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
		select e.customer_uid, (select customer_id from analytics_customer_days x where x.environment_id = $1 and x.customer_uid = e.customer_uid limit 1),
		       e.calls - coalesce(s.calls, 0), (e.cost - coalesce(s.cost, 0))::text,
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
