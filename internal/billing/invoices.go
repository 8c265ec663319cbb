package billing

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/limitr/limitr/internal/billing/money"
	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/store"
	"github.com/limitr/limitr/internal/validation"
)

// Invoice is an invoice as the API returns it. Amounts are decimal strings.
type Invoice struct {
	ID              string          `json:"id,omitempty"`
	Number          *string         `json:"number"`
	Kind            string          `json:"kind"`
	Customer        string          `json:"customer"`
	Status          string          `json:"status"`
	Currency        string          `json:"currency"`
	PeriodStart     time.Time       `json:"period_start"`
	PeriodEnd       time.Time       `json:"period_end"`
	DueAt           *time.Time      `json:"due_at"`
	Lines           []Line          `json:"lines"`
	Subtotal        string          `json:"subtotal"`
	Total           string          `json:"total"`
	Credited        string          `json:"credited"`
	AmountDue       string          `json:"amount_due"`
	Buyer           json.RawMessage `json:"buyer,omitempty"`
	Seller          json.RawMessage `json:"seller,omitempty"`
	FinalizeAfter   *time.Time      `json:"finalize_after,omitempty"`
	CreatedAt       *time.Time      `json:"created_at,omitempty"`
	FinalizedAt     *time.Time      `json:"finalized_at,omitempty"`
	PaidAt          *time.Time      `json:"paid_at,omitempty"`
	VoidedAt        *time.Time      `json:"voided_at,omitempty"`
	StripeInvoiceID *string         `json:"stripe_invoice_id,omitempty"`
	StripeStatus    string          `json:"stripe_status,omitempty"`
	StripeError     string          `json:"stripe_error,omitempty"`
	Revision        int64           `json:"revision,omitempty"`

	uid   uuid.UUID
	total num.Dec
	bills []BilledMeter
}

// setLines fills the lines and the totals from a rating.
func (inv *Invoice) setLines(r Rated, currency string) {
	inv.Lines = r.Lines
	if inv.Lines == nil {
		inv.Lines = []Line{}
	}
	sortLines(inv.Lines)
	inv.total, inv.bills = r.Total, r.Bills
	inv.Subtotal, _ = money.Format(r.Total, currency)
	inv.Total = inv.Subtotal
	inv.Credited, _ = money.Format(num.Zero, currency)
	due := r.Total
	if due.IsNeg() {
		due = num.Zero
	}
	inv.AmountDue, _ = money.Format(due, currency)
}

const invoiceColumns = `id, number, kind, customer_id, status, currency, period_start, period_end, due_at, lines,
	subtotal::text, total::text, credited::text, amount_due::text, buyer, seller, finalize_after, created_at, finalized_at, paid_at,
	voided_at, stripe_invoice_id, stripe_status, stripe_error, revision, customer_uid`

func scanInvoice(row pgx.Row) (Invoice, error) {
	var inv Invoice
	var id uuid.UUID
	var lines []byte
	var finalizeAfter, created time.Time
	err := row.Scan(&id, &inv.Number, &inv.Kind, &inv.Customer, &inv.Status, &inv.Currency, &inv.PeriodStart, &inv.PeriodEnd, &inv.DueAt,
		&lines, &inv.Subtotal, &inv.Total, &inv.Credited, &inv.AmountDue, &inv.Buyer, &inv.Seller, &finalizeAfter, &created,
		&inv.FinalizedAt, &inv.PaidAt, &inv.VoidedAt, &inv.StripeInvoiceID, &inv.StripeStatus, &inv.StripeError, &inv.Revision, &inv.uid)
	if err != nil {
		return Invoice{}, err
	}
	inv.ID = id.String()
	if err := json.Unmarshal(lines, &inv.Lines); err != nil {
		return Invoice{}, fmt.Errorf("billing: invoice %s lines: %w", inv.ID, err)
	}
	if inv.Status == StatusDraft {
		inv.FinalizeAfter = &finalizeAfter
	}
	inv.CreatedAt = &created
	for _, s := range []*string{&inv.Subtotal, &inv.Total, &inv.Credited, &inv.AmountDue} {
		d, err := num.Parse(*s)
		if err != nil {
			return Invoice{}, fmt.Errorf("billing: invoice %s amount: %w", inv.ID, err)
		}
		*s, _ = money.Format(d, inv.Currency)
	}
	inv.total, _ = num.Parse(inv.Total)
	return inv, nil
}

// InvoiceFilter selects invoices to list.
type InvoiceFilter struct {
	Customer string
	Status   string
	After    string // exclusive cursor: an invoice id
	Limit    int
}

