package limitr

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/limitr/limitr/internal/enforcement"
	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/wire"
)

// customerMetadata is a record's metadata as a map (empty when absent or unreadable).
func customerMetadata(r *wire.Customer) map[string]any {
	if len(r.Metadata) == 0 {
		return map[string]any{}
	}
	var m map[string]any
	if json.Unmarshal(r.Metadata, &m) != nil || m == nil {
		return map[string]any{}
	}
	// The record's voucher (set and debited on the server) is the voucher; Limitr's
	// metadata form of it would reset the balance to what was first set.
	delete(m, enforcement.MetaVoucher)
	delete(m, enforcement.MetaVoucherExpires)
	delete(m, enforcement.MetaVoucherRunes)
	return m
}

// customerSpec is the engine's form of a record's profile.
func customerSpec(r *wire.Customer) enforcement.CustomerSpec {
	s := enforcement.CustomerSpec{ID: r.ID, Plan: r.Plan, Refs: slices.Clone(r.Refs), RefsSet: true,
		AltIDs: slices.Clone(r.AltIDs), Metadata: customerMetadata(r)}
	if r.Type != "" {
		t := r.Type
		s.Type = &t
	}
	l, tz := r.Label, r.Timezone
	s.Label, s.Timezone = &l, &tz
	if !r.BillingAnchor.IsZero() {
		a := r.BillingAnchor
		s.Anchor = &a
	}
	if !r.CreatedAt.IsZero() {
		created := r.CreatedAt
		s.Created = &created
	}
	return s
}

func decodeCustomer(data []byte) (*wire.Customer, error) {
	var rec wire.Customer
	if err := json.Unmarshal(data, &rec); err != nil {
		return nil, fmt.Errorf("limitr: unreadable customer record from the API: %w", err)
	}
	if rec.ID == "" {
		return nil, errors.New("limitr: customer record from the API without an id")
	}
	return &rec, nil
}

// ---- local state ----

func (c *cloud) local(id string) *Customer {
	s, err := c.eng.Customer(context.Background(), id)
	if err != nil {
		return nil
	}
	return s
}

// forget drops negative hydration results for ids the server now knows.
func (c *cloud) forget(ids ...string) {
	c.hmu.Lock()
	for _, id := range ids {
		delete(c.negative, id)
	}
	c.hmu.Unlock()
}

func (c *cloud) setRev(id string, rev int64) {
	c.hmu.Lock()
	if rev > c.revs[id] {
		c.revs[id] = rev
	}
	c.hmu.Unlock()
}

// ---- change events ----

// applyChange applies a customer change from the push stream. Meters, grant balances
// and pending usage held here are kept: only the profile, plan, overrides and new
// grants change. A delete drops the customer with its undrained usage. Customers this
// instance does not hold are left to hydration.
func (c *cloud) applyChange(ctx context.Context, ch wire.CustomerChanged) {
	var rec *wire.Customer
	if len(ch.Customer) > 0 && string(ch.Customer) != "null" {
		r, err := decodeCustomer(ch.Customer)
		if err != nil {
			c.log.Warn("limitr: skipping a customer event", "customer", ch.ID, "err", err)
			return
		}
		rec = r
	}
	id := ch.ID
	if id == "" && rec != nil {
		id = rec.ID
	}
	if id == "" {
		return
	}
	c.hmu.Lock()
	stale := ch.Revision > 0 && ch.Revision <= c.revs[id]
	c.hmu.Unlock()
	if stale {
		return
	}
	if ch.Op == "delete" {
		c.dropLocal(ctx, id)
		return
	}
	cur := c.local(id)
	if cur == nil {
		ids := []string{id}
		if rec != nil {
			ids = append(ids, rec.AltIDs...)
		}
		c.forget(ids...)
		return
	}
	var err error
	switch ch.Op {
	case "plan":
		if ch.Plan != "" {
			err = c.eng.SetCustomerPlan(ctx, id, ch.Plan, ch.OverwriteMeters)
		}
	case "override":
		if ch.Removed {
			err = c.eng.RemoveCustomerOverride(ctx, id, ch.Entitlement)
		} else {
			var o Override
			if err = json.Unmarshal(ch.Override, &o); err == nil {
				if o.ExpiresAt.IsZero() || time.Now().Before(o.ExpiresAt) {
					err = c.eng.CreateCustomerOverride(ctx, id, ch.Entitlement, o)
				}
			}
		}
	case "topup":
		var t wire.CustomerTopup
		if err = json.Unmarshal(ch.Topup, &t); err == nil {
			err = c.grant(ctx, id, t)
		}
	case "voucher":
		if rec != nil {
			err = c.applyWireVoucher(ctx, id, rec.Voucher)
		}
	case "cap":
		if rec != nil {
			err = c.applyWireCaps(ctx, id, rec.Caps)
		}
	default: // upsert
		if rec != nil {
			err = c.applyProfile(ctx, cur, rec)
		}
	}
	if err != nil {
		c.log.Warn("limitr: applying a customer change failed", "customer", id, "op", ch.Op, "err", err)
	}
	if ch.Revision > 0 {
		c.setRev(id, ch.Revision)
	}
}

