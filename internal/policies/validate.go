package policies

import (
	"slices"
	"time"

	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/period"
	"github.com/limitr/limitr/internal/quantity"
)

// Validate checks every cross-field and cross-reference rule of the reference engine,
// plus our own stricter ones, and reports all problems with their paths. Like the
// reference validator it normalises as it goes: tiers are sorted by up_to.
func Validate(doc *Document) error {
	var ps problems
	v := validator{doc: doc, ps: &ps, credits: map[string]*Credit{}}
	v.run()
	return ps.err()
}

type validator struct {
	doc     *Document
	ps      *problems
	credits map[string]*Credit
}

func (v *validator) run() {
	doc := v.doc
	if doc.Timezone != "" {
		if _, err := time.LoadLocation(doc.Timezone); err != nil {
			v.ps.add("policy.timezone", "unknown time zone %q", doc.Timezone)
		}
	}
	if doc.HoldTTL.D <= 0 {
		v.ps.add("policy.hold_ttl", "must be greater than zero")
	}
	if doc.EstimateMinSamples < 0 {
		v.ps.add("policy.estimate_min_samples", "must not be negative")
	}
	for _, c := range doc.Credits {
		v.credits[c.Name] = c
	}
	for _, c := range doc.Credits {
		v.credit(c, join("policy.credits", c.Name))
	}
	v.exchange()
	defaults := 0
	for _, pl := range doc.Plans {
		p := join("policy.plans", pl.Name)
		if pl.Default {
			defaults++
			if defaults == 2 {
				v.ps.add(join(p, "default"), "only one plan may be the default")
			}
		}
		v.plan(pl, p)
	}
	for _, n := range doc.Notifications {
		if n.Matches == "" {
			v.ps.add(join(join("policy.notifications", n.Name), "matches"), "is required")
		}
	}
}

func (v *validator) credit(c *Credit, path string) {
	if c.OverheadCost.IsNeg() {
		v.ps.add(join(path, "overhead_cost"), "must not be negative")
	}
	if c.Price != nil && c.Price.Amount.IsNeg() {
		v.ps.add(join(join(path, "price"), "amount"), "must not be negative")
	}
	switch c.StofUnits {
	case UnitsFloat, UnitsInt:
	default:
		if _, ok := quantity.LookupUnit(c.StofUnits); !ok {
			v.ps.add(join(path, "stof_units"), "unknown unit %q (use \"float\", \"int\" or a unit such as \"MB\")", c.StofUnits)
		}
	}
	switch c.PricingModel {
	case PricingFlat:
		if len(c.Tiers) > 0 {
			v.ps.add(join(path, "tiers"), "only tiered, volume and stairstep credits have tiers")
		}
	case PricingTiered, PricingVolume, PricingStairstep:
		if c.Price != nil {
			v.ps.add(join(path, "price"), "must be empty for %s pricing; put prices in tiers", c.PricingModel)
		}
		v.tiers(c, join(path, "tiers"))
	default:
		v.ps.add(join(path, "pricing_model"), "must be flat, tiered, volume or stairstep, got %q", c.PricingModel)
	}
}

// tiers sorts bands by up_to (unbounded last) and keeps only the first unbounded band,
// as the reference validator does, then checks what is left.
func (v *validator) tiers(c *Credit, path string) {
	if len(c.Tiers) == 0 {
		v.ps.add(path, "%s pricing needs at least one tier", c.PricingModel)
		return
	}
	for i, t := range c.Tiers {
		if t.Price.Amount.IsNeg() {
			v.ps.add(index(path, i)+".price.amount", "must not be negative")
		}
		if t.UpTo != nil && !t.UpTo.IsPos() {
			v.ps.add(index(path, i)+".up_to", "must be greater than zero")
		}
	}
	slices.SortStableFunc(c.Tiers, func(a, b PriceTier) int {
		switch {
		case a.UpTo == nil && b.UpTo == nil:
			return 0
		case a.UpTo == nil:
			return 1
		case b.UpTo == nil:
			return -1
		}
		return a.UpTo.Cmp(*b.UpTo)
	})
	for i := 1; i < len(c.Tiers); i++ {
		if c.Tiers[i].UpTo == nil {
			c.Tiers = c.Tiers[:i+1]
			break
		}
		if c.Tiers[i-1].UpTo.Equal(*c.Tiers[i].UpTo) {
			v.ps.add(index(path, i)+".up_to", "repeats up_to %s", c.Tiers[i].UpTo)
		}
	}
	if c.Tiers[len(c.Tiers)-1].UpTo != nil {
		v.ps.add(path, "the last tier must have no up_to (it prices everything above the others)")
	}
}

