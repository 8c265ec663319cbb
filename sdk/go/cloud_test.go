package limitr_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	limitr "github.com/limitr/limitr/sdk/go"
)

func cloudPolicy(limit string) string {
	return `{"policy": {
  "credits": {"req": {}},
  "plans": {
    "free": {"default": true,
      "entitlements": {"api": {"limit": {"credit": "req", "value": ` + limit + `}}},
      "topups": {"t20": {"credit": "req", "value": 20}}},
    "pro": {"entitlements": {"api": {"limit": {"credit": "req", "value": 100}}},
      "topups": {"t20": {"credit": "req", "value": 20}}}
  }}}`
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func connect(t testing.TB, f *fakeCP, opts ...limitr.CloudOption) *limitr.Policy {
	t.Helper()
	opts = append([]limitr.CloudOption{limitr.WithBaseURL(f.srv.URL), limitr.WithFlushInterval(20 * time.Millisecond),
		limitr.WithLogger(quiet)}, opts...)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p, err := limitr.Cloud(ctx, f.token, opts...)
	if err != nil {
		t.Fatalf("Cloud: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = p.Close(ctx)
	})
	return p
}

func closeNow(t *testing.T, p *limitr.Policy) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := p.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func mustAllow(t *testing.T, p *limitr.Policy, customer string, amt float64, want bool) {
	t.Helper()
	ok, err := p.Allow(context.Background(), customer, "api", amt)
	if err != nil || ok != want {
		t.Fatalf("Allow(%s, %v) = %v, %v; want %v", customer, amt, ok, err, want)
	}
}

func TestCloudFetchesAndEnforces(t *testing.T) {
	f := newFakeCP(t, cloudPolicy("10"))
	p := connect(t, f)
	if p.VersionNumber() != 1 || p.Version() != f.versions[0].hash {
		t.Fatalf("version %d %s", p.VersionNumber(), p.Version())
	}
	ctx := context.Background()
	if _, err := p.CreateCustomer(ctx, "u", ""); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		mustAllow(t, p, "u", 1, true)
	}
	mustAllow(t, p, "u", 1, false)
	closeNow(t, p)
	if got := f.units("u", "api"); got != 10 {
		t.Fatalf("server has %v", got)
	}
	if _, err := p.Allow(ctx, "u", "api", 1); !errors.Is(err, limitr.ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}

func TestCloudStartErrors(t *testing.T) {
	f := newFakeCP(t, "")
	ctx := context.Background()
	_, err := limitr.Cloud(ctx, f.token, limitr.WithBaseURL(f.srv.URL), limitr.WithLogger(quiet))
	if !errors.Is(err, limitr.ErrNoPolicy) || !strings.Contains(err.Error(), "no policy is published to this environment") {
		t.Fatalf("no policy: %v", err)
	}
	f.publish(cloudPolicy("10"))
	_, err = limitr.Cloud(ctx, "wrong", limitr.WithBaseURL(f.srv.URL), limitr.WithLogger(quiet))
	var ae *limitr.APIError
	if !errors.As(err, &ae) || ae.Status != 401 {
		t.Fatalf("bad key: %v", err)
	}
	if _, err := limitr.Cloud(ctx, ""); err == nil {
		t.Fatal("empty key accepted")
	}
}

func TestCloudPolicyPushSwapsWithoutLosingMeters(t *testing.T) {
	f := newFakeCP(t, cloudPolicy("10"))
	p := connect(t, f)
	ctx := context.Background()
	if _, err := p.CreateCustomer(ctx, "u", ""); err != nil {
		t.Fatal(err)
	}
	mustAllow(t, p, "u", 5, true)
	eventually(t, "stream up", func() bool { return p.SyncStats().StreamConnected })
	f.publish(cloudPolicy("6"))
	eventually(t, "version 2", func() bool { return p.VersionNumber() == 2 && p.Version() == f.versions[1].hash })
	mustAllow(t, p, "u", 2, false) // 5 + 2 > 6: the meter survived the swap
	mustAllow(t, p, "u", 1, true)
	if v, _ := p.Value(ctx, "u", "api"); v != 6 {
		t.Fatalf("value %v", v)
	}
	closeNow(t, p)
	if got := f.units("u", "api"); got != 6 {
		t.Fatalf("server has %v", got)
	}
}

func TestCloudStreamReconnectsWithLastEventID(t *testing.T) {
	f := newFakeCP(t, cloudPolicy("10"))
	p := connect(t, f)
	eventually(t, "stream up", func() bool { return p.SyncStats().StreamConnected })
	f.addCustomer("x", "free") // an event the SDK handles (and remembers the id of)
	var lastID int64
	f.get(func() { lastID = f.nextID })
	eventually(t, "event applied", func() bool {
		_, err := p.Customer(context.Background(), "x")
		return err == nil
	})
	// Cut the stream and publish while it is down: the reconnect resumes after the last
	// event seen, so the publication is replayed.
	f.set(func() { f.streamStatus = 503 })
	f.dropStreams()
	eventually(t, "stream down", func() bool { return !p.SyncStats().StreamConnected })
	f.set(func() { f.streamStatus = 0 })
	f.publish(cloudPolicy("3"))
	eventually(t, "version 2", func() bool { return p.VersionNumber() == 2 })
	eventually(t, "reconnect", func() bool {
		ok := false
		f.get(func() { ok = f.streamConns >= 2 })
		return ok
	})
	f.get(func() {
		if got := f.lastEventIDs[len(f.lastEventIDs)-1]; got != i64(lastID) {
			t.Fatalf("reconnected with Last-Event-ID %q, want %d", got, lastID)
		}
	})
}

func i64(n int64) string { return strconv.FormatInt(n, 10) }

func formatInt(n int64) string { return i64(n) }

func TestCloudPollingFallback(t *testing.T) {
	f := newFakeCP(t, cloudPolicy("10"))
	f.set(func() { f.streamStatus = 503 })
	p := connect(t, f)
	// Polling interval and scheduling vary under load (CI shares 2 cores with -race runs):
	// wait for the first conditional poll rather than sleeping a fixed time.
	eventually(t, "conditional polls while the stream is down", func() bool {
		nm := 0
		f.get(func() { nm = f.notModified })
		return nm > 0
	})
	f.publish(cloudPolicy("4"))
	eventually(t, "polled version 2", func() bool { return p.VersionNumber() == 2 })
	ctx := context.Background()
	if _, err := p.CreateCustomer(ctx, "u", ""); err != nil {
		t.Fatal(err)
	}
	mustAllow(t, p, "u", 4, true)
	mustAllow(t, p, "u", 1, false)
}

func TestCloudUsageExactlyOnceAcrossRetries(t *testing.T) {
	f := newFakeCP(t, cloudPolicy("1000000"))
	// The first three POSTs fail; the fourth is committed but its reply is lost.
	f.set(func() { f.failUsage, f.commitThenDrop = 3, 1 })
	p := connect(t, f)
	ctx := context.Background()
	for _, id := range []string{"a", "b", "c"} {
		if _, err := p.CreateCustomer(ctx, id, ""); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for g := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := []string{"a", "b", "c"}[g%3]
			for i := range 300 {
				if _, err := p.Allow(ctx, id, "api", 0.5); err != nil {
					t.Error(err)
				}
				if i%50 == 0 {
					time.Sleep(3 * time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	closeNow(t, p)
	for _, id := range []string{"a", "b", "c"} {
		if got := f.units(id, "api"); got != 300 {
			t.Errorf("%s: server has %v, want 300", id, got)
		}
	}
	st := p.SyncStats()
	f.get(func() {
		if f.duplicates != 1 || st.Duplicates != 1 {
			t.Errorf("duplicates: server %d, sdk %d", f.duplicates, st.Duplicates)
		}
		if len(f.seqViolations) > 0 {
			t.Errorf("sequence order: %v", f.seqViolations)
		}
		if f.usagePosts < 5 {
			t.Errorf("posts %d", f.usagePosts)
		}
	})
	if st.Dropped != 0 || st.Queued != 0 || st.Pending != 0 || st.Batches == 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestCloudRejectedBatchIsDroppedAndSequenceMovesOn(t *testing.T) {
	f := newFakeCP(t, cloudPolicy("100"))
	f.set(func() { f.rejectUsage = 1 })
	p := connect(t, f)
	ctx := context.Background()
	if _, err := p.CreateCustomer(ctx, "u", ""); err != nil {
		t.Fatal(err)
	}
	mustAllow(t, p, "u", 1, true)
	eventually(t, "rejection", func() bool { return p.SyncStats().Rejected == 1 })
	mustAllow(t, p, "u", 2, true)
	closeNow(t, p)
	st := p.SyncStats()
	if st.Dropped != 1 || f.units("u", "api") != 2 {
		t.Fatalf("stats %+v, server %v", st, f.units("u", "api"))
	}
	f.get(func() {
		if len(f.seqViolations) != 1 || !strings.HasSuffix(f.seqViolations[0], ": 2 after 0") {
			// The refused batch had sequence 1; the next one is 2.
			t.Fatalf("sequences %v", f.seqViolations)
		}
	})
}

func TestCloudCloseFlushes(t *testing.T) {
	f := newFakeCP(t, cloudPolicy("100"))
	p := connect(t, f, limitr.WithFlushInterval(time.Hour))
	ctx := context.Background()
	if _, err := p.CreateCustomer(ctx, "u", ""); err != nil {
		t.Fatal(err)
	}
	mustAllow(t, p, "u", 7, true)
	if f.units("u", "api") != 0 {
		t.Fatal("flushed before Close")
	}
	closeNow(t, p)
	if got := f.units("u", "api"); got != 7 {
		t.Fatalf("server has %v", got)
	}
	// No grant paid for anything: the optional field is left out, as older SDKs do.
	if _, n := f.grantCovered("u", "api"); n != 0 {
		t.Fatalf("%d deltas sent grant_covered without grants", n)
	}
}

func TestCloudCloseReportsUnsentUsage(t *testing.T) {
	f := newFakeCP(t, cloudPolicy("100"))
	p := connect(t, f)
	ctx := context.Background()
	if _, err := p.CreateCustomer(ctx, "u", ""); err != nil {
		t.Fatal(err)
	}
	f.set(func() { f.usageDown = true })
	mustAllow(t, p, "u", 1, true)
	cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if err := p.Close(cctx); err == nil || !strings.Contains(err.Error(), "not acknowledged") {
		t.Fatalf("Close: %v", err)
	}
}

// waitCut waits until the engine's pending usage has been cut into a batch.
func waitCut(t *testing.T, p *limitr.Policy) {
	t.Helper()
	eventually(t, "cut", func() bool { return p.SyncStats().Pending == 0 })
}

func TestCloudOverflowBlock(t *testing.T) {
	f := newFakeCP(t, cloudPolicy("100"))
	p := connect(t, f, limitr.WithBufferSize(2), limitr.WithOverflow(limitr.Block))
	ctx := context.Background()
	ids := []string{"a", "b", "c", "d", "e"}
	for _, id := range ids {
		if _, err := p.CreateCustomer(ctx, id, ""); err != nil {
			t.Fatal(err)
		}
	}
	f.set(func() { f.usageDown = true })
	for round := range 3 {
		for _, id := range ids {
			mustAllow(t, p, id, 1, true)
		}
		time.Sleep(40 * time.Millisecond)
		st := p.SyncStats()
		if st.Queued > 2 {
			t.Fatalf("round %d: queued %d past the buffer", round, st.Queued)
		}
	}
	st := p.SyncStats()
	if st.Pending == 0 || st.LastError == nil {
		t.Fatalf("nothing held back: %+v", st)
	}
	// Enforcement goes on.
	for range 97 {
		mustAllow(t, p, "a", 1, true)
	}
	mustAllow(t, p, "a", 1, false)
	f.set(func() { f.usageDown = false })
	closeNow(t, p)
	if got := f.units("a", "api"); got != 100 {
		t.Fatalf("a: %v", got)
	}
	for _, id := range ids[1:] {
		if got := f.units(id, "api"); got != 3 {
			t.Fatalf("%s: %v", id, got)
		}
	}
}

func TestCloudOverflowDrop(t *testing.T) {
	f := newFakeCP(t, cloudPolicy("100"))
	p := connect(t, f, limitr.WithBufferSize(2), limitr.WithOverflow(limitr.Drop))
	ctx := context.Background()
	const n = 8
	for i := range n {
		if _, err := p.CreateCustomer(ctx, "c"+formatInt(int64(i)), ""); err != nil {
			t.Fatal(err)
		}
	}
	f.set(func() { f.usageDown = true })
	for i := range n {
		mustAllow(t, p, "c"+formatInt(int64(i)), 1, true) // one delta of one unit each
		waitCut(t, p)
		if q := p.SyncStats().Queued; q > 2 {
			t.Fatalf("queued %d", q)
		}
	}
	st := p.SyncStats()
	if st.Dropped == 0 {
		t.Fatalf("nothing dropped: %+v", st)
	}
	f.set(func() { f.usageDown = false })
	closeNow(t, p)
	st = p.SyncStats()
	sum := 0.0
	for i := range n {
		sum += f.units("c"+formatInt(int64(i)), "api")
	}
	if sum+float64(st.Dropped) != n || st.Sent+st.Dropped != n {
		t.Fatalf("server %v + dropped %d != %d (%+v)", sum, st.Dropped, n, st)
	}
}

func TestCloudOverflowSpillSurvivesRestart(t *testing.T) {
	f := newFakeCP(t, cloudPolicy("100"))
	dir := t.TempDir()
	p := connect(t, f, limitr.WithBufferSize(2), limitr.WithOverflow(limitr.Spill(dir)))
	ctx := context.Background()
	const n = 8
	for i := range n {
		if _, err := p.CreateCustomer(ctx, "s"+formatInt(int64(i)), ""); err != nil {
			t.Fatal(err)
		}
	}
	f.set(func() { f.usageDown = true })
	for i := range n {
		mustAllow(t, p, "s"+formatInt(int64(i)), 1, true)
		waitCut(t, p)
	}
	st := p.SyncStats()
	if st.Spilled == 0 || st.Queued > 2 {
		t.Fatalf("stats %+v", st)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.batch"))
	if len(files) == 0 {
		t.Fatal("no spill files")
	}
	// Close cannot reach the server: what is left in memory is spilled too.
	cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if err := p.Close(cctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	files, _ = filepath.Glob(filepath.Join(dir, "*.batch"))
	if len(files) == 0 {
		t.Fatal("no spill files after Close")
	}
	sum := func() float64 {
		s := 0.0
		for i := range n {
			s += f.units("s"+formatInt(int64(i)), "api")
		}
		return s
	}
	if sum() != 0 {
		t.Fatal("usage arrived while the server was down")
	}
	// A new process on the same directory sends the spilled usage first.
	f.set(func() { f.usageDown = false })
	p2 := connect(t, f, limitr.WithOverflow(limitr.Spill(dir)))
	eventually(t, "spilled usage sent", func() bool { return sum() == n })
	closeNow(t, p2)
	if sum() != n {
		t.Fatalf("server has %v", sum())
	}
	left, _ := os.ReadDir(dir)
	left = slices.DeleteFunc(left, func(e os.DirEntry) bool { return e.Name() == ".lock" }) // the directory's lock
	if len(left) != 0 {
		t.Fatalf("files left: %v", left)
	}
	f.get(func() {
		if len(f.seqViolations) > 0 {
			t.Fatalf("sequences: %v", f.seqViolations)
		}
	})
}

func TestCloudCustomerOpsGoToTheAPIFirst(t *testing.T) {
	f := newFakeCP(t, cloudPolicy("10"))
	p := connect(t, f)
	ctx := context.Background()
	c, err := p.CreateCustomer(ctx, "u", "", limitr.WithLabel("Ursula"))
	if err != nil || c.Label != "Ursula" {
		t.Fatalf("create: %+v %v", c, err)
	}
	f.get(func() {
		if f.customers["u"] == nil || f.customers["u"].Label != "Ursula" {
			t.Fatal("not created on the server")
		}
	})
	// Creating an existing id updates it, as in local mode.
	if c, err = p.CreateCustomer(ctx, "u", "", limitr.WithLabel("Uma")); err != nil || c.Label != "Uma" {
		t.Fatalf("update: %+v %v", c, err)
	}

	// An API failure leaves local state alone.
	f.set(func() { f.failCust = 1 })
	if _, err := p.CreateCustomer(ctx, "v", ""); err == nil {
		t.Fatal("create succeeded with the API failing")
	}
	if _, err := p.Customer(ctx, "v"); !errors.Is(err, limitr.ErrUnknownCustomer) {
		t.Fatalf("v exists locally: %v", err)
	}

	if err := p.SetCustomerPlan(ctx, "u", "nope", false); !errors.Is(err, limitr.ErrUnknownPlan) {
		t.Fatalf("unknown plan: %v", err)
	}
	mustAllow(t, p, "u", 4, true)
	if err := p.SetCustomerPlan(ctx, "u", "pro", false); err != nil {
		t.Fatal(err)
	}
	if l, _ := p.Limit(ctx, "u", "api"); l != 100 {
		t.Fatalf("limit after plan change %v", l)
	}
	if v, _ := p.Value(ctx, "u", "api"); v != 4 {
		t.Fatalf("meter lost on plan change: %v", v)
	}

	if err := p.CreateCustomerOverride(ctx, "u", "api", limitr.Override{Value: "5"}); err != nil {
		t.Fatal(err)
	}
	if l, _ := p.Limit(ctx, "u", "api"); l != 5 {
		t.Fatalf("limit with override %v", l)
	}
	f.set(func() { f.failCust = 1 })
	if err := p.CreateCustomerOverride(ctx, "u", "api", limitr.Override{Value: "50"}); err == nil {
		t.Fatal("override set with the API failing")
	}
	if l, _ := p.Limit(ctx, "u", "api"); l != 5 {
		t.Fatalf("failed override applied locally: %v", l)
	}
	if err := p.CreateCustomerOverride(ctx, "u", "nope", limitr.Override{Value: "5"}); !errors.Is(err, limitr.ErrUnknownEntitlement) {
		t.Fatalf("unknown entitlement: %v", err)
	}
	if err := p.RemoveCustomerOverride(ctx, "u", "api"); err != nil {
		t.Fatal(err)
	}
	if err := p.RemoveCustomerOverride(ctx, "u", "api"); err != nil {
		t.Fatalf("removing a missing override: %v", err)
	}
	if l, _ := p.Limit(ctx, "u", "api"); l != 100 {
		t.Fatalf("limit after removing the override %v", l)
	}

	if err := p.ApplyCustomerTopup(ctx, "u", "t20"); err != nil {
		t.Fatal(err)
	}
	var grantID string
	f.get(func() { grantID = f.customers["u"].Topups[0].GrantID })
	c, _ = p.Customer(ctx, "u")
	if _, ok := c.Grants[grantID]; !ok {
		t.Fatalf("grant %s not held locally: %v", grantID, c.Grants)
	}
	if rc, _ := p.RemainingCredit(ctx, "u", "req"); rc != 20 {
		t.Fatalf("credit %v", rc)
	}
	if err := p.ApplyCustomerTopup(ctx, "u", "nope"); !errors.Is(err, limitr.ErrUnknownTopup) {
		t.Fatalf("unknown topup: %v", err)
	}
	// The change events of these operations echo back; applying them changes nothing.
	time.Sleep(50 * time.Millisecond)
	c, _ = p.Customer(ctx, "u")
	if len(c.Grants) != 1 || c.Plan != "pro" || len(c.Overrides) != 0 {
		t.Fatalf("after echoes: %+v", c)
	}

	f.set(func() { f.failCust = 1 })
	if err := p.DeleteCustomer(ctx, "u"); err == nil {
		t.Fatal("deleted with the API failing")
	}
	if _, err := p.Customer(ctx, "u"); err != nil {
		t.Fatalf("u lost locally: %v", err)
	}
	if err := p.DeleteCustomer(ctx, "u"); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Customer(ctx, "u"); !errors.Is(err, limitr.ErrUnknownCustomer) {
		t.Fatalf("u still held: %v", err)
	}
	if err := p.DeleteCustomer(ctx, "ghost"); !errors.Is(err, limitr.ErrUnknownCustomer) {
		t.Fatalf("unknown: %v", err)
	}
}

func TestCloudHydratesOnFirstTouch(t *testing.T) {
	f := newFakeCP(t, cloudPolicy("10"))
	f.addCustomer("h", "pro")
	period := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f.commitUsage("h", "api", "req", period, "40")
	f.mutate("h", "override", func(rec *fakeRecord, ch map[string]any) {
		rec.Overrides["api"] = []byte(`{"value":"50"}`)
	})
	var grantID string
	f.set(func() { grantID = f.topupLocked(f.customers["h"], "t20").GrantID })
	p := connect(t, f)
	ctx := context.Background()
	mustAllow(t, p, "h", 10, true) // 40 committed elsewhere + 10 = the override's 50
	c, err := p.Customer(ctx, "h")
	if err != nil {
		t.Fatal(err)
	}
	if c.Plan != "pro" || c.Overrides["api"].Value != "50" || c.Meters["api"].Value != 50 {
		t.Fatalf("hydrated %+v", c)
	}
	if _, ok := c.Grants[grantID]; !ok {
		t.Fatalf("grants %v", c.Grants)
	}
	// Past the limit only the topup's grant of 20 pays.
	mustAllow(t, p, "h", 21, false)
	mustAllow(t, p, "h", 20, true)
	mustAllow(t, p, "h", 1, false)
	f.get(func() {
		if f.stateCalls["h"] != 1 {
			t.Fatalf("state calls %d", f.stateCalls["h"])
		}
	})
	closeNow(t, p)
	if got := f.units("h", "api"); got != 70 {
		t.Fatalf("server has %v", got)
	}
}

func TestCloudHydratesOnceAndCachesMisses(t *testing.T) {
	f := newFakeCP(t, cloudPolicy("10"))
	f.addCustomer("h2", "free")
	f.set(func() { f.stateDelay = 30 * time.Millisecond })
	p := connect(t, f)
	ctx := context.Background()
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if ok, err := p.Allow(ctx, "h2", "api", 0.5); !ok || err != nil {
				t.Errorf("concurrent first call: %v %v", ok, err)
			}
		}()
	}
	wg.Wait()
	if v, _ := p.Value(ctx, "h2", "api"); v != 10 {
		t.Fatalf("value %v", v)
	}
	for range 5 {
		if _, err := p.Allow(ctx, "nobody", "api", 1); !errors.Is(err, limitr.ErrUnknownCustomer) {
			t.Fatalf("unknown customer: %v", err)
		}
	}
	f.get(func() {
		if f.stateCalls["h2"] != 1 || f.stateCalls["nobody"] != 1 {
			t.Fatalf("state calls %v", f.stateCalls)
		}
	})
	// A customer created elsewhere after a miss is found once the stream says so.
	eventually(t, "stream up", func() bool { return p.SyncStats().StreamConnected })
	f.addCustomer("nobody", "free")
	eventually(t, "hydrated after the create event", func() bool {
		ok, err := p.Allow(ctx, "nobody", "api", 1)
		return ok && err == nil
	})
}

func TestCloudAppliesCustomerChangeEvents(t *testing.T) {
	f := newFakeCP(t, cloudPolicy("10"))
	p := connect(t, f)
	ctx := context.Background()
	if _, err := p.CreateCustomer(ctx, "e", ""); err != nil {
		t.Fatal(err)
	}
	mustAllow(t, p, "e", 3, true)
	eventually(t, "stream up", func() bool { return p.SyncStats().StreamConnected })
	limit := func() float64 { l, _ := p.Limit(ctx, "e", "api"); return l }

	f.mutate("e", "plan", func(rec *fakeRecord, ch map[string]any) { rec.Plan = "pro"; ch["plan"] = "pro" })
	eventually(t, "plan change", func() bool { return limit() == 100 })
	if v, _ := p.Value(ctx, "e", "api"); v != 3 {
		t.Fatalf("meter lost: %v", v)
	}
	f.mutate("e", "override", func(rec *fakeRecord, ch map[string]any) {
		ch["entitlement"], ch["override"] = "api", map[string]any{"value": "7"}
	})
	eventually(t, "override", func() bool { return limit() == 7 })
	f.mutate("e", "override", func(rec *fakeRecord, ch map[string]any) { ch["entitlement"], ch["removed"] = "api", true })
	eventually(t, "override removed", func() bool { return limit() == 100 })
	var grantID string
	f.mutate("e", "topup", func(rec *fakeRecord, ch map[string]any) {
		tp := f.topupLocked(rec, "t20")
		grantID, ch["topup"] = tp.GrantID, tp
	})
	eventually(t, "topup", func() bool {
		c, _ := p.Customer(ctx, "e")
		_, ok := c.Grants[grantID]
		return ok
	})
	f.mutate("e", "upsert", func(rec *fakeRecord, ch map[string]any) { rec.Label = "Edith" })
	eventually(t, "profile", func() bool { c, _ := p.Customer(ctx, "e"); return c.Label == "Edith" })
	c, _ := p.Customer(ctx, "e")
	if c.Meters["api"].Value != 3 || len(c.Grants) != 1 || c.Plan != "pro" {
		t.Fatalf("after events: %+v", c)
	}
	f.mutate("e", "delete", func(*fakeRecord, map[string]any) {})
	eventually(t, "delete", func() bool {
		_, err := p.Customer(ctx, "e")
		return errors.Is(err, limitr.ErrUnknownCustomer)
	})
}

func TestCloudFleetRefreshSeesOtherInstances(t *testing.T) {
	f := newFakeCP(t, cloudPolicy("10"))
	a := connect(t, f, limitr.WithRefreshInterval(time.Millisecond))
	ctx := context.Background()
	if _, err := a.CreateCustomer(ctx, "f", ""); err != nil {
		t.Fatal(err)
	}
	mustAllow(t, a, "f", 6, true)
	eventually(t, "a flushed", func() bool { return f.units("f", "api") == 6 })
	b := connect(t, f, limitr.WithRefreshInterval(time.Millisecond))
	mustAllow(t, b, "f", 5, false) // hydrated with a's 6
	mustAllow(t, b, "f", 3, true)
	eventually(t, "b flushed", func() bool { return f.units("f", "api") == 9 })
	// a learns of b's usage after its own next flush.
	mustAllow(t, a, "f", 1, true)
	eventually(t, "a refreshed", func() bool { v, _ := a.Value(ctx, "f", "api"); return v == 10 })
	mustAllow(t, a, "f", 1, false)
}

// A customer this instance has not seen cannot be loaded while the control plane is
// down: the call says so (ErrUnavailable) rather than claiming the customer is unknown.
func TestCloudOutageIsNotUnknownCustomer(t *testing.T) {
	f := newFakeCP(t, cloudPolicy("10"))
	first := connect(t, f)
	ctx := context.Background()
	if _, err := first.CreateCustomer(ctx, "u", ""); err != nil {
		t.Fatal(err)
	}
	closeNow(t, first)
	second := connect(t, f)
	defer closeNow(t, second)
	f.mu.Lock()
	f.stateDown = true
	f.mu.Unlock()
	_, err := second.Allow(ctx, "u", "api", 1)
	if !errors.Is(err, limitr.ErrUnavailable) || errors.Is(err, limitr.ErrUnknownCustomer) {
		t.Fatalf("during the outage: %v", err)
	}
	if _, err := second.Allow(ctx, "nobody", "api", 1); !errors.Is(err, limitr.ErrUnavailable) {
		t.Fatalf("an unknown customer during the outage: %v", err)
	}
	f.mu.Lock()
	f.stateDown = false
	f.mu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ok, err := second.Allow(ctx, "u", "api", 1)
		if err == nil && ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the outage: %v %v", ok, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := second.Allow(ctx, "nobody", "api", 1); err == nil {
		t.Fatal("a customer the server does not know must fail")
	}
}

// Audit mode sends one record per metered call, allowed or denied, each id sent once.
func TestCloudAuditModeSendsEveryCall(t *testing.T) {
	f := newFakeCP(t, cloudPolicy("3"))
	p := connect(t, f, limitr.WithAuditMode())
	ctx := context.Background()
	if _, err := p.CreateCustomer(ctx, "u", ""); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		mustAllow(t, p, "u", 1, true)
	}
	mustAllow(t, p, "u", 1, false)
	if _, err := p.Check(ctx, "u", "api", 1); err != nil { // a check is not a call
		t.Fatal(err)
	}
	closeNow(t, p)
	f.mu.Lock()
	defer f.mu.Unlock()
	ids := map[string]bool{}
	allowed, denied := 0, 0
	for _, b := range f.committed {
		for _, e := range b.Events {
			if ids[e.ID] {
				t.Fatalf("event %s sent twice", e.ID)
			}
			ids[e.ID] = true
			if e.Customer != "u" || e.Entitlement != "api" || e.Units != "1" {
				t.Fatalf("event %+v", e)
			}
			if e.Allowed {
				allowed++
			} else {
				denied++
			}
		}
	}
	if allowed != 3 || denied != 1 {
		t.Fatalf("events: %d allowed, %d denied", allowed, denied)
	}
}

// Grant draws reach the server, so a new instance (a restart, or another replica)
// holds what is left of a topup, not the topup at its full value.
func TestCloudGrantDrawsSurviveARestart(t *testing.T) {
	doc := `{"policy": {
  "credits": {"req": {}},
  "plans": {
    "free": {"default": true,
      "entitlements": {"api": {"limit": {"credit": "req", "value": 10}}},
      "topups": {"t20": {"credit": "req", "value": 20}, "inc": {"credit": "req", "value": 4, "included": true}}}
  }}}`
	f := newFakeCP(t, doc)
	ctx := context.Background()
	a := connect(t, f)
	if _, err := a.CreateCustomer(ctx, "g", ""); err != nil {
		t.Fatal(err)
	}
	if err := a.ApplyCustomerTopup(ctx, "g", "t20"); err != nil {
		t.Fatal(err)
	}
	mustAllow(t, a, "g", 10, true) // the limit
	mustAllow(t, a, "g", 4, true)  // the included grant (oldest)
	mustAllow(t, a, "g", 10, true) // half the topup
	before, err := a.RemainingCredit(ctx, "g", "req")
	if err != nil || before != 10 {
		t.Fatalf("remaining before the restart: %v %v", before, err)
	}
	closeNow(t, a)
	if got := f.drawn("g"); got != 14 {
		t.Fatalf("server has %v drawn", got)
	}
	// The deltas say how much of the overage the grants paid: all 14 units past the limit.
	if got, _ := f.grantCovered("g", "api"); got != 14 {
		t.Fatalf("server has %v grant-covered", got)
	}
	b := connect(t, f)
	after, err := b.RemainingCredit(ctx, "g", "req")
	if err != nil || after != before {
		t.Fatalf("remaining after the restart: %v %v; want %v", after, err, before)
	}
	mustAllow(t, b, "g", 11, false) // more than is left
	mustAllow(t, b, "g", 10, true)
	mustAllow(t, b, "g", 1, false)
	closeNow(t, b)
	if got := f.drawn("g"); got != 24 {
		t.Fatalf("server has %v drawn", got)
	}
	if got, _ := f.grantCovered("g", "api"); got != 24 {
		t.Fatalf("server has %v grant-covered", got)
	}
}
