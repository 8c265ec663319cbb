package alerts

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/limitr/limitr/internal/billing"
	"github.com/limitr/limitr/internal/store"
)

var _ billing.InvoiceAlerts = (*Service)(nil)

// InvoiceEvent fires the invoice_finalized, payment_failed and stripe_sync_failed
// rules for invoices, inside the caller's transaction (billing's finalization, the
// Stripe webhook or push job). Each fires once per rule and invoice.
func (s *Service) InvoiceEvent(ctx context.Context, tx pgx.Tx, env store.Environment, kind string, ids []uuid.UUID, reason string) error {
	rules, err := enabledRules(ctx, tx, env, []string{kind})
	if err != nil || len(rules) == 0 {
		return err // the common case: no rule of this kind, one indexed query
	}
	rows, err := tx.Query(ctx, `select i.id, i.customer_uid, i.customer_id, coalesce(i.number, ''), i.total::text, i.currency,
			i.period_start, i.period_end, coalesce(c.type, ''), coalesce(c.plan, '')
		from invoices i left join customers c on c.uid = i.customer_uid
		where i.tenant_id = $1 and i.environment_id = $2 and i.id = any($3)`, env.TenantID, env.ID, ids)
	if err != nil {
		return fmt.Errorf("alerts: load invoices: %w", err)
	}
	var obs []Observation
	for rows.Next() {
		var id, uid uuid.UUID
		var customer, number, total, currency, ctype, plan string
		var start, end time.Time
		if err := rows.Scan(&id, &uid, &customer, &number, &total, &currency, &start, &end, &ctype, &plan); err != nil {
			rows.Close()
			return err
		}
		title, summary := invoiceText(kind, customer, number, total, currency, reason)
		obs = append(obs, Observation{Kind: kind, Customer: Subject{UID: uid, ID: customer, Type: ctype, Plan: plan},
			Key: id.String(), PeriodStart: start.UTC(), PeriodEnd: end.UTC(), At: s.now().UTC(),
			Data: map[string]any{"title": title, "summary": summary, "invoice_id": id.String(), "number": number,
				"total": total, "currency": currency, "customer": customer, "plan": plan, "reason": reason}})
	}
	if err := rows.Err(); err != nil {
		return err
	}
	_, err = s.FireTx(ctx, tx, env, obs)
	return err
}

func invoiceText(kind, customer, number, total, currency, reason string) (title, summary string) {
	name := number
	if name == "" {
		name = "draft"
	}
	switch kind {
	case billing.EventInvoiceFinalized:
		return fmt.Sprintf("Invoice %s finalized for %s", name, customer),
			fmt.Sprintf("Invoice %s for %s was finalized: %s %s.", name, customer, total, currency)
	case billing.EventPaymentFailed:
		return fmt.Sprintf("Payment failed for invoice %s (%s)", name, customer),
			fmt.Sprintf("Stripe could not collect %s %s for invoice %s: %s.", total, currency, name, reason)
	default:
		return fmt.Sprintf("Stripe sync failed for invoice %s (%s)", name, customer),
			fmt.Sprintf("Invoice %s could not be mirrored to Stripe: %s", name, reason)
	}
}
