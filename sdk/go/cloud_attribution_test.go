package limitr_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/limitr/limitr/internal/wire"
	limitr "github.com/limitr/limitr/sdk/go"
)

// Every delta and grant draw names the creation time the API returned for its
// customer, for customers created here and hydrated alike, so the server can tell a
// customer from one created again under the same id.
func TestCloudUsageCarriesCustomerCreatedAt(t *testing.T) {
	f := newFakeCP(t, cloudPolicy("10"))
	f.addCustomer("h", "free") // created elsewhere: hydrated on first touch
	p := connect(t, f)
	ctx := context.Background()
	if _, err := p.CreateCustomer(ctx, "u", ""); err != nil {
		t.Fatal(err)
	}
	if err := p.ApplyCustomerTopup(ctx, "u", "t20"); err != nil {
		t.Fatal(err)
	}
	mustAllow(t, p, "u", 12, true) // 2 from the topup: a grant draw
	mustAllow(t, p, "h", 3, true)
	closeNow(t, p)
	created := map[string]time.Time{}
	f.get(func() {
		for id, rec := range f.customers {
			created[id] = rec.CreatedAt
		}
	})
	deltas, draws := 0, 0
	f.get(func() {
		for _, b := range f.committed {
			for _, d := range b.Deltas {
				deltas++
				if d.CustomerCreatedAt == nil || !d.CustomerCreatedAt.Equal(created[d.Customer]) {
					t.Errorf("delta of %s: customer_created_at %v, want %v", d.Customer, d.CustomerCreatedAt, created[d.Customer])
				}
			}
			for _, d := range b.GrantDraws {
				draws++
				if d.CustomerCreatedAt == nil || !d.CustomerCreatedAt.Equal(created[d.Customer]) {
					t.Errorf("grant draw of %s: customer_created_at %v, want %v", d.Customer, d.CustomerCreatedAt, created[d.Customer])
				}
			}
		}
	})
	if deltas != 2 || draws != 1 {
		t.Fatalf("%d deltas, %d grant draws", deltas, draws)
	}
}

// sentFor lists what the server committed for a customer: deltas, grant draws and
// call records.
func sentFor(f *fakeCP, customer string) (deltas, draws, events int) {
	f.get(func() {
		for _, b := range f.committed {
			for _, d := range b.Deltas {
				if d.Customer == customer {
					deltas++
				}
			}
			for _, d := range b.GrantDraws {
				if d.Customer == customer {
					draws++
				}
			}
			for _, e := range b.Events {
				if e.Customer == customer {
					events++
				}
			}
		}
	})
	return deltas, draws, events
}

// DeleteCustomer discards the customer's usage not yet cut into a batch: none of it
// reaches the server after the delete; other customers' usage does.
func TestCloudDeleteCustomerDiscardsPendingUsage(t *testing.T) {
	f := newFakeCP(t, cloudPolicy("10"))
	p := connect(t, f, limitr.WithFlushInterval(time.Hour), limitr.WithAuditMode())
	ctx := context.Background()
	for _, id := range []string{"gone", "kept"} {
		if _, err := p.CreateCustomer(ctx, id, ""); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.ApplyCustomerTopup(ctx, "gone", "t20"); err != nil {
		t.Fatal(err)
	}
	mustAllow(t, p, "gone", 12, true) // 2 drawn from the topup
	mustAllow(t, p, "gone", 100, false)
	mustAllow(t, p, "kept", 2, true)
	if st := p.SyncStats(); st.Pending != 3 {
		t.Fatalf("pending %d; want 2 meters and a grant draw", st.Pending)
	}
	if err := p.DeleteCustomer(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	if st := p.SyncStats(); st.Pending != 1 {
		t.Fatalf("pending after the delete %d", st.Pending)
	}
	closeNow(t, p)
	if d, g, e := sentFor(f, "gone"); d+g+e != 0 {
		t.Fatalf("sent for a deleted customer: %d deltas, %d grant draws, %d call records", d, g, e)
	}
	if d, _, e := sentFor(f, "kept"); d != 1 || e != 1 || f.units("kept", "api") != 2 {
		t.Fatalf("kept: %d deltas, %d call records, %v units", d, e, f.units("kept", "api"))
	}
}

// A delete pushed by the stream discards pending usage too.
func TestCloudStreamDeleteDiscardsPendingUsage(t *testing.T) {
	f := newFakeCP(t, cloudPolicy("10"))
	p := connect(t, f, limitr.WithFlushInterval(time.Hour), limitr.WithAuditMode())
	ctx := context.Background()
	for _, id := range []string{"gone", "kept"} {
		if _, err := p.CreateCustomer(ctx, id, ""); err != nil {
			t.Fatal(err)
		}
	}
	mustAllow(t, p, "gone", 4, true)
	mustAllow(t, p, "kept", 2, true)
	eventually(t, "stream up", func() bool { return p.SyncStats().StreamConnected })
	f.mutate("gone", "delete", func(*fakeRecord, map[string]any) {})
	eventually(t, "delete applied", func() bool {
		_, err := p.Customer(ctx, "gone")
		return errors.Is(err, limitr.ErrUnknownCustomer)
	})
	closeNow(t, p)
	if d, g, e := sentFor(f, "gone"); d+g+e != 0 {
		t.Fatalf("sent for a deleted customer: %d deltas, %d grant draws, %d call records", d, g, e)
	}
	if f.units("kept", "api") != 2 {
		t.Fatalf("kept: %v", f.units("kept", "api"))
	}
}

// logCapture is a slog handler that keeps the records it is given.
type logCapture struct {
	mu      sync.Mutex
	records []slog.Record
}

func (h *logCapture) Enabled(context.Context, slog.Level) bool { return true }
func (h *logCapture) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.records = append(h.records, r.Clone())
	h.mu.Unlock()
	return nil
}
func (h *logCapture) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *logCapture) WithGroup(string) slog.Handler      { return h }

