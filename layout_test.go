package taskqueue

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestBatchLeaseLifecycle: one pickup is one lease record; the deliveries of the batch settle one by one (by
// position), the in-flight count stays exact, a renewal is per batch and fenced per delivery, and an expired
// batch gives back exactly its deliveries still leased.
func TestBatchLeaseLifecycle(t *testing.T) {
	t.Parallel()
	backends(t, &RedisConfig{Lease: time.Second}, func(t *testing.T, s *setup) {
		ctx := context.Background()
		require.NoError(t, Register(s.ref, "m", "f", func(context.Context, addArgs) error { return nil }))
		specs := make([]*TaskSpec, 10)
		for i := range specs {
			specs[i] = NewTaskSpec(fmt.Sprintf("b%d", i), Ref("m", "f", nil))
		}
		require.NoError(t, s.q.EnqueueBatch(ctx, specs))
		ds := s.lease(t, 10)
		for i, d := range ds {
			require.Equal(t, ds[0].Token+int64(i), d.Token, "tokens are consecutive within a batch")
		}
		require.Equal(t, int64(1), s.rdb.ZCard(ctx, s.q.keys.key(keyLeases)).Val(), "one lease for the batch")
		require.Equal(t, Counts{Active: 10}, s.counts(t))

		require.NoError(t, s.q.Ack(ctx, ds[0], ds[2], ds[4]))
		require.NoError(t, s.q.Retry(ctx, ds[1], time.Hour, errors.New("x")))
		require.NoError(t, s.q.Release(ctx, ds[3]))
		require.NoError(t, s.q.DeadLetter(ctx, ds[5], errors.New("bad")))
		require.Equal(t, Counts{Pending: 1, Active: 4, Scheduled: 1, Dead: 1}, s.counts(t))
		list, err := s.adm.List(ctx, StateActive, 0, 100)
		require.NoError(t, err)
		require.Equal(t, []string{"b6", "b7", "b8", "b9"}, taskIDs(list))

		lost, err := s.q.ExtendLeases(ctx, []*Delivery{ds[6], ds[0], ds[9]})
		require.NoError(t, err)
		require.Equal(t, []*Delivery{ds[0]}, lost, "an acked delivery is not renewed")
		require.NoError(t, s.q.Ack(ctx, ds[0]), "a repeated ack succeeds")
		require.ErrorIs(t, s.q.Ack(ctx, ds[1]), ErrLeaseLost, "a retried delivery cannot be acked")

		s.advance(1500 * time.Millisecond)
		res, err := s.q.Reap(ctx)
		require.NoError(t, err)
		require.Equal(t, 4, res.Requeued)
		require.Equal(t, Counts{Pending: 5, Scheduled: 1, Dead: 1}, s.counts(t))
		require.Zero(t, s.rdb.Exists(ctx, s.q.keys.key(keyLeases), s.q.keys.key(keyBatches)).Val(), "the record went with its lease")
		require.ErrorIs(t, s.q.Ack(ctx, ds[6]), ErrLeaseLost, "the reclaimed batch's owner is refused")
		lost, err = s.q.ExtendLeases(ctx, []*Delivery{ds[7]})
		require.NoError(t, err)
		require.Equal(t, []*Delivery{ds[7]}, lost)
		require.NoError(t, s.q.Ack(ctx, ds[2]), "an ack resent once the record is gone: told by the tombstone")

		// The reclaimed tasks come back at the head, in order, each alone (suspects).
		for _, id := range []string{"b6", "b7", "b8", "b9", "b3"} {
			d := s.lease(t, 1)[0]
			require.Equal(t, id, d.Spec.TaskID)
			require.NoError(t, s.q.Ack(ctx, d))
		}
		require.Equal(t, Counts{Scheduled: 1, Dead: 1}, s.counts(t))
	})
}

// TestSettledWindowTombstones: an ack leaves a tombstone in tasks for the last SettledWindow acked ids (a FIFO
// list); enqueue tells a replay of a completed task by it, every reader treats it as absent, and the trim deletes
// only values that are still tombstones.
func TestSettledWindowTombstones(t *testing.T) {
	t.Parallel()
	backends(t, &RedisConfig{SettledWindow: 3}, func(t *testing.T, s *setup) {
		ctx := context.Background()
		require.NoError(t, Register(s.ref, "m", "f", func(context.Context, addArgs) error { return nil }))
		spec := func(id string) *TaskSpec { return NewTaskSpec(id, Ref("m", "f", nil)) }
		for i := range 5 {
			require.NoError(t, s.q.Enqueue(ctx, spec(fmt.Sprintf("w%d", i))))
		}
		ds := s.lease(t, 5)
		require.NoError(t, s.q.Ack(ctx, ds...))
		require.Equal(t, []string{"w2", "w3", "w4"}, s.rdb.LRange(ctx, s.q.keys.key(keyWindow), 0, -1).Val())
		require.Equal(t, int64(3), s.rdb.HLen(ctx, s.q.keys.key(keyTasks)).Val(), "the two oldest tombstones trimmed")

		again := spec("w4")
		require.NoError(t, s.q.Enqueue(ctx, again))
		require.Equal(t, AlreadyCompleted, again.Enqueued)
		old := spec("w0")
		require.NoError(t, s.q.Enqueue(ctx, old))
		require.Equal(t, Stored, old.Enqueued, "out of the window: a new task")
		require.ErrorIs(t, s.q.Ack(ctx, ds[0]), ErrLeaseLost, "the stale delivery does not ack the new task")
		require.NoError(t, s.q.Ack(ctx, ds[4]), "a resent ack within the window")

		_, err := s.adm.Inspect(ctx, "w3")
		require.ErrorIs(t, err, ErrNotFound)
		require.Equal(t, Counts{Pending: 1}, s.counts(t))

		// w0 runs and is acked again: the window moves on.
		require.NoError(t, s.q.Ack(ctx, s.lease(t, 1)...)) // w0
		require.Equal(t, []string{"w3", "w4", "w0"}, s.rdb.LRange(ctx, s.q.keys.key(keyWindow), 0, -1).Val())
		// An id of the list whose value is no tombstone any more (here removed by hand, then enqueued anew) keeps
		// its envelope when the trim drops it.
		require.NoError(t, s.rdb.HDel(ctx, s.q.keys.key(keyTasks), "w3").Err())
		require.NoError(t, s.q.Enqueue(ctx, spec("w3")))
		require.NoError(t, s.q.Enqueue(ctx, spec("w9")))
		d := s.lease(t, 2)
		require.Equal(t, "w3", d[0].Spec.TaskID)
		require.NoError(t, s.q.Release(ctx, d[0]))
		require.NoError(t, s.q.Ack(ctx, d[1])) // w9: the trim drops w3 from the list
		require.Equal(t, []string{"w4", "w0", "w9"}, s.rdb.LRange(ctx, s.q.keys.key(keyWindow), 0, -1).Val())
		info, err := s.adm.Inspect(ctx, "w3")
		require.NoError(t, err)
		require.Equal(t, StatePending, info.State)
	})
}
