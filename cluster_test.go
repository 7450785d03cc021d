//go:build cluster

package taskqueue

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// clArgs are the arguments of the functions the cluster tests run.
type clArgs struct {
	ID string `json:"id"`
}

// clRecorder registers the cluster tests' functions and records what ran.
type clRecorder struct {
	mu    sync.Mutex
	runs  map[string]int // task id -> successful runs
	tried map[string]int // task id -> failed runs of cl.flaky
	fails atomic.Int64
}

// clQueue returns a queue on rdb under prefix whose registry runs cl.ok (records), cl.flaky (fails its first
// attempt) and cl.bad (dead-letters itself).
func clQueue(t testing.TB, rdb redis.UniversalClient, prefix string, cfg *RedisConfig) (*RedisTaskQueue, *clRecorder) {
	t.Helper()
	reg, ref, rec := clRegistry(t)
	_ = ref
	q, err := NewRedisTaskQueue(rdb, prefix, reg, quiet(cfg))
	require.NoError(t, err)
	return q, rec
}

func clRegistry(t testing.TB) (*ResolverRegistry, *ReferenceResolver, *clRecorder) {
	t.Helper()
	reg, ref := testRegistry(t)
	rec := &clRecorder{runs: map[string]int{}, tried: map[string]int{}}
	require.NoError(t, Register(ref, "cl", "ok", func(_ context.Context, a clArgs) error {
		rec.mu.Lock()
		rec.runs[a.ID]++
		rec.mu.Unlock()
		return nil
	}))
	require.NoError(t, Register(ref, "cl", "flaky", func(_ context.Context, a clArgs) error {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		if rec.tried[a.ID] == 0 {
			rec.tried[a.ID]++
			rec.fails.Add(1)
			return errors.New("first attempt fails")
		}
		rec.runs[a.ID]++
		return nil
	}))
	require.NoError(t, Register(ref, "cl", "bad", func(context.Context, clArgs) error {
		return fmt.Errorf("%w: bad task", ErrSkipRetry)
	}))
	return reg, ref, rec
}

func (r *clRecorder) count(ids ...string) (done, dup int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range ids {
		if n := r.runs[id]; n > 0 {
			done++
			dup += n - 1
		}
	}
	return done, dup
}

func clTask(fn, id string) *TaskSpec { return NewTaskSpec(id, Ref("cl", fn, clArgs{ID: id})) }

// startClWorker starts a quiet worker on q, stopped when the test ends.
func startClWorker(t testing.TB, q TaskQueue, cfg *WorkerConfig) *TaskWorker {
	t.Helper()
	c := WorkerConfig{}
	if cfg != nil {
		c = *cfg
	}
	if c.Logger == nil {
		c.Logger = quiet(nil).Logger
	}
	if c.Backoff == nil {
		c.Backoff = func(int, error) time.Duration { return 50 * time.Millisecond }
	}
	w, err := NewTaskWorker(q, &c)
	require.NoError(t, err)
	require.NoError(t, w.Start(context.Background()))
	var once sync.Once
	stop := func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = w.Stop(ctx)
		})
	}
	t.Cleanup(stop)
	return w
}

