// Command simulateload benchmarks the what-if replay job: one month of N customers ×
// 5 entitlements in Postgres (10,000 by default), replayed through the active policy
// and a candidate by the simulations River job, timed from the insert to the stored
// report, on a fresh database.
//
// Usage: eval "$(scripts/services.sh)"; go run ./bench/simulateload
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

// budget is DESIGN.md's: one month × 10k customers × 5 entitlements in ≤ 10 s.
const budget = 10 * time.Second

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("simulateload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dbURL := fs.String("database-url", firstEnv("LIMITR_BENCH_DATABASE_URL", "LIMITR_TEST_DATABASE_URL"), "Postgres admin URL; a fresh database is created next to it")
	n := fs.Int("customers", 10000, "customers, each with one month of 5 metered entitlements")
	jsonOut := fs.String("json", "", "also write the result as JSON to this file")
	check := fs.Bool("check", false, "exit 1 if the job misses the budget (≤ 10 s for 10k customers)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 || *n <= 0 {
		fmt.Fprintln(stderr, "simulateload: -customers must be positive, and no arguments")
		return 2
	}
	if *dbURL == "" {
		fmt.Fprintln(stderr, "simulateload: no database: set LIMITR_TEST_DATABASE_URL (eval \"$(scripts/services.sh)\") or -database-url")
		return 2
	}
	fmt.Fprintf(stdout, "simulateload: %s/%s, %d CPUs, GOMAXPROCS=%d; Postgres shares them\n", runtime.GOOS, runtime.GOARCH,
		runtime.NumCPU(), runtime.GOMAXPROCS(0))
	r, err := bench.ReplaySimulation(ctx, *dbURL, *n)
	if err != nil {
		fmt.Fprintln(stderr, "simulateload:", err)
		return 1
	}
	fmt.Fprintln(stdout, r)
	scaled := time.Duration(float64(r.Job) * 10000 / float64(*n))
	met := scaled <= budget
	fmt.Fprintf(stdout, "budget: ≤ %s for 10k customers: %s (%s scaled to 10k)\n", budget, verdict(met), scaled.Round(time.Millisecond))
	if *jsonOut != "" {
		b, _ := json.MarshalIndent(map[string]any{"run": r, "budget_met": met}, "", "  ")
		if err := os.WriteFile(*jsonOut, b, 0o644); err != nil {
			fmt.Fprintln(stderr, "simulateload:", err)
			return 1
		}
	}
	if *check && !met {
		return 1
	}
	return 0
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

func firstEnv(names ...string) string {
	for _, n := range names {
		if v := os.Getenv(n); v != "" {
			return v
		}
	}
	return ""
}
