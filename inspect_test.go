package taskqueue

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// noop registers m.f, a function that does nothing, so that tasks referring to it can be leased.
func (s *setup) noop(t *testing.T) {
	t.Helper()
	require.NoError(t, Register(s.ref, "m", "f", func(context.Context, addArgs) error { return nil }))
}

// enqueue adds ready tasks m.f with the given ids.
func (s *setup) enqueue(t *testing.T, ids ...string) {
	t.Helper()
	specs := make([]*TaskSpec, len(ids))
	for i, id := range ids {
		specs[i] = NewTaskSpec(id, Ref("m", "f", nil))
	}
	require.NoError(t, s.q.EnqueueBatch(context.Background(), specs))
}

// kill enqueues tasks and dead-letters each with reason(id).
func (s *setup) kill(t *testing.T, reason func(id string) string, ids ...string) {
	t.Helper()
	s.enqueue(t, ids...)
	for _, d := range s.lease(t, len(ids)) {
		require.NoError(t, s.q.DeadLetter(context.Background(), d, errors.New(reason(d.Spec.TaskID))))
	}
}

func TestPauseStopsPickupOnly(t *testing.T) {
	t.Parallel()
	backends(t, nil, func(t *testing.T, s *setup) {
		ctx := context.Background()
		s.noop(t)
		s.enqueue(t, "running", "r2")
		running := s.lease(t, 2)

		require.NoError(t, s.adm.Pause(ctx))
		paused, err := s.adm.Paused(ctx)
		require.NoError(t, err)
		require.True(t, paused)
		s.enqueue(t, "a", "b")
		ds, err := s.q.Dequeue(ctx, DequeueOptions{Max: 10})
		require.NoError(t, err)
		require.Empty(t, ds, "a paused queue leases nothing")

		// Everything but pickup goes on while paused.
		require.NoError(t, s.q.Ack(ctx, running[0]))
		require.NoError(t, s.q.Retry(ctx, running[1], 0, errors.New("again")))
		require.Equal(t, Counts{Pending: 3}, s.counts(t))
		_, err = s.q.Reap(ctx)
		require.NoError(t, err)

		require.NoError(t, s.adm.Resume(ctx))
		paused, err = s.adm.Paused(ctx)
		require.NoError(t, err)
		require.False(t, paused)
		require.Equal(t, []string{"a", "b", "r2"}, ids(s.lease(t, 3)))
	})
}

func TestPauseKeepsFirstTimeAndPromotes(t *testing.T) {
	t.Parallel()
	s := newMini(t, nil)
	ctx := context.Background()
	s.noop(t)
	require.NoError(t, s.q.Enqueue(ctx, &TaskSpec{TaskID: "later", Executable: Ref("m", "f", nil), ProcessIn: time.Minute}))
	require.NoError(t, s.adm.Pause(ctx))
	first, err := s.adm.Stats(ctx)
	require.NoError(t, err)
	require.True(t, first.Paused)
	require.False(t, first.PausedAt.IsZero())

	s.advance(2 * time.Minute)
	require.NoError(t, s.adm.Pause(ctx), "pausing twice is harmless")
	again, err := s.adm.Stats(ctx)
	require.NoError(t, err)
	require.Equal(t, first.PausedAt, again.PausedAt, "the first pause's time is kept")

	ds, err := s.q.Dequeue(ctx, DequeueOptions{Max: 1})
	require.NoError(t, err)
	require.Empty(t, ds)
	require.Equal(t, Counts{Pending: 1}, s.counts(t), "due tasks are still promoted while paused")

	require.NoError(t, s.adm.Resume(ctx))
	require.NoError(t, s.adm.Resume(ctx), "resuming a running queue is harmless")
	o, err := s.adm.Stats(ctx)
	require.NoError(t, err)
	require.False(t, o.Paused)
	require.True(t, o.PausedAt.IsZero())
	require.Equal(t, []string{"later"}, ids(s.lease(t, 1)))
}

