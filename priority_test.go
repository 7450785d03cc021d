package taskqueue

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// prioSpec is a task of the given level running m.f.
func prioSpec(id string, p Priority) *TaskSpec {
	return &TaskSpec{TaskID: id, Executable: Ref("m", "f", nil), Priority: p}
}

func enqueueLevels(t *testing.T, s *setup, specs ...*TaskSpec) {
	t.Helper()
	require.NoError(t, Register(s.ref, "m", "f", func(context.Context, addArgs) error { return nil }))
	require.NoError(t, s.q.EnqueueBatch(context.Background(), specs))
}

func TestPriorityStrictOrderFIFOWithinLevel(t *testing.T) {
	t.Parallel()
	backends(t, nil, func(t *testing.T, s *setup) {
		ctx := context.Background()
		enqueueLevels(t, s, prioSpec("l1", PriorityLow), prioSpec("d1", PriorityDefault), prioSpec("h1", PriorityHigh),
			prioSpec("d2", PriorityDefault), prioSpec("l2", PriorityLow), prioSpec("h2", PriorityHigh))
		require.Equal(t, Counts{Pending: 6}, s.counts(t))
		page, err := s.adm.List(ctx, StatePending, 1, 4)
		require.NoError(t, err)
		require.Equal(t, []string{"h2", "d1", "d2", "l1"}, infoIDs(page), "listed in pickup order")

		ds := s.lease(t, 3)
		require.Equal(t, []string{"h1", "h2", "d1"}, ids(ds))
		require.Equal(t, PriorityHigh, ds[0].Spec.Priority)
		require.Equal(t, PriorityDefault, ds[2].Spec.Priority)
		require.NoError(t, s.q.Ack(ctx, ds...))
		ds = s.lease(t, 3)
		require.Equal(t, []string{"d2", "l1", "l2"}, ids(ds))
		require.Equal(t, PriorityLow, ds[1].Spec.Priority)
		require.NoError(t, s.q.Ack(ctx, ds...))
		require.Equal(t, Counts{}, s.counts(t))
		require.Zero(t, s.rdb.Exists(ctx, s.q.keys.key(keyPendingHigh), s.q.keys.key(keyPendingLow)).Val())
		require.Equal(t, []string{"*"}, s.rdb.HKeys(ctx, s.q.keys.key(keyLevels)).Val(), "only the marker is left")
	})
}

func TestPriorityKeptOnReleaseRetryAndReclaim(t *testing.T) {
	t.Parallel()
	backends(t, &RedisConfig{Lease: 200 * time.Millisecond}, func(t *testing.T, s *setup) {
		ctx := context.Background()
		if s.mr != nil {
			s.mr.SetTime(time.Now())
		}
		enqueueLevels(t, s, prioSpec("d1", PriorityDefault), prioSpec("d2", PriorityDefault),
			prioSpec("d3", PriorityDefault), prioSpec("h", PriorityHigh), prioSpec("l", PriorityLow))

		d := s.lease(t, 1)[0]
		require.Equal(t, "h", d.Spec.TaskID)
		require.NoError(t, s.q.Release(ctx, d))
		d = s.lease(t, 1)[0]
		require.Equal(t, "h", d.Spec.TaskID, "a release goes back to its level")
		require.NoError(t, s.q.Retry(ctx, d, 0, errors.New("again")))
		d = s.lease(t, 1)[0]
		require.Equal(t, "h", d.Spec.TaskID, "an immediate retry goes back to its level")
		require.Equal(t, PriorityHigh, d.Spec.Priority)
		require.NoError(t, s.q.Retry(ctx, d, 300*time.Millisecond, errors.New("later")))
		require.ElementsMatch(t, []string{"*", "h"}, s.rdb.HKeys(ctx, s.q.keys.key(keyLevels)).Val(), "a delayed retry keeps its level")

		d1 := s.lease(t, 1)[0]
		require.Equal(t, "d1", d1.Spec.TaskID)
		require.NoError(t, s.q.Ack(ctx, d1))
		s.advance(400 * time.Millisecond)
		d = s.lease(t, 1)[0]
		require.Equal(t, "h", d.Spec.TaskID, "a due retry comes back ahead of the default level")
		require.Equal(t, []string{"*"}, s.rdb.HKeys(ctx, s.q.keys.key(keyLevels)).Val())

		// h, d2 and l lose their worker (d3 is acked): each is reclaimed to the head of its level.
		ds := s.lease(t, 3)
		require.Equal(t, []string{"d2", "d3", "l"}, ids(ds))
		require.NoError(t, s.q.Ack(ctx, ds[1]))
		s.advance(300 * time.Millisecond)
		res, err := s.q.Reap(ctx)
		require.NoError(t, err)
		require.Equal(t, 3, res.Requeued)
		require.NoError(t, s.q.Enqueue(ctx, prioSpec("d4", PriorityDefault)))
		// Suspects are leased alone, in level order.
		for _, want := range []string{"h", "d2"} {
			ds, err := s.q.Dequeue(ctx, DequeueOptions{Max: 10})
			require.NoError(t, err)
			require.Equal(t, []string{want}, ids(ds))
			require.Equal(t, 2, ds[0].Deliveries)
			require.NoError(t, s.q.Ack(ctx, ds...))
		}
		ds, err = s.q.Dequeue(ctx, DequeueOptions{Max: 10})
		require.NoError(t, err)
		require.Equal(t, []string{"d4"}, ids(ds), "the batch is cut before the suspect of the low level")
		require.NoError(t, s.q.Ack(ctx, ds...))
		ds, err = s.q.Dequeue(ctx, DequeueOptions{Max: 10})
		require.NoError(t, err)
		require.Equal(t, []string{"l"}, ids(ds))
		require.Equal(t, PriorityLow, ds[0].Spec.Priority)
		require.NoError(t, s.q.Ack(ctx, ds...))
		require.Equal(t, Counts{}, s.counts(t))
		require.Zero(t, s.rdb.HLen(ctx, s.q.keys.key(keyBatches)).Val(), "no batch record (nor its levels) is left")
	})
}

