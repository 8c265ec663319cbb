package api

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/labstack/echo/v4"

	"github.com/limitr/limitr/internal/enforcement"
	"github.com/limitr/limitr/internal/httpx/problem"
	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/policies"
	"github.com/limitr/limitr/internal/store"
)

// Customers are managed per environment by the tenant's admin keys or the
// environment's SDK key. Every mutation writes its rows, bumps the customer's revision,
// appends a change-feed entry (kind "customer", subject = customer id) and an audit
// entry in one transaction, then wakes the change fan-out.
//
//	POST   /v1/environments/:env/customers                            create
//	GET    /v1/environments/:env/customers                            list (cursor, limit)
//	GET    /v1/environments/:env/customers/:id                        get (id or alt id)
//	PATCH  /v1/environments/:env/customers/:id                        update profile fields
//	DELETE /v1/environments/:env/customers/:id                        delete
//	PUT    /v1/environments/:env/customers/:id/plan                   change plan
//	PUT    /v1/environments/:env/customers/:id/overrides/:entitlement set an override
//	DELETE /v1/environments/:env/customers/:id/overrides/:entitlement remove it
//	POST   /v1/environments/:env/customers/:id/topups                 apply a topup
func (s *Server) customerRoutes(g *echo.Group) {
	cg := g.Group("/environments/:env/customers")
	cg.POST("", s.createCustomer)
	cg.GET("", s.listCustomers)
	cg.GET("/:id", s.getCustomer)
	cg.PATCH("/:id", s.patchCustomer)
	cg.DELETE("/:id", s.deleteCustomer)
	cg.PUT("/:id/plan", s.setCustomerPlan)
	cg.PUT("/:id/overrides/:entitlement", s.putCustomerOverride)
	cg.DELETE("/:id/overrides/:entitlement", s.deleteCustomerOverride)
	cg.POST("/:id/topups", s.applyCustomerTopup)
}

// Bounds on customer fields beyond ids.
const (
	maxLabelLength    = 1024
	maxRefs           = 100
	maxAltIDs         = 100
	maxMetadataBytes  = 64 << 10
	maxResolveVisited = 1000 // customers visited when resolving a plan through refs
)

// topupCurrency is what topup prices are recorded in: policy prices are in runes
// (1 rune = 1 USD unless the exchange says otherwise).
const topupCurrency = "rune"

// Change-feed operations.
const (
	opUpsert   = "upsert"
	opDelete   = "delete"
	opPlan     = "plan"
	opOverride = "override"
	opTopup    = "topup"
)

// customerChange is the change-feed payload of a customer mutation. SDKs apply it
// without a round trip: Customer is the record after the change (absent on delete).
type customerChange struct {
	Op              string                `json:"op"`
	Revision        int64                 `json:"revision"`
	Customer        *store.Customer       `json:"customer,omitempty"`
	Plan            string                `json:"plan,omitempty"`
	PreviousPlan    string                `json:"previous_plan,omitempty"`
	OverwriteMeters *bool                 `json:"overwrite_meters,omitempty"`
	Entitlement     string                `json:"entitlement,omitempty"`
	Override        *enforcement.Override `json:"override,omitempty"`
	Removed         bool                  `json:"removed,omitempty"`
	Topup           *store.CustomerTopup  `json:"topup,omitempty"`
}

// ---- request shapes ----

type createCustomerRequest struct {
	ID            string          `json:"id"`
	Plan          string          `json:"plan"`
	Type          *string         `json:"type"`
	Label         *string         `json:"label"`
	Refs          []string        `json:"refs"`
	AltIDs        []string        `json:"alt_ids"`
	Metadata      json.RawMessage `json:"metadata"`
	Timezone      string          `json:"timezone"`
	BillingAnchor *string         `json:"billing_anchor"`
}

type patchCustomerRequest struct {
	Type          *string         `json:"type"`
	Label         *string         `json:"label"`
	Refs          *[]string       `json:"refs"`
	Metadata      json.RawMessage `json:"metadata"`
	Timezone      *string         `json:"timezone"`
	BillingAnchor *string         `json:"billing_anchor"`
}

type setPlanRequest struct {
	Plan            string `json:"plan"`
	OverwriteMeters bool   `json:"overwrite_meters"`
}

type overrideRequest struct {
	Value        quantityText `json:"value"`
	ExpiresAt    *string      `json:"expires_at"`
	Credit       string       `json:"credit"`
	Mode         string       `json:"mode"`
	Increment    quantityText `json:"increment"`
	Minimum      quantityText `json:"minimum"`
	Resets       *bool        `json:"resets"`
	ResetInc     string       `json:"reset_inc"`
	ResetSch     string       `json:"reset_sch"`
	HardTrailing *bool        `json:"hard_trailing"`
	GrantsApply  *bool        `json:"grants_apply"`
}

type topupRequest struct {
	Topup string       `json:"topup"`
	Price *json.Number `json:"price"`
}

// quantityText accepts a JSON number (kept exactly as written) or a string such as
// "1TiB"; null leaves it empty.
type quantityText string