func TestResumeWakesBlockedDequeue(t *testing.T) {
	t.Parallel()
	backends(t, nil, func(t *testing.T, s *setup) {
		ctx := context.Background()
		s.noop(t)
		require.NoError(t, s.adm.Pause(ctx))
		s.enqueue(t, "held")
		got := s.dequeueAsync("c1")
		waitForBlocked(t, s)
		select {
		case r := <-got:
			t.Fatalf("Dequeue returned while paused: %v %v", ids(r.ds), r.err)
		case <-time.After(100 * time.Millisecond): // a window in which a paused pickup would wrongly return
		}
		require.NoError(t, s.adm.Resume(ctx))
		r := <-got
		require.NoError(t, r.err)
		require.Equal(t, []string{"held"}, ids(r.ds))
		require.Zero(t, s.q.blockTimeouts.Load(), "woken by Resume, not by the end of the wait")
		require.NoError(t, s.q.Ack(ctx, r.ds...))
	})
}

func TestPausedWorkerRunsNothingUntilResume(t *testing.T) {
	t.Parallel()
	backends(t, nil, func(t *testing.T, s *setup) {
		ctx := context.Background()
		var ran atomic.Int32
		require.NoError(t, Register(s.ref, "m", "count", func(context.Context, addArgs) error { ran.Add(1); return nil }))
		require.NoError(t, s.adm.Pause(ctx))
		// The queue counts the waits that end by their timeout (BlockTimeout, 5s): only Resume's wake-up may start the
		// work.
		startWorker(t, s.q, quietWorker(WorkerConfig{Concurrency: 4}, nil))
		specs := make([]*TaskSpec, 5)
		for i := range specs {
			specs[i] = NewTaskSpec(fmt.Sprint("w", i), Ref("m", "count", nil))
		}
		require.NoError(t, s.q.EnqueueBatch(ctx, specs))
		require.Never(t, func() bool { return ran.Load() > 0 }, 300*time.Millisecond, 10*time.Millisecond,
			"a paused queue's worker runs nothing")
		require.Equal(t, Counts{Pending: 5}, s.counts(t))

		timeouts := s.q.blockTimeouts.Load()
		require.NoError(t, s.adm.Resume(ctx))
		waitFor(t, 10*time.Second, "5 tasks", func() bool { return ran.Load() == 5 })
		require.Equal(t, timeouts, s.q.blockTimeouts.Load(), "Resume's wake-up, not the end of a wait, restarted the pickup")
	})
}

func TestList(t *testing.T) {
	t.Parallel()
	backends(t, nil, func(t *testing.T, s *setup) {
		ctx := context.Background()
		s.noop(t)
		now, err := s.adm.ServerTime(ctx)
		require.NoError(t, err)
		s.enqueue(t, "a1", "x1")
		ds := s.lease(t, 2)
		require.NoError(t, s.q.DeadLetter(ctx, ds[1], errors.New("broken input")))
		s.enqueue(t, "p1", "p2", "p3")
		for i, id := range []string{"s2", "s1"} {
			require.NoError(t, s.q.Enqueue(ctx, &TaskSpec{TaskID: id, Executable: Ref("m", "f", nil), ProcessIn: time.Duration(2-i) * time.Hour}))
		}

		pending, err := s.adm.List(ctx, StatePending, 0, 10)
		require.NoError(t, err)
		require.Len(t, pending, 3)
		for i, ti := range pending {
			require.Equal(t, fmt.Sprint("p", i+1), ti.TaskID)
			require.Equal(t, StatePending, ti.State)
			require.True(t, ti.Score.IsZero())
			require.Contains(t, ti.Record, `"task_id":"`+ti.TaskID+`"`)
			require.NotContains(t, ti.Envelope, `"task_id"`, "stored under its id, the envelope leaves it out")
		}
		page, err := s.adm.List(ctx, StatePending, 1, 1)
		require.NoError(t, err)
		require.Equal(t, "p2", page[0].TaskID)
		page, err = s.adm.List(ctx, StatePending, 3, 10)
		require.NoError(t, err)
		require.Empty(t, page)

		sched, err := s.adm.List(ctx, StateScheduled, 0, 10)
		require.NoError(t, err)
		require.Equal(t, []string{"s1", "s2"}, infoIDs(sched), "earliest due first")
		require.WithinDuration(t, now.Add(time.Hour), sched[0].Score, 10*time.Second)

		active, err := s.adm.List(ctx, StateActive, 0, 10)
		require.NoError(t, err)
		require.Equal(t, []string{"a1"}, infoIDs(active))
		require.WithinDuration(t, now.Add(s.q.LeaseDuration()), active[0].Score, 10*time.Second)

		dead, err := s.adm.List(ctx, StateDead, 0, 10)
		require.NoError(t, err)
		require.Len(t, dead, 1)
		require.Equal(t, "x1", dead[0].TaskID)
		require.Equal(t, "broken input", dead[0].Reason)
		require.WithinDuration(t, now, dead[0].Score, 10*time.Second)
		require.Contains(t, dead[0].Envelope, `"status":"dead"`)

		_, err = s.adm.List(ctx, "done", 0, 10)
		require.ErrorIs(t, err, ErrInvalidState)
		var se *StateError
		require.ErrorAs(t, err, &se)
		require.Equal(t, "list", se.Op)
		for _, bad := range [][2]int{{-1, 1}, {0, 0}, {0, MaxListLimit + 1}} {
			_, err = s.adm.List(ctx, StatePending, bad[0], bad[1])
			require.ErrorIs(t, err, ErrInvalidConfig, bad)
		}
	})
}