// Validate checks the filter.
func (f InvoiceFilter) Validate() error {
	var errs validation.Errors
	if f.Customer != "" {
		errs.AddField(validation.ID("customer", f.Customer))
	}
	switch f.Status {
	case "", StatusDraft, StatusFinalized, StatusPaid, StatusVoid, StatusUncollectible:
	default:
		errs.Add("status", "must be draft, finalized, paid, void or uncollectible")
	}
	if f.After != "" {
		if _, err := uuid.Parse(f.After); err != nil {
			errs.Add("cursor", "is not a cursor this API returned")
		}
	}
	return errs.Err("invalid query")
}

// List pages an environment's invoices, newest first by id order of creation.
func (s *Service) List(ctx context.Context, env store.Environment, f InvoiceFilter) (page []Invoice, next string, err error) {
	if err := f.Validate(); err != nil {
		return nil, "", err
	}
	after := uuid.Max
	if f.After != "" {
		after = uuid.MustParse(f.After)
	}
	rows, err := s.pool.Query(ctx, `select `+invoiceColumns+` from invoices
		where tenant_id = $1 and environment_id = $2 and id < $3 and ($4 = '' or customer_id = $4) and ($5 = '' or status = $5)
		order by id desc limit $6`, env.TenantID, env.ID, after, f.Customer, f.Status, f.Limit+1)
	if err != nil {
		return nil, "", fmt.Errorf("billing: list invoices: %w", err)
	}
	page, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (Invoice, error) { return scanInvoice(r) })
	if err != nil {
		return nil, "", fmt.Errorf("billing: list invoices: %w", err)
	}
	if len(page) > f.Limit {
		page, next = page[:f.Limit], page[f.Limit-1].ID
	}
	return page, next, nil
}

// Get reads one invoice.
func (s *Service) Get(ctx context.Context, env store.Environment, id string) (Invoice, error) {
	return getInvoice(ctx, s.pool, env, id, false)
}

func getInvoice(ctx context.Context, db store.DBTX, env store.Environment, id string, forUpdate bool) (Invoice, error) {
	uid, err := uuid.Parse(id)
	if err != nil {
		return Invoice{}, fmt.Errorf("%w: invoice %q", ErrNotFound, id)
	}
	q := `select ` + invoiceColumns + ` from invoices where tenant_id = $1 and environment_id = $2 and id = $3`
	if forUpdate {
		q += ` for update`
	}
	inv, err := scanInvoice(db.QueryRow(ctx, q, env.TenantID, env.ID, uid))
	if errors.Is(err, pgx.ErrNoRows) {
		return Invoice{}, fmt.Errorf("%w: invoice %q", ErrNotFound, id)
	}
	return inv, err
}

// TransitionError names the invoice status that forbids an operation; it matches
// ErrTransition.
type TransitionError struct {
	Op, Status string
}

func (e *TransitionError) Error() string {
	return fmt.Sprintf("cannot %s an invoice that is %s", e.Op, e.Status)
}

// Is makes the error match ErrTransition.
func (e *TransitionError) Is(target error) bool { return target == ErrTransition }

// Finalize finalizes a draft now, skipping what is left of its grace period: it is
// rated once more, numbered and frozen.
func (s *Service) Finalize(ctx context.Context, env store.Environment, id string) (Invoice, error) {
	var out Invoice
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		inv, err := getInvoice(ctx, tx, env, id, true)
		if err != nil {
			return err
		}
		if inv.Status != StatusDraft {
			return &TransitionError{Op: "finalize", Status: inv.Status}
		}
		if inv.Kind == "period" {
			if err := s.refresh(ctx, tx, env, []Invoice{inv}); err != nil {
				return err
			}
		}
		if _, err := s.finalizeRows(ctx, tx, env, []uuid.UUID{uuid.MustParse(inv.ID)}); err != nil {
			return err
		}
		out, err = getInvoice(ctx, tx, env, id, false)
		return err
	})
	return out, err
}

// transitions are the lifecycle moves after finalization: the statuses each may start
// from, and the timestamp it sets.
var transitions = map[string]struct {
	op, set string
	from    []string
}{
	StatusVoid:          {"void", `voided_at = now()`, []string{StatusFinalized, StatusUncollectible, StatusDraft}},
	StatusPaid:          {"mark paid", `paid_at = now()`, []string{StatusFinalized, StatusUncollectible}},
	StatusUncollectible: {"mark uncollectible", `uncollectible_at = now()`, []string{StatusFinalized}},
}

// Void voids an invoice that is not paid.
func (s *Service) Void(ctx context.Context, env store.Environment, id string) (Invoice, error) {
	return s.transition(ctx, env, id, StatusVoid, true)
}

// MarkPaid records that a finalized invoice was paid outside Stripe.
func (s *Service) MarkPaid(ctx context.Context, env store.Environment, id string) (Invoice, error) {
	return s.transition(ctx, env, id, StatusPaid, true)
}

