package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/limitr/limitr/internal/aggregate"
	"github.com/limitr/limitr/internal/api"
	"github.com/limitr/limitr/internal/platform/bus"
	"github.com/limitr/limitr/internal/platform/pgtest"
	limitr "github.com/limitr/limitr/sdk/go"
)

// ---- binaries ----

var (
	binOnce sync.Once
	binDir  string
	binErr  error
)

type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}

func TestMain(m *testing.M) {
	// go-redis logs every failed dial; the tests kill Redis on purpose.
	redis.SetLogger(quietRedis{})
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// binary builds cmd/api and cmd/worker once per run and returns the path of one.
func binary(t *testing.T, name string) string {
	t.Helper()
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "limitr-e2e-bin-")
		if binErr != nil {
			return
		}
		root, err := filepath.Abs("..")
		if err != nil {
			binErr = err
			return
		}
		// go test puts its own Go first on PATH.
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "build", "-o", binDir+string(os.PathSeparator), "./cmd/api", "./cmd/worker")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return filepath.Join(binDir, name)
}

// ---- logs ----

// logSink keeps the last lines a component logged; they are printed when the test
// fails. Writing after the test ended is safe (nothing is printed then).
type logSink struct {
	name  string
	mu    sync.Mutex
	lines []string
	total int
}

func newSink(t *testing.T, name string) *logSink {
	s := &logSink{name: name}
	t.Cleanup(func() {
		if t.Failed() {
			s.mu.Lock()
			defer s.mu.Unlock()
			t.Logf("---- %s: last %d of %d log lines ----\n%s", s.name, len(s.lines), s.total, strings.Join(s.lines, "\n"))
		}
	})
	return s
}

func (s *logSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		if len(l) > 600 {
			l = l[:600] + "…"
		}
		s.lines = append(s.lines, l)
		s.total++
	}
	if len(s.lines) > 300 {
		s.lines = slices.Delete(s.lines, 0, len(s.lines)-300)
	}
	return len(p), nil
}

func (s *logSink) logger(level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(s, &slog.HandlerOptions{Level: level}))
}

// count reports how many kept lines contain substr.
func (s *logSink) count(substr string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, l := range s.lines {
		if strings.Contains(l, substr) {
			n++
		}
	}
	return n
}

// ---- services ----

func newDB(t *testing.T) (string, *pgxpool.Pool) {
	t.Helper()
	return pgtest.NewMigrated(t)
}

func sharedRedisURL(t *testing.T) string {
	t.Helper()
	u := os.Getenv("LIMITR_TEST_REDIS_URL")
	if u == "" {
		t.Skip("LIMITR_TEST_REDIS_URL is not set: run `eval \"$(scripts/services.sh)\"` (make test does)")
	}
	return u
}

