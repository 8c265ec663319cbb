package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/limitr/limitr/internal/config"
	"github.com/limitr/limitr/internal/platform/pg"
	"github.com/limitr/limitr/internal/platform/pgtest"
	"github.com/limitr/limitr/internal/secrets"
)

// syncBuffer is a bytes.Buffer safe for the logger writing while the test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// logLines parses every line of the server's log as a JSON object; a line that is not
// JSON fails the test.
func (s *syncBuffer) logLines(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(s.String()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("log line is not JSON: %v\n%s", err, line)
		}
		for _, k := range []string{"time", "level", "msg"} {
			if _, ok := m[k]; !ok {
				t.Errorf("log line without %q: %s", k, line)
			}
		}
		out = append(out, m)
	}
	return out
}

// testConfig is the configuration `api --addr 127.0.0.1:0` would load, on dbURL.
func testConfig(t *testing.T, dbURL string, extra ...string) config.API {
	t.Helper()
	key, err := secrets.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"--addr", "127.0.0.1:0", "--metrics-addr", freeAddr(t), "--database-url", dbURL,
		"--operator-token", "op-secret", "--shutdown-timeout", "10s", "--secret-key", key}, extra...)
	cfg, err := config.LoadAPI(args, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.MigrateOnStart {
		t.Fatal("migrate-on-start should default to true")
	}
	return cfg
}

// freeAddr is a loopback address nothing listens on (for a moment).
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

type running struct {
	base    string
	metrics string // the internal metrics address's base URL
	logs    *syncBuffer
	cancel  context.CancelFunc
	done    chan error
}

// start runs serve in a goroutine and waits until it listens.
func start(t *testing.T, cfg config.API) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{logs: &syncBuffer{}, cancel: cancel, done: make(chan error, 1)}
	ready := make(chan string, 1)
	go func() { r.done <- serve(ctx, cfg, r.logs, ready) }()
	select {
	case addr := <-ready:
		r.base, r.metrics = "http://"+addr, "http://"+cfg.MetricsAddr
	case err := <-r.done:
		cancel()
		t.Fatalf("serve returned before it was ready: %v\nlogs:\n%s", err, r.logs)
	case <-time.After(60 * time.Second):
		cancel()
		t.Fatalf("serve was not ready within 60s\nlogs:\n%s", r.logs)
	}
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(20 * time.Second):
			t.Error("serve did not return within 20s of cancel")
		}
	})
	return r
}

// stop cancels serve's context and returns what serve returned.
func (r *running) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		r.done <- err // for the cleanup
		return err
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not return within 20s of cancel")
		return nil
	}
}

var client = &http.Client{Timeout: 10 * time.Second}

func (r *running) get(t *testing.T, path string, header ...string) (*http.Response, string) {
	t.Helper()
	return r.do(t, http.MethodGet, path, "", header...)
}

func (r *running) do(t *testing.T, method, path, body string, header ...string) (*http.Response, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, r.base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return res, string(b)
}

func findLog(lines []map[string]any, match func(map[string]any) bool) map[string]any {
	for _, l := range lines {
		if match(l) {
			return l
		}
	}
	return nil
}

func msgContains(s string) func(map[string]any) bool {
	return func(l map[string]any) bool {
		m, _ := l["msg"].(string)
		return strings.Contains(m, s)
	}
}

