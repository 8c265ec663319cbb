package billing

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/limitr/limitr/internal/billing/money"
	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/store"
)

// closePage is how many customers one closing transaction handles.
const closePage = 500

// maxPeriodsPerPass bounds how many ended periods of one customer a pass invoices (a
// worker down for years catches up over several passes).
const maxPeriodsPerPass = 24

// CloseResult counts what a closing pass did.
type CloseResult struct {
	Customers int `json:"customers"`
	Drafted   int `json:"drafted"`
	Finalized int `json:"finalized"`
	Refreshed int `json:"refreshed"`
}

func (r *CloseResult) add(o CloseResult) {
	r.Customers += o.Customers
	r.Drafted += o.Drafted
	r.Finalized += o.Finalized
	r.Refreshed += o.Refreshed
}

// Close does the billing that became due by now for the customers on a clock (""
// for real time): it creates the invoice of every ended period, refreshes drafts whose
// usage moved, and finalizes drafts whose grace period has passed. Several workers may
// run it at once: the database keeps one invoice per customer and period, and numbers
// are taken under a lock.
func (s *Service) Close(ctx context.Context, env store.Environment, clock string, now time.Time) (CloseResult, error) {
	var res CloseResult
	set, err := s.Settings(ctx, env)
	if err != nil {
		return res, err
	}
	vers, err := s.versions(ctx, s.pool, env)
	if err != nil {
		return res, err
	}
	active, err := s.policies.ActivePolicy(ctx, env)
	if err != nil {
		return res, err
	}
	after := ""
	for {
		page, err := s.customers.Records(ctx, env, active, clock, after, closePage)
		if err != nil {
			return res, fmt.Errorf("billing: customers: %w", err)
		}
		if len(page) == 0 {
			break
		}
		after = page[len(page)-1].ID
		res.Customers += len(page)
		err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			d, f, err := s.closePage(ctx, tx, env, set, vers, page, now)
			res.Drafted += d
			res.Finalized += f
			return err
		})
		if err != nil {
			return res, err
		}
	}
	r, f, err := s.finalizeDue(ctx, env, clock, now)
	res.Refreshed += r
	res.Finalized += f
	return res, err
}

// closePage creates the invoices of the ended periods of a page of customers.
func (s *Service) closePage(ctx context.Context, tx pgx.Tx, env store.Environment, set Settings, vers *envVersions, page []store.Customer, now time.Time) (drafted, finalized int, err error) {
	uids := make([]uuid.UUID, len(page))
	for i, c := range page {
		uids[i] = c.UID
	}
	last := map[uuid.UUID]time.Time{}
	rows, err := tx.Query(ctx, `select customer_uid, max(period_end) from invoices where kind = 'period' and customer_uid = any($1) group by 1`, uids)
	if err != nil {
		return 0, 0, fmt.Errorf("billing: last invoices: %w", err)
	}
	for rows.Next() {
		var uid uuid.UUID
		var end time.Time
		if err := rows.Scan(&uid, &end); err != nil {
			rows.Close()
			return 0, 0, err
		}
		last[uid] = end
	}
	rows.Close()
	data, err := loadCustomerData(ctx, tx, uids, now)
	if err != nil {
		return 0, 0, err
	}
	v, err := vers.At(now)
	if err != nil {
		return 0, 0, err
	}
	var fresh []Invoice
	for _, c := range page {
		sub, err := subject(c, data.plans[c.UID])
		if err != nil {
			return 0, 0, err
		}
		loc := sub.location(v.Policy)
		per := PeriodAt(sub.CreatedAt, sub.CreatedAt, sub.Anchor, loc)
		if end, ok := last[c.UID]; ok {
			per = PeriodAt(end, sub.CreatedAt, sub.Anchor, loc)
		}
		for range maxPeriodsPerPass {
			if per.End.After(now) {
				break
			}
			rated, err := s.rate(set, vers, c, data, per, now)
			if err != nil {
				return 0, 0, err
			}
			inv := Invoice{Kind: "period", Customer: c.ID, Status: StatusDraft, Currency: set.Currency, PeriodStart: per.Start, PeriodEnd: per.End, uid: c.UID}
			inv.setLines(rated, set.Currency)
			fa := per.End.Add(set.Grace)
			inv.FinalizeAfter = &fa
			inv.Buyer = buyer(c.Customer.ID, c.Metadata)
			fresh = append(fresh, inv)
			per = NextPeriod(per, sub.CreatedAt, sub.Anchor, loc)
		}
	}
	ids, err := insertDrafts(ctx, tx, env, fresh)
	if err != nil {
		return 0, 0, err
	}
	var due []uuid.UUID
	for i, inv := range fresh {
		if ids[i] != uuid.Nil && !now.Before(*inv.FinalizeAfter) {
			due = append(due, ids[i])
		}
	}
	n, err := s.finalizeRows(ctx, tx, env, due)
	drafted = 0
	for _, id := range ids {
		if id != uuid.Nil {
			drafted++
		}
	}
	return drafted, n, err
}

