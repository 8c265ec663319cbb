package limitr

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/limitr/limitr/internal/enforcement"
	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/wire"
)

// In cloud mode spend caps live on the control plane: AddCustomerCap,
// ResetCustomerCap and RemoveCustomerCap change them there, and every instance holds
// the same caps (from the customer record, on the stream and at hydration). A cap's
// meter is the fleet's committed consumption plus this instance's own not yet
// committed; in fleet mode Exact a call must also fit this instance's lease of the
// cap's allowance, so a shared org budget is never passed by the fleet together.

// capRequest is a cap's configuration as the API takes it.
func capRequest(cp Cap) (wire.CapRequest, error) {
	v, err := num.FromFloat64(cp.Value)
	if err != nil {
		return wire.CapRequest{}, fmt.Errorf("%w: value: %w", ErrInvalidCap, err)
	}
	n := json.Number(v.String())
	r := wire.CapRequest{Credit: cp.Credit, Value: &n, IgnoreGrants: cp.IgnoreGrants, OverageOnly: cp.OverageOnly,
		ObserveOnly: cp.ObserveOnly, OverheadCost: cp.OverheadCost, FollowDecrements: cp.FollowDecrements,
		HardTrailing: cp.HardTrailing, Shared: cp.Shared, SharedWith: cp.SharedWith, Scope: cp.Scope, Resets: cp.Resets,
		ResetInc: cp.ResetInc, ResetSch: cp.ResetSch}
	if !cp.ExpiresAt.IsZero() {
		s := cp.ExpiresAt.UTC().Format(time.RFC3339Nano)
		r.ExpiresAt = &s
	}
	return r, nil
}

// addCap creates a cap on the control plane (ErrCapExists when the customer has one
// with the id) and lays the customer's caps over the one held here.
func (c *cloud) addCap(ctx context.Context, id string, cp Cap) error {
	if cp.ID == "" {
		return fmt.Errorf("%w: id: must not be empty", ErrInvalidCap)
	}
	switch _, err := c.eng.CustomerCap(ctx, id, cp.ID); {
	case err == nil:
		return fmt.Errorf("%w: %q already exists", ErrCapExists, cp.ID)
	case errors.Is(err, ErrUnknownCustomer):
		return err // not held here yet: hydrated, then asked again
	}
	body, err := capRequest(cp)
	if err != nil {
		return err
	}
	return c.capCall(ctx, id, http.MethodPut, cp.ID, "", body)
}

// capCall sends one cap operation (suffix after the cap's path) and then applies the
// customer's caps as the control plane holds them.
func (c *cloud) capCall(ctx context.Context, id, method, capID, suffix string, body any) error {
	path, err := c.custPath(ctx, id, "/caps/"+url.PathEscape(capID)+suffix)
	if err != nil {
		return err
	}
	if _, _, err := c.call(ctx, method, path, body); err != nil {
		var ae *APIError
		if errors.As(err, &ae) && ae.Status == http.StatusNotFound && ae.field("cap") != nil {
			return fmt.Errorf("%w: %q", ErrUnknownCap, capID)
		}
		if errors.As(err, &ae) && (ae.Status == http.StatusBadRequest || ae.Status == http.StatusUnprocessableEntity) {
			return fmt.Errorf("%w: %w", ErrInvalidCap, err)
		}
		return mapAPIError(err, "cap")
	}
	return c.refreshCaps(ctx, id)
}

// refreshCaps reads the customer's record and applies its caps here.
func (c *cloud) refreshCaps(ctx context.Context, id string) error {
	path, err := c.custPath(ctx, id, "")
	if err != nil {
		return err
	}
	_, data, err := c.call(ctx, http.MethodGet, path, nil)
	if err != nil {
		return mapAPIError(err, "customer")
	}
	rec, err := decodeCustomer(data)
	if err != nil {
		return err
	}
	return c.onLocal(ctx, id, func(primary string) error { return c.applyWireCaps(ctx, primary, rec.Caps) })
}

// applyWireCaps lays the control plane's caps over a customer held here.
func (c *cloud) applyWireCaps(ctx context.Context, id string, caps []wire.CustomerCap) error {
	out := make([]enforcement.FleetCap, 0, len(caps))
	for i, w := range caps {
		ceiling, err := num.Parse(w.Value.String())
		if err != nil {
			return fmt.Errorf("%w: caps[%d].value: %q", ErrInvalidCap, i, w.Value)
		}
		cp := Cap{ID: w.ID, Credit: w.Credit, Value: num.Float64(ceiling), IgnoreGrants: w.IgnoreGrants,
			OverageOnly: w.OverageOnly, ObserveOnly: w.ObserveOnly, OverheadCost: w.OverheadCost,
			FollowDecrements: w.FollowDecrements, HardTrailing: w.HardTrailing, Shared: w.Shared, SharedWith: w.SharedWith,
			Scope: w.Scope, Resets: w.Resets, ResetInc: w.ResetInc, ResetSch: w.ResetSch, Key: w.Key,
			Started: w.ResetAt, Created: w.CreatedAt}
		if w.ExpiresAt != nil {
			cp.ExpiresAt = *w.ExpiresAt
		}
		fc := enforcement.FleetCap{Cap: cp, Ceiling: ceiling}
		for j, u := range w.Usage {
			units, err := num.Parse(u.Units)
			if err != nil {
				return fmt.Errorf("%w: caps[%d].usage[%d].units: %q", ErrInvalidCap, i, j, u.Units)
			}
			fc.Committed = append(fc.Committed, enforcement.CapCommitted{PeriodStart: u.PeriodStart, Units: units})
		}
		out = append(out, fc)
	}
	return c.eng.ApplyCaps(ctx, id, out)
}

// applyRecordCaps applies a record's caps, logging a failure.
func (c *cloud) applyRecordCaps(ctx context.Context, id string, rec *wire.Customer) {
	if err := c.applyWireCaps(ctx, id, rec.Caps); err != nil && !errors.Is(err, ErrUnknownCustomer) {
		c.log.Warn("limitr: applying the customer's caps failed", "customer", id, "err", err)
	}
}

// toWireCapUse is a drained cap consumption as a batch carries it.
func toWireCapUse(d enforcement.GrantDraw) wire.CapUse {
	return wire.CapUse{Customer: d.Customer, CapKey: d.GrantID, PeriodStart: d.PeriodStart, Units: d.Units.String(),
		CustomerCreatedAt: timePtr(d.CustomerCreatedAt)}
}
