package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/limitr/limitr/internal/billing"
	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/policies"
	"github.com/limitr/limitr/internal/policies/doctree"
)

const (
	goldenPolicy = "../../internal/billing/testdata/policy.yaml"
	sampleUsage  = "testdata/usage.csv"
)

func mustTime(t testing.TB, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func previewJSON(t *testing.T, args ...string) []billing.Invoice {
	t.Helper()
	code, out, errOut := runCLI(t, append([]string{"invoice", "preview", "--policy", goldenPolicy, "--format", "json"}, args...)...)
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	var invs []billing.Invoice
	if err := json.Unmarshal([]byte(out), &invs); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	return invs
}

func lineAmounts(inv billing.Invoice) map[string]string {
	out := map[string]string{}
	for _, l := range inv.Lines {
		out[l.Kind+":"+l.Entitlement] = l.Amount
	}
	return out
}

// The preview of the sample file is billing.Rate on the same data: the golden case of
// internal/billing (basic plan, tokens partly paid by grants) and a customer in a time
// zone on a plan past its trial.
func TestInvoicePreviewIsTheServersRating(t *testing.T) {
	invs := previewJSON(t, "--usage", sampleUsage)
	if len(invs) != 2 || invs[0].Customer != "acme" || invs[1].Customer != "globex" {
		t.Fatalf("invoices not sorted by customer: %+v", invs)
	}
	acme := invs[0]
	if a := lineAmounts(acme); len(a) != 3 || a["plan_fee:"] != "20.00" || a["usage:tokens"] != "12.00" || a["credit:tokens"] != "-5.00" {
		t.Fatalf("acme lines: %v", a)
	}
	if acme.Kind != "period" || acme.Status != billing.StatusUpcoming || acme.Number != nil || acme.Currency != "USD" ||
		acme.Subtotal != "27.00" || acme.Total != "27.00" || acme.Credited != "0.00" || acme.AmountDue != "27.00" ||
		!acme.PeriodStart.Equal(mustTime(t, "2026-02-10T00:00:00Z")) || !acme.PeriodEnd.Equal(mustTime(t, "2026-03-10T00:00:00Z")) {
		t.Fatalf("acme: %+v", acme)
	}

	src, err := os.ReadFile(goldenPolicy)
	if err != nil {
		t.Fatal(err)
	}
	p, err := policies.Load(src, doctree.FormatYAML)
	if err != nil {
		t.Fatal(err)
	}
	paris, _ := time.LoadLocation("Europe/Paris")
	for _, tc := range []struct {
		inv     billing.Invoice
		sub     billing.Subject
		period  billing.Period
		meters  []billing.MeterUsage
		wantTot string
	}{
		{inv: acme, sub: billing.Subject{ID: "acme", ResolvedPlan: "basic", CreatedAt: mustTime(t, "2026-01-10T09:30:00Z")},
			period: billing.Period{Start: mustTime(t, "2026-02-10T00:00:00Z"), End: mustTime(t, "2026-03-10T00:00:00Z")},
			meters: []billing.MeterUsage{{Entitlement: "tokens", PeriodStart: mustTime(t, "2026-02-10T00:00:00Z"),
				Units: num.MustParse("1600000"), GrantCovered: num.MustParse("250000")}},
			wantTot: "27"},
		{inv: invs[1], sub: billing.Subject{ID: "globex", ResolvedPlan: "pro", CreatedAt: mustTime(t, "2026-01-05T12:00:00Z"), Location: paris},
			period: billing.Period{Start: mustTime(t, "2026-02-04T23:00:00Z"), End: mustTime(t, "2026-03-04T23:00:00Z")},
			meters: []billing.MeterUsage{
				{Entitlement: "images", PeriodStart: mustTime(t, "2026-02-04T23:00:00Z"), Units: num.MustParse("700"), GrantCovered: num.Zero},
				{Entitlement: "tokens", PeriodStart: mustTime(t, "2026-02-04T23:00:00Z"), Units: num.MustParse("4000000"), GrantCovered: num.Zero}},
			wantTot: "106"},
	} {
		sub := tc.sub
		sub.Anchor = sub.CreatedAt
		sub.Plans = []billing.PlanSpan{{Plan: sub.ResolvedPlan, From: sub.CreatedAt}}
		rated, err := billing.Rate(billing.RatingInput{Currency: "USD", RuneRate: num.One, Versions: singleVersion{p}, Customer: sub,
			Period: tc.period, Meters: tc.meters, Now: tc.period.End})
		if err != nil {
			t.Fatal(err)
		}
		if rated.Total.Cmp(num.MustParse(tc.wantTot)) != 0 {
			t.Errorf("%s: Rate total %s, want %s", sub.ID, rated.Total, tc.wantTot)
		}
		if got, _ := num.Parse(tc.inv.Total); got.Cmp(rated.Total) != 0 {
			t.Errorf("%s: preview total %s, Rate %s", sub.ID, tc.inv.Total, rated.Total)
		}
		if !tc.inv.PeriodStart.Equal(tc.period.Start) || !tc.inv.PeriodEnd.Equal(tc.period.End) {
			t.Errorf("%s: period %s – %s, want %+v", sub.ID, tc.inv.PeriodStart, tc.inv.PeriodEnd, tc.period)
		}
		want, _ := json.Marshal(rated.Lines)
		got, _ := json.Marshal(tc.inv.Lines)
		if !bytes.Equal(got, want) {
			t.Errorf("%s: preview lines\n%s\nRate lines\n%s", sub.ID, got, want)
		}
	}
}

func TestInvoicePreviewText(t *testing.T) {
	code, out, errOut := runCLI(t, "invoice", "preview", "--policy", goldenPolicy, "--usage", sampleUsage)
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{
		"acme (plan basic), 2026-02-10T00:00:00Z to 2026-03-10T00:00:00Z, upcoming\n",
		"  KIND      DESCRIPTION ",
		"  plan_fee  Plan basic ",
		"  usage     tokens: 600000 token over the 1000000 included    600000      0.00002   12.00\n",
		"  credit    tokens: 250000 token paid from grants ",
		"Total USD ",
		"globex (plan pro), 2026-02-04T23:00:00Z to 2026-03-04T23:00:00Z, upcoming\n",
		"106.00\n",
		"2 invoices, 133.00 USD in all\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestInvoicePreviewStdinAtAndCurrency(t *testing.T) {
	src, err := os.ReadFile(sampleUsage)
	if err != nil {
		t.Fatal(err)
	}
	stdin = bytes.NewReader(src)
	t.Cleanup(func() { stdin = os.Stdin })
	// As acme's first period closes: its tokens meter ends in the next one.
	invs := previewJSON(t, "--usage", "-", "--at", "2026-02-10T00:00:00Z", "--currency", "eur", "--rune-rate", "0.5")
	acme := invs[0]
	if acme.Currency != "EUR" || acme.Total != "10.00" || len(acme.Lines) != 1 || !acme.PeriodStart.Equal(mustTime(t, "2026-01-10T09:30:00Z")) {
		t.Fatalf("acme at the end of its first period: %+v", acme)
	}
}

func TestInvoicePreviewErrors(t *testing.T) {
	const header = "customer,plan,entitlement,period_start,units\n"
	const row = "acme,basic,tokens,2026-02-10T00:00:00Z,1600000\n"
	for _, tc := range []struct {
		name, csv, want string
	}{
		{"empty", "", "usage.csv: empty file: want a header row"},
		{"header only", header, "usage.csv: no usage rows after the header"},
		{"missing column", "customer,plan,entitlement,period_start\n", `usage.csv:1: missing column "units"`},
		{"unknown column", "customer,plan,entitlement,period_start,unit\n", `usage.csv:1: unknown column "unit"`},
		{"column twice", "customer,plan,entitlement,period_start,units,plan\n", `usage.csv:1: column "plan" appears twice`},
		{"unnamed column", "customer,plan,,entitlement,period_start,units\n", "usage.csv:1: column 3 has no name"},
		{"field count", header + row + "acme,basic,tokens\n", "usage.csv:3: wrong number of fields"},
		{"bad quote", header + `acme,"basic,tokens,2026-02-10T00:00:00Z,1` + "\n", "usage.csv:2: extraneous or missing \" in quoted-field"},
		{"no customer", header + " ,basic,tokens,2026-02-10T00:00:00Z,1\n", "usage.csv:2: customer: is required"},
		{"no plan", header + "acme,,tokens,2026-02-10T00:00:00Z,1\n", "usage.csv:2: plan: is required"},
		{"no entitlement", header + "acme,basic,,2026-02-10T00:00:00Z,1\n", "usage.csv:2: entitlement: is required"},
		{"no period_start", header + "acme,basic,tokens,,1\n", "usage.csv:2: period_start: is required"},
		{"bad period_start", header + "acme,basic,tokens,yesterday,1\n", `usage.csv:2: period_start: "yesterday" is not an RFC 3339 time`},
		{"ancient period_start", header + "acme,basic,tokens,0001-01-01T00:00:00Z,1\n", `usage.csv:2: period_start: "0001-01-01T00:00:00Z" is before 1970`},
		{"bad units", header + row + row[:len(row)-8] + "12x\n", `usage.csv:3: units: "12x" is not a decimal`},
		{"no units", header + "acme,basic,tokens,2026-02-10T00:00:00Z,\n", "usage.csv:2: units: is required"},
		{"negative units", header + "acme,basic,tokens,2026-02-10T00:00:00Z,-1\n", `usage.csv:2: units: "-1" must not be negative`},
		{"bad grant_covered", "customer,plan,entitlement,period_start,units,grant_covered\nacme,basic,tokens,2026-02-10T00:00:00Z,1,lots\n",
			`usage.csv:2: grant_covered: "lots" is not a decimal`},
		{"bad created_at", "customer,plan,entitlement,period_start,units,created_at\nacme,basic,tokens,2026-02-10T00:00:00Z,1,2026-01-10\n",
			`usage.csv:2: created_at: "2026-01-10" is not an RFC 3339 time`},
		{"bad timezone", "customer,plan,entitlement,period_start,units,timezone\nacme,basic,tokens,2026-02-10T00:00:00Z,1,Mars/Olympus\n",
			`usage.csv:2: timezone: "Mars/Olympus" is not an IANA time zone`},
		{"Local is no zone", "customer,plan,entitlement,period_start,units,timezone\nacme,basic,tokens,2026-02-10T00:00:00Z,1,Local\n",
			`usage.csv:2: timezone: "Local" is not an IANA time zone`},
		{"plans disagree", header + row + "acme,pro,images,2026-02-10T00:00:00Z,1\n",
			`usage.csv:3: plan: "pro" differs from "basic" on line 2 (the rows of customer "acme" must agree)`},
		{"created_at disagrees", "customer,plan,entitlement,period_start,units,created_at\n" +
			"acme,basic,tokens,2026-02-10T00:00:00Z,1,2026-01-10T09:30:00Z\nacme,basic,images,2026-02-10T00:00:00Z,1,\n" +
			"acme,basic,minutes,2026-02-10T00:00:00Z,1,2026-01-11T09:30:00Z\n",
			"usage.csv:4: created_at: 2026-01-11T09:30:00Z differs from 2026-01-10T09:30:00Z on line 2"},
		{"timezones disagree", "customer,plan,entitlement,period_start,units,timezone\n" +
			"acme,basic,tokens,2026-02-10T00:00:00Z,1,Europe/Paris\nacme,basic,images,2026-02-10T00:00:00Z,1,UTC\n",
			`usage.csv:3: timezone: "UTC" differs from "Europe/Paris" on line 2`},
		{"meter twice", header + row + "acme,basic,tokens,2026-02-10T01:00:00+01:00,5\n",
			`usage.csv:3: period_start: customer "acme" already has tokens usage for the meter period from 2026-02-10T00:00:00Z, on line 2`},
		{"before creation", "customer,plan,entitlement,period_start,units,created_at\n" +
			"acme,basic,tokens,2026-02-10T00:00:00Z,1,2026-01-10T09:30:00Z\nacme,basic,images,2026-01-01T00:00:00Z,1,\n",
			"usage.csv:3: period_start: 2026-01-01T00:00:00Z is before the customer's created_at 2026-01-10T09:30:00Z (line 2)"},
		{"unknown plan", header + "acme,bsic,tokens,2026-02-10T00:00:00Z,1\n", `usage.csv:2: plan: "bsic" is not a plan of the policy`},
		{"unknown entitlement", header + row + "acme,basic,tokenz,2026-02-10T00:00:00Z,1\n",
			`usage.csv:3: entitlement: "tokenz" is not an entitlement of the policy`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "usage.csv")
			if err := os.WriteFile(file, []byte(tc.csv), 0o644); err != nil {
				t.Fatal(err)
			}
			code, out, errOut := runCLI(t, "invoice", "preview", "--policy", goldenPolicy, "--usage", file)
			if code != exitUsage || out != "" {
				t.Fatalf("exit %d, want 2\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
			}
			if !strings.Contains(errOut, tc.want) || strings.Count(errOut, "\n") != 1 {
				t.Fatalf("stderr lacks %q (on one line):\n%s", tc.want, errOut)
			}
		})
	}
}

func TestInvoicePreviewFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{}, exitUsage, "usage:"},
		{[]string{"frobnicate"}, exitUsage, "limitr invoice preview"},
		{[]string{"preview"}, exitUsage, "--policy and --usage are required"},
		{[]string{"preview", "--policy", goldenPolicy}, exitUsage, "--policy and --usage are required"},
		{[]string{"preview", "--policy", goldenPolicy, "--usage", sampleUsage, "extra"}, exitUsage, "and nothing else"},
		{[]string{"preview", "--nope"}, exitUsage, "flag provided but not defined"},
		{[]string{"preview", "--policy", goldenPolicy, "--usage", sampleUsage, "--currency", "XYZ"}, exitUsage, `--currency: "XYZ" is not an ISO 4217`},
		{[]string{"preview", "--policy", goldenPolicy, "--usage", sampleUsage, "--rune-rate", "0"}, exitUsage, `--rune-rate: "0" is not a decimal greater than 0`},
		{[]string{"preview", "--policy", goldenPolicy, "--usage", sampleUsage, "--at", "tomorrow"}, exitUsage, `--at: "tomorrow" is not an RFC 3339 time`},
		{[]string{"preview", "--policy", goldenPolicy, "--usage", sampleUsage, "--format", "xml"}, exitUsage, `--format: "xml" is not text or json`},
		{[]string{"preview", "--policy", goldenPolicy, "--usage", "testdata/no-such.csv"}, exitUsage, "testdata/no-such.csv: no such file or directory"},
		{[]string{"preview", "--policy", "testdata/no-such.yaml", "--usage", sampleUsage}, exitFail, "testdata/no-such.yaml: no such file or directory"},
		{[]string{"preview", "--policy", "testdata/bad-policy.yaml", "--usage", sampleUsage}, exitFail,
			`testdata/bad-policy.yaml: policy.plans.free.entitlements.seats.limit.credit: credit "seet" does not exist`},
	} {
		code, out, errOut := runCLI(t, append([]string{"invoice"}, tc.args...)...)
		if code != tc.code || out != "" || !strings.Contains(errOut, tc.want) {
			t.Errorf("%q: exit %d (want %d)\nstdout:\n%s\nstderr (want %q):\n%s", tc.args, code, tc.code, out, tc.want, errOut)
		}
	}
}

