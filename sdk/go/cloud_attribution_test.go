package limitr_test

import (
	"context"
	"errors"
	"testing"
	"time"

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
