package replay

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/limitr/limitr/internal/billing"
	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/policies"
	"github.com/limitr/limitr/internal/policies/doctree"
	"github.com/limitr/limitr/internal/validation"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func at(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

func d(s string) num.Dec { return num.MustParse(s) }

// currentSource is testdata/current.yaml; candidates are edits of it.
func currentSource(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile("testdata/current.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func load(t testing.TB, src string) *policies.Policy {
	t.Helper()
	p, err := policies.Load([]byte(src), doctree.FormatYAML)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// edit replaces old (which must be there) with new in src.
func edit(t testing.TB, src string, pairs ...string) string {
	t.Helper()
	for i := 0; i < len(pairs); i += 2 {
		if !strings.Contains(src, pairs[i]) {
			t.Fatalf("the policy has no %q to edit", pairs[i])
		}
		src = strings.Replace(src, pairs[i], pairs[i+1], 1)
	}
	return src
}

var created = at("2026-01-01T00:00:00Z")

func customer(id string, meters ...billing.MeterUsage) billing.ReplayCustomer {
	return billing.ReplayCustomer{Subject: billing.Subject{ID: id, ResolvedPlan: "basic", Anchor: created, CreatedAt: created,
		Plans: []billing.PlanSpan{{Plan: "basic", From: created}}}, Meters: meters}
}

func meter(ent, start, units, granted, overhead string) billing.MeterUsage {
	return billing.MeterUsage{Entitlement: ent, PeriodStart: at(start), Units: d(units), GrantCovered: d(granted), Overhead: d(overhead)}
}

// goldenCustomers: acme pays for tokens past its grants, uses 900 images and 300
// minutes; beta sits exactly at the images hard limit; gamma used its included grant
// and a pack, and 50 minutes.
// January's usage is outside the February window.
func goldenCustomers() []billing.ReplayCustomer {
	return []billing.ReplayCustomer{
		customer("acme", meter("tokens", "2026-02-01T00:00:00Z", "1600000", "250000", "6.4"),
			meter("images", "2026-02-01T00:00:00Z", "900", "0", "9"),
			meter("minutes", "2026-02-01T00:00:00Z", "300", "0", "3"),
			meter("tokens", "2026-01-01T00:00:00Z", "5000000", "0", "20")),
		customer("beta", meter("tokens", "2026-02-01T00:00:00Z", "800000", "0", "3.2"),
			meter("images", "2026-02-01T00:00:00Z", "1000", "0", "10")),
		customer("gamma", meter("tokens", "2026-02-01T00:00:00Z", "2000000", "600000", "8"),
			meter("images", "2026-02-01T00:00:00Z", "800", "0", "8"),
			meter("minutes", "2026-02-01T00:00:00Z", "50", "0", "0.5")),
	}
}

var february = Window{From: at("2026-02-01T00:00:00Z"), To: at("2026-03-01T00:00:00Z")}

func golden(t *testing.T, name string, v any) {
	t.Helper()
	got, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	path := filepath.Join("testdata", name+".golden.json")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./internal/analytics/replay -run Golden -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from %s:\n%s", name, path, got)
	}
}

func TestGoldenReplays(t *testing.T) {
	cur := currentSource(t)
	for _, tc := range []struct {
		name  string
		edits []string
	}{
		{"price_increase", []string{"fee: { price: { amount: 20 } }", "fee: { price: { amount: 25 } }",
			"token: { price: { amount: 0.00002 } }", "token: { price: { amount: 0.00003 } }"}},
		{"lower_hard_limit", []string{"mode: hard, value: 1000,", "mode: hard, value: 850,"}},
		{"cheaper_tier", []string{"- { price: { amount: 0.03 } }", "- { price: { amount: 0.02 } }"}},
		{"grants_run_out", []string{"value: 500000, resets: true, included: true", "value: 100000, resets: true, included: true"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep, err := Run(Input{Currency: "USD", RuneRate: num.One, Window: february,
				Current: Policy{Version: 1, Policy: load(t, cur)}, Candidate: Policy{Version: 2, Policy: load(t, edit(t, cur, tc.edits...))},
				Customers: goldenCustomers()})
			if err != nil {
				t.Fatal(err)
			}
			golden(t, tc.name, rep)
		})
	}
}

// The current figures are the invoices': billing.Rate over the same customers and
// periods, with the same policy, bills each customer exactly the replay's current
// revenue.
func TestCurrentRevenueIsTheInvoices(t *testing.T) {
	p := load(t, currentSource(t))
	rep, err := Run(Input{Currency: "USD", Window: february, Current: Policy{Version: 1, Policy: p},
		Candidate: Policy{Version: 1, Policy: p}, Customers: goldenCustomers()})
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]CustomerReport{}
	for _, c := range rep.Customers {
		byID[c.Customer] = c
		if c.Difference != (Figures{Revenue: "0.00", Cost: "0.00", Margin: "0.00"}) || len(c.HardLimits) > 1 || len(c.Grants) > 0 {
			t.Errorf("%s: the same policy changes something: %+v", c.Customer, c)
		}
	}
	for _, c := range goldenCustomers() {
		inv, err := billing.Preview(billing.RatingInput{Currency: "USD", RuneRate: num.One, Versions: versions(Policy{Version: 1, Policy: p}),
			Customer: c.Subject, Period: billing.Period{Start: february.From, End: february.To}, Meters: c.Meters, Now: february.To})
		if err != nil {
			t.Fatal(err)
		}
		if got := byID[c.Subject.ID].Current.Revenue; got != inv.Total {
			t.Errorf("%s: replay revenue %s, invoice total %s", c.Subject.ID, got, inv.Total)
		}
	}
}

func TestPeriodsEndingInTheWindow(t *testing.T) {
	p := load(t, currentSource(t))
	mid := at("2026-01-15T00:00:00Z")
	sub := billing.Subject{ID: "x", ResolvedPlan: "basic", Anchor: mid, CreatedAt: mid}
	got := periods(sub, p, february, time.Time{})
	if len(got) != 1 || !got[0].Start.Equal(mid) || !got[0].End.Equal(at("2026-02-15T00:00:00Z")) {
		t.Fatalf("anchored on the 15th, February holds the period ending 02-15: %+v", got)
	}
	if got := periods(sub, p, Window{From: at("2026-03-01T00:00:00Z"), To: at("2026-03-15T00:00:00Z")}, time.Time{}); len(got) != 1 {
		t.Fatalf("a period ending exactly at To is in: %+v", got)
	}
	late := billing.Subject{ID: "y", ResolvedPlan: "basic", Anchor: at("2026-03-02T00:00:00Z"), CreatedAt: at("2026-03-02T00:00:00Z")}
	if got := periods(late, p, february, time.Time{}); len(got) != 0 {
		t.Fatalf("a customer created after the window has no period in it: %+v", got)
	}
	// A window reaching the present also holds the period in progress; one ending
	// before it does not.
	now := at("2026-03-20T10:00:00Z")
	got = periods(sub, p, Window{From: at("2026-02-20T00:00:00Z"), To: now}, now)
	if len(got) != 2 || !got[1].Start.Equal(at("2026-03-15T00:00:00Z")) || !got[1].End.Equal(at("2026-04-15T00:00:00Z")) {
		t.Fatalf("the period in progress: %+v", got)
	}
	if got := periods(sub, p, Window{From: at("2026-02-20T00:00:00Z"), To: at("2026-03-19T00:00:00Z")}, now); len(got) != 1 {
		t.Fatalf("a window ending before now: %+v", got)
	}
}

func TestInputValidateNamesFields(t *testing.T) {
	err := Input{Currency: "XX", Window: Window{From: february.To, To: february.From}}.Validate()
	var ve *validation.Error
	if !errors.As(err, &ve) || !errors.Is(err, ErrInvalid) {
		t.Fatalf("%v", err)
	}
	for _, f := range []string{"currency", "current", "candidate", "window.to"} {
		if !strings.Contains(err.Error(), f) && !hasField(ve, f) {
			t.Errorf("no problem with %s: %v", f, err)
		}
	}
}

func hasField(ve *validation.Error, path string) bool {
	for _, f := range ve.Fields {
		if f.Path == path {
			return true
		}
	}
	return false
}

func TestLastFullMonth(t *testing.T) {
	w := LastFullMonth(at("2026-03-05T10:00:00+02:00"))
	if !w.From.Equal(february.From) || !w.To.Equal(february.To) {
		t.Fatalf("%+v", w)
	}
}
