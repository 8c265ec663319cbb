// Package wire holds every contract between processes, defined once: the protocol
// between the SDK in cloud mode and the control plane (usage batches, the push stream,
// the customer record and its hydration), and the bus channels the control plane's
// processes wake each other on. It imports nothing beyond the standard library, so
// the SDK stays free of server dependencies.
package wire

import (
	"bytes"
	"encoding/json"
	"reflect"
	"time"
)

// Paths of the SDK endpoints (all authenticated with an SDK key).
const (
	PathPolicy   = "/v1/sdk/policy"        // GET, ETag / If-None-Match
	PathStream   = "/v1/sdk/stream"        // GET, text/event-stream
	PathUsage    = "/v1/sdk/usage"         // POST, gzip JSON UsageBatch
	PathCustomer = "/v1/sdk/customers/"    // GET PathCustomer + id + "/state": CustomerState
	PathEvents   = "/v1/sdk/events"        // POST, gzip JSON EventBatch
	PathLeases   = "/v1/sdk/leases"        // POST LeaseRequest → LeaseReply
	PathReturn   = "/v1/sdk/leases/return" // POST LeaseReturn → 204: give back every lease of an instance
	HeaderEnv    = "Limitr-Environment"    // on PathPolicy replies: the key's environment name
	HeaderVer    = "Limitr-Policy-Version" // on PathPolicy replies: the version number
	MaxBatchRaw  = 8 << 20                 // largest decompressed usage batch accepted
	MaxDeltas    = 10_000                  // most deltas in one batch
	MaxInstance  = 64                      // longest instance id
	MaxEvents    = 1_000                   // most events in one EventBatch
	EventPolicy  = "policy"                // stream event: a new version is active
	EventCust    = "customer"              // stream event: a customer changed
	EventHello   = "hello"                 // stream event: sent first on every connection
	EventReset   = "reset"                 // stream event: the feed no longer holds the changes after the cursor
)

// Bus channels between control-plane processes (API replicas and workers). A lost
// message only delays work: every receiver also polls Postgres.
const (
	// ChannelUsage wakes aggregation workers after a usage batch commits; the payload
	// is "<tenant id>:<environment id>".
	ChannelUsage = "limitr:usage"
	// ChannelKeyRevoked carries a revoked API key's id to every replica's key cache.
	ChannelKeyRevoked = "limitr:keys:revoked"
)

// ChangesChannel is where wake-ups for an environment's change feed are published;
// the payload is the newest change id.
func ChangesChannel(tenantID, environmentID string) string {
	return "limitr:changes:" + tenantID + ":" + environmentID
}

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
	// VoucherDebits are what calls took from customers' vouchers since the last flush
	// (at most MaxDeltas), so every instance sees the same voucher balance.
	VoucherDebits []VoucherDebit `json:"voucher_debits,omitempty"`
	// Leased says the instance holds allowance leases: the server counts the batch's
	// deltas as committed against this instance's leases of the same meter periods, in
	// the same transaction, so what a lease has left is exact.
	Leased bool `json:"leased,omitempty"`
	// CapUses are what calls consumed of customers' spend caps held by the control
	// plane since the last flush (at most MaxDeltas), so every instance counts a cap
	// against the fleet's total. In a leased batch they are also committed against the
	// instance's leases of the same caps.
	CapUses []CapUse `json:"cap_uses,omitempty"`
}

// CapUse sums what calls consumed of one cap in one cap period, in the cap's credit
// (an exact decimal string; negative for a follow_decrements cap that moved down).
// Customer is the cap's holder and CapKey the cap's key (CustomerCap.Key): a cap reset
// gets a new key, so use of the old one never counts against the new period.
// PeriodStart is the cap period's start: when the key was minted for a cap that does
// not reset.
type CapUse struct {
	Customer    string    `json:"customer"`
	CapKey      string    `json:"cap_key"`
	PeriodStart time.Time `json:"period_start"`
	Units       string    `json:"units"`
	// CustomerCreatedAt is when the holder was created, as the SDK knows it (see
	// UsageDelta.CustomerCreatedAt).
	CustomerCreatedAt *time.Time `json:"customer_created_at,omitempty"`
}

