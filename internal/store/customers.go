package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/limitr/limitr/internal/wire"
)

// Customer is a customer as the control plane stores it: the record the API returns
// and SDKs hydrate (wire.Customer), and its uid. The uid is immutable and unique to
// this customer: one deleted and created again under the same id gets a new uid, and
// usage is kept per uid, so the new customer starts at zero.
type Customer struct {
	wire.Customer
	UID uuid.UUID `json:"-"`
}

// CustomerTopup is a topup applied to a customer (wire.CustomerTopup).
type CustomerTopup = wire.CustomerTopup

// CustomerOverride is one stored override: the spec as the engine reads it.
type CustomerOverride struct {
	Entitlement string
	Spec        json.RawMessage
	ExpiresAt   *time.Time
	CreatedAt   time.Time
	CreatedBy   *uuid.UUID
}

// CustomerProfile is the part of a customer plan resolution reads.
type CustomerProfile struct {
	ID   string
	Plan string
	Type string
	Refs []string
}

// AltIDConflictError reports an id or alt id already used by another customer of the
// environment.
type AltIDConflictError struct {
	Field string // "id" or "alt_ids[i]"
	Name  string
	Owner string // the customer that holds it
}

func (e *AltIDConflictError) Error() string {
	return fmt.Sprintf("%s: %q is already used by customer %q", e.Field, e.Name, e.Owner)
}

// Is makes the error match ErrConflict.
func (e *AltIDConflictError) Is(target error) bool { return target == ErrConflict }

const customerColumns = `id, plan, type, label, refs, alt_ids, metadata, timezone, billing_anchor, created_at, updated_at, revision, uid, coalesce(test_clock_id::text, '')`

func scanCustomer(row pgx.Row) (Customer, error) {
	var c Customer
	err := row.Scan(&c.ID, &c.Plan, &c.Type, &c.Label, &c.Refs, &c.AltIDs, &c.Metadata, &c.Timezone,
		&c.BillingAnchor, &c.CreatedAt, &c.UpdatedAt, &c.Revision, &c.UID, &c.TestClock)
	if err != nil {
		return Customer{}, err
	}
	normalize(&c)
	return c, nil
}

func normalize(c *Customer) {
	if c.Refs == nil {
		c.Refs = []string{}
	}
	if c.AltIDs == nil {
		c.AltIDs = []string{}
	}
	if len(c.Metadata) == 0 {
		c.Metadata = json.RawMessage("{}")
	}
	if c.Overrides == nil {
		c.Overrides = map[string]json.RawMessage{}
	}
	if c.Topups == nil {
		c.Topups = []CustomerTopup{}
	}
	c.BillingAnchor = c.BillingAnchor.UTC()
	c.CreatedAt = c.CreatedAt.UTC()
	c.UpdatedAt = c.UpdatedAt.UTC()
}

// LockCustomerNames takes transaction-scoped advisory locks on names (customer ids and
// alt ids share one namespace per environment), in a fixed order so concurrent callers
// cannot deadlock. It makes "is this name free?" checks race-free.
func LockCustomerNames(ctx context.Context, tx DBTX, envID uuid.UUID, names ...string) error {
	keys := make([]string, 0, len(names))
	for _, n := range names {
		keys = append(keys, envID.String()+":"+n)
	}
	sort.Strings(keys)
	keys = slices.Compact(keys)
	for _, k := range keys {
		if _, err := tx.Exec(ctx, `select pg_advisory_xact_lock(hashtextextended($1, 0))`, k); err != nil {
			return err
		}
	}
	return nil
}

// NameOwner returns the customer that uses name as its id or as an alt id, or "".
func NameOwner(ctx context.Context, db DBTX, tenantID, envID uuid.UUID, name string) (string, error) {
	var owner string
	err := db.QueryRow(ctx, `select id from customers where tenant_id = $1 and environment_id = $2 and id = $3
		union all
		select customer_id from customer_alt_ids where tenant_id = $1 and environment_id = $2 and alt_id = $3
		limit 1`, tenantID, envID, name).Scan(&owner)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	return owner, err
}

