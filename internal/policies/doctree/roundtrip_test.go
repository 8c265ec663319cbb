package doctree

import (
	"errors"
	"strings"
	"testing"
)

var formats = []Format{FormatJSON, FormatYAML, FormatTOML}

const samplePolicyJSON = `{
  "policy": {
    "name": "Acme pricing",
    "version": 3,
    "credits": {
      "unit": "credit",
      "price": {"amount": 0.000004, "currency": "USD"},
      "rollover": false
    },
    "plans": {
      "free": {
        "default": true,
        "entitlements": {
          "seats": {"limit": {"credit": 5}},
          "api_calls": {"limit": {"credit": 100000, "period": "month"}}
        },
        "description": "Free tier: <= 5 seats & \"fair\" use\nno SLA"
      },
      "pro": {
        "default": false,
        "price": {"amount": 49.00, "currency": "USD"},
        "entitlements": {
          "seats": {
            "tiers": [
              {"up_to": 5, "price": {"amount": 0.80}},
              {"up_to": 50, "price": {"amount": 0.65}},
              {"price": {"amount": 0.55}}
            ]
          },
          "features": ["sso", "audit-log", "priority support"]
        }
      }
    },
    "metadata": {"owner": "billing@acme.test", "tags": [], "extra": {}, "ratio": 6e-6}
  }
}`

const samplePolicyYAML = `# Acme pricing, YAML edition.
policy:
  name: Acme pricing
  version: 3
  credits:
    unit: credit
    price: {amount: 0.000004, currency: USD}
    grant: 100_000
    rollover: false
  plans:
    free:
      default: true
      entitlements:
        seats:
          limit:
            credit: 5
        storage:
          limit: {credit: 1e3}
    team:
      entitlements:
        seats:
          tiers:
            - up_to: 5
              price:
                amount: 0.80
            - price:
                amount: 0.55
      default: false
      note: |
        Billed monthly.
        Cancel any time.
    "yes":
      code: "007"
      on: yes
`

const samplePolicyTOML = `# Acme pricing, TOML edition.
[policy]
name = "Acme pricing"
version = 3

[policy.credits]
unit = "credit"
price = { amount = 0.000004, currency = "USD" }
grant = 100_000
ratio = 6e-6

[policy.plans.free]
default = true
entitlements.seats.limit.credit = 5
entitlements.api.limit = { credit = 1_000, period = "month" }

[policy.plans.pro]
default = false
starts = 2024-01-01

[[policy.plans.pro.tiers]]
up_to = 5
[policy.plans.pro.tiers.price]
amount = 0.80

[[policy.plans.pro.tiers]]
price = { amount = 0.55 }

[policy.plans.pro.limits]
"weird key" = 'single \quoted'
`

func samples() map[string]struct {
	f Format
	s string
} {
	return map[string]struct {
		f Format
		s string
	}{
		"json": {FormatJSON, samplePolicyJSON},
		"yaml": {FormatYAML, samplePolicyYAML},
		"toml": {FormatTOML, samplePolicyTOML},
	}
}

func TestRoundTripSamples(t *testing.T) {
	for name, sample := range samples() {
		orig, err := Decode([]byte(sample.s), sample.f)
		if err != nil {
			t.Fatalf("%s: decode: %v", name, err)
		}
		if f := Detect([]byte(sample.s)); f != sample.f {
			t.Errorf("%s: Detect = %v", name, f)
		}
		for _, f := range formats {
			out, err := Encode(orig, f)
			if err != nil {
				t.Fatalf("%s → %s: encode: %v", name, f, err)
			}
			back, err := Decode(out, f)
			if err != nil {
				t.Fatalf("%s → %s: decode: %v\n%s", name, f, err, out)
			}
			if !Equal(orig, back) {
				t.Fatalf("%s → %s: round trip mismatch\n%s\ngot  %s\nwant %s", name, f, out, dump(back), dump(orig))
			}
			if g := Detect(out); g != f {
				t.Errorf("%s → %s: Detect(output) = %v\n%s", name, f, g, out)
			}
			// Chains through a second format must hold too.
			for _, g := range formats {
				out2, err := Encode(back, g)
				if err != nil {
					t.Fatalf("%s → %s → %s: encode: %v", name, f, g, err)
				}
				back2, err := Decode(out2, g)
				if err != nil || !Equal(orig, back2) {
					t.Fatalf("%s → %s → %s: %v\n%s", name, f, g, err, out2)
				}
			}
			again, _ := Encode(back, f)
			if string(again) != string(out) {
				t.Errorf("%s → %s: encoding is not stable\n%s\n---\n%s", name, f, out, again)
			}
		}
	}
}

