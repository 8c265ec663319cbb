package evaluate

import (
	"slices"
	"time"

	"github.com/limitr/limitr/internal/alerts"
	"github.com/limitr/limitr/internal/billing"
	"github.com/limitr/limitr/internal/burnrate"
	"github.com/limitr/limitr/internal/num"
)

// Kinds are the rule kinds the evaluator feeds: those that watch meters and the
// invoice to date.
var Kinds = []string{alerts.KindUsagePercent, alerts.KindSpend, alerts.KindGrantBalanceBelow,
	alerts.KindMarginBelow, alerts.KindForecastExceedsLimit}

// Observations turns a customer's standing into what the rules match: per metered
// entitlement with a positive limit a usage percent and, while under the limit in a
// resetting period, a forecast; the invoice to date (spend); the margin so far when
// there is revenue; and per credit with grants their remaining balance. at is when it
// was observed.
func Observations(st billing.Standing, at time.Time) []alerts.Observation {
	c := st.Customer
	sub := alerts.Subject{UID: c.UID, ID: c.ID, Type: c.Type, Plan: c.ResolvedPlan}
	base := func(kind string) alerts.Observation {
		return alerts.Observation{Kind: kind, Customer: sub, At: at, Data: map[string]any{
			"customer": c.ID, "customer_type": c.Type, "plan": c.ResolvedPlan, "kind": kind,
			"observed_at": at.UTC().Format(time.RFC3339Nano)}}
	}
	out := make([]alerts.Observation, 0, 2+2*len(st.Meters)+len(st.Grants))
	for _, m := range st.Meters {
		if !m.Limit.IsPos() {
			continue
		}
		if o, ok := usagePercent(base(alerts.KindUsagePercent), m); ok {
			out = append(out, o)
		}
		if o, ok := forecast(base(alerts.KindForecastExceedsLimit), m, st.Now); ok {
			out = append(out, o)
		}
	}
	billed := func(kind string, value num.Dec) alerts.Observation {
		o := base(kind)
		o.Value, o.PeriodStart, o.PeriodEnd = value, st.Period.Start, st.Period.End
		o.Data["value"] = num.Float64(value)
		o.Data["currency"] = st.Currency
		o.Data["invoice_to_date"] = num.Float64(st.InvoiceToDate)
		o.Data["period_start"], o.Data["period_end"] = rfc3339(st.Period.Start), rfc3339(st.Period.End)
		return o
	}
	out = append(out, billed(alerts.KindSpend, st.InvoiceToDate))
	if m, ok := margin(st.InvoiceToDate, st.Cost); ok {
		o := billed(alerts.KindMarginBelow, m)
		o.Data["percent"] = num.Float64(m)
		o.Data["cost"] = num.Float64(st.Cost)
		out = append(out, o)
	}
	for _, b := range balances(st.Grants) {
		o := base(alerts.KindGrantBalanceBelow)
		o.Credit, o.Value = b.Credit, b.Balance
		o.PeriodStart, o.PeriodEnd = b.PeriodStart, b.PeriodEnd
		o.Data["credit"], o.Data["grants"] = b.Credit, float64(b.grants)
		o.Data["value"], o.Data["balance"] = num.Float64(b.Balance), num.Float64(b.Balance)
		o.Data["period_start"], o.Data["period_end"] = rfc3339(b.PeriodStart), rfc3339(b.PeriodEnd)
		out = append(out, o)
	}
	return out
}

// creditBalance is what a customer's grants of one credit hold together.
type creditBalance struct {
	billing.GrantStanding
	grants int
}

