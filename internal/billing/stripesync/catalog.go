package stripesync

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/limitr/limitr/internal/billing"
	"github.com/limitr/limitr/internal/billing/stripe"
	"github.com/limitr/limitr/internal/policies"
	"github.com/limitr/limitr/internal/store"
)

// SyncCatalogArgs is the periodic catalog sync: customers created or changed since
// their last sync, and plans whose fee changed.
type SyncCatalogArgs struct{}

// Kind implements river.JobArgs.
func (SyncCatalogArgs) Kind() string { return "limitr.stripe_sync_catalog" }

// connectedEnvironments lists the environments connected to Stripe.
func (s *Service) connectedEnvironments(ctx context.Context) ([]store.Environment, error) {
	rows, err := s.pool.Query(ctx, `select e.id, e.tenant_id, e.name, e.live, e.created_at from stripe_connections c
		join environments e on e.tenant_id = c.tenant_id and e.id = c.environment_id order by e.id`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.Environment, error) {
		var e store.Environment
		return e, r.Scan(&e.ID, &e.TenantID, &e.Name, &e.Live, &e.CreatedAt)
	})
}

// SyncCatalog syncs customers and plans of every connected environment.
func (s *Service) SyncCatalog(ctx context.Context) error {
	envs, err := s.connectedEnvironments(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, env := range envs {
		if err := s.SyncCustomers(ctx, env); err != nil {
			errs = append(errs, fmt.Errorf("environment %s: customers: %w", env.ID, err))
		}
		if err := s.SyncPlans(ctx, env); err != nil {
			errs = append(errs, fmt.Errorf("environment %s: plans: %w", env.ID, err))
		}
	}
	return errors.Join(errs...)
}

// customerInput is a customer as Stripe should know it, with its revision: name and
// email from its metadata when present.
func (s *Service) customerInput(ctx context.Context, env store.Environment, uid uuid.UUID, id string) (stripe.Customer, int64, error) {
	var meta []byte
	var revision int64
	err := s.pool.QueryRow(ctx, `select metadata, revision from customers where uid = $1`, uid).Scan(&meta, &revision)
	if errors.Is(err, pgx.ErrNoRows) {
		// Deleted since: its record is kept with its usage.
		err = s.pool.QueryRow(ctx, `select record->'metadata', 0 from deleted_customers where uid = $1`, uid).Scan(&meta, &revision)
	}
	if err != nil {
		return stripe.Customer{}, 0, fmt.Errorf("stripesync: customer %s: %w", id, err)
	}
	in := stripe.Customer{LimitrCustomerID: id}
	var m map[string]any
	_ = json.Unmarshal(meta, &m)
	if v, ok := m["name"].(string); ok {
		in.Name = v
	}
	if v, ok := m["email"].(string); ok {
		in.Email = v
	}
	return in, revision, nil
}

// SyncCustomers creates in Stripe the customers it does not know yet and updates those
// changed since their last sync (metadata limitr_customer_id), a page at a time.
func (s *Service) SyncCustomers(ctx context.Context, env store.Environment) error {
	rows, err := s.pool.Query(ctx, `select c.uid, c.id, c.revision, s.stripe_id from customers c
		left join stripe_customers s on s.customer_uid = c.uid
		where c.tenant_id = $1 and c.environment_id = $2 and c.test_clock_id is null and (s.customer_uid is null or s.synced_revision < c.revision)
		order by c.id limit 1000`, env.TenantID, env.ID)
	if err != nil {
		return err
	}
	type todo struct {
		uid      uuid.UUID
		id       string
		revision int64
		stripeID *string
	}
	list, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (todo, error) {
		var t todo
		return t, r.Scan(&t.uid, &t.id, &t.revision, &t.stripeID)
	})
	if err != nil || len(list) == 0 {
		return err
	}
	c, err := s.client(ctx, env)
	if err != nil {
		return err
	}
	for _, t := range list {
		in, revision, err := s.customerInput(ctx, env, t.uid, t.id)
		if err != nil {
			return err
		}
		step := "create"
		if t.stripeID != nil {
			in.StripeID, step = *t.stripeID, "rev:"+strconv.FormatInt(revision, 10)
		}
		sid, err := c.UpsertCustomer(ctx, stripe.IdempotencyKey("cus", t.uid.String(), step), in)
		if err != nil {
			return err
		}
		if _, err := s.pool.Exec(ctx, `insert into stripe_customers (customer_uid, tenant_id, environment_id, stripe_id, synced_revision)
			values ($1, $2, $3, $4, $5) on conflict (customer_uid) do update set synced_revision = greatest(stripe_customers.synced_revision, excluded.synced_revision),
			updated_at = now()`, t.uid, env.TenantID, env.ID, sid, revision); err != nil {
			return err
		}
	}
	return nil
}

