package alerts

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
)

// RescueArgs is the periodic job that picks up deliveries a dead worker left in doubt.
type RescueArgs struct{}

// Kind implements river.JobArgs.
func (RescueArgs) Kind() string { return "limitr.alert_rescue" }

// InsertOpts runs the rescue on the alerts queue.
func (RescueArgs) InsertOpts() river.InsertOpts { return river.InsertOpts{Queue: Queue} }

// defaultStuckAfter is how long an attempt may be under way before it is taken for
// dead: longer than any live attempt (the send is bounded by sendTimeout, the job by
// its two-minute timeout).
const defaultStuckAfter = 3 * time.Minute

// RescueStuck queues a new attempt for every delivery whose last attempt has been
// under way for longer than a live one can be: its worker died mid-send (SIGKILL,
// OOM, a lost machine). River would also retry the dead worker's job, but only after
// its own rescue delay, which has to outlast the longest job of any kind; this brings
// the message out within minutes. The new attempt asks the destination before sending
// again, as any in-doubt attempt does, and a late retry of the old job finds the
// delivery done.
func (s *Service) RescueStuck(ctx context.Context) (int, error) {
	if s.jobs == nil {
		return 0, nil
	}
	after := s.cfg.StuckAfter
	if after <= 0 {
		after = defaultStuckAfter
	}
	n := 0
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `update alert_deliveries set updated_at = now()
			where status = 'sending' and updated_at < now() - make_interval(secs => $1)
			returning id`, after.Seconds())
		if err != nil {
			return err
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
		if err != nil || len(ids) == 0 {
			return err
		}
		jobs := make([]river.InsertManyParams, len(ids))
		for i, id := range ids {
			jobs[i] = river.InsertManyParams{Args: DeliverArgs{DeliveryID: id}}
		}
		if _, err := s.jobs.InsertManyTx(ctx, tx, jobs); err != nil {
			return fmt.Errorf("alerts: queue rescued deliveries: %w", err)
		}
		n = len(ids)
		return nil
	})
	if n > 0 {
		s.log.Warn("alerts: deliveries left in doubt by a stopped worker were queued again", "deliveries", n)
	}
	return n, err
}

// addRescueWorker registers the rescue job's worker.
func (s *Service) addRescueWorker(workers *river.Workers) {
	river.AddWorker(workers, river.WorkFunc(func(ctx context.Context, _ *river.Job[RescueArgs]) error {
		_, err := s.RescueStuck(ctx)
		return err
	}))
}
