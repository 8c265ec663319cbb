package analytics

import (
	"time"

	"github.com/google/uuid"

	"github.com/limitr/limitr/internal/billing"
	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/store"
)

// amounts are the figures a rollup row sums. Money is in the environment's currency;
// revenue as invoiced is usage − grant + fee + topup.
type amounts struct {
	units, cost, usageRevenue, grantRevenue, feeRevenue, topupRevenue num.Dec
	calls                                                             int64
}

func zeroAmounts() amounts {
	return amounts{units: num.Zero, cost: num.Zero, usageRevenue: num.Zero, grantRevenue: num.Zero, feeRevenue: num.Zero, topupRevenue: num.Zero}
}

func (a amounts) isZero() bool {
	return a.calls == 0 && a.units.IsZero() && a.cost.IsZero() && a.usageRevenue.IsZero() && a.grantRevenue.IsZero() &&
		a.feeRevenue.IsZero() && a.topupRevenue.IsZero()
}

func (a *amounts) add(b amounts) {
	var c num.Calc
	a.units, a.cost = c.Add(a.units, b.units), c.Add(a.cost, b.cost)
	a.usageRevenue, a.grantRevenue = c.Add(a.usageRevenue, b.usageRevenue), c.Add(a.grantRevenue, b.grantRevenue)
	a.feeRevenue, a.topupRevenue = c.Add(a.feeRevenue, b.feeRevenue), c.Add(a.topupRevenue, b.topupRevenue)
	a.calls += b.calls
}

// subject is who a change is booked for.
type subject struct {
	uid                      uuid.UUID
	customerID, plan, custTy string
}

// change is one booked change: at an hour, for a customer's entitlement under a
// policy version.
type change struct {
	subject
	hour        time.Time
	entitlement string
	version     int
	amounts
}

type meterRow struct {
	uid              uuid.UUID
	entitlement      string
	periodStart      time.Time
	bill             billing.Period
	level            bool
	tenant           uuid.UUID
	units, gc        num.Dec
	calls            int64
	gross, net, cost num.Dec
	version          int
}

type feeRow struct {
	uid    uuid.UUID
	bill   billing.Period
	amount num.Dec
}

// batch collects one booking's changes and the new booked figures.
type batch struct {
	env        store.Environment
	now        time.Time
	aggregated []time.Time
	changes    []change
	meters     []meterRow
	fees       []feeRow
}

func newBatch(env store.Environment, now time.Time) *batch {
	return &batch{env: env, now: now}
}

// customer books what changed for one customer: each meter period whose figures
// differ from what was booked, and its current period's plan fees.
func (b *batch) customer(val *billing.Valuation, cv billing.CustomerValue, meters []committed, prior map[meterKey]booked, fees map[feeKey]num.Dec) {
	c := cv.Customer
	who := subject{uid: c.UID, customerID: c.ID, plan: c.ResolvedPlan, custTy: c.Type}
	for i, mv := range cv.Meters {
		m := meters[i]
		k := meterKey{uid: c.UID, entitlement: mv.Entitlement, periodStart: mv.PeriodStart.UnixNano(), billStart: mv.Bill.Start.UnixNano()}
		p, seen := prior[k]
		if !seen {
			p = booked{units: num.Zero, grantCovered: num.Zero, gross: num.Zero, net: num.Zero, cost: num.Zero}
		}
		if seen && p.version == mv.Version && p.calls == m.calls && p.units.Cmp(mv.Units) == 0 && p.grantCovered.Cmp(mv.GrantCovered) == 0 &&
			p.gross.Cmp(mv.Gross) == 0 && p.net.Cmp(mv.Net) == 0 && p.cost.Cmp(mv.Cost) == 0 {
			continue
		}
		var calc num.Calc
		d := zeroAmounts()
		d.units = calc.Sub(mv.Units, p.units)
		d.calls = m.calls - p.calls
		d.cost = calc.Sub(mv.Cost, p.cost)
		d.usageRevenue = calc.Sub(mv.Gross, p.gross)
		d.grantRevenue = calc.Sub(calc.Sub(mv.Gross, mv.Net), calc.Sub(p.gross, p.net))
		if calc.Err != nil {
			continue // out of range: figures this large are refused by rating first
		}
		if !d.units.IsZero() || d.calls != 0 {
			b.aggregated = append(b.aggregated, m.updatedAt)
		}
		if !d.isZero() { // a new version that prices it the same changes only the label
			b.changes = append(b.changes, change{subject: who, hour: b.when(cv, m, mv, seen, d.units.IsZero() && d.calls == 0), entitlement: mv.Entitlement, version: mv.Version, amounts: d})
		}
		b.meters = append(b.meters, meterRow{uid: c.UID, entitlement: mv.Entitlement, periodStart: mv.PeriodStart, bill: mv.Bill, level: mv.Level,
			tenant: b.env.TenantID, units: mv.Units, gc: mv.GrantCovered, calls: m.calls, gross: mv.Gross, net: mv.Net, cost: mv.Cost, version: mv.Version})
	}
	fk := feeKey{uid: c.UID, billStart: cv.Period.Start.UnixNano()}
	prev, seen := fees[fk]
	if !seen {
		prev = num.Zero
	}
	if (seen || !cv.Fees.IsZero()) && prev.Cmp(cv.Fees) != 0 {
		d := zeroAmounts()
		d.feeRevenue, _ = cv.Fees.Sub(prev)
		ent := ""
		if plan := val.Active().Plan(c.Plan); plan != nil {
			ent = plan.Subscription
		}
		v := 0
		if len(cv.Meters) > 0 {
			v = cv.Meters[0].Version
		}
		b.changes = append(b.changes, change{subject: who, hour: hour(cv.Period.Start), entitlement: ent, version: v, amounts: d})
		b.fees = append(b.fees, feeRow{uid: c.UID, bill: cv.Period, amount: cv.Fees})
	}
}

// when is the hour a meter's change is booked at: when its usage changed (the
// aggregation's commit), or now for a reprice; a level's new billing period at that
// period's start. A customer on a test clock lives on the clock's time.
func (b *batch) when(cv billing.CustomerValue, m committed, mv billing.MeterValue, seen, repriced bool) time.Time {
	if cv.Customer.TestClock != "" {
		return hour(cv.Now)
	}
	at := m.updatedAt
	if repriced {
		at = b.now
	}
	if mv.Level && !seen && mv.Bill.Start.After(at) {
		at = mv.Bill.Start
	}
	return hour(at)
}

func hour(t time.Time) time.Time { return t.UTC().Truncate(time.Hour) }

func day(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
}
