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
	"github.com/limitr/limitr/internal/wire"
	limitr "github.com/limitr/limitr/sdk/go"
)

// flipLatency publishes version and waits until every SDK's Check of 1 unit for its
// probe customer answers want; it returns each SDK's latency from the publish request.
func flipLatency(t *testing.T, cp *controlPlane, sdks []*limitr.Policy, version int, want bool, timeout time.Duration) []time.Duration {
	t.Helper()
	sent := cp.publish(version)
	out := make([]time.Duration, len(sdks))
	err := eachSDK(sdks, func(i int, p *limitr.Policy) error {
		probe := fmt.Sprintf("probe-%d", i+1)
		deadline := sent.Add(timeout)
		for {
			ok, err := p.Check(context.Background(), probe, "ai-chat-input", 1)
			if err != nil {
				return err
			}
			if ok == want {
				out[i] = time.Since(sent)
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("SDK %d: Check(%s) still %v %v after publishing version %d (enforcing %d, stream up %v)",
					i+1, probe, ok, timeout, version, p.VersionNumber(), p.SyncStats().StreamConnected)
			}
			time.Sleep(time.Millisecond)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func maxDur(ds []time.Duration) time.Duration {
	var m time.Duration
	for _, d := range ds {
		m = max(m, d)
	}
	return m
}

// TestRedisStopped gives the API and the worker a private redis-server, kills it in
// the middle of a run and starts it again. While it is down the SDKs keep enforcing,
// usage keeps being acknowledged and aggregated (the worker polls), and a published
// version still reaches the SDKs (the stream's safety poll); once it is back the
// subscriptions return and wake-ups are fast again. Totals are exact.
func TestRedisStopped(t *testing.T) {
	_, pool := newDB(t)
	rs := startRedisServer(t)
	apiLog, sdkLog, workerLog := newSink(t, "api"), newSink(t, "sdk"), newSink(t, "worker")
	a := startAPI(t, pool, redisClient(t, rs.URL), apiLog, "")
	poll, phaseA, phaseB, phaseC := 2*time.Second, 1500*time.Millisecond, 3*time.Second, 2*time.Second
	if testing.Short() {
		poll, phaseA, phaseB, phaseC = time.Second, 300*time.Millisecond, 1300*time.Millisecond, 600*time.Millisecond
	}
	wk := startWorker(t, pool, bus.NewRedis(redisClient(t, rs.URL), workerLog.logger(slog.LevelWarn)), poll, workerLog)
	cp := newControlPlane(t, a.URL)
	cp.setup(quickstart(t))

	sdks := make([]*limitr.Policy, 3)
	tallies := make([]*tally, 3)
	ctx := context.Background()
	for i := range sdks {
		sdks[i] = connectSDK(t, a.URL, cp.sdk, sdkLog)
		tallies[i] = newTally()
		probe := fmt.Sprintf("probe-%d", i+1)
		if _, err := sdks[i].CreateCustomer(ctx, probe, "starter"); err != nil {
			t.Fatal(err)
		}
		if ok, err := tallies[i].allow(ctx, sdks[i], probe, "ai-chat-input", 5000); !ok || err != nil {
			t.Fatalf("SDK %d: Allow(%s, 5000) = %v, %v", i+1, probe, ok, err)
		}
	}
	customers := make([]string, 20)
	for i := range customers {
		customers[i] = fmt.Sprintf("r-%02d", i)
		if _, err := sdks[0].CreateCustomer(ctx, customers[i], "growth"); err != nil {
			t.Fatal(err)
		}
	}
	if err := eachSDK(sdks, func(i int, p *limitr.Policy) error {
		for _, c := range customers {
			if _, err := p.Check(ctx, c, "ai-chat-input", 1); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// flip publishes a new version whose starter limit denies one more unit to every
	// probe (each has used 5 000) if the enforced one allows it, or allows it if it
	// denies it, and measures when every SDK enforces it.
	flips, denying := 0, false
	flip := func(timeout time.Duration) []time.Duration {
		t.Helper()
		flips++
		deny := !denying
		denying = deny
		limit := 400_000 - flips
		if deny {
			limit = 1000 + flips
		}
		return flipLatency(t, cp, sdks, cp.createVersion(withStarterInputLimit(t, limit)), !deny, timeout)
	}

	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	spec := streamSpec{sdks: sdks, tallies: tallies, customers: customers, ents: []string{"ai-chat-input", "ai-chat-output"},
		total: 20_000 * 120, maxAmount: 100, duration: 120 * time.Second, perSDK: 1, seed: 4}
	var progress atomic.Int64
	loadDone := make(chan struct{})
	go func() { defer close(loadDone); spec.run(loadCtx, &progress) }()

	// Phase A: Redis up.
	startA := time.Now()
	latA := flip(3 * time.Second)
	time.Sleep(phaseA)
	lagA, nA := wk.maxLagBetween(startA, time.Now())

	// Phase B: Redis killed.
	aggUnits := func() int64 {
		var n int64
		if err := pool.QueryRow(ctx, `select coalesce(sum(units), 0)::bigint from meter_aggregates`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := make([]int64, len(sdks))
	for i, p := range sdks {
		before[i] = p.SyncStats().Batches
	}
	unitsBefore := aggUnits()
	rs.stop()
	stopped := time.Now()
	// What a dead Redis costs a request (the rate limiter asks Redis on every one), and
	// for how long: until go-redis's dial circuit opens.
	var slowReqs []time.Duration
	var slowFor time.Duration
	for time.Since(stopped) < 10*time.Second {
		begin := time.Now()
		if code, body := cp.do("GET", "/v1/sdk/policy", cp.sdk, nil); code != 200 {
			t.Fatalf("GET /v1/sdk/policy with Redis down: %d %s", code, body)
		}
		d := time.Since(begin)
		if d < 50*time.Millisecond {
			slowFor = time.Since(stopped)
			break
		}
		slowReqs = append(slowReqs, d.Round(time.Millisecond))
	}
	var latB []time.Duration
	if !testing.Short() {
		// The stream's wake-ups come through Redis: without it a new version reaches the
		// SDKs on the API's safety poll of the change feed (5 s).
		latB = flip(8 * time.Second)
	}
	time.Sleep(time.Until(stopped.Add(phaseB)))
	lagB, nB := wk.maxLagBetween(stopped.Add(200*time.Millisecond), time.Now())
	unitsDuring := aggUnits()
	var ackedB []int64
	streamUp := 0
	for i, p := range sdks {
		s := p.SyncStats()
		ackedB = append(ackedB, s.Batches-before[i])
		// At least one: while go-redis still retries its dials, every request costs
		// ~400 ms (TestRedisDownRequestLatency), which slows ingest without stopping it.
		if s.Batches-before[i] < 1 || s.LastError != nil {
			t.Errorf("SDK %d with Redis down: %d batches acknowledged in %v, last error %v", i+1, s.Batches-before[i], phaseB, s.LastError)
		}
		if s.StreamConnected {
			streamUp++
		}
	}
	if nB == 0 || unitsDuring <= unitsBefore {
		t.Errorf("with Redis down the worker folded %d batches; meter_aggregates went from %d to %d units", nB, unitsBefore, unitsDuring)
	}
	checkNoErrors(t, tallies...)

	// Phase C: Redis back on the same port.
	rs.start()
	restarted := time.Now()
	// Wake-ups are back once the API publishes again (seen on a subscription of our
	// own) and the API and the worker are subscribed again.
	probe := redisClient(t, rs.URL)
	sub := probe.Subscribe(ctx, wire.ChannelUsage)
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	var firstWake atomic.Int64
	go func() {
		for range sub.Channel() {
			firstWake.CompareAndSwap(0, int64(time.Since(restarted)))
		}
	}()
	// A publish right away: the API's Redis client may still fail fast for up to a
	// second (go-redis stops dialling after PoolSize failed dials and probes once a
	// second), so its wake-up can be lost and the stream's safety poll delivers it.
	var latEarly []time.Duration
	if !testing.Short() {
		latEarly = flip(8 * time.Second)
	}
	waitFor(t, 15*time.Second, "the API to publish usage wake-ups again", func() bool { return firstWake.Load() != 0 })
	waitFor(t, 15*time.Second, "the API and the worker to subscribe again", func() bool {
		n, err := probe.PubSubNumSub(ctx, wire.ChannelUsage).Result()
		if err != nil || n[wire.ChannelUsage] < 2 {
			return false
		}
		chans, err := probe.PubSubChannels(ctx, wire.ChangesChannel("*", "*")).Result()
		return err == nil && len(chans) > 0
	})
	resub := time.Since(restarted)
	startC := time.Now()
	latC := flip(3 * time.Second)
	time.Sleep(phaseC)
	lagC, nC := wk.maxLagBetween(startC, time.Now())
	if nC == 0 || lagC >= poll/2 {
		t.Errorf("after Redis came back: %d batches, largest commit lag %v; wake-ups should keep it well under the %v poll", nC, lagC, poll)
	}
	if maxDur(latC) > time.Second {
		t.Errorf("after Redis came back a publish took %v to be enforced; the budget is 1 s", maxDur(latC))
	}
	if maxDur(latA) > time.Second {
		t.Errorf("with Redis up a publish took %v to be enforced; the budget is 1 s", maxDur(latA))
	}

	stopLoad()
	<-loadDone
	stats := closeAll(t, sdks, 15*time.Second)
	checkNoErrors(t, tallies...)
	waitDrained(t, pool, 20*time.Second)
	want := mergeTallies(tallies...)
	got := checkTotals(t, pool, want)
	batches, dups := checkBatches(t, pool, stats, 0)
	warned := apiLog.count("could not wake the usage workers")

	t.Logf("Redis up: publish → enforce %s / %s / %s; worker commit lag ≤ %s over %d batches (poll %v: wake-ups)", ms(latA[0]), ms(latA[1]), ms(latA[2]), ms(lagA), nA, poll)
	if latB != nil {
		t.Logf("Redis down: publish → enforce %s / %s / %s (stream safety poll); streams still connected on %d of 3 SDKs", ms(latB[0]), ms(latB[1]), ms(latB[2]), streamUp)
	} else {
		t.Logf("Redis down: streams still connected on %d of 3 SDKs", streamUp)
	}
	t.Logf("Redis down: requests took %v until %s after the kill, then fast again", slowReqs, slowFor.Round(time.Millisecond))
	t.Logf("Redis down %s: SDKs had %v batches acknowledged, worker folded %d batches by polling, commit lag ≤ %s, meter_aggregates %d → %d units; %d wake-up failures logged by the API",
		restarted.Sub(stopped).Round(time.Millisecond), ackedB, nB, ms(lagB), unitsBefore, unitsDuring, warned)
	if latEarly != nil {
		t.Logf("Redis back: a publish sent at once is enforced after %s / %s / %s", ms(latEarly[0]), ms(latEarly[1]), ms(latEarly[2]))
	}
	t.Logf("Redis back: first usage wake-up from the API %s after restart, subscriptions restored by %s; then publish → enforce %s / %s / %s; commit lag ≤ %s over %d batches",
		ms(time.Duration(firstWake.Load())), ms(resub), ms(latC[0]), ms(latC[1]), ms(latC[2]), ms(lagC), nC)
	t.Logf("totals: SDKs allowed %d units, meter_aggregates %d; %d batches (%d duplicates)", func() (n int64) {
		for _, c := range want {
			n += c.units
		}
		return
	}(), got, batches, dups)
}

// TestRedisDownRequestLatency checks what a dead Redis costs a request to the API
// process (cmd/api configures its Redis client so that it "must cost each request
// milliseconds"): authenticated requests consult the Redis rate limiter.
func TestRedisDownRequestLatency(t *testing.T) {
	dbURL, _ := newDB(t)
	rs := startRedisServer(t)
	ap := newAPIProcess(t, dbURL, rs.URL)
	ap.start()
	cp := newControlPlane(t, "http://"+ap.addr)
	cp.setup(quickstart(t))
	timeGet := func() time.Duration {
		begin := time.Now()
		if code, body := cp.do("GET", "/v1/sdk/policy", cp.sdk, nil); code != 200 {
			t.Fatalf("GET /v1/sdk/policy: %d %s", code, body)
		}
		return time.Since(begin)
	}
	up := timeGet()
	rs.stop()
	var down []time.Duration
	for range 3 {
		down = append(down, timeGet().Round(time.Millisecond))
	}
	slices.Sort(down)
	t.Logf("GET /v1/sdk/policy: %s with Redis up; %v with Redis just killed", ms(up), down)
	if med := down[len(down)/2]; med > 100*time.Millisecond {
		t.Errorf("with Redis down a request takes %v (median of 3): go-redis v9.23 dials 5 times 100 ms apart "+
			"(Options.DialerRetries defaults to 5) before the rate limiter fails open; cmd/api sets MaxRetries and timeouts but not DialerRetries", med)
	}
}
