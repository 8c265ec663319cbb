package enforcement

import (
	"bytes"
	"encoding/json"
	"slices"
	"strconv"
	"time"

	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/policies"
	"github.com/limitr/limitr/internal/policies/doctree"
)

// Event types, named as the reference engine names them.
const (
	EventMeterChanged         = "meter-changed"
	EventMeterOverage         = "meter-overage"
	EventMeterLimit           = "meter-limit"
	EventMeterReset           = "meter-reset"
	EventCustomerSet          = "customer-set"
	EventCustomerRemoved      = "customer-removed"
	EventCustomerPlanChanged  = "customer-plan-changed"
	EventMeterGoverned        = "meter-governed"
	EventCapLimit             = "cap-limit"
	EventCapThresholdCrossed  = "cap-threshold-crossed"
	EventCustomerTopupGranted = "customer-topup-granted"
	EventCustomerCapAdded     = "customer-cap-added"
	EventCustomerCapReset     = "customer-cap-reset"
	EventCustomerCapRemoved   = "customer-cap-removed"
)

// Event is a state change, delivered synchronously to handlers after it happened.
type Event struct {
	Type string
	Time time.Time
	// Customer is the customer concerned: for meter events, the meter's owner.
	Customer          *Customer
	Caller            string
	Entitlement       string
	Plan              string
	Credit            string
	Meter             *MeterChange
	Remaining         *float64
	Overage           *float64
	GrantValueApplied *float64
	OveragePrice      *float64
	InvalidValue      *float64
	EventData         map[string]any
	PreviousPlan      string
	NewPlan           string
	Governor          *GovernorState
	Cap               *Cap
	CapID             string
	Topup             *TopupGranted
	// Notification is set when the event is delivered under a policy notification's
	// name (Type is then that name, and Source the original event type).
	Notification string
	Source       string
	// PeriodStart is the start of the meter's current period, for meter events.
	PeriodStart time.Time

	credit   *policies.CompiledCredit
	topupDef *policies.CompiledTopup
	shape    string // the payload shape: for meter-reset, the call's main event type
}

// GovernorState is the governor part of a meter-governed payload.
type GovernorState struct {
	Tokens    float64
	Capacity  float64
	Requested float64
}

// MeterChange is the meter part of a meter event's payload.
type MeterChange struct {
	Old          float64
	Value        float64
	Limit        float64
	Invalid      *float64
	Diff         float64
	Overhead     float64
	OverheadDiff float64
	PriceDiff    *float64
}

type namedHandler struct {
	name   string
	mask   eventMask
	fn     func(Event)
	repeat func(EventRef) bool // see WithRepeats; nil: every event is built
}

// EventRef names an event before it is built: its type, the customer concerned (as
// Event.Customer.ID), the entitlement and the cap. Repeats of one alert share it.
type EventRef struct {
	Type        string
	Customer    string
	Entitlement string
	CapID       string
}

// HandlerOption configures AddHandlerFor.
type HandlerOption func(*namedHandler)

// WithRepeats lets a handler that keeps one event per EventRef (coalescing repeats)
// spare the calls building events it would only count. Before building a meter-limit,
// meter-overage, cap-limit or meter-governed event that no other handler and no
// policy notification needs, the engine asks repeat; true means the handler has
// accounted for the occurrence (a repeat of one it holds, or one it would drop), and
// the event is not built nor delivered. repeat runs on the calling goroutine with the
// customer's lock held: it must be quick and must not call back into the engine.
func WithRepeats(repeat func(EventRef) bool) HandlerOption {
	return func(h *namedHandler) { h.repeat = repeat }
}

// handlerSet is what dispatch reads: the handlers in registration order and the union
// of what they want, so a call can tell without a loop whether to build events at all.
type handlerSet struct {
	list []namedHandler
	mask eventMask
}

// eventMask is a set of event types, one bit per engine type, plus notification
// deliveries and types the engine does not know.
type eventMask uint32

const (
	maskNotifications eventMask = 1 << 30 // deliveries under a policy notification's name
	maskOther         eventMask = 1 << 31 // a type without its own bit
	maskAll                     = ^eventMask(0)
)

// NotificationEvents, in AddHandlerFor's types, selects every delivery under a policy
// notification's name (Event.Notification set), whatever event it matched.
const NotificationEvents = "notifications"

