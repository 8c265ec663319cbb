package expr

import (
	"fmt"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/decls"
	"cel.dev/cel-go/common/env"
	"cel.dev/cel-go/common/functions"
	"cel.dev/cel-go/common/operators"
	"cel.dev/cel-go/common/stdlib"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/common/types/traits"
	"cel.dev/cel-go/ext"
)

// arithmetic lists the operators whose standard declarations are replaced by promoting ones.
var arithmetic = []struct {
	name  string
	id    string // prefix of the added mixed overload ids
	trait int
	op    functions.BinaryOp
}{
	{operators.Add, "add", traits.AdderType, func(l, r ref.Val) ref.Val { return l.(traits.Adder).Add(r) }},
	{operators.Subtract, "subtract", traits.SubtractorType, func(l, r ref.Val) ref.Val { return l.(traits.Subtractor).Subtract(r) }},
	{operators.Multiply, "multiply", traits.MultiplierType, func(l, r ref.Val) ref.Val { return l.(traits.Multiplier).Multiply(r) }},
	{operators.Divide, "divide", traits.DividerType, func(l, r ref.Val) ref.Val { return l.(traits.Divider).Divide(r) }},
}

// newEnv builds the standard CEL environment (plus the strings and math extensions) with
// the given variables, mixed int/double arithmetic and cross-type numeric comparisons.
func newEnv(vars ...cel.EnvOption) (*cel.Env, error) {
	exclude := make([]*env.Function, len(arithmetic))
	for i, a := range arithmetic {
		exclude[i] = &env.Function{Name: a.name}
	}
	promoted, err := promotedArithmetic()
	if err != nil {
		return nil, err
	}
	opts := []cel.EnvOption{
		cel.StdLib(cel.StdLibSubset(&env.LibrarySubset{ExcludeFunctions: exclude})),
		cel.EagerlyValidateDeclarations(true),
		cel.FunctionDecls(promoted...),
		cel.CrossTypeNumericComparisons(true),
		cel.DefaultUTCTimeZone(true),
		cel.ParserExpressionSizeLimit(MaxSourceLen),
		ext.Strings(),
		ext.Math(),
	}
	return cel.NewCustomEnv(append(opts, vars...)...)
}

// promotedArithmetic re-declares + - * / with every standard overload, adds
// (double, int) and (int, double) overloads returning double, and binds each operator to a
// function that converts the int operand of a mixed pair to double before applying the
// standard operation. Standard overload ids are kept, so CEL's cost model still applies.
func promotedArithmetic() ([]*decls.FunctionDecl, error) {
	std := map[string]*decls.FunctionDecl{}
	for _, fn := range stdlib.Functions() {
		std[fn.Name()] = fn
	}
	out := make([]*decls.FunctionDecl, 0, len(arithmetic))
	for _, a := range arithmetic {
		base, ok := std[a.name]
		if !ok {
			return nil, fmt.Errorf("standard library has no %s", a.name)
		}
		var opts []decls.FunctionOpt
		for _, o := range base.OverloadDecls() {
			opts = append(opts, decls.Overload(o.ID(), o.ArgTypes(), o.ResultType()))
		}
		opts = append(opts,
			decls.Overload(a.id+"_double_int", []*types.Type{types.DoubleType, types.IntType}, types.DoubleType),
			decls.Overload(a.id+"_int_double", []*types.Type{types.IntType, types.DoubleType}, types.DoubleType),
			decls.SingletonBinaryBinding(promote(a.op), a.trait),
		)
		fn, err := decls.NewFunction(a.name, opts...)
		if err != nil {
			return nil, err
		}
		out = append(out, fn)
	}
	return out, nil
}

// promote applies op after converting the int side of an int/double pair to double.
func promote(op functions.BinaryOp) functions.BinaryOp {
	return func(l, r ref.Val) ref.Val {
		switch lv := l.(type) {
		case types.Int:
			if rv, ok := r.(types.Double); ok {
				return op(types.Double(lv), rv)
			}
		case types.Double:
			if rv, ok := r.(types.Int); ok {
				return op(lv, types.Double(rv))
			}
		}
		return op(l, r)
	}
}
