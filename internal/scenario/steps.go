package scenario

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	limitr "github.com/limitr/limitr/sdk/go"
)

func init() {
	Define[createCustomer]("create_customer", Kind{Doc: "create (or update) a customer"})
	Define[setPlan]("set_plan", Kind{Doc: "move a customer to another plan"})
	Define[deleteCustomer]("delete_customer", Kind{Doc: "remove a customer"})
	Define[overrideStep]("override", Kind{Doc: "set a customer override on one entitlement"})
	Define[removeOverride]("remove_override", Kind{Doc: "remove a customer override"})

	Define[allowStep]("allow", Kind{Returns: ReturnsBool, Doc: "meter an amount; expect: the decision"})
	Define[allowUnits]("allow_units", Kind{Returns: ReturnsBool, Doc: "allow with a quantity string such as 500MB"})
	Define[checkStep]("check", Kind{Returns: ReturnsBool, Doc: "decide like allow without changing anything"})
	Define[checkUnits]("check_units", Kind{Returns: ReturnsBool, Doc: "check with a quantity string"})
	Define[incrementStep]("increment", Kind{Returns: ReturnsBool, Doc: "meter the limit's increment"})
	Define[decrementStep]("decrement", Kind{Returns: ReturnsBool, Doc: "give back the limit's increment"})
	Define[setStep]("set", Kind{Returns: ReturnsBool, Doc: "move the meter to a value"})

	Define[advance]("advance", Kind{Doc: "move the clock forward: 24h, 1day, 30days, 90min"})
	Define[advanceTo]("advance_to", Kind{Doc: "move the clock to an instant"})

	Define[expectValue]("expect_value", Kind{Assertion: true, Doc: "usage this period"})
	Define[expectValuePercent]("expect_value_percent", Kind{Assertion: true, Doc: "share of the limit used, in percent"})
	Define[expectRemaining]("expect_remaining", Kind{Assertion: true, Doc: "what is left of the limit (without_grants: the plan limit alone)"})
	Define[expectRemainingPercent]("expect_remaining_percent", Kind{Assertion: true, Doc: "share of the limit left, in percent"})
	Define[expectLimit]("expect_limit", Kind{Assertion: true, Doc: "the effective limit (without_grants: the plan limit alone)"})
	Define[expectResets]("expect_resets", Kind{Assertion: true, Doc: "when the current period ends (or never)"})
	Define[expectCustomer]("expect_customer", Kind{Assertion: true, Doc: "partial match of a customer record"})
	Define[expectEvents]("expect_events", Kind{Assertion: true, Doc: "events of the previous acting step"})
}

func required(field, v string) error {
	if v == "" {
		return &fieldError{Field: field, Err: errors.New("required")}
	}
	return nil
}

// target names a customer's entitlement.
type target struct {
	Customer    string `yaml:"customer"`
	Entitlement string `yaml:"entitlement"`
}

func (t *target) check() error {
	return errors.Join(required("customer", t.Customer), required("entitlement", t.Entitlement))
}

// --- customers ---------------------------------------------------------------

type createCustomer struct {
	ID            string         `yaml:"id"`
	Plan          string         `yaml:"plan"`
	Type          string         `yaml:"type"`
	Label         string         `yaml:"label"`
	Refs          []string       `yaml:"refs"`
	AltIDs        []string       `yaml:"alt_ids"`
	Metadata      map[string]any `yaml:"metadata"`
	Timezone      string         `yaml:"timezone"`
	BillingAnchor Time           `yaml:"billing_anchor"`
}

func (a *createCustomer) check() error { return required("id", a.ID) }

