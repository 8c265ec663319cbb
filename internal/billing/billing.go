// Package billing turns committed usage into invoices a finance team can trust.
//
// An invoice covers one customer and one billing period (monthly from the customer's
// billing anchor, in its time zone). Its lines are rated on the server from the
// committed meter totals with the engine's own rating rule (enforcement.RateOverage)
// and the policy version in force, so the same usage served by one SDK instance or by
// a fleet gives the same invoice, to the cent. Each line is rounded half away from
// zero to the currency's minor unit and totals are sums of rounded lines.
//
// Lifecycle: draft → finalized → paid | void | uncollectible. A draft is created when
// a period ends and refreshed as late usage arrives until its grace period passes;
// finalizing numbers it without gaps and freezes it. Usage committed after that is an
// adjustment on the next invoice; corrections are credit notes. Exactly one invoice
// exists per customer and period: a unique index, not a hope.
package billing

import (
	"errors"
	"time"
)

// Errors, for errors.Is. Validation failures are *validation.Error.
var (
	ErrNotFound = errors.New("not found")
	// ErrTransition: the invoice's status does not allow the operation.
	ErrTransition = errors.New("invalid invoice transition")
	// ErrLiveEnvironment: test clocks are refused in a live environment.
	ErrLiveEnvironment = errors.New("test clocks are not available in a live environment")
	// ErrNoPolicy: the environment has no published policy to rate with.
	ErrNoPolicy = errors.New("no policy is published to this environment")
	// ErrClockAdvancing: the test clock is still advancing.
	ErrClockAdvancing = errors.New("test clock is advancing")
)

// Line kinds.
const (
	KindPlanFee    = "plan_fee"
	KindUsage      = "usage"
	KindCredit     = "credit"
	KindTopup      = "topup"
	KindProration  = "proration"
	KindAdjustment = "adjustment"
)

// Invoice statuses. Upcoming is never stored: it is the current period as it stands.
const (
	StatusUpcoming      = "upcoming"
	StatusDraft         = "draft"
	StatusFinalized     = "finalized"
	StatusPaid          = "paid"
	StatusVoid          = "void"
	StatusUncollectible = "uncollectible"
)

// Line is one invoice line. Amounts are decimal strings in the invoice currency,
// rounded to its minor unit; quantity and unit amount are exact.
type Line struct {
	Kind          string     `json:"kind"`
	Entitlement   string     `json:"entitlement,omitempty"`
	Description   string     `json:"description"`
	Quantity      string     `json:"quantity,omitempty"`
	UnitAmount    string     `json:"unit_amount,omitempty"`
	Amount        string     `json:"amount"`
	PolicyVersion int        `json:"policy_version,omitempty"`
	PeriodStart   *time.Time `json:"period_start,omitempty"`
	PeriodEnd     *time.Time `json:"period_end,omitempty"`
}

// Period is a billing period [Start, End).
type Period struct {
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
}
