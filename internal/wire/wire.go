// Package wire is the protocol between the SDK in cloud mode and the control plane:
// usage batches, the push stream and customer hydration. It imports nothing beyond the
// standard library, so the SDK stays free of server dependencies.
package wire

import (
	"encoding/json"
	"time"
)

// Paths of the SDK endpoints (all authenticated with an SDK key).
const (
	PathPolicy   = "/v1/sdk/policy"        // GET, ETag / If-None-Match
	PathStream   = "/v1/sdk/stream"        // GET, text/event-stream
	PathUsage    = "/v1/sdk/usage"         // POST, gzip JSON UsageBatch
	PathCustomer = "/v1/sdk/customers/"    // GET PathCustomer + id + "/state": CustomerState
	HeaderEnv    = "Limitr-Environment"    // on PathPolicy replies: the key's environment name
	HeaderVer    = "Limitr-Policy-Version" // on PathPolicy replies: the version number
	MaxBatchRaw  = 8 << 20                 // largest decompressed usage batch accepted
	MaxDeltas    = 10_000                  // most deltas in one batch
	MaxInstance  = 64                      // longest instance id
	EventPolicy  = "policy"                // stream event: a new version is active
	EventCust    = "customer"              // stream event: a customer changed
	EventHello   = "hello"                 // stream event: sent first on every connection
)

// UsageBatch is what an SDK instance flushes. (InstanceID, Sequence) identifies it: the
// server commits a batch at most once, so a retry after a lost reply is harmless.
// Sequence starts at 1 and moves on only after the server acknowledged the batch.
type UsageBatch struct {
	InstanceID    string       `json:"instance_id"`
	Sequence      int64        `json:"sequence"`
	SentAt        time.Time    `json:"sent_at"`
	PolicyVersion int          `json:"policy_version"`
	Deltas        []UsageDelta `json:"deltas"`
	// Events are raw per-call records, sent only in audit mode.
	Events []UsageEvent `json:"events,omitempty"`
	// GrantDraws are what calls took from grants since the last flush (at most
	// MaxDeltas), so other instances and restarts see the grants' balances.
	GrantDraws []GrantDraw `json:"grant_draws,omitempty"`
}

// GrantDraw sums what calls took from one grant in one grant period, in the grant's
// credit (an exact decimal string, >= 0). Customer is the grant's holder. PeriodStart
// is the start of the grant period: its creation for a grant that does not reset.
// In CustomerState, it is the server's committed total for that grant and period.
type GrantDraw struct {
	Customer    string    `json:"customer"`
	GrantID     string    `json:"grant_id"`
	PeriodStart time.Time `json:"period_start"`
	Units       string    `json:"units"`
}

// UsageDelta sums the usage of one meter in one period since the last flush. Numbers are
// exact decimals written as strings. Customer is the meter's owner (for a scoped
// entitlement, the org, not the calling user).
type UsageDelta struct {
	Customer    string    `json:"customer"`
	Entitlement string    `json:"entitlement"`
	Credit      string    `json:"credit"`
	PeriodStart time.Time `json:"period_start"`
	Units       string    `json:"units"`    // may be negative (decrements)
	Overhead    string    `json:"overhead"` // provider cost, runes
	Price       string    `json:"price"`    // price of the billable part, runes
	Calls       int64     `json:"calls"`    // >= 0
}

// UsageEvent is one call, for audit mode. ID is unique per instance.
type UsageEvent struct {
	ID          string    `json:"id"`
	Customer    string    `json:"customer"`
	Caller      string    `json:"caller,omitempty"`
	Entitlement string    `json:"entitlement"`
	Units       string    `json:"units"`
	Overhead    string    `json:"overhead"`
	Allowed     bool      `json:"allowed"`
	At          time.Time `json:"at"`
}

// UsageAck answers a committed (or already committed) batch.
type UsageAck struct {
	Sequence  int64 `json:"sequence"`
	Duplicate bool  `json:"duplicate"`
	Accepted  int   `json:"accepted"`
}

// Hello is the first stream event: where the feed stands and what is active.
type Hello struct {
	Environment   string `json:"environment"`
	PolicyVersion int    `json:"policy_version"`
	PolicyHash    string `json:"policy_hash"`
	Cursor        int64  `json:"cursor"`
}

// PolicyChanged announces a newly active version (publish or rollback).
type PolicyChanged struct {
	Version int    `json:"version"`
	Hash    string `json:"hash"`
}

// CustomerChanged announces a customer change. Customer is the record after the change
// (absent for deletes); the SDK applies it locally.
type CustomerChanged struct {
	ID              string          `json:"id"`
	Op              string          `json:"op"` // upsert, delete, plan, override, topup
	Revision        int64           `json:"revision"`
	Customer        json.RawMessage `json:"customer,omitempty"`
	Plan            string          `json:"plan,omitempty"`
	PreviousPlan    string          `json:"previous_plan,omitempty"`
	OverwriteMeters bool            `json:"overwrite_meters,omitempty"`
	Entitlement     string          `json:"entitlement,omitempty"`
	Override        json.RawMessage `json:"override,omitempty"`
	Removed         bool            `json:"removed,omitempty"`
	Topup           json.RawMessage `json:"topup,omitempty"`
}

// MeterTotal is the committed usage of one meter in its current period: every batch
// the server has committed, aggregated or not.
type MeterTotal struct {
	Credit      string    `json:"credit"`
	PeriodStart time.Time `json:"period_start"`
	Units       string    `json:"units"`
	Overhead    string    `json:"overhead"`
	Price       string    `json:"price"`
}

// CustomerState hydrates a customer the SDK has not seen: its record (the API's
// customer JSON, with overrides and topups), its meters' committed totals by
// entitlement and period start, and its grants' committed draws.
type CustomerState struct {
	Customer json.RawMessage         `json:"customer"`
	Meters   map[string][]MeterTotal `json:"meters"`
	// GrantDraws are the committed draws per grant and grant period, the last two
	// periods per grant.
	GrantDraws []GrantDraw `json:"grant_draws,omitempty"`
}
