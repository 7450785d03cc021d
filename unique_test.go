package taskqueue

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// uniqueSpec is a spec of test.noop with a unique key.
func uniqueSpec(key string, u Unique) *TaskSpec {
	u.Key = key
	if u.TTL == 0 {
		u.TTL = time.Hour
	}
	return &TaskSpec{Executable: Ref("test", "noop", map[string]any{}), Unique: &u}
}

// uniqueBackends runs fn on miniredis and on the real redis-server, each a fresh queue.
func uniqueBackends(t *testing.T, fn func(t *testing.T, s *setup)) {
	t.Helper()
	t.Run("mini", func(t *testing.T) { t.Parallel(); fn(t, newMini(t, nil)) })
	t.Run("real", func(t *testing.T) { t.Parallel(); fn(t, newReal(t, nil)) })
}

// enqueueHeld enqueues a duplicate of key and returns the holder the error names (or "" when it was stored).
func enqueueHeld(t *testing.T, s *setup, key string, u Unique) string {
	t.Helper()
	spec := uniqueSpec(key, u)
	err := s.q.Enqueue(context.Background(), spec)
	if err == nil {
		require.Equal(t, Stored, spec.Enqueued)
		return ""
	}
	require.ErrorIs(t, err, ErrUniqueKeyHeld)
	var de *DuplicateError
	require.ErrorAs(t, err, &de)
	require.Equal(t, key, de.Key)
	return de.TaskID
}

func pickOne(t *testing.T, s *setup) *Delivery {
	t.Helper()
	ds, err := s.q.Dequeue(context.Background(), DequeueOptions{Max: 1})
	require.NoError(t, err)
	require.Len(t, ds, 1)
	return ds[0]
}

func TestUniqueDuplicateNamesHolder(t *testing.T) {
	t.Parallel()
	uniqueBackends(t, func(t *testing.T, s *setup) {
		ctx := context.Background()
		a := uniqueSpec("report:42", Unique{})
		require.NoError(t, s.q.Enqueue(ctx, a))
		require.Equal(t, Stored, a.Enqueued)
		b := uniqueSpec("report:42", Unique{})
		err := s.q.Enqueue(ctx, b)
		require.ErrorIs(t, err, ErrUniqueKeyHeld)
		var de *DuplicateError
		require.ErrorAs(t, err, &de)
		require.Equal(t, a.TaskID, de.TaskID)
		require.Equal(t, NotEnqueued, b.Enqueued)
		_, err = s.adm.Inspect(ctx, b.TaskID)
		require.ErrorIs(t, err, ErrNotFound, "nothing stored for the duplicate")

		// A resend of the holder itself is the idempotent enqueue, not a duplicate.
		require.NoError(t, s.q.Enqueue(ctx, a))
		require.Equal(t, Duplicate, a.Enqueued)

		// Dropped by option: no error, a result saying so.
		c := uniqueSpec("report:42", Unique{DropDuplicate: true})
		require.NoError(t, s.q.Enqueue(ctx, c))
		require.Equal(t, Dropped, c.Enqueued)

		// In one batch: the first of a key is stored, the rest refused; other keys unaffected.
		specs := []*TaskSpec{uniqueSpec("k1", Unique{}), uniqueSpec("k1", Unique{}), uniqueSpec("k2", Unique{}), {Executable: Ref("test", "noop", map[string]any{})}}
		err = s.q.EnqueueBatch(ctx, specs)
		require.ErrorIs(t, err, ErrUniqueKeyHeld)
		require.Equal(t, []EnqueueOutcome{Stored, NotEnqueued, Stored, Stored}, outcomes(specs))
		st, err := s.adm.Stats(ctx)
		require.NoError(t, err)
		require.EqualValues(t, 4, st.Pending)
	})
}

func outcomes(specs []*TaskSpec) []EnqueueOutcome {
	out := make([]EnqueueOutcome, len(specs))
	for i, s := range specs {
		out[i] = s.Enqueued
	}
	return out
}

// TestUniqueUntilDoneReleasedOnEveryExit covers asynq #629 (a lock released only on success): with the default
// lifetime the key is held through a retry and freed by success and by a dead letter alike.
func TestUniqueUntilDoneReleasedOnEveryExit(t *testing.T) {
	t.Parallel()
	uniqueBackends(t, func(t *testing.T, s *setup) {
		ctx := context.Background()
		a := uniqueSpec("k", Unique{})
		require.NoError(t, s.q.Enqueue(ctx, a))
		d := pickOne(t, s)
		require.Equal(t, a.TaskID, enqueueHeld(t, s, "k", Unique{}), "held while running")
		require.NoError(t, s.q.Retry(ctx, d, 0, errors.New("boom")))
		require.Equal(t, a.TaskID, enqueueHeld(t, s, "k", Unique{}), "held through a retry")
		d = pickOne(t, s)
		require.NoError(t, s.q.Ack(ctx, d))
		requireNoRecord(t, s, "k")
		b := uniqueSpec("k", Unique{})
		require.NoError(t, s.q.Enqueue(ctx, b), "free after success")

		d = pickOne(t, s)
		require.NoError(t, s.q.DeadLetter(ctx, d, errors.New("fatal")))
		requireNoRecord(t, s, "k")
		require.Empty(t, enqueueHeld(t, s, "k", Unique{}), "free after a dead letter (asynq #629)")
	})
}

