// Package expr compiles and evaluates the CEL expressions a policy may carry:
//
//   - credit cost expressions (a credit's `overhead`): the provider cost in runes of one
//     call, over `units` (double: the call's amount in the credit's units),
//     `overhead_cost` (double: the credit's flat per-unit rate) and `context`
//     (map<string, dyn>: the call's event data, possibly empty);
//   - notification conditions (`matches`): a boolean over `type` (string: the event type,
//     such as "meter-changed") and `event` (map<string, dyn>: the event's JSON payload).
//
// Expressions are parsed and type-checked once, when the policy loads; a program is then
// safe for concurrent use. Evaluation is bounded by a runtime cost limit (MaxCost), and
// an expression whose cheapest possible evaluation already exceeds that limit is
// rejected at compile time.
//
// # Numbers
//
// Event payloads are decoded from JSON, so their numbers arrive as doubles, while CEL
// literals such as `2` are ints. Plain CEL refuses to mix the two (`10.0 / 2` has no
// overload); here the arithmetic operators + - * / promote an int operand to double when
// the other operand is a double, both when type-checking (`units * 2` is a double) and at
// runtime for dyn values (`event.meter.limit / 2`, `units * context.rate` whether the
// caller passed the rate as an int or a float64). Comparisons across int, uint and double
// are enabled as well (`units > 100`). int⊕int stays integer arithmetic (`7 / 2 == 3`),
// and uint operands are not promoted. Write `double(x)` to force floating-point division
// of two ints or to convert a uint.
//
// Values inside `context` and `event` are dyn: a key that is absent is a runtime error
// ("no such key"), so guard optional keys with has(), e.g.
// `has(context.output_tokens) ? double(context.output_tokens) * 0.00003 : units * overhead_cost`.
// A failing cost expression returns an error wrapping ErrEval and the caller falls back
// to `units * overhead_cost`; a failing notification condition does not match.
package expr

import (
	"errors"
	"fmt"
	"sync"
	"unicode/utf8"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/cost"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/interpreter"
)

// ErrCompile wraps every error returned by CompileCost and CompileMatch.
var ErrCompile = errors.New("expression does not compile")

// ErrEval wraps every error returned by Cost.Eval and Match.Eval.
var ErrEval = errors.New("expression failed")

// ErrCostLimit is wrapped (alongside ErrEval) when an evaluation was cut short because it
// exceeded MaxCost.
var ErrCostLimit = errors.New("expression exceeded its cost limit")

// MaxCost bounds the CEL runtime cost of one evaluation. A cost unit is roughly one
// operation (a variable or field access, a comparison, an arithmetic step, one comprehension
// iteration); the expressions policies carry cost a few dozen at most.
const MaxCost = 10_000

// MaxSourceLen bounds the length of an expression, in code points.
const MaxSourceLen = 4096

// interruptCheckFrequency is how many comprehension iterations run between interrupt checks.
const interruptCheckFrequency = 100

// Variable names.
const (
	varUnits        = "units"
	varOverheadCost = "overhead_cost"
	varContext      = "context"
	varType         = "type"
	varEvent        = "event"
)

var (
	costEnv  = sync.OnceValues(func() (*cel.Env, error) { return newEnv(costVarDecls()...) })
	matchEnv = sync.OnceValues(func() (*cel.Env, error) { return newEnv(matchVarDecls()...) })
)

func costVarDecls() []cel.EnvOption {
	return []cel.EnvOption{
		cel.Variable(varUnits, cel.DoubleType),
		cel.Variable(varOverheadCost, cel.DoubleType),
		cel.Variable(varContext, cel.MapType(cel.StringType, cel.DynType)),
	}
}

func matchVarDecls() []cel.EnvOption {
	return []cel.EnvOption{
		cel.Variable(varType, cel.StringType),
		cel.Variable(varEvent, cel.MapType(cel.StringType, cel.DynType)),
	}
}

// compiled is what Cost and Match share: the source and its program.
type compiled struct {
	src  string
	prog cel.Program
}

// compile parses, type-checks and plans src in env, requiring one of the result kinds.
func compile(envFn func() (*cel.Env, error), src, what string, kinds ...types.Kind) (compiled, error) {
	env, err := envFn()
	if err != nil {
		return compiled{}, fmt.Errorf("%w: environment: %w", ErrCompile, err)
	}
	if n := utf8.RuneCountInString(src); n > MaxSourceLen {
		return compiled{}, fmt.Errorf("%w: ERROR: <input>:1:1: expression is %d code points long, the limit is %d",
			ErrCompile, n, MaxSourceLen)
	}
	ast, iss := env.Compile(src)
	if err := iss.Err(); err != nil {
		return compiled{}, fmt.Errorf("%w: %w", ErrCompile, err)
	}
	out := ast.OutputType()
	ok := false
	for _, k := range kinds {
		if out.Kind() == k {
			ok = true
			break
		}
	}
	if !ok {
		return compiled{}, fmt.Errorf("%w: ERROR: %s: result is %s, want %s", ErrCompile, position(ast), out, what)
	}
	// Reject what can never finish within the limit: the estimate's minimum is a lower
	// bound over every input (input sizes are unknown, so the maximum usually is not).
	est, err := env.EstimateCost(ast, noEstimator{})
	if err == nil && est.Min > MaxCost {
		return compiled{}, fmt.Errorf("%w: ERROR: %s: estimated cost at least %d exceeds the limit of %d",
			ErrCompile, position(ast), est.Min, MaxCost)
	}
	prog, err := env.Program(ast,
		cel.CostLimit(MaxCost),
		cel.InterruptCheckFrequency(interruptCheckFrequency),
		cel.EvalOptions(cel.OptOptimize),
	)
	if err != nil {
		return compiled{}, fmt.Errorf("%w: %w", ErrCompile, err)
	}
	return compiled{src: src, prog: prog}, nil
}

// position formats the location of the expression's root node the way CEL's own errors
// do: <input>:line:column, both 1-based.
func position(a *cel.Ast) string {
	native := a.NativeRep()
	loc := native.SourceInfo().GetStartLocation(native.Expr().ID())
	if loc.Line() < 1 {
		return "<input>:1:1"
	}
	return fmt.Sprintf("<input>:%d:%d", loc.Line(), loc.Column()+1)
}

// evalErr wraps a CEL evaluation error.
func (c *compiled) evalErr(err error) error {
	var cancelled interpreter.EvalCancelledError
	if errors.As(err, &cancelled) && cancelled.Cause == interpreter.CostLimitExceeded {
		return fmt.Errorf("%w: %w: %q", ErrEval, ErrCostLimit, c.src)
	}
	return fmt.Errorf("%w: %q: %w", ErrEval, c.src, err)
}

// noEstimator leaves every size and call cost to CEL's defaults.
type noEstimator struct{}

func (noEstimator) EstimateSize(cost.AstNode) *cost.SizeEstimate { return nil }

func (noEstimator) EstimateCallCost(string, string, *cost.AstNode, []cost.AstNode) *cost.CallEstimate {
	return nil
}

// emptyMap stands in for a nil context or event. CEL never mutates its inputs.
var emptyMap = map[string]any{}
