package store

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// Allowance leases (migrations/0015_fleet_leases.up.sql): the share of a meter's
// remaining allowance granted to each SDK instance in a period, and of a spend cap's
// (migrations/0016_customer_caps.up.sql: a cap's rows have an empty entitlement and the
// cap's key). internal/leases grants them; a leased usage batch commits against them
// (CommitLeasedUsage).
//
// Locks, always in this order so grants, batches and returns never deadlock: per meter
// period the advisory lock of LockLeaseMeter (grants only, meters in LeaseMeterLess
// order), then the instance's own rows (in the same order).

// LeaseMeter names one meter period of an instance's lease, its customer resolved; a
// cap period when CapKey is set (Entitlement is then empty).
type LeaseMeter struct {
	CustomerID  string // canonical id
	CustomerUID uuid.UUID
	Entitlement string
	CapKey      string
	PeriodStart time.Time
}

// LeaseMeterLess orders meters the way every lock on them is taken: customer id (bytes,
// as collate "C" sorts), entitlement, cap key, period start.
func LeaseMeterLess(a, b LeaseMeter) bool {
	if a.CustomerID != b.CustomerID {
		return a.CustomerID < b.CustomerID
	}
	if a.Entitlement != b.Entitlement {
		return a.Entitlement < b.Entitlement
	}
	if a.CapKey != b.CapKey {
		return a.CapKey < b.CapKey
	}
	return a.PeriodStart.Before(b.PeriodStart)
}

// LeaseAsk is one meter's validated ask: the limit, the cumulative target and what the
// instance used under its lease, as exact decimal strings.
type LeaseAsk struct {
	LeaseMeter
	Limit, Target, Used string
	// Need: when the grant leaves less room than this, the instance's rest is released
	// instead (it stopped using it before asking).
	Need string
}

// LeaseGrant is a meter's lease after an ask, as exact decimal strings.
type LeaseGrant struct {
	Granted, Committed, Available string
	// Previous is what the instance held granted before (0 without a lease of this
	// customer).
	Previous string
	// Remaining is the limit less the meter's committed usage; Holders the instances
	// with a live lease of the meter, this one included.
	Remaining string
	Holders   int
}

// leaseLockSQL serializes every grant of one meter period (environment, customer,
// entitlement, period start) or cap period (the cap key in place of the entitlement).
// A meter's key is the one earlier versions take, so replicas of both serialize on it.
const leaseLockSQL = `select pg_advisory_xact_lock(hashtextextended(
	'limitr:lease:' || $1::text || ':' || $2::text || ':' || $3::text || ':' ||
	case when $5::text = '' then '' else 'cap:' || $5::text || ':' end || $4::timestamptz::text, 0))`

// leaseOwnSQL locks the instance's row of the meter period, if it has one, before the
// grant reads: a batch of the instance committing meanwhile then lands entirely before
// the grant's snapshot or waits for the grant.
const leaseOwnSQL = `select 1 from fleet_leases where tenant_id = $1 and environment_id = $2 and customer_id = $3
	and entitlement = $4 and cap_key = $7 and period_start = $5 and instance_id = $6 for update`

