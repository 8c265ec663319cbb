package analytics

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/store"
)

// BookTopups books the topup invoices of env finalized since the last call (each
// once: its id is recorded in the same transaction) as topup revenue at the hour it
// was finalized, under entitlement "".
func (s *Service) BookTopups(ctx context.Context, env store.Environment) (int, error) {
	n := 0
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `select pg_advisory_xact_lock($1)`, lockKey(env.ID)); err != nil {
			return fmt.Errorf("analytics: lock: %w", err)
		}
		rows, err := tx.Query(ctx, `with fresh as (
				insert into analytics_topups (invoice_id, environment_id)
				select i.id, i.environment_id from invoices i
				where i.tenant_id = $1 and i.environment_id = $2 and i.kind = 'topup' and i.status in ('finalized', 'paid')
				  and not exists (select 1 from analytics_topups t where t.invoice_id = i.id)
				on conflict do nothing returning invoice_id)
			select i.customer_uid, i.customer_id, coalesce(c.plan, ''), coalesce(c.type, ''), i.total::text, coalesce(i.finalized_at, i.created_at)
			from fresh f join invoices i on i.id = f.invoice_id
			left join customers c on c.uid = i.customer_uid`, env.TenantID, env.ID)
		if err != nil {
			return fmt.Errorf("analytics: topups: %w", err)
		}
		var changes []change
		for rows.Next() {
			var ch change
			var total string
			var at time.Time
			if err := rows.Scan(&ch.uid, &ch.customerID, &ch.plan, &ch.custTy, &total, &at); err != nil {
				rows.Close()
				return fmt.Errorf("analytics: topups: %w", err)
			}
			ch.amounts = zeroAmounts()
			if ch.topupRevenue, err = num.Parse(total); err != nil {
				rows.Close()
				return fmt.Errorf("analytics: topup total %q: %w", total, err)
			}
			ch.hour = hour(at)
			changes = append(changes, ch)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("analytics: topups: %w", err)
		}
		n = len(changes)
		return writeChanges(ctx, tx, env.ID, env.TenantID, changes, s.now())
	})
	return n, err
}
