package billing

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/limitr/limitr/internal/store"
)

// closePage is how many customers one closing transaction handles.
const closePage = 500

// closeWorkers is how many closing transactions a pass runs at once.
const closeWorkers = 2

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
	// Pages are closed by closeWorkers transactions at once: while one waits on the
	// database, another rates its page, and the database works on two at once. Only
	// the numbering is serial (the counter row is locked until commit).
	var (
		mu    sync.Mutex // guards after, done, res and errs
		after string
		done  bool
		errs  []error
		wg    sync.WaitGroup
	)
	next := func() ([]store.Customer, error) {
		mu.Lock()
		defer mu.Unlock()
		if done || len(errs) > 0 {
			return nil, nil
		}
		page, err := s.customers.Records(ctx, env, active, clock, after, closePage)
		if err != nil {
			return nil, fmt.Errorf("billing: customers: %w", err)
		}
		if len(page) == 0 {
			done = true
			return nil, nil
		}
		after = page[len(page)-1].ID
		res.Customers += len(page)
		return page, nil
	}
	for range closeWorkers {
		wg.Go(func() {
			for {
				page, err := next()
				if err == nil && len(page) == 0 {
					return
				}
				var d, f int
				if err == nil {
					err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
						var err error
						d, f, err = s.closePage(ctx, tx, env, set, vers, page, nil, now)
						return err
					})
				}
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else {
					res.Drafted += d
					res.Finalized += f
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		return res, errs[0]
	}
	if clock == "" {
		d, f, err := s.closeDeleted(ctx, env, set, vers, now)
		res.Drafted += d
		res.Finalized += f
		if err != nil {
			return res, err
		}
	}
	r, f, err := s.finalizeDue(ctx, env, clock, now)
	res.Refreshed += r
	res.Finalized += f
	if err != nil {
		return res, err
	}
	r, err = s.refreshMoved(ctx, env, clock, now)
	res.Refreshed += r
	return res, err
}

// refreshMoved re-rates the drafts still in their grace period whose customer's usage
// was committed since the draft was last rated, so a draft shows late usage as it
// arrives, not only when it is finalized.
func (s *Service) refreshMoved(ctx context.Context, env store.Environment, clock string, now time.Time) (int, error) {
	refreshed := 0
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `select `+invoiceColumns+` from invoices i
			where i.tenant_id = $1 and i.environment_id = $2 and i.status = 'draft' and i.kind = 'period' and i.finalize_after > $3
			  and exists (select 1 from customers c where c.uid = i.customer_uid and c.test_clock_id is not distinct from nullif($4, '')::uuid)
			  and exists (select 1 from meter_aggregates m where m.customer_uid = i.customer_uid and m.updated_at > i.updated_at)
			order by i.id limit $5 for update skip locked`, env.TenantID, env.ID, now, clock, closePage)
		if err != nil {
			return err
		}
		drafts, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Invoice, error) { return scanInvoice(r) })
		if err != nil || len(drafts) == 0 {
			return err
		}
		refreshed = len(drafts)
		return s.refresh(ctx, tx, env, drafts)
	})
	if err != nil {
		return refreshed, fmt.Errorf("billing: refresh drafts: %w", err)
	}
	return refreshed, nil
}