func TestPriorityDelayedAndDeadKeepTheirLevel(t *testing.T) {
	t.Parallel()
	backends(t, nil, func(t *testing.T, s *setup) {
		ctx := context.Background()
		if s.mr != nil {
			s.mr.SetTime(time.Now())
		}
		enqueueLevels(t, s, prioSpec("d1", PriorityDefault), prioSpec("d2", PriorityDefault), prioSpec("x", PriorityHigh),
			&TaskSpec{TaskID: "later", Executable: Ref("m", "f", nil), Priority: PriorityHigh, ProcessIn: 200 * time.Millisecond})
		require.Equal(t, Counts{Pending: 3, Scheduled: 1}, s.counts(t))
		d := s.lease(t, 1)[0]
		require.Equal(t, "x", d.Spec.TaskID)
		require.NoError(t, s.q.DeadLetter(ctx, d, errors.New("no")))
		s.advance(300 * time.Millisecond)
		n, err := s.adm.RequeueDead(ctx, "x")
		require.NoError(t, err)
		require.Equal(t, 1, n)
		ds := s.lease(t, 3)
		require.Equal(t, []string{"x", "later", "d1"}, ids(ds), "a requeued dead letter and a delayed task keep their level")
		require.NoError(t, s.q.Ack(ctx, ds...))
		require.Equal(t, []string{"*"}, s.rdb.HKeys(ctx, s.q.keys.key(keyLevels)).Val())

		// A scheduled task purged: its entry in levels goes with it.
		require.NoError(t, s.q.Enqueue(ctx, &TaskSpec{TaskID: "s", Executable: Ref("m", "f", nil), Priority: PriorityLow, ProcessIn: time.Hour}))
		require.Len(t, s.rdb.HKeys(ctx, s.q.keys.key(keyLevels)).Val(), 2)
		_, err = s.adm.Purge(ctx, StateScheduled)
		require.NoError(t, err)
		require.Equal(t, []string{"*"}, s.rdb.HKeys(ctx, s.q.keys.key(keyLevels)).Val())
		// A dead letter deleted: likewise.
		require.NoError(t, s.q.Enqueue(ctx, prioSpec("y", PriorityHigh)))
		d = s.lease(t, 1)[0]
		require.Equal(t, "y", d.Spec.TaskID)
		require.NoError(t, s.q.DeadLetter(ctx, d, errors.New("no")))
		require.Len(t, s.rdb.HKeys(ctx, s.q.keys.key(keyLevels)).Val(), 2)
		n, err = s.adm.DeleteDead(ctx, "y")
		require.NoError(t, err)
		require.Equal(t, 1, n)
		require.Equal(t, []string{"*"}, s.rdb.HKeys(ctx, s.q.keys.key(keyLevels)).Val())
	})
}

func TestPriorityPurgeTakesEveryLevel(t *testing.T) {
	t.Parallel()
	backends(t, nil, func(t *testing.T, s *setup) {
		ctx := context.Background()
		enqueueLevels(t, s, prioSpec("h", PriorityHigh), prioSpec("d", PriorityDefault), prioSpec("l", PriorityLow))
		n, err := s.adm.Purge(ctx, StatePending)
		require.NoError(t, err)
		require.Equal(t, 3, n)
		require.Equal(t, Counts{}, s.counts(t))
		require.Zero(t, s.rdb.HLen(ctx, s.q.keys.key(keyTasks)).Val())
	})
}

