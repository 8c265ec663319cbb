// Package pgtest gives each test package its own freshly migrated Postgres database on
// 127.0.0.1, created from LIMITR_TEST_DATABASE_URL (set by scripts/services.sh).
package pgtest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"runtime/debug"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/limitr/limitr/internal/platform/pg"
	"github.com/limitr/limitr/migrations"
)

// AdminURL returns the test server URL or skips the test when services are not up.
func AdminURL(tb testing.TB) string {
	tb.Helper()
	u := os.Getenv("LIMITR_TEST_DATABASE_URL")
	if u == "" {
		if os.Getenv("CI") != "" {
			// In CI a skipped database test would pass without testing anything.
			tb.Fatal("LIMITR_TEST_DATABASE_URL is not set in CI: make test exports it from scripts/services.sh")
		}
		tb.Skip("LIMITR_TEST_DATABASE_URL is not set: run `eval \"$(scripts/services.sh)\"` (make test does)")
	}
	return u
}

// NewDatabase creates an empty database named after the test, returns its URL and drops
// it when the test ends.
func NewDatabase(tb testing.TB) string {
	tb.Helper()
	return newDatabase(tb, AdminURL(tb), "")
}

// newDatabase creates a database, a copy of template when one is named.
func newDatabase(tb testing.TB, admin, template string) string {
	tb.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "limitr_test_" + hex.EncodeToString(b[:])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		tb.Fatalf("pgtest: connect %s: %v", admin, err)
	}
	defer conn.Close(ctx)
	create := "create database " + name
	// Postgres's default strategy (wal_log) copies without a checkpoint; file_copy
	// forces one per copy, and a suite making hundreds of them stalls the machine.
	if template != "" {
		create += " template " + template
	}
	for attempt := 0; ; attempt++ {
		_, err = conn.Exec(ctx, create)
		var pgErr *pgconn.PgError
		// Two copies of one template at the same instant may see each other as its
		// users (55006, object in use): wait and copy again.
		if err == nil || !errors.As(err, &pgErr) || pgErr.Code != "55006" || attempt == 50 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		tb.Fatalf("pgtest: create database: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, admin)
		if err != nil {
			return
		}
		defer c.Close(ctx)
		_, _ = c.Exec(ctx, "drop database if exists "+name+" with (force)")
	})
	u, err := url.Parse(admin)
	if err != nil {
		tb.Fatal(err)
	}
	u.Path = "/" + name
	return u.String()
}

// NewMigrated is NewDatabase with the schema applied and a pool open on it. The
// database is a copy of a migrated template (CREATE DATABASE … TEMPLATE), made once per
// schema and shared by every test process: copying takes a fraction of migrating.
func NewMigrated(tb testing.TB) (string, *pgxpool.Pool) {
	tb.Helper()
	admin := AdminURL(tb)
	tpl, err := migratedTemplate(admin)
	if err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	dbURL := newDatabase(tb, admin, tpl)
	pool, err := pg.Connect(context.Background(), dbURL)
	if err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	tb.Cleanup(pool.Close)
	return dbURL, pool
}

// templates remembers, per process, the template made for each server: one lookup
// (and at most one migration) per process, however many tests.
var templates sync.Map // admin URL → *templateOnce

type templateOnce struct {
	once sync.Once
	name string
	err  error
}

func migratedTemplate(admin string) (string, error) {
	v, _ := templates.LoadOrStore(admin, &templateOnce{})
	t := v.(*templateOnce)
	t.once.Do(func() { t.name, t.err = makeTemplate(admin) })
	return t.name, t.err
}

// makeTemplate returns the template database of the current schema, migrating it first
// if no process has: its name is a hash of our migrations and River's version, so a
// changed schema gets a new one. It is built under another name and renamed when done,
// under an advisory lock, so no test ever copies a half-migrated template. Templates of
// older schemas stay on the server (a few MB each): another checkout may still use them.
func makeTemplate(admin string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	name := "limitr_tpl_" + schemaHash()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return "", fmt.Errorf("connect %s: %w", admin, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `select pg_advisory_lock(hashtext('limitr pgtest template'))`); err != nil {
		return "", err
	}
	defer conn.Exec(context.WithoutCancel(ctx), `select pg_advisory_unlock(hashtext('limitr pgtest template'))`) //nolint:errcheck // the session ends anyway
	var exists bool
	if err := conn.QueryRow(ctx, `select exists (select 1 from pg_database where datname = $1)`, name).Scan(&exists); err != nil || exists {
		return name, err
	}
	building := name + "_building"
	if _, err := conn.Exec(ctx, "drop database if exists "+building+" with (force)"); err != nil {
		return "", err
	}
	if _, err := conn.Exec(ctx, "create database "+building); err != nil {
		return "", fmt.Errorf("create template: %w", err)
	}
	u, err := url.Parse(admin)
	if err != nil {
		return "", err
	}
	u.Path = "/" + building
	if err := pg.MigrateUp(ctx, u.String()); err != nil {
		return "", fmt.Errorf("migrate template: %w", err)
	}
	if _, err := conn.Exec(ctx, "alter database "+building+" rename to "+name); err != nil {
		return "", fmt.Errorf("publish template: %w", err)
	}
	return name, nil
}

// schemaHash names the schema: our migration files and the River module's version.
func schemaHash() string {
	h := sha256.New()
	_ = fs.WalkDir(migrations.FS, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := migrations.FS.ReadFile(path)
		h.Write([]byte(path))
		h.Write(b)
		return err
	})
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, m := range bi.Deps {
			// The module itself only: which of its sibling modules a test binary links
			// differs from package to package.
			if m.Path == "github.com/riverqueue/river" {
				h.Write([]byte(m.Path + "@" + m.Version))
			}
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}
