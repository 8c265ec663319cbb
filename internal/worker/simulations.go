package worker

import (
	"github.com/riverqueue/river"

	"github.com/limitr/limitr/internal/analytics/simulate"
	"github.com/limitr/limitr/internal/policies/pgstore"
)

// addSimulationWorker registers the what-if replay job (queued by the API, on the
// simulations queue; one at a time per worker, as a replay holds a month of an
// environment's usage in memory).
func (w *Worker) addSimulationWorker(workers *river.Workers) {
	pols := pgstore.NewService(w.deps.Pool, nil)
	sims := simulate.New(w.deps.Pool, nil, pols, w.billing)
	sims.AddWorkers(workers)
}
