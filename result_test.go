package taskqueue

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

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

		waitFor(t, 10*time.Second, "the big one dead-lettered", func() bool { return s.stats(t).Dead == 1 })
		dl, err := s.q.GetDeadLetter(ctx, "big-1")
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