// closePage creates the invoices of the ended periods of a page of customers.
//
// ended holds the customers that were deleted, with when: their periods stop there
// (the one they were deleted in is still billed, when it ends).
func (s *Service) closePage(ctx context.Context, tx pgx.Tx, env store.Environment, set Settings, vers *envVersions, page []store.Customer,
	ended map[uuid.UUID]time.Time, now time.Time) (drafted, finalized int, err error) {
	uids := make([]uuid.UUID, len(page))
	for i, c := range page {
		uids[i] = c.UID
	}
	last := map[uuid.UUID]time.Time{}
	rows, err := tx.Query(ctx, `select customer_uid, max(period_end) from invoices where kind = 'period' and customer_uid = any($1) group by 1`, pgUUIDs(uids))
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
	v, err := vers.At(now)
	if err != nil {
		return 0, 0, err
	}
	// Plan histories first (they date each customer's periods); usage only for the
	// customers with a period to close, so a pass with nothing due stays cheap.
	data, err := loadCustomerData(ctx, tx, uids, time.Time{})
	if err != nil {
		return 0, 0, err
	}
	var work []todo
	var dueUIDs []uuid.UUID
	for i := range page {
		c := &page[i]
		sub, err := subject(*c, data.plans[c.UID])
		if err != nil {
			return 0, 0, err
		}
		loc := sub.location(v.Policy)
		per := PeriodAt(sub.CreatedAt, sub.CreatedAt, sub.Anchor, loc)
		if end, ok := last[c.UID]; ok {
			per = PeriodAt(end, sub.CreatedAt, sub.Anchor, loc)
		}
		if per.End.After(now) {
			continue
		}
		work = append(work, todo{c, sub, loc, per})
		dueUIDs = append(dueUIDs, c.UID)
	}
	if err := loadUsage(ctx, tx, dueUIDs, now, &data); err != nil {
		return 0, 0, err
	}
	fresh, err := draftPeriods(set, vers, work, data, ended, now)
	if err != nil {
		return 0, 0, err
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

// todo is a customer with a period to close: its first one not invoiced yet.
type todo struct {
	c   *store.Customer
	sub Subject
	loc *time.Location
	per Period
}

// draftPeriods rates every ended period of the customers to close, oldest first, up
// to now (and, for a deleted customer, up to the period it was deleted in).
func draftPeriods(set Settings, vers *envVersions, work []todo, data customerData, ended map[uuid.UUID]time.Time, now time.Time) ([]Invoice, error) {
	var fresh []Invoice
	for _, w := range work {
		c, sub, loc, per := w.c, w.sub, w.loc, w.per
		for range maxPeriodsPerPass {
			if per.End.After(now) {
				break
			}
			if end, ok := ended[c.UID]; ok && !per.Start.Before(end) {
				break // deleted before this period
			}
			rated, err := rateSubject(set, vers, sub, c.UID, data, per, now)
			if err != nil {
				return nil, err
			}
			// What this invoice bills is billed: the customer's next period in this pass
			// must not bill the same late usage again.
			data.billed[c.UID] = mergeBills(data.billed[c.UID], rated.Bills)
			inv := Invoice{Kind: "period", Customer: c.ID, Status: StatusDraft, Currency: set.Currency, PeriodStart: per.Start, PeriodEnd: per.End, uid: c.UID}
			inv.setLines(rated, set.Currency)
			fa := per.End.Add(set.Grace)
			inv.FinalizeAfter = &fa
			inv.Buyer = buyer(c.Customer.ID, c.Metadata)
			fresh = append(fresh, inv)
			per = NextPeriod(per, sub.CreatedAt, sub.Anchor, loc)
		}
	}
	return fresh, nil
}

// closeDeleted bills the periods of deleted customers that were not invoiced yet, up
// to the one each was deleted in: what they used before they left is owed. Their
// record is the one kept at deletion (plan, overrides, time zone, anchor).
func (s *Service) closeDeleted(ctx context.Context, env store.Environment, set Settings, vers *envVersions, now time.Time) (drafted, finalized int, err error) {
	after := uuid.Nil
	for {
		rows, err := s.pool.Query(ctx, `select d.uid, d.record, d.created_at, d.deleted_at from deleted_customers d
			where d.tenant_id = $1 and d.environment_id = $2 and d.uid > $3 and d.record->>'test_clock' is null
			  and not exists (select 1 from invoices i where i.customer_uid = d.uid and i.kind = 'period' and i.period_end >= d.deleted_at)
			order by d.uid limit $4`, env.TenantID, env.ID, after, closePage)
		if err != nil {
			return drafted, finalized, fmt.Errorf("billing: deleted customers: %w", err)
		}
		ended := map[uuid.UUID]time.Time{}
		page, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.Customer, error) {
			var c store.Customer
			var record []byte
			var created, deleted time.Time
			if err := r.Scan(&c.UID, &record, &created, &deleted); err != nil {
				return c, err
			}
			if err := json.Unmarshal(record, &c.Customer); err != nil {
				return c, fmt.Errorf("billing: deleted customer %s: %w", c.UID, err)
			}
			c.CreatedAt = created
			ended[c.UID] = deleted
			return c, nil
		})
		if err != nil || len(page) == 0 {
			return drafted, finalized, err
		}
		after = page[len(page)-1].UID
		err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			d, f, err := s.closePage(ctx, tx, env, set, vers, page, ended, now)
			drafted += d
			finalized += f
			return err
		})
		if err != nil {
			return drafted, finalized, err
		}
	}
}

