// Command limitr is the Limitr command-line tool: it validates policy documents, runs
// policy scenarios and previews invoices offline.
//
//	limitr validate policy.yaml ...
//	limitr test examples/scenarios
//	limitr invoice preview --policy policy.yaml --usage usage.csv
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"regexp"
	"runtime/debug"
	"strings"

	"github.com/limitr/limitr/internal/scenario"
	limitr "github.com/limitr/limitr/sdk/go"
)

// version is set at build time: -ldflags "-X main.version=v1.2.3".
var version = ""

// Exit codes.
const (
	exitOK    = 0
	exitFail  = 1 // an invalid document or a failing scenario
	exitUsage = 2 // bad flags or arguments, or an input file that does not parse
)

// command is one subcommand. New ones (dev, price, margin) are added to commands.
type command struct {
	name    string
	args    string
	summary string
	run     func(args []string, stdout, stderr io.Writer) int
}

// commandList is a function rather than a package variable because help refers back to it.
func commandList() []command {
	return []command{
		{"validate", "FILE...", "check policy documents and list every problem with its path", runValidate},
		{"test", "[-q] [-run REGEXP] PATH...", "run scenario files, or every *.yaml/*.yml under directories", runTest},
		{"dev", "[--addr ADDR] [--database-url URL] [--operator-token TOKEN]", "run the API and the worker in one process, for development", runDev},
		{"invoice", "preview --policy FILE --usage FILE|-", "preview invoices from a usage CSV, offline, with the server's rating code", runInvoice},
		{"simulate", "--to-file FILE [--from-version N] | --policy FILE --candidate FILE --usage FILE", "price a policy change on past usage: through the API, or offline from a usage CSV", runSimulate},
		{"admin", "bootstrap|create-key|gen-secret-key ...", "operator commands: create a tenant, create a key for a tenant, make a LIMITR_SECRET_KEY key", runAdmin},
		{"version", "", "print the version", runVersion},
		{"help", "[COMMAND]", "show this help", runHelp},
	}
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is the whole program, minus os.Exit.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	name := args[0]
	switch name {
	case "-h", "-help", "--help":
		name = "help"
	case "-version", "--version":
		name = "version"
	}
	for _, c := range commandList() {
		if c.name == name {
			return c.run(args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "limitr: unknown command %q\n\n", name)
	usage(stderr)
	return exitUsage
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Limitr: pricing and usage limits, enforced in your process.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Usage:")
	for _, c := range commandList() {
		fmt.Fprintf(w, "  limitr %-38s %s\n", strings.TrimSpace(c.name+" "+c.args), c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Exit status: 0 ok, 1 invalid document or failing scenario, 2 usage error or bad input.")
	fmt.Fprintln(w, "Scenario format: docs/scenarios.md.")
}

func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("limitr "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func runHelp(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stdout)
		return exitOK
	}
	for _, c := range commandList() {
		if c.name == args[0] {
			fmt.Fprintf(stdout, "Usage: limitr %s %s\n\n%s\n", c.name, c.args, c.summary)
			if c.name == "admin" {
				fmt.Fprintln(stdout, "\nCommands:")
				for _, a := range adminCommands() {
					fmt.Fprintf(stdout, "  limitr admin %s %s\n      %s\n", a.name, a.args, a.summary)
				}
			}
			if c.name == "invoice" {
				fmt.Fprintln(stdout, "\nCommands:")
				for _, a := range invoiceCommands() {
					fmt.Fprintf(stdout, "  limitr invoice %s %s\n      %s\n", a.name, a.args, a.summary)
				}
				fmt.Fprintln(stdout, "\n"+usageFileHelp)
			}
			if c.name == "simulate" {
				fmt.Fprintln(stdout, "\n"+simulateHelp)
			}
			if c.name == "test" {
				fmt.Fprintln(stdout, "\nStep kinds:")
				for _, k := range scenario.Kinds() {
					fmt.Fprintf(stdout, "  %-22s %s\n", k.Name, k.Doc)
				}
			}
			return exitOK
		}
	}
	fmt.Fprintf(stderr, "limitr help: unknown command %q\n", args[0])
	usage(stderr)
	return exitUsage
}

func runVersion(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		fmt.Fprintln(stderr, "usage: limitr version")
		return exitUsage
	}
	v := version
	if v == "" {
		v = "(devel)"
		if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
			v = bi.Main.Version
		}
	}
	fmt.Fprintf(stdout, "limitr %s\n", v)
	return exitOK
}

// runValidate loads each document and prints `FILE: ok` or one line per problem.
func runValidate(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("validate", stderr)
	fs.Usage = func() { fmt.Fprintln(stderr, "usage: limitr validate FILE...") }
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return exitUsage
	}
	code := exitOK
	for _, file := range fs.Args() {
		problems := validateFile(file)
		if len(problems) == 0 {
			fmt.Fprintf(stdout, "%s: ok\n", file)
			continue
		}
		code = exitFail
		for _, p := range problems {
			fmt.Fprintf(stdout, "%s: %s\n", file, p)
		}
	}
	return code
}

