package taskqueue

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// BenchmarkDrainFlow is BenchmarkDrain (one worker of concurrency 100 draining a backlog enqueued beforehand) for
// the cost of flow keys and limits (docs/flow-control.md): a backlog without keys, over 100 keys without limits,
// and over 100 keys each limited to 10 at once. Run with a fixed count (-benchtime=20000x) so that every case
// drains the same backlog.
func BenchmarkDrainFlow(b *testing.B) {
	for _, c := range []struct {
		name  string
		keys  int
		limit int
	}{{"plain", 0, 0}, {"keys=100", 100, 0}, {"keys=100,limit=10", 100, 10}} {
		b.Run(c.name, func(b *testing.B) {
			s, done := benchSetup(b)
			ctx := context.Background()
			specs := benchSpecs(b.N, "d")
			for i, sp := range specs {
				if c.keys > 0 {
					sp.FlowKey = fmt.Sprintf("k%d", i%c.keys)
				}
			}
			if c.limit > 0 {
				require.NoError(b, s.adm.SetConcurrencyLimit(ctx, AllFlowKeys, c.limit))
			}
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
		})
	}
}