// CustomerCap is a spend cap the control plane holds for a customer: every SDK
// instance enforces it, in fleet mode Exact against the fleet's total with leases of
// the cap's allowance (LeaseAsk.Cap), else against the committed consumption it knows
// of plus its own. ID names the cap on its customer; Key is minted by the server when
// the cap is created and again when it is reset, and consumption and leases are
// counted per key and cap period. ResetAt is when Key was minted: the start of the
// first cap period. Value is the ceiling in Credit, an exact decimal. Usage is the
// committed consumption of the key's last two periods (newest first).
type CustomerCap struct {
	ID               string      `json:"id"`
	Key              string      `json:"key"`
	Credit           string      `json:"credit"`
	Value            json.Number `json:"value"`
	IgnoreGrants     bool        `json:"ignore_grants"`
	OverageOnly      bool        `json:"overage_only"`
	ObserveOnly      bool        `json:"observe_only"`
	OverheadCost     bool        `json:"overhead_cost"`
	FollowDecrements bool        `json:"follow_decrements"`
	HardTrailing     bool        `json:"hard_trailing"`
	Shared           bool        `json:"shared"`
	SharedWith       []string    `json:"shared_with"`
	Scope            []string    `json:"scope"`
	Resets           bool        `json:"resets"`
	ResetInc         string      `json:"reset_inc,omitempty"`
	ResetSch         string      `json:"reset_sch,omitempty"`
	ExpiresAt        *time.Time  `json:"expires_at,omitempty"`
	CreatedAt        time.Time   `json:"created_at"`
	ResetAt          time.Time   `json:"reset_at"`
	Usage            []CapUsage  `json:"usage"`
}

// CapUsage is a cap's committed consumption in one cap period.
type CapUsage struct {
	PeriodStart time.Time `json:"period_start"`
	Units       string    `json:"units"`
}

// CapRequest creates a customer's cap or replaces its configuration (PUT
// …/customers/{id}/caps/{cap}). Replacing keeps the cap's key, so what was consumed
// still counts; POST …/caps/{cap}/reset starts it from zero. Credit defaults to
// "rune"; Value (an exact decimal >= 0) is required; ExpiresAt is RFC 3339. Resets
// with neither ResetInc nor ResetSch resets every 30 days, as in Limitr.
type CapRequest struct {
	Credit           string       `json:"credit,omitempty"`
	Value            *json.Number `json:"value"`
	IgnoreGrants     bool         `json:"ignore_grants,omitempty"`
	OverageOnly      bool         `json:"overage_only,omitempty"`
	ObserveOnly      bool         `json:"observe_only,omitempty"`
	OverheadCost     bool         `json:"overhead_cost,omitempty"`
	FollowDecrements bool         `json:"follow_decrements,omitempty"`
	HardTrailing     bool         `json:"hard_trailing,omitempty"`
	Shared           bool         `json:"shared,omitempty"`
	SharedWith       []string     `json:"shared_with,omitempty"`
	Scope            []string     `json:"scope,omitempty"`
	Resets           bool         `json:"resets,omitempty"`
	ResetInc         string       `json:"reset_inc,omitempty"`
	ResetSch         string       `json:"reset_sch,omitempty"`
	ExpiresAt        *string      `json:"expires_at,omitempty"`
}

// Allowance leases (fleet mode Exact). A hard limit served by several instances is
// kept exactly by granting each instance a lease of the meter's remaining allowance:
// the server grants atomically, so committed usage plus every live lease's unused and
// uncommitted part never exceeds the limit, and an instance decides locally inside
// its lease. Amounts are exact decimal strings in the credit's units; times are
// truncated to microseconds (the server keeps microseconds).

// LeaseRequest asks for (or renews) leases of several meters at once.
type LeaseRequest struct {
	InstanceID string     `json:"instance_id"`
	Leases     []LeaseAsk `json:"leases"` // 1..MaxLeases
}

// MaxLeases is the most meters one LeaseRequest may ask for.
const MaxLeases = 1_000

