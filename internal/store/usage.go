package store

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/limitr/limitr/internal/num"
)

// Usage synced from SDK instances (migrations/0002_usage.up.sql). A batch is keyed by
// (tenant, environment, instance id, sequence) and committed at most once: its row in
// usage_batches, its deltas (with the units of overage grants paid for,
// migrations/0006_grant_covered.up.sql), its grant draws (added to grant_draw_totals,
// migrations/0003_grant_draws.up.sql), its voucher debits (added to
// voucher_debit_totals, migrations/0014_vouchers.up.sql), its cap uses (added to
// cap_usage_totals, migrations/0016_customer_caps.up.sql) and its audit events go in
// together, in one transaction (CommitUsageBatch), or not at all.

// UsageBatch is a validated batch, ready to commit. Customer ids are canonical (alt
// ids already resolved).
type UsageBatch struct {
	TenantID      uuid.UUID
	EnvironmentID uuid.UUID
	InstanceID    string
	Sequence      int64
	PolicyVersion int
	SentAt        *time.Time
	Deltas        []UsageDelta
	Events        []UsageEvent
	GrantDraws    []GrantDraw
	VoucherDebits []VoucherDebit
	// CapUses are what the batch consumed of customers' caps (added to
	// cap_usage_totals, migrations/0016_customer_caps.up.sql).
	CapUses []CapUse
	// Leased: the instance holds allowance leases; the deltas (and cap uses) count
	// against them.
	Leased bool
	// Unattributed are the batch's records that name no customer of the environment:
	// committed with the batch into unattributed_usage, for an operator.
	Unattributed []Unattributed
}

// Unattributed is a record of a batch that could not be attributed to a customer.
type Unattributed struct {
	Kind     string // wire.RecordDelta, wire.RecordGrantDraw, wire.RecordVoucherDebit, wire.RecordCapUse or wire.RecordEvent
	Index    int
	Customer string
	Reason   string
	Record   []byte // the record as the SDK sent it (JSON)
}

// GrantDraw is what an SDK instance drew from one grant in one grant period.
type GrantDraw struct {
	CustomerID  string
	CustomerUID uuid.UUID
	GrantID     string
	PeriodStart time.Time
	Units       num.Dec
}

// UsageDelta is one meter's usage in one period, as the SDK summed it.
type UsageDelta struct {
	CustomerID  string
	CustomerUID uuid.UUID
	Entitlement string
	Credit      string
	PeriodStart time.Time
	Units       num.Dec
	Overhead    num.Dec
	Price       num.Dec
	Calls       int64
	// GrantCovered is how many of Units past the limit grants paid for (0 when the
	// SDK did not say).
	GrantCovered num.Dec
}

// UsageEvent is one raw call, sent in audit mode.
type UsageEvent struct {
	EventID     string
	CustomerID  string
	CustomerUID uuid.UUID
	CallerID    string
	Entitlement string
	Units       num.Dec
	Overhead    num.Dec
	Allowed     bool
	At          time.Time
}

// UsageDeltaColumns are the columns CommitUsageBatch copies deltas into.
var UsageDeltaColumns = []string{"tenant_id", "environment_id", "instance_id", "sequence", "customer_id", "customer_uid",
	"entitlement", "credit", "period_start", "units", "overhead", "price", "calls", "grant_covered"}

var usageEventColumns = []string{"tenant_id", "environment_id", "instance_id", "event_id", "customer_id", "customer_uid",
	"caller_id", "entitlement", "units", "overhead", "allowed", "at"}

// AttributeFunc attributes a batch's records, inside its transaction (tx), once the
// customers its names resolve to are known (found): it sets the customer ids and uids,
// and moves what it cannot attribute to the batch's Unattributed.
type AttributeFunc func(ctx context.Context, tx DBTX, found map[string]UsageCustomer) error