func (a *createCustomer) Run(env *Env) (any, error) {
	var opts []limitr.CustomerOption
	if a.Type != "" {
		opts = append(opts, limitr.WithCustomerType(a.Type))
	}
	if a.Label != "" {
		opts = append(opts, limitr.WithLabel(a.Label))
	}
	if a.Refs != nil {
		opts = append(opts, limitr.WithRefs(a.Refs...))
	}
	if len(a.AltIDs) > 0 {
		opts = append(opts, limitr.WithAltIDs(a.AltIDs...))
	}
	if a.Metadata != nil {
		opts = append(opts, limitr.WithMetadata(a.Metadata))
	}
	if a.Timezone != "" {
		opts = append(opts, limitr.WithTimezone(a.Timezone))
	}
	if a.BillingAnchor.Set {
		opts = append(opts, limitr.WithBillingAnchor(a.BillingAnchor.Time))
	}
	_, err := env.Policy.CreateCustomer(env.Ctx, a.ID, a.Plan, opts...)
	return nil, err
}

type setPlan struct {
	Customer        string `yaml:"customer"`
	Plan            string `yaml:"plan"`
	OverwriteMeters bool   `yaml:"overwrite_meters"`
}

func (a *setPlan) check() error {
	return errors.Join(required("customer", a.Customer), required("plan", a.Plan))
}

func (a *setPlan) Run(env *Env) (any, error) {
	return nil, env.Policy.SetCustomerPlan(env.Ctx, a.Customer, a.Plan, a.OverwriteMeters)
}

// deleteCustomer accepts `delete_customer: id` or `delete_customer: {id: id}`.
type deleteCustomer struct {
	ID string `yaml:"id"`
}

func (a *deleteCustomer) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		a.ID = n.Value
		return nil
	}
	type plain deleteCustomer
	return decodeStrict(n, (*plain)(a))
}

func (a *deleteCustomer) check() error { return required("id", a.ID) }

func (a *deleteCustomer) Run(env *Env) (any, error) {
	return nil, env.Policy.DeleteCustomer(env.Ctx, a.ID)
}

type overrideStep struct {
	target       `yaml:",inline"`
	Value        Scalar   `yaml:"value"`
	ExpiresIn    Duration `yaml:"expires_in"`
	ExpiresAt    Time     `yaml:"expires_at"`
	Credit       string   `yaml:"credit"`
	Mode         string   `yaml:"mode"`
	Increment    Scalar   `yaml:"increment"`
	Minimum      Scalar   `yaml:"minimum"`
	Resets       *bool    `yaml:"resets"`
	ResetInc     Scalar   `yaml:"reset_inc"`
	ResetSch     string   `yaml:"reset_sch"`
	HardTrailing *bool    `yaml:"hard_trailing"`
	GrantsApply  *bool    `yaml:"grants_apply"`
}

func (a *overrideStep) check() error {
	err := a.target.check()
	if a.ExpiresIn.Set && a.ExpiresAt.Set {
		err = errors.Join(err, &fieldError{Field: "expires_at", Err: errors.New("expires_in and expires_at exclude each other")})
	}
	return err
}

func (a *overrideStep) Run(env *Env) (any, error) {
	o := limitr.Override{
		Value:        string(a.Value),
		Credit:       a.Credit,
		Mode:         a.Mode,
		Increment:    string(a.Increment),
		Minimum:      string(a.Minimum),
		Resets:       a.Resets,
		ResetInc:     string(a.ResetInc),
		ResetSch:     a.ResetSch,
		HardTrailing: a.HardTrailing,
		GrantsApply:  a.GrantsApply,
	}
	switch {
	case a.ExpiresIn.Set:
		o.ExpiresAt = env.Clock.Now().Add(a.ExpiresIn.D)
	case a.ExpiresAt.Set:
		o.ExpiresAt = a.ExpiresAt.Time
	}
	return nil, env.Policy.CreateCustomerOverride(env.Ctx, a.Customer, a.Entitlement, o)
}

type removeOverride struct {
	target `yaml:",inline"`
}

func (a *removeOverride) Run(env *Env) (any, error) {
	return nil, env.Policy.RemoveCustomerOverride(env.Ctx, a.Customer, a.Entitlement)
}

// --- calls -------------------------------------------------------------------

