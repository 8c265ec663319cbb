package idempotency_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/limitr/limitr/internal/httpx/idempotency"
	"github.com/limitr/limitr/internal/httpx/problem"
	"github.com/limitr/limitr/internal/httpx/requestlog"
	"github.com/limitr/limitr/internal/secrets"
)

// testPool creates a fresh database for the test, with the idempotency
// schema, and drops it at cleanup.
func testPool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	url := os.Getenv("LIMITR_TEST_DATABASE_URL")
	if url == "" {
		t.Skip("LIMITR_TEST_DATABASE_URL is not set: run `eval \"$(scripts/services.sh)\"` first (make test does)")
	}
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect to %s: %v", url, err)
	}
	name := "limitr_test_idempotency_" + strings.ToLower(rand.Text()[:12])
	if _, err := admin.Exec(ctx, "create database "+name); err != nil {
		admin.Close(ctx)
		t.Fatalf("create database: %v", err)
	}
	t.Cleanup(func() {
		ctx := context.Background()
		if _, err := admin.Exec(ctx, "drop database if exists "+name+" with (force)"); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
		admin.Close(ctx)
	})

	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.Database = name
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if _, err := pool.Exec(ctx, idempotency.Schema); err != nil {
		t.Fatalf("schema: %v", err)
	}
	return pool
}

// server is an API with one counting POST endpoint behind the middleware.
type server struct {
	e     *echo.Echo
	pool  *pgxpool.Pool
	store *idempotency.PGStore
	calls atomic.Int64

	// fail makes the handler return an unexpected error while > 0.
	fail atomic.Int64
	// block, when set, is closed by the test to let an in-flight handler finish.
	block   chan struct{}
	entered chan struct{}
}

func newServer(t *testing.T, opts ...idempotency.Option) *server {
	t.Helper()
	return newServerOn(t, testPool(t), newKeyring(t), opts...)
}

