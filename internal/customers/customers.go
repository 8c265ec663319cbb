package customers

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/limitr/limitr/internal/policies"
	"github.com/limitr/limitr/internal/store"
	"github.com/limitr/limitr/internal/validation"
	"github.com/limitr/limitr/internal/wire"
)

// Change-feed operations (wire.CustomerChanged.Op).
const (
	opUpsert   = "upsert"
	opDelete   = "delete"
	opPlan     = "plan"
	opOverride = "override"
	opTopup    = "topup"
)

// Create creates a customer. Refs must name customers of the environment (by id; refs
// never resolve through alt ids). Metadata in Limitr's voucher form
// (VoucherFromMetadata) sets the customer's voucher in the same transaction. ErrExists when the id is taken by a customer,
// *NameTakenError when the id or an alt id is another customer's.
func (s *Service) Create(ctx context.Context, env store.Environment, in CreateInput) (wire.Customer, error) {
	c, err := in.prepare(s.now())
	if err != nil {
		return wire.Customer{}, err
	}
	p, err := s.policy(ctx, env)
	if err != nil {
		return wire.Customer{}, err
	}
	if c.plan != "" && p.Plan(c.plan) == nil {
		return wire.Customer{}, validation.New("invalid customer", "plan", fmt.Sprintf("unknown plan %q", c.plan))
	}
	var out store.Customer
	err = s.mutation(ctx, env, func(tx pgx.Tx) (*change, error) {
		if err := checkRefsExist(ctx, tx, env, c.refs); err != nil {
			return nil, err
		}
		cust := store.Customer{Customer: wire.Customer{ID: c.id, Plan: c.plan, Type: c.typ, Label: c.label, Refs: c.refs,
			AltIDs: c.alts, Metadata: c.meta, Timezone: c.tz, BillingAnchor: c.anchor, TestClock: c.testClock}}
		if c.testClock != "" {
			// A customer on a test clock starts at the clock's time: its billing anchor
			// defaults to it, and its plan history (kept by the database) is dated by it.
			now, err := store.TestClockTime(ctx, tx, env.TenantID, env.ID, c.testClock)
			if errors.Is(err, store.ErrNotFound) {
				return nil, validation.New("invalid customer", "test_clock", fmt.Sprintf("no test clock %q in this environment", c.testClock))
			}
			if err != nil {
				return nil, err
			}
			if !c.anchorSet {
				cust.BillingAnchor = now.UTC()
			}
		}
		// As the engine does: an empty plan inherits through refs; failing that, the
		// customer is put on the default plan by name.
		if cust.Plan == "" {
			g, err := loadRefs(ctx, tx, env, cust.Refs)
			if err != nil {
				return nil, err
			}
			if policies.PlanThroughRefs(p, refNode(&cust), g) == nil {
				if p.DefaultPlan == nil {
					return nil, validation.New("invalid customer", "plan", "is required: no ref has a plan and the active policy has no default plan")
				}
				cust.Plan = p.DefaultPlan.Name
			}
		}
		if err := store.LockCustomerNames(ctx, tx, env.ID, append([]string{cust.ID}, cust.AltIDs...)...); err != nil {
			return nil, err
		}
		if err := store.InsertCustomer(ctx, tx, env.TenantID, env.ID, &cust); err != nil {
			if errors.Is(err, store.ErrConflict) && !errors.As(err, new(*store.AltIDConflictError)) {
				return nil, fmt.Errorf("%w: customer %q: use PATCH to update it", ErrExists, cust.ID)
			}
			return nil, err
		}
		if c.voucher != nil {
			if err := putVoucher(ctx, tx, env, cust, *c.voucher); err != nil {
				return nil, err
			}
		}
		after, err := s.load(ctx, tx, p, env, cust.ID, false)
		if err != nil {
			return nil, err
		}
		out = after
		return &change{subject: after.ID, action: "customer.create", after: after.Customer,
			feed: feedOf(opUpsert, after)}, nil
	})
	return out.Customer, err
}

// Get reads a customer by id or alt id, with its resolved plan.
func (s *Service) Get(ctx context.Context, env store.Environment, id string) (wire.Customer, error) {
	c, err := s.GetRecord(ctx, env, id)
	return c.Customer, err
}

// GetRecord is Get with the customer's uid.
func (s *Service) GetRecord(ctx context.Context, env store.Environment, id string) (store.Customer, error) {
	p, err := s.policyOrNil(ctx, env)
	if err != nil {
		return store.Customer{}, err
	}
	return s.load(ctx, s.pool, p, env, id, false)
}

// Records pages the customers on a test clock ("" = on real time) by id, with their
// uids and resolved plans under p: billing rates them.
func (s *Service) Records(ctx context.Context, env store.Environment, p *policies.Policy, clock, after string, limit int) ([]store.Customer, error) {
	cs, err := store.ListCustomersOnClock(ctx, s.pool, env.TenantID, env.ID, clock, after, limit)
	if err != nil {
		return nil, err
	}
	ptrs := make([]*store.Customer, len(cs))
	for i := range cs {
		ptrs[i] = &cs[i]
	}
	return cs, fillResolvedPlans(ctx, s.pool, p, env, ptrs...)
}

