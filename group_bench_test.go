package taskqueue

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// BenchmarkGroupWakeup measures the barrier's wake-up latency on a real redis-server: from the moment the last
// member's ack is sent to the moment GroupRun.Wait returns in a waiter that was already blocked. Each iteration
// dispatches a group of 4, acks three members, waits until the waiter blocks (INFO blocked_clients), then acks
// the last one. It reports the median and 99th percentile in microseconds.
func BenchmarkGroupWakeup(b *testing.B) {
	s := newReal(b, nil)
	ctx := context.Background()
	require.NoError(b, Register(s.ref, "bench", "noop", func(context.Context, payload200) error { return nil }))
	blocked := func() int {
		info, err := s.rdb.Info(ctx, "clients").Result()
		require.NoError(b, err)
		for _, line := range strings.Split(info, "\r\n") {
			if v, ok := strings.CutPrefix(line, "blocked_clients:"); ok {
				n, _ := strconv.Atoi(v)
				return n
			}
		}
		return 0
	}
	lat := make([]time.Duration, 0, b.N)
	specs := benchSpecs(4, "")
	for i := range specs {
		specs[i].TaskID = ""
	}
	b.ResetTimer()
	for range b.N {
		run, err := s.q.DispatchGroup(ctx, "bench", specs, nil)
		require.NoError(b, err)
		ds, err := s.q.Dequeue(ctx, DequeueOptions{Max: 4})
		require.NoError(b, err)
		require.Len(b, ds, 4)
		require.NoError(b, s.q.Ack(ctx, ds[:3]...))
		base := blocked()
		returned := make(chan time.Time, 1)
		go func() {
			_, err := run.Wait(ctx, &WaitOptions{Timeout: 10 * time.Second})
			if err != nil {
				panic(err)
			}
			returned <- time.Now()
		}()
		for deadline := time.Now().Add(5 * time.Second); blocked() <= base; {
			require.True(b, time.Now().Before(deadline), "the waiter never blocked")
		}
		sent := time.Now()
		require.NoError(b, s.q.Ack(ctx, ds[3]))
		lat = append(lat, (<-returned).Sub(sent))
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}
