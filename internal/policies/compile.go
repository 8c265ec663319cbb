package policies

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/limitr/limitr/internal/billing/rating"
	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/period"
	"github.com/limitr/limitr/internal/policies/doctree"
	"github.com/limitr/limitr/internal/policies/expr"
	"github.com/limitr/limitr/internal/quantity"
)

// Mode is a limit's enforcement mode.
type Mode uint8

// Modes, in the order the reference engine documents them.
const (
	Hard Mode = iota
	Soft
	Observe
)

func (m Mode) String() string {
	switch m {
	case Soft:
		return ModeSoft
	case Observe:
		return ModeObserve
	}
	return ModeHard
}

func parseMode(s string) Mode {
	switch s {
	case ModeSoft:
		return Soft
	case ModeObserve:
		return Observe
	}
	return Hard
}

// Policy is a compiled, immutable policy. Everything the hot path needs is resolved
// to indexes and exact decimals in the credit's units, so a decision never parses,
// converts units or walks the document.
type Policy struct {
	Doc      *Document
	Hash     string // sha256 of the canonical JSON form: the version identity
	Location *time.Location

	Credits      []*CompiledCredit
	creditIndex  map[string]*CompiledCredit
	Entitlements []string // every entitlement name any plan defines, in first-seen order
	entIndex     map[string]int
	Plans        []*CompiledPlan
	planIndex    map[string]*CompiledPlan
	DefaultPlan  *CompiledPlan
	// Exchange prices every credit in runes through pairs and credit prices.
	Exchange      *rating.Exchange
	Notifications []*CompiledNotification
}

// CompiledNotification is a notification with its condition compiled.
type CompiledNotification struct {
	Name  string
	Match *expr.Match
}

// CompiledCredit is a credit with its unit resolved.
type CompiledCredit struct {
	*Credit
	Unit  quantity.Unit // zero for unitless (float/int) credits
	Int   bool          // amounts truncate toward zero per call
	Curve *rating.Curve // nil when the credit has no price of its own
	Cost  *expr.Cost    // the overhead expression, nil for units × overhead_cost
}

// CompiledPlan is a plan whose entitlements are indexed by the policy-wide entitlement index.
type CompiledPlan struct {
	*Plan
	ents     []*CompiledEntitlement
	Limited  []*CompiledEntitlement // entitlements with a limit, in document order
	Compiled []*CompiledTopup       // topups in document order
}

// CompiledTopup is a topup with its amounts in its credit's units.
type CompiledTopup struct {
	*Topup
	Credit       *CompiledCredit
	Value        num.Dec
	Reset        period.Spec
	RolloverMin  *num.Dec
	RolloverMax  *num.Dec
	RolloverPct  *num.Dec
	MaxBalance   *num.Dec
	ExpiresAfter time.Duration
	PriceAmount  *num.Dec
}

// CompiledEntitlement is one plan's entitlement.
type CompiledEntitlement struct {
	*Entitlement
	Index int
	Limit *CompiledLimit // nil for a feature gate
}

// CompiledLimit is a limit in its credit's units.
type CompiledLimit struct {
	Src          *Limit
	Credit       *CompiledCredit
	Mode         Mode
	Value        num.Dec
	Increment    num.Dec
	Minimum      num.Dec
	HasMinimum   bool
	HardTrailing bool
	GrantsApply  bool
	Reset        period.Spec // zero when the limit never resets
	ExpiresOn    time.Time   // overrides only

	GovernorEnabled  bool
	GovernorCapacity num.Dec
	GovernorRefill   num.Dec // tokens per millisecond
	EWMAAlpha        num.Dec
	// EWMAAlphaF is EWMAAlpha as a float, for the burn-rate history a call updates.
	EWMAAlphaF float32
	// FleetMode is the limit's fleet_mode ("" when the policy leaves it to the SDK).
	FleetMode string
}

// Resets reports whether the limit has periods.
func (l *CompiledLimit) Resets() bool { return l.Reset.Every > 0 || !l.Reset.Schedule.IsZero() }

// Load parses, validates and compiles a document.
func Load(data []byte, f doctree.Format) (*Policy, error) {
	doc, err := Parse(data, f)
	if err != nil {
		return nil, err
	}
	return Compile(doc)
}

