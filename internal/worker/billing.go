package worker

import (
	"context"

	"github.com/riverqueue/river"

	"github.com/limitr/limitr/internal/billing"
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
}

func newBillingCloseWorker(w *Worker) *billingCloseWorker {
	pols := pgstore.NewService(w.deps.Pool, nil)
	custs := customers.NewService(w.deps.Pool, pols, nil)
	return &billingCloseWorker{w: w, billing: billing.NewService(w.deps.Pool, pols, custs)}
}

func (bw *billingCloseWorker) Work(ctx context.Context, _ *river.Job[BillingCloseArgs]) error {
	res, err := bw.billing.CloseAll(ctx)
	if res.Drafted+res.Finalized > 0 {
		bw.w.log.Info("worker: billing pass", "customers", res.Customers, "drafted", res.Drafted, "finalized", res.Finalized, "refreshed", res.Refreshed)
	}
	bw.w.metrics.outcome("billing_close", err)
	return err
}