func infoIDs(ts []TaskInfo) []string {
	out := make([]string, len(ts))
	for i, ti := range ts {
		out[i] = ti.TaskID
	}
	return out
}

func TestParseState(t *testing.T) {
	t.Parallel()
	for _, st := range allStates {
		got, err := ParseState(string(st))
		require.NoError(t, err)
		require.Equal(t, st, got)
	}
	require.Len(t, allStates, 5, "pending, scheduled, retry, active, dead")
	got, err := ParseState("ready")
	require.NoError(t, err)
	require.Equal(t, StatePending, got, "the seed's name of pending")
	_, err = ParseState("Pending")
	require.ErrorIs(t, err, ErrInvalidState)
	_, err = ParseState(strings.Repeat("x", 10000))
	require.ErrorIs(t, err, ErrInvalidState)
	require.Less(t, len(err.Error()), 300, "the message does not echo unbounded input")
}

func TestInspect(t *testing.T) {
	t.Parallel()
	backends(t, nil, func(t *testing.T, s *setup) {
		ctx := context.Background()
		s.noop(t)
		s.enqueue(t, "a1", "x1")
		ds := s.lease(t, 2)
		require.NoError(t, s.q.DeadLetter(ctx, ds[1], errors.New("why")))
		s.enqueue(t, "p1")
		require.NoError(t, s.q.Enqueue(ctx, &TaskSpec{TaskID: "s1", Executable: Ref("m", "f", nil), ProcessIn: time.Hour}))

		for id, want := range map[string]State{"a1": StateActive, "x1": StateDead, "p1": StatePending, "s1": StateScheduled} {
			ti, err := s.adm.Inspect(ctx, id)
			require.NoError(t, err, id)
			require.Equal(t, want, ti.State, id)
			require.Contains(t, ti.Record, `"task_id":"`+id+`"`)
			require.Equal(t, want == StatePending, ti.Score.IsZero(), id)
			require.Equal(t, want == StateDead, ti.Reason == "why", id)
		}
		_, err := s.adm.Inspect(ctx, "missing")
		require.ErrorIs(t, err, ErrNotFound)
	})
}