func TestServeProbesMetricsLogsAndRequestIDs(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	cfg := testConfig(t, dbURL)
	r := start(t, cfg)

	res, body := r.get(t, "/healthz")
	if res.StatusCode != http.StatusOK || !strings.Contains(body, `"ok"`) {
		t.Fatalf("/healthz: %d %s", res.StatusCode, body)
	}
	res, body = r.get(t, "/readyz")
	if res.StatusCode != http.StatusOK {
		t.Fatalf("/readyz on a migrated database (migrate-on-start): %d %s", res.StatusCode, body)
	}

	// A request id the caller sends is echoed and logged; without one, the server makes one.
	res, _ = r.get(t, "/healthz", "X-Request-Id", "test-req-0001")
	if got := res.Header.Get("X-Request-Id"); got != "test-req-0001" {
		t.Errorf("X-Request-Id echoed as %q, want test-req-0001", got)
	}
	res, _ = r.get(t, "/healthz")
	generated := res.Header.Get("X-Request-Id")
	if len(generated) < 16 {
		t.Errorf("generated X-Request-Id %q looks too short", generated)
	}
	// An insane id is replaced, not echoed.
	res, _ = r.get(t, "/healthz", "X-Request-Id", "bad id with spaces")
	if got := res.Header.Get("X-Request-Id"); got == "" || strings.Contains(got, " ") {
		t.Errorf("an invalid incoming request id came back as %q", got)
	}
	// Errors are problem details and carry the id too.
	res, body = r.get(t, "/v1/tenant", "X-Request-Id", "test-req-0002")
	if res.StatusCode != http.StatusUnauthorized || res.Header.Get("X-Request-Id") != "test-req-0002" {
		t.Errorf("GET /v1/tenant without a key: %d (X-Request-Id %q) %s", res.StatusCode, res.Header.Get("X-Request-Id"), body)
	}
	if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/problem+json") {
		t.Errorf("401 Content-Type %q, want application/problem+json", ct)
	}
	// A mutating call through the real stack: tenant bootstrap with the operator token.
	res, body = r.do(t, http.MethodPost, "/v1/tenants", `{"slug":"acme"}`, "Authorization", "Bearer op-secret")
	if res.StatusCode != http.StatusCreated || !strings.Contains(body, `"secret"`) {
		t.Fatalf("POST /v1/tenants: %d %s", res.StatusCode, body)
	}

	// Metrics are served on the internal address only, not on the public API.
	if res, _ := r.get(t, "/metrics"); res.StatusCode != http.StatusNotFound {
		t.Fatalf("/metrics on the API address: %d, want 404", res.StatusCode)
	}
	mres, err := http.Get(r.metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	mbody, _ := io.ReadAll(mres.Body)
	mres.Body.Close()
	res, body = mres, string(mbody)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %d", res.StatusCode)
	}
	for _, want := range []string{
		"# TYPE limitr_http_requests_total counter",
		`limitr_http_requests_total{method="GET",route="/healthz",status="200"}`,
		`limitr_http_requests_total{method="GET",route="/v1/tenant",status="401"}`,
		`limitr_http_requests_total{method="POST",route="/v1/tenants",status="201"}`,
		"limitr_http_request_duration_seconds_bucket",
		"go_goroutines",                 // the Go collector
		"process_resident_memory_bytes", // the process collector
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	// /readyz follows the schema: one migration reverted is 503, migrated again is 200.
	ctx := context.Background()
	if err := pg.MigrateDown(ctx, dbURL, 1); err != nil {
		t.Fatal(err)
	}
	res, body = r.get(t, "/readyz")
	if res.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "migrations") {
		t.Errorf("/readyz after migrate down 1: %d %s, want 503 naming migrations", res.StatusCode, body)
	}
	if res, _ := r.get(t, "/healthz"); res.StatusCode != http.StatusOK {
		t.Errorf("/healthz must not depend on the schema: %d", res.StatusCode)
	}
	if err := pg.MigrateUp(ctx, dbURL); err != nil {
		t.Fatal(err)
	}
	res, body = r.get(t, "/readyz")
	if res.StatusCode != http.StatusOK {
		t.Errorf("/readyz after migrate up again: %d %s", res.StatusCode, body)
	}

	if err := r.stop(t); err != nil {
		t.Fatalf("serve returned %v after cancel, want nil", err)
	}

	lines := r.logs.logLines(t)
	if l := findLog(lines, msgContains("no Redis configured")); l == nil {
		t.Errorf("without a Redis URL the log must say so; logs:\n%s", r.logs)
	}
	l := findLog(lines, msgContains("listening"))
	if l == nil {
		t.Fatalf("no listening line; logs:\n%s", r.logs)
	}
	if l["redis"] != false || l["addr"] != strings.TrimPrefix(r.base, "http://") {
		t.Errorf("listening line %v, want redis false and addr %s", l, r.base)
	}
	if findLog(lines, msgContains("shutting down")) == nil {
		t.Error("no shutdown line in the log")
	}
	for _, id := range []string{"test-req-0001", "test-req-0002", generated} {
		l := findLog(lines, func(l map[string]any) bool { return l["msg"] == "http request" && l["request_id"] == id })
		if l == nil {
			t.Errorf("no request log line with request_id %q", id)
			continue
		}
		for _, k := range []string{"method", "route", "status", "duration_ms"} {
			if _, ok := l[k]; !ok {
				t.Errorf("request log line %v lacks %q", l, k)
			}
		}
	}
	// Every request line has a request id.
	n := 0
	for _, l := range lines {
		if l["msg"] == "http request" {
			n++
			if id, _ := l["request_id"].(string); id == "" {
				t.Errorf("request log line without request_id: %v", l)
			}
		}
	}
	if n < 8 {
		t.Errorf("%d request log lines, want at least 8", n)
	}
}

