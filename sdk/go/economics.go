package limitr

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/limitr/limitr/internal/enforcement"
	"github.com/limitr/limitr/internal/num"
)

// Types of the credit-economics API.
type (
	// Margin is revenue against provider cost for a period; see its field docs for what
	// each number means.
	Margin = enforcement.Margin
	// EntitlementMargin is one entitlement's share of a Margin.
	EntitlementMargin = enforcement.EntitlementMargin
	// Usage is hypothetical usage for MarginSnapshot.
	Usage = enforcement.Usage
	// Hold is reserved capacity.
	Hold = enforcement.Hold
	// Cap is a spend cap.
	Cap = enforcement.Cap
	// GovernorState is the governor part of a meter-governed event.
	GovernorState = enforcement.GovernorState
	// TopupGranted is the payload of a customer-topup-granted event.
	TopupGranted = enforcement.TopupGranted
)

// Event types of the credit-economics layer.
const (
	EventMeterGoverned        = enforcement.EventMeterGoverned
	EventCapLimit             = enforcement.EventCapLimit
	EventCapThresholdCrossed  = enforcement.EventCapThresholdCrossed
	EventCustomerTopupGranted = enforcement.EventCustomerTopupGranted
	EventCustomerCapAdded     = enforcement.EventCustomerCapAdded
	EventCustomerCapReset     = enforcement.EventCustomerCapReset
	EventCustomerCapRemoved   = enforcement.EventCustomerCapRemoved
)

// Errors of the credit-economics layer.
var (
	ErrUnknownTopup      = enforcement.ErrUnknownTopup
	ErrUnknownCredit     = enforcement.ErrUnknownCredit
	ErrInvalidCap        = enforcement.ErrInvalidCap
	ErrCapExists         = enforcement.ErrCapExists
	ErrUnknownCap        = enforcement.ErrUnknownCap
	ErrUnknownHold       = enforcement.ErrUnknownHold
	ErrReservationDenied = enforcement.ErrReservationDenied
	ErrNoPrice           = fmt.Errorf("no exchange path between the credits")
)

// WithCallCap limits what this one call may consume: at most ceiling of credit
// ("rune" or "" for money).
func WithCallCap(credit string, ceiling float64) CallOption {
	return func(c *enforcement.Call) {
		if d, err := num.FromFloat64(ceiling); err == nil {
			c.Caps = append(c.Caps, enforcement.CallCap{Credit: credit, Value: d})
		}
	}
}

// WithHoldTTL sets how long a reservation holds (default: the policy's hold_ttl, 10 minutes).
func WithHoldTTL(d time.Duration) CallOption {
	return func(c *enforcement.Call) { c.Reservation.TTL = d }
}

// WithQuantile sets the quantile an estimated reservation covers (default 0.9).
func WithQuantile(q float64) CallOption {
	return func(c *enforcement.Call) { c.Reservation.Quantile = q }
}

// WithBasis estimates per unit of basis (for example per prompt token) and records
// settled amounts the same way.
func WithBasis(units float64) CallOption {
	return func(c *enforcement.Call) { c.Reservation.Basis = units }
}

// WithSegment keeps estimates per segment, such as the model name.
func WithSegment(segment string) CallOption {
	return func(c *enforcement.Call) { c.Reservation.Segment = segment }
}

func (p *Policy) callWith(opts []CallOption) enforcement.Call {
	var call enforcement.Call
	for _, o := range opts {
		o(&call)
	}
	return call
}

// ApplyCustomerTopup grants a topup of the customer's plan. Charging for it is up to
// you; its price is recorded for margins.
func (p *Policy) ApplyCustomerTopup(ctx context.Context, customer, topup string) error {
	if err := p.open(); err != nil {
		return err
	}
	if p.cloud != nil {
		return p.cloud.applyTopup(ctx, customer, topup)
	}
	_, err := p.eng.ApplyCustomerTopup(ctx, customer, topup)
	return err
}

// RemainingCredit is the customer's pooled grant balance, expressed in credit.
func (p *Policy) RemainingCredit(ctx context.Context, customer, credit string) (float64, error) {
	return p.readDec(ctx, customer, func() (num.Dec, error) { return p.eng.RemainingCredit(ctx, customer, credit) })
}

// CreditExchange converts value of one credit into another through the exchange table
// (out "rune" gives money).
func (p *Policy) CreditExchange(in, out string, value float64) (float64, error) {
	d, err := amount(value)
	if err != nil {
		return 0, err
	}
	v, err := p.eng.Policy().Exchange.Convert(d, in, out, num.Zero, num.Zero)
	if err != nil {
		return 0, fmt.Errorf("%w: %s → %s: %w", ErrNoPrice, in, out, err)
	}
	return num.Float64(v), nil
}

// Allowance is what a call could use right now: Remaining, bounded by the governor.
func (p *Policy) Allowance(ctx context.Context, customer, entitlement string) (float64, error) {
	return p.readDec(ctx, customer, func() (num.Dec, error) { return p.eng.Allowance(ctx, customer, entitlement) })
}

// Reserve holds capacity for a call whose size is known later. With amount <= 0 the
// amount is estimated from settled history (WithQuantile, WithBasis, WithSegment),
// falling back to the limit's increment.
func (p *Policy) Reserve(ctx context.Context, customer, entitlement string, amt float64, opts ...CallOption) (Hold, error) {
	if err := p.open(); err != nil {
		return Hold{}, err
	}
	d, err := amount(amt)
	if err != nil {
		return Hold{}, err
	}
	call := p.callWith(opts)
	r, err := p.eng.Reserve(ctx, customer, entitlement, d, call.Reservation, call)
	if p.hydrated(ctx, customer, &err) {
		r, err = p.eng.Reserve(ctx, customer, entitlement, d, call.Reservation, call)
	}
	if err != nil && p.cloud != nil {
		// Fleet mode Exact: a hold takes room in the lease, as a call does.
		err = p.cloud.leases.retry(ctx, customer, entitlement, d, err, func() error {
			r, err = p.eng.Reserve(ctx, customer, entitlement, d, call.Reservation, call)
			return err
		})
		if errors.Is(err, enforcement.ErrLeaseNeeded) {
			return Hold{}, fmt.Errorf("%w: %s: the fleet's allowance is in use", ErrReservationDenied, entitlement)
		}
	}
	return r, err
}

