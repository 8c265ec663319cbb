package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/limitr/limitr/internal/platform/pg"
	"github.com/limitr/limitr/internal/secrets"
	"github.com/limitr/limitr/internal/store"
	"github.com/limitr/limitr/internal/tenancy"
)

// adminCommands are the operator commands. Those that take a database talk to the
// control plane's Postgres directly, through the same tenancy service as the API, and
// record their changes in the audit log with no actor key and request id "cli".
func adminCommands() []command {
	return []command{
		{"bootstrap", "--tenant SLUG [--name NAME] [--database-url URL] [--json]", "create a tenant with its environments and first admin key", runAdminBootstrap},
		{"create-key", "--tenant SLUG [--kind admin|sdk] [--environment ENV] [--name NAME] [--database-url URL] [--json]",
			"create an API key for a tenant, e.g. to recover one locked out of its admin keys", runAdminCreateKey},
		{"create-user", "--tenant SLUG|ID --email EMAIL [--role owner|admin|editor|billing|viewer] [--name NAME] [--password-stdin] [--database-url URL]",
			"create a dashboard user who is a member of a tenant, e.g. its first owner", runAdminCreateUser(os.Stdin)},
		{"gen-secret-key", "[--id ID]", "print a new key for LIMITR_SECRET_KEY (put it first in the list to rotate)", runAdminGenSecretKey},
	}
}

// cliRequestID stands for the request id in the audit entries of CLI changes, which are
// made by an operator, with no actor key.
const cliRequestID = "cli"

func runAdmin(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		for _, c := range adminCommands() {
			if c.name == args[0] {
				return c.run(args[1:], stdout, stderr)
			}
		}
	}
	fmt.Fprintln(stderr, "usage:")
	for _, c := range adminCommands() {
		fmt.Fprintf(stderr, "  limitr admin %s %s\n      %s\n", c.name, c.args, c.summary)
	}
	return exitUsage
}

// databaseFlag adds --database-url, defaulting to LIMITR_DATABASE_URL.
func databaseFlag(fs *flag.FlagSet) *string {
	return fs.String("database-url", os.Getenv("LIMITR_DATABASE_URL"), "Postgres URL (env LIMITR_DATABASE_URL)")
}

func runAdminBootstrap(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("admin bootstrap", stderr)
	tenant := fs.String("tenant", "", "the new tenant's slug (lowercase letters, digits, dashes)")
	name := fs.String("name", "", "display name (default: the slug)")
	dbURL := databaseFlag(fs)
	asJSON := fs.Bool("json", false, "print the result as JSON")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if *tenant == "" || *dbURL == "" {
		fmt.Fprintln(stderr, "limitr admin bootstrap: --tenant and --database-url (or LIMITR_DATABASE_URL) are required")
		return exitUsage
	}
	ctx := store.WithActor(context.Background(), store.Actor{RequestID: cliRequestID})
	// Bootstrap is the first command run against a new database: it migrates.
	pool, err := pg.Open(ctx, *dbURL, true)
	if err != nil {
		fmt.Fprintln(stderr, "limitr admin bootstrap:", err)
		return exitFail
	}
	defer pool.Close()
	out, err := tenancy.NewService(pool).CreateTenant(ctx, tenancy.CreateTenantInput{Slug: *tenant, Name: *name})
	if err != nil {
		fmt.Fprintln(stderr, "limitr admin bootstrap:", tenancyMessage(err))
		return exitFail
	}
	if *asJSON {
		return printJSON(stdout, out)
	}
	fmt.Fprintf(stdout, "tenant %s (%s) created with environments", out.Tenant.Slug, out.Tenant.ID)
	for _, e := range out.Environments {
		fmt.Fprintf(stdout, " %s", e.Name)
	}
	fmt.Fprintf(stdout, "\nadmin key (shown once, store it now):\n%s\n", out.Secret)
	return exitOK
}

func runAdminCreateKey(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("admin create-key", stderr)
	tenant := fs.String("tenant", "", "the tenant's slug")
	kind := fs.String("kind", tenancy.KindAdmin, "admin or sdk")
	env := fs.String("environment", "", "the environment of an sdk key")
	name := fs.String("name", "", "display name of the key")
	dbURL := databaseFlag(fs)
	asJSON := fs.Bool("json", false, "print the key as JSON")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if *tenant == "" || *dbURL == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "limitr admin create-key: --tenant and --database-url (or LIMITR_DATABASE_URL) are required, and nothing else")
		return exitUsage
	}
	ctx := store.WithActor(context.Background(), store.Actor{RequestID: cliRequestID})
	// Not migrated: this runs against a live control plane, whose schema its own
	// binaries manage.
	pool, err := pg.Open(ctx, *dbURL, false)
	if err != nil {
		fmt.Fprintln(stderr, "limitr admin create-key:", err)
		return exitFail
	}
	defer pool.Close()
	k, err := createKey(ctx, pool, *tenant, tenancy.CreateKeyInput{Kind: *kind, Environment: *env, Name: *name})
	if err != nil {
		fmt.Fprintln(stderr, "limitr admin create-key:", tenancyMessage(err))
		return exitFail
	}
	if *asJSON {
		return printJSON(stdout, k)
	}
	where := ""
	if k.Environment != "" {
		where = " for environment " + k.Environment
	}
	fmt.Fprintf(stdout, "%s key %s created for tenant %s%s\nsecret (shown once, store it now):\n%s\n", k.Kind, k.ID, *tenant, where, k.Secret)
	return exitOK
}

func createKey(ctx context.Context, pool *pgxpool.Pool, slug string, in tenancy.CreateKeyInput) (tenancy.CreatedKey, error) {
	svc := tenancy.NewService(pool)
	t, err := svc.TenantBySlug(ctx, slug)
	if err != nil {
		return tenancy.CreatedKey{}, err
	}
	in.TenantID = t.ID
	return svc.CreateKey(ctx, in)
}

func runAdminGenSecretKey(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("admin gen-secret-key", stderr)
	id := fs.String("id", "", "an id to prefix the key with (letters, digits, '-', '_'); default: derived from the key")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintln(stderr, "limitr admin gen-secret-key: takes no arguments")
		return exitUsage
	}
	key, err := secrets.GenerateKey()
	if err != nil {
		fmt.Fprintln(stderr, "limitr admin gen-secret-key:", err)
		return exitFail
	}
	if *id != "" {
		key = *id + ":" + key
		// The id is checked the way the server will read it.
		var ke *secrets.KeyringError
		if _, err := secrets.ParseKeyring(key); errors.As(err, &ke) {
			fmt.Fprintln(stderr, "limitr admin gen-secret-key: --id:", ke.Reason)
			return exitUsage
		} else if err != nil {
			fmt.Fprintln(stderr, "limitr admin gen-secret-key:", err)
			return exitFail
		}
	}
	fmt.Fprintln(stdout, key)
	return exitOK
}

// tenancyMessage words a tenancy error for an operator.
func tenancyMessage(err error) string {
	var rerr *tenancy.ResourceError
	switch {
	case errors.As(err, &rerr) && errors.Is(err, tenancy.ErrNotFound) && rerr.Name != "":
		return fmt.Sprintf("no %s %q", rerr.Resource, rerr.Name)
	case errors.As(err, &rerr) && errors.Is(err, tenancy.ErrConflict):
		return fmt.Sprintf("%s %q already exists", rerr.Resource, rerr.Name)
	}
	return err.Error()
}

func printJSON(w io.Writer, v any) int {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return exitFail
	}
	return exitOK
}
