package stripesync

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/limitr/limitr/internal/billing"
	"github.com/limitr/limitr/internal/billing/stripe"
	"github.com/limitr/limitr/internal/store"
)

// ErrUnknownEnvironment: a webhook names no environment connected to Stripe.
var ErrUnknownEnvironment = errors.New("no environment connected to Stripe has this id")

// WebhookResult says what a webhook did.
type WebhookResult struct {
	EventID   string `json:"event_id"`
	Type      string `json:"type"`
	Duplicate bool   `json:"duplicate"`
	Invoice   string `json:"invoice,omitempty"`
	Status    string `json:"status,omitempty"`
	Ignored   string `json:"ignored,omitempty"`
}

// eventStatus maps the Stripe events we act on to our invoice status ("" records the
// event without a status change).
var eventStatus = map[string]string{
	"invoice.paid":                 billing.StatusPaid,
	"invoice.voided":               billing.StatusVoid,
	"invoice.marked_uncollectible": billing.StatusUncollectible,
	"invoice.payment_failed":       "",
}

// HandleWebhook verifies a Stripe webhook for an environment (signature, 5-minute
// tolerance), records its event id once (a redelivery is a duplicate that changes
// nothing) and applies it to our invoice. A bad signature returns an error matching
// stripe.ErrBadSignature and changes nothing.
func (s *Service) HandleWebhook(ctx context.Context, envID uuid.UUID, payload []byte, signature string) (WebhookResult, error) {
	var tenantID uuid.UUID
	err := s.pool.QueryRow(ctx, `select tenant_id from stripe_connections where environment_id = $1`, envID).Scan(&tenantID)
	if errors.Is(err, pgx.ErrNoRows) {
		return WebhookResult{}, ErrUnknownEnvironment
	}
	if err != nil {
		return WebhookResult{}, err
	}
	env, err := s.environment(ctx, tenantID, envID)
	if err != nil {
		return WebhookResult{}, err
	}
	_, secret, err := s.secretsOf(ctx, s.pool, env)
	if err != nil {
		return WebhookResult{}, err
	}
	ev, err := stripe.ParseWebhook(payload, signature, secret, s.now())
	if err != nil {
		return WebhookResult{}, err
	}
	out := WebhookResult{EventID: ev.ID, Type: ev.Type}
	status, known := eventStatus[ev.Type]
	var invoiceID *uuid.UUID
	if known {
		id, err := s.invoiceOf(ctx, env, ev)
		if err != nil {
			return out, err
		}
		invoiceID = id
	}
	tag, err := s.pool.Exec(ctx, `insert into stripe_events (environment_id, event_id, type, invoice_id) values ($1, $2, $3, $4)
		on conflict do nothing`, env.ID, ev.ID, ev.Type, invoiceID)
	if err != nil {
		return out, err
	}
	if tag.RowsAffected() == 0 {
		out.Duplicate = true
		return out, nil
	}
	switch {
	case !known:
		out.Ignored = "event type not used"
		return out, nil
	case invoiceID == nil:
		out.Ignored = "the invoice is not one of ours"
		return out, nil
	}
	out.Invoice = invoiceID.String()
	if status == "" {
		// A failed payment changes no status: Stripe retries it; we show the reason.
		reason := fmt.Sprintf("payment failed (Stripe event %s at %s)", ev.ID, ev.Created.UTC().Format(time.RFC3339))
		err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `update invoices set stripe_error = $2, updated_at = now() where id = $1`, *invoiceID, reason); err != nil {
				return err
			}
			return s.billing.InvoiceEvent(ctx, tx, env, billing.EventPaymentFailed, []uuid.UUID{*invoiceID}, reason)
		})
		return out, err
	}
	inv, err := s.billing.ApplyRemoteStatus(ctx, env, invoiceID.String(), status)
	if err != nil {
		if errors.Is(err, billing.ErrTransition) {
			// Our invoice is already past this (voided here, say): record, report drift.
			out.Ignored = err.Error()
			s.log.Warn("stripesync: a Stripe event disagrees with the invoice's status", "event", ev.ID, "invoice", invoiceID, "err", err)
			return out, nil
		}
		// Let Stripe redeliver: forget the event so the retry is not a duplicate.
		_, _ = s.pool.Exec(context.WithoutCancel(ctx), `delete from stripe_events where environment_id = $1 and event_id = $2`, env.ID, ev.ID)
		return out, err
	}
	out.Status = inv.Status
	return out, nil
}

