package analytics

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/limitr/limitr/internal/billing"
	"github.com/limitr/limitr/internal/billing/money"
	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/store"
)

// Usage is the answer to a UsageQuery: one series per entitlement.
type Usage struct {
	Customer string        `json:"customer,omitempty"`
	Currency string        `json:"currency"`
	Interval string        `json:"interval"`
	From     time.Time     `json:"from"`
	To       time.Time     `json:"to"`
	Series   []UsageSeries `json:"series"`
}

// UsageSeries is an entitlement's usage per interval.
type UsageSeries struct {
	Entitlement string       `json:"entitlement"`
	Points      []UsagePoint `json:"points"`
}

// UsagePoint is one interval's usage: units (exact decimal string), calls and the
// provider's cost (rounded to the currency).
type UsagePoint struct {
	Start time.Time `json:"start"`
	Units string    `json:"units"`
	Calls int64     `json:"calls"`
	Cost  string    `json:"cost"`
}

// Usage answers a usage query from the rollups: a customer's from its own, every
// customer's from the group rollups.
func (s *Service) Usage(ctx context.Context, env store.Environment, q UsageQuery) (Usage, error) {
	if err := q.Validate(s.now()); err != nil {
		return Usage{}, err
	}
	set, err := s.valuer.Settings(ctx, env)
	if err != nil {
		return Usage{}, err
	}
	table, where, args := "analytics_group_daily", "", []any{env.ID, q.From, q.To, q.Interval}
	if q.Customer != "" {
		table, where = "analytics_daily", " and customer_id = $5"
		args = append(args, q.Customer)
	}
	if q.Interval == Hour {
		table = strings.Replace(table, "daily", "hourly", 1)
	}
	if q.Entitlement != "" {
		args = append(args, q.Entitlement)
		where += fmt.Sprintf(" and entitlement = $%d", len(args))
	}
	rows, err := s.pool.Query(ctx, `select entitlement, date_trunc($4, bucket, 'UTC'), sum(units)::text, sum(calls)::int8, sum(cost)::text
		from `+table+` where environment_id = $1 and bucket >= $2 and bucket < $3 and entitlement <> ''`+where+`
		group by 1, 2 having sum(calls) <> 0 or sum(units) <> 0 or sum(cost) <> 0 order by 1, 2`, args...)
	if err != nil {
		return Usage{}, fmt.Errorf("analytics: usage: %w", err)
	}
	out := Usage{Customer: q.Customer, Currency: set.Currency, Interval: q.Interval, From: q.From, To: q.To, Series: []UsageSeries{}}
	for rows.Next() {
		var ent, units, cost string
		var p UsagePoint
		if err := rows.Scan(&ent, &p.Start, &units, &p.Calls, &cost); err != nil {
			rows.Close()
			return Usage{}, fmt.Errorf("analytics: usage: %w", err)
		}
		p.Start = p.Start.UTC()
		var c num.Calc
		p.Units = c.Parse(units).Trim(0).String()
		costD := c.Parse(cost)
		if c.Err != nil {
			rows.Close()
			return Usage{}, fmt.Errorf("analytics: usage: %w", c.Err)
		}
		if p.Cost, err = money.Format(costD, set.Currency); err != nil {
			rows.Close()
			return Usage{}, err
		}
		if n := len(out.Series); n == 0 || out.Series[n-1].Entitlement != ent {
			out.Series = append(out.Series, UsageSeries{Entitlement: ent})
		}
		last := &out.Series[len(out.Series)-1]
		last.Points = append(last.Points, p)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return Usage{}, fmt.Errorf("analytics: usage: %w", err)
	}
	return out, nil
}

// CustomerMargin is a customer's current billing period, live, per entitlement.
type CustomerMargin struct {
	Customer     string              `json:"customer"`
	Currency     string              `json:"currency"`
	Now          time.Time           `json:"now"`
	PeriodStart  time.Time           `json:"period_start"`
	PeriodEnd    time.Time           `json:"period_end"`
	Totals       Figures             `json:"totals"`
	Entitlements []EntitlementMargin `json:"entitlements"`
}

// EntitlementMargin is one entitlement's part of the current period: the meter
// periods the period's invoice bills.
type EntitlementMargin struct {
	Entitlement string `json:"entitlement"`
	Units       string `json:"units"`
	Figures
}