// callOptions are the per-call options every metering step accepts.
type callOptions struct {
	Events         *bool          `yaml:"events"` // false: WithoutEvents
	EventData      map[string]any `yaml:"event_data"`
	Overhead       Number         `yaml:"overhead"`
	IdempotencyKey string         `yaml:"idempotency_key"`
	CallCap        *callCap       `yaml:"call_cap"`
}

// callCap is `call_cap: {credit: rune, value: 0.01}`: a ceiling on what this one call
// may consume (WithCallCap); credit "" or rune is money.
type callCap struct {
	Credit string `yaml:"credit"`
	Value  Number `yaml:"value"`
}

// checkOptions validates the options (named so it does not collide with target.check
// in the structs embedding both).
func (o *callOptions) checkOptions() error {
	if o.CallCap == nil {
		return nil
	}
	switch {
	case !o.CallCap.Value.Set:
		return &fieldError{Field: "call_cap.value", Err: errors.New("required: the most this call may consume, in call_cap.credit (default rune)")}
	case o.CallCap.Value.Value < 0:
		return &fieldError{Field: "call_cap.value", Err: errors.New("must not be negative")}
	}
	return nil
}

func (o *callOptions) opts() []limitr.CallOption {
	var out []limitr.CallOption
	if o.Events != nil && !*o.Events {
		out = append(out, limitr.WithoutEvents())
	}
	if o.EventData != nil {
		out = append(out, limitr.WithEventData(o.EventData))
	}
	if o.Overhead.Set {
		out = append(out, limitr.WithOverhead(o.Overhead.Value))
	}
	if o.IdempotencyKey != "" {
		out = append(out, limitr.WithIdempotencyKey(o.IdempotencyKey))
	}
	if o.CallCap != nil {
		out = append(out, limitr.WithCallCap(o.CallCap.Credit, o.CallCap.Value.Value))
	}
	return out
}

// amountCall is allow/check: `amount: 120000` (credit units) or `amount: 500MB`
// (converted by the engine, as AllowUnits).
type amountCall struct {
	target      `yaml:",inline"`
	callOptions `yaml:",inline"`
	Amount      Amount `yaml:"amount"`
	Quantity    Scalar `yaml:"quantity"`
}

func (a *amountCall) check() error {
	err := errors.Join(a.target.check(), a.checkOptions())
	if a.Amount.Set && a.Quantity != "" {
		err = errors.Join(err, &fieldError{Field: "quantity", Err: errors.New("amount and quantity exclude each other")})
	}
	if a.Quantity != "" {
		a.Amount = Amount{Quantity: string(a.Quantity), Set: true}
	}
	return err
}

func (a *amountCall) call(env *Env, commit bool) (bool, error) {
	p, ctx, opts := env.Policy, env.Ctx, a.opts()
	switch {
	case a.Amount.Quantity != "" && commit:
		return p.AllowUnits(ctx, a.Customer, a.Entitlement, a.Amount.Quantity, opts...)
	case a.Amount.Quantity != "":
		return p.CheckUnits(ctx, a.Customer, a.Entitlement, a.Amount.Quantity, opts...)
	case commit:
		return p.Allow(ctx, a.Customer, a.Entitlement, a.Amount.Number, opts...)
	default:
		return p.Check(ctx, a.Customer, a.Entitlement, a.Amount.Number, opts...)
	}
}

type allowStep struct {
	amountCall `yaml:",inline"`
}

func (a *allowStep) Run(env *Env) (any, error) { return a.call(env, true) }

type checkStep struct {
	amountCall `yaml:",inline"`
}

func (a *checkStep) Run(env *Env) (any, error) { return a.call(env, false) }

// unitsCall is allow_units/check_units: quantity is required.
type unitsCall struct {
	target      `yaml:",inline"`
	callOptions `yaml:",inline"`
	Quantity    Scalar `yaml:"quantity"`
}

func (a *unitsCall) check() error {
	return errors.Join(a.target.check(), a.checkOptions(), required("quantity", string(a.Quantity)))
}

type allowUnits struct {
	unitsCall `yaml:",inline"`
}

