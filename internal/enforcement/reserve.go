package enforcement

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/policies"
)

// Hold is capacity reserved for a call whose size is known only when it ends (a long
// LLM call). It counts against later calls and caps until settled, released or expired.
type Hold struct {
	ID          string    `json:"id"`
	Customer    string    `json:"customer,omitempty"`
	Entitlement string    `json:"entitlement,omitempty"`
	Amount      float64   `json:"value"`
	Overhead    float64   `json:"overhead"`
	Expires     time.Time `json:"-"`
	Segment     string    `json:"segment,omitempty"`
	Basis       float64   `json:"basis,omitempty"`

	exact *num.Dec
}

// ReserveOptions tune a reservation.
type ReserveOptions struct {
	TTL      time.Duration // default: the policy's hold_ttl
	Quantile float64       // for estimates; default 0.9
	Basis    float64       // estimate per unit of basis (e.g. prompt tokens); 0 = per call
	Segment  string        // estimate segment, e.g. the model name
}

// Reserve holds capacity for a call. With amount <= 0 the amount is estimated from
// this customer's settled history (after estimate_min_samples), else the policy-wide
// history, else the limit's increment. The reservation must pass Check, counting the
// holds already on the meter.
func (e *Engine) Reserve(ctx context.Context, id, ent string, amount num.Dec, opts ReserveOptions, call Call) (Hold, error) {
	p := e.policy.Load()
	res, err := e.resolve(p, id, ent)
	if err != nil {
		return Hold{}, err
	}
	if res.ce == nil {
		return Hold{}, fmt.Errorf("%w: %q", ErrNotEntitled, ent)
	}
	var ls lockScratch
	locks := e.lockCall(&res, &ls)
	scratch := scratchPool.Get().(*callScratch)
	defer scratch.release()
	defer unlockAll(locks)
	owner := res.owner
	if owner.deleted {
		return Hold{}, fmt.Errorf("%w: %q", ErrUnknownCustomer, id)
	}
	now := e.now()
	limit := owner.effectiveLimit(p, res.ce, now)
	if limit == nil {
		return Hold{}, fmt.Errorf("%w: %q", ErrNoLimit, ent)
	}
	m := owner.meter(res.ce.Name)
	segment := segmentKey(opts.Segment)
	if !amount.IsPos() {
		amount = e.estimate(p, limit, res.ce.Name, m, segment, opts)
	}
	if limit.Credit.Int {
		amount = amount.Trunc(0)
	}
	if !amount.IsPos() {
		return Hold{}, fmt.Errorf("%w: reservation amount must be positive", ErrInvalidQuantity)
	}
	var d decision
	call.Customer, call.Entitlement = id, ent
	if _, err := e.decide(&d, p, &res, locks, limit, m, amount, &call, now, scratch.grants[:0], scratch.caps[:0]); err != nil {
		if err == ErrLeaseNeeded {
			// The amount may be an estimate the caller does not know.
			err = &LeaseNeededError{Key: LeaseKey{Customer: id, Entitlement: ent}, Need: amount}
		}
		return Hold{}, err
	}
	if !d.checked() {
		return Hold{}, fmt.Errorf("%w: %s would not allow %s", ErrReservationDenied, ent, amount)
	}
	if m == nil {
		owner.meters = append(owner.meters, meter{key: e.meterKey(res.ce.Name, limit.Credit.Name), started: now.UnixNano()})
		m = &owner.meters[len(owner.meters)-1]
	}
	ttl := opts.TTL
	if ttl <= 0 {
		ttl = p.Doc.HoldTTL.D
	}
	h := hold{
		id:       "lhold_" + strconv.FormatUint(e.holdSeq.Add(1), 36) + "_" + NewGrantID()[6:12],
		value:    amount,
		overhead: d.overhead,
		expires:  now.Add(ttl).UnixNano(),
		basis:    opts.Basis,
		segment:  segment,
	}
	m.pruneHolds(now.UnixNano())
	x := m.extension()
	x.holds = append(x.holds, h)
	return holdOut(h, id, ent), nil
}

func holdOut(h hold, customer, ent string) Hold {
	v := h.value
	return Hold{ID: h.id, Customer: customer, Entitlement: ent, Amount: num.Float64(h.value), Overhead: num.Float64(h.overhead),
		Expires: time.Unix(0, h.expires).UTC(), Segment: h.segment, Basis: h.basis, exact: &v}
}

// takeHold removes a hold from the entitlement's meter; ok is false when it is unknown
// or has expired.
func (e *Engine) takeHold(p *policies.Policy, id, ent, holdID string) (hold, bool, error) {
	res, err := e.resolve(p, id, ent)
	if err != nil {
		return hold{}, false, err
	}
	if res.ce == nil {
		return hold{}, false, fmt.Errorf("%w: %q", ErrNotEntitled, ent)
	}
	owner := res.owner
	owner.mu.Lock()
	defer owner.mu.Unlock()
	m := owner.meter(res.ce.Name)
	if m == nil || m.ext == nil {
		return hold{}, false, nil
	}
	now := e.now().UnixNano()
	for i, h := range m.ext.holds {
		if h.id == holdID {
			m.ext.holds = append(m.ext.holds[:i], m.ext.holds[i+1:]...)
			return h, h.expires > now, nil
		}
	}
	return hold{}, false, nil
}