// mergeBills lays newer bills of meter periods over older ones.
func mergeBills(old, newer []BilledMeter) []BilledMeter {
	if len(newer) == 0 {
		return old
	}
	at := make(map[meterKey]int, len(old))
	out := append([]BilledMeter(nil), old...)
	for i, b := range out {
		at[meterKey{b.Entitlement, b.PeriodStart.UnixNano()}] = i
	}
	for _, b := range newer {
		k := meterKey{b.Entitlement, b.PeriodStart.UnixNano()}
		if i, ok := at[k]; ok {
			out[i] = b
			continue
		}
		at[k] = len(out)
		out = append(out, b)
	}
	return out
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
// skipped. The page goes in one statement: its rows travel as arrays.
func insertDrafts(ctx context.Context, tx pgx.Tx, env store.Environment, invs []Invoice) ([]uuid.UUID, error) {
	ids := make([]uuid.UUID, len(invs))
	if len(invs) == 0 {
		return ids, nil
	}
	var (
		newIDs, uids                 = make([][16]byte, len(invs)), make([][16]byte, len(invs))
		customers, currencies        = make([]string, len(invs)), make([]string, len(invs))
		totals, due                  = make([]string, len(invs)), make([]string, len(invs))
		starts, ends, finalizeAfters = make([]time.Time, len(invs)), make([]time.Time, len(invs)), make([]time.Time, len(invs))
		lines, bills, buyers         = make([]json.RawMessage, len(invs)), make([]json.RawMessage, len(invs)), make([]json.RawMessage, len(invs))
	)
	for i := range invs {
		inv := &invs[i]
		id, err := uuid.NewV7()
		if err != nil {
			return nil, err
		}
		ids[i] = id
		newIDs[i], uids[i] = id, inv.uid
		customers[i], currencies[i], totals[i], due[i] = inv.Customer, inv.Currency, inv.Total, inv.AmountDue
		starts[i], ends[i], finalizeAfters[i] = inv.PeriodStart, inv.PeriodEnd, *inv.FinalizeAfter
		if lines[i], err = json.Marshal(inv.Lines); err != nil {
			return nil, fmt.Errorf("billing: invoice lines: %w", err)
		}
		if bills[i], err = json.Marshal(billsJSON(inv.bills)); err != nil {
			return nil, fmt.Errorf("billing: invoice bills: %w", err)
		}
		buyers[i] = inv.Buyer
		if len(buyers[i]) == 0 {
			buyers[i] = json.RawMessage(`{}`)
		}
	}
	rows, err := tx.Query(ctx, `insert into invoices (id, tenant_id, environment_id, customer_uid, customer_id, kind, period_start, period_end, status,
			currency, lines, bills, subtotal, total, amount_due, buyer, finalize_after)
		select u.id, $1, $2, u.uid, u.customer, 'period', u.period_start, u.period_end, 'draft',
			u.currency, u.lines, u.bills, u.total::numeric, u.total::numeric, u.due::numeric, u.buyer, u.finalize_after
		from unnest($3::uuid[], $4::uuid[], $5::text[], $6::timestamptz[], $7::timestamptz[], $8::text[], $9::jsonb[], $10::jsonb[],
			$11::text[], $12::text[], $13::jsonb[], $14::timestamptz[])
			as u(id, uid, customer, period_start, period_end, currency, lines, bills, total, due, buyer, finalize_after)
		on conflict (customer_uid, period_start) where kind = 'period' do nothing returning id`,
		pgUUID(env.TenantID), pgUUID(env.ID), newIDs, uids, customers, starts, ends, currencies,
		pgtype.FlatArray[json.RawMessage](lines), pgtype.FlatArray[json.RawMessage](bills), totals, due, pgtype.FlatArray[json.RawMessage](buyers), finalizeAfters)
	if err != nil {
		return nil, fmt.Errorf("billing: insert invoices: %w", err)
	}
	inserted := make(map[uuid.UUID]bool, len(invs))
	for rows.Next() {
		var id pgtype.UUID
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, fmt.Errorf("billing: insert invoices: %w", err)
		}
		inserted[id.Bytes] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("billing: insert invoices: %w", err)
	}
	var subjects []string
	var payloads []json.RawMessage
	for i, id := range ids {
		if !inserted[id] {
			ids[i] = uuid.Nil
			continue
		}
		inv := &invs[i]
		payload, err := json.Marshal(invoiceSummary{Customer: inv.Customer, ID: id.String(), PeriodEnd: inv.PeriodEnd,
			PeriodStart: inv.PeriodStart, Status: StatusDraft, Total: inv.Total})
		if err != nil {
			return nil, fmt.Errorf("billing: invoice summary: %w", err)
		}
		subjects, payloads = append(subjects, id.String()), append(payloads, payload)
	}
	if len(subjects) == 0 {
		return ids, nil
	}
	if err := recordDrafts(ctx, tx, env, subjects, payloads); err != nil {
		return nil, err
	}
	return ids, nil
}

