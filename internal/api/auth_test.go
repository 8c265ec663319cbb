package api

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/limitr/limitr/internal/httpx/problem"
	"github.com/limitr/limitr/internal/platform/pgtest"
)

// metricValue reads one series from the server's /metrics, e.g.
// `limitr_api_key_lookups_total{result="unknown"}`; ok is false when it is absent.
func metricValue(t testing.TB, h http.Handler, series string) (v float64, ok bool) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("GET /metrics: %d", rec.Code)
	}
	sc := bufio.NewScanner(bytes.NewReader(rec.Body.Bytes()))
	for sc.Scan() {
		name, value, found := strings.Cut(sc.Text(), " ")
		if found && name == series {
			f, err := strconv.ParseFloat(value, 64)
			if err != nil {
				t.Fatalf("%s: %v", sc.Text(), err)
			}
			return f, true
		}
	}
	return 0, false
}

func lookups(t testing.TB, h http.Handler, result string) float64 {
	t.Helper()
	v, ok := metricValue(t, h, `limitr_api_key_lookups_total{result="`+result+`"}`)
	if !ok {
		t.Fatalf(`limitr_api_key_lookups_total{result=%q} is not exported`, result)
	}
	return v
}

// authDo sends GET /v1/tenant with secret from remote address ip.
func authDo(h http.Handler, secret, ip string, hdr ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodGet, "/v1/tenant", nil)
	req.RemoteAddr = ip + ":40000"
	req.Header.Set("Authorization", "Bearer "+secret)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// unknownSecret is a well-formed admin key that no tenant has.
func unknownSecret(i int) string {
	s := fmt.Sprintf("%032d", i)
	return "lk_admin_" + s[len(s)-32:]
}

// TestUnknownKeyNegativeCache: the same unknown key sent over and over costs Postgres a
// handful of lookups, not one per request; a revoked key stays rejected throughout.
func TestUnknownKeyNegativeCache(t *testing.T) {
	h := newCustHarness(t)
	a := h.bootstrap("acme")
	srv, mh := h.srv.Handler(), h.srv.MetricsHandler()
	const ip = "198.51.100.10"

	if r := authDo(srv, unknownSecret(1), ip); r.Code != 401 {
		t.Fatalf("unknown key: %d %s", r.Code, r.Body)
	}
	if n := lookups(t, mh, "unknown"); n != 1 {
		t.Fatalf("%v unknown lookups after one request, want 1", n)
	}
	for i := range 999 {
		if r := authDo(srv, unknownSecret(1), ip); r.Code != 401 {
			t.Fatalf("request %d with an unknown key: %d %s", i, r.Code, r.Body)
		}
	}
	if n := lookups(t, mh, "unknown"); n > 5 {
		t.Fatalf("1,000 requests with one unknown key cost %v Postgres lookups, want at most 5", n)
	}

	// A revoked key: rejected right after the revocation, and from then on.
	victim, victimID := h.adminKey(a, "victim")
	if r := authDo(srv, victim, ip); r.Code != 200 {
		t.Fatalf("new key: %d %s", r.Code, r.Body)
	}
	if code, body := h.do(http.MethodDelete, "/v1/keys/"+victimID.String(), a.secret, nil); code != 200 {
		t.Fatalf("revoke: %d %s", code, body)
	}
	before := lookups(t, mh, "unknown")
	for i := range 200 {
		if r := authDo(srv, victim, ip); r.Code != 401 {
			t.Fatalf("request %d with a revoked key: %d %s", i, r.Code, r.Body)
		}
	}
	if n := lookups(t, mh, "unknown") - before; n < 1 || n > 5 {
		t.Fatalf("200 requests with a revoked key cost %v lookups, want 1 to 5", n)
	}
	if n := lookups(t, mh, "found"); n < 2 {
		t.Fatalf("%v found lookups: the counter misses successful lookups", n)
	}
	// Valid keys are not affected.
	if r := authDo(srv, a.secret, ip); r.Code != 200 {
		t.Fatalf("valid key: %d %s", r.Code, r.Body)
	}
}

// TestUnknownKeysRateLimitedPerIP: distinct unknown keys (a brute force) from one address
// get 429s after the failure limit, without a Postgres lookup each; other addresses are
// not affected, nor can the caller dodge the limit with X-Forwarded-For.
func TestUnknownKeysRateLimitedPerIP(t *testing.T) {
	h := newCustHarness(t)
	a := h.bootstrap("acme")
	srv, mh := h.srv.Handler(), h.srv.MetricsHandler()
	const ip = "198.51.100.20"
	// Cache a valid key used from the attacking address before the attack.
	if r := authDo(srv, a.secret, ip); r.Code != 200 {
		t.Fatalf("valid key: %d %s", r.Code, r.Body)
	}

	before, _ := metricValue(t, mh, `limitr_api_key_lookups_total{result="unknown"}`)
	var unauthorized, limited int
	for i := range 300 {
		// A forged X-Forwarded-For must not give each request an address of its own.
		r := authDo(srv, unknownSecret(1000+i), ip, "X-Forwarded-For", fmt.Sprintf("10.0.%d.%d", i/250, i%250))
		switch r.Code {
		case 401:
			if limited > 0 {
				t.Fatalf("request %d: 401 after a 429: the limit is not held", i)
			}
			unauthorized++
		case 429:
			limited++
			var p problem.Problem
			if err := json.Unmarshal(r.Body.Bytes(), &p); err != nil || p.Type != problem.TypeBase+"rate-limited" {
				t.Fatalf("429 body: %s", r.Body)
			}
			if s, err := strconv.Atoi(r.Header().Get("Retry-After")); err != nil || s < 1 || s > 60 {
				t.Fatalf("429 Retry-After %q", r.Header().Get("Retry-After"))
			}
		default:
			t.Fatalf("request %d: %d %s", i, r.Code, r.Body)
		}
	}
	t.Logf("%d answered 401, %d answered 429", unauthorized, limited)
	if limited < 200 || unauthorized > 60 {
		t.Fatalf("300 distinct unknown keys from one address: %d 401s and %d 429s; want at most 60 401s", unauthorized, limited)
	}
	spent := lookups(t, mh, "unknown") - before
	if spent > float64(unauthorized)+5 {
		t.Fatalf("%v lookups for %d failures that reached Postgres: rejected requests still query it", spent, unauthorized)
	}

	// Another address is not limited, and the cached valid key still works from the
	// attacking address.
	if r := authDo(srv, unknownSecret(5000), "198.51.100.21"); r.Code != 401 {
		t.Fatalf("unknown key from another address: %d %s", r.Code, r.Body)
	}
	if r := authDo(srv, a.secret, "198.51.100.21"); r.Code != 200 {
		t.Fatalf("valid key from another address: %d %s", r.Code, r.Body)
	}
	if r := authDo(srv, a.secret, ip); r.Code != 200 {
		t.Fatalf("cached valid key from the limited address: %d %s", r.Code, r.Body)
	}
}

