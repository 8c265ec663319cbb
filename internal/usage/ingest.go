// Package usage is the control plane's usage domain: committing the usage batches SDK
// instances sync (exactly once per instance and sequence), hydrating a customer's
// committed state for an SDK, and the records that could not be attributed to a
// customer.
//
// A batch commits in one transaction: its key in usage_batches, the deltas, grant
// draws, voucher debits, cap uses and audit events of every customer the environment knows, and the records
// naming customers it does not know (deleted, never created on the server, or created
// again since the usage was recorded) in unattributed_usage. One unknown customer
// therefore never costs the others their usage, and nothing is dropped silently: the
// acknowledgement lists the unattributed records, and an operator can list them.
package usage

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/limitr/limitr/internal/policies"
	"github.com/limitr/limitr/internal/store"
	"github.com/limitr/limitr/internal/wire"
)

// Notifier is told after a batch commits new usage, to wake the aggregation workers.
type Notifier interface {
	UsageCommitted(ctx context.Context, tenantID, envID uuid.UUID)
}

// Policies finds an environment's published policy.
type Policies interface {
	// ActivePolicyIn reads through db: ingest asks inside its transaction, which must
	// not wait for a second pool connection while it holds one.
	ActivePolicyIn(ctx context.Context, db store.DBTX, env store.Environment) (*policies.Policy, error)
}

// Service is the usage domain.
type Service struct {
	pool      *pgxpool.Pool
	customers Customers
	policies  Policies
	notify    Notifier
	metrics   *Metrics
	now       func() time.Time

	horizonMu sync.Mutex
	horizon   time.Time // the deduplication horizon (zero: no key was ever removed)
	horizonAt time.Time // when it was read
}

// NewService returns the service. notify and metrics may be nil.
func NewService(pool *pgxpool.Pool, customers Customers, notify Notifier, metrics *Metrics) *Service {
	return &Service{pool: pool, customers: customers, notify: notify, metrics: metrics, now: time.Now}
}

// SetPolicies lets ingest re-date the usage of customers on test clocks by their
// limits' periods (without it, their usage keeps the SDK's periods).
func (s *Service) SetPolicies(p Policies) { s.policies = p }

// Metrics count what ingest does.
type Metrics struct {
	Batches      *prometheus.CounterVec // by outcome: committed, duplicate, rejected, unavailable
	Deltas       prometheus.Counter
	Unattributed *prometheus.CounterVec // by kind and reason
}

// NewMetrics makes ingest's metrics; whoever serves them registers each one.
func NewMetrics() *Metrics {
	m := &Metrics{
		Batches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "limitr_usage_batches_total",
			Help: "Usage batches received from SDKs, by outcome (committed, duplicate, rejected, unavailable).",
		}, []string{"outcome"}),
		Deltas: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "limitr_usage_deltas_committed_total",
			Help: "Usage deltas committed from SDK batches.",
		}),
		Unattributed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "limitr_usage_unattributed_total",
			Help: "Records of committed batches that could not be attributed to a customer, by kind and reason (kept in unattributed_usage).",
		}, []string{"kind", "reason"}),
	}
	return m
}

// Outcome labels a batch for the metrics.
func (m *Metrics) Outcome(outcome string) {
	if m != nil {
		m.Batches.WithLabelValues(outcome).Inc()
	}
}