// redisClient is the client cmd/api and cmd/worker build (bus.NewRedisClient).
func redisClient(t *testing.T, url string) *redis.Client {
	t.Helper()
	c, err := bus.NewRedisClient(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// redisServer is a private redis-server on a random loopback port, for tests that stop
// and start Redis.
type redisServer struct {
	t    *testing.T
	port int
	URL  string
	sink *logSink
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

func startRedisServer(t *testing.T) *redisServer {
	t.Helper()
	if _, err := os.Stat("/usr/bin/redis-server"); err != nil {
		t.Skip("no /usr/bin/redis-server")
	}
	r := &redisServer{t: t, port: freePort(t), sink: newSink(t, "redis-server")}
	r.URL = fmt.Sprintf("redis://127.0.0.1:%d/0", r.port)
	t.Cleanup(r.stop)
	r.start()
	return r
}

func (r *redisServer) start() {
	r.t.Helper()
	cmd := exec.Command("/usr/bin/redis-server", "--port", strconv.Itoa(r.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--daemonize", "no")
	cmd.Stdout, cmd.Stderr = r.sink, r.sink
	if err := cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	r.mu.Lock()
	r.cmd, r.done = cmd, done
	r.mu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for !r.ping() {
		if time.Now().After(deadline) {
			r.t.Fatalf("redis-server on port %d did not answer PING", r.port)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (r *redisServer) ping() bool {
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", r.port), 200*time.Millisecond)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(500 * time.Millisecond))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "+PONG")
}

// stop kills the server (SIGKILL) and waits for it to exit.
func (r *redisServer) stop() {
	r.mu.Lock()
	cmd, done := r.cmd, r.done
	r.cmd = nil
	r.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
	}
}

// ---- processes ----

type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

func startProc(t *testing.T, name, bin string, args []string, sink io.Writer) *proc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = sink, sink
	cmd.Env = append(os.Environ(), "LIMITR_DATABASE_URL=", "LIMITR_REDIS_URL=")
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.kill() })
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL and waits for the exit.
func (p *proc) kill() {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
	}
}

// ---- the API, in process ----

type apiServer struct {
	srv  *api.Server
	hs   *http.Server
	Addr string
	URL  string
	once sync.Once
}

// startAPI serves the API on addr ("" picks a free loopback port). Rate limits are
// raised out of the way: the tests are about sync, not throttling.
func startAPI(t *testing.T, pool *pgxpool.Pool, rdb redis.UniversalClient, sink *logSink, addr string) *apiServer {
	t.Helper()
	return startAPIConfig(t, pool, rdb, sink, addr, nil)
}

// startAPIConfig is startAPI with the configuration changed by tune.
func startAPIConfig(t *testing.T, pool *pgxpool.Pool, rdb redis.UniversalClient, sink *logSink, addr string, tune func(*api.Config)) *apiServer {
	t.Helper()
	deps := api.Deps{Pool: pool, Logger: sink.logger(slog.LevelWarn)}
	if rdb != nil {
		deps.Redis = rdb
	}
	cfg := api.Config{OperatorToken: "op", RateLimit: 10_000_000}
	if tune != nil {
		tune(&cfg)
	}
	srv, err := api.New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	return serveOn(t, srv, addr)
}

// serve serves srv on a free loopback port until the test ends.
func serve(t *testing.T, srv *api.Server) *apiServer { return serveOn(t, srv, "") }

func serveOn(t *testing.T, srv *api.Server, addr string) *apiServer {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var ln net.Listener
	var err error
	deadline := time.Now().Add(5 * time.Second)
	for {
		ln, err = net.Listen("tcp", addr)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("listen %s: %v", addr, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	a := &apiServer{srv: srv, hs: hs, Addr: ln.Addr().String(), URL: "http://" + ln.Addr().String()}
	t.Cleanup(a.kill)
	return a
}

// kill stops serving at once: the listener and every connection close, without
// draining (http.Server.Close), and the server's background work stops.
func (a *apiServer) kill() {
	a.once.Do(func() {
		_ = a.hs.Close()
		_ = a.srv.Close()
	})
}

// ---- the worker, in process ----

type workerLoop struct {
	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	rows   int64
	lags   []batchLag
}

type batchLag struct {
	at     time.Time
	rows   int
	maxLag time.Duration
}

func startWorker(t *testing.T, pool *pgxpool.Pool, b bus.Bus, poll time.Duration, sink *logSink) *workerLoop {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &workerLoop{cancel: cancel, done: make(chan struct{})}
	agg := aggregate.New(pool, aggregate.Options{PollInterval: poll, Bus: b, Logger: sink.logger(slog.LevelWarn),
		OnBatch: func(b aggregate.Batch) {
			var m time.Duration
			for _, l := range b.CommitLags {
				m = max(m, l)
			}
			w.mu.Lock()
			w.rows += int64(b.Rows)
			w.lags = append(w.lags, batchLag{at: time.Now(), rows: b.Rows, maxLag: m})
			w.mu.Unlock()
		}})
	go func() { defer close(w.done); _ = agg.Run(ctx) }()
	t.Cleanup(w.stop)
	return w
}

func (w *workerLoop) stop() {
	w.cancel()
	<-w.done
}

// maxLagBetween is the largest commit lag of the batches committed in [from, to).
func (w *workerLoop) maxLagBetween(from, to time.Time) (time.Duration, int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var m time.Duration
	n := 0
	for _, b := range w.lags {
		if !b.at.Before(from) && b.at.Before(to) {
			m = max(m, b.maxLag)
			n++
		}
	}
	return m, n
}

// ---- control plane client ----

type controlPlane struct {
	t     *testing.T
	base  string
	hc    *http.Client
	admin string // admin key
	sdk   string // production SDK key
}

func newControlPlane(t *testing.T, base string) *controlPlane {
	return &controlPlane{t: t, base: base, hc: &http.Client{Timeout: 10 * time.Second}}
}

func (c *controlPlane) do(method, path, secret string, body any) (int, []byte) {
	c.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			c.t.Fatal(err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if secret != "" {
		req.Header.Set("Authorization", "Bearer "+secret)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data
}

func (c *controlPlane) decode(code, want int, data []byte, what string, v any) {
	c.t.Helper()
	if code != want {
		c.t.Fatalf("%s: %d %s", what, code, data)
	}
	if v != nil {
		if err := json.Unmarshal(data, v); err != nil {
			c.t.Fatalf("%s: %v: %s", what, err, data)
		}
	}
}

// setup bootstraps a tenant, publishes policy to production and creates an SDK key.
func (c *controlPlane) setup(policy []byte) {
	c.t.Helper()
	var tn struct {
		Secret string `json:"secret"`
	}
	code, data := c.do(http.MethodPost, "/v1/tenants", "op", map[string]string{"slug": "e2e"})
	c.decode(code, http.StatusCreated, data, "create tenant", &tn)
	c.admin = tn.Secret
	c.publish(c.createVersion(policy))
	var key struct {
		Secret string `json:"secret"`
	}
	code, data = c.do(http.MethodPost, "/v1/keys", c.admin, map[string]string{"kind": "sdk", "environment": "production", "name": "e2e"})
	c.decode(code, http.StatusCreated, data, "create sdk key", &key)
	c.sdk = key.Secret
}

func (c *controlPlane) createVersion(policy []byte) int {
	c.t.Helper()
	var v struct {
		Number int `json:"number"`
	}
	code, data := c.do(http.MethodPost, "/v1/policies", c.admin, policy)
	if code == http.StatusOK {
		code = http.StatusCreated
	}
	c.decode(code, http.StatusCreated, data, "create policy", &v)
	return v.Number
}

// publish publishes version to production; it returns when the publish was sent.
func (c *controlPlane) publish(version int) time.Time {
	c.t.Helper()
	sent := time.Now()
	code, data := c.do(http.MethodPost, "/v1/environments/production/publish", c.admin, map[string]int{"version": version})
	c.decode(code, http.StatusOK, data, "publish", nil)
	return sent
}

func (c *controlPlane) createCustomer(id, plan string) {
	c.t.Helper()
	body := map[string]any{"id": id}
	if plan != "" {
		body["plan"] = plan
	}
	code, data := c.do(http.MethodPost, "/v1/environments/production/customers", c.admin, body)
	c.decode(code, http.StatusCreated, data, "create customer "+id, nil)
}

// ---- policies ----

func quickstart(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile("../examples/policies/quickstart-ai.json")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// withStarterInputLimit is the quick-start policy with the starter plan's hard
// ai-chat-input limit set to limit.
func withStarterInputLimit(t *testing.T, limit int) []byte {
	t.Helper()
	src := string(quickstart(t))
	old := `"credit": "claude-sonnet-4-input", "value": 500000,`
	if strings.Count(src, old) != 1 {
		t.Fatalf("quickstart-ai.json changed shape: %q appears %d times", old, strings.Count(src, old))
	}
	return []byte(strings.Replace(src, old, fmt.Sprintf(`"credit": "claude-sonnet-4-input", "value": %d,`, limit), 1))
}

// ---- SDKs ----

func connectSDK(t *testing.T, base, key string, sink *logSink, opts ...limitr.CloudOption) *limitr.Policy {
	t.Helper()
	// Each instance has its own connections, as separate processes would.
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 16
	opts = append([]limitr.CloudOption{limitr.WithBaseURL(base), limitr.WithFlushInterval(100 * time.Millisecond),
		limitr.WithHTTPClient(&http.Client{Transport: tr}), limitr.WithLogger(sink.logger(slog.LevelWarn))}, opts...)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := limitr.Cloud(ctx, key, opts...)
	if err != nil {
		t.Fatalf("limitr.Cloud: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = p.Close(ctx)
		tr.CloseIdleConnections()
	})
	return p
}

// closeAll closes the SDKs (flushing their usage) and returns their final stats.
func closeAll(t *testing.T, sdks []*limitr.Policy, timeout time.Duration) []limitr.SyncStats {
	t.Helper()
	stats := make([]limitr.SyncStats, len(sdks))
	errs := make([]error, len(sdks))
	var wg sync.WaitGroup
	for i, p := range sdks {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			errs[i] = p.Close(ctx)
			stats[i] = p.SyncStats()
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("SDK %d: Close: %v", i+1, err)
		}
	}
	return stats
}

// ---- usage accounting ----

type meterKey struct{ customer, entitlement string }

type counts struct{ units, calls int64 }

// tally counts, client side, what an SDK's Allow calls were allowed.
type tally struct {
	mu     sync.Mutex
	m      map[meterKey]counts
	denied int64
	errs   []error
}

func newTally() *tally { return &tally{m: map[meterKey]counts{}} }

// allow calls Allow and records the outcome.
func (tl *tally) allow(ctx context.Context, p *limitr.Policy, customer, ent string, n int64) (bool, error) {
	ok, err := p.Allow(ctx, customer, ent, float64(n))
	tl.mu.Lock()
	defer tl.mu.Unlock()
	switch {
	case err != nil:
		if len(tl.errs) < 20 {
			tl.errs = append(tl.errs, fmt.Errorf("Allow(%s, %s, %d): %w", customer, ent, n, err))
		}
	case ok:
		k := meterKey{customer, ent}
		c := tl.m[k]
		c.units += n
		c.calls++
		tl.m[k] = c
	default:
		tl.denied++
	}
	return ok, err
}

// allowQuiet is allow for calls expected to fail for a while: errors are returned,
// not recorded.
func (tl *tally) allowQuiet(ctx context.Context, p *limitr.Policy, customer, ent string, n int64) (bool, error) {
	ok, err := p.Allow(ctx, customer, ent, float64(n))
	if err != nil {
		return false, err
	}
	tl.mu.Lock()
	defer tl.mu.Unlock()
	if ok {
		k := meterKey{customer, ent}
		c := tl.m[k]
		c.units += n
		c.calls++
		tl.m[k] = c
	} else {
		tl.denied++
	}
	return ok, nil
}

func (tl *tally) units() int64 {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	var s int64
	for _, c := range tl.m {
		s += c.units
	}
	return s
}

func mergeTallies(ts ...*tally) map[meterKey]counts {
	out := map[meterKey]counts{}
	for _, tl := range ts {
		tl.mu.Lock()
		for k, c := range tl.m {
			o := out[k]
			o.units += c.units
			o.calls += c.calls
			out[k] = o
		}
		tl.mu.Unlock()
	}
	return out
}

func checkNoErrors(t *testing.T, ts ...*tally) {
	t.Helper()
	for i, tl := range ts {
		tl.mu.Lock()
		for _, err := range tl.errs {
			t.Errorf("SDK %d: %v", i+1, err)
		}
		tl.mu.Unlock()
	}
}

// ---- load ----

// streamSpec drives Allow calls of random size on several SDKs until total units were
// allowed (or denied), paced over duration.
type streamSpec struct {
	sdks      []*limitr.Policy
	tallies   []*tally
	customers []string
	ents      []string
	total     int64
	maxAmount int64 // amounts are uniform in 1..maxAmount
	duration  time.Duration
	perSDK    int // goroutines per SDK
	seed      uint64
}

// stream runs the load; progress counts the units handed to Allow so far. It returns
// when the budget is spent or ctx ends.
func (s streamSpec) run(ctx context.Context, progress *atomic.Int64) {
	var budget atomic.Int64
	budget.Store(s.total)
	start := time.Now()
	var wg sync.WaitGroup
	for i, p := range s.sdks {
		for g := range s.perSDK {
			rnd := rand.New(rand.NewPCG(s.seed, uint64(i*1000+g)))
			wg.Go(func() {
				for ctx.Err() == nil {
					n := 1 + rnd.Int64N(s.maxAmount)
					left := budget.Add(-n)
					if left+n <= 0 {
						return
					}
					if left < 0 {
						n += left
					}
					sent := progress.Add(n)
					// Pace: stay at or behind the straight line from 0 to total over duration.
					for ctx.Err() == nil && s.duration > 0 {
						due := float64(s.total) * float64(time.Since(start)) / float64(s.duration)
						if float64(sent) <= due+float64(s.maxAmount) {
							break
						}
						time.Sleep(time.Millisecond)
					}
					c := s.customers[rnd.IntN(len(s.customers))]
					e := s.ents[rnd.IntN(len(s.ents))]
					_, _ = s.tallies[i].allow(context.Background(), p, c, e, n)
				}
			})
		}
	}
	wg.Wait()
}

// ---- server-side checks ----

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}

// waitDrained waits until the worker has folded every usage row.
func waitDrained(t *testing.T, pool *pgxpool.Pool, timeout time.Duration) {
	t.Helper()
	waitFor(t, timeout, "the aggregation backlog to drain", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		b, err := aggregate.Measure(ctx, pool)
		return err == nil && b.Rows == 0
	})
}

func bigInt(t *testing.T, s string) *big.Int {
	t.Helper()
	n, ok := new(big.Int).SetString(s, 10)
	if !ok {
		t.Fatalf("not a whole number: %q", s)
	}
	return n
}

// checkTotals compares meter_aggregates (and the raw usage_deltas) with what the SDKs
// allowed, meter by meter, exactly. It returns the server's total units.
func checkTotals(t *testing.T, pool *pgxpool.Pool, want map[meterKey]counts) int64 {
	t.Helper()
	ctx := context.Background()
	type row struct {
		units string
		calls int64
	}
	read := func(sql string) map[meterKey]row {
		rows, err := pool.Query(ctx, sql)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		out := map[meterKey]row{}
		for rows.Next() {
			var k meterKey
			var r row
			if err := rows.Scan(&k.customer, &k.entitlement, &r.units, &r.calls); err != nil {
				t.Fatal(err)
			}
			out[k] = r
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		return out
	}
	agg := read(`select customer_id, entitlement, sum(units)::text, sum(calls)::bigint from meter_aggregates group by 1, 2`)
	raw := read(`select customer_id, entitlement, sum(units)::text, sum(calls)::bigint from usage_deltas group by 1, 2`)
	var wantUnits, gotUnits int64
	bad := 0
	keys := map[meterKey]bool{}
	for k := range want {
		keys[k] = true
	}
	for k := range agg {
		keys[k] = true
	}
	for k := range raw {
		keys[k] = true
	}
	for k := range keys {
		w := want[k]
		wantUnits += w.units
		a, r := agg[k], raw[k]
		if a.units == "" {
			a.units = "0"
		}
		if r.units == "" {
			r.units = "0"
		}
		au := bigInt(t, a.units)
		gotUnits += au.Int64()
		if au.Int64() != w.units || a.calls != w.calls || bigInt(t, r.units).Int64() != w.units || r.calls != w.calls {
			bad++
			if bad <= 10 {
				t.Errorf("meter %s/%s: SDKs allowed %d units in %d calls; meter_aggregates has %s in %d, usage_deltas %s in %d",
					k.customer, k.entitlement, w.units, w.calls, a.units, a.calls, r.units, r.calls)
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d meters differ; SDKs allowed %d units in total, meter_aggregates holds %d", bad, len(keys), wantUnits, gotUnits)
	}
	var pending int64
	if err := pool.QueryRow(ctx, `select count(*) from usage_deltas where aggregated_at is null`).Scan(&pending); err != nil {
		t.Fatal(err)
	}
	if pending != 0 {
		t.Errorf("%d usage rows are not aggregated", pending)
	}
	return gotUnits
}

// checkBatches checks usage_batches against the SDKs' acknowledgements: one row per
// acknowledged batch (none lost, none twice), sequences without gaps, every delta of
// every batch present, and nothing dropped or rejected. others counts batches posted
// without an SDK.
func checkBatches(t *testing.T, pool *pgxpool.Pool, stats []limitr.SyncStats, others int64) (batches, dups int64) {
	t.Helper()
	ctx := context.Background()
	for i, s := range stats {
		batches += s.Batches
		dups += s.Duplicates
		if s.Dropped != 0 || s.Rejected != 0 || s.Queued != 0 || s.Spilled != 0 || s.Pending != 0 {
			t.Errorf("SDK %d after Close: %+v", i+1, s)
		}
	}
	var rowsN, deltasInBatches, deltaRows int64
	if err := pool.QueryRow(ctx, `select count(*), coalesce(sum(deltas), 0) from usage_batches`).Scan(&rowsN, &deltasInBatches); err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(ctx, `select count(*) from usage_deltas`).Scan(&deltaRows); err != nil {
		t.Fatal(err)
	}
	// Every batch is acknowledged once: as committed, or as a duplicate when an earlier
	// attempt committed and its answer was lost. Either way it is one row.
	if rowsN != batches+others {
		t.Errorf("usage_batches has %d rows; the SDKs were acknowledged %d batches (%d of them as duplicates of a commit whose answer was lost)",
			rowsN-others, batches, dups)
	}
	if deltasInBatches != deltaRows {
		t.Errorf("usage_batches announce %d deltas; usage_deltas has %d rows", deltasInBatches, deltaRows)
	}
	rows, err := pool.Query(ctx, `select instance_id, count(*), max(sequence), min(sequence) from usage_batches group by 1`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var inst string
		var n, hi, lo int64
		if err := rows.Scan(&inst, &n, &hi, &lo); err != nil {
			t.Fatal(err)
		}
		if lo != 1 || hi != n {
			t.Errorf("instance %s: %d batches with sequences %d..%d: a gap or a repeat", inst, n, lo, hi)
		}
	}
	return batches, dups
}

// eachSDK runs f for every SDK concurrently and reports the first error.
func eachSDK(sdks []*limitr.Policy, f func(i int, p *limitr.Policy) error) error {
	errs := make([]error, len(sdks))
	var wg sync.WaitGroup
	for i, p := range sdks {
		wg.Go(func() { errs[i] = f(i, p) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }
