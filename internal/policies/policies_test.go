package policies

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/policies/doctree"
)

func examples(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("../../examples/policies/*")
	if err != nil || len(files) == 0 {
		t.Fatalf("no example policies: %v", err)
	}
	return files
}

// §2: every example policy loads, validates and compiles.
func TestExamplesLoad(t *testing.T) {
	for _, f := range examples(t) {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			p, err := Load(data, doctree.FormatFromPath(f))
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if len(p.Plans) == 0 || len(p.Credits) == 0 {
				t.Errorf("loaded %d plans, %d credits", len(p.Plans), len(p.Credits))
			}
			// Detection without a format hint agrees.
			if _, err := Load(data, doctree.FormatUnknown); err != nil {
				t.Errorf("Load with detection: %v", err)
			}
		})
	}
}

func parse(t *testing.T, doc string) *Document {
	t.Helper()
	d, err := Parse([]byte(doc), doctree.FormatUnknown)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return d
}

func findLimit(t *testing.T, d *Document, plan, ent string) *Limit {
	t.Helper()
	for _, p := range d.Plans {
		if p.Name != plan {
			continue
		}
		for _, e := range p.Entitlements {
			if e.Name == ent {
				return e.Limit
			}
		}
	}
	t.Fatalf("no %s.%s", plan, ent)
	return nil
}

// §2.6 / §2.10 defaults: mode hard, increment 1, grants_apply true, reset_inc 30days when
// resets without a schedule, tiers sorted (null last, extra null tiers dropped).
func TestDefaultsApplied(t *testing.T) {
	d := parse(t, `
policy:
  credits:
    c: {}
    t:
      pricing_model: tiered
      tiers:
        - { price: { amount: 1 } }
        - { up_to: 50, price: { amount: 3 } }
        - { price: { amount: 9 } }
        - { up_to: 10, price: { amount: 5 } }
  plans:
    p:
      entitlements:
        bare: { limit: { credit: c } }
        resets: { limit: { credit: c, value: 5, resets: true } }
        sch: { limit: { credit: c, value: 5, resets: true, reset_sch: "monthly:1" } }
        inc: { limit: { credit: c, value: 5, resets: true, reset_inc: 1day } }
        noreset: { limit: { credit: c, value: 5 } }
        flag: {}
`)
	bare := findLimit(t, d, "p", "bare")
	cases := []struct {
		what      string
		got, want any
	}{
		{"mode", bare.Mode, ModeHard},
		{"increment", bare.Increment.Q.Value.String(), "1"},
		{"value", bare.Value.Q.Value.String(), "0"},
		{"grants_apply", bare.GrantsApply, true},
		{"hard_trailing", bare.HardTrailing, false},
		{"minimum unset", bare.Minimum.Set, false},
		{"resets", bare.Resets, false},
		{"reset_inc unset without resets", findLimit(t, d, "p", "noreset").ResetInc.Set, false},
		{"ewma_alpha", bare.EWMAAlpha.String(), "0.2"},
		{"resets default reset_inc", findLimit(t, d, "p", "resets").ResetInc.D, 30 * 24 * time.Hour},
		{"schedule keeps reset_inc unset", findLimit(t, d, "p", "sch").ResetInc.Set, false},
		{"explicit reset_inc", findLimit(t, d, "p", "inc").ResetInc.D, 24 * time.Hour},
		{"flag has no limit", findLimit(t, d, "p", "flag") == nil, true},
	}
	for _, c := range cases {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.what, c.got, c.want)
		}
	}
	// §2.2 credit defaults.
	var cr, tr *Credit
	for _, c := range d.Credits {
		switch c.Name {
		case "c":
			cr = c
		case "t":
			tr = c
		}
	}
	if cr.Unit != "credit" || cr.Label != "Credit" || cr.PricingModel != PricingFlat || cr.StofUnits != UnitsFloat || !cr.OverheadCost.IsZero() {
		t.Errorf("credit defaults: %+v", cr)
	}
	// §2.2: valid() sorts tiers by up_to (null last) and keeps the first null tier only.
	var got []string
	for _, tier := range tr.Tiers {
		up := "null"
		if tier.UpTo != nil {
			up = tier.UpTo.String()
		}
		got = append(got, up+"@"+tier.Price.Amount.String())
	}
	if want := []string{"10@5", "50@3", "null@1"}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("tiers = %v, want %v", got, want)
	}
	// §2.3 exchange default strategy; §2.4 plan defaults.
	if d.Exchange.GrantStrategy != GrantExpiresFirst {
		t.Errorf("grant_strategy = %q", d.Exchange.GrantStrategy)
	}
	if d.Plans[0].Period != "monthly" || d.Plans[0].Subscription != "subscription" || d.Plans[0].Default {
		t.Errorf("plan defaults: %+v", d.Plans[0])
	}
	if d.HoldTTL.D != 10*time.Minute || d.EstimateMinSamples != 5 {
		t.Errorf("root defaults: hold_ttl %v, estimate_min_samples %d", d.HoldTTL.D, d.EstimateMinSamples)
	}
}