func (q *quantityText) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case bytes.Equal(b, []byte("null")):
		*q = ""
		return nil
	case len(b) > 0 && b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*q = quantityText(s)
		return nil
	case len(b) > 0 && (b[0] == '-' || b[0] >= '0' && b[0] <= '9'):
		*q = quantityText(b)
		return nil
	}
	kind := "value"
	if len(b) > 0 {
		switch b[0] {
		case 't', 'f':
			kind = "bool"
		case '{':
			kind = "object"
		case '[':
			kind = "array"
		}
	}
	return &json.UnmarshalTypeError{Value: kind, Type: reflect.TypeFor[string]()}
}

// ---- handlers ----

func (s *Server) createCustomer(c echo.Context) error {
	env, err := s.environment(c, c.Param("env"))
	if err != nil {
		return err
	}
	var req createCustomerRequest
	if err := bindJSON(c, &req); err != nil {
		return err
	}
	ctx := c.Request().Context()
	var errs []problem.FieldError
	add := func(fe *problem.FieldError) {
		if fe != nil {
			errs = append(errs, *fe)
		}
	}
	add(checkName("id", req.ID))
	if req.Plan != "" {
		add(checkName("plan", req.Plan))
	}
	typ, label := "user", "User"
	if req.Type != nil {
		typ = *req.Type
		add(checkName("type", typ))
	}
	if req.Label != nil {
		label = *req.Label
		add(checkText("label", label, maxLabelLength))
	}
	refs := req.Refs
	if refs == nil {
		refs = []string{}
	}
	errs = append(errs, checkRefs(req.ID, refs)...)
	alts, altErrs := checkAltIDs(req.ID, req.AltIDs)
	errs = append(errs, altErrs...)
	meta, fe := checkMetadata(req.Metadata)
	add(fe)
	add(checkTimezone(req.Timezone))
	anchor := time.Now().UTC().Truncate(time.Microsecond)
	if req.BillingAnchor != nil {
		t, fe := parseTime("billing_anchor", *req.BillingAnchor)
		add(fe)
		anchor = t
	}
	if len(errs) > 0 {
		return problem.Validation("invalid customer", errs)
	}
	p, err := s.policyFor(ctx, env)
	if err != nil {
		return err
	}
	if req.Plan != "" && p.Plan(req.Plan) == nil {
		return problem.Validation("invalid customer", []problem.FieldError{{Path: "plan", Message: fmt.Sprintf("unknown plan %q", req.Plan)}})
	}

	pr := principal(c)
	cust := store.Customer{ID: req.ID, Plan: req.Plan, Type: typ, Label: label, Refs: refs, AltIDs: alts,
		Metadata: meta, Timezone: req.Timezone, BillingAnchor: anchor}
	var changeID int64
	err = s.store.InTx(ctx, func(tx pgx.Tx) error {
		if err := s.checkRefsExist(ctx, tx, env, refs, "refs"); err != nil {
			return err
		}
		// As the engine does: an empty plan inherits through refs; failing that, the
		// customer is put on the default plan by name.
		if cust.Plan == "" {
			pl, err := s.planThroughRefs(ctx, tx, p, env, cust.ID, cust.Plan, cust.Refs)
			if err != nil {
				return err
			}
			if pl == nil {
				if p.DefaultPlan == nil {
					return problem.Validation("invalid customer", []problem.FieldError{{Path: "plan",
						Message: "is required: no ref has a plan and the active policy has no default plan"}})
				}
				cust.Plan = p.DefaultPlan.Name
			}
		}
		names := append([]string{cust.ID}, alts...)
		if err := store.LockCustomerNames(ctx, tx, env.ID, names...); err != nil {
			return err
		}
		if err := store.InsertCustomer(ctx, tx, pr.TenantID, env.ID, &cust); err != nil {
			return err
		}
		after, err := s.loadCustomer(ctx, tx, p, env, cust.ID, false)
		if err != nil {
			return err
		}
		cust = after
		if changeID, err = s.recordCustomerChange(c, tx, env, after.ID, "customer.create", nil, after,
			customerChange{Op: opUpsert, Revision: after.Revision, Customer: &after}); err != nil {
			return err
		}
		return nil
	})
	if err != nil {
		var conflict *store.AltIDConflictError
		switch {
		case errors.As(err, &conflict):
			pb := problem.New(http.StatusConflict, conflict.Error()).WithType("conflict")
			pb.Errors = []problem.FieldError{{Path: conflict.Field, Message: fmt.Sprintf("%q is already used by customer %q", conflict.Name, conflict.Owner)}}
			return pb
		case errors.Is(err, store.ErrConflict):
			return problem.New(http.StatusConflict, fmt.Sprintf("customer %q already exists: use PATCH to update it", req.ID)).WithType("conflict")
		}
		return s.unavailable(err)
	}
	s.wake(env, changeID)
	c.Response().Header().Set(echo.HeaderLocation, c.Request().URL.Path+"/"+url.PathEscape(cust.ID))
	return c.JSON(http.StatusCreated, cust)
}

