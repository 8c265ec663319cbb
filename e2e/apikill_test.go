package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/limitr/limitr/internal/platform/bus"
	limitr "github.com/limitr/limitr/sdk/go"
)

// apiProcess runs cmd/api as a subprocess on a fixed loopback address, so it can be
// SIGKILLed and started again on the same address.
type apiProcess struct {
	t    *testing.T
	bin  string
	args []string
	addr string
	sink *logSink
	p    *proc
}

func withAppName(t *testing.T, dbURL, name string) string {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("application_name", name)
	u.RawQuery = q.Encode()
	return u.String()
}

func newAPIProcess(t *testing.T, dbURL, redisURL string) *apiProcess {
	a := &apiProcess{t: t, bin: binary(t, "api"), addr: fmt.Sprintf("127.0.0.1:%d", freePort(t)), sink: newSink(t, "api process")}
	a.args = []string{"--addr", a.addr, "--database-url", withAppName(t, dbURL, "e2e-api"), "--operator-token", "op",
		"--rate-limit", "10000000", "--migrate-on-start=false", "--log-level", "warn"}
	if redisURL != "" {
		a.args = append(a.args, "--redis-url", redisURL)
	}
	return a
}

// start runs the binary and waits until /healthz answers; it returns how long that took.
func (a *apiProcess) start() time.Duration {
	a.t.Helper()
	begin := time.Now()
	a.p = startProc(a.t, "api", a.bin, a.args, a.sink)
	hc := &http.Client{Timeout: time.Second}
	waitFor(a.t, 15*time.Second, "the API process to answer /healthz", func() bool {
		if a.p.exited() {
			a.t.Fatalf("the API process exited: %v", a.p.err)
		}
		resp, err := hc.Get("http://" + a.addr + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return time.Since(begin)
}

// killMidTransaction SIGKILLs the API while one of its usage transactions is open
// (it has written and not committed), watching pg_stat_activity for up to wait. It
// reports whether it caught one.
func (a *apiProcess) killMidTransaction(pool *pgxpool.Pool, wait time.Duration) bool {
	deadline := time.Now().Add(wait)
	caught := false
	for time.Now().Before(deadline) {
		var n int
		err := pool.QueryRow(context.Background(), `select count(*) from pg_stat_activity
			where application_name = 'e2e-api' and backend_xid is not null and state <> 'idle'`).Scan(&n)
		if err == nil && n > 0 {
			caught = true
			break
		}
	}
	a.p.kill()
	return caught
}

// TestAPIKilledMidStream streams 1M usage units from three SDK instances through a
// TCP proxy to the API process while (1) the proxy swallows the API's answers, then
// cuts every connection and refuses new ones for 2 s, and (2) the API process is
// SIGKILLed in the middle of a usage transaction and started again on the same
// address. Afterwards the server's totals equal the SDKs' exactly, and usage_batches
// holds exactly one row per batch acknowledged as committed.
func TestAPIKilledMidStream(t *testing.T) {
	dbURL, pool := newDB(t)
	rurl := sharedRedisURL(t)
	sdkLog, workerLog := newSink(t, "sdk"), newSink(t, "worker")
	ap := newAPIProcess(t, dbURL, rurl)
	ap.start()
	px, err := NewProxy(ap.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = px.Close() })
	base := "http://" + px.Addr()
	startWorker(t, pool, bus.NewRedis(redisClient(t, rurl), workerLog.logger(slog.LevelWarn)), 200*time.Millisecond, workerLog)
	cp := newControlPlane(t, base)
	cp.setup(quickstart(t))

	total, duration, cutFor, restartAfter := int64(1_000_000), 8*time.Second, 2*time.Second, time.Second
	nCustomers := 60
	if testing.Short() {
		total, duration, cutFor, restartAfter, nCustomers = 100_000, 1500*time.Millisecond, 300*time.Millisecond, 100*time.Millisecond, 10
	}
	sdks := make([]*limitr.Policy, 3)
	tallies := make([]*tally, 3)
	for i := range sdks {
		sdks[i] = connectSDK(t, base, cp.sdk, sdkLog)
		tallies[i] = newTally()
	}
	ctx := context.Background()
	customers := make([]string, nCustomers)
	for i := range customers {
		customers[i] = fmt.Sprintf("cust-%03d", i)
		if _, err := sdks[0].CreateCustomer(ctx, customers[i], "growth"); err != nil {
			t.Fatal(err)
		}
	}
	// Hydrate every customer on the other instances before the faults.
	if err := eachSDK(sdks, func(i int, p *limitr.Policy) error {
		for _, c := range customers {
			if _, err := p.Check(ctx, c, "ai-chat-input", 1); err != nil {
				return fmt.Errorf("SDK %d: %w", i+1, err)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	spec := streamSpec{sdks: sdks, tallies: tallies, customers: customers, ents: []string{"ai-chat-input", "ai-chat-output"},
		total: total, maxAmount: 100, duration: duration, perSDK: 2, seed: 2}
	var progress atomic.Int64
	loadDone := make(chan struct{})
	loadStart := time.Now()
	go func() { defer close(loadDone); spec.run(ctx, &progress) }()
	at := func(frac float64) {
		waitFor(t, duration+10*time.Second, fmt.Sprintf("%.0f%% of the stream", frac*100), func() bool {
			return float64(progress.Load()) >= frac*float64(total)
		})
	}
	batchesNow := func() []int64 {
		b := make([]int64, len(sdks))
		for i, p := range sdks {
			b[i] = p.SyncStats().Batches
		}
		return b
	}
	// recovered waits until every SDK had a batch acknowledged after the fault.
	recovered := func(since time.Time, before []int64) []time.Duration {
		out := make([]time.Duration, len(sdks))
		if err := eachSDK(sdks, func(i int, p *limitr.Policy) error {
			deadline := time.Now().Add(30 * time.Second)
			for {
				s := p.SyncStats()
				if s.Batches > before[i] && s.LastError == nil {
					out[i] = time.Since(since)
					return nil
				}
				if time.Now().After(deadline) {
					return fmt.Errorf("SDK %d: no batch acknowledged 30 s after the API came back: %+v", i+1, s)
				}
				time.Sleep(2 * time.Millisecond)
			}
		}); err != nil {
			t.Fatal(err)
		}
		return out
	}
	maxQueued := func() int {
		m := 0
		for _, p := range sdks {
			s := p.SyncStats()
			m = max(m, s.Queued+s.Pending)
		}
		return m
	}

	// Fault 1 at 30%: answers are swallowed for 300 ms (batches commit, acks are lost),
	// then every connection is cut and the port refuses connections.
	at(0.3)
	px.Mute()
	time.Sleep(300 * time.Millisecond)
	before := batchesNow()
	px.Down()
	down := time.Now()
	held := 0
	for time.Since(down) < cutFor {
		held = max(held, maxQueued())
		time.Sleep(20 * time.Millisecond)
	}
	if err := px.Up(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	cut1 := time.Since(down)
	rec1 := recovered(time.Now(), before)
	_, cutConns := px.Stats()

	// Fault 2 at 60%: SIGKILL the API process, preferably inside a usage transaction,
	// and start it again on the same address.
	at(0.6)
	before = batchesNow()
	caught := ap.killMidTransaction(pool, 3*time.Second)
	killed := time.Now()
	time.Sleep(restartAfter)
	boot := ap.start()
	downFor := time.Since(killed)
	rec2 := recovered(time.Now(), before)

	<-loadDone
	streamTook := time.Since(loadStart)
	closeStart := time.Now()
	stats := closeAll(t, sdks, 30*time.Second)
	closeTook := time.Since(closeStart)
	checkNoErrors(t, tallies...)
	for i, tl := range tallies {
		if tl.denied != 0 {
			t.Errorf("SDK %d: %d calls denied under soft limits", i+1, tl.denied)
		}
	}
	waitDrained(t, pool, 60*time.Second)
	want := mergeTallies(tallies...)
	var sdkUnits int64
	for _, c := range want {
		sdkUnits += c.units
	}
	if sdkUnits != total {
		t.Errorf("the SDKs allowed %d units; the stream sent %d", sdkUnits, total)
	}
	got := checkTotals(t, pool, want)
	batches, dups := checkBatches(t, pool, stats, 0)
	if dups == 0 {
		t.Logf("note: no duplicate acknowledgements: no batch committed while its answer was lost")
	}
	t.Logf("stream: %d units in %d calls from 3 SDKs over %d customers in %s; Close took %s",
		total, func() (n int64) {
			for _, c := range want {
				n += c.calls
			}
			return
		}(), nCustomers, streamTook.Round(time.Millisecond), closeTook.Round(time.Millisecond))
	t.Logf("fault 1: answers swallowed 300 ms, then %d connections cut and the port closed for %s; up to %d deltas held per SDK meanwhile; first ack after reopening: %s / %s / %s",
		cutConns, cut1.Round(time.Millisecond), held, ms(rec1[0]), ms(rec1[1]), ms(rec1[2]))
	t.Logf("fault 2: SIGKILL (inside an open usage transaction: %v), restarted after %s, process serving again %s after the kill (boot %s); first ack after restart: %s / %s / %s",
		caught, restartAfter, downFor.Round(time.Millisecond), boot.Round(time.Millisecond), ms(rec2[0]), ms(rec2[1]), ms(rec2[2]))
	t.Logf("totals: SDKs allowed %d units; meter_aggregates holds %d; %d batches acknowledged, %d of them as duplicates (replays of batches whose answer was lost); usage_batches rows = acknowledgements",
		sdkUnits, got, batches, dups)
}
