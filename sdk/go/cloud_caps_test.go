package limitr_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dec "github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/wire"
	limitr "github.com/limitr/limitr/sdk/go"
)

// ---- the fake control plane's caps (guarded by fakeCP.mu) ----

func capMeterKey(holder, key string, period time.Time) fakeMeterKey {
	return fakeMeterKey{holder, "cap:" + key, period.UTC()}
}

func (f *fakeCP) putCap(w http.ResponseWriter, r *http.Request, rec *fakeRecord) {
	var req wire.CapRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Value == nil {
		problemReply(w, http.StatusUnprocessableEntity, "invalid cap", "value", "required")
		return
	}
	id := r.PathValue("cap")
	now := time.Now().UTC().Truncate(time.Microsecond)
	cp := wire.CustomerCap{ID: id, Credit: req.Credit, Value: *req.Value, Shared: req.Shared, SharedWith: req.SharedWith,
		Scope: req.Scope, ObserveOnly: req.ObserveOnly, Resets: req.Resets, ResetInc: req.ResetInc, ResetSch: req.ResetSch,
		CreatedAt: now, ResetAt: now, Usage: []wire.CapUsage{}}
	if cp.Credit == "" {
		cp.Credit = "rune"
	}
	status := http.StatusCreated
	for i := range rec.Caps {
		if rec.Caps[i].ID == id {
			cp.Key, cp.CreatedAt, cp.ResetAt, cp.Usage = rec.Caps[i].Key, rec.Caps[i].CreatedAt, rec.Caps[i].ResetAt, rec.Caps[i].Usage
			rec.Caps[i], status = cp, http.StatusOK
		}
	}
	if status == http.StatusCreated {
		f.grantSeq++
		cp.Key = "cap_" + strconv.Itoa(f.grantSeq)
		rec.Caps = append(rec.Caps, cp)
	}
	f.changeLocked(rec, map[string]any{"op": "cap"})
	reply(w, status, cp)
}

func (f *fakeCP) capIndex(w http.ResponseWriter, r *http.Request, rec *fakeRecord) int {
	for i := range rec.Caps {
		if rec.Caps[i].ID == r.PathValue("cap") {
			return i
		}
	}
	problemReply(w, http.StatusNotFound, "no such cap", "cap", "unknown")
	return -1
}

func (f *fakeCP) resetCap(w http.ResponseWriter, r *http.Request, rec *fakeRecord) {
	i := f.capIndex(w, r, rec)
	if i < 0 {
		return
	}
	f.grantSeq++
	rec.Caps[i].Key = "cap_" + strconv.Itoa(f.grantSeq)
	rec.Caps[i].ResetAt, rec.Caps[i].Usage = time.Now().UTC().Truncate(time.Microsecond), []wire.CapUsage{}
	f.changeLocked(rec, map[string]any{"op": "cap"})
	reply(w, http.StatusOK, rec.Caps[i])
}

func (f *fakeCP) deleteCap(w http.ResponseWriter, r *http.Request, rec *fakeRecord) {
	i := f.capIndex(w, r, rec)
	if i < 0 {
		return
	}
	rec.Caps = append(rec.Caps[:i], rec.Caps[i+1:]...)
	f.changeLocked(rec, map[string]any{"op": "cap"})
	w.WriteHeader(http.StatusNoContent)
}

// commitCapUse adds a batch's cap use to the cap's committed total (and the holder's
// record), and to the instance's lease of it when the batch is leased.
func (f *fakeCP) commitCapUse(instance string, leased bool, u wire.CapUse) {
	k := capMeterKey(u.Customer, u.CapKey, u.PeriodStart)
	units := dec.MustParse(u.Units)
	cur, ok := f.capUse[k]
	if !ok {
		cur = dec.Zero
	}
	f.capUse[k], _ = cur.Add(units)
	if leased {
		if row := f.leases.rows[fakeLeaseKey{k, instance}]; row != nil {
			row.committed, _ = row.committed.Add(units)
		}
	}
	if rec := f.lookupLocked(u.Customer); rec != nil {
		for i := range rec.Caps {
			if rec.Caps[i].Key == u.CapKey {
				rec.Caps[i].Usage = []wire.CapUsage{{PeriodStart: k.period, Units: f.capUse[k].String()}}
			}
		}
	}
}

