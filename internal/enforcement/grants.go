package enforcement

import (
	"context"
	"crypto/rand"
	"fmt"
	"time"

	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/period"
	"github.com/limitr/limitr/internal/policies"
)

// grant is a balance of credit. Its definition (how it resets, what it starts at) is
// copied from the topup that created it and re-synced when the plan's topup changes.
type grant struct {
	id        string
	topup     string
	included  bool
	seq       uint64 // creation order: the final tie-break between grants
	createdOn int64
	grantedOn int64 // start of the current grant period
	lastReset int64
	expiresOn int64 // 0: never
	value     num.Dec
	def       grantDef
	price     num.Dec // what the topup cost (runes), for margin attribution
	hasPrice  bool
}

type grantDef struct {
	credit      string
	starting    num.Dec
	reset       period.Spec
	mode        string
	rolloverMin *num.Dec
	rolloverMax *num.Dec
	rolloverPct *num.Dec
	maxBalance  *num.Dec
	catchupCap  int
	expiresAft  time.Duration
}

func defFromTopup(t *policies.CompiledTopup) grantDef {
	return grantDef{
		credit:      t.Credit.Name,
		starting:    t.Value,
		reset:       t.Reset,
		mode:        t.ResetMode,
		rolloverMin: t.RolloverMin,
		rolloverMax: t.RolloverMax,
		rolloverPct: t.RolloverPct,
		maxBalance:  t.MaxBalance,
		catchupCap:  t.ResetCatchupCap,
		expiresAft:  t.ExpiresAfter,
	}
}

// grantState is a grant as it stands at some instant, computed without mutating it.
type grantState struct {
	value     num.Dec
	grantedOn int64
	lastReset int64
	expired   bool
}

// maxCatchup bounds how many missed periods are replayed one by one; past it only
// modes whose result no longer changes (hard, or a rollover that reached its fixed
// point) are exact, and add/rollover balances are still capped by max_balance.
const maxCatchup = 100_000

// at computes the grant at now: expired, or rolled forward through any periods that
// ended, as the reference engine does lazily on every access.
func (g *grant) at(now int64, loc *time.Location, anchor time.Time) grantState {
	st := grantState{value: g.value, grantedOn: g.grantedOn, lastReset: g.lastReset}
	if g.expiresOn != 0 && g.expiresOn < now {
		st.expired = true
		return st
	}
	rs := g.def.reset
	switch {
	case rs.Every > 0:
		inc := int64(rs.Every)
		if elapsed := now - st.grantedOn; elapsed > inc {
			n := (elapsed - 1) / inc
			st.grantedOn += n * inc
			apply := n
			if g.def.catchupCap > 0 && int64(g.def.catchupCap) < apply {
				apply = int64(g.def.catchupCap)
			}
			st.value = g.def.resetValue(st.value, apply)
			st.lastReset = now
		}
	case !rs.Schedule.IsZero():
		start := rs.Schedule.Start(time.Unix(0, now), loc, anchor).UnixNano()
		if st.lastReset < start {
			st.value = g.def.resetValue(st.value, 1)
			st.lastReset = now
		}
	}
	return st
}

// resetValue applies n period resets to a balance.
func (d *grantDef) resetValue(v num.Dec, n int64) num.Dec {
	if n <= 0 {
		return v
	}
	var c num.Calc
	capped := func(x num.Dec) num.Dec {
		if d.maxBalance != nil && x.Cmp(*d.maxBalance) > 0 {
			return *d.maxBalance
		}
		return x
	}
	switch d.mode {
	case policies.ResetAdd:
		// min(v + s, M) applied n times is min(v + n·s, M) for s >= 0.
		out := capped(c.Add(v, c.Mul(d.starting, num.FromInt(n))))
		if c.Err != nil {
			return capped(v)
		}
		return out
	case policies.ResetRollover:
		for i := int64(0); i < n && i < maxCatchup; i++ {
			carry := num.Max(num.Zero, v)
			if d.rolloverPct != nil {
				carry = c.Mul(carry, *d.rolloverPct)
			}
			if d.rolloverMin != nil && carry.Cmp(*d.rolloverMin) < 0 {
				carry = *d.rolloverMin
			}
			if d.rolloverMax != nil && carry.Cmp(*d.rolloverMax) > 0 {
				carry = *d.rolloverMax
			}
			next := capped(c.Add(d.starting, carry))
			if c.Err != nil {
				return capped(v)
			}
			if next.Equal(v) {
				break // fixed point: further periods change nothing
			}
			v = next
		}
		return v
	default:
		return capped(d.starting)
	}
}

