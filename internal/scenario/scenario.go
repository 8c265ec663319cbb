// Package scenario reads and runs policy scenarios: YAML files that load a policy
// document, drive customers through it on an injected clock and assert what the
// engine answers. A pricing engineer writes one to pin down how a plan behaves
// ("a starter customer is cut off at 500k input tokens and back the next day"), and
// `limitr test` runs them.
//
// A scenario file looks like:
//
//	name: starter customers hit their daily input limit
//	policy: ../policies/quickstart-ai.json   # relative to this file
//	start: 2026-01-01T00:00:00Z
//	steps:
//	  - create_customer: { id: u1, plan: starter }
//	  - allow: { customer: u1, entitlement: ai-chat-input, amount: 500000 }
//	    expect: true
//	    expect_events:
//	      - { type: meter-changed, meter: { value: 500000 } }
//	  - advance: 1day
//	  - expect_value: { customer: u1, entitlement: ai-chat-input, equals: 0 }
//
// Each step is a mapping with exactly one step kind (see Kinds) and optional
// modifiers: expect, expect_error, expect_events and note. docs/scenarios.md is the
// reference.
package scenario

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// DefaultStart is the clock's starting instant when a scenario names none.
var DefaultStart = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// Scenario is a parsed, validated scenario file.
type Scenario struct {
	// File is the path the scenario was read from (as given).
	File string
	Name string
	// Description is free text shown nowhere but kept for tools.
	Description string
	// Pending, when set, says why the scenario is expected to fail (a known engine
	// gap). Its failures do not fail the run; if it starts passing, the run fails so
	// the marker gets removed.
	Pending string
	// PolicyPath is the policy document's path, resolved against the scenario's
	// directory; empty when the policy is inline.
	PolicyPath string
	// PolicyDoc is an inline policy document (YAML), when PolicyPath is empty.
	PolicyDoc []byte
	Start     time.Time
	Steps     []*Step
}

// Step is one parsed step.
type Step struct {
	// Index is the 1-based position of the step in the file.
	Index int
	Line  int
	Kind  string
	// Summary is the step's arguments rendered on one line, for output.
	Summary string
	Note    string
	Action  Action
	// Expect is the expected result of a decision step (allow, check, ...).
	Expect *bool
	// ExpectError is a substring the step's error must contain.
	ExpectError string
	// ExpectEvents, when non-nil, lists the events the step must emit, in order.
	ExpectEvents []EventExpectation
	// IncludeEvents lists events the step must emit in this order, others allowed
	// around them.
	IncludeEvents []EventExpectation
}

// Problem is one thing wrong with a scenario file.
type Problem struct {
	File    string
	Line    int
	Step    int    // 1-based; 0 for the file's top level
	Kind    string // the step kind, when known
	Field   string // dotted path of the offending field inside the step or file
	Message string
}

func (p Problem) String() string {
	var b strings.Builder
	b.WriteString(p.File)
	if p.Line > 0 {
		fmt.Fprintf(&b, ":%d", p.Line)
	}
	b.WriteString(": ")
	if p.Step > 0 {
		fmt.Fprintf(&b, "step %d", p.Step)
		if p.Kind != "" {
			fmt.Fprintf(&b, " (%s)", p.Kind)
		}
		b.WriteString(": ")
	}
	if p.Field != "" {
		b.WriteString(p.Field)
		b.WriteString(": ")
	}
	b.WriteString(p.Message)
	return b.String()
}

// LoadError lists every problem found in a scenario file.
type LoadError struct {
	File     string
	Problems []Problem
}

func (e *LoadError) Error() string {
	if len(e.Problems) == 1 {
		return "invalid scenario: " + e.Problems[0].String()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "invalid scenario %s: %d problems:", e.File, len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("\n  ")
		b.WriteString(p.String())
	}
	return b.String()
}

// fieldError is an error located at a field (and line) inside a step.
type fieldError struct {
	Field string
	Line  int
	Err   error
}

func (e *fieldError) Error() string {
	if e.Field == "" {
		return e.Err.Error()
	}
	return e.Field + ": " + e.Err.Error()
}

func (e *fieldError) Unwrap() error { return e.Err }

// fieldErr builds a located error; n may be nil.
func fieldErr(field string, n *yaml.Node, format string, args ...any) error {
	line := 0
	if n != nil {
		line = n.Line
	}
	return &fieldError{Field: field, Line: line, Err: fmt.Errorf(format, args...)}
}

// within prefixes the field path of located errors with parent (each of them, for
// joined errors).
func within(parent string, err error) error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var errs []error
		for _, e := range j.Unwrap() {
			errs = append(errs, within(parent, e))
		}
		return errors.Join(errs...)
	}
	var fe *fieldError
	if errors.As(err, &fe) {
		f := parent
		if fe.Field != "" {
			f = parent + "." + fe.Field
		}
		return &fieldError{Field: f, Line: fe.Line, Err: fe.Err}
	}
	return &fieldError{Field: parent, Err: err}
}

// Modifiers are the step keys that are not step kinds.
var modifiers = []string{"expect", "expect_error", "expect_events", "expect_events_include", "note"}