// LeaseAsk is one meter's ask. Target is the cumulative allowance the instance wants
// to hold in the period (what it has used under its lease plus the headroom it wants):
// the server grants up to Target − what it granted this instance before, as far as
// the limit allows, so a retried ask never grants twice. Used is what the instance has
// used under its lease so far in the period (committed or not): while the lease lives
// its unused part is reserved for it, and after it expires what was used and not yet
// committed stays reserved (it may still arrive). Limit is the limit the instance
// enforces (its policy version and the customer's overrides).
type LeaseAsk struct {
	Customer    string `json:"customer"`
	Entitlement string `json:"entitlement"`
	// Cap, when set, asks for a lease of a spend cap's allowance instead of a meter's:
	// the cap's key (CustomerCap.Key), Customer its holder and Entitlement empty.
	// Limit is then the cap's ceiling, and the amounts are in the cap's credit.
	Cap         string    `json:"cap,omitempty"`
	PeriodStart time.Time `json:"period_start"`
	Limit       string    `json:"limit"`
	Target      string    `json:"target"`
	Used        string    `json:"used"`
	// Need, when set, is the room a waiting call needs now. An instance sends it after
	// it stopped using its lease's rest: if the grant cannot leave at least Need of
	// room, the rest is released instead (granted falls back to Used), so allowance
	// split between instances near the limit comes back together for one of them.
	Need string `json:"need,omitempty"`
	// CustomerCreatedAt is when the customer was created, as the SDK knows it (see
	// UsageDelta.CustomerCreatedAt).
	CustomerCreatedAt *time.Time `json:"customer_created_at,omitempty"`
}

// LeaseReply answers a LeaseRequest, a grant per ask in order.
type LeaseReply struct {
	Leases []LeaseGrant `json:"leases"`
	// TTL is how long a lease lives from the request without being renewed; the SDK
	// stops using a lease it has not renewed within it, measured from when it asked.
	TTLMillis int64 `json:"ttl_ms"`
}

// LeaseGrant is one meter's lease after the request. Granted is the cumulative
// allowance granted to this instance in the period (never less than before; equal to
// it when nothing more was available). Available is what the fleet could still be
// granted after this grant. Committed is what the server has committed from this
// instance's batches in the period. Error, when set, says why the ask was not
// considered (for example an unknown customer); the instance must not rely on a lease
// then.
type LeaseGrant struct {
	Customer    string    `json:"customer"`
	Entitlement string    `json:"entitlement"`
	Cap         string    `json:"cap,omitempty"`
	PeriodStart time.Time `json:"period_start"`
	Granted     string    `json:"granted"`
	Available   string    `json:"available"`
	Committed   string    `json:"committed"`
	// Remaining is the limit less the meter's committed usage (leased or not), and
	// Holders the instances holding a live lease of the meter, this one included: an
	// instance asks for at most its share, Remaining / Holders, so allowance is not
	// parked on a few instances while others are refused.
	Remaining string `json:"remaining,omitempty"`
	Holders   int    `json:"holders,omitempty"`
	Error     string `json:"error,omitempty"`
}

// LeaseReturn gives back every lease an instance holds (a clean shutdown), once its
// last usage batch has been acknowledged: their unused parts are free for the fleet
// at once instead of after the TTL.
type LeaseReturn struct {
	InstanceID string `json:"instance_id"`
}

