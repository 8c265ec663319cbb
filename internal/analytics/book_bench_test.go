package analytics

import (
	"fmt"
	"testing"

	"github.com/google/uuid"

	"github.com/limitr/limitr/internal/customers"
)

// BenchmarkBook books 500 customers whose five meters (flat, tiered, volume,
// stairstep, an exchanged credit) each took new usage since the last booking: what
// the booker does after an aggregation batch that touched them. The aggregation of
// the usage is not timed.
func BenchmarkBook(b *testing.B) {
	h := newHarness(b)
	const n = 500
	uids := make([]uuid.UUID, 0, n)
	for i := range n {
		id := fmt.Sprintf("c%04d", i)
		if _, err := h.custs.Create(h.ctx, h.env, customers.CreateInput{ID: id, Plan: "basic"}); err != nil {
			b.Fatal(err)
		}
		c, err := h.custs.GetRecord(h.ctx, h.env, id)
		if err != nil {
			b.Fatal(err)
		}
		h.uids[id] = c.UID
		uids = append(uids, c.UID)
	}
	up, err := h.bill.Upcoming(h.ctx, h.env, "c0000")
	if err != nil {
		b.Fatal(err)
	}
	start := up.PeriodStart
	if _, err := h.svc.Book(h.ctx, h.env, uids); err != nil { // the plan fees, booked once
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		for id := range h.uids {
			for _, ent := range []string{"tokens", "images", "minutes", "seats", "assistant"} {
				h.usage(id, ent, start, "700", "0.01")
			}
		}
		if _, err := h.agg.Drain(h.ctx); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		booked, err := h.svc.Book(h.ctx, h.env, uids)
		if err != nil {
			b.Fatal(err)
		}
		if booked.Changes != n*5 {
			b.Fatalf("booked %d changes of %d customers, want %d", booked.Changes, booked.Customers, n*5)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*n), "µs/customer")
}
