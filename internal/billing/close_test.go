package billing

import (
	"encoding/json"
	"testing"
	"time"
)

// The audit and change-feed entry of a finalized invoice reads as it did when it was
// marshalled from a map: same keys, same order, same values.
func TestFinalizedSummaryAsMap(t *testing.T) {
	start := time.Date(2026, 1, 10, 9, 30, 0, 0, time.FixedZone("x", 3600))
	end := start.AddDate(0, 1, 0)
	got, err := json.Marshal(invoiceSummary{Customer: "acme <&>", ID: "0192", Number: "INV-000001", PeriodEnd: end,
		PeriodStart: start, Status: StatusFinalized, Total: "28.00"})
	if err != nil {
		t.Fatal(err)
	}
	want, _ := json.Marshal(map[string]any{"id": "0192", "number": "INV-000001", "customer": "acme <&>", "status": StatusFinalized,
		"total": "28.00", "period_start": start, "period_end": end})
	if string(got) != string(want) {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}
