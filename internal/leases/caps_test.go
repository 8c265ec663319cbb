package leases_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/validation"
	"github.com/limitr/limitr/internal/wire"
)

// Leases of a spend cap's allowance: the asks name the cap's key (no entitlement); U is
// what usage batches committed of the key in the cap period (cap_uses).

func (w *world) capAsk(customer, key, limit, target, used string) wire.LeaseAsk {
	return wire.LeaseAsk{Customer: customer, Cap: key, PeriodStart: w.period, Limit: limit, Target: target, Used: used}
}

// postCap commits a batch of one cap use of units (and, with meterUnits, a delta of
// the customer's tokens meter) from instance.
func (w *world) postCap(instance, customer, key, units, meterUnits string, leased bool) wire.UsageAck {
	w.t.Helper()
	w.seq[instance]++
	return w.postCapSeq(instance, w.seq[instance], customer, key, units, meterUnits, leased)
}

func (w *world) postCapSeq(instance string, seq int64, customer, key, units, meterUnits string, leased bool) wire.UsageAck {
	w.t.Helper()
	b := &wire.UsageBatch{InstanceID: instance, Sequence: seq, SentAt: time.Now().UTC(), Leased: leased,
		CapUses: []wire.CapUse{{Customer: customer, CapKey: key, PeriodStart: w.period, Units: units}}}
	if meterUnits != "" {
		b.Deltas = []wire.UsageDelta{{Customer: customer, Entitlement: "tokens", Credit: "tok", PeriodStart: w.period,
			Units: meterUnits, Overhead: "0", Price: "0", Calls: 1}}
	}
	ack, err := w.usage.Commit(context.Background(), w.env, b)
	if err != nil {
		w.t.Fatal(err)
	}
	return ack
}

// capCommitted is the committed part of instance's lease of customer's cap key.
func (w *world) capCommitted(instance, customer, key string) string {
	w.t.Helper()
	var s string
	if err := w.pool.QueryRow(context.Background(), `select committed::text from fleet_leases where tenant_id = $1 and environment_id = $2
		and customer_id = $3 and instance_id = $4 and entitlement = '' and cap_key = $5`, w.env.TenantID, w.env.ID, customer, instance, key).Scan(&s); err != nil {
		w.t.Fatal(err)
	}
	return num.MustParse(s).Trim(0).String()
}

// capExposure is U + Σ_live (granted − committed) + Σ_expired max(0, used − committed)
// of customer's cap key at the world's time.
func (w *world) capExposure(customer, key string) num.Dec {
	w.t.Helper()
	var s string
	if err := w.pool.QueryRow(context.Background(), `select (
			coalesce((select sum(units) from cap_usage_totals where customer_id = $3 and tenant_id = $1 and environment_id = $2
				and cap_key = $6 and period_start = $5), 0)
			+ coalesce((select sum(case when expires_at > $4 then greatest(0, granted - committed) else greatest(0, used - committed) end)
				from fleet_leases where customer_id = $3 and tenant_id = $1 and environment_id = $2 and period_start = $5
				and entitlement = '' and cap_key = $6), 0))::text`,
		w.env.TenantID, w.env.ID, customer, w.now, w.period, key).Scan(&s); err != nil {
		w.t.Fatal(err)
	}
	return num.MustParse(s)
}

func (w *world) wantCapExposure(customer, key, ceiling string) {
	w.t.Helper()
	if got := w.capExposure(customer, key); got.Cmp(num.MustParse(ceiling)) > 0 {
		w.t.Errorf("exposure of %s's cap %s is %s, more than the ceiling %s", customer, key, got, ceiling)
	}
}

