package e2e

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/limitr/limitr/internal/platform/bus"
	limitr "github.com/limitr/limitr/sdk/go"
)

// TestDeleteCustomerUnderLoad: three SDK instances send usage for 100 customers while
// one customer is deleted through the REST API. Every other customer's usage reaches
// the server exactly; nothing is refused, and the deleted customer's late usage is
// kept as unattributed records rather than lost silently with the rest of its batch.
// (Before: the API answered 422 for every batch that still named the deleted customer,
// the SDKs dropped those batches, and the other customers in them lost their usage.)
func TestDeleteCustomerUnderLoad(t *testing.T) {
	_, pool := newDB(t)
	rurl := sharedRedisURL(t)
	apiLog, sdkLog, workerLog := newSink(t, "api"), newSink(t, "sdk"), newSink(t, "worker")
	a := startAPI(t, pool, redisClient(t, rurl), apiLog, "")
	startWorker(t, pool, bus.NewRedis(redisClient(t, rurl), workerLog.logger(slog.LevelWarn)), 200*time.Millisecond, workerLog)
	cp := newControlPlane(t, a.URL)
	cp.setup(quickstart(t))
	const customers, victim = 100, "cust-042"
	ids := make([]string, customers)
	for i := range ids {
		ids[i] = fmt.Sprintf("cust-%03d", i)
		cp.createCustomer(ids[i], "growth")
	}
	sdks := make([]*limitr.Policy, 3)
	tallies := make([]*tally, 3)
	for i := range sdks {
		sdks[i] = connectSDK(t, a.URL, cp.sdk, sdkLog)
		tallies[i] = newTally()
	}
	ctx := context.Background()
	// Every instance holds every customer before the load starts.
	for i, p := range sdks {
		for _, id := range ids {
			if _, err := p.Check(ctx, id, "ai-chat-input", 1); err != nil {
				t.Fatalf("SDK %d: hydrate %s: %v", i+1, id, err)
			}
		}
	}

	var victimAllowed, victimAfterDelete, victimErrors atomic.Int64
	var deleted atomic.Bool
	// The load runs until every instance has applied the delete and gone on a little
	// (not for a fixed time: on a loaded machine the delete can take seconds to arrive,
	// and the point is what the instances answer once it has).
	loadCtx, stopLoad := context.WithTimeout(ctx, 30*time.Second)
	defer stopLoad()
	var wg sync.WaitGroup
	for i, p := range sdks {
		for g := range 4 {
			rnd := rand.New(rand.NewPCG(uint64(i), uint64(g)))
			wg.Go(func() {
				for loadCtx.Err() == nil {
					id := ids[rnd.IntN(customers)]
					ent := []string{"ai-chat-input", "ai-chat-output"}[rnd.IntN(2)]
					n := 1 + rnd.Int64N(50)
					if id != victim {
						_, _ = tallies[i].allow(ctx, p, id, ent, n)
						continue
					}
					wasDeleted := deleted.Load()
					ok, err := p.Allow(ctx, id, ent, float64(n))
					switch {
					case errors.Is(err, limitr.ErrUnknownCustomer):
						victimErrors.Add(1)
					case err != nil:
						t.Errorf("SDK %d: Allow(%s): %v", i+1, id, err)
					case ok:
						victimAllowed.Add(n)
						if wasDeleted {
							victimAfterDelete.Add(n)
						}
					}
					time.Sleep(time.Duration(rnd.IntN(200)) * time.Microsecond)
				}
			})
		}
	}
	time.Sleep(1500 * time.Millisecond)
	snap, err := sdks[2].Customer(ctx, victim)
	if err != nil {
		t.Fatal(err)
	}
	if code, body := cp.do(http.MethodDelete, "/v1/environments/production/customers/"+victim, cp.admin, nil); code != http.StatusNoContent {
		t.Fatalf("delete %s: %d %s", victim, code, body)
	}
	deleted.Store(true)
	// Every instance hears of the delete; then the third restores the customer from a
	// snapshot taken before it (SetCustomer acts locally), so its usage keeps naming a
	// customer the server no longer has.
	for i, p := range sdks {
		waitFor(t, 5*time.Second, fmt.Sprintf("SDK %d to apply the delete", i+1), func() bool {
			_, err := p.Customer(ctx, victim)
			return errors.Is(err, limitr.ErrUnknownCustomer)
		})
	}
	if err := sdks[2].SetCustomer(ctx, snap); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	stopLoad()
	wg.Wait()
	stats := closeAll(t, sdks, 20*time.Second)
	waitDrained(t, pool, 20*time.Second)
	checkNoErrors(t, tallies...)

	// Nothing was refused, by any instance.
	var sent, unattributed int64
	for i, s := range stats {
		if s.Rejected != 0 || s.Dropped != 0 {
			t.Errorf("SDK %d: %d records rejected, %d dropped: %+v", i+1, s.Rejected, s.Dropped, s)
		}
		sent += s.Sent
		unattributed += s.Unattributed
	}
	// Every other customer's usage is on the server, exactly, meter by meter.
	want := mergeTallies(tallies...)
	rows, err := pool.Query(ctx, `select customer_id, entitlement, sum(units)::bigint, sum(calls)::bigint
		from meter_aggregates where customer_id <> $1 group by 1, 2`, victim)
	if err != nil {
		t.Fatal(err)
	}
	got := map[meterKey]counts{}
	for rows.Next() {
		var k meterKey
		var c counts
		if err := rows.Scan(&k.customer, &k.entitlement, &c.units, &c.calls); err != nil {
			t.Fatal(err)
		}
		got[k] = c
	}
	rows.Close()
	var total int64
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s/%s: server %+v, SDKs allowed %+v", k.customer, k.entitlement, got[k], w)
		}
		total += w.units
	}
	if len(got) != len(want) {
		t.Errorf("server has %d meters of other customers, the SDKs %d", len(got), len(want))
	}
	// The deleted customer: what was committed before the delete stays under its old
	// uid; what the instances had not flushed yet was discarded with it or kept as
	// unattributed; none of it is counted for anyone else.
	var attributed, kept, keptRecords int64
	if err := pool.QueryRow(ctx, `select coalesce(sum(units), 0)::bigint from meter_aggregates where customer_id = $1`, victim).Scan(&attributed); err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(ctx, `select coalesce(sum((record->>'units')::numeric), 0)::bigint, count(*) from unattributed_usage
		where customer = $1 and kind = 'delta'`, victim).Scan(&kept, &keptRecords); err != nil {
		t.Fatal(err)
	}
	var strays int64
	if err := pool.QueryRow(ctx, `select count(*) from unattributed_usage where customer <> $1`, victim).Scan(&strays); err != nil || strays != 0 {
		t.Fatalf("unattributed records of other customers: %d %v", strays, err)
	}
	if attributed+kept > victimAllowed.Load() {
		t.Errorf("%s: server has %d attributed + %d unattributed units, more than the %d allowed", victim, attributed, kept, victimAllowed.Load())
	}
	if victimAfterDelete.Load() != 0 && victimErrors.Load() == 0 {
		t.Errorf("calls for %s went on being allowed after its deletion and none failed", victim)
	}
	if keptRecords == 0 || stats[2].Unattributed == 0 {
		t.Errorf("the restored customer's usage was not kept as unattributed: %d records on the server, %d counted by SDK 3", keptRecords, stats[2].Unattributed)
	}
	if unattributed < keptRecords {
		t.Errorf("SDKs counted %d unattributed records, the server kept %d delta records", unattributed, keptRecords)
	}
	t.Logf("3 SDKs × 4 goroutines, 100 customers, %s deleted after 1.5 s: %d units for 99 others exact over %d meters; %d records acknowledged; "+
		"%s: %d allowed, %d committed before the delete, %d units in %d unattributed records, %d calls answered ErrUnknownCustomer afterwards",
		victim, total, len(want), sent, victim, victimAllowed.Load(), attributed, kept, keptRecords, victimErrors.Load())
}