// applyProfile lays a record's profile (and plan, and voucher) over a customer held
// here, keeping its meters.
func (c *cloud) applyProfile(ctx context.Context, cur *Customer, rec *wire.Customer) error {
	if rec.Plan != "" && rec.Plan != cur.Plan {
		if err := c.eng.SetCustomerPlan(ctx, cur.ID, rec.Plan, false); err != nil {
			return err
		}
	}
	s := customerSpec(rec)
	s.ID = cur.ID
	if _, err := c.eng.CreateCustomer(ctx, s); err != nil {
		return err
	}
	if err := c.applyWireVoucher(ctx, cur.ID, rec.Voucher); err != nil {
		return err
	}
	return c.applyWireCaps(ctx, cur.ID, rec.Caps)
}

func (c *cloud) grant(ctx context.Context, id string, t wire.CustomerTopup) error {
	return c.grantDrawn(ctx, id, t, nil)
}

// grantDrawn grants a topup less what has been drawn from it: the committed draws
// given, and this instance's own not yet committed (see GrantTopupDrawn).
func (c *cloud) grantDrawn(ctx context.Context, id string, t wire.CustomerTopup, draws []enforcement.RemoteGrantDraw) error {
	var price *num.Dec
	if t.Price != "" {
		d, err := num.Parse(t.Price.String())
		if err != nil {
			return fmt.Errorf("topup price: %w", err)
		}
		price = &d
	}
	_, err := c.eng.GrantTopupDrawn(ctx, id, t.Topup, t.GrantID, price, t.AppliedAt, draws)
	return err
}

// ---- customer operations ----

func (c *cloud) custPath(ctx context.Context, id, suffix string) (string, error) {
	env, err := c.environment(ctx)
	if err != nil {
		return "", err
	}
	p := "/v1/environments/" + url.PathEscape(env) + "/customers"
	if id != "" {
		p += "/" + url.PathEscape(id)
	}
	return p + suffix, nil
}

// mapAPIError makes an API refusal unwrap to the SDK error it means.
func mapAPIError(err error, op string) error {
	var ae *APIError
	if !errors.As(err, &ae) || ae.kind != nil {
		return err
	}
	switch ae.Status {
	case http.StatusNotFound:
		ae.kind = ErrUnknownCustomer
	case http.StatusConflict:
		if ae.field("alt_ids") != nil || ae.field("id") != nil {
			ae.kind = ErrAltIDTaken
		}
	case http.StatusBadRequest, http.StatusUnprocessableEntity:
		switch {
		case ae.field("plan") != nil:
			ae.kind = ErrUnknownPlan
		case ae.field("topup") != nil:
			ae.kind = ErrUnknownTopup
		case ae.field("entitlement") != nil:
			if strings.Contains(ae.field("entitlement").Message, "unknown entitlement") {
				ae.kind = ErrUnknownEntitlement
			} else {
				ae.kind = ErrNotEntitled
			}
		case op == "override":
			ae.kind = ErrInvalidOverride
		default:
			ae.kind = ErrInvalidCustomer
		}
	}
	return ae
}

// metadataJSON is a customer's metadata as a request carries it (nil: none given).
func metadataJSON(m map[string]any) json.RawMessage {
	if len(m) == 0 {
		return nil
	}
	data, err := json.Marshal(m)
	if err != nil {
		return nil // not JSON-encodable: the spec's validation refuses it first
	}
	return data
}

func anchorText(t *time.Time) *string {
	if t == nil || t.IsZero() {
		return nil
	}
	s := t.UTC().Format(time.RFC3339Nano)
	return &s
}