func (f *fakeCP) capCommitted(holder string) float64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	var sum float64
	for k, v := range f.capUse {
		if k.customer == holder {
			sum += dec.Float64(v)
		}
	}
	return sum
}

// capPolicy has a soft entitlement: only a cap stops its calls.
const capPolicy = `{"policy": {
  "credits": {"req": {}},
  "plans": {"free": {"default": true, "entitlements": {"api": {"limit": {"credit": "req", "mode": "soft", "value": 1000000}}}}}}}`

func orgWithMembers(t *testing.T, f *fakeCP, members ...string) {
	t.Helper()
	f.addCustomer("org", "free")
	f.mutate("org", "upsert", func(rec *fakeRecord, _ map[string]any) { rec.Type = "org" })
	for _, m := range members {
		f.addCustomer(m, "free")
		f.mutate(m, "upsert", func(rec *fakeRecord, _ map[string]any) { rec.Refs = []string{"org"} })
	}
}

// Three instances spend one shared org budget of 300 in fleet mode Exact: together
// they allow exactly 300 and the control plane commits exactly 300.
func TestCloudSharedCapKeptByTheFleet(t *testing.T) {
	f := newFakeCP(t, capPolicy)
	f.enableLeases(5 * time.Second)
	orgWithMembers(t, f, "u1", "u2", "u3")
	ps := []*limitr.Policy{connect(t, f), connect(t, f), connect(t, f)}
	ctx := context.Background()
	if err := ps[0].AddCustomerCap(ctx, "org", limitr.Cap{ID: "budget", Credit: "req", Value: 300, Shared: true}); err != nil {
		t.Fatal(err)
	}
	if err := ps[0].AddCustomerCap(ctx, "org", limitr.Cap{ID: "budget", Credit: "req", Value: 1}); !errors.Is(err, limitr.ErrCapExists) {
		t.Fatalf("adding it again: %v, want ErrCapExists", err)
	}
	for _, p := range ps[1:] {
		eventually(t, "the cap on every instance", func() bool {
			cp, err := p.CustomerCap(ctx, "org", "budget")
			return err == nil && cp.Value == 300 && cp.Key != ""
		})
	}
	var allowed atomic.Int64
	var own [3]atomic.Int64
	var wg sync.WaitGroup
	for i, p := range ps {
		user := "u" + strconv.Itoa(i+1)
		wg.Go(func() {
			denials := 0
			for denials < 20 {
				ok, err := p.Allow(ctx, user, "api", 1)
				if err != nil {
					t.Error(err)
					return
				}
				if ok {
					allowed.Add(1)
					own[i].Add(1)
					denials = 0
				} else {
					denials++
					time.Sleep(5 * time.Millisecond)
				}
			}
		})
	}
	wg.Wait()
	eventually(t, "the cap's use committed", func() bool { return f.capCommitted("org") >= float64(allowed.Load()) })
	if got := allowed.Load(); got != 300 {
		t.Errorf("the fleet allowed %d calls on a shared cap of 300", got)
	}
	if got := f.capCommitted("org"); got != 300 {
		t.Errorf("committed %v of the cap, want exactly 300", got)
	}
	t.Logf("per instance: %d %d %d", own[0].Load(), own[1].Load(), own[2].Load())
	// Every instance's meter of the cap counts its own use and what it has read of
	// the others' (re-read after it sends usage), never more than the fleet's.
	for i, p := range ps {
		cp, err := p.CustomerCap(ctx, "org", "budget")
		if err != nil || cp.MeterValue < float64(own[i].Load()) || cp.MeterValue > 300 {
			t.Errorf("instance %d: meter %v (err %v), its own use %d", i, cp.MeterValue, err, own[i].Load())
		}
	}
	// A reset on the control plane starts the cap afresh on every instance.
	if err := ps[1].ResetCustomerCap(ctx, "org", "budget"); err != nil {
		t.Fatal(err)
	}
	for _, p := range ps {
		eventually(t, "the reset on every instance", func() bool {
			cp, err := p.CustomerCap(ctx, "org", "budget")
			return err == nil && cp.MeterValue == 0
		})
	}
	if ok, err := ps[2].Allow(ctx, "u3", "api", 10); !ok || err != nil {
		t.Fatalf("after the reset: %v %v", ok, err)
	}
	if err := ps[2].RemoveCustomerCap(ctx, "org", "budget"); err != nil {
		t.Fatal(err)
	}
	for _, p := range ps {
		eventually(t, "the removal on every instance", func() bool {
			_, err := p.CustomerCap(ctx, "org", "budget")
			return errors.Is(err, limitr.ErrUnknownCap)
		})
	}
	if err := ps[0].RemoveCustomerCap(ctx, "org", "budget"); !errors.Is(err, limitr.ErrUnknownCap) {
		t.Fatalf("removing it again: %v", err)
	}
}