// count counts the records whose message contains s.
func (h *logCapture) count(s string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, r := range h.records {
		if strings.Contains(r.Message, s) {
			n++
		}
	}
	return n
}

// warnings counts the warnings logged about a customer's unattributed usage.
func (h *logCapture) warnings(customer string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, r := range h.records {
		if r.Level != slog.LevelWarn || !strings.Contains(r.Message, "attribute") {
			continue
		}
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "customer" && a.Value.String() == customer {
				n++
			}
			return true
		})
	}
	return n
}

// A batch naming customers the server no longer knows (deleted without this instance
// hearing of it) or has created again is committed: the server lists the records it
// could not attribute, the SDK counts them and moves on, resending nothing and
// rejecting nothing. It warns once per customer, not per record or batch.
func TestCloudUnattributedUsageIsCountedNotRejected(t *testing.T) {
	f := newFakeCP(t, cloudPolicy("100"))
	logs := &logCapture{}
	p := connect(t, f, limitr.WithAuditMode(), limitr.WithLogger(slog.New(logs)))
	ctx := context.Background()
	for _, id := range []string{"known", "gone", "again"} {
		if _, err := p.CreateCustomer(ctx, id, ""); err != nil {
			t.Fatal(err)
		}
	}
	// Changed on the server without an event reaching this instance.
	f.set(func() {
		delete(f.customers, "gone")
		f.customers["again"].CreatedAt = f.customers["again"].CreatedAt.Add(time.Second)
	})
	const rounds = 3
	for round := range rounds {
		mustAllow(t, p, "known", 1, true)
		mustAllow(t, p, "gone", 1, true)
		mustAllow(t, p, "again", 1, true)
		// Per round: gone's delta and call record, and again's delta (call records carry
		// no creation time, so again's is attributed to the customer now under the id).
		want := int64(round+1) * 3
		eventually(t, "acknowledged", func() bool { return p.SyncStats().Unattributed == want })
	}
	closeNow(t, p)
	st := p.SyncStats()
	if st.Unattributed != rounds*3 || st.Rejected != 0 || st.Dropped != 0 {
		t.Fatalf("stats %+v", st)
	}
	if got := f.units("known", "api"); got != rounds {
		t.Fatalf("known: %v", got)
	}
	reasons := map[string]string{}
	f.get(func() {
		if f.duplicates != 0 || f.usagePosts != len(f.committed) {
			t.Errorf("resent: %d posts for %d batches, %d duplicates", f.usagePosts, len(f.committed), f.duplicates)
		}
		for _, u := range f.unattributed {
			reasons[u.Customer] = u.Reason
		}
	})
	if reasons["gone"] != wire.ReasonUnknownCustomer || reasons["again"] != wire.ReasonCustomerRecreated || len(reasons) != 2 {
		t.Fatalf("unattributed: %v", reasons)
	}
	if w1, w2, w3 := logs.warnings("gone"), logs.warnings("again"), logs.warnings("known"); w1 != 1 || w2 != 1 || w3 != 0 {
		t.Fatalf("warnings: gone %d, again %d, known %d", w1, w2, w3)
	}
}
