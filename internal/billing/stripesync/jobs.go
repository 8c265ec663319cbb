package stripesync

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/limitr/limitr/internal/billing"
	"github.com/limitr/limitr/internal/billing/stripe"
	"github.com/limitr/limitr/internal/store"
)

// Queue is the River queue Stripe jobs run on.
const Queue = "stripe"

// PushInvoiceArgs mirrors a finalized invoice into Stripe: customer, invoice, one item
// per line, finalization, then whatever status it has reached since.
type PushInvoiceArgs struct {
	TenantID      uuid.UUID `json:"tenant_id"`
	EnvironmentID uuid.UUID `json:"environment_id"`
	InvoiceID     uuid.UUID `json:"invoice_id"`
}

// Kind implements river.JobArgs.
func (PushInvoiceArgs) Kind() string { return "limitr.stripe_push_invoice" }

// InvoiceStatusArgs mirrors a status our invoice moved to (void, paid, uncollectible).
type InvoiceStatusArgs struct {
	TenantID      uuid.UUID `json:"tenant_id"`
	EnvironmentID uuid.UUID `json:"environment_id"`
	InvoiceID     uuid.UUID `json:"invoice_id"`
	Status        string    `json:"status"`
}

// Kind implements river.JobArgs.
func (InvoiceStatusArgs) Kind() string { return "limitr.stripe_invoice_status" }

// CreditNoteArgs mirrors a credit note.
type CreditNoteArgs struct {
	TenantID      uuid.UUID `json:"tenant_id"`
	EnvironmentID uuid.UUID `json:"environment_id"`
	InvoiceID     uuid.UUID `json:"invoice_id"`
	CreditNoteID  uuid.UUID `json:"credit_note_id"`
}

// Kind implements river.JobArgs.
func (CreditNoteArgs) Kind() string { return "limitr.stripe_credit_note" }

// queue inserts jobs for an environment if it is connected to Stripe.
func (s *Service) queue(ctx context.Context, tx pgx.Tx, env store.Environment, args ...river.JobArgs) error {
	if s.jobs == nil || len(args) == 0 {
		return nil
	}
	ok, err := connected(ctx, tx, env)
	if err != nil || !ok {
		return err
	}
	params := make([]river.InsertManyParams, len(args))
	for i, a := range args {
		params[i] = river.InsertManyParams{Args: a, InsertOpts: &river.InsertOpts{Queue: Queue, MaxAttempts: 20}}
	}
	_, err = s.jobs.InsertManyTx(ctx, tx, params)
	return err
}

// InvoicesFinalized queues the push of newly finalized invoices (billing.Mirror).
func (s *Service) InvoicesFinalized(ctx context.Context, tx pgx.Tx, env store.Environment, ids []uuid.UUID) error {
	args := make([]river.JobArgs, len(ids))
	for i, id := range ids {
		args[i] = PushInvoiceArgs{TenantID: env.TenantID, EnvironmentID: env.ID, InvoiceID: id}
	}
	return s.queue(ctx, tx, env, args...)
}

// InvoiceStatusChanged queues the mirror of a lifecycle move (billing.Mirror).
func (s *Service) InvoiceStatusChanged(ctx context.Context, tx pgx.Tx, env store.Environment, id uuid.UUID, status string) error {
	return s.queue(ctx, tx, env, InvoiceStatusArgs{TenantID: env.TenantID, EnvironmentID: env.ID, InvoiceID: id, Status: status})
}

// CreditNoteCreated queues the mirror of a credit note (billing.Mirror).
func (s *Service) CreditNoteCreated(ctx context.Context, tx pgx.Tx, env store.Environment, invoiceID, noteID uuid.UUID) error {
	return s.queue(ctx, tx, env, CreditNoteArgs{TenantID: env.TenantID, EnvironmentID: env.ID, InvoiceID: invoiceID, CreditNoteID: noteID})
}

