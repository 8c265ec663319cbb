package stripe

import (
	"context"
	"strconv"
	"strings"
	"time"

	stripego "github.com/stripe/stripe-go/v76"
)

// RemoteInvoice is a Stripe invoice as this package reads it back. Amounts are in
// Stripe's unit for the currency (see FormatStripeAmount).
type RemoteInvoice struct {
	ID string
	// Status is "draft", "open", "paid", "uncollectible" or "void".
	Status string
	// Number is Stripe's invoice number, set at finalization.
	Number string
	// Currency is lower case, as Stripe writes it.
	Currency   string
	CustomerID string
	Total      int64
	AmountDue  int64
	AmountPaid int64
	// LimitrInvoiceID is our invoice id from metadata; empty for invoices made elsewhere.
	LimitrInvoiceID string
	// Lines is the number of lines embedded in the invoice. Stripe embeds the first
	// ten; MoreLines says there are more, which CountInvoiceLines counts.
	Lines     int
	MoreLines bool
	Created   time.Time
	Livemode  bool
}

func remoteInvoice(inv *stripego.Invoice) RemoteInvoice {
	r := RemoteInvoice{
		ID:              inv.ID,
		Status:          string(inv.Status),
		Number:          inv.Number,
		Currency:        string(inv.Currency),
		Total:           inv.Total,
		AmountDue:       inv.AmountDue,
		AmountPaid:      inv.AmountPaid,
		LimitrInvoiceID: inv.Metadata[MetaInvoiceID],
		Livemode:        inv.Livemode,
	}
	if inv.Created != 0 {
		r.Created = time.Unix(inv.Created, 0).UTC()
	}
	if inv.Customer != nil {
		r.CustomerID = inv.Customer.ID
	}
	if inv.Lines != nil {
		r.Lines = len(inv.Lines.Data)
		r.MoreLines = inv.Lines.HasMore
	}
	return r
}

// CreateInvoice creates a draft invoice for in.CustomerID that takes no pending invoice
// items (pending_invoice_items_behavior=exclude: only the items added to it with
// AddInvoiceItem) and that Stripe does not advance on its own (auto_advance=false: we
// finalize when our invoice is final). It returns the Stripe invoice id.
func (c *Client) CreateInvoice(ctx context.Context, idemKey string, in Invoice) (string, error) {
	const op = "CreateInvoice"
	if err := in.validate(); err != nil {
		return "", invalidInput(op, "%v", err)
	}
	meta, err := metadata(map[string]string{MetaInvoiceID: in.LimitrInvoiceID, MetaInvoiceNum: in.Number}, in.Metadata)
	if err != nil {
		return "", invalidInput(op, "%v", err)
	}
	params := &stripego.InvoiceParams{
		Customer:                    stripego.String(in.CustomerID),
		Currency:                    stripego.String(strings.ToLower(in.Currency)),
		AutoAdvance:                 stripego.Bool(false),
		PendingInvoiceItemsBehavior: stripego.String("exclude"),
		Description:                 optional(in.Description),
	}
	if in.ChargeAutomatically {
		params.CollectionMethod = stripego.String("charge_automatically")
	} else {
		days := in.DaysUntilDue
		if days == 0 {
			days = DefaultDaysUntilDue
		}
		params.CollectionMethod = stripego.String("send_invoice")
		params.DaysUntilDue = stripego.Int64(int64(days))
	}
	params.Metadata = meta
	inv, err := post(ctx, c, op, idemKey, &params.Params, func() (*stripego.Invoice, error) {
		return c.api.Invoices.New(params)
	})
	if err != nil {
		return "", err
	}
	return inv.ID, nil
}

