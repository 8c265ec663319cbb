package customers

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/limitr/limitr/internal/enforcement"
	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/validation"
	"github.com/limitr/limitr/internal/wire"
)

// Bounds on customer fields beyond ids.
const (
	maxLabelLength   = 1024
	maxRefs          = 100
	maxAltIDs        = 100
	maxMetadataBytes = 64 << 10
	maxTimezone      = 64
)

// CreateInput creates a customer (the request wire.CreateCustomerRequest defines).
// Plan "" inherits through refs, else the active policy's default plan. Type defaults
// to "user", Label to "User", BillingAnchor to the creation time.
type CreateInput wire.CreateCustomerRequest

// Validate checks every field; the error lists every problem.
func (in CreateInput) Validate() error {
	_, err := in.prepare(time.Now())
	return err
}

// created is a CreateInput checked and normalised.
type created struct {
	id, plan, typ, label string
	refs, alts           []string
	meta                 json.RawMessage
	tz                   string
	anchor               time.Time
	anchorSet            bool
	testClock            string
	// voucher is set by the metadata form of a voucher (VoucherFromMetadata).
	voucher *voucherSpec
}

func (in CreateInput) prepare(now time.Time) (created, error) {
	var errs validation.Errors
	out := created{id: in.ID, plan: in.Plan, typ: "user", label: "User", tz: in.Timezone,
		anchor: now.UTC().Truncate(time.Microsecond)}
	errs.AddField(validation.ID("id", in.ID))
	if in.Plan != "" {
		errs.AddField(validation.ID("plan", in.Plan))
	}
	if in.Type != nil {
		out.typ = *in.Type
		errs.AddField(validation.ID("type", out.typ))
	}
	if in.Label != nil {
		out.label = *in.Label
		errs.AddField(validation.Text("label", out.label, maxLabelLength))
	}
	out.refs = in.Refs
	if out.refs == nil {
		out.refs = []string{}
	}
	checkRefs(&errs, in.ID, out.refs)
	out.alts = checkAltIDs(&errs, in.ID, in.AltIDs)
	out.meta = checkMetadata(&errs, in.Metadata)
	out.voucher = metadataVoucher(&errs, out.meta, now)
	errs.AddField(checkTimezone(in.Timezone))
	if in.BillingAnchor != nil {
		t, fe := validation.Time("billing_anchor", *in.BillingAnchor)
		errs.AddField(fe)
		out.anchor, out.anchorSet = t, true
	}
	if in.TestClock != "" {
		if _, err := uuid.Parse(in.TestClock); err != nil {
			errs.Add("test_clock", "is not a test clock id")
		}
		out.testClock = in.TestClock
	}
	return out, errs.Err("invalid customer")
}

// UpdateInput changes the profile fields it sets (wire.UpdateCustomerRequest); absent
// fields keep their values. Alt ids cannot be changed.
type UpdateInput wire.UpdateCustomerRequest

// Validate checks every field set.
func (in UpdateInput) Validate() error {
	_, _, err := in.prepare()
	return err
}

func (in UpdateInput) prepare() (meta json.RawMessage, anchor time.Time, err error) {
	var errs validation.Errors
	if in.Type != nil {
		errs.AddField(validation.ID("type", *in.Type))
	}
	if in.Label != nil {
		errs.AddField(validation.Text("label", *in.Label, maxLabelLength))
	}
	if in.Refs != nil {
		checkRefs(&errs, "", *in.Refs)
	}
	if in.Metadata != nil {
		meta = checkMetadata(&errs, in.Metadata)
	}
	if in.Timezone != nil {
		errs.AddField(checkTimezone(*in.Timezone))
	}
	if in.BillingAnchor != nil {
		var fe *validation.FieldError
		anchor, fe = validation.Time("billing_anchor", *in.BillingAnchor)
		errs.AddField(fe)
	}
	return meta, anchor, errs.Err("invalid customer")
}

// SetPlanInput moves a customer to a plan (wire.SetPlanRequest). OverwriteMeters
// starts its meters afresh (SDKs apply it); otherwise usage carries over.
type SetPlanInput wire.SetPlanRequest

// Validate checks the plan name.
func (in SetPlanInput) Validate() error {
	var errs validation.Errors
	errs.AddField(validation.ID("plan", in.Plan))
	return errs.Err("invalid plan change")
}

// OverrideInput sets a customer's override of one entitlement's limit
// (wire.OverrideRequest): only the fields given change, the rest comes from the
// plan's limit.
type OverrideInput wire.OverrideRequest

