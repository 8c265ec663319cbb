package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/limitr/limitr/internal/platform/pg"
	"github.com/limitr/limitr/internal/store"
)

// runAdmin holds operator commands that talk to the control plane's database directly.
func runAdmin(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "bootstrap" {
		fmt.Fprintln(stderr, "usage: limitr admin bootstrap --tenant SLUG [--name NAME] [--database-url URL]")
		return exitUsage
	}
	fs := newFlags("admin bootstrap", stderr)
	tenant := fs.String("tenant", "", "the new tenant's slug (lowercase letters, digits, dashes)")
	name := fs.String("name", "", "display name (default: the slug)")
	dbURL := fs.String("database-url", os.Getenv("LIMITR_DATABASE_URL"), "Postgres URL (env LIMITR_DATABASE_URL)")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	if err := fs.Parse(args[1:]); err != nil {
		return exitUsage
	}
	if *tenant == "" || *dbURL == "" {
		fmt.Fprintln(stderr, "limitr admin bootstrap: --tenant and --database-url (or LIMITR_DATABASE_URL) are required")
		return exitUsage
	}
	ctx := context.Background()
	pool, err := pg.Open(ctx, *dbURL, true)
	if err != nil {
		fmt.Fprintln(stderr, "limitr admin bootstrap:", err)
		return exitFail
	}
	defer pool.Close()
	out, err := store.New(pool).Bootstrap(ctx, *tenant, *name, "cli")
	if errors.Is(err, store.ErrConflict) {
		fmt.Fprintf(stderr, "limitr admin bootstrap: tenant %q already exists\n", *tenant)
		return exitFail
	}
	if err != nil {
		fmt.Fprintln(stderr, "limitr admin bootstrap:", err)
		return exitFail
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(out)
		return exitOK
	}
	fmt.Fprintf(stdout, "tenant %s (%s) created with environments", out.Tenant.Slug, out.Tenant.ID)
	for _, e := range out.Environments {
		fmt.Fprintf(stdout, " %s", e.Name)
	}
	fmt.Fprintf(stdout, "\nadmin key (shown once, store it now):\n%s\n", out.Secret)
	return exitOK
}
