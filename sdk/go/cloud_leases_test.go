package limitr_test

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dec "github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/wire"
	limitr "github.com/limitr/limitr/sdk/go"
)

// fakeLeases is the fake control plane's allowance leases, with the server's
// accounting: committed usage plus every live lease's uncommitted part never passes
// the limit. Guarded by fakeCP.mu.
type fakeLeases struct {
	on      bool
	down    bool // answer 503 while set
	ttl     time.Duration
	rows    map[fakeLeaseKey]*fakeLease
	returns int
}

type fakeLeaseKey struct {
	meter    fakeMeterKey
	instance string
}

type fakeLease struct {
	granted, committed, used dec.Dec
	expires                  time.Time
}

func (l *fakeLeases) commit(instance string, d wire.UsageDelta) {
	r := l.rows[fakeLeaseKey{fakeMeterKey{d.Customer, d.Entitlement, d.PeriodStart.UTC()}, instance}]
	if r != nil {
		r.committed, _ = r.committed.Add(dec.MustParse(d.Units))
	}
}

func (f *fakeCP) postLeases(w http.ResponseWriter, r *http.Request) {
	var req wire.LeaseRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		problemReply(w, http.StatusBadRequest, err.Error())
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case !f.leases.on:
		problemReply(w, http.StatusNotFound, "no such route")
		return
	case f.leases.down:
		problemReply(w, http.StatusServiceUnavailable, "database unavailable")
		return
	}
	if f.leases.rows == nil {
		f.leases.rows = map[fakeLeaseKey]*fakeLease{}
	}
	now := time.Now()
	reply := wire.LeaseReply{TTLMillis: f.leases.ttl.Milliseconds()}
	for _, a := range req.Leases {
		m := fakeMeterKey{a.Customer, a.Entitlement, a.PeriodStart.UTC()}
		u := dec.Zero
		if tot := f.totals[m]; tot != nil {
			u = tot.units
		}
		if a.Cap != "" {
			m = capMeterKey(a.Customer, a.Cap, a.PeriodStart)
			if v, ok := f.capUse[m]; ok {
				u = v
			}
		}
		var c dec.Calc
		reserved := dec.Zero
		for k, row := range f.leases.rows {
			if k.meter != m || k.instance == req.InstanceID {
				continue
			}
			if now.Before(row.expires) {
				reserved = c.Add(reserved, dec.Max(dec.Zero, c.Sub(row.granted, row.committed)))
			} else {
				reserved = c.Add(reserved, dec.Max(dec.Zero, c.Sub(row.used, row.committed)))
			}
		}
		own := f.leases.rows[fakeLeaseKey{m, req.InstanceID}]
		if own == nil {
			own = &fakeLease{granted: dec.Zero, committed: dec.Zero, used: dec.Zero}
			f.leases.rows[fakeLeaseKey{m, req.InstanceID}] = own
		}
		own.used = dec.Max(own.used, dec.MustParse(a.Used))
		base := own.used
		if now.Before(own.expires) {
			base = own.granted
		}
		maxGranted := c.Add(c.Sub(c.Sub(dec.MustParse(a.Limit), u), reserved), own.committed)
		own.granted = dec.Max(base, dec.Min(dec.MustParse(a.Target), maxGranted))
		if a.Need != "" && c.Sub(own.granted, own.used).Cmp(dec.MustParse(a.Need)) < 0 {
			own.granted = own.used // the instance gave its rest back
		}
		own.expires = now.Add(f.leases.ttl)
		reply.Leases = append(reply.Leases, wire.LeaseGrant{Customer: a.Customer, Entitlement: a.Entitlement, Cap: a.Cap, PeriodStart: a.PeriodStart,
			Granted: own.granted.String(), Committed: own.committed.String(), Available: dec.Max(dec.Zero, c.Sub(maxGranted, own.granted)).String()})
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(reply)
}

func (f *fakeCP) returnLeases(w http.ResponseWriter, r *http.Request) {
	var req wire.LeaseReturn
	_ = json.NewDecoder(r.Body).Decode(&req)
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.leases.on {
		problemReply(w, http.StatusNotFound, "no such route")
		return
	}
	for k := range f.leases.rows {
		if k.instance == req.InstanceID {
			delete(f.leases.rows, k)
		}
	}
	f.leases.returns++
	w.WriteHeader(http.StatusNoContent)
}

func (f *fakeCP) enableLeases(ttl time.Duration) {
	f.mu.Lock()
	f.leases.on, f.leases.ttl = true, ttl
	f.mu.Unlock()
}

func (f *fakeCP) committedUnits(customer string) float64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	var sum float64
	for k, tot := range f.totals {
		if k.customer == customer {
			sum += dec.Float64(tot.units)
		}
	}
	return sum
}

