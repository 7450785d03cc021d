package taskqueue

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// BenchmarkMultiQueueDrain measures how fast one worker (concurrency 100) drains a backlog enqueued beforehand:
// from one queue (as BenchmarkDrain), and from two queues holding half of it each, weighted 1:1 and strict. Run
// them in one go, so that the ratio compares like with like:
//
//	go test -run '^$' -bench MultiQueueDrain -benchtime 100000x -count 5 .
func BenchmarkMultiQueueDrain(b *testing.B) {
	for _, c := range []struct {
		name   string
		queues int
		strict bool
	}{{"queues=1", 1, false}, {"queues=2", 2, false}, {"queues=2-strict", 2, true}} {
		b.Run(c.name, func(b *testing.B) {
			s, done := benchSetup(b)
			ctx := context.Background()
			qs := []*RedisTaskQueue{s.q}
			for i := 1; i < c.queues; i++ {
				q, err := NewRedisTaskQueue(s.rdb, fmt.Sprintf("%s-%d", s.q.prefix, i), s.reg, quiet(nil))
				require.NoError(b, err)
				qs = append(qs, q)
			}
			specs := benchSpecs(b.N, "d")
			for i := 0; i < b.N; i += 1000 {
				require.NoError(b, qs[(i/1000)%len(qs)].EnqueueBatch(ctx, specs[i:min(i+1000, b.N)]))
			}
			var consumed TaskQueue = s.q
			if c.queues > 1 {
				ws := make([]QueueWeight, len(qs))
				for i, q := range qs {
					ws[i] = QueueWeight{Queue: q, Weight: 1}
				}
				m, err := NewMultiQueue(ws, &MultiQueueConfig{Strict: c.strict})
				require.NoError(b, err)
				consumed = m
			}
			w, err := NewTaskWorker(consumed, quietWorker(WorkerConfig{Concurrency: 100}, nil))
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
		})
	}
}
