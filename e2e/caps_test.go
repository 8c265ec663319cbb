package e2e

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/platform/bus"
	"github.com/limitr/limitr/internal/wire"
	limitr "github.com/limitr/limitr/sdk/go"
)

// orgBudgetPolicy prices chat tokens at 0.001 rune under a soft limit far away: only a
// spend cap stops the calls.
const orgBudgetPolicy = `{"policy": {"credits": {"token": {"price": {"amount": 0.001}}},
  "plans": {"team": {"default": true, "entitlements": {"chat": {"limit": {"credit": "token", "mode": "soft", "value": 1000000000}}}}}}}`

// capSpend reads the committed consumption of a customer's cap from the server.
func (c *controlPlane) capSpend(customer, capID string) (num.Dec, wire.CustomerCap) {
	c.t.Helper()
	code, data := c.do(http.MethodGet, "/v1/environments/production/customers/"+customer+"/caps/"+capID, c.admin, nil)
	var cp wire.CustomerCap
	c.decode(code, http.StatusOK, data, "get cap", &cp)
	spent := num.Zero
	for _, u := range cp.Usage {
		v, err := num.Parse(u.Units)
		if err != nil {
			c.t.Fatalf("usage units %q: %v", u.Units, err)
		}
		if spent, err = spent.Add(v); err != nil {
			c.t.Fatal(err)
		}
	}
	return spent, cp
}

// orgBudget publishes orgBudgetPolicy and creates the org acme, with a spend cap
// "budget" of runes shared with its members alice, bob and carol (returned), through
// the REST API.
func (c *controlPlane) orgBudget(runes string) []string {
	c.t.Helper()
	c.setup([]byte(orgBudgetPolicy))
	code, data := c.do(http.MethodPost, "/v1/environments/production/customers", c.admin, map[string]any{"id": "acme", "type": "org"})
	c.decode(code, http.StatusCreated, data, "create org", nil)
	members := []string{"alice", "bob", "carol"}
	for _, m := range members {
		code, data := c.do(http.MethodPost, "/v1/environments/production/customers", c.admin, map[string]any{"id": m, "refs": []string{"acme"}})
		c.decode(code, http.StatusCreated, data, "create member", nil)
	}
	code, data = c.do(http.MethodPut, "/v1/environments/production/customers/acme/caps/budget", c.admin,
		map[string]any{"credit": "rune", "value": runes, "shared": true})
	c.decode(code, http.StatusCreated, data, "put cap", nil)
	return members
}

