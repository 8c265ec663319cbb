package analytics

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// write stores a batch in the caller's transaction: the booked figures, then every
// rollup the changes add to.
func (b *batch) write(ctx context.Context, tx pgx.Tx) error {
	if err := b.writeMeters(ctx, tx); err != nil {
		return err
	}
	if err := b.writeFees(ctx, tx); err != nil {
		return err
	}
	return writeChanges(ctx, tx, b.env.ID, b.env.TenantID, b.changes, b.now)
}

func (b *batch) writeMeters(ctx context.Context, tx pgx.Tx) error {
	if len(b.meters) == 0 {
		return nil
	}
	n := len(b.meters)
	uids, ents := make([][16]byte, n), make([]string, n)
	starts, billStarts, billEnds := make([]time.Time, n), make([]time.Time, n), make([]time.Time, n)
	levels := make([]bool, n)
	units, gcs, gross, net, cost := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	calls, versions := make([]int64, n), make([]int32, n)
	for i, m := range b.meters {
		uids[i], ents[i], starts[i], billStarts[i], billEnds[i], levels[i] = [16]byte(m.uid), m.entitlement, m.periodStart, m.bill.Start, m.bill.End, m.level
		units[i], gcs[i], gross[i], net[i], cost[i] = m.units.String(), m.gc.String(), m.gross.String(), m.net.String(), m.cost.String()
		calls[i], versions[i] = m.calls, int32(m.version)
	}
	_, err := tx.Exec(ctx, `insert into analytics_meters as a (customer_uid, entitlement, period_start, bill_start, tenant_id, environment_id, bill_end,
			level, units, grant_covered, calls, gross, net, cost, version)
		select u.uid, u.ent, u.ps, u.bs, $1, $2, u.be, u.lvl, u.units, u.gc, u.calls, u.gross, u.net, u.cost, u.ver
		from unnest($3::uuid[], $4::text[], $5::timestamptz[], $6::timestamptz[], $7::timestamptz[], $8::bool[], $9::numeric[], $10::numeric[],
			$11::int8[], $12::numeric[], $13::numeric[], $14::numeric[], $15::int[])
			as u(uid, ent, ps, bs, be, lvl, units, gc, calls, gross, net, cost, ver)
		on conflict (customer_uid, entitlement, period_start, bill_start) do update
		set bill_end = excluded.bill_end, level = excluded.level, units = excluded.units, grant_covered = excluded.grant_covered,
		    calls = excluded.calls, gross = excluded.gross, net = excluded.net, cost = excluded.cost, version = excluded.version`,
		b.env.TenantID, b.env.ID, uids, ents, starts, billStarts, billEnds, levels, units, gcs, calls, gross, net, cost, versions)
	if err != nil {
		return fmt.Errorf("analytics: booked meters: %w", err)
	}
	return nil
}

func (b *batch) writeFees(ctx context.Context, tx pgx.Tx) error {
	if len(b.fees) == 0 {
		return nil
	}
	n := len(b.fees)
	uids, starts, ends, amounts := make([][16]byte, n), make([]time.Time, n), make([]time.Time, n), make([]string, n)
	for i, f := range b.fees {
		uids[i], starts[i], ends[i], amounts[i] = [16]byte(f.uid), f.bill.Start, f.bill.End, f.amount.String()
	}
	_, err := tx.Exec(ctx, `insert into analytics_fees (customer_uid, bill_start, environment_id, bill_end, amount)
		select u.uid, u.bs, $1, u.be, u.amount from unnest($2::uuid[], $3::timestamptz[], $4::timestamptz[], $5::numeric[]) as u(uid, bs, be, amount)
		on conflict (customer_uid, bill_start) do update set amount = excluded.amount, bill_end = excluded.bill_end`, b.env.ID, uids, starts, ends, amounts)
	if err != nil {
		return fmt.Errorf("analytics: booked fees: %w", err)
	}
	return nil
}

// columns are the rollups' summed columns as unnest arguments.
type columns struct {
	units, cost, ur, gr, fr, tr []string
	calls                       []int64
}

