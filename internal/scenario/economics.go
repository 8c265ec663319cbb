package scenario

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/limitr/limitr/internal/quantity"
	limitr "github.com/limitr/limitr/sdk/go"
)

// Step kinds of the credit-economics API: topups and grant balances, the exchange,
// spend caps, the governor's allowance, reservations, margins, the plan fee, and a
// save/restore round trip.
func init() {
	Define[applyTopup]("apply_topup", Kind{Doc: "grant one of the plan's topups to a customer"})
	Define[expectRemainingCredit]("expect_remaining_credit", Kind{Assertion: true, Doc: "the customer's pooled grant balance, in a credit"})
	Define[expectExchange]("expect_exchange", Kind{Assertion: true, Doc: "convert a value between credits through the exchange"})

	Define[addCap]("add_cap", Kind{Doc: "add a spend cap to a customer"})
	Define[resetCap]("reset_cap", Kind{Doc: "zero a spend cap's meter"})
	Define[removeCap]("remove_cap", Kind{Doc: "remove a spend cap"})
	Define[expectCap]("expect_cap", Kind{Assertion: true, Doc: "partial match of a spend cap and its state"})

	Define[expectAllowance]("expect_allowance", Kind{Assertion: true, Doc: "what a call could use now: remaining, bounded by the governor"})

	Define[reserveStep]("reserve", Kind{Returns: ReturnsBool, Doc: "hold capacity (as: name); expect: whether it was granted"})
	Define[settleStep]("settle", Kind{Returns: ReturnsBool, Doc: "end a reservation with the real amount, metering it"})
	Define[releaseStep]("release", Kind{Doc: "drop a reservation without metering"})
	Define[expectHeld]("expect_held", Kind{Assertion: true, Doc: "sum of live reservations on an entitlement"})

	Define[expectMargin]("expect_margin", Kind{Assertion: true, Doc: "partial match of a customer's margin this period"})
	Define[expectMarginSnapshot]("expect_margin_snapshot", Kind{Assertion: true, Doc: "partial match of a plan's margin for hypothetical usage"})
	Define[ensureSubscription]("ensure_subscription", Kind{Returns: ReturnsBool, Doc: "meter the plan fee once the trial is over; expect: whether it did"})

	Define[saveAndRestore]("save_and_restore", Kind{Doc: "save every customer as JSON and continue on a fresh policy loaded from it"})
}

// --- topups and the exchange ---------------------------------------------------

type applyTopup struct {
	Customer string `yaml:"customer"`
	Topup    string `yaml:"topup"`
}

func (a *applyTopup) check() error {
	return errors.Join(required("customer", a.Customer), required("topup", a.Topup))
}

func (a *applyTopup) Run(env *Env) (any, error) {
	return nil, env.Policy.ApplyCustomerTopup(env.Ctx, a.Customer, a.Topup)
}

type expectRemainingCredit struct {
	Customer     string `yaml:"customer"`
	Credit       string `yaml:"credit"`
	expectNumber `yaml:",inline"`
}

func (a *expectRemainingCredit) check() error {
	return errors.Join(required("customer", a.Customer), required("credit", a.Credit), a.expectNumber.check())
}

func (a *expectRemainingCredit) Run(env *Env) (any, error) {
	v, err := env.Policy.RemainingCredit(env.Ctx, a.Customer, a.Credit)
	return a.assert("remaining credit", a.Customer+"/"+a.Credit, v, err)
}

// expectExchange is `expect_exchange: {in: ai-token, out: rune, value: 10, equals: 12.5}`;
// out defaults to rune and value to 1.
type expectExchange struct {
	In           string `yaml:"in"`
	Out          string `yaml:"out"`
	Value        Number `yaml:"value"`
	expectNumber `yaml:",inline"`
}

func (a *expectExchange) check() error {
	return errors.Join(required("in", a.In), a.expectNumber.check())
}

