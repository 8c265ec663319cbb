// Package bench is a load generator for the control-plane API: the SDK's hot poll path
// (GET /v1/sdk/policy with If-None-Match, answered 304) and customer creation.
//
// It drives any API over HTTP (a running one, or one it starts in this process on
// 127.0.0.1 with StartServer), with N workers on keep-alive connections for a fixed
// duration, and reports throughput, latency percentiles and the status histogram.
// bench/apiload is the command; bench/README.md has the figures.
package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/limitr/limitr/internal/platform/pg"
)

// NewClient returns an HTTP client for load: keep-alive connections, enough idle ones
// per host for every worker, no compression, no HTTP/2.
func NewClient(workers int) *http.Client {
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        2 * workers,
		MaxIdleConnsPerHost: 2 * workers,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// Target is an API with a tenant bootstrapped for the benchmark.
type Target struct {
	BaseURL     string
	Environment string
	AdminKey    string
	SDKKey      string
	ETag        string // of the active policy, quoted as the server sends it
}

// Bootstrap creates a tenant with a random slug through POST /v1/tenants (operator
// token), creates and publishes policy to production, creates an SDK key for it and
// reads the active policy's ETag.
func Bootstrap(ctx context.Context, c *http.Client, baseURL, operatorToken string, policy []byte) (Target, error) {
	t := Target{BaseURL: strings.TrimRight(baseURL, "/"), Environment: "production"}
	slug := "bench-" + randHex(6)
	var boot struct {
		Secret string `json:"secret"`
	}
	if err := call(ctx, c, http.MethodPost, t.BaseURL+"/v1/tenants", operatorToken, "application/json",
		[]byte(`{"slug":"`+slug+`"}`), http.StatusCreated, &boot); err != nil {
		return t, fmt.Errorf("bootstrap tenant: %w", err)
	}
	t.AdminKey = boot.Secret
	var ver struct {
		Number int `json:"number"`
	}
	if err := call(ctx, c, http.MethodPost, t.BaseURL+"/v1/policies", t.AdminKey, "application/json",
		policy, http.StatusCreated, &ver); err != nil {
		return t, fmt.Errorf("create policy: %w", err)
	}
	if err := call(ctx, c, http.MethodPost, t.BaseURL+"/v1/environments/"+t.Environment+"/publish", t.AdminKey,
		"application/json", fmt.Appendf(nil, `{"version":%d}`, ver.Number), http.StatusOK, nil); err != nil {
		return t, fmt.Errorf("publish policy: %w", err)
	}
	var key struct {
		Secret string `json:"secret"`
	}
	if err := call(ctx, c, http.MethodPost, t.BaseURL+"/v1/keys", t.AdminKey, "application/json",
		[]byte(`{"kind":"sdk","environment":"`+t.Environment+`","name":"bench"}`), http.StatusCreated, &key); err != nil {
		return t, fmt.Errorf("create sdk key: %w", err)
	}
	t.SDKKey = key.Secret
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.BaseURL+"/v1/sdk/policy", nil)
	if err != nil {
		return t, err
	}
	req.Header.Set("Authorization", "Bearer "+t.SDKKey)
	res, err := c.Do(req)
	if err != nil {
		return t, fmt.Errorf("get policy: %w", err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	t.ETag = res.Header.Get("ETag")
	if res.StatusCode != http.StatusOK || t.ETag == "" {
		return t, fmt.Errorf("get policy: status %d, ETag %q", res.StatusCode, t.ETag)
	}
	return t, nil
}

func call(ctx context.Context, c *http.Client, method, u, bearer, ctype string, body []byte, want int, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", ctype)
	req.Header.Set("Authorization", "Bearer "+bearer)
	res, err := c.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return err
	}
	if res.StatusCode != want {
		return fmt.Errorf("%s %s: status %d, want %d: %s", method, u, res.StatusCode, want, b)
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// Options shape a run.
type Options struct {
	Workers  int           // concurrent workers, each with its own keep-alive connection
	Duration time.Duration // measured time
	Warmup   time.Duration // unmeasured time before it (connections, caches, JIT of the pool)
}

// Result is one scenario's outcome.
type Result struct {
	Name       string
	Workers    int
	Elapsed    time.Duration
	Requests   int64         // measured requests that got a response
	Errors     int64         // transport errors (no response)
	Unexpected int64         // responses with a status other than the expected one
	Statuses   map[int]int64 // response status histogram
	P50        time.Duration
	P90        time.Duration
	P99        time.Duration
	P999       time.Duration
	Max        time.Duration
	Samples    []string // a few error messages or unexpected bodies
}

// RPS is the measured throughput: responses per second.
func (r Result) RPS() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Requests) / r.Elapsed.Seconds()
}

// Meets reports whether the result is within a budget of throughput and p99, with no
// errors and only the expected status.
func (r Result) Meets(minRPS float64, maxP99 time.Duration) bool {
	return r.Errors == 0 && r.Unexpected == 0 && r.RPS() >= minRPS && r.P99 <= maxP99
}

// String is a one-line summary.
func (r Result) String() string {
	codes := make([]int, 0, len(r.Statuses))
	for c := range r.Statuses {
		codes = append(codes, c)
	}
	sort.Ints(codes)
	var hist []string
	for _, c := range codes {
		hist = append(hist, fmt.Sprintf("%d:%d", c, r.Statuses[c]))
	}
	return fmt.Sprintf("%-22s workers=%-3d %8.0f req/s  n=%-7d p50=%-8s p90=%-8s p99=%-8s p99.9=%-8s max=%-8s errors=%d unexpected=%d statuses=[%s]",
		r.Name, r.Workers, r.RPS(), r.Requests, ms(r.P50), ms(r.P90), ms(r.P99), ms(r.P999), ms(r.Max),
		r.Errors, r.Unexpected, strings.Join(hist, " "))
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d.Microseconds())/1000) }

