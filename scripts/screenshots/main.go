// Command screenshots saves PNGs of the dashboard's main pages: it serves the API and
// dashboard in process over a fresh database seeded with demo data (bench.SeedDashboard:
// a tenant, its owner, a published policy, customers with analytics rollups, invoices,
// an alert channel and rule and fired alerts), logs in with headless Chromium and
// captures each page as it renders, whatever state the page is in.
//
// Usage: make screenshots (or eval "$(scripts/services.sh)"; go run ./scripts/screenshots)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"os/signal"
	"path/filepath"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/limitr/limitr/bench"
	"github.com/limitr/limitr/internal/api"
	"github.com/limitr/limitr/internal/billing"
	"github.com/limitr/limitr/internal/customers"
	"github.com/limitr/limitr/internal/platform/pg"
	"github.com/limitr/limitr/internal/policies/pgstore"
	"github.com/limitr/limitr/internal/secrets"
	"github.com/limitr/limitr/internal/web/webtest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "screenshots:", err)
		os.Exit(1)
	}
}

// shot is a page to capture, as docs/screenshots/<name>.png.
type shot struct{ name, path string }

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("screenshots", flag.ContinueOnError)
	out := fs.String("out", "docs/screenshots", "directory for the PNGs")
	dbURL := fs.String("database-url", os.Getenv("LIMITR_TEST_DATABASE_URL"), "Postgres admin URL; a fresh database is created next to it")
	width := fs.Int64("width", 1280, "viewport width in CSS pixels")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dbURL == "" {
		return errors.New("no database: set LIMITR_TEST_DATABASE_URL (eval \"$(scripts/services.sh)\") or -database-url")
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	db, drop, err := bench.CreateDatabase(ctx, *dbURL)
	if err != nil {
		return err
	}
	defer drop()
	pool, err := pg.Connect(ctx, db)
	if err != nil {
		return err
	}
	defer pool.Close()
	spec, err := secrets.GenerateKey()
	if err != nil {
		return err
	}
	kr, err := secrets.ParseKeyring(spec)
	if err != nil {
		return err
	}
	srv, err := api.New(api.Config{OperatorToken: "op"}, api.Deps{Pool: pool, Logger: slog.New(slog.DiscardHandler), Secrets: kr})
	if err != nil {
		return err
	}
	defer srv.Close()
	env, err := bench.SeedDashboard(ctx, pool, kr, bench.DemoOptions{Customers: 48, Days: 30, Alerts: 14, Invoices: 6})
	if err != nil {
		return err
	}
	pols := pgstore.NewService(pool, nil)
	invoices, _, err := billing.NewService(pool, pols, customers.NewService(pool, pols, nil)).List(ctx, env, billing.InvoiceFilter{Limit: 1})
	if err != nil {
		return err
	}
	invoice := "/invoices"
	if len(invoices) > 0 {
		invoice += "/" + invoices[0].ID
	}
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()

	path, err := webtest.ChromiumPath()
	if err != nil {
		return err
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path),
		chromedp.Flag("disable-dev-shm-usage", true), chromedp.Flag("disable-gpu", true), chromedp.Flag("hide-scrollbars", true))
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox)
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	defer cancelAlloc()
	tab, cancelTab := chromedp.NewContext(allocCtx)
	defer cancelTab()
	tab, cancel := context.WithTimeout(tab, 3*time.Minute)
	defer cancel()
	if err := chromedp.Do(tab,
		chromedp.EmulateViewport(*width, 900),
		chromedp.Navigate(hs.URL+"/login"),
		chromedp.WaitVisible("#login"),
		chromedp.SendKeys(`#login input[name="email"]`, bench.DemoOwnerEmail),
		chromedp.SendKeys(`#login input[name="password"]`, bench.DemoPassword),
		chromedp.Click(`#login button[type="submit"]`),
		chromedp.WaitVisible("#nav"),
	); err != nil {
		return fmt.Errorf("log in: %w", err)
	}
	shots := []shot{
		{"overview", "/"},
		{"policies", "/policies"},
		{"customers", "/customers"},
		{"customer", "/customers/" + bench.DemoCustomerID(3)},
		{"invoices", "/invoices"},
		{"invoice", invoice},
		{"alerts", "/alerts"},
		{"alert-deliveries", "/alerts/deliveries"},
		{"settings", "/settings/keys"},
	}
	for _, s := range shots {
		if err := chromedp.Do(tab, chromedp.Navigate(hs.URL+s.path), chromedp.WaitVisible("#main")); err != nil {
			return fmt.Errorf("%s: %w", s.path, err)
		}
		png, err := chromedp.Run(tab, chromedp.FullScreenshot(100)) // quality 100: PNG
		if err != nil {
			return fmt.Errorf("%s: screenshot: %w", s.path, err)
		}
		file := filepath.Join(*out, s.name+".png")
		if err := os.WriteFile(file, png, 0o644); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "screenshots: %s (%s, %d KiB)\n", file, s.path, len(png)/1024)
	}
	return nil
}