// AddWorkers registers the Stripe jobs' workers.
func (s *Service) AddWorkers(w *river.Workers) {
	river.AddWorker(w, river.WorkFunc(func(ctx context.Context, j *river.Job[PushInvoiceArgs]) error {
		return s.RunPushInvoice(ctx, j.Args)
	}))
	river.AddWorker(w, river.WorkFunc(func(ctx context.Context, j *river.Job[InvoiceStatusArgs]) error {
		return s.outcome(ctx, j.Args.TenantID, j.Args.EnvironmentID, j.Args.InvoiceID, s.PushStatus(ctx, j.Args))
	}))
	river.AddWorker(w, river.WorkFunc(func(ctx context.Context, j *river.Job[CreditNoteArgs]) error {
		err := s.PushCreditNote(ctx, j.Args)
		if errors.Is(err, errNotPushedYet) {
			return river.JobSnooze(10 * time.Second)
		}
		return s.outcome(ctx, j.Args.TenantID, j.Args.EnvironmentID, j.Args.InvoiceID, err)
	}))
	river.AddWorker(w, river.WorkFunc(func(ctx context.Context, j *river.Job[SyncCatalogArgs]) error {
		return s.SyncCatalog(ctx)
	}))
	river.AddWorker(w, river.WorkFunc(func(ctx context.Context, j *river.Job[ReconcileArgs]) error {
		return s.ReconcileAll(ctx)
	}))
}

// RunPushInvoice is the push job: PushInvoice, with a permanent Stripe refusal
// recorded on the invoice (stripe_status "failed", stripe_error) and the job
// cancelled; a retryable one is returned for River to retry with backoff.
func (s *Service) RunPushInvoice(ctx context.Context, a PushInvoiceArgs) error {
	return s.outcome(ctx, a.TenantID, a.EnvironmentID, a.InvoiceID, s.PushInvoice(ctx, a))
}

// errNotPushedYet: the invoice a credit note belongs to is not in Stripe yet.
var errNotPushedYet = errors.New("stripesync: the invoice is not in Stripe yet")

// outcome decides what River does with a job's error: a retryable Stripe error (429,
// 5xx, network) or a database hiccup is retried with backoff; a permanent one (4xx) is
// recorded on the invoice, visible in the API, and the job stops.
func (s *Service) outcome(ctx context.Context, tenantID, envID, invoiceID uuid.UUID, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrNotConnected):
		return river.JobCancel(err) // disconnected since: nothing to mirror into
	case !errors.Is(err, stripe.ErrPermanent):
		return err // retried with backoff
	}
	env, dbErr := s.environment(ctx, tenantID, envID) // before the transaction: it holds its connection
	if dbErr != nil {
		return dbErr
	}
	dbErr = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err2 := tx.Exec(ctx, `update invoices set stripe_status = 'failed', stripe_error = $4, updated_at = now()
			where tenant_id = $1 and environment_id = $2 and id = $3 and stripe_status <> 'failed'`,
			tenantID, envID, invoiceID, truncate(err.Error(), 1000))
		if err2 != nil || tag.RowsAffected() == 0 {
			return err2
		}
		return s.billing.InvoiceEvent(ctx, tx, env, billing.EventStripeSyncFailed, []uuid.UUID{invoiceID}, truncate(err.Error(), 1000))
	})
	if dbErr != nil {
		return dbErr
	}
	s.log.Error("stripesync: Stripe refused a call; the reason is on the invoice", "invoice", invoiceID, "err", err)
	return river.JobCancel(err)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// pushed is what we know of an invoice's Stripe side.
type pushed struct {
	id              uuid.UUID
	inv             billing.Invoice
	uid             uuid.UUID
	stripeInvoiceID string
	stripeStatus    string
	items           map[int]string
}

func (s *Service) loadPushed(ctx context.Context, db store.DBTX, env store.Environment, id uuid.UUID) (pushed, error) {
	inv, err := s.billing.Get(ctx, env, id.String())
	if err != nil {
		return pushed{}, err
	}
	p := pushed{id: id, inv: inv, items: map[int]string{}}
	var sid *string
	if err := db.QueryRow(ctx, `select customer_uid, stripe_invoice_id, stripe_status from invoices where id = $1`, id).
		Scan(&p.uid, &sid, &p.stripeStatus); err != nil {
		return pushed{}, err
	}
	if sid != nil {
		p.stripeInvoiceID = *sid
	}
	rows, err := db.Query(ctx, `select line_index, stripe_item_id from stripe_invoice_items where invoice_id = $1`, id)
	if err != nil {
		return pushed{}, err
	}
	defer rows.Close()
	for rows.Next() {
		var i int
		var item string
		if err := rows.Scan(&i, &item); err != nil {
			return pushed{}, err
		}
		p.items[i] = item
	}
	return p, rows.Err()
}

