package analytics

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/limitr/limitr/internal/billing"
	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/store"
)

// meterKey names what is booked for one meter period (per billing period for levels).
type meterKey struct {
	uid         uuid.UUID
	entitlement string
	periodStart int64
	billStart   int64
}

// booked is what was booked for a meter period so far.
type booked struct {
	units, grantCovered, gross, net, cost num.Dec
	calls                                 int64
	version                               int
	billEnd                               time.Time
}

// committed is a meter period as aggregation committed it.
type committed struct {
	billing.MeterUsage
	calls     int64
	updatedAt time.Time
}

// Booked counts what a booking changed.
type Booked struct {
	// Customers were valued; Meters and Fees are the booked figures rewritten;
	// Changes the changes added to the rollups.
	Customers, Meters, Fees, Changes int
	// Aggregated are when the meters whose usage changed were aggregated (their
	// updated_at): the booking lag is measured from them.
	Aggregated []time.Time
}

// Book books the changes of the customers uids of env: what their meters and plan
// fees are worth now against what was booked for them. It is idempotent: booking a
// customer whose figures have not changed writes nothing.
func (s *Service) Book(ctx context.Context, env store.Environment, uids []uuid.UUID) (Booked, error) {
	var out Booked
	if len(uids) == 0 {
		return out, nil
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `select pg_advisory_xact_lock($1)`, lockKey(env.ID)); err != nil {
			return fmt.Errorf("analytics: lock: %w", err)
		}
		if err := carryForward(ctx, tx, env.ID, s.now()); err != nil {
			return err
		}
		val, err := s.valuer.Valuation(ctx, tx, env)
		if err != nil {
			return err
		}
		arr := make([][16]byte, len(uids))
		for i, u := range uids {
			arr[i] = u
		}
		meters, err := loadCommitted(ctx, tx, arr, s.now())
		if err != nil {
			return err
		}
		prior, err := loadBooked(ctx, tx, arr)
		if err != nil {
			return err
		}
		usage := make(map[uuid.UUID][]billing.MeterUsage, len(meters))
		for uid, ms := range meters {
			for _, m := range ms {
				usage[uid] = append(usage[uid], m.MeterUsage)
			}
		}
		values, err := val.Customers(ctx, uids, usage)
		if err != nil {
			return err
		}
		fees, err := loadFees(ctx, tx, arr)
		if err != nil {
			return err
		}
		b := newBatch(env, s.now())
		for _, cv := range values {
			b.customer(val, cv, meters[cv.Customer.UID], prior, fees)
		}
		out = Booked{Customers: len(values), Meters: len(b.meters), Fees: len(b.fees), Changes: len(b.changes), Aggregated: b.aggregated}
		return b.write(ctx, tx)
	})
	if err != nil {
		return Booked{}, fmt.Errorf("analytics: book: %w", err)
	}
	return out, nil
}

// loadCommitted reads the customers' committed meter periods of the last 400 days
// (the longest reset and a month) and their levels, which never reset.
func loadCommitted(ctx context.Context, tx pgx.Tx, uids [][16]byte, now time.Time) (map[uuid.UUID][]committed, error) {
	rows, err := tx.Query(ctx, `select customer_uid, entitlement, period_start, units::text, grant_covered::text, overhead::text, calls, updated_at
		from meter_aggregates where customer_uid = any($1) and period_start > $2
		order by customer_uid, entitlement, period_start`, uids, now.AddDate(0, 0, -400))
	if err != nil {
		return nil, fmt.Errorf("analytics: meters: %w", err)
	}
	out := map[uuid.UUID][]committed{}
	for rows.Next() {
		var uid uuid.UUID
		var m committed
		var units, granted, overhead string
		if err := rows.Scan(&uid, &m.Entitlement, &m.PeriodStart, &units, &granted, &overhead, &m.calls, &m.updatedAt); err != nil {
			rows.Close()
			return nil, fmt.Errorf("analytics: meters: %w", err)
		}
		var c num.Calc
		m.Units, m.GrantCovered, m.Overhead = c.Parse(units), c.Parse(granted), c.Parse(overhead)
		if c.Err != nil {
			rows.Close()
			return nil, fmt.Errorf("analytics: meter %s of %s: %w", m.Entitlement, uid, c.Err)
		}
		out[uid] = append(out[uid], m)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("analytics: meters: %w", err)
	}
	return out, nil
}

func loadBooked(ctx context.Context, tx pgx.Tx, uids [][16]byte) (map[meterKey]booked, error) {
	rows, err := tx.Query(ctx, `select customer_uid, entitlement, period_start, bill_start, bill_end, units::text, grant_covered::text,
			calls, gross::text, net::text, cost::text, version
		from analytics_meters where customer_uid = any($1)`, uids)
	if err != nil {
		return nil, fmt.Errorf("analytics: booked meters: %w", err)
	}
	out := map[meterKey]booked{}
	for rows.Next() {
		var k meterKey
		var b booked
		var ps, bs time.Time
		var units, granted, gross, net, cost string
		if err := rows.Scan(&k.uid, &k.entitlement, &ps, &bs, &b.billEnd, &units, &granted, &b.calls, &gross, &net, &cost, &b.version); err != nil {
			rows.Close()
			return nil, fmt.Errorf("analytics: booked meters: %w", err)
		}
		k.periodStart, k.billStart = ps.UnixNano(), bs.UnixNano()
		var c num.Calc
		b.units, b.grantCovered, b.gross, b.net, b.cost = c.Parse(units), c.Parse(granted), c.Parse(gross), c.Parse(net), c.Parse(cost)
		if c.Err != nil {
			rows.Close()
			return nil, fmt.Errorf("analytics: booked meter %s of %s: %w", k.entitlement, k.uid, c.Err)
		}
		out[k] = b
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("analytics: booked meters: %w", err)
	}
	return out, nil
}

type feeKey struct {
	uid       uuid.UUID
	billStart int64
}

func loadFees(ctx context.Context, tx pgx.Tx, uids [][16]byte) (map[feeKey]num.Dec, error) {
	rows, err := tx.Query(ctx, `select customer_uid, bill_start, amount::text from analytics_fees where customer_uid = any($1)`, uids)
	if err != nil {
		return nil, fmt.Errorf("analytics: booked fees: %w", err)
	}
	out := map[feeKey]num.Dec{}
	for rows.Next() {
		var k feeKey
		var at time.Time
		var amount string
		if err := rows.Scan(&k.uid, &at, &amount); err != nil {
			rows.Close()
			return nil, fmt.Errorf("analytics: booked fees: %w", err)
		}
		k.billStart = at.UnixNano()
		d, err := num.Parse(amount)
		if err != nil {
			rows.Close()
			return nil, fmt.Errorf("analytics: booked fee of %s: %w", k.uid, err)
		}
		out[k] = d
	}
	rows.Close()
	return out, rows.Err()
}
