package limitr_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	limitr "github.com/limitr/limitr/sdk/go"
)

const fmtJSON = `{"policy": {
  "credits": {
    "req": {"label": "Request"},
    "mb": {"stof_units": "MB", "overhead_cost": 0.001},
    "tok": {"stof_units": "int", "price": {"amount": 0.5}}
  },
  "plans": {
    "free": {"default": true, "entitlements": {
      "api": {"limit": {"credit": "req", "value": 5, "resets": true, "reset_inc": "1day"}},
      "storage": {"limit": {"credit": "mb", "value": "1GB", "mode": "soft"}},
      "tokens": {"limit": {"credit": "tok", "value": 100, "hard_trailing": true}},
      "export": {}
    }},
    "pro": {"entitlements": {
      "api": {"limit": {"credit": "req", "value": 50, "resets": true, "reset_sch": "monthly:1"}},
      "export": {}
    }}
  }
}}`

const fmtYAML = `policy:
  credits:
    req:
      label: Request
    mb:
      stof_units: MB
      overhead_cost: 0.001
    tok:
      stof_units: int
      price:
        amount: 0.5
  plans:
    free:
      default: true
      entitlements:
        api:
          limit: { credit: req, value: 5, resets: true, reset_inc: 1day }
        storage:
          limit: { credit: mb, value: 1GB, mode: soft }
        tokens:
          limit: { credit: tok, value: 100, hard_trailing: true }
        export: {}
    pro:
      entitlements:
        api:
          limit: { credit: req, value: 50, resets: true, reset_sch: "monthly:1" }
        export: {}
`

const fmtTOML = `[policy.credits.req]
label = "Request"

[policy.credits.mb]
stof_units = "MB"
overhead_cost = 0.001

[policy.credits.tok]
stof_units = "int"
price = { amount = 0.5 }

[policy.plans.free]
default = true

[policy.plans.free.entitlements.api.limit]
credit = "req"
value = 5
resets = true
reset_inc = "1day"

[policy.plans.free.entitlements.storage.limit]
credit = "mb"
value = "1GB"
mode = "soft"

[policy.plans.free.entitlements.tokens.limit]
credit = "tok"
value = 100
hard_trailing = true

[policy.plans.free.entitlements.export]

[policy.plans.pro.entitlements.api.limit]
credit = "req"
value = 50
resets = true
reset_sch = "monthly:1"

[policy.plans.pro.entitlements.export]
`

type scriptStep struct {
	op, id, ent string
	amt         float64
	qty         string
}

var formatScript = []scriptStep{
	{"allow", "a", "api", 3, ""}, {"allow", "a", "api", 3, ""}, {"allow", "a", "api", 2, ""},
	{"units", "a", "storage", 0, "900MB"}, {"units", "a", "storage", 0, "200MB"}, {"units", "a", "storage", 0, "1GiB"},
	{"allow", "a", "tokens", 99.9, ""}, {"allow", "a", "tokens", 5, ""}, {"allow", "a", "tokens", 1, ""},
	{"allow", "a", "export", 1, ""}, {"inc", "a", "export", 0, ""},
	{"advance", "", "", 0, ""},
	{"allow", "a", "api", 5, ""}, {"allow", "a", "api", 1, ""},
	{"plan", "a", "pro", 0, ""},
	{"allow", "a", "api", 40, ""}, {"allow", "a", "api", 6, ""},
}

// §2: "Policies can be Stof, JSON, YAML or TOML" — the same policy in each format decides alike.
func TestFormatsDecideAlike(t *testing.T) {
	docs := map[string]string{"json": fmtJSON, "yaml": fmtYAML, "toml": fmtTOML}
	results := map[string][]float64{}
	versions := map[string]string{}
	for name, doc := range docs {
		e := newEnv(t, doc)
		versions[name] = e.p.Version()
		e.customer("a", "free")
		var out []float64
		for _, s := range formatScript {
			var ok bool
			var err error
			switch s.op {
			case "allow":
				ok, err = e.p.Allow(e.ctx, s.id, s.ent, s.amt)
			case "units":
				ok, err = e.p.AllowUnits(e.ctx, s.id, s.ent, s.qty)
			case "inc":
				ok, err = e.p.Increment(e.ctx, s.id, s.ent)
			case "advance":
				e.clock.Advance(49 * 60 * 60 * 1e9)
				continue
			case "plan":
				err = e.p.SetCustomerPlan(e.ctx, s.id, s.ent, false)
				ok = err == nil
			}
			if err != nil {
				t.Fatalf("%s: %s %s: %v", name, s.op, s.ent, err)
			}
			b := 0.0
			if ok {
				b = 1
			}
			v, _ := e.p.Value(e.ctx, s.id, s.ent)
			out = append(out, b, v)
		}
		results[name] = out
	}
	for _, name := range []string{"yaml", "toml"} {
		if len(results[name]) != len(results["json"]) {
			t.Fatalf("%s produced %d results, json %d", name, len(results[name]), len(results["json"]))
		}
		for i := range results["json"] {
			if results[name][i] != results["json"][i] {
				t.Errorf("%s differs from json at step %d: %v vs %v", name, i/2, results[name][i], results["json"][i])
			}
		}
		// DESIGN: Version is the hash of the canonical form, so it is format-independent.
		if versions[name] != versions["json"] {
			t.Errorf("Version differs between %s and json", name)
		}
	}
}

// §2.10 (valid() mutates: defaults applied) + DESIGN: Marshal round-trips in every format.
func TestMarshalRoundTrip(t *testing.T) {
	srcs := map[string][]byte{"basePolicy": []byte(basePolicy), "fmtYAML": []byte(fmtYAML), "fmtTOML": []byte(fmtTOML)}
	files, _ := filepath.Glob("../../examples/policies/*")
	if len(files) == 0 {
		t.Fatal("no example policies found")
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		srcs[filepath.Base(f)] = b
	}
	formats := []limitr.Format{limitr.FormatJSON, limitr.FormatYAML, limitr.FormatTOML}
	for name, src := range srcs {
		p, err := limitr.New(src)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		canon, _ := p.Marshal(limitr.FormatJSON)
		for _, f := range formats {
			out, err := p.Marshal(f)
			if err != nil {
				t.Errorf("%s: Marshal(%v): %v", name, f, err)
				continue
			}
			p2, err := limitr.New(out, limitr.WithFormat(f))
			if err != nil {
				t.Errorf("%s: reload of Marshal(%v) failed: %v\n%s", name, f, err, out)
				continue
			}
			out2, _ := p2.Marshal(f)
			if !bytes.Equal(out, out2) {
				t.Errorf("%s: Marshal(%v) not stable:\n%s\n---\n%s", name, f, out, out2)
			}
			if c2, _ := p2.Marshal(limitr.FormatJSON); !bytes.Equal(c2, canon) {
				t.Errorf("%s: going through %v changed the document:\n%s\n---\n%s", name, f, canon, c2)
			}
			if p2.Version() != p.Version() {
				t.Errorf("%s: Version changed going through %v", name, f)
			}
		}
	}
}

// §2: every example policy loads through Open (format from the extension).
func TestExamplesOpen(t *testing.T) {
	files, _ := filepath.Glob("../../examples/policies/*")
	for _, f := range files {
		if _, err := limitr.Open(f); err != nil {
			t.Errorf("Open(%s): %v", f, err)
		}
	}
}