func TestPriorityBadInput(t *testing.T) {
	t.Parallel()
	s := newMini(t, nil)
	ctx := context.Background()
	require.NoError(t, Register(s.ref, "m", "f", func(context.Context, addArgs) error { return nil }))
	for _, p := range []Priority{2, -2, 127, -128} {
		err := s.q.Enqueue(ctx, prioSpec("bad", p))
		require.ErrorIs(t, err, ErrInvalidPriority)
		require.ErrorContains(t, err, "TaskSpec.Priority")
	}
	_, err := s.q.DispatchGroup(ctx, "g", []*TaskSpec{prioSpec("", PriorityHigh)}, nil)
	require.ErrorIs(t, err, ErrInvalidPriority)
	require.Empty(t, s.mr.Keys(), "nothing stored")

	for in, want := range map[string]Priority{"high": PriorityHigh, "1": PriorityHigh, "default": PriorityDefault, "low": PriorityLow, "-1": PriorityLow} {
		got, err := ParsePriority(in)
		require.NoError(t, err)
		require.Equal(t, want, got)
		if len(in) > 2 {
			require.Equal(t, in, got.String())
		}
	}
	_, err = ParsePriority("urgent")
	require.ErrorIs(t, err, ErrInvalidPriority)
	require.Equal(t, "5", Priority(5).String())
}

// A queue that never uses a level other than the default never has the keys of the levels.
func TestPriorityUnusedLeavesNoKeys(t *testing.T) {
	t.Parallel()
	s := newMini(t, &RedisConfig{Lease: 100 * time.Millisecond})
	ctx := context.Background()
	enqueueLevels(t, s, prioSpec("a", PriorityDefault), prioSpec("b", PriorityDefault))
	ds := s.lease(t, 2)
	require.NoError(t, s.q.Retry(ctx, ds[0], time.Millisecond, errors.New("x")))
	s.advance(200 * time.Millisecond) // b's lease expires
	_, err := s.q.Reap(ctx)
	require.NoError(t, err)
	for range 2 {
		require.NoError(t, s.q.Ack(ctx, s.lease(t, 1)...))
	}
	n, err := s.adm.RequeueDead(ctx, "a")
	require.NoError(t, err)
	require.Zero(t, n)
	for _, k := range []int{keyLevels, keyPendingHigh, keyPendingLow} {
		require.False(t, s.mr.Exists(s.q.keys.key(k)), k)
	}
}

// A consumer blocked on an empty queue wakes for a task of any level.
func TestPriorityWakesBlockedConsumer(t *testing.T) {
	t.Parallel()
	backends(t, nil, func(t *testing.T, s *setup) {
		ctx := context.Background()
		require.NoError(t, Register(s.ref, "m", "f", func(context.Context, addArgs) error { return nil }))
		for _, p := range []Priority{PriorityLow, PriorityHigh} {
			got := s.dequeueAsync("c")
			waitForBlocked(t, s)
			require.NoError(t, s.q.Enqueue(ctx, prioSpec("t"+p.String(), p)))
			select {
			case r := <-got:
				require.NoError(t, r.err)
				require.Equal(t, []string{"t" + p.String()}, ids(r.ds))
				require.NoError(t, s.q.Ack(ctx, r.ds...))
			case <-time.After(10 * time.Second):
				t.Fatal("the blocked consumer did not wake")
			}
		}
	})
}

// A worker runs every high task before any low one, whatever the order of their enqueue.
func TestPriorityWorkerRunsHighFirst(t *testing.T) {
	t.Parallel()
	backends(t, nil, func(t *testing.T, s *setup) {
		ctx := context.Background()
		var mu sync.Mutex
		var order []string
		require.NoError(t, Register(s.ref, "m", "rec", func(_ context.Context, a struct {
			L string `json:"l"`
		}) error {
			mu.Lock()
			order = append(order, a.L)
			mu.Unlock()
			return nil
		}))
		var specs []*TaskSpec
		for i := range 60 {
			p, l := PriorityLow, "low"
			if i%2 == 1 {
				p, l = PriorityHigh, "high"
			}
			specs = append(specs, &TaskSpec{Executable: Ref("m", "rec", map[string]string{"l": l}), Priority: p})
		}
		require.NoError(t, s.q.EnqueueBatch(ctx, specs))
		startWorker(t, s.q, quietWorker(WorkerConfig{Concurrency: 1, BatchSize: 8}, nil))
		waitFor(t, 20*time.Second, "every task run", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(order) == 60
		})
		for i, l := range order {
			require.Equal(t, map[bool]string{true: "high", false: "low"}[i < 30], l, "task %d", i)
		}
	})
}

