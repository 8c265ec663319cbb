// Command dashload times the dashboard's pages server-side: a tenant with N customers
// and their analytics rollups over D days (as the booker writes them), fired alerts,
// the API with its dashboard in process, a logged-in owner, and R GETs of each page
// through the real handler (p50, p95, max).
//
// Usage: eval "$(scripts/services.sh)"; go run ./bench/dashload
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

// budget is a dashboard page's p95 with 100k customers.
const budget = 100 * time.Millisecond

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("dashload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dbURL := fs.String("database-url", firstEnv("LIMITR_BENCH_DATABASE_URL", "LIMITR_TEST_DATABASE_URL"), "Postgres admin URL; a fresh database is created next to it")
	n := fs.Int("customers", 100000, "customers, each with usage every day")
	days := fs.Int("days", 30, "days of rollups, ending today")
	nAlerts := fs.Int("alerts", 1000, "usage alerts fired")
	nInvoices := fs.Int("invoices", 0, "customers whose ended period is invoiced (billing.Close) before timing")
	runs := fs.Int("runs", 40, "timed GETs of each page")
	jsonOut := fs.String("json", "", "also write the result as JSON to this file")
	check := fs.Bool("check", false, "exit 1 if a page's p95 misses the budget (100 ms)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 || *n <= 0 || *days <= 0 || *runs <= 0 || *nAlerts < 0 {
		fmt.Fprintln(stderr, "dashload: -customers, -days and -runs must be positive; no arguments")
		return 2
	}
	if *dbURL == "" {
		fmt.Fprintln(stderr, "dashload: no database: set LIMITR_TEST_DATABASE_URL (eval \"$(scripts/services.sh)\") or -database-url")
		return 2
	}
	fmt.Fprintf(stdout, "dashload: %s/%s, %d CPUs; Postgres shares them\n", runtime.GOOS, runtime.GOARCH, runtime.NumCPU())
	res, err := bench.Dashboard(ctx, *dbURL, bench.DashboardOptions{Customers: *n, Days: *days, Alerts: *nAlerts, Invoices: *nInvoices, Runs: *runs})
	if err != nil {
		fmt.Fprintln(stderr, "dashload:", err)
		return 1
	}
	fmt.Fprint(stdout, res)
	if *jsonOut != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		if err := os.WriteFile(*jsonOut, b, 0o644); err != nil {
			fmt.Fprintln(stderr, "dashload:", err)
			return 1
		}
	}
	if *check && res.WorstP95() > budget {
		fmt.Fprintf(stdout, "dashload: over budget: p95 %s > %s\n", res.WorstP95().Round(time.Millisecond), budget)
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