// SyncPlans makes each plan with a priced subscription a Stripe product with a monthly
// price of its fee. A changed fee is a new price (the old one is deactivated, never
// edited), so a Stripe pricing table can show the plans.
func (s *Service) SyncPlans(ctx context.Context, env store.Environment) error {
	p, err := s.billing.ActivePolicy(ctx, env)
	if errors.Is(err, billing.ErrNoPolicy) {
		return nil
	}
	if err != nil {
		return err
	}
	set, err := s.billing.Settings(ctx, env)
	if err != nil {
		return err
	}
	var c *stripe.Client
	for _, plan := range p.Plans {
		fee, ok, err := billing.PlanFee(p, plan, set)
		if err != nil || !ok {
			if err != nil {
				return err
			}
			continue
		}
		amount, err := stripe.StripeAmount(fee, set.Currency)
		if err != nil {
			return err
		}
		var productID string
		var priceID *string
		var unit *int64
		var currency *string
		err = s.pool.QueryRow(ctx, `select product_id, price_id, unit_amount, currency from stripe_plans
			where tenant_id = $1 and environment_id = $2 and plan = $3`, env.TenantID, env.ID, plan.Name).Scan(&productID, &priceID, &unit, &currency)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		if priceID != nil && unit != nil && *unit == amount && currency != nil && *currency == set.Currency {
			continue
		}
		if c == nil {
			if c, err = s.client(ctx, env); err != nil {
				return err
			}
		}
		if productID == "" {
			productID, err = c.EnsureProduct(ctx, stripe.IdempotencyKey("prod", env.ID.String(), plan.Name), stripe.Product{
				Name: planName(plan), Plan: plan.Name, Environment: env.Name, Description: plan.Description})
			if err != nil {
				return err
			}
		}
		newPrice, err := c.CreatePrice(ctx, stripe.IdempotencyKey("price", env.ID.String(), plan.Name, set.Currency, strconv.FormatInt(amount, 10)),
			stripe.Price{ProductID: productID, Currency: set.Currency, UnitAmount: amount, Nickname: planName(plan)})
		if err != nil {
			return err
		}
		if priceID != nil && *priceID != newPrice {
			if err := c.DeactivatePrice(ctx, stripe.IdempotencyKey("price", *priceID, "deactivate"), *priceID); err != nil {
				return err
			}
		}
		if _, err := s.pool.Exec(ctx, `insert into stripe_plans (tenant_id, environment_id, plan, product_id, price_id, unit_amount, currency)
			values ($1, $2, $3, $4, $5, $6, $7) on conflict (tenant_id, environment_id, plan) do update set product_id = excluded.product_id,
			price_id = excluded.price_id, unit_amount = excluded.unit_amount, currency = excluded.currency, updated_at = now()`,
			env.TenantID, env.ID, plan.Name, productID, newPrice, amount, set.Currency); err != nil {
			return err
		}
	}
	return nil
}

func planName(p *policies.CompiledPlan) string {
	if p.Label != "" {
		return p.Label
	}
	return p.Name
}
