package taskqueue

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// BenchmarkCancelRunning measures how long a cancel of a running task takes to reach its handler: from the start
// of Admin.Cancel (one script call, then the PUBLISH on the control channel) to the handler seeing its context
// done, on a real redis-server, the worker in this process (chaos scenario 24 measures the same with the worker in
// another process). Reports p50 and p99 in µs.
//
//	go test -run '^$' -bench BenchmarkCancelRunning -benchtime 200x .
func BenchmarkCancelRunning(b *testing.B) {
	s := newReal(b, &RedisConfig{Lease: 30 * time.Second})
	ctx := context.Background()
	started, ended := make(chan struct{}), make(chan time.Time)
	require.NoError(b, Register(s.ref, "bench", "block", func(ctx context.Context, _ struct{}) error {
		started <- struct{}{}
		<-ctx.Done()
		ended <- time.Now()
		return ctx.Err()
	}))
	w, err := NewTaskWorker(s.q, quietWorker(WorkerConfig{Concurrency: 1}, nil))
	require.NoError(b, err)
	require.NoError(b, w.Start(ctx))
	defer func() {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		_ = w.Stop(sctx)
	}()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		id := "c" + newID()
		require.NoError(b, s.q.Enqueue(ctx, NewTaskSpec(id, Ref("bench", "block", nil))))
		select {
		case <-started:
		case <-time.After(30 * time.Second):
			b.Fatalf("task %d did not start", i)
		}
		t0 := time.Now()
		_, err := s.adm.Cancel(ctx, id)
		require.NoError(b, err)
		select {
		case t1 := <-ended:
			lat = append(lat, t1.Sub(t0))
		case <-time.After(30 * time.Second):
			b.Fatalf("the cancel of task %d did not reach its handler", i)
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}
