package diff_test

import (
	"encoding/json"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/limitr/limitr/internal/policies"
	"github.com/limitr/limitr/internal/policies/diff"
	"github.com/limitr/limitr/internal/policies/doctree"
)

const base = `
policy:
  credits:
    token:
      overhead_cost: 0.000004
      price: { amount: 0.000006 }
      resets: true
    seat:
      description: A seat
    abstract: {}
  exchange:
    rune: { value: 1, currency: usd }
    abstract: { value: 1, currency: rune }
    token: { value: 0.000006, currency: abstract }
  plans:
    free:
      default: true
      entitlements:
        tokens:
          limit: { credit: token, value: 1000, resets: true, reset_inc: 1day }
        seats:
          limit: { credit: seat, value: 1 }
        export: {}
    pro:
      label: Pro
      entitlements:
        tokens:
          limit: { credit: token, mode: soft, value: 100000, resets: true, reset_inc: 1day }
        seats:
          limit: { credit: seat, value: 5 }
      topups:
        boost:
          credit: abstract
          value: 10
          price: { amount: 10 }
  notifications:
    ops:
      matches: "type == 'meter-changed'"
`

func parse(t *testing.T, src string, f doctree.Format) *policies.Document {
	t.Helper()
	doc, err := policies.Parse([]byte(src), f)
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, src)
	}
	return doc
}

// edit applies old→new replacements to base, failing if one does not match.
func edit(t *testing.T, pairs ...string) string {
	t.Helper()
	s := base
	for i := 0; i < len(pairs); i += 2 {
		if !strings.Contains(s, pairs[i]) {
			t.Fatalf("edit: %q not in base", pairs[i])
		}
		s = strings.Replace(s, pairs[i], pairs[i+1], 1)
	}
	return s
}

func asJSON(t *testing.T, v any) map[string]any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

var emptySections = map[string]string{
	"policy":        `{}`,
	"credits":       `{"added":[],"removed":[],"changed":{}}`,
	"plans":         `{"added":[],"removed":[],"changed":{}}`,
	"exchange":      `{"fields":{},"pairs":{"added":[],"removed":[],"changed":{}}}`,
	"notifications": `{"added":[],"removed":[],"changed":{}}`,
}

