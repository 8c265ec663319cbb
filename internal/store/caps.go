package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/wire"
)

// Customer spend caps (migrations/0016_customer_caps.up.sql): a customer's caps, by
// id, in customer_caps, each under a key the server minted (new on a reset); what SDKs
// consumed of each key, per customer uid and cap period, in cap_usage_totals (added by
// CommitUsageBatch).

// CustomerCap is a customer's cap as the API returns it (wire.CustomerCap).
type CustomerCap = wire.CustomerCap

// capUsagePeriods is how many of a key's periods a customer record carries.
const capUsagePeriods = 2

// CapConfig is the part of a cap's configuration kept in customer_caps.config.
type CapConfig struct {
	IgnoreGrants     bool     `json:"ignore_grants,omitempty"`
	OverageOnly      bool     `json:"overage_only,omitempty"`
	ObserveOnly      bool     `json:"observe_only,omitempty"`
	OverheadCost     bool     `json:"overhead_cost,omitempty"`
	FollowDecrements bool     `json:"follow_decrements,omitempty"`
	HardTrailing     bool     `json:"hard_trailing,omitempty"`
	Shared           bool     `json:"shared,omitempty"`
	SharedWith       []string `json:"shared_with,omitempty"`
	Scope            []string `json:"scope,omitempty"`
	Resets           bool     `json:"resets,omitempty"`
	ResetInc         string   `json:"reset_inc,omitempty"`
	ResetSch         string   `json:"reset_sch,omitempty"`
}

// NewCap is a cap's configuration to write. Key is used when the cap is created (a
// replaced cap keeps its key).
type NewCap struct {
	ID        string
	Key       string
	Credit    string
	Value     num.Dec
	Config    CapConfig
	ExpiresAt *time.Time
	SetBy     *uuid.UUID
}

// CapUse is what an SDK instance consumed of one cap key in one cap period.
type CapUse struct {
	CustomerID  string
	CustomerUID uuid.UUID
	CapKey      string
	PeriodStart time.Time
	Units       num.Dec
}

// PutCap creates a customer's cap or replaces its configuration (the caller holds the
// customer's row lock); a replaced cap keeps its key, created_at and reset_at, so what
// was consumed under the key still counts. created reports a new cap.
func PutCap(ctx context.Context, tx DBTX, tenantID, envID uuid.UUID, c Customer, cp NewCap) (created bool, err error) {
	cfg, err := json.Marshal(cp.Config)
	if err != nil {
		return false, err
	}
	err = tx.QueryRow(ctx, `insert into customer_caps as k (tenant_id, environment_id, customer_id, customer_uid, cap_id, cap_key,
			credit, value, config, expires_at, set_by)
		values ($1, $2, $3, $4, $5, $6, $7, cast($8::text as numeric), $9, $10, $11)
		on conflict (tenant_id, environment_id, customer_id, cap_id) do update set
			credit = excluded.credit, value = excluded.value, config = excluded.config,
			expires_at = excluded.expires_at, set_by = excluded.set_by
		returning xmax = 0`,
		tenantID, envID, c.ID, c.UID, cp.ID, cp.Key, cp.Credit, cp.Value.String(), cfg, cp.ExpiresAt, cp.SetBy).Scan(&created)
	if err != nil {
		return false, fmt.Errorf("store: put cap: %w", err)
	}
	return created, nil
}