func (v *validator) exchange() {
	x := &v.doc.Exchange
	switch x.GrantStrategy {
	case GrantExpiresFirst, GrantCheapestFirst, GrantValuableFirst:
	default:
		v.ps.add("policy.exchange.grant_strategy", "must be expires_first, cheapest_first or valuable_first, got %q", x.GrantStrategy)
	}
	pairs := map[string]ExchangePair{}
	for _, p := range x.Pairs {
		pairs[p.Name] = p
	}
	for _, p := range x.Pairs {
		path := join("policy.exchange", p.Name)
		if p.Value.IsNeg() {
			v.ps.add(join(path, "value"), "must not be negative")
		}
		if p.Name == "rune" {
			continue
		}
		if msg := v.chain(p.Name, pairs); msg != "" {
			v.ps.add(path, "%s", msg)
		}
	}
}

// chain follows name → currency until it reaches runes or a priced credit.
func (v *validator) chain(name string, pairs map[string]ExchangePair) string {
	seen := map[string]bool{}
	cur := name
	for {
		if cur == "rune" || cur == "usd" {
			return ""
		}
		if seen[cur] {
			return "exchange chain from " + quote(name) + " loops back to " + quote(cur)
		}
		seen[cur] = true
		p, ok := pairs[cur]
		if !ok {
			if c := v.credits[cur]; c != nil && c.priced() {
				return ""
			}
			return "exchange chain from " + quote(name) + " stops at " + quote(cur) + ", which is neither rune, usd, another pair nor a priced credit"
		}
		cur = p.Currency
	}
}

func quote(s string) string { return `"` + s + `"` }

func (c *Credit) priced() bool {
	return c.Price != nil || len(c.Tiers) > 0
}

func (v *validator) plan(pl *Plan, path string) {
	switch pl.Period {
	case "daily", "weekly", "monthly", "yearly":
	default:
		v.ps.add(join(path, "period"), "must be daily, weekly, monthly or yearly, got %q", pl.Period)
	}
	if pl.TrialPeriod.Set && pl.TrialPeriod.D < 0 {
		v.ps.add(join(path, "trial_period"), "must not be negative")
	}
	for _, e := range pl.Entitlements {
		ep := join(join(path, "entitlements"), e.Name)
		if e.Limit != nil {
			v.limit(e.Limit, join(ep, "limit"), false)
		}
	}
	for _, t := range pl.Topups {
		v.topup(t, join(join(path, "topups"), t.Name))
	}
}

// ValidateLimit checks one limit on its own, for overrides built at run time.
func ValidateLimit(doc *Document, l *Limit, path string) error {
	var ps problems
	v := validator{doc: doc, ps: &ps, credits: map[string]*Credit{}}
	for _, c := range doc.Credits {
		v.credits[c.Name] = c
	}
	v.limit(l, path, true)
	return ps.err()
}

func (v *validator) limit(l *Limit, path string, override bool) {
	c := v.credits[l.Credit]
	switch {
	case l.Credit == "":
		v.ps.add(join(path, "credit"), "is required")
	case c == nil:
		v.ps.add(join(path, "credit"), "credit %q does not exist", l.Credit)
	}
	switch l.Mode {
	case ModeHard, ModeSoft, ModeObserve:
	default:
		v.ps.add(join(path, "mode"), "must be hard, soft or observe, got %q", l.Mode)
	}
	if l.HardTrailing && l.Mode != ModeHard {
		v.ps.add(join(path, "hard_trailing"), "only applies to hard limits")
	}
	v.amountFor(c, l.Value, join(path, "value"), true)
	v.amountFor(c, l.Increment, join(path, "increment"), false)
	if l.Increment.Set && !l.Increment.Q.Value.IsPos() {
		v.ps.add(join(path, "increment"), "must be greater than zero")
	}
	if l.Minimum.Set {
		v.amountFor(c, l.Minimum, join(path, "minimum"), false)
	}
	v.resets(l.Resets, l.ResetInc, l.ResetSch, path, &l.schedule)
	if l.GovernorEnabled {
		if l.Mode != ModeHard {
			v.ps.add(join(path, "governor_enabled"), "the governor only applies to hard limits")
		}
		if !l.GovernorCapacity.Set {
			v.ps.add(join(path, "governor_capacity"), "is required when governor_enabled is true")
		} else if !l.GovernorCapacity.Q.Value.IsPos() {
			v.ps.add(join(path, "governor_capacity"), "must be greater than zero")
		} else {
			v.amountFor(c, l.GovernorCapacity, join(path, "governor_capacity"), false)
		}
		if !l.GovernorRefillRate.Set {
			v.ps.add(join(path, "governor_refill_rate"), "is required when governor_enabled is true")
		} else if l.GovernorRefillRate.Q.Value.IsNeg() || !l.GovernorRefillRate.Q.Unit.IsZero() {
			v.ps.add(join(path, "governor_refill_rate"), "must be a non-negative number of tokens per millisecond")
		}
	}
	if l.EWMAAlpha.IsNeg() || l.EWMAAlpha.Cmp(num.One) > 0 {
		v.ps.add(join(path, "ewma_alpha"), "must be between 0 and 1")
	}
	switch l.FleetMode {
	case "", FleetExact, FleetBounded:
		if l.FleetMode != "" && l.Mode != ModeHard {
			v.ps.add(join(path, "fleet_mode"), "only applies to hard limits")
		}
	default:
		v.ps.add(join(path, "fleet_mode"), "must be exact or bounded, got %q", l.FleetMode)
	}
	_ = override
}

