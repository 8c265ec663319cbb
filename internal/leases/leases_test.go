package leases_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/limitr/limitr/internal/leases"
	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/platform/pgtest"
	"github.com/limitr/limitr/internal/store"
	"github.com/limitr/limitr/internal/usage"
	"github.com/limitr/limitr/internal/validation"
	"github.com/limitr/limitr/internal/wire"
)

const ttl = 15 * time.Second

type world struct {
	t      *testing.T
	pool   *pgxpool.Pool
	env    store.Environment
	svc    *leases.Service
	usage  *usage.Service
	period time.Time
	now    time.Time
	seq    map[string]int64
}

func newWorld(t *testing.T, customers ...string) *world {
	t.Helper()
	_, pool := pgtest.NewMigrated(t)
	ctx := context.Background()
	ten, err := store.CreateTenant(ctx, pool, "acme-"+uuid.NewString()[:8], "Acme")
	if err != nil {
		t.Fatal(err)
	}
	env, err := store.CreateEnvironment(ctx, pool, ten.ID, "production", true)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Microsecond)
	w := &world{t: t, pool: pool, env: env, svc: leases.NewService(pool, ttl, leases.NewMetrics()),
		usage: usage.NewService(pool, nil, nil, nil), period: time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC),
		now: now, seq: map[string]int64{}}
	w.svc.SetClock(func() time.Time { return w.now })
	for _, id := range customers {
		w.customer(id)
	}
	return w
}

func (w *world) customer(id string, altIDs ...string) {
	w.t.Helper()
	ctx := context.Background()
	c := store.Customer{Customer: wire.Customer{ID: id, Plan: "base", AltIDs: altIDs, BillingAnchor: w.period}}
	if err := pgx.BeginFunc(ctx, w.pool, func(tx pgx.Tx) error {
		if err := store.LockCustomerNames(ctx, tx, w.env.ID, append([]string{id}, altIDs...)...); err != nil {
			return err
		}
		return store.InsertCustomer(ctx, tx, w.env.TenantID, w.env.ID, &c)
	}); err != nil {
		w.t.Fatal(err)
	}
}

func (w *world) ask(customer, limit, target, used string) wire.LeaseAsk {
	return wire.LeaseAsk{Customer: customer, Entitlement: "tokens", PeriodStart: w.period, Limit: limit, Target: target, Used: used}
}

// grant asks for one lease and returns its grant.
func (w *world) grant(instance string, a wire.LeaseAsk) wire.LeaseGrant {
	w.t.Helper()
	r, err := w.svc.Grant(context.Background(), w.env, wire.LeaseRequest{InstanceID: instance, Leases: []wire.LeaseAsk{a}})
	if err != nil {
		w.t.Fatal(err)
	}
	if len(r.Leases) != 1 || r.TTLMillis != ttl.Milliseconds() {
		w.t.Fatalf("reply %+v", r)
	}
	return r.Leases[0]
}

func (w *world) wantGrant(what string, g wire.LeaseGrant, granted, available, committed string) {
	w.t.Helper()
	if g.Error != "" || g.Granted != granted || g.Available != available || g.Committed != committed {
		w.t.Errorf("%s: granted %s available %s committed %s (error %q), want %s %s %s", what, g.Granted, g.Available, g.Committed,
			g.Error, granted, available, committed)
	}
}

// post commits a usage batch of one delta of units for customer from instance.
func (w *world) post(instance, customer, units string, leased bool) wire.UsageAck {
	w.t.Helper()
	w.seq[instance]++
	return w.postSeq(instance, w.seq[instance], customer, units, leased)
}

func (w *world) postSeq(instance string, seq int64, customer, units string, leased bool) wire.UsageAck {
	w.t.Helper()
	ack, err := w.usage.Commit(context.Background(), w.env, &wire.UsageBatch{InstanceID: instance, Sequence: seq, SentAt: time.Now().UTC(),
		Leased: leased, Deltas: []wire.UsageDelta{{Customer: customer, Entitlement: "tokens", Credit: "tok", PeriodStart: w.period,
			Units: units, Overhead: "0", Price: "0", Calls: 1}}})
	if err != nil {
		w.t.Fatal(err)
	}
	return ack
}

// committed is the committed part of instance's lease of customer's meter.
func (w *world) committed(instance, customer string) string {
	w.t.Helper()
	var s string
	if err := w.pool.QueryRow(context.Background(), `select committed::text from fleet_leases where tenant_id = $1 and environment_id = $2
		and customer_id = $3 and instance_id = $4`, w.env.TenantID, w.env.ID, customer, instance).Scan(&s); err != nil {
		w.t.Fatal(err)
	}
	return num.MustParse(s).Trim(0).String()
}

// exposure is U + Σ_live (granted − committed) + Σ_expired max(0, used − committed) of
// customer's meter at the world's time.
func (w *world) exposure(customer string) num.Dec {
	w.t.Helper()
	var s string
	if err := w.pool.QueryRow(context.Background(), `select (
			coalesce((select sum(units) from meter_aggregates where customer_id = $3 and tenant_id = $1 and environment_id = $2 and period_start = $5), 0)
			+ coalesce((select sum(units) from usage_deltas where customer_id = $3 and tenant_id = $1 and environment_id = $2 and period_start = $5
				and aggregated_at is null), 0)
			+ coalesce((select sum(case when expires_at > $4 then greatest(0, granted - committed) else greatest(0, used - committed) end)
				from fleet_leases where customer_id = $3 and tenant_id = $1 and environment_id = $2 and period_start = $5), 0))::text`,
		w.env.TenantID, w.env.ID, customer, w.now, w.period).Scan(&s); err != nil {
		w.t.Fatal(err)
	}
	return num.MustParse(s)
}

func (w *world) wantExposure(customer, limit string) {
	w.t.Helper()
	if got := w.exposure(customer); got.Cmp(num.MustParse(limit)) > 0 {
		w.t.Errorf("exposure of %s is %s, more than the limit %s", customer, got, limit)
	}
}

