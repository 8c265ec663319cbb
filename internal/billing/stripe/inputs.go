package stripe

import (
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// Metadata keys this package writes. Stripe shows them on each object, and webhooks and
// reconciliation read them back to find our rows.
const (
	MetaCustomerID   = "limitr_customer_id"
	MetaPlan         = "limitr_plan"
	MetaEnvironment  = "limitr_environment"
	MetaInvoiceID    = "limitr_invoice_id"
	MetaInvoiceNum   = "limitr_invoice_number"
	MetaLineIndex    = "limitr_line_index"
	MetaLineKind     = "limitr_line_kind"
	MetaCreditNoteID = "limitr_credit_note_id"
)

// DefaultDaysUntilDue is the payment term of an invoice sent for payment when the
// input gives none.
const DefaultDaysUntilDue = 30

// Customer is one of a tenant's customers as Stripe should know it.
type Customer struct {
	// StripeID is the Stripe customer (cus_...) to update; empty creates one.
	StripeID string
	// LimitrCustomerID is our customer id, written to metadata. Required.
	LimitrCustomerID string
	// Email and Name are set when not empty; empty leaves Stripe's value as it is.
	Email, Name string
	// Metadata is added to ours; it may not set the keys this call sets.
	Metadata map[string]string
}

// Product is a plan of one environment, as a Stripe product.
type Product struct {
	// StripeID is the Stripe product (prod_...) to update; empty creates one.
	StripeID string
	// Name is shown on invoices. Required.
	Name string
	// Plan and Environment are our plan key and environment, written to metadata. Required.
	Plan, Environment string
	// Description is optional.
	Description string
	Metadata    map[string]string
}

// Price is a recurring price of a product. Prices are never edited: a changed price is a
// new one, and the old one is deactivated.
type Price struct {
	// ProductID is the Stripe product (prod_...). Required.
	ProductID string
	// Currency is an ISO 4217 code in either case. Required.
	Currency string
	// UnitAmount is in Stripe's unit for the currency (see StripeAmount), 0 or more.
	UnitAmount int64
	// Interval is "day", "week", "month" or "year"; empty is "month".
	Interval string
	// Nickname is optional, shown in Stripe's dashboard.
	Nickname string
	Metadata map[string]string
}

// Invoice is the draft invoice that mirrors one of ours. Its lines are added with
// AddInvoiceItem, then it is finalized.
type Invoice struct {
	// CustomerID is the Stripe customer (cus_...). Required.
	CustomerID string
	// Currency is an ISO 4217 code in either case. Required.
	Currency string
	// LimitrInvoiceID is our invoice id, written to metadata. Required.
	LimitrInvoiceID string
	// Number is our invoice number, written to metadata (Stripe numbers its own).
	Number string
	// Description is shown on the invoice.
	Description string
	// ChargeAutomatically charges the customer's default payment method when the
	// invoice is paid through Stripe; otherwise the invoice is sent for payment, due
	// DaysUntilDue days after finalization (DefaultDaysUntilDue when 0).
	ChargeAutomatically bool
	DaysUntilDue        int
	Metadata            map[string]string
}

// InvoiceItem is one line of our invoice on the Stripe invoice.
type InvoiceItem struct {
	// InvoiceID is the draft Stripe invoice (in_...) and CustomerID its customer. Required.
	InvoiceID, CustomerID string
	// Amount is the line's rounded amount in Stripe's unit for the currency (see
	// StripeAmount); negative for discounts and adjustments.
	Amount int64
	// Currency must be the invoice's.
	Currency string
	// Description is the line's text on the invoice. Required.
	Description string
	// LineIndex and Kind (such as "usage", "fee", "adjustment") are written to metadata.
	LineIndex int
	Kind      string
	// PeriodStart and PeriodEnd, both set or both zero, are the service period shown.
	PeriodStart, PeriodEnd time.Time
	Metadata               map[string]string
}

// CreditNote corrects a finalized invoice, with either Lines or Amount.
type CreditNote struct {
	// InvoiceID is the finalized Stripe invoice (in_...). Required.
	InvoiceID string
	// LimitrCreditNoteID is our credit note id, written to metadata. Required.
	LimitrCreditNoteID string
	// Lines are sent as custom line items; each amount is positive, in Stripe's unit.
	Lines []CreditNoteLine
	// Amount credits the invoice as a whole, when there are no Lines.
	Amount int64
	// Reason is empty or one of Stripe's: "duplicate", "fraudulent", "order_change",
	// "product_unsatisfactory".
	Reason string
	// Memo is shown on the credit note.
	Memo string
	// OutOfBand records the whole credit as settled outside Stripe (out_of_band_amount),
	// as for invoices we marked paid ourselves. Otherwise Stripe applies its defaults.
	OutOfBand bool
	Metadata  map[string]string
}

// CreditNoteLine is one corrected amount.
type CreditNoteLine struct {
	Description string
	Amount      int64
}

func (in Customer) validate() error {
	if in.LimitrCustomerID == "" {
		return fmt.Errorf("LimitrCustomerID is required")
	}
	return nil
}

func (in Product) validate() error {
	switch {
	case in.Name == "":
		return fmt.Errorf("name is required")
	case in.Plan == "":
		return fmt.Errorf("plan is required")
	case in.Environment == "":
		return fmt.Errorf("environment is required")
	}
	return nil
}

func (in Price) validate() error {
	switch {
	case in.ProductID == "":
		return fmt.Errorf("ProductID is required")
	case in.UnitAmount < 0:
		return fmt.Errorf("UnitAmount %d is negative", in.UnitAmount)
	}
	switch in.Interval {
	case "", "day", "week", "month", "year":
	default:
		return fmt.Errorf("interval %q is not day, week, month or year", in.Interval)
	}
	return checkCurrency(in.Currency)
}

func (in Invoice) validate() error {
	switch {
	case in.CustomerID == "":
		return fmt.Errorf("CustomerID is required")
	case in.LimitrInvoiceID == "":
		return fmt.Errorf("LimitrInvoiceID is required")
	case in.DaysUntilDue < 0:
		return fmt.Errorf("DaysUntilDue %d is negative", in.DaysUntilDue)
	case in.ChargeAutomatically && in.DaysUntilDue != 0:
		return fmt.Errorf("DaysUntilDue applies only to invoices sent for payment, not charged automatically")
	}
	return checkCurrency(in.Currency)
}

func (in InvoiceItem) validate() error {
	switch {
	case in.InvoiceID == "":
		return fmt.Errorf("InvoiceID is required")
	case in.CustomerID == "":
		return fmt.Errorf("CustomerID is required")
	case in.Description == "":
		return fmt.Errorf("description is required")
	case in.LineIndex < 0:
		return fmt.Errorf("LineIndex %d is negative", in.LineIndex)
	case in.PeriodStart.IsZero() != in.PeriodEnd.IsZero():
		return fmt.Errorf("PeriodStart and PeriodEnd go together")
	case in.PeriodEnd.Before(in.PeriodStart):
		return fmt.Errorf("PeriodEnd is before PeriodStart")
	}
	return checkCurrency(in.Currency)
}

func (in CreditNote) validate() error {
	switch {
	case in.InvoiceID == "":
		return fmt.Errorf("InvoiceID is required")
	case in.LimitrCreditNoteID == "":
		return fmt.Errorf("LimitrCreditNoteID is required")
	case len(in.Lines) > 0 && in.Amount != 0:
		return fmt.Errorf("give Lines or Amount, not both")
	case len(in.Lines) == 0 && in.Amount <= 0:
		return fmt.Errorf("a credit note needs Lines or a positive Amount")
	}
	for i, l := range in.Lines {
		if l.Amount <= 0 {
			return fmt.Errorf("line %d: amount %d is not positive", i, l.Amount)
		}
		if l.Description == "" {
			return fmt.Errorf("line %d: description is required", i)
		}
	}
	switch in.Reason {
	case "", "duplicate", "fraudulent", "order_change", "product_unsatisfactory":
	default:
		return fmt.Errorf("reason %q is not one of Stripe's", in.Reason)
	}
	return nil
}

// total is the credit note's amount, for out_of_band_amount.
func (in CreditNote) total() (int64, error) {
	if len(in.Lines) == 0 {
		return in.Amount, nil
	}
	var sum int64
	for _, l := range in.Lines {
		if sum > (1<<63-1)-l.Amount {
			return 0, fmt.Errorf("lines overflow int64")
		}
		sum += l.Amount
	}
	return sum, nil
}

func checkCurrency(code string) error {
	_, err := CurrencyExponent(code)
	return err
}

// Stripe's metadata limits (https://docs.stripe.com/api/metadata).
const (
	maxMetadataKeys  = 50
	maxMetadataKey   = 40
	maxMetadataValue = 500
)

// metadata merges the caller's metadata into ours: a key of ours may not be overridden,
// as webhooks and reconciliation find our rows by it.
func metadata(ours, theirs map[string]string) (map[string]string, error) {
	m := make(map[string]string, len(ours)+len(theirs))
	for k, v := range ours {
		if v != "" {
			m[k] = v
		}
	}
	for k, v := range theirs {
		if _, ok := ours[k]; ok {
			return nil, fmt.Errorf("metadata key %q is set by this call", k)
		}
		if k == "" || utf8.RuneCountInString(k) > maxMetadataKey || strings.ContainsAny(k, "[]") {
			return nil, fmt.Errorf("metadata key %q: want 1 to %d characters without square brackets", k, maxMetadataKey)
		}
		m[k] = v
	}
	if len(m) > maxMetadataKeys {
		return nil, fmt.Errorf("%d metadata keys, Stripe takes at most %d", len(m), maxMetadataKeys)
	}
	for k, v := range m {
		if utf8.RuneCountInString(v) > maxMetadataValue {
			return nil, fmt.Errorf("metadata %q: value longer than %d characters", k, maxMetadataValue)
		}
	}
	return m, nil
}