// Commit commits a batch at most once per (instance id, sequence): usage of every
// customer the environment knows, and the rest as unattributed records listed in the
// acknowledgement. A batch committed before answers Duplicate and writes nothing. A
// structurally invalid batch is a *validation.Error listing every problem, and writes
// nothing.
func (s *Service) Commit(ctx context.Context, env store.Environment, in *wire.UsageBatch) (wire.UsageAck, error) {
	v := check(in, s.now())
	if err := v.errs.Err(invalidBatch(v.errs.Len())); err != nil {
		return wire.UsageAck{}, err
	}
	b := &v.batch
	b.TenantID, b.EnvironmentID = env.TenantID, env.ID
	expired, err := s.expired(ctx, b.SentAt)
	if err != nil {
		return wire.UsageAck{}, err
	}
	names := v.names
	if expired {
		names = nil
	}
	duplicate, err := store.CommitUsageBatch(ctx, s.pool, b, names, func(ctx context.Context, tx store.DBTX, found map[string]store.UsageCustomer) error {
		if expired {
			// Too old to deduplicate by key alone: a retry of a committed batch is still
			// a duplicate while its key is kept; otherwise nothing is counted.
			return v.expire()
		}
		if err := v.attribute(found); err != nil {
			return err
		}
		return s.redate(ctx, tx, env, v, found)
	})
	if err != nil {
		return wire.UsageAck{}, err
	}
	ack := wire.UsageAck{Sequence: b.Sequence, Duplicate: duplicate}
	if duplicate {
		return ack, nil
	}
	ack.Accepted = len(b.Deltas)
	for _, u := range b.Unattributed {
		ack.Unattributed = append(ack.Unattributed, wire.Unattributed{Kind: u.Kind, Index: u.Index, Customer: u.Customer, Reason: u.Reason})
		if s.metrics != nil {
			s.metrics.Unattributed.WithLabelValues(u.Kind, u.Reason).Inc()
		}
	}
	if s.metrics != nil {
		s.metrics.Deltas.Add(float64(len(b.Deltas)))
	}
	if s.notify != nil && (len(b.Deltas) > 0 || len(b.GrantDraws) > 0) {
		s.notify.UsageCommitted(ctx, env.TenantID, env.ID)
	}
	return ack, nil
}

// horizonTTL is how long the deduplication horizon is cached: it moves once per
// retention run (hourly).
const horizonTTL = time.Minute

// expiredMargin is how much later than the horizon a batch's first send must be to be
// deduplicated safely, whatever the SDK host's clock says.
const expiredMargin = 24 * time.Hour

// expired reports a batch first sent (sentAt, by the SDK's clock) before the
// deduplication horizon: retention may have removed the key a retry of it would match.
func (s *Service) expired(ctx context.Context, sentAt *time.Time) (bool, error) {
	if sentAt == nil {
		return false, nil
	}
	s.horizonMu.Lock()
	h, at := s.horizon, s.horizonAt
	s.horizonMu.Unlock()
	if now := s.now(); now.Sub(at) > horizonTTL {
		var err error
		if h, err = store.RetentionHorizon(ctx, s.pool, "usage_batches"); err != nil {
			return false, err
		}
		s.horizonMu.Lock()
		s.horizon, s.horizonAt = h, now
		s.horizonMu.Unlock()
	}
	return !h.IsZero() && sentAt.Before(h.Add(expiredMargin)), nil
}

// ForgetHorizon makes the next batch re-read the deduplication horizon (tests, and
// operators who just changed the retention).
func (s *Service) ForgetHorizon() {
	s.horizonMu.Lock()
	s.horizonAt = time.Time{}
	s.horizonMu.Unlock()
}

func invalidBatch(problems int) string {
	if problems == 1 {
		return "the usage batch is invalid (1 problem)"
	}
	return fmt.Sprintf("the usage batch is invalid (%d problems)", problems)
}

