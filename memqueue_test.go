package taskqueue

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func nop(context.Context) error { return nil }

func TestMemoryQueueLifecycle(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	q := NewMemoryQueue(100*time.Millisecond, 2)
	defer q.Close()
	exe := Func(nop)
	require.NoError(t, q.Enqueue(ctx, NewTaskSpec("a", exe)))
	require.NoError(t, q.Enqueue(ctx, NewTaskSpec("a", exe)), "same executable: idempotent")
	require.ErrorIs(t, q.Enqueue(ctx, NewTaskSpec("a", Ref("m", "f", nil))), ErrTaskIDConflict)
	ref := NewReferenceResolver()
	require.NoError(t, Register(ref, "m", "f", func(context.Context, addArgs) error { return nil }))
	call, err := ref.Call("m", "f", addArgs{A: 1})
	require.NoError(t, err)
	require.NoError(t, q.Enqueue(ctx, NewTaskSpec("r", call)))
	require.NoError(t, q.Enqueue(ctx, NewTaskSpec("r", Ref("m", "f", addArgs{A: 1}))), "same reference")
	require.ErrorIs(t, q.Enqueue(ctx, NewTaskSpec("r", Ref("m", "f", addArgs{A: 2}))), ErrTaskIDConflict)
	require.ErrorIs(t, q.Enqueue(ctx, NewTaskSpec("b", nil)), ErrInvalidConfig)
	require.ErrorIs(t, q.Enqueue(ctx, NewTaskSpec("bad id", exe)), ErrInvalidTaskID)
	require.NoError(t, q.Enqueue(ctx, &TaskSpec{TaskID: "later", Executable: exe, ProcessIn: 50 * time.Millisecond}))

	ds, err := q.Dequeue(ctx, DequeueOptions{Max: 10})
	require.NoError(t, err)
	require.Equal(t, []string{"a", "r"}, ids(ds))
	require.NoError(t, q.Ack(ctx, ds[1]))
	first := ds[0]

	// A lost lease: reclaimed, redelivered with a new token; the stale token is refused.
	time.Sleep(120 * time.Millisecond) // past the 100ms lease and the 50ms delay
	ds, err = q.Dequeue(ctx, DequeueOptions{Max: 10, Wait: time.Second})
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"a", "later"}, ids(ds))
	var a *Delivery
	for _, d := range ds {
		if d.Spec.TaskID == "a" {
			a = d
		} else {
			require.NoError(t, q.Ack(ctx, d))
		}
	}
	require.Equal(t, 2, a.Deliveries)
	require.ErrorIs(t, q.Ack(ctx, first), ErrLeaseLost)
	lost, err := q.ExtendLeases(ctx, []*Delivery{first, a})
	require.NoError(t, err)
	require.Equal(t, []*Delivery{first}, lost)

	require.NoError(t, q.Retry(ctx, a, 0, errors.New("boom")))
	ds, err = q.Dequeue(ctx, DequeueOptions{Max: 1})
	require.NoError(t, err)
	require.Equal(t, 1, ds[0].Spec.Attempt)
	require.Equal(t, "boom", ds[0].Spec.LastError)
	require.NoError(t, q.DeadLetter(ctx, ds[0], errors.New("gave up")))
	st, err := q.Stats(ctx)
	require.NoError(t, err)
	require.Equal(t, Counts{Dead: 1}, st.Counts)
	require.Equal(t, map[string]string{"a": "gave up"}, q.DeadLetters())
}

func TestMemoryQueueCrashLoopAndRelease(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	q := NewMemoryQueue(20*time.Millisecond, 2)
	defer q.Close()
	require.NoError(t, q.Enqueue(ctx, NewTaskSpec("x", Func(nop))))
	require.NoError(t, q.Enqueue(ctx, NewTaskSpec("y", Func(nop))))
	ds, _ := q.Dequeue(ctx, DequeueOptions{Max: 1})
	require.NoError(t, q.Release(ctx, ds[0]))
	ds, _ = q.Dequeue(ctx, DequeueOptions{Max: 1})
	require.Equal(t, "x", ds[0].Spec.TaskID, "released to the head")
	require.Equal(t, 1, ds[0].Deliveries)
	// x's worker "crashes": its lease expires, it comes back first (delivery 2), expires again and is dead.
	time.Sleep(30 * time.Millisecond) // past the 20ms lease
	res, err := q.Reap(ctx)
	require.NoError(t, err)
	require.Equal(t, ReapResult{Requeued: 1}, res)
	ds, _ = q.Dequeue(ctx, DequeueOptions{Max: 1})
	require.Equal(t, "x", ds[0].Spec.TaskID)
	require.Equal(t, 2, ds[0].Deliveries)
	time.Sleep(30 * time.Millisecond) // past the 20ms lease again
	res, err = q.Reap(ctx)
	require.NoError(t, err)
	require.Equal(t, ReapResult{Dead: 1}, res)
	require.Contains(t, q.DeadLetters()["x"], ErrMaxDeliveries.Error())
	ds, _ = q.Dequeue(ctx, DequeueOptions{Max: 1})
	require.Equal(t, "y", ds[0].Spec.TaskID, "other tasks keep flowing")
	require.NoError(t, q.Ack(ctx, ds[0]))
}

