package taskqueue

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestNewAdmin(t *testing.T) {
	t.Parallel()
	for name, q := range map[string]AdminTarget{"nil": nil, "nil queue": (*RedisTaskQueue)(nil), "nil sharded": (*ShardedQueue)(nil)} {
		_, err := NewAdmin(q)
		require.ErrorIs(t, err, ErrInvalidConfig, name)
	}
	s := newMini(t, nil)
	require.Equal(t, "test", s.adm.KeyPrefix())
	sq, _, _ := newSharded(t, 3)
	require.Equal(t, "sq", mustAdmin(sq).KeyPrefix(), "without the shard suffix")
	require.Equal(t, "sq.1", mustAdmin(sq.Shards()[1]).KeyPrefix(), "an Admin of one shard")
}

// A task waiting to be retried waits with the scheduled ones and is reported as retry; list and purge take it
// under scheduled.
func TestAdminRetryState(t *testing.T) {
	t.Parallel()
	backends(t, nil, func(t *testing.T, s *setup) {
		ctx := context.Background()
		s.noop(t)
		s.enqueue(t, "r1")
		require.NoError(t, s.q.Enqueue(ctx, &TaskSpec{TaskID: "s1", Executable: Ref("m", "f", nil), ProcessIn: 2 * time.Hour}))
		require.NoError(t, s.q.Retry(ctx, s.lease(t, 1)[0], time.Hour, errors.New("again")))

		info, err := s.adm.Inspect(ctx, "r1")
		require.NoError(t, err)
		require.Equal(t, StateRetry, info.State)
		require.False(t, info.Score.IsZero(), "its due time")
		require.Contains(t, info.Envelope, `"status":"retry"`)
		sched, err := s.adm.List(ctx, StateScheduled, 0, 10)
		require.NoError(t, err)
		require.Equal(t, []string{"r1", "s1"}, infoIDs(sched))
		require.Equal(t, []State{StateRetry, StateScheduled}, []State{sched[0].State, sched[1].State})
		require.Equal(t, Counts{Scheduled: 2}, s.counts(t))

		for _, err := range []error{
			func() error { _, err := s.adm.List(ctx, StateRetry, 0, 10); return err }(),
			func() error { _, err := s.adm.Purge(ctx, StateRetry); return err }(),
		} {
			require.ErrorIs(t, err, ErrInvalidState)
			require.ErrorContains(t, err, "scheduled")
		}
		n, err := s.adm.Purge(ctx, StateScheduled)
		require.NoError(t, err)
		require.Equal(t, 2, n, "retry and scheduled tasks together")
	})
}

