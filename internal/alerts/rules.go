package alerts

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/policies"
	"github.com/limitr/limitr/internal/policies/expr"
	"github.com/limitr/limitr/internal/validation"
)

// Rule kinds. The usage kinds are evaluated by the worker as usage is aggregated; the
// event kinds when an SDK forwards an engine event; the billing kinds when an invoice
// or its Stripe mirror changes.
const (
	KindUsagePercent         = "usage_percent"          // thresholds: percent of the effective limit, per entitlement
	KindSpend                = "spend"                  // amount: invoice-to-date amount reaches it
	KindGrantBalanceBelow    = "grant_balance_below"    // balance: a credit's remaining grant balance drops below it
	KindMarginBelow          = "margin_below"           // percent: the period's margin so far drops below it
	KindForecastExceedsLimit = "forecast_exceeds_limit" // at the current rate the limit is reached before the period ends
	KindCapHit               = "cap_hit"                // an SDK reports a cap limit (cap-limit)
	KindNotification         = "notification"           // an SDK reports a named policy notification
	KindInvoiceFinalized     = "invoice_finalized"
	KindPaymentFailed        = "payment_failed"
	KindStripeSyncFailed     = "stripe_sync_failed"
)

// Kinds lists every rule kind, in documentation order.
var Kinds = []string{KindUsagePercent, KindSpend, KindGrantBalanceBelow, KindMarginBelow, KindForecastExceedsLimit,
	KindCapHit, KindNotification, KindInvoiceFinalized, KindPaymentFailed, KindStripeSyncFailed}

// Limits on a rule's size, so one rule cannot make evaluation expensive.
const (
	maxThresholds = 20
	maxFilter     = 100
	maxChannels   = 20
	maxCondition  = 4096
	maxName       = 200
)

// Rule decides when an alert fires and where it goes.
type Rule struct {
	ID        uuid.UUID   `json:"id"`
	Name      string      `json:"name"`
	Kind      string      `json:"kind"`
	Params    Params      `json:"params"`
	Filters   Filters     `json:"filters"`
	Condition string      `json:"condition,omitempty"`
	Channels  []uuid.UUID `json:"channels"`
	Enabled   bool        `json:"enabled"`
	CreatedAt time.Time   `json:"created_at"`
	UpdatedAt time.Time   `json:"updated_at"`

	cond *expr.Match // compiled Condition, nil when empty
}

// Params are a rule's kind-specific parameters. Numbers are exact decimals, written
// as JSON numbers or strings.
type Params struct {
	// Thresholds (usage_percent) are percents of the effective limit, ascending.
	Thresholds []num.Dec `json:"thresholds,omitempty"`
	// Amount (spend) is the invoice-to-date amount, in the invoice currency.
	Amount *num.Dec `json:"amount,omitempty"`
	// Balance (grant_balance_below) is the remaining grant balance, in the credit's unit.
	Balance *num.Dec `json:"balance,omitempty"`
	// Credit (grant_balance_below) narrows the rule to one credit; "" is every credit.
	Credit string `json:"credit,omitempty"`
	// Percent (margin_below) is the margin percent.
	Percent *num.Dec `json:"percent,omitempty"`
	// MinElapsedPercent (forecast_exceeds_limit) is how much of the period must have
	// passed before a forecast is trusted (default 10).
	MinElapsedPercent *num.Dec `json:"min_elapsed_percent,omitempty"`
	// Notification (notification) is the policy notification's name.
	Notification string `json:"notification,omitempty"`
}

// Filters narrow a rule; an empty list matches everything.
type Filters struct {
	Plans         []string `json:"plans,omitempty"`
	Customers     []string `json:"customers,omitempty"`
	CustomerTypes []string `json:"customer_types,omitempty"`
	Entitlements  []string `json:"entitlements,omitempty"`
}

// RuleInput creates a rule (POST) or, with Patch, changes the fields it sets.
type RuleInput struct {
	Name      *string     `json:"name"`
	Kind      *string     `json:"kind"`
	Params    *Params     `json:"params"`
	Filters   *Filters    `json:"filters"`
	Condition *string     `json:"condition"`
	Channels  *[]string   `json:"channels"`
	Enabled   *bool       `json:"enabled"`
	channels  []uuid.UUID // parsed Channels
}

