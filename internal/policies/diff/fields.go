package diff

import (
	"bytes"
	"encoding/json"
	"strconv"
	"time"

	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/policies"
	"github.com/limitr/limitr/internal/policies/doctree"
)

// field is one comparable value of an item: its JSON rendering and, when two spellings
// of the same value render differently (a duration as "1day" or 86400000), the key it
// compares by.
type field struct {
	name  string
	value json.RawMessage
	key   string
}

var null = json.RawMessage("null")

func (f field) compareKey() string {
	if f.key != "" {
		return f.key
	}
	return string(f.value)
}

// compare lists the fields whose values differ; a field missing on one side is null there.
func compare(a, b []field) Fields {
	out := Fields{}
	bi := make(map[string]field, len(b))
	for _, f := range b {
		bi[f.name] = f
	}
	seen := make(map[string]bool, len(a))
	for _, fa := range a {
		seen[fa.name] = true
		fb, ok := bi[fa.name]
		if !ok {
			fb = field{name: fa.name, value: null}
		}
		if fa.compareKey() != fb.compareKey() {
			out[fa.name] = Change{From: fa.value, To: fb.value}
		}
	}
	for _, fb := range b {
		if !seen[fb.name] && fb.compareKey() != string(null) {
			out[fb.name] = Change{From: null, To: fb.value}
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		// Only strings, bools, slices of those and json.RawMessage reach here.
		panic("diff: " + err.Error())
	}
	return b
}

func str(name, v string) field { return field{name: name, value: mustJSON(v)} }

func boolean(name string, v bool) field { return field{name: name, value: mustJSON(v)} }

func integer(name string, v int) field {
	return field{name: name, value: json.RawMessage(strconv.Itoa(v))}
}

func decText(d num.Dec) string { return d.Trim(0).String() }

func dec(name string, d num.Dec) field {
	return field{name: name, value: json.RawMessage(decText(d))}
}

// amount renders a plain number as a number and a quantity with units as a string.
func amount(name string, a policies.Amount) field {
	if !a.Set {
		return field{name: name, value: null}
	}
	if a.Q.Unit.IsZero() {
		return dec(name, a.Q.Value)
	}
	return field{name: name, value: mustJSON(decText(a.Q.Value) + a.Q.Unit.String())}
}

// duration renders as written (a unit string or milliseconds) and compares by length.
func duration(name string, d policies.Duration) field {
	if !d.Set {
		return field{name: name, value: null}
	}
	ms := strconv.FormatInt(d.D.Milliseconds(), 10)
	f := field{name: name, value: json.RawMessage(ms), key: "ms:" + ms}
	if d.Quoted && d.Text != "" {
		f.value = mustJSON(d.Text)
	}
	return f
}

func instant(name string, t time.Time) field {
	if t.IsZero() {
		return field{name: name, value: null}
	}
	return field{name: name, value: mustJSON(t.UTC().Format(time.RFC3339Nano))}
}

func strList(name string, v []string) field {
	if v == nil {
		return field{name: name, value: null}
	}
	return field{name: name, value: mustJSON(v)}
}

func tree(name string, n *doctree.Node) field {
	if n == nil {
		return field{name: name, value: null}
	}
	b, err := doctree.Encode(n, doctree.FormatJSON)
	if err != nil {
		return field{name: name, value: null}
	}
	// Re-marshal through encoding/json so the bytes compare independent of spacing.
	var v any
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if dec.Decode(&v) != nil {
		return field{name: name, value: b}
	}
	return field{name: name, value: b, key: string(mustJSON(v))}
}

func priceJSON(p *policies.Price) json.RawMessage {
	if p == nil {
		return null
	}
	return mustJSON(struct {
		ID     string          `json:"id,omitempty"`
		Amount json.RawMessage `json:"amount"`
		Suffix string          `json:"suffix"`
	}{p.ID, json.RawMessage(decText(p.Amount)), p.Suffix})
}

func price(name string, p *policies.Price) field { return field{name: name, value: priceJSON(p)} }

func tiers(name string, ts []policies.PriceTier) field {
	if len(ts) == 0 {
		return field{name: name, value: null}
	}
	type tier struct {
		UpTo  json.RawMessage `json:"up_to"`
		Price json.RawMessage `json:"price"`
	}
	out := make([]tier, 0, len(ts))
	for _, t := range ts {
		up := null
		if t.UpTo != nil {
			up = json.RawMessage(decText(*t.UpTo))
		}
		out = append(out, tier{UpTo: up, Price: priceJSON(&t.Price)})
	}
	return field{name: name, value: mustJSON(out)}
}

func documentFields(d *policies.Document) []field {
	return []field{
		str("version", d.Version),
		str("timezone", d.Timezone),
		integer("estimate_min_samples", d.EstimateMinSamples),
		duration("hold_ttl", d.HoldTTL),
		tree("capabilities", d.Capabilities),
		tree("estimates", d.Estimates),
		tree("invoices", d.Invoices),
	}
}

func creditFields(c *policies.Credit) []field {
	return []field{
		str("unit", c.Unit),
		str("label", c.Label),
		str("description", c.Description),
		boolean("resets", c.Resets),
		dec("overhead_cost", c.OverheadCost),
		str("overhead", c.Overhead),
		str("pricing_model", c.PricingModel),
		price("price", c.Price),
		tiers("tiers", c.Tiers),
		str("stof_units", c.StofUnits),
	}
}

func exchangeFields(x *policies.Exchange) []field {
	return []field{str("grant_strategy", x.GrantStrategy)}
}

func pairFields(p policies.ExchangePair) []field {
	return []field{dec("value", p.Value), str("currency", p.Currency)}
}

func notificationFields(n *policies.Notification) []field {
	return []field{str("matches", n.Matches)}
}

func planFields(p *policies.Plan) []field {
	return []field{
		str("label", p.Label),
		str("description", p.Description),
		boolean("default", p.Default),
		boolean("hidden", p.Hidden),
		str("period", p.Period),
		str("subscription", p.Subscription),
		duration("trial_period", p.TrialPeriod),
	}
}

func entitlementFields(e *policies.Entitlement) []field {
	return []field{
		str("description", e.Description),
		str("scope", e.Scope),
		boolean("hidden", e.Hidden),
		str("estimate_basis", e.EstimateBasis),
		str("estimate_segment", e.EstimateSegment),
	}
}

// limitFields is empty for no limit, so gaining or losing one shows every field
// going from or to null.
func limitFields(l *policies.Limit) []field {
	if l == nil {
		return nil
	}
	return []field{
		str("credit", l.Credit),
		str("mode", l.Mode),
		amount("value", l.Value),
		amount("increment", l.Increment),
		amount("minimum", l.Minimum),
		boolean("hard_trailing", l.HardTrailing),
		boolean("grants_apply", l.GrantsApply),
		boolean("resets", l.Resets),
		duration("reset_inc", l.ResetInc),
		str("reset_sch", l.ResetSch),
		instant("override_expires_on", l.OverrideExpiresOn),
		boolean("governor_enabled", l.GovernorEnabled),
		amount("governor_capacity", l.GovernorCapacity),
		amount("governor_refill_rate", l.GovernorRefillRate),
		dec("ewma_alpha", l.EWMAAlpha),
	}
}

func topupFields(t *policies.Topup) []field {
	return []field{
		str("description", t.Description),
		str("credit", t.Credit),
		amount("value", t.Value),
		price("price", t.Price),
		boolean("resets", t.Resets),
		boolean("included", t.Included),
		strList("included_scopes", t.IncludedScopes),
		duration("reset_inc", t.ResetInc),
		str("reset_sch", t.ResetSch),
		str("reset_mode", t.ResetMode),
		amount("rollover_min", t.RolloverMin),
		amount("rollover_max", t.RolloverMax),
		amount("rollover_pct", t.RolloverPct),
		amount("max_balance", t.MaxBalance),
		duration("expires_after", t.ExpiresAfter),
		integer("reset_catchup_cap", t.ResetCatchupCap),
	}
}