// CommitUsageBatch commits b at most once per key, in a transaction of its own on one
// of pool's connections, and reports a duplicate when the key was committed before:
// nothing is written then. The transaction takes three round trips, each a pipeline, where
// statement by statement took five or more:
//
//  1. begin (planning with parameters, forceCustomPlans); b's usage_batches row (ON
//     CONFLICT DO NOTHING on its key: a conflict is a duplicate, rolled back); the
//     customers names resolve to (ResolveUsageCustomers), unless names is empty.
//  2. attribute, then the deltas and events by COPY into the partitioned parents.
//  3. the rest of the batch (finishUsageBatch) and commit.
//
// received_at defaults to now(), the transaction's start, so a batch's rows share one
// arrival time.
func CommitUsageBatch(ctx context.Context, pool *pgxpool.Pool, b *UsageBatch, names []string, attribute AttributeFunc) (bool, error) {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return false, err
	}
	defer conn.Release()
	c := conn.Conn()
	// Whatever did not commit (an error, a duplicate, a panic in attribute) rolls back
	// before the connection goes back to the pool.
	defer rollback(ctx, c)
	return commitUsageBatch(ctx, c, b, names, attribute)
}

func commitUsageBatch(ctx context.Context, c *pgx.Conn, b *UsageBatch, names []string, attribute AttributeFunc) (duplicate bool, err error) {
	// The row counts the records before attribution; finishUsageBatch corrects it.
	deltas, events := len(b.Deltas), len(b.Events)
	found, inserted, err := beginUsageBatch(ctx, c, b, names)
	if err != nil || !inserted {
		return !inserted && err == nil, err
	}
	if err := attribute(ctx, c, found); err != nil {
		return false, err
	}
	if err := copyUsage(ctx, c, b); err != nil {
		return false, err
	}
	return false, finishUsageBatch(ctx, c, b, deltas != len(b.Deltas) || events != len(b.Events))
}

// rollback ends the transaction on c, if one is open. A connection that cannot roll
// back is closed, so the pool drops it rather than hand out an open transaction.
func rollback(ctx context.Context, c *pgx.Conn) {
	if c.PgConn().TxStatus() == 'I' {
		return
	}
	if _, err := c.Exec(ctx, "rollback"); err != nil {
		_ = c.Close(ctx)
	}
}

const insertUsageBatchRow = `insert into usage_batches (tenant_id, environment_id, instance_id, sequence, deltas, events, policy_version, sent_at)
	values ($1, $2, $3, $4, $5, $6, $7, $8)
	on conflict (tenant_id, environment_id, instance_id, sequence) do nothing
	returning true`

// beginUsageBatch is the first round trip: begin, b's row, and the customers names
// resolve to. inserted is false for a duplicate.
func beginUsageBatch(ctx context.Context, c *pgx.Conn, b *UsageBatch, names []string) (found map[string]UsageCustomer, inserted bool, err error) {
	batch := &pgx.Batch{}
	batch.Queue("begin")
	batch.Queue(forceCustomPlans)
	batch.Queue(insertUsageBatchRow, b.TenantID, b.EnvironmentID, b.InstanceID, b.Sequence, len(b.Deltas), len(b.Events), b.PolicyVersion, b.SentAt)
	if len(names) > 0 {
		batch.Queue(resolveUsageCustomers, b.TenantID, b.EnvironmentID, names)
	}
	br := c.SendBatch(ctx, batch)
	defer func() {
		if cerr := br.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}()
	for range 2 { // begin, forceCustomPlans
		if _, err := br.Exec(); err != nil {
			return nil, false, err
		}
	}
	switch err := br.QueryRow().Scan(&inserted); {
	case errors.Is(err, pgx.ErrNoRows):
		return nil, false, nil
	case err != nil:
		return nil, false, fmt.Errorf("store: insert usage batch: %w", err)
	}
	found = map[string]UsageCustomer{}
	if len(names) > 0 {
		rows, err := br.Query()
		if err != nil {
			return nil, false, err
		}
		if found, err = scanUsageCustomers(rows, len(names)); err != nil {
			return nil, false, err
		}
	}
	return found, true, nil
}

