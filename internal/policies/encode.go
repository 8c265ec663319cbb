package policies

import (
	"strconv"

	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/policies/doctree"
)

// Encode writes the document back out. Fields equal to their defaults are left out,
// so the output reads like something a person wrote, and decoding it yields the same
// Document.
func Encode(doc *Document, f doctree.Format) ([]byte, error) {
	return doctree.Encode(Tree(doc), f)
}

// Tree converts the document into an ordered tree.
func Tree(doc *Document) *doctree.Node {
	p := doctree.NewMap()
	if doc.Version != "" {
		p.Set("version", doctree.Str(doc.Version))
	}
	if doc.Timezone != "" {
		p.Set("timezone", doctree.Str(doc.Timezone))
	}
	if len(doc.Credits) > 0 {
		cs := doctree.NewMap()
		for _, c := range doc.Credits {
			cs.Set(c.Name, c.Tree())
		}
		p.Set("credits", cs)
	}
	if x := doc.Exchange.tree(); len(x.Keys) > 0 {
		p.Set("exchange", x)
	}
	if len(doc.Plans) > 0 {
		ps := doctree.NewMap()
		for _, pl := range doc.Plans {
			ps.Set(pl.Name, pl.tree())
		}
		p.Set("plans", ps)
	}
	if len(doc.Notifications) > 0 {
		ns := doctree.NewMap()
		for _, n := range doc.Notifications {
			m := doctree.NewMap()
			m.Set("matches", doctree.Str(n.Matches))
			ns.Set(n.Name, m)
		}
		p.Set("notifications", ns)
	}
	if doc.EstimateMinSamples != 5 {
		p.Set("estimate_min_samples", doctree.Num(strconv.Itoa(doc.EstimateMinSamples)))
	}
	if doc.HoldTTL.Set {
		p.Set("hold_ttl", doc.HoldTTL.tree())
	}
	for _, kv := range []struct {
		k string
		n *doctree.Node
	}{{"capabilities", doc.Capabilities}, {"estimates", doc.Estimates}, {"invoices", doc.Invoices}} {
		if kv.n != nil {
			p.Set(kv.k, kv.n)
		}
	}
	root := doctree.NewMap()
	root.Set("policy", p)
	return root
}

func decNode(d num.Dec) *doctree.Node { return doctree.Num(d.Trim(0).String()) }

func setStr(m *doctree.Node, k, v, def string) {
	if v != def {
		m.Set(k, doctree.Str(v))
	}
}

func setBool(m *doctree.Node, k string, v, def bool) {
	if v != def {
		m.Set(k, doctree.BoolNode(v))
	}
}

func (a Amount) tree() *doctree.Node {
	if a.Quoted {
		return doctree.Str(a.Q.String())
	}
	return decNode(a.Q.Value)
}

func setAmount(m *doctree.Node, k string, a Amount) {
	if a.Set {
		m.Set(k, a.tree())
	}
}

func (d Duration) tree() *doctree.Node {
	if d.Quoted || d.Text != "" && d.Text != strconv.FormatInt(d.D.Milliseconds(), 10) {
		if d.Text != "" {
			return doctree.Str(d.Text)
		}
	}
	return doctree.Num(strconv.FormatInt(d.D.Milliseconds(), 10))
}

func setDuration(m *doctree.Node, k string, d Duration) {
	if d.Set {
		m.Set(k, d.tree())
	}
}

func (p *Price) tree() *doctree.Node {
	m := doctree.NewMap()
	setStr(m, "id", p.ID, "")
	m.Set("amount", decNode(p.Amount))
	setStr(m, "suffix", p.Suffix, "/month")
	return m
}

// Tree converts the credit into a tree node.
func (c *Credit) Tree() *doctree.Node {
	m := doctree.NewMap()
	setStr(m, "unit", c.Unit, "credit")
	setStr(m, "label", c.Label, "Credit")
	setStr(m, "description", c.Description, "")
	setBool(m, "resets", c.Resets, false)
	if !c.OverheadCost.IsZero() {
		m.Set("overhead_cost", decNode(c.OverheadCost))
	}
	setStr(m, "overhead", c.Overhead, "")
	setStr(m, "pricing_model", c.PricingModel, PricingFlat)
	if c.Price != nil {
		m.Set("price", c.Price.tree())
	}
	if len(c.Tiers) > 0 {
		l := doctree.NewList()
		for _, t := range c.Tiers {
			tm := doctree.NewMap()
			if t.UpTo != nil {
				tm.Set("up_to", decNode(*t.UpTo))
			}
			tm.Set("price", t.Price.tree())
			l.Items = append(l.Items, tm)
		}
		m.Set("tiers", l)
	}
	setStr(m, "stof_units", c.StofUnits, UnitsFloat)
	return m
}

