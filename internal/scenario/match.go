package scenario

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	limitr "github.com/limitr/limitr/sdk/go"
)

// Tolerance is how far two numbers may differ and still match: 1e-9, relative for
// magnitudes above 1. Engine reads are float64 views of exact decimals.
const Tolerance = 1e-9

// NumbersMatch compares with Tolerance.
func NumbersMatch(want, got float64) bool {
	return math.Abs(want-got) <= Tolerance*max(1, math.Abs(want), math.Abs(got))
}

// Mismatch is an assertion failure: what was expected against what happened.
type Mismatch struct {
	// Reason is a one-line explanation.
	Reason string
	// Expected and Got are shown as a diff, one line each (or a block).
	Expected, Got string
}

func (m *Mismatch) Error() string { return m.Reason }

// EventExpectation is one expected event: a partial payload, keyed by the event's
// JSON field names, plus its type.
type EventExpectation struct {
	Fields map[string]any
	Line   int
	// Source is the expectation as written, in JSON, for the diff.
	Source string
}

func parseEventExpectations(n *yaml.Node) ([]EventExpectation, error) {
	if n.Kind != yaml.SequenceNode {
		return nil, fieldErr("", n, "want a list of events such as [{type: meter-changed, meter: {value: 10}}]; [] expects none")
	}
	out := []EventExpectation{}
	for i, c := range n.Content {
		if c.Kind != yaml.MappingNode {
			return nil, fieldErr(fmt.Sprintf("[%d]", i), c, "an event is a mapping of payload fields, got %s", flow(c, 40))
		}
		var m map[string]any
		if err := c.Decode(&m); err != nil {
			return nil, fieldErr(fmt.Sprintf("[%d]", i), c, "%v", err)
		}
		if _, ok := m["type"]; !ok {
			return nil, fieldErr(fmt.Sprintf("[%d]", i), c, "type: required (one of %s)", strings.Join(knownEventTypes, ", "))
		}
		src, _ := json.Marshal(jsonable(m))
		out = append(out, EventExpectation{Fields: m, Line: c.Line, Source: string(src)})
	}
	return out, nil
}

// jsonable converts YAML-decoded values (time.Time, map[string]any) for json.Marshal.
func jsonable(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = jsonable(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = jsonable(e)
		}
		return out
	case time.Time:
		return x.Format(time.RFC3339Nano)
	}
	return v
}

// EventPayload is the map an expectation is matched against: the event's JSON
// payload plus "type". Customer events (customer-set, customer-removed), whose
// payload is the customer itself, are wrapped as {"customer": ...}.
func EventPayload(ev limitr.Event) (map[string]any, []byte) {
	raw := ev.JSON()
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		v = map[string]any{"raw": string(raw)}
	}
	m, ok := v.(map[string]any)
	if !ok || ev.Type == limitr.EventCustomerSet || ev.Type == limitr.EventCustomerRemoved {
		m = map[string]any{"customer": v}
	}
	m["type"] = ev.Type
	full, err := json.Marshal(m)
	if err != nil {
		full = raw
	}
	return m, full
}

// matchEvents compares expected events with the recorded ones, in order.
func matchEvents(want []EventExpectation, got []limitr.Event) *Mismatch {
	payloads := make([]map[string]any, len(got))
	jsons := make([]string, len(got))
	for i, ev := range got {
		p, raw := EventPayload(ev)
		payloads[i], jsons[i] = p, string(raw)
	}
	var reasons []string
	if len(want) != len(got) {
		reasons = append(reasons, fmt.Sprintf("expected %d event(s), got %d (%s)", len(want), len(got), eventTypes(got)))
	}
	for i := range min(len(want), len(got)) {
		if diffs := matchValue("", want[i].Fields, payloads[i]); len(diffs) > 0 {
			reasons = append(reasons, fmt.Sprintf("event %d (%s): %s", i+1, got[i].Type, strings.Join(diffs, "; ")))
		}
	}
	if len(reasons) == 0 {
		return nil
	}
	var exp, act strings.Builder
	for i, w := range want {
		if i > 0 {
			exp.WriteByte('\n')
		}
		exp.WriteString(w.Source)
	}
	if len(want) == 0 {
		exp.WriteString("(no events)")
	}
	for i, j := range jsons {
		if i > 0 {
			act.WriteByte('\n')
		}
		act.WriteString(j)
	}
	if len(jsons) == 0 {
		act.WriteString("(no events)")
	}
	return &Mismatch{Reason: strings.Join(reasons, "\n"), Expected: exp.String(), Got: act.String()}
}

// includeEvents checks that want appears in got as a subsequence: in order, with
// other events allowed before, between and after.
func includeEvents(want []EventExpectation, got []limitr.Event) *Mismatch {
	payloads := make([]map[string]any, len(got))
	jsons := make([]string, len(got))
	for i, ev := range got {
		p, raw := EventPayload(ev)
		payloads[i], jsons[i] = p, string(raw)
	}
	j := 0
	for i, w := range want {
		var closest []string
		for ; j < len(got); j++ {
			diffs := matchValue("", w.Fields, payloads[j])
			if len(diffs) == 0 {
				break
			}
			if closest == nil || len(diffs) < len(closest) {
				closest = diffs
			}
		}
		if j == len(got) {
			reason := fmt.Sprintf("expected event %d (%s) not emitted (in order) among: %s", i+1, w.Source, eventTypes(got))
			if closest != nil {
				reason += "\nclosest: " + strings.Join(closest, "; ")
			}
			act := strings.Join(jsons, "\n")
			if act == "" {
				act = "(no events)"
			}
			return &Mismatch{Reason: reason, Expected: "… " + w.Source + " …", Got: act}
		}
		j++
	}
	return nil
}

