package taskqueue

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestDelayedTaskStartsOnTime checks on a real redis-server, with three workers sharing the queue, that delayed
// tasks are started by the consumers' local due timers, never before they are due. Without the due timer each
// worker's BLPOP returns only when Redis notices its timeout, at its next cron tick (up to 100ms at the default hz
// 10): the queue's counters tell which of the two ended each wait for a delayed task. How late the tasks start is a
// speed, measured by BenchmarkDelayedLateness (and by make bench-compare), not asserted here.
func TestDelayedTaskStartsOnTime(t *testing.T) {
	t.Parallel()
	s := newReal(t, nil)
	// The BLPOP timeout, the safety net, ends a wait for a delayed task 100ms (dueWakeSlack) after its due time: a
	// busy machine delays the timer's push that long now and then. 10s here: only a missing timer lets it win.
	s.q.dueSlack = 10 * time.Second
	ctx := context.Background()
	const n, delay, spread = 20, 300 * time.Millisecond, 17 * time.Millisecond
	type run struct {
		id  int64
		now int64 // the server's clock (ms) when the handler started
	}
	runs := make(chan run, 2*n)
	require.NoError(t, Register(s.ref, "m", "ontime", func(ctx context.Context, a addArgs) error {
		now, err := s.rdb.Time(ctx).Result()
		if err != nil {
			return err
		}
		runs <- run{a.A, now.UnixMilli()}
		return nil
	}))
	// Due times spread over the phases of Redis's 100ms cron tick, each a wait of its own.
	specs := make([]*TaskSpec, n)
	for i := range int64(n) {
		specs[i] = NewTaskSpec(fmt.Sprint("d", i), Ref("m", "ontime", addArgs{A: i}))
		specs[i].ProcessIn = delay + time.Duration(i)*spread
	}
	require.NoError(t, s.q.EnqueueBatch(ctx, specs))
	due := make(map[int64]int64, n) // task -> due time (ms, server clock), as the enqueue script stored it
	for i, spec := range specs {
		score, err := s.rdb.ZScore(ctx, s.q.keys.key(keyScheduled), spec.TaskID).Result()
		require.NoError(t, err, "%s is scheduled", spec.TaskID)
		due[int64(i)] = int64(score)
	}
	for range 3 { // no reaper, whose pass also readies due tasks: only a pickup can
		startWorker(t, s.q, quietWorker(WorkerConfig{Concurrency: 4, ReapInterval: -1}, nil))
	}
	timeout := time.After(30 * time.Second) // a deadline for a hung test, not a speed
	seen := make(map[int64]bool, n)
	for len(seen) < n {
		select {
		case r := <-runs:
			require.False(t, seen[r.id], "task d%d ran twice", r.id)
			seen[r.id] = true
			require.GreaterOrEqual(t, r.now, due[r.id], "task d%d started before it was due (server clock)", r.id)
		case <-timeout:
			t.Fatalf("only %d of %d delayed tasks ran", len(seen), n)
		}
	}
	wakes, timeouts := s.q.dueWakes.Load(), s.q.dueTimeouts.Load()
	t.Logf("waits for a delayed task ended by the due timer: %d, by the BLPOP timeout: %d", wakes, timeouts)
	require.Positive(t, wakes, "the due timers woke the consumers")
	require.Zero(t, timeouts, "no wait for a delayed task lasted until the BLPOP timeout (the due time + %s)", s.q.dueSlack)
}

// TestDueTimerWakesOnlyItsConsumer checks that a consumer's due timer wakes that consumer alone (its own list),
// which is not mistaken for an interrupt, and that the list it pushes to expires.
func TestDueTimerWakesOnlyItsConsumer(t *testing.T) {
	t.Parallel()
	s := newReal(t, nil)
	s.q.dueSlack = 10 * time.Second // the BLPOP timeout cannot beat a timer that a busy machine delays
	ctx := context.Background()
	start := time.Now()
	interrupted, err := s.q.waitForWork(ctx, "c1", 150*time.Millisecond, true)
	require.NoError(t, err)
	require.False(t, interrupted, "a due token is a wake-up, not an interrupt")
	require.GreaterOrEqual(t, time.Since(start), 150*time.Millisecond, "not woken before the due time")
	require.EqualValues(t, 1, s.q.dueWakes.Load(), "the due timer ended the wait")
	require.Zero(t, s.q.dueTimeouts.Load(), "the BLPOP timeout did not end the wait")
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
