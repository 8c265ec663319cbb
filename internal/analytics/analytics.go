// Package analytics is margins and usage over time: rollups the worker keeps as usage
// is aggregated, and the queries the API and the dashboard read them with.
//
// Revenue here is the invoice's, not an estimate: a meter period is valued by
// billing's own rating (billing.Valuation, the code invoices run), and what the
// rollups hold are the changes of that value over time. When a meter's committed
// usage grows, the booker adds what the meter is worth now minus what was booked for
// it before, at the time of the change; a publish or an override that reprices an open
// meter period is booked the same way, when it happens. So whatever is booked for a
// meter period sums to what its invoice bills (tiered and volume curves included,
// which per-hour pricing would get wrong), and the rollups can be summed over any
// window.
//
// Rollups are per customer × entitlement × policy version by hour and by day, the same
// summed per plan × customer type × entitlement (what grouping by those reads), and
// running totals per customer and day, so the totals of 100k customers over a window
// are the difference of two rows each.
package analytics

import (
	"context"
	"errors"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/limitr/limitr/internal/billing"
	"github.com/limitr/limitr/internal/store"
)

// Errors callers can test with errors.Is.
var (
	// ErrInvalid marks a query that does not validate; the error names the field.
	ErrInvalid = errors.New("analytics: invalid query")
	// ErrNotFound is a customer the environment does not have.
	ErrNotFound = errors.New("analytics: not found")
)

// Valuer values customers' meters with billing's rating (*billing.Service).
type Valuer interface {
	Valuation(ctx context.Context, db store.DBTX, env store.Environment) (*billing.Valuation, error)
	Settings(ctx context.Context, env store.Environment) (billing.Settings, error)
	// Environments are those with an active policy: the ones billed, and booked.
	Environments(ctx context.Context) ([]store.Environment, error)
}

// Service books and reads analytics.
type Service struct {
	pool   *pgxpool.Pool
	valuer Valuer
	now    func() time.Time
}

// NewService returns the analytics service.
func NewService(pool *pgxpool.Pool, valuer Valuer) *Service {
	return &Service{pool: pool, valuer: valuer, now: time.Now}
}

// SetClock replaces the wall clock (tests).
func (s *Service) SetClock(now func() time.Time) { s.now = now }

// lockKey is the advisory lock that serialises booking per environment: bookings are
// differences against what was booked before, so two bookers must not read the same
// "before".
func lockKey(env uuid.UUID) int64 {
	var k int64
	for _, b := range env[:8] {
		k = k<<8 | int64(b)
	}
	return k
}