// RequestFunc builds worker w's i-th request.
type RequestFunc func(ctx context.Context, w, i int) (*http.Request, error)

// Run sends requests from opt.Workers workers, each in a closed loop (next request
// when the last answered), for opt.Warmup and then opt.Duration, and measures the
// second part. Latency is from sending the request to reading the whole body.
func Run(ctx context.Context, c *http.Client, name string, want int, opt Options, build RequestFunc) Result {
	if opt.Workers <= 0 {
		opt.Workers = 1
	}
	outs := make([]workerOut, opt.Workers)
	start := time.Now()
	measureFrom := start.Add(opt.Warmup)
	end := measureFrom.Add(opt.Duration)
	ctx, cancel := context.WithDeadline(ctx, end.Add(10*time.Second)) // a stuck request cannot hang the run
	defer cancel()
	var wg sync.WaitGroup
	for w := range opt.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o := &outs[w]
			o.statuses = map[int]int64{}
			o.lat = make([]time.Duration, 0, 1<<14)
			for i := 0; ; i++ {
				now := time.Now()
				if !now.Before(end) || ctx.Err() != nil {
					return
				}
				measured := !now.Before(measureFrom)
				req, err := build(ctx, w, i)
				if err != nil {
					o.errs++
					o.sample(err.Error())
					return
				}
				t0 := time.Now()
				res, err := c.Do(req)
				var body []byte
				if err == nil {
					if res.StatusCode != want {
						body, _ = io.ReadAll(io.LimitReader(res.Body, 512))
					}
					_, _ = io.Copy(io.Discard, res.Body)
					res.Body.Close()
				}
				d := time.Since(t0)
				if !measured {
					continue
				}
				if err != nil {
					if ctx.Err() == nil {
						o.errs++
						o.sample(err.Error())
					}
					continue
				}
				o.lat = append(o.lat, d)
				o.statuses[res.StatusCode]++
				if res.StatusCode != want {
					o.unex++
					o.sample(fmt.Sprintf("status %d: %s", res.StatusCode, body))
				}
			}
		}()
	}
	wg.Wait()
	r := Result{Name: name, Workers: opt.Workers, Elapsed: opt.Duration, Statuses: map[int]int64{}}
	if stop := time.Since(measureFrom); stop < r.Elapsed {
		r.Elapsed = stop // cancelled early
	}
	var all []time.Duration
	for _, o := range outs {
		all = append(all, o.lat...)
		for s, n := range o.statuses {
			r.Statuses[s] += n
		}
		r.Errors += o.errs
		r.Unexpected += o.unex
		for _, s := range o.samples {
			if len(r.Samples) < 5 {
				r.Samples = append(r.Samples, s)
			}
		}
	}
	r.Requests = int64(len(all))
	if len(all) > 0 {
		slices.Sort(all)
		q := func(p float64) time.Duration { return all[min(len(all)-1, int(p*float64(len(all))))] }
		r.P50, r.P90, r.P99, r.P999, r.Max = q(0.50), q(0.90), q(0.99), q(0.999), all[len(all)-1]
	}
	return r
}

