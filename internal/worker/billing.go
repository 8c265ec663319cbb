package worker

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/limitr/limitr/internal/alerts"
	"github.com/limitr/limitr/internal/billing"
	"github.com/limitr/limitr/internal/billing/stripesync"
	"github.com/limitr/limitr/internal/customers"
	"github.com/limitr/limitr/internal/policies/pgstore"
)

// BillingCloseArgs is the periodic billing pass: invoices of ended periods, drafts
// refreshed and finalized after their grace, test clocks left advancing finished.
type BillingCloseArgs struct{}

// Kind implements river.JobArgs.
func (BillingCloseArgs) Kind() string { return "limitr.billing_close" }

// InsertOpts puts the pass on its own queue, one at a time per worker. Passes on
// several workers at once are safe: invoices are unique per customer and period, and
// numbers are taken under a lock.
func (BillingCloseArgs) InsertOpts() river.InsertOpts { return river.InsertOpts{Queue: QueueBilling} }

// QueueBilling is the River queue billing jobs run on.
const QueueBilling = "billing"

type billingCloseWorker struct {
	river.WorkerDefaults[BillingCloseArgs]
	w       *Worker
	billing *billing.Service
	stripe  *stripesync.Service
}

func newBillingCloseWorker(w *Worker) *billingCloseWorker {
	pols := pgstore.NewService(w.deps.Pool, nil)
	custs := customers.NewService(w.deps.Pool, pols, nil)
	bill := billing.NewService(w.deps.Pool, pols, custs)
	sync := stripesync.New(w.deps.Pool, w.deps.Secrets, lateInserter{w}, bill,
		stripesync.Config{APIBase: w.deps.StripeAPIBase, Logger: w.log})
	bill.SetMirror(sync)
	w.alerts = w.deps.Alerts
	if w.alerts == nil {
		w.alerts = alerts.New(w.deps.Pool, w.deps.Secrets, lateInserter{w}, pols,
			alerts.Config{SlackAPIURL: w.deps.SlackAPIURL, PublicURL: w.deps.PublicURL,
				AllowPrivateDestinations: w.deps.AllowPrivateAlertDestinations, Metrics: alerts.NewMetrics(w.reg), Logger: w.log})
		w.alerts.SetCustomers(custs)
	}
	// Invoices finalized by the billing pass, and Stripe refusals, fire their rules.
	bill.SetAlerts(w.alerts)
	w.stripe, w.billing = sync, bill
	return &billingCloseWorker{w: w, billing: bill, stripe: sync}
}

// lateInserter queues jobs through the worker's River client, which is built after
// the workers it runs.
type lateInserter struct{ w *Worker }

func (l lateInserter) InsertManyTx(ctx context.Context, tx pgx.Tx, params []river.InsertManyParams) ([]*rivertype.JobInsertResult, error) {
	return l.w.river.InsertManyTx(ctx, tx, params)
}

// ResealArgs re-seals stored secrets under the keyring's newest key.
type ResealArgs struct{}

// Kind implements river.JobArgs.
func (ResealArgs) Kind() string { return "limitr.reseal_secrets" }

type resealWorker struct {
	river.WorkerDefaults[ResealArgs]
	w *Worker
}

func (rw *resealWorker) Work(ctx context.Context, _ *river.Job[ResealArgs]) error {
	n, err := rw.w.stripe.Reseal(ctx)
	if err == nil {
		var m int
		m, err = rw.w.alerts.Reseal(ctx)
		if m > 0 {
			rw.w.log.Info("worker: re-sealed alert channel secrets under the newest key", "channels", m)
		}
	}
	if n > 0 {
		rw.w.log.Info("worker: re-sealed secrets under the newest key", "connections", n)
	}
	rw.w.metrics.outcome("reseal_secrets", err)
	return err
}

func (bw *billingCloseWorker) Work(ctx context.Context, _ *river.Job[BillingCloseArgs]) error {
	res, err := bw.billing.CloseAll(ctx)
	if res.Drafted+res.Finalized > 0 {
		bw.w.log.Info("worker: billing pass", "customers", res.Customers, "drafted", res.Drafted, "finalized", res.Finalized, "refreshed", res.Refreshed)
	}
	bw.w.metrics.outcome("billing_close", err)
	return err
}