// Validate checks what can be checked without the policy (the policy's own compiler
// checks the rest when the override is set).
func (in OverrideInput) Validate() error {
	_, err := in.prepare(time.Now())
	return err
}

func (in OverrideInput) prepare(now time.Time) (enforcement.Override, error) {
	o := enforcement.Override{Value: strings.TrimSpace(string(in.Value)), Credit: in.Credit, Mode: in.Mode,
		Increment: strings.TrimSpace(string(in.Increment)), Minimum: strings.TrimSpace(string(in.Minimum)),
		Resets: in.Resets, ResetInc: in.ResetInc, ResetSch: in.ResetSch, HardTrailing: in.HardTrailing, GrantsApply: in.GrantsApply}
	var errs validation.Errors
	if in.ExpiresAt != nil {
		t, fe := validation.Time("expires_at", *in.ExpiresAt)
		switch {
		case fe != nil:
			errs.AddField(fe)
		case !t.After(now):
			errs.Addf("expires_at", "%s is not in the future", t.Format(time.RFC3339))
		}
		o.ExpiresAt = t
	}
	for _, f := range []struct{ path, v string }{{"credit", o.Credit}, {"mode", o.Mode}, {"reset_inc", o.ResetInc}, {"reset_sch", o.ResetSch},
		{"value", o.Value}, {"increment", o.Increment}, {"minimum", o.Minimum}} {
		errs.AddField(validation.Text(f.path, f.v, validation.MaxIDLength))
	}
	return o, errs.Err("invalid override")
}

// TopupInput applies one of the customer's plan's topups (wire.TopupRequest). Price,
// when given, is what the customer paid (an exact decimal, in runes); otherwise the
// topup's own price.
type TopupInput wire.TopupRequest

// Validate checks the topup name and the price.
func (in TopupInput) Validate() error {
	_, err := in.prepare()
	return err
}

func (in TopupInput) prepare() (*num.Dec, error) {
	var errs validation.Errors
	errs.AddField(validation.ID("topup", in.Topup))
	var price *num.Dec
	if in.Price != nil {
		d, err := num.Parse(in.Price.String())
		switch {
		case err != nil:
			errs.Addf("price", "must be a decimal amount, got %q", in.Price.String())
		case d.IsNeg():
			errs.Add("price", "must not be negative")
		default:
			price = &d
		}
	}
	return price, errs.Err("invalid topup")
}

func checkRefs(errs *validation.Errors, self string, refs []string) {
	if len(refs) > maxRefs {
		errs.Addf("refs", "has more than %d entries", maxRefs)
		return
	}
	seen := map[string]bool{}
	for i, r := range refs {
		path := fmt.Sprintf("refs[%d]", i)
		switch fe := validation.ID(path, r); {
		case fe != nil:
			errs.AddField(fe)
		case self != "" && r == self:
			errs.Add(path, "a customer cannot reference itself")
		case seen[r]:
			errs.Addf(path, "%q is listed twice", r)
		}
		seen[r] = true
	}
}

// checkAltIDs validates alt ids and drops duplicates and the customer's own id, as the
// engine does.
func checkAltIDs(errs *validation.Errors, self string, alts []string) []string {
	if len(alts) > maxAltIDs {
		errs.Addf("alt_ids", "has more than %d entries", maxAltIDs)
		return nil
	}
	out := []string{}
	for i, a := range alts {
		if fe := validation.ID(fmt.Sprintf("alt_ids[%d]", i), a); fe != nil {
			errs.AddField(fe)
			continue
		}
		if a == self || slices.Contains(out, a) {
			continue
		}
		out = append(out, a)
	}
	return out
}

func checkMetadata(errs *validation.Errors, raw json.RawMessage) json.RawMessage {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 || bytes.Equal(t, []byte("null")) {
		return json.RawMessage("{}")
	}
	obj, fe := validation.JSONObject("metadata", t, maxMetadataBytes)
	errs.AddField(fe)
	return obj
}

func checkTimezone(tz string) *validation.FieldError {
	if tz == "" {
		return nil
	}
	if fe := validation.Text("timezone", tz, maxTimezone); fe != nil {
		return fe
	}
	if _, err := time.LoadLocation(tz); err != nil {
		return &validation.FieldError{Path: "timezone", Message: fmt.Sprintf("unknown time zone %q", tz)}
	}
	return nil
}
