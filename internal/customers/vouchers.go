package customers

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

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
	MetaVoucher        = "limitr_voucher"         // any non-empty value: the customer has a voucher
	MetaVoucherExpires = "limitr_voucher_expires" // RFC 3339, or milliseconds since the epoch
	MetaVoucherRunes   = "limitr_voucher_runes"   // optional: a number or a decimal string
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
	if isEmptyValue(meta[MetaVoucher]) {
		return voucherSpec{}, false
	}
	var spec voucherSpec
	const prefix = "metadata."
	switch v := meta[MetaVoucherExpires].(type) {
	case nil:
		errs.Add(prefix+MetaVoucherExpires, "is required with "+MetaVoucher+": an RFC 3339 timestamp or milliseconds since the epoch")
	case string:
		s := strings.TrimSpace(v)
		if ms, err := strconv.ParseInt(s, 10, 64); err == nil {
			spec.expires = checkMillis(errs, prefix+MetaVoucherExpires, ms, now)
		} else {
			spec.expires = checkExpiry(errs, prefix+MetaVoucherExpires, s, now)
		}
	default:
		ms, ok := wholeNumber(v)
		if !ok {
			errs.Addf(prefix+MetaVoucherExpires, "must be an RFC 3339 timestamp or a whole number of milliseconds since the epoch, got %v", v)
			break
		}
		spec.expires = checkMillis(errs, prefix+MetaVoucherExpires, ms, now)
	}
	switch v := meta[MetaVoucherRunes].(type) {
	case nil:
	case string:
		spec.runes = checkRunes(errs, prefix+MetaVoucherRunes, v)
	case json.Number:
		spec.runes = checkRunes(errs, prefix+MetaVoucherRunes, v.String())
	case float64:
		spec.runes = checkRunes(errs, prefix+MetaVoucherRunes, strconv.FormatFloat(v, 'f', -1, 64))
	case int:
		spec.runes = checkRunes(errs, prefix+MetaVoucherRunes, strconv.Itoa(v))
	case int64:
		spec.runes = checkRunes(errs, prefix+MetaVoucherRunes, strconv.FormatInt(v, 10))
	default:
		errs.Addf(prefix+MetaVoucherRunes, "must be a number or a decimal string, got %v", v)
	}
	return spec, true
}

// checkMillis is checkExpiry for milliseconds since the epoch.
func checkMillis(errs *validation.Errors, path string, ms int64, now time.Time) time.Time {
	t := time.UnixMilli(ms).UTC()
	if t.Year() < 1 || t.Year() > 9999 {
		errs.Addf(path, "%d milliseconds since the epoch is not a date between years 1 and 9999", ms)
		return time.Time{}
	}
	if !t.After(now) {
		errs.Addf(path, "%s is not in the future", t.Format(time.RFC3339))
	}
	return t
}

// wholeNumber reads an integral JSON number in any of the forms a decoded map holds.
func wholeNumber(v any) (int64, bool) {
	switch n := v.(type) {
	case json.Number:
		if i, err := n.Int64(); err == nil {
			return i, true
		}
		f, err := n.Float64()
		if err != nil {
			return 0, false
		}
		return wholeNumber(f)
	case float64:
		if n != math.Trunc(n) || math.Abs(n) > 1<<62 {
			return 0, false
		}
		return int64(n), true
	case int:
		return int64(n), true
	case int64:
		return n, true
	}
	return 0, false
}

func isEmptyValue(v any) bool {
	switch x := v.(type) {
	case nil:
		return true
	case string:
		return strings.TrimSpace(x) == ""
	case bool:
		return !x
	case map[string]any:
		return len(x) == 0
	case []any:
		return len(x) == 0
	}
	return false
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
