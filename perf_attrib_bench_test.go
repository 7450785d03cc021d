//go:build unix

package taskqueue

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The attribution of the worker's and the producer's Go CPU (docs/benchmarks.md, "Where the worker's CPU goes"):
// BenchmarkWorkerCPU and BenchmarkEnqueueCPU profile only the span they measure when -tq.profile names a file
// prefix, and then print where the CPU samples went, by component. For example:
//
//	go test -run '^$' -bench 'WorkerCPU|EnqueueCPU' -benchtime 100000x -tq.profile /tmp/tq
//
// writes /tmp/tq-worker.cpu.pprof, /tmp/tq-worker.allocs.pprof (the drain's allocations alone: open it with
// go tool pprof -sample_index alloc_objects) and the same for -enqueue, and logs the buckets below.

var profilePrefix = flag.String("tq.profile", "", "file prefix for the CPU and allocation profiles of BenchmarkWorkerCPU and BenchmarkEnqueueCPU (only the measured span)")

// spanProfile profiles the span between its call and the call of the function it returns, into
// <prefix>-<name>-<run>.cpu.pprof and <prefix>-<name>-<run>.allocs.pprof, when -tq.profile is set (run counts the
// benchmark's runs, -count); then it prints the CPU buckets of all the runs so far, merged, with the CPU time per
// task of each: its share times the mean of cpuPerTask, the getrusage figure of each run, which stop takes. The
// allocation profile covers the span alone: the allocations sampled by the end (at the runtime's default rate)
// less those sampled by the start (go tool pprof -base).
func spanProfile(b *testing.B, name string, buckets []cpuBucket) (stop func(cpuPerTask time.Duration)) {
	if *profilePrefix == "" || b.N == 1 { // not the testing package's probe run of one iteration
		return func(time.Duration) {}
	}
	profileRuns[name] = append(profileRuns[name], 0)
	run := len(profileRuns[name])
	base := fmt.Sprintf("%s-%s-%d", *profilePrefix, name, run)
	runtime.GC()
	allocs0 := base + ".allocs0.pprof"
	writeHeapProfile(b, allocs0)
	f, err := os.Create(base + ".cpu.pprof")
	require.NoError(b, err)
	require.NoError(b, pprof.StartCPUProfile(f))
	return func(cpuPerTask time.Duration) {
		pprof.StopCPUProfile()
		require.NoError(b, f.Close())
		writeHeapProfile(b, base+".allocs1.pprof")
		// The span's allocations alone: the end's profile less the start's.
		out, err := exec.Command("go", "tool", "pprof", "-proto", "-base", allocs0, base+".allocs1.pprof").Output()
		if err == nil {
			err = os.WriteFile(base+".allocs.pprof", out, 0o644)
		}
		require.NoError(b, err)
		_ = os.Remove(allocs0)
		_ = os.Remove(base + ".allocs1.pprof")
		profileRuns[name][run-1] = cpuPerTask
		var files []string
		var mean time.Duration
		for i, c := range profileRuns[name] {
			files = append(files, fmt.Sprintf("%s-%s-%d.cpu.pprof", *profilePrefix, name, i+1))
			mean += c / time.Duration(run)
		}
		fmt.Print(bucketTable(b, files, buckets, mean)) // b.Log would truncate a benchmark's output
	}
}

// profileRuns holds, by profile name, the CPU time per task of each run profiled so far.
var profileRuns = map[string][]time.Duration{}

func writeHeapProfile(b *testing.B, path string) {
	f, err := os.Create(path)
	require.NoError(b, err)
	require.NoError(b, pprof.Lookup("allocs").WriteTo(f, 0))
	require.NoError(b, f.Close())
}

// cpuBucket names a share of the CPU samples: a sample goes to the first bucket that one of its frames matches,
// in the order of the list (a stack matches "in" when any frame does, "leaf" when its innermost frame does).
type cpuBucket struct {
	name string
	in   *regexp.Regexp // any frame
	leaf *regexp.Regexp // the innermost frame; both set: both must match
}

