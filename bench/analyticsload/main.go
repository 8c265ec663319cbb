// Command analyticsload benchmarks the margins query: rollups of N customers over D
// days seeded as the analytics booker writes them, then the queries a dashboard sends
// (customers ranked by margin or revenue, a second page, a window by hour, plans,
// entitlements), each timed R times through analytics.Service.Margins.
//
// Usage: eval "$(scripts/services.sh)"; go run ./bench/analyticsload
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
	"time"

	"github.com/limitr/limitr/bench"
)

// budget is the margins query's p95 (DESIGN.md): 30 days × 100k customers.
const budget = 200 * time.Millisecond

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("analyticsload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dbURL := fs.String("database-url", firstEnv("LIMITR_BENCH_DATABASE_URL", "LIMITR_TEST_DATABASE_URL"), "Postgres admin URL; a fresh database is created next to it")
	n := fs.Int("customers", 100000, "customers with usage every day")
	days := fs.Int("days", 30, "days of rollups, ending today; the queries cover them")
	runs := fs.Int("runs", 30, "times each query is timed")
	jsonOut := fs.String("json", "", "also write the result as JSON to this file")
	check := fs.Bool("check", false, "exit 1 if a query's p95 misses the budget (200 ms)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "analyticsload: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *n <= 0 || *days <= 0 || *runs <= 0 {
		fmt.Fprintln(stderr, "analyticsload: -customers, -days and -runs must be positive")
		return 2
	}
	if *dbURL == "" {
		fmt.Fprintln(stderr, "analyticsload: no database: set LIMITR_TEST_DATABASE_URL (eval \"$(scripts/services.sh)\") or -database-url")
		return 2
	}
	fmt.Fprintf(stdout, "analyticsload: %s/%s, %d CPUs; Postgres shares them\n", runtime.GOOS, runtime.GOARCH, runtime.NumCPU())
	res, err := bench.Margins(ctx, *dbURL, bench.MarginsOptions{Customers: *n, Days: *days, Runs: *runs})
	if err != nil {
		fmt.Fprintln(stderr, "analyticsload:", err)
		return 1
	}
	fmt.Fprint(stdout, res)
	if *jsonOut != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		if err := os.WriteFile(*jsonOut, b, 0o644); err != nil {
			fmt.Fprintln(stderr, "analyticsload:", err)
			return 1
		}
	}
	if *check && res.WorstP95() > budget {
		fmt.Fprintf(stdout, "analyticsload: over budget: p95 %s > %s\n", res.WorstP95().Round(time.Millisecond), budget)
		return 1
	}
	return 0
}

func firstEnv(names ...string) string {
	for _, n := range names {
		if v := os.Getenv(n); v != "" {
			return v
		}
	}
	return ""
}
