package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/limitr/limitr/internal/api"
	"github.com/limitr/limitr/internal/platform/bus"
	"github.com/limitr/limitr/internal/wire"
	limitr "github.com/limitr/limitr/sdk/go"
)

// fleetPolicy has one hard, non-resetting limit: "api", limit units of "req".
func fleetPolicy(limit int) []byte {
	return fmt.Appendf(nil, `{"policy": {"credits": {"req": {}}, "plans": {"fleet": {"default": true,
  "entitlements": {"api": {"limit": {"credit": "req", "value": %d}}}}}}}`, limit)
}

// committed reads a customer's committed units of "api" from the server.
func (c *controlPlane) committed(customer string) int64 {
	c.t.Helper()
	code, data := c.do(http.MethodGet, "/v1/sdk/customers/"+customer+"/state", c.sdk, nil)
	var st wire.CustomerState
	c.decode(code, http.StatusOK, data, "customer state", &st)
	var n int64
	for _, m := range st.Meters["api"] {
		v, err := strconv.ParseInt(m.Units, 10, 64)
		if err != nil {
			c.t.Fatalf("units %q: %v", m.Units, err)
		}
		n += v
	}
	return n
}

// hammer calls Allow(1) on "api" on p until stop is closed, counting what it allowed.
func hammer(ctx context.Context, t *testing.T, p *limitr.Policy, customer string, stop <-chan struct{}, allowed *atomic.Int64) {
	hammerOn(ctx, t, p, customer, "api", stop, allowed)
}

// hammerOn is hammer on entitlement ent.
func hammerOn(ctx context.Context, t *testing.T, p *limitr.Policy, customer, ent string, stop <-chan struct{}, allowed *atomic.Int64) {
	for {
		select {
		case <-stop:
			return
		default:
		}
		ok, err := p.Allow(ctx, customer, ent, 1)
		if err != nil {
			t.Errorf("Allow: %v", err)
			return
		}
		if ok {
			allowed.Add(1)
		} else {
			time.Sleep(2 * time.Millisecond)
		}
	}
}

// TestLeasesKeepAHardLimitExactly: three instances, one of them doing 90 % of the
// calls, race for a hard limit of 3,000 in fleet mode Exact. Together they allow
// exactly 3,000 and the server commits exactly 3,000.
func TestLeasesKeepAHardLimitExactly(t *testing.T) {
	_, pool := newDB(t)
	rurl := sharedRedisURL(t)
	apiLog, sdkLog, workerLog := newSink(t, "api"), newSink(t, "sdk"), newSink(t, "worker")
	a := startAPI(t, pool, redisClient(t, rurl), apiLog, "")
	startWorker(t, pool, bus.NewRedis(redisClient(t, rurl), workerLog.logger(slog.LevelWarn)), 200*time.Millisecond, workerLog)
	cp := newControlPlane(t, a.URL)
	cp.setup(fleetPolicy(3000))
	cp.createCustomer("fleet", "")
	ps := []*limitr.Policy{connectSDK(t, a.URL, cp.sdk, sdkLog), connectSDK(t, a.URL, cp.sdk, sdkLog), connectSDK(t, a.URL, cp.sdk, sdkLog)}
	ctx := context.Background()
	var allowed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i, p := range ps {
		// Skewed: the first instance runs nine goroutines, the others one each.
		n := 1
		if i == 0 {
			n = 9
		}
		for range n {
			wg.Go(func() { hammer(ctx, t, p, "fleet", stop, &allowed) })
		}
	}
	waitFor(t, 30*time.Second, "the fleet to reach the limit", func() bool { return allowed.Load() >= 3000 })
	time.Sleep(300 * time.Millisecond) // calls past the limit, all denied
	close(stop)
	wg.Wait()
	var waits, calls int64
	for _, p := range ps {
		s := p.SyncStats()
		waits += s.LeaseWaits
		calls += s.LeaseRequests
	}
	closeAll(t, ps, 10*time.Second)
	if got := allowed.Load(); got != 3000 {
		t.Errorf("the fleet allowed %d on a hard limit of 3000", got)
	}
	if got := cp.committed("fleet"); got != 3000 {
		t.Errorf("the server committed %d, want exactly 3000", got)
	}
	t.Logf("3 instances (9:1:1 goroutines) on a hard limit of 3,000: allowed %d, committed %d; %d lease requests, %d calls waited for one",
		allowed.Load(), cp.committed("fleet"), calls, waits)
}

