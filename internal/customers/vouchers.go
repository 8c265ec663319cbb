package customers

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/limitr/limitr/internal/enforcement"
	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/store"
	"github.com/limitr/limitr/internal/validation"
	"github.com/limitr/limitr/internal/wire"
)

// ErrNoVoucher: the customer has no voucher (get, remove).
var ErrNoVoucher = errors.New("no voucher")

// Change-feed operation of a voucher set or removed.
const opVoucher = "voucher"

// Limitr's metadata form of a voucher: a customer created or updated with these
// metadata keys gets the voucher they describe (see VoucherFromMetadata).
const (
	MetaVoucher        = enforcement.MetaVoucher
	MetaVoucherExpires = enforcement.MetaVoucherExpires
	MetaVoucherRunes   = enforcement.MetaVoucherRunes
)

// maxRunesText bounds a voucher amount's text, as the usage batch bounds decimals.
const maxRunesText = 64

// VoucherInput sets a customer's voucher (wire.VoucherRequest): Runes, when given, is
// its balance in runes (an exact decimal >= 0); ExpiresAt (RFC 3339) is required and
// must be in the future.
type VoucherInput wire.VoucherRequest

// Validate checks the amount and the expiry.
func (in VoucherInput) Validate() error {
	_, err := in.prepare(time.Now())
	return err
}

// voucherSpec is a voucher checked and normalised.
type voucherSpec struct {
	runes   *num.Dec // nil: the voucher only expires
	expires time.Time
}

func (in VoucherInput) prepare(now time.Time) (voucherSpec, error) {
	var errs validation.Errors
	var spec voucherSpec
	if in.Runes != nil {
		spec.runes = checkRunes(&errs, "runes", in.Runes.String())
	}
	spec.expires = checkExpiry(&errs, "expires_at", in.ExpiresAt, now)
	return spec, errs.Err("invalid voucher")
}

// checkRunes parses an exact, non-negative decimal written without exponent, so
// nothing is rounded on its way to Postgres and back to the SDK.
func checkRunes(errs *validation.Errors, path, s string) *num.Dec {
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		errs.Add(path, "must be a decimal amount such as \"12.5\"")
		return nil
	case len(s) > maxRunesText:
		errs.Addf(path, "is longer than %d characters", maxRunesText)
		return nil
	case strings.ContainsAny(s, "eE"):
		errs.Addf(path, "must be a plain decimal such as \"12.5\" (no exponent), got %q", s)
		return nil
	}
	d, err := num.Parse(s)
	switch {
	case err != nil:
		errs.Addf(path, "must be an exact decimal amount such as \"12.5\", got %q", s)
		return nil
	case d.IsNeg():
		errs.Add(path, "must not be negative")
		return nil
	}
	return &d
}

// checkExpiry parses a required RFC 3339 expiry in the future.
func checkExpiry(errs *validation.Errors, path, s string, now time.Time) time.Time {
	if s == "" {
		errs.Add(path, "is required: an RFC 3339 timestamp in the future")
		return time.Time{}
	}
	t, fe := validation.Time(path, s)
	if fe != nil {
		errs.AddField(fe)
		return time.Time{}
	}
	if !t.After(now) {
		errs.Addf(path, "%s is not in the future", t.Format(time.RFC3339))
	}
	return t
}

// VoucherFromMetadata reads Limitr's metadata form of a voucher: limitr_voucher (any
// non-empty value: not null, "", false, {} or []) says the customer has one,
// limitr_voucher_expires (required then) is when it expires, an RFC 3339 string or a
// number of milliseconds since the epoch (a JSON number or a string of digits), and
// limitr_voucher_runes (optional) its balance, a number or a decimal string >= 0.
// ok is false when limitr_voucher is absent or empty: the other keys are then plain
// metadata. Errors are a *validation.Error whose paths name the metadata keys
// (metadata.limitr_voucher_expires). Numbers decoded with json.Decoder.UseNumber keep
// their exact value; float64 ones are written back in the shortest exact form.
func VoucherFromMetadata(meta map[string]any, now time.Time) (VoucherInput, bool, error) {
	var errs validation.Errors
	spec, ok := voucherFromMetadata(&errs, meta, now)
	if err := errs.Err("invalid customer"); err != nil || !ok {
		return VoucherInput{}, false, err
	}
	in := VoucherInput{ExpiresAt: spec.expires.Format(time.RFC3339Nano)}
	if spec.runes != nil {
		r := json.Number(spec.runes.String())
		in.Runes = &r
	}
	return in, true, nil
}

func voucherFromMetadata(errs *validation.Errors, meta map[string]any, now time.Time) (voucherSpec, bool) {
	// One parser of the metadata form, the engine's: a voucher set here reads the same
	// in every SDK.
	v, err := enforcement.VoucherFromMetadata(meta)
	var fe *enforcement.VoucherFieldError
	switch {
	case errors.As(err, &fe):
		errs.Add(fe.Field, fe.Message)
		return voucherSpec{}, true
	case err != nil:
		errs.Add("metadata."+MetaVoucher, err.Error())
		return voucherSpec{}, true
	case v == nil:
		return voucherSpec{}, false
	}
	spec := voucherSpec{expires: v.ExpiresAt}
	if !spec.expires.After(now) {
		errs.Addf("metadata."+MetaVoucherExpires, "%s is not in the future", spec.expires.Format(time.RFC3339))
	}
	if !v.ExpiryOnly {
		spec.runes = checkRunes(errs, "metadata."+MetaVoucherRunes, v.ExactRunes().String())
	}
	return spec, true
}

