package pg

import (
	"errors"
	"io"
	"net"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// IsTransient reports whether err means "Postgres could not do it now; the same
// request may succeed later": the server is unreachable or restarting, a connection
// broke, it is out of resources, or the transaction lost a race it can retry
// (serialization failure, deadlock, lock timeout). It decides by SQLSTATE class and
// by the network error types, never by message text. Callers answer 503 with
// Retry-After, or retry with backoff.
func IsTransient(err error) bool {
	if err == nil {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return transientSQLState(pgErr.Code)
	}
	var connErr *pgconn.ConnectError
	if errors.As(err, &connErr) {
		return true
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	return pgconn.Timeout(err) || pgconn.SafeToRetry(err)
}

// transientSQLState: class 08 connection exception, 53 insufficient resources, 57P
// operator intervention (admin or crash shutdown, cannot connect now), 40001
// serialization failure, 40P01 deadlock, 55P03 lock not available, 57014 query
// canceled (a statement or lock timeout).
func transientSQLState(code string) bool {
	switch {
	case strings.HasPrefix(code, "08"), strings.HasPrefix(code, "53"), strings.HasPrefix(code, "57P"):
		return true
	}
	switch code {
	case "40001", "40P01", "55P03", "57014":
		return true
	}
	return false
}
