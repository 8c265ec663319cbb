package store

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/govalues/decimal"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/platform/pgtest"
)

// The hand-written binary COPY stores what pgx's CopyFrom stores for the same values:
// the same numerics with the same display scale, timestamps truncated alike, texts,
// uuids, integers, booleans and nulls.
func TestCopyBufMatchesPgx(t *testing.T) {
	_, pool := pgtest.NewMigrated(t)
	ctx := context.Background()
	decs := []num.Dec{num.Zero, num.MustParse("0.00"), num.MustParse("-0.1"), num.MustParse("12.5"), num.MustParse("2.50"),
		num.MustParse("0.0000375"), num.MustParse("9999"), num.MustParse("10000"), num.MustParse("-10000.0001"),
		num.MustParse("9999999999999999999"), num.MustParse("-9.999999999999999999"), num.MustParse("0.0000000000000000001"),
		num.MustParse("123456789.0123456789"), num.MustParse("1000000000000000000")}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		coef := rng.Int64N(1 << 62)
		if rng.IntN(2) == 0 {
			coef >>= rng.UintN(63)
		}
		d, err := decimal.New(coef, rng.IntN(20))
		if err != nil {
			t.Fatal(err)
		}
		if rng.IntN(2) == 0 {
			d = d.Neg()
		}
		decs = append(decs, d)
	}
	base := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	times := make([]time.Time, len(decs))
	for i := range times {
		times[i] = base.Add(time.Duration(rng.Int64N(int64(400*24*time.Hour))) - 200*24*time.Hour)
	}
	times[0] = time.Date(1999, 12, 31, 23, 59, 59, 999_999_999, time.FixedZone("x", -3600))
	id := uuid.New()

	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `create temp table copied (src text, k bigint, n numeric, ts timestamptz, s text, u uuid, ok boolean, maybe text)`); err != nil {
			return err
		}
		cols := []string{"src", "k", "n", "ts", "s", "u", "ok", "maybe"}
		i := 0
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"copied"}, cols, pgx.CopyFromFunc(func() ([]any, error) {
			if i >= len(decs) {
				return nil, nil
			}
			i++
			return []any{"pgx", int64(i - 1), pgNumeric(decs[i-1]), times[i-1], "é\tx", pgtype.UUID{Bytes: id, Valid: true}, i%2 == 0, nil}, nil
		})); err != nil {
			return err
		}
		c := newCopyBuf(len(decs), 64)
		for i, d := range decs {
			c.row(len(cols))
			c.text("buf")
			c.int8(int64(i))
			c.numeric(d)
			c.timestamptz(times[i])
			c.text("é\tx")
			c.uuid(id)
			c.bool((i+1)%2 == 0)
			c.null()
		}
		n, err := c.copyIn(ctx, tx.Conn().PgConn(), "copied", cols)
		if err != nil {
			return err
		}
		if n != int64(len(decs)) {
			t.Fatalf("copied %d rows, want %d", n, len(decs))
		}
		rows, err := tx.Query(ctx, `select a.k, a.n::text, b.n::text, a.ts = b.ts, a.s = b.s, a.u = b.u, a.ok = b.ok, b.maybe is null
			from copied a join copied b on a.k = b.k and b.src = 'buf' where a.src = 'pgx' order by a.k`)
		if err != nil {
			return err
		}
		defer rows.Close()
		seen := 0
		for rows.Next() {
			var k int64
			var want, got string
			var sameTime, sameText, sameUUID, sameBool, null bool
			if err := rows.Scan(&k, &want, &got, &sameTime, &sameText, &sameUUID, &sameBool, &null); err != nil {
				return err
			}
			if got != want || got != decs[k].String() && !decs[k].IsZero() {
				t.Errorf("%s: copied %s, pgx %s", decs[k], got, want)
			}
			if !sameTime || !sameText || !sameUUID || !sameBool || !null {
				t.Errorf("row %d: same time %v, text %v, uuid %v, bool %v; null %v", k, sameTime, sameText, sameUUID, sameBool, null)
			}
			seen++
		}
		if seen != len(decs) {
			t.Fatalf("compared %d rows, want %d", seen, len(decs))
		}
		return rows.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
}
