// Package partitions keeps daily partitions of the time-partitioned usage tables
// (usage_deltas, usage_events) ahead of the clock, so rows land in their day's partition
// rather than the default one, and old days can later be detached and archived whole.
//
// Days are UTC days; a partition is named TABLE_YYYYMMDD and covers [day, day+1). Ensure
// is idempotent and safe to run from several workers at once (an advisory lock
// serialises it). A day whose range already has rows in the default partition cannot
// get its own partition (Postgres refuses to create it), so Ensure skips it, logs why,
// and those rows stay, correctly, in the default partition.
package partitions

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Tables are the tables partitioned by day on received_at.
var Tables = []string{"usage_deltas", "usage_events"}

// DaysAhead is how many days after today Ensure prepares by default (today .. today+2).
const DaysAhead = 2

// lockKey is the advisory lock serialising partition maintenance across workers.
const lockKey int64 = 0x6c696d7472706172 // "limtrpar"

// LockTimeout bounds how long creating a partition waits for its lock on the parent
// table, which ingest and aggregation also use: better to retry on the next round than
// to queue usage writes behind it.
var LockTimeout = 2 * time.Second

// skipDefaultCheck lets tests reach the path where Postgres itself refuses the create.
var skipDefaultCheck = false

// Name is the partition of table for the UTC day of t.
func Name(table string, t time.Time) string {
	return table + "_" + t.UTC().Format("20060102")
}

// Skip is a day Ensure could not create, and why.
type Skip struct {
	Partition string
	Reason    string
}

// Result is what one Ensure did.
type Result struct {
	Created []string
	Skipped []Skip
}

// Ensure creates the missing daily partitions of every table in Tables for the UTC days
// from now's through now+days. Days it cannot create are reported in Skipped and logged;
// only database failures are errors.
func Ensure(ctx context.Context, pool *pgxpool.Pool, now time.Time, days int, logger *slog.Logger) (Result, error) {
	if logger == nil {
		logger = slog.Default()
	}
	today := now.UTC().Truncate(24 * time.Hour)
	var res Result
	for _, table := range Tables {
		for d := 0; d <= days; d++ {
			from := today.AddDate(0, 0, d)
			name, skip, err := ensureDay(ctx, pool, table, from)
			switch {
			case err != nil:
				return res, err
			case skip != "":
				res.Skipped = append(res.Skipped, Skip{Partition: name, Reason: skip})
				logger.Warn("partitions: not creating a partition; its rows stay in the default partition",
					"partition", name, "reason", skip)
			case name != "":
				res.Created = append(res.Created, name)
				logger.Info("partitions: created", "partition", name)
			}
		}
	}
	return res, nil
}

// ensureDay creates table's partition for the day starting at from. It returns the name
// when it created it, a reason when it skipped it, and neither when it already existed.
func ensureDay(ctx context.Context, pool *pgxpool.Pool, table string, from time.Time) (created, skipped string, err error) {
	name := Name(table, from)
	to := from.AddDate(0, 0, 1)
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, fmt.Sprintf("set local lock_timeout = %d", LockTimeout.Milliseconds())); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `select pg_advisory_xact_lock($1)`, lockKey); err != nil {
			return err
		}
		var exists bool
		var def *string
		if err := tx.QueryRow(ctx, `
			select to_regclass($1) is not null,
			       (select nullif(partdefid, 0)::regclass::text from pg_partitioned_table where partrelid = $2::regclass)`,
			name, table).Scan(&exists, &def); err != nil {
			return err
		}
		if exists {
			return nil
		}
		if def != nil && !skipDefaultCheck { // regclass text: quoted and qualified as needed by Postgres
			// Creating the partition would fail with "updated partition constraint for
			// default partition would be violated": say so plainly instead.
			var n int64
			if err := tx.QueryRow(ctx, fmt.Sprintf(
				`select count(*) from (select 1 from %s where received_at >= $1 and received_at < $2 limit 1000000) r`,
				*def), from, to).Scan(&n); err != nil {
				return err
			}
			if n > 0 {
				skipped = fmt.Sprintf("%d row(s) of this day are already in %s", n, *def)
				return nil
			}
		}
		// Bounds are formatted by us from a time.Time, never from input.
		_, err := tx.Exec(ctx, fmt.Sprintf(`create table if not exists %s partition of %s for values from ('%s') to ('%s')`,
			pgx.Identifier{name}.Sanitize(), pgx.Identifier{table}.Sanitize(),
			from.Format("2006-01-02 15:04:05Z07:00"), to.Format("2006-01-02 15:04:05Z07:00")))
		if err != nil {
			return err
		}
		created = name
		return nil
	})
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case "23514": // check_violation: a row reached the default partition meanwhile
			return name, "rows of this day are already in the default partition: " + pe.Message, nil
		case "42P17": // invalid_object_definition: another partition overlaps this day
			return name, pe.Message, nil
		}
	}
	if err != nil {
		return "", "", fmt.Errorf("partitions: %s: %w", name, err)
	}
	if skipped != "" {
		return name, skipped, nil
	}
	return created, "", nil
}

