package billing

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/limitr/limitr/internal/enforcement"
	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/policies"
	"github.com/limitr/limitr/internal/policies/pgstore"
	"github.com/limitr/limitr/internal/store"
	"github.com/limitr/limitr/internal/validation"
)

// Policies reads the versions billing rates with.
type Policies interface {
	Source(ctx context.Context, tenantID uuid.UUID, number int) (pgstore.Version, *policies.Policy, error)
	ActivePolicy(ctx context.Context, env store.Environment) (*policies.Policy, error)
	// ActivePolicyIn reads through db (inside a transaction).
	ActivePolicyIn(ctx context.Context, db store.DBTX, env store.Environment) (*policies.Policy, error)
	// SourcesIn compiles versions by number, read through db.
	SourcesIn(ctx context.Context, db pgstore.DBTX, tenantID uuid.UUID, numbers []int) (map[int]*policies.Policy, error)
}

// Customers pages an environment's customers with their uids and resolved plans.
type Customers interface {
	Records(ctx context.Context, env store.Environment, p *policies.Policy, clock, after string, limit int) ([]store.Customer, error)
	GetRecord(ctx context.Context, env store.Environment, id string) (store.Customer, error)
	RecordsByUID(ctx context.Context, env store.Environment, p *policies.Policy, uids []uuid.UUID) ([]store.Customer, error)
	// RecordsByUIDIn reads through db (inside a transaction).
	RecordsByUIDIn(ctx context.Context, db store.DBTX, env store.Environment, p *policies.Policy, uids []uuid.UUID) ([]store.Customer, error)
}

// Mirror follows invoices into an outside system (Stripe). It is told inside the
// transaction that changes an invoice, so the jobs it queues commit with the change.
type Mirror interface {
	InvoicesFinalized(ctx context.Context, tx pgx.Tx, env store.Environment, ids []uuid.UUID) error
	InvoiceStatusChanged(ctx context.Context, tx pgx.Tx, env store.Environment, id uuid.UUID, status string) error
	CreditNoteCreated(ctx context.Context, tx pgx.Tx, env store.Environment, invoiceID, noteID uuid.UUID) error
}

// Service is the billing domain.
type Service struct {
	alerts    InvoiceAlerts
	pool      *pgxpool.Pool
	policies  Policies
	customers Customers
	mirror    Mirror
	now       func() time.Time
}

// SetMirror makes the service tell m about invoice changes (nil: nobody).
func (s *Service) SetMirror(m Mirror) { s.mirror = m }

// NewService returns the billing service.
func NewService(pool *pgxpool.Pool, pols Policies, custs Customers) *Service {
	return &Service{pool: pool, policies: pols, customers: custs, now: time.Now}
}

// ActivePolicy is the environment's published policy (ErrNoPolicy when none).
func (s *Service) ActivePolicy(ctx context.Context, env store.Environment) (*policies.Policy, error) {
	p, err := s.policies.ActivePolicy(ctx, env)
	if errors.Is(err, pgstore.ErrNoActivePolicy) {
		return nil, fmt.Errorf("%w: environment %q", ErrNoPolicy, env.Name)
	}
	return p, err
}

// Environments lists the environments with a published policy: those billing runs for.
func (s *Service) Environments(ctx context.Context) ([]store.Environment, error) {
	rows, err := s.pool.Query(ctx, `select e.id, e.tenant_id, e.name, e.live, e.created_at from environments e
		join environment_policies p on p.tenant_id = e.tenant_id and p.environment_id = e.id order by e.id`)
	if err != nil {
		return nil, fmt.Errorf("billing: environments: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.Environment, error) {
		var e store.Environment
		return e, r.Scan(&e.ID, &e.TenantID, &e.Name, &e.Live, &e.CreatedAt)
	})
}

// CloseAll runs Close at real time for every billed environment and finishes test
// clocks left advancing. It is the worker's periodic billing pass.
func (s *Service) CloseAll(ctx context.Context) (CloseResult, error) {
	var total CloseResult
	envs, err := s.Environments(ctx)
	if err != nil {
		return total, err
	}
	var errs []error
	for _, env := range envs {
		r, err := s.Close(ctx, env, "", s.now())
		total.add(r)
		if err != nil {
			errs = append(errs, fmt.Errorf("environment %s: %w", env.ID, err))
		}
	}
	clocks, err := s.AdvancingClocks(ctx)
	if err != nil {
		return total, err
	}
	for _, c := range clocks {
		env, err := store.EnvironmentByID(ctx, s.pool, c.TenantID, c.EnvironmentID)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		r, err := s.RunTestClock(ctx, env, c.ID)
		total.add(r)
		if err != nil {
			errs = append(errs, fmt.Errorf("test clock %s: %w", c.ID, err))
		}
	}
	return total, errors.Join(errs...)
}

