package main

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/limitr/limitr/internal/billing"
	"github.com/limitr/limitr/internal/num"
)

// The columns of a usage file, as its header names them (in any order).
const (
	colCustomer     = "customer"
	colPlan         = "plan"
	colEntitlement  = "entitlement"
	colPeriodStart  = "period_start"
	colUnits        = "units"
	colGrantCovered = "grant_covered"
	colCreatedAt    = "created_at"
	colTimezone     = "timezone"
	colOverhead     = "overhead"
)

// usageColumns lists every column; the first five are required.
var usageColumns = []string{colCustomer, colPlan, colEntitlement, colPeriodStart, colUnits, colGrantCovered, colCreatedAt, colTimezone, colOverhead}

const requiredColumns = 5

// csvError is a problem in a usage file, at a line and, when it is about one value,
// in a column: `usage.csv:7: units: "12x" is not a decimal`.
type csvError struct {
	file   string
	line   int
	column string
	msg    string
}

func (e *csvError) Error() string {
	var b strings.Builder
	b.WriteString(e.file)
	if e.line > 0 {
		b.WriteString(":" + strconv.Itoa(e.line))
	}
	b.WriteString(": ")
	if e.column != "" {
		b.WriteString(e.column + ": ")
	}
	b.WriteString(e.msg)
	return b.String()
}

// usageCustomer is one customer of a usage file: its plan, billing anchor, time zone
// and meter periods.
type usageCustomer struct {
	id       string
	plan     string
	created  time.Time // the billing anchor: created_at, else the earliest period_start
	timezone string    // "" for the policy's
	loc      *time.Location
	meters   []billing.MeterUsage
	lines    []int // the line each meter came from

	explicitCreated bool
	planLine        int
	createdLine     int
	timezoneLine    int
}

// usageRow is one parsed row.
type usageRow struct {
	line                    int
	customer, plan, ent, tz string
	meter                   billing.MeterUsage
	created                 time.Time // zero when the row leaves it out
	loc                     *time.Location
}

type usageParser struct {
	file   string
	cols   map[string]int
	byID   map[string]*usageCustomer
	seen   map[meterID]int // the line of each meter period, to catch duplicates
	zones  map[string]*time.Location
	starts map[string]time.Time // each customer's earliest period_start
}

type meterID struct {
	customer, ent string
	sec           int64
	nsec          int
}

// parseUsageCSV reads a usage file (see `limitr help invoice`) into its customers,
// sorted by id. Every problem names the file, the line and the column.
func parseUsageCSV(file string, r io.Reader) ([]*usageCustomer, error) {
	cr := csv.NewReader(r)
	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return nil, &csvError{file: file, msg: "empty file: want a header row naming the columns " + strings.Join(usageColumns, ",")}
	}
	if err != nil {
		return nil, csvReadError(file, err)
	}
	p := &usageParser{file: file, byID: map[string]*usageCustomer{}, seen: map[meterID]int{},
		zones: map[string]*time.Location{}, starts: map[string]time.Time{}}
	if p.cols, err = headerColumns(file, header); err != nil {
		return nil, err
	}
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, csvReadError(file, err)
		}
		line, _ := cr.FieldPos(0)
		row, err := p.parseRow(line, rec)
		if err != nil {
			return nil, err
		}
		if err := p.add(row); err != nil {
			return nil, err
		}
	}
	if len(p.byID) == 0 {
		return nil, &csvError{file: file, msg: "no usage rows after the header"}
	}
	return p.finish()
}

func csvReadError(file string, err error) error {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		return &csvError{file: file, line: pe.Line, msg: pe.Err.Error()}
	}
	return &csvError{file: file, msg: err.Error()}
}

// headerColumns maps each column name to its index: names are exact, each at most
// once, and the required ones present.
func headerColumns(file string, header []string) (map[string]int, error) {
	cols := map[string]int{}
	for i, name := range header {
		if i == 0 {
			name = strings.TrimPrefix(name, "\ufeff") // a byte order mark, as spreadsheets write
		}
		name = strings.TrimSpace(name)
		known := false
		for _, c := range usageColumns {
			known = known || c == name
		}
		switch {
		case name == "":
			return nil, &csvError{file: file, line: 1, msg: fmt.Sprintf("column %d has no name", i+1)}
		case !known:
			return nil, &csvError{file: file, line: 1, msg: fmt.Sprintf("unknown column %q (columns: %s)", name, strings.Join(usageColumns, ", "))}
		}
		if _, dup := cols[name]; dup {
			return nil, &csvError{file: file, line: 1, msg: fmt.Sprintf("column %q appears twice", name)}
		}
		cols[name] = i
	}
	for _, c := range usageColumns[:requiredColumns] {
		if _, ok := cols[c]; !ok {
			return nil, &csvError{file: file, line: 1, msg: fmt.Sprintf("missing column %q (required: %s)", c, strings.Join(usageColumns[:requiredColumns], ", "))}
		}
	}
	return cols, nil
}

