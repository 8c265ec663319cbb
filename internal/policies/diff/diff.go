// Package diff compares two policy documents structurally: which plans, credits,
// entitlements, limits, topups, exchange pairs and notifications were added, removed or
// changed, and for each change the fields' old and new values.
//
// It compares decoded documents (policies.Document), with every default applied, not
// source text: reformatting a document, switching it from YAML to JSON or writing a
// default out explicitly is not a change. A diff of a document with itself is empty.
//
// # JSON shape
//
// A Diff marshals as
//
//	{
//	  "policy":        {"timezone": {"from": "UTC", "to": "Europe/Paris"}},
//	  "credits":       {"added": ["gpu"], "removed": [], "changed": {"tokens": {"fields": {...}}}},
//	  "plans": {
//	    "added": ["team"], "removed": ["legacy"],
//	    "changed": {
//	      "pro": {
//	        "fields": {"label": {"from": "Pro", "to": "Pro 2025"}},
//	        "entitlements": {
//	          "added": ["gpu-seconds"], "removed": ["sso"],
//	          "changed": {"seats": {"fields": {...}, "limit": {"value": {"from": 3, "to": 5}}}}
//	        },
//	        "topups": {"added": [], "removed": [], "changed": {"boost": {"fields": {...}}}}
//	      }
//	    }
//	  },
//	  "exchange":      {"fields": {"grant_strategy": {...}}, "pairs": {"added": [], "removed": [], "changed": {}}},
//	  "notifications": {"added": [], "removed": [], "changed": {"ops": {"fields": {"matches": {...}}}}}
//	}
//
// The five top-level sections are always present, with empty lists and objects when
// nothing changed in them, so a client never tests for absence. Inside a changed item,
// "fields", "limit", "entitlements" and "topups" appear only when something in them
// changed. "added" and "removed" list names in document order; "changed" is keyed by
// name. A set whose common members kept their names but changed relative order (order
// is meaningful for plans, credits and entitlements) carries "reordered": true.
//
// Every {"from", "to"} holds JSON values: strings, numbers (exact decimals), booleans,
// objects for prices, lists for tiers and scopes, and null for "not set". Amounts with
// units are strings ("10GB"); durations are written as in the document ("1day") or as
// milliseconds. An entitlement that gains a limit shows every limit field going from
// null; one that loses its limit shows every field going to null.
package diff

import (
	"encoding/json"

	"github.com/limitr/limitr/internal/policies"
)

// Change is one field's old and new value.
type Change struct {
	From json.RawMessage `json:"from"`
	To   json.RawMessage `json:"to"`
}

// Fields maps a field name (as written in documents) to its change.
type Fields map[string]Change

// Set is the diff of a named collection. Added and Removed are in document order.
type Set[T any] struct {
	Added     []string     `json:"added"`
	Removed   []string     `json:"removed"`
	Changed   map[string]T `json:"changed"`
	Reordered bool         `json:"reordered,omitempty"`
}

// Empty reports no additions, removals, changes or reordering.
func (s *Set[T]) Empty() bool {
	return s == nil || len(s.Added) == 0 && len(s.Removed) == 0 && len(s.Changed) == 0 && !s.Reordered
}

// Item is a changed credit, topup, exchange pair or notification.
type Item struct {
	Fields Fields `json:"fields,omitempty"`
}

// Plan is a changed plan.
type Plan struct {
	Fields       Fields            `json:"fields,omitempty"`
	Entitlements *Set[Entitlement] `json:"entitlements,omitempty"`
	Topups       *Set[Item]        `json:"topups,omitempty"`
}

// Entitlement is a changed entitlement: its own fields and its limit's.
type Entitlement struct {
	Fields Fields `json:"fields,omitempty"`
	Limit  Fields `json:"limit,omitempty"`
}

// Exchange is the diff of the exchange table.
type Exchange struct {
	Fields Fields     `json:"fields"`
	Pairs  *Set[Item] `json:"pairs"`
}

// Diff is the structural difference between two documents.
type Diff struct {
	// Policy holds the document-level settings (version, timezone,
	// estimate_min_samples, hold_ttl, capabilities, estimates, invoices).
	Policy        Fields     `json:"policy"`
	Credits       *Set[Item] `json:"credits"`
	Plans         *Set[Plan] `json:"plans"`
	Exchange      Exchange   `json:"exchange"`
	Notifications *Set[Item] `json:"notifications"`
}

