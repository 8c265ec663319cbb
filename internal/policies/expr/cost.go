package expr

import (
	"fmt"
	"math"

	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/interpreter"

	"github.com/limitr/limitr/internal/num"
)

// Cost is a compiled credit cost expression: the provider cost in runes of one call.
// It is safe for concurrent use.
type Cost struct {
	c compiled
}

// CompileCost parses and type-checks a cost expression over `units` (double),
// `overhead_cost` (double) and `context` (map<string, dyn>). Its result must be a double,
// an int, a uint or dyn (checked again at evaluation). Errors wrap ErrCompile and carry
// CEL's message with the line:column of the problem.
func CompileCost(src string) (*Cost, error) {
	c, err := compile(costEnv, src, "double or int", types.DoubleKind, types.IntKind, types.UintKind, types.DynKind)
	if err != nil {
		return nil, err
	}
	return &Cost{c: c}, nil
}

// Source returns the expression as written.
func (c *Cost) Source() string { return c.c.src }

// costVars binds the cost expression's variables without building a map per call.
type costVars struct {
	units, overheadCost types.Double
	context             map[string]any
}

func (v *costVars) ResolveName(name string) (any, bool) {
	switch name {
	case varUnits:
		return v.units, true
	case varOverheadCost:
		return v.overheadCost, true
	case varContext:
		return v.context, true
	}
	return nil, false
}

func (v *costVars) Parent() interpreter.Activation { return nil }

// Eval computes the cost in runes of a call of units with the given context (the call's
// event data; nil is an empty map) for a credit whose flat rate is overheadCost.
//
// The result is converted to a decimal through its shortest representation. Every
// failure wraps ErrEval — a missing context key, an operator applied to mismatched
// dynamic values, null, a non-numeric, negative or non-finite result, or exceeding
// MaxCost (which also wraps ErrCostLimit) — and the caller falls back to
// units * overhead_cost.
func (c *Cost) Eval(units num.Dec, overheadCost num.Dec, context map[string]any) (num.Dec, error) {
	if context == nil {
		context = emptyMap
	}
	vars := &costVars{
		units:        types.Double(num.Float64(units)),
		overheadCost: types.Double(num.Float64(overheadCost)),
		context:      context,
	}
	out, _, err := c.c.prog.Eval(vars)
	if err != nil {
		return num.Zero, c.c.evalErr(err)
	}
	var d num.Dec
	switch v := out.(type) {
	case types.Double:
		f := float64(v)
		if math.IsNaN(f) || math.IsInf(f, 0) || f < 0 {
			return num.Zero, fmt.Errorf("%w: %q: result %v is not a finite non-negative number", ErrEval, c.c.src, f)
		}
		d, err = num.FromFloat64(f)
	case types.Int:
		if v < 0 {
			return num.Zero, fmt.Errorf("%w: %q: result %d is negative", ErrEval, c.c.src, int64(v))
		}
		if v >= num.MaxMagnitude {
			err = fmt.Errorf("%w: %d", num.ErrOutOfRange, int64(v))
		} else {
			d = num.FromInt(int64(v))
		}
	case types.Uint:
		if v >= num.MaxMagnitude {
			err = fmt.Errorf("%w: %d", num.ErrOutOfRange, uint64(v))
		} else {
			d = num.FromInt(int64(v))
		}
	default:
		return num.Zero, fmt.Errorf("%w: %q: result is %s, not a number", ErrEval, c.c.src, out.Type())
	}
	if err != nil {
		return num.Zero, fmt.Errorf("%w: %q: %w", ErrEval, c.c.src, err)
	}
	return d, nil
}