// MarkUncollectible records that a finalized invoice will not be paid.
func (s *Service) MarkUncollectible(ctx context.Context, env store.Environment, id string) (Invoice, error) {
	return s.transition(ctx, env, id, StatusUncollectible, true)
}

// ApplyRemoteStatus records a status Stripe reports (a webhook): the same transition,
// without telling the mirror, which already knows. An invoice already in that status
// is returned unchanged.
func (s *Service) ApplyRemoteStatus(ctx context.Context, env store.Environment, id, status string) (Invoice, error) {
	if _, ok := transitions[status]; !ok {
		return Invoice{}, fmt.Errorf("billing: no transition to %q", status)
	}
	inv, err := s.transition(ctx, env, id, status, false)
	var te *TransitionError
	if errors.As(err, &te) && te.Status == status {
		return s.Get(ctx, env, id)
	}
	return inv, err
}

func (s *Service) transition(ctx context.Context, env store.Environment, id, to string, mirror bool) (Invoice, error) {
	t := transitions[to]
	op, set, from := t.op, t.set, t.from
	var out Invoice
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		inv, err := getInvoice(ctx, tx, env, id, true)
		if err != nil {
			return err
		}
		allowed := false
		for _, f := range from {
			allowed = allowed || inv.Status == f
		}
		if !allowed {
			return &TransitionError{Op: op, Status: inv.Status}
		}
		if inv.Status == StatusDraft && to == StatusVoid {
			// A voided draft keeps its period taken (one invoice per period) but never
			// gets a number: it is numbered void, so the sequence stays gapless.
			if _, err := s.finalizeRows(ctx, tx, env, []uuid.UUID{uuid.MustParse(inv.ID)}); err != nil {
				return err
			}
		}
		if _, err := tx.Exec(ctx, `update invoices set status = $2, `+set+`, updated_at = now(), revision = revision + 1 where id = $1`,
			uuid.MustParse(inv.ID), to); err != nil {
			return fmt.Errorf("billing: %s: %w", op, err)
		}
		out, err = getInvoice(ctx, tx, env, id, false)
		if err != nil {
			return err
		}
		if mirror && s.mirror != nil && inv.Status != StatusDraft {
			if err := s.mirror.InvoiceStatusChanged(ctx, tx, env, uuid.MustParse(out.ID), to); err != nil {
				return fmt.Errorf("billing: %s: mirror: %w", op, err)
			}
		}
		return s.record(ctx, tx, env, "invoice."+to, "invoice", out.ID, inv.summary(), out.summary())
	})
	return out, err
}

// summary is what the audit log and change feed keep of an invoice transition.
func (inv Invoice) summary() map[string]any {
	return map[string]any{"id": inv.ID, "number": inv.Number, "customer": inv.Customer, "status": inv.Status,
		"total": inv.Total, "amount_due": inv.AmountDue, "period_start": inv.PeriodStart, "period_end": inv.PeriodEnd}
}

// CreditNoteInput corrects a finalized invoice: lines with amounts (positive decimal
// strings, credited to the customer) and a reason.
type CreditNoteInput struct {
	Reason string           `json:"reason"`
	Lines  []CreditNoteLine `json:"lines"`
}

// CreditNoteLine is one credited amount.
type CreditNoteLine struct {
	Description string `json:"description"`
	Amount      string `json:"amount"`
}

// CreditNote is a correction to a finalized invoice.
type CreditNote struct {
	ID        string           `json:"id"`
	Invoice   string           `json:"invoice"`
	Reason    string           `json:"reason"`
	Lines     []CreditNoteLine `json:"lines"`
	Total     string           `json:"total"`
	CreatedAt time.Time        `json:"created_at"`
}

// Validate checks the reason and every line.
func (in CreditNoteInput) Validate() error {
	_, err := in.total("USD")
	return err
}

func (in CreditNoteInput) total(currency string) (num.Dec, error) {
	var errs validation.Errors
	errs.AddField(validation.Text("reason", in.Reason, 200))
	if in.Reason == "" {
		errs.Add("reason", "is required")
	}
	if len(in.Lines) == 0 || len(in.Lines) > 100 {
		errs.Add("lines", "must have 1 to 100 lines")
	}
	total := num.Zero
	exp, err := money.Exponent(currency)
	if err != nil {
		return num.Zero, err
	}
	for i, l := range in.Lines {
		path := fmt.Sprintf("lines[%d]", i)
		if l.Description == "" {
			errs.Add(path+".description", "is required")
		}
		errs.AddField(validation.Text(path+".description", l.Description, 200))
		a, err := num.Parse(l.Amount)
		switch {
		case err != nil:
			errs.Add(path+".amount", "must be a decimal string, like \"12.50\"")
		case !a.IsPos():
			errs.Add(path+".amount", "must be greater than 0")
		case a.Trim(0).Scale() > exp:
			errs.Add(path+".amount", fmt.Sprintf("has more decimals than %s's minor unit (%d)", currency, exp))
		default:
			if total, err = total.Add(a); err != nil {
				errs.Add(path+".amount", "is too large")
			}
		}
	}
	return total, errs.Err("invalid credit note")
}

