package leases

import (
	"fmt"
	"strconv"
	"time"

	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/usage"
	"github.com/limitr/limitr/internal/validation"
	"github.com/limitr/limitr/internal/wire"
)

const (
	// maxFieldErrors bounds the problems listed for one request.
	maxFieldErrors = 100
	// recreatedTolerance absorbs the precision a customer's creation time loses on its
	// way through an SDK snapshot (as usage ingest does).
	recreatedTolerance = time.Millisecond
	// usagePeriodWindow and usageClockSkew bound period starts as usage batches do.
	usagePeriodWindow = usage.PeriodWindow
	usageClockSkew    = usage.ClockSkew
)

// ask is one checked ask's amounts.
type ask struct {
	limit, target, used, need num.Dec
}

// checked is a request whose every field was checked without the database.
type checked struct {
	asks  []ask
	names []string // distinct customer names
	errs  validation.Errors
}

func (v *checked) add(path, msg string) {
	if v.errs.Len() < maxFieldErrors {
		v.errs.Add(path, msg)
	}
}

func (v *checked) field(fe *validation.FieldError) {
	if fe != nil {
		v.add(fe.Path, fe.Message)
	}
}

func askPath(i int, field string) string {
	return "leases[" + strconv.Itoa(i) + "]." + field
}

// check validates every field that can be checked without the database.
func check(in *wire.LeaseRequest, now time.Time) *checked {
	v := &checked{}
	v.field(validation.InstanceID(in.InstanceID))
	switch {
	case len(in.Leases) == 0:
		v.add("leases", "is empty: ask for 1 to "+strconv.Itoa(wire.MaxLeases)+" meters or caps")
		return v
	case len(in.Leases) > wire.MaxLeases:
		v.add("leases", fmt.Sprintf("has %d entries; at most %d per request", len(in.Leases), wire.MaxLeases))
		return v
	}
	v.asks = make([]ask, len(in.Leases))
	seen := map[string]bool{}
	for i := range in.Leases {
		a := &in.Leases[i]
		v.field(prefixed(i, validation.Required("customer", a.Customer)))
		switch {
		case a.Cap == "":
			v.field(prefixed(i, validation.Required("entitlement", a.Entitlement)))
		case a.Entitlement != "":
			v.add(askPath(i, "entitlement"), "must be empty when cap is set: a lease is of a meter or of a cap")
		case len(a.Cap) > usage.MaxCapKeyLength:
			v.add(askPath(i, "cap"), fmt.Sprintf("is longer than %d bytes", usage.MaxCapKeyLength))
		default:
			v.field(prefixed(i, validation.Required("cap", a.Cap)))
		}
		if a.Customer != "" && !seen[a.Customer] {
			seen[a.Customer] = true
			v.names = append(v.names, a.Customer)
		}
		switch {
		case a.PeriodStart.IsZero():
			v.add(askPath(i, "period_start"), "is required")
		case a.PeriodStart.After(now.Add(usagePeriodWindow)):
			v.add(askPath(i, "period_start"), fmt.Sprintf("%s is more than %d days in the future",
				a.PeriodStart.UTC().Format(time.RFC3339), int(usagePeriodWindow/(24*time.Hour))))
		}
		out := &v.asks[i]
		out.limit = v.amount(i, "limit", a.Limit)
		out.target = v.amount(i, "target", a.Target)
		out.used = v.amount(i, "used", a.Used)
		out.need = num.Zero
		if a.Need != "" {
			out.need = v.amount(i, "need", a.Need)
		}
	}
	return v
}

// prefixed is fe about a field of leases[i].
func prefixed(i int, fe *validation.FieldError) *validation.FieldError {
	if fe == nil {
		return nil
	}
	return &validation.FieldError{Path: askPath(i, fe.Path), Message: fe.Message}
}

// amount parses a non-negative exact decimal field of leases[i].
func (v *checked) amount(i int, field, s string) num.Dec {
	d, fe := validation.ExactDecimal(askPath(i, field), s)
	if fe != nil {
		v.field(fe)
		return num.Zero
	}
	if d.IsNeg() {
		v.add(askPath(i, field), "must not be negative")
		return num.Zero
	}
	return d
}

func invalidRequest(problems int) string {
	if problems == 1 {
		return "the lease request is invalid (1 problem)"
	}
	return fmt.Sprintf("the lease request is invalid (%d problems)", problems)
}
