package taskqueue

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestCancelWaitingTasks(t *testing.T) {
	t.Parallel()
	backends(t, nil, func(t *testing.T, s *setup) {
		ctx := context.Background()
		require.NoError(t, s.q.EnqueueBatch(ctx, []*TaskSpec{
			NewTaskSpec("a", Ref("test", "noop", nil)),
			{TaskID: "b", Executable: Ref("test", "noop", nil), ProcessIn: time.Hour},
			NewTaskSpec("c", Ref("test", "noop", nil)),
		}))
		st, err := s.adm.Cancel(ctx, "a")
		require.NoError(t, err)
		require.Equal(t, StatePending, st)
		st, err = s.adm.Cancel(ctx, "b")
		require.NoError(t, err)
		require.Equal(t, StateScheduled, st)
		require.Equal(t, Counts{Pending: 1}, s.counts(t))

		info, err := s.adm.Inspect(ctx, "a")
		require.NoError(t, err)
		require.Equal(t, StateCancelled, info.State)
		require.False(t, info.Score.IsZero())
		require.Contains(t, info.Record, `"task_id":"a"`)

		// A second cancel, an unknown id: typed errors, never a silent success.
		_, err = s.adm.Cancel(ctx, "a")
		require.ErrorIs(t, err, ErrAlreadyFinished)
		var ce *ControlError
		require.ErrorAs(t, err, &ce)
		require.Equal(t, StateCancelled, ce.State)
		_, err = s.adm.Cancel(ctx, "nope")
		require.ErrorIs(t, err, ErrNotFound)
		_, err = s.adm.Cancel(ctx, "")
		require.ErrorIs(t, err, ErrInvalidTaskID)

		// Enqueuing a cancelled id is a no-op: the cancel holds.
		require.NoError(t, s.q.Enqueue(ctx, NewTaskSpec("a", Ref("test", "noop", nil))))
		require.Equal(t, Counts{Pending: 1}, s.counts(t))
		ds := s.lease(t, 1)
		require.Equal(t, "c", ds[0].Spec.TaskID)

		// Delete removes the cancelled record; then the id is unknown.
		st, err = s.adm.Delete(ctx, "a")
		require.NoError(t, err)
		require.Equal(t, StateCancelled, st)
		_, err = s.adm.Inspect(ctx, "a")
		require.ErrorIs(t, err, ErrNotFound)
		_, err = s.adm.Delete(ctx, "a")
		require.ErrorIs(t, err, ErrNotFound)
	})
}

// TestCancelLeasedDelivery cancels a leased task with no worker: the delivery's ack, retry and renewal are
// refused, the reaper never gives it back, and no pickup ever leases it again.
func TestCancelLeasedDelivery(t *testing.T) {
	t.Parallel()
	s := newMini(t, &RedisConfig{Lease: time.Second})
	ctx := context.Background()
	require.NoError(t, s.q.EnqueueBatch(ctx, []*TaskSpec{NewTaskSpec("a", Ref("test", "noop", nil)), NewTaskSpec("b", Ref("test", "noop", nil))}))
	ds := s.lease(t, 2)
	st, err := s.adm.Cancel(ctx, "a")
	require.NoError(t, err)
	require.Equal(t, StateActive, st)
	require.Equal(t, Counts{Active: 1}, s.counts(t))

	lost, err := s.q.ExtendLeases(ctx, ds)
	require.NoError(t, err)
	require.Equal(t, []string{"a"}, ids(lost))
	require.ErrorIs(t, s.q.Ack(ctx, ds[0]), ErrLeaseLost)
	require.ErrorIs(t, s.q.Retry(ctx, ds[0], 0, errors.New("x")), ErrLeaseLost)
	require.ErrorIs(t, s.q.Release(ctx, ds[0]), ErrLeaseLost)

	s.advance(2 * time.Second)
	res, err := s.q.Reap(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, res.Requeued) // b only
	ds2 := s.lease(t, 1)
	require.Equal(t, "b", ds2[0].Spec.TaskID)
	require.NoError(t, s.q.Ack(ctx, ds2[0]))
	require.Equal(t, Counts{}, s.counts(t))
	info, err := s.adm.Inspect(ctx, "a")
	require.NoError(t, err)
	require.Equal(t, StateCancelled, info.State)

	// b finished: cancel and delete say so.
	_, err = s.adm.Cancel(ctx, "b")
	require.ErrorIs(t, err, ErrAlreadyFinished)
	_, err = s.adm.Delete(ctx, "b")
	require.ErrorIs(t, err, ErrAlreadyFinished)

	// A stray copy of a's id in pending never starts it.
	require.NoError(t, s.rdb.RPush(ctx, s.q.keys.key(keyPending), "a").Err())
	got, err := s.q.Dequeue(ctx, DequeueOptions{Max: 4})
	require.NoError(t, err)
	require.Empty(t, got)
}

