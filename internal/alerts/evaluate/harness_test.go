package evaluate

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/limitr/limitr/internal/aggregate"
	"github.com/limitr/limitr/internal/alerts"
	"github.com/limitr/limitr/internal/billing"
	"github.com/limitr/limitr/internal/customers"
	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/platform/pgtest"
	"github.com/limitr/limitr/internal/policies/pgstore"
	"github.com/limitr/limitr/internal/policies/pgstore/pgstoretest"
	"github.com/limitr/limitr/internal/store"
)

// testPolicy: a $20 plan fee, tokens at $0.01 over 1,000 a month (the month follows
// the customer's anchor, as billing periods do), a purchasable pack of 500 tokens and
// 100 included ones.
const testPolicy = `
policy:
  credits:
    fee: { price: { amount: 20 } }
    token: { price: { amount: 0.01 } }
  exchange:
    rune: { value: 1, currency: usd }
  plans:
    basic:
      default: true
      entitlements:
        subscription: { limit: { credit: fee, mode: soft, value: 0 } }
        tokens: { limit: { credit: token, mode: soft, value: 1000, resets: true, reset_sch: 'monthly:anchor' } }
      topups:
        pack: { credit: token, value: 500, price: { amount: 5 } }
        welcome: { credit: token, value: 100, included: true }
`

// jan1 is when the test clock starts: customers are created then, so their billing
// periods and token meters run from the first of each month.
var jan1 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// harness is an environment with the test policy published, a test clock, an alert
// channel, and the services evaluation composes.
type harness struct {
	t       testing.TB
	ctx     context.Context
	pool    *pgxpool.Pool
	env     store.Environment
	clock   string
	channel uuid.UUID
	custs   *customers.Service
	bill    *billing.Service
	alerts  *alerts.Service
	agg     *aggregate.Aggregator
	ev      *Evaluator
	seq     int64
}

func newHarness(t testing.TB, cfg Config) *harness {
	t.Helper()
	_, pool := pgtest.NewMigrated(t)
	ctx := context.Background()
	h := &harness{t: t, ctx: ctx, pool: pool,
		env: store.Environment{ID: uuid.New(), TenantID: uuid.New(), Name: "staging", CreatedAt: time.Now()}}
	h.exec(`insert into tenants (id, slug, name) values ($1, $2, 'Test')`, h.env.TenantID, "t-"+h.env.TenantID.String()[:8])
	h.exec(`insert into environments (id, tenant_id, name) values ($1, $2, 'staging')`, h.env.ID, h.env.TenantID)
	h.publish(testPolicy)
	pols := pgstore.NewService(pool, nil)
	h.custs = customers.NewService(pool, pols, nil)
	h.bill = billing.NewService(pool, pols, h.custs)
	jobs, err := river.NewClient(riverpgxv5.New(pool), &river.Config{}) // insert-only: deliveries are not worked here
	if err != nil {
		t.Fatal(err)
	}
	h.alerts = alerts.New(pool, nil, jobs, pols, alerts.Config{})
	clock, err := h.bill.CreateTestClock(ctx, h.env, billing.TestClockInput{FrozenTime: jan1.Format(time.RFC3339)})
	if err != nil {
		t.Fatal(err)
	}
	h.clock = clock.ID
	if err := pool.QueryRow(ctx, `insert into alert_channels (tenant_id, environment_id, name, kind, secrets_sealed)
		values ($1, $2, 'ops', 'webhook', 'x') returning id`, h.env.TenantID, h.env.ID).Scan(&h.channel); err != nil {
		t.Fatal(err)
	}
	h.ev = New(pool, h.alerts, h.bill, cfg)
	h.agg = aggregate.New(pool, aggregate.Options{OnBatch: h.ev.OnBatch})
	return h
}

func (h *harness) exec(sql string, args ...any) {
	h.t.Helper()
	if _, err := h.pool.Exec(h.ctx, sql, args...); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) publish(src string) {
	h.t.Helper()
	pgstoretest.Publish(h.t, h.pool, h.env.TenantID, h.env.ID, src)
}

// customer creates a customer on the test clock and returns its uid.
func (h *harness) customer(id string) uuid.UUID {
	h.t.Helper()
	if _, err := h.custs.Create(h.ctx, h.env, customers.CreateInput{ID: id, TestClock: h.clock}); err != nil {
		h.t.Fatal(err)
	}
	c, err := h.custs.GetRecord(h.ctx, h.env, id)
	if err != nil {
		h.t.Fatal(err)
	}
	return c.UID
}

// setClock moves the test clock.
func (h *harness) setClock(at time.Time) {
	h.exec(`update test_clocks set frozen_time = $1 where id = $2::uuid`, at, h.clock)
}

// usage commits one usage delta of tokens for the meter period starting at period.
func (h *harness) usage(customer string, uid uuid.UUID, period time.Time, units, overhead string) {
	h.t.Helper()
	h.seq++
	h.exec(`insert into usage_deltas (tenant_id, environment_id, instance_id, sequence, customer_id, customer_uid, entitlement, credit,
			period_start, units, overhead, price, calls)
		values ($1, $2, 'inst', $3, $4, $5, 'tokens', 'token', $6, $7::numeric, $8::numeric, 0, 1)`,
		h.env.TenantID, h.env.ID, h.seq, customer, uid, period, units, overhead)
}

// aggregate folds pending usage and evaluates what the batches queued, as Run would.
func (h *harness) aggregate() alerts.Fired {
	h.t.Helper()
	if _, err := h.agg.Drain(h.ctx); err != nil {
		h.t.Fatal(err)
	}
	before := h.ev.Stats().Fired
	for more := true; more; {
		select {
		case ts := <-h.ev.queue:
			if err := h.ev.evaluateQueued(h.ctx, newPacer(0), ts); err != nil {
				h.t.Fatal(err)
			}
		default:
			more = false
		}
	}
	after := h.ev.Stats().Fired
	return alerts.Fired{Alerts: after.Alerts - before.Alerts, Superseded: after.Superseded - before.Superseded,
		Deliveries: after.Deliveries - before.Deliveries}
}

func (h *harness) rule(kind string, params alerts.Params) *alerts.Rule {
	h.t.Helper()
	name := fmt.Sprintf("%s-%d", kind, time.Now().UnixNano())
	chans := []string{h.channel.String()}
	r, err := h.alerts.CreateRule(h.ctx, h.env, alerts.RuleInput{Name: &name, Kind: &kind, Params: &params, Channels: &chans})
	if err != nil {
		h.t.Fatal(err)
	}
	return r
}

// firedAlert is an alert as stored.
type firedAlert struct {
	Customer, Threshold string
	Period              time.Time
	Superseded          bool
}

// alertsOf lists a rule's alerts, oldest first.
func (h *harness) alertsOf(rule uuid.UUID) []firedAlert {
	h.t.Helper()
	rows, err := h.pool.Query(h.ctx, `select customer_id, threshold, coalesce(period_start, 'epoch'), superseded from alerts
		where rule_id = $1 order by fired_at, length(threshold), threshold`, rule)
	if err != nil {
		h.t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (firedAlert, error) {
		var a firedAlert
		err := r.Scan(&a.Customer, &a.Threshold, &a.Period, &a.Superseded)
		a.Period = a.Period.UTC()
		return a, err
	})
	if err != nil {
		h.t.Fatal(err)
	}
	return out
}

func dec(s string) num.Dec { return num.MustParse(s) }

func decp(s string) *num.Dec { d := dec(s); return &d }