func requireNoRecord(t *testing.T, s *setup, key string) {
	t.Helper()
	l, err := s.q.Lock(context.Background(), key)
	require.NoError(t, err)
	require.Nil(t, l, "the lock record of %s is deleted", key)
}

// TestUniqueUntilSuccessHoldsDeadLetter: a dead letter keeps the key until it is deleted (or the TTL passes); the
// dead letter's task id does not block anything else (asynq #1055: only the lock's key is held, never the id).
func TestUniqueUntilSuccessHoldsDeadLetter(t *testing.T) {
	t.Parallel()
	uniqueBackends(t, func(t *testing.T, s *setup) {
		ctx := context.Background()
		u := Unique{Lifetime: UniqueUntilSuccess}
		a := uniqueSpec("k", u)
		require.NoError(t, s.q.Enqueue(ctx, a))
		require.NoError(t, s.q.DeadLetter(ctx, pickOne(t, s), errors.New("fatal")))
		require.Equal(t, a.TaskID, enqueueHeld(t, s, "k", u), "held by the dead letter")
		require.Empty(t, enqueueHeld(t, s, "other", u), "another key is free while the dead letter exists")
		n, err := s.adm.DeleteDead(ctx, a.TaskID)
		require.NoError(t, err)
		require.Equal(t, 1, n)
		require.Empty(t, enqueueHeld(t, s, "k", u), "free once the dead letter is deleted")
	})
}

func TestUniqueUntilStart(t *testing.T) {
	t.Parallel()
	uniqueBackends(t, func(t *testing.T, s *setup) {
		ctx := context.Background()
		u := Unique{Lifetime: UniqueUntilStart}
		a := uniqueSpec("k", u)
		require.NoError(t, s.q.Enqueue(ctx, a))
		require.Equal(t, a.TaskID, enqueueHeld(t, s, "k", u), "held while pending")
		d := pickOne(t, s)
		requireNoRecord(t, s, "k")
		require.Empty(t, enqueueHeld(t, s, "k", u), "free once started")
		require.NoError(t, s.q.Ack(ctx, d))
	})
}

func TestUniqueThrottleHoldsForTTL(t *testing.T) {
	t.Parallel()
	s := newMini(t, nil)
	ctx := context.Background()
	u := Unique{Mode: UniqueThrottle, TTL: time.Minute}
	a := uniqueSpec("k", u)
	require.NoError(t, s.q.Enqueue(ctx, a))
	require.NoError(t, s.q.Ack(ctx, pickOne(t, s)))
	require.Equal(t, a.TaskID, enqueueHeld(t, s, "k", u), "throttled after success")
	s.mr.SetTime(time.Now().Add(2 * time.Minute))
	require.Empty(t, enqueueHeld(t, s, "k", u), "free once the period passed")
}

func TestUniqueTTLBoundsTheLock(t *testing.T) {
	t.Parallel()
	s := newMini(t, nil)
	ctx := context.Background()
	u := Unique{TTL: time.Minute}
	a := uniqueSpec("k", u)
	require.NoError(t, s.q.Enqueue(ctx, a))
	require.Equal(t, a.TaskID, enqueueHeld(t, s, "k", u))
	s.mr.SetTime(time.Now().Add(2 * time.Minute))
	require.Empty(t, enqueueHeld(t, s, "k", u), "free after the TTL although the task is still pending")
}