// Three instances asking for one cap at once never hold more than ceiling − committed
// together; the grant echoes the cap; the meter of the same customer is leased apart.
func TestCapGrantsUpToTheCeilingConcurrently(t *testing.T) {
	w := newWorld(t, "c1")
	const key = "cap_aaaa"
	// 10 of the cap committed outside leases, and 30 of the meter (which the cap's
	// lease does not count).
	w.postCap("seed", "c1", key, "10", "30", false)
	const ceiling, step, instances = 100, 7, 3
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
					Leases: []wire.LeaseAsk{w.capAsk("c1", key, fmt.Sprint(ceiling), target.String(), "0")}})
				if err != nil {
					errs <- err
					return
				}
				g := r.Leases[0]
				if g.Cap != key || g.Entitlement != "" || g.Error != "" {
					errs <- fmt.Errorf("%s: grant %+v", inst, g)
					return
				}
				gr := num.MustParse(g.Granted)
				if gr.Cmp(granted) < 0 {
					errs <- fmt.Errorf("%s: grant went down from %s to %s", inst, granted, gr)
					return
				}
				if gr.Cmp(granted) == 0 {
					mu.Lock()
					held[inst] = gr
					mu.Unlock()
					return
				}
				granted = gr
			}
		}(fmt.Sprintf("inst-%d", k))
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	total := num.Zero
	for _, g := range held {
		total, _ = total.Add(g)
	}
	if total.Cmp(num.FromInt(ceiling-10)) != 0 {
		t.Fatalf("the fleet holds %s of the cap, want exactly %d: %v", total, ceiling-10, held)
	}
	w.wantCapExposure("c1", key, "100")
	w.wantGrant("a newcomer", w.grant("late", w.capAsk("c1", key, "100", "50", "0")), "0", "0", "0")
	// The meter's lease sees the meter's usage (30), not the cap's.
	w.wantGrant("the meter", w.grant("late", w.ask("c1", "100", "50", "0")), "50", "20", "0")
	// Another key of the same customer (a reset cap) starts from zero.
	g := w.grant("late", w.capAsk("c1", "cap_bbbb", "100", "40", "0"))
	w.wantGrant("a new key", g, "40", "60", "0")
	if g.Remaining != "100" || g.Holders != 1 {
		t.Errorf("a new key: remaining %s holders %d", g.Remaining, g.Holders)
	}
	var rows int
	if err := w.pool.QueryRow(context.Background(), `select count(*) from fleet_leases where instance_id = 'late'`).Scan(&rows); err != nil || rows != 3 {
		t.Fatalf("%d rows of the instance (%v), want 3: two caps and a meter", rows, err)
	}
}

// A leased batch moves its cap uses from the lease's outstanding part to U, once; an
// unleased batch and another instance's do not touch the lease.
func TestCapLeasedUsageCommits(t *testing.T) {
	w := newWorld(t, "c1")
	const key = "cap_k1"
	w.wantGrant("A", w.grant("A", w.capAsk("c1", key, "10", "6", "0")), "6", "4", "0")
	// A's meter lease too: a batch with both moves each to its own lease.
	w.wantGrant("A meter", w.grant("A", w.ask("c1", "100", "50", "0")), "50", "50", "0")
	if ack := w.postCap("A", "c1", key, "4", "9", true); ack.Duplicate || len(ack.Unattributed) != 0 {
		t.Fatalf("ack %+v", ack)
	}
	if got := w.capCommitted("A", "c1", key); got != "4" {
		t.Fatalf("cap committed %s, want 4", got)
	}
	var meter string
	if err := w.pool.QueryRow(context.Background(), `select committed::text from fleet_leases where instance_id = 'A' and entitlement = 'tokens'`).
		Scan(&meter); err != nil || num.MustParse(meter).Trim(0).String() != "9" {
		t.Fatalf("meter committed %s (%v), want 9", meter, err)
	}
	w.wantGrant("A after its batch", w.grant("A", w.capAsk("c1", key, "10", "10", "4")), "10", "0", "4")
	w.wantCapExposure("c1", key, "10")
	w.wantGrant("B", w.grant("B", w.capAsk("c1", key, "10", "5", "0")), "0", "0", "0")
	// The same batch again is a duplicate: counted once, in the totals and the lease.
	if ack := w.postCapSeq("A", 1, "c1", key, "4", "9", true); !ack.Duplicate {
		t.Fatalf("repost %+v", ack)
	}
	if got := w.capCommitted("A", "c1", key); got != "4" {
		t.Fatalf("committed %s after a duplicate, want 4", got)
	}
	var total string
	if err := w.pool.QueryRow(context.Background(), `select units::text from cap_usage_totals where cap_key = $1`, key).Scan(&total); err != nil ||
		num.MustParse(total).Trim(0).String() != "4" {
		t.Fatalf("cap total %s (%v), want 4", total, err)
	}
	w.postCap("A", "c1", key, "1", "", false)
	w.postCap("B", "c1", key, "1", "", true)
	if got := w.capCommitted("A", "c1", key); got != "4" {
		t.Fatalf("committed %s after unleased and others' batches, want 4", got)
	}
	// A negative use (follow_decrements) gives room back.
	w.postCap("A", "c1", key, "-2", "", true)
	if got := w.capCommitted("A", "c1", key); got != "2" {
		t.Fatalf("committed %s after a decrement, want 2", got)
	}
}

