package taskqueue

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/graflow-go/taskqueue/internal/redistest"
)

// payload200 is a 200-byte argument, the size the peer comparison uses.
type payload200 struct {
	Data string `json:"data"`
}

var bench200 = payload200{Data: strings.Repeat("x", 190)}

func benchSpecs(n int, tag string) []*TaskSpec {
	specs := make([]*TaskSpec, n)
	for i := range specs {
		specs[i] = NewTaskSpec(fmt.Sprintf("%s-%d", tag, i), Ref("bench", "noop", bench200))
	}
	return specs
}

func benchSetup(b testing.TB) (*setup, *atomic.Int64) {
	s := newReal(b, nil)
	var done atomic.Int64
	require.NoError(b, Register(s.ref, "bench", "noop", func(context.Context, payload200) error { done.Add(1); return nil }))
	return s, &done
}

// BenchmarkEnqueue measures enqueue throughput on a real redis-server: one task per call, and batches of 100; and
// the Redis CPU that each task costs (INFO cpu, user + system), a figure that the machine's load hardly moves.
func BenchmarkEnqueue(b *testing.B) {
	for _, batch := range []int{1, 100} {
		b.Run(fmt.Sprint("batch=", batch), func(b *testing.B) {
			s, _ := benchSetup(b)
			ctx := context.Background()
			specs := benchSpecs(b.N, "e")
			cpu0 := redisCPU(b, s)
			b.ResetTimer()
			for i := 0; i < b.N; i += batch {
				require.NoError(b, s.q.EnqueueBatch(ctx, specs[i:min(i+batch, b.N)]))
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
			b.ReportMetric((redisCPU(b, s)-cpu0).Seconds()*1e6/float64(b.N), "redis-µs/task")
		})
	}
}

// memTasks is the backlog BenchmarkMemoryPerTask enqueues: the size of the peer comparison's (bench/, drainN).
const memTasks = 100_000

// harnessArgs are the arguments of the peer comparison's tasks (bench/ours.go): with its padding, 200 bytes of
// JSON.
type harnessArgs struct {
	Seq  int    `json:"seq"`
	Data string `json:"data"`
}

// BenchmarkMemoryPerTask measures the Redis memory that one pending task takes, as the peer comparison does
// (ours_bytes_per_task): used_memory after enqueueing a backlog of memTasks tasks with generated ids and
// 200-byte arguments, in batches of 1000, less used_memory before, per task. Each iteration fills a fresh
// redis-server of its own (FLUSHALL between iterations); the figure depends on the envelope's size class, the
// id's length and Redis's own per-entry costs, not on the machine's load.
func BenchmarkMemoryPerTask(b *testing.B) {
	srv := redistest.Run(b, redistest.Options{Args: redistest.NoPersistence})
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	b.Cleanup(func() { _ = rdb.Close() })
	reg, ref := testRegistry(b)
	require.NoError(b, Register(ref, "bench", "noop", func(context.Context, harnessArgs) error { return nil }))
	q, err := NewRedisTaskQueue(rdb, "bench", reg, quiet(nil))
	require.NoError(b, err)
	ctx := context.Background()
	var perTask float64
	for b.Loop() {
		b.StopTimer()
		require.NoError(b, rdb.FlushAll(ctx).Err())
		specs := make([]*TaskSpec, memTasks)
		for i := range specs {
			pad := strings.Repeat("x", 200-len(`{"seq":,"data":""}`)-len(strconv.Itoa(i)))
			specs[i] = NewTaskSpec("", Ref("bench", "noop", harnessArgs{Seq: i, Data: pad}))
		}
		mem0 := usedMemory(b, rdb)
		b.StartTimer()
		for i := 0; i < memTasks; i += 1000 {
			require.NoError(b, q.EnqueueBatch(ctx, specs[i:i+1000]))
		}
		b.StopTimer()
		perTask = float64(usedMemory(b, rdb)-mem0) / memTasks
		b.StartTimer()
	}
	b.ReportMetric(perTask, "B/task")
	b.ReportMetric(0, "ns/op")
}

// usedMemory returns INFO memory's used_memory.
func usedMemory(b *testing.B, rdb *redis.Client) int64 {
	info, err := rdb.Info(context.Background(), "memory").Result()
	require.NoError(b, err)
	for line := range strings.SplitSeq(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "used_memory:"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			require.NoError(b, err)
			return n
		}
	}
	b.Fatal("INFO memory has no used_memory")
	return 0
}

