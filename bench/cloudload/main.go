// Command cloudload benchmarks cloud sync (issue 5) against the API and worker run in
// this process on 127.0.0.1, each scenario on a fresh database:
//
//	ingest     usage batches → POST /v1/sdk/usage → committed, against raw COPY of the same rows
//	publish    publish-to-enforce latency over SDKs connected with limitr.Cloud
//	lag        aggregation lag (aggregated_at − received_at): the worker idles on an empty table,
//	           then usage arrives in the shape of the stall issue (3 instances, 200 customers,
//	           6,000 deltas/s), then at 20,000 deltas/s; one worker throughout
//	sustained  the issue's shape for a minute: the backlog must be empty within seconds of the end
//	overshoot  a fleet of SDK instances on one customer's hard limit, against the documented bound
//
// Usage: eval "$(scripts/services.sh)"; go run ./bench/cloudload -scenario ingest,publish,lag,overshoot
// bench/README.md explains the method and has the figures.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/limitr/limitr/bench"
	"github.com/limitr/limitr/internal/alerts/alerttest"
	"github.com/limitr/limitr/internal/secrets"
	limitr "github.com/limitr/limitr/sdk/go"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

type config struct {
	scenarios   []string
	databaseURL string
	redisURL    string
	policy      string
	serverLog   string
	jsonOut     string
	cpuprofile  string
	check       bool
	analyze     bool

	customers, senders, batches, batchSize int
	copyAll                                bool

	sdks, publishes int
	gap, pollEvery  time.Duration

	rate, lagSenders    int
	lagDuration, lagInt time.Duration
	idleBatches         int

	issueRate, issueSenders, issueCustomers int
	issueInterval, issueDuration            time.Duration
	sustained, drainBudget, riverDuration   time.Duration
	workerBus                               bool

	instances, limit int
	fleetRate        float64
	fleetConfigs     []flushRefresh
	fleetModes       []limitr.FleetMode
	skew             float64
	fleetTargets     []bool // overshoot: false for the hard limit, true for a shared org cap

	alertCustomers int
	alertPaths     []string
	alertPath      string // the path of the run under way
}

type flushRefresh struct{ flush, refresh time.Duration }

func env(names ...string) string {
	for _, n := range names {
		if v := os.Getenv(n); v != "" {
			return v
		}
	}
	return ""
}

