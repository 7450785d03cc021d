package taskqueue

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

func TestDurableEnqueueConfig(t *testing.T) {
	t.Parallel()
	reg, _ := testRegistry(t)
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never dialled
	t.Cleanup(func() { _ = rdb.Close() })
	for _, c := range []RedisConfig{
		{DurableReplicas: -1},
		{DurableReplicas: 1, DurableTimeout: -time.Second},
		{DurableReplicas: 1, DurableTimeout: rdb.Options().ReadTimeout}, // WAIT would outlast the read
	} {
		_, err := NewRedisTaskQueue(rdb, "d", reg, &c)
		require.ErrorIs(t, err, ErrInvalidConfig, "%+v", c)
	}
	q, err := NewRedisTaskQueue(rdb, "d", reg, &RedisConfig{DurableReplicas: 2})
	require.NoError(t, err)
	require.Equal(t, time.Second, q.cfg.DurableTimeout)
	long := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", ReadTimeout: -1})
	t.Cleanup(func() { _ = long.Close() })
	_, err = NewRedisTaskQueue(long, "d", reg, &RedisConfig{DurableReplicas: 1, DurableTimeout: 10 * time.Second})
	require.NoError(t, err, "no read timeout: any wait fits")
}

// On a primary without replicas a durable enqueue cannot be confirmed: it returns a *ReplicationError after the
// timeout, and the task is enqueued all the same. A script cache emptied by a restart or a failover (NOSCRIPT) is
// refilled on the way.
func TestDurableEnqueueNotReplicated(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := ownRedis(t)
	reg, ref := testRegistry(t)
	require.NoError(t, Register(ref, "d", "work", func(context.Context, addArgs) error { return nil }))
	q, err := NewRedisTaskQueue(rdb, "durable", reg, quiet(&RedisConfig{DurableReplicas: 1, DurableTimeout: 100 * time.Millisecond}))
	require.NoError(t, err)

	require.NoError(t, rdb.ScriptFlush(ctx).Err())
	start := time.Now()
	err = q.Enqueue(ctx, NewTaskSpec("d1", Ref("d", "work", addArgs{A: 1})))
	require.ErrorIs(t, err, ErrNotReplicated)
	var re *ReplicationError
	require.ErrorAs(t, err, &re)
	require.Equal(t, ReplicationError{Want: 1, Got: 0, Timeout: 100 * time.Millisecond}, *re)
	require.GreaterOrEqual(t, time.Since(start), 90*time.Millisecond, "WAIT waited")
	_, err = envelopeOf(ctx, q, "d1")
	require.NoError(t, err, "the task is enqueued on the primary")

	err = q.EnqueueBatch(ctx, []*TaskSpec{
		NewTaskSpec("d1", Ref("d", "work", addArgs{A: 1})), NewTaskSpec("d2", Ref("d", "work", addArgs{A: 2})),
	})
	require.ErrorIs(t, err, ErrNotReplicated)
	st, err := countsOf(ctx, q)
	require.NoError(t, err)
	require.Equal(t, Counts{Pending: 2}, st, "the retried enqueue is idempotent")

	// Without DurableReplicas the same server acknowledges at once.
	fast, err := NewRedisTaskQueue(rdb, "durable", reg, quiet(nil))
	require.NoError(t, err)
	require.NoError(t, fast.Enqueue(ctx, NewTaskSpec("d3", Ref("d", "work", addArgs{A: 3}))))
}

// refuseEnqueue is a go-redis hook that has miniredis answer the enqueue script's calls with the error replies in
// errs, one per call, before letting them through; with after set, the call runs first and is then sent again to
// be refused (a refusal that arrives after the script ran, which idempotency makes harmless).
type refuseEnqueue struct {
	mr    *miniredis.Miniredis
	mu    sync.Mutex
	errs  []string
	after bool
	calls int
}

func (h *refuseEnqueue) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *refuseEnqueue) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		return h.refuse([]redis.Cmder{cmd}, func() error { return next(ctx, cmd) })
	}
}

func (h *refuseEnqueue) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		return h.refuse(cmds, func() error { return next(ctx, cmds) })
	}
}

// refuse sends cmds (a call, or a pipeline) through next, refused with the next error of errs when one of them is
// the enqueue script.
func (h *refuseEnqueue) refuse(cmds []redis.Cmder, next func() error) error {
	if !slices.ContainsFunc(cmds, func(cmd redis.Cmder) bool {
		args := cmd.Args()
		return len(args) > 1 && (args[1] == enqueueScript.Hash() || args[1] == enqueueSrc)
	}) {
		return next()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls++
	if len(h.errs) == 0 {
		return next()
	}
	if h.after {
		_ = next()
	}
	h.mr.SetError(h.errs[0])
	defer h.mr.SetError("")
	h.errs = h.errs[1:]
	return next()
}

// An enqueue refused because the queue's Cluster slot is moving (TRYAGAIN, ASK, MOVED, CLUSTERDOWN) is sent again
// until it goes through, within its context; other errors are returned at once.
func TestEnqueueRetriesWhileTheSlotMoves(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newMini(t, nil)
	require.NoError(t, Register(s.ref, "d", "work", func(context.Context, addArgs) error { return nil }))
	task := func(id string) *TaskSpec { return NewTaskSpec(id, Ref("d", "work", addArgs{A: 1})) }
	require.NoError(t, s.q.Enqueue(ctx, task("w")), "loads the script: no NOSCRIPT round trip below")
	h := &refuseEnqueue{mr: s.mr}
	s.rdb.AddHook(h)
	refusals := []string{
		"TRYAGAIN Multiple keys request during rehashing of slot", "ASK 12066 127.0.0.1:7001",
		"MOVED 12066 127.0.0.1:7001", "CLUSTERDOWN The cluster is down",
	}
	set := func(after bool, errs ...string) {
		h.mu.Lock()
		h.errs, h.after, h.calls = errs, after, 0
		h.mu.Unlock()
	}
	calls := func() int {
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.calls
	}

	set(false, refusals...)
	require.NoError(t, s.q.Enqueue(ctx, task("a")))
	require.Equal(t, 5, calls())
	set(true, refusals[0], refusals[1]) // refused after it ran: the retry finds the task there
	require.NoError(t, s.q.EnqueueBatch(ctx, []*TaskSpec{task("b"), task("c")}))
	var batch []*TaskSpec // more than one script call: one pipeline
	for i := range 2*enqueueChunk + 1 {
		batch = append(batch, task(fmt.Sprintf("p%d", i)))
	}
	set(false, refusals[0], refusals[3])
	require.NoError(t, s.q.EnqueueBatch(ctx, batch))
	require.Equal(t, 3, calls())
	st, err := countsOf(ctx, s.q)
	require.NoError(t, err)
	require.Equal(t, Counts{Pending: 4 + 2*enqueueChunk + 1}, st)

	// Refused for longer than the context allows: the last refusal, or the context's error, when the context ends.
	forever := make([]string, 1000)
	for i := range forever {
		forever[i] = refusals[0]
	}
	set(false, forever...)
	// The context ends once the call was refused four times (not after a duration, which a busy machine stretches).
	tctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	go func() {
		for calls() < 4 && tctx.Err() == nil {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	err = s.q.Enqueue(tctx, task("d"))
	require.True(t, redis.IsTryAgainError(err) || errors.Is(err, context.Canceled), "%v", err)
	require.GreaterOrEqual(t, calls(), 4, "sent again until its context ended")

	// Any other error is not retried.
	set(false, "ERR something else")
	require.ErrorContains(t, s.q.Enqueue(ctx, task("e")), "ERR something else")
	require.Equal(t, 1, calls())
}
