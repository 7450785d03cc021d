package taskqueue

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// waitFor waits up to 10s for the log to contain one of subs and returns the log.
func (b *syncBuffer) waitFor(t *testing.T, subs ...string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s := b.String()
		for _, sub := range subs {
			if strings.Contains(s, sub) {
				return s
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("log never contained %q:\n%s", subs, s)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestAdminExists(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, b := range []string{"mini", "real"} {
		t.Run(b, func(t *testing.T) {
			t.Parallel()
			var s *setup
			if b == "mini" {
				s = newMini(t, nil)
			} else {
				s = newReal(t, nil)
			}
			ok, err := s.adm.Exists(ctx)
			require.NoError(t, err)
			require.False(t, ok, "nothing written yet")
			err = s.adm.RequireExists(ctx)
			require.ErrorIs(t, err, ErrQueueNotFound)
			require.Contains(t, err.Error(), fmt.Sprintf("queue %q not found", s.q.prefix))

			// A queue whose every task finished still exists: its seq and epoch keys stay.
			require.NoError(t, s.q.Enqueue(ctx, NewTaskSpec("t1", Ref("test", "noop", nil))))
			ok, err = s.adm.Exists(ctx)
			require.NoError(t, err)
			require.True(t, ok)
			ds, err := s.q.Dequeue(ctx, DequeueOptions{Max: 1})
			require.NoError(t, err)
			require.Len(t, ds, 1)
			require.NoError(t, s.q.Ack(ctx, ds...))
			require.NoError(t, s.adm.RequireExists(ctx), "a drained queue exists")

			// A queue only paused exists (a pause can come before the first producer).
			other, err := NewRedisTaskQueue(s.rdb, s.q.prefix+"-paused", s.reg, quiet(nil))
			require.NoError(t, err)
			oa := mustAdmin(other)
			require.NoError(t, oa.Pause(ctx))
			require.NoError(t, oa.RequireExists(ctx))
		})
	}
}

func TestAdminFindQueues(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newMini(t, nil)
	require.NoError(t, s.q.Enqueue(ctx, NewTaskSpec("t1", Ref("test", "noop", nil))))
	sq, err := NewShardedQueue(s.rdb, "orders", 2, s.reg, quiet(nil))
	require.NoError(t, err)
	require.NoError(t, mustAdmin(sq).Pause(ctx))
	// Keys of other applications, hash-tagged or not, are not queues.
	require.NoError(t, s.rdb.Set(ctx, "{user42}:session", "x", 0).Err())
	require.NoError(t, s.rdb.Set(ctx, "plain", "x", 0).Err())
	require.NoError(t, s.rdb.Set(ctx, "{bad prefix}:seq", "1", 0).Err())

	missing, err := NewRedisTaskQueue(s.rdb, "tset", s.reg, quiet(nil))
	require.NoError(t, err)
	a := mustAdmin(missing)
	found, err := a.FindQueues(ctx, 10)
	require.NoError(t, err)
	require.Equal(t, []string{"orders.0", "orders.1", "test"}, found)
	found, err = a.FindQueues(ctx, 1)
	require.NoError(t, err)
	require.Len(t, found, 1, "at most limit")

	err = a.RequireExists(ctx)
	var nf *QueueNotFoundError
	require.ErrorAs(t, err, &nf)
	require.Equal(t, "tset", nf.Prefix)
	require.Equal(t, []string{"orders.0", "orders.1", "test"}, nf.Found)
	require.Contains(t, err.Error(), "queues found in this database: orders.0, orders.1, test")

	// A sharded queue exists when any shard does.
	require.NoError(t, s.rdb.Del(ctx, "{orders.0}:paused").Err())
	ok, err := mustAdmin(sq).Exists(ctx)
	require.NoError(t, err)
	require.True(t, ok)
	require.NoError(t, s.rdb.Del(ctx, "{orders.1}:paused").Err())
	require.ErrorIs(t, mustAdmin(sq).RequireExists(ctx), ErrQueueNotFound)
}

// TestWorkerWarnsOnMissingQueue: a worker started on a queue with no key logs a warning naming the prefix, the
// server and the database, and the queues that do exist; it still starts. On a queue with keys it does not warn.
func TestWorkerWarnsOnMissingQueue(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newMini(t, nil)
	require.NoError(t, s.q.Enqueue(ctx, NewTaskSpec("t1", Ref("test", "noop", nil))))

	start := func(q TaskQueue) (*TaskWorker, *syncBuffer) {
		var logs syncBuffer
		w, err := NewTaskWorker(q, &WorkerConfig{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})), Name: "probe"})
		require.NoError(t, err)
		require.NoError(t, w.Start(ctx))
		t.Cleanup(func() { _ = w.Stop(ctx) })
		return w, &logs
	}
	typo, err := NewRedisTaskQueue(s.rdb, "tset", s.reg, quiet(nil))
	require.NoError(t, err)
	_, logs := start(typo)
	out := logs.waitFor(t, "has no keys", "queue has keys")
	require.Contains(t, out, "level=WARN")
	require.Contains(t, out, fmt.Sprintf(`queue \"tset\" has no keys on %s db 0: wrong prefix or DB?`, s.mr.Addr()))
	require.Contains(t, out, "queues_found=test")

	_, logs = start(s.q)
	out = logs.waitFor(t, "has no keys", "queue has keys")
	require.NotContains(t, out, "has no keys")
	require.NotContains(t, out, "level=WARN")
}