func parse(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("cloudload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	scen := fs.String("scenario", "ingest,publish,lag,overshoot", "comma-separated: ingest, publish, lag, overshoot, sustained, river, alerts (all: every one)")
	fs.StringVar(&c.databaseURL, "database-url", env("LIMITR_BENCH_DATABASE_URL", "LIMITR_TEST_DATABASE_URL"), "Postgres admin URL; a fresh database is created next to it per scenario")
	fs.StringVar(&c.redisURL, "redis-url", env("LIMITR_BENCH_REDIS_URL", "LIMITR_TEST_REDIS_URL"), "Redis URL for the wake-up and fan-out bus (empty: in-process bus)")
	fs.StringVar(&c.policy, "policy", "examples/policies/quickstart-ai.json", "policy for ingest, publish and lag")
	fs.StringVar(&c.serverLog, "server-log", "", "write the server's JSON log here (default: discarded)")
	fs.StringVar(&c.jsonOut, "json", "", "write the results as JSON to this file")
	fs.StringVar(&c.cpuprofile, "cpuprofile", "", "CPU profile of the API part of the ingest run")
	fs.BoolVar(&c.check, "check", false, "exit 1 if a result misses its budget")
	fs.BoolVar(&c.analyze, "analyze", true, "ingest/lag: ANALYZE after creating the customers, as autovacuum would")
	fs.IntVar(&c.customers, "customers", 1000, "ingest/lag: customers the usage is spread over (× 2 metered entitlements)")
	fs.IntVar(&c.senders, "senders", 8, "ingest: concurrent senders (SDK instances)")
	fs.IntVar(&c.batches, "batches", 60, "ingest: batches per sender")
	fs.IntVar(&c.batchSize, "batch-size", 1000, "ingest: deltas per batch (the SDK's default flush size)")
	fs.BoolVar(&c.copyAll, "copy-all", true, "ingest: also time one COPY of all rows on one connection")
	fs.IntVar(&c.sdks, "sdks", 50, "publish: connected SDK instances")
	fs.IntVar(&c.publishes, "publishes", 10, "publish: versions published")
	fs.DurationVar(&c.gap, "gap", 500*time.Millisecond, "publish: pause between publishes")
	fs.DurationVar(&c.pollEvery, "poll", time.Millisecond, "publish: how often every SDK's Version() is read")
	fs.IntVar(&c.rate, "rate", 20000, "lag: deltas per second offered in the second phase")
	fs.DurationVar(&c.lagDuration, "duration", 30*time.Second, "lag: how long the second phase lasts")
	fs.IntVar(&c.lagSenders, "lag-senders", 20, "lag: SDK-like instances in the second phase, each flushing once per -interval")
	fs.DurationVar(&c.lagInt, "interval", time.Second, "lag: each sender's flush interval in the second phase")
	fs.IntVar(&c.idleBatches, "idle-batches", 50, "lag/sustained: empty batches the worker runs (woken every 20 ms) before any usage arrives")
	fs.IntVar(&c.issueRate, "issue-rate", 6000, "lag/sustained: deltas per second in the issue's shape")
	fs.IntVar(&c.issueSenders, "issue-senders", 3, "lag/sustained: SDK instances in the issue's shape")
	fs.DurationVar(&c.issueInterval, "issue-interval", 200*time.Millisecond, "lag/sustained: their flush interval")
	fs.IntVar(&c.issueCustomers, "issue-customers", 200, "lag/sustained: customers the issue's shape spans (of -customers)")
	fs.DurationVar(&c.issueDuration, "issue-duration", 20*time.Second, "lag: how long the first phase (the issue's shape) lasts; 0 skips it")
	fs.DurationVar(&c.sustained, "sustained", time.Minute, "sustained: how long the issue's shape lasts")
	fs.DurationVar(&c.riverDuration, "river-duration", 10*time.Second, "river: how long each rate is offered")
	fs.DurationVar(&c.drainBudget, "drain-budget", 5*time.Second, "sustained: the backlog must be empty this soon after the last POST")
	fs.BoolVar(&c.workerBus, "worker-wakeups", true, "lag/sustained: wake the worker after each commit; false: it only polls every second, as while Redis is down")
	fs.IntVar(&c.instances, "instances", 3, "overshoot: SDK instances serving the customer")
	fs.IntVar(&c.limit, "limit", 10000, "overshoot: the hard limit L")
	fs.Float64Var(&c.fleetRate, "fleet-rate", 1000, "overshoot: Allow(1) calls per second per instance (0: as fast as possible)")
	fs.IntVar(&c.alertCustomers, "alert-customers", 1000, "alerts: customers crossing 80 % of their limit at once")
	paths := fs.String("alert-paths", "usage,notification", "alerts: usage (a usage_percent rule on aggregated usage), notification (a policy notification the SDK forwards), or both")
	configs := fs.String("fleet-configs", "1s/2s,100ms/2s,100ms/100ms", "overshoot: flush/refresh interval pairs, one run each")
	modes := fs.String("fleet-mode", "exact", "overshoot: exact (allowance leases; budget: overshoot 0), bounded (local decisions; budget: the documented bound), or both")
	fs.Float64Var(&c.skew, "skew", 0, "overshoot: share of the fleet's calls on one instance (0.9: 90 %); 0 spreads them evenly")
	targets := fs.String("fleet-target", "limit", "overshoot: limit (one customer's hard limit of L), cap (members of an org, one per instance, spending the org's shared spend cap of L runes), or both")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	for _, m := range strings.Split(*modes, ",") {
		switch strings.TrimSpace(m) {
		case "exact":
			c.fleetModes = append(c.fleetModes, limitr.Exact)
		case "bounded":
			c.fleetModes = append(c.fleetModes, limitr.Bounded)
		case "both":
			c.fleetModes = append(c.fleetModes, limitr.Exact, limitr.Bounded)
		default:
			return c, fmt.Errorf("-fleet-mode: %q: want exact, bounded or both", m)
		}
	}
	switch *targets {
	case "limit":
		c.fleetTargets = []bool{false}
	case "cap":
		c.fleetTargets = []bool{true}
	case "both":
		c.fleetTargets = []bool{false, true}
	default:
		return c, fmt.Errorf("-fleet-target: %q: want limit, cap or both", *targets)
	}
	if c.skew < 0 || c.skew >= 1 {
		return c, fmt.Errorf("-skew: %v: want a share in [0, 1)", c.skew)
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	for s := range strings.SplitSeq(*scen, ",") {
		switch s = strings.TrimSpace(s); s {
		case "ingest", "publish", "lag", "overshoot", "sustained", "river", "alerts":
			c.scenarios = append(c.scenarios, s)
		case "all":
			c.scenarios = append(c.scenarios, "ingest", "publish", "lag", "overshoot", "sustained", "river", "alerts")
		default:
			return c, fmt.Errorf("unknown scenario %q: want ingest, publish, lag, overshoot, sustained, river or alerts", s)
		}
	}
	for p := range strings.SplitSeq(*paths, ",") {
		switch p = strings.TrimSpace(p); p {
		case "usage", "notification":
			c.alertPaths = append(c.alertPaths, p)
		default:
			return c, fmt.Errorf("-alert-paths: %q is not usage or notification", p)
		}
	}
	for p := range strings.SplitSeq(*configs, ",") {
		f, r, ok := strings.Cut(strings.TrimSpace(p), "/")
		fd, err1 := time.ParseDuration(f)
		rd, err2 := time.ParseDuration(r)
		if !ok || err1 != nil || err2 != nil {
			return c, fmt.Errorf("-fleet-configs: %q is not FLUSH/REFRESH, such as 100ms/2s", p)
		}
		c.fleetConfigs = append(c.fleetConfigs, flushRefresh{fd, rd})
	}
	if c.databaseURL == "" {
		return c, fmt.Errorf("no database: set LIMITR_TEST_DATABASE_URL (eval \"$(scripts/services.sh)\") or -database-url")
	}
	return c, nil
}

// Budgets of issue 5.
const (
	budgetIngest      = 50_000 // deltas/s
	budgetIngestRatio = 0.5    // × COPY
	budgetPublishP99  = time.Second
	budgetLagP99      = 5 * time.Second
)

func run(args []string, stdout, stderr io.Writer) int {
	return runContext(context.Background(), args, stdout, stderr)
}

func runContext(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, err := parse(args, stderr)
	if err != nil {
		if err != flag.ErrHelp {
			fmt.Fprintln(stderr, "cloudload:", err)
		}
		return 2
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt)
	defer stop()
	fmt.Fprintf(stdout, "cloudload: %s/%s, %d CPUs, GOMAXPROCS=%d, redis=%v\n", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(),
		runtime.GOMAXPROCS(0), cfg.redisURL != "")
	results := map[string]any{}
	ok := true
	type run struct{ scenario, name, alertPath string }
	var runs []run
	for _, s := range cfg.scenarios {
		if s != "alerts" {
			runs = append(runs, run{s, s, ""})
			continue
		}
		for _, p := range cfg.alertPaths { // one database each: both need customers below 80 %
			runs = append(runs, run{s, s + "/" + p, p})
		}
	}
	for _, r := range runs {
		cfg.alertPath = r.alertPath
		res, met, err := scenario(ctx, cfg, r.scenario, stdout)
		if err != nil {
			fmt.Fprintf(stderr, "cloudload: %s: %v\n", r.name, err)
			return 1
		}
		results[r.name] = res
		if !met {
			ok = false
			fmt.Fprintf(stdout, "  ✗ %s misses its budget\n", r.name)
		}
	}
	if cfg.jsonOut != "" {
		b, _ := json.MarshalIndent(results, "", "  ")
		if err := os.WriteFile(cfg.jsonOut, b, 0o644); err != nil {
			fmt.Fprintln(stderr, "cloudload:", err)
			return 1
		}
	}
	if cfg.check && !ok {
		return 1
	}
	return 0
}

func scenario(ctx context.Context, cfg config, name string, stdout io.Writer) (any, bool, error) {
	dbURL, drop, err := bench.CreateDatabase(ctx, cfg.databaseURL)
	if err != nil {
		return nil, false, err
	}
	defer drop()
	var logOut io.Writer = io.Discard
	if cfg.serverLog != "" {
		f, err := os.OpenFile(cfg.serverLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, false, err
		}
		defer f.Close()
		logOut = f
	}
	rec := &bench.LagRecorder{}
	slack := alerttest.NewSlack()
	defer slack.Close()
	keyring, err := newKeyring()
	if err != nil {
		return nil, false, err
	}
	stack, err := bench.StartStack(ctx, bench.StackConfig{DatabaseURL: dbURL, RedisURL: cfg.redisURL, OperatorToken: "op",
		RateLimit: 1_000_000_000, Log: logOut, Worker: name != "ingest", OnBatch: rec.OnBatch, WorkerPolls: !cfg.workerBus,
		Secrets: keyring, SlackAPIURL: slack.APIURL()})
	if err != nil {
		return nil, false, err
	}
	defer stack.Close()
	client := bench.NewClient(64)
	defer client.CloseIdleConnections()
	var policy []byte
	if name == "overshoot" {
		policy = bench.FleetPolicy(cfg.limit)
	} else if name == "alerts" {
		policy = []byte(bench.AlertPolicy)
	} else if policy, err = os.ReadFile(cfg.policy); err != nil {
		return nil, false, fmt.Errorf("%w (run from the repository root, or pass -policy)", err)
	}
	t, err := bench.Bootstrap(ctx, client, stack.URL, "op", policy)
	if err != nil {
		return nil, false, err
	}
	customers := func() ([]string, error) {
		ids := make([]string, cfg.customers)
		for i := range ids {
			ids[i] = fmt.Sprintf("cus_%05d", i)
		}
		start := time.Now()
		if err := bench.AddCustomers(ctx, client, t, ids, "", 8); err != nil {
			return nil, err
		}
		fmt.Fprintf(stdout, "  (%d customers created in %s; analyze=%v)\n", len(ids), time.Since(start).Round(time.Millisecond), cfg.analyze)
		if cfg.analyze {
			// Steady state: planner statistics as autovacuum keeps them (see bench/README.md).
			if _, err := stack.Pool.Exec(ctx, "analyze"); err != nil {
				return nil, err
			}
		}
		return ids, nil
	}
	switch name {
	case "ingest":
		ids, err := customers()
		if err != nil {
			return nil, false, err
		}
		opt := bench.IngestOptions{Senders: cfg.senders, Batches: cfg.batches, CopyAll: cfg.copyAll}
		if cfg.cpuprofile != "" {
			opt.Profile = func() func() {
				f, err := os.Create(cfg.cpuprofile)
				if err != nil {
					fmt.Fprintln(os.Stderr, "cloudload:", err)
					return func() {}
				}
				if err := pprof.StartCPUProfile(f); err != nil {
					f.Close()
					return func() {}
				}
				return func() { pprof.StopCPUProfile(); f.Close() }
			}
		}
		w := bench.NewWorkload(ids, bench.QuickstartMeters, cfg.batchSize, 1)
		r, err := bench.Ingest(ctx, client, t, stack.Pool, w, opt)
		if err != nil {
			return nil, false, err
		}
		fmt.Fprintln(stdout, r)
		met := r.APIRate() >= budgetIngest && r.APIRate() >= budgetIngestRatio*r.CopyRate() &&
			(r.CopyAllTook == 0 || r.APIRate() >= budgetIngestRatio*r.CopyAllRate())
		return ingestJSON(r), met, nil
	case "publish":
		cust := "pte-user"
		if err := bench.AddCustomers(ctx, client, t, []string{cust}, "starter", 1); err != nil {
			return nil, false, err
		}
		start := time.Now()
		ps, err := bench.ConnectSDKs(ctx, t, cfg.sdks)
		if err != nil {
			return nil, false, err
		}
		defer bench.CloseSDKs(ps)
		for i, p := range ps {
			if _, err := p.Limit(ctx, cust, "ai-chat-input"); err != nil {
				return nil, false, fmt.Errorf("sdk %d: %w", i, err)
			}
		}
		fmt.Fprintf(stdout, "  (%d SDKs connected, streams up, customer hydrated in %s)\n", len(ps), time.Since(start).Round(time.Millisecond))
		r, err := bench.PublishToEnforce(ctx, client, t, ps, policy, bench.PublishOptions{SDKs: cfg.sdks, Publishes: cfg.publishes,
			Gap: cfg.gap, PollEvery: cfg.pollEvery, Timeout: 10 * time.Second, Plan: "starter", Entitlement: "ai-chat-input", Customer: cust})
		if err != nil {
			return nil, false, err
		}
		fmt.Fprintln(stdout, r)
		for i, d := range r.PerPublish {
			fmt.Fprintf(stdout, "    publish %2d: %s\n", i+1, d)
		}
		return r, r.Missed == 0 && r.WrongLimit == 0 && r.Latency.P99 <= budgetPublishP99, nil
	case "lag", "sustained":
		ids, err := customers()
		if err != nil {
			return nil, false, err
		}
		// As in production, the worker has been running since the stack started, and it
		// idles on the empty table before any usage arrives. It is neither warmed on a
		// full table nor restarted between phases.
		idle, every := cfg.idleBatches, 20*time.Millisecond
		if !cfg.workerBus { // it only polls, once a second
			idle, every = min(idle, 8), time.Second
		}
		if err := bench.IdleWorker(ctx, stack, idle, every); err != nil {
			return nil, false, err
		}
		fmt.Fprintf(stdout, "  (the worker ran %d batches on the empty table; wake-ups %v)\n", idle, cfg.workerBus)
		issue := bench.LagOptions{Name: "issue shape", Rate: cfg.issueRate, Duration: cfg.issueDuration,
			Senders: cfg.issueSenders, Interval: cfg.issueInterval}
		phases := []bench.LagOptions{issue, {Name: "20k/s", Rate: cfg.rate, Duration: cfg.lagDuration, Senders: cfg.lagSenders, Interval: cfg.lagInt}}
		if name == "sustained" {
			issue.Name, issue.Duration = "sustained", cfg.sustained
			phases = []bench.LagOptions{issue}
		}
		var out []bench.LagResult
		met := true
		for i, opt := range phases {
			if opt.Duration <= 0 {
				continue
			}
			phaseIDs := ids
			if opt.Name != "20k/s" {
				phaseIDs = ids[:min(cfg.issueCustomers, len(ids))]
			}
			w := bench.NewWorkload(phaseIDs, bench.QuickstartMeters, 0, uint64(2+i))
			r, err := bench.Lag(ctx, client, t, stack.Pool, rec, w, opt)
			if err != nil {
				return out, false, fmt.Errorf("%s: %w", opt.Name, err)
			}
			fmt.Fprintln(stdout, r)
			out = append(out, r)
			ok := r.Received.P99 <= budgetLagP99 && r.Commit.P99 <= budgetLagP99 && r.Achieved() >= 0.95*float64(opt.Rate)
			if name == "sustained" && r.Drained > cfg.drainBudget {
				fmt.Fprintf(stdout, "  ✗ the backlog took %s to empty after the load ended (budget %s)\n", r.Drained.Round(time.Millisecond), cfg.drainBudget)
				ok = false
			}
			met = met && ok
		}
		return out, met, nil
	case "river":
		// What River would add to aggregation if each usage batch inserted a job: the
		// wait from commit to the job starting, at the batch rates the lag scenario's
		// phases send (compare with its commit-to-aggregated lag).
		var out []bench.RiverResult
		for _, o := range []bench.RiverOptions{{Rate: 20, Duration: cfg.riverDuration}, {Rate: 200, Duration: cfg.riverDuration},
			{Rate: 200, Duration: cfg.riverDuration, FetchCooldown: 5 * time.Millisecond}} {
			r, err := bench.RiverLatency(ctx, stack.Pool, o)
			if err != nil {
				return out, false, err
			}
			fmt.Fprintln(stdout, r)
			out = append(out, r)
		}
		return out, true, nil
	case "alerts":
		r, err := bench.Alerts(ctx, client, t, stack.Pool, bench.AlertOptions{Customers: cfg.alertCustomers, Path: cfg.alertPath, Slack: slack})
		if err != nil {
			return nil, false, err
		}
		fmt.Fprintln(stdout, r)
		return r, r.Meets(), nil
	case "overshoot":
		var out []bench.OvershootResult
		met := true
		for _, capped := range cfg.fleetTargets {
			for _, mode := range cfg.fleetModes {
				for _, fr := range cfg.fleetConfigs {
					r, err := bench.Overshoot(ctx, client, t, stack.Pool, bench.OvershootOptions{Instances: cfg.instances, Limit: cfg.limit,
						Rate: cfg.fleetRate, Flush: fr.flush, Refresh: fr.refresh, Mode: mode, Skew: cfg.skew, Cap: capped})
					if err != nil {
						return nil, false, err
					}
					fmt.Fprintln(stdout, r)
					out = append(out, r)
					met = met && r.Meets()
					if mode == limitr.Exact {
						break // the flush and refresh intervals do not change an exact run's outcome
					}
				}
			}
		}
		return out, met, nil
	}
	return nil, false, fmt.Errorf("unknown scenario %q", name)
}

// newKeyring makes the keyring alert channel secrets are sealed with.
func newKeyring() (*secrets.Keyring, error) {
	key, err := secrets.GenerateKey()
	if err != nil {
		return nil, err
	}
	return secrets.ParseKeyring(key)
}

func ingestJSON(r bench.IngestResult) map[string]any {
	return map[string]any{"result": r, "api_deltas_per_s": r.APIRate(), "copy_rows_per_s": r.CopyRate(),
		"copy_all_rows_per_s": r.CopyAllRate(), "api_over_copy": r.APIRate() / r.CopyRate()}
}