// InsertCustomer creates a customer with its alt ids. The caller holds the name locks
// (LockCustomerNames) for the id and every alt id. It returns ErrConflict when the id
// exists, or an *AltIDConflictError when the id or an alt id is another customer's.
// Revision, created_at and updated_at are filled in.
func InsertCustomer(ctx context.Context, tx DBTX, tenantID, envID uuid.UUID, c *Customer) error {
	normalize(c)
	owner, err := NameOwner(ctx, tx, tenantID, envID, c.ID)
	if err != nil {
		return err
	}
	if owner == c.ID {
		return fmt.Errorf("customer %q: %w", c.ID, ErrConflict)
	}
	if owner != "" {
		return &AltIDConflictError{Field: "id", Name: c.ID, Owner: owner}
	}
	for i, a := range c.AltIDs {
		owner, err := NameOwner(ctx, tx, tenantID, envID, a)
		if err != nil {
			return err
		}
		if owner != "" {
			return &AltIDConflictError{Field: fmt.Sprintf("alt_ids[%d]", i), Name: a, Owner: owner}
		}
	}
	err = tx.QueryRow(ctx, `insert into customers (tenant_id, environment_id, id, plan, type, label, refs, alt_ids, metadata, timezone, billing_anchor, test_clock_id)
		values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, nullif($12, '')::uuid) returning created_at, updated_at, revision, uid`,
		tenantID, envID, c.ID, c.Plan, c.Type, c.Label, c.Refs, c.AltIDs, []byte(c.Metadata), c.Timezone, c.BillingAnchor, c.TestClock).
		Scan(&c.CreatedAt, &c.UpdatedAt, &c.Revision, &c.UID)
	if isUniqueViolation(err) {
		return fmt.Errorf("customer %q: %w", c.ID, ErrConflict)
	}
	if err != nil {
		return err
	}
	for _, a := range c.AltIDs {
		if _, err := tx.Exec(ctx, `insert into customer_alt_ids (tenant_id, environment_id, alt_id, customer_id) values ($1, $2, $3, $4)`,
			tenantID, envID, a, c.ID); err != nil {
			if isUniqueViolation(err) {
				return &AltIDConflictError{Field: "alt_ids", Name: a, Owner: "another customer"}
			}
			return err
		}
	}
	normalize(c)
	return nil
}

// resolveID maps an id or alt id to the customer id; a customer's own id wins over
// another customer's alt id (which creation forbids anyway).
const resolveID = `(select coalesce(
	(select id from customers where tenant_id = $1 and environment_id = $2 and id = $3),
	(select customer_id from customer_alt_ids where tenant_id = $1 and environment_id = $2 and alt_id = $3)))`

// GetCustomer loads a customer by id or alt id, with its live overrides, its topups, its
// voucher and its caps.
// With forUpdate (in a transaction) the row is locked until the transaction ends.
func GetCustomer(ctx context.Context, db DBTX, tenantID, envID uuid.UUID, idOrAlt string, forUpdate bool) (Customer, error) {
	q := `select ` + customerColumns + ` from customers where tenant_id = $1 and environment_id = $2 and id = ` + resolveID
	if forUpdate {
		q += ` for update`
	}
	c, err := scanCustomer(db.QueryRow(ctx, q, tenantID, envID, idOrAlt))
	if err != nil {
		return Customer{}, notFound(err, "customer")
	}
	list := []Customer{c}
	if err := loadChildren(ctx, db, tenantID, envID, list); err != nil {
		return Customer{}, err
	}
	return list[0], nil
}

// ListCustomers pages an environment's customers by id, after the exclusive cursor
// after ("" = from the start).
func ListCustomers(ctx context.Context, db DBTX, tenantID, envID uuid.UUID, after string, limit int) ([]Customer, error) {
	return listCustomers(ctx, db, tenantID, envID, after, limit, "")
}

// ListCustomersOnClock pages the customers that live on a test clock ("" = those on
// real time), by id.
func ListCustomersOnClock(ctx context.Context, db DBTX, tenantID, envID uuid.UUID, clock, after string, limit int) ([]Customer, error) {
	return listCustomers(ctx, db, tenantID, envID, after, limit, `and test_clock_id is not distinct from nullif($5, '')::uuid`, clock)
}

// CustomersByUID loads the customers that still have these uids (a uid is gone once its
// customer is deleted), by id.
func CustomersByUID(ctx context.Context, db DBTX, tenantID, envID uuid.UUID, uids []uuid.UUID) ([]Customer, error) {
	return listCustomers(ctx, db, tenantID, envID, "", len(uids), `and uid = any($5::uuid[])`, uids)
}

