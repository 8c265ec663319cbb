package expr

import (
	"fmt"

	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/interpreter"
)

// Match is a compiled notification condition. It is safe for concurrent use.
type Match struct {
	c compiled
}

// CompileMatch parses and type-checks a notification condition over `type` (string) and
// `event` (map<string, dyn>). Its result must be a bool, or dyn (a non-bool value at
// evaluation then does not match). Errors wrap ErrCompile and carry CEL's message with the
// line:column of the problem.
func CompileMatch(src string) (*Match, error) {
	c, err := compile(matchEnv, src, "bool", types.BoolKind, types.DynKind)
	if err != nil {
		return nil, err
	}
	return &Match{c: c}, nil
}

// Source returns the expression as written.
func (m *Match) Source() string { return m.c.src }

// matchVars binds the condition's variables without building a map per call.
type matchVars struct {
	eventType types.String
	event     map[string]any
}

func (v *matchVars) ResolveName(name string) (any, bool) {
	switch name {
	case varType:
		return v.eventType, true
	case varEvent:
		return v.event, true
	}
	return nil, false
}

func (v *matchVars) Parent() interpreter.Activation { return nil }

// Eval reports whether the condition holds for an event of eventType whose payload is
// event (as decoded by encoding/json: float64 numbers, nested maps and slices; nil is an
// empty map).
//
// A condition that fails to evaluate — typically a key absent from this event, as in
// `event.remaining < 5` on an event without `remaining` — does not match: Eval returns
// false with an error wrapping ErrEval, for the caller to log. CEL's && and || absorb
// errors when the other side decides (`false && error` is false), so conditions whose
// type test fails first never report one.
func (m *Match) Eval(eventType string, event map[string]any) (bool, error) {
	if event == nil {
		event = emptyMap
	}
	out, _, err := m.c.prog.Eval(&matchVars{eventType: types.String(eventType), event: event})
	if err != nil {
		return false, m.c.evalErr(err)
	}
	b, ok := out.(types.Bool)
	if !ok {
		return false, fmt.Errorf("%w: %q: result is %s, not a bool", ErrEval, m.c.src, out.Type())
	}
	return bool(b), nil
}