// invoiceOf finds our invoice for an event: by the id in its metadata, else by the
// Stripe invoice id we stored.
func (s *Service) invoiceOf(ctx context.Context, env store.Environment, ev stripe.Event) (*uuid.UUID, error) {
	var id uuid.UUID
	var err error
	if lid, perr := uuid.Parse(ev.LimitrInvoiceID); perr == nil {
		err = s.pool.QueryRow(ctx, `select id from invoices where tenant_id = $1 and environment_id = $2 and id = $3`,
			env.TenantID, env.ID, lid).Scan(&id)
	} else if ev.InvoiceID != "" {
		err = s.pool.QueryRow(ctx, `select id from invoices where tenant_id = $1 and environment_id = $2 and stripe_invoice_id = $3`,
			env.TenantID, env.ID, ev.InvoiceID).Scan(&id)
	} else {
		return nil, nil
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &id, nil
}

// ReconcileArgs is the periodic reconciliation: our finalized invoices against Stripe's.
type ReconcileArgs struct{}

// Kind implements river.JobArgs.
func (ReconcileArgs) Kind() string { return "limitr.stripe_reconcile" }

// ReconcileAll reconciles every connected environment.
func (s *Service) ReconcileAll(ctx context.Context) error {
	envs, err := s.connectedEnvironments(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, env := range envs {
		if _, err := s.Reconcile(ctx, env); err != nil {
			errs = append(errs, fmt.Errorf("environment %s: %w", env.ID, err))
		}
	}
	return errors.Join(errs...)
}

// stripeStatusOf is the Stripe status our invoice status should have.
var stripeStatusOf = map[string]string{
	billing.StatusFinalized:     "open",
	billing.StatusPaid:          "paid",
	billing.StatusVoid:          "void",
	billing.StatusUncollectible: "uncollectible",
}

// Reconcile compares our invoices synced to Stripe in the last 90 days with Stripe's
// (status, total, currency), and lists finalized invoices that never made it. The
// report is stored and shown on GET …/integrations/stripe.
func (s *Service) Reconcile(ctx context.Context, env store.Environment) (Reconciliation, error) {
	rows, err := s.pool.Query(ctx, `select id, status, total::text, currency, stripe_invoice_id, stripe_status, stripe_error from invoices
		where tenant_id = $1 and environment_id = $2 and status <> 'draft' and finalized_at > now() - interval '90 days'
		order by id`, env.TenantID, env.ID)
	if err != nil {
		return Reconciliation{}, err
	}
	type ours struct {
		id                          uuid.UUID
		status, total, currency     string
		stripeID                    *string
		stripeStatus, stripeErrText string
	}
	list, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (ours, error) {
		var o ours
		return o, r.Scan(&o.id, &o.status, &o.total, &o.currency, &o.stripeID, &o.stripeStatus, &o.stripeErrText)
	})
	if err != nil {
		return Reconciliation{}, err
	}
	rep := Reconciliation{RanAt: s.now().UTC(), Drift: []Drift{}}
	var c *stripe.Client
	for _, o := range list {
		if o.stripeID == nil || o.stripeStatus != "synced" {
			if o.status == billing.StatusVoid && o.stripeID == nil {
				continue // voided before it was pushed
			}
			problem := "not in Stripe yet"
			if o.stripeStatus == "failed" {
				problem = "push failed: " + o.stripeErrText
			}
			rep.Drift = append(rep.Drift, Drift{Invoice: o.id.String(), Problem: problem})
			continue
		}
		if c == nil {
			if c, err = s.client(ctx, env); err != nil {
				return rep, err
			}
		}
		rep.Checked++
		remote, err := c.GetInvoice(ctx, *o.stripeID)
		if err != nil {
			if stripe.IsRetryable(err) {
				return rep, err
			}
			rep.Drift = append(rep.Drift, Drift{Invoice: o.id.String(), StripeInvoice: *o.stripeID, Problem: "cannot read it in Stripe: " + err.Error()})
			continue
		}
		want, err := stripe.StripeAmount(o.total, o.currency)
		if err != nil {
			return rep, err
		}
		switch {
		case remote.Status != stripeStatusOf[o.status]:
			rep.Drift = append(rep.Drift, Drift{Invoice: o.id.String(), StripeInvoice: remote.ID,
				Problem: fmt.Sprintf("status: ours %s, Stripe %s", o.status, remote.Status)})
		case remote.Total != want:
			rep.Drift = append(rep.Drift, Drift{Invoice: o.id.String(), StripeInvoice: remote.ID,
				Problem: fmt.Sprintf("total: ours %d, Stripe %d (minor units)", want, remote.Total)})
		}
	}
	drift, _ := json.Marshal(rep.Drift)
	if _, err := s.pool.Exec(ctx, `insert into stripe_reconciliations (tenant_id, environment_id, ran_at, checked, drift) values ($1, $2, $3, $4, $5)`,
		env.TenantID, env.ID, rep.RanAt, rep.Checked, drift); err != nil {
		return rep, err
	}
	if len(rep.Drift) > 0 {
		s.log.Warn("stripesync: Stripe and our invoices disagree", "environment", env.ID, "drift", len(rep.Drift))
	}
	return rep, nil
}
