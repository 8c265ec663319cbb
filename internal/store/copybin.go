package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/limitr/limitr/internal/num"
)

// copyBuf builds the payload of a binary COPY (COPY … FROM STDIN BINARY) by hand.
// pgx's CopyFrom boxes every value of every row in an interface, plans its encoding
// through the type map and encodes numerics with math/big: for usage deltas that was
// half of the API's CPU per row. Ingest's columns have fixed types, so their binary
// forms are written directly (the formats of Postgres' *_recv functions).
type copyBuf struct{ b []byte }

// copySignature starts every binary COPY payload; two zero int32s follow (flags and
// header extension length).
const copySignature = "PGCOPY\n\377\r\n\000"

// newCopyBuf starts a payload with room for rows rows of about rowSize bytes.
func newCopyBuf(rows, rowSize int) *copyBuf {
	b := make([]byte, 0, len(copySignature)+8+rows*rowSize+2)
	b = append(b, copySignature...)
	b = binary.BigEndian.AppendUint64(b, 0)
	return &copyBuf{b: b}
}

// row starts a row of n fields.
func (c *copyBuf) row(n int) { c.b = binary.BigEndian.AppendUint16(c.b, uint16(n)) }

// field writes a field's length; its n bytes follow.
func (c *copyBuf) field(n int) { c.b = binary.BigEndian.AppendUint32(c.b, uint32(n)) }

func (c *copyBuf) null() { c.b = binary.BigEndian.AppendUint32(c.b, 0xFFFFFFFF) }

func (c *copyBuf) text(s string) {
	c.field(len(s))
	c.b = append(c.b, s...)
}

func (c *copyBuf) uuid(u [16]byte) {
	c.field(16)
	c.b = append(c.b, u[:]...)
}

func (c *copyBuf) int8(v int64) {
	c.field(8)
	c.b = binary.BigEndian.AppendUint64(c.b, uint64(v))
}

func (c *copyBuf) bool(v bool) {
	c.field(1)
	if v {
		c.b = append(c.b, 1)
	} else {
		c.b = append(c.b, 0)
	}
}

// microsFromUnixToY2K: timestamptz counts microseconds from 2000-01-01 UTC.
const microsFromUnixToY2K = 946_684_800 * 1_000_000

// timestamptz truncates to microseconds, as pgx does.
func (c *copyBuf) timestamptz(t time.Time) {
	c.int8(t.Unix()*1_000_000 + int64(t.Nanosecond())/1000 - microsFromUnixToY2K)
}

// Numeric's binary form: base-10,000 digits, most significant first, with the weight
// (the power of 10,000 of the first digit), a sign and the display scale. Postgres
// strips zero digits itself, so they are not trimmed here.
const (
	numericBase = 10_000
	numericNeg  = 0x4000
)

// numeric writes d with its scale as the display scale ("2.50" stays 2.50), as
// pgNumeric does through pgx.
func (c *copyBuf) numeric(d num.Dec) {
	coef, scale := d.Coef(), d.Scale()
	var digits [12]uint16 // up to 5 integer and 5 fraction groups for 19 digits
	n := 0
	// The fraction's groups, least significant first. The last group is padded with
	// zeros on the right: its share of the scale is scale%4 digits.
	pow := uint64(1)
	for range scale {
		pow *= 10
	}
	whole, frac := coef/pow, coef%pow
	groups := (scale + 3) / 4
	for g := range groups {
		width := 4
		if g == 0 && scale%4 != 0 {
			width = scale % 4
		}
		m := uint64(1)
		for range width {
			m *= 10
		}
		v := frac % m
		for range 4 - width {
			v *= 10
		}
		digits[n], n, frac = uint16(v), n+1, frac/m
	}
	intGroups := 0
	for ; whole > 0; whole /= numericBase {
		digits[n], n = uint16(whole%numericBase), n+1
		intGroups++
	}
	c.field(8 + 2*n)
	c.b = binary.BigEndian.AppendUint16(c.b, uint16(n))
	c.b = binary.BigEndian.AppendUint16(c.b, uint16(int16(intGroups-1)))
	sign := uint16(0)
	if d.IsNeg() && coef != 0 {
		sign = numericNeg
	}
	c.b = binary.BigEndian.AppendUint16(c.b, sign)
	c.b = binary.BigEndian.AppendUint16(c.b, uint16(scale))
	for i := n - 1; i >= 0; i-- {
		c.b = binary.BigEndian.AppendUint16(c.b, digits[i])
	}
}

// copyIn sends the payload as COPY into table's columns on conn, and returns the rows
// written.
func (c *copyBuf) copyIn(ctx context.Context, conn *pgconn.PgConn, table string, columns []string) (int64, error) {
	c.b = binary.BigEndian.AppendUint16(c.b, 0xFFFF) // the trailer
	cols := make([]string, len(columns))
	for i, col := range columns {
		cols[i] = pgx.Identifier{col}.Sanitize()
	}
	sql := fmt.Sprintf("copy %s (%s) from stdin binary", pgx.Identifier{table}.Sanitize(), strings.Join(cols, ", "))
	tag, err := conn.CopyFrom(ctx, bytes.NewReader(c.b), sql)
	return tag.RowsAffected(), err
}