// AddInvoiceItem adds one line to a draft invoice, as a plain amount (no Stripe price),
// so that Stripe shows exactly the amount we rated. It returns the invoice item id.
func (c *Client) AddInvoiceItem(ctx context.Context, idemKey string, in InvoiceItem) (string, error) {
	const op = "AddInvoiceItem"
	if err := in.validate(); err != nil {
		return "", invalidInput(op, "%v", err)
	}
	meta, err := metadata(map[string]string{MetaLineIndex: strconv.Itoa(in.LineIndex), MetaLineKind: in.Kind}, in.Metadata)
	if err != nil {
		return "", invalidInput(op, "%v", err)
	}
	params := &stripego.InvoiceItemParams{
		Invoice:     stripego.String(in.InvoiceID),
		Customer:    stripego.String(in.CustomerID),
		Amount:      stripego.Int64(in.Amount),
		Currency:    stripego.String(strings.ToLower(in.Currency)),
		Description: stripego.String(in.Description),
	}
	if !in.PeriodStart.IsZero() {
		params.Period = &stripego.InvoiceItemPeriodParams{
			Start: stripego.Int64(in.PeriodStart.Unix()),
			End:   stripego.Int64(in.PeriodEnd.Unix()),
		}
	}
	params.Metadata = meta
	item, err := post(ctx, c, op, idemKey, &params.Params, func() (*stripego.InvoiceItem, error) {
		return c.api.InvoiceItems.New(params)
	})
	if err != nil {
		return "", err
	}
	return item.ID, nil
}

// FinalizeInvoice finalizes a draft invoice, keeping auto_advance off: Stripe neither
// emails nor charges it on its own schedule.
func (c *Client) FinalizeInvoice(ctx context.Context, idemKey, stripeInvoiceID string) (RemoteInvoice, error) {
	params := &stripego.InvoiceFinalizeInvoiceParams{AutoAdvance: stripego.Bool(false)}
	return c.invoiceAction(ctx, "FinalizeInvoice", idemKey, stripeInvoiceID, &params.Params, func() (*stripego.Invoice, error) {
		return c.api.Invoices.FinalizeInvoice(stripeInvoiceID, params)
	})
}

// VoidInvoice voids a finalized invoice.
func (c *Client) VoidInvoice(ctx context.Context, idemKey, stripeInvoiceID string) (RemoteInvoice, error) {
	params := &stripego.InvoiceVoidInvoiceParams{}
	return c.invoiceAction(ctx, "VoidInvoice", idemKey, stripeInvoiceID, &params.Params, func() (*stripego.Invoice, error) {
		return c.api.Invoices.VoidInvoice(stripeInvoiceID, params)
	})
}

// MarkUncollectible marks a finalized invoice uncollectible.
func (c *Client) MarkUncollectible(ctx context.Context, idemKey, stripeInvoiceID string) (RemoteInvoice, error) {
	params := &stripego.InvoiceMarkUncollectibleParams{}
	return c.invoiceAction(ctx, "MarkUncollectible", idemKey, stripeInvoiceID, &params.Params, func() (*stripego.Invoice, error) {
		return c.api.Invoices.MarkUncollectible(stripeInvoiceID, params)
	})
}

// PayOutOfBand marks a finalized invoice paid outside Stripe (paid_out_of_band): our
// "mark paid". Nothing is charged.
func (c *Client) PayOutOfBand(ctx context.Context, idemKey, stripeInvoiceID string) (RemoteInvoice, error) {
	params := &stripego.InvoicePayParams{PaidOutOfBand: stripego.Bool(true)}
	return c.invoiceAction(ctx, "PayOutOfBand", idemKey, stripeInvoiceID, &params.Params, func() (*stripego.Invoice, error) {
		return c.api.Invoices.Pay(stripeInvoiceID, params)
	})
}

func (c *Client) invoiceAction(ctx context.Context, op, idemKey, id string, p *stripego.Params, do func() (*stripego.Invoice, error)) (RemoteInvoice, error) {
	if id == "" {
		return RemoteInvoice{}, invalidInput(op, "a Stripe invoice id is required")
	}
	inv, err := post(ctx, c, op, idemKey, p, do)
	if err != nil {
		return RemoteInvoice{}, err
	}
	return remoteInvoice(inv), nil
}

