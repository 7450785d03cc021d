package taskqueue

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// checkOutcomes runs the enqueue outcomes through q: a generated id written back, stored, duplicate, conflict
// (naming the id), already completed, and the same per spec of a batch.
func checkOutcomes(t *testing.T, q TaskQueue) {
	t.Helper()
	ctx := context.Background()
	mk := func(id string, v int) *TaskSpec {
		return &TaskSpec{TaskID: id, Executable: Ref("outcome", "f", outcomeArgs{V: v})}
	}

	spec := mk("", 1)
	require.NoError(t, q.Enqueue(ctx, spec))
	require.NotEmpty(t, spec.TaskID, "the generated id is written back")
	require.Equal(t, Stored, spec.Enqueued)
	id := spec.TaskID

	again := mk(id, 1)
	require.NoError(t, q.Enqueue(ctx, again))
	require.Equal(t, Duplicate, again.Enqueued)

	other := mk(id, 2)
	err := q.Enqueue(ctx, other)
	require.ErrorIs(t, err, ErrTaskIDConflict)
	require.Contains(t, err.Error(), strconv.Quote(id), "the conflict names the id")
	require.Equal(t, NotEnqueued, other.Enqueued)

	ds, err := q.Dequeue(ctx, DequeueOptions{Max: 1})
	require.NoError(t, err)
	require.Len(t, ds, 1)
	require.NoError(t, q.Ack(ctx, ds[0]))
	done := mk(id, 1)
	require.NoError(t, q.Enqueue(ctx, done))
	require.Equal(t, AlreadyCompleted, done.Enqueued)

	pending := mk("p-1", 1)
	require.NoError(t, q.Enqueue(ctx, pending))
	batch := []*TaskSpec{mk("", 3), mk("p-1", 1), mk(id, 1), mk("p-1", 9), mk("b-2", 4)}
	err = q.EnqueueBatch(ctx, batch)
	require.ErrorIs(t, err, ErrTaskIDConflict)
	require.Contains(t, err.Error(), `"p-1"`)
	require.NotEmpty(t, batch[0].TaskID)
	var got []EnqueueOutcome
	for _, s := range batch {
		got = append(got, s.Enqueued)
	}
	require.Equal(t, []EnqueueOutcome{Stored, Duplicate, AlreadyCompleted, NotEnqueued, Stored}, got)
}

func TestEnqueueOutcomeRedis(t *testing.T) {
	t.Parallel()
	backends(t, nil, func(t *testing.T, s *setup) {
		registerOutcome(t, s.ref)
		checkOutcomes(t, s.q)
	})
}

func TestEnqueueOutcomeSharded(t *testing.T) {
	t.Parallel()
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	reg, ref := testRegistry(t)
	registerOutcome(t, ref)
	q, err := NewShardedQueue(rdb, "sq", 3, reg, quiet(nil))
	require.NoError(t, err)
	checkOutcomes(t, q)
}

func TestEnqueueOutcomeMemory(t *testing.T) {
	t.Parallel()
	q := NewMemoryQueue(time.Second, 2)
	t.Cleanup(q.Close)
	checkOutcomes(t, q)
}

func TestEnqueueOutcomeString(t *testing.T) {
	t.Parallel()
	require.Equal(t, "already completed", AlreadyCompleted.String())
	require.Equal(t, "EnqueueOutcome(9)", EnqueueOutcome(9).String())
}