func (a *expectExchange) Run(env *Env) (any, error) {
	out, value := a.Out, a.Value.Value
	if out == "" {
		out = "rune"
	}
	if !a.Value.Set {
		value = 1
	}
	v, err := env.Policy.CreditExchange(a.In, out, value)
	return a.assert("exchange", fmt.Sprintf("%s %s in %s", formatFloat(value), a.In, out), v, err)
}

// --- spend caps ----------------------------------------------------------------

type capTarget struct {
	Customer string `yaml:"customer"`
	ID       string `yaml:"id"`
}

func (t *capTarget) check() error {
	return errors.Join(required("customer", t.Customer), required("id", t.ID))
}

type addCap struct {
	capTarget        `yaml:",inline"`
	Credit           string   `yaml:"credit"`
	Value            Number   `yaml:"value"`
	Shared           bool     `yaml:"shared"`
	SharedWith       []string `yaml:"shared_with"`
	Scope            []string `yaml:"scope"`
	OverageOnly      bool     `yaml:"overage_only"`
	IgnoreGrants     bool     `yaml:"ignore_grants"`
	ObserveOnly      bool     `yaml:"observe_only"`
	OverheadCost     bool     `yaml:"overhead_cost"`
	FollowDecrements bool     `yaml:"follow_decrements"`
	HardTrailing     bool     `yaml:"hard_trailing"`
	Resets           bool     `yaml:"resets"`
	ResetInc         Scalar   `yaml:"reset_inc"`
	ResetSch         string   `yaml:"reset_sch"`
	ExpiresIn        Duration `yaml:"expires_in"`
	ExpiresAt        Time     `yaml:"expires_at"`
}

func (a *addCap) check() error {
	errs := []error{a.capTarget.check()}
	bad := func(field, msg string) { errs = append(errs, &fieldError{Field: field, Err: errors.New(msg)}) }
	switch {
	case !a.Value.Set:
		bad("value", "required: the cap's ceiling, in credit (default rune)")
	case a.Value.Value < 0:
		bad("value", "must not be negative")
	}
	if len(a.SharedWith) > 0 && !a.Shared {
		bad("shared_with", "only shared caps bind other customers; add shared: true")
	}
	if a.ResetInc != "" {
		// The engine reads reset_inc as a Limitr duration; catch a typo here.
		if d, err := quantity.ParseDuration(string(a.ResetInc)); err != nil || d <= 0 {
			bad("reset_inc", fmt.Sprintf("want a positive duration such as 1day or 30days, got %q", string(a.ResetInc)))
		}
	}
	if a.ResetInc != "" && a.ResetSch != "" {
		bad("reset_sch", "reset_inc and reset_sch exclude each other")
	}
	if a.ExpiresIn.Set && a.ExpiresAt.Set {
		bad("expires_at", "expires_in and expires_at exclude each other")
	}
	if a.ExpiresIn.Set && a.ExpiresIn.D <= 0 {
		bad("expires_in", "must be positive")
	}
	return errors.Join(errs...)
}

func (a *addCap) Run(env *Env) (any, error) {
	c := limitr.Cap{
		ID: a.ID, Credit: a.Credit, Value: a.Value.Value,
		Shared: a.Shared, SharedWith: a.SharedWith, Scope: a.Scope,
		OverageOnly: a.OverageOnly, IgnoreGrants: a.IgnoreGrants, ObserveOnly: a.ObserveOnly,
		OverheadCost: a.OverheadCost, FollowDecrements: a.FollowDecrements, HardTrailing: a.HardTrailing,
		Resets: a.Resets, ResetInc: string(a.ResetInc), ResetSch: a.ResetSch,
	}
	switch {
	case a.ExpiresIn.Set:
		c.ExpiresAt = env.Clock.Now().Add(a.ExpiresIn.D)
	case a.ExpiresAt.Set:
		c.ExpiresAt = a.ExpiresAt.Time
	}
	return nil, env.Policy.AddCustomerCap(env.Ctx, a.Customer, c)
}

type resetCap struct {
	capTarget `yaml:",inline"`
}

