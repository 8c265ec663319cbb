package idempotency

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/limitr/limitr/internal/secrets"
)

// Schema is the DDL of the table PGStore uses. Migrations should create the
// same table; tests may execute Schema directly. One row per (tenant,
// principal, key): status, headers and body are null while the request is in
// flight; created_at drives expiry and the purge (hence its index).
const Schema = `
create table if not exists idempotency_keys (
	tenant_id    text not null,
	principal    text not null,
	key          text not null,
	method       text not null,
	path         text not null,
	request_hash bytea not null,
	status       int,
	headers      jsonb,
	body         bytea,
	sealed       boolean not null default false,
	withheld     boolean not null default false,
	created_at   timestamptz not null default now(),
	completed_at timestamptz,
	primary key (tenant_id, principal, key)
);
create index if not exists idempotency_keys_created_at_idx on idempotency_keys (created_at);
`

// Sealer encrypts stored reply bodies (a *secrets.Keyring). A reply can hold a secret
// shown once, such as a new API key, so no body is ever stored in plaintext.
type Sealer interface {
	Seal(plaintext, aad []byte) ([]byte, error)
	Open(sealed, aad []byte) ([]byte, error)
}

// PGStore is a Store in Postgres, in the table described by Schema.
type PGStore struct {
	pool   *pgxpool.Pool
	sealer Sealer
	ttl    time.Duration
	lease  time.Duration
}

var _ Store = (*PGStore)(nil)

// Option configures a PGStore.
type Option func(*PGStore)

// WithTTL sets how long keys are remembered (default DefaultTTL).
func WithTTL(d time.Duration) Option { return func(s *PGStore) { s.ttl = d } }

// WithLease sets how long a request may stay in flight before a retry may
// take its key over (default DefaultLease).
func WithLease(d time.Duration) Option { return func(s *PGStore) { s.lease = d } }

// NewPGStore returns a Store over pool. Reply bodies are sealed with sealer before they
// are stored; with a nil sealer no body is stored at all, and a retry learns that the
// request completed but its reply is withheld (never that it may run again).
func NewPGStore(pool *pgxpool.Pool, sealer Sealer, opts ...Option) *PGStore {
	s := &PGStore{pool: pool, sealer: sealer, ttl: DefaultTTL, lease: DefaultLease}
	for _, o := range opts {
		o(s)
	}
	return s
}

// beginSQL inserts the key, or takes over a row that has expired (older than
// the TTL) or whose request was abandoned in flight (older than the lease).
// It returns a row only when the caller now owns the key.
const beginSQL = `
insert into idempotency_keys (tenant_id, principal, key, method, path, request_hash)
values ($1, $2, $3, $4, $5, $6)
on conflict (tenant_id, principal, key) do update
	set method = excluded.method, path = excluded.path, request_hash = excluded.request_hash,
		status = null, headers = null, body = null, sealed = false, withheld = false, created_at = now(), completed_at = null
	where idempotency_keys.created_at < now() - $7::bigint * interval '1 microsecond'
		or (idempotency_keys.completed_at is null
			and idempotency_keys.created_at < now() - $8::bigint * interval '1 microsecond')
returning created_at`

const selectSQL = `
select method, path, request_hash, status, headers, body, sealed, withheld, created_at
from idempotency_keys
where tenant_id = $1 and principal = $2 and key = $3`