// copyUsage is the second round trip: the deltas, and the events (audit mode) in a
// third.
func copyUsage(ctx context.Context, c *pgx.Conn, b *UsageBatch) error {
	if len(b.Deltas) > 0 {
		n, err := copyDeltas(ctx, c, b)
		if err != nil {
			return fmt.Errorf("store: copy usage deltas: %w", err)
		}
		if n != int64(len(b.Deltas)) {
			return fmt.Errorf("store: copy usage deltas: wrote %d of %d rows", n, len(b.Deltas))
		}
	}
	if len(b.Events) > 0 {
		// Encode the batch's ids once instead of once per row through driver.Valuer.
		tenant := pgtype.UUID{Bytes: b.TenantID, Valid: true}
		env := pgtype.UUID{Bytes: b.EnvironmentID, Valid: true}
		i := 0
		n, err := c.CopyFrom(ctx, pgx.Identifier{"usage_events"}, usageEventColumns, pgx.CopyFromFunc(func() ([]any, error) {
			if i >= len(b.Events) {
				return nil, nil
			}
			e := &b.Events[i]
			i++
			return []any{tenant, env, b.InstanceID, e.EventID, e.CustomerID, pgtype.UUID{Bytes: e.CustomerUID, Valid: e.CustomerUID != uuid.Nil}, e.CallerID, e.Entitlement,
				pgNumeric(e.Units), pgNumeric(e.Overhead), e.Allowed, e.At}, nil
		}))
		if err != nil {
			return fmt.Errorf("store: copy usage events: %w", err)
		}
		if n != int64(len(b.Events)) {
			return fmt.Errorf("store: copy usage events: wrote %d of %d rows", n, len(b.Events))
		}
	}
	return nil
}

// finishUsageBatch is the last round trip, one pipeline: the row's counts when
// attribution changed them, the grant draws, voucher debits and cap uses added to
// their totals, the leased usage, the unattributed records, then commit. Whatever else
// a batch must write in its transaction goes in this pipeline. An error skips the rest (commit included), and
// leaves the transaction to roll back.
func finishUsageBatch(ctx context.Context, c *pgx.Conn, b *UsageBatch, recount bool) error {
	batch := &pgx.Batch{}
	if recount {
		batch.Queue(`update usage_batches set deltas = $5, events = $6
			where tenant_id = $1 and environment_id = $2 and instance_id = $3 and sequence = $4`,
			b.TenantID, b.EnvironmentID, b.InstanceID, b.Sequence, len(b.Deltas), len(b.Events))
	}
	queueGrantDraws(batch, b)
	queueVoucherDebits(batch, b)
	queueCapUses(batch, b)
	if b.Leased {
		// Allowance leases: the committed deltas (and cap uses) leave the instance's
		// leases' outstanding part as they join the meters' (caps') committed usage.
		queueLeasedUsage(batch, b)
	}
	queueUnattributed(batch, b)
	batch.Queue("commit")
	if err := c.SendBatch(ctx, batch).Close(); err != nil {
		return fmt.Errorf("store: commit usage batch: %w", err)
	}
	return nil
}

// queueGrantDraws adds the batch's grant draws to grant_draw_totals.
func queueGrantDraws(batch *pgx.Batch, b *UsageBatch) {
	queueKeyedTotals(batch, b, "grant_draw_totals", "grant_id", len(b.GrantDraws), func(i int) keyedTotal {
		d := &b.GrantDraws[i]
		return keyedTotal{d.CustomerID, d.CustomerUID, d.GrantID, d.PeriodStart, d.Units.String()}
	})
}

// keyedTotal is one record of a batch summed into a totals table keyed by customer
// incarnation, a key (a grant's id, a cap's key) and a period start.
type keyedTotal struct {
	customerID string
	uid        uuid.UUID
	key        string
	start      time.Time
	units      string
}