// leaseGrantSQL computes and writes one grant in one statement (one snapshot, so the
// meter's committed usage U and the leases' committed parts are read consistently: a
// batch adds to both in one transaction):
//
//	reserved_others = Σ other instances' rows: live ? max(0, granted − committed) : max(0, used − committed)
//	used            = max(own.used, ask.used)
//	base            = own live ? own.granted : own.used (0 without a row)
//	max_granted     = limit − U − reserved_others + own.committed
//	granted         = max(base, min(target, max_granted)), or used when that leaves less room than need
//
// Rows of an earlier customer of the same id (another uid) count for nothing: the
// instance's own is replaced. For a cap ($14, the cap key, set; an empty entitlement),
// U is the cap period's committed consumption (cap_usage_totals) instead of the
// meter's.
const leaseGrantSQL = `with
	u as (
		select case when $14::text = '' then
			coalesce((select sum(units) from meter_aggregates
				where customer_uid = $4 and entitlement = $5 and period_start = $6), 0)
			+ coalesce((select sum(units) from usage_deltas
				where customer_uid = $4 and entitlement = $5 and period_start = $6 and aggregated_at is null), 0)
		else coalesce((select sum(units) from cap_usage_totals
				where customer_uid = $4 and cap_key = $14 and period_start = $6), 0) end as u
	),
	others as (
		select coalesce(sum(case when l.expires_at > $8 then greatest(0, l.granted - l.committed)
			else greatest(0, l.used - l.committed) end), 0) as r
		from fleet_leases l
		where l.tenant_id = $1 and l.environment_id = $2 and l.customer_id = $3 and l.entitlement = $5 and l.cap_key = $14
			and l.period_start = $6 and l.instance_id <> $7 and l.customer_uid = $4
	),
	own as (
		select granted, used, committed, expires_at > $8 as live from fleet_leases
		where tenant_id = $1 and environment_id = $2 and customer_id = $3 and entitlement = $5 and cap_key = $14
			and period_start = $6 and instance_id = $7 and customer_uid = $4
	),
	calc as (
		select greatest(coalesce(own.used, 0), $11::numeric) as used,
			coalesce(own.committed, 0) as committed,
			case when own.live then own.granted else coalesce(own.used, 0) end as base,
			$9::numeric - u.u - others.r + coalesce(own.committed, 0) as max_granted
		from u cross join others left join own on true
	),
	cand as (
		select used, committed, max_granted, greatest(base, least($10::numeric, max_granted)) as granted from calc
	),
	next as (
		select used, committed, max_granted,
			case when $13::numeric > 0 and granted - used < $13::numeric then used else granted end as granted from cand
	),
	ins as (
		insert into fleet_leases as l (tenant_id, environment_id, customer_id, customer_uid, entitlement, cap_key, period_start, instance_id,
			granted, used, committed, lim, expires_at, updated_at)
		select $1, $2, $3, $4, $5, $14, $6, $7, next.granted, next.used, 0, $9::numeric, $12, $8 from next
		on conflict (tenant_id, environment_id, customer_id, entitlement, cap_key, period_start, instance_id) do update set
			granted = excluded.granted,
			used = case when l.customer_uid = excluded.customer_uid then greatest(l.used, excluded.used) else excluded.used end,
			committed = case when l.customer_uid = excluded.customer_uid then l.committed else 0 end,
			customer_uid = excluded.customer_uid, lim = excluded.lim, expires_at = excluded.expires_at, updated_at = excluded.updated_at
		returning l.granted
	)
	select ins.granted::text, next.committed::text, greatest(0, next.max_granted - ins.granted)::text,
		coalesce((select granted from own), 0)::text,
		greatest(0, $9::numeric - (select u from u))::text,
		1 + (select count(*) from fleet_leases l where l.tenant_id = $1 and l.environment_id = $2 and l.customer_id = $3
			and l.entitlement = $5 and l.cap_key = $14 and l.period_start = $6 and l.instance_id <> $7 and l.customer_uid = $4 and l.expires_at > $8)
	from ins cross join next`

// GrantLeases grants the asks of one instance in tx, in the order given (the caller
// sorts them by LeaseMeterLess), at now, leases living until expiresAt. The grants
// come back in the asks' order. The statements go in one round trip; tx must hold no
// other lock on the meters.
func GrantLeases(ctx context.Context, tx pgx.Tx, env Environment, instanceID string, asks []LeaseAsk, now, expiresAt time.Time) ([]LeaseGrant, error) {
	if len(asks) == 0 {
		return nil, nil
	}
	b := &pgx.Batch{}
	for _, a := range asks {
		b.Queue(leaseLockSQL, env.ID, a.CustomerID, a.Entitlement, a.PeriodStart, a.CapKey)
		b.Queue(leaseOwnSQL, env.TenantID, env.ID, a.CustomerID, a.Entitlement, a.PeriodStart, instanceID, a.CapKey)
		b.Queue(leaseGrantSQL, env.TenantID, env.ID, a.CustomerID, a.CustomerUID, a.Entitlement, a.PeriodStart, instanceID,
			now, a.Limit, a.Target, a.Used, expiresAt, needOrZero(a.Need), a.CapKey)
	}
	br := tx.SendBatch(ctx, b)
	out := make([]LeaseGrant, len(asks))
	for i := range asks {
		if _, err := br.Exec(); err != nil {
			_ = br.Close()
			return nil, fmt.Errorf("store: lock a lease meter: %w", err)
		}
		rows, err := br.Query()
		if err == nil {
			for rows.Next() {
			}
			rows.Close()
			err = rows.Err()
		}
		if err != nil {
			_ = br.Close()
			return nil, fmt.Errorf("store: lock a lease: %w", err)
		}
		g := &out[i]
		if err := br.QueryRow().Scan(&g.Granted, &g.Committed, &g.Available, &g.Previous, &g.Remaining, &g.Holders); err != nil {
			_ = br.Close()
			return nil, fmt.Errorf("store: grant a lease: %w", err)
		}
		g.Granted, g.Committed, g.Available, g.Previous = trimDecimal(g.Granted), trimDecimal(g.Committed), trimDecimal(g.Available), trimDecimal(g.Previous)
		g.Remaining = trimDecimal(g.Remaining)
	}
	if err := br.Close(); err != nil {
		return nil, fmt.Errorf("store: grant leases: %w", err)
	}
	return out, nil
}