// Begin implements Store.
func (s *PGStore) Begin(ctx context.Context, scope Scope, requestHash []byte) (Record, bool, error) {
	// Loop because the row that made the insert conflict may be deleted
	// (abandoned) before we read it; then the key is free again.
	for range 3 {
		rec := Record{Method: scope.Method, Path: scope.Path, RequestHash: requestHash}
		err := s.pool.QueryRow(ctx, beginSQL,
			scope.Tenant, scope.Principal, scope.Key, scope.Method, scope.Path, requestHash,
			s.ttl.Microseconds(), s.lease.Microseconds(),
		).Scan(&rec.CreatedAt)
		if err == nil {
			return rec, false, nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return Record{}, false, fmt.Errorf("idempotency: begin: %w", err)
		}

		var (
			status           *int32
			headers          []byte
			body             []byte
			sealed, withheld bool
		)
		err = s.pool.QueryRow(ctx, selectSQL, scope.Tenant, scope.Principal, scope.Key).
			Scan(&rec.Method, &rec.Path, &rec.RequestHash, &status, &headers, &body, &sealed, &withheld, &rec.CreatedAt)
		if errors.Is(err, pgx.ErrNoRows) {
			continue
		}
		if err != nil {
			return Record{}, false, fmt.Errorf("idempotency: read record: %w", err)
		}
		if status != nil {
			resp := &Response{Status: int(*status), Body: body, Header: http.Header{}}
			if len(headers) > 0 {
				if err := json.Unmarshal(headers, &resp.Header); err != nil {
					return Record{}, false, fmt.Errorf("idempotency: decode stored headers: %w", err)
				}
			}
			switch {
			case withheld || sealed && s.sealer == nil:
				resp.Body, resp.Withheld = nil, true
			case sealed:
				// A body sealed under a key this server no longer has (or an ephemeral
				// key of another process) cannot be replayed; the request still ran.
				if resp.Body, err = s.sealer.Open(body, bodyAAD(scope)); err != nil {
					resp.Body, resp.Withheld = nil, true
				}
			}
			if resp.Body == nil && !resp.Withheld {
				resp.Body = []byte{}
			}
			rec.Response = resp
		}
		return rec, true, nil
	}
	return Record{}, false, errors.New("idempotency: begin: key keeps changing hands")
}

// Complete implements Store.
func (s *PGStore) Complete(ctx context.Context, scope Scope, resp Response) error {
	header := resp.Header
	if header == nil {
		header = http.Header{}
	}
	headers, err := json.Marshal(header)
	if err != nil {
		return fmt.Errorf("idempotency: encode headers: %w", err)
	}
	var body []byte
	withheld := s.sealer == nil
	if !withheld {
		if body, err = s.sealer.Seal(resp.Body, bodyAAD(scope)); err != nil {
			return fmt.Errorf("idempotency: seal reply: %w", err)
		}
	}
	tag, err := s.pool.Exec(ctx, `
update idempotency_keys set status = $4, headers = $5, body = $6, sealed = $7, withheld = $8, completed_at = now()
where tenant_id = $1 and principal = $2 and key = $3 and completed_at is null`,
		scope.Tenant, scope.Principal, scope.Key, resp.Status, headers, body, !withheld, withheld)
	if err != nil {
		return fmt.Errorf("idempotency: complete: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return ErrNotInFlight
	}
	return nil
}

// Abandon implements Store.
func (s *PGStore) Abandon(ctx context.Context, scope Scope) error {
	_, err := s.pool.Exec(ctx, `
delete from idempotency_keys
where tenant_id = $1 and principal = $2 and key = $3 and completed_at is null`,
		scope.Tenant, scope.Principal, scope.Key)
	if err != nil {
		return fmt.Errorf("idempotency: abandon: %w", err)
	}
	return nil
}

// purgeBatch bounds the records one statement of Purge deletes, so a large backlog
// never holds locks for long.
const purgeBatch = 10_000

// Purge deletes records created more than olderThan ago (use DefaultTTL) and
// returns how many it deleted. The worker's retention job runs it; expired
// records are ignored anyway, so it only reclaims space.
func (s *PGStore) Purge(ctx context.Context, olderThan time.Duration) (int64, error) {
	var total int64
	for {
		tag, err := s.pool.Exec(ctx, `
delete from idempotency_keys where ctid = any (array(
	select ctid from idempotency_keys where created_at < now() - $1::bigint * interval '1 microsecond' limit $2))`,
			olderThan.Microseconds(), purgeBatch)
		if err != nil {
			return total, fmt.Errorf("idempotency: purge: %w", err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < purgeBatch || ctx.Err() != nil {
			return total, nil
		}
	}
}

// bodyAAD binds a sealed reply to its key: copied into another row it does not open.
func bodyAAD(scope Scope) []byte {
	return secrets.AAD("idempotency_keys.body", scope.Tenant, scope.Principal, scope.Key)
}