func (c *columns) add(a amounts) {
	c.units = append(c.units, a.units.String())
	c.cost = append(c.cost, a.cost.String())
	c.ur = append(c.ur, a.usageRevenue.String())
	c.gr = append(c.gr, a.grantRevenue.String())
	c.fr = append(c.fr, a.feeRevenue.String())
	c.tr = append(c.tr, a.topupRevenue.String())
	c.calls = append(c.calls, a.calls)
}

const sums = `units = r.units + excluded.units, calls = r.calls + excluded.calls, cost = r.cost + excluded.cost,
	usage_revenue = r.usage_revenue + excluded.usage_revenue, grant_revenue = r.grant_revenue + excluded.grant_revenue,
	fee_revenue = r.fee_revenue + excluded.fee_revenue, topup_revenue = r.topup_revenue + excluded.topup_revenue`

// writeChanges adds changes to every rollup: per customer by hour and by day, per
// group by hour and by day, and the customers' running totals.
func writeChanges(ctx context.Context, tx pgx.Tx, env, tenant uuid.UUID, changes []change, now time.Time) error {
	if len(changes) == 0 {
		return nil
	}
	for _, grain := range []struct {
		table string
		trunc func(time.Time) time.Time
	}{{"analytics_hourly", hour}, {"analytics_daily", day}} {
		if err := writeCustomerRollup(ctx, tx, grain.table, env, tenant, changes, grain.trunc); err != nil {
			return err
		}
	}
	for _, grain := range []struct {
		table string
		trunc func(time.Time) time.Time
	}{{"analytics_group_hourly", hour}, {"analytics_group_daily", day}} {
		if err := writeGroupRollup(ctx, tx, grain.table, env, changes, grain.trunc); err != nil {
			return err
		}
	}
	return writeRunningTotals(ctx, tx, env, changes, now)
}

func writeCustomerRollup(ctx context.Context, tx pgx.Tx, table string, env, tenant uuid.UUID, changes []change, trunc func(time.Time) time.Time) error {
	type key struct {
		at      time.Time
		uid     uuid.UUID
		ent     string
		version int
	}
	sum := map[key]*change{}
	var order []key
	for _, ch := range changes {
		k := key{trunc(ch.hour), ch.uid, ch.entitlement, ch.version}
		if s, ok := sum[k]; ok {
			s.amounts.add(ch.amounts)
			s.subject = ch.subject
			continue
		}
		c := ch
		sum[k] = &c
		order = append(order, k)
	}
	var at []time.Time
	var uids [][16]byte
	var ents, cids, plans, types []string
	var versions []int32
	var cols columns
	for _, k := range order {
		s := sum[k]
		at, uids, ents, versions = append(at, k.at), append(uids, [16]byte(k.uid)), append(ents, k.ent), append(versions, int32(k.version))
		cids, plans, types = append(cids, s.customerID), append(plans, s.plan), append(types, s.custTy)
		cols.add(s.amounts)
	}
	_, err := tx.Exec(ctx, `insert into `+table+` as r (environment_id, tenant_id, bucket, customer_uid, entitlement, version, customer_id, plan, customer_type,
			units, calls, cost, usage_revenue, grant_revenue, fee_revenue, topup_revenue)
		select $1::uuid, $2::uuid, u.at, u.uid, u.ent, u.ver, u.cid, u.plan, u.ty, u.units, u.calls, u.cost, u.ur, u.gr, u.fr, u.tr
		from unnest($3::timestamptz[], $4::uuid[], $5::text[], $6::int[], $7::text[], $8::text[], $9::text[],
			$10::numeric[], $11::int8[], $12::numeric[], $13::numeric[], $14::numeric[], $15::numeric[], $16::numeric[])
			as u(at, uid, ent, ver, cid, plan, ty, units, calls, cost, ur, gr, fr, tr)
		order by 1, 2, 3, 4
		on conflict (environment_id, bucket, customer_uid, entitlement, version) do update
		set `+sums+`, plan = excluded.plan, customer_type = excluded.customer_type`,
		env, tenant, at, uids, ents, versions, cids, plans, types, cols.units, cols.calls, cols.cost, cols.ur, cols.gr, cols.fr, cols.tr)
	if err != nil {
		return fmt.Errorf("analytics: %s: %w", table, err)
	}
	return nil
}