func eventTypes(evs []limitr.Event) string {
	if len(evs) == 0 {
		return "none"
	}
	ts := make([]string, len(evs))
	for i, e := range evs {
		ts[i] = e.Type
	}
	return strings.Join(ts, ", ")
}

// matchValue reports every difference between a partial expectation and an actual
// JSON-decoded value. Mappings match partially (keys not named are ignored); lists
// match element by element and in length; numbers match within Tolerance. A string
// expected where an object is found matches the object's "id" (customers) or
// "name" (credits), so `customer: org_1` and `credit: seat` work.
func matchValue(path string, want, got any) []string {
	at := func(format string, args ...any) []string {
		p := path
		if p == "" {
			p = "(root)"
		}
		return []string{p + ": " + fmt.Sprintf(format, args...)}
	}
	join := func(k string) string {
		if path == "" {
			return k
		}
		return path + "." + k
	}
	switch w := want.(type) {
	case nil:
		if got != nil {
			return at("expected null, got %s", compactJSON(got))
		}
		return nil
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return at("expected an object, got %s", compactJSON(got))
		}
		var out []string
		for _, k := range sortedKeys(w) {
			gv, present := g[k]
			if !present {
				if w[k] == nil {
					continue // null matches absent
				}
				out = append(out, join(k)+": expected "+compactJSON(jsonable(w[k]))+", field absent")
				continue
			}
			out = append(out, matchValue(join(k), w[k], gv)...)
		}
		return out
	case []any:
		g, ok := got.([]any)
		if !ok {
			return at("expected a list, got %s", compactJSON(got))
		}
		if len(g) != len(w) {
			return at("expected %d item(s) %s, got %d %s", len(w), compactJSON(jsonable(w)), len(g), compactJSON(g))
		}
		var out []string
		for i := range w {
			out = append(out, matchValue(fmt.Sprintf("%s[%d]", path, i), w[i], g[i])...)
		}
		return out
	case bool:
		if g, ok := got.(bool); !ok || g != w {
			return at("expected %v, got %s", w, compactJSON(got))
		}
		return nil
	case int, int64, uint64, float64:
		wf := toFloat(w)
		g, ok := got.(float64)
		if !ok {
			return at("expected %s, got %s", formatFloat(wf), compactJSON(got))
		}
		if !NumbersMatch(wf, g) {
			return at("expected %s, got %s", formatFloat(wf), formatFloat(g))
		}
		return nil
	case string:
		switch g := got.(type) {
		case string:
			if g == w {
				return nil
			}
		case map[string]any:
			for _, key := range []string{"id", "name"} {
				if s, ok := g[key].(string); ok {
					if s == w {
						return nil
					}
					return at("expected %s %q, got %q", key, w, s)
				}
			}
		case float64:
			if f, ok := parseNumber(w); ok && NumbersMatch(f, g) {
				return nil
			}
		}
		return at("expected %q, got %s", w, compactJSON(got))
	case time.Time:
		// Times in payloads are Unix milliseconds.
		if g, ok := got.(float64); ok && int64(g) == w.UnixMilli() {
			return nil
		}
		if g, ok := got.(string); ok {
			if t, err := parseTime(g); err == nil && t.Equal(w) {
				return nil
			}
		}
		return at("expected %s (%d ms), got %s", w.Format(time.RFC3339), w.UnixMilli(), compactJSON(got))
	}
	return at("cannot compare expected %T", want)
}

func toFloat(v any) float64 {
	switch x := v.(type) {
	case int:
		return float64(x)
	case int64:
		return float64(x)
	case uint64:
		return float64(x)
	case float64:
		return x
	}
	return math.NaN()
}

// formatFloat writes plain decimals (1433333.333333333, 0.000005), switching to
// exponents only for extreme magnitudes.
func formatFloat(f float64) string {
	if a := math.Abs(f); a != 0 && (a < 1e-6 || a >= 1e21) {
		return strconv.FormatFloat(f, 'g', -1, 64)
	}
	return strconv.FormatFloat(f, 'f', -1, 64)
}

func compactJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// knownEventTypes names the event types, for messages.
var knownEventTypes = []string{
	limitr.EventMeterChanged, limitr.EventMeterOverage, limitr.EventMeterLimit, limitr.EventMeterReset,
	limitr.EventCustomerSet, limitr.EventCustomerRemoved, limitr.EventCustomerPlanChanged,
	limitr.EventMeterGoverned, limitr.EventCapLimit, limitr.EventCapThresholdCrossed,
	limitr.EventCustomerTopupGranted, limitr.EventCustomerCapAdded, limitr.EventCustomerCapReset, limitr.EventCustomerCapRemoved,
}
