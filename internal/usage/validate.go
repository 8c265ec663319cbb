package usage

import (
	"bytes"
	"fmt"
	"strconv"
	"time"

	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/store"
	"github.com/limitr/limitr/internal/validation"
	"github.com/limitr/limitr/internal/wire"
)

// Bounds of a batch.
const (
	// PeriodWindow bounds a delta's period start around now. A non-resetting meter's
	// period starts when the meter was created, so an older start is also accepted when
	// it is not before its customer's creation (less ClockSkew).
	PeriodWindow = 400 * 24 * time.Hour
	ClockSkew    = 24 * time.Hour
	// MaxEvents bounds audit events per batch (the decompressed size bounds them first
	// in practice).
	MaxEvents = 100_000
	// MaxCapKeyLength bounds a cap key named by a cap use or a lease ask (keys the
	// server mints are much shorter).
	MaxCapKeyLength = 128
	// maxFieldErrors bounds the problems listed for one batch.
	maxFieldErrors = wire.MaxDeltas
	// recreatedTolerance absorbs the precision a customer's creation time loses on its
	// way through an SDK snapshot (milliseconds) before comparing it with the server's.
	recreatedTolerance = time.Millisecond
)

// DecodeBatch decodes a usage batch strictly: unknown fields, wrong types and trailing
// data are errors (validation.ErrMalformed or *validation.Error). Batches as SDKs
// write them take decodeFast; the rest, errors included, encoding/json.
func DecodeBatch(raw []byte) (*wire.UsageBatch, error) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil, fmt.Errorf("%w: the body is empty: send a JSON usage batch", validation.ErrMalformed)
	}
	if b, ok := decodeFast(raw); ok {
		return b, nil
	}
	var b wire.UsageBatch
	if err := validation.DecodeJSON(raw, &b); err != nil {
		return nil, err
	}
	return &b, nil
}

// checked is a batch whose every field was checked without the database, waiting for
// its customers to be resolved.
type checked struct {
	in    *wire.UsageBatch
	batch store.UsageBatch
	errs  validation.Errors
	// names are the distinct customer names of the batch's records.
	names []string
	now   time.Time
}

func (v *checked) add(path, msg string) {
	if v.errs.Len() < maxFieldErrors {
		v.errs.Add(path, msg)
	}
}

// at adds fe, whose path is a field of the list item kind[i].
func (v *checked) at(kind string, i int, fe *validation.FieldError) {
	if fe != nil {
		v.add(itemPath(kind, i, fe.Path), fe.Message)
	}
}

func itemPath(kind string, i int, field string) string {
	return kind + "[" + strconv.Itoa(i) + "]." + field
}

// check validates every field that can be checked without the database.
func check(in *wire.UsageBatch, now time.Time) *checked {
	v := &checked{in: in, now: now}
	b := &v.batch
	v.at2(validation.InstanceID(in.InstanceID))
	if in.Sequence < 1 {
		v.add("sequence", "must be 1 or more: sequences start at 1")
	}
	if in.PolicyVersion < 0 {
		v.add("policy_version", "must not be negative")
	}
	tooMany := false
	for _, l := range []struct {
		path   string
		n, max int
	}{
		{"deltas", len(in.Deltas), wire.MaxDeltas}, {"events", len(in.Events), MaxEvents},
		{"grant_draws", len(in.GrantDraws), wire.MaxDeltas}, {"voucher_debits", len(in.VoucherDebits), wire.MaxDeltas},
		{"cap_uses", len(in.CapUses), wire.MaxDeltas},
	} {
		if l.n > l.max {
			v.add(l.path, fmt.Sprintf("has %d entries; at most %d per batch", l.n, l.max))
			tooMany = true
		}
	}
	if tooMany {
		return v
	}
	b.InstanceID, b.Sequence, b.PolicyVersion, b.Leased = in.InstanceID, in.Sequence, in.PolicyVersion, in.Leased
	if !in.SentAt.IsZero() && in.SentAt.Year() >= 1 && in.SentAt.Year() <= 9999 {
		t := in.SentAt.UTC()
		b.SentAt = &t
	}
	seen := map[string]bool{}
	addName := func(n string) {
		if !seen[n] {
			seen[n] = true
			v.names = append(v.names, n)
		}
	}
	b.Deltas = make([]store.UsageDelta, len(in.Deltas))
	for i := range in.Deltas {
		if v.checkDelta(i) {
			addName(in.Deltas[i].Customer)
		}
	}
	b.GrantDraws = make([]store.GrantDraw, len(in.GrantDraws))
	for i := range in.GrantDraws {
		if v.checkDraw(i) {
			addName(in.GrantDraws[i].Customer)
		}
	}
	b.VoucherDebits = make([]store.VoucherDebit, len(in.VoucherDebits))
	for i := range in.VoucherDebits {
		if v.checkDebit(i) {
			addName(in.VoucherDebits[i].Customer)
		}
	}
	b.CapUses = make([]store.CapUse, len(in.CapUses))
	for i := range in.CapUses {
		if v.checkCapUse(i) {
			addName(in.CapUses[i].Customer)
		}
	}
	b.Events = make([]store.UsageEvent, len(in.Events))
	ids := make(map[string]int, len(in.Events))
	for i := range in.Events {
		e := &in.Events[i]
		if j, dup := ids[e.ID]; dup && e.ID != "" {
			v.add(itemPath("events", i, "id"), fmt.Sprintf("repeats events[%d].id: event ids are unique per instance", j))
		}
		ids[e.ID] = i
		if v.checkEvent(i) {
			addName(e.Customer)
		}
	}
	return v
}