// envVersions is an environment's publication history, compiled on demand. It is safe
// for concurrent use (Close rates pages in parallel).
type envVersions struct {
	ctx      context.Context
	svc      *Service
	tenantID uuid.UUID
	pubs     []publication // oldest first
	mu       sync.Mutex
	compiled map[int]*policies.Policy
}

type publication struct {
	at     time.Time
	number int
}

func (s *Service) versions(ctx context.Context, db store.DBTX, env store.Environment) (*envVersions, error) {
	rows, err := db.Query(ctx, `select p.published_at, v.number from policy_publications p
		join policy_versions v on v.tenant_id = p.tenant_id and v.id = p.version_id
		where p.tenant_id = $1 and p.environment_id = $2 order by p.id`, env.TenantID, env.ID)
	if err != nil {
		return nil, fmt.Errorf("billing: publications: %w", err)
	}
	pubs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (publication, error) {
		var p publication
		return p, r.Scan(&p.at, &p.number)
	})
	if err != nil {
		return nil, fmt.Errorf("billing: publications: %w", err)
	}
	if len(pubs) == 0 {
		return nil, fmt.Errorf("%w: environment %q", ErrNoPolicy, env.Name)
	}
	// Every published version is loaded now, through db, rather than when rating first
	// needs it: that happens inside closing transactions, which must not wait for a
	// second pool connection while they hold one.
	numbers := make([]int, 0, len(pubs))
	for _, p := range pubs {
		if !slices.Contains(numbers, p.number) {
			numbers = append(numbers, p.number)
		}
	}
	compiled, err := s.policies.SourcesIn(ctx, db, env.TenantID, numbers)
	if err != nil {
		return nil, fmt.Errorf("billing: policy versions: %w", err)
	}
	return &envVersions{ctx: ctx, svc: s, tenantID: env.TenantID, pubs: pubs, compiled: compiled}, nil
}

// At is the version in force at t: the last published at or before it, else the first.
func (v *envVersions) At(t time.Time) (Version, error) {
	n := v.pubs[0].number
	for _, p := range v.pubs {
		if p.at.After(t) {
			break
		}
		n = p.number
	}
	return v.Number(n)
}

// Number compiles a version (pgstore caches compiled versions).
func (v *envVersions) Number(n int) (Version, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if p, ok := v.compiled[n]; ok {
		return Version{Number: n, Policy: p}, nil
	}
	_, p, err := v.svc.policies.Source(v.ctx, v.tenantID, n)
	if err != nil {
		return Version{}, fmt.Errorf("billing: policy version %d: %w", n, err)
	}
	v.compiled[n] = p
	return Version{Number: n, Policy: p}, nil
}

// subject builds the rating view of a customer.
func subject(c store.Customer, plans []PlanSpan) (Subject, error) {
	sub := Subject{ID: c.ID, ResolvedPlan: c.ResolvedPlan, Anchor: c.BillingAnchor, CreatedAt: c.CreatedAt, Plans: plans}
	if len(plans) > 0 {
		// Billing starts with the first plan record: creation, or the test clock's time
		// when the customer was created on one.
		sub.CreatedAt = plans[0].From
	}
	if c.Timezone != "" {
		loc, err := LoadLocation(c.Timezone)
		if err != nil {
			return Subject{}, fmt.Errorf("billing: customer %q: time zone: %w", c.ID, err)
		}
		sub.Location = loc
	}
	if len(c.Overrides) > 0 {
		sub.Overrides = make(map[string]enforcement.Override, len(c.Overrides))
		for ent, raw := range c.Overrides {
			var o enforcement.Override
			if err := json.Unmarshal(raw, &o); err != nil {
				return Subject{}, fmt.Errorf("billing: customer %q: override %q: %w", c.ID, ent, err)
			}
			sub.Overrides[ent] = o
		}
	}
	return sub, nil
}

// locations caches time zones by name: time.LoadLocation reads and parses the zone
// file on every call.
var locations sync.Map // string → *time.Location

