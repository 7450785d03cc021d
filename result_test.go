package taskqueue

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

func TestResultRoundTrip(t *testing.T) {
	t.Parallel()
	backends(t, &RedisConfig{MaxResultBytes: 64, ResultTTL: time.Hour}, func(t *testing.T, s *setup) {
		ctx := context.Background()
		type out struct {
			Sum  int64  `json:"sum"`
			Note string `json:"note"`
		}
		require.NoError(t, RegisterResult(s.ref, "math", "sum", func(_ context.Context, a addArgs) (out, error) {
			return out{Sum: a.A + a.B, Note: "<ok>"}, nil
		}))
		require.NoError(t, Register(s.ref, "math", "big", func(ctx context.Context, _ addArgs) error {
			_ = SetResult(ctx, string(make([]byte, 100))) // the handler ignores the error: the task fails anyway
			return nil
		}))
		rec := &recorder{}
		startWorker(t, s.q, quietWorker(WorkerConfig{Concurrency: 2}, rec))
		require.NoError(t, s.q.Enqueue(ctx, &TaskSpec{TaskID: "sum-1", Executable: Ref("math", "sum", addArgs{A: 1 << 60, B: 7})}))
		require.NoError(t, s.q.Enqueue(ctx, &TaskSpec{TaskID: "big-1", Executable: Ref("math", "big", addArgs{})}))
		var raw json.RawMessage
		waitFor(t, 10*time.Second, "the result", func() bool {
			var err error
			raw, err = s.q.Result(ctx, "sum-1")
			return err == nil
		})
		require.Equal(t, `{"sum":1152921504606846983,"note":"<ok>"}`, string(raw))
		d, err := s.rdb.PTTL(ctx, s.q.keys.result("sum-1")).Result()
		require.NoError(t, err)
		require.InDelta(t, time.Hour.Seconds(), d.Seconds(), 5)

		waitFor(t, 10*time.Second, "the big one dead-lettered", func() bool { return s.counts(t).Dead == 1 })
		dl, err := deadLetterOf(ctx, s.q, "big-1")
		require.NoError(t, err)
		require.Contains(t, dl.Reason, ErrResultTooLarge.Error())
		require.Contains(t, dl.Reason, "limit 64")
		require.Equal(t, 1, rec.count(EventStarted)-1, "no retry of a result that is too large")
		_, err = s.q.Result(ctx, "big-1")
		require.ErrorIs(t, err, ErrNoResult, "nothing truncated is stored")
		_, err = s.q.Result(ctx, "never")
		require.ErrorIs(t, err, ErrNoResult)
		require.ErrorIs(t, SetResult(ctx, 1), ErrResultNotStored)
	})
}

func TestSetResultErrors(t *testing.T) {
	t.Parallel()
	s := newMini(t, &RedisConfig{MaxResultBytes: 8})
	ctx, slot := withResultSlot(context.Background(), s.q)
	require.NotNil(t, slot)
	require.NoError(t, SetResult(ctx, "short"))
	require.Equal(t, `"short"`, string(slot.data))
	err := SetResult(ctx, make(chan int))
	require.ErrorIs(t, err, ErrNotSerializable)
	require.ErrorIs(t, err, ErrSkipRetry, "a result that cannot be stored is not retried")
	err = SetResult(ctx, "far too long")
	var re *ResultError
	require.ErrorAs(t, err, &re)
	require.ErrorIs(t, err, ErrResultTooLarge)
	require.Equal(t, "14 bytes, limit 8", re.Detail)
	require.Equal(t, err, slot.err, "the run fails even if the handler drops the error")

	// Outside a worker's run nothing is stored: SetResult says so, RegisterResult's functions still succeed.
	require.ErrorIs(t, SetResult(context.Background(), 1), ErrResultNotStored)
	ref := NewReferenceResolver()
	require.NoError(t, RegisterResult(ref, "m", "f", func(context.Context, struct{}) (int, error) { return 1, nil }))
	exe, err := ref.Call("m", "f", struct{}{})
	require.NoError(t, err)
	require.NoError(t, exe.Run(context.Background()))
}

// resultQueue is what the result tests need of a queue: the worker's contract and the producer's read.
type resultQueue interface {
	TaskQueue
	Result(ctx context.Context, taskID string) (json.RawMessage, error)
}

// registerResultTasks registers m.sum (RegisterResult), m.set (SetResult, its error returned) and m.big (a result
// of 100 bytes) on ref.
func registerResultTasks(t *testing.T, ref *ReferenceResolver) {
	t.Helper()
	type out struct {
		Sum int64 `json:"sum"`
	}
	require.NoError(t, RegisterResult(ref, "m", "sum", func(_ context.Context, a addArgs) (out, error) {
		return out{Sum: a.A + a.B}, nil
	}))
	require.NoError(t, Register(ref, "m", "set", func(ctx context.Context, a addArgs) error {
		return SetResult(ctx, []int64{a.A, a.B})
	}))
	require.NoError(t, Register(ref, "m", "big", func(ctx context.Context, _ addArgs) error {
		_ = SetResult(ctx, string(make([]byte, 100)))
		return nil
	}))
}