func TestCancelRetentionDropsOldRecords(t *testing.T) {
	t.Parallel()
	s := newMini(t, &RedisConfig{ControlRetention: time.Second})
	ctx := context.Background()
	require.NoError(t, s.q.EnqueueBatch(ctx, []*TaskSpec{NewTaskSpec("a", Ref("test", "noop", nil)), NewTaskSpec("b", Ref("test", "noop", nil))}))
	_, err := s.adm.Cancel(ctx, "a")
	require.NoError(t, err)
	s.advance(2 * time.Second)
	_, err = s.adm.Cancel(ctx, "b") // drops a's record, past its retention
	require.NoError(t, err)
	_, err = s.adm.Inspect(ctx, "a")
	require.ErrorIs(t, err, ErrNotFound)
	n, err := s.rdb.ZCard(ctx, s.q.keys.cancelled()).Result()
	require.NoError(t, err)
	require.EqualValues(t, 1, n)
}

func TestDeleteInEveryState(t *testing.T) {
	t.Parallel()
	backends(t, &RedisConfig{Lease: time.Minute}, func(t *testing.T, s *setup) {
		ctx := context.Background()
		require.NoError(t, s.q.EnqueueBatch(ctx, []*TaskSpec{
			NewTaskSpec("run", Ref("test", "noop", nil)),
			NewTaskSpec("die", Ref("test", "noop", nil)),
			NewTaskSpec("retry", Ref("test", "noop", nil)),
			{TaskID: "later", Executable: Ref("test", "noop", nil), ProcessIn: time.Hour},
			NewTaskSpec("wait", Ref("test", "noop", nil)),
		}))
		ds := s.lease(t, 3)
		require.NoError(t, s.q.DeadLetter(ctx, ds[1], errors.New("boom")))
		require.NoError(t, s.q.Retry(ctx, ds[2], time.Hour, errors.New("again")))
		for id, want := range map[string]State{"die": StateDead, "retry": StateScheduled, "later": StateScheduled, "wait": StatePending} {
			st, err := s.adm.Delete(ctx, id)
			require.NoError(t, err, id)
			require.Equal(t, want, st, id)
			_, err = s.adm.Inspect(ctx, id)
			require.ErrorIs(t, err, ErrNotFound, id)
		}
		// A running task is refused, and its delivery carries on: delete is fenced against it.
		_, err := s.adm.Delete(ctx, "run")
		require.ErrorIs(t, err, ErrTaskRunning)
		require.NoError(t, s.q.Ack(ctx, ds[0]))
		_, err = s.adm.Delete(ctx, "run")
		require.ErrorIs(t, err, ErrAlreadyFinished)
		require.Equal(t, Counts{}, s.counts(t))
		// A deleted id can be enqueued again.
		require.NoError(t, s.q.Enqueue(ctx, NewTaskSpec("wait", Ref("test", "noop", nil))))
		require.Equal(t, Counts{Pending: 1}, s.counts(t))
	})
}

// TestCancelRunningTask cancels a task that a worker runs: its handler's context ends with ErrCancelled as the
// cause, the task is not retried nor dead-lettered, and it stays cancelled.
func TestCancelRunningTask(t *testing.T) {
	t.Parallel()
	backends(t, &RedisConfig{Lease: 2 * time.Second}, func(t *testing.T, s *setup) {
		ctx := context.Background()
		started := make(chan struct{}, 1)
		var cause atomic.Value
		var runs atomic.Int32
		require.NoError(t, Register(s.ref, "m", "block", func(ctx context.Context, _ struct{}) error {
			runs.Add(1)
			started <- struct{}{}
			<-ctx.Done()
			cause.Store(context.Cause(ctx))
			return ctx.Err()
		}))
		rec := &recorder{}
		startWorker(t, s.q, quietWorker(WorkerConfig{Concurrency: 2, ReapInterval: 50 * time.Millisecond}, rec))
		require.NoError(t, s.q.Enqueue(ctx, NewTaskSpec("t1", Ref("m", "block", nil))))
		select {
		case <-started:
		case <-time.After(20 * time.Second):
			t.Fatal("the handler did not start")
		}
		st, err := s.adm.Cancel(ctx, "t1")
		require.NoError(t, err)
		require.Equal(t, StateActive, st)
		waitFor(t, 20*time.Second, "the cancelled event", func() bool { return rec.count(EventCancelled) == 1 })
		c, _ := cause.Load().(error)
		require.ErrorIs(t, c, ErrCancelled)
		require.ErrorIs(t, rec.last(EventCancelled).Err, ErrCancelled)
		s.advance(3 * time.Second) // past the lease: the reaper must not give it back
		require.Never(t, func() bool { return runs.Load() > 1 }, 300*time.Millisecond, 20*time.Millisecond)
		require.Zero(t, rec.count(EventRetried)+rec.count(EventDead)+rec.count(EventLeaseLost))
		require.Equal(t, Counts{}, s.counts(t))
		info, err := s.adm.Inspect(ctx, "t1")
		require.NoError(t, err)
		require.Equal(t, StateCancelled, info.State)
	})
}