// RecordsByUID loads the customers that still have these uids, with their resolved
// plans under p; deleted ones are absent.
func (s *Service) RecordsByUID(ctx context.Context, env store.Environment, p *policies.Policy, uids []uuid.UUID) ([]store.Customer, error) {
	return s.RecordsByUIDIn(ctx, s.pool, env, p, uids)
}

// RecordsByUIDIn is RecordsByUID read through db: inside a transaction, so the caller
// does not wait for a second pool connection while it holds one.
func (s *Service) RecordsByUIDIn(ctx context.Context, db store.DBTX, env store.Environment, p *policies.Policy, uids []uuid.UUID) ([]store.Customer, error) {
	cs, err := store.CustomersByUID(ctx, db, env.TenantID, env.ID, uids)
	if err != nil {
		return nil, err
	}
	ptrs := make([]*store.Customer, len(cs))
	for i := range cs {
		ptrs[i] = &cs[i]
	}
	return cs, fillResolvedPlans(ctx, db, p, env, ptrs...)
}

// List pages an environment's customers by id, after the exclusive cursor after.
// next is the cursor of the following page ("" on the last page).
func (s *Service) List(ctx context.Context, env store.Environment, after string, limit int) (page []wire.Customer, next string, err error) {
	p, err := s.policyOrNil(ctx, env)
	if err != nil {
		return nil, "", err
	}
	cs, err := store.ListCustomers(ctx, s.pool, env.TenantID, env.ID, after, limit+1)
	if err != nil {
		return nil, "", err
	}
	if len(cs) > limit {
		cs, next = cs[:limit], cs[limit-1].ID
	}
	ptrs := make([]*store.Customer, len(cs))
	for i := range cs {
		ptrs[i] = &cs[i]
	}
	if err := fillResolvedPlans(ctx, s.pool, p, env, ptrs...); err != nil {
		return nil, "", err
	}
	page = make([]wire.Customer, len(cs))
	for i := range cs {
		page[i] = cs[i].Customer
	}
	return page, next, nil
}

// Update changes a customer's profile fields. An update that changes nothing writes
// nothing and returns the customer as it is. Metadata whose voucher form
// (VoucherFromMetadata) the update changes sets a new voucher in the same
// transaction; metadata without it leaves the voucher as it is (RemoveVoucher removes
// one).
func (s *Service) Update(ctx context.Context, env store.Environment, id string, in UpdateInput) (wire.Customer, error) {
	meta, anchor, err := in.prepare()
	if err != nil {
		return wire.Customer{}, err
	}
	p, err := s.policyOrNil(ctx, env)
	if err != nil {
		return wire.Customer{}, err
	}
	var out store.Customer
	err = s.mutation(ctx, env, func(tx pgx.Tx) (*change, error) {
		before, err := s.load(ctx, tx, p, env, id, true)
		if err != nil {
			return nil, err
		}
		next := before
		if in.Type != nil {
			next.Type = *in.Type
		}
		if in.Label != nil {
			next.Label = *in.Label
		}
		if in.Refs != nil {
			refs := slices.Clone(*in.Refs)
			for i, r := range refs {
				if r == before.ID {
					return nil, validation.New("invalid customer", fmt.Sprintf("refs[%d]", i), "a customer cannot reference itself")
				}
			}
			if err := checkRefsExist(ctx, tx, env, refs); err != nil {
				return nil, err
			}
			next.Refs = refs
		}
		if meta != nil {
			next.Metadata = meta
		}
		if in.Timezone != nil {
			next.Timezone = *in.Timezone
		}
		if in.BillingAnchor != nil {
			next.BillingAnchor = anchor
		}
		if profileEqual(before.Customer, next.Customer) {
			out = before
			return nil, nil
		}
		// The metadata form of a voucher sets one when the update changes it (checked
		// here, against the metadata before: a past expiry the update leaves as it was
		// must not block updates of other keys).
		var voucher *voucherSpec
		if meta != nil && voucherFieldsChanged(before.Metadata, next.Metadata) {
			var errs validation.Errors
			voucher = metadataVoucher(&errs, next.Metadata, s.now())
			if err := errs.Err("invalid customer"); err != nil {
				return nil, err
			}
		}
		if err := store.UpdateCustomer(ctx, tx, env.TenantID, env.ID, &next); err != nil {
			return nil, err
		}
		if voucher != nil {
			if err := putVoucher(ctx, tx, env, next, *voucher); err != nil {
				return nil, err
			}
		}
		if out, err = s.load(ctx, tx, p, env, before.ID, false); err != nil {
			return nil, err
		}
		return &change{subject: out.ID, action: "customer.update", before: before.Customer, after: out.Customer,
			feed: feedOf(opUpsert, out)}, nil
	})
	return out.Customer, err
}