func (c *cloud) createCustomer(ctx context.Context, spec enforcement.CustomerSpec) (*Customer, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	path, err := c.custPath(ctx, "", "")
	if err != nil {
		return nil, err
	}
	body := wire.CreateCustomerRequest{ID: spec.ID, Plan: spec.Plan, Type: spec.Type, Label: spec.Label,
		AltIDs: spec.AltIDs, Metadata: metadataJSON(spec.Metadata), BillingAnchor: anchorText(spec.Anchor)}
	if spec.RefsSet {
		body.Refs = spec.Refs
	}
	if spec.Timezone != nil {
		body.Timezone = *spec.Timezone
	}
	_, data, err := c.call(ctx, http.MethodPost, path, body)
	fresh := true
	if ae := (*APIError)(nil); errors.As(err, &ae) && ae.Status == http.StatusConflict && ae.field("alt_ids") == nil && ae.field("id") == nil {
		// The customer exists: update it, as CreateCustomer does locally.
		data, err = c.updateCustomer(ctx, spec)
		fresh = false
	}
	if err != nil {
		return nil, mapAPIError(err, "customer")
	}
	rec, err := decodeCustomer(data)
	if err != nil {
		return nil, err
	}
	return c.applyRecord(ctx, rec, fresh)
}

// updateCustomer is CreateCustomer on an existing id: the profile fields the spec sets
// (PATCH), then the plan if it names one.
func (c *cloud) updateCustomer(ctx context.Context, spec enforcement.CustomerSpec) ([]byte, error) {
	path, err := c.custPath(ctx, spec.ID, "")
	if err != nil {
		return nil, err
	}
	_, data, err := c.call(ctx, http.MethodGet, path, nil)
	if err != nil {
		return nil, err
	}
	rec, err := decodeCustomer(data)
	if err != nil {
		return nil, err
	}
	for _, a := range spec.AltIDs {
		if a != rec.ID && !slices.Contains(rec.AltIDs, a) {
			return nil, fmt.Errorf("%w: alt_ids: the alt ids of an existing customer cannot be changed in cloud mode (%q)", ErrInvalidCustomer, a)
		}
	}
	body := wire.UpdateCustomerRequest{Type: spec.Type, Label: spec.Label, Metadata: metadataJSON(spec.Metadata),
		Timezone: spec.Timezone, BillingAnchor: anchorText(spec.Anchor)}
	if spec.RefsSet {
		refs := spec.Refs
		if refs == nil {
			refs = []string{}
		}
		body.Refs = &refs
	}
	if _, data, err = c.call(ctx, http.MethodPatch, path, body); err != nil {
		return nil, err
	}
	if spec.Plan != "" {
		if rec, err = decodeCustomer(data); err != nil {
			return nil, err
		}
		if rec.ResolvedPlan != spec.Plan || rec.Plan != spec.Plan {
			_, data, err = c.call(ctx, http.MethodPut, path+"/plan", wire.SetPlanRequest{Plan: spec.Plan})
		}
	}
	return data, err
}

// applyRecord applies a record the API returned for an operation made here. fresh means
// the API just created the customer.
func (c *cloud) applyRecord(ctx context.Context, rec *wire.Customer, fresh bool) (*Customer, error) {
	if cur := c.local(rec.ID); cur != nil {
		if err := c.retryOnPolicyLag(ctx, func() error { return c.applyProfile(ctx, cur, rec) }); err != nil {
			return nil, err
		}
		return c.eng.Customer(ctx, rec.ID)
	}
	c.forget(append([]string{rec.ID}, rec.AltIDs...)...)
	if fresh {
		var snap *Customer
		err := c.retryOnPolicyLag(ctx, func() (err error) {
			snap, err = c.eng.CreateCustomer(ctx, customerSpec(rec))
			return err
		})
		if err != nil {
			return nil, err
		}
		c.setRev(rec.ID, rec.Revision)
		if rec.Voucher != nil || len(rec.Caps) > 0 {
			c.applyRecordVoucher(ctx, rec.ID, rec)
			c.applyRecordCaps(ctx, rec.ID, rec)
			return c.eng.Customer(ctx, rec.ID)
		}
		return snap, nil
	}
	if !c.hydrate(ctx, rec.ID) {
		return nil, fmt.Errorf("%w: %q: applied by the API, but it could not be loaded here", ErrUnknownCustomer, rec.ID)
	}
	return c.eng.Customer(ctx, rec.ID)
}