// TestCancelIgnoredByHandler: a handler that ignores its context and returns nil is reported, and its success
// changes nothing.
func TestCancelIgnoredByHandler(t *testing.T) {
	t.Parallel()
	s := newReal(t, &RedisConfig{Lease: 5 * time.Second})
	ctx := context.Background()
	started, release := make(chan struct{}, 1), make(chan struct{})
	var taskCtx atomic.Value
	require.NoError(t, Register(s.ref, "m", "stubborn", func(ctx context.Context, _ struct{}) error {
		taskCtx.Store(ctx)
		started <- struct{}{}
		<-release
		return nil
	}))
	rec := &recorder{}
	startWorker(t, s.q, quietWorker(WorkerConfig{Concurrency: 1}, rec))
	require.NoError(t, s.q.Enqueue(ctx, NewTaskSpec("t1", Ref("m", "stubborn", nil))))
	<-started
	_, err := s.adm.Cancel(ctx, "t1")
	require.NoError(t, err)
	waitFor(t, 20*time.Second, "the handler's context cancelled", func() bool {
		return taskCtx.Load().(context.Context).Err() != nil
	})
	close(release)
	t.Cleanup(func() {
		if t.Failed() {
			rec.mu.Lock()
			for _, e := range rec.events {
				t.Logf("%s %v", e.Kind, e.Err)
			}
			rec.mu.Unlock()
		}
	})
	waitFor(t, 20*time.Second, "the cancelled event", func() bool { return rec.count(EventCancelled) == 1 })
	require.ErrorIs(t, rec.last(EventCancelled).Err, ErrCancelled)
	require.Contains(t, rec.last(EventCancelled).Err.Error(), "ignored its context")
	require.Zero(t, rec.count(EventLeaseLost))
	info, err := s.adm.Inspect(ctx, "t1")
	require.NoError(t, err)
	require.Equal(t, StateCancelled, info.State)
}

// TestCancelRacesAck races a cancel with the ack of the same delivery, many times: exactly one wins, and the end
// state is the winner's.
func TestCancelRacesAck(t *testing.T) {
	t.Parallel()
	s := newReal(t, &RedisConfig{Lease: time.Minute})
	ctx := context.Background()
	const rounds = 1000
	ackWon, cancelWon := 0, 0
	for i := range rounds {
		id := "r" + string(rune('a'+i%26)) + newID()[:8]
		require.NoError(t, s.q.Enqueue(ctx, NewTaskSpec(id, Ref("test", "noop", nil))))
		ds := s.lease(t, 1)
		var ackErr, cancelErr error
		var wg sync.WaitGroup
		wg.Go(func() { ackErr = s.q.Ack(ctx, ds[0]) })
		wg.Go(func() { _, cancelErr = s.adm.Cancel(ctx, id) })
		wg.Wait()
		_, inspectErr := s.adm.Inspect(ctx, id)
		if ackErr == nil {
			require.ErrorIs(t, cancelErr, ErrAlreadyFinished, id)
			require.ErrorIs(t, inspectErr, ErrNotFound, id) // acked: a tombstone
			ackWon++
		} else {
			require.ErrorIs(t, ackErr, ErrLeaseLost, id)
			require.NoError(t, cancelErr, id)
			require.NoError(t, inspectErr, id)
			cancelWon++
		}
	}
	require.Equal(t, Counts{}, s.counts(t))
	t.Logf("ack first %d, cancel first %d of %d", ackWon, cancelWon, rounds)
}

