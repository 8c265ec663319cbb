package scenario

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	limitr "github.com/limitr/limitr/sdk/go"
)

// Clock is the scenario's injected time source.
type Clock struct{ now time.Time }

// Now returns the current scenario time.
func (c *Clock) Now() time.Time { return c.now }

// Advance moves the clock forward (or back, for a negative d).
func (c *Clock) Advance(d time.Duration) { c.now = c.now.Add(d) }

// Set moves the clock to t.
func (c *Clock) Set(t time.Time) { c.now = t }

// Env is what a running step sees.
type Env struct {
	Ctx      context.Context
	Policy   *limitr.Policy
	Clock    *Clock
	Scenario *Scenario
	// Events are the events emitted so far by the running step.
	Events []limitr.Event
	// LastEvents are the events of the most recent acting (non-assertion) step.
	LastEvents []limitr.Event
	// Holds are the reservations named by reserve steps (`as: name`), for settle and
	// release.
	Holds map[string]limitr.Hold
}

// open loads the scenario's policy document on the scenario's clock.
func (s *Scenario) open(clock *Clock) (*limitr.Policy, error) {
	if s.PolicyPath != "" {
		return limitr.Open(s.PolicyPath, limitr.WithClock(clock.Now))
	}
	return limitr.New(s.PolicyDoc, limitr.WithClock(clock.Now), limitr.WithFormat(limitr.FormatYAML))
}

// attach makes p the policy the steps run against, recording its events.
func (env *Env) attach(p *limitr.Policy) {
	env.Policy = p
	p.AddHandler("scenario", func(ev limitr.Event) { env.Events = append(env.Events, ev) })
}

// StepResult is the outcome of one step.
type StepResult struct {
	Step   *Step
	Passed bool
	// Failure explains a failed step; nil when it passed.
	Failure *Mismatch
}

// Result is the outcome of one scenario.
type Result struct {
	Scenario *Scenario
	File     string
	// Err is a problem that stopped the scenario before its steps ran (an invalid
	// scenario file or policy document).
	Err   error
	Steps []StepResult
}

// Failed counts failed steps.
func (r *Result) Failed() int {
	n := 0
	for _, s := range r.Steps {
		if !s.Passed {
			n++
		}
	}
	return n
}

// Passed reports whether the scenario passed. A pending scenario passes when it
// fails (the known gap is still there) and fails when every step passes.
func (r *Result) Passed() bool {
	if r.Err != nil {
		return false
	}
	ok := r.Failed() == 0
	if r.Scenario.Pending != "" {
		return !ok
	}
	return ok
}

// Pending reports whether the scenario is marked pending.
func (r *Result) Pending() bool { return r.Err == nil && r.Scenario.Pending != "" }

// RunFile loads and runs a scenario file.
func RunFile(ctx context.Context, path string) *Result {
	s, err := Load(path)
	if err != nil {
		return &Result{File: path, Err: err}
	}
	return s.Run(ctx)
}

// Run runs every step, going on after failures so the output shows all of them.
func (s *Scenario) Run(ctx context.Context) *Result {
	res := &Result{Scenario: s, File: s.File}
	clock := &Clock{now: s.Start}
	pol, err := s.open(clock)
	if err != nil {
		res.Err = fmt.Errorf("policy: %w", err)
		return res
	}
	env := &Env{Ctx: ctx, Clock: clock, Scenario: s, Holds: map[string]limitr.Hold{}}
	env.attach(pol)
	// save_and_restore swaps the policy; close whichever is current at the end.
	defer func() { env.Policy.Close(ctx) }()
	for _, st := range s.Steps {
		res.Steps = append(res.Steps, runStep(env, st))
	}
	return res
}