// parseRow checks every value of a row on its own.
func (p *usageParser) parseRow(line int, rec []string) (usageRow, error) {
	get := func(col string) string {
		if i, ok := p.cols[col]; ok && i < len(rec) {
			return strings.TrimSpace(rec[i])
		}
		return ""
	}
	fail := func(col, format string, args ...any) error {
		return &csvError{file: p.file, line: line, column: col, msg: fmt.Sprintf(format, args...)}
	}
	row := usageRow{line: line, customer: get(colCustomer), plan: get(colPlan), ent: get(colEntitlement), tz: get(colTimezone)}
	for _, req := range []struct{ col, v string }{{colCustomer, row.customer}, {colPlan, row.plan}, {colEntitlement, row.ent}} {
		if req.v == "" {
			return usageRow{}, fail(req.col, "is required")
		}
	}
	var err error
	if row.meter.PeriodStart, err = parseInstant(get(colPeriodStart)); err != nil {
		return usageRow{}, fail(colPeriodStart, "%v", err)
	}
	if row.meter.Units, err = parseAmount(get(colUnits), false); err != nil {
		return usageRow{}, fail(colUnits, "%v", err)
	}
	if row.meter.GrantCovered, err = parseAmount(get(colGrantCovered), true); err != nil {
		return usageRow{}, fail(colGrantCovered, "%v", err)
	}
	if row.meter.Overhead, err = parseAmount(get(colOverhead), true); err != nil {
		return usageRow{}, fail(colOverhead, "%v", err)
	}
	row.meter.Entitlement = row.ent
	if s := get(colCreatedAt); s != "" {
		if row.created, err = parseInstant(s); err != nil {
			return usageRow{}, fail(colCreatedAt, "%v", err)
		}
	}
	if row.tz != "" {
		if row.loc, err = p.zone(row.tz); err != nil {
			return usageRow{}, fail(colTimezone, "%v", err)
		}
	}
	return row, nil
}

// add files a row under its customer: the rows of one customer agree on its plan,
// creation and time zone, and name each meter period once.
func (p *usageParser) add(row usageRow) error {
	fail := func(col, format string, args ...any) error {
		return &csvError{file: p.file, line: row.line, column: col, msg: fmt.Sprintf(format, args...)}
	}
	c := p.byID[row.customer]
	if c == nil {
		c = &usageCustomer{id: row.customer, plan: row.plan, planLine: row.line}
		p.byID[row.customer] = c
	}
	if row.plan != c.plan {
		return fail(colPlan, "%q differs from %q on line %d (the rows of customer %q must agree)", row.plan, c.plan, c.planLine, c.id)
	}
	if !row.created.IsZero() {
		if c.explicitCreated && !row.created.Equal(c.created) {
			return fail(colCreatedAt, "%s differs from %s on line %d (the rows of customer %q must agree)",
				row.created.Format(time.RFC3339Nano), c.created.Format(time.RFC3339Nano), c.createdLine, c.id)
		}
		c.created, c.explicitCreated, c.createdLine = row.created, true, row.line
	}
	if row.tz != "" {
		if c.timezone != "" && row.tz != c.timezone {
			return fail(colTimezone, "%q differs from %q on line %d (the rows of customer %q must agree)", row.tz, c.timezone, c.timezoneLine, c.id)
		}
		c.timezone, c.loc, c.timezoneLine = row.tz, row.loc, row.line
	}
	key := meterID{row.customer, row.ent, row.meter.PeriodStart.Unix(), row.meter.PeriodStart.Nanosecond()}
	if prev, dup := p.seen[key]; dup {
		return fail(colPeriodStart, "customer %q already has %s usage for the meter period from %s, on line %d",
			c.id, row.ent, row.meter.PeriodStart.Format(time.RFC3339Nano), prev)
	}
	p.seen[key] = row.line
	if s, ok := p.starts[c.id]; !ok || row.meter.PeriodStart.Before(s) {
		p.starts[c.id] = row.meter.PeriodStart
	}
	c.meters = append(c.meters, row.meter)
	c.lines = append(c.lines, row.line)
	return nil
}

// finish sets each customer's anchor (its earliest period_start unless created_at is
// given; no meter period starts before it) and sorts the customers by id.
func (p *usageParser) finish() ([]*usageCustomer, error) {
	out := make([]*usageCustomer, 0, len(p.byID))
	for _, c := range p.byID {
		if !c.explicitCreated {
			c.created = p.starts[c.id]
		}
		for i, m := range c.meters {
			if m.PeriodStart.Before(c.created) {
				return nil, &csvError{file: p.file, line: c.lines[i], column: colPeriodStart,
					msg: fmt.Sprintf("%s is before the customer's created_at %s (line %d)",
						m.PeriodStart.Format(time.RFC3339Nano), c.created.Format(time.RFC3339Nano), c.createdLine)}
			}
		}
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out, nil
}

// zone loads an IANA time zone once per file.
func (p *usageParser) zone(name string) (*time.Location, error) {
	if loc, ok := p.zones[name]; ok {
		return loc, nil
	}
	loc, err := time.LoadLocation(name)
	if err != nil || name == "Local" {
		return nil, fmt.Errorf("%q is not an IANA time zone, like Europe/Paris", name)
	}
	p.zones[name] = loc
	return loc, nil
}

var epoch = time.Unix(0, 0)

func parseInstant(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, errors.New("is required")
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is not an RFC 3339 time, like 2026-02-10T00:00:00Z", s)
	}
	if t.Before(epoch) {
		return time.Time{}, fmt.Errorf("%q is before 1970", s)
	}
	return t.UTC(), nil
}

// parseAmount reads an exact, non-negative decimal; optional ones default to 0.
func parseAmount(s string, optional bool) (num.Dec, error) {
	if s == "" {
		if optional {
			return num.Zero, nil
		}
		return num.Zero, errors.New("is required")
	}
	d, err := num.Parse(s)
	if err != nil {
		return num.Zero, fmt.Errorf("%q is not a decimal", s)
	}
	if d.IsNeg() {
		return num.Zero, fmt.Errorf("%q must not be negative", s)
	}
	return d, nil
}
