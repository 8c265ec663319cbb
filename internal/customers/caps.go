package customers

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/limitr/limitr/internal/enforcement"
	"github.com/limitr/limitr/internal/policies"
	"github.com/limitr/limitr/internal/store"
	"github.com/limitr/limitr/internal/validation"
	"github.com/limitr/limitr/internal/wire"
)

// ErrNoCap: the customer has no cap of that id (get, remove, reset).
var ErrNoCap = errors.New("no such cap")

// Change-feed operation of a cap set, reset or removed.
const opCap = "cap"

// MaxCapIDLength bounds a cap's id (the {cap} of the cap routes) and a cap key named
// by usage batches and lease asks.
const MaxCapIDLength = 128

// maxCapList bounds a cap's shared_with and scope lists.
const maxCapList = 100

// CapInput creates a customer's cap or replaces its configuration (wire.CapRequest):
// Credit ("rune" when empty) is "rune", "usd", a credit or an exchange currency of the
// environment's active policy; Value (an exact decimal >= 0) is required; ResetInc (a
// positive duration) and ResetSch (a reset schedule) exclude each other; ExpiresAt is
// RFC 3339.
type CapInput wire.CapRequest

// capSpec is a cap checked and normalised.
type capSpec struct {
	row store.NewCap
}

// prepare checks the cap named id against p (nil: no active policy; only "rune" and
// "usd" caps are then valid). Every error names its field.
func (in CapInput) prepare(id string, p *policies.Policy) (capSpec, error) {
	var errs validation.Errors
	checkCapID(&errs, id)
	spec := capSpec{row: store.NewCap{ID: id, Credit: strings.TrimSpace(in.Credit)}}
	if spec.row.Credit == "" {
		spec.row.Credit = "rune"
	}
	switch c := spec.row.Credit; {
	case c == "rune" || c == "usd":
	case p == nil:
		errs.Addf("credit", "%q is neither \"rune\" nor \"usd\", and no policy is published to define it", c)
	default:
		if err := (&enforcement.Cap{ID: "x", Credit: c}).Validate(p); err != nil {
			errs.Add("credit", capMessage(err, "credit", fmt.Sprintf("%q is neither a credit nor an exchange currency of the active policy", c)))
		}
	}
	if in.Value == nil {
		errs.Add("value", "is required: the cap's ceiling, an exact decimal >= 0 such as \"100\"")
	} else if d := checkRunes(&errs, "value", in.Value.String()); d != nil {
		spec.row.Value = *d
	}
	if in.ResetInc != "" && in.ResetSch != "" {
		errs.Add("reset_sch", "is exclusive with reset_inc: give one of them")
	}
	if in.ResetInc != "" {
		if err := (&enforcement.Cap{ID: "x", Credit: "rune", ResetInc: in.ResetInc}).Validate(nil); err != nil {
			errs.Add("reset_inc", capMessage(err, "reset_inc", fmt.Sprintf("%q is not a positive duration such as \"30days\"", in.ResetInc)))
		}
	}
	if in.ResetSch != "" {
		if err := (&enforcement.Cap{ID: "x", Credit: "rune", ResetSch: in.ResetSch}).Validate(nil); err != nil {
			errs.Add("reset_sch", capMessage(err, "reset_sch", fmt.Sprintf("%q is not a reset schedule", in.ResetSch)))
		}
	}
	if in.ExpiresAt != nil {
		t, fe := validation.Time("expires_at", *in.ExpiresAt)
		if fe != nil {
			errs.AddField(fe)
		} else {
			spec.row.ExpiresAt = &t
		}
	}
	checkCapList(&errs, "shared_with", in.SharedWith)
	checkCapList(&errs, "scope", in.Scope)
	spec.row.Config = store.CapConfig{IgnoreGrants: in.IgnoreGrants, OverageOnly: in.OverageOnly, ObserveOnly: in.ObserveOnly,
		OverheadCost: in.OverheadCost, FollowDecrements: in.FollowDecrements, HardTrailing: in.HardTrailing, Shared: in.Shared,
		SharedWith: in.SharedWith, Scope: in.Scope, Resets: in.Resets || in.ResetInc != "" || in.ResetSch != "",
		ResetInc: in.ResetInc, ResetSch: in.ResetSch}
	return spec, errs.Err("invalid cap")
}

// checkCapID checks a cap id: the rules of a caller-chosen identifier, at most
// MaxCapIDLength bytes.
func checkCapID(errs *validation.Errors, id string) {
	if fe := validation.ID("cap", id); fe != nil {
		errs.AddField(fe)
		return
	}
	if len(id) > MaxCapIDLength {
		errs.Addf("cap", "is longer than %d bytes", MaxCapIDLength)
		return
	}
	if err := (&enforcement.Cap{ID: id, Credit: "rune"}).Validate(nil); err != nil {
		errs.Add("cap", capMessage(err, "id", err.Error()))
	}
}

// checkCapList checks shared_with or scope: names of at most MaxIDLength bytes.
func checkCapList(errs *validation.Errors, path string, names []string) {
	if len(names) > maxCapList {
		errs.Addf(path, "has %d entries; at most %d", len(names), maxCapList)
		return
	}
	for i, n := range names {
		errs.AddField(validation.Required(fmt.Sprintf("%s[%d]", path, i), n))
	}
}

// capMessage is the message of the engine's cap validation error about field, or
// fallback when it names another.
func capMessage(err error, field, fallback string) string {
	msg := err.Error()
	if i := strings.Index(msg, field+": "); i >= 0 {
		return msg[i+len(field)+2:]
	}
	return fallback
}

