package analytics

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Group-by dimensions, intervals and sort keys of a margins query.
const (
	ByCustomer     = "customer"
	ByPlan         = "plan"
	ByEntitlement  = "entitlement"
	ByCustomerType = "customer_type"

	Hour  = "hour"
	Day   = "day"
	Month = "month"
)

var sortKeys = []string{"margin_percent", "margin", "revenue", "cost", "key"}

// MarginsQuery asks for revenue, cost and margin per group and interval over
// [From, To). From is rounded down and To up to the interval (UTC).
type MarginsQuery struct {
	GroupBy  string
	From, To time.Time
	Interval string
	// Sort is a sort key, optionally prefixed with "-" for descending; the default
	// "margin_percent" lists the worst margin first.
	Sort   string
	Limit  int
	Cursor string
}

// UsageQuery asks for units, calls and cost over time, of one customer or of every
// customer (by entitlement).
type UsageQuery struct {
	Customer, Entitlement string
	From, To              time.Time
	Interval              string
}

// FieldError is a query that does not validate, naming the offending field; it
// matches ErrInvalid.
type FieldError struct {
	Field, Message string
}

func (e *FieldError) Error() string { return "analytics: invalid query: " + e.Field + " " + e.Message }

// Unwrap makes errors.Is(err, ErrInvalid) hold.
func (e *FieldError) Unwrap() error { return ErrInvalid }

func fieldErr(field, msg string) error { return &FieldError{Field: field, Message: msg} }

// maxBuckets bounds a series: a window of a year by day, a month by hour.
var maxBuckets = map[string]int{Hour: 24 * 31, Day: 400, Month: 120}

func normalizeWindow(from, to *time.Time, interval *string, now time.Time) error {
	if *interval == "" {
		*interval = Day
	}
	if _, ok := maxBuckets[*interval]; !ok {
		return fieldErr("interval", "must be hour, day or month")
	}
	if to.IsZero() {
		*to = now
	}
	if from.IsZero() {
		*from = to.AddDate(0, 0, -30)
	}
	if !from.Before(*to) {
		return fieldErr("from", "must be before to")
	}
	*from, *to = floor(*from, *interval), ceil(*to, *interval)
	if n := buckets(*from, *to, *interval); n > maxBuckets[*interval] {
		return fieldErr("to", fmt.Sprintf("makes %d %s intervals; at most %d are served (use a coarser interval)", n, *interval, maxBuckets[*interval]))
	}
	return nil
}

// Validate checks the query and fills its defaults (to: now, from: 30 days before,
// interval: day, group_by: customer, sort: worst margin first, limit 50).
func (q *MarginsQuery) Validate(now time.Time) error {
	switch q.GroupBy {
	case "":
		q.GroupBy = ByCustomer
	case ByCustomer, ByPlan, ByEntitlement, ByCustomerType:
	default:
		return fieldErr("group_by", "must be customer, plan, entitlement or customer_type")
	}
	if q.Sort == "" {
		q.Sort = "margin_percent"
	}
	key := strings.TrimPrefix(q.Sort, "-")
	ok := false
	for _, k := range sortKeys {
		ok = ok || k == key
	}
	if !ok {
		return fieldErr("sort", "must be one of margin_percent, margin, revenue, cost, key (prefix - for descending)")
	}
	if q.Limit == 0 {
		q.Limit = 50
	}
	if q.Limit < 1 || q.Limit > 500 {
		return fieldErr("limit", "must be between 1 and 500")
	}
	return normalizeWindow(&q.From, &q.To, &q.Interval, now)
}

// Validate checks the query and fills its defaults like MarginsQuery's.
func (q *UsageQuery) Validate(now time.Time) error {
	if len(q.Customer) > 256 {
		return fieldErr("customer", "is longer than 256 characters")
	}
	if len(q.Entitlement) > 256 {
		return fieldErr("entitlement", "is longer than 256 characters")
	}
	return normalizeWindow(&q.From, &q.To, &q.Interval, now)
}

// cursor is where the next page starts: the ranking is recomputed per request (the
// figures move as usage arrives), so a page is an offset into the ranking of the
// same query.
type cursor struct {
	Offset int    `json:"o"`
	Query  string `json:"q"`
}

func (q MarginsQuery) fingerprint() string {
	return fmt.Sprintf("%s|%d|%d|%s|%s", q.GroupBy, q.From.Unix(), q.To.Unix(), q.Interval, q.Sort)
}

func (q MarginsQuery) offset() (int, error) {
	if q.Cursor == "" {
		return 0, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(q.Cursor)
	var c cursor
	if err == nil {
		err = json.Unmarshal(b, &c)
	}
	if err != nil || c.Offset < 0 || c.Query != q.fingerprint() {
		return 0, fieldErr("cursor", "is not a cursor this query returned")
	}
	return c.Offset, nil
}

func (q MarginsQuery) next(offset int) string {
	b, _ := json.Marshal(cursor{Offset: offset, Query: q.fingerprint()})
	return base64.RawURLEncoding.EncodeToString(b)
}

func floor(t time.Time, interval string) time.Time {
	t = t.UTC()
	switch interval {
	case Hour:
		return t.Truncate(time.Hour)
	case Month:
		return time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
	default:
		return day(t)
	}
}

func ceil(t time.Time, interval string) time.Time {
	f := floor(t, interval)
	if f.Equal(t.UTC()) {
		return f
	}
	return step(f, interval)
}

func step(t time.Time, interval string) time.Time {
	switch interval {
	case Hour:
		return t.Add(time.Hour)
	case Month:
		return t.AddDate(0, 1, 0)
	default:
		return t.AddDate(0, 0, 1)
	}
}

func buckets(from, to time.Time, interval string) int {
	n := 0
	for t := from; t.Before(to) && n <= 100_000; t = step(t, interval) {
		n++
	}
	return n
}