func (v *checked) at2(fe *validation.FieldError) {
	if fe != nil {
		v.add(fe.Path, fe.Message)
	}
}

// checkDelta checks deltas[i]; false when its customer name is unusable.
func (v *checked) checkDelta(i int) bool {
	d, out := &v.in.Deltas[i], &v.batch.Deltas[i]
	ok := true
	for _, f := range []struct{ name, val string }{{"customer", d.Customer}, {"entitlement", d.Entitlement}, {"credit", d.Credit}} {
		if fe := validation.Required(f.name, f.val); fe != nil {
			v.at("deltas", i, fe)
			ok = ok && f.name != "customer"
		}
	}
	v.checkPeriodStart("deltas", i, d.PeriodStart)
	var fe *validation.FieldError
	if out.Units, fe = validation.ExactDecimal("units", d.Units); fe != nil {
		v.at("deltas", i, fe)
	}
	if out.Overhead, fe = validation.ExactDecimal("overhead", d.Overhead); fe != nil {
		v.at("deltas", i, fe)
	}
	if out.Price, fe = validation.ExactDecimal("price", d.Price); fe != nil {
		v.at("deltas", i, fe)
	}
	// grant_covered is optional (SDKs before it leave it out): absent is 0.
	out.GrantCovered = num.Zero
	if d.GrantCovered != "" {
		if out.GrantCovered, fe = validation.ExactDecimal("grant_covered", d.GrantCovered); fe != nil {
			v.at("deltas", i, fe)
		} else if out.GrantCovered.IsNeg() {
			v.add(itemPath("deltas", i, "grant_covered"), "must not be negative: it counts units grants paid for")
		}
	}
	if d.Calls < 0 {
		v.add(itemPath("deltas", i, "calls"), "must not be negative")
	}
	out.CustomerID, out.Entitlement, out.Credit = d.Customer, d.Entitlement, d.Credit
	out.PeriodStart, out.Calls = d.PeriodStart.UTC(), d.Calls
	return ok
}

// checkDraw checks grant_draws[i]; false when its customer name is unusable.
func (v *checked) checkDraw(i int) bool {
	d, out := &v.in.GrantDraws[i], &v.batch.GrantDraws[i]
	ok := true
	for _, f := range []struct{ name, val string }{{"customer", d.Customer}, {"grant_id", d.GrantID}} {
		if fe := validation.Required(f.name, f.val); fe != nil {
			v.at("grant_draws", i, fe)
			ok = ok && f.name != "customer"
		}
	}
	v.checkPeriodStart("grant_draws", i, d.PeriodStart)
	var fe *validation.FieldError
	if out.Units, fe = validation.ExactDecimal("units", d.Units); fe != nil {
		v.at("grant_draws", i, fe)
	} else if out.Units.IsNeg() {
		v.add(itemPath("grant_draws", i, "units"), "must not be negative: a draw takes from a grant")
	}
	out.CustomerID, out.GrantID, out.PeriodStart = d.Customer, d.GrantID, d.PeriodStart.UTC()
	return ok
}

