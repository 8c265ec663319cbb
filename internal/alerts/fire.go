package alerts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/limitr/limitr/internal/store"
)

// DeliverArgs is the River job that sends one alert to one channel.
type DeliverArgs struct {
	DeliveryID uuid.UUID `json:"delivery_id"`
}

// Kind implements river.JobArgs.
func (DeliverArgs) Kind() string { return "limitr.alert_delivery" }

// InsertOpts puts deliveries on their own queue, so a slow destination never holds
// up billing or maintenance. River's own attempt limit is set far above what 24 hours
// of backoff needs: the delivery's age, not its attempt count, dead-letters it.
func (DeliverArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: Queue, MaxAttempts: 1000}
}

// Fired sums what a call to Observe or FireTx did.
type Fired struct {
	Alerts     int // new alerts delivered
	Superseded int // new alerts recorded without delivery (a higher threshold fired with them)
	Deliveries int
}

// Observe matches observations against the environment's enabled rules and fires
// what they raise, in one transaction.
func (s *Service) Observe(ctx context.Context, env store.Environment, obs []Observation) (Fired, error) {
	if len(obs) == 0 {
		return Fired{}, nil
	}
	var fired Fired
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		fired, err = s.FireTx(ctx, tx, env, obs)
		return err
	})
	return fired, err
}

// FireTx is Observe inside the caller's transaction: the alert and its deliveries
// commit with the change that caused them, or not at all.
func (s *Service) FireTx(ctx context.Context, tx pgx.Tx, env store.Environment, obs []Observation) (Fired, error) {
	kinds := make([]string, 0, 2)
	for _, o := range obs {
		if !slices.Contains(kinds, o.Kind) {
			kinds = append(kinds, o.Kind)
		}
	}
	rules, err := enabledRules(ctx, tx, env, kinds)
	if err != nil || len(rules) == 0 {
		return Fired{}, err
	}
	var fs []firing
	for i := range obs {
		for _, r := range rules {
			fs = append(fs, r.match(&obs[i])...)
		}
	}
	if len(fs) == 0 {
		return Fired{}, nil
	}
	if s.jobs == nil {
		return Fired{}, errors.New("alerts: no job queue configured: cannot deliver alerts")
	}
	return s.insertFirings(ctx, tx, env, fs)
}

// insertFirings stores the firings (only new ones survive the unique index) and, for
// each new one that is the highest its rule raised for its observation, a delivery
// and its job per channel.
func (s *Service) insertFirings(ctx context.Context, tx pgx.Tx, env store.Environment, fs []firing) (Fired, error) {
	b := &pgx.Batch{}
	for i, f := range fs {
		superseded := i+1 < len(fs) && fs[i+1].rule == f.rule && fs[i+1].obs == f.obs
		data, err := json.Marshal(f.obs.Data)
		if err != nil {
			return Fired{}, fmt.Errorf("alerts: data: %w", err)
		}
		var uid *uuid.UUID
		if f.obs.Customer.UID != uuid.Nil {
			u := f.obs.Customer.UID
			uid = &u
		}
		var period any
		if !f.obs.PeriodStart.IsZero() {
			period = f.obs.PeriodStart
		}
		b.Queue(`insert into alerts (tenant_id, environment_id, rule_id, rule_name, kind, dedup_key, customer_uid, customer_id,
				entitlement, threshold, period_start, title, summary, data, superseded)
			values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
			on conflict (rule_id, dedup_key) do nothing
			returning id`,
			env.TenantID, env.ID, f.rule.ID, f.rule.Name, f.rule.Kind, f.dedupKey, uid, f.obs.Customer.ID,
			f.obs.Entitlement, f.threshold, period, f.title, f.summary, data, superseded)
	}
	res := tx.SendBatch(ctx, b)
	type newAlert struct {
		id   uuid.UUID
		rule *Rule
	}
	var deliver []newAlert
	var out Fired
	for i, f := range fs {
		var id uuid.UUID
		err := res.QueryRow().Scan(&id)
		if errors.Is(err, pgx.ErrNoRows) {
			continue // fired before in this period
		}
		if err != nil {
			res.Close()
			return Fired{}, fmt.Errorf("alerts: insert alert: %w", err)
		}
		if i+1 < len(fs) && fs[i+1].rule == f.rule && fs[i+1].obs == f.obs {
			out.Superseded++
			continue
		}
		out.Alerts++
		deliver = append(deliver, newAlert{id: id, rule: f.rule})
	}
	if err := res.Close(); err != nil {
		return Fired{}, fmt.Errorf("alerts: insert alerts: %w", err)
	}
	if len(deliver) == 0 {
		return out, nil
	}
	var jobs []river.InsertManyParams
	for _, a := range deliver {
		rows, err := tx.Query(ctx, `insert into alert_deliveries (tenant_id, environment_id, alert_id, channel_id, channel_name, channel_kind, status)
			select c.tenant_id, c.environment_id, $3, c.id, c.name, c.kind, 'pending'
			from alert_channels c where c.tenant_id = $1 and c.environment_id = $2 and c.id = any($4)
			returning id`, env.TenantID, env.ID, a.id, a.rule.Channels)
		if err != nil {
			return Fired{}, fmt.Errorf("alerts: insert deliveries: %w", err)
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
		if err != nil {
			return Fired{}, fmt.Errorf("alerts: insert deliveries: %w", err)
		}
		for _, id := range ids {
			jobs = append(jobs, river.InsertManyParams{Args: DeliverArgs{DeliveryID: id}})
		}
	}
	if len(jobs) > 0 {
		if _, err := s.jobs.InsertManyTx(ctx, tx, jobs); err != nil {
			return Fired{}, fmt.Errorf("alerts: queue deliveries: %w", err)
		}
	}
	out.Deliveries = len(jobs)
	return out, nil
}

// enabledRules loads the environment's enabled rules of the given kinds, with their
// conditions compiled. A rule whose condition no longer compiles (it was valid when
// saved) is skipped and logged rather than blocking every other rule.
func enabledRules(ctx context.Context, db store.DBTX, env store.Environment, kinds []string) ([]*Rule, error) {
	rows, err := db.Query(ctx, `select `+ruleColumns+` from alert_rules
		where tenant_id = $1 and environment_id = $2 and enabled and kind = any($3) order by name`, env.TenantID, env.ID, kinds)
	if err != nil {
		return nil, fmt.Errorf("alerts: load rules: %w", err)
	}
	rules, err := pgx.CollectRows(rows, scanRule)
	if err != nil {
		return nil, fmt.Errorf("alerts: load rules: %w", err)
	}
	out := rules[:0]
	for _, r := range rules {
		if err := r.compile(); err == nil {
			out = append(out, r)
		}
	}
	return out, nil
}
