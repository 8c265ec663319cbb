package bench_test

import (
	"context"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/limitr/limitr/bench"
	"github.com/limitr/limitr/internal/platform/pgtest"
)

// TestLoadGeneratorWorks runs every scenario for a moment so the load generator does not
// rot: each must get only its expected status (304 for the poll, 201 for creation) and
// some throughput. The real figures come from `go run ./bench/apiload` (bench/README.md).
func TestLoadGeneratorWorks(t *testing.T) {
	dbURL, _ := pgtest.NewMigrated(t)
	policy, err := os.ReadFile("../examples/policies/quickstart-ai.json")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	opt := bench.Options{Workers: 4, Duration: 300 * time.Millisecond, Warmup: 50 * time.Millisecond}
	if testing.Short() {
		opt.Duration = 150 * time.Millisecond
	}
	type cfg struct {
		name  string
		redis string
	}
	cfgs := []cfg{{"in-process", ""}}
	if r := os.Getenv("LIMITR_TEST_REDIS_URL"); r != "" {
		cfgs = append(cfgs, cfg{"redis", r})
	} else {
		t.Log("LIMITR_TEST_REDIS_URL is not set: only the in-process configuration runs")
	}
	for _, c := range cfgs {
		t.Run(c.name, func(t *testing.T) {
			srv, err := bench.StartServer(ctx, bench.ServerConfig{DatabaseURL: dbURL, RedisURL: c.redis,
				OperatorToken: "op", RateLimit: 1_000_000_000})
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := srv.Close(); err != nil {
					t.Errorf("close: %v", err)
				}
			}()
			if !strings.HasPrefix(srv.URL, "http://127.0.0.1:") {
				t.Fatalf("server at %s, want loopback", srv.URL)
			}
			client := bench.NewClient(opt.Workers)
			defer client.CloseIdleConnections()
			target, err := bench.Bootstrap(ctx, client, srv.URL, "op", policy)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range []bench.Result{
				bench.Poll(ctx, client, target, "poll", opt),
				bench.CreateCustomers(ctx, client, target, "create", opt),
			} {
				t.Log(r)
				want := http.StatusNotModified
				if r.Name == "create" {
					want = http.StatusCreated
				}
				if r.Requests == 0 || r.Errors != 0 || r.Unexpected != 0 || r.Statuses[want] != r.Requests {
					t.Errorf("%s: %v; samples %q", r.Name, r, r.Samples)
				}
				if r.P50 <= 0 || r.P50 > r.P99 || r.P99 > r.Max {
					t.Errorf("%s: percentiles out of order: %v", r.Name, r)
				}
			}
		})
	}
}

// TestRunAgainstStaticHandler checks Run's accounting against a trivial loopback server.
func TestRunAgainstStaticHandler(t *testing.T) {
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Fail") != "" {
			w.WriteHeader(http.StatusTeapot)
			return
		}
		w.WriteHeader(http.StatusNotModified)
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	client := bench.NewClient(2)
	u := "http://" + ln.Addr().String() + "/"
	r := bench.Run(context.Background(), client, "static", http.StatusNotModified,
		bench.Options{Workers: 2, Duration: 100 * time.Millisecond}, func(ctx context.Context, w, i int) (*http.Request, error) {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
			if err == nil && i%10 == 9 {
				req.Header.Set("X-Fail", "1")
			}
			return req, err
		})
	if r.Requests < 10 || r.Errors != 0 {
		t.Fatalf("%v", r)
	}
	if r.Statuses[http.StatusTeapot] != r.Unexpected || r.Unexpected == 0 || r.Statuses[304]+r.Statuses[418] != r.Requests {
		t.Errorf("status accounting: %v", r)
	}
	if r.RPS() <= 0 || r.Meets(0, time.Hour) {
		t.Errorf("a run with unexpected statuses must not meet a budget: %v", r)
	}
}
