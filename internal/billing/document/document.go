// Package document renders an invoice as a printable HTML page: self-contained (inline
// CSS with a print stylesheet, no script, no external resource), every value escaped
// by html/template. A browser's "Print to PDF" makes the PDF; there is no PDF renderer
// here.
package document

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/limitr/limitr/internal/billing"
)

//go:embed invoice.html.tmpl
var files embed.FS

var page = template.Must(template.ParseFS(files, "invoice.html.tmpl"))

// ContentSecurityPolicy is the policy the page needs: its own inline styles, nothing
// else. Serve it with the page.
const ContentSecurityPolicy = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"

// Render writes inv, with its credit notes (oldest first), as an HTML page.
func Render(w io.Writer, inv billing.Invoice, notes []billing.CreditNote) error {
	v := newView(inv, notes)
	var buf bytes.Buffer
	if err := page.Execute(&buf, v); err != nil {
		return fmt.Errorf("document: invoice %s: %w", inv.ID, err)
	}
	_, err := w.Write(buf.Bytes())
	return err
}

// view is what the template shows: every value already a string.
type view struct {
	Title, Number, Status, Watermark string
	Seller                           *party
	Buyer                            party
	IssueDate, DueDate, Period       string
	Currency                         string
	Lines                            []line
	Subtotal, Total, Credited        string
	AmountDue                        string
	CreditNotes                      []note
}

type party struct {
	Name    string
	Address []string
	Details []field
}

type field struct{ Label, Value string }

type line struct {
	Description, Period, Quantity, UnitAmount, Amount string
}

type note struct {
	ID, Date, Reason, Total string
	Lines                   []billing.CreditNoteLine
}

func newView(inv billing.Invoice, notes []billing.CreditNote) view {
	v := view{Number: "DRAFT", Status: inv.Status, Currency: inv.Currency,
		IssueDate: dateOf(inv.FinalizedAt), DueDate: dateOf(inv.DueAt), Period: span(inv.PeriodStart, inv.PeriodEnd),
		Subtotal: inv.Subtotal, Total: inv.Total, Credited: inv.Credited, AmountDue: inv.AmountDue}
	if inv.Number != nil && *inv.Number != "" {
		v.Number = *inv.Number
	} else if inv.Status != "" {
		v.Number = strings.ToUpper(inv.Status)
	}
	switch inv.Status {
	case billing.StatusDraft, billing.StatusUpcoming, billing.StatusVoid:
		v.Watermark = strings.ToUpper(inv.Status)
	}
	if seller := partyOf(inv.Seller, nil); seller.Name != "" || len(seller.Address) > 0 || len(seller.Details) > 0 {
		v.Seller = &seller
	}
	v.Buyer = partyOf(inv.Buyer, buyerKeys)
	if v.Buyer.Name == "" {
		v.Buyer.Name = inv.Customer
	}
	v.Buyer.Details = append(v.Buyer.Details, field{Label: "Customer ID", Value: inv.Customer})
	v.Title = "Invoice " + v.Number
	if v.Seller != nil && v.Seller.Name != "" {
		v.Title += " from " + v.Seller.Name
	}
	for _, l := range inv.Lines {
		dl := line{Description: l.Description, Quantity: l.Quantity, UnitAmount: l.UnitAmount, Amount: l.Amount}
		if l.PeriodStart != nil && l.PeriodEnd != nil && (!l.PeriodStart.Equal(inv.PeriodStart) || !l.PeriodEnd.Equal(inv.PeriodEnd)) {
			dl.Period = span(*l.PeriodStart, *l.PeriodEnd)
		}
		v.Lines = append(v.Lines, dl)
	}
	for _, n := range notes {
		v.CreditNotes = append(v.CreditNotes, note{ID: n.ID, Date: dateOf(&n.CreatedAt), Reason: n.Reason, Total: n.Total, Lines: n.Lines})
	}
	return v
}

// buyerKeys are the customer metadata an invoice shows (with the customer's id): a
// customer's metadata may hold anything, and only these are meant for its invoices.
var buyerKeys = []string{"name", "address", "address_lines", "email", "phone", "tax_id", "vat_id"}

// detailOrder puts the usual details first; the others follow by name.
var detailOrder = map[string]int{"email": 1, "phone": 2, "website": 3, "tax_id": 4, "vat_id": 5, "id": 6}

var labels = map[string]string{"email": "Email", "phone": "Phone", "website": "Website", "tax_id": "Tax ID",
	"vat_id": "VAT ID", "id": "ID"}

// partyOf reads a seller or buyer object: its name, its address (a string, lines, or
// an object like Stripe's) and its other keys as labelled details. only, when not nil,
// lists the keys shown.
func partyOf(raw json.RawMessage, only []string) party {
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if len(raw) == 0 || dec.Decode(&m) != nil {
		return party{}
	}
	var p party
	var keys []string
	for k, val := range m {
		if only != nil && !contains(only, k) {
			continue
		}
		switch k {
		case "name":
			p.Name = text(val)
		case "address", "address_lines":
			p.Address = append(p.Address, addressLines(val)...)
		default:
			keys = append(keys, k)
		}
	}
	sort.Slice(keys, func(i, j int) bool {
		oi, oj := rank(keys[i]), rank(keys[j])
		if oi != oj {
			return oi < oj
		}
		return keys[i] < keys[j]
	})
	for _, k := range keys {
		if s := text(m[k]); s != "" {
			p.Details = append(p.Details, field{Label: labelOf(k), Value: s})
		}
	}
	return p
}

func rank(k string) int {
	if r, ok := detailOrder[k]; ok {
		return r
	}
	return len(detailOrder) + 1
}

func contains(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}

func labelOf(key string) string {
	if l, ok := labels[key]; ok {
		return l
	}
	s := strings.ReplaceAll(key, "_", " ")
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// addressLines turns an address into lines: a string (split at newlines), a list, or
// an object (line1, line2, postal code and city, state, country, then any other key).
func addressLines(v any) []string {
	var out []string
	add := func(s string) {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	switch a := v.(type) {
	case string:
		for _, s := range strings.Split(a, "\n") {
			add(s)
		}
	case []any:
		for _, e := range a {
			add(text(e))
		}
	case map[string]any:
		known := []string{"line1", "line2", "postal_code", "city", "state", "country"}
		add(text(a["line1"]))
		add(text(a["line2"]))
		add(strings.TrimSpace(text(a["postal_code"]) + " " + text(a["city"])))
		add(text(a["state"]))
		add(text(a["country"]))
		var rest []string
		for k := range a {
			if !contains(known, k) {
				rest = append(rest, k)
			}
		}
		sort.Strings(rest)
		for _, k := range rest {
			add(text(a[k]))
		}
	default:
		add(text(v))
	}
	return out
}

// text shows a JSON value: strings and numbers as they are, anything else as JSON.
func text(v any) string {
	switch t := v.(type) {
	case nil:
		return ""
	case string:
		return t
	case json.Number:
		return t.String()
	case bool:
		if t {
			return "yes"
		}
		return "no"
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// dateOf shows an instant as a UTC date, with the time when it is not midnight.
func dateOf(t *time.Time) string {
	if t == nil || t.IsZero() {
		return "—"
	}
	u := t.UTC()
	if u.Hour() == 0 && u.Minute() == 0 && u.Second() == 0 && u.Nanosecond() == 0 {
		return u.Format("2006-01-02")
	}
	return u.Format("2006-01-02 15:04 UTC")
}

func span(from, to time.Time) string { return dateOf(&from) + " – " + dateOf(&to) }
