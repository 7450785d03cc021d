package taskqueue

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestDelayedTaskStartsOnTime checks on a real redis-server at its default hz 10 that delayed tasks start close to
// their due time, with three workers sharing the queue. Without the due timer each worker's BLPOP returns only at
// Redis's next cron tick, 0-100ms after the due time (median ~50ms).
func TestDelayedTaskStartsOnTime(t *testing.T) {
	t.Parallel()
	s := newReal(t, nil)
	ctx := context.Background()
	const n, delay = 20, 300 * time.Millisecond
	var mu sync.Mutex
	due := make(map[int64]time.Time, n)
	late := make([]time.Duration, 0, n)
	runs := make(chan struct{}, 2*n)
	require.NoError(t, Register(s.ref, "m", "ontime", func(_ context.Context, a addArgs) error {
		now := time.Now()
		mu.Lock()
		late = append(late, now.Sub(due[a.A]))
		mu.Unlock()
		runs <- struct{}{}
		return nil
	}))
	for range 3 {
		startWorker(t, s.q, quietWorker(WorkerConfig{Concurrency: 4}, nil))
	}
	for i := range int64(n) {
		mu.Lock()
		due[i] = time.Now().Add(delay)
		mu.Unlock()
		spec := NewTaskSpec(fmt.Sprint("d", i), Ref("m", "ontime", addArgs{A: i}))
		spec.ProcessIn = delay
		require.NoError(t, s.q.Enqueue(ctx, spec))
		// Spread the due times over the phases of Redis's 100ms cron tick.
		<-time.After(17 * time.Millisecond)
	}
	timeout := time.After(10 * time.Second)
	for i := 0; i < n; {
		select {
		case <-runs:
			i++
		case <-timeout:
			t.Fatalf("only %d of %d delayed tasks ran", len(late), n)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, late, n, "each task runs once")
	slices.Sort(late)
	t.Logf("lateness: min %s, p50 %s, p90 %s, max %s", late[0], late[n/2], late[n*9/10], late[n-1])
	require.GreaterOrEqual(t, late[0], time.Duration(0), "no task starts before it is due")
	require.Less(t, late[n/2], 25*time.Millisecond, "median lateness")
	require.Less(t, late[n*9/10], 60*time.Millisecond, "90th percentile lateness")
}

// TestDueTimerWakesOnlyItsConsumer checks that a consumer's due timer wakes that consumer alone (its own list),
// which is not mistaken for an interrupt, and that the list it pushes to expires.
func TestDueTimerWakesOnlyItsConsumer(t *testing.T) {
	t.Parallel()
	s := newReal(t, nil)
	ctx := context.Background()
	start := time.Now()
	interrupted, err := s.q.waitForWork(ctx, "c1", 150*time.Millisecond, true)
	require.NoError(t, err)
	require.False(t, interrupted, "a due token is a wake-up, not an interrupt")
	took := time.Since(start)
	require.GreaterOrEqual(t, took, 150*time.Millisecond)
	require.Less(t, took, 150*time.Millisecond+dueWakeSlack, "the timer, not the BLPOP timeout, ended the wait")
	n, err := s.rdb.LLen(ctx, s.q.keys.consumerWake("c2")).Result()
	require.NoError(t, err)
	require.Zero(t, n, "another consumer is not woken")

	// A consumer woken before its timer fires leaves at most one stale token, which expires.
	require.NoError(t, s.rdb.LPush(ctx, s.q.keys.key(keyWake), "1").Err())
	interrupted, err = s.q.waitForWork(ctx, "c1", 50*time.Millisecond, true)
	require.NoError(t, err)
	require.False(t, interrupted)
	ttl, err := s.rdb.PTTL(ctx, s.q.keys.consumerWake("c1")).Result()
	require.NoError(t, err)
	require.True(t, ttl == -2*time.Nanosecond || (ttl > 0 && ttl <= time.Minute), "the consumer's list expires (ttl %s)", ttl)
}
