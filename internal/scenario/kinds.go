package scenario

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/limitr/limitr/internal/quantity"
)

// Action is a parsed step, ready to run.
type Action interface {
	// Run performs the step. A decision step returns its bool. An assertion step
	// returns a *Mismatch error when what it checks differs.
	Run(env *Env) (any, error)
}

// Returns says what a step kind returns, so the parser knows which modifiers fit.
type Returns int

// What step kinds return.
const (
	ReturnsNothing Returns = iota
	ReturnsBool            // allow, check, ...: `expect: true|false` applies
)

// Kind describes one step kind.
type Kind struct {
	Name    string
	Returns Returns
	// Assertion marks steps that only read: they never emit events, so the events
	// recorded for the previous acting step stay available to a following
	// standalone expect_events step.
	Assertion bool
	// Doc is a one-line description for help output.
	Doc   string
	parse func(*yaml.Node) (Action, error)
}

func (k *Kind) expectHint() string {
	if k.Assertion {
		return "its own fields say what to expect"
	}
	return "use expect_error, expect_events or a following expect_* step"
}

var kinds = map[string]*Kind{}

// Define registers a step kind whose arguments decode into T. Unknown fields are
// rejected with the list of known ones; if *T has a `check() error` method it runs
// after decoding (required fields, exclusive fields). Later step kinds (topups,
// caps, governor, margins) register themselves the same way:
//
//	type applyTopup struct{ Customer, Topup string }
//	func (a *applyTopup) Run(env *Env) (any, error) { ... }
//	func init() { Define[applyTopup]("apply_topup", Kind{Doc: "grant a topup"}) }
func Define[T any, P interface {
	*T
	Action
}](name string, k Kind) {
	if _, dup := kinds[name]; dup {
		panic("scenario: step kind " + name + " defined twice")
	}
	k.Name = name
	k.parse = func(n *yaml.Node) (Action, error) {
		p := P(new(T))
		if err := decodeStrict(n, p); err != nil {
			return nil, err
		}
		if c, ok := any(p).(interface{ check() error }); ok {
			if err := c.check(); err != nil {
				return nil, err
			}
		}
		return p, nil
	}
	kinds[name] = &k
}

