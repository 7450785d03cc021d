package taskqueue

import (
	"context"
	"testing"
	"time"

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
	_, err = q.Peek(ctx, "d1")
	require.NoError(t, err, "the task is enqueued on the primary")

	err = q.EnqueueBatch(ctx, []*TaskSpec{
		NewTaskSpec("d1", Ref("d", "work", addArgs{A: 1})), NewTaskSpec("d2", Ref("d", "work", addArgs{A: 2})),
	})
	require.ErrorIs(t, err, ErrNotReplicated)
	st, err := q.Stats(ctx)
	require.NoError(t, err)
	require.Equal(t, Stats{Pending: 2}, st, "the retried enqueue is idempotent")

	// Without DurableReplicas the same server acknowledges at once.
	fast, err := NewRedisTaskQueue(rdb, "durable", reg, quiet(nil))
	require.NoError(t, err)
	require.NoError(t, fast.Enqueue(ctx, NewTaskSpec("d3", Ref("d", "work", addArgs{A: 3}))))
}