func TestPurge(t *testing.T) {
	t.Parallel()
	backends(t, nil, func(t *testing.T, s *setup) {
		ctx := context.Background()
		s.noop(t)
		s.enqueue(t, "active")
		active := s.lease(t, 1)
		s.kill(t, func(string) string { return "dead" }, "d1", "d2", "d3")
		s.enqueue(t, "p1", "p2", "p3", "p4", "lost")
		// As reap.lua records a lost delivery of a task it puts back.
		require.NoError(t, s.rdb.HSet(ctx, s.q.keys.key(keyDeliveries), "lost", 1).Err())
		for _, id := range []string{"s1", "s2"} {
			require.NoError(t, s.q.Enqueue(ctx, &TaskSpec{TaskID: id, Executable: Ref("m", "f", nil), ProcessIn: time.Hour}))
		}
		require.Equal(t, Counts{Pending: 5, Active: 1, Scheduled: 2, Dead: 3}, s.counts(t))

		var steps []Progress
		n, err := s.adm.Purge(ctx, StatePending, WithBatchSize(2), WithProgress(func(p Progress) { steps = append(steps, p) }))
		require.NoError(t, err)
		require.Equal(t, 5, n)
		require.Equal(t, []Progress{{Done: 2, Scanned: 2, Total: 5}, {Done: 4, Scanned: 4, Total: 5}, {Done: 5, Scanned: 5, Total: 5}}, steps)
		_, err = s.adm.Inspect(ctx, "p1")
		require.ErrorIs(t, err, ErrNotFound, "envelopes leave with their ids")
		require.Zero(t, s.rdb.HLen(ctx, s.q.keys.key(keyDeliveries)).Val(), "delivery counts too")

		n, err = s.adm.Purge(ctx, StateScheduled)
		require.NoError(t, err)
		require.Equal(t, 2, n)
		n, err = s.adm.Purge(ctx, StateDead, WithBatchSize(1))
		require.NoError(t, err)
		require.Equal(t, 3, n)
		require.Zero(t, s.rdb.HLen(ctx, s.q.keys.key(keyErrors)).Val(), "reasons leave with dead letters")
		require.Equal(t, redis.Nil, s.rdb.ZScore(ctx, s.q.keys.key(keySettled), "d1").Err(), "settled entries too")
		n, err = s.adm.Purge(ctx, StateDead)
		require.NoError(t, err)
		require.Zero(t, n, "nothing left")

		_, err = s.adm.Purge(ctx, StateActive)
		require.ErrorIs(t, err, ErrInvalidState)
		var se *StateError
		require.ErrorAs(t, err, &se)
		require.Equal(t, StateActive, se.State)
		_, err = s.adm.Purge(ctx, "everything")
		require.ErrorIs(t, err, ErrInvalidState)
		_, err = s.adm.Purge(ctx, StatePending, WithBatchSize(MaxListLimit+1))
		require.ErrorIs(t, err, ErrInvalidConfig)
		require.Equal(t, Counts{Active: 1}, s.counts(t), "the active task is untouched")
		require.NoError(t, s.q.Ack(ctx, active...))

		// Purged ids can be enqueued again.
		s.enqueue(t, "d1", "p1")
		require.Equal(t, Counts{Pending: 2}, s.counts(t))
	})
}

func TestRequeueAndDeleteAllDead(t *testing.T) {
	t.Parallel()
	backends(t, nil, func(t *testing.T, s *setup) {
		ctx := context.Background()
		s.noop(t)
		s.kill(t, func(id string) string {
			if id[1]%2 == 0 {
				return "flaky upstream: 503"
			}
			return "bad input"
		}, "d0", "d1", "d2", "d3", "d4", "d5", "d6")
		var last Progress
		calls := 0
		n, err := s.adm.RequeueAllDead(ctx, func(dl TaskInfo) bool { return strings.Contains(dl.Reason, "flaky") },
			WithBatchSize(2), WithProgress(func(p Progress) { last = p; calls++ }))
		require.NoError(t, err)
		require.Equal(t, 4, n)
		require.Equal(t, Progress{Done: 4, Scanned: 7, Total: 7}, last)
		require.Equal(t, 4, calls, "one report per page of 2")
		require.Equal(t, Counts{Pending: 4, Dead: 3}, s.counts(t))
		got := s.lease(t, 4)
		require.Equal(t, []string{"d0", "d2", "d4", "d6"}, ids(got))
		require.Equal(t, 0, got[0].Spec.Attempt)
		require.NoError(t, s.q.Ack(ctx, got...))

		n, err = s.adm.DeleteAllDead(ctx, nil)
		require.NoError(t, err)
		require.Equal(t, 3, n)
		require.Equal(t, Counts{}, s.counts(t))
		_, err = s.adm.Inspect(ctx, "d1")
		require.ErrorIs(t, err, ErrNotFound)

		n, err = s.adm.RequeueAllDead(ctx, nil)
		require.NoError(t, err)
		require.Zero(t, n)
		_, err = s.adm.DeleteAllDead(ctx, nil, WithBatchSize(0))
		require.ErrorIs(t, err, ErrInvalidConfig)
	})
}

