package analytics

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/limitr/limitr/internal/aggregate"
)

func TestQueryValidation(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 5, 13, 20, 0, 0, time.UTC)
	for _, tc := range []struct {
		name  string
		q     MarginsQuery
		field string
	}{
		{"group", MarginsQuery{GroupBy: "region"}, "group_by"},
		{"interval", MarginsQuery{Interval: "week"}, "interval"},
		{"sort", MarginsQuery{Sort: "-profit"}, "sort"},
		{"limit", MarginsQuery{Limit: 501}, "limit"},
		{"negative limit", MarginsQuery{Limit: -1}, "limit"},
		{"window", MarginsQuery{From: now, To: now.Add(-time.Hour)}, "from"},
		{"too many hours", MarginsQuery{From: now.AddDate(0, -2, 0), To: now, Interval: Hour}, "to"},
		{"cursor", MarginsQuery{Cursor: "nope"}, "cursor"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.q.Validate(now)
			if err == nil && tc.field == "cursor" {
				_, err = tc.q.offset()
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("got %v, want an invalid %s", err, tc.field)
			}
		})
	}
	q := MarginsQuery{}
	if err := q.Validate(now); err != nil {
		t.Fatal(err)
	}
	if q.GroupBy != ByCustomer || q.Interval != Day || q.Sort != "margin_percent" || q.Limit != 50 ||
		!q.To.Equal(time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)) || !q.From.Equal(time.Date(2026, 11, 5, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("defaults: %+v", q)
	}
	// A cursor belongs to its query: another sort or window refuses it.
	q.Cursor = q.next(50)
	if off, err := q.offset(); err != nil || off != 50 {
		t.Fatalf("cursor: %d %v", off, err)
	}
	q.Sort = "-revenue"
	if _, err := q.offset(); !errors.Is(err, ErrInvalid) {
		t.Fatalf("cursor of another query: %v", err)
	}
}