// TestWorkerRefusesEmptyRegistry: a worker of a queue in Redis whose registry can resolve no task does not start,
// and RunWorkerMain refuses the same registries with the same check.
func TestWorkerRefusesEmptyRegistry(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	emptyRef := NewResolverRegistry()
	require.NoError(t, emptyRef.Register(DefaultResolverID, NewReferenceResolver()))

	for name, reg := range map[string]*ResolverRegistry{"no resolver": NewResolverRegistry(), "reference resolver without a function": emptyRef} {
		t.Run(name, func(t *testing.T) {
			for _, q := range []func() (TaskQueue, error){
				func() (TaskQueue, error) { return NewRedisTaskQueue(rdb, "refuse", reg, quiet(nil)) },
				func() (TaskQueue, error) { return NewShardedQueue(rdb, "refuse-sharded", 2, reg, quiet(nil)) },
			} {
				q, err := q()
				require.NoError(t, err)
				w, err := NewTaskWorker(q, &WorkerConfig{Logger: slog.New(slog.DiscardHandler)})
				require.NoError(t, err)
				err = w.Start(ctx)
				require.ErrorIs(t, err, ErrInvalidConfig)
				require.ErrorIs(t, err, ErrNoResolvers)
				require.ErrorIs(t, w.Stop(ctx), ErrClosed, "it never started")
			}
			c, err := ParseWorkerMainConfig(nil, nil)
			require.NoError(t, err)
			c.Logger = slog.New(slog.DiscardHandler)
			require.ErrorIs(t, c.RunWithClient(ctx, rdb, reg), ErrNoResolvers)
		})
	}

	// A custom resolver beside an empty reference resolver is enough; a memory queue needs no registry.
	custom := NewResolverRegistry()
	require.NoError(t, custom.Register(DefaultResolverID, NewReferenceResolver()))
	require.NoError(t, custom.Register("custom", &ReferenceResolver{}))
	ref := NewReferenceResolver()
	require.NoError(t, Register(ref, "m", "f", func(context.Context, struct{}) error { return nil }))
	require.NoError(t, custom.Register("withfunc", ref))
	for _, q := range []func() (TaskQueue, error){
		func() (TaskQueue, error) { return NewRedisTaskQueue(rdb, "accept", custom, quiet(nil)) },
		func() (TaskQueue, error) { return NewMemoryQueue(time.Second, 3), nil },
	} {
		q, err := q()
		require.NoError(t, err)
		w, err := NewTaskWorker(q, &WorkerConfig{Logger: slog.New(slog.DiscardHandler)})
		require.NoError(t, err)
		require.NoError(t, w.Start(ctx))
		require.NoError(t, w.Stop(ctx))
	}
}