// CreateCreditNote credits part of a finalized (or paid) invoice. The credited total
// never exceeds the invoice's total.
func (s *Service) CreateCreditNote(ctx context.Context, env store.Environment, invoiceID string, in CreditNoteInput) (CreditNote, error) {
	var out CreditNote
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		inv, err := getInvoice(ctx, tx, env, invoiceID, true)
		if err != nil {
			return err
		}
		if inv.Status != StatusFinalized && inv.Status != StatusPaid && inv.Status != StatusUncollectible {
			return &TransitionError{Op: "credit", Status: inv.Status}
		}
		note, err := NewCreditNote(inv, in)
		if err != nil {
			return err
		}
		lines, _ := json.Marshal(note.Lines)
		id := uuid.New()
		out = note
		out.ID = id.String()
		a := store.ActorFrom(ctx)
		if err := tx.QueryRow(ctx, `insert into credit_notes (id, tenant_id, environment_id, invoice_id, reason, lines, total, created_by)
			values ($1, $2, $3, $4, $5, $6, $7::numeric, $8) returning created_at`,
			id, env.TenantID, env.ID, uuid.MustParse(inv.ID), in.Reason, lines, out.Total, a.KeyID).Scan(&out.CreatedAt); err != nil {
			return fmt.Errorf("billing: credit note: %w", err)
		}
		if _, err := tx.Exec(ctx, `update invoices set credited = credited + $2::numeric,
			amount_due = greatest(total - credited - $2::numeric, 0), updated_at = now(), revision = revision + 1 where id = $1`,
			uuid.MustParse(inv.ID), out.Total); err != nil {
			return fmt.Errorf("billing: credit note: %w", err)
		}
		if s.mirror != nil {
			if err := s.mirror.CreditNoteCreated(ctx, tx, env, uuid.MustParse(inv.ID), id); err != nil {
				return fmt.Errorf("billing: credit note: mirror: %w", err)
			}
		}
		return s.record(ctx, tx, env, "invoice.credit_note", "invoice", inv.ID, nil, out)
	})
	return out, err
}

// NewCreditNote checks a credit note against its invoice: every line valid, amounts
// exact in the currency's minor unit, and all the invoice's credit notes totalling at
// most its total. The note has no id yet.
func NewCreditNote(inv Invoice, in CreditNoteInput) (CreditNote, error) {
	total, err := in.total(inv.Currency)
	if err != nil {
		return CreditNote{}, err
	}
	invTotal, err := num.Parse(inv.Total)
	if err != nil {
		return CreditNote{}, fmt.Errorf("billing: invoice total %q: %w", inv.Total, err)
	}
	credited, err := num.Parse(inv.Credited)
	if err != nil {
		credited = num.Zero
	}
	after, err := credited.Add(total)
	if err != nil || after.Cmp(invTotal) > 0 {
		left, _ := invTotal.Sub(credited)
		l, _ := money.Format(left, inv.Currency)
		return CreditNote{}, validation.New("invalid credit note", "lines",
			fmt.Sprintf("credit notes may total at most the invoice's %s %s; %s is left", inv.Total, inv.Currency, l))
	}
	out := CreditNote{Invoice: inv.ID, Reason: in.Reason, Lines: make([]CreditNoteLine, len(in.Lines))}
	for i, l := range in.Lines {
		a, _ := num.Parse(l.Amount) // checked by in.total
		out.Lines[i] = CreditNoteLine{Description: l.Description}
		out.Lines[i].Amount, _ = money.Format(a, inv.Currency)
	}
	out.Total, _ = money.Format(total, inv.Currency)
	return out, nil
}

// CreditNotes lists an invoice's credit notes, oldest first.
func (s *Service) CreditNotes(ctx context.Context, env store.Environment, invoiceID string) ([]CreditNote, error) {
	inv, err := s.Get(ctx, env, invoiceID)
	if err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `select id, reason, lines, total::text, created_at from credit_notes
		where tenant_id = $1 and environment_id = $2 and invoice_id = $3 order by created_at, id`, env.TenantID, env.ID, uuid.MustParse(inv.ID))
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (CreditNote, error) {
		var cn CreditNote
		var id uuid.UUID
		var lines []byte
		if err := r.Scan(&id, &cn.Reason, &lines, &cn.Total, &cn.CreatedAt); err != nil {
			return cn, err
		}
		cn.ID, cn.Invoice = id.String(), inv.ID
		d, _ := num.Parse(cn.Total)
		cn.Total, _ = money.Format(d, inv.Currency)
		return cn, json.Unmarshal(lines, &cn.Lines)
	})
}
