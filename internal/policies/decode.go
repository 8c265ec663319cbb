package policies

import (
	"errors"
	"math"
	"time"

	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/policies/doctree"
	"github.com/limitr/limitr/internal/quantity"
)

// Default values from the reference engine's type definitions.
var (
	defaultEWMAAlpha   = num.MustParse("0.2")
	defaultResetPeriod = 30 * 24 * time.Hour
	defaultHoldTTL     = 10 * time.Minute
)

// decoder walks the document tree once, filling typed values and collecting every
// problem instead of stopping at the first.
type decoder struct{ probs *problems }

func (d *decoder) add(path, format string, args ...any) { d.probs.add(path, format, args...) }

// fields visits the entries of an object; visit reports whether it knew the key.
func (d *decoder) fields(n *doctree.Node, path string, visit func(key string, v *doctree.Node, p string) bool) {
	if n == nil || n.Kind == doctree.Null {
		return
	}
	if n.Kind != doctree.Map {
		d.add(path, "must be an object, got %s", n.Kind)
		return
	}
	for i, k := range n.Keys {
		p := join(path, k)
		if !visit(k, n.Vals[i], p) {
			d.add(p, "unknown field %q", k)
		}
	}
}

func isNull(n *doctree.Node) bool { return n == nil || n.Kind == doctree.Null }

func (d *decoder) str(n *doctree.Node, path string) string {
	if isNull(n) {
		return ""
	}
	if n.Kind != doctree.String {
		d.add(path, "must be a string, got %s", n.Kind)
		return ""
	}
	return n.Text
}

func (d *decoder) boolean(n *doctree.Node, path string) bool {
	if isNull(n) {
		return false
	}
	if n.Kind != doctree.Bool {
		d.add(path, "must be true or false, got %s", n.Kind)
		return false
	}
	return n.Bool
}

// quantity reads a number, or a string holding a number with optional units.
func (d *decoder) quantity(n *doctree.Node, path string) (quantity.Quantity, bool, bool) {
	if isNull(n) {
		return quantity.Quantity{}, false, false
	}
	if n.Kind != doctree.Number && n.Kind != doctree.String {
		d.add(path, "must be a number or a quantity string, got %s", n.Kind)
		return quantity.Quantity{}, false, false
	}
	q, err := quantity.Parse(n.Text)
	if err != nil {
		d.add(path, "%v", err)
		return quantity.Quantity{}, false, false
	}
	if n.Kind == doctree.Number && !q.Unit.IsZero() {
		d.add(path, "number %q has units; quote it as a string", n.Text)
	}
	return q, true, n.Kind == doctree.String
}

func (d *decoder) amount(n *doctree.Node, path string) Amount {
	q, ok, quoted := d.quantity(n, path)
	return Amount{Q: q, Set: ok, Quoted: quoted}
}

// dec reads a plain number (a numeric string is accepted, units are not).
func (d *decoder) dec(n *doctree.Node, path string, def num.Dec) num.Dec {
	q, ok, _ := d.quantity(n, path)
	if !ok {
		return def
	}
	if !q.Unit.IsZero() {
		d.add(path, "must be a plain number, got units %q", q.Unit.String())
		return def
	}
	return q.Value
}

func (d *decoder) integer(n *doctree.Node, path string, def int) int {
	if isNull(n) {
		return def
	}
	v := d.dec(n, path, num.FromInt(int64(def)))
	if !v.IsInt() {
		d.add(path, "must be a whole number, got %s", v)
		return def
	}
	whole, _, ok := v.Int64(0)
	if !ok || whole > math.MaxInt32 || whole < math.MinInt32 {
		d.add(path, "is out of range")
		return def
	}
	return int(whole)
}

// duration reads milliseconds (a plain number) or a time quantity such as "30days".
func (d *decoder) duration(n *doctree.Node, path string) Duration {
	if isNull(n) {
		return Duration{}
	}
	if n.Kind != doctree.Number && n.Kind != doctree.String {
		d.add(path, "must be milliseconds or a duration string such as \"30days\", got %s", n.Kind)
		return Duration{}
	}
	dur, err := quantity.ParseDuration(n.Text)
	if err != nil {
		d.add(path, "%v", err)
		return Duration{}
	}
	return Duration{D: dur, Set: true, Quoted: n.Kind == doctree.String, Text: n.Text}
}

func (d *decoder) strList(n *doctree.Node, path string) []string {
	if isNull(n) {
		return nil
	}
	if n.Kind != doctree.List {
		d.add(path, "must be a list of strings, got %s", n.Kind)
		return nil
	}
	out := make([]string, 0, len(n.Items))
	for i, it := range n.Items {
		out = append(out, d.str(it, index(path, i)))
	}
	return out
}

