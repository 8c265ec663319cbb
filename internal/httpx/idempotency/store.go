// Package idempotency implements the Idempotency-Key header for POST
// requests, with the semantics Stripe popularised:
//
//   - The first request with a key records it as in flight and runs.
//   - Its response (status, selected headers, body) is stored once it
//     completes, and a retry with the same key and the same request gets that
//     response replayed byte for byte, with "Idempotent-Replayed: true".
//   - Responses that say the request did not really run (5xx, 408, 429, 499)
//     are not stored: the key is released so a retry can run it.
//   - The same key with a different request (method, path or body) is a 422.
//   - A retry while the first request is still in flight is a 409 with
//     Retry-After: 1.
//   - Keys are scoped to (tenant, principal) and live for 24 hours; older
//     records are ignored and overwritten, and Purge deletes them.
//
// Records live in Postgres (see [Schema] and [PGStore]).
package idempotency

import (
	"context"
	"errors"
	"net/http"
	"time"
)

// DefaultTTL is how long a key is remembered.
const DefaultTTL = 24 * time.Hour

// DefaultLease is how long a request may stay in flight before its key is
// considered abandoned (the process died mid-request) and a retry may take it
// over. It must be far longer than any request can run.
const DefaultLease = 10 * time.Minute

// ErrNotInFlight is returned by Complete when the scope has no in-flight
// record (it was completed, abandoned or taken over after its lease).
var ErrNotInFlight = errors.New("idempotency: no in-flight record for this key")

// Scope identifies one idempotency key. Tenant, Principal and Key form the
// identity; Method and Path describe the request that first used the key.
type Scope struct {
	Tenant    string
	Principal string // the API key id
	Key       string
	Method    string
	Path      string
}

// Response is a stored response.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
	// Withheld: the request completed with Status, but its body cannot be replayed (it
	// is sealed under a key this server does not have, or none was kept).
	Withheld bool
}

// Record is what a store holds for a key.
type Record struct {
	Method      string
	Path        string
	RequestHash []byte
	// Response is nil while the first request is in flight.
	Response  *Response
	CreatedAt time.Time
}

// Store persists idempotency records.
type Store interface {
	// Begin claims scope for a request whose hash is requestHash. If the key
	// is new (or its old record expired), it records the request as in flight
	// and returns existing == false: the caller runs the request, then calls
	// Complete or Abandon. Otherwise it returns the existing record and
	// existing == true.
	Begin(ctx context.Context, scope Scope, requestHash []byte) (Record, bool, error)
	// Complete stores the response of the in-flight request for scope.
	Complete(ctx context.Context, scope Scope, resp Response) error
	// Abandon forgets the in-flight request for scope, so that a retry runs
	// it again. Abandoning a key that is not in flight is a no-op.
	Abandon(ctx context.Context, scope Scope) error
}
