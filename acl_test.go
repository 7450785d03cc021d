package taskqueue

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// workerACL is the allowlist docs/operations.md gives producers and workers: these commands, on the queue's keys
// (~{prefix}:*) and pub/sub channels (&{prefix}:*, the schedulers' wake-up channel).
const workerACL = "+ping +hello +auth +evalsha +eval +blpop +rpush +pexpire +multi +exec +del +time " +
	"+llen +zcard +hget +hmget +zrange +zscore +hdel +hexists +hset +incrby +lpop +lpush +ltrim +zadd " +
	"+zrangebyscore +zrem +zremrangebyrank +exists +set +get +info +hsetnx +zmscore +lindex +publish +subscribe +hscan " +
	"+zrangebylex +hincrby +zremrangebyscore +expire"

// workerACLUser creates a Redis user on addr holding the worker allowlist (workerACL) on prefix's keys and
// channels, deleted when the test ends, and returns an admin client, a client logged in as the user, and its name.
func workerACLUser(t *testing.T, addr, prefix string) (admin, rdb *redis.Client, user string) {
	t.Helper()
	admin = redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = admin.Close() })
	user = "tq-" + prefix
	args := []any{"ACL", "SETUSER", user, "reset", "on", ">secret", "~{" + prefix + "}:*", "&{" + prefix + "}:*"}
	for _, c := range strings.Fields(workerACL) {
		args = append(args, c)
	}
	require.NoError(t, admin.Do(context.Background(), args...).Err())
	t.Cleanup(func() { admin.Do(context.Background(), "ACL", "DELUSER", user) })
	rdb = redis.NewClient(&redis.Options{Addr: addr, Username: user, Password: "secret"})
	t.Cleanup(func() { _ = rdb.Close() })
	return admin, rdb, user
}

func TestACLAllowlistForWorkers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	prefix := "acl-" + newID()[:8]
	_, rdb, _ := workerACLUser(t, realRedis(t), prefix)
	reg, ref := testRegistry(t)
	q, err := NewRedisTaskQueue(rdb, prefix, reg, quiet(&RedisConfig{Lease: time.Second}))
	require.NoError(t, err)
	var ran atomic.Int32
	require.NoError(t, Register(ref, "m", "ok", func(context.Context, addArgs) error { ran.Add(1); return nil }))
	require.NoError(t, Register(ref, "m", "bad", func(context.Context, addArgs) error { return errors.New("no") }))
	require.NoError(t, q.EnqueueBatch(ctx, []*TaskSpec{
		NewTaskSpec("ok1", Ref("m", "ok", nil)),
		{TaskID: "later", Executable: Ref("m", "ok", nil), ProcessIn: 50 * time.Millisecond},
		{TaskID: "bad", Executable: Ref("m", "bad", nil), MaxRetries: 1},
		{TaskID: "keyed", Executable: Ref("m", "ok", nil), FlowKey: "tenant"}, // flow.go: the pickup of keys
	}))
	rec := &recorder{}
	w := startWorker(t, q, quietWorker(WorkerConfig{Concurrency: 2, ReapInterval: 20 * time.Millisecond}, rec))
	waitFor(t, 10*time.Second, "the lifecycle", func() bool {
		st, err := countsOf(ctx, q)
		return err == nil && ran.Load() == 3 && st == Counts{Dead: 1}
	})
	require.Zero(t, rec.count(EventQueueError), "no call of the worker was refused")
	n, err := mustAdmin(q).RequeueDead(ctx, "bad")
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.NoError(t, stopWorker(t, w, time.Second))

	report, err := mustAdmin(q).Check(ctx)
	require.NoError(t, err, "the allowlist covers the start-up check")
	require.NotEmpty(t, report.Version)

	// Everything outside the allowlist is refused, with an error that says so.
	other, err := NewRedisTaskQueue(rdb, "other-"+prefix, reg, quiet(nil))
	require.NoError(t, err)
	_, err = countsOf(ctx, other)
	require.ErrorIs(t, err, ErrPermission, "another tenant's prefix")
	require.ErrorIs(t, other.Enqueue(ctx, NewTaskSpec("x", Ref("m", "ok", nil))), ErrPermission)
	for name, err := range map[string]error{
		"another prefix": rdb.HGet(ctx, "{other}:tasks", "x").Err(),
		"SCRIPT FLUSH":   rdb.ScriptFlush(ctx).Err(),
		"FUNCTION FLUSH": rdb.FunctionFlush(ctx).Err(),
		"CONFIG":         rdb.ConfigGet(ctx, "maxmemory").Err(),
		"SCAN":           rdb.Scan(ctx, 0, "*", 10).Err(),
		"CLIENT KILL":    rdb.ClientKillByFilter(ctx, "TYPE", "pubsub").Err(),
	} {
		require.Error(t, err, name)
		require.Contains(t, err.Error(), "NOPERM", name)
	}
}
