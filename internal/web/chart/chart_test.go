package chart

import (
	"encoding/xml"
	"math"
	"reflect"
	"strings"
	"testing"
)

func TestTicks(t *testing.T) {
	for _, tc := range []struct {
		lo, hi float64
		want   []float64
	}{
		{0, 10, []float64{0, 2, 4, 6, 8, 10}},
		{0, 97, []float64{0, 20, 40, 60, 80, 100}},
		{-3, 7, []float64{-5, 0, 5, 10}},
		{-30, 7, []float64{-30, -20, -10, 0, 10}},
		{0, 0.3, []float64{0, 0.1, 0.2, 0.3}},
		{0, 12345, []float64{0, 5000, 10000, 15000}},
		{5, 5, []float64{5, 5.2, 5.4, 5.6, 5.8, 6}},
	} {
		got := Ticks(tc.lo, tc.hi, 5)
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Ticks(%v, %v) = %v, want %v", tc.lo, tc.hi, got, tc.want)
		}
		if got[0] > tc.lo || got[len(got)-1] < tc.hi {
			t.Errorf("Ticks(%v, %v) = %v does not cover the range", tc.lo, tc.hi, got)
		}
	}
}

func TestCompact(t *testing.T) {
	for v, want := range map[float64]string{0: "0", 12.5: "12.5", 0.25: "0.25", 1200: "1.2k", -3_400_000: "-3.4M", 2e9: "2B", -0.001: "0"} {
		if got := Compact(v); got != want {
			t.Errorf("Compact(%v) = %q, want %q", v, got, want)
		}
	}
}

// parse checks the SVG is well-formed XML and returns it.
func parse(t *testing.T, svg string) string {
	t.Helper()
	d := xml.NewDecoder(strings.NewReader(svg))
	for {
		_, err := d.Token()
		if err != nil {
			if err.Error() == "EOF" {
				return svg
			}
			t.Fatalf("not well-formed SVG: %v\n%s", err, svg)
		}
	}
}

func TestLineChart(t *testing.T) {
	c := Chart{Title: "Revenue <& cost>", Labels: []string{"1 Dec", "2 Dec", "3 Dec", "4 Dec"},
		Series: []Series{{Name: "Revenue", Values: []float64{10, 20, math.NaN(), 40}}, {Name: "Cost", Values: []float64{5, -5, 8, 9}}}}
	svg := parse(t, string(c.SVG()))
	for _, want := range []string{`<title>Revenue &lt;&amp; cost&gt;</title>`, `role="img"`, `>Revenue</text>`, `>Cost</text>`,
		`>1 Dec</text>`, `>4 Dec</text>`, `<polyline`, `stroke="#2f54eb"`, `stroke="#d4380d"`, `Cost 2 Dec: -5`, `>-10</text>`} {
		if !strings.Contains(svg, want) {
			t.Errorf("the chart lacks %q:\n%s", want, svg)
		}
	}
	if strings.Contains(svg, "style=") {
		t.Error("the chart uses a style attribute, which the CSP refuses")
	}
	// The NaN is a gap: Revenue's line is cut in two, and only one piece has two points.
	if got := strings.Count(svg, "<polyline"); got != 2 {
		t.Errorf("%d polylines, want 2 (Revenue's first piece and Cost)", got)
	}
	if got := strings.Count(svg, "<circle"); got != 7 {
		t.Errorf("%d points, want 7", got)
	}
}

func TestBarChart(t *testing.T) {
	c := Chart{Kind: Bar, Title: "Margin", Labels: []string{"a", "b"}, Series: []Series{{Name: "pro", Values: []float64{3, -1}}},
		Format: func(v float64) string { return "$" + Compact(v) }}
	svg := parse(t, string(c.SVG()))
	if got := strings.Count(svg, "<rect"); got != 3 { // two bars and the legend's swatch
		t.Errorf("%d rects, want 3:\n%s", got, svg)
	}
	if !strings.Contains(svg, "pro b: $-1") || !strings.Contains(svg, ">$3</text>") {
		t.Errorf("the values are not formatted:\n%s", svg)
	}
}

func TestEmptyChart(t *testing.T) {
	svg := parse(t, string(Chart{Title: "Nothing"}.SVG()))
	if !strings.Contains(svg, "No data yet") {
		t.Errorf("an empty chart does not say so:\n%s", svg)
	}
	svg = parse(t, string(Chart{Title: "NaN", Labels: []string{"x"}, Series: []Series{{Name: "s", Values: []float64{math.NaN()}}}}.SVG()))
	if !strings.Contains(svg, "No data yet") {
		t.Errorf("a chart of gaps does not say it has no data:\n%s", svg)
	}
}

func TestManyLabelsAreThinned(t *testing.T) {
	labels := make([]string, 31)
	vals := make([]float64, 31)
	for i := range labels {
		labels[i] = "d" + string(rune('A'+i%26)) + string(rune('0'+i/26))
		vals[i] = float64(i)
	}
	svg := parse(t, string(Chart{Labels: labels, Series: []Series{{Name: "s", Values: vals}}}.SVG()))
	shown := 0
	for _, l := range labels {
		if strings.Contains(svg, ">"+l+"</text>") {
			shown++
		}
	}
	if shown < 5 || shown > 12 {
		t.Errorf("%d of 31 x labels shown, want a readable handful", shown)
	}
	if !strings.Contains(svg, ">"+labels[30]+"</text>") {
		t.Error("the last label is not shown")
	}
}
