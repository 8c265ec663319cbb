package enforcement

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/policies"
	"github.com/limitr/limitr/internal/policies/doctree"
)

const interestPolicy = `{"policy": {
  "credits": {"tok": {}},
  "plans": {"p": {"default": true, "entitlements": {
    "e": {"limit": {"credit": "tok", "mode": "hard", "value": %s, "resets": true, "reset_inc": "1day"}}
  }}}%s}}`

const interestNotifications = `,
  "notifications": {"high": {"matches": "type == 'meter-changed' && event.remaining < 5"}}`

// newInterestEngine is an engine as cloud mode runs it (usage recorded), with customer c.
func newInterestEngine(t testing.TB, limit string, notifications bool) *Engine {
	t.Helper()
	extra := ""
	if notifications {
		extra = interestNotifications
	}
	p, err := policies.Load([]byte(fmt.Sprintf(interestPolicy, limit, extra)), doctree.FormatJSON)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	e, err := New(p, WithClock(func() time.Time { return now }), WithUsageRecording())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.CreateCustomer(context.Background(), CustomerSpec{ID: "c"}); err != nil {
		t.Fatal(err)
	}
	return e
}

type seen struct{ types []string }

func (s *seen) add(ev Event) { s.types = append(s.types, ev.Type) }

func callC(t *testing.T, e *Engine, amount string, want bool) {
	t.Helper()
	ok, err := e.Allow(context.Background(), Call{Customer: "c", Entitlement: "e", Amount: num.MustParse(amount)})
	if err != nil || ok != want {
		t.Fatalf("Allow(%s) = %v, %v; want %v", amount, ok, err, want)
	}
}

// A handler for a few types gets those only; AddHandler still gets everything.
func TestHandlerInterest(t *testing.T) {
	e := newInterestEngine(t, "10", false)
	var some, all seen
	e.AddHandlerFor("some", []string{EventMeterLimit, EventMeterOverage, NotificationEvents}, some.add)
	callC(t, e, "4", true)
	if len(some.types) != 0 {
		t.Fatalf("meter-limit handler got %v for an allowed call", some.types)
	}
	callC(t, e, "20", false)
	if !slices.Equal(some.types, []string{EventMeterLimit}) {
		t.Fatalf("meter-limit handler got %v for a denial", some.types)
	}
	e.AddHandler("all", all.add)
	some.types = nil
	callC(t, e, "1", true)
	callC(t, e, "20", false)
	if !slices.Equal(all.types, []string{EventMeterChanged, EventMeterLimit}) {
		t.Fatalf("AddHandler got %v", all.types)
	}
	if !slices.Equal(some.types, []string{EventMeterLimit}) {
		t.Fatalf("meter-limit handler got %v next to a handler for everything", some.types)
	}
	e.RemoveHandler("all")
	e.RemoveHandler("some")
	if m := e.handlers.Load().mask; m != 0 {
		t.Fatalf("mask %b after removing every handler", m)
	}
}

// A handler for notifications gets the deliveries, not the events they matched.
func TestHandlerInterestNotifications(t *testing.T) {
	e := newInterestEngine(t, "10", true)
	var s seen
	var got Event
	e.AddHandlerFor("n", []string{NotificationEvents, EventMeterLimit}, func(ev Event) {
		s.add(ev)
		if ev.Notification != "" {
			got = ev
		}
	})
	callC(t, e, "4", true) // remaining 6
	if len(s.types) != 0 {
		t.Fatalf("got %v before the notification matched", s.types)
	}
	callC(t, e, "2", true) // remaining 4
	if !slices.Equal(s.types, []string{"high"}) {
		t.Fatalf("got %v, want the notification alone", s.types)
	}
	if got.Notification != "high" || got.Source != EventMeterChanged {
		t.Fatalf("notification %q source %q", got.Notification, got.Source)
	}
}

// BenchmarkAllowInterest compares a warm allowed call with no handler and with a
// handler for alert-worthy types only (as cloud mode's event forwarding registers);
// "all" is a handler for every type, for reference.
func BenchmarkAllowInterest(b *testing.B) {
	for _, tc := range []struct {
		name  string
		types []string
	}{
		{"none", nil},
		{"all", []string{}},
		{"alerts", []string{EventMeterLimit, EventMeterOverage, EventCapLimit, EventCapThresholdCrossed, EventMeterGoverned, NotificationEvents}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			e := newInterestEngine(b, "1e15", false)
			switch {
			case tc.types == nil:
			case len(tc.types) == 0:
				e.AddHandler("all", func(Event) {})
			default:
				e.AddHandlerFor("fwd", tc.types, func(Event) {})
			}
			ctx := context.Background()
			c := Call{Customer: "c", Entitlement: "e", Amount: num.MustParse("7")}
			b.ReportAllocs()
			for b.Loop() {
				if ok, _ := e.Allow(ctx, c); !ok {
					b.Fatal("denied")
				}
			}
		})
	}
}

// A handler WithRepeats is asked before a repeat is built, and not asked when another
// handler or a notification needs the event.
func TestHandlerRepeats(t *testing.T) {
	e := newInterestEngine(t, "10", false)
	var s seen
	var asked []EventRef
	held := map[EventRef]int{}
	e.AddHandlerFor("fwd", []string{EventMeterLimit}, func(ev Event) {
		s.add(ev)
		held[EventRef{Type: ev.Type, Customer: ev.Customer.ID, Entitlement: ev.Entitlement, CapID: ev.CapID}] = 1
	}, WithRepeats(func(r EventRef) bool {
		asked = append(asked, r)
		if _, ok := held[r]; ok {
			held[r]++
			return true
		}
		return false
	}))
	for range 3 {
		callC(t, e, "20", false)
	}
	ref := EventRef{Type: EventMeterLimit, Customer: "c", Entitlement: "e"}
	if !slices.Equal(s.types, []string{EventMeterLimit}) || held[ref] != 3 || len(asked) != 3 || asked[0] != ref {
		t.Fatalf("delivered %v, held %v, asked %v", s.types, held, asked)
	}
	// Another handler for the type: every event is built and nobody is asked.
	var other seen
	e.AddHandlerFor("other", []string{EventMeterLimit}, other.add)
	asked = nil
	callC(t, e, "20", false)
	if len(asked) != 0 || len(other.types) != 1 || len(s.types) != 2 {
		t.Fatalf("asked %v; other got %v, fwd %v", asked, other.types, s.types)
	}
	e.RemoveHandler("other")
	// A policy notification may match the event: it is built and nobody is asked.
	n := newInterestEngine(t, "10", true)
	asked = nil
	var got seen
	n.AddHandlerFor("fwd", []string{EventMeterLimit, NotificationEvents}, got.add,
		WithRepeats(func(r EventRef) bool { asked = append(asked, r); return true }))
	callC2 := func(amount string) {
		if ok, err := n.Allow(context.Background(), Call{Customer: "c", Entitlement: "e", Amount: num.MustParse(amount)}); ok || err != nil {
			t.Fatalf("Allow = %v, %v", ok, err)
		}
	}
	callC2("20")
	if len(asked) != 0 || !slices.Equal(got.types, []string{EventMeterLimit}) {
		t.Fatalf("asked %v, got %v with notifications in the policy", asked, got.types)
	}
}
