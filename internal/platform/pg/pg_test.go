package pg_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/limitr/limitr/internal/platform/pg"
	"github.com/limitr/limitr/internal/platform/pgtest"
)

// Two replicas migrating the same empty database at once must both succeed and leave
// one current schema: golang-migrate serialises them with an advisory lock.
func TestConcurrentMigrateUp(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.NewDatabase(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = pg.MigrateUp(ctx, dbURL)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	pool, err := pg.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if err := pg.CheckCurrent(ctx, pool); err != nil {
		t.Fatal(err)
	}
}

func TestDownThenCheckCurrentFails(t *testing.T) {
	t.Parallel()
	dbURL, pool := pgtest.NewMigrated(t)
	ctx := context.Background()
	if err := pg.MigrateDown(ctx, dbURL, 0); err != nil {
		t.Fatal(err)
	}
	if err := pg.CheckCurrent(ctx, pool); !errors.Is(err, pg.ErrMigrationsPending) {
		t.Fatalf("want ErrMigrationsPending, got %v", err)
	}
	if err := pg.MigrateUp(ctx, dbURL); err != nil {
		t.Fatal(err)
	}
	if err := pg.CheckCurrent(ctx, pool); err != nil {
		t.Fatal(err)
	}
}

func TestBadURL(t *testing.T) {
	if err := pg.MigrateUp(context.Background(), "mysql://x"); err == nil {
		t.Fatal("want error")
	}
}

// River's schema is part of ours: MigrateUp applies it, CheckCurrent checks it, and
// reverting everything removes it.
func TestRiverSchemaMigratesWithOurs(t *testing.T) {
	t.Parallel()
	dbURL, pool := pgtest.NewMigrated(t)
	ctx := context.Background()
	var riverJob bool
	if err := pool.QueryRow(ctx, `select to_regclass('river_job') is not null`).Scan(&riverJob); err != nil || !riverJob {
		t.Fatalf("river_job after MigrateUp: %v, %v", riverJob, err)
	}
	if _, err := pool.Exec(ctx, `delete from river_migration where version = (select max(version) from river_migration)`); err != nil {
		t.Fatal(err)
	}
	if err := pg.CheckCurrent(ctx, pool); !errors.Is(err, pg.ErrMigrationsPending) {
		t.Fatalf("a missing River migration: want ErrMigrationsPending, got %v", err)
	}
	if err := pg.MigrateUp(ctx, dbURL); err != nil { // re-applies River's missing version
		t.Fatal(err)
	}
	if err := pg.CheckCurrent(ctx, pool); err != nil {
		t.Fatal(err)
	}
	if err := pg.MigrateDown(ctx, dbURL, 0); err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(ctx, `select to_regclass('river_job') is not null`).Scan(&riverJob); err != nil || riverJob {
		t.Fatalf("river_job after MigrateDown all: %v, %v", riverJob, err)
	}
}
