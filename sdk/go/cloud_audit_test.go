package limitr_test

import (
	"context"
	"testing"
	"time"

	limitr "github.com/limitr/limitr/sdk/go"
)

// auditEvents counts the call records the server committed, and fails on any sent twice.
func auditEvents(t *testing.T, f *fakeCP) int {
	t.Helper()
	ids := map[string]bool{}
	f.get(func() {
		for _, b := range f.committed {
			for _, e := range b.Events {
				if ids[e.ID] {
					t.Errorf("call record %s sent twice", e.ID)
				}
				ids[e.ID] = true
			}
		}
	})
	return len(ids)
}

// Audit mode holds at most the audit buffer of call records not yet cut into a batch.
// Past it new records are dropped and counted; the usage sums stay exact, and the
// records kept are delivered once the API is back.
func TestCloudAuditRecordsAreBounded(t *testing.T) {
	f := newFakeCP(t, cloudPolicy("1000000"))
	const bound, calls = 25, 1000
	// Nothing is cut before Close: every record waits in the engine.
	p := connect(t, f, limitr.WithAuditMode(), limitr.WithAuditBuffer(bound), limitr.WithFlushInterval(time.Hour))
	ctx := context.Background()
	if _, err := p.CreateCustomer(ctx, "u", ""); err != nil {
		t.Fatal(err)
	}
	f.set(func() { f.usageDown = true })
	for range calls {
		mustAllow(t, p, "u", 1, true)
	}
	st := p.SyncStats()
	if st.AuditPending != bound || st.AuditDropped != calls-bound {
		t.Fatalf("held %d call records, dropped %d; want %d and %d", st.AuditPending, st.AuditDropped, bound, calls-bound)
	}
	f.set(func() { f.usageDown = false })
	closeNow(t, p)
	if got := auditEvents(t, f); got != bound {
		t.Fatalf("server has %d call records, want %d", got, bound)
	}
	if got := f.units("u", "api"); got != calls {
		t.Fatalf("server has %v units, want %d", got, calls)
	}
}

// With the API down and the default bound (the buffer size), memory stays bounded
// while batches are cut and blocked: records held in the engine stay within the bound
// and queued records within the buffer.
func TestCloudAuditBoundWhileTheAPIIsDown(t *testing.T) {
	f := newFakeCP(t, cloudPolicy("1000000"))
	const buffer, calls = 10, 500
	p := connect(t, f, limitr.WithAuditMode(), limitr.WithBufferSize(buffer), limitr.WithOverflow(limitr.Block))
	ctx := context.Background()
	if _, err := p.CreateCustomer(ctx, "u", ""); err != nil {
		t.Fatal(err)
	}
	f.set(func() { f.usageDown = true })
	for i := range calls {
		mustAllow(t, p, "u", 1, true)
		if i%50 == 0 {
			time.Sleep(25 * time.Millisecond) // let the cutter run
			if st := p.SyncStats(); st.AuditPending > buffer || st.Queued > buffer {
				t.Fatalf("after %d calls: %d call records held, %d queued; bound %d", i+1, st.AuditPending, st.Queued, buffer)
			}
		}
	}
	st := p.SyncStats()
	if st.AuditPending > buffer || st.Queued > buffer || st.AuditDropped == 0 {
		t.Fatalf("stats %+v", st)
	}
	f.set(func() { f.usageDown = false })
	closeNow(t, p)
	st = p.SyncStats()
	delivered := auditEvents(t, f)
	if int64(delivered)+st.AuditDropped != calls || delivered < buffer {
		t.Fatalf("%d call records delivered, %d dropped, of %d calls", delivered, st.AuditDropped, calls)
	}
	if got := f.units("u", "api"); got != calls {
		t.Fatalf("server has %v units, want %d", got, calls)
	}
}

// A spilled batch's records live in its file only: in audit mode too, memory does
// not grow with what is spilled.
func TestCloudSpilledAuditRecordsLeaveMemory(t *testing.T) {
	f := newFakeCP(t, cloudPolicy("1000000"))
	dir := t.TempDir()
	p := connect(t, f, limitr.WithAuditMode(), limitr.WithBufferSize(4), limitr.WithOverflow(limitr.Spill(dir)))
	ctx := context.Background()
	if _, err := p.CreateCustomer(ctx, "u", ""); err != nil {
		t.Fatal(err)
	}
	f.set(func() { f.usageDown = true })
	for range 10 {
		for range 3 {
			mustAllow(t, p, "u", 1, true)
		}
		waitCut(t, p)
		eventually(t, "records cut", func() bool { return p.SyncStats().AuditPending == 0 })
	}
	if st := p.SyncStats(); st.Spilled == 0 {
		t.Fatalf("nothing spilled: %+v", st)
	}
	if n := limitr.SpilledHeldInMemory(p); n != 0 {
		t.Fatalf("spilled batches hold %d records in memory", n)
	}
	f.set(func() { f.usageDown = false })
	closeNow(t, p)
	if got := auditEvents(t, f); got != 30 {
		t.Fatalf("server has %d call records", got)
	}
}
