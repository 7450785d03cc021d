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
	// Enqueued counts the tasks stored in the interval, Processed the runs that succeeded, Failed those that failed
	// (to be retried, or dead-lettered).
	Enqueued, Processed, Failed int64
	// RunP50 and RunP99 are quantiles of the handlers' run time, PickupP50 and PickupP99 of the time from enqueue
	// to handler start (0 when the interval has none).
	RunP50, RunP99, PickupP50, PickupP99 time.Duration
}

// historySource gives a queue's history over the last window, oldest point first.
type historySource interface {
	History(ctx context.Context, window time.Duration) ([]Point, error)
}

// adminHistory reads the history that the queue's workers keep in Redis ([taskqueue.Admin.History]).
type adminHistory struct{ admin *taskqueue.Admin }

// maxChartPoints bounds the points of a chart: a day of minutes is drawn as 10-minute intervals.
const maxChartPoints = 144

// History reads the per-minute history and merges minutes into intervals of at most maxChartPoints: counts add
// up, the p50s are averaged weighted by runs (pickups: by starts), and an interval's p99 is its worst minute's.
func (h adminHistory) History(ctx context.Context, window time.Duration) ([]Point, error) {
	minutes, err := h.admin.History(ctx, window)
	if err != nil {
		return nil, err
	}
	per := (len(minutes) + maxChartPoints - 1) / maxChartPoints
	var out []Point
	for i := 0; i < len(minutes); i += per {
		group := minutes[i:min(i+per, len(minutes))]
		p := Point{At: group[0].At, Span: time.Duration(len(group)) * time.Minute}
		var runs, starts int64
		var run50, pick50 float64
		for _, m := range group {
			p.Enqueued += m.Enqueued
			p.Processed += m.Succeeded
			p.Failed += m.Failed + m.Dead
			n := m.Succeeded + m.Failed + m.Dead
			runs, starts = runs+n, starts+m.Started
			run50 += float64(m.RunP50) * float64(n)
			pick50 += float64(m.PickupP50) * float64(m.Started)
			p.RunP99, p.PickupP99 = max(p.RunP99, m.RunP99), max(p.PickupP99, m.PickupP99)
		}
		if runs > 0 {
			p.RunP50 = time.Duration(run50 / float64(runs))
		}
		if starts > 0 {
			p.PickupP50 = time.Duration(pick50 / float64(starts))
		}
		out = append(out, p)
	}
	return out, nil
}

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
		fmt.Fprintf(&b, `<text x="%g" y="14" class="legend %s">%s</text>`, w-270+float64(k)*90, s.class,
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

// historyCharts draws the throughput, run time and pickup latency charts of points.
func historyCharts(points []Point) []template.HTML {
	xs := make([]time.Time, len(points))
	var enq, done, failed, run50, run99, pick50, pick99 []float64
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	for i, p := range points {
		xs[i] = p.At
		perMin := 1.0
		if p.Span > 0 {
			perMin = float64(time.Minute) / float64(p.Span)
		}
		enq = append(enq, float64(p.Enqueued)*perMin)
		done = append(done, float64(p.Processed)*perMin)
		failed = append(failed, float64(p.Failed)*perMin)
		run50, run99 = append(run50, ms(p.RunP50)), append(run99, ms(p.RunP99))
		pick50, pick99 = append(pick50, ms(p.PickupP50)), append(pick99, ms(p.PickupP99))
	}
	return []template.HTML{
		chartSVG("Throughput (tasks per minute)", "", xs, []series{{"succeeded", "s1", done}, {"failed", "s2", failed}, {"enqueued", "s3", enq}}),
		chartSVG("Run time", "ms", xs, []series{{"p50", "s1", run50}, {"p99", "s2", run99}}),
		chartSVG("Pickup latency (enqueue to start)", "ms", xs, []series{{"p50", "s1", pick50}, {"p99", "s2", pick99}}),
	}
}