// TestGracefulShutdown proves an in-flight request finishes after serve's context ends:
// the request's body is sent in two parts, the context is cancelled between them, and
// the request still succeeds (the tenant exists) before serve returns nil.
func TestGracefulShutdown(t *testing.T) {
	cfg := testConfig(t, pgtest.NewDatabase(t))
	r := start(t, cfg)
	addr := strings.TrimPrefix(r.base, "http://")

	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	body := `{"slug":"slowpoke","name":"A tenant whose request straddles the shutdown"}`
	half := len(body) / 2
	head := fmt.Sprintf("POST /v1/tenants HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer op-secret\r\n"+
		"Content-Type: application/json\r\nContent-Length: %d\r\nX-Request-Id: slow-1\r\n\r\n", addr, len(body))
	if _, err := io.WriteString(conn, head+body[:half]); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // the server reads the head and waits for the body

	r.cancel()
	// serve must now be draining, not returning: the request is still in flight.
	select {
	case err := <-r.done:
		t.Fatalf("serve returned (%v) while a request was in flight", err)
	case <-time.After(500 * time.Millisecond):
	}
	// New connections are refused once shutdown began.
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Error("a new connection was accepted after shutdown began")
	}

	if _, err := io.WriteString(conn, body[half:]); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("reading the in-flight response: %v", err)
	}
	rb, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusCreated || !strings.Contains(string(rb), `"slowpoke"`) {
		t.Fatalf("in-flight request: %d %s", res.StatusCode, rb)
	}
	if res.Header.Get("X-Request-Id") != "slow-1" {
		t.Errorf("X-Request-Id %q", res.Header.Get("X-Request-Id"))
	}
	if !res.Close {
		t.Error("a response during shutdown should close the connection")
	}

	select {
	case err := <-r.done:
		r.done <- err
		if err != nil {
			t.Fatalf("serve returned %v, want nil", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("serve did not return after the in-flight request finished")
	}
	lines := r.logs.logLines(t)
	l := findLog(lines, func(l map[string]any) bool { return l["request_id"] == "slow-1" })
	if l == nil || l["status"] != float64(201) {
		t.Errorf("request line of the in-flight request: %v", l)
	}
	// The tenant was committed: the database has it.
	pool, err := pg.Connect(context.Background(), cfg.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var n int
	if err := pool.QueryRow(context.Background(), `select count(*) from tenants where slug = 'slowpoke'`).Scan(&n); err != nil || n != 1 {
		t.Errorf("tenant rows: %d, %v", n, err)
	}
}

func TestServeWithRedis(t *testing.T) {
	redisURL := os.Getenv("LIMITR_TEST_REDIS_URL")
	if redisURL == "" {
		t.Skip("LIMITR_TEST_REDIS_URL is not set: run `eval \"$(scripts/services.sh)\"`")
	}
	cfg := testConfig(t, pgtest.NewDatabase(t), "--redis-url", redisURL, "--rate-limit", "1000")
	r := start(t, cfg)
	res, body := r.do(t, http.MethodPost, "/v1/tenants", `{"slug":"redis-co"}`, "Authorization", "Bearer op-secret")
	if res.StatusCode != http.StatusCreated {
		t.Fatalf("POST /v1/tenants: %d %s", res.StatusCode, body)
	}
	var boot struct {
		Secret string `json:"secret"`
	}
	if err := json.Unmarshal([]byte(body), &boot); err != nil {
		t.Fatal(err)
	}
	// The rate limiter answers (from Redis) on authenticated calls.
	res, body = r.get(t, "/v1/tenant", "Authorization", "Bearer "+boot.Secret)
	if res.StatusCode != http.StatusOK || res.Header.Get("RateLimit-Limit") == "" {
		t.Errorf("GET /v1/tenant: %d RateLimit-Limit %q %s", res.StatusCode, res.Header.Get("RateLimit-Limit"), body)
	}
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	lines := r.logs.logLines(t)
	l := findLog(lines, msgContains("listening"))
	if l == nil || l["redis"] != true {
		t.Errorf("listening line %v, want redis true", l)
	}
	if findLog(lines, msgContains("no Redis configured")) != nil {
		t.Error("with Redis the log must not claim there is none")
	}
	if findLog(lines, func(l map[string]any) bool { return l["level"] == "WARN" || l["level"] == "ERROR" }) != nil {
		t.Errorf("warnings with a healthy Redis:\n%s", r.logs)
	}
}

// TestServeWithRedisDown: Redis is optional, so a dead one is a warning, not a failure.
func TestServeWithRedisDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := ln.Addr().String()
	ln.Close()
	cfg := testConfig(t, pgtest.NewDatabase(t), "--redis-url", "redis://"+deadAddr+"/0")
	r := start(t, cfg)
	if res, body := r.get(t, "/readyz"); res.StatusCode != http.StatusOK {
		t.Errorf("/readyz with Redis down: %d %s", res.StatusCode, body)
	}
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	if findLog(r.logs.logLines(t), func(l map[string]any) bool {
		return l["level"] == "WARN" && strings.Contains(fmt.Sprint(l["msg"]), "redis")
	}) == nil {
		t.Errorf("no warning about Redis not answering:\n%s", r.logs)
	}
}

func noEnv(string) string { return "" }

func TestRunBadFlagsExit2(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown flag", []string{"--no-such-flag"}, "no-such-flag"},
		{"serve unknown flag", []string{"serve", "--bogus"}, "bogus"},
		{"no database", nil, "database-url: required"},
		{"not postgres", []string{"--database-url", "mysql://x"}, "postgres://"},
		{"bad rate limit", []string{"--database-url", "postgres://x@127.0.0.1/db", "--rate-limit", "lots"}, "rate-limit"},
		{"bad duration", []string{"--database-url", "postgres://x@127.0.0.1/db", "--shutdown-timeout", "soon"}, "shutdown-timeout"},
		{"bad log level", []string{"--database-url", "postgres://x@127.0.0.1/db", "--log-level", "chatty"}, "log-level"},
		{"bad redis url", []string{"--database-url", "postgres://x@127.0.0.1/db", "--redis-url", "http://x"}, "redis://"},
		{"stray argument", []string{"--database-url", "postgres://x@127.0.0.1/db", "extra"}, "unexpected argument"},
		{"migrate without command", []string{"migrate"}, "usage"},
		{"migrate unknown command", []string{"migrate", "sideways", "--database-url", "postgres://x@127.0.0.1/db"}, "unknown command"},
		{"migrate down not a number", []string{"migrate", "down", "two"}, "not a number"},
		{"migrate without database", []string{"migrate", "up"}, "database-url: required"},
		{"migrate bad flag", []string{"migrate", "up", "--addr", ":1"}, "addr"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := run(ctx, tc.args, noEnv, &stdout, &stderr); code != 2 {
				t.Errorf("run %q = %d, want 2; stderr:\n%s", tc.args, code, stderr.String())
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("run %q: stderr %q lacks %q", tc.args, stderr.String(), tc.want)
			}
		})
	}
}

