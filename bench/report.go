package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
)

// results collects the samples of every round, keyed by library and metric.
type results struct {
	mu      sync.Mutex
	samples map[string][]float64
}

func newResults() *results { return &results{samples: map[string][]float64{}} }

func (r *results) add(lib, metric string, v float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := lib + "/" + metric
	r.samples[k] = append(r.samples[k], v)
}

// stat is the median and range of one metric's samples.
type stat struct {
	median, lo, hi float64
	n              int
}

func (r *results) stat(lib, metric string) (stat, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := slices.Clone(r.samples[lib+"/"+metric])
	if len(s) == 0 {
		return stat{}, false
	}
	slices.Sort(s)
	return stat{median: median(s), lo: s[0], hi: s[len(s)-1], n: len(s)}, true
}

// median of sorted values (the mean of the middle two for an even count).
func median(sorted []float64) float64 {
	n := len(sorted)
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}

// row is one line of the table: a metric measured for both libraries.
type row struct {
	metric string
	label  string
	unit   string
	higher bool // higher is better
}

var rows = []row{
	{"enqueue_seq_tps", "enqueue, 1 producer, 1 task per call", "tasks/s", true},
	{"enqueue_seq_redis_cpu_us", "Redis CPU per task, 1 producer, 1 task per call", "µs", false},
	{"enqueue_par8_tps", "enqueue, 8 producers, 1 task per call", "tasks/s", true},
	{"enqueue_batch_tps", "enqueue, 1 producer, batches of 1000", "tasks/s", true},
	{"process_c10_tps", "process while producing, concurrency 10", "tasks/s", true},
	{"process_c100_tps", "process while producing, concurrency 100", "tasks/s", true},
	{"drain_tps", "drain a 100k backlog, concurrency 100", "tasks/s", true},
	{"pickup_p50_ms", "pickup latency at 500 tasks/s, p50", "ms", false},
	{"pickup_p99_ms", "pickup latency at 500 tasks/s, p99", "ms", false},
	{"bytes_per_task", "Redis memory per pending task", "bytes", false},
	{"redis_cpu_us_per_task", "Redis CPU per task lifecycle", "µs", false},
	{"script_calls_per_task", "script calls (EVALSHA) per task lifecycle", "calls", false},
	{"rss_mib", "worker peak RSS (VmHWM, drain run)", "MiB", false},
	{"recovery_s", "recovery after SIGKILL, defaults", "s", false},
	{"recovery_short_s", "recovery after SIGKILL, lease 2s", "s", false},
	{"delay_late_p50_ms", "delayed task (due in 2s) lateness, p50", "ms", false},
	{"delay_late_p99_ms", "delayed task (due in 2s) lateness, p99", "ms", false},
	{"process_c100_1ms_tps", "process, concurrency 100, +1 ms RTT", "tasks/s", true},
}