// checkResultsThroughWorker runs tasks of registerResultTasks under a worker on q (whose result limit is 64
// bytes) and checks what q.Result reads back. ids are the ids of the sum and set tasks.
func checkResultsThroughWorker(t *testing.T, q resultQueue, exe func(name string, a addArgs) Executable, ids []string) {
	t.Helper()
	ctx := context.Background()
	rec := &recorder{}
	startWorker(t, q, quietWorker(WorkerConfig{Concurrency: 4, ReapInterval: -1}, rec))
	for i, id := range ids {
		name := []string{"sum", "set"}[i%2]
		require.NoError(t, q.Enqueue(ctx, NewTaskSpec(id, exe(name, addArgs{A: int64(i), B: 1 << 60}))))
	}
	require.NoError(t, q.Enqueue(ctx, NewTaskSpec("big-1", exe("big", addArgs{}))))
	waitFor(t, 10*time.Second, "every task's first run settled", func() bool {
		st, err := countsOf(ctx, q)
		return err == nil && st.Pending+st.Active == 0 && rec.count(EventStarted) >= len(ids)+1
	})
	for i, id := range ids {
		raw, err := q.Result(ctx, id)
		require.NoError(t, err, "the result of %s", id)
		want := fmt.Sprintf(`{"sum":%d}`, int64(i)+1<<60)
		if i%2 == 1 {
			want = fmt.Sprintf(`[%d,%d]`, i, int64(1<<60))
		}
		require.Equal(t, want, string(raw))
	}
	require.Equal(t, len(ids), rec.count(EventSucceeded), "SetResult never failed a run")
	st, err := countsOf(ctx, q)
	require.NoError(t, err)
	require.Equal(t, int64(1), st.Dead, "a result over the limit fails its task")
	_, err = q.Result(ctx, "big-1")
	require.ErrorIs(t, err, ErrNoResult, "nothing truncated is stored")
	_, err = q.Result(ctx, "never")
	require.ErrorIs(t, err, ErrNoResult)
	_, err = q.Result(ctx, "bad id")
	require.ErrorIs(t, err, ErrInvalidTaskID)
}

func TestResultsOnShardedQueue(t *testing.T) {
	t.Parallel()
	for _, b := range []struct {
		name string
		addr func(testing.TB) string
	}{{"mini", func(t testing.TB) string { return miniredis.RunT(t).Addr() }}, {"real", realRedis}} {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			rdb := redis.NewClient(&redis.Options{Addr: b.addr(t)})
			t.Cleanup(func() { _ = rdb.Close() })
			reg, ref := testRegistry(t)
			registerResultTasks(t, ref)
			q, err := NewShardedQueue(rdb, "results-"+newID()[:8], 4, reg, quiet(&RedisConfig{MaxResultBytes: 64}))
			require.NoError(t, err)
			var ids []string
			for k := range 4 { // a sum and a set task on every shard
				ids = append(ids, idOnShard(t, q, k, fmt.Sprint("sum", k)), idOnShard(t, q, k, fmt.Sprint("set", k)))
			}
			checkResultsThroughWorker(t, q, func(name string, a addArgs) Executable { return Ref("m", name, a) }, ids)
			for _, id := range ids { // each result lives in its task's shard
				for k, shard := range q.Shards() {
					_, err := shard.Result(context.Background(), id)
					if k == q.ShardOf(id) {
						require.NoError(t, err, "the result of %s in its shard %d", id, k)
					} else {
						require.ErrorIs(t, err, ErrNoResult)
					}
				}
			}
		})
	}
}

func TestResultsOnMemoryQueue(t *testing.T) {
	t.Parallel()
	q := NewMemoryQueue(time.Second, 0)
	defer q.Close()
	ref := NewReferenceResolver()
	registerResultTasks(t, ref)
	q.maxResult = 64
	exe := func(name string, a addArgs) Executable {
		e, err := ref.Call("m", name, a)
		require.NoError(t, err)
		return e
	}
	checkResultsThroughWorker(t, q, exe, []string{"sum-1", "set-1", "sum-2", "set-2"})
}

func TestMemoryQueueResultsAreBounded(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	q := NewMemoryQueue(time.Second, 0)
	defer q.Close()
	now := time.Now()
	for i := range memResultWindow + 2 {
		q.mu.Lock()
		q.keepResult(fmt.Sprint("r", i), []byte("1"), now)
		q.mu.Unlock()
	}
	_, err := q.Result(ctx, "r0")
	require.ErrorIs(t, err, ErrNoResult, "the oldest result makes room")
	_, err = q.Result(ctx, "r1")
	require.ErrorIs(t, err, ErrNoResult)
	raw, err := q.Result(ctx, fmt.Sprint("r", memResultWindow+1))
	require.NoError(t, err)
	require.Equal(t, "1", string(raw))

	q.mu.Lock()
	q.keepResult("old", []byte("2"), now.Add(-memResultTTL))
	q.mu.Unlock()
	_, err = q.Result(ctx, "old")
	require.ErrorIs(t, err, ErrNoResult, "an expired result is gone")
}
