package enforcement

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/policies"
)

// Limitr's customer metadata keys for a voucher (Limitr Cloud's prepaid allowance).
const (
	MetaVoucher        = "limitr_voucher"         // the voucher's id; any non-empty value
	MetaVoucherExpires = "limitr_voucher_expires" // when it expires: Unix milliseconds (or RFC 3339)
	MetaVoucherRunes   = "limitr_voucher_runes"   // its balance in runes; absent: expiry only
)

// Voucher is a customer's prepaid allowance for soft-limit overage (spec §5.9): a call
// past a soft limit whose overage grants do not cover is priced in runes and paid from
// the voucher; a call it cannot pay, or one after it expired, is denied and changes
// nothing. Check answers the same (Limitr's check ignores vouchers).
type Voucher struct {
	// ID names the voucher: the control plane's id in cloud mode, Limitr's
	// limitr_voucher metadata value locally.
	ID string
	// Runes is the balance left, in runes.
	Runes float64
	// ExpiryOnly vouchers have no balance: only the expiry is checked (Limitr's voucher
	// without limitr_voucher_runes).
	ExpiryOnly bool
	// ExpiresAt is required: calls at or after it are denied their overage.
	ExpiresAt time.Time

	exact *num.Dec
}

// voucherState is a customer's voucher as the engine keeps it. Caller holds c.mu.
type voucherState struct {
	id         string
	balance    num.Dec
	expiryOnly bool
	expires    int64 // unix nanoseconds
}

// Validate checks a voucher set through the typed API.
func (v *Voucher) Validate() error {
	if v.ExpiresAt.IsZero() {
		return fmt.Errorf("%w: expires_at: required", ErrInvalidVoucher)
	}
	if !v.ExpiryOnly && (v.Runes < 0 || math.IsNaN(v.Runes) || math.IsInf(v.Runes, 0)) {
		return fmt.Errorf("%w: runes: must be a number >= 0, got %v", ErrInvalidVoucher, v.Runes)
	}
	if strings.TrimSpace(v.ID) != v.ID || len(v.ID) > 256 {
		return fmt.Errorf("%w: id: must be at most 256 characters without surrounding spaces", ErrInvalidVoucher)
	}
	return nil
}

func (v *Voucher) state() (*voucherState, error) {
	if err := v.Validate(); err != nil {
		return nil, err
	}
	st := &voucherState{id: v.ID, expiryOnly: v.ExpiryOnly, expires: v.ExpiresAt.UnixNano(), balance: num.Zero}
	if v.ExpiryOnly {
		return st, nil
	}
	if v.exact != nil {
		st.balance = *v.exact
		return st, nil
	}
	d, err := num.FromFloat64(v.Runes)
	if err != nil {
		return nil, fmt.Errorf("%w: runes: %w", ErrInvalidVoucher, err)
	}
	st.balance = d
	return st, nil
}

func (st *voucherState) public() *Voucher {
	b := st.balance
	return &Voucher{ID: st.id, Runes: num.Float64(b), ExpiryOnly: st.expiryOnly, ExpiresAt: time.Unix(0, st.expires).UTC(), exact: &b}
}

// VoucherWithExactRunes is v with its balance given exactly (a decimal string), for the
// control plane's amounts.
func VoucherWithExactRunes(v Voucher, runes string) (Voucher, error) {
	d, err := num.Parse(runes)
	if err != nil || d.IsNeg() {
		return v, fmt.Errorf("%w: runes: %q is not a decimal >= 0", ErrInvalidVoucher, runes)
	}
	v.Runes, v.exact = num.Float64(d), &d
	return v, nil
}

// VoucherFieldError says which metadata key of a voucher's metadata form is wrong.
type VoucherFieldError struct {
	Field   string // metadata.limitr_voucher_expires
	Message string
}

func (e *VoucherFieldError) Error() string { return e.Field + ": " + e.Message }

// Unwrap makes errors.Is(err, ErrInvalidVoucher) hold.
func (e *VoucherFieldError) Unwrap() error { return ErrInvalidVoucher }

// ExactRunes is the balance as an exact decimal.
func (v *Voucher) ExactRunes() num.Dec {
	if v.exact != nil {
		return *v.exact
	}
	d, _ := num.FromFloat64(v.Runes)
	return d
}

