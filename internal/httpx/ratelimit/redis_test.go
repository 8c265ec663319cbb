package ratelimit_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/redis/go-redis/v9"

	"github.com/limitr/limitr/internal/httpx/problem"
	"github.com/limitr/limitr/internal/httpx/ratelimit"
)

// testRedis connects to the test Redis and returns a client and a key prefix
// of this test's own; the prefix's keys are deleted at cleanup.
func testRedis(t *testing.T) (*redis.Client, string) {
	t.Helper()
	url := os.Getenv("LIMITR_TEST_REDIS_URL")
	if url == "" {
		t.Skip("LIMITR_TEST_REDIS_URL is not set: run `eval \"$(scripts/services.sh)\"` first (make test does)")
	}
	opt, err := redis.ParseURL(url)
	if err != nil {
		t.Fatalf("LIMITR_TEST_REDIS_URL: %v", err)
	}
	client := redis.NewClient(opt)
	ctx := context.Background()
	if err := client.Ping(ctx).Err(); err != nil {
		t.Fatalf("redis at %s: %v", opt.Addr, err)
	}
	prefix := "limitr_test:ratelimit:" + rand.Text() + ":"
	t.Cleanup(func() {
		ctx := context.Background()
		iter := client.Scan(ctx, 0, prefix+"*", 100).Iterator()
		for iter.Next(ctx) {
			client.Del(ctx, iter.Val())
		}
		_ = client.Close()
	})
	return client, prefix
}

func TestRedisBurstThenDeny(t *testing.T) {
	t.Parallel()
	client, prefix := testRedis(t)
	ctx := context.Background()
	l := ratelimit.NewRedis(client, prefix, 10, time.Second, 3)

	for i := range 3 {
		d, err := l.Allow(ctx, "k")
		if err != nil || !d.Allowed || d.Remaining != 2-i || d.Limit != 10 {
			t.Fatalf("request %d: %+v, %v", i, d, err)
		}
	}
	d, err := l.Allow(ctx, "k")
	if err != nil || d.Allowed || d.Remaining != 0 {
		t.Fatalf("4th: %+v, %v", d, err)
	}
	if d.RetryAfter <= 0 || d.RetryAfter > 100*time.Millisecond {
		t.Fatalf("RetryAfter = %v, want (0, 100ms]", d.RetryAfter)
	}

	// The key expires by itself once the bucket is full again.
	pttl, err := client.PTTL(ctx, prefix+"k").Result()
	if err != nil || pttl <= 0 || pttl > 300*time.Millisecond {
		t.Fatalf("PTTL = %v, %v; want (0, 300ms]", pttl, err)
	}
}

func TestRedisRefill(t *testing.T) {
	t.Parallel()
	client, prefix := testRedis(t)
	ctx := context.Background()
	l := ratelimit.NewRedis(client, prefix, 20, time.Second, 2) // one per 50ms

	for range 2 {
		if d, err := l.Allow(ctx, "k"); err != nil || !d.Allowed {
			t.Fatalf("burst: %+v, %v", d, err)
		}
	}
	d, _ := l.Allow(ctx, "k")
	if d.Allowed {
		t.Fatal("allowed past the burst")
	}
	time.Sleep(d.RetryAfter + 10*time.Millisecond)
	if d, err := l.Allow(ctx, "k"); err != nil || !d.Allowed {
		t.Fatalf("after RetryAfter: %+v, %v", d, err)
	}
	if d, _ := l.Allow(ctx, "k"); d.Allowed {
		t.Fatal("refill gave more than one request")
	}
	// After the whole window the key is gone and the full burst is back.
	time.Sleep(120 * time.Millisecond)
	if n, _ := client.Exists(ctx, prefix+"k").Result(); n != 0 {
		t.Errorf("key still exists after the bucket refilled")
	}
	for range 2 {
		if d, _ := l.Allow(ctx, "k"); !d.Allowed {
			t.Fatal("burst not restored")
		}
	}
}

func TestRedisKeyIsolation(t *testing.T) {
	t.Parallel()
	client, prefix := testRedis(t)
	ctx := context.Background()
	l := ratelimit.NewRedis(client, prefix, 1, time.Minute, 1)
	if d, _ := l.Allow(ctx, "key-a"); !d.Allowed {
		t.Fatal("a denied")
	}
	if d, _ := l.Allow(ctx, "key-a"); d.Allowed {
		t.Fatal("a allowed twice")
	}
	if d, _ := l.Allow(ctx, "key-b"); !d.Allowed {
		t.Fatal("b denied because of a")
	}
	// Another prefix is another limiter.
	other := ratelimit.NewRedis(client, prefix+"other:", 1, time.Minute, 1)
	if d, _ := other.Allow(ctx, "key-a"); !d.Allowed {
		t.Fatal("prefixes not isolated")
	}
}

