package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/limitr/limitr/internal/billing"
	"github.com/limitr/limitr/internal/billing/money"
	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/policies"
	"github.com/limitr/limitr/internal/policies/doctree"
)

// invoiceCommands are the invoice commands: offline, no database.
func invoiceCommands() []command {
	return []command{
		{"preview", "--policy FILE --usage FILE|- [--currency USD] [--rune-rate 1] [--at TIME] [--format text|json]",
			"rate a usage CSV with the server's rating code and print each customer's invoice", runInvoicePreview},
	}
}

// usageFileHelp describes the usage CSV, for `limitr help invoice`.
const usageFileHelp = `Usage file (CSV with a header row; columns in any order, names exact):
  customer       required  the customer's id
  plan           required  the customer's plan (its resolved and explicit plan: it pays its fee)
  entitlement    required  an entitlement of the policy
  period_start   required  the meter period's start, RFC 3339 (2026-02-10T00:00:00Z)
  units          required  the meter period's committed units, an exact decimal
  grant_covered  optional  the units grants paid for (default 0)
  created_at     optional  the customer's creation and billing anchor, RFC 3339
                           (default: its earliest period_start)
  timezone       optional  the customer's IANA time zone (default: the policy's)
  overhead       optional  what the usage cost you, in runes (default 0; limitr simulate
                           reports it as cost)
The rows of one customer agree on plan, created_at and timezone. Each customer is billed
for the period containing the instant just before --at (default: as the period holding
its latest period_start closes), with the policy as version 1.`

func runInvoice(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		for _, c := range invoiceCommands() {
			if c.name == args[0] {
				return c.run(args[1:], stdout, stderr)
			}
		}
	}
	fmt.Fprintln(stderr, "usage:")
	for _, c := range invoiceCommands() {
		fmt.Fprintf(stderr, "  limitr invoice %s %s\n      %s\n", c.name, c.args, c.summary)
	}
	return exitUsage
}

// stdin is what `--usage -` reads; tests replace it.
var stdin io.Reader = os.Stdin

// previewOptions are the checked flags of `invoice preview`.
type previewOptions struct {
	currency string
	runeRate num.Dec
	at       time.Time // zero: as each customer's latest period closes
	json     bool
}

func runInvoicePreview(args []string, stdout, stderr io.Writer) int {
	const name = "limitr invoice preview"
	fs := newFlags("invoice preview", stderr)
	policyFile := fs.String("policy", "", "the policy document (JSON, YAML or TOML)")
	usageFile := fs.String("usage", "", "the usage CSV, - for standard input")
	currency := fs.String("currency", "USD", "the invoices' ISO 4217 currency")
	runeRate := fs.String("rune-rate", "1", "the value of one rune (the policy's price unit) in the currency")
	at := fs.String("at", "", "preview as of this RFC 3339 instant (default: as each customer's latest period closes)")
	format := fs.String("format", "text", "output: text or json (the API's invoice shape)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: "+name+" --policy FILE --usage FILE|- [flags]")
		fs.PrintDefaults()
		fmt.Fprintln(stderr, "\n"+usageFileHelp)
	}
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if fs.NArg() > 0 || *policyFile == "" || *usageFile == "" {
		fmt.Fprintln(stderr, name+": --policy and --usage are required, and nothing else")
		return exitUsage
	}
	opts, err := previewFlags(*currency, *runeRate, *at, *format)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return exitUsage
	}
	p, problems := loadPolicyDoc(*policyFile)
	if len(problems) > 0 {
		for _, pr := range problems {
			fmt.Fprintf(stderr, "%s: %s: %s\n", name, *policyFile, pr)
		}
		return exitFail
	}
	customers, err := readUsage(*usageFile)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return exitUsage
	}
	invoices, err := previewInvoices(usageName(*usageFile), p, customers, opts)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		var ce *csvError
		if errors.As(err, &ce) {
			return exitUsage
		}
		return exitFail
	}
	if opts.json {
		out, _ := json.MarshalIndent(invoices, "", "  ")
		fmt.Fprintf(stdout, "%s\n", out)
		return exitOK
	}
	writeInvoicesText(stdout, invoices, customers)
	return exitOK
}

func previewFlags(currency, runeRate, at, format string) (previewOptions, error) {
	var o previewOptions
	var err error
	if o.currency, err = money.Normalize(currency); err != nil {
		return o, fmt.Errorf("--currency: %q is not an ISO 4217 currency code, like USD or EUR", currency)
	}
	if o.runeRate, err = num.Parse(runeRate); err != nil || !o.runeRate.IsPos() {
		return o, fmt.Errorf("--rune-rate: %q is not a decimal greater than 0, like 1 or 0.92", runeRate)
	}
	if at != "" {
		if o.at, err = time.Parse(time.RFC3339, at); err != nil {
			return o, fmt.Errorf("--at: %q is not an RFC 3339 time, like 2026-03-10T00:00:00Z", at)
		}
	}
	switch format {
	case "text":
	case "json":
		o.json = true
	default:
		return o, fmt.Errorf("--format: %q is not text or json", format)
	}
	return o, nil
}

// loadPolicyDoc loads and compiles a policy document as `limitr validate` reads it:
// the format from the extension, else detected; every problem with its path.
func loadPolicyDoc(file string) (*policies.Policy, []string) {
	src, err := os.ReadFile(file)
	if err != nil {
		return nil, []string{fileError(err)}
	}
	p, err := policies.Load(src, doctree.FormatFromPath(file))
	if err != nil {
		return nil, problemLines(err, file)
	}
	return p, nil
}