// startAPIWithLeaseTTL is startAPI with a short lease TTL, for the fault tests.
func startAPIWithLeaseTTL(t *testing.T, pool *pgxpool.Pool, rurl string, sink *logSink, addr string, ttl time.Duration) *apiServer {
	t.Helper()
	return startAPIConfig(t, pool, redisClient(t, rurl), sink, addr, func(c *api.Config) { c.LeaseTTL = ttl })
}

// leaseFaultStack starts an API whose leases live ttl, a client of it, and a proxy to
// it that a test cuts to kill or partition the instances it connects through.
func leaseFaultStack(t *testing.T, ttl time.Duration) (*apiServer, *controlPlane, *Proxy, *logSink) {
	t.Helper()
	_, pool := newDB(t)
	apiLog, sdkLog := newSink(t, "api"), newSink(t, "sdk")
	a := startAPIWithLeaseTTL(t, pool, sharedRedisURL(t), apiLog, "", ttl)
	proxy, err := NewProxy(a.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proxy.Close() })
	return a, newControlPlane(t, a.URL), proxy, sdkLog
}

// TestLeaseOfADeadInstanceReturns: an instance holding most of a limit's allowance
// dies (its connection to the control plane is cut for good, without Close). The other
// instance is held to what is left until the dead one's lease expires, then gets its
// unused part; the server ends at the limit exactly.
func TestLeaseOfADeadInstanceReturns(t *testing.T) {
	const ttl = 2 * time.Second
	a, cp, proxy, sdkLog := leaseFaultStack(t, ttl)
	cp.setup(fleetPolicy(1000))
	cp.createCustomer("fleet", "")
	ctx := context.Background()
	// A long horizon: the doomed instance leases far ahead of its rate.
	doomed := connectSDK(t, "http://"+proxy.Addr(), cp.sdk, sdkLog, limitr.WithLeaseHorizon(time.Hour))
	other := connectSDK(t, a.URL, cp.sdk, sdkLog)
	for range 50 {
		if ok, err := doomed.Allow(ctx, "fleet", "api", 2); !ok || err != nil {
			t.Fatalf("doomed instance: %v, %v", ok, err)
		}
		time.Sleep(time.Millisecond)
	}
	waitFor(t, 5*time.Second, "the doomed instance's usage to be committed", func() bool { return cp.committed("fleet") == 100 })
	proxy.Down() // dead: it never renews, returns or sends again
	killed := time.Now()

	var allowed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { hammer(ctx, t, other, "fleet", stop, &allowed) })
	time.Sleep(ttl / 2)
	before := allowed.Load()
	waitFor(t, 3*ttl, "the other instance to reach the limit", func() bool { return 100+allowed.Load() >= 1000 })
	close(stop)
	wg.Wait()
	closeAll(t, []*limitr.Policy{other}, 10*time.Second)
	if before >= 900 {
		t.Errorf("within half the TTL the other instance got %d: the dead instance's lease was not kept for it", before)
	}
	if got := 100 + allowed.Load(); got != 1000 {
		t.Errorf("allowed %d in all, want 1000", got)
	}
	if got := cp.committed("fleet"); got != 1000 {
		t.Errorf("committed %d, want exactly 1000", got)
	}
	t.Logf("dead instance held the rest of a 1,000 limit: the other got %d in the first %s, the limit %s after the kill (TTL %s)",
		before, ttl/2, time.Since(killed).Round(10*time.Millisecond), ttl)
}

