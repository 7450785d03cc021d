package taskqueue

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestSnoozeRunsAgainWithoutARetry: a handler that snoozes twice runs three times, uses no retry (MaxRetries 1
// would dead-letter it after a second failure), and its envelope counts the snoozes.
func TestSnoozeRunsAgainWithoutARetry(t *testing.T) {
	t.Parallel()
	backends(t, nil, func(t *testing.T, s *setup) {
		ctx := context.Background()
		var runs atomic.Int32
		require.NoError(t, Register(s.ref, "m", "snoozy", func(ctx context.Context, _ struct{}) error {
			if runs.Add(1) <= 2 {
				return Snooze(20 * time.Millisecond)
			}
			return nil
		}))
		rec := &recorder{}
		startWorker(t, s.q, quietWorker(WorkerConfig{Concurrency: 1, ReapInterval: 20 * time.Millisecond}, rec))
		spec := NewTaskSpec("s1", Ref("m", "snoozy", nil))
		spec.MaxRetries = 1
		require.NoError(t, s.q.Enqueue(ctx, spec))
		waitFor(t, 20*time.Second, "two snoozes", func() bool { return rec.count(EventSnoozed) == 2 })
		if s.mr != nil {
			waitFor(t, 20*time.Second, "the third run", func() bool { s.advance(50 * time.Millisecond); return rec.count(EventSucceeded) == 1 })
		}
		waitFor(t, 20*time.Second, "the third run", func() bool { return rec.count(EventSucceeded) == 1 })
		require.Zero(t, rec.count(EventRetried)+rec.count(EventDead))
		require.Equal(t, 0, rec.last(EventSucceeded).Attempt)
		require.Equal(t, 20*time.Millisecond, rec.last(EventSnoozed).Delay)
	})
}

func TestSnoozeOutOfBoundsFailsTheRun(t *testing.T) {
	t.Parallel()
	s := newMini(t, nil)
	ctx := context.Background()
	require.NoError(t, Register(s.ref, "m", "zero", func(context.Context, struct{}) error { return Snooze(0) }))
	require.NoError(t, Register(s.ref, "m", "long", func(context.Context, struct{}) error { return Snooze(MaxSnoozeDelay + time.Second) }))
	rec := &recorder{}
	startWorker(t, s.q, quietWorker(WorkerConfig{Concurrency: 2, MaxRetries: -1}, rec))
	require.NoError(t, s.q.EnqueueBatch(ctx, []*TaskSpec{NewTaskSpec("z", Ref("m", "zero", nil)), NewTaskSpec("l", Ref("m", "long", nil))}))
	waitFor(t, 20*time.Second, "two dead letters", func() bool { return rec.count(EventDead) == 2 })
	require.ErrorIs(t, rec.last(EventDead).Err, ErrInvalidSnooze)
	require.Zero(t, rec.count(EventSnoozed))
}

func TestSnoozeLimit(t *testing.T) {
	t.Parallel()
	s := newMini(t, nil)
	ctx := context.Background()
	require.NoError(t, s.q.Enqueue(ctx, NewTaskSpec("s", Ref("test", "noop", nil))))
	ds := s.lease(t, 1)
	ds[0].env.extra = map[string]json.RawMessage{"snoozes": json.RawMessage("1000")}
	require.ErrorIs(t, s.q.snooze(ctx, ds[0], time.Second), ErrSnoozeLimit)
	ds[0].env.extra["snoozes"] = json.RawMessage("7")
	require.NoError(t, s.q.snooze(ctx, ds[0], time.Second))
	info, err := s.adm.Inspect(ctx, "s")
	require.NoError(t, err)
	require.Equal(t, StateScheduled, info.State)
	require.Contains(t, info.Record, `"snoozes":8`)
}
