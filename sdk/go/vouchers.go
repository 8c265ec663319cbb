package limitr

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/limitr/limitr/internal/enforcement"
	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/wire"
)

// Voucher is a customer's prepaid allowance for soft-limit overage (Limitr Cloud's
// voucher): the overage grants do not cover is priced in runes and paid from Runes; a
// call it cannot pay, or one at or after ExpiresAt, is denied and changes nothing.
// ExpiryOnly vouchers have no balance and only stop overage at their expiry.
type Voucher = enforcement.Voucher

// Errors of the voucher calls.
var (
	ErrInvalidVoucher = enforcement.ErrInvalidVoucher
	ErrNoVoucher      = enforcement.ErrNoVoucher
)

// SetCustomerVoucher gives a customer a voucher, replacing the one it had. It is the
// typed form of Limitr's limitr_voucher, limitr_voucher_expires and
// limitr_voucher_runes metadata (which CreateCustomer also reads). In cloud mode it is
// set through the control plane (PUT …/customers/{id}/voucher), which every instance
// then applies; what calls spend from it is synced like grant draws.
func (p *Policy) SetCustomerVoucher(ctx context.Context, customer string, v Voucher) error {
	if err := p.open(); err != nil {
		return err
	}
	if err := v.Validate(); err != nil {
		return err
	}
	if p.cloud != nil {
		return p.cloud.setVoucher(ctx, customer, v)
	}
	return p.eng.SetVoucher(ctx, customer, &v)
}

// RemoveCustomerVoucher takes a customer's voucher away: its overage is no longer
// checked against one.
func (p *Policy) RemoveCustomerVoucher(ctx context.Context, customer string) error {
	if err := p.open(); err != nil {
		return err
	}
	if p.cloud != nil {
		return p.cloud.removeVoucher(ctx, customer)
	}
	return p.eng.SetVoucher(ctx, customer, nil)
}

// CustomerVoucher returns a customer's voucher with its balance now (ErrNoVoucher
// without one). In cloud mode the balance is what the fleet has committed as spent
// plus what this instance has spent since.
func (p *Policy) CustomerVoucher(ctx context.Context, customer string) (Voucher, error) {
	v, err := read(ctx, p, customer, func() (*Voucher, error) { return p.eng.CustomerVoucher(ctx, customer) })
	if err != nil {
		return Voucher{}, err
	}
	return *v, nil
}

func (c *cloud) setVoucher(ctx context.Context, id string, v Voucher) error {
	path, err := c.custPath(ctx, id, "/voucher")
	if err != nil {
		return err
	}
	body := wire.VoucherRequest{ExpiresAt: v.ExpiresAt.UTC().Format(time.RFC3339Nano)}
	if !v.ExpiryOnly {
		d, err := num.FromFloat64(v.Runes)
		if err != nil {
			return fmt.Errorf("%w: runes: %w", ErrInvalidVoucher, err)
		}
		n := json.Number(d.String())
		body.Runes = &n
	}
	_, data, err := c.call(ctx, http.MethodPut, path, body)
	if err != nil {
		return mapAPIError(err, "voucher")
	}
	var wv wire.CustomerVoucher
	if err := json.Unmarshal(data, &wv); err != nil || wv.ID == "" {
		return fmt.Errorf("limitr: unreadable voucher from the API: %v", err)
	}
	return c.onLocal(ctx, id, func(primary string) error { return c.applyWireVoucher(ctx, primary, &wv) })
}

func (c *cloud) removeVoucher(ctx context.Context, id string) error {
	path, err := c.custPath(ctx, id, "/voucher")
	if err != nil {
		return err
	}
	if _, _, err := c.call(ctx, http.MethodDelete, path, nil); err != nil {
		var ae *APIError
		// Removing a voucher that is not there is not an error, as locally.
		if !errors.As(err, &ae) || ae.Status != http.StatusNotFound {
			return mapAPIError(err, "voucher")
		}
	}
	return c.onLocal(ctx, id, func(primary string) error { return c.eng.ApplyVoucher(ctx, primary, nil, num.Zero) })
}

// applyWireVoucher lays the control plane's voucher (nil: none) over a customer held
// here: the amount set less the fleet's committed debits and this instance's own not
// yet committed.
func (c *cloud) applyWireVoucher(ctx context.Context, id string, wv *wire.CustomerVoucher) error {
	if wv == nil {
		return c.eng.ApplyVoucher(ctx, id, nil, num.Zero)
	}
	v := Voucher{ID: wv.ID, ExpiresAt: wv.ExpiresAt, ExpiryOnly: wv.Runes == nil}
	if wv.Runes != nil {
		var err error
		if v, err = enforcement.VoucherWithExactRunes(v, wv.Runes.String()); err != nil {
			return err
		}
	}
	debited := num.Zero
	if wv.Debited != "" {
		d, err := num.Parse(wv.Debited.String())
		if err != nil {
			return fmt.Errorf("%w: debited: %q", ErrInvalidVoucher, wv.Debited)
		}
		debited = d
	}
	return c.eng.ApplyVoucher(ctx, id, &v, debited)
}

// applyRecordVoucher applies a record's voucher, logging a failure.
func (c *cloud) applyRecordVoucher(ctx context.Context, id string, rec *wire.Customer) {
	if err := c.applyWireVoucher(ctx, id, rec.Voucher); err != nil && !errors.Is(err, ErrUnknownCustomer) {
		c.log.Warn("limitr: applying the customer's voucher failed", "customer", id, "err", err)
	}
}