func (a *allowUnits) Run(env *Env) (any, error) {
	return env.Policy.AllowUnits(env.Ctx, a.Customer, a.Entitlement, string(a.Quantity), a.opts()...)
}

type checkUnits struct {
	unitsCall `yaml:",inline"`
}

func (a *checkUnits) Run(env *Env) (any, error) {
	return env.Policy.CheckUnits(env.Ctx, a.Customer, a.Entitlement, string(a.Quantity), a.opts()...)
}

type stepCall struct {
	target      `yaml:",inline"`
	callOptions `yaml:",inline"`
}

func (a *stepCall) check() error { return errors.Join(a.target.check(), a.checkOptions()) }

type incrementStep struct {
	stepCall `yaml:",inline"`
}

func (a *incrementStep) Run(env *Env) (any, error) {
	return env.Policy.Increment(env.Ctx, a.Customer, a.Entitlement, a.opts()...)
}

type decrementStep struct {
	stepCall `yaml:",inline"`
}

func (a *decrementStep) Run(env *Env) (any, error) {
	return env.Policy.Decrement(env.Ctx, a.Customer, a.Entitlement, a.opts()...)
}

type setStep struct {
	target      `yaml:",inline"`
	callOptions `yaml:",inline"`
	Value       Number `yaml:"value"`
}

func (a *setStep) check() error {
	err := errors.Join(a.target.check(), a.checkOptions())
	if !a.Value.Set {
		err = errors.Join(err, &fieldError{Field: "value", Err: errors.New("required")})
	}
	return err
}

func (a *setStep) Run(env *Env) (any, error) {
	return env.Policy.Set(env.Ctx, a.Customer, a.Entitlement, a.Value.Value, a.opts()...)
}

// --- time --------------------------------------------------------------------

// advance accepts `advance: 1day`.
type advance struct{ Duration }

func (a *advance) UnmarshalYAML(n *yaml.Node) error { return a.Duration.UnmarshalYAML(n) }

func (a *advance) check() error {
	if a.D < 0 {
		return errors.New("the clock only moves forward; use a positive duration")
	}
	return nil
}

func (a *advance) Run(env *Env) (any, error) {
	env.Clock.Advance(a.D)
	return nil, nil
}

// advanceTo accepts `advance_to: 2026-02-01T00:00:00Z`.
type advanceTo struct{ Time }

func (a *advanceTo) UnmarshalYAML(n *yaml.Node) error { return a.Time.UnmarshalYAML(n) }

func (a *advanceTo) Run(env *Env) (any, error) {
	if a.Time.Time.Before(env.Clock.Now()) {
		return nil, &Mismatch{Reason: "advance_to moves the clock back", Expected: "a time at or after " + env.Clock.Now().Format(time.RFC3339), Got: a.Time.Time.Format(time.RFC3339)}
	}
	env.Clock.Set(a.Time.Time)
	return nil, nil
}

// --- reads -------------------------------------------------------------------

// expectNumber is the expectation of a numeric read: `equals: 240000` or `error: no limit`.
type expectNumber struct {
	Equals Number `yaml:"equals"`
	Error  string `yaml:"error"`
}

func (x *expectNumber) check() error {
	if x.Equals.Set == (x.Error != "") {
		return &fieldError{Field: "equals", Err: errors.New("give exactly one of equals (a number) or error (a substring of the expected error)")}
	}
	return nil
}

// assert compares a read with the expectation; subject names what was read ("c/e").
func (x *expectNumber) assert(what, subject string, got float64, err error) (any, error) {
	if x.Error != "" {
		if err == nil {
			return nil, &Mismatch{Reason: what + ": expected an error", Expected: "error containing " + quote(x.Error), Got: formatFloat(got)}
		}
		if !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(x.Error)) {
			return nil, &Mismatch{Reason: what + ": wrong error", Expected: "error containing " + quote(x.Error), Got: "error " + quote(err.Error())}
		}
		return nil, nil
	}
	if err != nil {
		return nil, &Mismatch{Reason: what + ": unexpected error", Expected: formatFloat(x.Equals.Value), Got: "error " + quote(err.Error())}
	}
	if !NumbersMatch(x.Equals.Value, got) {
		return got, &Mismatch{Reason: fmt.Sprintf("%s of %s differs", what, subject), Expected: formatFloat(x.Equals.Value), Got: formatFloat(got)}
	}
	return got, nil
}

