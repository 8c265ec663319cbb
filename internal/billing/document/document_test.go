package document

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/limitr/limitr/internal/billing"
)

func ts(s string) *time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return &t
}

func finalized() billing.Invoice {
	number := "ACME-000001"
	start, end := ts("2026-02-10T00:00:00Z"), ts("2026-03-10T00:00:00Z")
	return billing.Invoice{ID: "0190c8a0-0000-7000-8000-000000000001", Number: &number, Kind: "period", Customer: "acme",
		Status: billing.StatusFinalized, Currency: "USD", PeriodStart: *start, PeriodEnd: *end,
		DueAt: ts("2026-04-09T01:00:00Z"), FinalizedAt: ts("2026-03-10T01:00:00Z"),
		Lines: []billing.Line{
			{Kind: billing.KindPlanFee, Description: "Plan basic", Quantity: "1", UnitAmount: "20", Amount: "20.00", PeriodStart: start, PeriodEnd: end},
			{Kind: billing.KindUsage, Entitlement: "tokens", Description: "tokens: 600000 token over the 1000000 included",
				Quantity: "600000", UnitAmount: "0.00002", Amount: "12.00", PeriodStart: start, PeriodEnd: end},
			{Kind: billing.KindCredit, Entitlement: "tokens", Description: "tokens: 250000 token paid from grants", Amount: "-5.00",
				PeriodStart: start, PeriodEnd: end},
			{Kind: billing.KindAdjustment, Entitlement: "tokens", Description: "tokens: usage committed after its period was invoiced (+50000 token)",
				Quantity: "50000", Amount: "1.00", PeriodStart: ts("2026-01-10T09:30:00Z"), PeriodEnd: start},
		},
		Subtotal: "28.00", Total: "28.00", Credited: "5.50", AmountDue: "22.50",
		Seller: json.RawMessage(`{"tax_id": "FR123", "name": "Acme <script>alert(1)</script> Inc", "email": "billing@acme.test",
			"address": {"line1": "1 Rue de la Paix", "postal_code": "75002", "city": "Paris", "country": "FR"}}`),
		Buyer: json.RawMessage(`{"id": "acme", "name": "Globex & Co", "email": "ap@globex.test", "address": ["42 Main St", "Springfield"],
			"internal_note": "churn risk"}`),
	}
}

func render(t *testing.T, inv billing.Invoice, notes []billing.CreditNote) string {
	t.Helper()
	var b bytes.Buffer
	if err := Render(&b, inv, notes); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestRenderFinalizedInvoice(t *testing.T) {
	inv := finalized()
	notes := []billing.CreditNote{{ID: "cn-1", Invoice: inv.ID, Reason: "goodwill", Total: "5.50", CreatedAt: *ts("2026-03-12T08:15:00Z"),
		Lines: []billing.CreditNoteLine{{Description: "sorry for the outage", Amount: "5.50"}}}}
	out := render(t, inv, notes)
	for _, want := range []string{
		"<!DOCTYPE html>",
		"<title>Invoice ACME-000001 from Acme &lt;script&gt;alert(1)&lt;/script&gt; Inc</title>",
		`<div class="number">ACME-000001</div>`,
		`status-finalized">finalized<`,
		// Seller: name first, the address as lines, then the details in order.
		`<p class="name">Acme &lt;script&gt;alert(1)&lt;/script&gt; Inc</p>`,
		"<p>1 Rue de la Paix</p>\n      <p>75002 Paris</p>\n      <p>FR</p>",
		"<span>Email:</span> billing@acme.test</p>\n      <p class=\"detail\"><span>Tax ID:</span> FR123",
		// Buyer: its name, address, email and id; nothing else of its metadata.
		`<p class="name">Globex &amp; Co</p>`, "<p>42 Main St</p>", "<p>Springfield</p>", "ap@globex.test",
		"<span>Customer ID:</span> acme",
		"<span>Issue date</span><strong>2026-03-10 01:00 UTC</strong>",
		"<span>Due date</span><strong>2026-04-09 01:00 UTC</strong>",
		"<span>Period</span><strong>2026-02-10 – 2026-03-10</strong>",
		"Amount (USD)",
		"<td>Plan basic</td>", ">20.00<",
		"<td>tokens: 600000 token over the 1000000 included</td>", ">600000<", ">0.00002<", ">12.00<",
		"<td>tokens: 250000 token paid from grants</td>", ">-5.00<",
		// A line outside the invoice's period shows its own.
		`(&#43;50000 token)<span class="sub">2026-01-10 09:30 UTC – 2026-02-10</span>`, ">1.00<",
		"<td>Subtotal</td><td class=\"num\">28.00 USD</td>",
		"<td>Total</td><td class=\"num\">28.00 USD</td>",
		"<td>Credited</td><td class=\"num\">5.50 USD</td>",
		"<td>Amount due</td><td class=\"num\">22.50 USD</td>",
		"<strong>cn-1</strong>, 2026-03-12 08:15 UTC: goodwill", "<td>sorry for the outage</td>",
		"@media print", "@page",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	for _, bad := range []string{"<script", "churn risk", "internal", "watermark\"", "http://", "https://", " src=", "<link", "@import", "url("} {
		if strings.Contains(out, bad) {
			t.Errorf("page contains %q", bad)
		}
	}
	if strings.Index(out, "Acme &lt;script") > strings.Index(out, "1 Rue de la Paix") {
		t.Error("the seller's name is not first")
	}
}

func TestRenderDraftsAndBareInvoices(t *testing.T) {
	inv := finalized()
	inv.Number, inv.Status, inv.FinalizedAt, inv.DueAt = nil, billing.StatusDraft, nil, nil
	inv.Seller, inv.Buyer = nil, nil
	inv.Lines = nil
	out := render(t, inv, nil)
	for _, want := range []string{
		`<div class="number">DRAFT</div>`, `class="watermark" aria-hidden="true">DRAFT</div>`,
		"<span>Issue date</span><strong>—</strong>", "No charges in this period.",
		`<p class="name">acme</p>`, "<span>Customer ID:</span> acme",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("draft page lacks %q", want)
		}
	}
	if strings.Contains(out, "party seller") || strings.Contains(out, "Credit notes") {
		t.Error("a draft without a seller or credit notes shows them")
	}
	inv.Status = billing.StatusUpcoming
	if out := render(t, inv, nil); !strings.Contains(out, `<div class="number">UPCOMING</div>`) {
		t.Error("an upcoming invoice is not marked UPCOMING")
	}
}

// Every value is escaped, wherever it lands.
func TestRenderEscapesEverything(t *testing.T) {
	const evil = `"><script>alert(1)</script><img src=x onerror=alert(2)>`
	inv := finalized()
	number := evil
	inv.Number, inv.Customer, inv.Currency, inv.Status = &number, evil, evil, evil
	inv.Lines[0].Description, inv.Lines[0].Amount, inv.Lines[0].Quantity = evil, evil, evil
	seller, _ := json.Marshal(map[string]any{"name": evil, evil: evil, "address": []string{evil}})
	inv.Seller, inv.Buyer = seller, seller
	out := render(t, inv, []billing.CreditNote{{ID: evil, Reason: evil, Total: evil, Lines: []billing.CreditNoteLine{{Description: evil, Amount: evil}}}})
	if regexp.MustCompile(`<script|<img|"\s*onerror`).MatchString(out) {
		t.Fatalf("unescaped markup:\n%s", out)
	}
}