func runStep(env *Env, st *Step) (out StepResult) {
	out.Step = st
	kind := kinds[st.Kind]
	env.Events = nil
	defer func() {
		if p := recover(); p != nil {
			out.Passed, out.Failure = false, &Mismatch{Reason: fmt.Sprintf("panic: %v", p)}
		}
		if !kind.Assertion {
			env.LastEvents = env.Events
		}
	}()
	got, err := st.Action.Run(env)
	fail := func(m *Mismatch) StepResult {
		out.Failure = m
		return out
	}
	var mm *Mismatch
	switch {
	case errors.As(err, &mm):
		return fail(mm)
	case st.ExpectError != "":
		if err == nil {
			return fail(&Mismatch{Reason: "expected an error", Expected: "error containing " + quote(st.ExpectError), Got: "no error, result " + describe(got)})
		}
		if !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(st.ExpectError)) {
			return fail(&Mismatch{Reason: "wrong error", Expected: "error containing " + quote(st.ExpectError), Got: "error " + quote(err.Error())})
		}
	case err != nil:
		return fail(&Mismatch{Reason: "unexpected error", Expected: expectedText(st), Got: "error " + quote(err.Error())})
	case st.Expect != nil:
		if b, ok := got.(bool); !ok || b != *st.Expect {
			return fail(&Mismatch{Reason: "wrong decision", Expected: fmt.Sprint(*st.Expect), Got: describe(got)})
		}
	}
	if st.ExpectEvents != nil {
		if m := matchEvents(st.ExpectEvents, env.Events); m != nil {
			return fail(m)
		}
	}
	if st.IncludeEvents != nil {
		if m := includeEvents(st.IncludeEvents, env.Events); m != nil {
			return fail(m)
		}
	}
	out.Passed = true
	return out
}

func expectedText(st *Step) string {
	if st.Expect != nil {
		return fmt.Sprint(*st.Expect)
	}
	return "no error"
}

func describe(v any) string {
	if v == nil {
		return "(none)"
	}
	return fmt.Sprint(v)
}

func quote(s string) string { return fmt.Sprintf("%q", s) }

// Report options.
type Report struct {
	// Quiet prints only failing steps and scenario verdicts.
	Quiet bool
}

// Write prints one line per step (PASS/FAIL) with a diff under each failure, then
// the scenario's verdict.
func (r *Result) Write(w io.Writer, opt Report) {
	name := r.File
	if r.Scenario != nil {
		name = r.Scenario.Name
	}
	fmt.Fprintf(w, "=== %s (%s)\n", name, r.File)
	if r.Err != nil {
		for _, line := range strings.Split(r.Err.Error(), "\n") {
			fmt.Fprintf(w, "    %s\n", strings.TrimSpace(line))
		}
		fmt.Fprintf(w, "--- FAIL %s: could not run\n", name)
		return
	}
	for _, sr := range r.Steps {
		if opt.Quiet && sr.Passed {
			continue
		}
		st := sr.Step
		verdict := "PASS"
		if !sr.Passed {
			verdict = "FAIL"
		}
		line := fmt.Sprintf("  %s  step %d (line %d) %s: %s", verdict, st.Index, st.Line, st.Kind, st.Summary)
		if st.Note != "" {
			line += "  # " + st.Note
		}
		fmt.Fprintln(w, line)
		if sr.Failure != nil {
			writeFailure(w, sr.Failure)
		}
	}
	failed := r.Failed()
	switch {
	case r.Scenario.Pending != "" && failed > 0:
		fmt.Fprintf(w, "--- PENDING %s: %d of %d steps fail as expected (%s)\n", name, failed, len(r.Steps), r.Scenario.Pending)
	case r.Scenario.Pending != "":
		fmt.Fprintf(w, "--- FAIL %s: marked pending (%s) but every step passes; remove `pending`\n", name, r.Scenario.Pending)
	case failed > 0:
		fmt.Fprintf(w, "--- FAIL %s: %d of %d steps failed\n", name, failed, len(r.Steps))
	default:
		fmt.Fprintf(w, "--- PASS %s (%d steps)\n", name, len(r.Steps))
	}
}

func writeFailure(w io.Writer, m *Mismatch) {
	for _, line := range strings.Split(m.Reason, "\n") {
		fmt.Fprintf(w, "          %s\n", line)
	}
	if m.Expected == "" && m.Got == "" {
		return
	}
	block := func(label, text string) {
		lines := strings.Split(text, "\n")
		if len(lines) == 1 {
			fmt.Fprintf(w, "          %s %s\n", label, text)
			return
		}
		fmt.Fprintf(w, "          %s\n", label)
		for _, l := range lines {
			fmt.Fprintf(w, "            %s\n", l)
		}
	}
	block("- expected:", m.Expected)
	block("+ got:     ", m.Got)
}

// Discover expands paths into scenario files: files are taken as given, and
// directories are walked for *.yaml and *.yml files (skipping hidden directories
// and testdata). The result is sorted and deduplicated.
func Discover(paths []string) ([]string, error) {
	var out []string
	for _, p := range paths {
		info, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		if !info.IsDir() {
			out = append(out, p)
			continue
		}
		err = filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() {
				if path != p && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata") {
					return filepath.SkipDir
				}
				return nil
			}
			if ext := filepath.Ext(path); ext == ".yaml" || ext == ".yml" {
				out = append(out, path)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}
