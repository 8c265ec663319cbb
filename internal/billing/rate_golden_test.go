package billing

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/policies"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// oneVersion is a policy published once, as version number.
type oneVersion struct {
	number int
	policy *policies.Policy
}

func (o oneVersion) At(time.Time) (Version, error) {
	return Version{Number: o.number, Policy: o.policy}, nil
}
func (o oneVersion) Number(n int) (Version, error) {
	if n != o.number {
		return Version{}, fmt.Errorf("no version %d", n)
	}
	return Version{Number: o.number, Policy: o.policy}, nil
}

func at(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

func d(s string) num.Dec { return num.MustParse(s) }

// golden compares v, as indented JSON, with testdata/<name>.golden.json.
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
		t.Fatalf("%v (run go test ./internal/billing -run Golden -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from %s:\n%s", name, path, got)
	}
}

type goldenInvoice struct {
	Period Period `json:"period"`
	Lines  []Line `json:"lines"`
	Total  string `json:"total"`
}

func TestRateGolden(t *testing.T) {
	p := loadPolicy(t, "testdata/policy.yaml")
	versions := oneVersion{number: 3, policy: p}
	created := at("2026-01-10T09:30:00Z")
	second := Period{Start: at("2026-02-10T00:00:00Z"), End: at("2026-03-10T00:00:00Z")}
	first := Period{Start: created, End: second.Start}
	basic := []PlanSpan{{Plan: "basic", From: created}}
	meter := func(ent, start, units, granted string) MeterUsage {
		return MeterUsage{Entitlement: ent, PeriodStart: at(start), Units: d(units), GrantCovered: d(granted)}
	}
	ny, _ := time.LoadLocation("America/New_York")
	nyCreated := at("2026-01-31T15:00:00Z") // 10:00 in New York
	for _, tc := range []struct {
		name   string
		period Period
		cust   Subject
		meters []MeterUsage
		billed []BilledMeter
	}{
		{name: "flat", period: second, cust: Subject{ResolvedPlan: "basic", Plans: basic},
			meters: []MeterUsage{meter("tokens", "2026-02-10T00:00:00Z", "1600000", "0")}},
		{name: "tiered", period: second, cust: Subject{ResolvedPlan: "basic", Plans: basic},
			meters: []MeterUsage{meter("images", "2026-02-10T00:00:00Z", "1250", "0")}},
		{name: "volume", period: second, cust: Subject{ResolvedPlan: "basic", Plans: basic},
			meters: []MeterUsage{meter("minutes", "2026-02-10T00:00:00Z", "12345", "0")}},
		{name: "stairstep_level", period: second, cust: Subject{ResolvedPlan: "basic", Plans: basic},
			meters: []MeterUsage{meter("seats", "2026-01-10T09:30:00Z", "9", "0")}},
		{name: "grants_pay_part", period: second, cust: Subject{ResolvedPlan: "basic", Plans: basic},
			meters: []MeterUsage{meter("tokens", "2026-02-10T00:00:00Z", "1600000", "250000"),
				meter("images", "2026-02-10T00:00:00Z", "80", "30")}},
		{name: "exchanged_credit", period: second, cust: Subject{ResolvedPlan: "basic", Plans: basic},
			meters: []MeterUsage{meter("assistant", "2026-02-10T00:00:00Z", "5000", "0")}},
		{name: "plan_fee_with_trial", period: first, cust: Subject{ResolvedPlan: "pro", Plans: []PlanSpan{{Plan: "pro", From: created}}}},
		{name: "plan_fee_after_trial", period: second, cust: Subject{ResolvedPlan: "pro", Plans: []PlanSpan{{Plan: "pro", From: created}}},
			meters: []MeterUsage{
				meter("daily_calls", "2026-02-09T09:30:00Z", "1500", "0"), // ends 02-10 09:30: inside
				meter("daily_calls", "2026-02-10T09:30:00Z", "900", "0"),
				meter("daily_calls", "2026-02-11T09:30:00Z", "3000", "0"),
				meter("daily_calls", "2026-03-09T09:30:00Z", "5000", "0"), // ends 03-10 09:30: next invoice
			}},
		{name: "upgrade_mid_period", period: second, cust: Subject{ResolvedPlan: "pro",
			Plans: []PlanSpan{{Plan: "basic", From: created}, {Plan: "pro", From: at("2026-02-20T12:00:00Z")}}}},
		{name: "downgrade_mid_period", period: second, cust: Subject{ResolvedPlan: "basic",
			Plans: []PlanSpan{{Plan: "pro", From: created}, {Plan: "basic", From: at("2026-02-24T00:00:00Z")}}}},
		{name: "late_usage_adjustment", period: second, cust: Subject{ResolvedPlan: "basic", Plans: basic},
			meters: []MeterUsage{
				meter("tokens", "2026-01-10T09:30:00Z", "1300000", "0"),
				meter("tokens", "2026-02-10T00:00:00Z", "1000000", "0"),
			},
			billed: []BilledMeter{{Entitlement: "tokens", PeriodStart: at("2026-01-10T09:30:00Z"), Units: d("1200000"),
				GrantCovered: num.Zero, Amount: d("4.00"), PolicyVersion: 3}}},
		{name: "time_zone_anchor", period: PeriodAt(at("2026-02-15T12:00:00Z"), nyCreated, nyCreated, ny),
			cust: Subject{ResolvedPlan: "basic", Location: ny, Anchor: nyCreated, CreatedAt: nyCreated,
				Plans: []PlanSpan{{Plan: "basic", From: nyCreated}}},
			meters: []MeterUsage{
				meter("tokens", "2026-01-31T15:00:00Z", "1000500", "0"), // first period: ends 02-28 05:00 UTC
				meter("tokens", "2026-02-28T05:00:00Z", "2000000", "0"), // next period
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cust := tc.cust
			if cust.CreatedAt.IsZero() {
				cust.CreatedAt, cust.Anchor = created, created
			}
			rated, err := Rate(RatingInput{Currency: "USD", RuneRate: num.One, Versions: versions, Customer: cust,
				Period: tc.period, Meters: tc.meters, Billed: tc.billed, Now: tc.period.End})
			if err != nil {
				t.Fatal(err)
			}
			sum := num.Zero
			for _, l := range rated.Lines {
				sum, _ = sum.Add(d(l.Amount))
			}
			if sum.Cmp(rated.Total) != 0 {
				t.Fatalf("total %s is not the sum of the lines %s", rated.Total, sum)
			}
			golden(t, tc.name, goldenInvoice{Period: tc.period, Lines: rated.Lines, Total: rated.Total.Pad(2).String()})
		})
	}
}
