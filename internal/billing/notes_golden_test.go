package billing

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/validation"
	"github.com/limitr/limitr/internal/wire"
)

func TestTopupGolden(t *testing.T) {
	line, ok, err := TopupLine("EUR", d("0.92"), wire.CustomerTopup{ID: "b3c1", Topup: "token_pack", Credit: "token",
		Value: json.Number("500000"), Price: json.Number("8")}, at("2026-02-14T10:00:00Z"))
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	golden(t, "topup_purchase", goldenInvoice{Period: Period{Start: *line.PeriodStart, End: *line.PeriodEnd}, Lines: []Line{line}, Total: line.Amount})
	for _, price := range []json.Number{"", "0", "-1"} {
		if _, ok, err := TopupLine("EUR", num.One, wire.CustomerTopup{Price: price}, at("2026-02-14T10:00:00Z")); ok || err != nil {
			t.Errorf("price %q: invoiced (%v, %v)", price, ok, err)
		}
	}
}

func TestCreditNoteGolden(t *testing.T) {
	inv := Invoice{ID: "inv-1", Currency: "USD", Total: "32.00", Credited: "10.00"}
	note, err := NewCreditNote(inv, CreditNoteInput{Reason: "outage on 2026-02-20", Lines: []CreditNoteLine{
		{Description: "tokens billed during the outage", Amount: "12.5"}, {Description: "goodwill", Amount: "9.50"}}})
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "credit_note", note)
	for name, in := range map[string]CreditNoteInput{
		"more than is left": {Reason: "x", Lines: []CreditNoteLine{{Description: "a", Amount: "22.01"}}},
		"sub-cent":          {Reason: "x", Lines: []CreditNoteLine{{Description: "a", Amount: "0.005"}}},
		"negative":          {Reason: "x", Lines: []CreditNoteLine{{Description: "a", Amount: "-1"}}},
		"no reason":         {Lines: []CreditNoteLine{{Description: "a", Amount: "1"}}},
		"no lines":          {Reason: "x"},
	} {
		if _, err := NewCreditNote(inv, in); !errors.Is(err, validation.ErrInvalid) {
			t.Errorf("%s: %v", name, err)
		}
	}
}
