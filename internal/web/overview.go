package web

import (
	"errors"
	"html/template"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/limitr/limitr/internal/alerts"
	"github.com/limitr/limitr/internal/analytics"
	"github.com/limitr/limitr/internal/billing"
	"github.com/limitr/limitr/internal/policies/pgstore"
	"github.com/limitr/limitr/internal/web/chart"
)

// overviewData is the Overview: the environment's money this period, who costs more
// than they bring, who is near a limit, and what fired lately.
type overviewData struct {
	// Window is "month" (this calendar month, UTC) or "30d".
	Window   string
	From, To time.Time
	// Last is the window's last day (To is exclusive).
	Last     time.Time
	Currency string
	Totals   analytics.Figures
	// Trend is revenue, cost and margin per day; ByPlan is revenue per plan per day.
	Trend, ByPlan template.HTML
	// Worst are the customers with the worst margin in the window, worst first.
	Worst []worstRow
	// RankedAt is when Worst was ranked (a large environment's ranking is kept a minute).
	RankedAt time.Time
	// NearLimits are usage alerts fired in the window, one per customer and
	// entitlement (the highest threshold), newest first.
	NearLimits []alerts.Alert
	Recent     []alerts.Alert
	// Problem explains missing figures (no published policy yet).
	Problem string
}

// worstRow is a customer of the worst-margins table; Losing: it costs more than it brings.
type worstRow struct {
	analytics.Group
	Losing bool
}

const (
	overviewWorst  = 10
	overviewRecent = 10
	// overviewAlertScan is how many of the newest alerts the Overview reads to find
	// customers near their limits: one indexed page, whatever the number of customers.
	overviewAlertScan = 200
)

// overview is the landing page.
func (s *Server) overview(c echo.Context) error {
	ctx := c.Request().Context()
	env, err := s.environment(c)
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	d := overviewData{Window: "month", To: now, From: time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)}
	if c.QueryParam("window") == "30d" {
		d.Window, d.From = "30d", now.AddDate(0, 0, -30)
	}

	byPlan, err := s.deps.Analytics.Margins(ctx, env, analytics.MarginsQuery{GroupBy: analytics.ByPlan, From: d.From, To: d.To,
		Interval: analytics.Day, Sort: "-revenue", Limit: 50})
	switch {
	case errors.Is(err, billing.ErrNoPolicy), errors.Is(err, pgstore.ErrNoActivePolicy):
		d.Problem = "Publish a policy to this environment to see revenue, cost and margin."
	case err != nil:
		return err
	default:
		d.From, d.To, d.Currency, d.Totals = byPlan.From, byPlan.To, byPlan.Currency, byPlan.Totals
		d.Trend, d.ByPlan = trendCharts(byPlan)
		if d.Worst, d.RankedAt, err = s.worstMargins(ctx, env, d.From, d.To); err != nil {
			return err
		}
	}

	d.Last = d.To.Add(-time.Nanosecond)
	fired, err := s.deps.Alerts.Alerts(ctx, env, alerts.Page{Limit: overviewAlertScan})
	if err != nil {
		return err
	}
	d.Recent = fired[:min(len(fired), overviewRecent)]
	d.NearLimits = nearLimits(fired, d.From, overviewWorst)
	return s.render(c, http.StatusOK, "overview", d)
}

// nearLimits picks the usage alerts fired since from: one per customer and
// entitlement, its highest threshold, newest first, at most n.
func nearLimits(fired []alerts.Alert, from time.Time, n int) []alerts.Alert {
	type key struct{ customer, entitlement string }
	var out []alerts.Alert
	at := map[key]int{}
	for _, a := range fired {
		if a.Superseded || a.CustomerID == "" || a.FiredAt.Before(from) ||
			(a.Kind != alerts.KindUsagePercent && a.Kind != alerts.KindForecastExceedsLimit) {
			continue
		}
		k := key{a.CustomerID, a.Entitlement}
		if i, ok := at[k]; ok {
			if thresholdOf(a) > thresholdOf(out[i]) {
				out[i] = a
			}
			continue
		}
		if len(out) == n {
			continue
		}
		at[k] = len(out)
		out = append(out, a)
	}
	return out
}

func thresholdOf(a alerts.Alert) float64 {
	v, err := strconv.ParseFloat(a.Threshold, 64)
	if err != nil {
		return math.Inf(-1)
	}
	return v
}

// trendCharts draws the window's daily revenue, cost and margin (summed over plans),
// and its daily revenue per plan.
func trendCharts(m analytics.Margins) (trend, byPlan template.HTML) {
	var days []time.Time
	for t := m.From; t.Before(m.To); t = t.AddDate(0, 0, 1) {
		days = append(days, t)
	}
	labels := make([]string, len(days))
	index := make(map[time.Time]int, len(days))
	for i, t := range days {
		labels[i], index[t] = t.Format("2 Jan"), i
	}
	rev, cost := make([]float64, len(days)), make([]float64, len(days))
	plans := make([]chart.Series, 0, len(m.Groups))
	for _, g := range m.Groups {
		ps := chart.Series{Name: planName(g.Key), Values: make([]float64, len(days))}
		for _, p := range g.Series {
			i, ok := index[p.Start.UTC()]
			if !ok {
				continue
			}
			r, c := chartAmount(p.Revenue), chartAmount(p.Cost)
			rev[i] += r
			cost[i] += c
			ps.Values[i] += r
		}
		plans = append(plans, ps)
	}
	margin := make([]float64, len(days))
	for i := range days {
		margin[i] = rev[i] - cost[i]
	}
	format := func(v float64) string { return chart.Compact(v) }
	trend = chart.Chart{Title: "Revenue, cost and margin per day (" + m.Currency + ")", Labels: labels, Format: format,
		Series: []chart.Series{{Name: "Revenue", Values: rev}, {Name: "Cost", Values: cost}, {Name: "Margin", Values: margin}}}.SVG()
	if len(plans) > len(chart.Palette) { // the rest would repeat colours
		plans = plans[:len(chart.Palette)]
	}
	byPlan = chart.Chart{Kind: chart.Line, Title: "Revenue per plan per day (" + m.Currency + ")", Labels: labels, Format: format,
		Series: plans}.SVG()
	return trend, byPlan
}

func planName(key string) string {
	if strings.TrimSpace(key) == "" {
		return "(no plan)"
	}
	return key
}

// chartAmount reads a decimal amount for a chart (an approximation is fine there; tables
// show the exact figures).
func chartAmount(s string) float64 {
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0
	}
	return v
}