func listCustomers(ctx context.Context, db DBTX, tenantID, envID uuid.UUID, after string, limit int, filter string, args ...any) ([]Customer, error) {
	rows, err := db.Query(ctx, `select `+customerColumns+` from customers
		where tenant_id = $1 and environment_id = $2 and id > $3 `+filter+` order by id limit $4`,
		append([]any{tenantID, envID, after, limit}, args...)...)
	if err != nil {
		return nil, err
	}
	out := []Customer{}
	for rows.Next() {
		c, err := scanCustomer(rows)
		if err != nil {
			rows.Close()
			return nil, err
		}
		out = append(out, c)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if err := loadChildren(ctx, db, tenantID, envID, out); err != nil {
		return nil, err
	}
	return out, nil
}

// loadChildren fills the live overrides, the topups, the vouchers and the caps of
// customers, in four queries.
func loadChildren(ctx context.Context, db DBTX, tenantID, envID uuid.UUID, cs []Customer) error {
	if len(cs) == 0 {
		return nil
	}
	ids := make([]string, len(cs))
	at := make(map[string]int, len(cs))
	for i := range cs {
		ids[i] = cs[i].ID
		at[cs[i].ID] = i
	}
	rows, err := db.Query(ctx, `select customer_id, entitlement, spec from customer_overrides
		where tenant_id = $1 and environment_id = $2 and customer_id = any($3)
		and (expires_at is null or expires_at > now()) order by customer_id, entitlement`, tenantID, envID, ids)
	if err != nil {
		return err
	}
	for rows.Next() {
		var cid, ent string
		var spec json.RawMessage
		if err := rows.Scan(&cid, &ent, &spec); err != nil {
			rows.Close()
			return err
		}
		cs[at[cid]].Overrides[ent] = spec
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	rows, err = db.Query(ctx, `select customer_id, id, topup, grant_id, credit, value::text, price::text, currency, applied_at, applied_by
		from customer_topups where tenant_id = $1 and environment_id = $2 and customer_id = any($3)
		order by customer_id, applied_at, id`, tenantID, envID, ids)
	if err != nil {
		return err
	}
	for rows.Next() {
		var cid string
		t, err := scanTopup(rows, &cid)
		if err != nil {
			rows.Close()
			return err
		}
		cs[at[cid]].Topups = append(cs[at[cid]].Topups, t)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	if err := loadVouchers(ctx, db, tenantID, envID, ids, at, cs); err != nil {
		return err
	}
	return loadCaps(ctx, db, tenantID, envID, ids, at, cs)
}

func scanTopup(row pgx.Row, customerID *string) (CustomerTopup, error) {
	var t CustomerTopup
	var value string
	var price *string
	var id uuid.UUID
	var by *uuid.UUID
	if err := row.Scan(customerID, &id, &t.Topup, &t.GrantID, &t.Credit, &value, &price, &t.Currency, &t.AppliedAt, &by); err != nil {
		return CustomerTopup{}, err
	}
	t.ID = id.String()
	if by != nil {
		t.AppliedBy = by.String()
	}
	t.Value = json.Number(value)
	if price != nil {
		t.Price = json.Number(*price)
	}
	t.AppliedAt = t.AppliedAt.UTC()
	return t, nil
}

// CustomerProfiles loads the plan-resolution fields of the given customers (by id only,
// as refs name ids), keyed by id; unknown ids are absent.
func CustomerProfiles(ctx context.Context, db DBTX, tenantID, envID uuid.UUID, ids []string) (map[string]CustomerProfile, error) {
	out := map[string]CustomerProfile{}
	if len(ids) == 0 {
		return out, nil
	}
	rows, err := db.Query(ctx, `select id, plan, type, refs from customers where tenant_id = $1 and environment_id = $2 and id = any($3)`,
		tenantID, envID, ids)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var p CustomerProfile
		if err := rows.Scan(&p.ID, &p.Plan, &p.Type, &p.Refs); err != nil {
			return nil, err
		}
		out[p.ID] = p
	}
	return out, rows.Err()
}

// UpdateCustomer writes a customer's profile fields (plan, type, label, refs, metadata,
// timezone, billing anchor; not alt ids), bumps its revision and sets c.Revision and
// c.UpdatedAt.
func UpdateCustomer(ctx context.Context, tx DBTX, tenantID, envID uuid.UUID, c *Customer) error {
	normalize(c)
	err := tx.QueryRow(ctx, `update customers set plan = $4, type = $5, label = $6, refs = $7, metadata = $8, timezone = $9,
		billing_anchor = $10, revision = revision + 1, updated_at = now()
		where tenant_id = $1 and environment_id = $2 and id = $3 returning revision, updated_at`,
		tenantID, envID, c.ID, c.Plan, c.Type, c.Label, c.Refs, []byte(c.Metadata), c.Timezone, c.BillingAnchor).
		Scan(&c.Revision, &c.UpdatedAt)
	c.UpdatedAt = c.UpdatedAt.UTC()
	return notFound(err, "customer")
}

// TouchCustomer bumps a customer's revision after a change to its overrides or topups.
func TouchCustomer(ctx context.Context, tx DBTX, tenantID, envID uuid.UUID, id string) (int64, time.Time, error) {
	var rev int64
	var at time.Time
	err := tx.QueryRow(ctx, `update customers set revision = revision + 1, updated_at = now()
		where tenant_id = $1 and environment_id = $2 and id = $3 returning revision, updated_at`,
		tenantID, envID, id).Scan(&rev, &at)
	return rev, at.UTC(), notFound(err, "customer")
}

// DeleteCustomer removes a customer (its alt ids, overrides and topups go with it) and
// keeps the record as it was in deleted_customers, under its uid, with who deleted it.
// Its usage stays under the uid: a customer created later with the same id starts at
// zero.
func DeleteCustomer(ctx context.Context, tx DBTX, tenantID, envID uuid.UUID, c Customer, deletedBy *uuid.UUID) error {
	record, err := json.Marshal(c.Customer)
	if err != nil {
		return err
	}
	tag, err := tx.Exec(ctx, `delete from customers where tenant_id = $1 and environment_id = $2 and id = $3 and uid = $4`,
		tenantID, envID, c.ID, c.UID)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("customer %q: %w", c.ID, ErrNotFound)
	}
	_, err = tx.Exec(ctx, `insert into deleted_customers (uid, tenant_id, environment_id, id, record, created_at, deleted_by)
		values ($1, $2, $3, $4, $5, $6, $7)`, c.UID, tenantID, envID, c.ID, record, c.CreatedAt, deletedBy)
	return err
}

// GetOverride loads a customer's override for an entitlement, expired or not.
func GetOverride(ctx context.Context, db DBTX, tenantID, envID uuid.UUID, customerID, ent string) (CustomerOverride, error) {
	o := CustomerOverride{Entitlement: ent}
	err := db.QueryRow(ctx, `select spec, expires_at, created_at, created_by from customer_overrides
		where tenant_id = $1 and environment_id = $2 and customer_id = $3 and entitlement = $4`,
		tenantID, envID, customerID, ent).Scan(&o.Spec, &o.ExpiresAt, &o.CreatedAt, &o.CreatedBy)
	return o, notFound(err, "override")
}

// PutOverride sets (or replaces) a customer's override for an entitlement.
func PutOverride(ctx context.Context, tx DBTX, tenantID, envID uuid.UUID, customerID string, o CustomerOverride) error {
	_, err := tx.Exec(ctx, `insert into customer_overrides (tenant_id, environment_id, customer_id, entitlement, spec, expires_at, created_by)
		values ($1, $2, $3, $4, $5, $6, $7)
		on conflict (tenant_id, environment_id, customer_id, entitlement)
		do update set spec = excluded.spec, expires_at = excluded.expires_at, created_at = now(), created_by = excluded.created_by`,
		tenantID, envID, customerID, o.Entitlement, []byte(o.Spec), o.ExpiresAt, o.CreatedBy)
	return err
}

// DeleteOverride removes a customer's override; ErrNotFound when there is none.
func DeleteOverride(ctx context.Context, tx DBTX, tenantID, envID uuid.UUID, customerID, ent string) error {
	tag, err := tx.Exec(ctx, `delete from customer_overrides where tenant_id = $1 and environment_id = $2 and customer_id = $3 and entitlement = $4`,
		tenantID, envID, customerID, ent)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("override %q: %w", ent, ErrNotFound)
	}
	return nil
}