// An expired cap lease's unused part is available to others, its used-but-uncommitted
// part is not; Need releases the rest, as for meters.
func TestCapExpiryAndNeed(t *testing.T) {
	w := newWorld(t, "c1")
	const key = "cap_x"
	w.wantGrant("A", w.grant("A", w.capAsk("c1", key, "10", "8", "0")), "8", "2", "0")
	w.wantGrant("A renews having used 5", w.grant("A", w.capAsk("c1", key, "10", "8", "5")), "8", "2", "0")
	w.wantGrant("B while A lives", w.grant("B", w.capAsk("c1", key, "10", "10", "0")), "2", "0", "0")
	w.now = w.now.Add(ttl + time.Second)
	w.wantGrant("B after A expired", w.grant("B", w.capAsk("c1", key, "10", "10", "0")), "5", "0", "0")
	w.wantCapExposure("c1", key, "10")
	w.wantGrant("A renews after expiry", w.grant("A", w.capAsk("c1", key, "10", "9", "5")), "5", "0", "0")
	w.postCap("A", "c1", key, "5", "", true)
	w.wantGrant("C", w.grant("C", w.capAsk("c1", key, "10", "1", "0")), "0", "0", "0")
	w.wantCapExposure("c1", key, "10")

	// Need, on a fresh key: A holds 3 of its 5 unused, B 2 of its 5.
	const k2 = "cap_y"
	w.wantGrant("A k2", w.grant("A", w.capAsk("c1", k2, "10", "5", "0")), "5", "5", "0")
	w.wantGrant("B k2", w.grant("B", w.capAsk("c1", k2, "10", "5", "0")), "5", "0", "0")
	b := w.capAsk("c1", k2, "10", "7", "3")
	b.Need = "4"
	w.wantGrant("B needs 4, only its own 2 left: released", w.grant("B", b), "3", "2", "0")
	a := w.capAsk("c1", k2, "10", "6", "2")
	a.Need = "4"
	w.wantGrant("A needs 4: its 3 plus B's released 2 fit", w.grant("A", a), "6", "1", "0")
	w.wantCapExposure("c1", k2, "10")
	if err := w.svc.Return(context.Background(), w.env, "A"); err != nil {
		t.Fatal(err)
	}
	w.wantGrant("D after A's return: all but B's 3", w.grant("D", w.capAsk("c1", k2, "10", "10", "0")), "7", "0", "0")
}

// A cap ask names no entitlement and a cap key of at most 128 bytes; an unknown
// customer fails its ask only.
func TestCapValidation(t *testing.T) {
	w := newWorld(t, "c1")
	both := w.capAsk("c1", "cap_1", "10", "5", "0")
	both.Entitlement = "tokens"
	_, err := w.svc.Grant(context.Background(), w.env, wire.LeaseRequest{InstanceID: "A", Leases: []wire.LeaseAsk{
		w.capAsk("c1", "cap_1", "10", "5", "0"), both, w.capAsk("c1", strings.Repeat("k", 129), "10", "5", "0"),
		w.capAsk("", "cap_1", "-1", "5", "0")}})
	var ve *validation.Error
	if !errors.As(err, &ve) {
		t.Fatalf("not a validation error: %v", err)
	}
	var got []string
	for _, f := range ve.Fields {
		got = append(got, f.Path)
	}
	if want := "leases[1].entitlement,leases[2].cap,leases[3].customer,leases[3].limit"; strings.Join(got, ",") != want {
		t.Fatalf("paths %v, want %s", got, want)
	}
	r, err := w.svc.Grant(context.Background(), w.env, wire.LeaseRequest{InstanceID: "A", Leases: []wire.LeaseAsk{
		w.capAsk("ghost", "cap_1", "10", "5", "0"), w.capAsk("c1", strings.Repeat("k", 128), "10", "5", "0")}})
	if err != nil {
		t.Fatal(err)
	}
	if g := r.Leases[0]; g.Error != wire.ReasonUnknownCustomer || g.Cap != "cap_1" || g.Granted != "0" {
		t.Errorf("unknown customer: %+v", g)
	}
	w.wantGrant("a 128-byte key", r.Leases[1], "5", "5", "0")
}