// amountFor checks that a quantity can be expressed in the credit's units.
func (v *validator) amountFor(c *Credit, a Amount, path string, nonNegative bool) {
	if !a.Set {
		return
	}
	if nonNegative && a.Q.Value.IsNeg() {
		v.ps.add(path, "must not be negative")
	}
	if c == nil {
		return
	}
	if _, err := ToCreditUnits(c, a.Q); err != nil {
		v.ps.add(path, "%v", err)
	}
}

func (v *validator) resets(resets bool, inc Duration, sch string, path string, out *period.Schedule) {
	if inc.Set && sch != "" {
		v.ps.add(join(path, "reset_sch"), "reset_inc and reset_sch are exclusive; set one")
	}
	if inc.Set && inc.D <= 0 {
		v.ps.add(join(path, "reset_inc"), "must be greater than zero")
	}
	if sch != "" {
		s, err := period.ParseSchedule(sch)
		if err != nil {
			v.ps.add(join(path, "reset_sch"), "%v", err)
		}
		*out = s
	}
	if !resets && (sch != "" || inc.Set) {
		field := "reset_inc"
		if sch != "" {
			field = "reset_sch"
		}
		v.ps.add(join(path, field), "is set but resets is false; set resets: true or remove it")
	}
}

func (v *validator) topup(t *Topup, path string) {
	c := v.credits[t.Credit]
	switch {
	case t.Credit == "":
		v.ps.add(join(path, "credit"), "is required")
	case c == nil:
		v.ps.add(join(path, "credit"), "credit %q does not exist", t.Credit)
	}
	v.amountFor(c, t.Value, join(path, "value"), true)
	if t.Price != nil && t.Price.Amount.IsNeg() {
		v.ps.add(join(join(path, "price"), "amount"), "must not be negative")
	}
	switch t.ResetMode {
	case ResetHard, ResetAdd, ResetRollover:
	default:
		v.ps.add(join(path, "reset_mode"), "must be hard, add or rollover, got %q", t.ResetMode)
	}
	v.resets(t.Resets, t.ResetInc, t.ResetSch, path, &t.schedule)
	if t.ExpiresAfter.Set && t.ExpiresAfter.D <= 0 {
		v.ps.add(join(path, "expires_after"), "must be greater than zero")
	}
	for _, f := range []struct {
		name string
		a    Amount
	}{{"rollover_min", t.RolloverMin}, {"rollover_max", t.RolloverMax}, {"max_balance", t.MaxBalance}} {
		v.amountFor(c, f.a, join(path, f.name), true)
	}
	if t.RolloverPct.Set {
		p := t.RolloverPct.Q.Value
		if !t.RolloverPct.Q.Unit.IsZero() || p.IsNeg() || p.Cmp(num.One) > 0 {
			v.ps.add(join(path, "rollover_pct"), "must be a fraction between 0 and 1")
		}
	}
	if t.RolloverMin.Set && t.RolloverMax.Set && t.RolloverMin.Q.Value.Cmp(t.RolloverMax.Q.Value) > 0 {
		v.ps.add(join(path, "rollover_min"), "must not exceed rollover_max")
	}
	if t.ResetCatchupCap < 0 {
		v.ps.add(join(path, "reset_catchup_cap"), "must not be negative")
	}
}

// ToCreditUnits converts a quantity into the credit's units. Unitless amounts are
// already in the credit's units; units on a unitless credit are an error rather than
// a silent reinterpretation.
func ToCreditUnits(c *Credit, q quantity.Quantity) (num.Dec, error) {
	switch c.StofUnits {
	case UnitsFloat, UnitsInt, "":
		if !q.Unit.IsZero() {
			return num.Dec{}, &UnitsError{Credit: c.Name, Quantity: q.String()}
		}
		return q.Value, nil
	}
	u, ok := quantity.LookupUnit(c.StofUnits)
	if !ok {
		return num.Dec{}, &UnitsError{Credit: c.Name, Quantity: q.String()}
	}
	return q.In(u)
}

// UnitsError reports a quantity whose units don't fit its credit.
type UnitsError struct {
	Credit   string
	Quantity string
}

func (e *UnitsError) Error() string {
	return "quantity " + quote(e.Quantity) + " has units but credit " + quote(e.Credit) + " is unitless (set its stof_units to a unit to accept unit strings)"
}

// Is makes the error match quantity.ErrIncompatible.
func (e *UnitsError) Is(target error) bool { return target == quantity.ErrIncompatible }