func (a *resetCap) Run(env *Env) (any, error) {
	return nil, env.Policy.ResetCustomerCap(env.Ctx, a.Customer, a.ID)
}

type removeCap struct {
	capTarget `yaml:",inline"`
}

func (a *removeCap) Run(env *Env) (any, error) {
	return nil, env.Policy.RemoveCustomerCap(env.Ctx, a.Customer, a.ID)
}

// capFields are the keys of a cap's JSON form that expect_cap may match.
var capFields = []string{"credit", "value", "meter_value", "shared", "shared_with", "scope", "overage_only", "ignore_grants",
	"observe_only", "overhead_cost", "follow_decrements", "hard_trailing", "resets", "reset_inc", "reset_sch",
	"started", "last_reset", "created_on", "expires_on"}

// expectCap matches a cap partially: `{customer: org, id: budget, meter_value: 0.5}`,
// or `{customer: org, id: budget, exists: false}`.
type expectCap struct {
	capTarget
	Exists *bool
	Fields map[string]any
	Source string
}

func (a *expectCap) UnmarshalYAML(n *yaml.Node) error {
	m, err := partialMapping(n, append([]string{"customer", "id", "exists"}, capFields...), nil)
	if err != nil {
		return err
	}
	a.Customer, _ = m["customer"].(string)
	a.ID, _ = m["id"].(string)
	if e, ok := m["exists"]; ok {
		b, ok := e.(bool)
		if !ok {
			return fieldErr("exists", n, "must be true or false")
		}
		a.Exists = &b
	}
	delete(m, "customer")
	delete(m, "exists")
	a.Fields = m
	a.Source = compactJSON(jsonable(m))
	return nil
}

func (a *expectCap) check() error {
	err := a.capTarget.check()
	if a.Exists != nil && !*a.Exists && len(a.Fields) > 1 {
		err = errors.Join(err, &fieldError{Field: "exists", Err: errors.New("a cap that does not exist has no fields to match")})
	}
	return err
}

func (a *expectCap) Run(env *Env) (any, error) {
	c, err := env.Policy.CustomerCap(env.Ctx, a.Customer, a.ID)
	if a.Exists != nil && !*a.Exists {
		if err == nil {
			return nil, &Mismatch{Reason: "cap exists", Expected: fmt.Sprintf("no cap %q on %q", a.ID, a.Customer), Got: compactJSON(c)}
		}
		if !errors.Is(err, limitr.ErrUnknownCap) {
			return nil, &Mismatch{Reason: "unexpected error", Expected: "unknown cap", Got: "error " + quote(err.Error())}
		}
		return nil, nil
	}
	if err != nil {
		return nil, &Mismatch{Reason: "unexpected error", Expected: a.Source, Got: "error " + quote(err.Error())}
	}
	raw, err := asMap(c)
	if err != nil {
		return nil, err
	}
	if diffs := matchValue("", a.Fields, raw); len(diffs) > 0 {
		return nil, &Mismatch{Reason: strings.Join(diffs, "\n"), Expected: a.Source, Got: compactJSON(raw)}
	}
	return nil, nil
}

// --- governor ------------------------------------------------------------------

type expectAllowance struct {
	numberRead `yaml:",inline"`
}

func (a *expectAllowance) Run(env *Env) (any, error) {
	v, err := env.Policy.Allowance(env.Ctx, a.Customer, a.Entitlement)
	return a.assert("allowance", v, err)
}

// --- reservations --------------------------------------------------------------

// reserveStep is `reserve: {customer, entitlement, amount, as: h1}`. Without amount the
// engine estimates it. The step's result is whether the hold was granted: a denied
// reservation is `expect: false`, not an error.
type reserveStep struct {
	target   `yaml:",inline"`
	Amount   Number   `yaml:"amount"`
	As       string   `yaml:"as"`
	TTL      Duration `yaml:"ttl"`
	Quantile Number   `yaml:"quantile"`
	Basis    Number   `yaml:"basis"`
	Segment  string   `yaml:"segment"`
	// ExpectAmount checks the amount held (useful when it was estimated).
	ExpectAmount Number `yaml:"expect_amount"`
}