// Empty reports that the documents are the same in every field the engine reads.
func (d *Diff) Empty() bool {
	return len(d.Policy) == 0 && d.Credits.Empty() && d.Plans.Empty() &&
		len(d.Exchange.Fields) == 0 && d.Exchange.Pairs.Empty() && d.Notifications.Empty()
}

// Documents compares from with to. Neither may be nil.
func Documents(from, to *policies.Document) *Diff {
	d := &Diff{
		Policy: compare(documentFields(from), documentFields(to)),
		Credits: diffSet(from.Credits, to.Credits, func(c *policies.Credit) string { return c.Name },
			func(a, b *policies.Credit) (Item, bool) { return item(creditFields(a), creditFields(b)) }, true),
		Plans: diffSet(from.Plans, to.Plans, func(p *policies.Plan) string { return p.Name }, diffPlan, true),
		Exchange: Exchange{
			Fields: compare(exchangeFields(&from.Exchange), exchangeFields(&to.Exchange)),
			Pairs: diffSet(from.Exchange.Pairs, to.Exchange.Pairs, func(p policies.ExchangePair) string { return p.Name },
				func(a, b policies.ExchangePair) (Item, bool) { return item(pairFields(a), pairFields(b)) }, false),
		},
		Notifications: diffSet(from.Notifications, to.Notifications, func(n *policies.Notification) string { return n.Name },
			func(a, b *policies.Notification) (Item, bool) {
				return item(notificationFields(a), notificationFields(b))
			}, false),
	}
	if d.Policy == nil {
		d.Policy = Fields{}
	}
	if d.Exchange.Fields == nil {
		d.Exchange.Fields = Fields{}
	}
	return d
}

func item(a, b []field) (Item, bool) {
	f := compare(a, b)
	return Item{Fields: f}, len(f) > 0
}

func diffPlan(a, b *policies.Plan) (Plan, bool) {
	p := Plan{Fields: compare(planFields(a), planFields(b))}
	if es := diffSet(a.Entitlements, b.Entitlements, func(e *policies.Entitlement) string { return e.Name }, diffEntitlement, true); !es.Empty() {
		p.Entitlements = es
	}
	if ts := diffSet(a.Topups, b.Topups, func(t *policies.Topup) string { return t.Name },
		func(x, y *policies.Topup) (Item, bool) { return item(topupFields(x), topupFields(y)) }, false); !ts.Empty() {
		p.Topups = ts
	}
	return p, len(p.Fields) > 0 || p.Entitlements != nil || p.Topups != nil
}

func diffEntitlement(a, b *policies.Entitlement) (Entitlement, bool) {
	e := Entitlement{
		Fields: compare(entitlementFields(a), entitlementFields(b)),
		Limit:  compare(limitFields(a.Limit), limitFields(b.Limit)),
	}
	return e, len(e.Fields) > 0 || len(e.Limit) > 0
}

// diffSet matches items by name. ordered says whether the relative order of the
// common items is meaningful and should be reported.
func diffSet[E, T any](from, to []E, name func(E) string, change func(a, b E) (T, bool), ordered bool) *Set[T] {
	s := &Set[T]{Added: []string{}, Removed: []string{}, Changed: map[string]T{}}
	old := make(map[string]E, len(from))
	for _, e := range from {
		old[name(e)] = e
	}
	cur := make(map[string]bool, len(to))
	for _, e := range to {
		cur[name(e)] = true
	}
	var oldOrder, newOrder []string
	for _, e := range from {
		n := name(e)
		if !cur[n] {
			s.Removed = append(s.Removed, n)
			continue
		}
		oldOrder = append(oldOrder, n)
	}
	for _, e := range to {
		n := name(e)
		prev, ok := old[n]
		if !ok {
			s.Added = append(s.Added, n)
			continue
		}
		newOrder = append(newOrder, n)
		if c, changed := change(prev, e); changed {
			s.Changed[n] = c
		}
	}
	if ordered {
		for i := range oldOrder {
			if oldOrder[i] != newOrder[i] {
				s.Reordered = true
				break
			}
		}
	}
	return s
}
