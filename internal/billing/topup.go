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
	"github.com/limitr/limitr/internal/wire"
)

// InvoiceTopup bills a purchased topup when it is applied, at its price, on an invoice
// of its own, finalized at once: it runs in the transaction that applies the topup, so
// a topup is never granted without its invoice, nor invoiced twice (topup_id is
// unique). A topup without a price (or priced 0) is not invoiced.
func (s *Service) InvoiceTopup(ctx context.Context, tx pgx.Tx, env store.Environment, c store.Customer, t wire.CustomerTopup) error {
	if t.Price == "" {
		return nil
	}
	price, err := num.Parse(string(t.Price))
	if err != nil {
		return fmt.Errorf("billing: topup price %q: %w", t.Price, err)
	}
	if !price.IsPos() {
		return nil
	}
	topupID, err := uuid.Parse(t.ID)
	if err != nil {
		return fmt.Errorf("billing: topup id %q: %w", t.ID, err)
	}
	set, err := loadSettings(ctx, tx, env)
	if err != nil {
		return err
	}
	runes, err := price.Mul(set.runeRate)
	if err != nil {
		return fmt.Errorf("billing: topup price: %w", num.ErrOutOfRange)
	}
	amount, err := money.RoundTo(runes, set.Currency)
	if err != nil {
		return err
	}
	text, _ := money.Format(amount, set.Currency)
	now, err := s.clockNow(ctx, tx, env, c)
	if err != nil {
		return err
	}
	now = now.UTC().Truncate(time.Microsecond)
	line := Line{Kind: KindTopup, Description: fmt.Sprintf("Topup %s: %s %s", t.Topup, t.Value, t.Credit),
		Quantity: "1", UnitAmount: text, Amount: text, PeriodStart: &now, PeriodEnd: &now}
	lines, _ := json.Marshal([]Line{line})
	id := uuid.Must(uuid.NewV7())
	if _, err := tx.Exec(ctx, `insert into invoices (id, tenant_id, environment_id, customer_uid, customer_id, kind, topup_id, period_start, period_end,
			status, currency, lines, subtotal, total, amount_due, buyer, finalize_after)
		values ($1, $2, $3, $4, $5, 'topup', $6, $7, $7, 'draft', $8, $9, $10::numeric, $10::numeric, $10::numeric, $11, $7)`,
		id, env.TenantID, env.ID, c.UID, c.ID, topupID, now, set.Currency, lines, text, []byte(buyer(c.ID, c.Metadata))); err != nil {
		return fmt.Errorf("billing: topup invoice: %w", err)
	}
	_, err = s.finalizeRows(ctx, tx, env, []uuid.UUID{id})
	return err
}