// settle writes a computed state back; it reports false when the grant is gone.
func (g *grant) settle(st grantState) bool {
	if st.expired {
		return false
	}
	g.value, g.grantedOn, g.lastReset = st.value, st.grantedOn, st.lastReset
	return true
}

// currentGrants rolls every grant forward and drops expired ones. It is part of a
// committing call, like a due period reset. Caller holds c.mu.
func (c *customer) currentGrants(p *policies.Policy, now int64) {
	if len(c.grants()) == 0 {
		return
	}
	loc, anchor := c.location(p), c.anchor()
	kept := c.grants()[:0]
	for _, g := range c.grants() {
		if g.settle(g.at(now, loc, anchor)) {
			kept = append(kept, g)
		}
	}
	for i := len(kept); i < len(c.grants()); i++ {
		c.grants()[i] = nil
	}
	c.x.grants = kept // there were grants, so c.x is set
}

// grantOrder is the total order in which grants are drawn (lower first):
//   - grants in the call's own credit before grants in other credits;
//   - then by the exchange's grant_strategy: expires_first (earliest expiry first,
//     grants that never expire last), cheapest_first / valuable_first (lowest /
//     highest rune value per unit of the grant's credit);
//   - then earliest expiry, then creation order (oldest first).
//
// The reference engine breaks ties by insertion order with quirks (the last of several
// non-expiring grants wins); this order is total and documented instead.
func grantLess(p *policies.Policy, strategy string, credit string, a, b *grant, av, bv grantState) bool {
	ae, be := a.def.credit == credit, b.def.credit == credit
	if ae != be {
		return ae
	}
	expiry := func(g *grant) int64 {
		if g.expiresOn == 0 {
			return 1<<63 - 1
		}
		return g.expiresOn
	}
	if strategy == policies.GrantCheapestFirst || strategy == policies.GrantValuableFirst {
		ar, aok := unitRunes(p, a.def.credit)
		br, bok := unitRunes(p, b.def.credit)
		if aok && bok {
			if cmp := ar.Cmp(br); cmp != 0 {
				if strategy == policies.GrantCheapestFirst {
					return cmp < 0
				}
				return cmp > 0
			}
		}
	}
	if ea, eb := expiry(a), expiry(b); ea != eb {
		return ea < eb
	}
	return a.seq < b.seq
}

// unitRunes is the rune value of one unit of a credit at position 0.
func unitRunes(p *policies.Policy, credit string) (num.Dec, bool) {
	v, err := p.Exchange.ToRunes(num.One, credit, num.Zero)
	return v, err == nil
}

// bestGrant picks the next grant to draw for a credit among grants with a positive
// balance, using their computed states. Grants in other credits only count when both
// credits have a rune value. Returns -1 when none.
func bestGrant(p *policies.Policy, c *customer, credit string, states []grantState) int {
	_, creditPriced := unitRunes(p, credit)
	best := -1
	for i, g := range c.grants() {
		st := states[i]
		if st.expired || !st.value.IsPos() {
			continue
		}
		if g.def.credit != credit {
			if !creditPriced {
				continue
			}
			if _, ok := unitRunes(p, g.def.credit); !ok {
				continue
			}
		}
		if best < 0 || grantLess(p, p.Doc.Exchange.GrantStrategy, credit, g, c.grants()[best], st, states[best]) {
			best = i
		}
	}
	return best
}