func newKeyring(t *testing.T) *secrets.Keyring {
	t.Helper()
	k, err := secrets.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	kr, err := secrets.ParseKeyring(k)
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

// newServerOn is a server on pool sealing replies with sealer (nil: keep none).
func newServerOn(t *testing.T, pool *pgxpool.Pool, sealer idempotency.Sealer, opts ...idempotency.Option) *server {
	t.Helper()
	s := &server{pool: pool}
	if sealer == nil {
		s.store = idempotency.NewPGStore(s.pool, nil, opts...)
	} else {
		s.store = idempotency.NewPGStore(s.pool, sealer, opts...)
	}
	e := echo.New()
	e.HTTPErrorHandler = problem.ErrorHandler(nil)
	e.Use(requestlog.Middleware(nil))
	e.Use(func(next echo.HandlerFunc) echo.HandlerFunc { // test recover: 500 on panic
		return func(c echo.Context) (err error) {
			defer func() {
				if r := recover(); r != nil {
					err = fmt.Errorf("panic: %v", r)
				}
			}()
			return next(c)
		}
	})
	e.Use(middleware.BodyLimit("1K"))
	e.Use(idempotency.Middleware(s.store, func(c echo.Context) (string, string, bool) {
		tenant := c.Request().Header.Get("X-Tenant")
		return tenant, c.Request().Header.Get("X-Principal"), tenant != ""
	}))
	handler := func(c echo.Context) error {
		n := s.calls.Add(1)
		if s.entered != nil {
			s.entered <- struct{}{}
			<-s.block
		}
		if s.fail.Load() > 0 {
			s.fail.Add(-1)
			return errors.New("database is down")
		}
		body, err := io.ReadAll(c.Request().Body)
		if err != nil {
			return err
		}
		if string(body) == "panic" {
			panic("handler panicked")
		}
		if string(body) == "missing" {
			return problem.New(http.StatusNotFound, "plan missing does not exist")
		}
		c.Response().Header().Set("ETag", fmt.Sprintf(`"v%d"`, n))
		c.Response().Header().Set(echo.HeaderLocation, fmt.Sprintf("/v1/customers/c_%d", n))
		c.Response().Header().Set("X-Not-Stored", "x")
		return c.JSON(http.StatusCreated, map[string]any{"id": fmt.Sprintf("c_%d", n), "echo": string(body), "at": time.Now().UnixNano()})
	}
	e.POST("/v1/customers", handler)
	e.POST("/v1/other", handler)
	e.PUT("/v1/customers", handler)
	s.e = e
	return s
}

type req struct {
	method, path, body     string
	key, tenant, principal string
	noKey                  bool
}

func (s *server) do(r req) *httptest.ResponseRecorder {
	if r.method == "" {
		r.method = http.MethodPost
	}
	if r.path == "" {
		r.path = "/v1/customers"
	}
	if r.tenant == "" {
		r.tenant = "t_1"
	}
	if r.principal == "" {
		r.principal = "k_1"
	}
	hr := httptest.NewRequest(r.method, r.path, strings.NewReader(r.body))
	hr.Header.Set(echo.HeaderContentType, echo.MIMEApplicationJSON)
	hr.Header.Set("X-Tenant", r.tenant)
	hr.Header.Set("X-Principal", r.principal)
	if !r.noKey {
		hr.Header[idempotency.HeaderKey] = []string{r.key}
	}
	rec := httptest.NewRecorder()
	s.e.ServeHTTP(rec, hr)
	return rec
}

func TestReplayIdentical(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	first := s.do(req{key: "key-1", body: `{"name":"acme"}`})
	if first.Code != http.StatusCreated || first.Header().Get(idempotency.HeaderReplayed) != "" {
		t.Fatalf("first: %d %v %s", first.Code, first.Header(), first.Body)
	}
	second := s.do(req{key: "key-1", body: `{"name":"acme"}`})
	if second.Code != http.StatusCreated || second.Header().Get(idempotency.HeaderReplayed) != "true" {
		t.Fatalf("second: %d %v", second.Code, second.Header())
	}
	if first.Body.String() != second.Body.String() {
		t.Errorf("body differs:\n%s\n%s", first.Body, second.Body)
	}
	for _, h := range []string{echo.HeaderContentType, "ETag", echo.HeaderLocation} {
		if first.Header().Get(h) == "" || first.Header().Get(h) != second.Header().Get(h) {
			t.Errorf("%s: first %q, replay %q", h, first.Header().Get(h), second.Header().Get(h))
		}
	}
	if second.Header().Get("X-Not-Stored") != "" {
		t.Error("unselected header replayed")
	}
	if first.Header().Get(requestlog.Header) == second.Header().Get(requestlog.Header) {
		t.Error("replay reused the first request's id")
	}
	if n := s.calls.Load(); n != 1 {
		t.Errorf("handler ran %d times", n)
	}
	// The handler could read the buffered body.
	if !strings.Contains(first.Body.String(), `"echo":"{\"name\":\"acme\"}"`) {
		t.Errorf("handler did not see the body: %s", first.Body)
	}
}

func TestClientErrorsAreStored(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	first := s.do(req{key: "k", body: "missing"})
	second := s.do(req{key: "k", body: "missing"})
	if first.Code != http.StatusNotFound || second.Code != http.StatusNotFound ||
		first.Body.String() != second.Body.String() || second.Header().Get(idempotency.HeaderReplayed) != "true" ||
		second.Header().Get(echo.HeaderContentType) != problem.ContentType {
		t.Fatalf("first %d %s\nsecond %d %v %s", first.Code, first.Body, second.Code, second.Header(), second.Body)
	}
	if n := s.calls.Load(); n != 1 {
		t.Errorf("handler ran %d times", n)
	}
}

func TestReuseWithDifferentRequest(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	if rec := s.do(req{key: "k", body: `{"a":1}`}); rec.Code != http.StatusCreated {
		t.Fatalf("first: %d", rec.Code)
	}
	for name, r := range map[string]req{
		"body":  {key: "k", body: `{"a":2}`},
		"path":  {key: "k", body: `{"a":1}`, path: "/v1/other"},
		"query": {key: "k", body: `{"a":1}`, path: "/v1/customers?dry_run=true"},
	} {
		rec := s.do(r)
		if rec.Code != http.StatusUnprocessableEntity {
			t.Fatalf("%s: %d %s", name, rec.Code, rec.Body)
		}
		var p problem.Problem
		if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(p.Detail, "Idempotency-Key reused with a different request") || p.Type != problem.TypeBase+"idempotency-key-reused" {
			t.Errorf("%s: problem %+v", name, p)
		}
	}
	if n := s.calls.Load(); n != 1 {
		t.Errorf("handler ran %d times", n)
	}
}

func TestConcurrentInFlight(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	s.entered = make(chan struct{})
	s.block = make(chan struct{})

	done := make(chan *httptest.ResponseRecorder)
	go func() { done <- s.do(req{key: "k", body: "x"}) }()
	<-s.entered // the first request is in the handler

	rec := s.do(req{key: "k", body: "x"})
	if rec.Code != http.StatusConflict || rec.Header().Get("Retry-After") != "1" {
		t.Fatalf("in flight: %d %v %s", rec.Code, rec.Header(), rec.Body)
	}
	if !strings.Contains(rec.Body.String(), "idempotency-key-in-use") {
		t.Errorf("body = %s", rec.Body)
	}
	close(s.block)
	first := <-done
	if first.Code != http.StatusCreated {
		t.Fatalf("first: %d", first.Code)
	}
	s.entered = nil
	if rec := s.do(req{key: "k", body: "x"}); rec.Code != http.StatusCreated || rec.Body.String() != first.Body.String() {
		t.Fatalf("replay after completion: %d %s", rec.Code, rec.Body)
	}
	if n := s.calls.Load(); n != 1 {
		t.Errorf("handler ran %d times", n)
	}
}

func TestServerErrorNotStored(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	s.fail.Store(1)
	if rec := s.do(req{key: "k", body: "x"}); rec.Code != http.StatusInternalServerError {
		t.Fatalf("first: %d", rec.Code)
	}
	var rows int
	if err := s.pool.QueryRow(context.Background(), "select count(*) from idempotency_keys").Scan(&rows); err != nil || rows != 0 {
		t.Fatalf("rows after 5xx = %d, %v", rows, err)
	}
	retry := s.do(req{key: "k", body: "x"})
	if retry.Code != http.StatusCreated || retry.Header().Get(idempotency.HeaderReplayed) != "" {
		t.Fatalf("retry: %d %v", retry.Code, retry.Header())
	}
	replay := s.do(req{key: "k", body: "x"})
	if replay.Header().Get(idempotency.HeaderReplayed) != "true" || replay.Body.String() != retry.Body.String() {
		t.Fatalf("replay: %d %v", replay.Code, replay.Header())
	}
	if n := s.calls.Load(); n != 2 {
		t.Errorf("handler ran %d times, want 2", n)
	}
}

func TestPanicReleasesKey(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	if rec := s.do(req{key: "k", body: "panic"}); rec.Code != http.StatusInternalServerError {
		t.Fatalf("panic: %d", rec.Code)
	}
	if rec := s.do(req{key: "k", body: "panic"}); rec.Code != http.StatusInternalServerError || rec.Header().Get(idempotency.HeaderReplayed) != "" {
		t.Fatalf("retry after panic: %d %v", rec.Code, rec.Header())
	}
	if n := s.calls.Load(); n != 2 {
		t.Errorf("handler ran %d times, want 2", n)
	}
}

func TestExpiryAndPurge(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	ctx := context.Background()
	first := s.do(req{key: "old", body: "x"})
	s.do(req{key: "fresh", body: "x"})
	if _, err := s.pool.Exec(ctx, `update idempotency_keys set created_at = now() - interval '25 hours' where key = 'old'`); err != nil {
		t.Fatal(err)
	}

	// An expired key is ignored and overwritten, even with another body.
	again := s.do(req{key: "old", body: "x"})
	if again.Code != http.StatusCreated || again.Header().Get(idempotency.HeaderReplayed) != "" || again.Body.String() == first.Body.String() {
		t.Fatalf("expired key replayed: %d %v", again.Code, again.Header())
	}
	if _, err := s.pool.Exec(ctx, `update idempotency_keys set created_at = now() - interval '25 hours' where key = 'old'`); err != nil {
		t.Fatal(err)
	}
	if rec := s.do(req{key: "old", body: "different"}); rec.Code != http.StatusCreated {
		t.Fatalf("expired key with another body: %d", rec.Code)
	}
	if n := s.calls.Load(); n != 4 {
		t.Errorf("handler ran %d times, want 4", n)
	}

	if _, err := s.pool.Exec(ctx, `update idempotency_keys set created_at = now() - interval '25 hours' where key = 'old'`); err != nil {
		t.Fatal(err)
	}
	n, err := s.store.Purge(ctx, idempotency.DefaultTTL)
	if err != nil || n != 1 {
		t.Fatalf("Purge = %d, %v", n, err)
	}
	rows, _ := s.pool.Query(ctx, "select key from idempotency_keys")
	keys, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || len(keys) != 1 || keys[0] != "fresh" {
		t.Fatalf("keys after purge = %v, %v", keys, err)
	}
}

func TestAbandonedInFlightTakenOverAfterLease(t *testing.T) {
	t.Parallel()
	s := newServer(t, idempotency.WithLease(time.Minute))
	ctx := context.Background()
	scope := idempotency.Scope{Tenant: "t_1", Principal: "k_1", Key: "k", Method: http.MethodPost, Path: "/v1/customers"}
	// A request that began and whose process died.
	if _, existing, err := s.store.Begin(ctx, scope, idempotency.RequestHash(scope.Method, scope.Path, []byte("x"))); err != nil || existing {
		t.Fatalf("Begin = %v, %v", existing, err)
	}
	if rec := s.do(req{key: "k", body: "x"}); rec.Code != http.StatusConflict {
		t.Fatalf("within lease: %d", rec.Code)
	}
	if _, err := s.pool.Exec(ctx, `update idempotency_keys set created_at = now() - interval '2 minutes'`); err != nil {
		t.Fatal(err)
	}
	if rec := s.do(req{key: "k", body: "x"}); rec.Code != http.StatusCreated {
		t.Fatalf("after lease: %d %s", rec.Code, rec.Body)
	}
	// The dead request can no longer complete the key it lost.
	if err := s.store.Complete(ctx, scope, idempotency.Response{Status: 200}); !errors.Is(err, idempotency.ErrNotInFlight) {
		t.Fatalf("Complete after takeover = %v", err)
	}
}

func TestScopeIsolation(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	a := s.do(req{key: "shared", body: "x", tenant: "t_a", principal: "k_1"})
	b := s.do(req{key: "shared", body: "x", tenant: "t_b", principal: "k_1"})
	c := s.do(req{key: "shared", body: "other", tenant: "t_a", principal: "k_2"})
	for i, rec := range []*httptest.ResponseRecorder{a, b, c} {
		if rec.Code != http.StatusCreated || rec.Header().Get(idempotency.HeaderReplayed) != "" {
			t.Fatalf("request %d: %d %v", i, rec.Code, rec.Header())
		}
	}
	if a.Body.String() == b.Body.String() {
		t.Error("tenants share a response")
	}
	if n := s.calls.Load(); n != 3 {
		t.Errorf("handler ran %d times, want 3", n)
	}
	if rec := s.do(req{key: "shared", body: "x", tenant: "t_b", principal: "k_1"}); rec.Body.String() != b.Body.String() {
		t.Error("tenant b's replay is not its own response")
	}
}

func TestPassThroughAndValidation(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	// No key, or not a POST: runs every time, nothing stored.
	for range 2 {
		if rec := s.do(req{noKey: true, body: "x"}); rec.Code != http.StatusCreated {
			t.Fatalf("no key: %d", rec.Code)
		}
		if rec := s.do(req{method: http.MethodPut, key: "k", body: "x"}); rec.Code != http.StatusCreated || rec.Header().Get(idempotency.HeaderReplayed) != "" {
			t.Fatalf("PUT: %d", rec.Code)
		}
	}
	if n := s.calls.Load(); n != 4 {
		t.Errorf("handler ran %d times, want 4", n)
	}
	for _, key := range []string{"", strings.Repeat("k", 256), "tab\tkey", "ключ", "nul\x00"} {
		rec := s.do(req{key: key, body: "x"})
		if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), "invalid-idempotency-key") {
			t.Errorf("key %q: %d %s", key, rec.Code, rec.Body)
		}
	}
	if rec := s.do(req{key: strings.Repeat("k", 255), body: "x"}); rec.Code != http.StatusCreated {
		t.Errorf("255-char key: %d", rec.Code)
	}
	if rec := s.do(req{key: "with space ~!", body: "x"}); rec.Code != http.StatusCreated {
		t.Errorf("printable key: %d", rec.Code)
	}
}