// queueKeyedTotals adds n records (at(i)) to table, whose key column is keyCol.
func queueKeyedTotals(batch *pgx.Batch, b *UsageBatch, table, keyCol string, n int, at func(i int) keyedTotal) {
	if n == 0 {
		return
	}
	customers := make([]string, n)
	uids := make([]uuid.UUID, n)
	keys := make([]string, n)
	starts := make([]time.Time, n)
	units := make([]string, n)
	for i := range n {
		r := at(i)
		customers[i], uids[i], keys[i], starts[i], units[i] = r.customerID, r.uid, r.key, r.start, r.units
	}
	// Summed per key first: one statement cannot update a row twice.
	batch.Queue(`insert into `+table+` as t (tenant_id, environment_id, customer_id, customer_uid, `+keyCol+`, period_start, units)
		select $1, $2, max(d.customer_id), d.customer_uid, d.key, d.period_start, sum(d.units::numeric)
		from unnest($3::text[], $4::uuid[], $5::text[], $6::timestamptz[], $7::text[]) as d(customer_id, customer_uid, key, period_start, units)
		group by d.customer_uid, d.key, d.period_start
		on conflict (customer_uid, `+keyCol+`, period_start)
		do update set units = t.units + excluded.units, updated_at = now()`,
		b.TenantID, b.EnvironmentID, customers, uids, keys, starts, units)
}

// queueVoucherDebits adds the batch's voucher debits to voucher_debit_totals.
func queueVoucherDebits(batch *pgx.Batch, b *UsageBatch) {
	if len(b.VoucherDebits) == 0 {
		return
	}
	customers := make([]string, len(b.VoucherDebits))
	uids := make([]uuid.UUID, len(b.VoucherDebits))
	vouchers := make([]string, len(b.VoucherDebits))
	runes := make([]string, len(b.VoucherDebits))
	for i, d := range b.VoucherDebits {
		customers[i], uids[i], vouchers[i], runes[i] = d.CustomerID, d.CustomerUID, d.VoucherID, d.Runes.String()
	}
	// Summed per key first, as grant draws are: one statement cannot update a row twice.
	batch.Queue(`insert into voucher_debit_totals as t (tenant_id, environment_id, customer_id, customer_uid, voucher_id, runes)
		select $1, $2, max(d.customer_id), d.customer_uid, d.voucher_id, sum(d.runes::numeric)
		from unnest($3::text[], $4::uuid[], $5::text[], $6::text[]) as d(customer_id, customer_uid, voucher_id, runes)
		group by d.customer_uid, d.voucher_id
		on conflict (customer_uid, voucher_id)
		do update set runes = t.runes + excluded.runes, updated_at = now()`,
		b.TenantID, b.EnvironmentID, customers, uids, vouchers, runes)
}

// queueUnattributed keeps the batch's unattributed records in unattributed_usage, in
// batch order.
func queueUnattributed(batch *pgx.Batch, b *UsageBatch) {
	if len(b.Unattributed) == 0 {
		return
	}
	kinds := make([]string, len(b.Unattributed))
	idx := make([]int32, len(b.Unattributed))
	customers := make([]string, len(b.Unattributed))
	reasons := make([]string, len(b.Unattributed))
	records := make([]string, len(b.Unattributed))
	for i, u := range b.Unattributed {
		kinds[i], idx[i], customers[i], reasons[i], records[i] = u.Kind, int32(u.Index), u.Customer, u.Reason, string(u.Record)
	}
	batch.Queue(`insert into unattributed_usage (tenant_id, environment_id, instance_id, sequence, kind, index, customer, reason, record)
		select $1, $2, $3, $4, u.kind, u.index, u.customer, u.reason, u.record::jsonb
		from unnest($5::text[], $6::int[], $7::text[], $8::text[], $9::text[]) with ordinality as u(kind, index, customer, reason, record, n)
		order by u.n`,
		b.TenantID, b.EnvironmentID, b.InstanceID, b.Sequence, kinds, idx, customers, reasons, records)
}