// checkDebit checks voucher_debits[i]; false when its customer name is unusable.
func (v *checked) checkDebit(i int) bool {
	d, out := &v.in.VoucherDebits[i], &v.batch.VoucherDebits[i]
	ok := true
	for _, f := range []struct{ name, val string }{{"customer", d.Customer}, {"voucher_id", d.VoucherID}} {
		if fe := validation.Required(f.name, f.val); fe != nil {
			v.at("voucher_debits", i, fe)
			ok = ok && f.name != "customer"
		}
	}
	var fe *validation.FieldError
	if out.Runes, fe = validation.ExactDecimal("runes", d.Runes); fe != nil {
		v.at("voucher_debits", i, fe)
	} else if out.Runes.Sign() <= 0 {
		v.add(itemPath("voucher_debits", i, "runes"), "must be more than 0: a debit takes from a voucher")
	}
	out.CustomerID, out.VoucherID = d.Customer, d.VoucherID
	return ok
}

// checkCapUse checks cap_uses[i]; false when its customer name is unusable. Units may
// be negative: a follow_decrements cap moves down with its meters.
func (v *checked) checkCapUse(i int) bool {
	u, out := &v.in.CapUses[i], &v.batch.CapUses[i]
	ok := true
	if fe := validation.Required("customer", u.Customer); fe != nil {
		v.at("cap_uses", i, fe)
		ok = false
	}
	switch fe := validation.Required("cap_key", u.CapKey); {
	case fe != nil:
		v.at("cap_uses", i, fe)
	case len(u.CapKey) > MaxCapKeyLength:
		v.add(itemPath("cap_uses", i, "cap_key"), fmt.Sprintf("is longer than %d bytes", MaxCapKeyLength))
	}
	v.checkPeriodStart("cap_uses", i, u.PeriodStart)
	var fe *validation.FieldError
	if out.Units, fe = validation.ExactDecimal("units", u.Units); fe != nil {
		v.at("cap_uses", i, fe)
	}
	out.CustomerID, out.CapKey, out.PeriodStart = u.Customer, u.CapKey, u.PeriodStart.UTC()
	return ok
}

// checkEvent checks events[i]; false when its customer name is unusable.
func (v *checked) checkEvent(i int) bool {
	e, out := &v.in.Events[i], &v.batch.Events[i]
	ok := true
	for _, f := range []struct{ name, val string }{{"id", e.ID}, {"customer", e.Customer}, {"entitlement", e.Entitlement}} {
		if fe := validation.Required(f.name, f.val); fe != nil {
			v.at("events", i, fe)
			ok = ok && f.name != "customer"
		}
	}
	if e.Caller != "" {
		v.at("events", i, validation.Required("caller", e.Caller))
	}
	var fe *validation.FieldError
	if out.Units, fe = validation.ExactDecimal("units", e.Units); fe != nil {
		v.at("events", i, fe)
	}
	if out.Overhead, fe = validation.ExactDecimal("overhead", e.Overhead); fe != nil {
		v.at("events", i, fe)
	}
	switch {
	case e.At.IsZero():
		v.add(itemPath("events", i, "at"), "is required")
	case e.At.After(v.now.Add(PeriodWindow)) || e.At.Before(v.now.Add(-PeriodWindow)):
		v.add(itemPath("events", i, "at"), fmt.Sprintf("%s is more than %d days from now", e.At.UTC().Format(time.RFC3339), int(PeriodWindow/(24*time.Hour))))
	}
	out.EventID, out.CustomerID, out.CallerID, out.Entitlement = e.ID, e.Customer, e.Caller, e.Entitlement
	out.Allowed, out.At = e.Allowed, e.At.UTC()
	return ok
}

func (v *checked) checkPeriodStart(kind string, i int, start time.Time) {
	switch {
	case start.IsZero():
		v.add(itemPath(kind, i, "period_start"), "is required")
	case start.After(v.now.Add(PeriodWindow)):
		v.add(itemPath(kind, i, "period_start"), fmt.Sprintf("%s is more than %d days in the future", start.UTC().Format(time.RFC3339), int(PeriodWindow/(24*time.Hour))))
	}
}