func (a *reserveStep) check() error {
	errs := []error{a.target.check()}
	if a.Amount.Set && a.Amount.Value <= 0 {
		errs = append(errs, &fieldError{Field: "amount", Err: errors.New("must be positive; leave it out to let the engine estimate it")})
	}
	if a.Quantile.Set && (a.Quantile.Value <= 0 || a.Quantile.Value >= 1) {
		errs = append(errs, &fieldError{Field: "quantile", Err: errors.New("must be between 0 and 1 (exclusive), such as 0.9")})
	}
	if a.TTL.Set && a.TTL.D <= 0 {
		errs = append(errs, &fieldError{Field: "ttl", Err: errors.New("must be positive")})
	}
	if a.Basis.Set && a.Basis.Value <= 0 {
		errs = append(errs, &fieldError{Field: "basis", Err: errors.New("must be positive")})
	}
	return errors.Join(errs...)
}

func (a *reserveStep) Run(env *Env) (any, error) {
	var opts []limitr.CallOption
	if a.TTL.Set {
		opts = append(opts, limitr.WithHoldTTL(a.TTL.D))
	}
	if a.Quantile.Set {
		opts = append(opts, limitr.WithQuantile(a.Quantile.Value))
	}
	if a.Basis.Set {
		opts = append(opts, limitr.WithBasis(a.Basis.Value))
	}
	if a.Segment != "" {
		opts = append(opts, limitr.WithSegment(a.Segment))
	}
	h, err := env.Policy.Reserve(env.Ctx, a.Customer, a.Entitlement, a.Amount.Value, opts...)
	if errors.Is(err, limitr.ErrReservationDenied) {
		if a.As != "" {
			delete(env.Holds, a.As)
		}
		return false, nil
	}
	if err != nil {
		return nil, err
	}
	if a.As != "" {
		env.Holds[a.As] = h
	}
	if a.ExpectAmount.Set && !NumbersMatch(a.ExpectAmount.Value, h.Amount) {
		return true, &Mismatch{Reason: fmt.Sprintf("reserved amount on %s/%s differs", a.Customer, a.Entitlement), Expected: formatFloat(a.ExpectAmount.Value), Got: formatFloat(h.Amount)}
	}
	return true, nil
}

// holdRef names a hold stored by a reserve step; customer and entitlement default to
// the hold's own. Names stay bound after settle and release (a denied reserve with the
// same name unbinds it).
type holdRef struct {
	Customer    string `yaml:"customer"`
	Entitlement string `yaml:"entitlement"`
	Hold        string `yaml:"hold"`
}

func (r *holdRef) check() error { return required("hold", r.Hold) }

func (r *holdRef) resolve(env *Env) (customer, entitlement string, h limitr.Hold, err error) {
	h, ok := env.Holds[r.Hold]
	if !ok {
		names := sortedKeys(env.Holds)
		known := "none yet"
		if len(names) > 0 {
			known = strings.Join(names, ", ")
		}
		return "", "", h, &Mismatch{Reason: fmt.Sprintf("no hold named %q: name one with `as:` on a granted reserve step (held: %s)", r.Hold, known)}
	}
	customer, entitlement = r.Customer, r.Entitlement
	if customer == "" {
		customer = h.Customer
	}
	if entitlement == "" {
		entitlement = h.Entitlement
	}
	return customer, entitlement, h, nil
}

type settleStep struct {
	holdRef     `yaml:",inline"`
	callOptions `yaml:",inline"`
	Amount      Number `yaml:"amount"`
	Basis       Number `yaml:"basis"`
	Segment     string `yaml:"segment"`
}

func (a *settleStep) check() error {
	err := errors.Join(a.holdRef.check(), a.checkOptions())
	if !a.Amount.Set {
		err = errors.Join(err, &fieldError{Field: "amount", Err: errors.New("required: what the call really used")})
	}
	return err
}