// eventTypes gives each engine event type its bit in an eventMask, by position.
var eventTypes = [...]string{
	EventMeterChanged, EventMeterOverage, EventMeterLimit, EventMeterReset, EventCustomerSet,
	EventCustomerRemoved, EventCustomerPlanChanged, EventMeterGoverned, EventCapLimit,
	EventCapThresholdCrossed, EventCustomerTopupGranted, EventCustomerCapAdded,
	EventCustomerCapReset, EventCustomerCapRemoved,
}

// bitOf is the bit of an event type (maskOther for a type the engine does not emit).
func bitOf(t string) eventMask {
	for i, et := range eventTypes {
		if et == t {
			return 1 << i
		}
	}
	return maskOther
}

// maskOf is the set of the named types; NotificationEvents selects notification
// deliveries, and a nil list every type and every notification.
func maskOf(types []string) eventMask {
	if types == nil {
		return maskAll
	}
	var m eventMask
	for _, t := range types {
		if t == NotificationEvents {
			m |= maskNotifications
		} else if b := bitOf(t); b != maskOther {
			m |= b
		}
	}
	return m
}

// Bits of the event types the hot path asks about.
var (
	bitChanged   = bitOf(EventMeterChanged)
	bitOverage   = bitOf(EventMeterOverage)
	bitLimit     = bitOf(EventMeterLimit)
	bitReset     = bitOf(EventMeterReset)
	bitGoverned  = bitOf(EventMeterGoverned)
	bitCapLimit  = bitOf(EventCapLimit)
	bitCrossed   = bitOf(EventCapThresholdCrossed)
	bitSet       = bitOf(EventCustomerSet)
	maskNotified = bitChanged | bitOverage | bitLimit | bitReset | bitGoverned | bitCapLimit | bitCrossed
)

// AddHandler registers fn under name for every event type and every policy
// notification, replacing a handler of the same name. Handlers run synchronously, in
// registration order, after the state change and outside any engine lock, so a
// handler may call back into the engine.
//
// A handler for every type makes every call build its events (a meter-changed for
// each allowed call); AddHandlerFor keeps calls cheap for a handler that wants a few.
func (e *Engine) AddHandler(name string, fn func(Event)) { e.AddHandlerFor(name, nil, fn) }

// AddHandlerFor registers fn under name for the event types listed (NotificationEvents
// selects policy notification deliveries; nil selects everything, as AddHandler),
// replacing a handler of the same name. Types the engine does not emit are ignored.
//
// Calls build only the events some handler wants: with handlers for meter-limit alone,
// an allowed call under its limit builds none and allocates nothing. Notification
// matching needs the events a notification may match, so a handler for
// NotificationEvents makes calls build them while the policy has notifications.
func (e *Engine) AddHandlerFor(name string, types []string, fn func(Event), opts ...HandlerOption) {
	if fn == nil {
		return
	}
	h := namedHandler{name: name, mask: maskOf(types), fn: fn}
	for _, o := range opts {
		o(&h)
	}
	e.hmu.Lock()
	defer e.hmu.Unlock()
	cur := e.handlers.Load().list
	next := slices.DeleteFunc(slices.Clone(cur), func(h namedHandler) bool { return h.name == name })
	next = append(next, h)
	e.handlers.Store(newHandlerSet(next))
}

// RemoveHandler unregisters a handler.
func (e *Engine) RemoveHandler(name string) {
	e.hmu.Lock()
	defer e.hmu.Unlock()
	cur := e.handlers.Load().list
	next := slices.DeleteFunc(slices.Clone(cur), func(h namedHandler) bool { return h.name == name })
	e.handlers.Store(newHandlerSet(next))
}

func newHandlerSet(list []namedHandler) *handlerSet {
	s := &handlerSet{list: list}
	for _, h := range list {
		s.mask |= h.mask
	}
	return s
}

// wanted is the set of event types a call under p must build: those some handler
// wants, and every type a notification may match when a handler wants notifications
// and p has some.
func (e *Engine) wanted(p *policies.Policy) eventMask {
	m := e.handlers.Load().mask
	if m&maskNotifications != 0 && len(p.Notifications) > 0 {
		m |= maskNotified
	}
	return m
}