// lifecycle runs every step of a task's life on rdb (a Cluster or Sentinel client): blocking pickup, interrupt,
// lease renewal, retry with a delay, dead letter and requeue, delayed tasks, the operator's calls, and a worker
// draining a mixed batch.
func lifecycle(t *testing.T, rdb redis.UniversalClient, prefix string) {
	ctx := context.Background()
	q, rec := clQueue(t, rdb, prefix, &RedisConfig{Lease: 2 * time.Second})

	// A blocked pickup is woken by the enqueue (the queue counts the waits that end by their timeout instead).
	got := make(chan []*Delivery, 1)
	go func() {
		ds, err := q.Dequeue(ctx, DequeueOptions{Max: 4, Wait: 10 * time.Second, Consumer: "c1"})
		if err != nil {
			t.Error(err)
		}
		got <- ds
	}()
	waitBlocked(t, rdb, q.keys.key(keyWake))
	require.NoError(t, q.Enqueue(ctx, clTask("ok", "p1")))
	var ds []*Delivery
	select {
	case ds = <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("blocked pickup did not wake")
	}
	require.Zero(t, q.blockTimeouts.Load(), "woken by the enqueue, not by the end of its wait")
	require.Len(t, ds, 1)
	lost, err := q.ExtendLeases(ctx, ds)
	require.NoError(t, err)
	require.Empty(t, lost)
	require.NoError(t, q.Ack(ctx, ds...))
	require.NoError(t, q.Ack(ctx, ds...), "ack is idempotent")

	// Interrupt ends a blocked pickup.
	go func() {
		ds, err := q.Dequeue(ctx, DequeueOptions{Max: 1, Wait: 10 * time.Second, Consumer: "c2"})
		if err != nil {
			t.Error(err)
		}
		got <- ds
	}()
	waitBlocked(t, rdb, q.keys.consumerWake("c2"))
	require.NoError(t, q.Interrupt(ctx, "c2"))
	select {
	case ds = <-got:
		require.Empty(t, ds)
	case <-time.After(5 * time.Second):
		t.Fatal("interrupt did not end the pickup")
	}
	require.NoError(t, q.clearInterrupt(ctx, "c2"))

	// Retry with a delay: the blocking pickup sleeps until the retry falls due.
	require.NoError(t, q.Enqueue(ctx, clTask("ok", "r1")))
	ds, err = q.Dequeue(ctx, DequeueOptions{Max: 1})
	require.NoError(t, err)
	require.Len(t, ds, 1)
	require.NoError(t, q.Retry(ctx, ds[0], 300*time.Millisecond, errors.New("later")))
	st, err := countsOf(ctx, q)
	require.NoError(t, err)
	require.Equal(t, Counts{Scheduled: 1}, st)
	ds, err = q.Dequeue(ctx, DequeueOptions{Max: 1, Wait: 5 * time.Second})
	require.NoError(t, err)
	require.Len(t, ds, 1)
	require.Equal(t, 1, ds[0].Spec.Attempt)

	// Dead letter, listed, requeued, leased again, released, acked.
	require.NoError(t, q.DeadLetter(ctx, ds[0], errors.New("parked")))
	dls, err := mustAdmin(q).List(ctx, StateDead, 0, 10)
	require.NoError(t, err)
	require.Len(t, dls, 1)
	require.Equal(t, "parked", dls[0].Reason)
	n, err := mustAdmin(q).RequeueDead(ctx, "r1")
	require.NoError(t, err)
	require.Equal(t, 1, n)
	ds, err = q.Dequeue(ctx, DequeueOptions{Max: 1})
	require.NoError(t, err)
	require.Len(t, ds, 1)
	require.NoError(t, q.Release(ctx, ds[0]))
	info, err := mustAdmin(q).Inspect(ctx, "r1")
	require.NoError(t, err)
	require.Equal(t, StatePending, info.State)
	ds, err = q.Dequeue(ctx, DequeueOptions{Max: 1})
	require.NoError(t, err)
	require.NoError(t, q.Ack(ctx, ds...))

	// The operator's calls work on one node of the Cluster: pause, overview, list, purge.
	require.NoError(t, mustAdmin(q).Pause(ctx))
	require.NoError(t, q.Enqueue(ctx, clTask("ok", "x1")))
	ds, err = q.Dequeue(ctx, DequeueOptions{Max: 1})
	require.NoError(t, err)
	require.Empty(t, ds, "paused")
	ov, err := mustAdmin(q).Stats(ctx)
	require.NoError(t, err)
	require.True(t, ov.Paused)
	require.Equal(t, int64(1), ov.Pending)
	require.WithinDuration(t, time.Now(), ov.ServerTime, 5*time.Second)
	list, err := mustAdmin(q).List(ctx, StatePending, 0, 10)
	require.NoError(t, err)
	require.Len(t, list, 1)
	purged, err := mustAdmin(q).Purge(ctx, StatePending)
	require.NoError(t, err)
	require.Equal(t, 1, purged)
	require.NoError(t, mustAdmin(q).Resume(ctx))

	// A worker drains a mixed batch: ready, delayed, failing once, and dead-lettering tasks.
	var specs []*TaskSpec
	var okIDs []string
	for i := range 200 {
		id := fmt.Sprintf("w%d", i)
		var s *TaskSpec
		switch i % 10 {
		case 0:
			s = clTask("flaky", id)
		case 1:
			s = clTask("bad", id)
		default:
			s = clTask("ok", id)
		}
		if i%10 == 2 {
			s.ProcessIn = 300 * time.Millisecond
		}
		if i%10 != 1 {
			okIDs = append(okIDs, id)
		}
		specs = append(specs, s)
	}
	require.NoError(t, q.EnqueueBatch(ctx, specs))
	require.NoError(t, q.EnqueueBatch(ctx, specs), "enqueue is idempotent")
	startClWorker(t, q, &WorkerConfig{Concurrency: 16, Name: "w-" + strings.ReplaceAll(prefix, ".", "-")})
	waitFor(t, 30*time.Second, "the batch to drain", func() bool {
		done, _ := rec.count(okIDs...)
		st, err := countsOf(ctx, q)
		return err == nil && done == len(okIDs) && st == Counts{Dead: 20}
	})
	_, dup := rec.count(okIDs...)
	require.Zero(t, dup, "no task ran twice")
	require.Equal(t, int64(20), rec.fails.Load())
}

