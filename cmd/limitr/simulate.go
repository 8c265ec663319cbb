package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/limitr/limitr/internal/analytics/replay"
	"github.com/limitr/limitr/internal/billing"
	"github.com/limitr/limitr/internal/num"
)

// simulateHelp explains both modes, for `limitr simulate -h`.
const simulateHelp = `usage:
  limitr simulate --to-file FILE | --to-version N [--from-version N] [--env ENV] [--api URL] [--key KEY]
  limitr simulate --policy FILE --candidate FILE --usage FILE|- [--currency USD] [--rune-rate 1]

Prices a pricing change before it ships: the usage of a window, billed under the current
policy and under the candidate, per customer and in total (revenue, cost, margin), with
the hard limits the candidate would hit and the grants that would run out.

Against the API (an admin key; --api or LIMITR_API_URL, --key or LIMITR_API_KEY, --env or
LIMITR_ENVIRONMENT) the environment's committed usage is replayed by the worker; the
baseline is the active version unless --from-version names another. Offline, the usage
comes from a CSV (the format of limitr invoice preview, see limitr help invoice).

The window (--from and --to, RFC 3339) replays each customer's billing periods that end
in it; by default the last full calendar month (API) or the month up to the end of the
latest billing period in the file (offline). Against the API, a window reaching the
present (--to now or later) also replays each customer's period in progress, rated as
its upcoming invoice is.`

// simulateOptions are the flags of both modes.
type simulateOptions struct {
	// API mode.
	api, key, env, toFile  string
	fromVersion, toVersion int
	timeout                time.Duration
	// Offline mode.
	policy, candidate, usage string
	currency, runeRate       string
	// Both.
	from, to string
	json     bool
}

func (o *simulateOptions) flags(fs *flag.FlagSet) {
	fs.StringVar(&o.api, "api", os.Getenv("LIMITR_API_URL"), "the control plane's URL (env LIMITR_API_URL)")
	fs.StringVar(&o.key, "key", os.Getenv("LIMITR_API_KEY"), "an admin key (env LIMITR_API_KEY)")
	env := os.Getenv("LIMITR_ENVIRONMENT")
	if env == "" {
		env = "production"
	}
	fs.StringVar(&o.env, "env", env, "the environment (env LIMITR_ENVIRONMENT)")
	fs.IntVar(&o.fromVersion, "from-version", 0, "the baseline version (default: the active one)")
	fs.IntVar(&o.toVersion, "to-version", 0, "a saved version to simulate")
	fs.StringVar(&o.toFile, "to-file", "", "a policy document to simulate (JSON, YAML or TOML)")
	fs.DurationVar(&o.timeout, "timeout", 5*time.Minute, "how long to wait for the simulation")
	fs.StringVar(&o.policy, "policy", "", "offline: the current policy document")
	fs.StringVar(&o.candidate, "candidate", "", "offline: the candidate policy document")
	fs.StringVar(&o.usage, "usage", "", "offline: the usage CSV, - for standard input")
	fs.StringVar(&o.currency, "currency", "USD", "offline: the ISO 4217 currency")
	fs.StringVar(&o.runeRate, "rune-rate", "1", "offline: the value of one rune in the currency")
	fs.StringVar(&o.from, "from", "", "the window's start, RFC 3339")
	fs.StringVar(&o.to, "to", "", "the window's end, RFC 3339")
	fs.BoolVar(&o.json, "json", false, "print the report as JSON (the API's simulation result)")
}

// window parses --from and --to; ok is false when neither is given.
func (o *simulateOptions) window() (w replay.Window, ok bool, err error) {
	if o.from == "" && o.to == "" {
		return w, false, nil
	}
	if o.from == "" || o.to == "" {
		return w, false, errors.New("--from and --to go together")
	}
	if w.From, err = time.Parse(time.RFC3339, o.from); err != nil {
		return w, false, fmt.Errorf("--from: %q is not an RFC 3339 time, like 2026-02-01T00:00:00Z", o.from)
	}
	if w.To, err = time.Parse(time.RFC3339, o.to); err != nil {
		return w, false, fmt.Errorf("--to: %q is not an RFC 3339 time, like 2026-03-01T00:00:00Z", o.to)
	}
	if !w.From.Before(w.To) {
		return w, false, errors.New("--to must be after --from")
	}
	return w, true, nil
}