// topLevelFields are the keys a scenario file may have.
var topLevelFields = []string{"name", "description", "policy", "start", "pending", "steps"}

// Load reads and validates a scenario file.
func Load(path string) (*Scenario, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(data, path)
}

// Parse validates a scenario document read from file (used for relative paths and
// messages). Every problem is reported, as a *LoadError.
func Parse(data []byte, file string) (*Scenario, error) {
	le := &LoadError{File: file}
	add := func(line, step int, kind, field, format string, args ...any) {
		le.Problems = append(le.Problems, Problem{File: file, Line: line, Step: step, Kind: kind, Field: field, Message: fmt.Sprintf(format, args...)})
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		add(0, 0, "", "", "%s", strings.TrimPrefix(err.Error(), "yaml: "))
		return nil, le
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		add(0, 0, "", "", "empty scenario")
		return nil, le
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		add(root.Line, 0, "", "", "a scenario is a mapping with name, policy and steps")
		return nil, le
	}
	s := &Scenario{File: file, Start: DefaultStart}
	fields := map[string]*yaml.Node{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if !slices.Contains(topLevelFields, k.Value) {
			add(k.Line, 0, "", k.Value, "unknown field%s (known: %s)", suggest(k.Value, topLevelFields), strings.Join(topLevelFields, ", "))
			continue
		}
		if _, dup := fields[k.Value]; dup {
			add(k.Line, 0, "", k.Value, "given twice")
		}
		fields[k.Value] = v
	}
	str := func(field string) string {
		n := fields[field]
		if n == nil {
			return ""
		}
		if n.Kind != yaml.ScalarNode {
			add(n.Line, 0, "", field, "must be a string")
			return ""
		}
		return n.Value
	}
	s.Name = str("name")
	s.Description = strings.TrimSpace(str("description"))
	s.Pending = strings.TrimSpace(str("pending"))
	if s.Name == "" {
		s.Name = strings.TrimSuffix(filepath.Base(file), filepath.Ext(file))
	}
	if n := fields["start"]; n != nil {
		var t Time
		if err := t.UnmarshalYAML(n); err != nil {
			add(n.Line, 0, "", "start", "%v", err)
		} else {
			s.Start = t.Time
		}
	}
	switch n := fields["policy"]; {
	case n == nil:
		add(root.Line, 0, "", "policy", "required: the path of a policy document (relative to this file) or an inline policy mapping")
	case n.Kind == yaml.ScalarNode && n.Value != "":
		p := n.Value
		if !filepath.IsAbs(p) {
			p = filepath.Join(filepath.Dir(file), p)
		}
		s.PolicyPath = p
	case n.Kind == yaml.MappingNode:
		// Inline: the content of the document's top-level policy key.
		wrapped := &yaml.Node{Kind: yaml.MappingNode, Content: []*yaml.Node{{Kind: yaml.ScalarNode, Value: "policy"}, n}}
		out, err := yaml.Marshal(wrapped)
		if err != nil {
			add(n.Line, 0, "", "policy", "%v", err)
		}
		s.PolicyDoc = out
	default:
		add(n.Line, 0, "", "policy", "must be a file path or an inline policy mapping")
	}
	stepsNode := fields["steps"]
	switch {
	case stepsNode == nil:
		add(root.Line, 0, "", "steps", "required: a list of steps")
	case stepsNode.Kind != yaml.SequenceNode:
		add(stepsNode.Line, 0, "", "steps", "must be a list of steps")
	default:
		for i, sn := range stepsNode.Content {
			st, probs := parseStep(sn, i+1, file)
			le.Problems = append(le.Problems, probs...)
			if st != nil {
				s.Steps = append(s.Steps, st)
			}
		}
		if len(stepsNode.Content) == 0 {
			add(stepsNode.Line, 0, "", "steps", "no steps")
		}
	}
	if len(le.Problems) > 0 {
		return nil, le
	}
	return s, nil
}