const manyProblems = `
policy:
  bogus_root: 1
  credits:
    seat: {}
    mb: { stof_units: MB }
    neg: { overhead_cost: -1 }
    tiered_no: { pricing_model: tiered }
    flat_tiers:
      tiers:
        - { price: { amount: 1 } }
    weird_units: { stof_units: parsecs_per_fortnight }
  exchange:
    a: { value: 1, currency: b }
    b: { value: 1, currency: a }
    c: { value: 1, currency: nowhere }
  plans:
    free:
      entitlements:
        seats:
          limit: { credit: seet, value: 1 }
        m: { limit: { credit: seat, mode: sloppy } }
        t: { limit: { credit: seat, mode: soft, hard_trailing: true } }
        r: { limit: { credit: seat, resets: true, reset_inc: 1day, reset_sch: "monthly:1" } }
        s: { limit: { credit: seat, resets: true, reset_sch: "fortnightly:3" } }
        g: { limit: { credit: seat, governor_enabled: true, governor_refill_rate: 1 } }
        e: { limit: { credit: seat, ewma_alpha: 2 } }
        w: { limit: { credit: seat, value: [1] } }
        ht: { limit: { credit: seat, hard_trailing: "yes" } }
        u: { limit: { credit: mb, value: "3 gigs" } }
        x: { limit: { credit: seat, valu: 3 } }
        z: { limit: { credit: seat, resets: true, reset_inc: 0 } }
        nf: { limit: { credit: seat, resets: false, reset_inc: 1day } }
        ns: { limit: { credit: seat, reset_sch: "monthly:1" } }
        fm: { limit: { credit: seat, fleet_mode: strict } }
        fs: { limit: { credit: seat, mode: soft, fleet_mode: exact } }
`