func TestDocuments(t *testing.T) {
	tests := []struct {
		name string
		to   func(t *testing.T) string
		// want holds the expected JSON of the sections that changed; every other
		// section must be empty.
		want map[string]string
	}{
		{
			name: "identical",
			to:   func(t *testing.T) string { return base },
		},
		{
			name: "spelling only: explicit defaults, duration in ms, quoted number",
			to: func(t *testing.T) string {
				return edit(t,
					"limit: { credit: seat, value: 1 }", "limit: { credit: seat, value: 1, mode: hard, increment: 1 }",
					"value: 1000, resets: true, reset_inc: 1day", "value: 1000.0, resets: true, reset_inc: 1day",
				)
			},
		},
		{
			name: "changed limit value",
			to: func(t *testing.T) string {
				return edit(t, "limit: { credit: seat, value: 5 }", "limit: { credit: seat, value: 10 }")
			},
			want: map[string]string{"plans": `{"added":[],"removed":[],"changed":{
				"pro":{"entitlements":{"added":[],"removed":[],"changed":{"seats":{"limit":{"value":{"from":5,"to":10}}}}}}}}`},
		},
		{
			name: "changed limit mode and reset",
			to: func(t *testing.T) string {
				return edit(t, "limit: { credit: token, value: 1000, resets: true, reset_inc: 1day }",
					"limit: { credit: token, mode: observe, value: 1000, resets: true, reset_inc: 7days }")
			},
			want: map[string]string{"plans": `{"added":[],"removed":[],"changed":{
				"free":{"entitlements":{"added":[],"removed":[],"changed":{"tokens":{"limit":{
					"mode":{"from":"hard","to":"observe"},
					"reset_inc":{"from":"1day","to":"7days"}}}}}}}}`},
		},
		{
			name: "added plan",
			to: func(t *testing.T) string {
				return edit(t, "  notifications:\n", `    team:
      entitlements:
        seats:
          limit: { credit: seat, value: 50 }
  notifications:
`)
			},
			want: map[string]string{"plans": `{"added":["team"],"removed":[],"changed":{}}`},
		},
		{
			name: "removed plan and entitlement",
			to: func(t *testing.T) string {
				return edit(t, `    free:
      default: true
      entitlements:
        tokens:
          limit: { credit: token, value: 1000, resets: true, reset_inc: 1day }
        seats:
          limit: { credit: seat, value: 1 }
        export: {}
`, `    free:
      default: true
      entitlements:
        tokens:
          limit: { credit: token, value: 1000, resets: true, reset_inc: 1day }
        export: {}
`, `      topups:
        boost:
          credit: abstract
          value: 10
          price: { amount: 10 }
`, "")
			},
			want: map[string]string{"plans": `{"added":[],"removed":[],"changed":{
				"free":{"entitlements":{"added":[],"removed":["seats"],"changed":{}}},
				"pro":{"topups":{"added":[],"removed":["boost"],"changed":{}}}}}`},
		},
		{
			name: "entitlement gains a limit and a description",
			to: func(t *testing.T) string {
				return edit(t, "export: {}", "export: { description: PDF, limit: { credit: seat, value: 2 } }")
			},
			want: map[string]string{"plans": `{"added":[],"removed":[],"changed":{
				"free":{"entitlements":{"added":[],"removed":[],"changed":{"export":{
					"fields":{"description":{"from":"","to":"PDF"}},
					"limit":{
						"credit":{"from":null,"to":"seat"},
						"mode":{"from":null,"to":"hard"},
						"value":{"from":null,"to":2},
						"increment":{"from":null,"to":1},
						"hard_trailing":{"from":null,"to":false},
						"grants_apply":{"from":null,"to":true},
						"resets":{"from":null,"to":false},
						"reset_sch":{"from":null,"to":""},
						"governor_enabled":{"from":null,"to":false},
						"ewma_alpha":{"from":null,"to":0.2}
					}}}}}}}`},
		},
		{
			name: "plan fields and topup price",
			to: func(t *testing.T) string {
				return edit(t, "label: Pro", "label: Pro 2025\n      hidden: true",
					"price: { amount: 10 }", "price: { amount: 12.5 }")
			},
			want: map[string]string{"plans": `{"added":[],"removed":[],"changed":{
				"pro":{
					"fields":{"label":{"from":"Pro","to":"Pro 2025"},"hidden":{"from":false,"to":true}},
					"topups":{"added":[],"removed":[],"changed":{"boost":{"fields":{
						"price":{"from":{"amount":10,"suffix":"/month"},"to":{"amount":12.5,"suffix":"/month"}}}}}}}}}`},
		},
		{
			name: "reordered plans",
			to: func(t *testing.T) string {
				i := strings.Index(base, "    pro:")
				j := strings.Index(base, "  notifications:")
				k := strings.Index(base, "    free:")
				return base[:k] + base[i:j] + base[k:i] + base[j:]
			},
			want: map[string]string{"plans": `{"added":[],"removed":[],"changed":{},"reordered":true}`},
		},
		{
			name: "credits: changed price, added credit",
			to: func(t *testing.T) string {
				return edit(t, "price: { amount: 0.000006 }", "price: { amount: 0.000008 }",
					"    abstract: {}\n", "    abstract: {}\n    gpu: { unit: second }\n")
			},
			want: map[string]string{"credits": `{"added":["gpu"],"removed":[],"changed":{
				"token":{"fields":{"price":{"from":{"amount":0.000006,"suffix":"/month"},"to":{"amount":0.000008,"suffix":"/month"}}}}}}`},
		},
		{
			name: "exchange: grant strategy and a pair",
			to: func(t *testing.T) string {
				return edit(t, "  exchange:\n", "  exchange:\n    grant_strategy: cheapest_first\n",
					"abstract: { value: 1, currency: rune }", "abstract: { value: 2, currency: rune }")
			},
			want: map[string]string{"exchange": `{"fields":{"grant_strategy":{"from":"expires_first","to":"cheapest_first"}},
				"pairs":{"added":[],"removed":[],"changed":{"abstract":{"fields":{"value":{"from":1,"to":2}}}}}}`},
		},
		{
			name: "notifications and timezone",
			to: func(t *testing.T) string {
				return edit(t, "policy:\n", "policy:\n  timezone: Europe/Paris\n",
					"matches: \"type == 'meter-changed'\"", "matches: \"type == 'limit-reached'\"") +
					"    billing:\n      matches: \"type == 'invoice'\"\n"
			},
			want: map[string]string{
				"policy": `{"timezone":{"from":"","to":"Europe/Paris"}}`,
				"notifications": `{"added":["billing"],"removed":[],"changed":{
					"ops":{"fields":{"matches":{"from":"type == 'meter-changed'","to":"type == 'limit-reached'"}}}}}`,
			},
		},
	}
	from := parse(t, base, doctree.FormatYAML)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			to := parse(t, tc.to(t), doctree.FormatYAML)
			d := diff.Documents(from, to)
			got := asJSON(t, d)
			want := map[string]string{}
			for k, v := range emptySections {
				want[k] = v
			}
			for k, v := range tc.want {
				want[k] = v
			}
			for k, w := range want {
				var wv any
				if err := json.Unmarshal([]byte(w), &wv); err != nil {
					t.Fatalf("bad want for %s: %v", k, err)
				}
				if !reflect.DeepEqual(got[k], wv) {
					gb, _ := json.Marshal(got[k])
					t.Errorf("%s:\n got %s\nwant %s", k, gb, mustCompact(w))
				}
			}
			if len(got) != len(want) {
				t.Errorf("sections: got %v", got)
			}
			if d.Empty() != (len(tc.want) == 0) {
				t.Errorf("Empty() = %v", d.Empty())
			}
		})
	}
}