// Delete deletes a customer. Its record is kept, with its usage, under its uid (for
// billing and audit); a customer created later with the same id is a new customer and
// starts at zero.
func (s *Service) Delete(ctx context.Context, env store.Environment, id string) error {
	p, err := s.policyOrNil(ctx, env)
	if err != nil {
		return err
	}
	return s.mutation(ctx, env, func(tx pgx.Tx) (*change, error) {
		before, err := s.load(ctx, tx, p, env, id, true)
		if err != nil {
			return nil, err
		}
		if err := store.DeleteCustomer(ctx, tx, env.TenantID, env.ID, before, store.ActorFrom(ctx).KeyID); err != nil {
			return nil, err
		}
		return &change{subject: before.ID, action: "customer.delete", before: before.Customer,
			feed: wire.CustomerChanged{ID: before.ID, Op: opDelete, Revision: before.Revision + 1}}, nil
	})
}

// SetPlan moves a customer to a plan of the active policy; a move to the plan it is on
// already is a no-op.
func (s *Service) SetPlan(ctx context.Context, env store.Environment, id string, in SetPlanInput) (wire.Customer, error) {
	if err := in.Validate(); err != nil {
		return wire.Customer{}, err
	}
	p, err := s.policy(ctx, env)
	if err != nil {
		return wire.Customer{}, err
	}
	next := p.Plan(in.Plan)
	if next == nil {
		return wire.Customer{}, validation.New("invalid plan change", "plan", fmt.Sprintf("unknown plan %q", in.Plan))
	}
	var out store.Customer
	err = s.mutation(ctx, env, func(tx pgx.Tx) (*change, error) {
		before, err := s.load(ctx, tx, p, env, id, true)
		if err != nil {
			return nil, err
		}
		if before.ResolvedPlan == next.Name {
			out = before // the engine treats a move to the current plan as a no-op
			return nil, nil
		}
		upd := before
		upd.Plan = next.Name
		if err := store.UpdateCustomer(ctx, tx, env.TenantID, env.ID, &upd); err != nil {
			return nil, err
		}
		if out, err = s.load(ctx, tx, p, env, before.ID, false); err != nil {
			return nil, err
		}
		feed := feedOf(opPlan, out)
		feed.Plan, feed.PreviousPlan, feed.OverwriteMeters = next.Name, before.ResolvedPlan, in.OverwriteMeters
		return &change{subject: out.ID, action: "customer.plan", before: before.Customer, after: out.Customer, feed: feed}, nil
	})
	return out.Customer, err
}

// load reads a customer by id or alt id with its resolved plan; forUpdate locks its
// row for the rest of the transaction.
func (s *Service) load(ctx context.Context, db store.DBTX, p *policies.Policy, env store.Environment, id string, forUpdate bool) (store.Customer, error) {
	c, err := store.GetCustomer(ctx, db, env.TenantID, env.ID, id, forUpdate)
	if errors.Is(err, store.ErrNotFound) {
		return store.Customer{}, &NotFoundError{ID: id}
	}
	if err != nil {
		return store.Customer{}, err
	}
	if err := fillResolvedPlans(ctx, db, p, env, &c); err != nil {
		return store.Customer{}, err
	}
	return c, nil
}

// checkRefsExist reports refs that name no customer of the environment (by id: refs
// never resolve through alt ids, as in the engine).
func checkRefsExist(ctx context.Context, db store.DBTX, env store.Environment, refs []string) error {
	if len(refs) == 0 {
		return nil
	}
	got, err := store.CustomerProfiles(ctx, db, env.TenantID, env.ID, refs)
	if err != nil {
		return err
	}
	var errs validation.Errors
	for i, r := range refs {
		if _, ok := got[r]; !ok {
			errs.Addf(fmt.Sprintf("refs[%d]", i), "no customer %q in this environment", r)
		}
	}
	return errs.Err("invalid customer")
}

// feedOf is the change-feed entry of a change to c: the record after it, for SDKs to
// apply without a round trip.
func feedOf(op string, c store.Customer) wire.CustomerChanged {
	rec, _ := json.Marshal(c.Customer) // a wire.Customer always marshals
	return wire.CustomerChanged{ID: c.ID, Op: op, Revision: c.Revision, Customer: rec}
}

// profileEqual reports whether an update changes nothing.
func profileEqual(a, b wire.Customer) bool {
	return a.Type == b.Type && a.Label == b.Label && slices.Equal(a.Refs, b.Refs) &&
		jsonEqual(a.Metadata, b.Metadata) && a.Timezone == b.Timezone && a.BillingAnchor.Equal(b.BillingAnchor)
}

func jsonEqual(a, b json.RawMessage) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return bytes.Equal(a, b)
	}
	return reflect.DeepEqual(x, y)
}