func (s *Server) getCustomer(c echo.Context) error {
	env, id, err := s.customerTarget(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	p, err := s.policyOrNil(ctx, env)
	if err != nil {
		return err
	}
	cust, err := s.loadCustomer(ctx, s.pool, p, env, id, false)
	if err != nil {
		return s.customerErr(err, id)
	}
	return c.JSON(http.StatusOK, cust)
}

func (s *Server) listCustomers(c echo.Context) error {
	limit, err := page(c)
	if err != nil {
		return err
	}
	after := ""
	if cur := c.QueryParam("cursor"); cur != "" {
		b, err := base64.RawURLEncoding.DecodeString(cur)
		if err != nil || checkName("cursor", string(b)) != nil {
			return problem.Validation("invalid query", []problem.FieldError{{Path: "cursor", Message: "is not a cursor this API returned"}})
		}
		after = string(b)
	}
	env, err := s.environment(c, c.Param("env"))
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	p, err := s.policyOrNil(ctx, env)
	if err != nil {
		return err
	}
	cs, err := store.ListCustomers(ctx, s.pool, principal(c).TenantID, env.ID, after, limit+1)
	if err != nil {
		return s.unavailable(err)
	}
	out := list[store.Customer]{Data: cs}
	if len(cs) > limit {
		out.Data = cs[:limit]
		out.NextCursor = base64.RawURLEncoding.EncodeToString([]byte(cs[limit-1].ID))
	}
	for i := range out.Data {
		if err := s.fillResolvedPlan(ctx, s.pool, p, env, &out.Data[i]); err != nil {
			return s.unavailable(err)
		}
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) patchCustomer(c echo.Context) error {
	env, id, err := s.customerTarget(c)
	if err != nil {
		return err
	}
	var req patchCustomerRequest
	if err := bindJSON(c, &req); err != nil {
		return err
	}
	var errs []problem.FieldError
	add := func(fe *problem.FieldError) {
		if fe != nil {
			errs = append(errs, *fe)
		}
	}
	if req.Type != nil {
		add(checkName("type", *req.Type))
	}
	if req.Label != nil {
		add(checkText("label", *req.Label, maxLabelLength))
	}
	if req.Refs != nil {
		errs = append(errs, checkRefs("", *req.Refs)...)
	}
	var meta json.RawMessage
	if req.Metadata != nil {
		var fe *problem.FieldError
		meta, fe = checkMetadata(req.Metadata)
		add(fe)
	}
	if req.Timezone != nil {
		add(checkTimezone(*req.Timezone))
	}
	var anchor time.Time
	if req.BillingAnchor != nil {
		var fe *problem.FieldError
		anchor, fe = parseTime("billing_anchor", *req.BillingAnchor)
		add(fe)
	}
	if len(errs) > 0 {
		return problem.Validation("invalid customer", errs)
	}
	ctx := c.Request().Context()
	p, err := s.policyOrNil(ctx, env)
	if err != nil {
		return err
	}
	pr := principal(c)
	var out store.Customer
	var changeID int64
	err = s.store.InTx(ctx, func(tx pgx.Tx) error {
		before, err := s.loadCustomer(ctx, tx, p, env, id, true)
		if err != nil {
			return err
		}
		next := before
		if req.Type != nil {
			next.Type = *req.Type
		}
		if req.Label != nil {
			next.Label = *req.Label
		}
		if req.Refs != nil {
			refs := slices.Clone(*req.Refs)
			for i, r := range refs {
				if r == before.ID {
					return problem.Validation("invalid customer", []problem.FieldError{{Path: fmt.Sprintf("refs[%d]", i), Message: "a customer cannot reference itself"}})
				}
			}
			if err := s.checkRefsExist(ctx, tx, env, refs, "refs"); err != nil {
				return err
			}
			next.Refs = refs
		}
		if meta != nil {
			next.Metadata = meta
		}
		if req.Timezone != nil {
			next.Timezone = *req.Timezone
		}
		if req.BillingAnchor != nil {
			next.BillingAnchor = anchor
		}
		if profileEqual(before, next) {
			out = before
			return nil
		}
		if err := store.UpdateCustomer(ctx, tx, pr.TenantID, env.ID, &next); err != nil {
			return err
		}
		after, err := s.loadCustomer(ctx, tx, p, env, before.ID, false)
		if err != nil {
			return err
		}
		out = after
		changeID, err = s.recordCustomerChange(c, tx, env, after.ID, "customer.update", before, after,
			customerChange{Op: opUpsert, Revision: after.Revision, Customer: &after})
		return err
	})
	if err != nil {
		return s.customerErr(err, id)
	}
	s.wake(env, changeID)
	return c.JSON(http.StatusOK, out)
}

func (s *Server) deleteCustomer(c echo.Context) error {
	env, id, err := s.customerTarget(c)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	p, err := s.policyOrNil(ctx, env)
	if err != nil {
		return err
	}
	pr := principal(c)
	var changeID int64
	err = s.store.InTx(ctx, func(tx pgx.Tx) error {
		before, err := s.loadCustomer(ctx, tx, p, env, id, true)
		if err != nil {
			return err
		}
		if err := store.DeleteCustomer(ctx, tx, pr.TenantID, env.ID, before.ID); err != nil {
			return err
		}
		changeID, err = s.recordCustomerChange(c, tx, env, before.ID, "customer.delete", before, nil,
			customerChange{Op: opDelete, Revision: before.Revision + 1})
		return err
	})
	if err != nil {
		return s.customerErr(err, id)
	}
	s.wake(env, changeID)
	return c.NoContent(http.StatusNoContent)
}

func (s *Server) setCustomerPlan(c echo.Context) error {
	env, id, err := s.customerTarget(c)
	if err != nil {
		return err
	}
	var req setPlanRequest
	if err := bindJSON(c, &req); err != nil {
		return err
	}
	if fe := checkName("plan", req.Plan); fe != nil {
		return problem.Validation("invalid plan change", []problem.FieldError{*fe})
	}
	ctx := c.Request().Context()
	p, err := s.policyFor(ctx, env)
	if err != nil {
		return err
	}
	next := p.Plan(req.Plan)
	if next == nil {
		return problem.Validation("invalid plan change", []problem.FieldError{{Path: "plan", Message: fmt.Sprintf("unknown plan %q", req.Plan)}})
	}
	pr := principal(c)
	var out store.Customer
	var changeID int64
	err = s.store.InTx(ctx, func(tx pgx.Tx) error {
		before, err := s.loadCustomer(ctx, tx, p, env, id, true)
		if err != nil {
			return err
		}
		if before.ResolvedPlan == next.Name {
			out = before // the engine treats a move to the current plan as a no-op
			return nil
		}
		upd := before
		upd.Plan = next.Name
		if err := store.UpdateCustomer(ctx, tx, pr.TenantID, env.ID, &upd); err != nil {
			return err
		}
		after, err := s.loadCustomer(ctx, tx, p, env, before.ID, false)
		if err != nil {
			return err
		}
		out = after
		ow := req.OverwriteMeters
		changeID, err = s.recordCustomerChange(c, tx, env, after.ID, "customer.plan", before, after,
			customerChange{Op: opPlan, Revision: after.Revision, Customer: &after, Plan: next.Name,
				PreviousPlan: before.ResolvedPlan, OverwriteMeters: &ow})
		return err
	})
	if err != nil {
		return s.customerErr(err, id)
	}
	s.wake(env, changeID)
	return c.JSON(http.StatusOK, out)
}

func (s *Server) putCustomerOverride(c echo.Context) error {
	env, id, err := s.customerTarget(c)
	if err != nil {
		return err
	}
	var req overrideRequest
	if err := bindJSON(c, &req); err != nil {
		return err
	}
	ent, err := pathParam(c, "entitlement")
	if err != nil {
		return err
	}
	if fe := checkName("entitlement", ent); fe != nil {
		return problem.Validation("invalid override", []problem.FieldError{*fe})
	}
	o := enforcement.Override{Value: strings.TrimSpace(string(req.Value)), Credit: req.Credit, Mode: req.Mode,
		Increment: strings.TrimSpace(string(req.Increment)), Minimum: strings.TrimSpace(string(req.Minimum)),
		Resets: req.Resets, ResetInc: req.ResetInc, ResetSch: req.ResetSch, HardTrailing: req.HardTrailing, GrantsApply: req.GrantsApply}
	if req.ExpiresAt != nil {
		t, fe := parseTime("expires_at", *req.ExpiresAt)
		if fe != nil {
			return problem.Validation("invalid override", []problem.FieldError{*fe})
		}
		if !t.After(time.Now()) {
			return problem.Validation("invalid override", []problem.FieldError{{Path: "expires_at", Message: fmt.Sprintf("%s is not in the future", t.Format(time.RFC3339))}})
		}
		o.ExpiresAt = t
	}
	for _, f := range []struct{ path, v string }{{"credit", o.Credit}, {"mode", o.Mode}, {"reset_inc", o.ResetInc}, {"reset_sch", o.ResetSch},
		{"value", o.Value}, {"increment", o.Increment}, {"minimum", o.Minimum}} {
		if fe := checkText(f.path, f.v, maxIDLength); fe != nil {
			return problem.Validation("invalid override", []problem.FieldError{*fe})
		}
	}
	ctx := c.Request().Context()
	p, err := s.policyFor(ctx, env)
	if err != nil {
		return err
	}
	idx, ok := p.EntitlementIndex(ent)
	if !ok {
		return problem.Validation("invalid override", []problem.FieldError{{Path: "entitlement", Message: fmt.Sprintf("unknown entitlement %q: no plan of the active policy defines it", ent)}})
	}
	spec, err := json.Marshal(o)
	if err != nil {
		return err
	}
	pr := principal(c)
	var out store.Customer
	var changeID int64
	err = s.store.InTx(ctx, func(tx pgx.Tx) error {
		cust, err := s.loadCustomer(ctx, tx, p, env, id, true)
		if err != nil {
			return err
		}
		plan := p.Plan(cust.ResolvedPlan)
		var ce *policies.CompiledEntitlement
		if plan != nil {
			ce = plan.Entitlement(idx)
		}
		if ce == nil {
			return problem.Validation("invalid override", []problem.FieldError{{Path: "entitlement",
				Message: fmt.Sprintf("%q is not on the customer's plan %q", ent, cust.ResolvedPlan)}})
		}
		if fes := validateOverride(p, ce, o); len(fes) > 0 {
			return problem.Validation("invalid override", fes)
		}
		// A scoped entitlement is metered (and overridden) on the customer of the scope's
		// type found through refs, as the engine does.
		owner := cust
		if ce.Scope != "" && ce.Scope != cust.Type {
			ownerID, err := s.scopeOwner(ctx, tx, env, cust, ce.Scope)
			if err != nil {
				return err
			}
			if ownerID == "" {
				return problem.Validation("invalid override", []problem.FieldError{{Path: "entitlement",
					Message: fmt.Sprintf("%q is metered on a customer of type %q and none is reachable through this customer's refs", ent, ce.Scope)}})
			}
			if owner, err = s.loadCustomer(ctx, tx, p, env, ownerID, true); err != nil {
				return err
			}
		}
		var prev *json.RawMessage
		if old, err := store.GetOverride(ctx, tx, pr.TenantID, env.ID, owner.ID, ent); err == nil {
			prev = &old.Spec
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		row := store.CustomerOverride{Entitlement: ent, Spec: spec, CreatedBy: &pr.KeyID}
		if !o.ExpiresAt.IsZero() {
			t := o.ExpiresAt
			row.ExpiresAt = &t
		}
		if err := store.PutOverride(ctx, tx, pr.TenantID, env.ID, owner.ID, row); err != nil {
			return err
		}
		if _, _, err := store.TouchCustomer(ctx, tx, pr.TenantID, env.ID, owner.ID); err != nil {
			return err
		}
		after, err := s.loadCustomer(ctx, tx, p, env, owner.ID, false)
		if err != nil {
			return err
		}
		out = after
		var before any
		if prev != nil {
			before = overrideAudit{Entitlement: ent, Override: *prev}
		}
		changeID, err = s.recordCustomerChange(c, tx, env, owner.ID, "customer.override.set", before,
			overrideAudit{Entitlement: ent, Override: spec},
			customerChange{Op: opOverride, Revision: after.Revision, Customer: &after, Entitlement: ent, Override: &o})
		return err
	})
	if err != nil {
		return s.customerErr(err, id)
	}
	s.wake(env, changeID)
	return c.JSON(http.StatusOK, out)
}

type overrideAudit struct {
	Entitlement string          `json:"entitlement"`
	Override    json.RawMessage `json:"override"`
}

func (s *Server) deleteCustomerOverride(c echo.Context) error {
	env, id, err := s.customerTarget(c)
	if err != nil {
		return err
	}
	ent, err := pathParam(c, "entitlement")
	if err != nil {
		return err
	}
	if fe := checkName("entitlement", ent); fe != nil {
		return problem.Validation("invalid override", []problem.FieldError{*fe})
	}
	ctx := c.Request().Context()
	p, err := s.policyOrNil(ctx, env)
	if err != nil {
		return err
	}
	pr := principal(c)
	var changeID int64
	err = s.store.InTx(ctx, func(tx pgx.Tx) error {
		cust, err := s.loadCustomer(ctx, tx, p, env, id, true)
		if err != nil {
			return err
		}
		holder := cust.ID
		old, err := store.GetOverride(ctx, tx, pr.TenantID, env.ID, holder, ent)
		if errors.Is(err, store.ErrNotFound) && p != nil {
			// A scoped entitlement's override lives on the scope owner.
			if idx, ok := p.EntitlementIndex(ent); ok {
				if plan := p.Plan(cust.ResolvedPlan); plan != nil {
					if ce := plan.Entitlement(idx); ce != nil && ce.Scope != "" && ce.Scope != cust.Type {
						ownerID, oerr := s.scopeOwner(ctx, tx, env, cust, ce.Scope)
						if oerr != nil {
							return oerr
						}
						if ownerID != "" {
							if _, err := s.loadCustomer(ctx, tx, p, env, ownerID, true); err != nil {
								return err
							}
							holder = ownerID
							old, err = store.GetOverride(ctx, tx, pr.TenantID, env.ID, holder, ent)
						}
					}
				}
			}
		}
		if errors.Is(err, store.ErrNotFound) {
			return problem.New(http.StatusNotFound, fmt.Sprintf("customer %q has no override for %q", cust.ID, ent))
		}
		if err != nil {
			return err
		}
		if err := store.DeleteOverride(ctx, tx, pr.TenantID, env.ID, holder, ent); err != nil {
			return err
		}
		if _, _, err := store.TouchCustomer(ctx, tx, pr.TenantID, env.ID, holder); err != nil {
			return err
		}
		after, err := s.loadCustomer(ctx, tx, p, env, holder, false)
		if err != nil {
			return err
		}
		changeID, err = s.recordCustomerChange(c, tx, env, holder, "customer.override.delete",
			overrideAudit{Entitlement: ent, Override: old.Spec}, nil,
			customerChange{Op: opOverride, Revision: after.Revision, Customer: &after, Entitlement: ent, Removed: true})
		return err
	})
	if err != nil {
		return s.customerErr(err, id)
	}
	s.wake(env, changeID)
	return c.NoContent(http.StatusNoContent)
}

func (s *Server) applyCustomerTopup(c echo.Context) error {
	env, id, err := s.customerTarget(c)
	if err != nil {
		return err
	}
	var req topupRequest
	if err := bindJSON(c, &req); err != nil {
		return err
	}
	if fe := checkName("topup", req.Topup); fe != nil {
		return problem.Validation("invalid topup", []problem.FieldError{*fe})
	}
	var price *num.Dec
	if req.Price != nil {
		d, err := num.Parse(req.Price.String())
		switch {
		case err != nil:
			return problem.Validation("invalid topup", []problem.FieldError{{Path: "price", Message: fmt.Sprintf("must be a decimal amount, got %q", req.Price.String())}})
		case d.IsNeg():
			return problem.Validation("invalid topup", []problem.FieldError{{Path: "price", Message: "must not be negative"}})
		}
		price = &d
	}
	ctx := c.Request().Context()
	p, err := s.policyFor(ctx, env)
	if err != nil {
		return err
	}
	pr := principal(c)
	var out store.CustomerTopup
	var changeID int64
	err = s.store.InTx(ctx, func(tx pgx.Tx) error {
		cust, err := s.loadCustomer(ctx, tx, p, env, id, true)
		if err != nil {
			return err
		}
		var t *policies.CompiledTopup
		if plan := p.Plan(cust.ResolvedPlan); plan != nil {
			t = plan.CompiledTopup(req.Topup)
		}
		if t == nil {
			return problem.Validation("invalid topup", []problem.FieldError{{Path: "topup",
				Message: fmt.Sprintf("%q is not a topup of the customer's plan %q", req.Topup, cust.ResolvedPlan)}})
		}
		kid := pr.KeyID
		rec := store.CustomerTopup{Topup: t.Name, GrantID: enforcement.NewGrantID(), Credit: t.Credit.Name,
			Value: json.Number(t.Value.String()), Currency: topupCurrency, AppliedBy: &kid}
		switch {
		case price != nil:
			rec.Price = json.Number(price.String())
		case t.PriceAmount != nil:
			rec.Price = json.Number(t.PriceAmount.String())
		}
		if err := store.InsertTopup(ctx, tx, pr.TenantID, env.ID, cust.ID, &rec); err != nil {
			return err
		}
		if _, _, err := store.TouchCustomer(ctx, tx, pr.TenantID, env.ID, cust.ID); err != nil {
			return err
		}
		after, err := s.loadCustomer(ctx, tx, p, env, cust.ID, false)
		if err != nil {
			return err
		}
		out = rec
		changeID, err = s.recordCustomerChange(c, tx, env, cust.ID, "customer.topup", nil, rec,
			customerChange{Op: opTopup, Revision: after.Revision, Customer: &after, Topup: &rec})
		return err
	})
	if err != nil {
		return s.customerErr(err, id)
	}
	s.wake(env, changeID)
	return c.JSON(http.StatusCreated, out)
}

// ---- helpers ----

// pathParam returns a path parameter, percent-decoded. Echo routes on the raw path
// when the request escapes characters the default encoding would not, and then hands
// over the parameter still escaped.
func pathParam(c echo.Context, name string) (string, error) {
	v := c.Param(name)
	if c.Request().URL.RawPath == "" {
		return v, nil
	}
	u, err := url.PathUnescape(v)
	if err != nil {
		return "", problem.New(http.StatusBadRequest, fmt.Sprintf("malformed %s in the path", name))
	}
	return u, nil
}

// customerTarget resolves the environment and the customer id (or alt id) in the path.
// An id that no customer could have is a 404, like any unknown id.
func (s *Server) customerTarget(c echo.Context) (store.Environment, string, error) {
	env, err := s.environment(c, c.Param("env"))
	if err != nil {
		return store.Environment{}, "", err
	}
	id, err := pathParam(c, "id")
	if err != nil {
		return store.Environment{}, "", err
	}
	if checkName("id", id) != nil {
		return store.Environment{}, "", problem.New(http.StatusNotFound, "no such customer")
	}
	return env, id, nil
}

// customerErr maps a customer lookup or mutation failure.
func (s *Server) customerErr(err error, id string) error {
	if errors.Is(err, store.ErrNotFound) {
		return problem.New(http.StatusNotFound, fmt.Sprintf("no customer %q", id))
	}
	return s.unavailable(err)
}

// policyFor returns the environment's active policy; without one, customers cannot be
// validated, so the call is a 409.
func (s *Server) policyFor(ctx context.Context, env store.Environment) (*policies.Policy, error) {
	p, _, err := s.activePolicy(ctx, env.TenantID, env.ID)
	if errors.Is(err, errNoActivePolicy) {
		return nil, problem.New(http.StatusConflict, fmt.Sprintf("no policy is published to environment %q: publish a policy first", env.Name)).WithType("no-active-policy")
	}
	if err != nil {
		return nil, s.unavailable(err)
	}
	return p, nil
}

// policyOrNil is policyFor for reads, which work without a policy (resolved_plan is
// then empty).
func (s *Server) policyOrNil(ctx context.Context, env store.Environment) (*policies.Policy, error) {
	p, _, err := s.activePolicy(ctx, env.TenantID, env.ID)
	if errors.Is(err, errNoActivePolicy) {
		return nil, nil
	}
	if err != nil {
		return nil, s.unavailable(err)
	}
	return p, nil
}

// loadCustomer reads a customer by id or alt id with its resolved plan.
func (s *Server) loadCustomer(ctx context.Context, db store.DBTX, p *policies.Policy, env store.Environment, id string, forUpdate bool) (store.Customer, error) {
	cust, err := store.GetCustomer(ctx, db, env.TenantID, env.ID, id, forUpdate)
	if err != nil {
		return store.Customer{}, err
	}
	if err := s.fillResolvedPlan(ctx, db, p, env, &cust); err != nil {
		return store.Customer{}, err
	}
	return cust, nil
}

func (s *Server) fillResolvedPlan(ctx context.Context, db store.DBTX, p *policies.Policy, env store.Environment, cust *store.Customer) error {
	cust.ResolvedPlan = ""
	if p == nil {
		return nil
	}
	pl, err := s.planThroughRefs(ctx, db, p, env, cust.ID, cust.Plan, cust.Refs)
	if err != nil {
		return err
	}
	if pl == nil {
		pl = p.DefaultPlan
	}
	if pl != nil {
		cust.ResolvedPlan = pl.Name
	}
	return nil
}

// planThroughRefs resolves a plan as the engine does: the customer's own plan if the
// policy has it, else the first ref (depth-first, in refs order) that resolves one.
func (s *Server) planThroughRefs(ctx context.Context, db store.DBTX, p *policies.Policy, env store.Environment, id, plan string, refs []string) (*policies.CompiledPlan, error) {
	if plan != "" {
		if pl := p.Plan(plan); pl != nil {
			return pl, nil
		}
	}
	if len(refs) == 0 {
		return nil, nil
	}
	seen := map[string]bool{id: true}
	cache := map[string]store.CustomerProfile{}
	var walk func(refs []string) (*policies.CompiledPlan, error)
	walk = func(refs []string) (*policies.CompiledPlan, error) {
		var missing []string
		for _, r := range refs {
			if _, ok := cache[r]; !ok && !seen[r] {
				missing = append(missing, r)
			}
		}
		if len(missing) > 0 {
			got, err := store.CustomerProfiles(ctx, db, env.TenantID, env.ID, missing)
			if err != nil {
				return nil, err
			}
			for k, v := range got {
				cache[k] = v
			}
		}
		for _, r := range refs {
			if seen[r] || len(seen) > maxResolveVisited {
				continue
			}
			rp, ok := cache[r]
			if !ok {
				continue
			}
			seen[r] = true
			if rp.Plan != "" {
				if pl := p.Plan(rp.Plan); pl != nil {
					return pl, nil
				}
			}
			if pl, err := walk(rp.Refs); pl != nil || err != nil {
				return pl, err
			}
		}
		return nil, nil
	}
	return walk(refs)
}

// scopeOwner walks refs breadth-first for the customer of the given type, as the
// engine does for a scoped entitlement's meter; "" when none is reachable.
func (s *Server) scopeOwner(ctx context.Context, db store.DBTX, env store.Environment, cust store.Customer, scope string) (string, error) {
	seen := map[string]bool{cust.ID: true}
	frontier := cust.Refs
	for len(frontier) > 0 && len(seen) <= maxResolveVisited {
		got, err := store.CustomerProfiles(ctx, db, env.TenantID, env.ID, frontier)
		if err != nil {
			return "", err
		}
		var next []string
		for _, r := range frontier {
			rp, ok := got[r]
			if !ok || seen[r] {
				continue
			}
			if rp.Type == scope {
				return r, nil
			}
			seen[r] = true
			next = append(next, rp.Refs...)
		}
		frontier = next
	}
	return "", nil
}

// checkRefsExist reports refs that name no customer of the environment (by id: refs
// never resolve through alt ids, as in the engine).
func (s *Server) checkRefsExist(ctx context.Context, db store.DBTX, env store.Environment, refs []string, field string) error {
	if len(refs) == 0 {
		return nil
	}
	got, err := store.CustomerProfiles(ctx, db, env.TenantID, env.ID, refs)
	if err != nil {
		return err
	}
	var errs []problem.FieldError
	for i, r := range refs {
		if _, ok := got[r]; !ok {
			errs = append(errs, problem.FieldError{Path: fmt.Sprintf("%s[%d]", field, i), Message: fmt.Sprintf("no customer %q in this environment", r)})
		}
	}
	if len(errs) > 0 {
		return problem.Validation("invalid customer", errs)
	}
	return nil
}

// recordCustomerChange writes the audit entry and the change-feed entry of a customer
// mutation in its transaction, and returns the change id.
func (s *Server) recordCustomerChange(c echo.Context, tx pgx.Tx, env store.Environment, subject, action string, before, after any, change customerChange) (int64, error) {
	if err := s.audit(c, tx, &env.ID, action, "customer", subject, before, after); err != nil {
		return 0, err
	}
	return store.AppendChange(c.Request().Context(), tx, env.TenantID, env.ID, "customer", subject, change)
}

// wake tells every replica's change fan-out that the feed has moved. A lost wake-up
// only delays delivery: followers re-read the feed from Postgres.
func (s *Server) wake(env store.Environment, changeID int64) {
	if changeID == 0 {
		return
	}
	ch := "limitr:changes:" + env.TenantID.String() + ":" + env.ID.String()
	if err := s.bus.Publish(s.ctx, ch, []byte(strconv.FormatInt(changeID, 10))); err != nil {
		s.logger.Warn("api: publishing a change wake-up failed; followers will catch up by polling", "err", err, "channel", ch)
	}
}

// profileEqual reports whether an update changes nothing.
func profileEqual(a, b store.Customer) bool {
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

// ---- field validation ----

// checkName validates an identifier: required, at most 256 bytes, valid UTF-8, no
// control characters and no '/'.
func checkName(field, v string) *problem.FieldError {
	if fe := validID(field, v); fe != nil {
		return fe
	}
	return checkText(field, v, maxIDLength)
}

// checkText validates free text: at most max bytes of UTF-8 without control characters.
func checkText(field, v string, max int) *problem.FieldError {
	switch {
	case len(v) > max:
		return &problem.FieldError{Path: field, Message: fmt.Sprintf("is longer than %d bytes", max)}
	case !utf8.ValidString(v):
		return &problem.FieldError{Path: field, Message: "is not valid UTF-8"}
	case strings.IndexFunc(v, unicode.IsControl) >= 0:
		return &problem.FieldError{Path: field, Message: "must not contain control characters"}
	}
	return nil
}

func checkRefs(self string, refs []string) []problem.FieldError {
	var errs []problem.FieldError
	if len(refs) > maxRefs {
		return []problem.FieldError{{Path: "refs", Message: fmt.Sprintf("has more than %d entries", maxRefs)}}
	}
	seen := map[string]bool{}
	for i, r := range refs {
		path := fmt.Sprintf("refs[%d]", i)
		switch fe := checkName(path, r); {
		case fe != nil:
			errs = append(errs, *fe)
		case self != "" && r == self:
			errs = append(errs, problem.FieldError{Path: path, Message: "a customer cannot reference itself"})
		case seen[r]:
			errs = append(errs, problem.FieldError{Path: path, Message: fmt.Sprintf("%q is listed twice", r)})
		}
		seen[r] = true
	}
	return errs
}

// checkAltIDs validates alt ids and drops duplicates and the customer's own id, as the
// engine does.
func checkAltIDs(self string, alts []string) ([]string, []problem.FieldError) {
	if len(alts) > maxAltIDs {
		return nil, []problem.FieldError{{Path: "alt_ids", Message: fmt.Sprintf("has more than %d entries", maxAltIDs)}}
	}
	var errs []problem.FieldError
	out := []string{}
	for i, a := range alts {
		if fe := checkName(fmt.Sprintf("alt_ids[%d]", i), a); fe != nil {
			errs = append(errs, *fe)
			continue
		}
		if a == self || slices.Contains(out, a) {
			continue
		}
		out = append(out, a)
	}
	return out, errs
}

func checkMetadata(raw json.RawMessage) (json.RawMessage, *problem.FieldError) {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 || bytes.Equal(t, []byte("null")) {
		return json.RawMessage("{}"), nil
	}
	if len(t) > maxMetadataBytes {
		return nil, &problem.FieldError{Path: "metadata", Message: fmt.Sprintf("is larger than %d bytes", maxMetadataBytes)}
	}
	if t[0] != '{' {
		return nil, &problem.FieldError{Path: "metadata", Message: "must be a JSON object"}
	}
	var m map[string]any
	if err := json.Unmarshal(t, &m); err != nil {
		return nil, &problem.FieldError{Path: "metadata", Message: "must be a JSON object"}
	}
	// Postgres jsonb rejects \u0000 in strings; catch it here rather than as a 500.
	if bytes.Contains(t, []byte(`\u0000`)) {
		return nil, &problem.FieldError{Path: "metadata", Message: "must not contain NUL characters"}
	}
	return json.RawMessage(t), nil
}

func checkTimezone(tz string) *problem.FieldError {
	if tz == "" {
		return nil
	}
	if fe := checkText("timezone", tz, 64); fe != nil {
		return fe
	}
	if _, err := time.LoadLocation(tz); err != nil {
		return &problem.FieldError{Path: "timezone", Message: fmt.Sprintf("unknown time zone %q", tz)}
	}
	return nil
}

func parseTime(field, v string) (time.Time, *problem.FieldError) {
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return time.Time{}, &problem.FieldError{Path: field, Message: fmt.Sprintf("must be an RFC 3339 timestamp such as 2025-01-31T00:00:00Z, got %q", v)}
	}
	t = t.UTC()
	if t.Year() < 1 || t.Year() > 9999 {
		return time.Time{}, &problem.FieldError{Path: field, Message: "is out of range"}
	}
	return t.Truncate(time.Microsecond), nil
}

// validateOverride checks an override against the policy with the engine's own
// Compile, so the API and the SDK can never disagree on what is valid.
func validateOverride(p *policies.Policy, ce *policies.CompiledEntitlement, o enforcement.Override) []problem.FieldError {
	_, err := o.Compile(p, ce)
	if err == nil {
		return nil
	}
	var ve *policies.ValidationError
	if errors.As(err, &ve) {
		fes := make([]problem.FieldError, 0, len(ve.Problems))
		for _, pr := range ve.Problems {
			fes = append(fes, problem.FieldError{Path: pr.Path, Message: pr.Message})
		}
		return fes
	}
	var fes []problem.FieldError
	for _, e := range leaves(err) {
		var fe *enforcement.OverrideFieldError
		if errors.As(e, &fe) {
			fes = append(fes, problem.FieldError{Path: fe.Field, Message: fe.Err.Error()})
		}
	}
	if len(fes) == 0 {
		fes = []problem.FieldError{{Path: "(body)", Message: err.Error()}}
	}
	return fes
}

// leaves flattens an error tree built with %w and errors.Join.
func leaves(err error) []error {
	switch u := err.(type) {
	case interface{ Unwrap() []error }:
		var out []error
		for _, e := range u.Unwrap() {
			out = append(out, leaves(e)...)
		}
		return out
	case interface{ Unwrap() error }:
		if _, ok := err.(*enforcement.OverrideFieldError); !ok {
			return leaves(u.Unwrap())
		}
	}
	return []error{err}
}
