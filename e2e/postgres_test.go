package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/limitr/limitr/internal/platform/bus"
	"github.com/limitr/limitr/internal/platform/pg"
	"github.com/limitr/limitr/internal/wire"
	limitr "github.com/limitr/limitr/sdk/go"
)

// rawUsage posts a usage batch as an SDK would, without the SDK, and returns the
// status, the Retry-After header and the body.
func rawUsage(t *testing.T, base, key string, b wire.UsageBatch) (int, string, []byte) {
	t.Helper()
	data, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPost, base+wire.PathUsage, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", wire.PathUsage, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Retry-After"), body
}

// TestPostgresOutage puts a TCP proxy between Postgres and both the API and the
// worker, and cuts it (every connection dropped, new ones refused) for 3 s in the
// middle of a run. Meanwhile the API answers usage posts 503 with Retry-After, the
// SDKs keep enforcing and hold their usage; afterwards all of it arrives, a batch
// refused with 503 is accepted on retry (nothing was half-written), and the totals
// are exact.
func TestPostgresOutage(t *testing.T) {
	dbURL, pool := newDB(t)
	rurl := sharedRedisURL(t)
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	px, err := NewProxy(u.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = px.Close() })
	u.Host = px.Addr()
	ctx := context.Background()
	apiPool, err := pg.Connect(ctx, u.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(apiPool.Close)
	workerPool, err := pg.Connect(ctx, u.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(workerPool.Close)

	apiLog, sdkLog, workerLog := newSink(t, "api"), newSink(t, "sdk"), newSink(t, "worker")
	a := startAPI(t, apiPool, redisClient(t, rurl), apiLog, "")
	startWorker(t, workerPool, bus.NewRedis(redisClient(t, rurl), workerLog.logger(slog.LevelWarn)), 200*time.Millisecond, workerLog)
	cp := newControlPlane(t, a.URL)
	cp.setup(quickstart(t))
	cp.createCustomer("raw-1", "growth")
	cp.createCustomer("late-1", "growth") // exists, but no SDK touches it before the outage

	outage, before := 3*time.Second, time.Second
	if testing.Short() {
		outage, before = 600*time.Millisecond, 200*time.Millisecond
	}
	sdks := make([]*limitr.Policy, 3)
	tallies := make([]*tally, 3)
	for i := range sdks {
		sdks[i] = connectSDK(t, a.URL, cp.sdk, sdkLog)
		tallies[i] = newTally()
	}
	customers := make([]string, 20)
	for i := range customers {
		customers[i] = fmt.Sprintf("p-%02d", i)
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

	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	spec := streamSpec{sdks: sdks, tallies: tallies, customers: customers, ents: []string{"ai-chat-input", "ai-chat-output"},
		total: 30_000 * 120, maxAmount: 100, duration: 120 * time.Second, perSDK: 1, seed: 5}
	var progress atomic.Int64
	loadDone := make(chan struct{})
	go func() { defer close(loadDone); spec.run(loadCtx, &progress) }()
	time.Sleep(before)

	raw := wire.UsageBatch{InstanceID: "e2e-raw", Sequence: 1, SentAt: time.Now().UTC(), PolicyVersion: 1,
		Deltas: []wire.UsageDelta{{Customer: "raw-1", Entitlement: "ai-chat-input", Credit: "claude-sonnet-4-input",
			PeriodStart: time.Now().UTC().Truncate(24 * time.Hour), Units: "777", Overhead: "0.002331", Price: "0.003108", Calls: 3}}}
	batchesBefore := make([]int64, len(sdks))
	for i, p := range sdks {
		batchesBefore[i] = p.SyncStats().Batches
	}
	unitsBefore := progress.Load()

	px.Down()
	down := time.Now()
	// During the outage: usage posts get 503 with Retry-After, the readiness probe
	// says so, the SDKs keep allowing and hold their usage.
	var codes []int
	var retryAfter string
	for time.Since(down) < outage/2 {
		code, ra, body := rawUsage(t, a.URL, cp.sdk, raw)
		codes = append(codes, code)
		if code != http.StatusServiceUnavailable {
			t.Errorf("usage post with Postgres down: %d %s; want 503", code, body)
		}
		retryAfter = ra
		time.Sleep(100 * time.Millisecond)
	}
	if retryAfter == "" {
		t.Errorf("the 503 has no Retry-After")
	}
	readyCode, _ := cp.do(http.MethodGet, "/readyz", "", nil)
	// A customer this instance has never seen cannot be hydrated meanwhile.
	lateOK, lateErr := sdks[1].Allow(ctx, "late-1", "ai-chat-input", 1)
	held := make([]int, len(sdks))
	for time.Since(down) < outage {
		for i, p := range sdks {
			s := p.SyncStats()
			held[i] = max(held[i], s.Queued+s.Pending)
		}
		time.Sleep(20 * time.Millisecond)
	}
	allowedDuring := progress.Load() - unitsBefore
	ackedDuring := make([]int64, len(sdks))
	for i, p := range sdks {
		s := p.SyncStats()
		ackedDuring[i] = s.Batches - batchesBefore[i]
		if held[i] == 0 {
			t.Errorf("SDK %d held no usage during the outage", i+1)
		}
		if s.LastError == nil {
			t.Errorf("SDK %d reports no sync error during the outage", i+1)
		}
	}
	if err := px.Up(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	outFor := time.Since(down)
	upAt := time.Now()
	recovered := make([]time.Duration, len(sdks))
	if err := eachSDK(sdks, func(i int, p *limitr.Policy) error {
		deadline := time.Now().Add(30 * time.Second)
		acked := p.SyncStats().Batches
		for {
			s := p.SyncStats()
			if s.Batches > acked && s.LastError == nil {
				recovered[i] = time.Since(upAt)
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("SDK %d: nothing acknowledged 30 s after Postgres came back: %+v", i+1, s)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}); err != nil {
		t.Fatal(err)
	}
	// The batch refused with 503 wrote nothing: its retry is a first commit.
	var ack wire.UsageAck
	retryStart := time.Now()
	for {
		code, _, body := rawUsage(t, a.URL, cp.sdk, raw)
		if code == http.StatusOK {
			if err := json.Unmarshal(body, &ack); err != nil {
				t.Fatal(err)
			}
			break
		}
		if code != http.StatusServiceUnavailable || time.Since(retryStart) > 10*time.Second {
			t.Fatalf("retrying the refused batch after the outage: %d %s", code, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if ack.Duplicate || ack.Accepted != 1 {
		t.Errorf("the batch refused during the outage was partly written: its retry answers %+v", ack)
	}
	// Once Postgres is back (and the 1 s negative cache has passed) it hydrates.
	var lateAfter time.Duration
	lateStart := time.Now()
	for {
		ok, err := tallies[1].allowQuiet(ctx, sdks[1], "late-1", "ai-chat-input", 1)
		if ok {
			lateAfter = time.Since(lateStart)
			break
		}
		if time.Since(lateStart) > 10*time.Second {
			t.Fatalf("late-1 still not usable 10 s after the outage: %v, %v", ok, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(before)

	stopLoad()
	<-loadDone
	stats := closeAll(t, sdks, 20*time.Second)
	checkNoErrors(t, tallies...)
	for i, tl := range tallies {
		if tl.denied != 0 {
			t.Errorf("SDK %d: %d calls denied under soft limits", i+1, tl.denied)
		}
	}
	waitDrained(t, pool, 30*time.Second)
	want := mergeTallies(tallies...)
	var sdkUnits int64
	for _, c := range want {
		sdkUnits += c.units
	}
	want[meterKey{"raw-1", "ai-chat-input"}] = counts{units: 777, calls: 3}
	got := checkTotals(t, pool, want)
	batches, dups := checkBatches(t, pool, stats, 1)
	_, cut := px.Stats()
	t.Logf("Postgres cut for %s (%d connections dropped, port refused): usage posts answered %v (Retry-After %s), /readyz %d; SDKs allowed %d units meanwhile, holding up to %v deltas+meters, %v batches acknowledged during the outage",
		outFor.Round(time.Millisecond), cut, codes, retryAfter, readyCode, allowedDuring, held, ackedDuring)
	t.Logf("after Postgres came back: first acknowledgement %s / %s / %s; the refused batch committed on retry (%+v)",
		ms(recovered[0]), ms(recovered[1]), ms(recovered[2]), ack)
	t.Logf("first touch of an existing customer during the outage: Allow = %v, %v (errors.Is ErrUnknownCustomer: %v); usable %s after the retry loop started",
		lateOK, lateErr, errors.Is(lateErr, limitr.ErrUnknownCustomer), lateAfter.Round(time.Millisecond))
	t.Logf("totals: SDKs allowed %d units (+777 raw), meter_aggregates %d; %d SDK batches (%d duplicates)", sdkUnits, got, batches, dups)
}
