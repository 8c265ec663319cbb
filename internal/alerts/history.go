package alerts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/limitr/limitr/internal/alerts/channels"
	"github.com/limitr/limitr/internal/store"
)

// Alert is what fired, why and for whom.
type Alert struct {
	ID          uuid.UUID      `json:"id"`
	RuleID      *uuid.UUID     `json:"rule_id"` // nil once the rule is deleted
	RuleName    string         `json:"rule_name"`
	Kind        string         `json:"kind"`
	CustomerID  string         `json:"customer_id,omitempty"`
	Entitlement string         `json:"entitlement,omitempty"`
	Threshold   string         `json:"threshold,omitempty"`
	PeriodStart *time.Time     `json:"period_start,omitempty"`
	Title       string         `json:"title"`
	Summary     string         `json:"summary"`
	Data        map[string]any `json:"data"`
	Superseded  bool           `json:"superseded"`
	FiredAt     time.Time      `json:"fired_at"`
}

// Delivery is one alert's delivery to one channel, with its attempts.
type Delivery struct {
	ID            uuid.UUID  `json:"id"`
	AlertID       uuid.UUID  `json:"alert_id"`
	ChannelID     *uuid.UUID `json:"channel_id"` // nil once the channel is deleted
	ChannelName   string     `json:"channel_name"`
	ChannelKind   string     `json:"channel_kind"`
	Status        string     `json:"status"` // pending, sending, delivered, dead
	Attempts      int        `json:"attempts"`
	Resends       int        `json:"resends"`
	LastError     string     `json:"last_error,omitempty"`
	NextAttemptAt *time.Time `json:"next_attempt_at,omitempty"`
	DeliveredAt   *time.Time `json:"delivered_at,omitempty"`
	CreatedAt     time.Time  `json:"created_at"`
	UpdatedAt     time.Time  `json:"updated_at"`
	Log           []Attempt  `json:"log"`
}

