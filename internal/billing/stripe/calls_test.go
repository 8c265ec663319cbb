package stripe

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// A call of every Client method with valid input, shared by the tests against
// stripe-mock and against the fake.
type namedCall struct {
	name    string
	idemKey string // "" for reads
	// form is what the request body must hold (checked against the fake).
	form map[string]string
	run  func(ctx context.Context, c *Client) (id string, err error)
}

const invoiceUUID = "3f0c6f5e-7c52-4d0a-9b8e-1a2b3c4d5e6f"

func everyCall() []namedCall {
	periodStart := time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)
	periodEnd := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	invKey := func(step string) string { return IdempotencyKey("inv", invoiceUUID, step) }
	remote := func(r RemoteInvoice, err error) (string, error) { return r.ID, err }
	return []namedCall{
		{
			name: "UpsertCustomer create", idemKey: "limitr:cus:c1:create",
			form: map[string]string{"email": "ada@example.com", "name": "Ada", "metadata[limitr_customer_id]": "c1", "metadata[tier]": "gold"},
			run: func(ctx context.Context, c *Client) (string, error) {
				return c.UpsertCustomer(ctx, "limitr:cus:c1:create", Customer{
					LimitrCustomerID: "c1", Email: "ada@example.com", Name: "Ada", Metadata: map[string]string{"tier": "gold"},
				})
			},
		},
		{
			name: "UpsertCustomer update", idemKey: "limitr:cus:c1:update:2",
			form: map[string]string{"email": "ada@example.org", "metadata[limitr_customer_id]": "c1"},
			run: func(ctx context.Context, c *Client) (string, error) {
				return c.UpsertCustomer(ctx, "limitr:cus:c1:update:2", Customer{StripeID: "cus_Existing", LimitrCustomerID: "c1", Email: "ada@example.org"})
			},
		},
		{
			name: "EnsureProduct create", idemKey: "limitr:plan:pro:prod",
			form: map[string]string{"name": "Pro", "metadata[limitr_plan]": "pro", "metadata[limitr_environment]": "production"},
			run: func(ctx context.Context, c *Client) (string, error) {
				return c.EnsureProduct(ctx, "limitr:plan:pro:prod", Product{Name: "Pro", Plan: "pro", Environment: "production"})
			},
		},
		{
			name: "EnsureProduct update", idemKey: "limitr:plan:pro:prod:rename",
			form: map[string]string{"name": "Pro 2", "description": "For teams", "metadata[limitr_plan]": "pro"},
			run: func(ctx context.Context, c *Client) (string, error) {
				return c.EnsureProduct(ctx, "limitr:plan:pro:prod:rename", Product{StripeID: "prod_Existing", Name: "Pro 2", Description: "For teams", Plan: "pro", Environment: "production"})
			},
		},
		{
			name: "CreatePrice", idemKey: "limitr:plan:pro:price:v3:eur",
			form: map[string]string{"product": "prod_1", "currency": "eur", "unit_amount": "4900", "recurring[interval]": "month", "metadata[limitr_plan_version]": "3"},
			run: func(ctx context.Context, c *Client) (string, error) {
				return c.CreatePrice(ctx, "limitr:plan:pro:price:v3:eur", Price{
					ProductID: "prod_1", Currency: "EUR", UnitAmount: 4900, Metadata: map[string]string{"limitr_plan_version": "3"},
				})
			},
		},
		{
			name: "DeactivatePrice", idemKey: "limitr:price:price_1:deactivate",
			form: map[string]string{"active": "false"},
			run: func(ctx context.Context, c *Client) (string, error) {
				return "ok", c.DeactivatePrice(ctx, "limitr:price:price_1:deactivate", "price_1")
			},
		},
		{
			name: "CreateInvoice", idemKey: invKey("create"),
			form: map[string]string{
				"customer": "cus_1", "currency": "usd", "auto_advance": "false", "pending_invoice_items_behavior": "exclude",
				"collection_method": "send_invoice", "days_until_due": "14", "description": "February usage",
				"metadata[limitr_invoice_id]": invoiceUUID, "metadata[limitr_invoice_number]": "INV-2026-0042",
			},
			run: func(ctx context.Context, c *Client) (string, error) {
				return c.CreateInvoice(ctx, invKey("create"), Invoice{
					CustomerID: "cus_1", Currency: "USD", LimitrInvoiceID: invoiceUUID, Number: "INV-2026-0042",
					Description: "February usage", DaysUntilDue: 14,
				})
			},
		},
		{
			name: "CreateInvoice charge automatically", idemKey: invKey("create-auto"),
			form: map[string]string{"collection_method": "charge_automatically", "auto_advance": "false"},
			run: func(ctx context.Context, c *Client) (string, error) {
				return c.CreateInvoice(ctx, invKey("create-auto"), Invoice{
					CustomerID: "cus_1", Currency: "jpy", LimitrInvoiceID: invoiceUUID, ChargeAutomatically: true,
				})
			},
		},
		{
			name: "AddInvoiceItem", idemKey: invKey("item:0"),
			form: map[string]string{
				"invoice": "in_1", "customer": "cus_1", "amount": "123456", "currency": "usd", "description": "ai_tokens: 12,345,600 tokens",
				"metadata[limitr_line_index]": "0", "metadata[limitr_line_kind]": "usage",
				"period[start]": "1769904000", "period[end]": "1772323200",
			},
			run: func(ctx context.Context, c *Client) (string, error) {
				return c.AddInvoiceItem(ctx, invKey("item:0"), InvoiceItem{
					InvoiceID: "in_1", CustomerID: "cus_1", Amount: 123456, Currency: "USD", Description: "ai_tokens: 12,345,600 tokens",
					LineIndex: 0, Kind: "usage", PeriodStart: periodStart, PeriodEnd: periodEnd,
				})
			},
		},
		{
			name: "AddInvoiceItem negative", idemKey: invKey("item:1"),
			form: map[string]string{"amount": "-500", "metadata[limitr_line_index]": "1", "metadata[limitr_line_kind]": "adjustment"},
			run: func(ctx context.Context, c *Client) (string, error) {
				return c.AddInvoiceItem(ctx, invKey("item:1"), InvoiceItem{
					InvoiceID: "in_1", CustomerID: "cus_1", Amount: -500, Currency: "usd", Description: "Late usage credit",
					LineIndex: 1, Kind: "adjustment",
				})
			},
		},
		{
			name: "FinalizeInvoice", idemKey: invKey("finalize"),
			form: map[string]string{"auto_advance": "false"},
			run: func(ctx context.Context, c *Client) (string, error) {
				return remote(c.FinalizeInvoice(ctx, invKey("finalize"), "in_1"))
			},
		},
		{
			name: "VoidInvoice", idemKey: invKey("void"),
			run: func(ctx context.Context, c *Client) (string, error) {
				return remote(c.VoidInvoice(ctx, invKey("void"), "in_1"))
			},
		},
		{
			name: "MarkUncollectible", idemKey: invKey("uncollectible"),
			run: func(ctx context.Context, c *Client) (string, error) {
				return remote(c.MarkUncollectible(ctx, invKey("uncollectible"), "in_1"))
			},
		},
		{
			name: "PayOutOfBand", idemKey: invKey("paid"),
			form: map[string]string{"paid_out_of_band": "true"},
			run: func(ctx context.Context, c *Client) (string, error) {
				return remote(c.PayOutOfBand(ctx, invKey("paid"), "in_1"))
			},
		},
		{
			name: "CreateCreditNote lines", idemKey: "limitr:cn:cn1:create",
			form: map[string]string{
				"invoice": "in_1", "reason": "order_change", "memo": "Overbilled tokens", "out_of_band_amount": "750",
				"lines[0][type]": "custom_line_item", "lines[0][unit_amount]": "500", "lines[0][quantity]": "1", "lines[0][description]": "Tokens",
				"lines[1][unit_amount]": "250", "metadata[limitr_credit_note_id]": "cn1",
			},
			run: func(ctx context.Context, c *Client) (string, error) {
				return c.CreateCreditNote(ctx, "limitr:cn:cn1:create", CreditNote{
					InvoiceID: "in_1", LimitrCreditNoteID: "cn1", Reason: "order_change", Memo: "Overbilled tokens", OutOfBand: true,
					Lines: []CreditNoteLine{{Description: "Tokens", Amount: 500}, {Description: "Storage", Amount: 250}},
				})
			},
		},
		{
			name: "CreateCreditNote amount", idemKey: "limitr:cn:cn2:create",
			form: map[string]string{"invoice": "in_1", "amount": "300", "metadata[limitr_credit_note_id]": "cn2"},
			run: func(ctx context.Context, c *Client) (string, error) {
				return c.CreateCreditNote(ctx, "limitr:cn:cn2:create", CreditNote{InvoiceID: "in_1", LimitrCreditNoteID: "cn2", Amount: 300})
			},
		},
		{
			name: "GetInvoice",
			run: func(ctx context.Context, c *Client) (string, error) {
				return remote(c.GetInvoice(ctx, "in_1"))
			},
		},
		{
			name: "CountInvoiceLines",
			run: func(ctx context.Context, c *Client) (string, error) {
				n, err := c.CountInvoiceLines(ctx, "in_1")
				if n == 0 {
					return "", err
				}
				return fmt.Sprint(n), err
			},
		},
		{
			name: "ListInvoices",
			run: func(ctx context.Context, c *Client) (string, error) {
				var ids []string
				err := c.ListInvoices(ctx, time.Unix(1700000000, 0), func(r RemoteInvoice) error {
					ids = append(ids, r.ID)
					return nil
				})
				if len(ids) == 0 {
					return "", err
				}
				return ids[0], err
			},
		},
	}
}

func newTestClient(t *testing.T, key, base string, opts ...Option) *Client {
	t.Helper()
	c, err := New(key, append([]Option{WithAPIBase(base)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