// KindNames lists the registered step kinds, sorted.
func KindNames() []string {
	names := make([]string, 0, len(kinds))
	for n := range kinds {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Kinds returns the registered step kinds, sorted by name.
func Kinds() []Kind {
	out := make([]Kind, 0, len(kinds))
	for _, n := range KindNames() {
		out = append(out, *kinds[n])
	}
	return out
}

var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

// decodeStrict decodes n into v (a pointer), rejecting mapping keys that are not
// fields of the target struct, at any depth.
func decodeStrict(n *yaml.Node, v any) error {
	if err := checkFields(n, reflect.TypeOf(v), ""); err != nil {
		return err
	}
	if err := n.Decode(v); err != nil {
		return decodeError(n, err)
	}
	return nil
}

// decodeError turns yaml.v3's type errors into located field errors where it can.
func decodeError(n *yaml.Node, err error) error {
	if _, ok := err.(interface{ Unwrap() []error }); ok {
		return err // several located problems: the step parser lists each
	}
	var fe *fieldError
	if errors.As(err, &fe) {
		return fe
	}
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msg := te.Errors[0]
		line := n.Line
		if rest, ok := strings.CutPrefix(msg, "line "); ok {
			if i := strings.Index(rest, ": "); i > 0 {
				if l, err := strconv.Atoi(rest[:i]); err == nil {
					line = l
				}
				msg = rest[i+2:]
			}
		}
		return &fieldError{Line: line, Err: errors.New(msg)}
	}
	return &fieldError{Line: n.Line, Err: err}
}

// yamlFields maps a struct's YAML keys to its fields.
func yamlFields(t reflect.Type) map[string]reflect.StructField {
	out := map[string]reflect.StructField{}
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" || (!f.IsExported() && !f.Anonymous) {
			continue
		}
		if strings.Contains(opts, "inline") {
			maps := yamlFields(f.Type)
			for k, v := range maps {
				out[k] = v
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out[name] = f
	}
	return out
}

func checkFields(n *yaml.Node, t reflect.Type, path string) error {
	if n == nil {
		return nil
	}
	if n.Kind == yaml.AliasNode {
		return checkFields(n.Alias, t, path)
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		// The type validates itself; run it here so its errors carry the field path.
		if path == "" {
			return nil // the whole step: decoding reports it
		}
		if err := reflect.New(t).Interface().(yaml.Unmarshaler).UnmarshalYAML(n); err != nil {
			return within(path, err)
		}
		return nil
	}
	join := func(k string) string {
		if path == "" {
			return k
		}
		return path + "." + k
	}
	switch t.Kind() {
	case reflect.Struct:
		if t == reflect.TypeFor[time.Time]() {
			return nil
		}
		if n.Kind != yaml.MappingNode {
			return fieldErr(path, n, "want a mapping of %s, got %s", strings.Join(sortedKeys(yamlFields(t)), ", "), flow(n, 40))
		}
		fields := yamlFields(t)
		seen := map[string]bool{}
		var errs []error
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			f, ok := fields[k.Value]
			switch {
			case !ok:
				errs = append(errs, fieldErr(join(k.Value), k, "unknown field%s (known: %s)", suggest(k.Value, sortedKeys(fields)), strings.Join(sortedKeys(fields), ", ")))
			case seen[k.Value]:
				errs = append(errs, fieldErr(join(k.Value), k, "given twice"))
			default:
				seen[k.Value] = true
				if err := checkFields(n.Content[i+1], f.Type, join(k.Value)); err != nil {
					errs = append(errs, err)
				}
			}
		}
		return errors.Join(errs...)
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return fieldErr(path, n, "want a list such as [a, b], got %s", flow(n, 40))
		}
		var errs []error
		for i, c := range n.Content {
			if err := checkFields(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			return fieldErr(path, n, "want a mapping, got %s", flow(n, 40))
		}
		var errs []error
		for i := 0; i+1 < len(n.Content); i += 2 {
			if err := checkFields(n.Content[i+1], t.Elem(), join(n.Content[i].Value)); err != nil {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// Amount is a call amount: a plain number in the credit's units, or a quantity
// string with a unit ("500MB", "1.5GiB") converted by the engine.
type Amount struct {
	Number   float64
	Quantity string // set when the amount has a unit
	Set      bool
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (a *Amount) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode || n.Value == "" {
		return fieldErr("", n, "want a number or a quantity such as 500MB, got %s", flow(n, 40))
	}
	if f, ok := parseNumber(n.Value); ok {
		*a = Amount{Number: f, Set: true}
		return nil
	}
	if _, err := quantity.Parse(n.Value); err != nil {
		return fieldErr("", n, "%v", err)
	}
	*a = Amount{Quantity: n.Value, Set: true}
	return nil
}

func (a Amount) String() string {
	if a.Quantity != "" {
		return a.Quantity
	}
	return strconv.FormatFloat(a.Number, 'g', -1, 64)
}

// Number is a float written as a YAML number (underscores allowed: 1_000_000).
type Number struct {
	Value float64
	Set   bool
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (x *Number) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fieldErr("", n, "want a number, got %s", flow(n, 40))
	}
	f, ok := parseNumber(n.Value)
	if !ok {
		return fieldErr("", n, "want a number, got %q", n.Value)
	}
	*x = Number{Value: f, Set: true}
	return nil
}

func parseNumber(s string) (float64, bool) {
	s = strings.ReplaceAll(strings.TrimSpace(s), "_", "")
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, false
	}
	return f, true
}

// Scalar is a string written as any YAML scalar (so value: 100 and value: 3GB both work).
type Scalar string

// UnmarshalYAML implements yaml.Unmarshaler.
func (s *Scalar) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fieldErr("", n, "want a single value, got %s", flow(n, 40))
	}
	*s = Scalar(n.Value)
	return nil
}

// Duration is a span of time: a Limitr duration ("1day", "30days", "5min", "2h") or
// a Go duration ("1h30m"). A bare number is rejected as ambiguous.
type Duration struct {
	D   time.Duration
	Set bool
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fieldErr("", n, "want a duration such as 1day or 90min, got %s", flow(n, 40))
	}
	v, err := ParseDuration(n.Value)
	if err != nil {
		return fieldErr("", n, "%v", err)
	}
	*d = Duration{D: v, Set: true}
	return nil
}

// ParseDuration reads "1day", "30days", "5min", "2h", "1h30m". Unitless numbers are
// rejected: in a scenario, "advance: 5" is more likely a mistake than 5 ms.
func ParseDuration(s string) (time.Duration, error) {
	t := strings.TrimSpace(s)
	if _, ok := parseNumber(t); ok {
		return 0, fmt.Errorf("duration %q needs a unit (ms, s, min, h, day, days)", s)
	}
	if d, err := quantity.ParseDuration(t); err == nil {
		return d, nil
	}
	if d, err := time.ParseDuration(t); err == nil {
		return d, nil
	}
	return 0, fmt.Errorf("invalid duration %q (want e.g. 1day, 30days, 90min, 1h30m)", s)
}

// Time is an instant: RFC 3339 (2026-01-02T00:00:00Z) or a date (2026-01-02, UTC midnight).
type Time struct {
	time.Time
	Set bool
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (t *Time) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fieldErr("", n, "want a time such as 2026-01-02T00:00:00Z, got %s", flow(n, 40))
	}
	v, err := parseTime(n.Value)
	if err != nil {
		return fieldErr("", n, "%v", err)
	}
	*t = Time{Time: v, Set: true}
	return nil
}

func parseTime(s string) (time.Time, error) {
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02 15:04:05", "2006-01-02"} {
		if t, err := time.Parse(layout, strings.TrimSpace(s)); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("invalid time %q (want RFC 3339 such as 2026-01-02T00:00:00Z, or a date 2026-01-02)", s)
}
