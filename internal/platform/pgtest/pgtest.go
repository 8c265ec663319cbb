// Package pgtest gives each test package its own freshly migrated Postgres database on
// 127.0.0.1, created from LIMITR_TEST_DATABASE_URL (set by scripts/services.sh).
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/limitr/limitr/internal/platform/pg"
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
	admin := AdminURL(tb)
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
	if _, err := conn.Exec(ctx, "create database "+name); err != nil {
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

// NewMigrated is NewDatabase with the schema applied and a pool open on it.
func NewMigrated(tb testing.TB) (string, *pgxpool.Pool) {
	tb.Helper()
	dbURL := NewDatabase(tb)
	ctx := context.Background()
	if err := pg.MigrateUp(ctx, dbURL); err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	pool, err := pg.Connect(ctx, dbURL)
	if err != nil {
		tb.Fatalf("pgtest: %v", err)
	}
	tb.Cleanup(pool.Close)
	return dbURL, pool
}