func (x *Exchange) tree() *doctree.Node {
	m := doctree.NewMap()
	setStr(m, "grant_strategy", x.GrantStrategy, GrantExpiresFirst)
	for _, p := range x.Pairs {
		pm := doctree.NewMap()
		pm.Set("value", decNode(p.Value))
		pm.Set("currency", doctree.Str(p.Currency))
		m.Set(p.Name, pm)
	}
	return m
}

func (pl *Plan) tree() *doctree.Node {
	m := doctree.NewMap()
	setStr(m, "label", pl.Label, "")
	setStr(m, "description", pl.Description, "")
	setBool(m, "default", pl.Default, false)
	setBool(m, "hidden", pl.Hidden, false)
	setStr(m, "period", pl.Period, "monthly")
	setStr(m, "subscription", pl.Subscription, "subscription")
	setDuration(m, "trial_period", pl.TrialPeriod)
	es := doctree.NewMap()
	for _, e := range pl.Entitlements {
		es.Set(e.Name, e.tree())
	}
	m.Set("entitlements", es)
	if len(pl.Topups) > 0 {
		ts := doctree.NewMap()
		for _, t := range pl.Topups {
			ts.Set(t.Name, t.Tree())
		}
		m.Set("topups", ts)
	}
	return m
}

func (e *Entitlement) tree() *doctree.Node {
	m := doctree.NewMap()
	setStr(m, "description", e.Description, "")
	setStr(m, "scope", e.Scope, "")
	setBool(m, "hidden", e.Hidden, false)
	setStr(m, "estimate_basis", e.EstimateBasis, "")
	setStr(m, "estimate_segment", e.EstimateSegment, "")
	if e.Limit != nil {
		m.Set("limit", e.Limit.Tree())
	}
	return m
}

// Tree converts a limit (plan limit or override) into a tree node.
func (l *Limit) Tree() *doctree.Node {
	m := doctree.NewMap()
	m.Set("credit", doctree.Str(l.Credit))
	m.Set("mode", doctree.Str(l.Mode))
	m.Set("value", l.Value.tree())
	if !(l.Increment.Set && !l.Increment.Quoted && l.Increment.Q.Value.Equal(num.One)) {
		setAmount(m, "increment", l.Increment)
	}
	setAmount(m, "minimum", l.Minimum)
	setBool(m, "hard_trailing", l.HardTrailing, false)
	setBool(m, "grants_apply", l.GrantsApply, true)
	setBool(m, "resets", l.Resets, false)
	setDuration(m, "reset_inc", l.ResetInc)
	setStr(m, "reset_sch", l.ResetSch, "")
	if !l.OverrideExpiresOn.IsZero() {
		m.Set("override_expires_on", doctree.Num(strconv.FormatInt(l.OverrideExpiresOn.UnixMilli(), 10)))
	}
	setBool(m, "governor_enabled", l.GovernorEnabled, false)
	setAmount(m, "governor_capacity", l.GovernorCapacity)
	setAmount(m, "governor_refill_rate", l.GovernorRefillRate)
	if !l.EWMAAlpha.Equal(defaultEWMAAlpha) {
		m.Set("ewma_alpha", decNode(l.EWMAAlpha))
	}
	setStr(m, "fleet_mode", l.FleetMode, "")
	return m
}

// Tree converts the topup into a tree node.
func (t *Topup) Tree() *doctree.Node {
	m := doctree.NewMap()
	setStr(m, "description", t.Description, "")
	m.Set("credit", doctree.Str(t.Credit))
	m.Set("value", t.Value.tree())
	if t.Price != nil {
		m.Set("price", t.Price.tree())
	}
	setBool(m, "resets", t.Resets, false)
	setBool(m, "included", t.Included, false)
	if t.IncludedScopes != nil {
		l := doctree.NewList()
		for _, s := range t.IncludedScopes {
			l.Items = append(l.Items, doctree.Str(s))
		}
		m.Set("included_scopes", l)
	}
	setDuration(m, "reset_inc", t.ResetInc)
	setStr(m, "reset_sch", t.ResetSch, "")
	setStr(m, "reset_mode", t.ResetMode, ResetHard)
	setAmount(m, "rollover_min", t.RolloverMin)
	setAmount(m, "rollover_max", t.RolloverMax)
	setAmount(m, "rollover_pct", t.RolloverPct)
	setAmount(m, "max_balance", t.MaxBalance)
	setDuration(m, "expires_after", t.ExpiresAfter)
	if t.ResetCatchupCap != 0 {
		m.Set("reset_catchup_cap", doctree.Num(strconv.Itoa(t.ResetCatchupCap)))
	}
	return m
}
