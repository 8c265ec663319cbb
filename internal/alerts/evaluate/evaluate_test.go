package evaluate

import (
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/limitr/limitr/internal/aggregate"
	"github.com/limitr/limitr/internal/alerts"
	"github.com/limitr/limitr/internal/billing"
	"github.com/limitr/limitr/internal/customers"
	"github.com/limitr/limitr/internal/num"
)

// The figures each kind observes, from billing's standing of real customers: acme is
// under its token limit with a purchased grant partly drawn, bigco is over its limit.
func TestObservationFigures(t *testing.T) {
	got, now, welcome := figureObservations(t)
	feb1 := jan1.AddDate(0, 1, 0)
	tests := []struct {
		key                string
		value, limit       string
		start, end         time.Time
		entitlement, extra string
		data               map[string]any
	}{
		{key: "acme/usage_percent", value: "85", limit: "1000", start: jan1, end: feb1, entitlement: "tokens",
			data: map[string]any{"percent": 85.0, "units": 850.0, "limit": 1000.0, "plan": "basic", "credit": "token",
				"period_start": "2026-01-01T00:00:00Z", "period_end": "2026-02-01T00:00:00Z"}},
		// 850 tokens in 10 of 31 days: 2,635 by the month's end; 1,000 after 10 × 1000/850 days.
		{key: "acme/forecast_exceeds_limit", value: "2635", limit: "1000", start: jan1, end: feb1, entitlement: "tokens",
			data: map[string]any{"forecast": 2635.0, "expected_at": "2026-01-12T18:21:10.588235Z",
				"elapsed_percent": num.Float64(dec("32.258064516129032258"))}},
		{key: "acme/spend", value: "20", start: jan1, end: feb1, data: map[string]any{"currency": "USD", "value": 20.0}},
		// Revenue 20 (the plan fee), cost 5 runes at a rune rate of 1.
		{key: "acme/margin_below", value: "75", start: jan1, end: feb1, data: map[string]any{"percent": 75.0, "cost": 5.0}},
		// 500 − 120 purchased and 100 − 30 included; the newest grant's period.
		{key: "acme/grant_balance_below", value: "450", start: welcome, data: map[string]any{"balance": 450.0, "grants": 2.0, "credit": "token"}},
		// The included grant, undrawn (it started when bigco was created).
		{key: "bigco/grant_balance_below", value: "100", data: map[string]any{"balance": 100.0, "grants": 1.0}},
		{key: "bigco/usage_percent", value: "120", limit: "1000", start: jan1, end: feb1, entitlement: "tokens"},
		// Over the limit: no forecast. 200 tokens over at $0.01 on top of the fee.
		{key: "bigco/forecast_exceeds_limit"},
		{key: "bigco/spend", value: "22", start: jan1, end: feb1},
		{key: "bigco/margin_below", value: "50", start: jan1, end: feb1},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			o, ok := got[tt.key]
			if tt.value == "" {
				if ok {
					t.Fatalf("observed %+v, want nothing", o)
				}
				return
			}
			if !ok {
				t.Fatal("not observed")
			}
			if o.Value.Cmp(dec(tt.value)) != 0 {
				t.Errorf("value %s, want %s", o.Value, tt.value)
			}
			if tt.limit != "" && o.Limit.Cmp(dec(tt.limit)) != 0 {
				t.Errorf("limit %s, want %s", o.Limit, tt.limit)
			}
			if (!tt.start.IsZero() && !o.PeriodStart.Equal(tt.start)) || !o.PeriodEnd.Equal(tt.end) {
				t.Errorf("period %v – %v, want %v – %v", o.PeriodStart, o.PeriodEnd, tt.start, tt.end)
			}
			if o.Entitlement != tt.entitlement || o.Customer.Plan != "basic" || o.Customer.Type != "user" || !o.At.Equal(now) {
				t.Errorf("entitlement %q, customer %+v, at %v", o.Entitlement, o.Customer, o.At)
			}
			for k, want := range tt.data {
				if o.Data[k] != want {
					t.Errorf("data[%s] = %#v, want %#v", k, o.Data[k], want)
				}
			}
		})
	}
}

