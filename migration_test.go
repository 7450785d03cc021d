package taskqueue

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// oldLayoutLease leases the head of pending as the previous layout's dequeue.lua did: a member per task in active
// (scored by its lease deadline), the task's fencing token in the lease hash, seq and epoch advanced. It returns
// the token.
func oldLayoutLease(t *testing.T, s *setup, id string, deadline time.Time) int64 {
	t.Helper()
	ctx := context.Background()
	k := s.q.keys
	got, err := s.rdb.LPop(ctx, k.key(keyPending)).Result()
	require.NoError(t, err)
	require.Equal(t, id, got)
	epoch := deadline.UnixMilli() * 256
	require.NoError(t, s.rdb.SetNX(ctx, k.key(keyEpoch), epoch, 0).Err())
	seq, err := s.rdb.IncrBy(ctx, k.key(keySeq), 1).Result()
	require.NoError(t, err)
	epoch, err = s.rdb.Get(ctx, k.key(keyEpoch)).Int64()
	require.NoError(t, err)
	token := epoch + seq
	require.NoError(t, s.rdb.ZAdd(ctx, k.key(keyActive), redisZ(float64(deadline.UnixMilli()), id)).Err())
	require.NoError(t, s.rdb.HSet(ctx, k.key(keyLease), id, strconv.FormatInt(token, 10)).Err())
	return token
}

// TestUpgradeFromPreviousLayout builds a queue as the previous layout's scripts left it, with a delivery in flight
// whose worker is gone (its lease expired), one whose worker is still running with the old code (its lease
// renewed by it, modelled by a deadline far ahead), and the previous settled window, and shows that the new code
// finishes them: the expired delivery comes back by its lease (the new reaper reaps old-format leases) and runs to
// completion; the other is counted as active until its own old worker settles it (as the old ack.lua did); the
// previous window's acks become tombstones, so that their replays are still told apart. docs/migration.md.
func TestUpgradeFromPreviousLayout(t *testing.T) {
	t.Parallel()
	backends(t, &RedisConfig{Lease: time.Second}, func(t *testing.T, s *setup) {
		ctx := context.Background()
		k := s.q.keys
		var ran atomic.Int32
		require.NoError(t, Register(s.ref, "m", "f", func(context.Context, addArgs) error { ran.Add(1); return nil }))
		require.NoError(t, s.q.EnqueueBatch(ctx, []*TaskSpec{NewTaskSpec("crashed", Ref("m", "f", nil)),
			NewTaskSpec("running", Ref("m", "f", nil)), NewTaskSpec("after", Ref("m", "f", nil))}))
		now, err := s.adm.ServerTime(ctx)
		require.NoError(t, err)
		oldLayoutLease(t, s, "crashed", now.Add(-time.Second)) // its worker died: the lease expired
		tok := oldLayoutLease(t, s, "running", now.Add(time.Hour))
		// The previous settled window: one id acked (outcome 0), one retried (outcome 1).
		require.NoError(t, s.rdb.ZAdd(ctx, k.key(keySettled), redisZ(float64((tok-10)*4), "done-before"),
			redisZ(float64((tok-9)*4+1), "retried-before")).Err())

		require.Equal(t, Counts{Pending: 1, Active: 2}, s.counts(t), "old-format deliveries count as active")
		info, err := s.adm.Inspect(ctx, "running")
		require.NoError(t, err)
		require.Equal(t, StateActive, info.State)
		list, err := s.adm.List(ctx, StateActive, 0, 10)
		require.NoError(t, err)
		require.Equal(t, []string{"crashed", "running"}, taskIDs(list))

		// The new reaper takes the expired old-format lease back, and converts the previous window.
		res, err := s.q.Reap(ctx)
		require.NoError(t, err)
		require.Equal(t, 1, res.Requeued)
		require.Equal(t, Counts{Pending: 2, Active: 1}, s.counts(t))
		require.Zero(t, s.rdb.Exists(ctx, k.key(keySettled)).Val(), "the previous window converted")
		again := NewTaskSpec("done-before", Ref("m", "f", nil))
		require.NoError(t, s.q.Enqueue(ctx, again))
		require.Equal(t, AlreadyCompleted, again.Enqueued, "an ack of the previous window is still a completion")

		// The new code runs what came back and what was pending, in order: the crashed task first, alone (a
		// suspect: its lost old-format delivery is counted).
		ds, err := s.q.Dequeue(ctx, DequeueOptions{Max: 10})
		require.NoError(t, err)
		require.Equal(t, []string{"crashed"}, ids(ds))
		require.Equal(t, 2, ds[0].Deliveries)
		ds = append(ds, s.lease(t, 1)...)
		require.Equal(t, "after", ds[1].Spec.TaskID)
		require.NoError(t, s.q.Ack(ctx, ds...))

		// The old worker still running settles its delivery with the old ack (as the previous ack.lua did).
		require.Equal(t, strconv.FormatInt(tok, 10), s.rdb.HGet(ctx, k.key(keyLease), "running").Val())
		require.NoError(t, s.rdb.HDel(ctx, k.key(keyLease), "running").Err())
		require.NoError(t, s.rdb.ZRem(ctx, k.key(keyActive), "running").Err())
		require.NoError(t, s.rdb.HDel(ctx, k.key(keyTasks), "running").Err())
		require.Equal(t, Counts{}, s.counts(t))
		for _, key := range []int{keyActive, keyLease, keyBatches, keyLeases} {
			require.Zero(t, s.rdb.Exists(ctx, k.key(key)).Val(), "%s is empty", k.key(key))
		}
		_, err = s.adm.Inspect(ctx, "crashed")
		require.ErrorIs(t, err, ErrNotFound, "a tombstone reads as absent")
	})
}

// TestUpgradeOldLeaseRunsUnderNewWorker: a delivery leased by the previous layout whose worker was killed comes
// back under a worker of the new code, by its lease, and completes; nothing is left of the old format.
func TestUpgradeOldLeaseRunsUnderNewWorker(t *testing.T) {
	t.Parallel()
	s := newReal(t, &RedisConfig{Lease: time.Second})
	ctx := context.Background()
	var ran atomic.Int32
	require.NoError(t, Register(s.ref, "m", "f", func(context.Context, addArgs) error { ran.Add(1); return nil }))
	require.NoError(t, s.q.Enqueue(ctx, NewTaskSpec("inflight", Ref("m", "f", nil))))
	now, err := s.adm.ServerTime(ctx)
	require.NoError(t, err)
	oldLayoutLease(t, s, "inflight", now.Add(200*time.Millisecond))
	rec := &recorder{}
	w := startWorker(t, s.q, quietWorker(WorkerConfig{Concurrency: 2, ReapInterval: 50 * time.Millisecond}, rec))
	waitFor(t, 10*time.Second, "the old-format delivery reaped and run", func() bool {
		return rec.count(EventSucceeded) == 1 && s.counts(t) == Counts{}
	})
	require.NoError(t, stopWorker(t, w, 5*time.Second))
	require.Equal(t, int32(1), ran.Load())
	require.Zero(t, s.rdb.Exists(ctx, s.q.keys.key(keyActive), s.q.keys.key(keyLease)).Val())
	tomb, err := s.rdb.HGet(ctx, s.q.keys.key(keyTasks), "inflight").Result()
	require.NoError(t, err)
	require.True(t, isTombstone(tomb))
}

func redisZ(score float64, member string) redis.Z { return redis.Z{Score: score, Member: member} }

func taskIDs(infos []TaskInfo) []string {
	out := make([]string, len(infos))
	for i, in := range infos {
		out[i] = in.TaskID
	}
	return out
}