// PutCap creates a customer's cap or replaces its configuration: a replaced cap keeps
// its key, so what was consumed still counts (ResetCap starts it from zero). It
// returns the cap as the customer record now carries it, and whether it was created.
func (s *Service) PutCap(ctx context.Context, env store.Environment, id, capID string, in CapInput) (wire.CustomerCap, bool, error) {
	p, err := s.policyOrNil(ctx, env)
	if err != nil {
		return wire.CustomerCap{}, false, err
	}
	spec, err := in.prepare(capID, p)
	if err != nil {
		return wire.CustomerCap{}, false, err
	}
	var out wire.CustomerCap
	var created bool
	err = s.mutation(ctx, env, func(tx pgx.Tx) (*change, error) {
		before, err := s.load(ctx, tx, p, env, id, true)
		if err != nil {
			return nil, err
		}
		row := spec.row
		row.Key, row.SetBy = newCapKey(), store.ActorFrom(ctx).KeyID
		if created, err = store.PutCap(ctx, tx, env.TenantID, env.ID, before, row); err != nil {
			return nil, err
		}
		after, err := s.touch(ctx, tx, p, env, before.ID)
		if err != nil {
			return nil, err
		}
		k := findCap(after, capID)
		if k == nil {
			return nil, fmt.Errorf("customers: cap %q not found after it was written", capID)
		}
		out = *k
		var old any
		if o := findCap(before, capID); o != nil {
			old = o
		}
		return &change{subject: after.ID, action: "customer.cap.set", before: old, after: k, feed: feedOf(opCap, after)}, nil
	})
	return out, created, err
}

// GetCap reads a customer's cap with its committed consumption; ErrNoCap when it has
// none of that id.
func (s *Service) GetCap(ctx context.Context, env store.Environment, id, capID string) (wire.CustomerCap, error) {
	c, err := s.GetRecord(ctx, env, id)
	if err != nil {
		return wire.CustomerCap{}, err
	}
	k := findCap(c, capID)
	if k == nil {
		return wire.CustomerCap{}, noCap(c.ID, capID)
	}
	return *k, nil
}

// ListCaps reads a customer's caps, by id.
func (s *Service) ListCaps(ctx context.Context, env store.Environment, id string) ([]wire.CustomerCap, error) {
	c, err := s.GetRecord(ctx, env, id)
	if err != nil {
		return nil, err
	}
	if c.Caps == nil {
		return []wire.CustomerCap{}, nil
	}
	return c.Caps, nil
}

// RemoveCap removes a customer's cap (what its key consumed stays recorded); ErrNoCap
// when it has none of that id. SDKs then stop enforcing it.
func (s *Service) RemoveCap(ctx context.Context, env store.Environment, id, capID string) error {
	p, err := s.policyOrNil(ctx, env)
	if err != nil {
		return err
	}
	return s.mutation(ctx, env, func(tx pgx.Tx) (*change, error) {
		before, err := s.load(ctx, tx, p, env, id, true)
		if err != nil {
			return nil, err
		}
		old := findCap(before, capID)
		if old == nil {
			return nil, noCap(before.ID, capID)
		}
		if err := store.DeleteCap(ctx, tx, env.TenantID, env.ID, before.ID, capID); err != nil {
			return nil, err
		}
		after, err := s.touch(ctx, tx, p, env, before.ID)
		if err != nil {
			return nil, err
		}
		feed := feedOf(opCap, after)
		feed.Removed = true
		return &change{subject: after.ID, action: "customer.cap.delete", before: old, feed: feed}, nil
	})
}

// ResetCap starts a customer's cap from zero: it gets a new key, and its first period
// starts now. What the old key consumed stays recorded under it, and counts no more.
// ErrNoCap when the customer has no cap of that id.
func (s *Service) ResetCap(ctx context.Context, env store.Environment, id, capID string) (wire.CustomerCap, error) {
	p, err := s.policyOrNil(ctx, env)
	if err != nil {
		return wire.CustomerCap{}, err
	}
	var out wire.CustomerCap
	err = s.mutation(ctx, env, func(tx pgx.Tx) (*change, error) {
		before, err := s.load(ctx, tx, p, env, id, true)
		if err != nil {
			return nil, err
		}
		old := findCap(before, capID)
		if old == nil {
			return nil, noCap(before.ID, capID)
		}
		if err := store.ResetCap(ctx, tx, env.TenantID, env.ID, before.ID, capID, newCapKey(), store.ActorFrom(ctx).KeyID); err != nil {
			return nil, err
		}
		after, err := s.touch(ctx, tx, p, env, before.ID)
		if err != nil {
			return nil, err
		}
		k := findCap(after, capID)
		if k == nil {
			return nil, fmt.Errorf("customers: cap %q not found after its reset", capID)
		}
		out = *k
		return &change{subject: after.ID, action: "customer.cap.reset", before: old, after: k, feed: feedOf(opCap, after)}, nil
	})
	return out, err
}

// findCap is c's cap of that id, or nil.
func findCap(c store.Customer, capID string) *wire.CustomerCap {
	for i := range c.Caps {
		if c.Caps[i].ID == capID {
			k := c.Caps[i]
			return &k
		}
	}
	return nil
}

func noCap(customer, capID string) error {
	return fmt.Errorf("%w: customer %q has no cap %q", ErrNoCap, customer, capID)
}

// newCapKey is a fresh cap key: 96 random bits, so keys never repeat.
func newCapKey() string {
	var b [12]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return "cap_" + hex.EncodeToString(b[:])
}