// apply lays the set fields of in over r.
func (in *RuleInput) apply(r *Rule) {
	if in.Name != nil {
		r.Name = strings.TrimSpace(*in.Name)
	}
	if in.Kind != nil {
		r.Kind = *in.Kind
	}
	if in.Params != nil {
		r.Params = *in.Params
	}
	if in.Filters != nil {
		r.Filters = *in.Filters
	}
	if in.Condition != nil {
		r.Condition = strings.TrimSpace(*in.Condition)
	}
	if in.Channels != nil {
		r.Channels = in.channels
	}
	if in.Enabled != nil {
		r.Enabled = *in.Enabled
	}
}

// parseChannels checks the channel ids' syntax.
func (in *RuleInput) parseChannels(errs *validation.Errors) {
	if in.Channels == nil {
		return
	}
	in.channels = make([]uuid.UUID, 0, len(*in.Channels))
	if len(*in.Channels) > maxChannels {
		errs.Addf("channels", "at most %d channels", maxChannels)
		return
	}
	for i, raw := range *in.Channels {
		id, err := uuid.Parse(raw)
		if err != nil {
			errs.Addf(fmt.Sprintf("channels[%d]", i), "must be a channel id, got %q", raw)
			continue
		}
		if slices.Contains(in.channels, id) {
			errs.Addf(fmt.Sprintf("channels[%d]", i), "is listed twice")
			continue
		}
		in.channels = append(in.channels, id)
	}
}

// validate checks a whole rule against the active policy (nil: none yet) and the
// environment's channels, naming every bad field.
func (r *Rule) validate(p *policies.Policy, known map[uuid.UUID]bool, errs *validation.Errors) {
	switch {
	case r.Name == "":
		errs.Add("name", "is required")
	default:
		errs.AddField(validation.Text("name", r.Name, maxName))
	}
	if !slices.Contains(Kinds, r.Kind) {
		errs.Addf("kind", "must be one of %s, got %q", strings.Join(Kinds, ", "), r.Kind)
	}
	r.validateParams(p, errs)
	r.validateFilters(p, errs)
	r.cond = nil
	if r.Condition != "" {
		if len(r.Condition) > maxCondition {
			errs.Addf("condition", "is longer than %d bytes", maxCondition)
		} else if m, err := expr.CompileMatch(r.Condition); err != nil {
			errs.Add("condition", err.Error())
		} else {
			r.cond = m
		}
	}
	if len(r.Channels) == 0 {
		errs.Add("channels", "name at least one channel")
	}
	for i, id := range r.Channels {
		if !known[id] {
			errs.Addf(fmt.Sprintf("channels[%d]", i), "no channel %s in this environment", id)
		}
	}
}

func (r *Rule) validateParams(p *policies.Policy, errs *validation.Errors) {
	pr := &r.Params
	positive := func(path string, d *num.Dec) {
		switch {
		case d == nil:
			errs.Add(path, "is required")
		case d.IsNeg():
			errs.Add(path, "must not be negative")
		}
	}
	switch r.Kind {
	case KindUsagePercent:
		if len(pr.Thresholds) == 0 {
			errs.Add("params.thresholds", "list at least one percent, such as [80, 100]")
		}
		if len(pr.Thresholds) > maxThresholds {
			errs.Addf("params.thresholds", "at most %d thresholds", maxThresholds)
		}
		for i, t := range pr.Thresholds {
			if !t.IsPos() || t.Cmp(num.FromInt(10_000)) > 0 {
				errs.Addf(fmt.Sprintf("params.thresholds[%d]", i), "must be a percent above 0 and at most 10000, got %s", t)
			}
		}
		slices.SortFunc(pr.Thresholds, num.Dec.Cmp)
		pr.Thresholds = slices.CompactFunc(pr.Thresholds, func(a, b num.Dec) bool { return a.Cmp(b) == 0 })
	case KindSpend:
		positive("params.amount", pr.Amount)
	case KindGrantBalanceBelow:
		positive("params.balance", pr.Balance)
		if pr.Credit != "" && p != nil && p.Credit(pr.Credit) == nil {
			errs.Addf("params.credit", "the active policy has no credit %q", pr.Credit)
		}
	case KindMarginBelow:
		if pr.Percent == nil {
			errs.Add("params.percent", "is required")
		} else if pr.Percent.Cmp(num.FromInt(100)) > 0 {
			errs.Add("params.percent", "must be at most 100")
		}
	case KindForecastExceedsLimit:
		if d := pr.MinElapsedPercent; d != nil && (d.IsNeg() || d.Cmp(num.FromInt(100)) >= 0) {
			errs.Add("params.min_elapsed_percent", "must be at least 0 and below 100")
		}
	case KindNotification:
		switch {
		case pr.Notification == "":
			errs.Add("params.notification", "is required: the name of a policy notification")
		case p != nil && !slices.ContainsFunc(p.Notifications, func(n *policies.CompiledNotification) bool { return n.Name == pr.Notification }):
			errs.Addf("params.notification", "the active policy has no notification %q", pr.Notification)
		}
	}
}