// repeated reports whether the event ref names need not be built: the one handler
// that wants its type took it as a repeat (WithRepeats). It is false whenever anyone
// else could see the event: another handler for the type, or a policy notification
// (matching needs the payload).
func (e *Engine) repeated(p *policies.Policy, ref EventRef) bool {
	hs := e.handlers.Load()
	if hs.mask&maskNotifications != 0 && len(p.Notifications) > 0 {
		return false
	}
	bit := bitOf(ref.Type)
	var only *namedHandler
	for i := range hs.list {
		if hs.list[i].mask&bit != 0 {
			if only != nil {
				return false
			}
			only = &hs.list[i]
		}
	}
	return only != nil && only.repeat != nil && only.repeat(ref)
}

// capLimitRef names the cap-limit event denialEvents builds for a call stopped by cr.
func capLimitRef(res *resolution, cr capRef) EventRef {
	concerned := res.caller // a call's own ceiling
	if cr.holder != nil {
		concerned = cr.holder
	}
	return EventRef{Type: EventCapLimit, Customer: concerned.id, Entitlement: res.ce.Name, CapID: cr.cap.cfg.ID}
}

// emit delivers an event: first under the name of every policy notification whose
// condition matches it (meter and cap events only), then as itself, each to the
// handlers that want it.
func (e *Engine) emit(ev Event) {
	hs := e.handlers.Load()
	if hs.mask == 0 {
		return
	}
	if hs.mask&maskNotifications != 0 {
		if p := e.policy.Load(); len(p.Notifications) > 0 && notifiable(ev.Type) {
			var payload map[string]any
			if err := json.Unmarshal(ev.JSON(), &payload); err == nil {
				for _, n := range p.Notifications {
					if ok, _ := n.Match.Eval(ev.Type, payload); ok {
						nev := ev
						nev.Notification, nev.Source, nev.Type = n.Name, ev.Type, n.Name
						if nev.shape == "" {
							nev.shape = ev.Type
						}
						for _, h := range hs.list {
							if h.mask&maskNotifications != 0 {
								h.fn(nev)
							}
						}
					}
				}
			}
		}
	}
	bit := bitOf(ev.Type)
	if hs.mask&bit == 0 {
		return
	}
	for _, h := range hs.list {
		if h.mask&bit != 0 {
			h.fn(ev)
		}
	}
}

func notifiable(t string) bool {
	switch t {
	case EventMeterChanged, EventMeterOverage, EventMeterLimit, EventMeterReset, EventMeterGoverned,
		EventCapLimit, EventCapThresholdCrossed:
		return true
	}
	return false
}

func f64(d num.Dec) *float64 {
	f := num.Float64(d)
	return &f
}