func TestSampleOrderAndValues(t *testing.T) {
	n, err := Decode([]byte(samplePolicyTOML), FormatTOML)
	if err != nil {
		t.Fatal(err)
	}
	p := n.Get("policy")
	if got := strings.Join(p.Keys, ","); got != "name,version,credits,plans" {
		t.Errorf("policy keys %s", got)
	}
	if got := strings.Join(p.Get("plans").Keys, ","); got != "free,pro" {
		t.Errorf("plan keys %s", got)
	}
	tiers := p.Get("plans").Get("pro").Get("tiers")
	if len(tiers.Items) != 2 || tiers.Items[0].Get("price").Get("amount").Text != "0.80" {
		t.Errorf("tiers %s", dump(tiers))
	}
	if p.Get("credits").Get("grant").Text != "100_000" {
		t.Errorf("grant text %q", p.Get("credits").Get("grant").Text)
	}
}

func TestEncodeFormats(t *testing.T) {
	n := m(
		"name", Str("a \"quoted\"\tname\x7f"),
		"empty", Str(""),
		"numstr", Str("1e400"),
		"truestr", Str("true"),
		"amount", Num("0.80"),
		"big", Num("100_000"),
		"plus", Num("+.5"),
		"nothing", NullNode(),
		"nested", m("a b", m("c", Num("1")), "d", BoolNode(true)),
		"tiers", NewList(m("up_to", Num("5")), m("x", NullNode())),
	)
	want := map[Format]string{
		FormatJSON: `{
  "name": "a \"quoted\"\tname` + "\x7f" + `",
  "empty": "",
  "numstr": "1e400",
  "truestr": "true",
  "amount": 0.80,
  "big": 100000,
  "plus": 0.5,
  "nothing": null,
  "nested": {
    "a b": {
      "c": 1
    },
    "d": true
  },
  "tiers": [
    {
      "up_to": 5
    },
    {
      "x": null
    }
  ]
}
`,
		FormatYAML: `name: "a \"quoted\"\tname\x7F"
empty: ""
numstr: "1e400"
truestr: "true"
amount: 0.80
big: 100_000
plus: 0.5
nothing: null
nested:
  a b:
    c: 1
  d: true
tiers:
  - up_to: 5
  - x: null
`,
		FormatTOML: `name = "a \"quoted\"\tname\u007F"
empty = ""
numstr = "1e400"
truestr = "true"
amount = 0.80
big = 100_000
plus = 0.5

[nested]
"a b".c = 1
d = true

[[tiers]]
up_to = 5

[[tiers]]
`,
	}
	for f, w := range want {
		out, err := Encode(n, f)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if string(out) != w {
			t.Errorf("%s:\n%s\nwant\n%s", f, out, w)
		}
	}
}

func TestEncodeTOMLLimits(t *testing.T) {
	for name, n := range map[string]*Node{
		"top-level list":    NewList(),
		"top-level scalar":  Num("1"),
		"null list element": m("a", NewList(Num("1"), NullNode())),
		"int too big":       m("a", Num("99999999999999999999")),
		"float too big":     m("a", Num("1e400")),
	} {
		if _, err := Encode(n, FormatTOML); !errors.Is(err, ErrUnsupported) {
			t.Errorf("%s: err = %v, want ErrUnsupported", name, err)
		}
	}
	for name, n := range map[string]*Node{
		"bad number":  m("a", Num("12abc")),
		"bad utf8":    m("a", Str("\xff")),
		"nil child":   {Kind: Map, Keys: []string{"a"}, Vals: []*Node{nil}},
		"bad kind":    &Node{Kind: 42},
		"dup key":     {Kind: Map, Keys: []string{"a", "a"}, Vals: []*Node{Num("1"), Num("2")}},
		"ragged map":  {Kind: Map, Keys: []string{"a"}},
		"lone under":  m("a", Num("_")),
		"empty digit": m("a", Num("")),
	} {
		for _, f := range formats {
			if _, err := Encode(n, f); err == nil {
				t.Errorf("%s/%s: want error", name, f)
			}
		}
	}
}

// TestTOMLOrderNeedsInline covers maps followed by scalars: TOML cannot put
// a [section] before a key/value of the same table, so the encoder must keep
// such maps inline (dotted) to preserve order.
func TestTOMLOrderNeedsInline(t *testing.T) {
	n := m(
		"a", m("x", m("y", Num("1")), "l", NewList(m("k", Num("1")))),
		"b", Num("2"),
		"c", m("empty", NewMap(), "nulls", m("z", NullNode())),
		"d", NewList(NewList(m("q", Str("r")))),
		"e", m("f", NewMap()),
		"g", NewList(m("h", NewList(m("i", Num("1")))), m("j", m("k", Num("2")))),
	)
	out, err := Encode(n, FormatTOML)
	if err != nil {
		t.Fatal(err)
	}
	back, err := Decode(out, FormatTOML)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	// The all-null map legitimately loses its null member in TOML.
	n.Get("c").Set("nulls", NewMap())
	if !Equal(n, back) {
		t.Fatalf("mismatch\n%s\ngot %s", out, dump(back))
	}
}