func (a *settleStep) Run(env *Env) (any, error) {
	customer, ent, h, err := a.resolve(env)
	if err != nil {
		return nil, err
	}
	opts := a.opts()
	if a.Basis.Set {
		opts = append(opts, limitr.WithBasis(a.Basis.Value))
	}
	if a.Segment != "" {
		opts = append(opts, limitr.WithSegment(a.Segment))
	}
	// The name stays bound, so a later step can check that the engine refuses to release
	// a settled hold.
	return env.Policy.Settle(env.Ctx, customer, ent, h, a.Amount.Value, opts...)
}

type releaseStep struct {
	holdRef `yaml:",inline"`
}

func (a *releaseStep) Run(env *Env) (any, error) {
	customer, ent, h, err := a.resolve(env)
	if err != nil {
		return nil, err
	}
	return nil, env.Policy.Release(env.Ctx, customer, ent, h)
}

type expectHeld struct {
	numberRead `yaml:",inline"`
}

func (a *expectHeld) Run(env *Env) (any, error) {
	v, err := env.Policy.Held(env.Ctx, a.Customer, a.Entitlement)
	return a.assert("held", v, err)
}

// --- margins -------------------------------------------------------------------

// marginFields are the keys of a Margin's JSON form; entitlementMarginFields those of
// each entitlement's line.
var (
	marginFields            = []string{"revenue", "cost", "margin", "grant_covered_revenue", "topup_revenue", "entitlements"}
	entitlementMarginFields = []string{"usage", "limit", "revenue", "cost", "margin", "grant_covered_revenue", "topup_revenue"}
)

// marginExpectation is a partial Margin: every number named must match, lines not named
// are not checked; `error: text` expects the read to fail instead.
type marginExpectation struct {
	Fields map[string]any
	Error  string
	Source string
}

func (x *marginExpectation) take(m map[string]any, n *yaml.Node) error {
	if e, ok := m["error"]; ok {
		s, ok := e.(string)
		if !ok || s == "" {
			return fieldErr("error", n, "must be a non-empty string (a substring of the expected error)")
		}
		x.Error = s
		delete(m, "error")
	}
	if x.Error != "" && len(m) > 0 {
		return fieldErr("error", n, "error excludes %s: a failed read has no numbers", strings.Join(sortedKeys(m), ", "))
	}
	if x.Error == "" && len(m) == 0 {
		return fieldErr("", n, "nothing to check: give revenue, cost, margin, entitlements or error")
	}
	x.Fields = m
	x.Source = compactJSON(jsonable(m))
	return nil
}

func (x *marginExpectation) assert(what string, got limitr.Margin, err error) (any, error) {
	if x.Error != "" {
		if err == nil {
			return nil, &Mismatch{Reason: what + ": expected an error", Expected: "error containing " + quote(x.Error), Got: compactJSON(got)}
		}
		if !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(x.Error)) {
			return nil, &Mismatch{Reason: what + ": wrong error", Expected: "error containing " + quote(x.Error), Got: "error " + quote(err.Error())}
		}
		return nil, nil
	}
	if err != nil {
		return nil, &Mismatch{Reason: what + ": unexpected error", Expected: x.Source, Got: "error " + quote(err.Error())}
	}
	raw, err := asMap(got)
	if err != nil {
		return nil, err
	}
	if diffs := matchValue("", x.Fields, raw); len(diffs) > 0 {
		return nil, &Mismatch{Reason: what + ": " + strings.Join(diffs, "\n"), Expected: x.Source, Got: compactJSON(raw)}
	}
	return nil, nil
}

// entitlementMarginCheck validates the keys under entitlements.
func entitlementMarginCheck(path string, n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return fieldErr(path, n, "want a mapping of entitlement names to {revenue, cost, margin, ...}")
	}
	var errs []error
	for i := 0; i+1 < len(n.Content); i += 2 {
		name, v := n.Content[i].Value, n.Content[i+1]
		if _, err := partialMapping(v, entitlementMarginFields, nil); err != nil {
			errs = append(errs, within(path+"."+name, err))
		}
	}
	return errors.Join(errs...)
}