// meterEvents builds a committed or denied call's events in the reference order:
// meter-overage, then meter-reset, then meter-changed; or meter-reset then meter-limit.
// Caller holds the owner's lock.
func (e *Engine) meterEvents(p *policies.Policy, res *resolution, d *decision, call *Call, now time.Time, draw grantDraw, left num.Dec) []Event {
	var c num.Calc
	l := d.limit
	base := e.baseEvent(p, res, d, call, now)
	priceDiff := e.priceDiff(p, l, d)
	var out []Event
	if !d.commit {
		ev := base
		ev.Type, ev.shape = EventMeterLimit, EventMeterLimit
		invalid := num.Float64(d.newValue)
		ev.Meter = &MeterChange{
			Value:        num.Float64(d.prior),
			Limit:        num.Float64(l.Value),
			Invalid:      &invalid,
			Diff:         num.Float64(d.amount),
			Overhead:     num.Float64(d.overheadBefore),
			OverheadDiff: num.Float64(d.overhead),
			PriceDiff:    priceDiff,
		}
		ev.InvalidValue = &invalid
		ev.Overage = f64(d.overage)
		if d.reset {
			r := ev
			r.Type = EventMeterReset
			out = append(out, r)
		}
		return append(out, ev)
	}
	ev := base
	ev.Meter = &MeterChange{
		Old:          num.Float64(d.prior),
		Value:        num.Float64(d.newValue),
		Limit:        num.Float64(l.Value),
		Diff:         num.Float64(c.Sub(d.newValue, d.meterValue)),
		Overhead:     num.Float64(c.Add(d.overheadBefore, d.overhead)),
		OverheadDiff: num.Float64(d.overhead),
		PriceDiff:    priceDiff,
	}
	ev.Remaining = f64(c.Sub(l.Value, d.newValue))
	grantsApply := l.GrantsApply && l.Mode != policies.Observe
	grantsInvolved := draw.applied.IsPos() || (grantsApply && d.overage.IsPos() && !d.ownValid && len(res.owner.grants()) > 0)
	if grantsInvolved {
		ev.GrantValueApplied = f64(draw.applied)
		ev.Overage = f64(left)
	}
	overageEvent := !d.ownValid && !d.coverAll && left.IsPos()
	if overageEvent {
		ov := ev
		ov.Type, ov.shape = EventMeterOverage, EventMeterOverage
		ov.Overage = f64(left)
		if draw.applied.IsPos() {
			if price, ok := priceUnits(p, l.Credit, left, c.Add(d.billable, draw.applied)); ok {
				ov.OveragePrice = f64(price)
			}
		} else {
			ov.OveragePrice = priceDiff
		}
		out = append(out, ov)
		ev = ov
	}
	if d.reset {
		r := ev
		r.Type = EventMeterReset
		if r.shape == "" {
			r.shape = EventMeterChanged
		}
		out = append(out, r)
	}
	changed := d.reset || !d.newValue.Equal(d.meterValue) || !d.overhead.IsZero()
	if !overageEvent && changed {
		ev.Type, ev.shape = EventMeterChanged, EventMeterChanged
		out = append(out, ev)
	}
	return out
}

func (e *Engine) baseEvent(p *policies.Policy, res *resolution, d *decision, call *Call, now time.Time) Event {
	// The payload names the meter owner's plan; the limit itself comes from the caller's.
	ownerPlan := res.plan.Name
	if res.owner != res.caller {
		if pl := e.resolvePlan(p, res.owner.id, res.owner.info.Load()); pl != nil {
			ownerPlan = pl.Name
		}
	}
	var start time.Time
	if d.reset {
		start = time.Unix(0, d.resetStart).UTC()
	} else if m := res.owner.meter(res.ce.Name); m != nil {
		start = m.startedAt()
	}
	return Event{
		Time:        now,
		PeriodStart: start,
		Customer:    e.snapshotLocked(p, res.owner),
		Caller:      res.caller.id,
		Entitlement: res.ce.Name,
		Plan:        ownerPlan,
		Credit:      d.limit.Credit.Name,
		EventData:   call.EventData,
		credit:      d.limit.Credit,
	}
}

// denialEvents reports a call stopped by a cap or the governor (plus a due reset).
func (e *Engine) denialEvents(p *policies.Policy, res *resolution, d *decision, caps []capRef, call *Call, now time.Time) []Event {
	var out []Event
	ev := e.baseEvent(p, res, d, call, now)
	l := d.limit
	switch d.denied {
	case deniedByGovernor:
		ev.Type, ev.shape = EventMeterGoverned, EventMeterGoverned
		ev.Meter = &MeterChange{Value: num.Float64(d.meterValue), Limit: num.Float64(l.Value), Overhead: num.Float64(d.overheadBefore)}
		ev.Governor = &GovernorState{Tokens: num.Float64(d.govTokens), Capacity: num.Float64(l.GovernorCapacity), Requested: num.Float64(d.amount)}
	case deniedByCap:
		cr := caps[d.deniedCap]
		ev.Type, ev.shape = EventCapLimit, EventCapLimit
		if cr.holder != nil && cr.holder != res.owner {
			ev.Customer = e.snapshotLocked(p, cr.holder)
		}
		if cr.holder == nil {
			ev.Customer = e.snapshotLocked(p, res.caller)
		}
		var c num.Calc
		capCfg := cr.cap.cfg
		capCfg.Credit, capCfg.Value, capCfg.MeterValue = cr.cap.credit, num.Float64(cr.cap.ceiling), num.Float64(cr.state.meter)
		ev.Cap = &capCfg
		ev.CapID = capCfg.ID
		ev.Meter = &MeterChange{
			Value: num.Float64(d.meterValue), Limit: num.Float64(l.Value),
			Diff: num.Float64(c.Sub(d.newValue, d.meterValue)), Overhead: num.Float64(d.overheadBefore),
			OverheadDiff: num.Float64(d.overhead), PriceDiff: e.priceDiff(p, l, d),
		}
	}
	if d.reset {
		r := ev
		r.Type = EventMeterReset
		out = append(out, r)
	}
	return append(out, ev)
}