// FuzzPreviewCSV: any input either parses into customers that rate without a panic,
// or is refused with an error naming the file.
func FuzzPreviewCSV(f *testing.F) {
	sample, err := os.ReadFile(sampleUsage)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(sample)
	f.Add([]byte("customer,plan,entitlement,period_start,units\nacme,basic,tokens,2026-02-10T00:00:00Z,12x\n"))
	f.Add([]byte("\ufeffunits,period_start,entitlement,plan,customer,timezone\n1e3,2026-02-10T00:00:00+05:30,seats,pro,a,Asia/Kolkata\n"))
	f.Add([]byte("customer,plan,entitlement,period_start,units,created_at\n\"a\nb\",basic,images,0001-01-01T00:00:00Z,99999999999999999,9999-12-31T23:59:59Z\n"))
	src, err := os.ReadFile(goldenPolicy)
	if err != nil {
		f.Fatal(err)
	}
	p, err := policies.Load(src, doctree.FormatYAML)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		customers, err := parseUsageCSV("fuzz.csv", bytes.NewReader(data))
		if err != nil {
			var ce *csvError
			if !errors.As(err, &ce) || !strings.HasPrefix(err.Error(), "fuzz.csv") {
				t.Fatalf("error %T %q does not name the file", err, err)
			}
			return
		}
		for i, c := range customers {
			if i > 0 && customers[i-1].id >= c.id {
				t.Fatalf("customers not sorted: %q then %q", customers[i-1].id, c.id)
			}
			if len(c.meters) == 0 || len(c.meters) != len(c.lines) || c.created.IsZero() {
				t.Fatalf("customer %q: %d meters, %d lines, created %s", c.id, len(c.meters), len(c.lines), c.created)
			}
			for _, m := range c.meters {
				if m.Units.IsNeg() || m.GrantCovered.IsNeg() || m.PeriodStart.Before(c.created) {
					t.Fatalf("customer %q: meter %+v", c.id, m)
				}
			}
		}
		invs, err := previewInvoices("fuzz.csv", p, customers, previewOptions{currency: "USD", runeRate: num.One})
		if err != nil {
			return
		}
		for _, inv := range invs {
			sum := num.Zero
			for _, l := range inv.Lines {
				a, err := num.Parse(l.Amount)
				if err != nil {
					t.Fatalf("line amount %q: %v", l.Amount, err)
				}
				sum, _ = sum.Add(a)
			}
			if total, _ := num.Parse(inv.Total); total.Cmp(sum) != 0 {
				t.Fatalf("total %s is not the sum of the lines %s", inv.Total, sum)
			}
		}
	})
}