func TestBodyTooLarge(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	hr := httptest.NewRequest(http.MethodPost, "/v1/customers", io.MultiReader(strings.NewReader(strings.Repeat("x", 2048))))
	hr.ContentLength = -1 // unknown length: the limit trips while reading
	hr.Header.Set("X-Tenant", "t_1")
	hr.Header.Set(idempotency.HeaderKey, "big")
	rec := httptest.NewRecorder()
	s.e.ServeHTTP(rec, hr)
	if rec.Code != http.StatusRequestEntityTooLarge {
		t.Fatalf("status %d %s", rec.Code, rec.Body)
	}
	if n := s.calls.Load(); n != 0 {
		t.Errorf("handler ran %d times", n)
	}
}

func TestConcurrentFirstRequests(t *testing.T) {
	t.Parallel()
	s := newServer(t)
	var wg sync.WaitGroup
	codes := make([]int, 8)
	for i := range codes {
		wg.Go(func() { codes[i] = s.do(req{key: "race", body: "x"}).Code })
	}
	wg.Wait()
	created := 0
	for _, c := range codes {
		switch c {
		case http.StatusCreated:
			created++
		case http.StatusConflict:
		default:
			t.Errorf("unexpected status %d", c)
		}
	}
	if n := s.calls.Load(); n != 1 || created < 1 {
		t.Fatalf("handler ran %d times, %d created (%v)", n, created, codes)
	}
}
