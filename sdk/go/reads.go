package limitr

import (
	"context"
	"time"

	"github.com/limitr/limitr/internal/enforcement"
	"github.com/limitr/limitr/internal/num"
)

// ReadOption tunes a limit read (Limit, Remaining, RemainingPercent, ValuePercent,
// ProjectedExhaustion).
type ReadOption func(*enforcement.BurnOptions)

// WithoutGrants reads the plan limit alone: grant balances (topups) do not extend it.
// It is Limitr's grants=false.
func WithoutGrants() ReadOption {
	return func(o *enforcement.BurnOptions) { o.WithoutGrants = true }
}

// Smoothed makes ProjectedExhaustion use the exponentially smoothed rate (the limit's
// ewma_alpha) instead of the newest one; other reads ignore it.
func Smoothed() ReadOption {
	return func(o *enforcement.BurnOptions) { o.Smoothed = true }
}

func readOptions(opts []ReadOption) enforcement.BurnOptions {
	var o enforcement.BurnOptions
	for _, f := range opts {
		f(&o)
	}
	return o
}

// read runs an engine call about a customer: once, and in cloud mode once more after
// hydrating the customer when this instance had not seen it.
func read[T any](ctx context.Context, p *Policy, customer string, f func() (T, error)) (T, error) {
	if err := p.open(); err != nil {
		var zero T
		return zero, err
	}
	v, err := f()
	if p.hydrated(ctx, customer, &err) {
		v, err = f()
	}
	return v, err
}

// act is read for calls that return only an error.
func act(ctx context.Context, p *Policy, customer string, f func() error) error {
	_, err := read(ctx, p, customer, func() (struct{}, error) { return struct{}{}, f() })
	return err
}

func (p *Policy) readDec(ctx context.Context, customer string, f func() (num.Dec, error)) (float64, error) {
	return float(read(ctx, p, customer, f))
}

// ValuePercent returns the share of the limit used, in percent: 100 − RemainingPercent.
func (p *Policy) ValuePercent(ctx context.Context, customer, entitlement string, opts ...ReadOption) (float64, error) {
	o := readOptions(opts).ReadOptions
	return p.readDec(ctx, customer, func() (num.Dec, error) { return p.eng.ValuePercent(ctx, customer, entitlement, o) })
}

// Remaining returns what is left of the limit this period, grants included unless
// WithoutGrants (negative past a soft limit). ErrNoLimit for feature gates and
// observe limits.
func (p *Policy) Remaining(ctx context.Context, customer, entitlement string, opts ...ReadOption) (float64, error) {
	o := readOptions(opts).ReadOptions
	return p.readDec(ctx, customer, func() (num.Dec, error) { return p.eng.Remaining(ctx, customer, entitlement, o) })
}

// RemainingPercent returns the share of the limit left this period, 0 to 100 (Limitr's
// remaining(percent=true)). A limit of 0 with no grants has none left.
func (p *Policy) RemainingPercent(ctx context.Context, customer, entitlement string, opts ...ReadOption) (float64, error) {
	o := readOptions(opts).ReadOptions
	return p.readDec(ctx, customer, func() (num.Dec, error) { return p.eng.RemainingPercent(ctx, customer, entitlement, o) })
}

// Limit returns the customer's effective limit, extended by its grant balance unless
// WithoutGrants. ErrNoLimit for gates and observe limits.
func (p *Policy) Limit(ctx context.Context, customer, entitlement string, opts ...ReadOption) (float64, error) {
	o := readOptions(opts).ReadOptions
	return p.readDec(ctx, customer, func() (num.Dec, error) { return p.eng.Limit(ctx, customer, entitlement, o) })
}

// Rate returns how fast the customer is consuming the entitlement, in units per
// millisecond (as Limitr reports it): the newest call's amount over the time since the
// call before it. It is 0 before the second call of a period. The history it reads is
// this instance's: in cloud mode each instance sees the calls it served.
func (p *Policy) Rate(ctx context.Context, customer, entitlement string) (float64, error) {
	return read(ctx, p, customer, func() (float64, error) { return p.eng.Rate(customer, entitlement) })
}

// Acceleration returns how the consumption rate changed between the last two calls, in
// units per millisecond per millisecond (positive: speeding up). It is 0 before the
// third call of a period.
func (p *Policy) Acceleration(ctx context.Context, customer, entitlement string) (float64, error) {
	return read(ctx, p, customer, func() (float64, error) { return p.eng.Acceleration(customer, entitlement) })
}

// ProjectedExhaustion returns when the customer reaches the limit (grants included
// unless WithoutGrants) at the current rate (Smoothed: the smoothed rate). It returns
// the zero time when it never does: no rate yet, usage falling, already at the limit.
func (p *Policy) ProjectedExhaustion(ctx context.Context, customer, entitlement string, opts ...ReadOption) (time.Time, error) {
	o := readOptions(opts)
	return read(ctx, p, customer, func() (time.Time, error) { return p.eng.ProjectedExhaustion(customer, entitlement, o) })
}