// numberRead is expect_value and friends: `equals: 240000` or `error: no limit`.
type numberRead struct {
	target       `yaml:",inline"`
	expectNumber `yaml:",inline"`
}

func (a *numberRead) check() error {
	return errors.Join(a.target.check(), a.expectNumber.check())
}

func (a *numberRead) assert(what string, got float64, err error) (any, error) {
	return a.expectNumber.assert(what, a.Customer+"/"+a.Entitlement, got, err)
}

type expectValue struct {
	numberRead `yaml:",inline"`
}

func (a *expectValue) Run(env *Env) (any, error) {
	v, err := env.Policy.Value(env.Ctx, a.Customer, a.Entitlement)
	return a.assert("value", v, err)
}

// limitRead is a read grants extend unless `without_grants: true` (Limitr's
// grants=false).
type limitRead struct {
	numberRead    `yaml:",inline"`
	WithoutGrants bool `yaml:"without_grants"`
}

func (a *limitRead) opts() []limitr.ReadOption {
	if a.WithoutGrants {
		return []limitr.ReadOption{limitr.WithoutGrants()}
	}
	return nil
}

type expectValuePercent struct {
	limitRead `yaml:",inline"`
}

func (a *expectValuePercent) Run(env *Env) (any, error) {
	v, err := env.Policy.ValuePercent(env.Ctx, a.Customer, a.Entitlement, a.opts()...)
	return a.assert("value percent", v, err)
}

type expectRemaining struct {
	limitRead `yaml:",inline"`
}

func (a *expectRemaining) Run(env *Env) (any, error) {
	v, err := env.Policy.Remaining(env.Ctx, a.Customer, a.Entitlement, a.opts()...)
	return a.assert("remaining", v, err)
}

type expectRemainingPercent struct {
	limitRead `yaml:",inline"`
}

func (a *expectRemainingPercent) Run(env *Env) (any, error) {
	v, err := env.Policy.RemainingPercent(env.Ctx, a.Customer, a.Entitlement, a.opts()...)
	return a.assert("remaining percent", v, err)
}

type expectLimit struct {
	limitRead `yaml:",inline"`
}

func (a *expectLimit) Run(env *Env) (any, error) {
	v, err := env.Policy.Limit(env.Ctx, a.Customer, a.Entitlement, a.opts()...)
	return a.assert("limit", v, err)
}

// resetsAt is a time or "never".
type resetsAt struct {
	Time  time.Time
	Never bool
	Set   bool
}

func (r *resetsAt) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode && n.Value == "never" {
		*r = resetsAt{Never: true, Set: true}
		return nil
	}
	var t Time
	if err := t.UnmarshalYAML(n); err != nil {
		return err
	}
	*r = resetsAt{Time: t.Time, Set: true}
	return nil
}

func (r resetsAt) String() string {
	if r.Never {
		return "never"
	}
	return r.Time.Format(time.RFC3339Nano)
}

type expectResets struct {
	target `yaml:",inline"`
	Equals resetsAt `yaml:"equals"`
	Error  string   `yaml:"error"`
}

func (a *expectResets) check() error {
	err := a.target.check()
	if a.Equals.Set == (a.Error != "") {
		err = errors.Join(err, &fieldError{Field: "equals", Err: errors.New("give exactly one of equals (a time, or never) or error")})
	}
	return err
}