// TestUnknownKeysRateLimitedAcrossReplicas: with Redis, the failure limit is shared by
// every replica, so spreading a brute force over them does not multiply it.
func TestUnknownKeysRateLimitedAcrossReplicas(t *testing.T) {
	redisURL := os.Getenv("LIMITR_TEST_REDIS_URL")
	if redisURL == "" {
		t.Skip("LIMITR_TEST_REDIS_URL is not set: run `eval \"$(scripts/services.sh)\"` first")
	}
	opt, err := redis.ParseURL(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	client := redis.NewClient(opt)
	t.Cleanup(func() { _ = client.Close() })
	if err := client.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("redis: %v", err)
	}
	_, pool := pgtest.NewMigrated(t)
	var servers [2]http.Handler
	for i := range servers {
		s, err := New(Config{OperatorToken: "op"}, Deps{Pool: pool, Redis: client, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		servers[i] = s.Handler()
	}
	// Limits live in Redis for a minute: an address of its own keeps runs apart.
	ip := fmt.Sprintf("10.%d.%d.%d", rand.IntN(256), rand.IntN(256), 1+rand.IntN(254))
	var unauthorized, limited int
	for i := range 200 {
		switch r := authDo(servers[i%2], unknownSecret(20_000+i), ip); r.Code {
		case 401:
			unauthorized++
		case 429:
			limited++
		default:
			t.Fatalf("request %d: %d %s", i, r.Code, r.Body)
		}
	}
	t.Logf("%d answered 401, %d answered 429", unauthorized, limited)
	if unauthorized > 60 || limited < 140 {
		t.Fatalf("200 unknown keys over two replicas: %d 401s, %d 429s; want at most 60 401s in all", unauthorized, limited)
	}
}

// TestKeyLookupErrorsNotCached: a lookup that fails (Postgres down) is counted as an error
// and not remembered as an unknown key: the next request asks again.
func TestKeyLookupErrorsNotCached(t *testing.T) {
	server := oaServer(t)
	srv, mh := server.Handler(), server.MetricsHandler()
	for i := range 3 {
		if r := authDo(srv, unknownSecret(1), "198.51.100.30"); r.Code != 503 {
			t.Fatalf("request %d with Postgres down: %d %s", i, r.Code, r.Body)
		}
	}
	if n := lookups(t, mh, "error"); n != 3 {
		t.Fatalf("%v failed lookups counted, want 3", n)
	}
}

// TestUnknownKeysBehindProxy: behind a proxy on a private network, X-Forwarded-For names
// the client, so clients behind one proxy are limited one by one, not all together.
func TestUnknownKeysBehindProxy(t *testing.T) {
	h := newCustHarness(t)
	srv := h.srv.Handler()
	for i := range 100 {
		client := fmt.Sprintf("203.0.113.%d", i)
		if r := authDo(srv, unknownSecret(30_000+i), "10.1.2.3", "X-Forwarded-For", client); r.Code != 401 {
			t.Fatalf("client %d behind the proxy: %d %s", i, r.Code, r.Body)
		}
	}
}

func TestSecretSetBounds(t *testing.T) {
	s := newSecretSet(time.Hour, 100)
	for i := range 1000 {
		s.add(sha256.Sum256([]byte(strconv.Itoa(i))))
		if len(s.m) > 100 {
			t.Fatalf("%d entries, want at most 100", len(s.m))
		}
	}
	last := sha256.Sum256([]byte("999"))
	if !s.has(last) {
		t.Fatal("the newest entry is gone")
	}
	short := newSecretSet(time.Millisecond, 10)
	short.add(last)
	time.Sleep(5 * time.Millisecond)
	if short.has(last) {
		t.Fatal("an expired entry is still there")
	}

	b := newBlockList(10)
	for i := range 100 {
		b.add(strconv.Itoa(i), time.Now().Add(time.Hour))
		if len(b.m) > 10 {
			t.Fatalf("%d blocked addresses, want at most 10", len(b.m))
		}
	}
	if _, ok := b.get("99"); !ok {
		t.Fatal("the newest block is gone")
	}
	b.add("gone", time.Now().Add(-time.Second))
	if _, ok := b.get("gone"); ok {
		t.Fatal("an expired block still holds")
	}
}
