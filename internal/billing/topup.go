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
	topupID, err := uuid.Parse(t.ID)
	if err != nil {
		return fmt.Errorf("billing: topup id %q: %w", t.ID, err)
	}
	set, err := loadSettings(ctx, tx, env)
	if err != nil {
		return err
	}
	now, err := s.clockNow(ctx, tx, env, c)
	if err != nil {
		return err
	}
	line, ok, err := TopupLine(set.Currency, set.runeRate, t, now)
	if err != nil || !ok {
		return err
	}
	lines, _ := json.Marshal([]Line{line})
	id := uuid.Must(uuid.NewV7())
	if _, err := tx.Exec(ctx, `insert into invoices (id, tenant_id, environment_id, customer_uid, customer_id, kind, topup_id, period_start, period_end,
			status, currency, lines, subtotal, total, amount_due, buyer, finalize_after)
		values ($1, $2, $3, $4, $5, 'topup', $6, $7, $7, 'draft', $8, $9, $10::numeric, $10::numeric, $10::numeric, $11, $7)`,
		id, env.TenantID, env.ID, c.UID, c.ID, topupID, *line.PeriodStart, set.Currency, lines, line.Amount, []byte(buyer(c.ID, c.Metadata))); err != nil {
		return fmt.Errorf("billing: topup invoice: %w", err)
	}
	_, err = s.finalizeRows(ctx, tx, env, []uuid.UUID{id})
	return err
}

// TopupLine is the line a purchased topup is invoiced with: its price in runes at the
// rune rate, rounded to the currency. ok is false for a topup without a price (or
// priced 0), which is not invoiced.
func TopupLine(currency string, runeRate num.Dec, t wire.CustomerTopup, at time.Time) (line Line, ok bool, err error) {
	if t.Price == "" {
		return Line{}, false, nil
	}
	price, err := num.Parse(string(t.Price))
	if err != nil {
		return Line{}, false, fmt.Errorf("billing: topup price %q: %w", t.Price, err)
	}
	if !price.IsPos() {
		return Line{}, false, nil
	}
	runes, err := price.Mul(runeRate)
	if err != nil {
		return Line{}, false, fmt.Errorf("billing: topup price: %w", num.ErrOutOfRange)
	}
	amount, err := money.Format(runes, currency)
	if err != nil {
		return Line{}, false, err
	}
	at = at.UTC().Truncate(time.Microsecond)
	return Line{Kind: KindTopup, Description: fmt.Sprintf("Topup %s: %s %s", t.Topup, t.Value, t.Credit),
		Quantity: "1", UnitAmount: amount, Amount: amount, PeriodStart: &at, PeriodEnd: &at}, true, nil
}