// Settle ends a reservation with the real amount, metering it even past limits (the
// work happened) and feeding the estimates.
func (p *Policy) Settle(ctx context.Context, customer, entitlement string, hold Hold, amt float64, opts ...CallOption) (bool, error) {
	if err := p.open(); err != nil {
		return false, err
	}
	d, err := amount(amt)
	if err != nil {
		return false, err
	}
	r, err := p.eng.Settle(ctx, customer, entitlement, hold, d, p.callWith(opts))
	if p.hydrated(ctx, customer, &err) {
		r, err = p.eng.Settle(ctx, customer, entitlement, hold, d, p.callWith(opts))
	}
	return r, err
}

// Release drops a reservation without metering.
func (p *Policy) Release(ctx context.Context, customer, entitlement string, hold Hold) error {
	return act(ctx, p, customer, func() error { return p.eng.Release(ctx, customer, entitlement, hold) })
}

// Held sums the live reservations on a customer's entitlement.
func (p *Policy) Held(ctx context.Context, customer, entitlement string) (float64, error) {
	return p.readDec(ctx, customer, func() (num.Dec, error) { return p.eng.Held(ctx, customer, entitlement) })
}

// AddCustomerCap adds a spend cap. Shared caps also bind customers whose refs lead to
// this one (an org budget); SharedWith limits that to some customer types.
//
// In cloud mode caps live on the control plane: the cap is created there (PUT
// …/customers/{id}/caps/{cap}) and every instance enforces it against the fleet's
// total consumption (in fleet mode Exact, with leases of its allowance, so the fleet
// together never passes it).
func (p *Policy) AddCustomerCap(ctx context.Context, customer string, c Cap) error {
	return act(ctx, p, customer, func() error {
		if p.cloud != nil {
			return p.cloud.addCap(ctx, customer, c)
		}
		_, err := p.eng.AddCustomerCap(ctx, customer, c)
		return err
	})
}

// CustomerCap returns a cap with its current state.
func (p *Policy) CustomerCap(ctx context.Context, customer, id string) (Cap, error) {
	return read(ctx, p, customer, func() (Cap, error) { return p.eng.CustomerCap(ctx, customer, id) })
}

// ResetCustomerCap zeroes a cap's meter (in cloud mode, on the control plane: the cap
// gets a new key and every instance starts it from zero).
func (p *Policy) ResetCustomerCap(ctx context.Context, customer, id string) error {
	return act(ctx, p, customer, func() error {
		if p.cloud != nil && p.heldCap(ctx, customer, id) {
			return p.cloud.capCall(ctx, customer, http.MethodPost, id, "/reset", nil)
		}
		return p.eng.ResetCustomerCap(ctx, customer, id)
	})
}

// RemoveCustomerCap removes a cap (in cloud mode, from the control plane).
func (p *Policy) RemoveCustomerCap(ctx context.Context, customer, id string) error {
	return act(ctx, p, customer, func() error {
		if p.cloud != nil && p.heldCap(ctx, customer, id) {
			return p.cloud.capCall(ctx, customer, http.MethodDelete, id, "", nil)
		}
		return p.eng.RemoveCustomerCap(ctx, customer, id)
	})
}

// heldCap reports whether a customer's cap is one the control plane holds (a cap
// restored from a snapshot in cloud mode is local).
func (p *Policy) heldCap(ctx context.Context, customer, id string) bool {
	cp, err := p.eng.CustomerCap(ctx, customer, id)
	return err == nil && cp.Key != ""
}

// CustomerMarginSnapshot reports the customer's margin for the current period.
func (p *Policy) CustomerMarginSnapshot(ctx context.Context, customer string) (Margin, error) {
	return read(ctx, p, customer, func() (Margin, error) { return p.eng.CustomerMarginSnapshot(ctx, customer) })
}

// MarginSnapshot models a hypothetical customer's usage on a plan, scaled to the plan's period.
func (p *Policy) MarginSnapshot(ctx context.Context, plan string, usage map[string]Usage) (Margin, error) {
	if err := p.open(); err != nil {
		return Margin{}, err
	}
	return p.eng.MarginSnapshot(ctx, plan, usage)
}

// EnsurePlanSubscription meters the plan fee (the plan's subscription entitlement) once
// the trial is over, if it has not been yet. It reports whether it did.
func (p *Policy) EnsurePlanSubscription(ctx context.Context, customer string) (bool, error) {
	return read(ctx, p, customer, func() (bool, error) { return p.eng.EnsurePlanSubscription(ctx, customer) })
}

// SetCustomer restores a customer from a snapshot (Customer, Customers or their JSON),
// replacing its state.
func (p *Policy) SetCustomer(ctx context.Context, c *Customer) error {
	if err := p.open(); err != nil {
		return err
	}
	return p.eng.SetCustomer(ctx, c, true)
}

// LoadCustomers restores many customers, for example after a restart.
func (p *Policy) LoadCustomers(ctx context.Context, cs []*Customer) error {
	if err := p.open(); err != nil {
		return err
	}
	return p.eng.LoadCustomers(ctx, cs)
}