func TestUniqueDebounce(t *testing.T) {
	t.Parallel()
	s := newMini(t, nil)
	ctx := context.Background()
	u := Unique{Mode: UniqueDebounce, TTL: time.Minute}
	type args struct {
		N int `json:"n"`
	}
	require.NoError(t, Register(s.ref, "test", "num", func(context.Context, args) error { return nil }))
	spec := func(n int) *TaskSpec {
		sp := uniqueSpec("search", u)
		sp.Executable = Ref("test", "num", args{n})
		return sp
	}
	a := spec(1)
	require.NoError(t, s.q.Enqueue(ctx, a))
	require.Equal(t, Stored, a.Enqueued)
	info, err := s.adm.Inspect(ctx, a.TaskID)
	require.NoError(t, err)
	require.Equal(t, StateScheduled, info.State)
	first := info.Score

	s.mr.SetTime(time.Now().Add(30 * time.Second))
	b := spec(2)
	require.NoError(t, s.q.Enqueue(ctx, b))
	require.Equal(t, Debounced, b.Enqueued)
	require.Equal(t, a.TaskID, b.TaskID, "the waiting task's id is written back")
	info, err = s.adm.Inspect(ctx, a.TaskID)
	require.NoError(t, err)
	require.Contains(t, info.Envelope, `"n":2`, "the payload was replaced")
	require.True(t, info.Score.After(first), "the due time was pushed: %s then %s", first, info.Score)
	st, err := s.adm.Stats(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 1, st.Scheduled)

	// Once due, it runs with the last payload, and the next enqueue starts a new task.
	s.mr.SetTime(time.Now().Add(2 * time.Minute))
	d := pickOne(t, s)
	require.Equal(t, a.TaskID, d.Spec.TaskID)
	require.Contains(t, string(d.Spec.SerializedTask.Payload), `"n":2`)
	c := spec(3)
	require.NoError(t, s.q.Enqueue(ctx, c))
	require.Equal(t, Stored, c.Enqueued)
	require.NotEqual(t, a.TaskID, c.TaskID)
}

func TestUniqueDerivedKey(t *testing.T) {
	t.Parallel()
	s := newMini(t, nil)
	ctx := context.Background()
	spec := func(user, page int) *TaskSpec {
		return &TaskSpec{
			Executable: Ref("test", "noop", map[string]any{"user": user, "page": page}),
			Unique:     &Unique{ArgFields: []string{"user"}, TTL: time.Hour},
		}
	}
	require.NoError(t, s.q.Enqueue(ctx, spec(1, 1)))
	err := s.q.Enqueue(ctx, spec(1, 2))
	require.ErrorIs(t, err, ErrUniqueKeyHeld, "page is not part of the key")
	var de *DuplicateError
	require.ErrorAs(t, err, &de)
	require.True(t, strings.HasPrefix(de.Key, "ref:test.noop:"), de.Key)
	require.NoError(t, s.q.Enqueue(ctx, spec(2, 1)), "another user is another key")

	// All the arguments, when no field is chosen; key order does not matter.
	all := func(args string) *TaskSpec {
		st := &SerializedTask{Strategy: StrategyReference, Payload: []byte(`{"module":"test","name":"noop","args":` + args + `}`)}
		return &TaskSpec{SerializedTask: st, Unique: &Unique{TTL: time.Hour}}
	}
	require.NoError(t, s.q.Enqueue(ctx, all(`{"a":1,"b":[1,2]}`)))
	require.ErrorIs(t, s.q.Enqueue(ctx, all(`{"b":[1,2], "a":1}`)), ErrUniqueKeyHeld)
	require.NoError(t, s.q.Enqueue(ctx, all(`{"a":1,"b":[2,1]}`)))
}

func TestUniqueBadInput(t *testing.T) {
	t.Parallel()
	s := newMini(t, nil)
	ctx := context.Background()
	cases := map[string]Unique{
		"Key":       {Key: strings.Repeat("k", MaxUniqueKeyLen+1), TTL: time.Hour},
		"TTL":       {Key: "k", TTL: 0},
		"Lifetime":  {Key: "k", TTL: time.Hour, Lifetime: 9},
		"Mode":      {Key: "k", TTL: time.Hour, Mode: 7},
		"ArgFields": {TTL: time.Hour, ArgFields: []string{""}},
	}
	cases["TTL "] = Unique{Key: "k", TTL: MaxUniqueTTL + time.Second}
	cases["TTL  "] = Unique{Key: "k", TTL: -time.Second}
	for name, u := range cases {
		spec := &TaskSpec{Executable: Ref("test", "noop", map[string]any{}), Unique: &u}
		err := s.q.Enqueue(ctx, spec)
		require.ErrorIs(t, err, ErrInvalidUnique, name)
		var ue *UniqueError
		require.ErrorAs(t, err, &ue, name)
		require.Equal(t, strings.TrimSpace(name), ue.Field)
		require.Contains(t, err.Error(), ue.Field)
	}
	st, err := s.adm.Stats(ctx)
	require.NoError(t, err)
	require.Zero(t, st.Pending)
	require.False(t, s.mr.Exists("{test}:unique"), "nothing stored")

	mq := NewMemoryQueue(time.Minute, 3)
	t.Cleanup(mq.Close)
	err = mq.Enqueue(ctx, &TaskSpec{Executable: Func(func(context.Context) error { return nil }), Unique: &Unique{Key: "k", TTL: time.Hour}})
	require.ErrorIs(t, err, ErrInvalidUnique)
}