// CreateCreditNote issues a credit note on a finalized invoice, with our credit note
// id in metadata. It returns the Stripe credit note id.
func (c *Client) CreateCreditNote(ctx context.Context, idemKey string, in CreditNote) (string, error) {
	const op = "CreateCreditNote"
	if err := in.validate(); err != nil {
		return "", invalidInput(op, "%v", err)
	}
	meta, err := metadata(map[string]string{MetaCreditNoteID: in.LimitrCreditNoteID}, in.Metadata)
	if err != nil {
		return "", invalidInput(op, "%v", err)
	}
	total, err := in.total()
	if err != nil {
		return "", invalidInput(op, "%v", err)
	}
	params := &stripego.CreditNoteParams{
		Invoice: stripego.String(in.InvoiceID),
		Reason:  optional(in.Reason),
		Memo:    optional(in.Memo),
	}
	if len(in.Lines) == 0 {
		params.Amount = stripego.Int64(in.Amount)
	}
	for _, l := range in.Lines {
		params.Lines = append(params.Lines, &stripego.CreditNoteLineParams{
			Type:        stripego.String("custom_line_item"),
			Description: stripego.String(l.Description),
			Quantity:    stripego.Int64(1),
			UnitAmount:  stripego.Int64(l.Amount),
		})
	}
	if in.OutOfBand {
		params.OutOfBandAmount = stripego.Int64(total)
	}
	params.Metadata = meta
	cn, err := post(ctx, c, op, idemKey, &params.Params, func() (*stripego.CreditNote, error) {
		return c.api.CreditNotes.New(params)
	})
	if err != nil {
		return "", err
	}
	return cn.ID, nil
}

// GetInvoice reads an invoice.
func (c *Client) GetInvoice(ctx context.Context, stripeInvoiceID string) (RemoteInvoice, error) {
	const op = "GetInvoice"
	if stripeInvoiceID == "" {
		return RemoteInvoice{}, invalidInput(op, "a Stripe invoice id is required")
	}
	params := &stripego.InvoiceParams{}
	inv, err := call(ctx, c, op, &params.Params, func() (*stripego.Invoice, error) {
		return c.api.Invoices.Get(stripeInvoiceID, params)
	})
	if err != nil {
		return RemoteInvoice{}, err
	}
	return remoteInvoice(inv), nil
}

// ListInvoices calls fn with every invoice of the account created at or after
// createdSince (all of them for the zero time), newest first, fetching pages as it
// goes. Invoices not made by us have an empty LimitrInvoiceID. An error from fn stops
// the listing and is returned as it is.
func (c *Client) ListInvoices(ctx context.Context, createdSince time.Time, fn func(RemoteInvoice) error) error {
	const op = "ListInvoices"
	rec := &statusRecord{}
	params := &stripego.InvoiceListParams{}
	params.Context = context.WithValue(ctx, statusKey{}, rec)
	params.Limit = stripego.Int64(100) // Stripe's largest page
	if !createdSince.IsZero() {
		params.CreatedRange = &stripego.RangeQueryParams{GreaterThanOrEqual: createdSince.Unix()}
	}
	it := c.api.Invoices.List(params)
	for it.Next() {
		if err := fn(remoteInvoice(it.Invoice())); err != nil {
			return err
		}
	}
	return c.classify(ctx, op, rec.status, it.Err())
}

// CountInvoiceLines counts all lines of an invoice, fetching them page by page: the
// invoice itself embeds only the first ten (see RemoteInvoice.MoreLines).
func (c *Client) CountInvoiceLines(ctx context.Context, stripeInvoiceID string) (int, error) {
	const op = "CountInvoiceLines"
	if stripeInvoiceID == "" {
		return 0, invalidInput(op, "a Stripe invoice id is required")
	}
	rec := &statusRecord{}
	params := &stripego.InvoiceListLinesParams{Invoice: stripego.String(stripeInvoiceID)}
	params.Context = context.WithValue(ctx, statusKey{}, rec)
	params.Limit = stripego.Int64(100)
	it := c.api.Invoices.ListLines(params)
	n := 0
	for it.Next() {
		n++
	}
	if err := it.Err(); err != nil {
		return 0, c.classify(ctx, op, rec.status, err)
	}
	return n, nil
}