// pooled is the grant balance available to a credit at a position past the limit:
// grants in the credit count unit for unit; all others are converted to runes at
// position 0 and back into the credit past the exact ones, so tiered prices apply.
func pooled(p *policies.Policy, c *customer, credit string, position num.Dec, states []grantState) num.Dec {
	var calc num.Calc
	exact, runes := num.Zero, num.Zero
	_, creditPriced := unitRunes(p, credit)
	for i, g := range c.grants() {
		st := states[i]
		if st.expired || !st.value.IsPos() {
			continue
		}
		if g.def.credit == credit {
			exact = calc.Add(exact, st.value)
			continue
		}
		if !creditPriced {
			continue
		}
		if r, err := p.Exchange.ToRunes(st.value, g.def.credit, num.Zero); err == nil {
			runes = calc.Add(runes, r)
		}
	}
	if runes.IsPos() {
		if q, err := p.Exchange.FromRunes(runes, credit, calc.Add(num.Max(num.Zero, position), exact)); err == nil {
			exact = calc.Add(exact, q)
		}
	}
	if calc.Err != nil {
		return num.Zero
	}
	return exact
}

// grantStates computes every grant's state at now into buf (reused to avoid allocating).
func (c *customer) grantStates(p *policies.Policy, now int64, buf []grantState) []grantState {
	buf = buf[:0]
	if len(c.grants()) == 0 {
		return buf
	}
	loc, anchor := c.location(p), c.anchor()
	for _, g := range c.grants() {
		buf = append(buf, g.at(now, loc, anchor))
	}
	return buf
}

// grantDraw records what one call took from grants.
type grantDraw struct {
	applied num.Dec // entitlement-credit units covered
	topup   num.Dec // topup revenue recognised by this draw (runes)
}

// periodStart is the start of the grant's current period, the same on every instance
// that holds the grant: its creation for a grant that does not reset, the start of the
// current interval for an interval reset, and the schedule's current period start for
// a scheduled one. The grant must be current (currentGrants).
func (g *grant) periodStart(loc *time.Location, anchor time.Time) int64 {
	if rs := g.def.reset; rs.Every <= 0 && !rs.Schedule.IsZero() {
		return rs.Schedule.Start(time.Unix(0, g.lastReset), loc, anchor).UnixNano()
	}
	return g.grantedOn
}

// drawGrants covers overage from grants, best grant first, until the overage is gone or
// the grants are. Grants must already be current (currentGrants). Drained grants that
// do not reset are deleted. With r set (usage recording), every draw is recorded for
// cloud sync. Caller holds c.mu.
func drawGrants(p *policies.Policy, c *customer, credit string, overage, position num.Dec, r *usageRecorder) (grantDraw, num.Dec) {
	var calc num.Calc
	draw := grantDraw{applied: num.Zero, topup: num.Zero}
	if len(c.grants()) == 0 {
		return draw, overage
	}
	var stateBuf [8]grantState
	for range len(c.grants()) + 1 {
		if !overage.IsPos() {
			break
		}
		states := stateBuf[:0]
		for _, g := range c.grants() {
			states = append(states, grantState{value: g.value})
		}
		i := bestGrant(p, c, credit, states)
		if i < 0 {
			break
		}
		g := c.grants()[i]
		need, err := exchange(p, overage, credit, g.def.credit, position, num.Zero)
		if err != nil {
			need = overage
		}
		need = num.Max(num.Zero, need)
		var taken, covered num.Dec
		if need.Cmp(g.value) < 0 {
			taken, covered = need, overage
			g.value = calc.Sub(g.value, need)
		} else {
			cover, err := exchange(p, g.value, g.def.credit, credit, num.Zero, position)
			if err != nil {
				cover = g.value
			}
			cover = num.Min(num.Max(num.Zero, cover), overage)
			taken, covered = g.value, cover
			g.value = num.Zero
		}
		if r != nil && taken.IsPos() {
			var loc *time.Location
			var anchor time.Time
			if !g.def.reset.Schedule.IsZero() {
				loc, anchor = c.location(p), c.anchor()
			}
			r.recordDraw(grantDrawKey(c, g.id, g.periodStart(loc, anchor)), taken)
		}
		if g.hasPrice && g.def.starting.IsPos() {
			draw.topup = calc.Add(draw.topup, calc.Quo(calc.Mul(g.price, taken), g.def.starting))
		}
		overage = calc.Sub(overage, covered)
		draw.applied = calc.Add(draw.applied, covered)
		position = calc.Add(position, covered)
		if !g.value.IsPos() && g.def.reset.IsZero() {
			c.removeGrant(i)
		}
	}
	return draw, num.Max(num.Zero, overage)
}