// The buckets of the worker's CPU, most specific first. The runtime work a component causes (its allocations,
// the goroutines its channel sends wake) is counted in the component, except where a bucket names it (GC,
// scheduler, syscalls).
var workerBuckets = []cpuBucket{
	gcBucket,
	{name: "go-redis: write syscall", in: regexp.MustCompile(`^syscall\.write$`)},
	{name: "go-redis: read syscall", in: regexp.MustCompile(`^syscall\.read$`)},
	{name: "go-redis: pool health check (recvfrom MSG_PEEK)", in: regexp.MustCompile(`go-redis/v9/internal/pool\.connCheck`)},
	{name: "go-redis: args, pool, reply parse", in: regexp.MustCompile(`github\.com/redis/go-redis`)},
	{name: "envelope decode (decodeStored)", in: regexp.MustCompile(`taskqueue\.(decodeStored|decodeEnvelope)`)},
	{name: "resolve + typed arg decode", in: regexp.MustCompile(`taskqueue\.\(\*ResolverRegistry\)\.Resolve`)},
	{name: "rest of rehydrate (spec build, metadata)", in: regexp.MustCompile(`taskqueue\.\(\*RedisTaskQueue\)\.(rehydrate|rehydrateOne|rehydrateLeased)`)},
	{name: "pickup reply to deliveries, launch", in: regexp.MustCompile(`taskqueue\.\(\*RedisTaskQueue\)\.dequeueOnce|taskqueue\.\(\*TaskWorker\)\.launch`)},
	{name: "timeouts (one timer structure)", in: regexp.MustCompile(`taskqueue\.\(\*taskTimeouts\)`)},
	{name: "task run: context, gate, handler, events", in: regexp.MustCompile(`taskqueue\.\(\*TaskWorker\)\.(runTask|safeRun|taskLoop)|taskqueue\.\(\*suspectGate\)`)},
	{name: "ack batching (acker, ack args, forget)", in: regexp.MustCompile(`taskqueue\.\(\*acker\)|taskqueue\.\(\*TaskWorker\)\.(recordOutcome|forgetAll|unlockGate)`)},
	{name: "pickup loop (slots, linger, hand-off)", in: regexp.MustCompile(`taskqueue\.\(\*picker\)|taskqueue\.\(\*TaskWorker\)\.freeSlots`)},
	schedBucket,
	{name: "other (benchmark loop, timers of the runtime)", in: regexp.MustCompile(`.`)},
}

var (
	gcBucket = cpuBucket{name: "GC (background mark, assists, sweep)",
		in: regexp.MustCompile(`^runtime\.(gcBgMarkWorker|gcAssistAlloc|bgsweep|bgscavenge|gcMarkDone|gcStart|markroot|sweepone|deductSweepCredit|gcMarkTermination|stopTheWorldWithSema)`)}
	// schedBucket: goroutine switches (park, ready, find work), idle spinning, netpoll, stack growth.
	schedBucket = cpuBucket{name: "scheduler: switches, idle, netpoll",
		in: regexp.MustCompile(`^runtime\.(mcall|schedule|findRunnable|park_m|goexit0|mstart|morestack|newstack|notesleep|futex|netpoll|wakep|startm|stopm|usleep|osyield|goschedImpl|sysmon|ready|injectglist|retake|runqgrab|exitsyscall|entersyscall)`)}
)

// The buckets of a producer's single enqueue.
var enqueueBuckets = []cpuBucket{
	gcBucket,
	workerBuckets[1], workerBuckets[2], workerBuckets[3], workerBuckets[4],
	{name: "serialize + envelope (sealInto)", in: regexp.MustCompile(`taskqueue\.\(\*RedisTaskQueue\)\.(sealInto|encodeInto)`)},
	{name: "rest of EnqueueBatch (args, replies)", in: regexp.MustCompile(`taskqueue\.\(\*RedisTaskQueue\)\.(EnqueueBatch|Enqueue)`)},
	schedBucket,
	{name: "other (benchmark loop, timers of the runtime)", in: regexp.MustCompile(`.`)},
}

// bucketTable reads CPU profiles (merged) through go tool pprof -traces and returns the share of their samples in
// each bucket, and that share of perTask.
func bucketTable(b *testing.B, paths []string, buckets []cpuBucket, perTask time.Duration) string {
	out, err := exec.Command("go", append([]string{"tool", "pprof", "-traces"}, paths...)...).Output()
	require.NoError(b, err)
	totals := make([]time.Duration, len(buckets))
	var all time.Duration
	for _, tr := range parseTraces(out) {
		all += tr.d
		for i, bk := range buckets {
			if bk.matches(tr.frames) {
				totals[i] += tr.d
				break
			}
		}
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "%d profiles, %v of CPU samples; %.2f µs of CPU per task (getrusage, mean)\n", len(paths), all,
		perTask.Seconds()*1e6)
	for i, bk := range buckets {
		share := float64(totals[i]) / float64(max(all, 1))
		fmt.Fprintf(&sb, "| %-52s | %5.1f%% | %5.2f µs |\n", bk.name, 100*share, share*perTask.Seconds()*1e6)
	}
	return sb.String()
}