// TestUniqueLockOfLostTaskIsFree covers BullMQ #4311 (a dedup key stranded after an outage): a record whose task
// no longer exists, however it went (here deleted by hand, as a restart without persistence or a failover that
// lost a write would), does not block the key, and a sweep deletes it.
func TestUniqueLockOfLostTaskIsFree(t *testing.T) {
	t.Parallel()
	uniqueBackends(t, func(t *testing.T, s *setup) {
		ctx := context.Background()
		a := uniqueSpec("k", Unique{})
		require.NoError(t, s.q.Enqueue(ctx, a))
		require.NoError(t, s.rdb.HDel(ctx, s.q.keys.key(keyTasks), a.TaskID).Err())
		l, err := s.adm.Lock(ctx, "k")
		require.NoError(t, err)
		require.NotNil(t, l)
		require.False(t, l.Held)
		n, err := s.adm.SweepLocks(ctx)
		require.NoError(t, err)
		require.Equal(t, 1, n)
		requireNoRecord(t, s, "k")
		require.Empty(t, enqueueHeld(t, s, "k", Unique{}))
	})
}

func TestUniquePurgeFreesTheKey(t *testing.T) {
	t.Parallel()
	uniqueBackends(t, func(t *testing.T, s *setup) {
		ctx := context.Background()
		a := uniqueSpec("k", Unique{})
		require.NoError(t, s.q.Enqueue(ctx, a))
		_, err := s.adm.Purge(ctx, StatePending)
		require.NoError(t, err)
		require.Empty(t, enqueueHeld(t, s, "k", Unique{}))
	})
}

// TestUniqueHeldThroughLostLease: a worker that dies running the task leaves its lock held (the task is still in
// the queue, and comes back); the lock goes when that task is dead-lettered for crashing its workers.
func TestUniqueHeldThroughLostLease(t *testing.T) {
	t.Parallel()
	s := newMini(t, &RedisConfig{Lease: 100 * time.Millisecond, MaxDeliveries: 2})
	ctx := context.Background()
	a := uniqueSpec("k", Unique{})
	require.NoError(t, s.q.Enqueue(ctx, a))
	for i := range 2 {
		pickOne(t, s)
		s.mr.SetTime(time.Now().Add(time.Duration(i+1) * time.Minute))
		_, err := s.q.Reap(ctx)
		require.NoError(t, err)
		if i == 0 {
			require.Equal(t, a.TaskID, enqueueHeld(t, s, "k", Unique{}), "held through a lost lease")
		}
	}
	_, err := deadLetterOf(ctx, s.q, a.TaskID)
	require.NoError(t, err)
	require.Empty(t, enqueueHeld(t, s, "k", Unique{}), "free once dead for crashing its workers (no lingering lock)")
}

func TestUniqueAdmin(t *testing.T) {
	t.Parallel()
	s := newMini(t, nil)
	ctx := context.Background()
	a := uniqueSpec("k", Unique{Lifetime: UniqueUntilSuccess})
	require.NoError(t, s.q.Enqueue(ctx, a))
	require.NoError(t, s.q.Enqueue(ctx, uniqueSpec("other", Unique{})))
	locks, err := s.adm.Locks(ctx, 10)
	require.NoError(t, err)
	require.Len(t, locks, 2)
	l, err := s.adm.TaskLock(ctx, a.TaskID)
	require.NoError(t, err)
	require.Equal(t, LockInfo{Key: "k", TaskID: a.TaskID, Lifetime: "until-success", ExpiresAt: l.ExpiresAt, Held: true}, *l)
	ok, err := s.adm.ReleaseLock(ctx, "k")
	require.NoError(t, err)
	require.True(t, ok)
	require.Empty(t, enqueueHeld(t, s, "k", Unique{}), "released by hand")
	require.NoError(t, s.q.releaseTaskLocks(ctx, map[string]string{}))
}

// TestUniqueSharded: every task of a key lands on the key's shard, so one lock sees them all.
func TestUniqueSharded(t *testing.T) {
	t.Parallel()
	s := newMini(t, nil)
	reg, _ := testRegistry(t)
	sq, err := NewShardedQueue(s.rdb, "sh", 4, reg, quiet(nil))
	require.NoError(t, err)
	ctx := context.Background()
	for i := range 8 {
		spec := uniqueSpec("k", Unique{DropDuplicate: true})
		require.NoError(t, sq.Enqueue(ctx, spec))
		if i == 0 {
			require.Equal(t, Stored, spec.Enqueued)
		} else {
			require.Equal(t, Dropped, spec.Enqueued)
		}
	}
	err = sq.Enqueue(ctx, &TaskSpec{Executable: Ref("test", "noop", map[string]any{}), Unique: &Unique{TTL: time.Hour}})
	require.ErrorIs(t, err, ErrInvalidUnique)
}
