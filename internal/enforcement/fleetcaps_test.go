package enforcement

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/policies"
	"github.com/limitr/limitr/internal/policies/doctree"
)

const fleetCapPolicy = `{"policy": {
  "credits": {"tok": {}},
  "plans": {"p": {"default": true, "entitlements": {
    "ai": {"limit": {"credit": "tok", "mode": "soft", "value": 1000000}},
    "gov": {"limit": {"credit": "tok", "value": 1000000, "governor_enabled": true, "governor_capacity": 10, "governor_refill_rate": 0.000001}},
    "hard": {"limit": {"credit": "tok", "value": 100}}
  }}}}}`

type fleetCapEnv struct {
	t   *testing.T
	e   *Engine
	now *time.Time
	low []LeaseKey
}

func newFleetCapEnv(t *testing.T, exact bool) *fleetCapEnv {
	t.Helper()
	p, err := policies.Load([]byte(fleetCapPolicy), doctree.FormatJSON)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	env := &fleetCapEnv{t: t, now: &now}
	env.e, err = New(p, WithClock(func() time.Time { return *env.now }), WithUsageRecording(),
		WithLeases(LeaseOptions{Exact: exact, Low: func(k LeaseKey) { env.low = append(env.low, k) }}))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := env.e.CreateCustomer(ctx, CustomerSpec{ID: "org"}); err != nil {
		t.Fatal(err)
	}
	if _, err := env.e.CreateCustomer(ctx, CustomerSpec{ID: "u1", Refs: []string{"org"}, RefsSet: true}); err != nil {
		t.Fatal(err)
	}
	return env
}

// orgCap is a shared org budget of 50 tok held by the control plane, 20 of it already
// committed by the fleet in the current period.
func (f *fleetCapEnv) applyOrgCap(committed int64) {
	f.t.Helper()
	started := f.now.Add(-time.Hour)
	fc := FleetCap{Cap: Cap{ID: "budget", Credit: "tok", Value: 50, Shared: true, Key: "cap_k1", Started: started, Created: started},
		Ceiling: num.FromInt(50), Committed: []CapCommitted{{PeriodStart: started, Units: num.FromInt(committed)}}}
	if err := f.e.ApplyCaps(context.Background(), "org", []FleetCap{fc}); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fleetCapEnv) allow(ent string, n int64) (bool, error) {
	return f.e.Allow(context.Background(), Call{Customer: "u1", Entitlement: ent, Amount: num.FromInt(n)})
}

func (f *fleetCapEnv) meter() float64 {
	f.t.Helper()
	cp, err := f.e.CustomerCap(context.Background(), "org", "budget")
	if err != nil {
		f.t.Fatal(err)
	}
	return cp.MeterValue
}

