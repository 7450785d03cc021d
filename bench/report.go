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

// results collects the samples of every round, keyed by library and metric, the libraries skipped with their
// reasons, and notes printed under the table.
type results struct {
	mu      sync.Mutex
	samples map[string][]float64
	skipped map[string]string
	notes   []string
}

func newResults() *results {
	return &results{samples: map[string][]float64{}, skipped: map[string]string{}}
}

func (r *results) add(lib, metric string, v float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := lib + "/" + metric
	r.samples[k] = append(r.samples[k], v)
}

// skip records that lib was not measured, and why; the table lists it under the rows.
func (r *results) skip(lib, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.skipped[lib] = reason
}

// note adds a line printed under the table.
func (r *results) note(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.notes = append(r.notes, fmt.Sprintf(format, args...))
}

// libs returns the libraries with samples, in the table's order (libOrder, then any other sorted by name).
func (r *results) libs() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := map[string]bool{}
	for k := range r.samples {
		lib, _, _ := strings.Cut(k, "/")
		seen[lib] = true
	}
	var out, rest []string
	for _, n := range libOrder {
		if seen[n] {
			out = append(out, n)
		}
	}
	for n := range seen {
		if !slices.Contains(libOrder, n) {
			rest = append(rest, n)
		}
	}
	slices.Sort(rest)
	return append(out, rest...)
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
	higher bool              // higher is better
	plain  bool              // a figure to read, not to rank: no comparison columns
	na     map[string]string // why a library has no figure for the row (shown as "n/a (<why>)"); nil: plain n/a
}

var rows = []row{
	{"enqueue_seq_tps", "enqueue, 1 producer, 1 task per call", "tasks/s", true, false, nil},
	{"enqueue_par8_tps", "enqueue, 8 producers, 1 task per call", "tasks/s", true, false, nil},
	{"enqueue_batch_tps", "enqueue, 1 producer, batches of 1000", "tasks/s", true, false, nil},
	{"enqueue_seq_redis_cpu_us", "Redis CPU per task, enqueue, 1 producer, 1 task per call", "µs", false, false, nil},
	{"enqueue_par8_redis_cpu_us", "Redis CPU per task, enqueue, 8 producers, 1 task per call", "µs", false, false, nil},
	{"enqueue_batch_redis_cpu_us", "Redis CPU per task, enqueue, batches of 1000", "µs", false, false, nil},
	{"process_c10_tps", "process while producing, concurrency 10", "tasks/s", true, false, nil},
	{"process_c10_produce_tps", "  producer rate (it keeps the backlog at ≤5000)", "tasks/s", true, true, nil},
	{"process_c10_backlog", "  mean backlog", "tasks", true, true, nil},
	{"process_c100_tps", "process while producing, concurrency 100", "tasks/s", true, false, nil},
	{"process_c100_produce_tps", "  producer rate (it keeps the backlog at ≤5000)", "tasks/s", true, true, nil},
	{"process_c100_backlog", "  mean backlog", "tasks", true, true, nil},
	{"drain_tps", "drain a 100k backlog, concurrency 100", "tasks/s", true, false, nil},
	{"drain_4x25_tps", "drain a 50k backlog, 4 workers (asynq: Servers) of 25 in one process", "tasks/s", true, false, nil},
	{"drain_keys100_tps", "drain a 100k backlog over 100 flow keys, no limits, concurrency 100", "tasks/s", true, false, flowUnsupported},
	{"drain_keys100_pct", "  as a share of the plain drain of the same round (goal >= 70%)", "%", true, true, flowUnsupported},
	{"drain_keys100_limit10_tps", "drain a 100k backlog over 100 flow keys, each limited to 10 at once", "tasks/s", true, false, flowUnsupported},
	{"drain_keys100_limit10_pct", "  as a share of the plain drain of the same round (goal >= 70%)", "%", true, true, flowUnsupported},
	{"drain_qrate_tps", "drain a 100k backlog under a queue rate limit it never reaches (1M/s)", "tasks/s", true, false, qrateUnsupported},
	{"drain_qrate_pct", "  as a share of the plain drain of the same round", "%", true, true, qrateUnsupported},
	{"worker_cpu_us_per_task", "worker Go CPU per task (getrusage, drain run)", "µs", false, false, nil},
	{"worker_redis_cpu_us_per_task", "Redis CPU per task, pickup + ack (drain run)", "µs", false, false, nil},
	{"redis_cpu_us_per_task", "Redis CPU per task lifecycle, batch enqueue", "µs", false, false, nil},
	{"redis_cpu_us_per_task_single", "Redis CPU per task lifecycle, 1 task per enqueue call (8 producers)", "µs", false, false, nil},
	{"redis_cpu_us_per_task_keys100", "Redis CPU per task lifecycle, batch enqueue, 100 flow keys", "µs", false, false, flowUnsupported},
	{"redis_cpu_us_per_task_keys100_limit10", "Redis CPU per task lifecycle, batch enqueue, 100 flow keys limited to 10", "µs", false, false, flowUnsupported},
	{"redis_cpu_us_per_task_qrate", "Redis CPU per task lifecycle, batch enqueue, a queue rate never reached", "µs", false, false, qrateUnsupported},
	{"script_calls_per_task", "script calls (EVALSHA) per task lifecycle, batch enqueue", "calls", false, false, nil},
	{"script_calls_per_task_single", "script calls (EVALSHA) per task lifecycle, 1 task per enqueue call", "calls", false, false, nil},
	{"bytes_per_task", "Redis memory per pending task", "bytes", false, false, nil},
	{"rss_mib", "worker peak RSS (VmHWM, drain run)", "MiB", false, false, nil},
	{"pickup_p50_ms", "pickup latency at 500 tasks/s, p50", "ms", false, false, nil},
	{"pickup_p99_ms", "pickup latency at 500 tasks/s, p99", "ms", false, false, nil},
	{"delay_dev_p50_ms", "delayed task (due in 2s), abs(start - due), p50", "ms", false, false, nil},
	{"delay_dev_p99_ms", "delayed task (due in 2s), abs(start - due), p99", "ms", false, false, nil},
	{"delay_early_pct", "delayed task (due in 2s), started early", "%", false, true, nil},
	{"delay_late_p50_ms", "delayed task (due in 2s), start - due (signed), p50", "ms", false, true, nil},
	{"delay_late_p99_ms", "delayed task (due in 2s), start - due (signed), p99", "ms", false, true, nil},
	{"recovery_s", "recovery after SIGKILL, defaults", "s", false, false, nil},
	{"recovery_short_s", "recovery after SIGKILL, lease 2s", "s", false, false, nil},
	{"process_c100_1ms_tps", "process, concurrency 100, +1 ms RTT", "tasks/s", true, false, nil},
}