// deltaRowSize is about the binary size of a usage_deltas row: fourteen field lengths,
// three uuids, three int8s and a timestamp, four numerics and the texts.
const deltaRowSize = 256

// copyDeltas copies b's deltas into usage_deltas (UsageDeltaColumns).
func copyDeltas(ctx context.Context, c *pgx.Conn, b *UsageBatch) (int64, error) {
	buf := newCopyBuf(len(b.Deltas), deltaRowSize)
	for i := range b.Deltas {
		d := &b.Deltas[i]
		buf.row(len(UsageDeltaColumns))
		buf.uuid(b.TenantID)
		buf.uuid(b.EnvironmentID)
		buf.text(b.InstanceID)
		buf.int8(b.Sequence)
		buf.text(d.CustomerID)
		buf.uuid(d.CustomerUID)
		buf.text(d.Entitlement)
		buf.text(d.Credit)
		buf.timestamptz(d.PeriodStart)
		buf.numeric(d.Units)
		buf.numeric(d.Overhead)
		buf.numeric(d.Price)
		buf.int8(d.Calls)
		buf.numeric(d.GrantCovered)
	}
	return buf.copyIn(ctx, c.PgConn(), "usage_deltas", UsageDeltaColumns)
}

// pgNumeric converts an exact decimal for the binary COPY protocol.
func pgNumeric(d num.Dec) pgtype.Numeric {
	i := new(big.Int).SetUint64(d.Coef())
	if d.IsNeg() {
		i.Neg(i)
	}
	return pgtype.Numeric{Int: i, Exp: -int32(d.Scale()), Valid: true}
}

// UsageBatchCommitted reports whether a batch key was already committed.
func UsageBatchCommitted(ctx context.Context, db DBTX, tenantID, envID uuid.UUID, instanceID string, sequence int64) (bool, error) {
	var ok bool
	err := db.QueryRow(ctx, `select exists (select 1 from usage_batches
		where tenant_id = $1 and environment_id = $2 and instance_id = $3 and sequence = $4)`,
		tenantID, envID, instanceID, sequence).Scan(&ok)
	return ok, err
}

// UsageCustomer is what validating usage needs of a customer named in a batch.
type UsageCustomer struct {
	ID        string // canonical id (the name may be an alt id)
	UID       uuid.UUID
	CreatedAt time.Time
	// Clock is set for a customer on a test clock: its meter periods on the server
	// follow the clock's time.
	Clock *ClockedCustomer
}

// ClockedCustomer is what re-dating usage on a test clock needs of a customer.
type ClockedCustomer struct {
	Now, Start    time.Time // the clock's time; the customer's start on it
	Plan          string
	Timezone      string
	BillingAnchor time.Time
}

// ResolveUsageCustomers looks up the distinct customer names of a batch, ids or alt
// ids, in one query, and returns the ones that exist in the environment, keyed by the
// name as given (ids and alt ids share one namespace per environment). Names absent
// from the result are unknown in this tenant's environment, whatever another tenant
// or environment has.
func ResolveUsageCustomers(ctx context.Context, db DBTX, tenantID, envID uuid.UUID, names []string) (map[string]UsageCustomer, error) {
	if len(names) == 0 {
		return map[string]UsageCustomer{}, nil
	}
	rows, err := db.Query(ctx, resolveUsageCustomers, tenantID, envID, names)
	if err != nil {
		return nil, err
	}
	return scanUsageCustomers(rows, len(names))
}

