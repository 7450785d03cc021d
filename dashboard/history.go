package dashboard

import (
	"context"
	"fmt"
	"html"
	"html/template"
	"strings"
	"time"

	"github.com/graflow-go/taskqueue"
)

// The history charts: throughput and latency over the last hour or day, drawn as inline SVG on the server from a
// slice of points that the queue's workers keep in Redis.

// Point is one interval of a queue's history.
type Point struct {
	// At is the start of the interval (server clock); Span its length.
	At   time.Time
	Span time.Duration
	// Processed counts the tasks that finished in the interval (acknowledged), Failed those that failed (retried
	// or dead-lettered).
	Processed, Failed int64
	// LatencyP50 and LatencyP99 are percentiles of the handlers' run time in the interval (0 when unknown).
	LatencyP50, LatencyP99 time.Duration
}

// historySource gives a queue's history over the last window, oldest point first.
type historySource interface {
	History(ctx context.Context, window time.Duration) ([]Point, error)
}

// adminHistory is the history of an Admin. (The root package's History lands with the workers' history keeping;
// until then a queue has none.)
func adminHistory(_ *taskqueue.Admin) historySource { return nil }

// historyWindows are the windows the history page offers.
var historyWindows = []struct {
	Name string
	Span time.Duration
}{{"1h", time.Hour}, {"24h", 24 * time.Hour}}

// series is one line of a chart.
type series struct {
	name   string
	class  string // the CSS class of its stroke: s1, s2
	values []float64
}

// chartSVG draws series against times xs as an inline SVG line chart with a y axis in units of unit. Everything
// it writes is numbers, fixed markup and escaped labels.
func chartSVG(title, unit string, xs []time.Time, ss []series) template.HTML {
	const w, h, left, bottom, top = 720.0, 220.0, 56.0, 24.0, 20.0
	maxY := 0.0
	for _, s := range ss {
		for _, v := range s.values {
			maxY = max(maxY, v)
		}
	}
	maxY = niceCeil(maxY)
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart" viewBox="0 0 %g %g" role="img" aria-label="%s">`, w, h, html.EscapeString(title))
	fmt.Fprintf(&b, `<text x="%g" y="14" class="chart-title">%s</text>`, left, html.EscapeString(title))
	plotW, plotH := w-left-8, h-top-bottom
	for i := 0; i <= 4; i++ { // grid lines and y labels
		y := top + plotH - plotH*float64(i)/4
		fmt.Fprintf(&b, `<line x1="%g" y1="%.1f" x2="%g" y2="%.1f" class="grid"/>`, left, y, w-8, y)
		fmt.Fprintf(&b, `<text x="%g" y="%.1f" class="axis" text-anchor="end">%s</text>`, left-4, y+4,
			html.EscapeString(formatValue(maxY*float64(i)/4, unit)))
	}
	n := len(xs)
	xAt := func(i int) float64 {
		if n <= 1 {
			return left
		}
		return left + plotW*float64(i)/float64(n-1)
	}
	if n > 0 {
		for k, i := range []int{0, n / 2, n - 1} {
			anchor := [...]string{"start", "middle", "end"}[k]
			fmt.Fprintf(&b, `<text x="%.1f" y="%g" class="axis" text-anchor="%s">%s</text>`, xAt(i), h-6, anchor,
				xs[i].UTC().Format("15:04"))
		}
	}
	for k, s := range ss {
		if len(s.values) == 0 {
			continue
		}
		var pts strings.Builder
		for i, v := range s.values {
			y := top + plotH
			if maxY > 0 {
				y -= plotH * v / maxY
			}
			fmt.Fprintf(&pts, "%.1f,%.1f ", xAt(i), y)
		}
		fmt.Fprintf(&b, `<polyline points="%s" class="line %s"/>`, strings.TrimSpace(pts.String()), s.class)
		fmt.Fprintf(&b, `<text x="%g" y="14" class="legend %s">%s</text>`, w-200+float64(k)*100, s.class,
			html.EscapeString(s.name))
	}
	if n == 0 {
		fmt.Fprintf(&b, `<text x="%g" y="%g" class="axis">no data in this window</text>`, left+10, top+plotH/2)
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String()) //nolint:gosec // built above from numbers, fixed markup and escaped labels
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten (1 for 0).
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := 1.0
	for p*10 <= v {
		p *= 10
	}
	for p > v*10 {
		p /= 10
	}
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

func formatValue(v float64, unit string) string {
	if unit == "ms" && v >= 1000 {
		return fmt.Sprintf("%.3gs", v/1000)
	}
	if unit == "ms" {
		return fmt.Sprintf("%.3gms", v)
	}
	return fmt.Sprintf("%.4g", v)
}

// historyCharts draws the throughput and latency charts of points.
func historyCharts(points []Point) []template.HTML {
	xs := make([]time.Time, len(points))
	var done, failed, p50, p99 []float64
	for i, p := range points {
		xs[i] = p.At
		perMin := 1.0
		if p.Span > 0 {
			perMin = float64(time.Minute) / float64(p.Span)
		}
		done = append(done, float64(p.Processed)*perMin)
		failed = append(failed, float64(p.Failed)*perMin)
		p50 = append(p50, float64(p.LatencyP50)/float64(time.Millisecond))
		p99 = append(p99, float64(p.LatencyP99)/float64(time.Millisecond))
	}
	return []template.HTML{
		chartSVG("Throughput (tasks per minute)", "", xs, []series{{"processed", "s1", done}, {"failed", "s2", failed}}),
		chartSVG("Latency (run time)", "ms", xs, []series{{"p50", "s1", p50}, {"p99", "s2", p99}}),
	}
}