// Compile builds the enforcement view of a validated document.
func Compile(doc *Document) (*Policy, error) {
	p := &Policy{
		Doc:         doc,
		Location:    time.UTC,
		creditIndex: map[string]*CompiledCredit{},
		entIndex:    map[string]int{},
		planIndex:   map[string]*CompiledPlan{},
	}
	if doc.Timezone != "" {
		loc, err := time.LoadLocation(doc.Timezone)
		if err != nil {
			return nil, &ValidationError{Problems: []Problem{{Path: "policy.timezone", Message: err.Error()}}}
		}
		p.Location = loc
	}
	for _, c := range doc.Credits {
		cc := &CompiledCredit{Credit: c, Int: c.StofUnits == UnitsInt}
		if c.StofUnits != UnitsInt && c.StofUnits != UnitsFloat {
			cc.Unit, _ = quantity.LookupUnit(c.StofUnits)
		}
		p.Credits = append(p.Credits, cc)
		p.creditIndex[c.Name] = cc
	}
	var ps problems
	curves := map[string]rating.Curve{}
	for _, cc := range p.Credits {
		path := join("policy.credits", cc.Name)
		if cv, ok := curveOf(cc.Credit); ok {
			cc.Curve = &cv
			curves[cc.Name] = cv
		}
		if cc.Overhead != "" {
			cost, err := expr.CompileCost(cc.Overhead)
			if err != nil {
				ps.add(join(path, "overhead"), "%v", err)
			}
			cc.Cost = cost
		}
	}
	pairs := make([]rating.Pair, 0, len(doc.Exchange.Pairs))
	for _, pr := range doc.Exchange.Pairs {
		pairs = append(pairs, rating.Pair{Name: pr.Name, Value: pr.Value, Currency: pr.Currency})
	}
	p.Exchange = rating.NewExchange(pairs, curves)
	for _, n := range doc.Notifications {
		m, err := expr.CompileMatch(n.Matches)
		if err != nil {
			ps.add(join(join("policy.notifications", n.Name), "matches"), "%v", err)
			continue
		}
		p.Notifications = append(p.Notifications, &CompiledNotification{Name: n.Name, Match: m})
	}
	for _, pl := range doc.Plans {
		for _, e := range pl.Entitlements {
			if _, ok := p.entIndex[e.Name]; !ok {
				p.entIndex[e.Name] = len(p.Entitlements)
				p.Entitlements = append(p.Entitlements, e.Name)
			}
		}
	}
	for _, pl := range doc.Plans {
		cp := &CompiledPlan{Plan: pl, ents: make([]*CompiledEntitlement, len(p.Entitlements))}
		for _, e := range pl.Entitlements {
			ce := &CompiledEntitlement{Entitlement: e, Index: p.entIndex[e.Name]}
			if e.Limit != nil {
				l, err := p.CompileLimit(e.Limit)
				if err != nil {
					ps.add(join(join(join(join("policy.plans", pl.Name), "entitlements"), e.Name), "limit"), "%v", err)
					continue
				}
				ce.Limit = l
				cp.Limited = append(cp.Limited, ce)
			}
			cp.ents[ce.Index] = ce
		}
		for _, t := range pl.Topups {
			ct, err := p.compileTopup(t)
			if err != nil {
				ps.add(join(join(join("policy.plans", pl.Name), "topups"), t.Name), "%v", err)
				continue
			}
			cp.Compiled = append(cp.Compiled, ct)
		}
		p.Plans = append(p.Plans, cp)
		p.planIndex[pl.Name] = cp
		if pl.Default && p.DefaultPlan == nil {
			p.DefaultPlan = cp
		}
	}
	if err := ps.err(); err != nil {
		return nil, err
	}
	canonical, err := doctree.Encode(Tree(doc), doctree.FormatJSON)
	if err != nil {
		return nil, fmt.Errorf("policies: canonical form: %w", err)
	}
	sum := sha256.Sum256(canonical)
	p.Hash = hex.EncodeToString(sum[:])
	return p, nil
}

// CompileLimit resolves a limit against this policy's credits. Used for plan limits and
// for customer overrides built at run time.
func (p *Policy) CompileLimit(l *Limit) (*CompiledLimit, error) {
	c := p.creditIndex[l.Credit]
	if c == nil {
		return nil, fmt.Errorf("credit %q does not exist", l.Credit)
	}
	conv := func(a Amount, field string) (num.Dec, error) {
		v, err := ToCreditUnits(c.Credit, a.Q)
		if err != nil {
			return num.Dec{}, fmt.Errorf("%s: %w", field, err)
		}
		return v, nil
	}
	cl := &CompiledLimit{
		Src:          l,
		Credit:       c,
		Mode:         parseMode(l.Mode),
		HardTrailing: l.HardTrailing,
		GrantsApply:  l.GrantsApply,
		ExpiresOn:    l.OverrideExpiresOn,
		EWMAAlpha:    l.EWMAAlpha,
		EWMAAlphaF:   float32(num.Float64(l.EWMAAlpha)),
		FleetMode:    l.FleetMode,
	}
	var err error
	if cl.Value, err = conv(l.Value, "value"); err != nil {
		return nil, err
	}
	cl.Increment = num.One
	if l.Increment.Set {
		if cl.Increment, err = conv(l.Increment, "increment"); err != nil {
			return nil, err
		}
	}
	if l.Minimum.Set {
		cl.HasMinimum = true
		if cl.Minimum, err = conv(l.Minimum, "minimum"); err != nil {
			return nil, err
		}
	}
	if l.Resets {
		if l.ResetSch != "" {
			s, err := period.ParseSchedule(l.ResetSch)
			if err != nil {
				return nil, err
			}
			cl.Reset.Schedule = s
		} else {
			cl.Reset.Every = l.ResetInc.D
			if cl.Reset.Every <= 0 {
				cl.Reset.Every = defaultResetPeriod
			}
		}
	}
	if l.GovernorEnabled && l.GovernorCapacity.Set && l.GovernorRefillRate.Set {
		cl.GovernorEnabled = cl.Mode == Hard
		if cl.GovernorCapacity, err = conv(l.GovernorCapacity, "governor_capacity"); err != nil {
			return nil, err
		}
		cl.GovernorRefill = l.GovernorRefillRate.Q.Value
	}
	return cl, nil
}