// VoucherFromMetadata reads Limitr's metadata form of a voucher — the one parser of it,
// used by the engine and by the control plane: limitr_voucher (any non-empty value:
// not null, "", false, {} or []) says the customer has one; limitr_voucher_expires
// (required then) is when it expires, Unix milliseconds (a number or a string of
// digits) or an RFC 3339 string; limitr_voucher_runes (optional) is its balance, a
// number or a decimal string >= 0. It returns nil without limitr_voucher. Errors are a
// *VoucherFieldError naming the key (metadata.limitr_voucher_expires).
func VoucherFromMetadata(md map[string]any) (*Voucher, error) {
	id := md[MetaVoucher]
	if isEmptyValue(id) {
		return nil, nil
	}
	fail := func(key, format string, args ...any) error {
		return &VoucherFieldError{Field: "metadata." + key, Message: fmt.Sprintf(format, args...)}
	}
	v := &Voucher{ID: strings.TrimSpace(fmt.Sprint(id))}
	exp := md[MetaVoucherExpires]
	if exp == nil {
		return nil, fail(MetaVoucherExpires, "is required with %s: Unix milliseconds or an RFC 3339 time", MetaVoucher)
	}
	at, err := metaTime(exp)
	if err != nil {
		return nil, fail(MetaVoucherExpires, "%v", err)
	}
	v.ExpiresAt = at
	runes := md[MetaVoucherRunes]
	if runes == nil {
		v.ExpiryOnly = true
		return v, nil
	}
	d, err := metaDec(runes)
	if err != nil || d.IsNeg() {
		return nil, fail(MetaVoucherRunes, "must be a number or a decimal string >= 0, got %v", runes)
	}
	v.Runes, v.exact = num.Float64(d), &d
	if len(v.ID) > 256 {
		return nil, fail(MetaVoucher, "is longer than 256 characters")
	}
	return v, nil
}

func isEmptyValue(x any) bool {
	switch t := x.(type) {
	case nil:
		return true
	case string:
		return strings.TrimSpace(t) == ""
	case bool:
		return !t
	case map[string]any:
		return len(t) == 0
	case []any:
		return len(t) == 0
	}
	return false
}

func metaTime(x any) (time.Time, error) {
	var ms int64
	switch t := x.(type) {
	case time.Time:
		return t.UTC(), nil
	case string:
		s := strings.TrimSpace(t)
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			at, err := time.Parse(time.RFC3339Nano, s)
			if err != nil {
				return time.Time{}, fmt.Errorf("%q is neither Unix milliseconds nor an RFC 3339 time", t)
			}
			return at.UTC(), nil
		}
		ms = n
	default:
		d, err := metaDec(x)
		if err != nil {
			return time.Time{}, fmt.Errorf("must be Unix milliseconds or an RFC 3339 time, got %v", x)
		}
		n, _, ok := d.Int64(0)
		if !ok || !d.Trunc(0).Equal(d) {
			return time.Time{}, fmt.Errorf("must be a whole number of Unix milliseconds, got %v", x)
		}
		ms = n
	}
	at := time.UnixMilli(ms).UTC()
	if at.Year() < 1 || at.Year() > 9999 {
		return time.Time{}, fmt.Errorf("%d milliseconds since the epoch is not a date between years 1 and 9999", ms)
	}
	return at, nil
}

func metaDec(x any) (num.Dec, error) {
	switch v := x.(type) {
	case float64:
		return num.FromFloat64(v)
	case float32:
		return num.FromFloat64(float64(v))
	case int:
		return num.FromInt(int64(v)), nil
	case int64:
		return num.FromInt(v), nil
	case json.Number:
		return num.Parse(v.String())
	case string:
		return num.Parse(strings.TrimSpace(v))
	}
	return num.Dec{}, fmt.Errorf("not a number: %T", x)
}

// voucherKey is where a voucher's debits are recorded for cloud sync: beside grant
// draws, under the voucher's id, flagged so the drain sends them as voucher debits.
func voucherKey(c *customer, id string) grantKey {
	return grantKey{customer: c.id, grant: id, created: c.created.UnixNano(), voucher: true}
}

// SetVoucher gives a customer a voucher, replacing any it had; nil removes it.
func (e *Engine) SetVoucher(ctx context.Context, id string, v *Voucher) error {
	return e.ApplyVoucher(ctx, id, v, num.Zero)
}