// buyer is the customer as an invoice shows it: its id and its metadata (name, email,
// address, as the tenant stores them).
func buyer(id string, meta json.RawMessage) json.RawMessage {
	var m map[string]any
	if len(meta) > 0 {
		_ = json.Unmarshal(meta, &m)
	}
	if m == nil {
		m = map[string]any{}
	}
	m["id"] = id
	b, _ := json.Marshal(m)
	return b
}

// insertDrafts inserts invoices as drafts, skipping periods that already have one
// (another worker got there first). It returns each invoice's id, uuid.Nil where
// skipped.
func insertDrafts(ctx context.Context, tx pgx.Tx, env store.Environment, invs []Invoice) ([]uuid.UUID, error) {
	ids := make([]uuid.UUID, len(invs))
	if len(invs) == 0 {
		return ids, nil
	}
	b := &pgx.Batch{}
	for i := range invs {
		inv := &invs[i]
		lines, _ := json.Marshal(inv.Lines)
		bills, _ := json.Marshal(billsJSON(inv.bills))
		b.Queue(`insert into invoices (id, tenant_id, environment_id, customer_uid, customer_id, kind, period_start, period_end, status,
			currency, lines, bills, subtotal, total, amount_due, buyer, finalize_after)
			values ($1, $2, $3, $4, $5, 'period', $6, $7, 'draft', $8, $9, $10, $11::numeric, $11::numeric, $12::numeric, $13, $14)
			on conflict (customer_uid, period_start) where kind = 'period' do nothing returning id`,
			uuid.Must(uuid.NewV7()), env.TenantID, env.ID, inv.uid, inv.Customer, inv.PeriodStart, inv.PeriodEnd, inv.Currency, lines, bills,
			inv.Total, inv.AmountDue, []byte(inv.Buyer), *inv.FinalizeAfter)
	}
	br := tx.SendBatch(ctx, b)
	for i := range invs {
		var id uuid.UUID
		err := br.QueryRow().Scan(&id)
		if err != nil && err != pgx.ErrNoRows {
			br.Close()
			return nil, fmt.Errorf("billing: insert invoice: %w", err)
		}
		ids[i] = id
	}
	return ids, br.Close()
}

type billJSON struct {
	Entitlement   string    `json:"entitlement"`
	PeriodStart   time.Time `json:"period_start"`
	Units         string    `json:"units"`
	GrantCovered  string    `json:"grant_covered"`
	Amount        string    `json:"amount"`
	PolicyVersion int       `json:"policy_version"`
}

func billsJSON(bills []BilledMeter) []billJSON {
	out := make([]billJSON, len(bills))
	for i, b := range bills {
		out[i] = billJSON{Entitlement: b.Entitlement, PeriodStart: b.PeriodStart.UTC(), Units: b.Units.String(),
			GrantCovered: b.GrantCovered.String(), Amount: b.Amount.String(), PolicyVersion: b.PolicyVersion}
	}
	return out
}