// CustomerMargin values a customer's current period now, from its committed usage:
// what aggregation has folded plus what is committed and not folded yet, rated with
// billing's rating as the upcoming invoice is.
func (s *Service) CustomerMargin(ctx context.Context, env store.Environment, id string) (CustomerMargin, error) {
	var uid uuid.UUID
	err := s.pool.QueryRow(ctx, `select uid from customers where tenant_id = $1 and environment_id = $2 and id = $3`, env.TenantID, env.ID, id).Scan(&uid)
	if errors.Is(err, pgx.ErrNoRows) {
		return CustomerMargin{}, fmt.Errorf("%w: customer %q", ErrNotFound, id)
	}
	if err != nil {
		return CustomerMargin{}, fmt.Errorf("analytics: customer: %w", err)
	}
	meters, err := liveMeters(ctx, s.pool, uid, s.now())
	if err != nil {
		return CustomerMargin{}, err
	}
	val, err := s.valuer.Valuation(ctx, s.pool, env)
	if err != nil {
		return CustomerMargin{}, err
	}
	cvs, err := val.Customers(ctx, []uuid.UUID{uid}, map[uuid.UUID][]billing.MeterUsage{uid: meters.usage})
	if err != nil {
		return CustomerMargin{}, err
	}
	if len(cvs) == 0 {
		return CustomerMargin{}, fmt.Errorf("%w: customer %q", ErrNotFound, id)
	}
	return customerMargin(val.Currency, cvs[0], meters.calls)
}

type live struct {
	usage []billing.MeterUsage
	calls []int64
}

func liveMeters(ctx context.Context, db store.DBTX, uid uuid.UUID, now time.Time) (live, error) {
	rows, err := db.Query(ctx, `select entitlement, period_start, sum(units)::text, sum(grant_covered)::text, sum(overhead)::text, sum(calls)::int8
		from (select entitlement, period_start, units, grant_covered, overhead, calls from meter_aggregates
		      where customer_uid = $1 and period_start > $2
		      union all
		      select entitlement, period_start, units, grant_covered, overhead, calls from usage_deltas
		      where customer_uid = $1 and aggregated_at is null) x
		group by 1, 2 order by 1, 2`, uid, now.AddDate(0, 0, -400))
	if err != nil {
		return live{}, fmt.Errorf("analytics: live meters: %w", err)
	}
	var out live
	for rows.Next() {
		var m billing.MeterUsage
		var units, gc, overhead string
		var calls int64
		if err := rows.Scan(&m.Entitlement, &m.PeriodStart, &units, &gc, &overhead, &calls); err != nil {
			rows.Close()
			return live{}, fmt.Errorf("analytics: live meters: %w", err)
		}
		var c num.Calc
		m.Units, m.GrantCovered, m.Overhead = c.Parse(units), c.Parse(gc), c.Parse(overhead)
		if c.Err != nil {
			rows.Close()
			return live{}, fmt.Errorf("analytics: live meter %s: %w", m.Entitlement, c.Err)
		}
		out.usage, out.calls = append(out.usage, m), append(out.calls, calls)
	}
	rows.Close()
	return out, rows.Err()
}

func customerMargin(currency string, cv billing.CustomerValue, calls []int64) (CustomerMargin, error) {
	out := CustomerMargin{Customer: cv.Customer.ID, Currency: currency, Now: cv.Now.UTC(), PeriodStart: cv.Period.Start, PeriodEnd: cv.Period.End,
		Entitlements: []EntitlementMargin{}}
	type acc struct {
		units, cost, gross, grant num.Dec
		calls                     int64
	}
	per := map[string]*acc{}
	var order []string
	var c num.Calc
	total := acc{units: num.Zero, cost: num.Zero, gross: num.Zero, grant: num.Zero}
	for i, mv := range cv.Meters {
		if !mv.Level && !mv.Bill.Start.Equal(cv.Period.Start) {
			continue // billed by another period's invoice
		}
		a := per[mv.Entitlement]
		if a == nil {
			a = &acc{units: num.Zero, cost: num.Zero, gross: num.Zero, grant: num.Zero}
			per[mv.Entitlement] = a
			order = append(order, mv.Entitlement)
		}
		a.units, a.cost, a.gross = c.Add(a.units, mv.Units), c.Add(a.cost, mv.Cost), c.Add(a.gross, mv.Gross)
		a.grant = c.Add(a.grant, c.Sub(mv.Gross, mv.Net))
		a.calls += calls[i]
		total.cost, total.gross, total.grant = c.Add(total.cost, mv.Cost), c.Add(total.gross, mv.Gross), c.Add(total.grant, c.Sub(mv.Gross, mv.Net))
		total.calls += calls[i]
	}
	if c.Err != nil {
		return CustomerMargin{}, fmt.Errorf("analytics: customer margin: %w", c.Err)
	}
	slices.Sort(order)
	for _, ent := range order {
		a := per[ent]
		f, err := makeFigures(currency, a.calls, a.cost, a.gross, a.grant, num.Zero, num.Zero)
		if err != nil {
			return CustomerMargin{}, err
		}
		out.Entitlements = append(out.Entitlements, EntitlementMargin{Entitlement: ent, Units: a.units.Trim(0).String(), Figures: f})
	}
	var err error
	out.Totals, err = makeFigures(currency, total.calls, total.cost, total.gross, total.grant, cv.Fees, num.Zero)
	return out, err
}
