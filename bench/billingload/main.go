// Command billingload benchmarks closing a billing period: N customers on a test clock,
// each with a plan fee and five metered entitlements (flat, tiered, volume, stairstep,
// exchanged credit), all invoiced by one billing.Service.Close that drafts and finalizes
// every invoice. Each size runs on a fresh database, first N/ratio customers, then N, so
// the report shows whether throughput and memory hold as the customers grow.
//
// Usage: eval "$(scripts/services.sh)"; go run ./bench/billingload
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

	"github.com/limitr/limitr/bench"
)

// The budget (DESIGN.md): at least 2,000 invoices/s, and memory flat in the number of
// customers. Flat is read as: ten times the customers may not raise the peak heap in use
// by more than half.
const (
	budgetRate      = 2000
	budgetHeapRatio = 1.5
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func env(names ...string) string {
	for _, n := range names {
		if v := os.Getenv(n); v != "" {
			return v
		}
	}
	return ""
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("billingload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dbURL := fs.String("database-url", env("LIMITR_BENCH_DATABASE_URL", "LIMITR_TEST_DATABASE_URL"), "Postgres admin URL; a fresh database is created next to it per size")
	n := fs.Int("customers", 100000, "customers of the large run (each gets one invoice)")
	ratio := fs.Int("ratio", 10, "the small run has customers/ratio customers (0 or 1: only the large run)")
	analyze := fs.Bool("analyze", true, "ANALYZE after the bulk load, as autovacuum would")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the large run's Close to this file")
	jsonOut := fs.String("json", "", "also write the results as JSON to this file")
	check := fs.Bool("check", false, "exit 1 if the large run misses the budget (≥ 2,000 invoices/s, peak heap ≤ 1.5× the small run's)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "billingload: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *n <= 0 || *ratio < 0 {
		fmt.Fprintln(stderr, "billingload: -customers must be positive and -ratio not negative")
		return 2
	}
	if *dbURL == "" {
		fmt.Fprintln(stderr, "billingload: no database: set LIMITR_TEST_DATABASE_URL (eval \"$(scripts/services.sh)\") or -database-url")
		return 2
	}
	fmt.Fprintf(stdout, "billingload: %s/%s, %d CPUs, GOMAXPROCS=%d; Postgres shares them\n", runtime.GOOS, runtime.GOARCH,
		runtime.NumCPU(), runtime.GOMAXPROCS(0))
	sizes := []int{*n}
	if *ratio > 1 && *n / *ratio > 0 {
		sizes = []int{*n / *ratio, *n}
	}
	var results []bench.BillingResult
	for i, size := range sizes {
		opt := bench.BillingOptions{Customers: size, Analyze: *analyze}
		if *cpuprofile != "" && i == len(sizes)-1 {
			opt.Profile = func() func() {
				f, err := os.Create(*cpuprofile)
				if err != nil {
					fmt.Fprintln(stderr, "billingload:", err)
					return func() {}
				}
				if err := pprof.StartCPUProfile(f); err != nil {
					f.Close()
					fmt.Fprintln(stderr, "billingload:", err)
					return func() {}
				}
				return func() { pprof.StopCPUProfile(); f.Close() }
			}
		}
		r, err := bench.CloseBilling(ctx, *dbURL, opt)
		if err != nil {
			fmt.Fprintf(stderr, "billingload: %d customers: %v\n", size, err)
			return 1
		}
		fmt.Fprintln(stdout, r)
		if p := r.Check.Problems(size); len(p) > 0 {
			for _, s := range p {
				fmt.Fprintf(stderr, "billingload: %d customers: wrong invoices: %s\n", size, s)
			}
			return 1
		}
		fmt.Fprintf(stdout, "  checks: %d finalized invoices numbered 1..%d without gaps, totals sum to %s (= %d × %s), %d audit and %d change-feed entries, %d billed meter periods\n",
			r.Check.Finalized, r.Check.MaxSeq, r.Check.Sum, size, cents(bench.BillingInvoiceCents()), r.Check.Audit, r.Check.Feed, r.Check.Billed)
		results = append(results, r)
	}
	large := results[len(results)-1]
	met := large.Rate() >= budgetRate
	out := map[string]any{"runs": results}
	if len(results) == 2 {
		small := results[0]
		heap := float64(large.HeapPeak) / float64(max(small.HeapPeak, 1))
		rss := float64(large.RSSPeak) / float64(max(small.RSSPeak, 1))
		rate := large.Rate() / max(small.Rate(), 1e-9)
		fmt.Fprintf(stdout, "N=%d vs N=%d (%.0f× the customers): invoices/s %.2f×, peak heap in use %.2f×, peak RSS %.2f×\n",
			large.Customers, small.Customers, float64(large.Customers)/float64(small.Customers), rate, heap, rss)
		out["rate_ratio"], out["heap_peak_ratio"], out["rss_peak_ratio"] = rate, heap, rss
		met = met && heap <= budgetHeapRatio
	}
	if !met {
		fmt.Fprintf(stdout, "  ✗ misses the budget (≥ %d invoices/s, peak heap ≤ %.1f× the small run's)\n", budgetRate, budgetHeapRatio)
	}
	if *jsonOut != "" {
		b, _ := json.MarshalIndent(out, "", "  ")
		if err := os.WriteFile(*jsonOut, b, 0o644); err != nil {
			fmt.Fprintln(stderr, "billingload:", err)
			return 1
		}
	}
	if *check && !met {
		return 1
	}
	return 0
}

func cents(c int64) string { return fmt.Sprintf("%d.%02d", c/100, c%100) }