func (r *Rule) validateFilters(p *policies.Policy, errs *validation.Errors) {
	f := &r.Filters
	lists := []struct {
		path string
		vals []string
	}{{"filters.plans", f.Plans}, {"filters.customers", f.Customers}, {"filters.customer_types", f.CustomerTypes}, {"filters.entitlements", f.Entitlements}}
	for _, l := range lists {
		if len(l.vals) > maxFilter {
			errs.Addf(l.path, "at most %d values", maxFilter)
			continue
		}
		for i, v := range l.vals {
			errs.AddField(validation.Required(fmt.Sprintf("%s[%d]", l.path, i), v))
		}
	}
	if p == nil {
		return
	}
	for i, name := range f.Plans {
		if p.Plan(name) == nil {
			errs.Addf(fmt.Sprintf("filters.plans[%d]", i), "the active policy has no plan %q", name)
		}
	}
	for i, name := range f.Entitlements {
		if _, ok := p.EntitlementIndex(name); !ok {
			errs.Addf(fmt.Sprintf("filters.entitlements[%d]", i), "the active policy has no entitlement %q", name)
		}
	}
}

// Subject is the customer an observation concerns.
type Subject struct {
	UID  uuid.UUID
	ID   string
	Type string
	Plan string // the resolved plan
}

// Observation is a fact a rule may fire on: a meter's standing after aggregation, an
// SDK's event, a billing event. Producers fill the fields their kind uses.
type Observation struct {
	Kind     string // the rule kind it feeds
	Customer Subject
	// Entitlement and Credit name the meter or credit concerned, when there is one.
	Entitlement string
	Credit      string
	// Value is what the rule's parameter is compared with: the percent of the limit
	// (usage_percent), the invoice-to-date amount (spend), the remaining balance
	// (grant_balance_below), the margin percent (margin_below), the forecast units
	// at the period's end (forecast_exceeds_limit).
	Value num.Dec
	// Limit is the effective limit, where there is one.
	Limit num.Dec
	// Period is the period the alert fires once in: the meter period for usage, the
	// billing period for spend and margin, the grant period for a grant's balance.
	PeriodStart, PeriodEnd time.Time
	// Key distinguishes observations of one kind, customer and period that must fire
	// separately: a grant id, a cap id, an invoice id.
	Key string
	// Notification is the policy notification's name (notification).
	Notification string
	// At is when it was observed (event time for SDK events).
	At time.Time
	// Data is what the rule's condition sees as `event`, and what the alert keeps.
	Data map[string]any
}

// firing is one alert a rule raises for an observation.
type firing struct {
	rule      *Rule
	obs       *Observation
	threshold string
	dedupKey  string
	title     string
	summary   string
}