// attribute resolves every record's customer (an id or alt id) to the customer's id
// and uid, and moves the records it cannot attribute to b.Unattributed. A debit of a
// voucher that is no longer the customer's current one, and use of a cap since reset or
// removed, are committed all the same: the calls they paid for or counted were allowed.
func (v *checked) attribute(found map[string]store.UsageCustomer) error {
	b, in := &v.batch, v.in
	var err error
	if b.Deltas, err = attributeEach(v, found, wire.RecordDelta, b.Deltas, in.Deltas,
		func(w *wire.UsageDelta, r *store.UsageDelta) (string, *time.Time, *time.Time) {
			return w.Customer, w.CustomerCreatedAt, &r.PeriodStart
		},
		func(r *store.UsageDelta, c store.UsageCustomer) { r.CustomerID, r.CustomerUID = c.ID, c.UID }); err != nil {
		return err
	}
	if b.GrantDraws, err = attributeEach(v, found, wire.RecordGrantDraw, b.GrantDraws, in.GrantDraws,
		func(w *wire.GrantDraw, r *store.GrantDraw) (string, *time.Time, *time.Time) {
			return w.Customer, w.CustomerCreatedAt, &r.PeriodStart
		},
		func(r *store.GrantDraw, c store.UsageCustomer) { r.CustomerID, r.CustomerUID = c.ID, c.UID }); err != nil {
		return err
	}
	if b.VoucherDebits, err = attributeEach(v, found, wire.RecordVoucherDebit, b.VoucherDebits, in.VoucherDebits,
		func(w *wire.VoucherDebit, _ *store.VoucherDebit) (string, *time.Time, *time.Time) {
			return w.Customer, w.CustomerCreatedAt, nil
		},
		func(r *store.VoucherDebit, c store.UsageCustomer) { r.CustomerID, r.CustomerUID = c.ID, c.UID }); err != nil {
		return err
	}
	if b.CapUses, err = attributeEach(v, found, wire.RecordCapUse, b.CapUses, in.CapUses,
		func(w *wire.CapUse, _ *store.CapUse) (string, *time.Time, *time.Time) {
			return w.Customer, w.CustomerCreatedAt, nil
		},
		func(r *store.CapUse, c store.UsageCustomer) { r.CustomerID, r.CustomerUID = c.ID, c.UID }); err != nil {
		return err
	}
	b.Events, err = attributeEach(v, found, wire.RecordEvent, b.Events, in.Events,
		func(w *wire.UsageEvent, _ *store.UsageEvent) (string, *time.Time, *time.Time) {
			return w.Customer, nil, nil
		},
		func(r *store.UsageEvent, c store.UsageCustomer) { r.CustomerID, r.CustomerUID = c.ID, c.UID })
	return err
}

// attributeEach keeps the records of one kind (recs, checked from ins) whose customer
// resolves, with it set by set, and moves the others to b.Unattributed. who names a
// record's customer, its creation as the SDK knew it and the period the record falls
// in (nil where the kind has none).
func attributeEach[R, W any](v *checked, found map[string]store.UsageCustomer, kind string, recs []R, ins []W,
	who func(in *W, r *R) (string, *time.Time, *time.Time), set func(r *R, c store.UsageCustomer)) ([]R, error) {
	keep := recs[:0]
	for i := range recs {
		r, in := recs[i], &ins[i]
		name, createdAt, period := who(in, &r)
		c, reason := v.customer(found, name, createdAt, period)
		if reason != "" {
			if err := v.unattributed(kind, i, name, reason, in); err != nil {
				return nil, err
			}
			continue
		}
		set(&r, c)
		keep = append(keep, r)
	}
	return keep, nil
}

// expire moves every record of the batch to b.Unattributed as batch_expired.
func (v *checked) expire() error {
	b, in := &v.batch, v.in
	if err := expireEach(v, wire.RecordDelta, in.Deltas, func(w *wire.UsageDelta) string { return w.Customer }); err != nil {
		return err
	}
	if err := expireEach(v, wire.RecordGrantDraw, in.GrantDraws, func(w *wire.GrantDraw) string { return w.Customer }); err != nil {
		return err
	}
	if err := expireEach(v, wire.RecordVoucherDebit, in.VoucherDebits, func(w *wire.VoucherDebit) string { return w.Customer }); err != nil {
		return err
	}
	if err := expireEach(v, wire.RecordCapUse, in.CapUses, func(w *wire.CapUse) string { return w.Customer }); err != nil {
		return err
	}
	if err := expireEach(v, wire.RecordEvent, in.Events, func(w *wire.UsageEvent) string { return w.Customer }); err != nil {
		return err
	}
	b.Deltas, b.GrantDraws, b.VoucherDebits, b.CapUses, b.Events = nil, nil, nil, nil, nil
	return nil
}