type workerOut struct {
	lat        []time.Duration
	statuses   map[int]int64
	errs, unex int64
	samples    []string
}

func (o *workerOut) sample(s string) {
	if len(o.samples) < 3 {
		o.samples = append(o.samples, s)
	}
}

// Poll is the SDK's hot path: GET /v1/sdk/policy with If-None-Match of the current
// ETag, expecting 304 Not Modified.
func Poll(ctx context.Context, c *http.Client, t Target, name string, opt Options) Result {
	u := t.BaseURL + "/v1/sdk/policy"
	return Run(ctx, c, name, http.StatusNotModified, opt, func(ctx context.Context, _, _ int) (*http.Request, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+t.SDKKey)
		req.Header.Set("If-None-Match", t.ETag)
		return req, nil
	})
}

// CreateCustomers posts new customers (unique ids, the default plan, a little
// metadata) with the SDK key, expecting 201 Created.
func CreateCustomers(ctx context.Context, c *http.Client, t Target, name string, opt Options) Result {
	u := t.BaseURL + "/v1/environments/" + url.PathEscape(t.Environment) + "/customers"
	run := randHex(4)
	return Run(ctx, c, name, http.StatusCreated, opt, func(ctx context.Context, w, i int) (*http.Request, error) {
		body := fmt.Appendf(nil, `{"id":"bench-%s-%d-%d","metadata":{"source":"bench","worker":%d},"timezone":"UTC"}`, run, w, i, w)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+t.SDKKey)
		req.Header.Set("Content-Type", "application/json")
		return req, nil
	})
}

// ServerConfig describes an API server started in this process.
type ServerConfig struct {
	DatabaseURL   string
	RedisURL      string // empty: in-process limiter and fan-out
	OperatorToken string
	// RateLimit per minute per key; set it far above the load so that the benchmark
	// measures the API, not the limiter (the limiter still runs on every request).
	RateLimit int
	// Log receives the server's JSON request log (io.Discard: formatted, not written).
	Log io.Writer
}

// Server is an API server listening on 127.0.0.1.
type Server struct {
	URL   string
	close func() error
}

// Close shuts the server down gracefully.
func (s *Server) Close() error { return s.close() }

// StartServer starts the API the way cmd/api serves it (same handler, pool
// configuration from the URL, Redis client options, net/http server), on 127.0.0.1:0:
// StartStack without the worker. The schema must be migrated.
func StartServer(ctx context.Context, cfg ServerConfig) (*Server, error) {
	st, err := StartStack(ctx, StackConfig{DatabaseURL: cfg.DatabaseURL, RedisURL: cfg.RedisURL,
		OperatorToken: cfg.OperatorToken, RateLimit: cfg.RateLimit, Log: cfg.Log})
	if err != nil {
		return nil, err
	}
	return &Server{URL: st.URL, close: st.Close}, nil
}

// freshPool creates a fresh migrated database next to adminURL's and opens a pool on
// it; closeDB closes the pool and drops the database.
func freshPool(ctx context.Context, adminURL string) (pool *pgxpool.Pool, closeDB func(), err error) {
	dbURL, drop, err := CreateDatabase(ctx, adminURL)
	if err != nil {
		return nil, nil, err
	}
	if pool, err = pg.Connect(ctx, dbURL); err != nil {
		drop()
		return nil, nil, err
	}
	return pool, func() { pool.Close(); drop() }, nil
}

// CreateDatabase creates a fresh database next to adminURL's, migrates it and returns
// its URL and a function that drops it.
func CreateDatabase(ctx context.Context, adminURL string) (string, func(), error) {
	name := "limitr_bench_" + randHex(6)
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return "", nil, err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "create database "+name); err != nil {
		return "", nil, err
	}
	drop := func() {
		dctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if c, err := pgx.Connect(dctx, adminURL); err == nil {
			_, _ = c.Exec(dctx, "drop database if exists "+name+" with (force)")
			c.Close(dctx)
		}
	}
	u, err := url.Parse(adminURL)
	if err != nil {
		drop()
		return "", nil, err
	}
	u.Path = "/" + name
	if err := pg.MigrateUp(ctx, u.String()); err != nil {
		drop()
		return "", nil, err
	}
	return u.String(), drop, nil
}

func randHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}