// match returns what r raises for o: nothing, one firing, or (usage_percent) one per
// threshold crossed, highest last.
func (r *Rule) match(o *Observation) []firing {
	if !r.Enabled || r.Kind != o.Kind || !r.passesFilters(o) {
		return nil
	}
	if r.cond != nil {
		if ok, _ := r.cond.Eval(o.Kind, o.Data); !ok {
			return nil
		}
	}
	period := ""
	if !o.PeriodStart.IsZero() {
		period = o.PeriodStart.UTC().Format(time.RFC3339Nano)
	}
	key := func(threshold string) string {
		return strings.Join([]string{o.Customer.UID.String(), o.Entitlement, o.Credit, o.Key, threshold, period}, "|")
	}
	one := func(threshold, title, summary string) []firing {
		return []firing{{rule: r, obs: o, threshold: threshold, dedupKey: key(threshold), title: title, summary: summary}}
	}
	who := o.Customer.ID
	pr := r.Params
	switch r.Kind {
	case KindUsagePercent:
		var out []firing
		for _, t := range pr.Thresholds {
			if o.Value.Cmp(t) >= 0 {
				ts := t.String()
				out = append(out, firing{rule: r, obs: o, threshold: ts, dedupKey: key(ts),
					title:   fmt.Sprintf("%s reached %s%% of %s", who, ts, o.Entitlement),
					summary: fmt.Sprintf("%s has used %s%% of its %s limit of %s.", who, round2(o.Value), o.Entitlement, o.Limit)})
			}
		}
		return out
	case KindSpend:
		if pr.Amount != nil && o.Value.Cmp(*pr.Amount) >= 0 {
			return one(pr.Amount.String(), fmt.Sprintf("%s spent %s this period", who, o.Value),
				fmt.Sprintf("%s's invoice to date is %s, past the %s alert.", who, o.Value, pr.Amount))
		}
	case KindGrantBalanceBelow:
		if pr.Balance != nil && (pr.Credit == "" || pr.Credit == o.Credit) && o.Value.Cmp(*pr.Balance) < 0 {
			return one(pr.Balance.String(), fmt.Sprintf("%s's %s grant balance is below %s", who, o.Credit, pr.Balance),
				fmt.Sprintf("%s has %s %s left in grants.", who, o.Value, o.Credit))
		}
	case KindMarginBelow:
		if pr.Percent != nil && o.Value.Cmp(*pr.Percent) < 0 {
			return one(pr.Percent.String(), fmt.Sprintf("%s's margin fell below %s%%", who, pr.Percent),
				fmt.Sprintf("%s's margin this period so far is %s%%.", who, round2(o.Value)))
		}
	case KindForecastExceedsLimit:
		if o.Value.Cmp(o.Limit) >= 0 && pr.elapsedEnough(o) {
			at, _ := o.Data["expected_at"].(string)
			return one("", fmt.Sprintf("%s is on course to exceed %s", who, o.Entitlement),
				fmt.Sprintf("At its current rate %s reaches its %s limit of %s at %s, before the period ends.", who, o.Entitlement, o.Limit, at))
		}
	case KindCapHit:
		return one("", fmt.Sprintf("%s hit a cap on %s", who, o.Entitlement), fmt.Sprintf("Cap %s of %s was reached.", o.Key, who))
	case KindNotification:
		if o.Notification == pr.Notification {
			return one("", fmt.Sprintf("%s: %s", o.Notification, who), fmt.Sprintf("Policy notification %s matched for %s.", o.Notification, who))
		}
	case KindInvoiceFinalized, KindPaymentFailed, KindStripeSyncFailed:
		title, _ := o.Data["title"].(string)
		summary, _ := o.Data["summary"].(string)
		return one("", title, summary)
	}
	return nil
}

// defaultMinElapsed is how much of the period must have passed, by default, before a
// forecast is trusted: early in a period a burst extrapolates to nonsense.
var defaultMinElapsed = num.FromInt(10)

// elapsedEnough reports whether the observation's period is far enough along
// (Data["elapsed_percent"], as the evaluator writes it) for the rule to trust its
// forecast. An observation that does not say is trusted.
func (pr Params) elapsedEnough(o *Observation) bool {
	least := defaultMinElapsed
	if pr.MinElapsedPercent != nil {
		least = *pr.MinElapsedPercent
	}
	f, ok := o.Data["elapsed_percent"].(float64)
	if !ok {
		return true
	}
	elapsed, err := num.FromFloat64(f)
	return err != nil || elapsed.Cmp(least) >= 0
}

func (r *Rule) passesFilters(o *Observation) bool {
	f := r.Filters
	in := func(list []string, v string) bool { return len(list) == 0 || slices.Contains(list, v) }
	return in(f.Plans, o.Customer.Plan) && in(f.Customers, o.Customer.ID) &&
		in(f.CustomerTypes, o.Customer.Type) && (len(f.Entitlements) == 0 || in(f.Entitlements, o.Entitlement))
}

func round2(d num.Dec) string { return d.Round(2).Trim(0).String() }

// ruleRow is how a rule is stored.
type ruleRow struct {
	params, filters []byte
}

func (r *Rule) encode() (ruleRow, error) {
	params, err := json.Marshal(r.Params)
	if err != nil {
		return ruleRow{}, err
	}
	filters, err := json.Marshal(r.Filters)
	if err != nil {
		return ruleRow{}, err
	}
	return ruleRow{params: params, filters: filters}, nil
}