// ReturnLeases removes every lease an instance holds in the environment, and says how
// many there were.
func ReturnLeases(ctx context.Context, db DBTX, env Environment, instanceID string) (int64, error) {
	tag, err := db.Exec(ctx, `delete from fleet_leases where tenant_id = $1 and environment_id = $2 and instance_id = $3`,
		env.TenantID, env.ID, instanceID)
	if err != nil {
		return 0, fmt.Errorf("store: return leases: %w", err)
	}
	return tag.RowsAffected(), nil
}

// leasedUsageSQL adds a leased batch's delta units, and its cap uses, to the committed
// part of the instance's leases of the same meter periods (cap periods: an empty
// entitlement and the cap key), same customer incarnation, in one statement. Its rows
// are locked in LeaseMeterLess order, as grants lock them. Meters and caps without a
// lease are left alone.
const leasedUsageSQL = `with d as (
		select customer_id, customer_uid, entitlement, cap_key, period_start, sum(units) as units from (
			select customer_id, customer_uid, entitlement, ''::text as cap_key, period_start, units::numeric as units
			from unnest($4::text[], $5::uuid[], $6::text[], $7::timestamptz[], $8::text[]) as d(customer_id, customer_uid, entitlement, period_start, units)
			union all
			select customer_id, customer_uid, ''::text, cap_key, period_start, units::numeric
			from unnest($9::text[], $10::uuid[], $11::text[], $12::timestamptz[], $13::text[]) as c(customer_id, customer_uid, cap_key, period_start, units)
		) x
		group by 1, 2, 3, 4, 5
	), locked as materialized (
		select l.customer_id, l.entitlement, l.cap_key, l.period_start from fleet_leases l
		join d on d.customer_id = l.customer_id and d.customer_uid = l.customer_uid and d.entitlement = l.entitlement
			and d.cap_key = l.cap_key and d.period_start = l.period_start
		where l.tenant_id = $1 and l.environment_id = $2 and l.instance_id = $3
		order by l.customer_id collate "C", l.entitlement collate "C", l.cap_key collate "C", l.period_start
		for update of l
	)
	update fleet_leases l set committed = l.committed + d.units, updated_at = now()
	from d join locked k on k.customer_id = d.customer_id and k.entitlement = d.entitlement and k.cap_key = d.cap_key
		and k.period_start = d.period_start
	where l.tenant_id = $1 and l.environment_id = $2 and l.instance_id = $3 and l.customer_id = d.customer_id
		and l.customer_uid = d.customer_uid and l.entitlement = d.entitlement and l.cap_key = d.cap_key
		and l.period_start = d.period_start`

// leasedUsageArgs are leasedUsageSQL's arguments for b (summed per meter by the
// statement: one statement cannot update a row twice).
func leasedUsageArgs(b *UsageBatch) []any {
	customers := make([]string, len(b.Deltas))
	uids := make([]uuid.UUID, len(b.Deltas))
	ents := make([]string, len(b.Deltas))
	starts := make([]time.Time, len(b.Deltas))
	units := make([]string, len(b.Deltas))
	for i, d := range b.Deltas {
		customers[i], uids[i], ents[i], starts[i], units[i] = d.CustomerID, d.CustomerUID, d.Entitlement, d.PeriodStart, d.Units.String()
	}
	capCustomers := make([]string, len(b.CapUses))
	capUIDs := make([]uuid.UUID, len(b.CapUses))
	keys := make([]string, len(b.CapUses))
	capStarts := make([]time.Time, len(b.CapUses))
	capUnits := make([]string, len(b.CapUses))
	for i, u := range b.CapUses {
		capCustomers[i], capUIDs[i], keys[i], capStarts[i], capUnits[i] = u.CustomerID, u.CustomerUID, u.CapKey, u.PeriodStart, u.Units.String()
	}
	return []any{b.TenantID, b.EnvironmentID, b.InstanceID, customers, uids, ents, starts, units,
		capCustomers, capUIDs, keys, capStarts, capUnits}
}

// queueLeasedUsage queues leasedUsageSQL into a usage batch's commit pipeline.
func queueLeasedUsage(batch *pgx.Batch, b *UsageBatch) {
	if len(b.Deltas) > 0 || len(b.CapUses) > 0 {
		batch.Queue(leasedUsageSQL, leasedUsageArgs(b)...)
	}
}

// CommitLeasedUsage runs leasedUsageSQL for b in tx (usage ingest queues it into its
// commit pipeline instead).
func CommitLeasedUsage(ctx context.Context, tx pgx.Tx, b UsageBatch) error {
	if len(b.Deltas) == 0 && len(b.CapUses) == 0 {
		return nil
	}
	if _, err := tx.Exec(ctx, leasedUsageSQL, leasedUsageArgs(&b)...); err != nil {
		return fmt.Errorf("store: commit leased usage: %w", err)
	}
	return nil
}

func needOrZero(s string) string {
	if s == "" {
		return "0"
	}
	return s
}