// §2.10: a document with many problems reports all of them, each with its path.
func TestValidationReportsEveryProblem(t *testing.T) {
	_, err := Parse([]byte(manyProblems), doctree.FormatYAML)
	if err == nil {
		t.Fatal("invalid document accepted")
	}
	if !errors.Is(err, ErrInvalidPolicy) {
		t.Errorf("error does not wrap ErrInvalidPolicy: %v", err)
	}
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("error is %T, want *ValidationError", err)
	}
	lim := "policy.plans.free.entitlements."
	want := []struct{ path, msg string }{
		{"policy.bogus_root", "unknown field"},                                       // unknown field
		{"policy.credits.neg.overhead_cost", "must not be negative"},                 // §2.10 overhead_cost ≥ 0
		{"policy.credits.tiered_no.tiers", "tiered pricing needs at least one tier"}, // §2.10 non-flat needs tiers
		{"policy.credits.flat_tiers.tiers", "only tiered, volume and stairstep"},     // §2.2 flat has no tiers
		{"policy.credits.weird_units.stof_units", "parsecs_per_fortnight"},           // §2.10 unit strings parseable
		{"policy.exchange.a", "loops back"},                                          // §2.3 cycle
		{"policy.exchange.c", `stops at "nowhere"`},                                  // §2.3 dead end
		{lim + "seats.limit.credit", `credit "seet" does not exist`},                 // §2.10 credit ids exist
		{lim + "m.limit.mode", `must be hard, soft or observe, got "sloppy"`},        // §2.10 mode
		{lim + "t.limit.hard_trailing", "only applies to hard limits"},               // §2.10 hard_trailing only hard
		{lim + "r.limit.reset_sch", "exclusive"},                                     // §2.10 reset_inc/reset_sch exclusive
		{lim + "s.limit.reset_sch", "fortnightly"},                                   // §2.10 schedule prefix valid
		{lim + "g.limit.governor_capacity", "required when governor_enabled"},        // §2.10 governor needs capacity
		{lim + "e.limit.ewma_alpha", "between 0 and 1"},                              // §2.10 ewma_alpha ∈ [0,1]
		{lim + "w.limit.value", "must be a number or a quantity string"},             // wrong type
		{lim + "ht.limit.hard_trailing", "must be true or false"},                    // wrong type
		{lim + "u.limit.value", "3 gigs"},                                            // §2.10 bad unit string
		{lim + "x.limit.valu", "unknown field"},                                      // unknown field
		{lim + "z.limit.reset_inc", "greater than zero"},                             // §2.10 reset_inc > 0
		{lim + "nf.limit.reset_inc", "resets is false"},                              // ours: reset_inc without resets
		{lim + "ns.limit.reset_sch", "resets is false"},                              // ours: reset_sch without resets
		{lim + "fm.limit.fleet_mode", `must be exact or bounded, got "strict"`},      // ours: fleet mode
		{lim + "fs.limit.fleet_mode", "only applies to hard limits"},                 // ours: fleet mode of a soft limit
	}
	for _, w := range want {
		found := false
		for _, p := range ve.Problems {
			if p.Path == w.path && strings.Contains(p.Message, w.msg) {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("missing problem %s: ...%s...", w.path, w.msg)
		}
	}
	// The joined message names them too.
	if !strings.Contains(err.Error(), `policy.plans.free.entitlements.seats.limit.credit: credit "seet" does not exist`) {
		t.Errorf("Error() lacks the credit problem:\n%v", err)
	}
	if t.Failed() {
		t.Logf("reported problems:\n%v", err)
	}
}