func mustCompact(s string) string {
	var v any
	_ = json.Unmarshal([]byte(s), &v)
	b, _ := json.Marshal(v)
	return string(b)
}

// A document is its own diff's identity across formats: JSON and YAML spellings of the
// same policy compare equal, and every example compares equal with itself.
func TestSameDocumentAcrossFormats(t *testing.T) {
	for _, name := range []string{"quickstart-ai.json", "ai-credits.yaml", "seats.yaml", "storage-units.json"} {
		t.Run(name, func(t *testing.T) {
			src, err := os.ReadFile("../../../examples/policies/" + name)
			if err != nil {
				t.Fatal(err)
			}
			a := parse(t, string(src), doctree.FormatFromPath(name))
			for _, f := range []doctree.Format{doctree.FormatJSON, doctree.FormatYAML, doctree.FormatTOML} {
				out, err := policies.Encode(a, f)
				if err != nil {
					t.Fatalf("encode %s: %v", f, err)
				}
				b := parse(t, string(out), f)
				if d := diff.Documents(a, b); !d.Empty() {
					t.Errorf("%s round trip differs: %s", f, asJSON(t, d))
				}
			}
		})
	}
}

func TestRemovedEverything(t *testing.T) {
	from := parse(t, base, doctree.FormatYAML)
	to := parse(t, "policy:\n  credits:\n    seat: {}\n  plans:\n    free:\n      entitlements:\n        seats:\n          limit: { credit: seat, value: 1 }\n", doctree.FormatYAML)
	d := diff.Documents(from, to)
	if got := d.Plans.Removed; !reflect.DeepEqual(got, []string{"pro"}) {
		t.Errorf("plans removed = %v", got)
	}
	if got := d.Credits.Removed; !reflect.DeepEqual(got, []string{"token", "abstract"}) {
		t.Errorf("credits removed = %v", got)
	}
	if got := d.Exchange.Pairs.Removed; !reflect.DeepEqual(got, []string{"rune", "abstract", "token"}) {
		t.Errorf("pairs removed = %v", got)
	}
	if got := d.Notifications.Removed; !reflect.DeepEqual(got, []string{"ops"}) {
		t.Errorf("notifications removed = %v", got)
	}
	free := d.Plans.Changed["free"]
	if free.Entitlements == nil || !reflect.DeepEqual(free.Entitlements.Removed, []string{"tokens", "export"}) {
		t.Errorf("free entitlements = %+v", free.Entitlements)
	}
	if _, ok := free.Fields["default"]; !ok {
		t.Errorf("free default change missing: %+v", free.Fields)
	}
}