// balances sums grant balances by credit, in order of first appearance. The period is
// the newest grant's (the latest period start): a purchase or a reset re-arms the
// credit's alerts, which fire once per period.
func balances(gs []billing.GrantStanding) []creditBalance {
	var out []creditBalance
	for _, g := range gs {
		i := slices.IndexFunc(out, func(b creditBalance) bool { return b.Credit == g.Credit })
		if i < 0 {
			out = append(out, creditBalance{GrantStanding: billing.GrantStanding{Credit: g.Credit, Balance: num.Zero}})
			i = len(out) - 1
		}
		b := &out[i]
		sum, err := b.Balance.Add(g.Balance)
		if err != nil {
			continue
		}
		b.Balance, b.grants = sum, b.grants+1
		if g.PeriodStart.After(b.PeriodStart) {
			b.PeriodStart, b.PeriodEnd = g.PeriodStart, g.PeriodEnd
		}
	}
	return out
}

// meterData fills what every meter observation carries.
func meterData(o *alerts.Observation, m billing.MeterStanding) {
	o.Entitlement, o.Credit, o.Limit = m.Entitlement, m.Credit, m.Limit
	o.PeriodStart, o.PeriodEnd = m.PeriodStart, m.PeriodEnd
	o.Data["entitlement"], o.Data["credit"] = m.Entitlement, m.Credit
	o.Data["units"], o.Data["limit"] = num.Float64(m.Units), num.Float64(m.Limit)
	o.Data["period_start"], o.Data["period_end"] = rfc3339(m.PeriodStart), rfc3339(m.PeriodEnd)
}

// usagePercent is units / limit × 100.
func usagePercent(o alerts.Observation, m billing.MeterStanding) (alerts.Observation, bool) {
	var c num.Calc
	pct := c.Quo(c.Mul(m.Units, num.Hundred), m.Limit)
	if c.Err != nil {
		return o, false
	}
	meterData(&o, m)
	o.Value = pct
	o.Data["value"], o.Data["percent"] = num.Float64(pct), num.Float64(pct)
	return o, true
}

// forecast extrapolates a resetting meter's usage at its current rate to the period's
// end: units × period length / elapsed. Only a meter under its limit is forecast (one
// over it is usage_percent's business), and the rule decides, from elapsed_percent,
// whether enough of the period has passed to trust the rate.
func forecast(o alerts.Observation, m billing.MeterStanding, now time.Time) (alerts.Observation, bool) {
	if m.PeriodEnd.IsZero() || !m.Units.IsPos() || m.Units.Cmp(m.Limit) >= 0 {
		return o, false
	}
	elapsed, length := now.Sub(m.PeriodStart).Microseconds(), m.PeriodEnd.Sub(m.PeriodStart).Microseconds()
	if elapsed <= 0 || length <= 0 || elapsed > length {
		return o, false
	}
	var c num.Calc
	el, ln := num.FromInt(elapsed), num.FromInt(length)
	value := c.Quo(c.Mul(m.Units, ln), el)
	elapsedPct := c.Quo(c.Mul(el, num.Hundred), ln)
	left := c.Sub(m.Limit, m.Units)
	if c.Err != nil {
		return o, false
	}
	// The period's average rate, projected with the rule the SDK's
	// ProjectedExhaustion uses.
	perMs := num.Float64(m.Units) / (float64(elapsed) / 1000)
	// Microseconds, as the rest of the control plane keeps times.
	expected := burnrate.Exhaustion(now, num.Float64(left), perMs).Truncate(time.Microsecond)
	meterData(&o, m)
	o.Value = value
	o.Data["value"], o.Data["forecast"] = num.Float64(value), num.Float64(value)
	o.Data["elapsed_percent"] = num.Float64(elapsedPct)
	o.Data["expected_at"] = rfc3339(expected)
	return o, true
}

// margin is (revenue − cost) / revenue × 100; ok is false without revenue.
func margin(revenue, cost num.Dec) (num.Dec, bool) {
	if !revenue.IsPos() {
		return num.Zero, false
	}
	var c num.Calc
	m := c.Quo(c.Mul(c.Sub(revenue, cost), num.Hundred), revenue)
	return m, c.Err == nil
}

// rfc3339 writes a time for a rule's condition; "" for none.
func rfc3339(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}
