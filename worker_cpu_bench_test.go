//go:build unix

package taskqueue

import (
	"context"
	"runtime"
	"runtime/debug"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// BenchmarkWorkerCPU measures the worker's own Go CPU time per task: a backlog of b.N no-op tasks is enqueued
// first, then one worker (concurrency 100) drains it, and only the drain is measured. The CPU time is the test
// process's (getrusage RUSAGE_SELF, user + system): the redis-server is a process of its own, so its time is not
// in it, and nothing but the worker and this loop's polling runs in the process during the drain. It reports
// "cpu-µs/task" and "allocs/task" (heap allocations of the whole process during the drain, divided by b.N).
// Run it with a fixed count, e.g. -benchtime=100000x.
func BenchmarkWorkerCPU(b *testing.B) {
	s, done := benchSetup(b)
	ctx := context.Background()
	specs := benchSpecs(b.N, "c")
	for i := 0; i < b.N; i += 1000 {
		require.NoError(b, s.q.EnqueueBatch(ctx, specs[i:min(i+1000, b.N)]))
	}
	specs = nil
	w, err := NewTaskWorker(s.q, quietWorker(WorkerConfig{Concurrency: 100}, nil))
	require.NoError(b, err)
	// Collect the backlog's garbage and return it to the OS now: otherwise the runtime's scavenger returns it
	// during the drain (madvise), a cost of this set-up that a worker process does not have.
	debug.FreeOSMemory()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	r0, w0 := syscallCounts()
	g0 := goroutineRuns()
	cpu0 := processCPU(b)
	stop := spanProfile(b, "worker", workerBuckets) // with -tq.profile (perf_attrib_bench_test.go)
	b.ResetTimer()
	require.NoError(b, w.Start(ctx))
	for done.Load() < int64(b.N) {
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	cpu := processCPU(b) - cpu0
	r1, w1 := syscallCounts()
	g1 := goroutineRuns()
	runtime.ReadMemStats(&m1)
	stop(cpu / time.Duration(b.N))
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
	b.ReportMetric(cpu.Seconds()*1e6/float64(b.N), "cpu-µs/task")
	b.ReportMetric(float64(m1.Mallocs-m0.Mallocs)/float64(b.N), "allocs/task")
	b.ReportMetric(float64(m1.TotalAlloc-m0.TotalAlloc)/float64(b.N), "B/task")
	b.ReportMetric(float64(r1-r0)/float64(b.N), "reads/task")
	b.ReportMetric(float64(w1-w0)/float64(b.N), "writes/task")
	b.ReportMetric((g1-g0)/float64(b.N), "gruns/task") // goroutines scheduled to run, per task
	b.ReportMetric(float64(m1.NumGC-m0.NumGC)*1000/float64(b.N), "GCs/1k-tasks")
	require.NoError(b, stopWorker(nil, w, 10*time.Second))
}

// processCPU returns the CPU time (user + system) the test process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	require.NoError(b, syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