// Bounded (no cap leases): a held cap's meter is the fleet's committed use plus this
// instance's, and the cap denies past its ceiling.
func TestHeldCapCountsTheFleet(t *testing.T) {
	f := newFleetCapEnv(t, false)
	f.applyOrgCap(20)
	if got := f.meter(); got != 20 {
		t.Fatalf("meter after apply = %v, want 20 (committed)", got)
	}
	if ok, err := f.allow("ai", 25); !ok || err != nil {
		t.Fatalf("25 within 50-20: %v %v", ok, err)
	}
	if ok, _ := f.allow("ai", 6); ok {
		t.Fatal("20+25+6 > 50 allowed")
	}
	// Re-applying (a refresh from the control plane) keeps this instance's undrained use.
	f.applyOrgCap(20)
	if got := f.meter(); got != 45 {
		t.Fatalf("meter after refresh = %v, want 45 (20 committed + 25 pending here)", got)
	}
	// The drain carries the use as a cap use of the cap's key and period.
	_, _, draws := f.e.DrainUsageAll(context.Background(), 0)
	var found bool
	for _, d := range draws {
		if d.Cap {
			found = true
			if d.Customer != "org" || d.GrantID != "cap_k1" || d.Units.String() != "25" || !d.PeriodStart.Equal(f.now.Add(-time.Hour)) {
				t.Fatalf("cap use = %+v", d)
			}
		}
	}
	if !found {
		t.Fatalf("no cap use drained: %+v", draws)
	}
	// In flight it still counts; once committed the control plane's figure has it.
	f.applyOrgCap(20)
	if got := f.meter(); got != 45 {
		t.Fatalf("meter with the use in flight = %v, want 45", got)
	}
	// A new key (the cap was reset on the control plane) starts from zero.
	started := f.now.Add(-time.Minute)
	fc := FleetCap{Cap: Cap{ID: "budget", Credit: "tok", Value: 50, Shared: true, Key: "cap_k2", Started: started}, Ceiling: num.FromInt(50)}
	if err := f.e.ApplyCaps(context.Background(), "org", []FleetCap{fc}); err != nil {
		t.Fatal(err)
	}
	if got := f.meter(); got != 0 {
		t.Fatalf("meter after reset = %v, want 0", got)
	}
	if err := f.e.ApplyCaps(context.Background(), "org", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := f.e.CustomerCap(context.Background(), "org", "budget"); !errors.Is(err, ErrUnknownCap) {
		t.Fatalf("cap removed by the control plane still held: %v", err)
	}
}

// Exact: a call must fit this instance's lease of the cap; it names the cap's lease
// when it needs one, is denied (cap-limit) when the fleet has nothing left, and its use
// counts against the lease.
func TestHeldCapLease(t *testing.T) {
	ctx := context.Background()
	f := newFleetCapEnv(t, true)
	f.applyOrgCap(20)
	var events []Event
	f.e.AddHandler("h", func(ev Event) { events = append(events, ev) })
	_, err := f.allow("ai", 5)
	var ln *LeaseNeededError
	if !errors.As(err, &ln) || !errors.Is(err, ErrLeaseNeeded) || ln.Key != (LeaseKey{Customer: "org", Cap: "cap_k1"}) || ln.Need.String() != "5" {
		t.Fatalf("want a cap lease needed, got %v", err)
	}
	ask, ok, err := f.e.LeaseAsk(ctx, ln.Key, ln.Need, time.Second)
	if err != nil || !ok {
		t.Fatalf("LeaseAsk: %v %v", ok, err)
	}
	if ask.Cap != "cap_k1" || ask.Owner != "org" || ask.Limit.String() != "50" || ask.Need.String() != "5" || ask.Target.String() != "5" ||
		!ask.PeriodStart.Equal(f.now.Add(-time.Hour)) {
		t.Fatalf("ask = %+v", ask)
	}
	grant := func(granted int64, need int64) {
		t.Helper()
		if err := f.e.ApplyLease(ctx, LeaseGrant{Owner: "org", Cap: "cap_k1", PeriodStart: ask.PeriodStart, Granted: num.FromInt(granted),
			Expires: f.now.Add(10 * time.Second), Need: num.FromInt(need), Recheck: time.Second}); err != nil {
			t.Fatal(err)
		}
	}
	grant(12, 5)
	for i := 0; i < 2; i++ {
		if ok, err := f.allow("ai", 5); !ok || err != nil {
			t.Fatalf("call %d inside the lease: %v %v", i, ok, err)
		}
	}
	if len(f.low) == 0 || f.low[len(f.low)-1] != (LeaseKey{Customer: "org", Cap: "cap_k1"}) {
		t.Fatalf("running low asked for no renewal: %v", f.low)
	}
	if _, err := f.allow("ai", 5); !errors.As(err, &ln) {
		t.Fatalf("past the lease (10 of 12 used): %v", err)
	}
	ask, _, _ = f.e.LeaseAsk(ctx, ln.Key, ln.Need, time.Second)
	if ask.Used.String() != "10" || ask.Need.String() != "5" {
		t.Fatalf("renewal ask = %+v", ask)
	}
	// The fleet has nothing more: the grant stays at what was used, calls are denied
	// by the cap until the recheck.
	grant(10, 5)
	events = nil
	if ok, err := f.allow("ai", 5); ok || err != nil {
		t.Fatalf("with the fleet's cap in use: %v %v", ok, err)
	}
	if len(events) != 1 || events[0].Type != EventCapLimit || events[0].CapID != "budget" {
		t.Fatalf("events = %+v", events)
	}
	// Calls that need nothing of the cap pass (the hard entitlement, in another credit
	// would too); a cap with an unrelated scope is not asked for.
	f.now = new(f.now.Add(2 * time.Second))
	if _, err := f.allow("ai", 5); !errors.As(err, &ln) {
		t.Fatalf("after the recheck the call asks again: %v", err)
	}
}

// A held cap's lease is of the cap's current period: a cap that resets asks afresh.
func TestHeldCapLeasePeriod(t *testing.T) {
	ctx := context.Background()
	f := newFleetCapEnv(t, true)
	started := f.now.Add(-30 * time.Minute)
	fc := FleetCap{Cap: Cap{ID: "budget", Credit: "tok", Value: 50, Shared: true, Resets: true, ResetInc: "1h", Key: "cap_k1", Started: started},
		Ceiling: num.FromInt(50)}
	if err := f.e.ApplyCaps(ctx, "org", []FleetCap{fc}); err != nil {
		t.Fatal(err)
	}
	if err := f.e.ApplyLease(ctx, LeaseGrant{Owner: "org", Cap: "cap_k1", PeriodStart: started, Granted: num.FromInt(50),
		Expires: f.now.Add(time.Hour), Recheck: time.Second}); err != nil {
		t.Fatal(err)
	}
	if ok, err := f.allow("ai", 50); !ok || err != nil {
		t.Fatalf("the whole cap: %v %v", ok, err)
	}
	f.now = new(f.now.Add(31 * time.Minute))
	_, err := f.allow("ai", 1)
	var ln *LeaseNeededError
	if !errors.As(err, &ln) {
		t.Fatalf("a new cap period needs a new lease: %v", err)
	}
	ask, _, _ := f.e.LeaseAsk(ctx, ln.Key, ln.Need, time.Second)
	if !ask.PeriodStart.Equal(started.Add(time.Hour)) || !ask.Used.IsZero() {
		t.Fatalf("ask in the new period = %+v", ask)
	}
}

// Exact: a governor's bucket is shared by the instances holding the meter's lease.
func TestGovernorSharedByTheFleet(t *testing.T) {
	ctx := context.Background()
	f := newFleetCapEnv(t, true)
	_, err := f.allow("gov", 1)
	if !errors.Is(err, ErrLeaseNeeded) {
		t.Fatalf("want a lease needed: %v", err)
	}
	ask, _, _ := f.e.LeaseAsk(ctx, LeaseKey{Customer: "u1", Entitlement: "gov"}, num.One, time.Second)
	if err := f.e.ApplyLease(ctx, LeaseGrant{Owner: ask.Owner, Entitlement: "gov", PeriodStart: ask.PeriodStart, Granted: num.FromInt(1000),
		Expires: f.now.Add(time.Hour), Remaining: num.FromInt(1000000), Holders: 5, Committed: num.Zero}); err != nil {
		t.Fatal(err)
	}
	// Capacity 10 over 5 instances: 2 each.
	if ok, err := f.allow("gov", 2); !ok || err != nil {
		t.Fatalf("this instance's share: %v %v", ok, err)
	}
	if ok, err := f.allow("gov", 1); ok || err != nil {
		t.Fatalf("past this instance's share of the bucket: %v %v", ok, err)
	}
}

// Exact: holds take room in the meter's lease.
func TestHoldsTakeLeaseRoom(t *testing.T) {
	ctx := context.Background()
	f := newFleetCapEnv(t, true)
	if _, err := f.e.Reserve(ctx, "u1", "hard", num.FromInt(4), ReserveOptions{}, Call{}); !errors.Is(err, ErrLeaseNeeded) {
		t.Fatalf("a hold needs a lease: %v", err)
	}
	ask, _, _ := f.e.LeaseAsk(ctx, LeaseKey{Customer: "u1", Entitlement: "hard"}, num.FromInt(4), time.Second)
	if err := f.e.ApplyLease(ctx, LeaseGrant{Owner: ask.Owner, Entitlement: "hard", PeriodStart: ask.PeriodStart, Granted: num.FromInt(10),
		Expires: f.now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.e.Reserve(ctx, "u1", "hard", num.FromInt(4), ReserveOptions{}, Call{}); err != nil {
		t.Fatal(err)
	}
	if ok, err := f.allow("hard", 6); !ok || err != nil {
		t.Fatalf("4 held + 6 = the lease: %v %v", ok, err)
	}
	if _, err := f.allow("hard", 1); !errors.Is(err, ErrLeaseNeeded) {
		t.Fatalf("the hold's room is taken: %v", err)
	}
	// Asking while holding asks for the held room too.
	ask, _, _ = f.e.LeaseAsk(ctx, LeaseKey{Customer: "u1", Entitlement: "hard"}, num.One, time.Second)
	if ask.Need.String() != "5" {
		t.Fatalf("need with 4 held = %v, want 5", ask.Need)
	}
}

// A call inside this instance's lease of a held cap makes no network call (it never
// leaves the engine) and allocates nothing.
func TestHeldCapLeaseAllocs(t *testing.T) {
	ctx := context.Background()
	f := newFleetCapEnv(t, true)
	f.applyOrgCap(0)
	started := f.now.Add(-time.Hour)
	if err := f.e.ApplyLease(ctx, LeaseGrant{Owner: "org", Cap: "cap_k1", PeriodStart: started, Granted: num.FromInt(50),
		Expires: f.now.Add(time.Hour), Recheck: time.Second}); err != nil {
		t.Fatal(err)
	}
	call := Call{Customer: "u1", Entitlement: "ai", Amount: num.FromInt(1), NoEvents: true}
	var failed error
	allocs := testing.AllocsPerRun(40, func() {
		if ok, err := f.e.Decide(ctx, &call, true); !ok || err != nil {
			failed = errors.Join(failed, err, errors.New("denied"))
		}
	})
	if failed != nil {
		t.Fatal(failed)
	}
	if allocs != 0 {
		t.Errorf("a call inside a cap lease allocates %v times", allocs)
	}
}