// ResetCap gives a customer's cap a new key and starts its first period now: what the
// old key consumed no longer counts against it. ErrNotFound when there is no such cap.
func ResetCap(ctx context.Context, tx DBTX, tenantID, envID uuid.UUID, customerID, capID, key string, setBy *uuid.UUID) error {
	tag, err := tx.Exec(ctx, `update customer_caps set cap_key = $5, reset_at = now(), set_by = $6
		where tenant_id = $1 and environment_id = $2 and customer_id = $3 and cap_id = $4`,
		tenantID, envID, customerID, capID, key, setBy)
	if err != nil {
		return fmt.Errorf("store: reset cap: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("cap %q of customer %q: %w", capID, customerID, ErrNotFound)
	}
	return nil
}

// DeleteCap removes a customer's cap (what its key consumed stays recorded);
// ErrNotFound when there is no such cap.
func DeleteCap(ctx context.Context, tx DBTX, tenantID, envID uuid.UUID, customerID, capID string) error {
	tag, err := tx.Exec(ctx, `delete from customer_caps where tenant_id = $1 and environment_id = $2 and customer_id = $3 and cap_id = $4`,
		tenantID, envID, customerID, capID)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("cap %q of customer %q: %w", capID, customerID, ErrNotFound)
	}
	return nil
}

// loadCaps fills the caps of customers (indexed by id in at), each with the committed
// consumption of its key's last two periods, newest first, in one query.
func loadCaps(ctx context.Context, db DBTX, tenantID, envID uuid.UUID, ids []string, at map[string]int, cs []Customer) error {
	rows, err := db.Query(ctx, `select k.customer_id, k.cap_id, k.cap_key, k.credit, k.value::text, k.config, k.expires_at,
			k.created_at, k.reset_at, u.starts, u.units
		from customer_caps k
		left join lateral (
			select array_agg(t.period_start order by t.period_start desc) as starts,
				array_agg(t.units::text order by t.period_start desc) as units
			from (select period_start, units from cap_usage_totals
				where customer_uid = k.customer_uid and cap_key = k.cap_key
				order by period_start desc limit $4) t
		) u on true
		where k.tenant_id = $1 and k.environment_id = $2 and k.customer_id = any($3)
		order by k.customer_id, k.cap_id collate "C"`, tenantID, envID, ids, capUsagePeriods)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var cid, value string
		var cfgRaw []byte
		var starts []time.Time
		var units []string
		var expires *time.Time
		k := CustomerCap{}
		if err := rows.Scan(&cid, &k.ID, &k.Key, &k.Credit, &value, &cfgRaw, &expires, &k.CreatedAt, &k.ResetAt, &starts, &units); err != nil {
			return err
		}
		var cfg CapConfig
		if err := json.Unmarshal(cfgRaw, &cfg); err != nil {
			return fmt.Errorf("store: cap %q config: %w", k.ID, err)
		}
		k.Value = json.Number(trimDecimal(value))
		k.IgnoreGrants, k.OverageOnly, k.ObserveOnly, k.OverheadCost = cfg.IgnoreGrants, cfg.OverageOnly, cfg.ObserveOnly, cfg.OverheadCost
		k.FollowDecrements, k.HardTrailing, k.Shared = cfg.FollowDecrements, cfg.HardTrailing, cfg.Shared
		k.SharedWith, k.Scope = nonNil(cfg.SharedWith), nonNil(cfg.Scope)
		k.Resets, k.ResetInc, k.ResetSch = cfg.Resets, cfg.ResetInc, cfg.ResetSch
		if expires != nil {
			e := expires.UTC()
			k.ExpiresAt = &e
		}
		k.CreatedAt, k.ResetAt = k.CreatedAt.UTC(), k.ResetAt.UTC()
		k.Usage = make([]wire.CapUsage, 0, len(starts))
		for i := range starts {
			if i < len(units) {
				k.Usage = append(k.Usage, wire.CapUsage{PeriodStart: starts[i].UTC(), Units: trimDecimal(units[i])})
			}
		}
		c := &cs[at[cid]]
		c.Caps = append(c.Caps, k)
	}
	return rows.Err()
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// queueCapUses adds the batch's cap uses to cap_usage_totals.
func queueCapUses(batch *pgx.Batch, b *UsageBatch) {
	queueKeyedTotals(batch, b, "cap_usage_totals", "cap_key", len(b.CapUses), func(i int) keyedTotal {
		u := &b.CapUses[i]
		return keyedTotal{u.CustomerID, u.CustomerUID, u.CapKey, u.PeriodStart, u.Units.String()}
	})
}