// expectMargin is `expect_margin: {customer: c, revenue: 0.2, cost: 0.15, margin: 25,
// entitlements: {ai-chat-input: {revenue: 0.2}}}`.
type expectMargin struct {
	Customer string
	marginExpectation
}

func (a *expectMargin) UnmarshalYAML(n *yaml.Node) error {
	m, err := partialMapping(n, append([]string{"customer", "error"}, marginFields...), map[string]func(string, *yaml.Node) error{"entitlements": entitlementMarginCheck})
	if err != nil {
		return err
	}
	a.Customer, _ = m["customer"].(string)
	delete(m, "customer")
	return a.take(m, n)
}

func (a *expectMargin) check() error { return required("customer", a.Customer) }

func (a *expectMargin) Run(env *Env) (any, error) {
	got, err := env.Policy.CustomerMarginSnapshot(env.Ctx, a.Customer)
	return a.assert("margin of "+a.Customer, got, err)
}

// usageEntry is one entitlement's hypothetical usage: `1500000`, `3GB`, or
// `{value: 1500000, limit: 700000, overhead: 4.5, context: {...}}` (or quantity: 3GB).
type usageEntry struct {
	Value    Number         `yaml:"value"`
	Quantity Scalar         `yaml:"quantity"`
	Limit    Number         `yaml:"limit"`
	Overhead Number         `yaml:"overhead"`
	Context  map[string]any `yaml:"context"`
}

func (u *usageEntry) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		var a Amount
		if err := a.UnmarshalYAML(n); err != nil {
			return err
		}
		if a.Quantity != "" {
			u.Quantity = Scalar(a.Quantity)
		} else {
			u.Value = Number{Value: a.Number, Set: true}
		}
		return nil
	}
	type plain usageEntry
	if err := decodeStrict(n, (*plain)(u)); err != nil {
		return err
	}
	switch {
	case u.Value.Set && u.Quantity != "":
		return fieldErr("quantity", n, "value and quantity exclude each other")
	case !u.Value.Set && u.Quantity == "":
		return fieldErr("value", n, "required: the period's usage as value (credit units) or quantity (such as 3GB)")
	}
	if u.Quantity != "" {
		if _, err := quantity.Parse(string(u.Quantity)); err != nil {
			return fieldErr("quantity", n, "%v", err)
		}
	}
	return nil
}

func (u usageEntry) usage() limitr.Usage {
	out := limitr.Usage{Value: u.Value.Value, Quantity: string(u.Quantity), Context: u.Context}
	if u.Limit.Set {
		v := u.Limit.Value
		out.Limit = &v
	}
	if u.Overhead.Set {
		v := u.Overhead.Value
		out.Overhead = &v
	}
	return out
}

// expectMarginSnapshot is `expect_margin_snapshot: {plan: growth, usage: {ai-chat-input:
// 1500000}, revenue: ..., entitlements: {...}}`.
type expectMarginSnapshot struct {
	Plan  string
	Usage map[string]usageEntry
	marginExpectation
}

func (a *expectMarginSnapshot) UnmarshalYAML(n *yaml.Node) error {
	m, err := partialMapping(n, append([]string{"plan", "usage", "error"}, marginFields...), map[string]func(string, *yaml.Node) error{"entitlements": entitlementMarginCheck})
	if err != nil {
		return err
	}
	a.Plan, _ = m["plan"].(string)
	if un := mappingValue(n, "usage"); un != nil {
		if un.Kind != yaml.MappingNode {
			return fieldErr("usage", un, "want a mapping of entitlement names to usage, such as {ai-chat-input: 1500000}")
		}
		a.Usage = map[string]usageEntry{}
		for i := 0; i+1 < len(un.Content); i += 2 {
			var u usageEntry
			if err := u.UnmarshalYAML(un.Content[i+1]); err != nil {
				return within("usage."+un.Content[i].Value, err)
			}
			a.Usage[un.Content[i].Value] = u
		}
	}
	delete(m, "plan")
	delete(m, "usage")
	return a.take(m, n)
}