// removeGrant drops the grant at index i of c.grants(). Caller holds c.mu.
func (c *customer) removeGrant(i int) {
	x := c.x // i indexes c.grants(), so c.x is set
	copy(x.grants[i:], x.grants[i+1:])
	x.grants[len(x.grants)-1] = nil
	x.grants = x.grants[:len(x.grants)-1]
}

// exchange converts v of one credit into another through runes.
func exchange(p *policies.Policy, v num.Dec, in, out string, inOffset, outOffset num.Dec) (num.Dec, error) {
	return p.Exchange.Convert(v, in, out, inOffset, outOffset)
}

// NewGrantID returns "lgrnt_" + 14 random base62 characters, the reference engine's
// grant id form. Bytes at or above 248 (4×62) are redrawn so every character is equally
// likely.
func NewGrantID() string {
	const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	out := make([]byte, 0, 14)
	var buf [32]byte
	for len(out) < 14 {
		_, _ = rand.Read(buf[:])
		for _, b := range buf {
			if b < 248 && len(out) < 14 {
				out = append(out, alphabet[int(b)%len(alphabet)])
			}
		}
	}
	return "lgrnt_" + string(out)
}

func (e *Engine) newGrant(t *policies.CompiledTopup, included bool, now int64) *grant {
	g := &grant{
		id:        NewGrantID(),
		topup:     t.Name,
		included:  included,
		seq:       e.grantSeq.Add(1),
		createdOn: now,
		grantedOn: now,
		lastReset: now,
		value:     t.Value,
		def:       defFromTopup(t),
	}
	if t.ExpiresAfter > 0 {
		g.expiresOn = now + int64(t.ExpiresAfter)
	}
	if t.PriceAmount != nil {
		g.price, g.hasPrice = *t.PriceAmount, true
	}
	return g
}

// syncIncludedLocked reconciles topup grants with the customer's plan: grants follow
// their topup's current definition, included grants the plan no longer includes for
// this customer type are removed, and missing included topups are granted once.
// Purchased grants are kept even when the plan no longer sells the topup: the
// customer paid for them (the reference engine deletes them). Caller holds c.mu.
func (e *Engine) syncIncludedLocked(p *policies.Policy, c *customer, now int64) {
	plan := c.planLocked(e, p)
	if c.x == nil && (plan == nil || len(plan.Compiled) == 0) {
		// No grants and nothing to grant: the sync would change nothing. It is not
		// recorded either, so customers without extras stay without them; grants can
		// only be added from topups of a plan that has some, which syncs first.
		return
	}
	x := c.extras()
	if x.topupsFor == p && x.topupsPlan == plan {
		return
	}
	x.topupsFor, x.topupsPlan = p, plan
	if plan == nil {
		return
	}
	typ := c.info.Load().typ
	kept := x.grants[:0]
	for _, g := range x.grants {
		t := plan.CompiledTopup(g.topup)
		if g.included && (t == nil || !t.Included || !IncludedFor(t, typ)) {
			continue
		}
		if t != nil {
			g.def = defFromTopup(t)
			g.expiresOn = 0
			if t.ExpiresAfter > 0 {
				g.expiresOn = g.createdOn + int64(t.ExpiresAfter)
			}
		}
		kept = append(kept, g)
	}
	for i := len(kept); i < len(x.grants); i++ {
		x.grants[i] = nil
	}
	x.grants = kept
	for _, t := range plan.Compiled {
		if !t.Included || !IncludedFor(t, typ) {
			continue
		}
		has := false
		for _, g := range x.grants {
			if g.included && g.topup == t.Name {
				has = true
				break
			}
		}
		if !has {
			// Included grants have a deterministic identity and are anchored at the
			// customer's creation (the control plane's created_at in cloud mode), so
			// every instance holds the same grant with the same periods, and draws
			// synced from other instances can be matched to it.
			at := now
			if !c.created.IsZero() {
				at = c.created.UnixNano()
			}
			g := e.newGrant(t, true, at)
			g.id = IncludedGrantID(t.Name)
			x.grants = append(x.grants, g)
		}
	}
}