func runSimulate(args []string, stdout, stderr io.Writer) int {
	const name = "limitr simulate"
	fs := newFlags("simulate", stderr)
	var o simulateOptions
	o.flags(fs)
	fs.Usage = func() {
		fmt.Fprintln(stderr, simulateHelp+"\n\nflags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	offline := o.policy != "" || o.candidate != "" || o.usage != ""
	online := o.toFile != "" || o.toVersion != 0 || o.fromVersion != 0
	switch {
	case fs.NArg() > 0:
		fmt.Fprintln(stderr, name+": unexpected arguments:", fs.Args())
		return exitUsage
	case offline && online:
		fmt.Fprintln(stderr, name+": --policy/--candidate/--usage (offline) and --to-file/--to-version/--from-version (API) do not mix")
		return exitUsage
	case offline:
		return simulateOffline(name, o, stdout, stderr)
	case online:
		return simulateAPI(name, o, stdout, stderr)
	}
	fs.Usage()
	return exitUsage
}

// simulateOffline replays a usage CSV through two policy files.
func simulateOffline(name string, o simulateOptions, stdout, stderr io.Writer) int {
	if o.policy == "" || o.candidate == "" || o.usage == "" {
		fmt.Fprintln(stderr, name+": offline, --policy, --candidate and --usage are all required")
		return exitUsage
	}
	opts, err := previewFlags(o.currency, o.runeRate, "", "text")
	if err == nil {
		_, _, err = o.window()
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return exitUsage
	}
	var in replay.Input
	for _, f := range []struct {
		file string
		dst  *replay.Policy
	}{{o.policy, &in.Current}, {o.candidate, &in.Candidate}} {
		p, problems := loadPolicyDoc(f.file)
		for _, pr := range problems {
			fmt.Fprintf(stderr, "%s: %s: %s\n", name, f.file, pr)
		}
		if len(problems) > 0 {
			return exitFail
		}
		f.dst.Policy = p
	}
	customers, err := readUsage(o.usage)
	if err == nil {
		in.Customers, err = replayCustomers(usageName(o.usage), in.Current, customers)
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return exitUsage
	}
	in.Currency, in.RuneRate = opts.currency, opts.runeRate
	w, ok, _ := o.window()
	if !ok {
		w = usageWindow(in.Current, customers)
	}
	in.Window = w
	rep, err := replay.Run(in)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return exitFail
	}
	return printReport(stdout, rep, o.json, o.candidate, o.policy)
}

// replayCustomers converts a usage file's customers, checked against the current
// policy (plans and entitlements exist), as the invoice preview bills them.
func replayCustomers(file string, cur replay.Policy, cs []*usageCustomer) ([]billing.ReplayCustomer, error) {
	out := make([]billing.ReplayCustomer, 0, len(cs))
	for _, c := range cs {
		if err := checkAgainstPolicy(file, cur.Policy, c); err != nil {
			return nil, err
		}
		out = append(out, billing.ReplayCustomer{Meters: c.meters, Subject: billing.Subject{ID: c.id, ResolvedPlan: c.plan,
			Location: c.loc, Anchor: c.created, CreatedAt: c.created, Plans: []billing.PlanSpan{{Plan: c.plan, From: c.created}}}})
	}
	return out, nil
}

// usageWindow is the offline default: the month up to the end of the latest billing
// period holding usage in the file.
func usageWindow(cur replay.Policy, cs []*usageCustomer) replay.Window {
	var to time.Time
	for _, c := range cs {
		loc := c.loc
		if loc == nil {
			loc = cur.Policy.Location
		}
		for _, m := range c.meters {
			if end := billing.PeriodAt(m.PeriodStart, c.created, c.created, loc).End; end.After(to) {
				to = end
			}
		}
	}
	return replay.Window{From: to.AddDate(0, -1, 0), To: to}
}

// printReport writes the report as a table (or JSON); candidate and current name the
// policies in the heading.
func printReport(w io.Writer, rep *replay.Report, asJSON bool, candidate, current string) int {
	if asJSON {
		out, _ := json.MarshalIndent(rep, "", "  ")
		fmt.Fprintf(w, "%s\n", out)
		return exitOK
	}
	fmt.Fprintf(w, "Replay of %s against %s, billing periods ending %s to %s, in %s\n\n", candidate, current,
		rep.Window.From.Format(time.RFC3339), rep.Window.To.Format(time.RFC3339), rep.Currency)
	rows := [][]string{{"CUSTOMER", "PLAN", "REVENUE", "CANDIDATE", "CHANGE", "COST", "CANDIDATE", "MARGIN", "CANDIDATE", "CHANGE"}}
	row := func(id, plan string, now, then, diff replay.Figures) []string {
		return []string{id, plan, now.Revenue, then.Revenue, signedMoney(diff.Revenue), now.Cost, then.Cost, now.Margin, then.Margin, signedMoney(diff.Margin)}
	}
	for _, c := range rep.Customers {
		rows = append(rows, row(c.Customer, c.Plan, c.Current, c.Candidate, c.Difference))
	}
	t := rep.Totals
	rows = append(rows, row(fmt.Sprintf("Total (%d)", t.Customers), "", t.Current, t.Candidate, t.Difference))
	writeTable(w, rows, []bool{false, false, true, true, true, true, true, true, true, true})
	writeEnforcement(w, rep)
	return exitOK
}

func writeEnforcement(w io.Writer, rep *replay.Report) {
	t := rep.Totals
	fmt.Fprintln(w, "\nEnforcement under the candidate:")
	fmt.Fprintf(w, "  %d customers reach a hard limit, %d would be denied usage", t.CustomersHittingHardLimits, t.CustomersDenied)
	for i, d := range t.DeniedUnits {
		sep := ", "
		if i == 0 {
			sep = ": "
		}
		fmt.Fprintf(w, "%s%s %s denied", sep, d.Entitlement, d.Units)
	}
	fmt.Fprintf(w, "\n  %d customers run out of grants", t.CustomersOutOfGrants)
	for i, g := range t.GrantShortfall {
		sep := ", "
		if i == 0 {
			sep = ": "
		}
		fmt.Fprintf(w, "%s%s %s short", sep, g.Credit, g.Units)
	}
	fmt.Fprintln(w)
	for _, c := range rep.Customers {
		for _, h := range c.HardLimits {
			fmt.Fprintf(w, "  %s: %s from %s: %s used, hard limit %s, %s denied\n", c.Customer, h.Entitlement,
				h.PeriodStart.Format(time.RFC3339), h.Units, h.Limit, h.Denied)
		}
		for _, g := range c.Grants {
			fmt.Fprintf(w, "  %s: %s grants in the period from %s: %s used, %s given, %s billed instead\n", c.Customer, g.Credit,
				g.PeriodStart.Format(time.RFC3339), g.Covered, g.Available, g.Shortfall)
		}
	}
}

// signedMoney writes a difference with its sign.
func signedMoney(s string) string {
	d, err := num.Parse(s)
	if err != nil || !d.IsPos() {
		return s
	}
	return "+" + s
}