// A usage_percent rule at 50, 80 and 100 fires each threshold once per meter period as
// usage crosses it through aggregation; a jump over several delivers the highest only;
// dipping and crossing again fires nothing; the next period fires again.
func TestUsagePercentFiresOncePerPeriod(t *testing.T) {
	h := newHarness(t, Config{})
	r := h.rule(alerts.KindUsagePercent, alerts.Params{Thresholds: []num.Dec{dec("50"), dec("80"), dec("100")}})
	acme, jump := h.customer("acme"), h.customer("jump")
	h.setClock(jan1.AddDate(0, 0, 5))

	step := func(name string, want alerts.Fired) {
		t.Helper()
		if got := h.aggregate(); got != want {
			t.Fatalf("%s: fired %+v, want %+v", name, got, want)
		}
	}
	h.usage("acme", acme, jan1, "600", "0")
	step("60%", alerts.Fired{Alerts: 1, Deliveries: 1})
	h.usage("acme", acme, jan1, "250", "0")
	step("85%", alerts.Fired{Alerts: 1, Deliveries: 1})
	h.usage("acme", acme, jan1, "10", "0")
	step("86%", alerts.Fired{})
	h.usage("acme", acme, jan1, "-400", "0") // a refund: back to 46 %
	step("46%", alerts.Fired{})
	h.usage("acme", acme, jan1, "400", "0")
	step("86% again", alerts.Fired{})
	h.usage("jump", jump, jan1, "1000", "0")
	step("0 to 100%", alerts.Fired{Alerts: 1, Superseded: 2, Deliveries: 1})

	feb1 := jan1.AddDate(0, 1, 0)
	h.setClock(feb1.Add(time.Hour))
	h.usage("acme", acme, feb1, "820", "0")
	step("February 82%", alerts.Fired{Alerts: 1, Superseded: 1, Deliveries: 1})

	want := []firedAlert{
		{"acme", "50", jan1, false}, {"acme", "80", jan1, false},
		{"jump", "50", jan1, true}, {"jump", "80", jan1, true}, {"jump", "100", jan1, false},
		{"acme", "50", feb1, true}, {"acme", "80", feb1, false},
	}
	if got := h.alertsOf(r.ID); !slices.Equal(got, want) {
		t.Fatalf("alerts:\n got %+v\nwant %+v", got, want)
	}
	var deliveries int
	if err := h.pool.QueryRow(h.ctx, `select count(*) from alert_deliveries d join river_job j on (j.args->>'delivery_id')::uuid = d.id
		where j.kind = $1`, alerts.DeliverArgs{}.Kind()).Scan(&deliveries); err != nil {
		t.Fatal(err)
	}
	if deliveries != 4 {
		t.Errorf("%d deliveries with their jobs, want 4", deliveries)
	}
}

// A forecast is trusted once min_elapsed_percent of the period has passed (10 by
// default), and fires once per meter period.
func TestForecastWaitsForMinElapsed(t *testing.T) {
	h := newHarness(t, Config{})
	def := h.rule(alerts.KindForecastExceedsLimit, alerts.Params{})
	early := h.rule(alerts.KindForecastExceedsLimit, alerts.Params{MinElapsedPercent: decp("0")})
	acme := h.customer("acme")
	h.setClock(jan1.AddDate(0, 0, 2)) // 6.5 % of January
	h.usage("acme", acme, jan1, "200", "0")
	if got := h.aggregate(); got.Alerts != 1 {
		t.Fatalf("day 2: fired %+v, want the min_elapsed_percent 0 rule only", got)
	}
	h.setClock(jan1.AddDate(0, 0, 4)) // 12.9 %: 200 in 4 days is 1,550 by the month's end
	h.usage("acme", acme, jan1, "0", "0")
	if got := h.aggregate(); got.Alerts != 1 {
		t.Fatalf("day 4: fired %+v, want the default rule only", got)
	}
	if n := len(h.alertsOf(def.ID)) + len(h.alertsOf(early.ID)); n != 2 {
		t.Fatalf("%d alerts, want one per rule", n)
	}
}

