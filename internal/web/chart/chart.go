// Package chart draws small, static SVG charts for the dashboard: line and bar charts
// with axes, tick labels and a legend, rendered on the server so a page needs no
// JavaScript. Colours are SVG presentation attributes, not style attributes, so the
// charts pass a Content-Security-Policy without 'unsafe-inline'.
package chart

import (
	"fmt"
	"html/template"
	"math"
	"strconv"
	"strings"
)

// Kind is how series are drawn.
type Kind int

const (
	// Line draws each series as a polyline with a dot per point.
	Line Kind = iota
	// Bar draws the series of a point as bars side by side.
	Bar
)

// Palette is the series colours, in order; a chart with more series starts over.
var Palette = []string{"#2f54eb", "#d4380d", "#067647", "#9254de", "#d48806", "#08979c", "#c41d7f", "#595959"}

// Series is one named sequence of values, one per label of the chart. NaN is a gap.
type Series struct {
	Name   string
	Values []float64
}

// Chart is a chart to render.
type Chart struct {
	Kind Kind
	// Title names the chart for screen readers (the SVG's <title>).
	Title string
	// Labels are the x-axis categories (e.g. days); every series has one value per label.
	Labels []string
	Series []Series
	// Width and Height are the SVG's size in user units (defaults 640×240).
	Width, Height int
	// Format writes a y value (tick labels); default: compact decimal.
	Format func(float64) string
}

// Margins around the plot area, in user units.
const (
	marginLeft   = 56
	marginRight  = 12
	marginTop    = 28 // the legend
	marginBottom = 28 // the x labels
)