// TestCancelBeforeLaunch: a cancel whose message reaches the worker before the pickup that leased the task never
// lets the handler start.
func TestCancelBeforeLaunch(t *testing.T) {
	t.Parallel()
	s := newMini(t, nil)
	var ran atomic.Int32
	require.NoError(t, Register(s.ref, "m", "count", func(context.Context, struct{}) error { ran.Add(1); return nil }))
	rec := &recorder{}
	w, err := NewTaskWorker(s.q, quietWorker(WorkerConfig{}, rec))
	require.NoError(t, err)
	w.control = newCancelListener(w)
	w.control.remember("t1")
	f := &inflight{d: &Delivery{Spec: &TaskSpec{TaskID: "t1"}}}
	tctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	f.ctx.Context, f.cancel = tctx, cancel
	w.control.check(f)
	require.ErrorIs(t, context.Cause(f.ctx.Context), ErrCancelled)
	require.True(t, w.control.wasCancelled(f))
	g := &inflight{d: &Delivery{Spec: &TaskSpec{TaskID: "t2"}}}
	gctx, gcancel := context.WithCancelCause(context.Background())
	defer gcancel(nil)
	g.ctx.Context, g.cancel = gctx, gcancel
	w.control.check(g)
	require.NoError(t, g.ctx.Context.Err())
	require.Zero(t, ran.Load())
}

// TestCancelGroupReleasesWaiter cancels a group run: its open members are cancelled, and the waiter returns at
// once with them counted as cancelled.
func TestCancelGroupReleasesWaiter(t *testing.T) {
	t.Parallel()
	s := newMini(t, nil)
	ctx := context.Background()
	specs := []*TaskSpec{
		NewTaskSpec("", Ref("test", "noop", nil)), NewTaskSpec("", Ref("test", "noop", nil)), NewTaskSpec("", Ref("test", "noop", nil)),
	}
	run, err := s.q.DispatchGroup(ctx, "g", specs, nil)
	require.NoError(t, err)
	ds := s.lease(t, 1) // member 0 completes before the cancel
	require.NoError(t, s.q.Ack(ctx, ds...))
	n, err := s.adm.CancelGroup(ctx, run.GroupID())
	require.NoError(t, err)
	require.Equal(t, 2, n)
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	res, err := run.Wait(wctx, nil)
	require.ErrorIs(t, err, ErrGroupFailed)
	require.ErrorIs(t, err, ErrCancelled)
	require.Equal(t, 1, res.Succeeded)
	require.Equal(t, 2, res.Cancelled)
	m, ok := res.Member("1")
	require.True(t, ok)
	require.Equal(t, MemberCancelled, m.State)
	require.Equal(t, Counts{}, s.counts(t))
	_, err = s.adm.CancelGroup(ctx, run.GroupID())
	require.ErrorIs(t, err, ErrGroupNotFound) // the completed Wait cleaned the run up
}

// TestCancelCatchUpAfterLostMessage: a cancel whose message the worker missed (not subscribed yet, or a cut
// connection) reaches the handler at the worker's next (re)subscription, from the record in Redis.
func TestCancelCatchUpAfterLostMessage(t *testing.T) {
	t.Parallel()
	s := newMini(t, &RedisConfig{Lease: time.Minute})
	ctx := context.Background()
	started, ended := make(chan struct{}, 1), make(chan error, 1)
	require.NoError(t, Register(s.ref, "m", "block", func(ctx context.Context, _ struct{}) error {
		started <- struct{}{}
		<-ctx.Done()
		ended <- context.Cause(ctx)
		return ctx.Err()
	}))
	rec := &recorder{}
	w := startWorker(t, s.q, quietWorker(WorkerConfig{Concurrency: 1}, rec))
	require.NoError(t, s.q.Enqueue(ctx, NewTaskSpec("t1", Ref("m", "block", nil))))
	<-started
	// The cancel's record, as cancel.lua writes it, without its message.
	env, err := s.rdb.HGet(ctx, s.q.keys.key(keyTasks), "t1").Result()
	require.NoError(t, err)
	require.NoError(t, s.rdb.HSet(ctx, s.q.keys.key(keyTasks), "t1", "~c"+env).Err())
	w.control.catchUp(s.q)
	select {
	case cause := <-ended:
		require.ErrorIs(t, cause, ErrCancelled)
	case <-time.After(20 * time.Second):
		t.Fatal("the handler was not cancelled")
	}
	waitFor(t, 20*time.Second, "the cancelled event", func() bool { return rec.count(EventCancelled) == 1 })
}