// TestLeasesWhileTheAPIIsDown: the control plane goes away while instances hold
// leases. They spend what they hold, deny past it (the default rule), and go on once
// it is back; the server ends at the limit exactly.
func TestLeasesWhileTheAPIIsDown(t *testing.T) {
	_, pool := newDB(t)
	rurl := sharedRedisURL(t)
	apiLog, sdkLog := newSink(t, "api"), newSink(t, "sdk")
	a := startAPIWithLeaseTTL(t, pool, rurl, apiLog, "", 5*time.Second)
	addr := a.Addr
	cp := newControlPlane(t, a.URL)
	cp.setup(fleetPolicy(2000))
	cp.createCustomer("fleet", "")
	ctx := context.Background()
	ps := []*limitr.Policy{connectSDK(t, a.URL, cp.sdk, sdkLog), connectSDK(t, a.URL, cp.sdk, sdkLog)}
	var allowed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Go(func() { hammer(ctx, t, p, "fleet", stop, &allowed) })
	}
	waitFor(t, 10*time.Second, "some usage", func() bool { return allowed.Load() >= 300 })
	a.kill()
	down := allowed.Load()
	time.Sleep(time.Second)
	during := allowed.Load() - down
	startAPIWithLeaseTTL(t, pool, rurl, apiLog, addr, 5*time.Second) // the same address: the instances reconnect
	waitFor(t, 30*time.Second, "the fleet to reach the limit", func() bool { return allowed.Load() >= 2000 })
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	closeAll(t, ps, 15*time.Second)
	if got := allowed.Load(); got != 2000 {
		t.Errorf("allowed %d, want 2000", got)
	}
	if got := cp.committed("fleet"); got != 2000 {
		t.Errorf("committed %d, want exactly 2000", got)
	}
	t.Logf("API down for 1 s with leases out: %d calls allowed meanwhile from the leases held, the limit reached exactly afterwards", during)
}

// TestLeasePartitionedInstance: one instance is cut off from the control plane for less
// than the lease TTL. It spends what it holds and then denies; the other goes on within
// what is left; after the partition heals everything adds up to the limit exactly.
func TestLeasePartitionedInstance(t *testing.T) {
	const ttl = 4 * time.Second
	a, cp, proxy, sdkLog := leaseFaultStack(t, ttl)
	cp.setup(fleetPolicy(2000))
	cp.createCustomer("fleet", "")
	ctx := context.Background()
	cut := connectSDK(t, "http://"+proxy.Addr(), cp.sdk, sdkLog)
	other := connectSDK(t, a.URL, cp.sdk, sdkLog)
	var cutAllowed, otherAllowed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { hammer(ctx, t, cut, "fleet", stop, &cutAllowed) })
	wg.Go(func() { hammer(ctx, t, other, "fleet", stop, &otherAllowed) })
	waitFor(t, 10*time.Second, "some usage", func() bool { return cutAllowed.Load()+otherAllowed.Load() >= 500 })
	proxy.Down()
	atCut := cutAllowed.Load()
	time.Sleep(ttl / 2)
	spent := cutAllowed.Load() - atCut
	if err := proxy.Up(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the fleet to reach the limit", func() bool { return cutAllowed.Load()+otherAllowed.Load() >= 2000 })
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	closeAll(t, []*limitr.Policy{cut, other}, 15*time.Second)
	if got := cutAllowed.Load() + otherAllowed.Load(); got != 2000 {
		t.Errorf("allowed %d, want 2000", got)
	}
	if got := cp.committed("fleet"); got != 2000 {
		t.Errorf("committed %d, want exactly 2000", got)
	}
	t.Logf("partitioned for %s (TTL %s): it allowed %d more from its lease, then denied; the fleet ended at %d", ttl/2, ttl, spent, cp.committed("fleet"))
}