// Decode turns a document tree into a Document with defaults applied. It reports
// shape problems (unknown fields, wrong types, unparseable quantities) but not
// cross-references; Validate does those.
func Decode(root *doctree.Node) (*Document, error) {
	var probs problems
	d := &decoder{probs: &probs}
	doc := &Document{
		Version:            EngineVersion,
		EstimateMinSamples: 5,
		HoldTTL:            Duration{D: defaultHoldTTL},
		Exchange:           Exchange{GrantStrategy: GrantExpiresFirst},
	}
	var policy *doctree.Node
	switch {
	case root == nil || root.Kind == doctree.Null:
		probs.add("(document)", "is empty")
	case root.Kind != doctree.Map:
		probs.add("(document)", "must be an object with a \"policy\" key, got %s", root.Kind)
	default:
		d.fields(root, "", func(k string, v *doctree.Node, p string) bool {
			if k != "policy" {
				return false
			}
			policy = v
			return true
		})
		if policy == nil {
			probs.add("policy", "is required: the document's top-level key must be \"policy\"")
		}
	}
	d.fields(policy, "policy", func(k string, v *doctree.Node, p string) bool {
		switch k {
		case "version":
			if !isNull(v) {
				if v.Kind == doctree.Number || v.Kind == doctree.String {
					doc.Version = v.Text
				} else {
					d.add(p, "must be a version string, got %s", v.Kind)
				}
			}
		case "timezone":
			doc.Timezone = d.str(v, p)
		case "credits":
			d.fields(v, p, func(name string, cv *doctree.Node, cp string) bool {
				doc.Credits = append(doc.Credits, d.credit(name, cv, cp))
				return true
			})
		case "plans":
			d.fields(v, p, func(name string, pv *doctree.Node, pp string) bool {
				doc.Plans = append(doc.Plans, d.plan(name, pv, pp))
				return true
			})
		case "exchange":
			d.exchange(&doc.Exchange, v, p)
		case "notifications":
			d.fields(v, p, func(name string, nv *doctree.Node, np string) bool {
				doc.Notifications = append(doc.Notifications, d.notification(name, nv, np))
				return true
			})
		case "estimate_min_samples":
			doc.EstimateMinSamples = d.integer(v, p, 5)
		case "hold_ttl":
			if ttl := d.duration(v, p); ttl.Set {
				doc.HoldTTL = ttl
			}
		case "capabilities":
			doc.Capabilities = keep(v)
		case "estimates":
			doc.Estimates = keep(v)
		case "invoices":
			doc.Invoices = keep(v)
		case "customers", "alt_customer_ids":
			if !isEmpty(v) {
				d.add(p, "customer state is not read from the policy document; restore it with LoadCustomers")
			}
		default:
			return false
		}
		return true
	})
	return doc, probs.err()
}

func keep(n *doctree.Node) *doctree.Node {
	if isNull(n) {
		return nil
	}
	return n
}

func isEmpty(n *doctree.Node) bool {
	return isNull(n) || (n.Kind == doctree.Map && len(n.Keys) == 0)
}