// retryOnPolicyLag runs f again after fetching the policy when it failed because this
// instance has not seen the version the API validated against yet.
func (c *cloud) retryOnPolicyLag(ctx context.Context, f func() error) error {
	err := f()
	if errors.Is(err, ErrUnknownPlan) || errors.Is(err, ErrUnknownTopup) || errors.Is(err, ErrUnknownEntitlement) || errors.Is(err, ErrNotEntitled) {
		if changed, ferr := c.fetchPolicy(ctx, false); ferr == nil && changed {
			err = f()
		}
	}
	return err
}

// onLocal applies an operation the API confirmed to the customer held here; a customer
// not held here is hydrated instead (its state already includes the change).
func (c *cloud) onLocal(ctx context.Context, id string, f func(primary string) error) error {
	if cur := c.local(id); cur != nil {
		err := c.retryOnPolicyLag(ctx, func() error { return f(cur.ID) })
		if !errors.Is(err, ErrUnknownCustomer) {
			return err
		}
	}
	c.forget(id)
	if !c.hydrate(ctx, id) {
		return fmt.Errorf("%w: %q: applied by the API, but it could not be loaded here", ErrUnknownCustomer, id)
	}
	return nil
}

func (c *cloud) setCustomerPlan(ctx context.Context, id, plan string, overwrite bool) error {
	path, err := c.custPath(ctx, id, "/plan")
	if err != nil {
		return err
	}
	if _, _, err := c.call(ctx, http.MethodPut, path, wire.SetPlanRequest{Plan: plan, OverwriteMeters: overwrite}); err != nil {
		return mapAPIError(err, "plan")
	}
	return c.onLocal(ctx, id, func(primary string) error {
		return c.eng.SetCustomerPlan(ctx, primary, plan, overwrite)
	})
}

func (c *cloud) deleteCustomer(ctx context.Context, id string) error {
	path, err := c.custPath(ctx, id, "")
	if err != nil {
		return err
	}
	if _, _, err := c.call(ctx, http.MethodDelete, path, nil); err != nil {
		return mapAPIError(err, "customer")
	}
	if cur := c.local(id); cur != nil {
		c.dropLocal(ctx, cur.ID)
	}
	return nil
}

func (c *cloud) createOverride(ctx context.Context, id, ent string, o Override) error {
	path, err := c.custPath(ctx, id, "/overrides/"+url.PathEscape(ent))
	if err != nil {
		return err
	}
	body := wire.OverrideRequest{Value: wire.Quantity(o.Value), Credit: o.Credit, Mode: o.Mode, Increment: wire.Quantity(o.Increment),
		Minimum: wire.Quantity(o.Minimum), Resets: o.Resets, ResetInc: o.ResetInc, ResetSch: o.ResetSch, HardTrailing: o.HardTrailing,
		GrantsApply: o.GrantsApply}
	if !o.ExpiresAt.IsZero() {
		at := o.ExpiresAt.UTC().Format(time.RFC3339Nano)
		body.ExpiresAt = &at
	}
	if _, _, err := c.call(ctx, http.MethodPut, path, body); err != nil {
		return mapAPIError(err, "override")
	}
	return c.onLocal(ctx, id, func(string) error { return c.eng.CreateCustomerOverride(ctx, id, ent, o) })
}

func (c *cloud) removeOverride(ctx context.Context, id, ent string) error {
	path, err := c.custPath(ctx, id, "/overrides/"+url.PathEscape(ent))
	if err != nil {
		return err
	}
	if _, _, err := c.call(ctx, http.MethodDelete, path, nil); err != nil {
		var ae *APIError
		// Removing an override that does not exist is not an error, as locally.
		if !errors.As(err, &ae) || ae.Status != http.StatusNotFound || !strings.Contains(ae.Detail, "has no override") {
			return mapAPIError(err, "override")
		}
	}
	return c.onLocal(ctx, id, func(string) error { return c.eng.RemoveCustomerOverride(ctx, id, ent) })
}

func (c *cloud) applyTopup(ctx context.Context, id, topup string) error {
	path, err := c.custPath(ctx, id, "/topups")
	if err != nil {
		return err
	}
	_, data, err := c.call(ctx, http.MethodPost, path, wire.TopupRequest{Topup: topup})
	if err != nil {
		return mapAPIError(err, "topup")
	}
	var t wire.CustomerTopup
	if err := json.Unmarshal(data, &t); err != nil || t.GrantID == "" {
		return fmt.Errorf("limitr: unreadable topup record from the API: %v", err)
	}
	return c.onLocal(ctx, id, func(primary string) error { return c.grant(ctx, primary, t) })
}