// VoucherDebit sums what calls took from one voucher, in runes (an exact decimal
// string, > 0). VoucherID names the voucher as the server set it (CustomerVoucher.ID):
// a voucher set again gets a new id, so debits of the old one never reduce the new one.
type VoucherDebit struct {
	Customer  string `json:"customer"`
	VoucherID string `json:"voucher_id"`
	Runes     string `json:"runes"`
	// CustomerCreatedAt is when the customer was created, as the SDK knows it (see
	// UsageDelta.CustomerCreatedAt).
	CustomerCreatedAt *time.Time `json:"customer_created_at,omitempty"`
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
	// CustomerCreatedAt is when the customer the SDK drew for was created, as the SDK
	// knows it (see UsageDelta.CustomerCreatedAt).
	CustomerCreatedAt *time.Time `json:"customer_created_at,omitempty"`
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
	// GrantCovered is how many of the delta's units past the limit grants (topups) paid
	// for, in units of the credit, >= 0: an invoice credits them instead of billing
	// them. Optional: absent means 0, as SDKs before the field send it, and SDKs leave
	// it out when it is 0.
	GrantCovered string `json:"grant_covered,omitempty"`
	// CustomerCreatedAt is the creation time of the customer the usage was recorded
	// for, as the SDK holds it (the server's created_at for customers it created or
	// hydrated). A customer deleted and created again under the same id is a new
	// customer: usage stamped with an earlier creation time than the server's belongs
	// to the deleted one and is not counted against the new one. Optional.
	CustomerCreatedAt *time.Time `json:"customer_created_at,omitempty"`
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

// UsageAck answers a committed (or already committed) batch. Usage of every customer
// the server knows is committed; records it cannot attribute to a customer are listed
// in Unattributed and kept on the server for an operator (never silently dropped).
type UsageAck struct {
	Sequence  int64 `json:"sequence"`
	Duplicate bool  `json:"duplicate"`
	// Accepted is the number of deltas committed against known customers.
	Accepted int `json:"accepted"`
	// Unattributed lists the records (deltas, grant draws, voucher debits, events) that
	// name no customer of the environment, in batch order. Empty on a duplicate.
	Unattributed []Unattributed `json:"unattributed,omitempty"`
}

// Kinds of batch records, as Unattributed names them.
const (
	RecordDelta        = "delta"
	RecordGrantDraw    = "grant_draw"
	RecordVoucherDebit = "voucher_debit"
	RecordCapUse       = "cap_use"
	RecordEvent        = "event"
)

// Reasons a record could not be attributed.
const (
	// ReasonUnknownCustomer: no customer of the environment has this id or alt id
	// (deleted, or never created on the server).
	ReasonUnknownCustomer = "unknown_customer"
	// ReasonCustomerRecreated: the customer was deleted and created again after the
	// usage was recorded; the usage belongs to the deleted customer.
	ReasonCustomerRecreated = "customer_recreated"
	// ReasonBatchExpired: the batch was first sent before the server's deduplication
	// window (the usage-batch retention), so it cannot tell whether it was committed
	// already; its records are kept for an operator rather than risk counting them twice.
	ReasonBatchExpired = "batch_expired"
)

// Unattributed is one record of a batch the server committed without a customer.
type Unattributed struct {
	Kind     string `json:"kind"`  // RecordDelta, RecordGrantDraw, RecordVoucherDebit, RecordCapUse or RecordEvent
	Index    int    `json:"index"` // position in the batch's list of that kind
	Customer string `json:"customer"`
	Reason   string `json:"reason"`
}

// EventBatch carries engine events an SDK instance forwards in cloud mode, for alerts:
// policy notifications (Type is the notification's name, Source the engine event it
// matched) and the engine events worth an alert (meter-limit, meter-overage,
// cap-limit, cap-threshold-crossed, meter-governed). (InstanceID, Sequence) identifies
// the batch as it does a UsageBatch: the server takes a batch at most once, so a retry
// after a lost reply is harmless. Sequence starts at 1 and moves on only after the
// server acknowledged the batch.
type EventBatch struct {
	InstanceID    string    `json:"instance_id"`
	Sequence      int64     `json:"sequence"`
	SentAt        time.Time `json:"sent_at"`
	PolicyVersion int       `json:"policy_version"`
	Events        []Event   `json:"events"` // at most MaxEvents
}

// Event is one forwarded engine event. Events the SDK saw several times between two
// flushes with the same Type, Notification, Customer, Entitlement and CapID are sent
// once: At is the first occurrence and Count how many there were.
type Event struct {
	Type         string    `json:"type"`                   // engine event type, or the notification's name
	Notification string    `json:"notification,omitempty"` // the policy notification that matched ("" for a plain engine event)
	Source       string    `json:"source,omitempty"`       // for a notification: the engine event type it matched
	Customer     string    `json:"customer"`               // the customer concerned (a meter's owner)
	Caller       string    `json:"caller,omitempty"`
	Entitlement  string    `json:"entitlement,omitempty"`
	Plan         string    `json:"plan,omitempty"`
	CapID        string    `json:"cap_id,omitempty"`
	At           time.Time `json:"at"`
	Count        int64     `json:"count"` // >= 1
	// PeriodStart is the start of the meter's period, for meter events (optional: the
	// server computes it from the policy when absent).
	PeriodStart *time.Time `json:"period_start,omitempty"`
	// Payload is the event as the engine renders it to handlers (Event.JSON), so a
	// rule's condition sees what a policy notification's matches expression sees.
	Payload json.RawMessage `json:"payload,omitempty"`
}

// EventAck answers an EventBatch: taken now or already (Duplicate). Events naming no
// customer of the environment are kept on the server but fire no alert.
type EventAck struct {
	Sequence  int64 `json:"sequence"`
	Duplicate bool  `json:"duplicate"`
	Accepted  int   `json:"accepted"` // events stored
	Alerts    int   `json:"alerts"`   // alerts the batch fired
}

// Hello is the first stream event: where the feed stands and what is active.
type Hello struct {
	Environment   string `json:"environment"`
	PolicyVersion int    `json:"policy_version"`
	PolicyHash    string `json:"policy_hash"`
	Cursor        int64  `json:"cursor"`
}

// Reset tells a stream client that the changes between its cursor and Cursor are no
// longer kept (the feed's retention removed them): it must re-read the active policy
// and the customers it holds, then continue from Cursor.
type Reset struct {
	Cursor int64  `json:"cursor"`
	Reason string `json:"reason"`
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
	Op              string          `json:"op"` // upsert, delete, plan, override, topup, voucher, cap
	Revision        int64           `json:"revision"`
	Customer        json.RawMessage `json:"customer,omitempty"`
	Plan            string          `json:"plan,omitempty"`
	PreviousPlan    string          `json:"previous_plan,omitempty"`
	OverwriteMeters bool            `json:"overwrite_meters"`
	Entitlement     string          `json:"entitlement,omitempty"`
	Override        json.RawMessage `json:"override,omitempty"`
	Removed         bool            `json:"removed,omitempty"`
	Topup           json.RawMessage `json:"topup,omitempty"`
}

// Customer is the control plane's customer record: what the REST API returns and what
// the SDK hydrates from (CustomerState.Customer, CustomerChanged.Customer).
type Customer struct {
	ID   string `json:"id"`
	Plan string `json:"plan"`
	// ResolvedPlan is the plan the customer is on under the environment's active policy:
	// its own, inherited through refs, or the default ("" without an active policy).
	ResolvedPlan  string          `json:"resolved_plan"`
	Type          string          `json:"type"`
	Label         string          `json:"label"`
	Refs          []string        `json:"refs"`
	AltIDs        []string        `json:"alt_ids"`
	Metadata      json.RawMessage `json:"metadata"`
	Timezone      string          `json:"timezone"`
	BillingAnchor time.Time       `json:"billing_anchor"`
	CreatedAt     time.Time       `json:"created_at"`
	UpdatedAt     time.Time       `json:"updated_at"`
	Revision      int64           `json:"revision"`
	// TestClock is the test clock the customer lives on (billing only), if any.
	TestClock string                     `json:"test_clock,omitempty"`
	Overrides map[string]json.RawMessage `json:"overrides"`
	Topups    []CustomerTopup            `json:"topups"`
	// Voucher is the customer's prepaid voucher, if one is set.
	Voucher *CustomerVoucher `json:"voucher,omitempty"`
	// Caps are the customer's spend caps, by id.
	Caps []CustomerCap `json:"caps,omitempty"`
}

// CustomerVoucher is a prepaid allowance for soft-limit overage (Limitr Cloud's
// voucher): a call whose uncovered overage it cannot pay, or that comes after it
// expired, is denied. ID is new each time a voucher is set. Runes is the amount set
// (absent: no balance to draw down, only the expiry is checked); Debited is what the
// server has committed as spent from it (VoucherDebit), and Balance is Runes − Debited.
// Amounts are exact decimals.
type CustomerVoucher struct {
	ID        string       `json:"id"`
	Runes     *json.Number `json:"runes,omitempty"`
	Debited   json.Number  `json:"debited"`
	Balance   *json.Number `json:"balance,omitempty"`
	ExpiresAt time.Time    `json:"expires_at"`
	SetAt     time.Time    `json:"set_at"`
	SetBy     string       `json:"set_by,omitempty"`
}

// VoucherRequest sets a customer's voucher (PUT …/customers/{id}/voucher), replacing
// any previous one. Runes, when given, is the balance (an exact decimal >= 0);
// ExpiresAt (RFC 3339) is required and must be in the future.
type VoucherRequest struct {
	Runes     *json.Number `json:"runes,omitempty"`
	ExpiresAt string       `json:"expires_at"`
}

// CustomerTopup is a topup applied to a customer: the grant every SDK instance
// creates, with what the customer paid and who applied it. Value and Price are exact
// decimals.
type CustomerTopup struct {
	ID        string      `json:"id"`
	Topup     string      `json:"topup"`
	GrantID   string      `json:"grant_id"`
	Credit    string      `json:"credit"`
	Value     json.Number `json:"value"`
	Price     json.Number `json:"price,omitempty"`
	Currency  string      `json:"currency"`
	AppliedAt time.Time   `json:"applied_at"`
	AppliedBy string      `json:"applied_by,omitempty"`
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

// The customer operations' request bodies, as the REST API reads them and the SDK
// sends them (POST/PATCH …/customers, PUT …/plan, PUT …/overrides/{entitlement},
// POST …/topups). Absent fields are omitted when sent and mean "unchanged" or "the
// default" when read.

// CreateCustomerRequest creates a customer. Plan "" inherits through refs, else the
// active policy's default plan.
type CreateCustomerRequest struct {
	ID            string          `json:"id"`
	Plan          string          `json:"plan,omitempty"`
	Type          *string         `json:"type,omitempty"`
	Label         *string         `json:"label,omitempty"`
	Refs          []string        `json:"refs,omitempty"`
	AltIDs        []string        `json:"alt_ids,omitempty"`
	Metadata      json.RawMessage `json:"metadata,omitempty"`
	Timezone      string          `json:"timezone,omitempty"`
	BillingAnchor *string         `json:"billing_anchor,omitempty"` // RFC 3339
	// TestClock attaches the customer to a test clock of a non-live environment: its
	// billing periods, plan changes and invoices follow the clock's time.
	TestClock string `json:"test_clock,omitempty"`
}

// UpdateCustomerRequest changes the profile fields it sets.
type UpdateCustomerRequest struct {
	Type          *string         `json:"type,omitempty"`
	Label         *string         `json:"label,omitempty"`
	Refs          *[]string       `json:"refs,omitempty"`
	Metadata      json.RawMessage `json:"metadata,omitempty"`
	Timezone      *string         `json:"timezone,omitempty"`
	BillingAnchor *string         `json:"billing_anchor,omitempty"` // RFC 3339
}

// SetPlanRequest moves a customer to a plan; OverwriteMeters starts its meters afresh.
type SetPlanRequest struct {
	Plan            string `json:"plan"`
	OverwriteMeters bool   `json:"overwrite_meters"`
}

// OverrideRequest changes the named fields of one entitlement's limit for a customer.
// Numbers are Quantities: a JSON number (kept exactly as written) or a string with a
// unit ("1TiB").
type OverrideRequest struct {
	Value        Quantity `json:"value,omitempty"`
	ExpiresAt    *string  `json:"expires_at,omitempty"` // RFC 3339
	Credit       string   `json:"credit,omitempty"`
	Mode         string   `json:"mode,omitempty"`
	Increment    Quantity `json:"increment,omitempty"`
	Minimum      Quantity `json:"minimum,omitempty"`
	Resets       *bool    `json:"resets,omitempty"`
	ResetInc     string   `json:"reset_inc,omitempty"`
	ResetSch     string   `json:"reset_sch,omitempty"`
	HardTrailing *bool    `json:"hard_trailing,omitempty"`
	GrantsApply  *bool    `json:"grants_apply,omitempty"`
}

// TopupRequest applies one of the customer's plan's topups; Price, when given, is what
// the customer paid (an exact decimal), else the topup's own price.
type TopupRequest struct {
	Topup string       `json:"topup"`
	Price *json.Number `json:"price,omitempty"`
}

// Quantity is an amount that may carry a unit: read from a JSON number (kept exactly as
// written) or a string such as "1TiB"; null reads as empty. It is sent as a string.
type Quantity string

// UnmarshalJSON implements json.Unmarshaler.
func (q *Quantity) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case bytes.Equal(b, []byte("null")):
		*q = ""
		return nil
	case len(b) > 0 && b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*q = Quantity(s)
		return nil
	case len(b) > 0 && (b[0] == '-' || b[0] >= '0' && b[0] <= '9'):
		*q = Quantity(b)
		return nil
	}
	kind := "value"
	if len(b) > 0 {
		switch b[0] {
		case 't', 'f':
			kind = "bool"
		case '{':
			kind = "object"
		case '[':
			kind = "array"
		}
	}
	return &json.UnmarshalTypeError{Value: kind, Type: reflect.TypeFor[string]()}
}