// LoadLocation is time.LoadLocation, each zone read once per process: billing and
// alert ingest load a customer's zone per customer, per pass or batch.
func LoadLocation(name string) (*time.Location, error) {
	if loc, ok := locations.Load(name); ok {
		return loc.(*time.Location), nil
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, err
	}
	locations.Store(name, loc)
	return loc, nil
}

// location is where a customer's periods are reckoned: its time zone, else the
// policy's.
func (sub Subject) location(p *policies.Policy) *time.Location {
	if sub.Location != nil {
		return sub.Location
	}
	return p.Location
}

// customerData is what rating needs from the database for a set of customers.
type customerData struct {
	plans  map[uuid.UUID][]PlanSpan
	meters map[uuid.UUID][]MeterUsage
	billed map[uuid.UUID][]BilledMeter
}

// loadCustomerData reads plan histories, committed meters and billed meter periods of
// customers in three queries. Meters are those that can belong to a period ending by
// `until`: every meter period starting before it within a year and a month (the
// longest reset), and every level meter. A zero until reads the plan histories only.
func loadCustomerData(ctx context.Context, db store.DBTX, uids []uuid.UUID, until time.Time) (customerData, error) {
	out := customerData{plans: make(map[uuid.UUID][]PlanSpan, len(uids)), meters: make(map[uuid.UUID][]MeterUsage, len(uids)),
		billed: map[uuid.UUID][]BilledMeter{}}
	arr := pgUUIDs(uids)
	rows, err := db.Query(ctx, `select customer_uid, effective_at, plan from customer_plan_history
		where customer_uid = any($1) order by customer_uid, effective_at`, arr)
	if err != nil {
		return out, fmt.Errorf("billing: plan history: %w", err)
	}
	for rows.Next() {
		var uid uuid.UUID
		var s PlanSpan
		if err := rows.Scan(&uid, &s.From, &s.Plan); err != nil {
			rows.Close()
			return out, err
		}
		out.plans[uid] = append(out.plans[uid], s)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return out, fmt.Errorf("billing: plan history: %w", err)
	}
	if until.IsZero() {
		return out, nil // plan histories only: loadUsage adds the rest
	}
	return out, loadUsage(ctx, db, uids, until, &out)
}

// loadUsage reads the committed meters and billed meter periods of customers into out.
func loadUsage(ctx context.Context, db store.DBTX, uids []uuid.UUID, until time.Time, out *customerData) error {
	if len(uids) == 0 {
		return nil
	}
	arr := pgUUIDs(uids)
	rows, err := db.Query(ctx, `select customer_uid, entitlement, period_start, units::text, grant_covered::text, overhead::text from meter_aggregates
		where customer_uid = any($1) and period_start < $2`, arr, until)
	if err != nil {
		return fmt.Errorf("billing: meters: %w", err)
	}
	for rows.Next() {
		var uid uuid.UUID
		var m MeterUsage
		var units, granted, overhead string
		if err := rows.Scan(&uid, &m.Entitlement, &m.PeriodStart, &units, &granted, &overhead); err != nil {
			rows.Close()
			return err
		}
		if m.Units, err = num.Parse(units); err == nil {
			m.GrantCovered, err = num.Parse(granted)
		}
		if err == nil {
			m.Overhead, err = num.Parse(overhead)
		}
		if err != nil {
			rows.Close()
			return fmt.Errorf("billing: meter %s of %s: %w", m.Entitlement, uid, err)
		}
		out.meters[uid] = append(out.meters[uid], m)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("billing: meters: %w", err)
	}
	rows, err = db.Query(ctx, `select b.customer_uid, b.entitlement, b.period_start, b.units::text, b.grant_covered::text, b.amount::text, b.policy_version
		from billed_meter_periods b join meter_aggregates m
		  on m.customer_uid = b.customer_uid and m.entitlement = b.entitlement and m.period_start = b.period_start
		where b.customer_uid = any($1) and (m.units <> b.units or m.grant_covered <> b.grant_covered)`, arr)
	if err != nil {
		return fmt.Errorf("billing: billed meters: %w", err)
	}
	for rows.Next() {
		var uid uuid.UUID
		var b BilledMeter
		var units, granted, amount string
		if err := rows.Scan(&uid, &b.Entitlement, &b.PeriodStart, &units, &granted, &amount, &b.PolicyVersion); err != nil {
			rows.Close()
			return err
		}
		b.Units, _ = num.Parse(units)
		b.GrantCovered, _ = num.Parse(granted)
		b.Amount, _ = num.Parse(amount)
		out.billed[uid] = append(out.billed[uid], b)
	}
	rows.Close()
	return rows.Err()
}