// §2.10 single-rule documents (one problem each) and ours (multiple defaults).
func TestValidationSingleRules(t *testing.T) {
	base := func(limit string) string {
		return `{"policy": {"credits": {"c": {}}, "plans": {"p": {"entitlements": {"e": {"limit": ` + limit + `}}}}}}`
	}
	cases := []struct {
		name, doc, path, msg string
	}{
		{"multiple defaults",
			`{"policy": {"plans": {"a": {"default": true}, "b": {"default": true}, "c": {"default": true}}}}`,
			"policy.plans.b.default", "only one plan may be the default"},
		{"negative increment", base(`{"credit": "c", "increment": -1}`), "policy.plans.p.entitlements.e.limit.increment", "greater than zero"},
		{"negative value", base(`{"credit": "c", "value": -1}`), "policy.plans.p.entitlements.e.limit.value", "must not be negative"},
		{"missing credit", base(`{"value": 1}`), "policy.plans.p.entitlements.e.limit.credit", "is required"},
		{"governor on soft", base(`{"credit": "c", "mode": "soft", "governor_enabled": true, "governor_capacity": 1, "governor_refill_rate": 1}`),
			"policy.plans.p.entitlements.e.limit.governor_enabled", "hard"},
		{"governor without refill", base(`{"credit": "c", "governor_enabled": true, "governor_capacity": 1}`),
			"policy.plans.p.entitlements.e.limit.governor_refill_rate", "required"},
		{"ewma negative", base(`{"credit": "c", "ewma_alpha": -0.1}`), "policy.plans.p.entitlements.e.limit.ewma_alpha", "between 0 and 1"},
		{"units on unitless credit", base(`{"credit": "c", "value": "3GB"}`), "policy.plans.p.entitlements.e.limit.value", "3GB"},
		{"cross-category", `{"policy": {"credits": {"m": {"stof_units": "MB"}}, "plans": {"p": {"entitlements": {"e": {"limit": {"credit": "m", "value": "3s"}}}}}}}`,
			"policy.plans.p.entitlements.e.limit.value", ""},
		{"negative price", `{"policy": {"credits": {"c": {"price": {"amount": -1}}}}}`, "policy.credits.c.price.amount", "must not be negative"},
		{"negative topup price", `{"policy": {"credits": {"c": {}}, "plans": {"p": {"topups": {"t": {"credit": "c", "price": {"amount": -1}}}}}}}`,
			"policy.plans.p.topups.t.price.amount", "must not be negative"},
		{"negative tier price", `{"policy": {"credits": {"c": {"pricing_model": "tiered", "tiers": [{"price": {"amount": -1}}]}}}}`,
			"policy.credits.c.tiers[0].price.amount", "must not be negative"},
		{"tiered with price", `{"policy": {"credits": {"c": {"pricing_model": "volume", "price": {"amount": 1}, "tiers": [{"price": {"amount": 1}}]}}}}`,
			"policy.credits.c.price", "must be empty"},
		{"last tier bounded", `{"policy": {"credits": {"c": {"pricing_model": "tiered", "tiers": [{"up_to": 5, "price": {"amount": 1}}]}}}}`,
			"policy.credits.c.tiers", "last tier"},
		{"bad pricing model", `{"policy": {"credits": {"c": {"pricing_model": "auction"}}}}`, "policy.credits.c.pricing_model", "auction"},
		{"topup negative value", `{"policy": {"credits": {"c": {}}, "plans": {"p": {"topups": {"t": {"credit": "c", "value": -5}}}}}}`,
			"policy.plans.p.topups.t.value", "must not be negative"},
		{"topup bad credit", `{"policy": {"plans": {"p": {"topups": {"t": {"credit": "nope", "value": 5}}}}}}`,
			"policy.plans.p.topups.t.credit", `"nope" does not exist`},
		{"topup expires_after zero", `{"policy": {"credits": {"c": {}}, "plans": {"p": {"topups": {"t": {"credit": "c", "expires_after": 0}}}}}}`,
			"policy.plans.p.topups.t.expires_after", "greater than zero"},
		{"bad grant strategy", `{"policy": {"exchange": {"grant_strategy": "random"}}}`, "policy.exchange.grant_strategy", "random"},
		{"no policy key", `{"polcy": {}}`, "policy", "required"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.doc), doctree.FormatJSON)
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("err = %v, want a *ValidationError", err)
			}
			for _, p := range ve.Problems {
				if p.Path == tc.path && strings.Contains(p.Message, tc.msg) {
					return
				}
			}
			t.Errorf("no problem at %s containing %q; got:\n%v", tc.path, tc.msg, err)
		})
	}
}

// §2.10: the default plan is the one marked default; documents without one have none.
func TestDefaultPlanCompiled(t *testing.T) {
	p, err := Load([]byte(`{"policy": {"plans": {"a": {}, "b": {"default": true}, "c": {}}}}`), doctree.FormatJSON)
	if err != nil {
		t.Fatal(err)
	}
	if p.DefaultPlan == nil || p.DefaultPlan.Name != "b" {
		t.Errorf("default plan = %v, want b", p.DefaultPlan)
	}
	p, err = Load([]byte(`{"policy": {"plans": {"a": {}}}}`), doctree.FormatJSON)
	if err != nil {
		t.Fatal(err)
	}
	if p.DefaultPlan != nil {
		t.Errorf("default plan = %v, want none", p.DefaultPlan.Name)
	}
}