// Ranking, paging and grouping over one month of three customers.
func TestMarginsRankPageAndGroup(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.customer("acme", "basic")
	h.customer("globex", "pro")
	h.customer("initech", "")
	h.exec(`update customers set type = 'team' where id = 'initech'`)
	h.at(jan1.AddDate(0, 0, 3).Add(5 * time.Hour))
	h.usage("acme", "images", jan1, "500", "40")     // expensive to serve
	h.usage("initech", "images", jan1, "500", "0.1") // cheap
	h.usage("globex", "tokens", jan1, "7000000", "1")
	h.book()
	feb1 := jan1.AddDate(0, 1, 0)
	page := func(q MarginsQuery) Margins {
		t.Helper()
		q.From, q.To = jan1, feb1
		m, err := h.svc.Margins(h.ctx, h.env, q)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	keys := func(m Margins) string {
		var out []string
		for _, g := range m.Groups {
			out = append(out, g.Key)
		}
		return strings.Join(out, ",")
	}
	worst := page(MarginsQuery{})
	if keys(worst) != "acme,globex,initech" || *worst.Groups[0].Totals.MarginPercent >= *worst.Groups[1].Totals.MarginPercent {
		t.Fatalf("worst margin first: %s %+v", keys(worst), worst.Groups)
	}
	first := page(MarginsQuery{Sort: "-revenue", Limit: 2})
	if len(first.Groups) != 2 || first.NextCursor == "" {
		t.Fatalf("first page: %s next %q", keys(first), first.NextCursor)
	}
	second := page(MarginsQuery{Sort: "-revenue", Limit: 2, Cursor: first.NextCursor})
	if len(second.Groups) != 1 || second.NextCursor != "" || strings.Contains(keys(first), second.Groups[0].Key) {
		t.Fatalf("second page: %s after %s", keys(second), keys(first))
	}
	byType := page(MarginsQuery{GroupBy: ByCustomerType, Sort: "key"})
	if keys(byType) != "team,user" {
		t.Fatalf("by customer type: %s", keys(byType))
	}
	byEnt := page(MarginsQuery{GroupBy: ByEntitlement, Sort: "key"})
	if keys(byEnt) != "images,subscription,tokens" {
		t.Fatalf("by entitlement: %s", keys(byEnt))
	}
	// Daily series: the usage on January 4th, the fees on the 1st (globex's after its
	// trial, on the 15th).
	daily := page(MarginsQuery{Sort: "key", Interval: Day})
	for _, g := range daily.Groups {
		var days []string
		for _, p := range g.Series {
			days = append(days, p.Start.Format("02"))
		}
		want := map[string]string{"acme": "01,04", "globex": "01,04", "initech": "01,04"}[g.Key]
		if strings.Join(days, ",") != want {
			t.Errorf("%s: days %v, want %s", g.Key, days, want)
		}
	}
	// An hourly window inside a day: from 05:00 on the 4th it has the usage, from
	// 06:00 it does not.
	for _, tc := range []struct {
		from  time.Time
		calls int64
	}{{jan1.AddDate(0, 0, 3).Add(5 * time.Hour), 3}, {jan1.AddDate(0, 0, 3).Add(6 * time.Hour), 0}} {
		m, err := h.svc.Margins(h.ctx, h.env, MarginsQuery{From: tc.from, To: tc.from.Add(12 * time.Hour), Interval: Hour})
		if err != nil {
			t.Fatal(err)
		}
		if m.Totals.Calls != tc.calls {
			t.Fatalf("from %s: %+v", tc.from, m.Totals)
		}
		var calls int64
		for _, g := range m.Groups {
			calls += g.Totals.Calls
		}
		if calls != tc.calls {
			t.Fatalf("from %s: customers' calls %d", tc.from, calls)
		}
	}
	u, err := h.svc.Usage(h.ctx, h.env, UsageQuery{Customer: "acme", From: jan1, To: feb1, Interval: Month})
	if err != nil {
		t.Fatal(err)
	}
	if len(u.Series) != 1 || u.Series[0].Entitlement != "images" || u.Series[0].Points[0].Units != "500" || u.Series[0].Points[0].Cost != "40.00" {
		t.Fatalf("usage of acme: %+v", u)
	}
	all, err := h.svc.Usage(h.ctx, h.env, UsageQuery{Entitlement: "images", From: jan1, To: feb1, Interval: Day})
	if err != nil {
		t.Fatal(err)
	}
	if len(all.Series) != 1 || len(all.Series[0].Points) != 1 || all.Series[0].Points[0].Units != "1000" {
		t.Fatalf("usage of images: %+v", all)
	}
	if _, err := h.svc.CustomerMargin(h.ctx, h.env, "nobody"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown customer: %v", err)
	}
}

// The booker books what aggregation batches touch, and its sweep finds what they do
// not: a customer whose meters were never booked, and topups.
func TestBookerBooksTouchedCustomersAndSweeps(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.customer("acme", "basic")
	h.customer("globex", "basic")
	b := h.svc.NewBooker(BookerConfig{})
	h.agg = aggregate.New(h.pool, aggregate.Options{OnBatch: b.OnBatch})
	h.at(jan1.AddDate(0, 0, 2))
	h.usage("acme", "images", jan1, "500", "1")
	if _, err := h.agg.Drain(h.ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Flush(h.ctx); err != nil {
		t.Fatal(err)
	}
	count := func(sql string) int {
		var n int
		if err := h.pool.QueryRow(h.ctx, sql).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := count(`select count(*) from analytics_meters`); n != 1 {
		t.Fatalf("booked meters after a batch: %d", n)
	}
	// Usage folded without the booker hearing of it (a crash between the two).
	h.usage("globex", "images", jan1, "70", "1")
	if _, err := aggregate.New(h.pool, aggregate.Options{}).Drain(h.ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Sweep(h.ctx); err != nil {
		t.Fatal(err)
	}
	if n := count(`select count(*) from analytics_meters`); n != 2 {
		t.Fatalf("booked meters after a sweep: %d", n)
	}
	if n := count(`select count(*) from analytics_fees`); n != 2 {
		t.Fatalf("booked fees after a sweep: %d", n)
	}
}