// InsertTopup records a topup applied to a customer; t.ID and t.AppliedAt are filled in.
// Value and Price must be decimal strings (Price may be empty for no price).
func InsertTopup(ctx context.Context, tx DBTX, tenantID, envID uuid.UUID, customerID string, t *CustomerTopup) error {
	id := uuid.New()
	if t.ID != "" {
		var err error
		if id, err = uuid.Parse(t.ID); err != nil {
			return fmt.Errorf("topup id: %w", err)
		}
	}
	t.ID = id.String()
	var appliedBy *uuid.UUID
	if t.AppliedBy != "" {
		by, err := uuid.Parse(t.AppliedBy)
		if err != nil {
			return fmt.Errorf("topup applied_by: %w", err)
		}
		appliedBy = &by
	}
	if t.Currency == "" {
		t.Currency = "usd"
	}
	var price *string
	if t.Price != "" {
		p := t.Price.String()
		price = &p
	}
	var value string
	err := tx.QueryRow(ctx, `insert into customer_topups (id, tenant_id, environment_id, customer_id, topup, grant_id, credit, value, price, currency, applied_by)
		values ($1, $2, $3, $4, $5, $6, $7, cast($8::text as numeric), cast($9::text as numeric), $10, $11)
		returning applied_at, value::text, price::text`,
		id, tenantID, envID, customerID, t.Topup, t.GrantID, t.Credit, t.Value.String(), price, t.Currency, appliedBy).
		Scan(&t.AppliedAt, &value, &price)
	if err != nil {
		return err
	}
	t.AppliedAt = t.AppliedAt.UTC()
	t.Value = json.Number(value)
	t.Price = ""
	if price != nil {
		t.Price = json.Number(*price)
	}
	return nil
}
