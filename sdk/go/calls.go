package limitr

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/limitr/limitr/internal/enforcement"
	"github.com/limitr/limitr/internal/num"
)

// CallOption configures one call.
type CallOption func(*enforcement.Call)

// WithoutEvents suppresses every event the call would emit; state still changes.
func WithoutEvents() CallOption { return func(c *enforcement.Call) { c.NoEvents = true } }

// WithEventData attaches context to the call: it travels in event payloads as
// event_data and feeds cost expressions.
func WithEventData(data map[string]any) CallOption {
	return func(c *enforcement.Call) { c.EventData = data }
}

// WithOverhead sets this call's provider cost in runes, instead of the credit's rate.
func WithOverhead(runes float64) CallOption {
	return func(c *enforcement.Call) {
		d, err := num.FromFloat64(runes)
		if err == nil {
			c.HasOverhead, c.Overhead = true, d
		}
	}
}

// WithIdempotencyKey makes a retried call with the same key return the first answer
// without counting again. Keys are remembered per customer (default 24 hours).
func WithIdempotencyKey(key string) CallOption {
	return func(c *enforcement.Call) { c.IdempotencyKey = key }
}

// do runs a call. It takes the call by pointer so the callers' call, built on their
// stack, is neither copied (a Call is a couple of hundred bytes) nor moved to the heap:
// options, which take a pointer, get a heap copy only when there are any, which keeps
// the common call allocation-free.
func (p *Policy) do(ctx context.Context, call *enforcement.Call, commit bool, opts []CallOption) (bool, error) {
	if err := p.open(); err != nil {
		return false, err
	}
	if len(opts) > 0 {
		c := new(enforcement.Call)
		*c = *call
		for _, o := range opts {
			o(c)
		}
		call = c
	}
	ok, err := p.eng.Decide(ctx, call, commit)
	if err != nil && p.hydrated(ctx, call.Customer, &err) {
		ok, err = p.eng.Decide(ctx, call, commit)
	}
	// Fleet mode Exact: no lease with room for the call. Ask (the call waits) and
	// decide again; the engine then has a grant, a denial or the unreachable rule. A
	// few rounds cover others' calls taking the new room first.
	if err != nil && p.cloud != nil {
		err = p.cloud.leases.retry(ctx, call.Customer, call.Entitlement, call.Amount, err, func() error {
			ok, err = p.eng.Decide(ctx, call, commit)
			return err
		})
		if errors.Is(err, enforcement.ErrLeaseNeeded) {
			return false, nil // still no room after asking: the fleet's limit is in use
		}
	}
	return ok, err
}

func amount(v float64) (num.Dec, error) {
	d, err := num.FromFloat64(v)
	if err != nil {
		return d, fmt.Errorf("%w: %w", ErrInvalidQuantity, err)
	}
	return d, nil
}

// Allow meters amount (in the credit's units) against a customer's entitlement and
// reports whether the call is allowed. A denied call changes nothing except a due
// period reset. An entitlement not on the customer's plan is simply false.
func (p *Policy) Allow(ctx context.Context, customer, entitlement string, amt float64, opts ...CallOption) (bool, error) {
	d, err := amount(amt)
	if err != nil {
		return false, err
	}
	return p.do(ctx, &enforcement.Call{Customer: customer, Entitlement: entitlement, Amount: d}, true, opts)
}

// AllowUnits is Allow with a quantity string such as "500MB", converted exactly into
// the credit's units.
func (p *Policy) AllowUnits(ctx context.Context, customer, entitlement, quantity string, opts ...CallOption) (bool, error) {
	if quantity == "" {
		return false, fmt.Errorf("%w: empty quantity", ErrInvalidQuantity)
	}
	return p.do(ctx, &enforcement.Call{Customer: customer, Entitlement: entitlement, Quantity: quantity}, true, opts)
}

// Check makes the decision Allow would make, without changing anything.
func (p *Policy) Check(ctx context.Context, customer, entitlement string, amt float64, opts ...CallOption) (bool, error) {
	d, err := amount(amt)
	if err != nil {
		return false, err
	}
	return p.do(ctx, &enforcement.Call{Customer: customer, Entitlement: entitlement, Amount: d}, false, opts)
}

// CheckUnits is Check with a quantity string.
func (p *Policy) CheckUnits(ctx context.Context, customer, entitlement, quantity string, opts ...CallOption) (bool, error) {
	if quantity == "" {
		return false, fmt.Errorf("%w: empty quantity", ErrInvalidQuantity)
	}
	return p.do(ctx, &enforcement.Call{Customer: customer, Entitlement: entitlement, Quantity: quantity}, false, opts)
}

// Increment meters the limit's increment (default 1). False for a feature gate.
func (p *Policy) Increment(ctx context.Context, customer, entitlement string, opts ...CallOption) (bool, error) {
	return p.do(ctx, &enforcement.Call{Customer: customer, Entitlement: entitlement, Step: enforcement.StepIncrement}, true, opts)
}

// Decrement gives back the limit's increment. Decrements are never denied by a limit.
func (p *Policy) Decrement(ctx context.Context, customer, entitlement string, opts ...CallOption) (bool, error) {
	return p.do(ctx, &enforcement.Call{Customer: customer, Entitlement: entitlement, Step: enforcement.StepDecrement}, true, opts)
}

// Set moves the meter to value, as a call of (value − current usage).
func (p *Policy) Set(ctx context.Context, customer, entitlement string, value float64, opts ...CallOption) (bool, error) {
	d, err := amount(value)
	if err != nil {
		return false, err
	}
	return p.do(ctx, &enforcement.Call{Customer: customer, Entitlement: entitlement, Amount: d, SetTo: true}, true, opts)
}

// Value returns the customer's usage in the current period, in the credit's units.
func (p *Policy) Value(ctx context.Context, customer, entitlement string) (float64, error) {
	return p.readDec(ctx, customer, func() (num.Dec, error) { return p.eng.Value(ctx, customer, entitlement) })
}

// Resets returns when the current period ends; the zero time if the limit never resets.
func (p *Policy) Resets(ctx context.Context, customer, entitlement string) (time.Time, error) {
	return read(ctx, p, customer, func() (time.Time, error) { return p.eng.Resets(ctx, customer, entitlement) })
}
