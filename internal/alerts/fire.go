package alerts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

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
// and its job per channel. It is three statements whatever the number of firings: an
// evaluation pass observes hundreds of customers at once, most of whose firings exist
// already, and a round trip per alert or delivery made firing the bottleneck.
func (s *Service) insertFirings(ctx context.Context, tx pgx.Tx, env store.Environment, fs []firing) (Fired, error) {
	cols, err := columnsOf(fs)
	if err != nil {
		return Fired{}, err
	}
	rows, err := tx.Query(ctx, `insert into alerts (tenant_id, environment_id, rule_id, rule_name, kind, dedup_key, customer_uid, customer_id,
			entitlement, threshold, period_start, title, summary, data, superseded)
		select $1, $2, f.* from unnest($3::uuid[], $4::text[], $5::text[], $6::text[], $7::uuid[], $8::text[], $9::text[], $10::text[],
			$11::timestamptz[], $12::text[], $13::text[], $14::jsonb[], $15::bool[]) as f
		on conflict (rule_id, dedup_key) do nothing
		returning id, rule_id, dedup_key`,
		env.TenantID, env.ID, cols.rules, cols.names, cols.kinds, cols.keys, cols.uids, cols.customers, cols.ents, cols.thresholds,
		cols.periods, cols.titles, cols.summaries, cols.data, cols.superseded)
	if err != nil {
		return Fired{}, fmt.Errorf("alerts: insert alerts: %w", err)
	}
	type key struct {
		rule uuid.UUID
		key  string
	}
	inserted := map[key]uuid.UUID{}
	for rows.Next() {
		var id uuid.UUID
		var k key
		if err := rows.Scan(&id, &k.rule, &k.key); err != nil {
			rows.Close()
			return Fired{}, fmt.Errorf("alerts: insert alerts: %w", err)
		}
		inserted[k] = id
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return Fired{}, fmt.Errorf("alerts: insert alerts: %w", err)
	}
	var out Fired
	var alertIDs, channelIDs []uuid.UUID
	for i, f := range fs {
		id, ok := inserted[key{f.rule.ID, f.dedupKey}]
		if !ok {
			continue // fired before in this period
		}
		delete(inserted, key{f.rule.ID, f.dedupKey}) // a key raised twice is one alert
		if cols.superseded[i] {
			out.Superseded++
			continue
		}
		out.Alerts++
		for _, ch := range f.rule.Channels {
			alertIDs, channelIDs = append(alertIDs, id), append(channelIDs, ch)
		}
	}
	if len(alertIDs) == 0 {
		return out, nil
	}
	return s.insertDeliveries(ctx, tx, env, out, alertIDs, channelIDs)
}

// firingColumns are firings as the columns of the alerts they insert.
type firingColumns struct {
	rules                                                              []uuid.UUID
	names, kinds, keys, customers, ents, thresholds, titles, summaries []string
	uids                                                               []*uuid.UUID
	periods                                                            []*time.Time
	data                                                               [][]byte
	superseded                                                         []bool
}

// columnsOf lays firings out as columns. A firing followed by a higher one of the same
// rule and observation is superseded.
func columnsOf(fs []firing) (firingColumns, error) {
	var cols firingColumns
	n := len(fs)
	for i, f := range fs {
		data, err := json.Marshal(f.obs.Data)
		if err != nil {
			return cols, fmt.Errorf("alerts: data: %w", err)
		}
		var uid *uuid.UUID
		if f.obs.Customer.UID != uuid.Nil {
			u := f.obs.Customer.UID
			uid = &u
		}
		var period *time.Time
		if !f.obs.PeriodStart.IsZero() {
			p := f.obs.PeriodStart
			period = &p
		}
		cols.rules = append(cols.rules, f.rule.ID)
		cols.names, cols.kinds, cols.keys = append(cols.names, f.rule.Name), append(cols.kinds, f.rule.Kind), append(cols.keys, f.dedupKey)
		cols.uids, cols.customers, cols.ents = append(cols.uids, uid), append(cols.customers, f.obs.Customer.ID), append(cols.ents, f.obs.Entitlement)
		cols.thresholds, cols.periods = append(cols.thresholds, f.threshold), append(cols.periods, period)
		cols.titles, cols.summaries, cols.data = append(cols.titles, f.title), append(cols.summaries, f.summary), append(cols.data, data)
		cols.superseded = append(cols.superseded, i+1 < n && fs[i+1].rule == f.rule && fs[i+1].obs == f.obs)
	}
	return cols, nil
}

// insertDeliveries creates the deliveries of (alert, channel) pairs, for the channels
// that still exist, and queues a job for each.
func (s *Service) insertDeliveries(ctx context.Context, tx pgx.Tx, env store.Environment, out Fired, alertIDs, channelIDs []uuid.UUID) (Fired, error) {
	rows, err := tx.Query(ctx, `insert into alert_deliveries (tenant_id, environment_id, alert_id, channel_id, channel_name, channel_kind, status)
		select c.tenant_id, c.environment_id, p.alert_id, c.id, c.name, c.kind, 'pending'
		from unnest($3::uuid[], $4::uuid[]) as p(alert_id, channel_id)
		join alert_channels c on c.id = p.channel_id and c.tenant_id = $1 and c.environment_id = $2
		returning id`, env.TenantID, env.ID, alertIDs, channelIDs)
	if err != nil {
		return Fired{}, fmt.Errorf("alerts: insert deliveries: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil {
		return Fired{}, fmt.Errorf("alerts: insert deliveries: %w", err)
	}
	if len(ids) == 0 {
		return out, nil
	}
	jobs := make([]river.InsertManyParams, len(ids))
	for i, id := range ids {
		jobs[i] = river.InsertManyParams{Args: DeliverArgs{DeliveryID: id}}
	}
	if _, err := s.jobs.InsertManyTx(ctx, tx, jobs); err != nil {
		return Fired{}, fmt.Errorf("alerts: queue deliveries: %w", err)
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