// resolveUsageCustomers takes the tenant, the environment and the names. It is two
// index lookups (ids, then alt ids) rather than one join on coalesce(): no index serves
// the coalesce, and Postgres' generic plan for the cached statement then scanned every
// customer once per name. Generic plans of this statement still compare each of the
// environment's customers with each name (a parameter array is searched linearly,
// 6–7 ms for 500 names among 1,000 customers, analyzed or not); ingest plans it with
// the names (forceCustomPlans), whose array Postgres hashes: 1–2 ms. A join on
// unnest($3) is faster analyzed (0.9 ms) but compares every customer with every name
// before statistics exist (23 ms).
const resolveUsageCustomers = `select c.id, c.id, c.uid, c.created_at, ` + usageCustomerClock + ` from customers c
	left join test_clocks t on t.id = c.test_clock_id
	where c.tenant_id = $1 and c.environment_id = $2 and c.id = any($3::text[])
	union all
	select a.alt_id, c.id, c.uid, c.created_at, ` + usageCustomerClock + ` from customer_alt_ids a
	join customers c on c.tenant_id = a.tenant_id and c.environment_id = a.environment_id and c.id = a.customer_id
	left join test_clocks t on t.id = c.test_clock_id
	where a.tenant_id = $1 and a.environment_id = $2 and a.alt_id = any($3::text[])`

// forceCustomPlans makes the rest of a usage batch's transaction plan its statements
// with their parameters: see resolveUsageCustomers. The others are simple enough that
// planning them costs little.
const forceCustomPlans = "set local plan_cache_mode = force_custom_plan"

const usageCustomerClock = `c.plan, c.timezone, c.billing_anchor, t.frozen_time,
	case when c.test_clock_id is null then null else (select min(effective_at) from customer_plan_history h where h.customer_uid = c.uid) end`

// scanUsageCustomers reads resolveUsageCustomers' rows, keyed by the name as given.
func scanUsageCustomers(rows pgx.Rows, names int) (map[string]UsageCustomer, error) {
	defer rows.Close()
	out := make(map[string]UsageCustomer, names)
	// The scan targets are reused: each escapes to the heap, and a batch resolves
	// hundreds of customers. pgtype's, because uuid.UUID scans through database/sql's
	// Scanner (text), and pointers to times allocate.
	var (
		name       string
		c          UsageCustomer
		k          ClockedCustomer
		uid        pgtype.UUID
		now, start pgtype.Timestamptz
	)
	for rows.Next() {
		if err := rows.Scan(&name, &c.ID, &uid, &c.CreatedAt, &k.Plan, &k.Timezone, &k.BillingAnchor, &now, &start); err != nil {
			return nil, err
		}
		c.UID, c.Clock = uid.Bytes, nil
		if now.Valid && start.Valid {
			k.Now, k.Start = now.Time, start.Time
			c.Clock = new(k)
		}
		out[name] = c
	}
	return out, rows.Err()
}

// MeterTotal is the committed usage of one meter in one period: its aggregate plus
// the deltas the worker has not folded in yet. Numbers are exact decimal strings.
type MeterTotal struct {
	Entitlement string
	Credit      string
	PeriodStart time.Time
	Units       string
	Overhead    string
	Price       string
	Calls       int64
}