// §3: limit values convert exactly into the credit's units at compile time.
func TestCompiledLimitUnits(t *testing.T) {
	p, err := Load([]byte(`{"policy": {"credits": {"m": {"stof_units": "MB"}}, "plans": {"p": {"entitlements": {
		"a": {"limit": {"credit": "m", "value": "3GB"}},
		"b": {"limit": {"credit": "m", "value": "10MiB"}},
		"c": {"limit": {"credit": "m", "value": "1TiB"}},
		"d": {"limit": {"credit": "m", "value": 7}}
	}}}}}`), doctree.FormatJSON)
	if err != nil {
		t.Fatal(err)
	}
	pl := p.Plan("p")
	want := map[string]string{"a": "3000", "b": "10.48576", "c": "1099511.627776", "d": "7"}
	for ent, w := range want {
		idx, _ := p.EntitlementIndex(ent)
		got := pl.Entitlement(idx).Limit.Value
		if !got.Equal(num.MustParse(w)) {
			t.Errorf("%s = %s MB, want %s", ent, got, w)
		}
	}
}

// DESIGN (Marshal): load → encode in each format → load → encode gives the same bytes,
// and the same document as the original.
func TestEncodeRoundTrip(t *testing.T) {
	srcs := map[string][]byte{"many-features": []byte(roundTripDoc)}
	for _, f := range examples(t) {
		b, _ := os.ReadFile(f)
		srcs[filepath.Base(f)] = b
	}
	for name, src := range srcs {
		doc, err := Parse(src, doctree.FormatUnknown)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		canon, err := Encode(doc, doctree.FormatJSON)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range []doctree.Format{doctree.FormatJSON, doctree.FormatYAML, doctree.FormatTOML} {
			out, err := Encode(doc, f)
			if err != nil {
				t.Errorf("%s: Encode(%v): %v", name, f, err)
				continue
			}
			doc2, err := Parse(out, f)
			if err != nil {
				t.Errorf("%s: reparse of %v output: %v\n%s", name, f, err, out)
				continue
			}
			out2, _ := Encode(doc2, f)
			if !bytes.Equal(out, out2) {
				t.Errorf("%s: %v encoding unstable:\n%s\n---\n%s", name, f, out, out2)
			}
			if c2, _ := Encode(doc2, doctree.FormatJSON); !bytes.Equal(c2, canon) {
				t.Errorf("%s: through %v the document changed:\n%s\n---\n%s", name, f, canon, c2)
			}
		}
	}
}

const roundTripDoc = `{"policy": {
  "timezone": "Europe/Paris",
  "hold_ttl": "5min",
  "estimate_min_samples": 3,
  "credits": {
    "tok": {"unit": "token", "label": "Token", "description": "d", "overhead_cost": 0.000003, "price": {"id": "price_1", "amount": 0.000004, "suffix": "/unit"}, "stof_units": "int", "resets": true},
    "mb": {"stof_units": "MB", "pricing_model": "volume", "tiers": [{"up_to": 10, "price": {"amount": 1}}, {"price": {"amount": 0.5}}]},
    "ai": {}
  },
  "exchange": {"grant_strategy": "cheapest_first", "ai": {"value": 1.25, "currency": "rune"}, "tok": {"value": 0.000004, "currency": "ai"}},
  "plans": {
    "free": {"label": "Free", "default": true, "hidden": false, "period": "yearly", "trial_period": "7days",
      "entitlements": {
        "a": {"description": "x", "limit": {"credit": "tok", "mode": "soft", "value": 100, "increment": 5, "minimum": 0, "resets": true, "reset_sch": "weekly:mon", "grants_apply": false}},
        "b": {"limit": {"credit": "mb", "value": "1GB", "hard_trailing": true, "resets": true, "governor_enabled": true, "governor_capacity": 10, "governor_refill_rate": 0.01, "ewma_alpha": 0.5, "fleet_mode": "bounded"}},
        "c": {"scope": "org", "hidden": true},
        "d": {"limit": {"credit": "tok", "mode": "observe", "value": 3, "resets": true, "reset_inc": 3600000}}
      },
      "topups": {
        "t": {"credit": "ai", "value": 10, "price": {"amount": 10}, "resets": true, "included": true, "included_scopes": ["org"], "reset_mode": "rollover", "rollover_pct": 0.5, "rollover_max": 20, "max_balance": 30, "expires_after": "90days", "reset_catchup_cap": 2}
      }
    }
  },
  "notifications": {"n": {"matches": "type == 'meter-changed'"}}
}}`