func TestMemoryQueueBlockingAndInterrupt(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	q := NewMemoryQueue(time.Second, 0)
	got := make(chan []*Delivery, 1)
	me := goroutineID()
	blocked := func() bool { return childIn(me, "taskqueue.waitChange(") }
	go func() {
		ds, _ := q.Dequeue(ctx, DequeueOptions{Max: 1, Wait: 5 * time.Second, Consumer: "c"})
		got <- ds
	}()
	waitFor(t, 5*time.Second, "the Dequeue blocked", blocked)
	require.NoError(t, q.Enqueue(ctx, NewTaskSpec("x", Func(nop))))
	require.Len(t, <-got, 1)
	go func() {
		ds, _ := q.Dequeue(ctx, DequeueOptions{Max: 1, Wait: 5 * time.Second, Consumer: "c"})
		got <- ds
	}()
	waitFor(t, 5*time.Second, "the Dequeue blocked", blocked)
	require.NoError(t, q.Interrupt(ctx, "c"))
	require.Empty(t, <-got)
	q.Close()
	_, err := q.Dequeue(ctx, DequeueOptions{Max: 1, Wait: time.Second})
	require.ErrorIs(t, err, ErrClosed)
	require.ErrorIs(t, q.Enqueue(ctx, NewTaskSpec("y", Func(nop))), ErrClosed)
}

func TestMemoryQueueIdempotentSettles(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	q := NewMemoryQueue(time.Second, 0)
	defer q.Close()
	require.NoError(t, q.Enqueue(ctx, NewTaskSpec("a", Func(nop))))
	ds, _ := q.Dequeue(ctx, DequeueOptions{Max: 1})
	require.NoError(t, q.Release(ctx, ds[0]))
	require.NoError(t, q.Release(ctx, ds[0]), "repeated release")
	require.ErrorIs(t, q.Ack(ctx, ds[0]), ErrLeaseLost, "ack after release")
	ds, _ = q.Dequeue(ctx, DequeueOptions{Max: 1})
	require.NoError(t, q.Ack(ctx, ds[0]))
	require.NoError(t, q.Ack(ctx, ds[0]), "repeated ack")
}

func TestMemoryQueuePromotesInDueOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	q := NewMemoryQueue(time.Second, 0)
	defer q.Close()
	for i, id := range []string{"c", "a", "b", "d"} {
		require.NoError(t, q.Enqueue(ctx, &TaskSpec{TaskID: id, Executable: Func(nop), ProcessIn: time.Duration(10+i) * time.Millisecond}))
	}
	time.Sleep(30 * time.Millisecond) // past every due time
	ds, err := q.Dequeue(ctx, DequeueOptions{Max: 10})
	require.NoError(t, err)
	require.Equal(t, []string{"c", "a", "b", "d"}, ids(ds))
}

func TestMemoryQueueMetadata(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	q := NewMemoryQueue(time.Second, 0)
	defer q.Close()
	meta := map[string]string{"traceparent": "00-abc"}
	require.NoError(t, q.Enqueue(ctx, &TaskSpec{TaskID: "m", Executable: Func(nop), Metadata: meta}))
	meta["traceparent"] = "changed by the caller"
	ds, err := q.Dequeue(ctx, DequeueOptions{Max: 1})
	require.NoError(t, err)
	require.Equal(t, "00-abc", ds[0].Spec.Metadata["traceparent"], "the queue keeps its own copy")
	ds[0].Spec.Metadata["x"] = "handler's change"
	require.ErrorIs(t, q.Enqueue(ctx, &TaskSpec{TaskID: "bad", Executable: Func(nop), Metadata: map[string]string{"a b": "x"}}), ErrInvalidConfig)
}