// capEvents reports caps that crossed their threshold and the other customers whose
// caps moved, as want asks. Caller holds every holder's lock.
func (e *Engine) capEvents(p *policies.Policy, res *resolution, d *decision, moved []capMove, call *Call, now time.Time, want eventMask) []Event {
	var out []Event
	others := map[*customer]bool{}
	for _, mv := range moved {
		if mv.crossed && want&bitCrossed != 0 {
			snap := e.snapshotLocked(p, mv.holder)
			cfg := snap.Caps[mv.cap.cfg.ID]
			out = append(out, Event{Type: EventCapThresholdCrossed, shape: EventCapThresholdCrossed, Time: now, Customer: snap,
				Caller: res.caller.id, Entitlement: res.ce.Name, Cap: &cfg, CapID: cfg.ID})
		}
		if mv.holder != res.owner && want&bitSet != 0 {
			others[mv.holder] = true
		}
	}
	for h := range others {
		out = append(out, Event{Type: EventCustomerSet, Time: now, Customer: e.snapshotLocked(p, h)})
	}
	return out
}

// callPrice is priceDiff in exact decimals, for usage sync.
func (e *Engine) callPrice(p *policies.Policy, d *decision) (num.Dec, bool) {
	var c num.Calc
	l := d.limit
	billable := num.Max(num.Zero, c.Sub(d.meterValue, l.Value))
	after := num.Max(num.Zero, c.Sub(d.newValue, l.Value))
	price, ok := priceUnits(p, l.Credit, c.Sub(after, billable), billable)
	return price, ok && c.Err == nil
}

// priceDiff prices the billable units this call adds (negative when a decrement
// moves back past the limit). Nil when the credit has no price.
func (e *Engine) priceDiff(p *policies.Policy, l *policies.CompiledLimit, d *decision) *float64 {
	var c num.Calc
	billable := num.Max(num.Zero, c.Sub(d.meterValue, l.Value))
	after := num.Max(num.Zero, c.Sub(d.newValue, l.Value))
	diff := c.Sub(after, billable)
	price, ok := priceUnits(p, l.Credit, diff, billable)
	if !ok || c.Err != nil {
		return nil
	}
	return f64(price)
}

