package billing

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/limitr/limitr/internal/billing/money"
	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/store"
)

// finalizeRows numbers and freezes drafts, in the caller's transaction. The counter
// row is locked and advanced by exactly the number of drafts finalized, so numbers
// have no gaps whatever rolls back. It records the meter periods the invoices billed,
// and an audit and change-feed entry per invoice. Each of these is one statement for
// all the drafts, sent in three round trips.
func (s *Service) finalizeRows(ctx context.Context, tx pgx.Tx, env store.Environment, ids []uuid.UUID) (int, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	// The drafts, locked in the order they are numbered.
	type draft struct {
		id              [16]byte
		customer, total string
		start, end      time.Time
	}
	rows, err := tx.Query(ctx, `select id, customer_id, total::text, period_start, period_end from invoices
		where id = any($1) and status = 'draft' order by period_end, customer_id, id for update`, pgUUIDs(ids))
	if err != nil {
		return 0, fmt.Errorf("billing: finalize: %w", err)
	}
	drafts, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (draft, error) {
		var d draft
		return d, r.Scan(&d.id, &d.customer, &d.total, &d.start, &d.end)
	})
	if err != nil || len(drafts) == 0 {
		return 0, err
	}
	locked := make([][16]byte, len(drafts))
	for i, d := range drafts {
		locked[i] = d.id
	}
	tenant, envID := pgUUID(env.TenantID), pgUUID(env.ID)
	var set Settings
	var last int64
	b := &pgx.Batch{}
	// The meter periods the invoices bill. A meter period billed by two of these
	// invoices (adjustments of the same late usage) is recorded once, as the
	// later-numbered invoice billed it: numbers follow the lock order.
	b.Queue(`insert into billed_meter_periods (customer_uid, entitlement, period_start, units, grant_covered, amount, policy_version, invoice_id)
		select distinct on (i.customer_uid, x.entitlement, x.period_start)
			i.customer_uid, x.entitlement, x.period_start, x.units::numeric, x.grant_covered::numeric, x.amount::numeric, x.policy_version, i.id
		from unnest($1::uuid[]) with ordinality as l(id, n) join invoices i on i.id = l.id,
			jsonb_to_recordset(i.bills) as x(entitlement text, period_start timestamptz, units text, grant_covered text, amount text, policy_version int)
		order by i.customer_uid, x.entitlement, x.period_start, l.n desc
		on conflict (customer_uid, entitlement, period_start) do update set units = excluded.units, grant_covered = excluded.grant_covered,
		  amount = excluded.amount, invoice_id = excluded.invoice_id, updated_at = now()`, locked)
	b.Queue(settingsSQL, tenant, envID).QueryRow(func(row pgx.Row) (err error) {
		set, err = scanSettings(row)
		return err
	})
	// The counter is locked last: it is held until commit, so a concurrent close of
	// the same environment waits only for the numbering.
	b.Queue(`insert into invoice_counters (tenant_id, environment_id, last_number) values ($1, $2, $3)
		on conflict (tenant_id, environment_id) do update set last_number = invoice_counters.last_number + excluded.last_number
		returning last_number`, tenant, envID, len(drafts)).QueryRow(func(row pgx.Row) error {
		return row.Scan(&last)
	})
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return 0, fmt.Errorf("billing: finalize: %w", err)
	}
	seqs := make([]int64, len(drafts))
	numbers := make([]string, len(drafts))
	subjects := make([]string, len(drafts))
	payloads := make([]json.RawMessage, len(drafts))
	for i, d := range drafts {
		seqs[i] = last - int64(len(drafts)) + 1 + int64(i)
		numbers[i] = fmt.Sprintf("%s-%06d", set.InvoicePrefix, seqs[i])
		total, err := num.Parse(d.total)
		if err != nil {
			return 0, fmt.Errorf("billing: finalize: total %q: %w", d.total, err)
		}
		t, _ := money.Format(total, set.Currency)
		subjects[i] = uuid.UUID(d.id).String()
		// The keys in the order json.Marshal gives a map's: the entries read as before.
		if payloads[i], err = json.Marshal(invoiceSummary{Customer: d.customer, ID: subjects[i], Number: numbers[i],
			PeriodEnd: d.end, PeriodStart: d.start, Status: StatusFinalized, Total: t}); err != nil {
			return 0, fmt.Errorf("billing: finalize: %w", err)
		}
	}
	a := store.ActorFrom(ctx)
	var finalized int64
	b = &pgx.Batch{}
	b.Queue(`update invoices i set status = 'finalized', sequence = u.seq, number = u.number, finalized_at = now(),
			due_at = i.finalize_after + make_interval(days => $2), seller = $3, updated_at = now(), revision = i.revision + 1
		from unnest($1::uuid[], $4::bigint[], $5::text[]) as u(id, seq, number)
		where i.id = u.id`,
		locked, set.DaysUntilDue, []byte(set.Seller), seqs, numbers).Exec(func(ct pgconn.CommandTag) error {
		finalized = ct.RowsAffected()
		return nil
	})
	b.Queue(`insert into audit_log (tenant_id, environment_id, actor_key_id, actor_user_id, action, resource, resource_id, after, request_id)
		select $1, $2, $3, $7, 'invoice.finalized', 'invoice', u.id, u.payload, $4
		from unnest($5::text[], $6::jsonb[]) with ordinality as u(id, payload, n) order by u.n`,
		tenant, envID, a.KeyID, a.RequestID, subjects, pgtype.FlatArray[json.RawMessage](payloads), a.UserID)
	b.Queue(`insert into change_feed (tenant_id, environment_id, kind, subject, payload)
		select $1, $2, 'invoice', u.id, jsonb_build_object('action', 'invoice.finalized', 'data', u.payload)
		from unnest($3::text[], $4::jsonb[]) with ordinality as u(id, payload, n) order by u.n`,
		tenant, envID, subjects, pgtype.FlatArray[json.RawMessage](payloads))
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return 0, fmt.Errorf("billing: finalize: %w", err)
	}
	if finalized != int64(len(drafts)) {
		// Every locked draft is updated; anything else would leave a gap.
		return 0, fmt.Errorf("billing: finalize: %d of %d locked drafts updated", finalized, len(drafts))
	}
	if s.mirror == nil && s.alerts == nil {
		return len(drafts), nil
	}
	finalizedIDs := make([]uuid.UUID, len(locked))
	for i, id := range locked {
		finalizedIDs[i] = uuid.UUID(id)
	}
	if s.mirror != nil {
		if err := s.mirror.InvoicesFinalized(ctx, tx, env, finalizedIDs); err != nil {
			return 0, fmt.Errorf("billing: finalize: mirror: %w", err)
		}
	}
	if err := s.InvoiceEvent(ctx, tx, env, EventInvoiceFinalized, finalizedIDs, ""); err != nil {
		return 0, fmt.Errorf("billing: finalize: %w", err)
	}
	return len(drafts), nil
}

// invoiceSummary is an invoice in its audit and change-feed entries.
type invoiceSummary struct {
	Customer    string    `json:"customer"`
	ID          string    `json:"id"`
	Number      string    `json:"number,omitempty"`
	PeriodEnd   time.Time `json:"period_end"`
	PeriodStart time.Time `json:"period_start"`
	Status      string    `json:"status"`
	Total       string    `json:"total"`
}