func TestRedisConcurrentIsAtomic(t *testing.T) {
	t.Parallel()
	client, prefix := testRedis(t)
	l := ratelimit.NewRedis(client, prefix, 25, time.Hour, 25)
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 20 {
				d, err := l.Allow(context.Background(), "shared")
				if err != nil {
					t.Error(err)
					return
				}
				if d.Allowed {
					allowed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if n := allowed.Load(); n != 25 {
		t.Fatalf("allowed %d of 160, want 25", n)
	}
}

func newServer(l ratelimit.Limiter, onError func(error)) *echo.Echo {
	e := echo.New()
	e.HTTPErrorHandler = problem.ErrorHandler(nil)
	e.Use(ratelimit.Middleware(l, func(c echo.Context) string { return c.Request().Header.Get("X-Key") }, onError))
	e.GET("/v1/thing", func(c echo.Context) error { return c.String(http.StatusOK, "ok") })
	return e
}

func get(e *echo.Echo, key string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodGet, "/v1/thing", nil)
	if key != "" {
		req.Header.Set("X-Key", key)
	}
	rec := httptest.NewRecorder()
	e.ServeHTTP(rec, req)
	return rec
}

func TestMiddlewareRedis429(t *testing.T) {
	t.Parallel()
	client, prefix := testRedis(t)
	e := newServer(ratelimit.NewRedis(client, prefix, 2, time.Minute, 2), func(err error) { t.Errorf("onError: %v", err) })

	for i, wantRemaining := range []string{"1", "0"} {
		rec := get(e, "k_1")
		if rec.Code != http.StatusOK || rec.Header().Get(ratelimit.HeaderLimit) != "2" ||
			rec.Header().Get(ratelimit.HeaderRemaining) != wantRemaining {
			t.Fatalf("request %d: %d %v", i, rec.Code, rec.Header())
		}
	}
	rec := get(e, "k_1")
	if rec.Code != http.StatusTooManyRequests {
		t.Fatalf("status %d", rec.Code)
	}
	if ra := rec.Header().Get("Retry-After"); ra != "30" {
		t.Errorf("Retry-After = %q, want 30", ra)
	}
	if rec.Header().Get(ratelimit.HeaderRemaining) != "0" || rec.Header().Get(ratelimit.HeaderLimit) != "2" {
		t.Errorf("headers = %v", rec.Header())
	}
	if ct := rec.Header().Get(echo.HeaderContentType); ct != problem.ContentType {
		t.Errorf("Content-Type = %q", ct)
	}
	var p problem.Problem
	if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil {
		t.Fatal(err)
	}
	if p.Status != 429 || p.Type != problem.TypeBase+"rate-limited" ||
		p.Detail != "rate limit of 2 requests per minute exceeded for this API key; retry after 30 s" {
		t.Errorf("problem = %+v", p)
	}

	// Another key is unaffected; no key means no limit.
	if rec := get(e, "k_2"); rec.Code != http.StatusOK {
		t.Errorf("k_2: %d", rec.Code)
	}
	for range 5 {
		if rec := get(e, ""); rec.Code != http.StatusOK || rec.Header().Get(ratelimit.HeaderLimit) != "" {
			t.Fatalf("unkeyed request limited: %d %v", rec.Code, rec.Header())
		}
	}
}

func TestMiddlewareRetryAfterAtLeastOneSecond(t *testing.T) {
	t.Parallel()
	client, prefix := testRedis(t)
	e := newServer(ratelimit.NewRedis(client, prefix, 100, time.Second, 1), nil)
	get(e, "k")
	rec := get(e, "k")
	if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") != "1" {
		t.Fatalf("status %d, Retry-After %q", rec.Code, rec.Header().Get("Retry-After"))
	}
	if !strings.Contains(rec.Body.String(), "per second exceeded") {
		t.Errorf("body = %s", rec.Body.String())
	}
}

func TestRedisDownFailsOpen(t *testing.T) {
	t.Parallel()
	// Port 1 on loopback: nothing listens, connections are refused at once.
	client := redis.NewClient(&redis.Options{
		Addr:               "127.0.0.1:1",
		MaxRetries:         -1,
		DialTimeout:        200 * time.Millisecond,
		DialerRetries:      1,
		DialerRetryTimeout: time.Millisecond,
	})
	t.Cleanup(func() { _ = client.Close() })
	l := ratelimit.NewRedis(client, "limitr_test:down:", 1, time.Minute, 1)

	if _, err := l.Allow(context.Background(), "k"); err == nil {
		t.Fatal("Allow against a closed port returned no error")
	}

	var mu sync.Mutex
	var errs []error
	e := newServer(l, func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	})
	for i := range 3 {
		if rec := get(e, "k"); rec.Code != http.StatusOK {
			t.Fatalf("request %d: status %d, want fail-open 200", i, rec.Code)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(errs) != 3 {
		t.Fatalf("onError called %d times, want 3", len(errs))
	}
	if !strings.Contains(errs[0].Error(), "ratelimit: redis") || !strings.Contains(errs[0].Error(), "refused") {
		t.Errorf("error = %v", errs[0])
	}
}

func TestMiddlewareMemory(t *testing.T) {
	t.Parallel()
	e := newServer(ratelimit.NewMemory(3, time.Hour, 3), nil)
	for range 3 {
		if rec := get(e, "k"); rec.Code != http.StatusOK {
			t.Fatalf("status %d", rec.Code)
		}
	}
	rec := get(e, "k")
	if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") != "1200" {
		t.Fatalf("status %d, Retry-After %q", rec.Code, rec.Header().Get("Retry-After"))
	}
	if !strings.Contains(rec.Body.String(), "rate limit of 3 requests per hour exceeded") {
		t.Errorf("body = %s", rec.Body.String())
	}
}