// An Admin of a sharded queue adds the shards' counts up, lists them in one documented order with working pages,
// finds each task in its shard, and acts on every shard.
func TestAdminShardedQueue(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	q, mr, _ := newSharded(t, 3)
	adm := mustAdmin(q)
	base := time.Now().Truncate(time.Second)
	mr.SetTime(base)
	on := func(k int, name string) string { return idOnShard(t, q, k, name) }
	enqueue := func(id string, in time.Duration) {
		t.Helper()
		s := shardTask(id, 0)
		s.ProcessIn = in
		require.NoError(t, q.Enqueue(ctx, s))
	}

	// Pending: shard after shard, each in pickup order.
	a0, a1, c0, c1, c2 := on(0, "a0"), on(0, "a1"), on(2, "c0"), on(2, "c1"), on(2, "c2")
	for _, id := range []string{c0, a0, c1, a1, c2} {
		enqueue(id, 0)
	}
	for _, page := range []struct {
		offset, limit int
		want          []string
	}{
		{0, 10, []string{a0, a1, c0, c1, c2}},
		{1, 2, []string{a1, c0}},
		{2, 1, []string{c0}},
		{3, 10, []string{c1, c2}},
		{5, 1, []string{}},
	} {
		got, err := adm.List(ctx, StatePending, page.offset, page.limit)
		require.NoError(t, err)
		require.Equal(t, page.want, infoIDs(got), "pending from %d, %d", page.offset, page.limit)
	}

	// Scheduled: by due time across the shards.
	x, y, z, w := on(2, "x"), on(0, "y"), on(1, "z"), on(2, "w")
	for i, id := range []string{x, y, z, w} {
		enqueue(id, time.Duration(i+1)*time.Hour)
	}
	for _, page := range []struct {
		offset, limit int
		want          []string
	}{
		{0, 10, []string{x, y, z, w}},
		{1, 2, []string{y, z}},
		{3, 5, []string{w}},
		{4, 5, []string{}},
	} {
		got, err := adm.List(ctx, StateScheduled, page.offset, page.limit)
		require.NoError(t, err)
		require.Equal(t, page.want, infoIDs(got), "scheduled from %d, %d", page.offset, page.limit)
	}
	sched, err := adm.List(ctx, StateScheduled, 0, 1)
	require.NoError(t, err)
	require.Equal(t, base.Add(time.Hour), sched[0].Score)
	require.Contains(t, sched[0].Record, `"task_id":"`+x+`"`)

	// Lookups go to the task's shard.
	for id, want := range map[string]State{a0: StatePending, c2: StatePending, z: StateScheduled} {
		info, err := adm.Inspect(ctx, id)
		require.NoError(t, err, id)
		require.Equal(t, want, info.State, id)
	}
	_, err = adm.Inspect(ctx, "missing")
	require.ErrorIs(t, err, ErrNotFound)

	// Dead letters on two shards, a second apart: listed by the time they died.
	ds, err := q.Dequeue(ctx, DequeueOptions{Max: 10})
	require.NoError(t, err)
	require.Len(t, ds, 5)
	byID := map[string]*Delivery{}
	for _, d := range ds {
		byID[d.Spec.TaskID] = d
	}
	for i, id := range []string{c1, a0, c0} {
		mr.SetTime(base.Add(time.Duration(i+1) * time.Second))
		require.NoError(t, q.DeadLetter(ctx, byID[id], errors.New("gave up "+id)))
	}
	dead, err := adm.List(ctx, StateDead, 0, 10)
	require.NoError(t, err)
	require.Equal(t, []string{c1, a0, c0}, infoIDs(dead))
	require.Equal(t, "gave up "+a0, dead[1].Reason)
	require.Equal(t, base.Add(2*time.Second), dead[1].Score)

	st, err := adm.Stats(ctx)
	require.NoError(t, err)
	require.Equal(t, Counts{Active: 2, Scheduled: 4, Dead: 3}, st.Counts)
	require.Equal(t, int64(5), st.Delivered, "the deliveries of every shard")
	require.False(t, st.Paused)

	// Requeue and delete by id, across shards; ids that are not dead letters are skipped.
	n, err := adm.RequeueDead(ctx, a0, c1, x, "missing")
	require.NoError(t, err)
	require.Equal(t, 2, n)
	pending, err := adm.List(ctx, StatePending, 0, 10)
	require.NoError(t, err)
	require.Equal(t, []string{a0, c1}, infoIDs(pending))
	n, err = adm.DeleteDead(ctx, c0, a0)
	require.NoError(t, err)
	require.Equal(t, 1, n)

	// Bulk calls go shard after shard, with one progress over all of them.
	for _, id := range []string{c1, a0} {
		d, err := q.Dequeue(ctx, DequeueOptions{Max: 1})
		require.NoError(t, err)
		require.Len(t, d, 1)
		require.NoError(t, q.DeadLetter(ctx, d[0], errors.New("again "+id)))
	}
	var steps []Progress
	n, err = adm.RequeueAllDead(ctx, func(ti TaskInfo) bool { return ti.TaskID == c1 || ti.TaskID == a0 },
		WithProgress(func(p Progress) { steps = append(steps, p) }))
	require.NoError(t, err)
	require.Equal(t, 2, n)
	require.Equal(t, Progress{Done: 2, Scanned: 2, Total: 2}, steps[len(steps)-1])
	steps = nil
	n, err = adm.Purge(ctx, StatePending, WithBatchSize(1), WithProgress(func(p Progress) { steps = append(steps, p) }))
	require.NoError(t, err)
	require.Equal(t, 2, n)
	require.Equal(t, []Progress{{Done: 1, Scanned: 1, Total: 2}, {Done: 2, Scanned: 2, Total: 2}}, steps)

	// Pause covers every shard; one paused shard shows as paused.
	require.NoError(t, mustAdmin(q.Shards()[1]).Pause(ctx))
	paused, err := adm.Paused(ctx)
	require.NoError(t, err)
	require.True(t, paused, "one shard paused")
	st, err = adm.Stats(ctx)
	require.NoError(t, err)
	require.True(t, st.Paused)
	require.Equal(t, base.Add(3*time.Second), st.PausedAt)
	require.NoError(t, adm.Resume(ctx))
	paused, err = adm.Paused(ctx)
	require.NoError(t, err)
	require.False(t, paused)

	// The oldest pending age is the largest of the shards'.
	mr.SetTime(base.Add(time.Minute))
	enqueue(on(1, "old"), 0)
	mr.SetTime(base.Add(2 * time.Minute))
	age, err := adm.OldestPendingAge(ctx)
	require.NoError(t, err)
	require.Positive(t, age)
	now, err := adm.ServerTime(ctx)
	require.NoError(t, err)
	require.Equal(t, base.Add(2*time.Minute), now)
	_, err = adm.Check(ctx)
	require.NoError(t, err)
}