// Usage aggregated while nobody listened (a crash, a lost notification) is caught by
// the sweep, once.
func TestSweepAfterLostNotification(t *testing.T) {
	h := newHarness(t, Config{})
	r := h.rule(alerts.KindSpend, alerts.Params{Amount: decp("21")})
	bigco := h.customer("bigco")
	h.setClock(jan1.AddDate(0, 0, 3))
	h.usage("bigco", bigco, jan1, "1150", "0") // $20 fee + $1.50 over
	if _, err := aggregate.New(h.pool, aggregate.Options{}).Drain(h.ctx); err != nil {
		t.Fatal(err)
	}
	if got := h.alertsOf(r.ID); len(got) != 0 {
		t.Fatalf("alerts before the sweep: %+v", got)
	}
	for range 2 {
		if err := h.ev.Sweep(h.ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got := h.alertsOf(r.ID); len(got) != 1 || got[0].Threshold != "21" || !got[0].Period.Equal(jan1) {
		t.Fatalf("alerts after two sweeps: %+v", got)
	}
}

// A full queue never blocks aggregation: the batch is dropped and its environment
// swept instead.
func TestOverflowSweepsTheEnvironment(t *testing.T) {
	h := newHarness(t, Config{QueueSize: 1, SweepInterval: -1})
	r := h.rule(alerts.KindUsagePercent, alerts.Params{Thresholds: []num.Dec{dec("50")}})
	a, b := h.customer("a"), h.customer("b")
	h.setClock(jan1.AddDate(0, 0, 3))
	h.usage("a", a, jan1, "700", "0")
	h.usage("b", b, jan1, "700", "0")
	touched := func(uid uuid.UUID) aggregate.Batch {
		return aggregate.Batch{Touched: []aggregate.Touched{{TenantID: h.env.TenantID, EnvironmentID: h.env.ID, CustomerUID: uid}}}
	}
	if _, err := aggregate.New(h.pool, aggregate.Options{}).Drain(h.ctx); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		h.ev.OnBatch(touched(a))
		h.ev.OnBatch(touched(b)) // the queue holds one: dropped
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("OnBatch blocked on a full queue")
	}
	if s := h.ev.Stats(); s.Dropped != 1 {
		t.Fatalf("stats %+v, want one dropped batch", s)
	}
	// What Run does on the overflow signal: evaluate the queued batch, sweep the rest.
	select {
	case <-h.ev.overflow:
	default:
		t.Fatal("no overflow signal")
	}
	if err := h.ev.sweepDropped(h.ctx); err != nil {
		t.Fatal(err)
	}
	if got := h.alertsOf(r.ID); len(got) != 2 {
		t.Fatalf("alerts: %+v, want both customers'", got)
	}
	if err := h.ev.evaluateQueued(h.ctx, newPacer(time.Second), <-h.ev.queue); err != nil {
		t.Fatal(err)
	}
	if got := h.alertsOf(r.ID); len(got) != 2 {
		t.Fatalf("alerts after the queued batch: %+v, want no more", got)
	}
}

// figureObservations observes acme (850 of 1,000 tokens, $5 of overhead, a 500-token
// pack with 120 drawn, the included 100 with 30 drawn) and bigco (1,200 tokens, $11 of
// overhead) on 11 January, by customer/kind; welcome is when acme's included grant
// started.
func figureObservations(t *testing.T) (obs map[string]alerts.Observation, now, welcome time.Time) {
	h := newHarness(t, Config{})
	acme, bigco := h.customer("acme"), h.customer("bigco")
	h.usage("acme", acme, jan1, "600", "2")
	h.usage("acme", acme, jan1, "250", "3")
	h.usage("bigco", bigco, jan1, "1200", "11")
	h.aggregate()
	applied := jan1.Add(24*time.Hour + 1500*time.Microsecond) // the grant is dated to the millisecond
	h.exec(`insert into customer_topups (id, tenant_id, environment_id, customer_id, topup, grant_id, credit, value, price, applied_at)
		values ($1, $2, $3, 'acme', 'pack', 'g-1', 'token', 500, 5, $4)`, uuid.New(), h.env.TenantID, h.env.ID, applied)
	grantStart := applied.Truncate(time.Millisecond)
	draw := func(grant string, start time.Time, units int) {
		h.exec(`insert into grant_draw_totals (tenant_id, environment_id, customer_id, customer_uid, grant_id, period_start, units)
			values ($1, $2, 'acme', $3, $4, $5, $6)`, h.env.TenantID, h.env.ID, acme, grant, start, units)
	}
	draw("g-1", grantStart, 120)
	c, err := h.custs.GetRecord(h.ctx, h.env, "acme")
	if err != nil {
		t.Fatal(err)
	}
	// The included grant dates from the customer's creation (real time: the clock
	// dates billing, not the engine's grants) and never resets: every draw counts.
	welcome = c.CreatedAt.Truncate(time.Millisecond)
	draw("included:welcome", welcome, 20)
	draw("included:welcome", welcome.Add(time.Hour), 10)
	now = jan1.AddDate(0, 0, 10) // 10 of January's 31 days
	h.setClock(now)

	sts, err := h.bill.Standings(h.ctx, h.env, []uuid.UUID{acme, bigco, uuid.New()})
	if err != nil {
		t.Fatal(err)
	}
	obs = map[string]alerts.Observation{}
	if len(sts) != 2 {
		t.Fatalf("%d standings, want 2 (an unknown uid is skipped)", len(sts))
	}
	for _, st := range sts {
		if !st.Now.Equal(now) {
			t.Errorf("%s: now %v, want the test clock's %v", st.Customer.ID, st.Now, now)
		}
		for _, o := range Observations(st, st.Now) {
			obs[o.Customer.ID+"/"+o.Kind] = o
		}
	}
	return obs, now, welcome
}

// Limits are the effective ones (a live override laid over the plan's), and money is
// converted at the environment's rune rate, cost as well as revenue.
func TestOverrideAndRuneRate(t *testing.T) {
	h := newHarness(t, Config{})
	uid := h.customer("ovr")
	if _, err := h.custs.SetOverride(h.ctx, h.env, "ovr", "tokens", customers.OverrideInput{Value: "2000"}); err != nil {
		t.Fatal(err)
	}
	rate := "0.5"
	if _, err := h.bill.PutSettings(h.ctx, h.env, billing.SettingsInput{RuneRate: &rate}); err != nil {
		t.Fatal(err)
	}
	h.usage("ovr", uid, jan1, "850", "5")
	h.aggregate()
	h.setClock(jan1.AddDate(0, 0, 10))
	sts, err := h.bill.Standings(h.ctx, h.env, []uuid.UUID{uid})
	if err != nil || len(sts) != 1 {
		t.Fatalf("standings %+v, %v", sts, err)
	}
	got := map[string]alerts.Observation{}
	for _, o := range Observations(sts[0], sts[0].Now) {
		got[o.Kind] = o
	}
	for kind, want := range map[string][2]string{
		alerts.KindUsagePercent:         {"42.5", "2000"},
		alerts.KindForecastExceedsLimit: {"2635", "2000"},
		alerts.KindSpend:                {"10", "0"}, // the $20 fee at 0.5 a rune
		alerts.KindMarginBelow:          {"75", "0"}, // 5 runes of cost are $2.50
	} {
		o := got[kind]
		if o.Value.Cmp(dec(want[0])) != 0 || o.Limit.Cmp(dec(want[1])) != 0 {
			t.Errorf("%s: value %s limit %s, want %s and %s", kind, o.Value, o.Limit, want[0], want[1])
		}
	}
	if c := got[alerts.KindMarginBelow].Data["cost"]; c != 2.5 {
		t.Errorf("cost %v, want 2.5", c)
	}
}