// metadataVoucher reads the metadata form of a voucher from a customer's (checked)
// metadata.
func metadataVoucher(errs *validation.Errors, meta json.RawMessage, now time.Time) *voucherSpec {
	m := decodeMetadata(meta)
	if m == nil {
		return nil
	}
	spec, ok := voucherFromMetadata(errs, m, now)
	if !ok {
		return nil
	}
	return &spec
}

// decodeMetadata decodes a metadata object keeping numbers exact (nil when it is not
// an object; its validation reports that).
func decodeMetadata(meta json.RawMessage) map[string]any {
	d := json.NewDecoder(bytes.NewReader(meta))
	d.UseNumber()
	var m map[string]any
	if d.Decode(&m) != nil {
		return nil
	}
	return m
}

// voucherFieldsChanged reports whether an update changes the metadata form of the
// voucher: only then does it set one, so an update of other metadata keys neither
// refills a voucher nor fails on a past expiry it does not touch.
func voucherFieldsChanged(before, after json.RawMessage) bool {
	a, b := decodeMetadata(before), decodeMetadata(after)
	for _, k := range []string{MetaVoucher, MetaVoucherExpires, MetaVoucherRunes} {
		if !reflect.DeepEqual(a[k], b[k]) {
			return true
		}
	}
	return false
}

// SetVoucher sets a customer's voucher, replacing any previous one: the new voucher
// gets a new id, so SDK debits of the old one never reduce it. It returns the voucher
// as the customer record now carries it (nothing debited yet).
func (s *Service) SetVoucher(ctx context.Context, env store.Environment, id string, in VoucherInput) (wire.CustomerVoucher, error) {
	spec, err := in.prepare(s.now())
	if err != nil {
		return wire.CustomerVoucher{}, err
	}
	p, err := s.policyOrNil(ctx, env)
	if err != nil {
		return wire.CustomerVoucher{}, err
	}
	var out wire.CustomerVoucher
	err = s.mutation(ctx, env, func(tx pgx.Tx) (*change, error) {
		before, err := s.load(ctx, tx, p, env, id, true)
		if err != nil {
			return nil, err
		}
		if err := putVoucher(ctx, tx, env, before, spec); err != nil {
			return nil, err
		}
		after, err := s.touch(ctx, tx, p, env, before.ID)
		if err != nil {
			return nil, err
		}
		out = *after.Voucher
		var old any
		if before.Voucher != nil {
			old = before.Voucher
		}
		return &change{subject: after.ID, action: "customer.voucher.set", before: old, after: after.Voucher,
			feed: feedOf(opVoucher, after)}, nil
	})
	return out, err
}

// GetVoucher reads a customer's voucher with what has been debited from it;
// ErrNoVoucher when it has none.
func (s *Service) GetVoucher(ctx context.Context, env store.Environment, id string) (wire.CustomerVoucher, error) {
	c, err := s.GetRecord(ctx, env, id)
	if err != nil {
		return wire.CustomerVoucher{}, err
	}
	if c.Voucher == nil {
		return wire.CustomerVoucher{}, fmt.Errorf("%w: customer %q has no voucher", ErrNoVoucher, c.ID)
	}
	return *c.Voucher, nil
}

// RemoveVoucher removes a customer's voucher (its debits stay recorded under its id);
// ErrNoVoucher when it has none. SDKs then stop charging overage to a voucher.
func (s *Service) RemoveVoucher(ctx context.Context, env store.Environment, id string) error {
	p, err := s.policyOrNil(ctx, env)
	if err != nil {
		return err
	}
	return s.mutation(ctx, env, func(tx pgx.Tx) (*change, error) {
		before, err := s.load(ctx, tx, p, env, id, true)
		if err != nil {
			return nil, err
		}
		if before.Voucher == nil {
			return nil, fmt.Errorf("%w: customer %q has no voucher", ErrNoVoucher, before.ID)
		}
		if err := store.DeleteVoucher(ctx, tx, env.TenantID, env.ID, before.ID); err != nil {
			return nil, err
		}
		after, err := s.touch(ctx, tx, p, env, before.ID)
		if err != nil {
			return nil, err
		}
		feed := feedOf(opVoucher, after)
		feed.Removed = true
		return &change{subject: after.ID, action: "customer.voucher.delete", before: before.Voucher, feed: feed}, nil
	})
}

// putVoucher writes a new voucher for c (locked by the caller) under a new id.
func putVoucher(ctx context.Context, tx pgx.Tx, env store.Environment, c store.Customer, spec voucherSpec) error {
	return store.PutVoucher(ctx, tx, env.TenantID, env.ID, c, store.NewVoucher{ID: newVoucherID(), Runes: spec.runes,
		ExpiresAt: spec.expires, SetBy: store.ActorFrom(ctx).KeyID})
}

// newVoucherID is a fresh voucher id: 96 random bits, so ids never repeat.
func newVoucherID() string {
	var b [12]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return "vch_" + hex.EncodeToString(b[:])
}