func writeGroupRollup(ctx context.Context, tx pgx.Tx, table string, env uuid.UUID, changes []change, trunc func(time.Time) time.Time) error {
	type key struct {
		at            time.Time
		plan, ty, ent string
	}
	sum := map[key]*amounts{}
	var order []key
	for _, ch := range changes {
		k := key{trunc(ch.hour), ch.plan, ch.custTy, ch.entitlement}
		if s, ok := sum[k]; ok {
			s.add(ch.amounts)
			continue
		}
		a := ch.amounts
		sum[k] = &a
		order = append(order, k)
	}
	var at []time.Time
	var plans, types, ents []string
	var cols columns
	for _, k := range order {
		at, plans, types, ents = append(at, k.at), append(plans, k.plan), append(types, k.ty), append(ents, k.ent)
		cols.add(*sum[k])
	}
	_, err := tx.Exec(ctx, `insert into `+table+` as r (environment_id, bucket, plan, customer_type, entitlement,
			units, calls, cost, usage_revenue, grant_revenue, fee_revenue, topup_revenue)
		select $1::uuid, u.at, u.plan, u.ty, u.ent, u.units, u.calls, u.cost, u.ur, u.gr, u.fr, u.tr
		from unnest($2::timestamptz[], $3::text[], $4::text[], $5::text[],
			$6::numeric[], $7::int8[], $8::numeric[], $9::numeric[], $10::numeric[], $11::numeric[], $12::numeric[])
			as u(at, plan, ty, ent, units, calls, cost, ur, gr, fr, tr)
		order by 1, 2, 3, 4
		on conflict (environment_id, bucket, plan, customer_type, entitlement) do update set `+sums,
		env, at, plans, types, ents, cols.units, cols.calls, cols.cost, cols.ur, cols.gr, cols.fr, cols.tr)
	if err != nil {
		return fmt.Errorf("analytics: %s: %w", table, err)
	}
	return nil
}