// expireEach moves the records of one kind to b.Unattributed as batch_expired.
func expireEach[W any](v *checked, kind string, ins []W, customer func(*W) string) error {
	for i := range ins {
		if err := v.unattributed(kind, i, customer(&ins[i]), wire.ReasonBatchExpired, &ins[i]); err != nil {
			return err
		}
	}
	return nil
}

// customer finds a record's customer, or says why the record is not the customer's:
// the name is unknown, or the record belongs to an earlier customer of that id (the
// SDK knew a customer created before the server's, or a period that started before
// the server's customer existed, beyond the window any meter can run).
func (v *checked) customer(found map[string]store.UsageCustomer, name string, createdAt *time.Time, period *time.Time) (store.UsageCustomer, string) {
	c, ok := found[name]
	if !ok {
		return c, wire.ReasonUnknownCustomer
	}
	if createdAt != nil && !createdAt.IsZero() && createdAt.Before(c.CreatedAt.Add(-recreatedTolerance)) {
		return c, wire.ReasonCustomerRecreated
	}
	if period != nil && period.Before(v.now.Add(-PeriodWindow)) && period.Before(c.CreatedAt.Add(-ClockSkew)) {
		return c, wire.ReasonCustomerRecreated
	}
	return c, ""
}

func (v *checked) unattributed(kind string, i int, customer, reason string, record any) error {
	raw, err := json.Marshal(record)
	if err != nil {
		return fmt.Errorf("usage: keep an unattributed %s: %w", kind, err)
	}
	v.batch.Unattributed = append(v.batch.Unattributed, store.Unattributed{Kind: kind, Index: i, Customer: customer, Reason: reason, Record: raw})
	return nil
}

// redate moves the usage of customers on a test clock into the meter period that
// contains the clock's time: an SDK meters by real time, while such a customer's
// periods, invoices and grace follow its clock. Levels (limits that never reset) keep
// their period.
func (s *Service) redate(ctx context.Context, tx store.DBTX, env store.Environment, v *checked, found map[string]store.UsageCustomer) error {
	if s.policies == nil {
		return nil
	}
	clocked := map[uuid.UUID]*store.ClockedCustomer{}
	for _, c := range found {
		if c.Clock != nil {
			clocked[c.UID] = c.Clock
		}
	}
	if len(clocked) == 0 {
		return nil
	}
	p, err := s.policies.ActivePolicyIn(ctx, tx, env)
	if err != nil {
		return nil // no policy to read periods from: keep the SDK's
	}
	for i := range v.batch.Deltas {
		d := &v.batch.Deltas[i]
		k := clocked[d.CustomerUID]
		if k == nil {
			continue
		}
		if start, ok := clockPeriod(p, k, d.Entitlement); ok {
			d.PeriodStart = start
		}
	}
	return nil
}

// clockPeriod is the start of the period of a customer's limit on an entitlement that
// contains its clock's time.
func clockPeriod(p *policies.Policy, k *store.ClockedCustomer, ent string) (time.Time, bool) {
	ce := p.PlanEntitlement(p.Plan(k.Plan), ent)
	if ce == nil || ce.Limit == nil || !ce.Limit.Resets() {
		return time.Time{}, false
	}
	loc := p.Location
	if k.Timezone != "" {
		if l, err := time.LoadLocation(k.Timezone); err == nil {
			loc = l
		}
	}
	return ce.Limit.Reset.CurrentStart(k.Start, k.Now, loc, k.BillingAnchor).UTC(), true
}
