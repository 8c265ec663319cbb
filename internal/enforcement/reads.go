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
	grants  num.Dec // pooled grant balance past the limit, when grants apply
	tokens  num.Dec // governor tokens available, when a governor runs
	govern  bool
}

// ReadOptions tune the limit reads (Remaining, Limit, ValuePercent, RemainingPercent).
type ReadOptions struct {
	// WithoutGrants reports the plan limit alone, as Limitr's reads do with
	// grants=false: grant balances do not extend it.
	WithoutGrants bool
}

// read resolves a customer's entitlement and reports the current period without
// moving the meter: a due reset already reads as zero.
func (e *Engine) read(id, ent string, o ReadOptions) (reading, error) {
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
	r := reading{limit: owner.effectiveLimit(p, res.ce, now), grants: num.Zero}
	m := owner.meter(res.ce.Name)
	if m != nil {
		r.meter, r.value, r.started = true, m.value, m.startedAt()
		if r.limit != nil && r.limit.Resets() {
			start := r.limit.Reset.CurrentStart(r.started, now, owner.location(p), owner.anchor())
			if !start.Equal(r.started) {
				r.value, r.started, r.pending = num.Zero, start, true
			}
		}
	}
	if len(owner.grants()) > 0 {
		owner.currentGrants(p, now.UnixNano())
	}
	if l := r.limit; l != nil && !o.WithoutGrants && l.GrantsApply && l.Mode != policies.Observe && len(owner.grants()) > 0 {
		var c num.Calc
		billable := num.Max(num.Zero, c.Sub(r.value, l.Value))
		r.grants = pooled(p, owner, l.Credit.Name, billable, owner.grantStates(p, now.UnixNano(), nil))
	}
	if l := r.limit; l != nil && l.GovernorEnabled {
		r.govern = true
		r.tokens = governorTokens(l, m, r.pending, now.UnixNano())
	}
	return r, nil
}

// Value returns usage in the current period (0 without a meter).
func (e *Engine) Value(ctx context.Context, id, ent string) (num.Dec, error) {
	r, err := e.read(id, ent, ReadOptions{WithoutGrants: true})
	return r.value, err
}

// Remaining returns limit − usage; it may be negative past a soft limit.
func (e *Engine) Remaining(ctx context.Context, id, ent string, o ReadOptions) (num.Dec, error) {
	r, err := e.limited(id, ent, o)
	if err != nil {
		return num.Dec{}, err
	}
	return r.remaining()
}

// remaining is limit − usage, where grants extend the limit past whichever of the two
// is higher.
func (r reading) remaining() (num.Dec, error) {
	var c num.Calc
	lval := r.extended(&c)
	return c.Sub(lval, r.value), c.Err
}

// extended is the limit as the reads see it: grants extend it past whichever of the
// limit and the usage is higher (Limitr's remaining).
func (r reading) extended(c *num.Calc) num.Dec {
	if r.grants.IsPos() {
		return c.Add(num.Max(r.value, r.limit.Value), r.grants)
	}
	return r.limit.Value
}

// remainingPercent is the share of the (extended) limit left, 0..100; a zero limit has
// none left, as in the reference engine.
func (r reading) remainingPercent() (num.Dec, error) {
	var c num.Calc
	lval := r.extended(&c)
	if lval.IsZero() {
		return num.Zero, c.Err
	}
	left := num.Max(num.Zero, c.Sub(lval, r.value))
	return c.Mul(c.Quo(left, lval), num.Hundred), c.Err
}

// Limit returns the effective limit in the credit's units, plus the grant balance
// available past it.
func (e *Engine) Limit(ctx context.Context, id, ent string, o ReadOptions) (num.Dec, error) {
	r, err := e.limited(id, ent, o)
	if err != nil {
		return num.Dec{}, err
	}
	var c num.Calc
	return c.Add(r.limit.Value, r.grants), c.Err
}

// Allowance is what a call could use right now: Remaining, further bounded by the
// governor's tokens when one runs.
func (e *Engine) Allowance(ctx context.Context, id, ent string) (num.Dec, error) {
	r, err := e.limited(id, ent, ReadOptions{})
	if err != nil {
		return num.Dec{}, err
	}
	rem, err := r.remaining()
	if err != nil {
		return rem, err
	}
	if r.govern {
		return num.Min(rem, r.tokens), nil
	}
	return rem, nil
}

// ValuePercent returns the share of the limit used, as 100 − remaining percent. A zero
// limit reads as fully used, as in the reference engine.
func (e *Engine) ValuePercent(ctx context.Context, id, ent string, o ReadOptions) (num.Dec, error) {
	r, err := e.limited(id, ent, o)
	if err != nil {
		return num.Dec{}, err
	}
	left, err := r.remainingPercent()
	if err != nil {
		return num.Dec{}, err
	}
	return num.Hundred.Sub(left)
}

// RemainingPercent returns the share of the limit left, 0..100 (Limitr's
// remaining(percent=true)). A zero limit has none left.
func (e *Engine) RemainingPercent(ctx context.Context, id, ent string, o ReadOptions) (num.Dec, error) {
	r, err := e.limited(id, ent, o)
	if err != nil {
		return num.Dec{}, err
	}
	return r.remainingPercent()
}

func (e *Engine) limited(id, ent string, o ReadOptions) (reading, error) {
	r, err := e.read(id, ent, o)
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
	r, err := e.read(id, ent, ReadOptions{WithoutGrants: true})
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
	owner.mu.Lock() // the anchor may be the creation time, which a restore changes under mu
	loc, anchor := owner.location(p), owner.anchor()
	owner.mu.Unlock()
	if r.limit.Reset.Every > 0 && !r.meter {
		return now.Add(r.limit.Reset.Every).UTC(), nil
	}
	started := r.started
	if !r.meter {
		started = now
	}
	return r.limit.Reset.NextReset(started, now, loc, anchor).UTC(), nil
}