func (a *expectResets) Run(env *Env) (any, error) {
	t, err := env.Policy.Resets(env.Ctx, a.Customer, a.Entitlement)
	got := resetsAt{Time: t.UTC(), Never: t.IsZero()}
	if a.Error != "" {
		if err == nil {
			return nil, &Mismatch{Reason: "resets: expected an error", Expected: "error containing " + quote(a.Error), Got: got.String()}
		}
		if !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(a.Error)) {
			return nil, &Mismatch{Reason: "resets: wrong error", Expected: "error containing " + quote(a.Error), Got: "error " + quote(err.Error())}
		}
		return nil, nil
	}
	if err != nil {
		return nil, &Mismatch{Reason: "resets: unexpected error", Expected: a.Equals.String(), Got: "error " + quote(err.Error())}
	}
	if got.Never != a.Equals.Never || (!got.Never && !got.Time.Equal(a.Equals.Time)) {
		return nil, &Mismatch{Reason: fmt.Sprintf("resets of %s/%s differs", a.Customer, a.Entitlement), Expected: a.Equals.String(), Got: got.String()}
	}
	return nil, nil
}

// expectCustomer matches a customer record partially: `{id: c, plan: growth,
// meters: {seats: {value: 2}}}`, or `{id: c, exists: false}`. resolved_plan is the
// plan in force (through refs or the default).
type expectCustomer struct {
	ID     string
	Exists *bool
	Fields map[string]any
	Source string
}

var customerFields = []string{"id", "exists", "plan", "resolved_plan", "alt_ids", "refs", "type", "label", "meters", "overrides", "grants", "metadata", "timezone"}

func (a *expectCustomer) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return fieldErr("", n, "want a mapping such as {id: c, plan: growth}")
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		found := false
		for _, f := range customerFields {
			found = found || f == k.Value
		}
		if !found {
			return fieldErr(k.Value, k, "unknown field%s (known: %s)", suggest(k.Value, customerFields), strings.Join(customerFields, ", "))
		}
	}
	var m map[string]any
	if err := n.Decode(&m); err != nil {
		return fieldErr("", n, "%v", err)
	}
	if e, ok := m["exists"]; ok {
		b, ok := e.(bool)
		if !ok {
			return fieldErr("exists", n, "must be true or false")
		}
		a.Exists = &b
		delete(m, "exists")
	}
	a.ID, _ = m["id"].(string)
	a.Fields = m
	a.Source = compactJSON(jsonable(m))
	return nil
}

func (a *expectCustomer) check() error { return required("id", a.ID) }

func (a *expectCustomer) Run(env *Env) (any, error) {
	c, err := env.Policy.Customer(env.Ctx, a.ID)
	if a.Exists != nil && !*a.Exists {
		if err == nil {
			return nil, &Mismatch{Reason: "customer exists", Expected: "no customer " + quote(a.ID), Got: compactJSON(c)}
		}
		if !errors.Is(err, limitr.ErrUnknownCustomer) {
			return nil, &Mismatch{Reason: "unexpected error", Expected: "unknown customer", Got: "error " + quote(err.Error())}
		}
		return nil, nil
	}
	if err != nil {
		return nil, &Mismatch{Reason: "unexpected error", Expected: a.Source, Got: "error " + quote(err.Error())}
	}
	raw := map[string]any{}
	b, err := json.Marshal(c)
	if err == nil {
		err = json.Unmarshal(b, &raw)
	}
	if err != nil {
		return nil, err
	}
	raw["resolved_plan"] = c.ResolvedPlan
	if diffs := matchValue("", a.Fields, raw); len(diffs) > 0 {
		return nil, &Mismatch{Reason: strings.Join(diffs, "\n"), Expected: a.Source, Got: compactJSON(raw)}
	}
	return nil, nil
}

// expectEvents is the standalone form: the events of the previous acting step.
type expectEvents struct {
	Events []EventExpectation
}

func (a *expectEvents) UnmarshalYAML(n *yaml.Node) error {
	evs, err := parseEventExpectations(n)
	a.Events = evs
	return err
}

func (a *expectEvents) Run(env *Env) (any, error) {
	if m := matchEvents(a.Events, env.LastEvents); m != nil {
		return nil, m
	}
	return nil, nil
}