// parseStep validates one step node.
func parseStep(n *yaml.Node, index int, file string) (*Step, []Problem) {
	var probs []Problem
	st := &Step{Index: index, Line: n.Line}
	add := func(line int, field, format string, args ...any) {
		if line == 0 {
			line = n.Line
		}
		probs = append(probs, Problem{File: file, Line: line, Step: index, Kind: st.Kind, Field: field, Message: fmt.Sprintf(format, args...)})
	}
	var addErr func(line int, field string, err error)
	addErr = func(line int, field string, err error) {
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				addErr(line, field, e)
			}
			return
		}
		var fe *fieldError
		if errors.As(err, &fe) {
			if fe.Line > 0 {
				line = fe.Line
			}
			f := field
			if fe.Field != "" {
				if f != "" {
					f += "."
				}
				f += fe.Field
			}
			add(line, f, "%v", fe.Err)
			return
		}
		add(line, field, "%v", err)
	}
	if n.Kind != yaml.MappingNode {
		add(n.Line, "", "a step is a mapping with one step kind, such as `- allow: {customer: c, entitlement: e, amount: 1}`")
		return nil, probs
	}
	var kindKey, kindVal *yaml.Node
	mods := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		switch {
		case slices.Contains(modifiers, k.Value):
			if _, dup := mods[k.Value]; dup {
				add(k.Line, k.Value, "given twice")
			}
			mods[k.Value] = v
		case kinds[k.Value] != nil:
			if kindKey == nil {
				st.Kind = k.Value
			}
			if kindKey != nil {
				add(k.Line, "", "two step kinds (%s and %s) in one step; split them into two steps", kindKey.Value, k.Value)
				continue
			}
			kindKey, kindVal = k, v
		default:
			add(k.Line, "", "unknown step kind %q%s (known kinds: %s; modifiers: %s)", k.Value, suggest(k.Value, KindNames()), strings.Join(KindNames(), ", "), strings.Join(modifiers, ", "))
		}
	}
	if kindKey == nil && mods["expect_events"] != nil {
		// A standalone expect_events step checks the previous acting step's events.
		for i := 0; i < len(n.Content); i += 2 {
			if n.Content[i].Value == "expect_events" {
				kindKey, kindVal = n.Content[i], n.Content[i+1]
			}
		}
		delete(mods, "expect_events")
	}
	if kindKey == nil {
		if len(probs) == 0 {
			add(n.Line, "", "no step kind (known kinds: %s)", strings.Join(KindNames(), ", "))
		}
		return nil, probs
	}
	st.Kind = kindKey.Value
	k := kinds[st.Kind]
	st.Summary = flow(kindVal, 100)
	act, err := k.parse(kindVal)
	if err != nil {
		addErr(kindVal.Line, "", err)
	}
	st.Action = act
	if v := mods["note"]; v != nil {
		if v.Kind != yaml.ScalarNode {
			add(v.Line, "note", "must be a string")
		}
		st.Note = v.Value
	}
	if v := mods["expect"]; v != nil {
		if k.Returns != ReturnsBool {
			add(v.Line, "expect", "%s has no true/false result; %s", st.Kind, k.expectHint())
		} else {
			var b bool
			if v.Kind != yaml.ScalarNode || v.Decode(&b) != nil {
				add(v.Line, "expect", "must be true or false, got %s", flow(v, 40))
			} else {
				st.Expect = &b
			}
		}
	}
	if v := mods["expect_error"]; v != nil {
		if k.Assertion {
			add(v.Line, "expect_error", "%s checks state and has no error to expect; use its error field", st.Kind)
		} else if v.Kind != yaml.ScalarNode || v.Value == "" {
			add(v.Line, "expect_error", "must be a non-empty string (a substring of the expected error)")
		} else {
			st.ExpectError = v.Value
		}
		if st.Expect != nil {
			add(v.Line, "expect_error", "expect and expect_error exclude each other")
		}
	}
	if v := mods["expect_events"]; v != nil {
		if k.Assertion {
			add(v.Line, "expect_events", "%s changes nothing and emits no events; put expect_events on the step that acts", st.Kind)
		} else {
			evs, err := parseEventExpectations(v)
			if err != nil {
				addErr(v.Line, "expect_events", err)
			}
			st.ExpectEvents = evs
		}
	}
	if v := mods["expect_events_include"]; v != nil {
		if k.Assertion {
			add(v.Line, "expect_events_include", "%s changes nothing and emits no events; put expect_events_include on the step that acts", st.Kind)
		} else {
			evs, err := parseEventExpectations(v)
			if err != nil {
				addErr(v.Line, "expect_events_include", err)
			}
			st.IncludeEvents = evs
		}
	}
	if len(probs) > 0 {
		return nil, probs
	}
	return st, nil
}

// suggest returns ` (did you mean "x"?)` for a close known name.
func suggest(got string, known []string) string {
	best, bestD := "", 3
	for _, k := range known {
		if d := editDistance(got, k); d < bestD {
			best, bestD = k, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// flow renders a node on one line in YAML flow style, cut at max runes.
func flow(n *yaml.Node, max int) string {
	var b strings.Builder
	writeFlow(&b, n)
	s := b.String()
	if r := []rune(s); len(r) > max {
		return string(r[:max-1]) + "…"
	}
	return s
}

func writeFlow(b *strings.Builder, n *yaml.Node) {
	if n == nil {
		return
	}
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) > 0 {
			writeFlow(b, n.Content[0])
		}
	case yaml.AliasNode:
		writeFlow(b, n.Alias)
	case yaml.ScalarNode:
		if n.Value == "" || strings.ContainsAny(n.Value, ",:{}[]#\"'\n") {
			fmt.Fprintf(b, "%q", n.Value)
		} else {
			b.WriteString(n.Value)
		}
	case yaml.SequenceNode:
		b.WriteByte('[')
		for i, c := range n.Content {
			if i > 0 {
				b.WriteString(", ")
			}
			writeFlow(b, c)
		}
		b.WriteByte(']')
	case yaml.MappingNode:
		b.WriteByte('{')
		for i := 0; i+1 < len(n.Content); i += 2 {
			if i > 0 {
				b.WriteString(", ")
			}
			writeFlow(b, n.Content[i])
			b.WriteString(": ")
			writeFlow(b, n.Content[i+1])
		}
		b.WriteByte('}')
	}
}