// writeRunningTotals adds each customer's changes to its running totals of the day
// of the change and every later day. Rows are dense from a customer's first booking
// through today, so it first creates the missing ones, carrying the latest totals
// before them forward.
func writeRunningTotals(ctx context.Context, tx pgx.Tx, env uuid.UUID, changes []change, now time.Time) error {
	type key struct {
		uid uuid.UUID
		day time.Time
	}
	sum := map[key]*change{}
	var order []key
	for _, ch := range changes {
		k := key{ch.uid, day(ch.hour)}
		if s, ok := sum[k]; ok {
			s.amounts.add(ch.amounts)
			s.subject = ch.subject
			continue
		}
		c := ch
		sum[k] = &c
		order = append(order, k)
	}
	var uids [][16]byte
	var days []time.Time
	var cids, plans, types []string
	var cols columns
	for _, k := range order {
		s := sum[k]
		uids, days = append(uids, [16]byte(k.uid)), append(days, k.day)
		cids, plans, types = append(cids, s.customerID), append(plans, s.plan), append(types, s.custTy)
		cols.add(s.amounts)
	}
	if _, err := tx.Exec(ctx, `insert into analytics_customer_days (environment_id, day, customer_uid, customer_id, plan, customer_type,
			calls, cost, usage_revenue, grant_revenue, fee_revenue, topup_revenue, rank_revenue, rank_cost)
		select $1::uuid, g.day::date, u.uid, u.cid, u.plan, u.ty, coalesce(l.calls, 0), coalesce(l.cost, 0), coalesce(l.usage_revenue, 0),
		       coalesce(l.grant_revenue, 0), coalesce(l.fee_revenue, 0), coalesce(l.topup_revenue, 0), coalesce(l.rank_revenue, 0), coalesce(l.rank_cost, 0)
		from unnest($2::uuid[], $3::date[], $4::text[], $5::text[], $6::text[]) as u(uid, day, cid, plan, ty)
		left join lateral (select * from analytics_customer_days x
			where x.environment_id = $1 and x.customer_uid = u.uid and x.day < u.day order by x.day desc limit 1) l on true
		cross join lateral generate_series(coalesce(l.day + 1, u.day), greatest(u.day, $7::date), interval '1 day') g(day)
		order by 2, 3
		on conflict (environment_id, day, customer_uid) do nothing`,
		env, uids, days, cids, plans, types, day(now)); err != nil {
		return fmt.Errorf("analytics: running totals: %w", err)
	}
	_, err := tx.Exec(ctx, `update analytics_customer_days t
		set calls = t.calls + s.calls, cost = t.cost + s.cost, usage_revenue = t.usage_revenue + s.ur, grant_revenue = t.grant_revenue + s.gr,
		    fee_revenue = t.fee_revenue + s.fr, topup_revenue = t.topup_revenue + s.tr, plan = s.plan, customer_type = s.ty,
		    rank_revenue = ((t.usage_revenue + s.ur) - (t.grant_revenue + s.gr) + (t.fee_revenue + s.fr) + (t.topup_revenue + s.tr))::float8,
		    rank_cost = (t.cost + s.cost)::float8
		from (select x.day, x.customer_uid, sum(u.calls) as calls, sum(u.cost) as cost, sum(u.ur) as ur, sum(u.gr) as gr,
		             sum(u.fr) as fr, sum(u.tr) as tr, max(u.plan) as plan, max(u.ty) as ty
		      from unnest($2::uuid[], $3::date[], $4::text[], $5::text[], $6::int8[], $7::numeric[], $8::numeric[], $9::numeric[], $10::numeric[], $11::numeric[])
		           as u(uid, day, plan, ty, calls, cost, ur, gr, fr, tr)
		      join analytics_customer_days x on x.environment_id = $1 and x.customer_uid = u.uid and x.day >= u.day
		      group by x.day, x.customer_uid) s
		where t.environment_id = $1 and t.day = s.day and t.customer_uid = s.customer_uid`,
		env, uids, days, plans, types, cols.calls, cols.cost, cols.ur, cols.gr, cols.fr, cols.tr)
	if err != nil {
		return fmt.Errorf("analytics: running totals: %w", err)
	}
	return nil
}

// carryForward gives every customer with running totals a row for each day through
// today, so a window's totals are always the difference of two existing rows.
func carryForward(ctx context.Context, tx pgx.Tx, env uuid.UUID, now time.Time) error {
	today := day(now)
	var through *time.Time
	if err := tx.QueryRow(ctx, `select through_day from analytics_carried where environment_id = $1`, env).Scan(&through); err != nil && err != pgx.ErrNoRows {
		return fmt.Errorf("analytics: carried: %w", err)
	}
	if through != nil {
		for d := through.AddDate(0, 0, 1); !d.After(today); d = d.AddDate(0, 0, 1) {
			if _, err := tx.Exec(ctx, `insert into analytics_customer_days (environment_id, day, customer_uid, customer_id, plan, customer_type,
					calls, cost, usage_revenue, grant_revenue, fee_revenue, topup_revenue, rank_revenue, rank_cost)
				select environment_id, $2, customer_uid, customer_id, plan, customer_type, calls, cost, usage_revenue, grant_revenue, fee_revenue,
				       topup_revenue, rank_revenue, rank_cost
				from analytics_customer_days where environment_id = $1 and day = $3
				on conflict (environment_id, day, customer_uid) do nothing`, env, d, d.AddDate(0, 0, -1)); err != nil {
				return fmt.Errorf("analytics: carry to %s: %w", d.Format(time.DateOnly), err)
			}
		}
	}
	_, err := tx.Exec(ctx, `insert into analytics_carried (environment_id, through_day) values ($1, $2)
		on conflict (environment_id) do update set through_day = greatest(analytics_carried.through_day, excluded.through_day)`, env, today)
	if err != nil {
		return fmt.Errorf("analytics: carried: %w", err)
	}
	return nil
}