func (a *expectMarginSnapshot) check() error {
	err := required("plan", a.Plan)
	if len(a.Usage) == 0 {
		err = errors.Join(err, &fieldError{Field: "usage", Err: errors.New("required: a mapping of entitlement names to usage")})
	}
	return err
}

func (a *expectMarginSnapshot) Run(env *Env) (any, error) {
	usage := make(map[string]limitr.Usage, len(a.Usage))
	for name, u := range a.Usage {
		usage[name] = u.usage()
	}
	got, err := env.Policy.MarginSnapshot(env.Ctx, a.Plan, usage)
	return a.assert("margin snapshot of plan "+a.Plan, got, err)
}

// ensureSubscription accepts `ensure_subscription: c` or `{customer: c}`.
type ensureSubscription struct {
	Customer string `yaml:"customer"`
}

func (a *ensureSubscription) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		a.Customer = n.Value
		return nil
	}
	type plain ensureSubscription
	return decodeStrict(n, (*plain)(a))
}

func (a *ensureSubscription) check() error { return required("customer", a.Customer) }

func (a *ensureSubscription) Run(env *Env) (any, error) {
	return env.Policy.EnsurePlanSubscription(env.Ctx, a.Customer)
}

// --- save and restore ----------------------------------------------------------

// saveAndRestore is `save_and_restore: {}`: every customer is saved with Customers() and
// encoded as JSON, a brand new policy is loaded from the same document on the same
// clock, and the customers are restored into it with LoadCustomers. Later steps run
// against the new policy. The step fails if the restored customers do not encode to
// the same JSON, or if a read (value, remaining, limit, allowance, held, resets,
// margin) of any metered entitlement differs.
type saveAndRestore struct{}

func (a *saveAndRestore) UnmarshalYAML(n *yaml.Node) error {
	if (n.Kind == yaml.MappingNode && len(n.Content) == 0) || (n.Kind == yaml.ScalarNode && (n.Tag == "!!null" || n.Value == "")) {
		return nil
	}
	return fieldErr("", n, "takes no arguments: write `save_and_restore: {}`")
}

func (a *saveAndRestore) Run(env *Env) (any, error) {
	old := env.Policy
	saved, err := old.Customers(env.Ctx)
	if err != nil {
		return nil, fmt.Errorf("save: %w", err)
	}
	data, err := json.Marshal(saved)
	if err != nil {
		return nil, fmt.Errorf("save: %w", err)
	}
	before := takeReads(env, old, saved)

	var loaded []*limitr.Customer
	if err := json.Unmarshal(data, &loaded); err != nil {
		return nil, fmt.Errorf("restore: decoding the saved customers: %w", err)
	}
	fresh, err := env.Scenario.open(env.Clock)
	if err != nil {
		return nil, fmt.Errorf("restore: loading the policy: %w", err)
	}
	if err := fresh.LoadCustomers(env.Ctx, loaded); err != nil {
		fresh.Close(env.Ctx)
		return nil, fmt.Errorf("restore: %w", err)
	}
	old.RemoveHandler("scenario")
	old.Close(env.Ctx)
	env.attach(fresh)

	restored, err := fresh.Customers(env.Ctx)
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	again, err := json.Marshal(restored)
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	var diffs []string
	if string(again) != string(data) {
		var want, got any
		_ = json.Unmarshal(data, &want)
		_ = json.Unmarshal(again, &got)
		diffs = append(diffs, jsonDiff("customers", want, got)...)
	}
	after := takeReads(env, fresh, saved)
	for _, k := range sortedKeys(before) {
		if before[k] != after[k] {
			diffs = append(diffs, fmt.Sprintf("%s: %s before, %s after", k, before[k], after[k]))
		}
	}
	if len(diffs) > 0 {
		return nil, &Mismatch{Reason: "the restored policy differs from the saved one:\n" + strings.Join(diffs, "\n")}
	}
	return nil, nil
}

