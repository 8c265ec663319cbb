// Package enforcement is the engine: customers, meters, limits, periods and the
// decisions made on them. It performs no I/O, keeps no globals and takes its clock
// from the caller, so the same code runs in-process in an SDK and in the control plane.
package enforcement

import "errors"

// Sentinel errors callers test with errors.Is.
var (
	ErrUnknownCustomer    = errors.New("unknown customer")
	ErrUnknownEntitlement = errors.New("unknown entitlement")
	ErrUnknownPlan        = errors.New("unknown plan")
	ErrNoLimit            = errors.New("entitlement has no limit")
	ErrInvalidQuantity    = errors.New("invalid quantity")
	ErrNotEntitled        = errors.New("entitlement is not on the customer's plan")
	ErrInvalidCustomer    = errors.New("invalid customer")
	ErrInvalidOverride    = errors.New("invalid override")
	ErrAltIDTaken         = errors.New("alt id belongs to another customer")
	ErrClosed             = errors.New("policy is closed")
	ErrUnknownTopup       = errors.New("unknown topup")
	ErrUnknownCredit      = errors.New("unknown credit")
	ErrInvalidCap         = errors.New("invalid cap")
	ErrCapExists          = errors.New("cap already exists")
	ErrUnknownCap         = errors.New("unknown cap")
	ErrUnknownHold        = errors.New("unknown or expired hold")
	ErrReservationDenied  = errors.New("reservation denied")
	ErrInvalidVoucher     = errors.New("invalid voucher")
	ErrNoVoucher          = errors.New("customer has no voucher")
)