// JSON returns the payload in the reference engine's shape and field names.
func (ev Event) JSON() []byte {
	var b bytes.Buffer
	w := jsonWriter{b: &b}
	b.WriteByte('{')
	typ := ev.Type
	if ev.Source != "" {
		typ = ev.Source
	}
	switch typ {
	case EventCustomerSet, EventCustomerRemoved:
		b.Reset()
		out, _ := json.Marshal(ev.Customer)
		return out
	case EventCustomerPlanChanged:
		w.field("previous_plan", ev.PreviousPlan)
		w.field("new_plan", ev.NewPlan)
		w.field("customer", ev.Customer)
	case EventCustomerTopupGranted:
		w.field("customer", ev.Customer)
		if ev.Topup != nil {
			w.field("topup_name", ev.Topup.Topup)
			w.field("plan_name", ev.Topup.Plan)
			w.field("grant_id", ev.Topup.Grant)
		}
		w.key("topup")
		if ev.topupDef != nil {
			b.Write(treeJSON(ev.topupDef.Tree()))
		} else {
			b.WriteString("null")
		}
	case EventCustomerCapAdded, EventCustomerCapReset:
		w.field("customer", ev.Customer)
		w.field("cap", ev.Cap)
	case EventCustomerCapRemoved:
		w.field("customer", ev.Customer)
		w.field("id", ev.CapID)
	case EventCapThresholdCrossed:
		w.field("customer", ev.Customer)
		w.field("caller", ev.Caller)
		w.field("entitlement", ev.Entitlement)
		w.field("cap", ev.Cap)
	default:
		m := ev.Meter
		if m == nil {
			m = &MeterChange{}
		}
		if ev.shape == EventCapLimit {
			w.field("caller", ev.Caller)
		}
		w.key("meter")
		mw := jsonWriter{b: &b}
		b.WriteByte('{')
		if ev.shape == EventMeterGoverned {
			mw.field("value", m.Value)
			mw.field("limit", m.Limit)
			mw.field("overhead", m.Overhead)
			b.WriteByte('}')
			w.field("customer", ev.Customer)
			w.field("entitlement", ev.Entitlement)
			w.field("plan", ev.Plan)
			w.key("credit")
			b.Write(creditJSON(ev.Credit, ev.credit))
			w.field("event_data", ev.EventData)
			w.key("governor")
			gw := jsonWriter{b: &b}
			b.WriteByte('{')
			if g := ev.Governor; g != nil {
				gw.field("tokens", g.Tokens)
				gw.field("capacity", g.Capacity)
				gw.field("requested", g.Requested)
			}
			b.WriteString("}}")
			return b.Bytes()
		}
		if ev.shape == EventMeterLimit {
			mw.field("value", m.Value)
			mw.field("limit", m.Limit)
			mw.field("invalid", m.Invalid)
		} else if ev.shape == EventCapLimit {
			mw.field("value", m.Value)
			mw.field("limit", m.Limit)
		} else {
			mw.field("old", m.Old)
			mw.field("value", m.Value)
			mw.field("limit", m.Limit)
		}
		mw.field("diff", m.Diff)
		mw.field("overhead", m.Overhead)
		mw.field("overhead_diff", m.OverheadDiff)
		mw.field("price_diff", m.PriceDiff)
		b.WriteByte('}')
		w.field("customer", ev.Customer)
		w.field("entitlement", ev.Entitlement)
		w.field("plan", ev.Plan)
		w.key("credit")
		b.Write(creditJSON(ev.Credit, ev.credit))
		if ev.shape == EventCapLimit {
			w.field("cap", ev.Cap)
		} else if ev.shape == EventMeterLimit {
			w.field("invalid_value", ev.InvalidValue)
			w.field("overage", ev.Overage)
		} else {
			w.field("remaining", ev.Remaining)
			if ev.Overage != nil || ev.GrantValueApplied != nil {
				w.field("overage", ev.Overage)
			}
			if ev.GrantValueApplied != nil {
				w.field("grant_value_applied", ev.GrantValueApplied)
			}
			if ev.shape == EventMeterOverage {
				w.field("overage_price", ev.OveragePrice)
			}
		}
		w.field("event_data", ev.EventData)
	}
	b.WriteByte('}')
	return b.Bytes()
}

func creditJSON(name string, c *policies.CompiledCredit) []byte {
	if c == nil {
		out, _ := json.Marshal(map[string]string{"name": name})
		return out
	}
	// Name the credit inside its object, as the reference payload carries the record.
	out := treeJSON(c.Credit.Tree())
	if len(out) > 2 {
		return append([]byte(`{"name":`+strconv.Quote(name)+`,`), out[1:]...)
	}
	return []byte(`{"name":` + strconv.Quote(name) + `}`)
}

// treeJSON renders a document node as compact JSON.
func treeJSON(n *doctree.Node) []byte {
	raw, err := doctree.Encode(n, doctree.FormatJSON)
	if err != nil {
		return []byte("null")
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, raw); err != nil {
		return raw
	}
	return compact.Bytes()
}

// jsonWriter writes object members in a fixed order.
type jsonWriter struct {
	b     *bytes.Buffer
	count int
}

func (w *jsonWriter) key(k string) {
	if w.count > 0 {
		w.b.WriteByte(',')
	}
	w.count++
	w.b.WriteString(strconv.Quote(k))
	w.b.WriteByte(':')
}

func (w *jsonWriter) field(k string, v any) {
	w.key(k)
	switch x := v.(type) {
	case *float64:
		if x == nil {
			w.b.WriteString("null")
			return
		}
		w.b.WriteString(strconv.FormatFloat(*x, 'g', -1, 64))
		return
	case float64:
		w.b.WriteString(strconv.FormatFloat(x, 'g', -1, 64))
		return
	}
	out, err := json.Marshal(v)
	if err != nil {
		w.b.WriteString("null")
		return
	}
	w.b.Write(out)
}