func usageName(file string) string {
	if file == "-" {
		return "stdin"
	}
	return file
}

func readUsage(file string) ([]*usageCustomer, error) {
	if file == "-" {
		return parseUsageCSV(usageName(file), stdin)
	}
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("%s: %s", file, fileError(err))
	}
	defer f.Close()
	return parseUsageCSV(file, f)
}

// singleVersion is the policy file, published once as version 1.
type singleVersion struct{ p *policies.Policy }

func (v singleVersion) At(time.Time) (billing.Version, error) {
	return billing.Version{Number: 1, Policy: v.p}, nil
}

func (v singleVersion) Number(n int) (billing.Version, error) {
	if n != 1 {
		return billing.Version{}, fmt.Errorf("no policy version %d: the preview has version 1 only", n)
	}
	return billing.Version{Number: 1, Policy: v.p}, nil
}

// previewInvoices rates each customer's period with billing.Preview, the server's
// code path: the period containing the instant just before --at.
func previewInvoices(file string, p *policies.Policy, customers []*usageCustomer, o previewOptions) ([]billing.Invoice, error) {
	out := make([]billing.Invoice, 0, len(customers))
	for _, c := range customers {
		if err := checkAgainstPolicy(file, p, c); err != nil {
			return nil, err
		}
		loc := c.loc
		if loc == nil {
			loc = p.Location
		}
		at := o.at
		if at.IsZero() {
			latest := c.meters[0].PeriodStart
			for _, m := range c.meters[1:] {
				if m.PeriodStart.After(latest) {
					latest = m.PeriodStart
				}
			}
			at = billing.PeriodAt(latest, c.created, c.created, loc).End
		}
		per := billing.PeriodAt(at.Add(-time.Nanosecond), c.created, c.created, loc)
		now := at
		if now.After(per.End) {
			now = per.End
		}
		inv, err := billing.Preview(billing.RatingInput{Currency: o.currency, RuneRate: o.runeRate, Versions: singleVersion{p},
			Customer: billing.Subject{ID: c.id, ResolvedPlan: c.plan, Location: c.loc, Anchor: c.created, CreatedAt: c.created,
				Plans: []billing.PlanSpan{{Plan: c.plan, From: c.created}}},
			Period: per, Meters: c.meters, Now: now})
		if err != nil {
			return nil, fmt.Errorf("customer %q: %w", c.id, err)
		}
		out = append(out, inv)
	}
	return out, nil
}

// checkAgainstPolicy catches typos: the plan and every entitlement exist in the policy.
func checkAgainstPolicy(file string, p *policies.Policy, c *usageCustomer) error {
	if p.Plan(c.plan) == nil {
		return &csvError{file: file, line: c.planLine, column: colPlan, msg: fmt.Sprintf("%q is not a plan of the policy", c.plan)}
	}
	for i, m := range c.meters {
		if _, ok := p.EntitlementIndex(m.Entitlement); !ok {
			return &csvError{file: file, line: c.lines[i], column: colEntitlement,
				msg: fmt.Sprintf("%q is not an entitlement of the policy", m.Entitlement)}
		}
	}
	return nil
}

// writeInvoicesText prints a table per invoice, then the grand total when there are
// several.
func writeInvoicesText(w io.Writer, invoices []billing.Invoice, customers []*usageCustomer) {
	plans := map[string]string{}
	for _, c := range customers {
		plans[c.id] = c.plan
	}
	total := num.Zero
	for i, inv := range invoices {
		if i > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintf(w, "%s (plan %s), %s to %s, %s\n", inv.Customer, plans[inv.Customer],
			inv.PeriodStart.Format(time.RFC3339), inv.PeriodEnd.Format(time.RFC3339), inv.Status)
		rows := [][]string{{"KIND", "DESCRIPTION", "QUANTITY", "UNIT AMOUNT", "AMOUNT"}}
		for _, l := range inv.Lines {
			rows = append(rows, []string{l.Kind, l.Description, l.Quantity, l.UnitAmount, l.Amount})
		}
		rows = append(rows, []string{"", "Total " + inv.Currency, "", "", inv.Total})
		writeTable(w, rows, []bool{false, false, true, true, true})
		t, _ := num.Parse(inv.Total)
		total, _ = total.Add(t)
	}
	if len(invoices) > 1 {
		s, _ := money.Format(total, invoices[0].Currency)
		fmt.Fprintf(w, "\n%d invoices, %s %s in all\n", len(invoices), s, invoices[0].Currency)
	}
}

// writeTable prints rows in columns two spaces apart, indented, right-aligning the
// columns marked so (numbers).
func writeTable(w io.Writer, rows [][]string, right []bool) {
	widths := make([]int, len(right))
	for _, r := range rows {
		for i, cell := range r {
			widths[i] = max(widths[i], utf8.RuneCountInString(cell))
		}
	}
	for _, r := range rows {
		var b strings.Builder
		b.WriteString(" ")
		for i, cell := range r {
			pad := strings.Repeat(" ", widths[i]-utf8.RuneCountInString(cell))
			b.WriteString(" ")
			if right[i] {
				b.WriteString(pad + cell)
			} else {
				b.WriteString(cell + pad)
			}
			b.WriteString(" ")
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
}