// PushInvoice mirrors one finalized invoice. Every step is idempotent: its Stripe call
// carries a key derived from our ids and the step, and its result is stored before
// the next step, so a retry after a crash anywhere resends the same keys (Stripe
// replays its answer) or skips what is recorded: never a second invoice or item.
func (s *Service) PushInvoice(ctx context.Context, a PushInvoiceArgs) error {
	env, err := s.environment(ctx, a.TenantID, a.EnvironmentID)
	if err != nil {
		return err
	}
	p, err := s.loadPushed(ctx, s.pool, env, a.InvoiceID)
	if err != nil {
		return err
	}
	if p.inv.Status == billing.StatusDraft || (p.inv.Status == billing.StatusVoid && p.stripeInvoiceID == "") {
		return nil // never finalized, or voided before it reached Stripe: nothing to mirror
	}
	c, err := s.client(ctx, env)
	if err != nil {
		return err
	}
	customerID, err := s.ensureCustomer(ctx, c, env, p.uid, p.inv.Customer)
	if err != nil {
		return err
	}
	key := func(step ...string) string {
		return stripe.IdempotencyKey(append([]string{"inv", a.InvoiceID.String()}, step...)...)
	}
	if p.stripeInvoiceID == "" {
		number := ""
		if p.inv.Number != nil {
			number = *p.inv.Number
		}
		set, err := s.billing.Settings(ctx, env)
		if err != nil {
			return err
		}
		id, err := c.CreateInvoice(ctx, key("create"), stripe.Invoice{CustomerID: customerID, Currency: p.inv.Currency,
			LimitrInvoiceID: p.inv.ID, Number: number, Description: "Invoice " + number, DaysUntilDue: set.DaysUntilDue})
		if err != nil {
			return err
		}
		if _, err := s.pool.Exec(ctx, `update invoices set stripe_invoice_id = $2, stripe_status = 'pending', stripe_error = ''
			where id = $1 and stripe_invoice_id is null`, a.InvoiceID, id); err != nil {
			return err
		}
		p.stripeInvoiceID = id
	}
	if err := s.pushItems(ctx, c, p, customerID, key); err != nil {
		return err
	}
	if p.stripeStatus != "synced" {
		if _, err := c.FinalizeInvoice(ctx, key("finalize"), p.stripeInvoiceID); err != nil {
			return err
		}
		if _, err := s.pool.Exec(ctx, `update invoices set stripe_status = 'synced', stripe_error = '' where id = $1`, a.InvoiceID); err != nil {
			return err
		}
	}
	// The invoice may have moved on while it was being pushed.
	switch p.inv.Status {
	case billing.StatusPaid, billing.StatusVoid, billing.StatusUncollectible:
		return s.PushStatus(ctx, InvoiceStatusArgs{TenantID: a.TenantID, EnvironmentID: a.EnvironmentID, InvoiceID: a.InvoiceID, Status: p.inv.Status})
	}
	return nil
}

// pushItems adds the invoice's lines to its Stripe invoice, each once: an item whose id
// is recorded is skipped, one whose reply was lost is resent with the same key.
func (s *Service) pushItems(ctx context.Context, c *stripe.Client, p pushed, customerID string, key func(...string) string) error {
	for i, l := range p.inv.Lines {
		if _, done := p.items[i]; done {
			continue
		}
		amount, err := stripe.StripeAmount(l.Amount, p.inv.Currency)
		if err != nil {
			return fmt.Errorf("stripesync: line %d: %w", i, err)
		}
		item := stripe.InvoiceItem{InvoiceID: p.stripeInvoiceID, CustomerID: customerID, Amount: amount, Currency: p.inv.Currency,
			Description: l.Description, LineIndex: i, Kind: l.Kind}
		if l.PeriodStart != nil && l.PeriodEnd != nil {
			item.PeriodStart, item.PeriodEnd = *l.PeriodStart, *l.PeriodEnd
		}
		itemID, err := c.AddInvoiceItem(ctx, key("item", fmt.Sprint(i)), item)
		if err != nil {
			return err
		}
		if _, err := s.pool.Exec(ctx, `insert into stripe_invoice_items (invoice_id, line_index, stripe_item_id) values ($1, $2, $3)
			on conflict do nothing`, p.id, i, itemID); err != nil {
			return err
		}
	}
	return nil
}

// ensureCustomer returns the customer's Stripe id, creating it once.
func (s *Service) ensureCustomer(ctx context.Context, c *stripe.Client, env store.Environment, uid uuid.UUID, id string) (string, error) {
	var sid string
	err := s.pool.QueryRow(ctx, `select stripe_id from stripe_customers where customer_uid = $1`, uid).Scan(&sid)
	if err == nil {
		return sid, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return "", err
	}
	in, revision, err := s.customerInput(ctx, env, uid, id)
	if err != nil {
		return "", err
	}
	sid, err = c.UpsertCustomer(ctx, stripe.IdempotencyKey("cus", uid.String(), "create"), in)
	if err != nil {
		return "", err
	}
	if err := s.pool.QueryRow(ctx, `insert into stripe_customers (customer_uid, tenant_id, environment_id, stripe_id, synced_revision)
		values ($1, $2, $3, $4, $5) on conflict (customer_uid) do update set customer_uid = excluded.customer_uid returning stripe_id`,
		uid, env.TenantID, env.ID, sid, revision).Scan(&sid); err != nil {
		return "", err
	}
	return sid, nil
}