// Settle ends a reservation with the real amount: the hold is dropped and the amount
// metered as a forced call (past hard limits and caps: the work already happened), and
// the amount feeds the estimates. An expired or unknown hold still meters the usage.
func (e *Engine) Settle(ctx context.Context, id, ent string, h Hold, amount num.Dec, call Call) (bool, error) {
	p := e.policy.Load()
	held, _, err := e.takeHold(p, id, ent, h.ID)
	if err != nil {
		return false, err
	}
	call.Customer, call.Entitlement, call.Amount, call.Force = id, ent, amount, true
	ok, err := e.Allow(ctx, call)
	if err != nil {
		return false, err
	}
	basis := held.basis
	if basis == 0 {
		basis = h.Basis
	}
	segment := held.segment
	if segment == "" {
		segment = segmentKey(h.Segment)
	}
	e.observe(p, id, ent, segment, num.Float64(amount), basis)
	return ok, nil
}

// Release drops a hold without metering anything.
func (e *Engine) Release(ctx context.Context, id, ent string, h Hold) error {
	_, live, err := e.takeHold(e.policy.Load(), id, ent, h.ID)
	if err != nil {
		return err
	}
	if !live {
		return fmt.Errorf("%w: %q", ErrUnknownHold, h.ID)
	}
	return nil
}

// Held sums a customer's live holds on an entitlement.
func (e *Engine) Held(ctx context.Context, id, ent string) (num.Dec, error) {
	p := e.policy.Load()
	res, err := e.resolve(p, id, ent)
	if err != nil {
		return num.Dec{}, err
	}
	if res.ce == nil {
		return num.Dec{}, fmt.Errorf("%w: %q", ErrNotEntitled, ent)
	}
	res.owner.mu.Lock()
	defer res.owner.mu.Unlock()
	return res.owner.meter(res.ce.Name).held(e.now().UnixNano()), nil
}

// segmentKey normalises an estimate segment as the reference engine does.
func segmentKey(s string) string {
	if s == "" {
		return "all"
	}
	return strings.NewReplacer(".", "_", " ", "_").Replace(s)
}

// estimator tracks the mean and variance of settled amounts: a plain running average
// for the first 1/alpha samples, then an exponentially weighted one.
type estimator struct {
	N        int     `json:"n"`
	Mean     float64 `json:"mean"`
	Variance float64 `json:"variance"`
}

const estimateAlpha = 0.1

func (s *estimator) observe(x float64) {
	s.N++
	if float64(s.N) <= 1/estimateAlpha {
		// Welford's running mean and (population) variance.
		delta := x - s.Mean
		s.Mean += delta / float64(s.N)
		s.Variance += (delta*(x-s.Mean) - s.Variance) / float64(s.N)
		return
	}
	diff := x - s.Mean
	incr := estimateAlpha * diff
	s.Mean += incr
	s.Variance = (1 - estimateAlpha) * (s.Variance + diff*incr)
}

func (s *estimator) predict(q float64) float64 {
	return math.Max(0, s.Mean+zScore(q)*math.Sqrt(math.Max(0, s.Variance)))
}

// zScore is the standard normal quantile (Abramowitz & Stegun 26.2.23, |error| < 4.5e-4).
func zScore(q float64) float64 {
	if q <= 0 || q >= 1 {
		q = 0.9
	}
	sign := 1.0
	if q < 0.5 {
		sign, q = -1, 1-q
	}
	t := math.Sqrt(-2 * math.Log(1-q))
	z := t - (2.515517+0.802853*t+0.010328*t*t)/(1+1.432788*t+0.189269*t*t+0.001308*t*t*t)
	return sign * z
}

// estimateBook is the policy-wide history, shared by all customers.
type estimateBook struct {
	mu sync.Mutex
	m  map[string]*estimator
}

func (e *Engine) estimate(p *policies.Policy, limit *policies.CompiledLimit, ent string, m *meter, segment string, opts ReserveOptions) num.Dec {
	q := opts.Quantile
	if q == 0 {
		q = 0.9
	}
	basis := opts.Basis
	if basis <= 0 {
		basis = 1
	}
	if m != nil && m.ext != nil {
		if s := m.ext.estimates[segment]; s != nil && s.N >= p.Doc.EstimateMinSamples && s.N > 0 {
			if d, err := num.FromFloat64(s.predict(q) * basis); err == nil {
				return d
			}
		}
	}
	e.estimates.mu.Lock()
	s := e.estimates.m[ent+"."+segment]
	var pred float64
	if s != nil && s.N > 0 {
		pred = s.predict(q)
	}
	e.estimates.mu.Unlock()
	if pred > 0 {
		if d, err := num.FromFloat64(pred * basis); err == nil {
			return d
		}
	}
	return limit.Increment
}

// observe records a settled amount in the customer's and the policy-wide estimates.
func (e *Engine) observe(p *policies.Policy, id, ent, segment string, amount, basis float64) {
	per := amount
	if basis > 0 {
		per = amount / basis
	}
	res, err := e.resolve(p, id, ent)
	if err == nil && res.ce != nil {
		res.owner.mu.Lock()
		if m := res.owner.meter(res.ce.Name); m != nil {
			x := m.extension()
			if x.estimates == nil {
				x.estimates = map[string]*estimator{}
			}
			s := x.estimates[segment]
			if s == nil {
				s = &estimator{}
				x.estimates[segment] = s
			}
			s.observe(per)
		}
		res.owner.mu.Unlock()
	}
	e.estimates.mu.Lock()
	if e.estimates.m == nil {
		e.estimates.m = map[string]*estimator{}
	}
	s := e.estimates.m[ent+"."+segment]
	if s == nil {
		s = &estimator{}
		e.estimates.m[ent+"."+segment] = s
	}
	s.observe(per)
	e.estimates.mu.Unlock()
}