// finalizeDue refreshes drafts whose usage moved and finalizes those past their grace.
func (s *Service) finalizeDue(ctx context.Context, env store.Environment, clock string, now time.Time) (refreshed, finalized int, err error) {
	for {
		var batch int
		err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			rows, err := tx.Query(ctx, `select `+invoiceColumns+` from invoices i
				where i.tenant_id = $1 and i.environment_id = $2 and i.status = 'draft' and i.kind = 'period' and i.finalize_after <= $3
				  and exists (select 1 from customers c where c.uid = i.customer_uid and c.test_clock_id is not distinct from nullif($4, '')::uuid)
				order by i.finalize_after, i.id limit $5 for update skip locked`, env.TenantID, env.ID, now, clock, closePage)
			if err != nil {
				return err
			}
			drafts, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Invoice, error) { return scanInvoice(r) })
			if err != nil {
				return err
			}
			batch = len(drafts)
			if batch == 0 {
				return nil
			}
			if err := s.refresh(ctx, tx, env, drafts); err != nil {
				return err
			}
			ids := make([]uuid.UUID, len(drafts))
			for i, d := range drafts {
				ids[i] = uuid.MustParse(d.ID)
			}
			n, err := s.finalizeRows(ctx, tx, env, ids)
			refreshed += batch
			finalized += n
			return err
		})
		if err != nil {
			return refreshed, finalized, fmt.Errorf("billing: finalize due drafts: %w", err)
		}
		if batch < closePage {
			return refreshed, finalized, nil
		}
	}
}

// refresh re-rates drafts from the usage committed now (late usage arriving during the
// grace period lands on them).
func (s *Service) refresh(ctx context.Context, tx pgx.Tx, env store.Environment, drafts []Invoice) error {
	set, err := loadSettings(ctx, tx, env)
	if err != nil {
		return err
	}
	vers, err := s.versions(ctx, tx, env)
	if err != nil {
		return err
	}
	uids := make([]uuid.UUID, 0, len(drafts))
	var until time.Time
	for _, d := range drafts {
		uids = append(uids, d.uid)
		if d.PeriodEnd.After(until) {
			until = d.PeriodEnd
		}
	}
	data, err := loadCustomerData(ctx, tx, uids, until)
	if err != nil {
		return err
	}
	b := &pgx.Batch{}
	for _, d := range drafts {
		c, err := s.customers.GetRecord(ctx, env, d.Customer)
		if err != nil || c.UID != d.uid {
			continue // deleted since: the draft keeps the lines it had
		}
		rated, err := s.rate(set, vers, c, data, Period{Start: d.PeriodStart, End: d.PeriodEnd}, d.PeriodEnd)
		if err != nil {
			return err
		}
		d.setLines(rated, d.Currency)
		lines, _ := json.Marshal(d.Lines)
		bills, _ := json.Marshal(billsJSON(d.bills))
		b.Queue(`update invoices set lines = $2, bills = $3, subtotal = $4::numeric, total = $4::numeric, amount_due = $5::numeric,
			updated_at = now(), revision = revision + 1 where id = $1 and status = 'draft'`,
			uuid.MustParse(d.ID), lines, bills, d.Total, d.AmountDue)
	}
	return tx.SendBatch(ctx, b).Close()
}