// Three instances hammer one hard limit of 100 in fleet mode Exact: the fleet commits
// exactly 100, never more, and the calls past it are denied.
func TestCloudLeasesKeepTheLimitExactly(t *testing.T) {
	f := newFakeCP(t, cloudPolicy("100"))
	f.enableLeases(5 * time.Second)
	f.addCustomer("c", "free")
	ps := []*limitr.Policy{connect(t, f), connect(t, f), connect(t, f)}
	ctx := context.Background()
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Go(func() {
			denials := 0
			for denials < 20 {
				ok, err := p.Allow(ctx, "c", "api", 1)
				if err != nil {
					t.Error(err)
					return
				}
				if ok {
					allowed.Add(1)
					denials = 0
				} else {
					denials++
					time.Sleep(5 * time.Millisecond)
				}
			}
		})
	}
	wg.Wait()
	var waits int64
	for _, p := range ps {
		waits += p.SyncStats().LeaseWaits
		closeNow(t, p)
	}
	if got := allowed.Load(); got != 100 {
		t.Errorf("the fleet allowed %d calls on a limit of 100", got)
	}
	if got := f.committedUnits("c"); got != 100 {
		t.Errorf("committed %v units, want exactly 100", got)
	}
	if waits == 0 {
		t.Error("no call waited for a lease")
	}
	f.mu.Lock()
	returns, rows := f.leases.returns, len(f.leases.rows)
	f.mu.Unlock()
	if returns != 3 || rows != 0 {
		t.Errorf("Close returned leases %d times, %d rows left; want 3 and 0", returns, rows)
	}
}

// The control plane stops answering: an instance spends what it holds, then denies
// (the default) or allows a bounded amount more.
func TestCloudLeasesUnreachable(t *testing.T) {
	for _, tc := range []struct {
		name  string
		opts  []limitr.CloudOption
		extra int
	}{
		{"deny", nil, 0},
		{"allow bounded", []limitr.CloudOption{limitr.WithUnreachable(limitr.AllowBoundedWhenUnreachable(3))}, 3},
	} {
		f := newFakeCP(t, cloudPolicy("100"))
		f.enableLeases(5 * time.Second)
		f.addCustomer("c", "free")
		p := connect(t, f, append(tc.opts, limitr.WithLeaseHorizon(time.Millisecond))...)
		ctx := context.Background()
		if ok, err := p.Allow(ctx, "c", "api", 10); !ok || err != nil {
			t.Fatalf("%s: first call: %v, %v", tc.name, ok, err)
		}
		f.mu.Lock()
		f.leases.down = true
		f.mu.Unlock()
		n := 0
		for range 50 {
			if ok, _ := p.Allow(ctx, "c", "api", 1); ok {
				n++
			}
		}
		if n != tc.extra {
			t.Errorf("%s: %d calls allowed past the lease while unreachable, want %d", tc.name, n, tc.extra)
		}
		f.mu.Lock()
		f.leases.down = false
		f.mu.Unlock()
		time.Sleep(200 * time.Millisecond) // the deny lasts until the retry time
		if ok, err := p.Allow(ctx, "c", "api", 1); !ok || err != nil {
			t.Errorf("%s: back online: %v, %v", tc.name, ok, err)
		}
	}
}

// A control plane without leases (an older one): the SDK says so and keeps hard limits
// Bounded, as before.
func TestCloudLeasesUnsupported(t *testing.T) {
	f := newFakeCP(t, cloudPolicy("5"))
	f.addCustomer("c", "free")
	p := connect(t, f)
	ctx := context.Background()
	for i := range 5 {
		if ok, err := p.Allow(ctx, "c", "api", 1); !ok || err != nil {
			t.Fatalf("call %d: %v, %v", i+1, ok, err)
		}
	}
	if ok, _ := p.Allow(ctx, "c", "api", 1); ok {
		t.Error("past the limit")
	}
	if s := p.SyncStats(); !s.LeasesUnsupported {
		t.Errorf("stats %+v", s)
	}
}

// WithFleetMode(Bounded) never asks.
func TestCloudFleetModeBounded(t *testing.T) {
	f := newFakeCP(t, cloudPolicy("5"))
	f.enableLeases(5 * time.Second)
	f.addCustomer("c", "free")
	p := connect(t, f, limitr.WithFleetMode(limitr.Bounded))
	for range 5 {
		if ok, _ := p.Allow(context.Background(), "c", "api", 1); !ok {
			t.Fatal("denied inside the limit")
		}
	}
	if s := p.SyncStats(); s.LeaseRequests != 0 {
		t.Errorf("Bounded asked for %d leases", s.LeaseRequests)
	}
}

// BenchmarkCloudAllowLeased: a warm Allow on a hard limit in cloud mode, in fleet mode
// Bounded and in mode Exact inside a lease (the lease is large, so no call waits):
// leases cost the hot path a comparison and an addition, no network call and no
// allocation.
func BenchmarkCloudAllowLeased(b *testing.B) {
	for _, tc := range []struct {
		name string
		mode limitr.FleetMode
	}{{"bounded", limitr.Bounded}, {"exact", limitr.Exact}} {
		b.Run(tc.name, func(b *testing.B) {
			f := newFakeCP(b, cloudPolicy("1000000000000"))
			f.enableLeases(time.Hour)
			f.addCustomer("u", "free")
			p := connect(b, f, limitr.WithFleetMode(tc.mode), limitr.WithLeaseHorizon(time.Hour), limitr.WithEventForwarding(false))
			ctx := context.Background()
			for range 1000 { // a rate for the lease to be sized from
				if ok, err := p.Allow(ctx, "u", "api", 1); !ok || err != nil {
					b.Fatal(ok, err)
				}
			}
			b.ReportAllocs()
			for b.Loop() {
				if ok, _ := p.Allow(ctx, "u", "api", 1); !ok {
					b.Fatal("denied")
				}
			}
			if s := p.SyncStats(); tc.mode == limitr.Exact && s.LeaseRequests == 0 {
				b.Fatal("no lease was asked for")
			}
		})
	}
}