func TestOldestPendingAge(t *testing.T) {
	t.Parallel()
	backends(t, nil, func(t *testing.T, s *setup) {
		ctx := context.Background()
		s.noop(t)
		age, err := s.adm.OldestPendingAge(ctx)
		require.NoError(t, err)
		require.Zero(t, age, "nothing pending")

		now, err := s.adm.ServerTime(ctx)
		require.NoError(t, err)
		require.NoError(t, s.q.Enqueue(ctx, &TaskSpec{TaskID: "later", Executable: Ref("m", "f", nil), ProcessIn: time.Hour, CreatedAt: now.Add(-time.Hour)}))
		require.NoError(t, s.q.Enqueue(ctx, &TaskSpec{TaskID: "old", Executable: Ref("m", "f", nil), CreatedAt: now.Add(-90 * time.Second)}))
		require.NoError(t, s.q.Enqueue(ctx, &TaskSpec{TaskID: "new", Executable: Ref("m", "f", nil), CreatedAt: now}))
		age, err = s.adm.OldestPendingAge(ctx)
		require.NoError(t, err)
		require.GreaterOrEqual(t, age, 90*time.Second)
		require.Less(t, age, 100*time.Second, "the head of pending, not the older scheduled task")
		o, err := s.adm.Stats(ctx)
		require.NoError(t, err)
		require.GreaterOrEqual(t, o.OldestPendingAge, age, "read later: as old or older")
		require.Less(t, o.OldestPendingAge, 100*time.Second, "the head of pending")

		require.NoError(t, s.q.Enqueue(ctx, &TaskSpec{TaskID: "future", Executable: Ref("m", "f", nil), CreatedAt: now.Add(time.Hour)}))
		s.lease(t, 2)
		age, err = s.adm.OldestPendingAge(ctx)
		require.NoError(t, err)
		require.Zero(t, age, "a producer clock ahead of the server counts as 0")

		s.lease(t, 1)
		s.writeRaw(t, "junk", "not json")
		_, err = s.adm.OldestPendingAge(ctx)
		require.ErrorIs(t, err, ErrMalformedEnvelope)
		o, err = s.adm.Stats(ctx)
		require.NoError(t, err, "the overview does not fail for one unreadable envelope")
		require.Zero(t, o.OldestPendingAge)
	})
}

func TestOverview(t *testing.T) {
	t.Parallel()
	backends(t, nil, func(t *testing.T, s *setup) {
		ctx := context.Background()
		s.noop(t)
		o, err := s.adm.Stats(ctx)
		require.NoError(t, err)
		require.Equal(t, Counts{}, o.Counts)
		require.False(t, o.Paused)
		require.Zero(t, o.Delivered)
		require.False(t, o.ServerTime.IsZero())

		s.kill(t, func(string) string { return "x" }, "d1")
		s.enqueue(t, "a1", "a2", "p1")
		s.lease(t, 2)
		require.NoError(t, s.adm.Pause(ctx))
		o, err = s.adm.Stats(ctx)
		require.NoError(t, err)
		require.Equal(t, Counts{Pending: 1, Active: 2, Dead: 1}, o.Counts)
		require.True(t, o.Paused)
		require.WithinDuration(t, o.ServerTime, o.PausedAt, 10*time.Second)
		require.Equal(t, int64(3), o.Delivered, "three leases handed out")
	})
}