// SVG renders the chart as an inline <svg> element. With no labels or no series it
// renders a frame saying there is no data.
func (c Chart) SVG() template.HTML {
	w, h := c.Width, c.Height
	if w <= 0 {
		w = 640
	}
	if h <= 0 {
		h = 240
	}
	format := c.Format
	if format == nil {
		format = Compact
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 %d %d" width="%d" height="%d" role="img" aria-label="%s">`,
		w, h, w, h, esc(c.Title))
	fmt.Fprintf(&b, `<title>%s</title>`, esc(c.Title))
	lo, hi, ok := c.bounds()
	if len(c.Labels) == 0 || !ok {
		fmt.Fprintf(&b, `<rect x="0.5" y="0.5" width="%d" height="%d" fill="none" stroke="#e4e7ec"/>`, w-1, h-1)
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle" fill="#667085" font-size="13">No data yet</text></svg>`, w/2, h/2)
		return template.HTML(b.String())
	}
	ticks := Ticks(lo, hi, 5)
	lo, hi = min(lo, ticks[0]), max(hi, ticks[len(ticks)-1])
	px0, px1 := float64(marginLeft), float64(w-marginRight)
	py0, py1 := float64(h-marginBottom), float64(marginTop)
	y := func(v float64) float64 { return py0 - (v-lo)/(hi-lo)*(py0-py1) }
	n := len(c.Labels)
	slot := (px1 - px0) / float64(n)
	x := func(i int) float64 { return px0 + slot*(float64(i)+0.5) }

	// Grid and y axis.
	b.WriteString(`<g class="axis y" font-size="11" fill="#667085">`)
	for _, t := range ticks {
		yy := y(t)
		stroke := "#eef0f3"
		if t == 0 {
			stroke = "#98a2b3"
		}
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s"/>`, px0, yy, px1, yy, stroke)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="end" dominant-baseline="middle">%s</text>`, px0-6, yy, esc(format(t)))
	}
	b.WriteString(`</g>`)
	// X axis and its labels, thinned to fit.
	fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#98a2b3"/>`, px0, py0, px1, py0)
	every := max(1, int(math.Ceil(float64(n)*52/(px1-px0)))) // ~52 units a label
	b.WriteString(`<g class="axis x" font-size="11" fill="#667085" text-anchor="middle">`)
	for i, l := range c.Labels {
		if i%every != 0 && i != n-1 {
			continue
		}
		if i != n-1 && n-1-i < every && i%every == 0 && i != 0 {
			continue // leave room for the last label
		}
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f">%s</text>`, x(i), py0+16, esc(l))
	}
	b.WriteString(`</g>`)

	// Series.
	for si, s := range c.Series {
		color := Palette[si%len(Palette)]
		fmt.Fprintf(&b, `<g class="series" data-series="%s">`, esc(s.Name))
		switch c.Kind {
		case Bar:
			k := len(c.Series)
			bw := slot * 0.8 / float64(k)
			for i, v := range s.Values {
				if i >= n || math.IsNaN(v) {
					continue
				}
				top, bottom := y(max(v, 0)), y(min(v, 0))
				bx := x(i) - slot*0.4 + bw*float64(si)
				fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s %s: %s</title></rect>`,
					bx, top, max(bw-1, 1), max(bottom-top, 0.5), color, esc(s.Name), esc(c.Labels[i]), esc(format(v)))
			}
		default:
			var pts []string
			flush := func() {
				if len(pts) > 1 {
					fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`, color, strings.Join(pts, " "))
				}
				pts = pts[:0]
			}
			for i, v := range s.Values {
				if i >= n {
					break
				}
				if math.IsNaN(v) {
					flush()
					continue
				}
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(i), y(v)))
			}
			flush()
			for i, v := range s.Values {
				if i >= n || math.IsNaN(v) {
					continue
				}
				fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="2.5" fill="%s"><title>%s %s: %s</title></circle>`,
					x(i), y(v), color, esc(s.Name), esc(c.Labels[i]), esc(format(v)))
			}
		}
		b.WriteString(`</g>`)
	}

	// Legend, along the top.
	b.WriteString(`<g class="legend" font-size="12" fill="#1d2330">`)
	lx := px0
	for si, s := range c.Series {
		color := Palette[si%len(Palette)]
		fmt.Fprintf(&b, `<rect x="%.1f" y="8" width="10" height="10" fill="%s"/>`, lx, color)
		fmt.Fprintf(&b, `<text x="%.1f" y="17">%s</text>`, lx+14, esc(s.Name))
		lx += 14 + float64(len([]rune(s.Name)))*7 + 16
	}
	b.WriteString(`</g></svg>`)
	return template.HTML(b.String())
}

// bounds is the range of the values, always including 0; ok is false without any value.
func (c Chart) bounds() (lo, hi float64, ok bool) {
	for _, s := range c.Series {
		for _, v := range s.Values {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				continue
			}
			lo, hi, ok = min(lo, v), max(hi, v), true
		}
	}
	if ok && lo == hi {
		hi = lo + 1
	}
	return lo, hi, ok
}

// Ticks returns round tick values (1, 2 or 5 × a power of ten apart), at most n
// intervals, from at or below lo to at or above hi.
func Ticks(lo, hi float64, n int) []float64 {
	n = max(n, 1)
	if hi <= lo {
		hi = lo + 1
	}
	mag := math.Pow(10, math.Floor(math.Log10((hi-lo)/float64(n))))
	var step, first, last float64
	for _, m := range []float64{1, 2, 5, 10, 20, 50} {
		step = m * mag
		first, last = math.Floor(lo/step), math.Ceil(hi/step)
		if last-first <= float64(n) {
			break
		}
	}
	decimals := max(0, int(-math.Floor(math.Log10(step))))
	out := make([]float64, 0, int(last-first)+1)
	for i := first; i <= last; i++ {
		v, _ := strconv.ParseFloat(strconv.FormatFloat(i*step, 'f', decimals, 64), 64)
		out = append(out, v)
	}
	return out
}

// Compact writes v briefly: 1.2k, 3.4M, 12.5, 0.25.
func Compact(v float64) string {
	a := math.Abs(v)
	switch {
	case a >= 1e9:
		return trim(v/1e9) + "B"
	case a >= 1e6:
		return trim(v/1e6) + "M"
	case a >= 1e3:
		return trim(v/1e3) + "k"
	}
	return trim(v)
}

func trim(v float64) string {
	s := strconv.FormatFloat(v, 'f', 2, 64)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	if s == "-0" {
		return "0"
	}
	return s
}

func esc(s string) string { return template.HTMLEscapeString(s) }