func (bk cpuBucket) matches(frames []string) bool {
	if len(frames) == 0 {
		return false
	}
	if bk.leaf != nil && !bk.leaf.MatchString(frames[0]) {
		return false
	}
	return bk.in == nil || slices.ContainsFunc(frames, bk.in.MatchString)
}

type trace struct {
	d      time.Duration
	frames []string // innermost first
}

// parseTraces reads go tool pprof -traces output: blocks separated by dashed lines, the first line of a block
// "<duration> <leaf frame>", the next lines one frame each.
func parseTraces(out []byte) []trace {
	var trs []trace
	var cur *trace
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "-----") {
			cur = nil
			continue
		}
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if cur == nil {
			d, err := time.ParseDuration(fields[0])
			if err != nil || len(fields) < 2 {
				continue // the header
			}
			trs = append(trs, trace{d: d, frames: []string{fields[1]}})
			cur = &trs[len(trs)-1]
			continue
		}
		cur.frames = append(cur.frames, fields[0])
	}
	return trs
}

// syscallCounts returns how many read and write system calls this process has made (/proc/self/io); zeros where
// the file does not exist.
func syscallCounts() (reads, writes int64) {
	raw, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return 0, 0
	}
	for line := range strings.SplitSeq(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "syscr: "); ok {
			reads, _ = strconv.ParseInt(v, 10, 64)
		}
		if v, ok := strings.CutPrefix(line, "syscw: "); ok {
			writes, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	return reads, writes
}

// goroutineRuns estimates how many times goroutines were scheduled to run so far: the runtime records the
// scheduling latency of one in 8 of them (runtime/metrics /sched/latencies:seconds), so the count times 8. A
// figure of the code, not of the machine's load: each is a wake-up (or a start) of a goroutine.
func goroutineRuns() float64 {
	s := []metrics.Sample{{Name: "/sched/latencies:seconds"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindFloat64Histogram {
		return 0
	}
	var n uint64
	for _, c := range s[0].Value.Float64Histogram().Counts {
		n += c
	}
	return float64(n) * 8
}

// BenchmarkEnqueueCPU measures a single producer's Go CPU per Enqueue call (one task per call, the peer
// comparison's "enqueue, 1 producer" row) with getrusage, which the machine's load hardly moves, and the
// allocations and read/write system calls per call.
func BenchmarkEnqueueCPU(b *testing.B) {
	s, _ := benchSetup(b)
	ctx := context.Background()
	specs := benchSpecs(b.N, "ec")
	for i := range min(100, b.N) { // warm the connection and the script cache
		require.NoError(b, s.q.Enqueue(ctx, NewTaskSpec(fmt.Sprint("warm-", i), Ref("bench", "noop", bench200))))
	}
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	r0, w0 := syscallCounts()
	g0 := goroutineRuns()
	cpu0 := processCPU(b)
	stop := spanProfile(b, "enqueue", enqueueBuckets)
	b.ResetTimer()
	for _, spec := range specs {
		if err := s.q.Enqueue(ctx, spec); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	cpu := processCPU(b) - cpu0
	r1, w1 := syscallCounts()
	g1 := goroutineRuns()
	runtime.ReadMemStats(&m1)
	stop(cpu / time.Duration(b.N))
	n := float64(b.N)
	b.ReportMetric((g1-g0)/n, "gruns/task")
	b.ReportMetric(n/b.Elapsed().Seconds(), "tasks/s")
	b.ReportMetric(cpu.Seconds()*1e6/n, "cpu-µs/task")
	b.ReportMetric(float64(m1.Mallocs-m0.Mallocs)/n, "allocs/task")
	b.ReportMetric(float64(m1.TotalAlloc-m0.TotalAlloc)/n, "B/task")
	b.ReportMetric(float64(r1-r0)/n, "reads/task")
	b.ReportMetric(float64(w1-w0)/n, "writes/task")
}
