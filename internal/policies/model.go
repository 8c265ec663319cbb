// Package policies reads, validates and compiles Limitr policy documents.
//
// A document goes through three stages: the format layer (doctree) turns JSON, YAML or
// TOML into an ordered tree; the decoder here turns the tree into a Document, applying
// the reference engine's defaults and reporting every problem with its document path;
// Compile turns a valid Document into the immutable, index-based Policy the engine
// enforces. Nothing in this package performs I/O beyond what a caller hands it.
package policies

import (
	"time"

	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/period"
	"github.com/limitr/limitr/internal/policies/doctree"
	"github.com/limitr/limitr/internal/quantity"
)

// EngineVersion is the reference engine version whose documents and decisions we match.
const EngineVersion = "0.7.0"

// Limit modes.
const (
	ModeHard    = "hard"
	ModeSoft    = "soft"
	ModeObserve = "observe"
)

// Pricing models.
const (
	PricingFlat      = "flat"
	PricingTiered    = "tiered"
	PricingVolume    = "volume"
	PricingStairstep = "stairstep"
)

// Grant strategies.
const (
	GrantExpiresFirst  = "expires_first"
	GrantCheapestFirst = "cheapest_first"
	GrantValuableFirst = "valuable_first"
)

// Topup reset modes.
const (
	ResetHard     = "hard"
	ResetAdd      = "add"
	ResetRollover = "rollover"
)

// Credit unit kinds beyond real units.
const (
	UnitsFloat = "float"
	UnitsInt   = "int"
)

// Document is a decoded policy with every default applied. Field order of the
// source is kept for everything whose order carries meaning (plans, credits,
// entitlements, exchange pairs).
type Document struct {
	Version            string
	Timezone           string // our addition: default IANA zone for calendar resets
	Credits            []*Credit
	Plans              []*Plan
	Exchange           Exchange
	Notifications      []*Notification
	EstimateMinSamples int
	HoldTTL            Duration
	// Kept verbatim: not part of enforcement, but must survive a round trip.
	Capabilities *doctree.Node
	Estimates    *doctree.Node
	Invoices     *doctree.Node
}

// Credit is a unit of value: tokens, seats, megabytes, abstract credits.
type Credit struct {
	Name         string
	Unit         string
	Label        string
	Description  string
	Resets       bool
	OverheadCost num.Dec // provider cost per unit, in runes
	Overhead     string  // CEL expression over units and context; empty = units × overhead_cost
	PricingModel string
	Price        *Price
	Tiers        []PriceTier
	StofUnits    string
}

// Price is an amount in runes with display metadata.
type Price struct {
	ID     string
	Amount num.Dec
	Suffix string
}

// PriceTier is one band (previous up_to, up_to] of a non-flat price curve.
type PriceTier struct {
	UpTo  *num.Dec // nil means unbounded and must be last
	Price Price
}

// Exchange is the table of conversions that chain every credit to runes.
type Exchange struct {
	GrantStrategy string
	Pairs         []ExchangePair
}

// ExchangePair says 1 Name = Value Currency.
type ExchangePair struct {
	Name     string
	Value    num.Dec
	Currency string
}

// Plan is what a customer subscribes to.
type Plan struct {
	Name         string
	Label        string
	Period       string
	Subscription string
	TrialPeriod  Duration
	Entitlements []*Entitlement
	Topups       []*Topup
	Hidden       bool
	Default      bool
	Description  string
}

// Entitlement is a named right on a plan, with or without a limit.
type Entitlement struct {
	Name            string
	Description     string
	Limit           *Limit
	Scope           string
	Hidden          bool
	EstimateBasis   string
	EstimateSegment string
}

// Limit says how much of a credit an entitlement allows and how it resets.
type Limit struct {
	Credit             string
	Mode               string
	Value              Amount
	Increment          Amount
	Minimum            Amount
	HardTrailing       bool
	GrantsApply        bool
	Resets             bool
	ResetInc           Duration
	ResetSch           string
	OverrideExpiresOn  time.Time
	GovernorEnabled    bool
	GovernorCapacity   Amount
	GovernorRefillRate Amount // tokens per millisecond
	EWMAAlpha          num.Dec
	// FleetMode is how a hard limit is kept across SDK instances in cloud mode:
	// FleetExact (allowance leases), FleetBounded (local decisions, a bounded
	// overshoot), or "" for the SDK's setting (WithFleetMode; Exact by default).
	FleetMode string

	schedule period.Schedule
}

// Fleet modes of a hard limit in cloud mode.
const (
	FleetExact   = "exact"
	FleetBounded = "bounded"
)

// Topup is a purchasable or included grant of credit.
type Topup struct {
	Name            string
	Description     string
	Credit          string
	Value           Amount
	Price           *Price
	Resets          bool
	Included        bool
	IncludedScopes  []string
	ResetInc        Duration
	ResetSch        string
	ResetMode       string
	RolloverMin     Amount
	RolloverMax     Amount
	RolloverPct     Amount
	MaxBalance      Amount
	ExpiresAfter    Duration
	ResetCatchupCap int
	schedule        period.Schedule
}

// Notification routes matching events by name. Matches is a CEL expression over
// `type` (string) and `event` (map).
type Notification struct {
	Name    string
	Matches string
}

// Amount is a number or a quantity with units, as written in the document.
type Amount struct {
	Q   quantity.Quantity
	Set bool
	// Quoted records that the source wrote a string, so Marshal writes one back.
	Quoted bool
}

// AmountOf returns a set, unquoted amount for a plain number.
func AmountOf(d num.Dec) Amount {
	return Amount{Q: quantity.Quantity{Value: d}, Set: true}
}

// Duration is a time span written as milliseconds or a unit string such as "30days".
type Duration struct {
	D      time.Duration
	Set    bool
	Quoted bool
	Text   string
}