// Dropped is a partition DropOlderThan removed, or kept and why.
type Dropped struct {
	Partition string
	Kept      string // why it was kept; "" when it was dropped
}

// DropOlderThan detaches and drops the daily partitions of every table in Tables whose
// whole day ends at or before cutoff, provided nothing in them still waits for
// aggregation (usage_deltas rows with aggregated_at null): raw usage is kept until it
// is in the meters. The default partition is never dropped. Safe to run from several
// workers at once (the partition advisory lock serialises it).
func DropOlderThan(ctx context.Context, pool *pgxpool.Pool, cutoff time.Time, logger *slog.Logger) ([]Dropped, error) {
	if logger == nil {
		logger = slog.Default()
	}
	var out []Dropped
	for _, table := range Tables {
		parts, err := dailyPartitions(ctx, pool, table)
		if err != nil {
			return out, err
		}
		for _, p := range parts {
			if p.day.AddDate(0, 0, 1).After(cutoff) {
				continue
			}
			kept, err := dropPartition(ctx, pool, table, p.name)
			if err != nil {
				return out, fmt.Errorf("partitions: drop %s: %w", p.name, err)
			}
			out = append(out, Dropped{Partition: p.name, Kept: kept})
			if kept != "" {
				logger.Warn("partitions: keeping an old partition", "partition", p.name, "reason", kept)
			} else {
				logger.Info("partitions: dropped", "partition", p.name)
			}
		}
	}
	return out, nil
}

type daily struct {
	name string
	day  time.Time
}

// dailyPartitions lists table's partitions named TABLE_YYYYMMDD, oldest first.
func dailyPartitions(ctx context.Context, pool *pgxpool.Pool, table string) ([]daily, error) {
	rows, err := pool.Query(ctx, `select c.relname from pg_inherits i join pg_class c on c.oid = i.inhrelid
		where i.inhparent = $1::regclass order by 1`, table)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []daily
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return nil, err
		}
		day, err := time.Parse("20060102", strings.TrimPrefix(name, table+"_"))
		if err != nil || !strings.HasPrefix(name, table+"_") {
			continue // the default partition, or one we did not make
		}
		out = append(out, daily{name: name, day: day})
	}
	return out, rows.Err()
}

// dropPartition drops one partition in a transaction under the maintenance lock,
// unless usage in it is still pending aggregation.
func dropPartition(ctx context.Context, pool *pgxpool.Pool, table, name string) (kept string, err error) {
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, fmt.Sprintf("set local lock_timeout = %d", LockTimeout.Milliseconds())); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `select pg_advisory_xact_lock($1)`, lockKey); err != nil {
			return err
		}
		ident := pgx.Identifier{name}.Sanitize()
		if table == "usage_deltas" {
			var pending bool
			if err := tx.QueryRow(ctx, `select exists (select 1 from `+ident+` where aggregated_at is null)`).Scan(&pending); err != nil {
				return err
			}
			if pending {
				kept = "usage in it is not aggregated yet"
				return nil
			}
		}
		if _, err := tx.Exec(ctx, `alter table `+pgx.Identifier{table}.Sanitize()+` detach partition `+ident); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `drop table `+ident)
		return err
	})
	return kept, err
}