// finalizeRows numbers and freezes drafts, in the caller's transaction. The counter
// row is locked and advanced by exactly the number of drafts finalized, so numbers
// have no gaps whatever rolls back. It records the meter periods the invoices billed,
// and an audit and change-feed entry per invoice.
func (s *Service) finalizeRows(ctx context.Context, tx pgx.Tx, env store.Environment, ids []uuid.UUID) (int, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	rows, err := tx.Query(ctx, `select id from invoices where id = any($1) and status = 'draft' order by period_end, customer_id, id for update`, ids)
	if err != nil {
		return 0, fmt.Errorf("billing: finalize: %w", err)
	}
	locked, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil || len(locked) == 0 {
		return 0, err
	}
	set, err := loadSettings(ctx, tx, env)
	if err != nil {
		return 0, err
	}
	var last int64
	if err := tx.QueryRow(ctx, `insert into invoice_counters (tenant_id, environment_id, last_number) values ($1, $2, $3)
		on conflict (tenant_id, environment_id) do update set last_number = invoice_counters.last_number + excluded.last_number
		returning last_number`, env.TenantID, env.ID, len(locked)).Scan(&last); err != nil {
		return 0, fmt.Errorf("billing: invoice numbers: %w", err)
	}
	seqs := make([]int64, len(locked))
	numbers := make([]string, len(locked))
	for i := range locked {
		seqs[i] = last - int64(len(locked)) + 1 + int64(i)
		numbers[i] = fmt.Sprintf("%s-%06d", set.InvoicePrefix, seqs[i])
	}
	rows, err = tx.Query(ctx, `update invoices i set status = 'finalized', sequence = u.seq, number = u.number, finalized_at = now(),
			due_at = i.finalize_after + make_interval(days => $2), seller = $3, updated_at = now(), revision = i.revision + 1
		from unnest($1::uuid[], $4::bigint[], $5::text[]) as u(id, seq, number)
		where i.id = u.id
		returning i.id, i.number, i.customer_id, i.customer_uid, i.total::text, i.period_start, i.period_end, i.bills`,
		locked, set.DaysUntilDue, []byte(set.Seller), seqs, numbers)
	if err != nil {
		return 0, fmt.Errorf("billing: finalize: %w", err)
	}
	type done struct {
		id               uuid.UUID
		number, customer string
		uid              uuid.UUID
		total            string
		start, end       time.Time
		bills            []byte
	}
	finals, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (done, error) {
		var d done
		return d, r.Scan(&d.id, &d.number, &d.customer, &d.uid, &d.total, &d.start, &d.end, &d.bills)
	})
	if err != nil {
		return 0, fmt.Errorf("billing: finalize: %w", err)
	}
	b := &pgx.Batch{}
	for _, f := range finals {
		b.Queue(`insert into billed_meter_periods (customer_uid, entitlement, period_start, units, grant_covered, amount, policy_version, invoice_id)
			select $1, x.entitlement, x.period_start, x.units::numeric, x.grant_covered::numeric, x.amount::numeric, x.policy_version, $2
			from jsonb_to_recordset($3::jsonb) as x(entitlement text, period_start timestamptz, units text, grant_covered text, amount text, policy_version int)
			on conflict (customer_uid, entitlement, period_start) do update set units = excluded.units, grant_covered = excluded.grant_covered,
			  amount = excluded.amount, invoice_id = excluded.invoice_id, updated_at = now()`, f.uid, f.id, f.bills)
		total, _ := num.Parse(f.total)
		t, _ := money.Format(total, set.Currency)
		summary := map[string]any{"id": f.id.String(), "number": f.number, "customer": f.customer, "status": StatusFinalized,
			"total": t, "period_start": f.start, "period_end": f.end}
		payload, _ := json.Marshal(summary)
		envID := env.ID
		a := store.ActorFrom(ctx)
		b.Queue(`insert into audit_log (tenant_id, environment_id, actor_key_id, action, resource, resource_id, after, request_id)
			values ($1, $2, $3, 'invoice.finalized', 'invoice', $4, $5, $6)`, env.TenantID, &envID, a.KeyID, f.id.String(), payload, a.RequestID)
		b.Queue(`insert into change_feed (tenant_id, environment_id, kind, subject, payload)
			values ($1, $2, 'invoice', $3, jsonb_build_object('action', 'invoice.finalized', 'data', $4::jsonb))`,
			env.TenantID, env.ID, f.id.String(), payload)
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return 0, fmt.Errorf("billing: finalize: %w", err)
	}
	if s.mirror != nil {
		if err := s.mirror.InvoicesFinalized(ctx, tx, env, locked); err != nil {
			return 0, fmt.Errorf("billing: finalize: mirror: %w", err)
		}
	}
	return len(finals), nil
}