func (d *decoder) credit(name string, n *doctree.Node, path string) *Credit {
	c := &Credit{Name: name, Unit: "credit", Label: "Credit", PricingModel: PricingFlat, StofUnits: UnitsFloat}
	d.fields(n, path, func(k string, v *doctree.Node, p string) bool {
		switch k {
		case "unit":
			c.Unit = orDefault(d.str(v, p), "credit")
		case "label":
			c.Label = orDefault(d.str(v, p), "Credit")
		case "description":
			c.Description = d.str(v, p)
		case "resets":
			c.Resets = d.boolean(v, p)
		case "overhead_cost":
			c.OverheadCost = d.dec(v, p, num.Zero)
		case "overhead":
			c.Overhead = d.str(v, p)
		case "pricing_model":
			c.PricingModel = orDefault(d.str(v, p), PricingFlat)
		case "price":
			c.Price = d.price(v, p)
		case "tiers":
			if isNull(v) {
				return true
			}
			if v.Kind != doctree.List {
				d.add(p, "must be a list of tiers, got %s", v.Kind)
				return true
			}
			for i, it := range v.Items {
				c.Tiers = append(c.Tiers, d.tier(it, index(p, i)))
			}
		case "stof_units", "units_kind":
			c.StofUnits = orDefault(d.str(v, p), UnitsFloat)
		default:
			return false
		}
		return true
	})
	return c
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// price accepts an object or, as a shorthand, a bare amount.
func (d *decoder) price(n *doctree.Node, path string) *Price {
	if isNull(n) {
		return nil
	}
	pr := &Price{Suffix: "/month"}
	if n.Kind == doctree.Number || n.Kind == doctree.String {
		pr.Amount = d.dec(n, path, num.Zero)
		return pr
	}
	d.fields(n, path, func(k string, v *doctree.Node, p string) bool {
		switch k {
		case "id":
			pr.ID = d.str(v, p)
		case "amount":
			pr.Amount = d.dec(v, p, num.Zero)
		case "suffix":
			pr.Suffix = d.str(v, p)
		default:
			return false
		}
		return true
	})
	return pr
}

func (d *decoder) tier(n *doctree.Node, path string) PriceTier {
	var t PriceTier
	d.fields(n, path, func(k string, v *doctree.Node, p string) bool {
		switch k {
		case "up_to":
			if !isNull(v) {
				up := d.dec(v, p, num.Zero)
				t.UpTo = &up
			}
		case "price":
			if pr := d.price(v, p); pr != nil {
				t.Price = *pr
			}
		default:
			return false
		}
		return true
	})
	return t
}

func (d *decoder) exchange(x *Exchange, n *doctree.Node, path string) {
	d.fields(n, path, func(k string, v *doctree.Node, p string) bool {
		if k == "grant_strategy" {
			x.GrantStrategy = orDefault(d.str(v, p), GrantExpiresFirst)
			return true
		}
		pair := ExchangePair{Name: k, Value: num.One, Currency: "usd"}
		d.fields(v, p, func(f string, fv *doctree.Node, fp string) bool {
			switch f {
			case "value":
				pair.Value = d.dec(fv, fp, num.One)
			case "currency":
				pair.Currency = orDefault(d.str(fv, fp), "usd")
			default:
				return false
			}
			return true
		})
		x.Pairs = append(x.Pairs, pair)
		return true
	})
}

func (d *decoder) plan(name string, n *doctree.Node, path string) *Plan {
	pl := &Plan{Name: name, Period: "monthly", Subscription: "subscription"}
	d.fields(n, path, func(k string, v *doctree.Node, p string) bool {
		switch k {
		case "name":
			if s := d.str(v, p); s != "" && s != name {
				d.add(p, "is %q but the plan is keyed %q", s, name)
			}
		case "label":
			pl.Label = d.str(v, p)
		case "description":
			pl.Description = d.str(v, p)
		case "period":
			pl.Period = orDefault(d.str(v, p), "monthly")
		case "subscription":
			pl.Subscription = orDefault(d.str(v, p), "subscription")
		case "trial_period":
			pl.TrialPeriod = d.duration(v, p)
		case "entitlements":
			d.fields(v, p, func(en string, ev *doctree.Node, ep string) bool {
				pl.Entitlements = append(pl.Entitlements, d.entitlement(en, ev, ep))
				return true
			})
		case "topups":
			d.fields(v, p, func(tn string, tv *doctree.Node, tp string) bool {
				pl.Topups = append(pl.Topups, d.topup(tn, tv, tp))
				return true
			})
		case "hidden":
			pl.Hidden = d.boolean(v, p)
		case "default":
			pl.Default = d.boolean(v, p)
		default:
			return false
		}
		return true
	})
	return pl
}

func (d *decoder) entitlement(name string, n *doctree.Node, path string) *Entitlement {
	e := &Entitlement{Name: name}
	d.fields(n, path, func(k string, v *doctree.Node, p string) bool {
		switch k {
		case "description":
			e.Description = d.str(v, p)
		case "limit":
			if !isNull(v) {
				e.Limit = d.limit(v, p)
			}
		case "scope":
			e.Scope = d.str(v, p)
		case "hidden":
			e.Hidden = d.boolean(v, p)
		case "estimate_basis":
			e.EstimateBasis = d.str(v, p)
		case "estimate_segment":
			e.EstimateSegment = d.str(v, p)
		default:
			return false
		}
		return true
	})
	return e
}

// NewLimit returns a limit with the reference engine's defaults.
func NewLimit() *Limit {
	return &Limit{
		Mode:        ModeHard,
		Value:       AmountOf(num.Zero),
		Increment:   AmountOf(num.One),
		GrantsApply: true,
		EWMAAlpha:   defaultEWMAAlpha,
	}
}

func (d *decoder) limit(n *doctree.Node, path string) *Limit {
	l := NewLimit()
	l.Value.Set, l.Increment.Set = false, false
	d.fields(n, path, func(k string, v *doctree.Node, p string) bool {
		switch k {
		case "credit":
			l.Credit = d.str(v, p)
		case "mode":
			l.Mode = orDefault(d.str(v, p), ModeHard)
		case "value":
			l.Value = d.amount(v, p)
		case "increment":
			l.Increment = d.amount(v, p)
		case "minimum":
			l.Minimum = d.amount(v, p)
		case "hard_trailing":
			l.HardTrailing = d.boolean(v, p)
		case "grants_apply":
			if !isNull(v) {
				l.GrantsApply = d.boolean(v, p)
			}
		case "resets":
			l.Resets = d.boolean(v, p)
		case "reset_inc":
			l.ResetInc = d.duration(v, p)
		case "reset_sch":
			l.ResetSch = d.str(v, p)
		case "override_expires_on":
			if ms := d.dec(v, p, num.Zero); !ms.IsZero() {
				whole, _, _ := ms.Int64(0)
				l.OverrideExpiresOn = time.UnixMilli(whole).UTC()
			}
		case "governor_enabled":
			l.GovernorEnabled = d.boolean(v, p)
		case "governor_capacity":
			l.GovernorCapacity = d.amount(v, p)
		case "governor_refill_rate":
			l.GovernorRefillRate = d.amount(v, p)
		case "ewma_alpha":
			l.EWMAAlpha = d.dec(v, p, defaultEWMAAlpha)
		case "fleet_mode":
			l.FleetMode = d.str(v, p)
		default:
			return false
		}
		return true
	})
	if !l.Value.Set {
		l.Value = AmountOf(num.Zero)
	}
	if !l.Increment.Set {
		l.Increment = AmountOf(num.One)
	}
	// The reference engine fills the default period when a limit resets without saying how.
	if l.Resets && !l.ResetInc.Set && l.ResetSch == "" {
		l.ResetInc = Duration{D: defaultResetPeriod, Set: true, Quoted: true, Text: "30days"}
	}
	return l
}

func (d *decoder) topup(name string, n *doctree.Node, path string) *Topup {
	t := &Topup{Name: name, ResetMode: ResetHard, Value: AmountOf(num.Zero)}
	d.fields(n, path, func(k string, v *doctree.Node, p string) bool {
		switch k {
		case "description":
			t.Description = d.str(v, p)
		case "credit":
			t.Credit = d.str(v, p)
		case "value":
			if a := d.amount(v, p); a.Set {
				t.Value = a
			}
		case "price":
			t.Price = d.price(v, p)
		case "resets":
			t.Resets = d.boolean(v, p)
		case "included":
			t.Included = d.boolean(v, p)
		case "included_scopes":
			t.IncludedScopes = d.strList(v, p)
		case "reset_inc":
			t.ResetInc = d.duration(v, p)
		case "reset_sch":
			t.ResetSch = d.str(v, p)
		case "reset_mode":
			t.ResetMode = orDefault(d.str(v, p), ResetHard)
		case "rollover_min":
			t.RolloverMin = d.amount(v, p)
		case "rollover_max":
			t.RolloverMax = d.amount(v, p)
		case "rollover_pct":
			t.RolloverPct = d.amount(v, p)
		case "max_balance":
			t.MaxBalance = d.amount(v, p)
		case "expires_after":
			t.ExpiresAfter = d.duration(v, p)
		case "reset_catchup_cap":
			t.ResetCatchupCap = d.integer(v, p, 0)
		default:
			return false
		}
		return true
	})
	if t.Resets && !t.ResetInc.Set && t.ResetSch == "" {
		t.ResetInc = Duration{D: defaultResetPeriod, Set: true, Quoted: true, Text: "30days"}
	}
	return t
}

func (d *decoder) notification(name string, n *doctree.Node, path string) *Notification {
	nt := &Notification{Name: name}
	if !isNull(n) && n.Kind == doctree.String {
		// Shorthand: the notification is just its CEL condition.
		nt.Matches = n.Text
		return nt
	}
	d.fields(n, path, func(k string, v *doctree.Node, p string) bool {
		switch k {
		case "matches":
			nt.Matches = d.str(v, p)
		default:
			return false
		}
		return true
	})
	return nt
}

// Parse decodes and validates a document in the given format (FormatUnknown detects it).
func Parse(data []byte, f doctree.Format) (*Document, error) {
	root, err := doctree.Decode(data, f)
	if err != nil {
		pr := Problem{Path: "(document)", Message: err.Error()}
		var de *doctree.Error
		if errors.As(err, &de) {
			pr.Line = de.Line
		}
		return nil, &ValidationError{Problems: []Problem{pr}}
	}
	doc, derr := Decode(root)
	verr := Validate(doc)
	var all []Problem
	for _, e := range []error{derr, verr} {
		var ve *ValidationError
		if errors.As(e, &ve) {
			all = append(all, ve.Problems...)
		}
	}
	if len(all) > 0 {
		return nil, &ValidationError{Problems: dedupe(all)}
	}
	return doc, nil
}

// dedupe drops repeats: a bad value can be reported by both the decoder and a rule.
func dedupe(ps []Problem) []Problem {
	seen := make(map[string]bool, len(ps))
	out := ps[:0]
	for _, p := range ps {
		k := p.String()
		if seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, p)
	}
	return out
}