// ApplyVoucher sets a customer's voucher as the control plane holds it: the amount set
// less what the fleet has committed as spent (debited), less what this instance has
// spent from it and not yet had committed (none locally, or for a voucher just set).
// nil removes it.
func (e *Engine) ApplyVoucher(ctx context.Context, id string, v *Voucher, debited num.Dec) error {
	var st *voucherState
	if v != nil {
		var err error
		if st, err = v.state(); err != nil {
			return err
		}
	}
	c := e.lookup(id)
	if c == nil {
		return fmt.Errorf("%w: %q", ErrUnknownCustomer, id)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.deleted {
		return fmt.Errorf("%w: %q", ErrUnknownCustomer, id)
	}
	if st != nil && !st.expiryOnly {
		var calc num.Calc
		left := calc.Sub(st.balance, debited)
		if r := e.usage; r != nil {
			r.mu.Lock()
			left = calc.Sub(left, r.localDrawn(voucherKey(c, st.id)))
			r.mu.Unlock()
		}
		if calc.Err != nil {
			return fmt.Errorf("%w: runes: %w", ErrInvalidVoucher, calc.Err)
		}
		st.balance = num.Max(num.Zero, left)
	}
	c.setVoucher(st)
	return nil
}

// CustomerVoucher returns a customer's voucher and its balance now.
func (e *Engine) CustomerVoucher(ctx context.Context, id string) (*Voucher, error) {
	c := e.lookup(id)
	if c == nil {
		return nil, fmt.Errorf("%w: %q", ErrUnknownCustomer, id)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.deleted {
		return nil, fmt.Errorf("%w: %q", ErrUnknownCustomer, id)
	}
	if c.voucher() == nil {
		return nil, fmt.Errorf("%w: %q", ErrNoVoucher, id)
	}
	return c.voucher().public(), nil
}

// voucherPays decides whether the owner's voucher pays a call's uncovered overage:
// it must not have expired, and (unless expiry-only) the overage priced in runes from
// position must fit its balance. It returns the runes to debit. A call without a price
// path cannot be paid (as in Limitr). Caller holds the owner's lock.
func voucherPays(st *voucherState, p *policies.Policy, credit *policies.CompiledCredit, uncovered, position num.Dec, now int64) (debit num.Dec, ok bool) {
	if now >= st.expires {
		return num.Zero, false
	}
	if st.expiryOnly || !uncovered.IsPos() {
		return num.Zero, true
	}
	price, priced := priceUnits(p, credit, uncovered, position)
	if !priced {
		return num.Zero, false
	}
	// A volume band repricing lower never adds to the balance.
	price = num.Max(num.Zero, price)
	return price, price.Cmp(st.balance) <= 0
}

// debitVoucher takes a paid overage off the owner's voucher and records it for sync.
// Caller holds c.mu.
func (e *Engine) debitVoucher(c *customer, runes num.Dec) {
	st := c.voucher()
	if st == nil || st.expiryOnly || !runes.IsPos() {
		return
	}
	var calc num.Calc
	st.balance = num.Max(num.Zero, calc.Sub(st.balance, runes))
	if e.usage != nil {
		e.usage.recordDraw(voucherKey(c, st.id), runes)
	}
}

// metadataWithVoucher is what a snapshot shows as metadata: the customer's own, with
// Limitr's voucher keys written from the voucher as it stands (its balance debited),
// or removed when it has none, so a snapshot restores the voucher it shows.
func metadataWithVoucher(md map[string]any, st *voucherState) map[string]any {
	if st == nil {
		if _, ok := md[MetaVoucher]; !ok {
			return md
		}
		delete(md, MetaVoucher)
		delete(md, MetaVoucherExpires)
		delete(md, MetaVoucherRunes)
		return md
	}
	if md == nil {
		md = map[string]any{}
	}
	id := st.id
	if id == "" {
		id = "voucher"
	}
	md[MetaVoucher] = id
	md[MetaVoucherExpires] = time.Unix(0, st.expires).UnixMilli()
	if st.expiryOnly {
		delete(md, MetaVoucherRunes)
	} else {
		md[MetaVoucherRunes] = num.Float64(st.balance)
	}
	return md
}