// curveOf builds a credit's own price curve, if it has one.
func curveOf(c *Credit) (rating.Curve, bool) {
	model, err := rating.ParseModel(c.PricingModel)
	if err != nil {
		return rating.Curve{}, false
	}
	cv := rating.Curve{Model: model}
	switch model {
	case rating.Flat:
		if c.Price == nil {
			return rating.Curve{}, false
		}
		cv.Price = c.Price.Amount
	default:
		if len(c.Tiers) == 0 {
			return rating.Curve{}, false
		}
		for _, t := range c.Tiers {
			cv.Tiers = append(cv.Tiers, rating.Tier{UpTo: t.UpTo, Price: t.Price.Amount})
		}
	}
	return cv, true
}

func (p *Policy) compileTopup(t *Topup) (*CompiledTopup, error) {
	c := p.creditIndex[t.Credit]
	if c == nil {
		return nil, fmt.Errorf("credit %q does not exist", t.Credit)
	}
	ct := &CompiledTopup{Topup: t, Credit: c, ExpiresAfter: t.ExpiresAfter.D}
	var err error
	if ct.Value, err = ToCreditUnits(c.Credit, t.Value.Q); err != nil {
		return nil, fmt.Errorf("value: %w", err)
	}
	opt := func(a Amount, field string, dst **num.Dec, inCredit bool) {
		if !a.Set || err != nil {
			return
		}
		v := a.Q.Value
		if inCredit {
			if v, err = ToCreditUnits(c.Credit, a.Q); err != nil {
				err = fmt.Errorf("%s: %w", field, err)
				return
			}
		}
		*dst = &v
	}
	opt(t.RolloverMin, "rollover_min", &ct.RolloverMin, true)
	opt(t.RolloverMax, "rollover_max", &ct.RolloverMax, true)
	opt(t.RolloverPct, "rollover_pct", &ct.RolloverPct, false)
	opt(t.MaxBalance, "max_balance", &ct.MaxBalance, true)
	if err != nil {
		return nil, err
	}
	if t.Price != nil {
		amt := t.Price.Amount
		ct.PriceAmount = &amt
	}
	if t.Resets {
		if t.ResetSch != "" {
			s, err := period.ParseSchedule(t.ResetSch)
			if err != nil {
				return nil, err
			}
			ct.Reset.Schedule = s
		} else {
			ct.Reset.Every = t.ResetInc.D
			if ct.Reset.Every <= 0 {
				ct.Reset.Every = defaultResetPeriod
			}
		}
	}
	return ct, nil
}

// CompiledTopup returns the plan's compiled topup by name, or nil.
func (cp *CompiledPlan) CompiledTopup(name string) *CompiledTopup {
	for _, t := range cp.Compiled {
		if t.Name == name {
			return t
		}
	}
	return nil
}

// Credit returns a credit by name.
func (p *Policy) Credit(name string) *CompiledCredit { return p.creditIndex[name] }

// Plan returns a plan by name.
func (p *Policy) Plan(name string) *CompiledPlan { return p.planIndex[name] }

// EntitlementIndex returns the policy-wide index of an entitlement name. Policies have
// few entitlements, and below a handful a scan is cheaper than hashing the name.
func (p *Policy) EntitlementIndex(name string) (int, bool) {
	if len(p.Entitlements) <= 8 {
		for i, n := range p.Entitlements {
			if len(n) == len(name) && n == name {
				return i, true
			}
		}
		return 0, false
	}
	i, ok := p.entIndex[name]
	return i, ok
}

// Entitlement returns the plan's entitlement at a policy-wide index, or nil.
func (cp *CompiledPlan) Entitlement(i int) *CompiledEntitlement {
	if i < 0 || i >= len(cp.ents) {
		return nil
	}
	return cp.ents[i]
}

// PlanEntitlement returns plan's entitlement named ent, or nil when plan is nil, the
// policy has no such entitlement, or the plan does not grant it.
func (p *Policy) PlanEntitlement(plan *CompiledPlan, ent string) *CompiledEntitlement {
	idx, ok := p.EntitlementIndex(ent)
	if plan == nil || !ok {
		return nil
	}
	return plan.Entitlement(idx)
}

// Marshal writes the document in the given format.
func (p *Policy) Marshal(f doctree.Format) ([]byte, error) { return Encode(p.Doc, f) }