// PushStatus mirrors a lifecycle move of an invoice already in Stripe. An invoice not
// pushed yet gets its status when its push finishes.
func (s *Service) PushStatus(ctx context.Context, a InvoiceStatusArgs) error {
	env, err := s.environment(ctx, a.TenantID, a.EnvironmentID)
	if err != nil {
		return err
	}
	p, err := s.loadPushed(ctx, s.pool, env, a.InvoiceID)
	if err != nil {
		return err
	}
	if p.stripeInvoiceID == "" || p.stripeStatus != "synced" {
		return nil
	}
	c, err := s.client(ctx, env)
	if err != nil {
		return err
	}
	key := stripe.IdempotencyKey("inv", a.InvoiceID.String(), a.Status)
	switch a.Status {
	case billing.StatusVoid:
		_, err = c.VoidInvoice(ctx, key, p.stripeInvoiceID)
	case billing.StatusUncollectible:
		_, err = c.MarkUncollectible(ctx, key, p.stripeInvoiceID)
	case billing.StatusPaid:
		_, err = c.PayOutOfBand(ctx, key, p.stripeInvoiceID)
	default:
		return fmt.Errorf("stripesync: no Stripe move for status %q", a.Status)
	}
	if err != nil && alreadyThere(err) {
		return nil // Stripe moved it first (its webhook told us): nothing to do
	}
	return err
}

// alreadyThere reports a Stripe refusal because the invoice is already in a final
// state (paid in Stripe, voided there).
func alreadyThere(err error) bool {
	var se *stripe.Error
	return errors.As(err, &se) && se.HTTPStatus == 400 && se.Code == "invoice_not_open"
}

// PushCreditNote mirrors a credit note onto its Stripe invoice.
func (s *Service) PushCreditNote(ctx context.Context, a CreditNoteArgs) error {
	env, err := s.environment(ctx, a.TenantID, a.EnvironmentID)
	if err != nil {
		return err
	}
	var stripeInvoice, stripeStatus, currency, status string
	var sid *string
	if err := s.pool.QueryRow(ctx, `select stripe_invoice_id, stripe_status, currency, status from invoices where id = $1`, a.InvoiceID).
		Scan(&sid, &stripeStatus, &currency, &status); err != nil {
		return err
	}
	if sid == nil || stripeStatus != "synced" {
		if stripeStatus == "failed" {
			return nil // the invoice never made it; its error says why
		}
		return errNotPushedYet
	}
	stripeInvoice = *sid
	var done *string
	if err := s.pool.QueryRow(ctx, `select stripe_credit_note_id from credit_notes where id = $1`, a.CreditNoteID).Scan(&done); err != nil {
		return err
	}
	if done != nil {
		return nil
	}
	notes, err := s.billing.CreditNotes(ctx, env, a.InvoiceID.String())
	if err != nil {
		return err
	}
	var note *billing.CreditNote
	for i := range notes {
		if notes[i].ID == a.CreditNoteID.String() {
			note = &notes[i]
		}
	}
	if note == nil {
		return fmt.Errorf("stripesync: credit note %s: %w", a.CreditNoteID, billing.ErrNotFound)
	}
	in := stripe.CreditNote{InvoiceID: stripeInvoice, LimitrCreditNoteID: note.ID, Memo: note.Reason, OutOfBand: status == billing.StatusPaid}
	for _, l := range note.Lines {
		amount, err := stripe.StripeAmount(l.Amount, currency)
		if err != nil {
			return err
		}
		in.Lines = append(in.Lines, stripe.CreditNoteLine{Description: l.Description, Amount: amount})
	}
	c, err := s.client(ctx, env)
	if err != nil {
		return err
	}
	id, err := c.CreateCreditNote(ctx, stripe.IdempotencyKey("cn", note.ID, "create"), in)
	if err != nil {
		return err
	}
	_, err = s.pool.Exec(ctx, `update credit_notes set stripe_credit_note_id = $2 where id = $1 and stripe_credit_note_id is null`, a.CreditNoteID, id)
	return err
}