func validateFile(file string) []string {
	if _, err := os.Stat(file); err != nil {
		return []string{fileError(err)}
	}
	p, err := limitr.Open(file)
	if err == nil {
		_ = p.Close(context.Background())
		return nil
	}
	return problemLines(err, file)
}

// fileError is a file error without the path the caller already shows.
func fileError(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// problemLines lists every problem of a rejected policy document, with its path and
// line.
func problemLines(err error, file string) []string {
	var ve *limitr.ValidationError
	if !errors.As(err, &ve) || len(ve.Problems) == 0 {
		return []string{strings.TrimPrefix(strings.TrimPrefix(err.Error(), "limitr: "), file+": ")}
	}
	out := make([]string, 0, len(ve.Problems))
	for _, pr := range ve.Problems {
		s := pr.String()
		if pr.Line > 0 {
			s += fmt.Sprintf(" (line %d)", pr.Line)
		}
		out = append(out, s)
	}
	return out
}

// runTest runs scenarios and prints per-step results and `N passed, M failed`.
func runTest(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("test", stderr)
	quiet := fs.Bool("q", false, "print only failing steps and the verdicts")
	filter := fs.String("run", "", "run only scenarios whose name or file matches this regular expression")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: limitr test [-q] [-run REGEXP] PATH...")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return exitUsage
	}
	var re *regexp.Regexp
	if *filter != "" {
		var err error
		if re, err = regexp.Compile(*filter); err != nil {
			fmt.Fprintf(stderr, "limitr test: -run: %v\n", err)
			return exitUsage
		}
	}
	files, err := scenario.Discover(fs.Args())
	if err != nil {
		fmt.Fprintf(stderr, "limitr test: %v\n", err)
		return exitUsage
	}
	if len(files) == 0 {
		fmt.Fprintf(stderr, "limitr test: no scenario files (*.yaml, *.yml) under %s\n", strings.Join(fs.Args(), " "))
		return exitUsage
	}
	ctx := context.Background()
	passed, failed, pending := 0, 0, 0
	for _, f := range files {
		var res *scenario.Result
		s, err := scenario.Load(f)
		if err != nil {
			if re != nil && !re.MatchString(f) {
				continue
			}
			res = &scenario.Result{File: f, Err: err}
		} else {
			if re != nil && !re.MatchString(s.Name) && !re.MatchString(f) {
				continue
			}
			res = s.Run(ctx)
		}
		res.Write(stdout, scenario.Report{Quiet: *quiet})
		switch {
		case !res.Passed():
			failed++
		case res.Pending():
			pending++
		default:
			passed++
		}
	}
	if pending > 0 {
		fmt.Fprintf(stdout, "%d pending (known engine gaps, failing as expected)\n", pending)
	}
	fmt.Fprintf(stdout, "%d passed, %d failed\n", passed, failed)
	if failed > 0 {
		return exitFail
	}
	return exitOK
}