// writeTable prints the markdown table: median [min–max] per library and the ratio of the medians.
func (r *results) writeTable(w io.Writer) {
	fmt.Fprintln(w, "| measurement | unit | ours: median [min–max] | asynq: median [min–max] | ours vs asynq |")
	fmt.Fprintln(w, "| --- | --- | --- | --- | --- |")
	for _, rw := range rows {
		o, okO := r.stat(libOurs, rw.metric)
		a, okA := r.stat(libAsynq, rw.metric)
		if !okO && !okA {
			continue
		}
		ratio := "–"
		if okO && okA && o.median > 0 && a.median > 0 {
			if rw.higher {
				ratio = fmt.Sprintf("%.1fx", o.median/a.median)
			} else {
				ratio = fmt.Sprintf("%.1fx less", a.median/o.median)
				if a.median < o.median {
					ratio = fmt.Sprintf("%.1fx more", o.median/a.median)
				}
			}
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", rw.label, rw.unit, cell(o, okO), cell(a, okA), ratio)
	}
}

func cell(s stat, ok bool) string {
	if !ok {
		return "n/a"
	}
	if s.n == 1 {
		return num(s.median)
	}
	return fmt.Sprintf("%s [%s–%s]", num(s.median), num(s.lo), num(s.hi))
}

// num formats a figure with three significant digits at most, thousands separated.
func num(v float64) string {
	switch a := math.Abs(v); {
	case a >= 1000:
		return thousands(int64(math.Round(v)))
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func thousands(n int64) string {
	s := fmt.Sprint(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// jsonKeys maps the keys of latest.json (the list first) to a library and metric.
var jsonKeys = []struct{ key, lib, metric string }{
	{"ours_process_tps", libOurs, "process_c100_tps"},
	{"asynq_process_tps", libAsynq, "process_c100_tps"},
	{"process_ratio", "", "process_c100_tps"},
	{"ours_drain_tps", libOurs, "drain_tps"},
	{"ours_pickup_p50_ms", libOurs, "pickup_p50_ms"},
	{"ours_pickup_p99_ms", libOurs, "pickup_p99_ms"},
	{"asynq_pickup_p99_ms", libAsynq, "pickup_p99_ms"},
	{"ours_bytes_per_task", libOurs, "bytes_per_task"},
	{"asynq_bytes_per_task", libAsynq, "bytes_per_task"},
	{"ours_redis_cpu_us_per_task", libOurs, "redis_cpu_us_per_task"},
	{"asynq_redis_cpu_us_per_task", libAsynq, "redis_cpu_us_per_task"},
	{"ours_enqueue_batch_tps", libOurs, "enqueue_batch_tps"},
	{"ours_enqueue_seq_tps", libOurs, "enqueue_seq_tps"},
	{"asynq_enqueue_seq_tps", libAsynq, "enqueue_seq_tps"},
	{"ours_rss_mib", libOurs, "rss_mib"},
	{"asynq_rss_mib", libAsynq, "rss_mib"},
	{"ours_recovery_s", libOurs, "recovery_short_s"},
	{"asynq_recovery_s", libAsynq, "recovery_s"},
	{"ours_delay_late_p99_ms", libOurs, "delay_late_p99_ms"},
	{"asynq_delay_late_p99_ms", libAsynq, "delay_late_p99_ms"},
	{"ours_process_tps_1ms", libOurs, "process_c100_1ms_tps"},
	{"asynq_process_tps_1ms", libAsynq, "process_c100_1ms_tps"},
	// More figures of the same run.
	{"ours_enqueue_seq_redis_cpu_us", libOurs, "enqueue_seq_redis_cpu_us"},
	{"asynq_enqueue_seq_redis_cpu_us", libAsynq, "enqueue_seq_redis_cpu_us"},
	{"ours_process_c10_tps", libOurs, "process_c10_tps"},
	{"asynq_process_c10_tps", libAsynq, "process_c10_tps"},
	{"asynq_drain_tps", libAsynq, "drain_tps"},
	{"asynq_pickup_p50_ms", libAsynq, "pickup_p50_ms"},
	{"ours_enqueue_par8_tps", libOurs, "enqueue_par8_tps"},
	{"asynq_enqueue_par8_tps", libAsynq, "enqueue_par8_tps"},
	{"ours_recovery_default_s", libOurs, "recovery_s"},
	{"ours_delay_late_p50_ms", libOurs, "delay_late_p50_ms"},
	{"asynq_delay_late_p50_ms", libAsynq, "delay_late_p50_ms"},
	{"ours_script_calls_per_task", libOurs, "script_calls_per_task"},
	{"asynq_script_calls_per_task", libAsynq, "script_calls_per_task"},
}

// summary returns one number per key: the median of its samples (process_ratio: ours over asynq). Keys without
// samples (a quick run leaves some out) are absent.
func (r *results) summary() map[string]float64 {
	out := map[string]float64{}
	for _, k := range jsonKeys {
		if k.lib == "" {
			o, ok1 := r.stat(libOurs, k.metric)
			a, ok2 := r.stat(libAsynq, k.metric)
			if ok1 && ok2 && a.median > 0 {
				out[k.key] = round(o.median/a.median, 2)
			}
			continue
		}
		if s, ok := r.stat(k.lib, k.metric); ok {
			out[k.key] = round(s.median, 3)
		}
	}
	return out
}

func round(v float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(v*p) / p
}

// writeJSON writes the summary to path (sorted keys, indented), creating its directory.
func (r *results) writeJSON(path string) error {
	b, err := json.MarshalIndent(r.summary(), "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
