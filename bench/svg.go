package main

import (
	"fmt"
	"html"
	"math"
	"strings"

	"github.com/metrocast/metrocast/loadtest/result"
)

// Chart geometry, in SVG user units.
const (
	chartW, chartH                     = 760, 440
	padLeft, padRight, padTop, padBott = 70, 170, 56, 50
)

// series of the chart: a percentile of the sweep and its colour.
var series = []struct {
	name   string
	colour string
	value  func(result.Latency) float64
}{
	{"p50", "#1f77b4", func(l result.Latency) float64 { return l.P50 }},
	{"p99", "#ff7f0e", func(l result.Latency) float64 { return l.P99 }},
	{"p99.9", "#d62728", func(l result.Latency) float64 { return l.P999 }},
}

// chart draws the sweep: latency percentiles (log scale) against delivered
// messages per second, with the targets as dashed lines. It needs no
// library: a few lines, circles and labels.
func chart(r *suiteResult) string {
	pts := r.Sweep
	xMax := 0.0
	yMin, yMax := math.Inf(1), 100.0 // the p99.9 target is always in view
	for _, p := range pts {
		xMax = max(xMax, p.Delivered)
		for _, s := range series {
			if v := s.value(p.Latency); v > 0 {
				yMin, yMax = min(yMin, v), max(yMax, v)
			}
		}
	}
	xMax = niceCeil(xMax)
	lo := math.Floor(math.Log10(min(yMin, 1)))
	hi := math.Ceil(math.Log10(yMax))
	plotW, plotH := float64(chartW-padLeft-padRight), float64(chartH-padTop-padBott)
	x := func(v float64) float64 { return padLeft + v/xMax*plotW }
	y := func(ms float64) float64 {
		ms = max(ms, math.Pow(10, lo))
		return padTop + (hi-math.Log10(ms))/(hi-lo)*plotH
	}

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n",
		chartW, chartH, chartW, chartH)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="#fff"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%d" y="22" font-size="15" font-weight="bold">ingest → client latency against delivered messages/s</text>`+"\n", padLeft)
	fmt.Fprintf(&b, `<text x="%d" y="40" fill="#555">%s</text>`+"\n", padLeft, html.EscapeString(fmt.Sprintf(
		"%s connections over %d cities · %s, %d CPUs shared with the load generator · %s · %s",
		thousands(float64(r.Figures.SweepConns)), sweepCities, r.Host, r.Machine.CPUs, r.Machine.Commit, r.Date)))

	// Grid and axes: a line per power of ten, five steps on x.
	for e := lo; e <= hi; e++ {
		v := math.Pow(10, e)
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>`+"\n", padLeft, y(v), chartW-padRight, y(v))
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", padLeft-6, y(v)+4, msLabel(v))
	}
	for i := 0; i <= 5; i++ {
		v := xMax * float64(i) / 5
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/>`+"\n", x(v), padTop, x(v), chartH-padBott)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", x(v), chartH-padBott+16, countLabel(v))
	}
	fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">delivered messages/s</text>`+"\n", padLeft+plotW/2, chartH-12)
	fmt.Fprintf(&b, `<text transform="translate(18 %.1f) rotate(-90)" text-anchor="middle">latency (log scale)</text>`+"\n", padTop+plotH/2)
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.0f" height="%.0f" fill="none" stroke="#888"/>`+"\n", padLeft, padTop, plotW, plotH)

	// Targets.
	for _, t := range []struct {
		ms     float64
		colour string
		label  string
	}{{50, "#ff7f0e", "p99 target 50 ms"}, {100, "#d62728", "p99.9 target 100 ms"}} {
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="%s" stroke-dasharray="6 4"/>`+"\n",
			padLeft, y(t.ms), chartW-padRight, y(t.ms), t.colour)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" fill="%s">%s</text>`+"\n", chartW-padRight+8, y(t.ms)+4, t.colour, t.label)
	}

	// One polyline and a circle per point for each percentile.
	for i, s := range series {
		var line []string
		for _, p := range pts {
			line = append(line, fmt.Sprintf("%.1f,%.1f", x(p.Delivered), y(s.value(p.Latency))))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", s.colour, strings.Join(line, " "))
		for _, p := range pts {
			fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3.5" fill="%s"><title>%s at %.0f/s (%g frames/s per city): %s</title></circle>`+"\n",
				x(p.Delivered), y(s.value(p.Latency)), s.colour, s.name, p.Delivered, p.RatePerCity, result.Ms(s.value(p.Latency)))
		}
		// Bottom right: the target labels sit at 50 and 100 ms, never
		// at the bottom (which is 1 ms or less).
		ly := chartH - padBott - 60 + 20*i
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"/>`+"\n",
			chartW-padRight+8, ly, chartW-padRight+28, ly, s.colour)
		fmt.Fprintf(&b, `<text x="%d" y="%d">%s</text>`+"\n", chartW-padRight+34, ly+4, s.name)
	}
	b.WriteString("</svg>\n")
	return b.String()
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten (at least 1).
func niceCeil(v float64) float64 {
	if v <= 1 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

// thousands formats a count with comma separators: 10,000.
func thousands(v float64) string {
	s := fmt.Sprintf("%.0f", v)
	for i := len(s) - 3; i > 0 && s[i-1] != '-'; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func msLabel(ms float64) string {
	if ms < 1 {
		return fmt.Sprintf("%g ms", ms)
	}
	if ms >= 1000 {
		return fmt.Sprintf("%g s", ms/1000)
	}
	return fmt.Sprintf("%.0f ms", ms)
}

func countLabel(v float64) string {
	switch {
	case v == 0:
		return "0"
	case v >= 1e6:
		return fmt.Sprintf("%gM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%gk", v/1e3)
	}
	return fmt.Sprintf("%g", v)
}
