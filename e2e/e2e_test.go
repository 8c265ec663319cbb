package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/limitr/limitr/internal/platform/bus"
	limitr "github.com/limitr/limitr/sdk/go"
)

// TestEndToEnd runs the API, the aggregation worker and three SDK instances against
// real Postgres and Redis: the SDKs enforce the published policy, a lower limit
// published under load is enforced by every instance within a second, a customer
// created through one instance is hydrated by the others on first touch (meters
// included), and the usage all three allowed ends up in meter_aggregates exactly.
func TestEndToEnd(t *testing.T) {
	_, pool := newDB(t)
	rurl := sharedRedisURL(t)
	apiLog, sdkLog, workerLog := newSink(t, "api"), newSink(t, "sdk"), newSink(t, "worker")
	a := startAPI(t, pool, redisClient(t, rurl), apiLog, "")
	startWorker(t, pool, bus.NewRedis(redisClient(t, rurl), workerLog.logger(slog.LevelWarn)), 500*time.Millisecond, workerLog)
	cp := newControlPlane(t, a.URL)
	cp.setup(quickstart(t))

	sdks := make([]*limitr.Policy, 3)
	tallies := make([]*tally, 3)
	for i := range sdks {
		sdks[i] = connectSDK(t, a.URL, cp.sdk, sdkLog)
		tallies[i] = newTally()
		if v := sdks[i].VersionNumber(); v != 1 {
			t.Fatalf("SDK %d enforces version %d, want 1", i+1, v)
		}
	}
	ctx := context.Background()
	mustAllow := func(i int, customer string, n int64, want bool) {
		t.Helper()
		ok, err := tallies[i].allow(ctx, sdks[i], customer, "ai-chat-input", n)
		if err != nil || ok != want {
			t.Fatalf("SDK %d: Allow(%s, ai-chat-input, %d) = %v, %v; want %v", i+1, customer, n, ok, err, want)
		}
	}

	// v1 is enforced by every instance: a probe customer per instance, created through
	// it, on the starter plan's hard 500 000-token daily limit.
	for i, p := range sdks {
		probe := fmt.Sprintf("probe-%d", i+1)
		if _, err := p.CreateCustomer(ctx, probe, "starter"); err != nil {
			t.Fatalf("SDK %d: CreateCustomer: %v", i+1, err)
		}
		mustAllow(i, probe, 5000, true)
		for _, c := range []struct {
			n    float64
			want bool
		}{{495_000, true}, {495_001, false}} {
			if ok, err := p.Check(ctx, probe, "ai-chat-input", c.n); err != nil || ok != c.want {
				t.Fatalf("SDK %d: Check(%s, %v) under v1 = %v, %v; want %v", i+1, probe, c.n, ok, err, c.want)
			}
		}
	}

	// Hydration: SDK 1 creates a customer and uses 400 000 of its 500 000; SDK 2 has
	// never seen it, hydrates it on first touch and enforces the remainder exactly.
	if _, err := sdks[0].CreateCustomer(ctx, "newbie", "starter", limitr.WithLabel("New customer"), limitr.WithAltIDs("cus_newbie")); err != nil {
		t.Fatal(err)
	}
	acked := func(i int, batches int64) func() bool {
		return func() bool {
			s := sdks[i].SyncStats()
			return s.Batches > batches && s.Queued == 0 && s.Pending == 0
		}
	}
	b0 := sdks[0].SyncStats().Batches
	mustAllow(0, "newbie", 400_000, true)
	waitFor(t, 5*time.Second, "SDK 1's usage of newbie to be acknowledged", acked(0, b0))
	for i := 1; i < 3; i++ {
		cs, err := sdks[i].Customers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if slices.ContainsFunc(cs, func(c *limitr.Customer) bool { return c.ID == "newbie" }) {
			t.Fatalf("SDK %d holds newbie before touching it", i+1)
		}
	}
	hydrateStart := time.Now()
	mustAllow(1, "newbie", 100_001, false) // 400 000 committed elsewhere + 100 001 > 500 000
	hydrateTook := time.Since(hydrateStart)
	b1 := sdks[1].SyncStats().Batches
	mustAllow(1, "newbie", 100_000, true) // exactly to the limit
	mustAllow(1, "newbie", 1, false)
	c, err := sdks[1].Customer(ctx, "newbie")
	if err != nil {
		t.Fatal(err)
	}
	if c.Plan != "starter" || c.Label != "New customer" || !slices.Contains(c.AltIDs, "cus_newbie") {
		t.Fatalf("SDK 2 hydrated newbie as %+v", c)
	}
	waitFor(t, 5*time.Second, "SDK 2's usage of newbie to be acknowledged", acked(1, b1))
	// SDK 3 meets it first by its alt id, after both others' usage was committed.
	if v, err := sdks[2].Value(ctx, "cus_newbie", "ai-chat-input"); err != nil || v != 500_000 {
		t.Fatalf("SDK 3: Value(cus_newbie) on first touch = %v, %v; want 500000", v, err)
	}
	mustAllow(2, "newbie", 1, false)

	// Background load on growth customers (soft limits) from all three instances while
	// a new version is published.
	growth := make([]string, 20)
	for i := range growth {
		growth[i] = fmt.Sprintf("g-%02d", i)
		if _, err := sdks[0].CreateCustomer(ctx, growth[i], "growth"); err != nil {
			t.Fatal(err)
		}
	}
	spec := streamSpec{sdks: sdks, tallies: tallies, customers: growth, ents: []string{"ai-chat-input", "ai-chat-output"},
		total: 300_000, maxAmount: 100, duration: 2 * time.Second, perSDK: 2, seed: 1}
	if testing.Short() {
		spec.total, spec.duration = 60_000, 700*time.Millisecond
	}
	var progress atomic.Int64
	loadDone := make(chan struct{})
	go func() { defer close(loadDone); spec.run(ctx, &progress) }()
	waitFor(t, 10*time.Second, "the load to start", func() bool { return progress.Load() > spec.total/5 })

	// Publish v2: the starter input limit drops to 1 000, below every probe's 5 000.
	v2 := cp.createVersion(withStarterInputLimit(t, 1000))
	sent := cp.publish(v2)
	lat := make([]time.Duration, 3)
	swapped := make([]time.Duration, 3)
	err = eachSDK(sdks, func(i int, p *limitr.Policy) error {
		probe := fmt.Sprintf("probe-%d", i+1)
		deadline := sent.Add(5 * time.Second)
		for {
			ok, err := p.Check(ctx, probe, "ai-chat-input", 1)
			if err != nil {
				return err
			}
			if !ok {
				lat[i] = time.Since(sent)
				swapped[i] = p.SyncStats().PolicyUpdatedAt.Sub(sent)
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("SDK %d still allows %s 5 s after the publish (version %d)", i+1, probe, p.VersionNumber())
			}
			time.Sleep(time.Millisecond)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("publish → enforce (v2, limit 500000 → 1000, under load): SDK1 %s, SDK2 %s, SDK3 %s (policy swapped at %s, %s, %s after the publish request was sent)",
		ms(lat[0]), ms(lat[1]), ms(lat[2]), ms(swapped[0]), ms(swapped[1]), ms(swapped[2]))
	for i, l := range lat {
		if l > time.Second {
			t.Errorf("SDK %d enforced the new limit %v after the publish; the budget is 1 s", i+1, l)
		}
		if v := sdks[i].VersionNumber(); v != v2 {
			t.Errorf("SDK %d reports version %d, want %d", i+1, v, v2)
		}
		mustAllow(i, fmt.Sprintf("probe-%d", i+1), 1, false)
	}
	<-loadDone

	stats := closeAll(t, sdks, 15*time.Second)
	checkNoErrors(t, tallies...)
	for i, tl := range tallies {
		if tl.units() == 0 {
			t.Errorf("SDK %d allowed nothing", i+1)
		}
		if tl.denied != map[int]int64{0: 1, 1: 3, 2: 2}[i] {
			t.Errorf("SDK %d: %d denied calls", i+1, tl.denied)
		}
	}
	drainStart := time.Now()
	waitDrained(t, pool, 20*time.Second)
	drainTook := time.Since(drainStart)
	want := mergeTallies(tallies...)
	got := checkTotals(t, pool, want)
	batches, dups := checkBatches(t, pool, stats, 0)
	var instances int
	if err := pool.QueryRow(ctx, `select count(distinct instance_id) from usage_batches`).Scan(&instances); err != nil {
		t.Fatal(err)
	}
	if instances != 3 {
		t.Errorf("usage from %d instances, want 3", instances)
	}
	t.Logf("hydration on first touch (SDK 2, newbie): %s; totals: SDKs allowed %d / %d / %d units, meter_aggregates holds %d over %d meters; %d batches acknowledged (%d duplicates); backlog drained %s after the last Close",
		ms(hydrateTook), tallies[0].units(), tallies[1].units(), tallies[2].units(), got, len(want), batches, dups, ms(drainTook))
}
