package billing

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/limitr/limitr/internal/store"
	"github.com/limitr/limitr/internal/validation"
)

// Test clock statuses.
const (
	ClockReady     = "ready"
	ClockAdvancing = "advancing"
)

// TestClock is a frozen time customers of a non-live environment can live on, to try
// a month of billing in a minute (as Stripe's test clocks).
type TestClock struct {
	ID         string    `json:"id"`
	Name       string    `json:"name"`
	FrozenTime time.Time `json:"frozen_time"`
	Status     string    `json:"status"`
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
}

// TestClockInput creates a test clock or advances one.
type TestClockInput struct {
	FrozenTime string `json:"frozen_time"`
	Name       string `json:"name,omitempty"`
}

func (in TestClockInput) prepare() (time.Time, error) {
	var errs validation.Errors
	t, fe := validation.Time("frozen_time", in.FrozenTime)
	errs.AddField(fe)
	if in.FrozenTime == "" {
		errs.Add("frozen_time", "is required (RFC 3339)")
	}
	errs.AddField(validation.Text("name", in.Name, 200))
	return t.UTC().Truncate(time.Microsecond), errs.Err("invalid test clock")
}

// Validate checks the input.
func (in TestClockInput) Validate() error { _, err := in.prepare(); return err }

const clockColumns = `id, name, frozen_time, status, created_at, updated_at`

func scanClock(row pgx.Row) (TestClock, error) {
	var c TestClock
	var id uuid.UUID
	err := row.Scan(&id, &c.Name, &c.FrozenTime, &c.Status, &c.CreatedAt, &c.UpdatedAt)
	c.ID = id.String()
	return c, err
}

// CreateTestClock creates a test clock; refused in a live environment.
func (s *Service) CreateTestClock(ctx context.Context, env store.Environment, in TestClockInput) (TestClock, error) {
	t, err := in.prepare()
	if err != nil {
		return TestClock{}, err
	}
	if env.Live {
		return TestClock{}, fmt.Errorf("%w: %q", ErrLiveEnvironment, env.Name)
	}
	var out TestClock
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		out, err = scanClock(tx.QueryRow(ctx, `insert into test_clocks (id, tenant_id, environment_id, name, frozen_time)
			values ($1, $2, $3, $4, $5) returning `+clockColumns, uuid.New(), env.TenantID, env.ID, in.Name, t))
		if err != nil {
			return fmt.Errorf("billing: create test clock: %w", err)
		}
		return s.record(ctx, tx, env, "test_clock.created", "test_clock", out.ID, nil, out)
	})
	return out, err
}

// GetTestClock reads a test clock.
func (s *Service) GetTestClock(ctx context.Context, env store.Environment, id string) (TestClock, error) {
	return getClock(ctx, s.pool, env, id, false)
}

func getClock(ctx context.Context, db store.DBTX, env store.Environment, id string, forUpdate bool) (TestClock, error) {
	uid, err := uuid.Parse(id)
	if err != nil {
		return TestClock{}, fmt.Errorf("%w: test clock %q", ErrNotFound, id)
	}
	q := `select ` + clockColumns + ` from test_clocks where tenant_id = $1 and environment_id = $2 and id = $3`
	if forUpdate {
		q += ` for update`
	}
	c, err := scanClock(db.QueryRow(ctx, q, env.TenantID, env.ID, uid))
	if errors.Is(err, pgx.ErrNoRows) {
		return TestClock{}, fmt.Errorf("%w: test clock %q", ErrNotFound, id)
	}
	return c, err
}

// AdvanceInput moves a test clock forward.
type AdvanceInput struct {
	FrozenTime string `json:"frozen_time"`
}

// Validate checks the input.
func (in AdvanceInput) Validate() error {
	_, err := TestClockInput{FrozenTime: in.FrozenTime}.prepare()
	return err
}

// AdvanceTestClock moves a clock forward and marks it advancing; RunTestClock then
// does the billing that became due and marks it ready. The frozen time only moves
// forward.
func (s *Service) AdvanceTestClock(ctx context.Context, env store.Environment, id string, in AdvanceInput) (TestClock, error) {
	t, err := TestClockInput{FrozenTime: in.FrozenTime}.prepare()
	if err != nil {
		return TestClock{}, err
	}
	if env.Live {
		return TestClock{}, fmt.Errorf("%w: %q", ErrLiveEnvironment, env.Name)
	}
	var out TestClock
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		before, err := getClock(ctx, tx, env, id, true)
		if err != nil {
			return err
		}
		if before.Status == ClockAdvancing {
			return fmt.Errorf("%w: %s", ErrClockAdvancing, id)
		}
		if !t.After(before.FrozenTime) {
			return validation.New("invalid test clock", "frozen_time", fmt.Sprintf("must be after the clock's time %s", before.FrozenTime.Format(time.RFC3339)))
		}
		out, err = scanClock(tx.QueryRow(ctx, `update test_clocks set frozen_time = $2, status = 'advancing', updated_at = now()
			where id = $1 returning `+clockColumns, uuid.MustParse(before.ID), t))
		if err != nil {
			return fmt.Errorf("billing: advance test clock: %w", err)
		}
		return s.record(ctx, tx, env, "test_clock.advanced", "test_clock", out.ID, before, out)
	})
	return out, err
}

// RunTestClock does the billing due on an advancing clock at its frozen time (closing
// periods, finalizing drafts past their grace) and marks it ready.
func (s *Service) RunTestClock(ctx context.Context, env store.Environment, id string) (CloseResult, error) {
	c, err := s.GetTestClock(ctx, env, id)
	if err != nil {
		return CloseResult{}, err
	}
	res, err := s.Close(ctx, env, c.ID, c.FrozenTime)
	if err != nil {
		return res, err
	}
	_, err = s.pool.Exec(ctx, `update test_clocks set status = 'ready', updated_at = now() where id = $1 and frozen_time = $2`,
		uuid.MustParse(c.ID), c.FrozenTime)
	return res, err
}

// AdvancingClocks lists the clocks left advancing (a crash mid-run): workers finish them.
func (s *Service) AdvancingClocks(ctx context.Context) ([]ClockRef, error) {
	rows, err := s.pool.Query(ctx, `select c.tenant_id, c.environment_id, c.id from test_clocks c where c.status = 'advancing'`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (ClockRef, error) {
		var c ClockRef
		var id uuid.UUID
		err := r.Scan(&c.TenantID, &c.EnvironmentID, &id)
		c.ID = id.String()
		return c, err
	})
}

// ClockRef names a test clock of an environment.
type ClockRef struct {
	TenantID, EnvironmentID uuid.UUID
	ID                      string
}
