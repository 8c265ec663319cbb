package stripe

import (
	"context"
	"strings"

	stripego "github.com/stripe/stripe-go/v76"
)

// UpsertCustomer creates the customer when in.StripeID is empty and updates it
// otherwise, with our customer id in metadata. It returns the Stripe customer id, which
// the caller stores. On update Stripe merges metadata: keys not sent are kept.
func (c *Client) UpsertCustomer(ctx context.Context, idemKey string, in Customer) (string, error) {
	const op = "UpsertCustomer"
	if err := in.validate(); err != nil {
		return "", invalidInput(op, "%v", err)
	}
	meta, err := metadata(map[string]string{MetaCustomerID: in.LimitrCustomerID}, in.Metadata)
	if err != nil {
		return "", invalidInput(op, "%v", err)
	}
	params := &stripego.CustomerParams{Email: optional(in.Email), Name: optional(in.Name)}
	params.Metadata = meta
	cus, err := post(ctx, c, op, idemKey, &params.Params, func() (*stripego.Customer, error) {
		if in.StripeID == "" {
			return c.api.Customers.New(params)
		}
		return c.api.Customers.Update(in.StripeID, params)
	})
	if err != nil {
		return "", err
	}
	return cus.ID, nil
}

// EnsureProduct creates the plan's product when in.StripeID is empty and updates its
// name, description and metadata otherwise. It returns the Stripe product id, which the
// caller stores: the idempotency key only prevents duplicates for Stripe's 24 hours.
func (c *Client) EnsureProduct(ctx context.Context, idemKey string, in Product) (string, error) {
	const op = "EnsureProduct"
	if err := in.validate(); err != nil {
		return "", invalidInput(op, "%v", err)
	}
	meta, err := metadata(map[string]string{MetaPlan: in.Plan, MetaEnvironment: in.Environment}, in.Metadata)
	if err != nil {
		return "", invalidInput(op, "%v", err)
	}
	params := &stripego.ProductParams{Name: stripego.String(in.Name), Description: optional(in.Description)}
	params.Metadata = meta
	prod, err := post(ctx, c, op, idemKey, &params.Params, func() (*stripego.Product, error) {
		if in.StripeID == "" {
			return c.api.Products.New(params)
		}
		return c.api.Products.Update(in.StripeID, params)
	})
	if err != nil {
		return "", err
	}
	return prod.ID, nil
}

// CreatePrice creates a recurring price (monthly unless in.Interval says otherwise) of
// in.UnitAmount per period. It returns the Stripe price id.
func (c *Client) CreatePrice(ctx context.Context, idemKey string, in Price) (string, error) {
	const op = "CreatePrice"
	if err := in.validate(); err != nil {
		return "", invalidInput(op, "%v", err)
	}
	meta, err := metadata(nil, in.Metadata)
	if err != nil {
		return "", invalidInput(op, "%v", err)
	}
	interval := in.Interval
	if interval == "" {
		interval = "month"
	}
	params := &stripego.PriceParams{
		Product:    stripego.String(in.ProductID),
		Currency:   stripego.String(strings.ToLower(in.Currency)),
		UnitAmount: stripego.Int64(in.UnitAmount),
		Recurring:  &stripego.PriceRecurringParams{Interval: stripego.String(interval)},
		Nickname:   optional(in.Nickname),
	}
	params.Metadata = meta
	price, err := post(ctx, c, op, idemKey, &params.Params, func() (*stripego.Price, error) {
		return c.api.Prices.New(params)
	})
	if err != nil {
		return "", err
	}
	return price.ID, nil
}

// DeactivatePrice sets the price inactive, so no new invoice or subscription uses it.
// Stripe keeps it, and what already refers to it.
func (c *Client) DeactivatePrice(ctx context.Context, idemKey, priceID string) error {
	const op = "DeactivatePrice"
	if priceID == "" {
		return invalidInput(op, "a price id is required")
	}
	params := &stripego.PriceParams{Active: stripego.Bool(false)}
	_, err := post(ctx, c, op, idemKey, &params.Params, func() (*stripego.Price, error) {
		return c.api.Prices.Update(priceID, params)
	})
	return err
}

// optional is nil for "", so an empty field is not sent.
func optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
