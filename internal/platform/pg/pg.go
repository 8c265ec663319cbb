// Package pg connects to Postgres and applies the embedded schema: ours
// (golang-migrate, migrations/) and River's job queue tables (rivermigrate), always
// together, ours first.
package pg

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/golang-migrate/migrate/v4"
	_ "github.com/golang-migrate/migrate/v4/database/pgx/v5" // registers the pgx5:// scheme
	"github.com/golang-migrate/migrate/v4/source/iofs"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"

	"github.com/limitr/limitr/migrations"
)

// ErrMigrationsPending is returned when the database schema is behind the binary's.
var ErrMigrationsPending = errors.New("database migrations are not current")

// Connect opens a pool and checks the server answers.
func Connect(ctx context.Context, databaseURL string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		return nil, fmt.Errorf("pg: database url: %w", err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("pg: connect: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("pg: ping: %w", err)
	}
	return pool, nil
}

// migrateURL turns a postgres:// URL into the pgx5:// one golang-migrate expects.
func migrateURL(databaseURL string) (string, error) {
	u, err := url.Parse(databaseURL)
	if err != nil {
		return "", fmt.Errorf("pg: database url: %w", err)
	}
	switch u.Scheme {
	case "postgres", "postgresql", "pgx5":
		u.Scheme = "pgx5"
	default:
		return "", fmt.Errorf("pg: database url: unsupported scheme %q", u.Scheme)
	}
	return u.String(), nil
}

func newMigrate(databaseURL string) (*migrate.Migrate, error) {
	src, err := iofs.New(migrations.FS, ".")
	if err != nil {
		return nil, fmt.Errorf("pg: migrations: %w", err)
	}
	dst, err := migrateURL(databaseURL)
	if err != nil {
		return nil, err
	}
	m, err := migrate.NewWithSourceInstance("iofs", src, dst)
	if err != nil {
		return nil, fmt.Errorf("pg: migrate: %w", err)
	}
	return m, nil
}

// MigrateUp applies every pending migration: ours, then River's. golang-migrate holds
// a Postgres advisory lock for the duration, and River's run under one of ours, so
// replicas starting together apply each migration once.
func MigrateUp(ctx context.Context, databaseURL string) error {
	m, err := newMigrate(databaseURL)
	if err != nil {
		return err
	}
	defer m.Close()
	if err := m.Up(); err != nil && !errors.Is(err, migrate.ErrNoChange) {
		return fmt.Errorf("pg: migrate up: %w", err)
	}
	return withRiverMigrator(ctx, databaseURL, func(mg *rivermigrate.Migrator[pgx.Tx]) error {
		if _, err := mg.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
			return fmt.Errorf("pg: migrate river up: %w", err)
		}
		return nil
	})
}

// MigrateDown reverts the last n of our migrations; with n <= 0 it reverts all of
// them and River's too, leaving an empty database.
func MigrateDown(ctx context.Context, databaseURL string, n int) error {
	if n <= 0 {
		err := withRiverMigrator(ctx, databaseURL, func(mg *rivermigrate.Migrator[pgx.Tx]) error {
			_, err := mg.Migrate(ctx, rivermigrate.DirectionDown, &rivermigrate.MigrateOpts{TargetVersion: -1})
			return err
		})
		if err != nil {
			return fmt.Errorf("pg: migrate river down: %w", err)
		}
	}
	m, err := newMigrate(databaseURL)
	if err != nil {
		return err
	}
	defer m.Close()
	if n <= 0 {
		err = m.Down()
	} else {
		err = m.Steps(-n)
	}
	if err != nil && !errors.Is(err, migrate.ErrNoChange) {
		return fmt.Errorf("pg: migrate down: %w", err)
	}
	return nil
}

// riverMigrateLock serialises River's migrations across replicas; rivermigrate takes
// no lock of its own.
const riverMigrateLock int64 = 0x6c696d7472697672 // "limtrivr"

// withRiverMigrator runs fn with River's migrator on a short-lived pool, holding a
// session advisory lock on a connection of its own meanwhile.
func withRiverMigrator(ctx context.Context, databaseURL string, fn func(*rivermigrate.Migrator[pgx.Tx]) error) error {
	pool, err := Connect(ctx, databaseURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("pg: river migrations: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `select pg_advisory_lock($1)`, riverMigrateLock); err != nil {
		return fmt.Errorf("pg: river migrations: lock: %w", err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), `select pg_advisory_unlock($1)`, riverMigrateLock) //nolint:errcheck // the session ends with the pool anyway
	mg, err := rivermigrate.New(riverpgxv5.New(pool), nil)
	if err != nil {
		return fmt.Errorf("pg: river migrations: %w", err)
	}
	return fn(mg)
}

// LatestVersion is the newest migration embedded in the binary.
func LatestVersion() (uint, error) {
	entries, err := fs.ReadDir(migrations.FS, ".")
	if err != nil {
		return 0, err
	}
	var versions []uint
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".up.sql") {
			continue
		}
		v, err := strconv.ParseUint(strings.SplitN(name, "_", 2)[0], 10, 32)
		if err != nil {
			return 0, fmt.Errorf("pg: migration %q: %w", name, err)
		}
		versions = append(versions, uint(v))
	}
	if len(versions) == 0 {
		return 0, nil
	}
	return slices.Max(versions), nil
}

// CheckCurrent reports whether the schema matches the binary's newest migration; it
// reads the version table directly so readiness probes stay cheap.
func CheckCurrent(ctx context.Context, pool *pgxpool.Pool) error {
	latest, err := LatestVersion()
	if err != nil {
		return err
	}
	var version int64
	var dirty bool
	err = pool.QueryRow(ctx, `select version, dirty from schema_migrations limit 1`).Scan(&version, &dirty)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrMigrationsPending, err)
	}
	if dirty || uint(version) != latest {
		return fmt.Errorf("%w: database at %d (dirty %v), binary at %d", ErrMigrationsPending, version, dirty, latest)
	}
	mg, err := rivermigrate.New(riverpgxv5.New(pool), nil)
	if err != nil {
		return err
	}
	res, err := mg.Validate(ctx, nil)
	if err != nil {
		return fmt.Errorf("%w: river: %w", ErrMigrationsPending, err)
	}
	if !res.OK {
		return fmt.Errorf("%w: river: %s", ErrMigrationsPending, strings.Join(res.Messages, "; "))
	}
	return nil
}

// Open applies pending migrations when migrate is set, then connects: how every binary
// starts.
func Open(ctx context.Context, databaseURL string, migrate bool) (*pgxpool.Pool, error) {
	if migrate {
		if err := MigrateUp(ctx, databaseURL); err != nil {
			return nil, err
		}
	}
	return Connect(ctx, databaseURL)
}