// writeTable prints the markdown table: a column per library with results (median [min–max], n/a where the
// library has no figure for the row), ours against the best peer of each row (floor and ours aside), and ours as
// a share of the floor (100% = as fast or as cheap as the floor); then the skipped libraries and the notes.
func (r *results) writeTable(w io.Writer) {
	libs := r.libs()
	fmt.Fprintf(w, "| measurement | unit | %s | ours vs best peer | ours / floor |\n", strings.Join(libs, " | "))
	fmt.Fprintf(w, "| --- | --- |%s --- | --- |\n", strings.Repeat(" --- |", len(libs)))
	for _, rw := range rows {
		cells := make([]string, len(libs))
		found := false
		for i, l := range libs {
			s, ok := r.stat(l, rw.metric)
			cells[i] = cell(s, ok)
			if why := rw.na[l]; !ok && why != "" {
				cells[i] = "n/a (" + why + ")"
			}
			found = found || ok
		}
		if !found {
			continue
		}
		vs, share := "–", "–"
		if !rw.plain {
			vs, share = r.versusBestPeer(rw, libs), r.shareOfFloor(rw)
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", rw.label, rw.unit, strings.Join(cells, " | "), vs, share)
	}
	r.writeFooter(w)
}

// versusBestPeer compares ours with the best peer of the row: "2.5x (asynq-tuned)", "3.0x less (asynq)".
func (r *results) versusBestPeer(rw row, libs []string) string {
	o, ok := r.stat(libOurs, rw.metric)
	if !ok || o.median <= 0 {
		return "–"
	}
	best, bestLib := 0.0, ""
	for _, l := range libs {
		s, ok := r.stat(l, rw.metric)
		if l == libOurs || l == libFloor || !ok || s.median <= 0 {
			continue
		}
		if bestLib == "" || (rw.higher && s.median > best) || (!rw.higher && s.median < best) {
			best, bestLib = s.median, l
		}
	}
	if bestLib == "" {
		return "–"
	}
	return ratio(o.median, best, rw.higher) + " (" + bestLib + ")"
}

// ratio says how ours compares with a peer's figure: "2.5x" (higher is better) or "3.0x less"/"1.2x more".
func ratio(ours, peer float64, higher bool) string {
	switch {
	case higher:
		return fmt.Sprintf("%.1fx", ours/peer)
	case ours <= peer:
		return fmt.Sprintf("%.1fx less", peer/ours)
	default:
		return fmt.Sprintf("%.1fx more", ours/peer)
	}
}

// shareOfFloor is ours as a share of the floor: ours/floor where higher is better, floor/ours where lower is.
func (r *results) shareOfFloor(rw row) string {
	o, ok1 := r.stat(libOurs, rw.metric)
	f, ok2 := r.stat(libFloor, rw.metric)
	if !ok1 || !ok2 || o.median <= 0 || f.median <= 0 {
		return "–"
	}
	if rw.higher {
		return fmt.Sprintf("%.0f%%", 100*o.median/f.median)
	}
	return fmt.Sprintf("%.0f%%", 100*f.median/o.median)
}

// writeFooter prints the drain as a share of the floor, the skipped libraries and the notes.
func (r *results) writeFooter(w io.Writer) {
	var lines []string
	o, ok1 := r.stat(libOurs, "drain_tps")
	f, ok2 := r.stat(libFloor, "drain_tps")
	if ok1 && ok2 && f.median > 0 {
		lines = append(lines, fmt.Sprintf("drain as a share of the floor: %.0f%% (ours %s tasks/s, floor %s; target >= 60%%)",
			100*o.median/f.median, num(o.median), num(f.median)))
	}
	r.mu.Lock()
	skipped := make([]string, 0, len(r.skipped))
	for l := range r.skipped {
		skipped = append(skipped, l)
	}
	slices.Sort(skipped)
	for _, l := range skipped {
		lines = append(lines, fmt.Sprintf("skipped: %s: %s", l, r.skipped[l]))
	}
	lines = append(lines, r.notes...)
	r.mu.Unlock()
	if len(lines) > 0 {
		fmt.Fprintln(w)
	}
	for _, l := range lines {
		fmt.Fprintln(w, l)
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
	{"asynq_redis_cpu_us_per_task", libAsynq, "redis_cpu_us_per_task_single"}, // asynq has no batch enqueue
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
	{"asynq_tuned_process_tps", libAsynqTuned, "process_c100_tps"},
	{"asynq_tuned_process_c10_tps", libAsynqTuned, "process_c10_tps"},
	{"floor_drain_tps", libFloor, "drain_tps"},
	{"ours_worker_cpu_us_per_task", libOurs, "worker_cpu_us_per_task"},
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
	{"asynq_script_calls_per_task", libAsynq, "script_calls_per_task_single"},
	{"asynq_worker_cpu_us_per_task", libAsynq, "worker_cpu_us_per_task"},
	{"asynq_tuned_worker_cpu_us_per_task", libAsynqTuned, "worker_cpu_us_per_task"},
	{"ours_worker_redis_cpu_us_per_task", libOurs, "worker_redis_cpu_us_per_task"},
	{"asynq_worker_redis_cpu_us_per_task", libAsynq, "worker_redis_cpu_us_per_task"},
	{"ours_redis_cpu_us_per_task_single", libOurs, "redis_cpu_us_per_task_single"},
	{"ours_enqueue_batch_redis_cpu_us", libOurs, "enqueue_batch_redis_cpu_us"},
	{"asynq_tuned_drain_tps", libAsynqTuned, "drain_tps"},
	{"ours_drain_4x25_tps", libOurs, "drain_4x25_tps"},
	{"asynq_drain_4x25_tps", libAsynq, "drain_4x25_tps"},
	{"asynq_tuned_pickup_p99_ms", libAsynqTuned, "pickup_p99_ms"},
	{"ours_delay_dev_p99_ms", libOurs, "delay_dev_p99_ms"},
	{"asynq_delay_dev_p99_ms", libAsynq, "delay_dev_p99_ms"},
	{"asynq_tuned_delay_dev_p99_ms", libAsynqTuned, "delay_dev_p99_ms"},
	{"asynq_delay_early_pct", libAsynq, "delay_early_pct"},
	{"floor_process_tps", libFloor, "process_c100_tps"},
	{"floor_redis_cpu_us_per_task", libFloor, "redis_cpu_us_per_task"},
	// Flow control (issue 17): the keyed drains and the queue-rate drain, and each as a share (%) of the plain
	// drain of the same round (the median of the rounds' shares). BullMQ's queue-rate figures are
	// bullmq_drain_qrate_* (peerJSONKeys).
	{"ours_drain_keys100_tps", libOurs, "drain_keys100_tps"},
	{"ours_drain_keys100_pct", libOurs, "drain_keys100_pct"},
	{"ours_drain_keys100_limit10_tps", libOurs, "drain_keys100_limit10_tps"},
	{"ours_drain_keys100_limit10_pct", libOurs, "drain_keys100_limit10_pct"},
	{"ours_redis_cpu_us_per_task_keys100", libOurs, "redis_cpu_us_per_task_keys100"},
	{"ours_redis_cpu_us_per_task_keys100_limit10", libOurs, "redis_cpu_us_per_task_keys100_limit10"},
	{"ours_drain_qrate_tps", libOurs, "drain_qrate_tps"},
	{"ours_drain_qrate_pct", libOurs, "drain_qrate_pct"},
	{"ours_redis_cpu_us_per_task_qrate", libOurs, "redis_cpu_us_per_task_qrate"},
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
