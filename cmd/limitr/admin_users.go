package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/limitr/limitr/internal/platform/pg"
	"github.com/limitr/limitr/internal/store"
	"github.com/limitr/limitr/internal/tenancy"
	"github.com/limitr/limitr/internal/users"
	"github.com/limitr/limitr/internal/validation"
)

// runAdminCreateUser makes `limitr admin create-user`, reading a password from stdin
// with --password-stdin. Without it a password is generated and printed once: the
// operator hands it over and the user changes it.
func runAdminCreateUser(stdin io.Reader) func(args []string, stdout, stderr io.Writer) int {
	return func(args []string, stdout, stderr io.Writer) int {
		fs := newFlags("admin create-user", stderr)
		tenant := fs.String("tenant", "", "the tenant's slug or id")
		email := fs.String("email", "", "the user's email (their login)")
		role := fs.String("role", string(users.RoleOwner), "owner, admin, editor, billing or viewer")
		name := fs.String("name", "", "the user's display name")
		fromStdin := fs.Bool("password-stdin", false, "read the password from the first line of stdin (default: generate one and print it once)")
		dbURL := databaseFlag(fs)
		if err := fs.Parse(args); err != nil {
			return exitUsage
		}
		if *tenant == "" || *email == "" || *dbURL == "" || fs.NArg() > 0 {
			fmt.Fprintln(stderr, "limitr admin create-user: --tenant, --email and --database-url (or LIMITR_DATABASE_URL) are required, and nothing else")
			return exitUsage
		}
		password, generated, err := readOrGeneratePassword(stdin, *fromStdin)
		if err != nil {
			fmt.Fprintln(stderr, "limitr admin create-user:", err)
			return exitUsage
		}
		ctx := store.WithActor(context.Background(), store.Actor{RequestID: cliRequestID})
		pool, err := pg.Open(ctx, *dbURL, false) // a live control plane's schema is its binaries' to manage
		if err != nil {
			fmt.Fprintln(stderr, "limitr admin create-user:", err)
			return exitFail
		}
		defer pool.Close()
		m, err := createUser(ctx, pool, *tenant, users.CreateUserInput{Email: *email, Name: *name, Password: password, Role: users.Role(*role)})
		if err != nil {
			fmt.Fprintln(stderr, "limitr admin create-user:", userMessage(err))
			return exitFail
		}
		fmt.Fprintf(stdout, "user %s (%s) created as %s of tenant %s\n", m.Email, m.ID, m.Role, *tenant)
		if generated {
			fmt.Fprintf(stdout, "password (shown once, hand it over now):\n%s\n", password)
		}
		return exitOK
	}
}

func createUser(ctx context.Context, pool *pgxpool.Pool, tenant string, in users.CreateUserInput) (users.Member, error) {
	tsvc := tenancy.NewService(pool)
	var t tenancy.Tenant
	var err error
	if id, perr := uuid.Parse(tenant); perr == nil {
		t, err = tsvc.Tenant(ctx, id)
	} else {
		t, err = tsvc.TenantBySlug(ctx, tenant)
	}
	if err != nil {
		return users.Member{}, err
	}
	in.TenantID = t.ID
	svc, err := users.NewService(pool, users.Config{})
	if err != nil {
		return users.Member{}, err
	}
	return svc.CreateUser(ctx, in)
}

// readOrGeneratePassword reads the first line of stdin, or makes a password of 26
// base32 characters (128 random bits, crypto/rand.Text).
func readOrGeneratePassword(stdin io.Reader, fromStdin bool) (pw string, generated bool, err error) {
	if !fromStdin {
		return rand.Text(), true, nil
	}
	line, err := bufio.NewReader(stdin).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", false, fmt.Errorf("read password: %w", err)
	}
	pw = strings.TrimRight(line, "\r\n")
	if pw == "" {
		return "", false, errors.New("--password-stdin: stdin has no password")
	}
	return pw, false, nil
}

// userMessage words a users or tenancy error for an operator.
func userMessage(err error) string {
	var verr *validation.Error
	if errors.As(err, &verr) {
		var b strings.Builder
		for i, f := range verr.Fields {
			if i > 0 {
				b.WriteString("; ")
			}
			fmt.Fprintf(&b, "--%s: %s", f.Path, f.Message)
		}
		return b.String()
	}
	if errors.Is(err, users.ErrEmailTaken) {
		return "a user with this email already exists: invite them from the dashboard (Settings → Users & roles) instead"
	}
	return tenancyMessage(err)
}
