package enforcement

import (
	"context"
	"fmt"
	"time"

	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/policies"
)

// reading is the current-period view of one meter, computed without changing state.
type reading struct {
	limit   *policies.CompiledLimit
	value   num.Dec
	meter   bool
	started time.Time
	pending bool
}

// read resolves a customer's entitlement and reports the current period without
// moving the meter: a due reset already reads as zero.
func (e *Engine) read(id, ent string) (reading, error) {
	p := e.policy.Load()
	res, err := e.resolve(p, id, ent)
	if err != nil {
		return reading{}, err
	}
	if res.ce == nil {
		return reading{}, fmt.Errorf("%w: %q", ErrNotEntitled, ent)
	}
	now := e.now()
	owner := res.owner
	owner.mu.Lock()
	defer owner.mu.Unlock()
	r := reading{limit: owner.effectiveLimit(p, res.ce, now)}
	if m := owner.meter(res.ce.Name); m != nil {
		r.meter, r.value, r.started = true, m.value, m.startedAt()
		if r.limit != nil && r.limit.Resets() {
			start := r.limit.Reset.CurrentStart(r.started, now, owner.location(p), owner.info.Load().anchor)
			if !start.Equal(r.started) {
				r.value, r.started, r.pending = num.Zero, start, true
			}
		}
	}
	return r, nil
}

// Value returns usage in the current period (0 without a meter).
func (e *Engine) Value(ctx context.Context, id, ent string) (num.Dec, error) {
	r, err := e.read(id, ent)
	return r.value, err
}

// Remaining returns limit − usage; it may be negative past a soft limit.
func (e *Engine) Remaining(ctx context.Context, id, ent string) (num.Dec, error) {
	r, err := e.limited(id, ent)
	if err != nil {
		return num.Dec{}, err
	}
	var c num.Calc
	return c.Sub(r.limit.Value, r.value), c.Err
}

// Limit returns the effective limit in the credit's units.
func (e *Engine) Limit(ctx context.Context, id, ent string) (num.Dec, error) {
	r, err := e.limited(id, ent)
	if err != nil {
		return num.Dec{}, err
	}
	return r.limit.Value, nil
}

// ValuePercent returns the share of the limit used, as 100 − remaining percent. A zero
// limit reads as fully used, as in the reference engine.
func (e *Engine) ValuePercent(ctx context.Context, id, ent string) (num.Dec, error) {
	r, err := e.limited(id, ent)
	if err != nil {
		return num.Dec{}, err
	}
	var c num.Calc
	remainingPct := num.Zero
	if !r.limit.Value.IsZero() {
		left := num.Max(num.Zero, c.Sub(r.limit.Value, r.value))
		remainingPct = c.Mul(c.Quo(left, r.limit.Value), num.Hundred)
	}
	return c.Sub(num.Hundred, remainingPct), c.Err
}

func (e *Engine) limited(id, ent string) (reading, error) {
	r, err := e.read(id, ent)
	if err != nil {
		return r, err
	}
	if r.limit == nil || r.limit.Mode == policies.Observe {
		return r, fmt.Errorf("%w: %q", ErrNoLimit, ent)
	}
	return r, nil
}

// Resets returns when the current period ends. It is the zero time for a limit that
// never resets.
func (e *Engine) Resets(ctx context.Context, id, ent string) (time.Time, error) {
	p := e.policy.Load()
	r, err := e.read(id, ent)
	if err != nil {
		return time.Time{}, err
	}
	if r.limit == nil {
		return time.Time{}, fmt.Errorf("%w: %q", ErrNoLimit, ent)
	}
	if !r.limit.Resets() {
		return time.Time{}, nil
	}
	now := e.now()
	res, err := e.resolve(p, id, ent)
	if err != nil {
		return time.Time{}, err
	}
	owner := res.owner
	loc, anchor := owner.location(p), owner.info.Load().anchor
	if r.limit.Reset.Every > 0 && !r.meter {
		return now.Add(r.limit.Reset.Every).UTC(), nil
	}
	started := r.started
	if !r.meter {
		started = now
	}
	return r.limit.Reset.NextReset(started, now, loc, anchor).UTC(), nil
}

// Increment step for a customer's entitlement (the limit's increment).
func (e *Engine) Cost(ctx context.Context, id, ent string) (num.Dec, error) {
	r, err := e.read(id, ent)
	if err != nil {
		return num.Dec{}, err
	}
	if r.limit == nil {
		return num.Dec{}, fmt.Errorf("%w: %q", ErrNoLimit, ent)
	}
	return r.limit.Increment, nil
}