// recordDrafts writes the audit and change-feed entries of new drafts: drafting is a
// transition like the others.
func recordDrafts(ctx context.Context, tx pgx.Tx, env store.Environment, subjects []string, payloads []json.RawMessage) error {
	a := store.ActorFrom(ctx)
	b := &pgx.Batch{}
	b.Queue(`insert into audit_log (tenant_id, environment_id, actor_key_id, action, resource, resource_id, after, request_id)
		select $1, $2, $3, 'invoice.draft', 'invoice', u.id, u.payload, $4
		from unnest($5::text[], $6::jsonb[]) with ordinality as u(id, payload, n) order by u.n`,
		pgUUID(env.TenantID), pgUUID(env.ID), a.KeyID, a.RequestID, subjects, pgtype.FlatArray[json.RawMessage](payloads))
	b.Queue(`insert into change_feed (tenant_id, environment_id, kind, subject, payload)
		select $1, $2, 'invoice', u.id, jsonb_build_object('action', 'invoice.draft', 'data', u.payload)
		from unnest($3::text[], $4::jsonb[]) with ordinality as u(id, payload, n) order by u.n`,
		pgUUID(env.TenantID), pgUUID(env.ID), subjects, pgtype.FlatArray[json.RawMessage](payloads))
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("billing: record drafts: %w", err)
	}
	return nil
}

// pgUUID is a uuid as pgx encodes it directly (uuid.UUID goes through driver.Valuer
// and a string).
func pgUUID(id uuid.UUID) pgtype.UUID { return pgtype.UUID{Bytes: id, Valid: true} }

// pgUUIDs is a uuid[] as pgx encodes it without reflection.
func pgUUIDs(ids []uuid.UUID) [][16]byte {
	out := make([][16]byte, len(ids))
	for i, id := range ids {
		out[i] = id
	}
	return out
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
	// Read through tx: a transaction must not wait for a second pool connection.
	active, err := s.policies.ActivePolicyIn(ctx, tx, env)
	if err != nil {
		return err
	}
	records, err := s.customers.RecordsByUIDIn(ctx, tx, env, active, uids)
	if err != nil {
		return fmt.Errorf("billing: customers of drafts: %w", err)
	}
	byUID := make(map[uuid.UUID]store.Customer, len(records))
	for _, c := range records {
		byUID[c.UID] = c
	}
	b := &pgx.Batch{}
	for _, d := range drafts {
		c, ok := byUID[d.uid]
		if !ok {
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