// Bounded: a held cap is kept against the committed total each instance knows of.
func TestCloudHeldCapBounded(t *testing.T) {
	f := newFakeCP(t, capPolicy)
	f.enableLeases(5 * time.Second)
	orgWithMembers(t, f, "u1")
	a := connect(t, f, limitr.WithFleetMode(limitr.Bounded))
	b := connect(t, f, limitr.WithFleetMode(limitr.Bounded))
	ctx := context.Background()
	if err := a.AddCustomerCap(ctx, "org", limitr.Cap{ID: "budget", Credit: "req", Value: 50, Shared: true}); err != nil {
		t.Fatal(err)
	}
	if ok, err := a.Allow(ctx, "u1", "api", 40); !ok || err != nil {
		t.Fatalf("40 of 50: %v %v", ok, err)
	}
	eventually(t, "a's use committed", func() bool { return f.capCommitted("org") == 40 })
	eventually(t, "b sees what a committed", func() bool {
		if _, err := b.Customer(ctx, "u1"); err != nil {
			return false
		}
		cp, err := b.CustomerCap(ctx, "org", "budget")
		return err == nil && cp.MeterValue == 40
	})
	if ok, _ := b.Allow(ctx, "u1", "api", 11); ok {
		t.Error("b allowed past the committed total")
	}
	if ok, err := b.Allow(ctx, "u1", "api", 10); !ok || err != nil {
		t.Errorf("b within the rest: %v %v", ok, err)
	}
	f.mu.Lock()
	rows := len(f.leases.rows)
	f.mu.Unlock()
	if rows != 0 {
		t.Errorf("Bounded leased %d caps", rows)
	}
}

// Fleet mode Exact: a hold takes room in its instance's lease, so the fleet's holds and
// calls together never pass a hard limit.
func TestCloudHoldsTakeFleetAllowance(t *testing.T) {
	f := newFakeCP(t, cloudPolicy("100"))
	f.enableLeases(5 * time.Second)
	f.addCustomer("c", "free")
	a, b := connect(t, f), connect(t, f)
	ctx := context.Background()
	h, err := a.Reserve(ctx, "c", "api", 60)
	if err != nil {
		t.Fatalf("Reserve 60 of 100: %v", err)
	}
	n := 0
	for range 60 {
		if ok, err := b.Allow(ctx, "c", "api", 1); err != nil {
			t.Fatal(err)
		} else if ok {
			n++
		}
	}
	if n != 40 {
		t.Errorf("with 60 held on another instance, %d of 100 were allowed here; want 40", n)
	}
	if _, err := b.Reserve(ctx, "c", "api", 1); !errors.Is(err, limitr.ErrReservationDenied) {
		t.Errorf("a hold past the fleet's allowance: %v, want ErrReservationDenied", err)
	}
	if ok, err := a.Settle(ctx, "c", "api", h, 55); !ok || err != nil {
		t.Fatalf("Settle: %v %v", ok, err)
	}
	eventually(t, "the fleet's usage committed", func() bool { return f.committedUnits("c") == 95 })
}