// takeReads renders every read of every metered entitlement, and each customer's
// margin, as text keyed by what was read.
func takeReads(env *Env, p *limitr.Policy, customers []*limitr.Customer) map[string]string {
	out := map[string]string{}
	num := func(v float64, err error) string {
		if err != nil {
			return "error " + quote(err.Error())
		}
		return formatFloat(v)
	}
	for _, c := range customers {
		for _, ent := range sortedKeys(c.Meters) {
			at := c.ID + "/" + ent + " "
			out[at+"value"] = num(p.Value(env.Ctx, c.ID, ent))
			out[at+"remaining"] = num(p.Remaining(env.Ctx, c.ID, ent))
			out[at+"limit"] = num(p.Limit(env.Ctx, c.ID, ent))
			out[at+"allowance"] = num(p.Allowance(env.Ctx, c.ID, ent))
			out[at+"held"] = num(p.Held(env.Ctx, c.ID, ent))
			t, err := p.Resets(env.Ctx, c.ID, ent)
			out[at+"resets"] = fmt.Sprint(t.UTC(), err)
		}
		credits := map[string]bool{}
		for _, g := range c.Grants {
			credits[g.Credit] = true
		}
		for _, cr := range sortedKeys(credits) {
			out[c.ID+" remaining credit "+cr] = num(p.RemainingCredit(env.Ctx, c.ID, cr))
		}
		m, err := p.CustomerMarginSnapshot(env.Ctx, c.ID)
		out[c.ID+" margin"] = fmt.Sprint(compactJSON(m), err)
	}
	return out
}

// jsonDiff lists the paths where two decoded JSON values differ.
func jsonDiff(path string, want, got any) []string {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return []string{fmt.Sprintf("%s: %s before, %s after", path, compactJSON(want), compactJSON(got))}
		}
		var out []string
		keys := sortedKeys(w)
		for k := range g {
			if _, ok := w[k]; !ok {
				keys = append(keys, k)
			}
		}
		slices.Sort(keys)
		for _, k := range keys {
			out = append(out, jsonDiff(path+"."+k, w[k], g[k])...)
		}
		return out
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			return []string{fmt.Sprintf("%s: %s before, %s after", path, compactJSON(want), compactJSON(got))}
		}
		var out []string
		for i := range w {
			out = append(out, jsonDiff(fmt.Sprintf("%s[%d]", path, i), w[i], g[i])...)
		}
		return out
	}
	if compactJSON(want) != compactJSON(got) {
		return []string{fmt.Sprintf("%s: %s before, %s after", path, compactJSON(want), compactJSON(got))}
	}
	return nil
}

// --- helpers -------------------------------------------------------------------

// partialMapping decodes a mapping for a partial match, rejecting keys not in known
// (with a hint); nested, when set for a key, validates that key's value node.
func partialMapping(n *yaml.Node, known []string, nested map[string]func(string, *yaml.Node) error) (map[string]any, error) {
	if n.Kind != yaml.MappingNode {
		return nil, fieldErr("", n, "want a mapping of %s", strings.Join(known, ", "))
	}
	var errs []error
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		switch {
		case !slices.Contains(known, k.Value):
			errs = append(errs, fieldErr(k.Value, k, "unknown field%s (known: %s)", suggest(k.Value, known), strings.Join(known, ", ")))
		case seen[k.Value]:
			errs = append(errs, fieldErr(k.Value, k, "given twice"))
		case nested[k.Value] != nil:
			if err := nested[k.Value](k.Value, n.Content[i+1]); err != nil {
				errs = append(errs, err)
			}
		}
		seen[k.Value] = true
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	var m map[string]any
	if err := n.Decode(&m); err != nil {
		return nil, fieldErr("", n, "%v", err)
	}
	if m == nil {
		m = map[string]any{}
	}
	return m, nil
}

// mappingValue returns the value node of key in mapping n, or nil.
func mappingValue(n *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

// asMap is v's JSON form decoded into a map, for matchValue.
func asMap(v any) (map[string]any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	out := map[string]any{}
	return out, json.Unmarshal(b, &out)
}
