package leases

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/usage"
	"github.com/limitr/limitr/internal/validation"
	"github.com/limitr/limitr/internal/wire"
)

const (
	// maxDecimalText bounds a decimal's text.
	maxDecimalText = 64
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
	v.field(checkInstanceID(in.InstanceID))
	switch {
	case len(in.Leases) == 0:
		v.add("leases", "is empty: ask for 1 to "+strconv.Itoa(wire.MaxLeases)+" meters")
		return v
	case len(in.Leases) > wire.MaxLeases:
		v.add("leases", fmt.Sprintf("has %d entries; at most %d per request", len(in.Leases), wire.MaxLeases))
		return v
	}
	v.asks = make([]ask, len(in.Leases))
	seen := map[string]bool{}
	for i := range in.Leases {
		a := &in.Leases[i]
		for _, f := range []struct{ name, val string }{{"customer", a.Customer}, {"entitlement", a.Entitlement}} {
			if fe := validation.Required(f.name, f.val); fe != nil {
				v.add(askPath(i, fe.Path), fe.Message)
			}
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

// amount parses a non-negative exact decimal field of leases[i].
func (v *checked) amount(i int, field, s string) num.Dec {
	d, fe := parseDecimal(askPath(i, field), s)
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

// checkInstanceID: 1 to wire.MaxInstance characters of [A-Za-z0-9._-], as usage
// batches have.
func checkInstanceID(id string) *validation.FieldError {
	if id == "" {
		return &validation.FieldError{Path: "instance_id", Message: "is required"}
	}
	if len(id) > wire.MaxInstance {
		return &validation.FieldError{Path: "instance_id", Message: fmt.Sprintf("is longer than %d characters", wire.MaxInstance)}
	}
	for i := 0; i < len(id); i++ {
		ch := id[i]
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '.' || ch == '_' || ch == '-') {
			return &validation.FieldError{Path: "instance_id", Message: "may contain only letters, digits, '.', '_' and '-'"}
		}
	}
	return nil
}

// parseDecimal parses an exact decimal as the SDK writes it ("12.5"): no exponent, at
// most 19 fractional digits and 19 integer digits, so nothing is rounded.
func parseDecimal(path, s string) (num.Dec, *validation.FieldError) {
	bad := func(msg string) (num.Dec, *validation.FieldError) {
		return num.Zero, &validation.FieldError{Path: path, Message: msg}
	}
	if s == "" {
		return bad("is required: an exact decimal written as a string, such as \"12.5\"")
	}
	if len(s) > maxDecimalText {
		return bad(fmt.Sprintf("is longer than %d characters", maxDecimalText))
	}
	if strings.ContainsAny(s, "eE") {
		return bad(fmt.Sprintf("must be a plain decimal such as \"12.5\" (no exponent), got %q", s))
	}
	if i := strings.IndexByte(s, '.'); i >= 0 && len(strings.TrimRight(s[i+1:], "0")) > 19 {
		return bad(fmt.Sprintf("has more than 19 decimal places, got %q", s))
	}
	d, err := num.Parse(s)
	if err != nil {
		return bad(fmt.Sprintf("must be an exact decimal such as \"12.5\", got %q", s))
	}
	return d, nil
}