// waitBlocked waits until some client is blocked on key (CLIENT LIST on the node that serves it).
func waitBlocked(t testing.TB, rdb redis.UniversalClient, key string) {
	t.Helper()
	var node redis.Cmdable = rdb
	if cc, ok := rdb.(*redis.ClusterClient); ok {
		c, err := cc.MasterForKey(context.Background(), key)
		require.NoError(t, err)
		node = c
	}
	waitFor(t, 5*time.Second, "a pickup blocked on "+key, func() bool {
		s, err := node.ClientList(context.Background()).Result()
		return err == nil && strings.Contains(s, "cmd=blpop")
	})
}

// TestCluster runs the whole lifecycle on a Cluster of three primaries with one replica each, on queues that live
// on different primaries, and checks where every queue's keys live.
func TestCluster(t *testing.T) {
	c := startCluster(t, 3, 1)
	cc := c.client(nil)
	ctx := context.Background()

	t.Run("Lifecycle", func(t *testing.T) {
		// Three queues whose slots are served by three different primaries.
		prefixes := spreadPrefixes(t, cc, "life", 3)
		for _, p := range prefixes {
			t.Run(p, func(t *testing.T) {
				t.Parallel()
				lifecycle(t, cc, p)
			})
		}
	})

	t.Run("KeySlots", func(t *testing.T) {
		// Every key of a queue, the consumer wake-up list included, is in one slot, by the server's own hashing.
		q, _ := clQueue(t, cc, "slots", nil)
		keys := append(append([]string{}, q.keys.all...), q.keys.consumerWake("worker-1"))
		want, err := cc.ClusterKeySlot(ctx, keys[0]).Result()
		require.NoError(t, err)
		for _, k := range keys {
			slot, err := cc.ClusterKeySlot(ctx, k).Result()
			require.NoError(t, err)
			require.Equal(t, want, slot, k)
		}
		// Different queues spread over every primary.
		owners := map[string]int{}
		for i := range 30 {
			q, _ := clQueue(t, cc, fmt.Sprintf("spread-%d", i), nil)
			owners[c.primaryFor(t, cc, q.keys.key(keyTasks)).addr]++
		}
		require.Len(t, owners, 3, "30 queues on every primary: %v", owners)
		for addr, n := range owners {
			require.GreaterOrEqual(t, n, 4, "queues on %s: %v", addr, owners)
		}
	})

	t.Run("ScheduleWake", func(t *testing.T) {
		// A scheduler on a Cluster client of its own, idle with its safety recheck an hour away, fires a schedule
		// created through another client at once: the script's PUBLISH reaches its subscription.
		sc := c.client(nil)
		calls := &scriptCounter{}
		calls.earliest.Store(-2)
		sc.AddHook(calls)
		q, _ := clQueue(t, sc, "schedwake", nil)
		other, _ := clQueue(t, cc, "schedwake", nil)
		log := &eventLog{}
		s, err := NewScheduler(q, &SchedulerConfig{Recheck: time.Hour, Logger: quiet(nil).Logger, OnEvent: log.add})
		require.NoError(t, err)
		rctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() { _ = s.Run(rctx) })
		defer func() { cancel(); wg.Wait() }()
		waitFor(t, 10*time.Second, "the scheduler's first pass", func() bool { return calls.earliest.Load() == -1 })
		require.NoError(t, mustSchedules(other).Create(ctx, &Schedule{Name: "sec", Every: time.Second, Task: &TaskSpec{Executable: Ref("cl", "ok", clArgs{ID: "s"})}}))
		waitFor(t, 5*time.Second, "the first tick fired by the idle scheduler", func() bool { return len(log.of(ScheduleFired)) >= 1 })
		require.Empty(t, log.of(ScheduleFailed))
	})

	t.Run("DurableEnqueue", func(t *testing.T) {
		// Healthy: the replica confirms. Replica frozen (SIGSTOP): a typed error after the timeout, and the task
		// is enqueued on the primary all the same. Replica back: confirmed again.
		q, _ := clQueue(t, cc, "durable", &RedisConfig{DurableReplicas: 1, DurableTimeout: 300 * time.Millisecond})
		require.NoError(t, q.Enqueue(ctx, clTask("ok", "d1")))
		replica := c.replicaOf(t, c.primaryFor(t, cc, q.keys.key(keyTasks)))
		require.NoError(t, replica.Signal(syscall.SIGSTOP))
		resume := sync.OnceFunc(func() { _ = replica.Signal(syscall.SIGCONT) })
		defer resume()
		err := q.Enqueue(ctx, clTask("ok", "d2"))
		resume()
		require.ErrorIs(t, err, ErrNotReplicated)
		var re *ReplicationError
		require.ErrorAs(t, err, &re)
		require.Equal(t, 1, re.Want)
		require.Equal(t, 0, re.Got)
		require.Eventually(t, func() bool { return q.Enqueue(ctx, clTask("ok", "d3")) == nil }, 10*time.Second, 50*time.Millisecond)
		st, err := countsOf(ctx, q)
		require.NoError(t, err)
		require.Equal(t, Counts{Pending: 3}, st)

		// A sharded queue enqueues durably on every shard.
		sq, err := NewShardedQueue(cc, "durable-sharded", 3, q.reg, quiet(&RedisConfig{DurableReplicas: 1}))
		require.NoError(t, err)
		var specs []*TaskSpec
		for i := range 30 {
			specs = append(specs, clTask("ok", fmt.Sprintf("ds%d", i)))
		}
		require.NoError(t, sq.EnqueueBatch(ctx, specs))
	})

	t.Run("Check", func(t *testing.T) {
		q, _ := clQueue(t, cc, "check", nil)
		rep, err := mustAdmin(q).Check(ctx)
		require.NoError(t, err)
		require.NotEmpty(t, rep.Version)
		require.Equal(t, "noeviction", rep.EvictionPolicy)
		require.Len(t, rep.Primaries, 3, "every primary checked")
		require.Empty(t, rep.Warnings)

		// A risky eviction policy on any one primary is found, and named.
		last := c.primaries[2]
		nc := c.node(last.addr)
		defer nc.Close()
		require.NoError(t, nc.ConfigSet(ctx, "maxmemory-policy", "allkeys-lru").Err())
		defer func() { _ = nc.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err() }()
		rep, err = mustAdmin(q).Check(ctx)
		require.NoError(t, err)
		require.Equal(t, "allkeys-lru", rep.EvictionPolicy)
		require.Len(t, rep.Warnings, 1)
		require.Contains(t, rep.Warnings[0], "primary "+last.addr+": eviction policy allkeys-lru")
	})
}

// spreadPrefixes returns n queue prefixes (base-0, base-1, …) whose slots are served by n different primaries.
func spreadPrefixes(t testing.TB, cc *redis.ClusterClient, base string, n int) []string {
	t.Helper()
	seen := map[string]bool{}
	var out []string
	for i := 0; len(out) < n && i < 1000; i++ {
		p := fmt.Sprintf("%s-%d", base, i)
		node, err := cc.MasterForKey(context.Background(), "{"+p+"}:tasks")
		require.NoError(t, err)
		if addr := node.Options().Addr; !seen[addr] {
			seen[addr] = true
			out = append(out, p)
		}
	}
	require.Len(t, out, n)
	return out
}
