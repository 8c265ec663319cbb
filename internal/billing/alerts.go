package billing

import (
	"context"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/limitr/limitr/internal/store"
)

// Invoice events an alert rule can fire on.
const (
	EventInvoiceFinalized = "invoice_finalized"
	EventPaymentFailed    = "payment_failed"
	EventStripeSyncFailed = "stripe_sync_failed"
)

// InvoiceAlerts hears of invoice events inside the transaction that records them, so
// an alert commits with the event or not at all.
type InvoiceAlerts interface {
	InvoiceEvent(ctx context.Context, tx pgx.Tx, env store.Environment, kind string, invoiceIDs []uuid.UUID, reason string) error
}

// SetAlerts connects the alerts domain (nil: none).
func (s *Service) SetAlerts(a InvoiceAlerts) { s.alerts = a }

// InvoiceEvent passes an invoice event to the alerts domain, if connected. The Stripe
// mirror calls it for failed payments and refused pushes.
func (s *Service) InvoiceEvent(ctx context.Context, tx pgx.Tx, env store.Environment, kind string, ids []uuid.UUID, reason string) error {
	if s.alerts == nil || len(ids) == 0 {
		return nil
	}
	if err := s.alerts.InvoiceEvent(ctx, tx, env, kind, ids, reason); err != nil {
		return fmt.Errorf("billing: alerts: %w", err)
	}
	return nil
}