// TestRunServesUntilCancelled drives the real entry point with the environment only.
func TestRunServesUntilCancelled(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	env := map[string]string{"LIMITR_DATABASE_URL": dbURL, "LIMITR_ADDR": addr, "LIMITR_LOG_LEVEL": "warn", "LIMITR_METRICS_ADDR": "127.0.0.1:0"}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stderr := &syncBuffer{}
	done := make(chan int, 1)
	go func() { done <- run(ctx, nil, func(k string) string { return env[k] }, io.Discard, stderr) }()

	deadline := time.Now().Add(60 * time.Second)
	for {
		res, err := client.Get("http://" + addr + "/readyz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("run did not become ready on %s: %v\n%s", addr, err, stderr)
		}
		select {
		case code := <-done:
			t.Fatalf("run exited %d before it was ready:\n%s", code, stderr)
		case <-time.After(50 * time.Millisecond):
		}
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("run = %d after cancel, want 0:\n%s", code, stderr)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("run did not return after cancel")
	}
	// At level warn, the info lines (listening, requests) are not written.
	if strings.Contains(stderr.String(), "listening") {
		t.Errorf("LIMITR_LOG_LEVEL=warn still logged info lines:\n%s", stderr)
	}
}

// TestRunServeFailsOnUnreachableDatabase: a start-up failure is exit 1 with the reason.
func TestRunServeFailsOnUnreachableDatabase(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stderr bytes.Buffer
	code := run(ctx, []string{"--addr", "127.0.0.1:0", "--database-url", "postgres://nobody@" + dead + "/x?connect_timeout=2"}, noEnv, io.Discard, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "api:") {
		t.Errorf("run against a dead database = %d, want 1; stderr:\n%s", code, stderr.String())
	}
}