// BenchmarkProcess measures end-to-end throughput on a real redis-server: a producer enqueues in batches of 100
// while one worker runs no-op tasks at the given concurrency; redis-µs/task is the Redis CPU of a whole lifecycle
// (enqueue, pickup, ack; a blocked worker's idle wait included).
func BenchmarkProcess(b *testing.B) {
	for _, conc := range []int{10, 100} {
		b.Run(fmt.Sprint("concurrency=", conc), func(b *testing.B) {
			s, done := benchSetup(b)
			ctx := context.Background()
			specs := benchSpecs(b.N, "p")
			w, err := NewTaskWorker(s.q, quietWorker(WorkerConfig{Concurrency: conc}, nil))
			require.NoError(b, err)
			require.NoError(b, w.Start(ctx))
			calls0 := scriptCalls(b, s)
			cpu0 := redisCPU(b, s)
			b.ResetTimer()
			go func() {
				for i := 0; i < b.N; i += 100 {
					_ = s.q.EnqueueBatch(ctx, specs[i:min(i+100, b.N)])
				}
			}()
			for done.Load() < int64(b.N) {
				time.Sleep(time.Millisecond)
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
			// Script calls of the producer and the worker together: the round trips a task costs.
			b.ReportMetric(float64(scriptCalls(b, s)-calls0)/float64(b.N), "scripts/task")
			b.ReportMetric((redisCPU(b, s)-cpu0).Seconds()*1e6/float64(b.N), "redis-µs/task") // the whole lifecycle
			require.NoError(b, stopWorker(nil, w, 10*time.Second))
		})
	}
}

// BenchmarkDrain measures how fast one worker (concurrency 100) drains a backlog enqueued beforehand.
func BenchmarkDrain(b *testing.B) {
	s, done := benchSetup(b)
	ctx := context.Background()
	specs := benchSpecs(b.N, "d")
	for i := 0; i < b.N; i += 1000 {
		require.NoError(b, s.q.EnqueueBatch(ctx, specs[i:min(i+1000, b.N)]))
	}
	w, err := NewTaskWorker(s.q, quietWorker(WorkerConfig{Concurrency: 100}, nil))
	require.NoError(b, err)
	cpu0 := redisCPU(b, s)
	calls0 := scriptCalls(b, s)
	b.ResetTimer()
	require.NoError(b, w.Start(ctx))
	for done.Load() < int64(b.N) {
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
	b.ReportMetric((redisCPU(b, s)-cpu0).Seconds()*1e6/float64(b.N), "redis-µs/task")
	b.ReportMetric(float64(b.N)/float64(scriptCalls(b, s)-calls0), "tasks/script")
	require.NoError(b, stopWorker(nil, w, 10*time.Second))
}

// BenchmarkPickupLatency measures the time from the start of an enqueue to the start of its handler on an idle
// queue whose worker is blocked waiting: one task at a time, reported as p50 and p99.
func BenchmarkPickupLatency(b *testing.B) {
	s := newReal(b, nil)
	ctx := context.Background()
	started := make(chan time.Time, 1)
	require.NoError(b, Register(s.ref, "bench", "noop", func(context.Context, payload200) error { started <- time.Now(); return nil }))
	w, err := NewTaskWorker(s.q, quietWorker(WorkerConfig{Concurrency: 10}, nil))
	require.NoError(b, err)
	require.NoError(b, w.Start(ctx))
	specs := benchSpecs(b.N, "l")
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		time.Sleep(2 * time.Millisecond) // let the worker settle into its blocking wait
		sent := time.Now()
		require.NoError(b, s.q.Enqueue(ctx, specs[i]))
		lat = append(lat, (<-started).Sub(sent))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	require.NoError(b, stopWorker(nil, w, 10*time.Second))
}

// BenchmarkDelayedLateness measures how late delayed tasks start on a real redis-server at its default hz 10, with
// three workers sharing the queue (the figure TestDelayedTaskStartsOnTime used to bound): from the due time (the
// start of the enqueue + the delay) to the start of the handler, one task at a time, its delay spread over the
// phases of Redis's 100ms cron tick. It reports p50, p90 and how many waits the BLPOP timeout ended (0 when the
// due timers work).
func BenchmarkDelayedLateness(b *testing.B) {
	s := newReal(b, nil)
	ctx := context.Background()
	started := make(chan time.Time, 1)
	require.NoError(b, Register(s.ref, "bench", "noop", func(context.Context, payload200) error { started <- time.Now(); return nil }))
	var ws []*TaskWorker
	for range 3 {
		w, err := NewTaskWorker(s.q, quietWorker(WorkerConfig{Concurrency: 4}, nil))
		require.NoError(b, err)
		require.NoError(b, w.Start(ctx))
		ws = append(ws, w)
	}
	specs := benchSpecs(b.N, "late")
	lat := make([]time.Duration, 0, b.N)
	timeouts0 := s.q.dueTimeouts.Load()
	b.ResetTimer()
	for i, spec := range specs {
		spec.ProcessIn = 20*time.Millisecond + time.Duration(i*17%100)*time.Millisecond
		sent := time.Now()
		require.NoError(b, s.q.Enqueue(ctx, spec))
		lat = append(lat, (<-started).Sub(sent.Add(spec.ProcessIn)))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*9/10].Microseconds())/1000, "p90-ms")
	b.ReportMetric(float64(s.q.dueTimeouts.Load()-timeouts0), "blpop-timeouts")
	for _, w := range ws {
		require.NoError(b, stopWorker(nil, w, 10*time.Second))
	}
}

// redisCPU returns the CPU time the Redis server has used (user + system), from INFO cpu.
func redisCPU(b *testing.B, s *setup) time.Duration {
	info, err := s.rdb.Info(context.Background(), "cpu").Result()
	require.NoError(b, err)
	var total float64
	for _, line := range strings.Split(info, "\r\n") {
		for _, k := range []string{"used_cpu_sys:", "used_cpu_user:"} {
			if v, ok := strings.CutPrefix(line, k); ok {
				f, err := strconv.ParseFloat(v, 64)
				require.NoError(b, err)
				total += f
			}
		}
	}
	return time.Duration(total * float64(time.Second))
}

// scriptCalls returns how many EVALSHA and EVAL calls the Redis server has run.
func scriptCalls(b *testing.B, s *setup) int64 {
	info, err := s.rdb.Info(context.Background(), "commandstats").Result()
	require.NoError(b, err)
	var n int64
	for _, line := range strings.Split(info, "\r\n") {
		for _, k := range []string{"cmdstat_evalsha:calls=", "cmdstat_eval:calls="} {
			if v, ok := strings.CutPrefix(line, k); ok {
				c, err := strconv.ParseInt(v[:strings.IndexByte(v, ',')], 10, 64)
				require.NoError(b, err)
				n += c
			}
		}
	}
	return n
}
