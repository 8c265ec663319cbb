// Command apiload load-tests the control-plane API on loopback: the SDK's poll path
// (GET /v1/sdk/policy with If-None-Match → 304) and customer creation.
//
// By default it creates a fresh database from LIMITR_TEST_DATABASE_URL, starts the API
// in this process on 127.0.0.1 (once without Redis, once with LIMITR_TEST_REDIS_URL),
// bootstraps a tenant, publishes examples/policies/quickstart-ai.json, creates an SDK
// key and runs each scenario. With -addr it loads a running API instead (bootstrapping
// with -operator-token). See bench/README.md.
//
//	go run ./bench/apiload -duration 10s -workers 16
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"time"

	"github.com/limitr/limitr/bench"
)

// The budget of issue 4 for the 304 path.
const (
	budgetRPS = 5000
	budgetP99 = 20 * time.Millisecond
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

type scenario struct {
	name  string
	redis bool
	poll  bool
}

var allScenarios = map[string]scenario{
	"poll":         {"poll", false, true},
	"poll-redis":   {"poll-redis", true, true},
	"create":       {"create", false, false},
	"create-redis": {"create-redis", true, false},
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("apiload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "", "base URL of a running API (e.g. http://127.0.0.1:8080); empty starts servers in this process")
	operator := fs.String("operator-token", os.Getenv("LIMITR_OPERATOR_TOKEN"), "operator token of the API at -addr, to bootstrap a tenant")
	dbURL := fs.String("database-url", firstEnv("LIMITR_BENCH_DATABASE_URL", "LIMITR_TEST_DATABASE_URL"), "Postgres URL a fresh benchmark database is created next to (in-process mode)")
	redisURL := fs.String("redis-url", firstEnv("LIMITR_BENCH_REDIS_URL", "LIMITR_TEST_REDIS_URL"), "Redis URL for the *-redis scenarios (in-process mode)")
	scenarios := fs.String("scenarios", "poll,poll-redis,create", "comma-separated: poll, poll-redis, create, create-redis (with -addr: poll, create)")
	duration := fs.Duration("duration", 10*time.Second, "measured time per scenario")
	warmup := fs.Duration("warmup", time.Second, "unmeasured time before each scenario")
	workers := fs.Int("workers", 16, "concurrent workers (connections) for the poll scenarios")
	createWorkers := fs.Int("create-workers", 16, "concurrent workers for the create scenarios")
	rateLimit := fs.Int("rate-limit", 1_000_000_000, "per-key limit per minute of the in-process servers (far above the load: the limiter runs, never denies)")
	policyPath := fs.String("policy", "", "policy to publish (default examples/policies/quickstart-ai.json of the module)")
	serverLog := fs.String("server-log", "", "file for the in-process servers' JSON request log (default: formatted, then discarded)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the measured part of every scenario (server and load generator share this process)")
	jsonOut := fs.String("json", "", "also write the results as JSON to this file")
	check := fs.Bool("check", false, "exit 1 when a poll scenario misses the budget (≥ 5,000 req/s, p99 ≤ 20 ms)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "apiload: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	var list []scenario
	for _, n := range strings.Split(*scenarios, ",") {
		sc, ok := allScenarios[strings.TrimSpace(n)]
		if !ok {
			fmt.Fprintf(stderr, "apiload: unknown scenario %q\n", n)
			return 2
		}
		list = append(list, sc)
	}
	if *addr == "" && *dbURL == "" {
		fmt.Fprintln(stderr, "apiload: set -database-url (or LIMITR_TEST_DATABASE_URL: eval \"$(scripts/services.sh)\"), or -addr")
		return 2
	}
	if *addr != "" && *operator == "" {
		fmt.Fprintln(stderr, "apiload: -addr needs -operator-token (or LIMITR_OPERATOR_TOKEN) to bootstrap a tenant")
		return 2
	}
	policy, err := readPolicy(*policyPath)
	if err != nil {
		fmt.Fprintln(stderr, "apiload:", err)
		return 1
	}
	var logOut io.Writer = io.Discard
	if *serverLog != "" {
		f, err := os.Create(*serverLog)
		if err != nil {
			fmt.Fprintln(stderr, "apiload:", err)
			return 1
		}
		defer f.Close()
		logOut = f
	}

	fmt.Fprintf(stdout, "apiload: %s/%s, GOMAXPROCS=%d, NumCPU=%d, %s per scenario after %s warm-up\n",
		runtime.GOOS, runtime.GOARCH, runtime.GOMAXPROCS(0), runtime.NumCPU(), *duration, *warmup)
	if *addr == "" {
		fmt.Fprintln(stdout, "apiload: the API server, Postgres, Redis and this load generator share these CPUs")
	}

	var results []bench.Result
	failed := false
	var dbFresh string
	if *addr == "" {
		u, drop, err := bench.CreateDatabase(ctx, *dbURL)
		if err != nil {
			fmt.Fprintln(stderr, "apiload: database:", err)
			return 1
		}
		defer drop()
		dbFresh = u
	}
	for _, sc := range list {
		if ctx.Err() != nil {
			break
		}
		w := *workers
		if !sc.poll {
			w = *createWorkers
		}
		c := bench.NewClient(w)
		base := *addr
		op := *operator
		var srv *bench.Server
		if *addr == "" {
			if sc.redis && *redisURL == "" {
				fmt.Fprintf(stdout, "%-22s skipped: no -redis-url (LIMITR_TEST_REDIS_URL)\n", sc.name)
				continue
			}
			rurl := ""
			if sc.redis {
				rurl = *redisURL
			}
			op = "bench-operator-" + sc.name
			srv, err = bench.StartServer(ctx, bench.ServerConfig{DatabaseURL: dbFresh, RedisURL: rurl, OperatorToken: op,
				RateLimit: *rateLimit, Log: logOut})
			if err != nil {
				fmt.Fprintf(stderr, "apiload: %s: start server: %v\n", sc.name, err)
				return 1
			}
			base = srv.URL
		} else if sc.redis {
			fmt.Fprintf(stderr, "apiload: with -addr use poll and create; whether the server uses Redis is its own configuration\n")
			return 2
		}
		target, err := bench.Bootstrap(ctx, c, base, op, policy)
		if err != nil {
			fmt.Fprintf(stderr, "apiload: %s: %v\n", sc.name, err)
			if srv != nil {
				srv.Close()
			}
			return 1
		}
		opt := bench.Options{Workers: w, Duration: *duration, Warmup: *warmup}
		stopProfile := func() {}
		if *cpuProfile != "" {
			stopProfile = profileAfter(*cpuProfile, sc.name, *warmup, stderr)
		}
		var r bench.Result
		if sc.poll {
			r = bench.Poll(ctx, c, target, sc.name, opt)
		} else {
			r = bench.CreateCustomers(ctx, c, target, sc.name, opt)
		}
		stopProfile()
		if srv != nil {
			_ = srv.Close()
		}
		c.CloseIdleConnections()
		results = append(results, r)
		fmt.Fprintln(stdout, r)
		for _, s := range r.Samples {
			fmt.Fprintf(stdout, "    sample: %s\n", s)
		}
		if sc.poll {
			verdict := "within"
			if !r.Meets(budgetRPS, budgetP99) {
				verdict, failed = "MISSES", true
			}
			fmt.Fprintf(stdout, "    %s the budget (≥ %d req/s, p99 ≤ %s, no errors)\n", verdict, budgetRPS, budgetP99)
		}
	}
	if *jsonOut != "" {
		type row struct {
			bench.Result
			RPS float64 `json:"RPS"`
		}
		rows := make([]row, len(results))
		for i, r := range results {
			rows[i] = row{r, r.RPS()}
		}
		b, _ := json.MarshalIndent(rows, "", "  ")
		if err := os.WriteFile(*jsonOut, b, 0o644); err != nil {
			fmt.Fprintln(stderr, "apiload:", err)
			return 1
		}
	}
	if ctx.Err() != nil {
		return 1
	}
	if *check && failed {
		return 1
	}
	return 0
}

// profileAfter starts a CPU profile once the warm-up is over, into file with the
// scenario's name inserted before the extension; the returned func stops it.
func profileAfter(file, name string, warmup time.Duration, stderr io.Writer) func() {
	ext := filepath.Ext(file)
	path := strings.TrimSuffix(file, ext) + "-" + name + ext
	var mu sync.Mutex
	var f *os.File
	t := time.AfterFunc(warmup, func() {
		mu.Lock()
		defer mu.Unlock()
		out, err := os.Create(path)
		if err == nil {
			if err = pprof.StartCPUProfile(out); err != nil {
				out.Close()
			}
		}
		if err != nil {
			fmt.Fprintln(stderr, "apiload: cpuprofile:", err)
			return
		}
		f = out
	})
	return func() {
		t.Stop()
		mu.Lock()
		defer mu.Unlock()
		if f != nil {
			pprof.StopCPUProfile()
			f.Close()
			fmt.Fprintf(stderr, "apiload: CPU profile in %s\n", path)
		}
	}
}

func firstEnv(names ...string) string {
	for _, n := range names {
		if v := os.Getenv(n); v != "" {
			return v
		}
	}
	return ""
}

// readPolicy reads path, or examples/policies/quickstart-ai.json found by walking up
// from the working directory to the module root.
func readPolicy(path string) ([]byte, error) {
	if path != "" {
		return os.ReadFile(path)
	}
	dir, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	for range 10 {
		p := filepath.Join(dir, "examples", "policies", "quickstart-ai.json")
		if b, err := os.ReadFile(p); err == nil {
			return b, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			break
		}
		dir = parent
	}
	return nil, errors.New("examples/policies/quickstart-ai.json not found above the working directory: pass -policy")
}