// Several instances asking for one meter at once never hold more than limit − U
// together, and the last units are granted exactly.
func TestGrantsUpToTheLimitConcurrently(t *testing.T) {
	w := newWorld(t, "c1")
	w.post("seed", "c1", "10", false) // U = 10 committed outside leases
	const limit, step, instances = 100, 7, 8
	var mu sync.Mutex
	held := map[string]num.Dec{}
	var wg sync.WaitGroup
	errs := make(chan error, instances)
	for k := 0; k < instances; k++ {
		wg.Add(1)
		go func(inst string) {
			defer wg.Done()
			granted := num.Zero
			for {
				target, _ := granted.Add(num.FromInt(step))
				r, err := w.svc.Grant(context.Background(), w.env, wire.LeaseRequest{InstanceID: inst,
					Leases: []wire.LeaseAsk{w.ask("c1", fmt.Sprint(limit), target.String(), "0")}})
				if err != nil {
					errs <- err
					return
				}
				g := num.MustParse(r.Leases[0].Granted)
				if g.Cmp(granted) < 0 {
					errs <- fmt.Errorf("%s: grant went down from %s to %s", inst, granted, g)
					return
				}
				if g.Cmp(granted) == 0 {
					mu.Lock()
					held[inst] = g
					mu.Unlock()
					return
				}
				granted = g
			}
		}(fmt.Sprintf("inst-%d", k))
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	total := num.Zero
	partial := 0
	for _, g := range held {
		total, _ = total.Add(g)
		if q, r, _ := g.QuoRem(num.FromInt(step)); !r.IsZero() {
			partial++
			_ = q
		}
	}
	if total.Cmp(num.FromInt(limit-10)) != 0 {
		t.Fatalf("the fleet holds %s, want exactly %d: %v", total, limit-10, held)
	}
	if partial != 1 {
		t.Errorf("%d instances got a partial step, want exactly 1 (the last units): %v", partial, held)
	}
	w.wantExposure("c1", "100")
	// Nothing is left for anyone; an ask bigger than what is left gets exactly that.
	w.wantGrant("a newcomer", w.grant("late", w.ask("c1", "100", "50", "0")), "0", "0", "0")
	if err := w.svc.Return(context.Background(), w.env, "inst-0"); err != nil {
		t.Fatal(err)
	}
	w.wantGrant("a newcomer after a return", w.grant("late", w.ask("c1", "100", "500", "0")), held["inst-0"].String(), "0", "0")
}

// A leased batch moves its units from the lease's outstanding part to U; an unleased
// batch does not touch leases; a batch posted twice counts once.
func TestLeasedUsageCommits(t *testing.T) {
	w := newWorld(t, "c1")
	w.wantGrant("A", w.grant("A", w.ask("c1", "10", "6", "0")), "6", "4", "0")
	if ack := w.post("A", "c1", "4", true); ack.Accepted != 1 || ack.Duplicate {
		t.Fatalf("ack %+v", ack)
	}
	if got := w.committed("A", "c1"); got != "4" {
		t.Fatalf("committed %s, want 4", got)
	}
	// U = 4, A outstanding 6 − 4 = 2: 4 left; A asks for 6 more than it used.
	w.wantGrant("A after its batch", w.grant("A", w.ask("c1", "10", "10", "4")), "10", "0", "4")
	w.wantExposure("c1", "10")
	w.wantGrant("B", w.grant("B", w.ask("c1", "10", "5", "0")), "0", "0", "0")
	// The same batch again: a duplicate, counted once.
	if ack := w.postSeq("A", 1, "c1", "4", true); !ack.Duplicate {
		t.Fatalf("repost: %+v", ack)
	}
	if got := w.committed("A", "c1"); got != "4" {
		t.Fatalf("committed %s after a duplicate, want 4", got)
	}
	// A batch without the flag commits usage, not against the lease.
	w.post("A", "c1", "1", false)
	if got := w.committed("A", "c1"); got != "4" {
		t.Fatalf("committed %s after an unleased batch, want 4", got)
	}
	// Another instance's leased batch does not touch A's lease.
	w.post("B", "c1", "1", true)
	if got := w.committed("A", "c1"); got != "4" {
		t.Fatalf("committed %s after B's batch, want 4", got)
	}
	// A's next leased batch: committed 4 + 6 = 10 = granted; the fleet is at the limit
	// only by usage committed outside leases (2 units), which the limit does not stop.
	w.post("A", "c1", "6", true)
	if got := w.committed("A", "c1"); got != "10" {
		t.Fatalf("committed %s, want 10", got)
	}
	w.wantGrant("A at the end", w.grant("A", w.ask("c1", "10", "12", "10")), "10", "0", "10")
}

// An expired lease's unused part is available to others; its used-but-uncommitted
// part is not; renewing an expired lease starts from what it used.
func TestExpiry(t *testing.T) {
	w := newWorld(t, "c1")
	w.wantGrant("A", w.grant("A", w.ask("c1", "10", "8", "0")), "8", "2", "0")
	w.wantGrant("A renews having used 5", w.grant("A", w.ask("c1", "10", "8", "5")), "8", "2", "0")
	w.wantGrant("B while A lives", w.grant("B", w.ask("c1", "10", "10", "0")), "2", "0", "0")
	w.now = w.now.Add(ttl + time.Second)
	// A expired: its 5 used (not committed) stay reserved, its 3 unused are free. B's
	// lease expired too: it used nothing, so its renewal starts from 0.
	w.wantGrant("B after A expired", w.grant("B", w.ask("c1", "10", "10", "0")), "5", "0", "0")
	w.wantExposure("c1", "10")
	// A renews: from what it used (5), whatever it was granted before.
	w.wantGrant("A renews after expiry", w.grant("A", w.ask("c1", "10", "9", "5")), "5", "0", "0")
	w.wantExposure("c1", "10")
	// A's usage arrives: U = 5, A's outstanding 0; nothing more is free.
	w.post("A", "c1", "5", true)
	w.wantGrant("C", w.grant("C", w.ask("c1", "10", "1", "0")), "0", "0", "0")
	w.wantExposure("c1", "10")
}

// A retried ask grants nothing more; a live grant is never reduced (limit lowered).
func TestRetryAndLowerLimit(t *testing.T) {
	w := newWorld(t, "c1")
	w.wantGrant("A", w.grant("A", w.ask("c1", "10", "4", "0")), "4", "6", "0")
	w.wantGrant("A retried", w.grant("A", w.ask("c1", "10", "4", "0")), "4", "6", "0")
	w.wantGrant("A lower target", w.grant("A", w.ask("c1", "10", "1", "0")), "4", "6", "0")
	w.wantGrant("A with the limit lowered", w.grant("A", w.ask("c1", "2", "6", "1")), "4", "0", "0")
	w.wantGrant("B with the limit lowered", w.grant("B", w.ask("c1", "2", "6", "0")), "0", "0", "0")
	w.wantGrant("B with the limit raised", w.grant("B", w.ask("c1", "20", "6", "0")), "6", "10", "0")
	var lim string
	if err := w.pool.QueryRow(context.Background(), `select lim::text from fleet_leases where instance_id = 'B'`).Scan(&lim); err != nil || lim != "20" {
		t.Errorf("lim %q %v", lim, err)
	}
}

// Return frees every lease of an instance at once, in its environment only.
func TestReturn(t *testing.T) {
	w := newWorld(t, "c1", "c2")
	r, err := w.svc.Grant(context.Background(), w.env, wire.LeaseRequest{InstanceID: "A",
		Leases: []wire.LeaseAsk{w.ask("c2", "10", "10", "0"), w.ask("c1", "10", "6", "0")}})
	if err != nil {
		t.Fatal(err)
	}
	w.wantGrant("A c2", r.Leases[0], "10", "0", "0")
	w.wantGrant("A c1", r.Leases[1], "6", "4", "0")
	w.wantGrant("B c1", w.grant("B", w.ask("c1", "10", "10", "0")), "4", "0", "0")
	if err := w.svc.Return(context.Background(), w.env, "A"); err != nil {
		t.Fatal(err)
	}
	w.wantGrant("C c1 after A's return", w.grant("C", w.ask("c1", "10", "10", "0")), "6", "0", "0")
	w.wantGrant("C c2 after A's return", w.grant("C", w.ask("c2", "10", "10", "0")), "10", "0", "0")
	if err := w.svc.Return(context.Background(), w.env, "no such"); !errors.Is(err, validation.ErrInvalid) {
		t.Errorf("return with a bad instance id: %v", err)
	}
}

// An unknown customer fails its ask only; alt ids name the customer's meter; usage of
// an earlier customer of the id is refused.
func TestCustomers(t *testing.T) {
	w := newWorld(t)
	w.customer("c1", "alt-1")
	created := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	old := w.ask("c1", "10", "1", "0")
	old.CustomerCreatedAt = &created
	r, err := w.svc.Grant(context.Background(), w.env, wire.LeaseRequest{InstanceID: "A",
		Leases: []wire.LeaseAsk{w.ask("ghost", "10", "5", "0"), w.ask("alt-1", "10", "5", "0"), old}})
	if err != nil {
		t.Fatal(err)
	}
	if g := r.Leases[0]; g.Error != wire.ReasonUnknownCustomer || g.Customer != "ghost" || g.Granted != "0" || g.Available != "0" {
		t.Errorf("unknown customer: %+v", g)
	}
	w.wantGrant("by alt id", r.Leases[1], "5", "5", "0")
	if g := r.Leases[1]; g.Customer != "alt-1" || g.Entitlement != "tokens" || !g.PeriodStart.Equal(w.period) {
		t.Errorf("grant names %+v", g)
	}
	if g := r.Leases[2]; g.Error != wire.ReasonCustomerRecreated {
		t.Errorf("an earlier customer: %+v", g)
	}
	// The alt id's lease is the canonical customer's meter.
	w.wantGrant("by id", w.grant("B", w.ask("c1", "10", "10", "0")), "5", "0", "0")
	// A leased batch naming the alt id commits against the lease.
	w.post("A", "alt-1", "2", true)
	if got := w.committed("A", "c1"); got != "2" {
		t.Errorf("committed %s, want 2", got)
	}
}

// Invalid requests name their fields and grant nothing.
func TestValidation(t *testing.T) {
	w := newWorld(t, "c1")
	good := w.ask("c1", "10", "5", "0")
	many := make([]wire.LeaseAsk, wire.MaxLeases+1)
	for i := range many {
		many[i] = good
	}
	bad := func(f func(a *wire.LeaseAsk)) wire.LeaseAsk {
		a := good
		f(&a)
		return a
	}
	for _, c := range []struct {
		in    wire.LeaseRequest
		paths []string
	}{
		{wire.LeaseRequest{InstanceID: "A"}, []string{"leases"}},
		{wire.LeaseRequest{InstanceID: "A", Leases: many}, []string{"leases"}},
		{wire.LeaseRequest{InstanceID: "", Leases: []wire.LeaseAsk{good}}, []string{"instance_id"}},
		{wire.LeaseRequest{InstanceID: "a b", Leases: []wire.LeaseAsk{good}}, []string{"instance_id"}},
		{wire.LeaseRequest{InstanceID: strings.Repeat("x", wire.MaxInstance+1), Leases: []wire.LeaseAsk{good}}, []string{"instance_id"}},
		{wire.LeaseRequest{InstanceID: "A", Leases: []wire.LeaseAsk{good, good, good,
			bad(func(a *wire.LeaseAsk) { a.Target = "-1" })}}, []string{"leases[3].target"}},
		{wire.LeaseRequest{InstanceID: "A", Leases: []wire.LeaseAsk{
			bad(func(a *wire.LeaseAsk) { a.Limit = "1e3" }),
			bad(func(a *wire.LeaseAsk) { a.Used = "0.00000000000000000001" }),
			bad(func(a *wire.LeaseAsk) { a.PeriodStart = time.Time{} }),
			bad(func(a *wire.LeaseAsk) { a.Customer, a.Entitlement = "", "" }),
			bad(func(a *wire.LeaseAsk) { a.Limit, a.Used = "-0.5", "" }),
			bad(func(a *wire.LeaseAsk) { a.PeriodStart = time.Now().Add(500 * 24 * time.Hour) }),
		}}, []string{"leases[0].limit", "leases[1].used", "leases[2].period_start", "leases[3].customer", "leases[3].entitlement",
			"leases[4].limit", "leases[4].used", "leases[5].period_start"}},
	} {
		_, err := w.svc.Grant(context.Background(), w.env, c.in)
		var ve *validation.Error
		if !errors.As(err, &ve) {
			t.Errorf("%v: not a validation error: %v", c.paths, err)
			continue
		}
		var got []string
		for _, f := range ve.Fields {
			got = append(got, f.Path)
		}
		if strings.Join(got, ",") != strings.Join(c.paths, ",") {
			t.Errorf("paths %v, want %v (%v)", got, c.paths, ve)
		}
	}
	var n int
	if err := w.pool.QueryRow(context.Background(), `select count(*) from fleet_leases`).Scan(&n); err != nil || n != 0 {
		t.Errorf("%d leases after invalid requests (%v)", n, err)
	}
}

// Instances granting and committing leased batches at once, each from two goroutines
// (its grants and its batches race, over two meters asked in either order): no
// deadlock, and everything the fleet used stays within the limit, exactly.
func TestGrantsAndLeasedBatchesRace(t *testing.T) {
	w := newWorld(t, "c1", "c2")
	const limit = "50"
	custs := []string{"c1", "c2"}
	type instance struct {
		mu                     sync.Mutex
		granted, used, pending map[string]num.Dec
		seq                    int64
	}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	insts := map[string]*instance{}
	for k := 0; k < 3; k++ {
		name := fmt.Sprintf("r-%d", k)
		in := &instance{granted: map[string]num.Dec{}, used: map[string]num.Dec{}, pending: map[string]num.Dec{}}
		insts[name] = in
		wg.Add(2)
		go func() { // grants, then spends within them
			defer wg.Done()
			for round := 0; round < 12; round++ {
				in.mu.Lock()
				var asks []wire.LeaseAsk
				for _, c := range custs {
					target, _ := in.used[c].Add(num.FromInt(5))
					asks = append(asks, w.ask(c, limit, target.String(), in.used[c].String()))
				}
				in.mu.Unlock()
				if round%2 == 1 {
					asks[0], asks[1] = asks[1], asks[0]
				}
				r, err := w.svc.Grant(context.Background(), w.env, wire.LeaseRequest{InstanceID: name, Leases: asks})
				if err != nil {
					errs <- err
					return
				}
				in.mu.Lock()
				for _, g := range r.Leases {
					gr := num.MustParse(g.Granted)
					if gr.Cmp(in.granted[g.Customer]) < 0 {
						errs <- fmt.Errorf("%s: %s's grant went down", name, g.Customer)
					}
					in.granted[g.Customer] = gr
					left, _ := gr.Sub(in.used[g.Customer])
					spend := num.Min(left, num.FromInt(3))
					if spend.IsPos() {
						in.used[g.Customer], _ = in.used[g.Customer].Add(spend)
						in.pending[g.Customer], _ = in.pending[g.Customer].Add(spend)
					}
				}
				in.mu.Unlock()
			}
		}()
		go func() { // flushes leased batches
			defer wg.Done()
			for round := 0; round < 14; round++ {
				in.mu.Lock()
				var deltas []wire.UsageDelta
				for _, c := range []string{"c2", "c1"} {
					if p := in.pending[c]; p.IsPos() {
						deltas = append(deltas, wire.UsageDelta{Customer: c, Entitlement: "tokens", Credit: "tok", PeriodStart: w.period,
							Units: p.String(), Overhead: "0", Price: "0", Calls: 1})
						in.pending[c] = num.Zero
					}
				}
				if len(deltas) == 0 {
					in.mu.Unlock()
					time.Sleep(5 * time.Millisecond)
					continue
				}
				in.seq++
				seq := in.seq
				in.mu.Unlock()
				if _, err := w.usage.Commit(context.Background(), w.env, &wire.UsageBatch{InstanceID: name, Sequence: seq,
					SentAt: time.Now().UTC(), Leased: true, Deltas: deltas}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// Each instance's leases hold exactly what its batches committed; then what is
	// still pending is flushed, and everything used is committed.
	for name, in := range insts {
		for _, c := range custs {
			want, _ := in.used[c].Sub(in.pending[c])
			if in.used[c].IsPos() && w.committed(name, c) != want.Trim(0).String() {
				t.Errorf("%s %s: committed %s, want %s", name, c, w.committed(name, c), want)
			}
			if in.pending[c].IsPos() {
				in.seq++
				w.postSeq(name, in.seq, c, in.pending[c].String(), true)
			}
		}
	}
	for _, c := range custs {
		used := num.Zero
		for _, in := range insts {
			used, _ = used.Add(in.used[c])
		}
		if used.Cmp(num.MustParse(limit)) > 0 || !used.IsPos() {
			t.Errorf("%s: the fleet used %s, limit %s", c, used, limit)
		}
		t.Logf("%s: the fleet used %s of %s", c, used, limit)
		w.wantExposure(c, limit)
	}
}

// A waiting call's Need: allowance split between instances near the limit comes back
// together. A holds 3 of its 5 unused, B 2 of its 5; B needs 4: its rest is released
// (it could not use it), and then A, needing 4 too, gets A's 3 plus B's 2.
func TestNeedReleasesTheRest(t *testing.T) {
	w := newWorld(t)
	w.customer("c")
	w.wantGrant("A", w.grant("A", w.ask("c", "10", "5", "0")), "5", "5", "0")
	w.wantGrant("B", w.grant("B", w.ask("c", "10", "5", "0")), "5", "0", "0")
	// A used 2, B used 3; nothing more is free.
	b := w.ask("c", "10", "7", "3")
	b.Need = "4"
	w.wantGrant("B needs 4, only its own 2 left: released", w.grant("B", b), "3", "2", "0")
	a := w.ask("c", "10", "6", "2")
	a.Need = "4"
	w.wantGrant("A needs 4: its 3 plus B's released 2 fit", w.grant("A", a), "6", "1", "0")
	if e := w.exposure("c"); e.Cmp(num.FromInt(10)) > 0 {
		t.Errorf("exposure %s over the limit", e)
	}
}