func TestMigrateCommands(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	latest, err := pg.LatestVersion()
	if err != nil || latest == 0 {
		t.Fatalf("LatestVersion = %d, %v", latest, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	env := func(k string) string {
		if k == "LIMITR_DATABASE_URL" {
			return dbURL
		}
		return ""
	}
	migrate := func(args ...string) (int, string, string) {
		t.Helper()
		var stdout, stderr bytes.Buffer
		code := run(ctx, append([]string{"migrate"}, args...), env, &stdout, &stderr)
		return code, stdout.String(), stderr.String()
	}
	current := fmt.Sprintf("current: %d", latest)

	if code, out, errOut := migrate("version"); code != 0 || strings.Contains(out, current) || !strings.Contains(out, "binary at") {
		t.Errorf("version on an empty database: %d %q %q", code, out, errOut)
	}
	if code, _, errOut := migrate("up"); code != 0 {
		t.Fatalf("up: %d %s", code, errOut)
	}
	if code, out, errOut := migrate("version"); code != 0 || !strings.Contains(out, current) {
		t.Errorf("version after up: %d %q %q", code, out, errOut)
	}
	if code, _, errOut := migrate("up"); code != 0 {
		t.Errorf("up twice: %d %s", code, errOut)
	}
	if code, _, errOut := migrate("down", "1"); code != 0 {
		t.Fatalf("down 1: %d %s", code, errOut)
	}
	if code, out, _ := migrate("version"); code != 0 || strings.Contains(out, current) {
		t.Errorf("version after down 1: %d %q", code, out)
	}
	// The flag wins over the environment: a bogus env with the right flag works.
	var stdout, stderr bytes.Buffer
	bogus := func(k string) string {
		if k == "LIMITR_DATABASE_URL" {
			return "postgres://nobody@127.0.0.1:1/none"
		}
		return ""
	}
	if code := run(ctx, []string{"migrate", "up", "--database-url", dbURL}, bogus, &stdout, &stderr); code != 0 {
		t.Fatalf("up with --database-url: %d %s", code, stderr.String())
	}
	if code, out, _ := migrate("version"); code != 0 || !strings.Contains(out, current) {
		t.Errorf("version after up with the flag: %d %q", code, out)
	}
	if code, _, errOut := migrate("down"); code != 0 {
		t.Fatalf("down (all): %d %s", code, errOut)
	}
	pool, err := pg.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var tables int
	if err := pool.QueryRow(ctx, `select count(*) from information_schema.tables where table_schema = 'public' and table_name <> 'schema_migrations'`).Scan(&tables); err != nil {
		t.Fatal(err)
	}
	if tables != 0 {
		t.Errorf("%d tables left after migrate down (all)", tables)
	}
	if code, _, errOut := migrate("up"); code != 0 {
		t.Fatalf("up after down: %d %s", code, errOut)
	}
	if err := pg.CheckCurrent(ctx, pool); err != nil {
		t.Errorf("after down and up again: %v", err)
	}
	// A failure to reach the database is exit 1, not a usage error.
	if code := run(ctx, []string{"migrate", "up"}, bogus, &stdout, &stderr); code != 1 {
		t.Errorf("up against a dead database = %d, want 1", code)
	}
}

func TestHelpAndEmptyMigrateArgument(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"--help"}, func(string) string { return "" }, &out, &errOut); code != 0 || strings.Contains(errOut.String(), "help requested") {
		t.Fatalf("--help: exit %d, %s", code, errOut.String())
	}
	errOut.Reset()
	if code := run(context.Background(), []string{"migrate", "down", ""}, func(string) string { return "" }, &out, &errOut); code != 2 {
		t.Fatalf(`migrate down "": exit %d, %s`, code, errOut.String())
	}
}