// CommittedTotals returns the committed usage of one customer (by uid: a re-created
// customer does not see its predecessor's usage) per (entitlement, period):
// meter_aggregates plus the not-yet-aggregated usage_deltas, in one statement (one
// snapshot, so a worker committing meanwhile cannot make a delta count twice or not
// at all). At most periodsPerMeter periods per entitlement, newest first; entitlements
// in name order.
func CommittedTotals(ctx context.Context, db DBTX, customerUID uuid.UUID, periodsPerMeter int) ([]MeterTotal, error) {
	if periodsPerMeter <= 0 {
		periodsPerMeter = 2
	}
	rows, err := db.Query(ctx, `with m as (
			select entitlement, period_start, credit, units, overhead, price, calls from meter_aggregates
			where customer_uid = $1
			union all
			select entitlement, period_start, credit, units, overhead, price, calls from usage_deltas
			where customer_uid = $1 and aggregated_at is null
		), t as (
			select entitlement, period_start, max(credit) as credit, sum(units) as units, sum(overhead) as overhead,
				sum(price) as price, sum(calls)::bigint as calls,
				row_number() over (partition by entitlement order by period_start desc) as rn
			from m group by entitlement, period_start
		)
		select entitlement, period_start, credit, units::text, overhead::text, price::text, calls
		from t where rn <= $2 order by entitlement, period_start desc`,
		customerUID, periodsPerMeter)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []MeterTotal{}
	for rows.Next() {
		var t MeterTotal
		if err := rows.Scan(&t.Entitlement, &t.PeriodStart, &t.Credit, &t.Units, &t.Overhead, &t.Price, &t.Calls); err != nil {
			return nil, err
		}
		t.PeriodStart = t.PeriodStart.UTC()
		t.Units, t.Overhead, t.Price = trimDecimal(t.Units), trimDecimal(t.Overhead), trimDecimal(t.Price)
		out = append(out, t)
	}
	return out, rows.Err()
}

// trimDecimal drops the trailing fractional zeros Postgres keeps from the inputs'
// scales ("12.500" → "12.5", "3.000" → "3"); the value is unchanged.
func trimDecimal(s string) string {
	if !strings.Contains(s, ".") {
		return s
	}
	s = strings.TrimRight(s, "0")
	s = strings.TrimSuffix(s, ".")
	if s == "" || s == "-" {
		return "0"
	}
	return s
}

// GrantDrawTotal is what the fleet has drawn from one grant in one grant period.
type GrantDrawTotal struct {
	GrantID     string
	PeriodStart time.Time
	Units       string
}

// CommittedGrantDraws returns a customer's (by uid) committed grant draws, at most
// periodsPerGrant periods per grant, newest first; grants in id order.
func CommittedGrantDraws(ctx context.Context, db DBTX, customerUID uuid.UUID, periodsPerGrant int) ([]GrantDrawTotal, error) {
	if periodsPerGrant <= 0 {
		periodsPerGrant = 2
	}
	rows, err := db.Query(ctx, `select grant_id, period_start, units::text from (
			select grant_id, period_start, units,
				row_number() over (partition by grant_id order by period_start desc) as rn
			from grant_draw_totals
			where customer_uid = $1
		) t where rn <= $2 order by grant_id, period_start desc`,
		customerUID, periodsPerGrant)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []GrantDrawTotal{}
	for rows.Next() {
		var t GrantDrawTotal
		if err := rows.Scan(&t.GrantID, &t.PeriodStart, &t.Units); err != nil {
			return nil, err
		}
		t.PeriodStart = t.PeriodStart.UTC()
		t.Units = trimDecimal(t.Units)
		out = append(out, t)
	}
	return out, rows.Err()
}

// LatestChangeID is the id of an environment's newest change-feed entry, or of the
// newest entry retention removed when none is left (0: none ever).
func LatestChangeID(ctx context.Context, db DBTX, tenantID, envID uuid.UUID) (int64, error) {
	var id int64
	err := db.QueryRow(ctx, `select greatest(
			coalesce((select max(id) from change_feed where tenant_id = $1 and environment_id = $2), 0),
			coalesce((select purged_through from change_feed_horizon where tenant_id = $1 and environment_id = $2), 0))`,
		tenantID, envID).Scan(&id)
	return id, err
}

// RetentionHorizon is the time before which retention removed rows of the named kind
// (zero: none removed yet).
func RetentionHorizon(ctx context.Context, db DBTX, name string) (time.Time, error) {
	var t time.Time
	err := db.QueryRow(ctx, `select before from retention_horizons where name = $1`, name).Scan(&t)
	if errors.Is(err, pgx.ErrNoRows) {
		return time.Time{}, nil
	}
	return t, err
}