// rate rates one customer's period.
func (s *Service) rate(set Settings, vers Versions, c store.Customer, data customerData, per Period, now time.Time) (Rated, error) {
	sub, err := subject(c, data.plans[c.UID])
	if err != nil {
		return Rated{}, err
	}
	return rateSubject(set, vers, sub, c.UID, data, per, now)
}

// rateSubject rates the period of a customer whose subject is built already.
func rateSubject(set Settings, vers Versions, sub Subject, uid uuid.UUID, data customerData, per Period, now time.Time) (Rated, error) {
	if now.After(per.End) {
		now = per.End
	}
	return Rate(RatingInput{Currency: set.Currency, RuneRate: set.runeRate, Versions: vers, Customer: sub, Period: per,
		Meters: data.meters[uid], Billed: data.billed[uid], Now: now})
}

// clockNow is the time a customer lives on: its test clock's, else real time.
func (s *Service) clockNow(ctx context.Context, db store.DBTX, env store.Environment, c store.Customer) (time.Time, error) {
	if c.TestClock == "" {
		return s.now(), nil
	}
	return store.TestClockTime(ctx, db, env.TenantID, env.ID, c.TestClock)
}

// Upcoming is the invoice of the customer's current period as it stands now: not
// stored, status "upcoming".
func (s *Service) Upcoming(ctx context.Context, env store.Environment, customerID string) (Invoice, error) {
	if validation.ID("id", customerID) != nil {
		return Invoice{}, fmt.Errorf("%w: customer %q", ErrNotFound, customerID)
	}
	c, err := s.customers.GetRecord(ctx, env, customerID)
	if err != nil {
		return Invoice{}, err
	}
	set, err := s.Settings(ctx, env)
	if err != nil {
		return Invoice{}, err
	}
	vers, err := s.versions(ctx, s.pool, env)
	if err != nil {
		return Invoice{}, err
	}
	now, err := s.clockNow(ctx, s.pool, env, c)
	if err != nil {
		return Invoice{}, err
	}
	// The plan history dates the period; the usage is read up to the period's end.
	data, err := loadCustomerData(ctx, s.pool, []uuid.UUID{c.UID}, time.Time{})
	if err != nil {
		return Invoice{}, err
	}
	sub, err := subject(c, data.plans[c.UID])
	if err != nil {
		return Invoice{}, err
	}
	v, err := vers.At(now)
	if err != nil {
		return Invoice{}, err
	}
	per := PeriodAt(now, sub.CreatedAt, sub.Anchor, sub.location(v.Policy))
	if err := loadUsage(ctx, s.pool, []uuid.UUID{c.UID}, per.End, &data); err != nil {
		return Invoice{}, err
	}
	rated, err := rateSubject(set, vers, sub, c.UID, data, per, now)
	if err != nil {
		return Invoice{}, err
	}
	inv := Invoice{Kind: "period", Customer: c.ID, Status: StatusUpcoming, Currency: set.Currency, PeriodStart: per.Start, PeriodEnd: per.End}
	due := per.End.Add(set.Grace).AddDate(0, 0, set.DaysUntilDue)
	inv.DueAt = &due
	inv.setLines(rated, set.Currency)
	return inv, nil
}

// sortLines keeps an invoice's lines in a stable order.
func sortLines(lines []Line) {
	slices.SortStableFunc(lines, func(a, b Line) int { return cmp.Compare(lineRank(a.Kind), lineRank(b.Kind)) })
}

func lineRank(kind string) int {
	switch kind {
	case KindPlanFee:
		return 0
	case KindProration:
		return 1
	case KindUsage, KindCredit:
		return 2
	case KindAdjustment:
		return 3
	case KindTopup:
		return 4
	}
	return 0 // as a missing key of the map this replaced
}

// record writes the audit entry and the change-feed entry of a billing change.
func (s *Service) record(ctx context.Context, tx pgx.Tx, env store.Environment, action, resource, id string, before, after any) error {
	envID := env.ID
	if err := store.RecordAudit(ctx, tx, store.AuditEntry{TenantID: env.TenantID, EnvironmentID: &envID,
		Action: action, Resource: resource, ResourceID: id}, before, after); err != nil {
		return fmt.Errorf("billing: audit: %w", err)
	}
	if _, err := store.AppendChange(ctx, tx, env.TenantID, env.ID, resource, id, map[string]any{"action": action, "data": after}); err != nil {
		return fmt.Errorf("billing: change feed: %w", err)
	}
	return nil
}