// IncludedGrantID is the id of the grant an included topup creates.
func IncludedGrantID(topup string) string { return "included:" + topup }

// IncludedFor reports whether an included topup is granted to customers of type typ:
// every type unless the topup names its scopes.
func IncludedFor(t *policies.CompiledTopup, typ string) bool {
	if t.IncludedScopes == nil {
		return true
	}
	for _, s := range t.IncludedScopes {
		if s == typ {
			return true
		}
	}
	return false
}

// TopupGranted is the payload of a customer-topup-granted event.
type TopupGranted struct {
	Topup string
	Plan  string
	Grant string
}

// ApplyCustomerTopup grants a topup from the customer's plan. Payment is the caller's
// business; the topup's price is recorded on the grant for margin reporting.
func (e *Engine) ApplyCustomerTopup(ctx context.Context, id, topup string) (*Customer, error) {
	p := e.policy.Load()
	c := e.lookup(id)
	if c == nil {
		return nil, fmt.Errorf("%w: %q", ErrUnknownCustomer, id)
	}
	now := e.now()
	c.mu.Lock()
	if c.deleted {
		c.mu.Unlock()
		return nil, fmt.Errorf("%w: %q", ErrUnknownCustomer, id)
	}
	plan := c.planLocked(e, p)
	var t *policies.CompiledTopup
	if plan != nil {
		t = plan.CompiledTopup(topup)
	}
	if t == nil {
		c.mu.Unlock()
		return nil, fmt.Errorf("%w: %q is not a topup of the customer's plan", ErrUnknownTopup, topup)
	}
	e.syncIncludedLocked(p, c, now.UnixNano())
	g := e.newGrant(t, false, now.UnixNano())
	x := c.extras()
	x.grants = append(x.grants, g)
	snap := e.snapshotLocked(p, c)
	c.mu.Unlock()
	e.emit(Event{Type: EventCustomerTopupGranted, Customer: snap, Plan: plan.Name, Time: now,
		Topup: &TopupGranted{Topup: t.Name, Plan: plan.Name, Grant: g.id}, topupDef: t})
	return snap, nil
}

// RemainingCredit is the customer's pooled grant balance in a credit.
func (e *Engine) RemainingCredit(ctx context.Context, id, credit string) (num.Dec, error) {
	p := e.policy.Load()
	if p.Credit(credit) == nil && credit != "rune" && credit != "usd" {
		return num.Dec{}, fmt.Errorf("%w: %q", ErrUnknownCredit, credit)
	}
	c := e.lookup(id)
	if c == nil {
		return num.Dec{}, fmt.Errorf("%w: %q", ErrUnknownCustomer, id)
	}
	now := e.now().UnixNano()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.currentGrants(p, now)
	states := c.grantStates(p, now, nil)
	return pooled(p, c, credit, num.Zero, states), nil
}