// Attempt is one try, as logged.
type Attempt struct {
	Attempt    int        `json:"attempt"`
	StartedAt  time.Time  `json:"started_at"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
	Outcome    string     `json:"outcome"`
	StatusCode int        `json:"status_code,omitempty"`
	Error      string     `json:"error,omitempty"`
}

// Page bounds a listing: newest first, up to Limit, before the Before cursor (an id
// from the previous page).
type Page struct {
	Limit      int
	Before     *uuid.UUID
	CustomerID string // alerts only: narrow to one customer
	AlertID    *uuid.UUID
	Status     string // deliveries only
}

const alertColumns = `id, rule_id, rule_name, kind, customer_id, entitlement, threshold, period_start, title, summary, data, superseded, fired_at`

// alertColumnsA is alertColumns of an alert aliased "a".
const alertColumnsA = `id, a.rule_id, a.rule_name, a.kind, a.customer_id, a.entitlement, a.threshold, a.period_start, a.title,
	a.summary, a.data, a.superseded, a.fired_at`

func scanAlert(row pgx.CollectableRow) (Alert, error) {
	var a Alert
	var data []byte
	if err := row.Scan(&a.ID, &a.RuleID, &a.RuleName, &a.Kind, &a.CustomerID, &a.Entitlement, &a.Threshold, &a.PeriodStart,
		&a.Title, &a.Summary, &data, &a.Superseded, &a.FiredAt); err != nil {
		return a, err
	}
	return a, a.finish(data)
}

// finish decodes the stored data and puts times in UTC.
func (a *Alert) finish(data []byte) error {
	a.FiredAt = a.FiredAt.UTC()
	a.PeriodStart = utcPtr(a.PeriodStart)
	if err := json.Unmarshal(data, &a.Data); err != nil {
		return fmt.Errorf("alert %s data: %w", a.ID, err)
	}
	if a.Data == nil {
		a.Data = map[string]any{}
	}
	return nil
}

// Alerts lists what fired, newest first.
func (s *Service) Alerts(ctx context.Context, env store.Environment, p Page) ([]Alert, error) {
	// One customer's alerts are read through their own index: a filter that may be
	// empty ("$3 = '' or …") would keep the planner on the environment's.
	byCustomer := `$3 = ''`
	if p.CustomerID != "" {
		byCustomer = `customer_id = $3`
	}
	rows, err := s.pool.Query(ctx, `select `+alertColumns+` from alerts
		where tenant_id = $1 and environment_id = $2 and `+byCustomer+`
		  and ($4::uuid is null or (fired_at, id) < (select fired_at, id from alerts where id = $4))
		order by fired_at desc, id desc limit $5`, env.TenantID, env.ID, p.CustomerID, p.Before, limitOf(p))
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, scanAlert)
}

func limitOf(p Page) int {
	if p.Limit <= 0 || p.Limit > 500 {
		return 100
	}
	return p.Limit
}

const deliveryColumns = `id, alert_id, channel_id, channel_name, channel_kind, status, attempts, resends, last_error,
	next_attempt_at, delivered_at, created_at, updated_at`

func scanDelivery(row pgx.CollectableRow) (Delivery, error) {
	var d Delivery
	err := row.Scan(&d.ID, &d.AlertID, &d.ChannelID, &d.ChannelName, &d.ChannelKind, &d.Status, &d.Attempts, &d.Resends,
		&d.LastError, &d.NextAttemptAt, &d.DeliveredAt, &d.CreatedAt, &d.UpdatedAt)
	d.CreatedAt, d.UpdatedAt = d.CreatedAt.UTC(), d.UpdatedAt.UTC()
	d.NextAttemptAt, d.DeliveredAt = utcPtr(d.NextAttemptAt), utcPtr(d.DeliveredAt)
	d.Log = []Attempt{}
	return d, err
}

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// Deliveries lists deliveries newest first, each with its attempt log.
func (s *Service) Deliveries(ctx context.Context, env store.Environment, p Page) ([]Delivery, error) {
	rows, err := s.pool.Query(ctx, `select `+deliveryColumns+` from alert_deliveries
		where tenant_id = $1 and environment_id = $2 and ($3::uuid is null or alert_id = $3) and ($4 = '' or status = $4)
		  and ($5::uuid is null or (created_at, id) < (select created_at, id from alert_deliveries where id = $5))
		order by created_at desc, id desc limit $6`, env.TenantID, env.ID, p.AlertID, p.Status, p.Before, limitOf(p))
	if err != nil {
		return nil, err
	}
	ds, err := pgx.CollectRows(rows, scanDelivery)
	if err != nil || len(ds) == 0 {
		return ds, err
	}
	return ds, s.attachLogs(ctx, ds)
}

func (s *Service) attachLogs(ctx context.Context, ds []Delivery) error {
	ids := make([]uuid.UUID, len(ds))
	at := make(map[uuid.UUID]int, len(ds))
	for i, d := range ds {
		ids[i], at[d.ID] = d.ID, i
	}
	rows, err := s.pool.Query(ctx, `select delivery_id, attempt, started_at, finished_at, outcome, status_code, error
		from alert_attempts where delivery_id = any($1) order by id`, ids)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var id uuid.UUID
		var a Attempt
		if err := rows.Scan(&id, &a.Attempt, &a.StartedAt, &a.FinishedAt, &a.Outcome, &a.StatusCode, &a.Error); err != nil {
			return err
		}
		a.StartedAt, a.FinishedAt = a.StartedAt.UTC(), utcPtr(a.FinishedAt)
		d := &ds[at[id]]
		d.Log = append(d.Log, a)
	}
	return rows.Err()
}

// Delivery reads one delivery with its attempts.
func (s *Service) Delivery(ctx context.Context, env store.Environment, id uuid.UUID) (Delivery, error) {
	rows, err := s.pool.Query(ctx, `select `+deliveryColumns+` from alert_deliveries where tenant_id = $1 and environment_id = $2 and id = $3`,
		env.TenantID, env.ID, id)
	if err != nil {
		return Delivery{}, err
	}
	d, err := pgx.CollectExactlyOneRow(rows, scanDelivery)
	if errors.Is(err, pgx.ErrNoRows) {
		return Delivery{}, fmt.Errorf("alert delivery %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return Delivery{}, err
	}
	ds := []Delivery{d}
	return ds[0], s.attachLogs(ctx, ds)
}

// Resend sends a delivered or dead delivery again, as a new message (receivers that
// deduplicate see a new id), with a fresh retry window.
func (s *Service) Resend(ctx context.Context, env store.Environment, id uuid.UUID) (Delivery, error) {
	if s.jobs == nil {
		return Delivery{}, errors.New("alerts: no job queue configured")
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var status string
		var channel *uuid.UUID
		err := tx.QueryRow(ctx, `select status, channel_id from alert_deliveries where tenant_id = $1 and environment_id = $2 and id = $3 for update`,
			env.TenantID, env.ID, id).Scan(&status, &channel)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("alert delivery %s: %w", id, ErrNotFound)
		}
		if err != nil {
			return err
		}
		if status != "delivered" && status != "dead" {
			return fmt.Errorf("%w: it is %s", ErrNotResendable, status) // still in progress
		}
		if channel == nil {
			return fmt.Errorf("%w: its channel was deleted", ErrNotResendable)
		}
		if _, err := tx.Exec(ctx, `update alert_deliveries set status = 'pending', resends = resends + 1, window_start = now(),
			last_error = '', delivered_at = null, updated_at = now() where id = $1`, id); err != nil {
			return err
		}
		if _, err := s.jobs.InsertManyTx(ctx, tx, []river.InsertManyParams{{Args: DeliverArgs{DeliveryID: id}}}); err != nil {
			return fmt.Errorf("alerts: queue delivery: %w", err)
		}
		return record(ctx, tx, env, "alert_delivery.resend", "alert_delivery", id.String(), nil, map[string]string{"status": "pending"})
	})
	if err != nil {
		return Delivery{}, err
	}
	return s.Delivery(ctx, env, id)
}

// TestResult is what a test message did.
type TestResult struct {
	Delivered bool   `json:"delivered"`
	Error     string `json:"error,omitempty"`
	Retryable bool   `json:"retryable,omitempty"`
	Status    int    `json:"status,omitempty"`
}

// TestChannel sends a test message now, outside the delivery queue, and reports what
// the destination said.
func (s *Service) TestChannel(ctx context.Context, env store.Environment, id uuid.UUID) (TestResult, error) {
	c, err := s.getChannel(ctx, s.pool, env, id, false, true)
	if err != nil {
		return TestResult{}, err
	}
	now := s.now().UTC()
	msg := channels.Message{DeliveryID: "test-" + uuid.NewString(), Title: "Limitr test alert",
		Text: fmt.Sprintf("This is a test message for the %q channel of environment %s.", c.Name, env.Name), OccurredAt: now,
		Fields: []channels.Field{{Label: "Channel", Value: c.Name}, {Label: "Environment", Value: env.Name}}}
	sendCtx, cancel := context.WithTimeout(ctx, sendTimeout)
	defer cancel()
	err = s.sender(c).Send(sendCtx, msg)
	if err == nil {
		return TestResult{Delivered: true}, nil
	}
	res := TestResult{Error: err.Error(), Retryable: channels.IsRetryable(err)}
	var de *channels.DeliveryError
	if errors.As(err, &de) {
		res.Status = de.Status
	}
	return res, nil
}