func TestPriorityMemoryQueue(t *testing.T) {
	t.Parallel()
	q := NewMemoryQueue(0, 0)
	ctx := context.Background()
	noop := Func(func(context.Context) error { return nil })
	for _, s := range []struct {
		id string
		p  Priority
	}{{"l1", PriorityLow}, {"d1", PriorityDefault}, {"h1", PriorityHigh}, {"d2", PriorityDefault}, {"h2", PriorityHigh}} {
		require.NoError(t, q.Enqueue(ctx, &TaskSpec{TaskID: s.id, Executable: noop, Priority: s.p}))
	}
	ds, err := q.Dequeue(ctx, DequeueOptions{Max: 2})
	require.NoError(t, err)
	require.Equal(t, []string{"h1", "h2"}, ids(ds))
	require.NoError(t, q.Release(ctx, ds[1]))
	require.NoError(t, q.Retry(ctx, ds[0], 0, errors.New("x")))
	ds, err = q.Dequeue(ctx, DequeueOptions{Max: 10})
	require.NoError(t, err)
	require.Equal(t, []string{"h2", "h1", "d1", "d2", "l1"}, ids(ds))
	require.ErrorIs(t, q.Enqueue(ctx, &TaskSpec{Executable: noop, Priority: 3}), ErrInvalidPriority)
}

// A schedule's task template keeps its level: each tick's task is enqueued at it.
func TestPrioritySchedule(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := schedSetup(t, start)
	ctx := context.Background()
	task := tickTask()
	task.Priority = PriorityHigh
	require.NoError(t, mustSchedules(s.q).Create(ctx, &Schedule{Name: "p", Every: time.Minute, Task: task}))
	info, err := mustSchedules(s.q).Get(ctx, "p")
	require.NoError(t, err)
	require.Equal(t, PriorityHigh, info.Schedule.Task.Priority)
	id, err := mustSchedules(s.q).Trigger(ctx, "p")
	require.NoError(t, err)
	require.Equal(t, []string{id}, s.rdb.LRange(ctx, s.q.keys.key(keyPendingHigh), 0, -1).Val())

	task.Priority = 9
	err = mustSchedules(s.q).Create(ctx, &Schedule{Name: "bad", Every: time.Minute, Task: task})
	require.ErrorIs(t, err, ErrInvalidPriority)
}

// The worker allowlist of docs/operations.md covers a queue that uses every level: enqueue, pickup, a retry with a
// delay, a dead letter and its requeue.
func TestPriorityUnderWorkerACL(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	prefix := "aclp-" + newID()[:8]
	_, rdb, _ := workerACLUser(t, realRedis(t), prefix)
	reg, ref := testRegistry(t)
	q, err := NewRedisTaskQueue(rdb, prefix, reg, quiet(&RedisConfig{Lease: time.Second}))
	require.NoError(t, err)
	var mu sync.Mutex
	runs := map[string]int{}
	require.NoError(t, Register(ref, "m", "flaky", func(_ context.Context, a clArgsP) error {
		mu.Lock()
		defer mu.Unlock()
		runs[a.ID]++
		if a.ID == "bad" || (a.ID == "h" && runs["h"] == 1) {
			return errors.New("no")
		}
		return nil
	}))
	require.NoError(t, q.EnqueueBatch(ctx, []*TaskSpec{
		{TaskID: "h", Executable: Ref("m", "flaky", clArgsP{ID: "h"}), Priority: PriorityHigh},
		{TaskID: "l", Executable: Ref("m", "flaky", clArgsP{ID: "l"}), Priority: PriorityLow, ProcessIn: 20 * time.Millisecond},
		{TaskID: "bad", Executable: Ref("m", "flaky", clArgsP{ID: "bad"}), Priority: PriorityLow, MaxRetries: -1},
	}))
	rec := &recorder{}
	w := startWorker(t, q, quietWorker(WorkerConfig{Concurrency: 2, ReapInterval: 20 * time.Millisecond}, rec))
	waitFor(t, 20*time.Second, "the lifecycle", func() bool {
		st, err := countsOf(ctx, q)
		mu.Lock()
		defer mu.Unlock()
		return err == nil && runs["h"] == 2 && runs["l"] == 1 && st == Counts{Dead: 1}
	})
	require.Zero(t, rec.count(EventQueueError), "no call of the worker was refused")
	n, err := mustAdmin(q).RequeueDead(ctx, "bad")
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.NoError(t, stopWorker(t, w, 5*time.Second))
}

type clArgsP struct {
	ID string `json:"id"`
}