// TestSharedOrgCapAcrossTheFleet: an org's budget of 3 runes (3,000 tokens at 0.001) is
// a spend cap shared by its members, set through the REST API. Three SDK instances
// serve the members, one of them nine times as busy as the others, in fleet mode Exact.
// Together they allow exactly 3,000 tokens, and the server commits exactly 3 runes of
// the cap: a shared budget is never passed by the fleet.
func TestSharedOrgCapAcrossTheFleet(t *testing.T) {
	_, pool := newDB(t)
	rurl := sharedRedisURL(t)
	apiLog, sdkLog, workerLog := newSink(t, "api"), newSink(t, "sdk"), newSink(t, "worker")
	a := startAPI(t, pool, redisClient(t, rurl), apiLog, "")
	startWorker(t, pool, bus.NewRedis(redisClient(t, rurl), workerLog.logger(slog.LevelWarn)), 200*time.Millisecond, workerLog)
	cp := newControlPlane(t, a.URL)
	members := cp.orgBudget("3")

	ps := []*limitr.Policy{connectSDK(t, a.URL, cp.sdk, sdkLog), connectSDK(t, a.URL, cp.sdk, sdkLog), connectSDK(t, a.URL, cp.sdk, sdkLog)}
	ctx := context.Background()
	for i, p := range ps {
		if _, err := p.Customer(ctx, members[i]); err != nil { // hydrates the member and its org
			t.Fatal(err)
		}
		if c, err := p.CustomerCap(ctx, "acme", "budget"); err != nil || c.Key == "" || c.Value != 3 {
			t.Fatalf("instance %d holds the cap as %+v, %v", i, c, err)
		}
	}
	var allowed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i, p := range ps {
		n := 1
		if i == 0 {
			n = 9
		}
		for range n {
			wg.Go(func() { hammerOn(ctx, t, p, members[i], "chat", stop, &allowed) })
		}
	}
	waitFor(t, 60*time.Second, "the fleet to spend the budget", func() bool { return allowed.Load() >= 3000 })
	time.Sleep(300 * time.Millisecond) // calls past the budget, all denied
	close(stop)
	wg.Wait()
	var waits, requests int64
	for _, p := range ps {
		s := p.SyncStats()
		waits, requests = waits+s.LeaseWaits, requests+s.LeaseRequests
	}
	closeAll(t, ps, 10*time.Second)
	if got := allowed.Load(); got != 3000 {
		t.Errorf("the fleet allowed %d tokens on a shared budget of 3,000", got)
	}
	spent, held := cp.capSpend("acme", "budget")
	if spent.String() != "3" {
		t.Errorf("the server committed %s runes of the cap, want exactly 3", spent)
	}
	t.Logf("3 instances (9:1:1 goroutines) on a shared org cap of 3 runes: allowed %d tokens, committed %s runes (key %s); %d lease requests, %d calls waited",
		allowed.Load(), spent, held.Key, requests, waits)

	// A reset on the control plane starts the budget afresh for a new instance.
	code, data := cp.do(http.MethodPost, "/v1/environments/production/customers/acme/caps/budget/reset", cp.admin, nil)
	var reset wire.CustomerCap
	cp.decode(code, http.StatusOK, data, "reset cap", &reset)
	if reset.Key == held.Key {
		t.Fatalf("reset kept the key %s", reset.Key)
	}
	p := connectSDK(t, a.URL, cp.sdk, sdkLog)
	if ok, err := p.Allow(ctx, "bob", "chat", 2000); !ok || err != nil {
		t.Fatalf("after the reset: %v %v", ok, err)
	}
	if ok, _ := p.Allow(ctx, "bob", "chat", 1001); ok {
		t.Error("past the budget after the reset")
	}
	closeAll(t, []*limitr.Policy{p}, 10*time.Second)
	if spent, _ := cp.capSpend("acme", "budget"); spent.String() != "2" {
		t.Errorf("after the reset the server counts %s runes, want 2", spent)
	}
}

// TestCapLeaseOfADeadInstanceReturns: an instance holding most of an org budget's
// allowance dies (its connection is cut for good, without Close). The other instance
// is held to what is left until the dead one's cap lease expires, then gets its unused
// part; the server ends at the budget exactly.
func TestCapLeaseOfADeadInstanceReturns(t *testing.T) {
	const ttl = 2 * time.Second
	a, cp, proxy, sdkLog := leaseFaultStack(t, ttl)
	cp.orgBudget("1") // 1,000 tokens
	ctx := context.Background()
	doomed := connectSDK(t, "http://"+proxy.Addr(), cp.sdk, sdkLog, limitr.WithLeaseHorizon(time.Hour))
	other := connectSDK(t, a.URL, cp.sdk, sdkLog)
	for range 100 {
		if ok, err := doomed.Allow(ctx, "alice", "chat", 1); !ok || err != nil {
			t.Fatalf("doomed instance: %v, %v", ok, err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	waitFor(t, 5*time.Second, "the doomed instance's use to be committed", func() bool {
		spent, _ := cp.capSpend("acme", "budget")
		return spent.String() == "0.1"
	})
	proxy.Down()
	killed := time.Now()
	var allowed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { hammerOn(ctx, t, other, "bob", "chat", stop, &allowed) })
	time.Sleep(ttl / 2)
	before := allowed.Load()
	waitFor(t, 3*ttl, "the other instance to spend the budget", func() bool { return 100+allowed.Load() >= 1000 })
	close(stop)
	wg.Wait()
	closeAll(t, []*limitr.Policy{other}, 10*time.Second)
	if before >= 900 {
		t.Errorf("within half the TTL the other instance got %d: the dead instance's cap lease was not kept for it", before)
	}
	if got := 100 + allowed.Load(); got != 1000 {
		t.Errorf("allowed %d tokens in all, want 1000", got)
	}
	if spent, _ := cp.capSpend("acme", "budget"); spent.String() != "1" {
		t.Errorf("committed %s runes, want exactly 1", spent)
	}
	t.Logf("dead instance held part of a 1-rune budget: the other got %d tokens in the first %s, the rest %s after the kill (TTL %s)",
		before, ttl/2, time.Since(killed).Round(10*time.Millisecond), ttl)
}
