package taskqueue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

type mqArgs struct {
	Kind string `json:"kind,omitempty"`
}

// mqTask is a task of the multi-queue tests; its kind is its id.
func mqTask(id string) *TaskSpec { return NewTaskSpec(id, Ref("mq", "work", mqArgs{Kind: id})) }

// mqQueues returns n queues ("<base>-a", "<base>-b", ...) on rdb sharing one registry, whose function mq.work
// runs fn with the task's kind.
func mqQueues(t *testing.T, rdb redis.UniversalClient, base string, n int, fn func(ctx context.Context, kind string) error) []*RedisTaskQueue {
	t.Helper()
	reg, ref := testRegistry(t)
	require.NoError(t, Register(ref, "mq", "work", func(ctx context.Context, a mqArgs) error { return fn(ctx, a.Kind) }))
	qs := make([]*RedisTaskQueue, n)
	for i := range qs {
		q, err := NewRedisTaskQueue(rdb, fmt.Sprintf("%s-%c", base, 'a'+i), reg, quiet(&RedisConfig{Lease: 5 * time.Second}))
		require.NoError(t, err)
		qs[i] = q
	}
	return qs
}

// realClient returns a client of the test binary's redis-server and a key prefix of the test's own.
func realClient(t *testing.T) (*redis.Client, string) {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: realRedis(t)})
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb, "mq" + newID()[:8]
}

// fill enqueues n tasks named "<prefix>-<i>" into q, in batches.
func fill(t testing.TB, q TaskQueue, prefix string, n int) {
	t.Helper()
	for lo := 0; lo < n; lo += 500 {
		specs := make([]*TaskSpec, 0, 500)
		for i := lo; i < min(lo+500, n); i++ {
			specs = append(specs, mqTask(fmt.Sprintf("%s-%d", prefix, i)))
		}
		require.NoError(t, q.EnqueueBatch(context.Background(), specs))
	}
}

func weighted(qs []*RedisTaskQueue, weights ...int) []QueueWeight {
	out := make([]QueueWeight, len(qs))
	for i, q := range qs {
		out[i] = QueueWeight{Queue: q, Weight: weights[i]}
	}
	return out
}

func TestMultiQueueConfig(t *testing.T) {
	t.Parallel()
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	other := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = other.Close() })
	qs := mqQueues(t, rdb, "cfg", 2, func(context.Context, string) error { return nil })
	reg, _ := testRegistry(t)
	elsewhere, err := NewRedisTaskQueue(other, "cfg-z", reg, nil)
	require.NoError(t, err)
	sameA, err := NewRedisTaskQueue(rdb, "cfg-a", reg, nil)
	require.NoError(t, err)
	sharded, err := NewShardedQueue(rdb, "cfg-s", 2, reg, nil)
	require.NoError(t, err)
	clash, err := NewRedisTaskQueue(rdb, "cfg-s.1", reg, nil) // the prefix of sharded's second shard
	require.NoError(t, err)
	var nilQ *RedisTaskQueue

	for _, c := range []struct {
		name   string
		queues []QueueWeight
		strict bool
		field  string
	}{
		{"no queue", nil, false, "Queues"},
		{"too many", make([]QueueWeight, MaxMultiQueues+1), false, "Queues"},
		{"nil queue", []QueueWeight{{Queue: qs[0], Weight: 1}, {Weight: 1}}, false, "Queues[1].Queue"},
		{"typed nil", []QueueWeight{{Queue: nilQ, Weight: 1}}, false, "Queues[0].Queue"},
		{"memory queue", []QueueWeight{{Queue: NewMemoryQueue(time.Second, 0), Weight: 1}}, false, "Queues[0].Queue"},
		{"zero weight", weighted(qs, 1, 0), false, "Queues[1].Weight"},
		{"negative weight", weighted(qs, -1, 1), false, "Queues[0].Weight"},
		{"weight too large", weighted(qs, 1, MaxQueueWeight+1), false, "Queues[1].Weight"},
		{"negative weight, strict", weighted(qs, 0, -1), true, "Queues[1].Weight"},
		{"same prefix", []QueueWeight{{Queue: qs[0], Weight: 1}, {Queue: sameA, Weight: 1}}, false, "Queues[1].Queue"},
		{"same queue twice", []QueueWeight{{Queue: qs[1], Weight: 1}, {Queue: qs[1], Weight: 2}}, false, "Queues[1].Queue"},
		{"a shard's prefix", []QueueWeight{{Queue: sharded, Weight: 1}, {Queue: clash, Weight: 1}}, false, "Queues[1].Queue"},
		{"another client", []QueueWeight{{Queue: qs[0], Weight: 1}, {Queue: elsewhere, Weight: 1}}, false, "Queues[1].Queue"},
	} {
		_, err := NewMultiQueue(c.queues, &MultiQueueConfig{Strict: c.strict})
		require.ErrorIs(t, err, ErrInvalidConfig, c.name)
		var me *MultiQueueError
		require.ErrorAs(t, err, &me, c.name)
		require.Equal(t, c.field, me.Field, c.name)
		require.Contains(t, err.Error(), c.field, c.name)
	}

	m, err := NewMultiQueue(weighted(qs, 0, 0), &MultiQueueConfig{Strict: true})
	require.NoError(t, err, "weights are ignored under Strict")
	require.Equal(t, []TaskQueue{qs[0], qs[1]}, m.Queues())
	m, err = NewMultiQueue([]QueueWeight{{Queue: qs[0], Weight: 2}, {Queue: sharded, Weight: 1}}, nil)
	require.NoError(t, err)
	require.ErrorIs(t, m.Enqueue(context.Background(), mqTask("x")), ErrMultiQueueEnqueue)
	require.ErrorIs(t, m.EnqueueBatch(context.Background(), []*TaskSpec{mqTask("x")}), ErrMultiQueueEnqueue)
	require.Equal(t, 5*time.Second, m.LeaseDuration(), "the shortest lease")
	require.Empty(t, QueueOf(context.Background()))
}

// TestMultiQueueWeightedBatches: with every queue holding a backlog, smooth weighted round-robin gives each queue
// its weight's share of the pickup batches: exactly, over whole cycles (10,000 tasks in batches of 10, weights
// 5, 3 and 2: 100 cycles of 10 batches). Each batch is served by one queue, and no queue waits more than its
// share between turns (smoothness).
func TestMultiQueueWeightedBatches(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb, base := realClient(t)
	qs := mqQueues(t, rdb, base, 3, func(context.Context, string) error { return nil })
	for i, n := range []int{5200, 3200, 2200} {
		fill(t, qs[i], fmt.Sprintf("t%d", i), n)
	}
	m, err := NewMultiQueue(weighted(qs, 5, 3, 2), nil)
	require.NoError(t, err)
	served := make([]int, 3)
	var seq []int
	for leased := 0; leased < 10_000; {
		ds, err := m.Dequeue(ctx, DequeueOptions{Max: 10})
		require.NoError(t, err)
		require.Len(t, ds, 10)
		k := ds[0].member
		for _, d := range ds {
			require.Equal(t, k, d.member, "one queue serves a batch while it has tasks")
		}
		served[k] += len(ds)
		seq = append(seq, k)
		leased += len(ds)
		require.NoError(t, m.Ack(ctx, ds...))
	}
	require.Equal(t, []int{5000, 3000, 2000}, served)
	// Smooth: the lightest queue (weight 2 of 10) is served every 5 batches, give or take one.
	last := -1
	for i, k := range seq {
		if k == 2 {
			if last >= 0 {
				require.LessOrEqual(t, i-last, 6, "gap between turns of queue 2")
			}
			last = i
		}
	}
	for i, n := range []int{200, 200, 200} {
		c, err := countsOf(ctx, qs[i])
		require.NoError(t, err)
		require.Equal(t, int64(n), c.Pending, "queue %d", i)
		require.Zero(t, c.Active, "acks went to queue %d", i)
	}
}

// TestMultiQueueWorkerShare: a worker on two queues with weights 3 and 1, both holding a backlog, runs 75% of its
// first 10,000 tasks from the first queue, within 2 percentage points (weights apply per pickup batch, and a
// worker's batches vary in size with the slots free at each pickup).
func TestMultiQueueWorkerShare(t *testing.T) {
	t.Parallel()
	rdb, base := realClient(t)
	var started atomic.Int64
	var fromA atomic.Int64
	var prefixA string
	qs := mqQueues(t, rdb, base, 2, func(ctx context.Context, id string) error {
		if started.Add(1) <= 10_000 && QueueOf(ctx) == prefixA {
			fromA.Add(1)
		}
		return nil
	})
	prefixA = qs[0].prefix
	fill(t, qs[0], "a", 9000)
	fill(t, qs[1], "b", 4000)
	m, err := NewMultiQueue(weighted(qs, 3, 1), nil)
	require.NoError(t, err)
	startWorker(t, m, quietWorker(WorkerConfig{Concurrency: 16, BatchSize: 16}, nil))
	waitFor(t, 60*time.Second, "10,000 tasks started", func() bool { return started.Load() >= 10_000 })
	share := float64(fromA.Load()) / 10_000
	t.Logf("share of the weight-3 queue: %.4f (want 0.75 +- 0.02)", share)
	require.InDelta(t, 0.75, share, 0.02)
}

// TestMultiQueueStrict: under Strict a pickup drains the first queue before it takes from the second, and a
// worker of concurrency 1 runs every task of the first queue before any of the second, although the second's
// were enqueued first.
func TestMultiQueueStrict(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb, base := realClient(t)
	var mu sync.Mutex
	var order []string
	qs := mqQueues(t, rdb, base, 2, func(ctx context.Context, id string) error {
		mu.Lock()
		order = append(order, QueueOf(ctx))
		mu.Unlock()
		return nil
	})
	fill(t, qs[1], "low", 30)
	fill(t, qs[0], "high", 25)
	m, err := NewMultiQueue(weighted(qs, 1, 100), &MultiQueueConfig{Strict: true})
	require.NoError(t, err)

	ds, err := m.Dequeue(ctx, DequeueOptions{Max: 20})
	require.NoError(t, err)
	require.Len(t, ds, 20)
	for _, d := range ds {
		require.Equal(t, 0, d.member)
	}
	ds2, err := m.Dequeue(ctx, DequeueOptions{Max: 20})
	require.NoError(t, err)
	require.Len(t, ds2, 20, "the first queue's last 5, filled from the second")
	require.Equal(t, 0, ds2[4].member)
	require.Equal(t, 1, ds2[5].member)
	for _, d := range append(ds, ds2...) {
		require.NoError(t, m.Release(ctx, d))
	}

	startWorker(t, m, quietWorker(WorkerConfig{Concurrency: 1}, nil))
	waitFor(t, 30*time.Second, "55 tasks ran", func() bool { mu.Lock(); defer mu.Unlock(); return len(order) == 55 })
	mu.Lock()
	defer mu.Unlock()
	for i, p := range order {
		want := qs[0].prefix
		if i >= 25 {
			want = qs[1].prefix
		}
		require.Equal(t, want, p, "task %d", i)
	}
}

// TestMultiQueueBlocking: an idle worker on several queues (one of them sharded) blocks on all of them, with one
// BLPOP (a single node) or one per queue (as on a Cluster), and runs a task enqueued into any of them.
func TestMultiQueueBlocking(t *testing.T) {
	t.Parallel()
	for _, single := range []bool{true, false} {
		t.Run(fmt.Sprintf("single=%v", single), func(t *testing.T) {
			t.Parallel()
			rdb, base := ownRedis(t), "mq"
			ran := make(chan string, 16)
			qs := mqQueues(t, rdb, base, 2, func(ctx context.Context, _ string) error { ran <- QueueOf(ctx); return nil })
			sharded, err := NewShardedQueue(rdb, base+"-s", 3, qs[0].reg, quiet(nil))
			require.NoError(t, err)
			m, err := NewMultiQueue([]QueueWeight{{Queue: qs[0], Weight: 2}, {Queue: qs[1], Weight: 1}, {Queue: sharded, Weight: 1}}, nil)
			require.NoError(t, err)
			require.True(t, m.single)
			m.single = single
			startWorker(t, m, quietWorker(WorkerConfig{Concurrency: 4, BlockTimeout: time.Minute}, nil))
			ctx := context.Background()
			for round, q := range []TaskQueue{qs[1], sharded, qs[0], sharded, qs[1]} {
				// Idle: the worker's pickup is blocked (its wait lasts a minute, so only a wake-up ends it).
				waitForIdle(t, rdb, m)
				require.NoError(t, q.Enqueue(ctx, mqTask(fmt.Sprintf("r%d", round))))
				select {
				case p := <-ran:
					require.Equal(t, prefixOf(q), p)
				case <-time.After(10 * time.Second):
					t.Fatalf("round %d: the task enqueued into %s did not run", round, prefixOf(q))
				}
			}
		})
	}
}

func prefixOf(q TaskQueue) string {
	switch q := q.(type) {
	case *RedisTaskQueue:
		return q.prefix
	case *ShardedQueue:
		return q.prefix
	}
	return ""
}

// waitForIdle waits until m's pickup is blocked on the server of rdb (which serves no one else): one client, or
// one per queue (per shard) when m blocks on each.
func waitForIdle(t *testing.T, rdb *redis.Client, m *MultiQueue) {
	t.Helper()
	want := 1
	if !m.single {
		want = len(m.units)
	}
	waitFor(t, 10*time.Second, "a blocked pickup", func() bool {
		info, err := rdb.Info(context.Background(), "clients").Result()
		return err == nil && strings.Contains(info, fmt.Sprintf("blocked_clients:%d\r", want))
	})
}

// TestMultiQueueOutcomesPerQueue: a task's ack, retry, dead letter and release go to the queue it came from, even
// when two queues hold a task of the same id.
func TestMultiQueueOutcomesPerQueue(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb, base := realClient(t)
	var mu sync.Mutex
	runs := map[string]int{}
	release := make(chan struct{})
	qs := mqQueues(t, rdb, base, 2, func(ctx context.Context, id string) error {
		key := QueueOf(ctx) + "/" + id
		mu.Lock()
		runs[key]++
		mu.Unlock()
		switch id {
		case "fail":
			return errors.New("always")
		case "slow":
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	})
	for _, q := range qs {
		require.NoError(t, q.Enqueue(ctx, mqTask("same")))
	}
	spec := mqTask("fail")
	spec.MaxRetries = 1
	require.NoError(t, qs[1].Enqueue(ctx, spec))
	require.NoError(t, qs[0].Enqueue(ctx, mqTask("slow")))

	m, err := NewMultiQueue(weighted(qs, 1, 1), nil)
	require.NoError(t, err)
	rec := &recorder{}
	w, err := NewTaskWorker(m, quietWorker(WorkerConfig{Concurrency: 4}, rec))
	require.NoError(t, err)
	require.NoError(t, w.Start(ctx))
	waitFor(t, 20*time.Second, "outcomes", func() bool { return rec.count(EventDead) == 1 && rec.count(EventSucceeded) == 2 })
	waitFor(t, 10*time.Second, "acks", func() bool {
		a, errA := countsOf(ctx, qs[0])
		b, errB := countsOf(ctx, qs[1])
		return errA == nil && errB == nil && a.Active == 1 && b.Active == 0
	})
	mu.Lock()
	require.Equal(t, map[string]int{qs[0].prefix + "/same": 1, qs[1].prefix + "/same": 1, qs[1].prefix + "/fail": 2, qs[0].prefix + "/slow": 1}, runs)
	mu.Unlock()
	_, err = deadLetterOf(ctx, qs[1], "fail")
	require.NoError(t, err, "dead in its own queue")
	_, err = deadLetterOf(ctx, qs[0], "fail")
	require.ErrorIs(t, err, ErrNotFound)

	// Stop with a short grace hands the slow task back to its own queue.
	require.NoError(t, stopWorker(t, w, 100*time.Millisecond))
	a, err := countsOf(ctx, qs[0])
	require.NoError(t, err)
	require.Equal(t, Counts{Pending: 1}, Counts{Pending: a.Pending, Active: a.Active})
	b, err := countsOf(ctx, qs[1])
	require.NoError(t, err)
	require.Equal(t, int64(1), b.Dead)
	require.Zero(t, b.Pending+b.Active)
}

// TestMultiQueueHandsBackWakes: a wait that took a queue's wake-up, followed by a pickup whose batch was full
// before it asked that queue, pushes the wake-up back, so that another consumer takes that queue's tasks.
func TestMultiQueueHandsBackWakes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb, base := realClient(t)
	qs := mqQueues(t, rdb, base, 2, func(context.Context, string) error { return nil })
	fill(t, qs[0], "a", 5)
	fill(t, qs[1], "b", 1)
	wakeA, wakeB := qs[0].keys.key(keyWake), qs[1].keys.key(keyWake)
	require.NoError(t, rdb.Del(ctx, wakeA, wakeB).Err()) // as if a consumer's wait had taken them
	m, err := NewMultiQueue(weighted(qs, 1, 1), &MultiQueueConfig{Strict: true})
	require.NoError(t, err)
	tried := make([]bool, len(m.units))
	l, _, err := m.sweep(ctx, 5, tried)
	require.NoError(t, err)
	require.Len(t, l.ds, 5)
	require.Equal(t, []bool{true, false}, tried, "the batch was full before the second queue was asked")
	m.handBackWakes(ctx, []int{0, 1}, tried)
	require.Equal(t, int64(0), rdb.LLen(ctx, wakeA).Val(), "the first queue was asked: no wake-up back")
	require.Equal(t, int64(1), rdb.LLen(ctx, wakeB).Val())
}

// TestMultiQueueWorkerChecksEachQueue: a worker on several queues refuses to start when a queue's registry can
// resolve no task (naming the queue), and warns at start about each queue that has no keys.
func TestMultiQueueWorkerChecksEachQueue(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	qs := mqQueues(t, rdb, "probe", 2, func(context.Context, string) error { return nil })
	require.NoError(t, qs[0].Enqueue(ctx, mqTask("t1")))
	empty, err := NewRedisTaskQueue(rdb, "probe-empty", NewResolverRegistry(), quiet(nil))
	require.NoError(t, err)

	m, err := NewMultiQueue(append(weighted(qs, 1, 1), QueueWeight{Queue: empty, Weight: 1}), nil)
	require.NoError(t, err)
	w, err := NewTaskWorker(m, quietWorker(WorkerConfig{}, nil))
	require.NoError(t, err)
	err = w.Start(ctx)
	require.ErrorIs(t, err, ErrNoResolvers)
	require.Contains(t, err.Error(), `Queues[2], key prefix "probe-empty"`)

	m, err = NewMultiQueue(weighted(qs, 1, 1), nil)
	require.NoError(t, err)
	var logs syncBuffer
	w, err = NewTaskWorker(m, &WorkerConfig{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})), Name: "probe"})
	require.NoError(t, err)
	require.NoError(t, w.Start(ctx))
	t.Cleanup(func() { _ = w.Stop(ctx) })
	out := logs.waitFor(t, `queue \"probe-b\" has no keys`)
	require.Contains(t, out, `level=DEBUG msg="taskqueue: queue has keys" worker=probe key_prefix=probe-a`)
}

// TestMultiQueueTaskControls: through a worker on several queues, a task's result, progress and snooze are stored
// in the queue it came from, and a cancel sent to that queue reaches its running handler.
func TestMultiQueueTaskControls(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb, base := realClient(t)
	var snoozed atomic.Bool
	cancelled := make(chan error, 1)
	qs := mqQueues(t, rdb, base, 2, func(ctx context.Context, kind string) error {
		switch kind {
		case "result":
			if err := ReportProgress(ctx, 50, "half"); err != nil {
				return err
			}
			return SetResult(ctx, QueueOf(ctx))
		case "snooze":
			if snoozed.CompareAndSwap(false, true) {
				return Snooze(10 * time.Millisecond)
			}
		case "cancel":
			<-ctx.Done()
			cancelled <- context.Cause(ctx)
			return context.Cause(ctx)
		}
		return nil
	})
	m, err := NewMultiQueue(weighted(qs, 1, 1), nil)
	require.NoError(t, err)
	rec := &recorder{}
	startWorker(t, m, quietWorker(WorkerConfig{Concurrency: 4}, rec))
	b := qs[1]
	for _, id := range []string{"result", "snooze", "cancel"} {
		require.NoError(t, b.Enqueue(ctx, mqTask(id)))
	}
	waitFor(t, 10*time.Second, "result and snooze done", func() bool { return rec.count(EventSucceeded) == 2 && rec.count(EventSnoozed) == 1 })
	res, err := b.Result(ctx, "result")
	require.NoError(t, err)
	require.JSONEq(t, fmt.Sprintf("%q", b.prefix), string(res))
	p, err := mustAdmin(b).TaskProgress(ctx, "result")
	require.NoError(t, err)
	require.Equal(t, "half", p.Message)
	_, err = qs[0].Result(ctx, "result")
	require.ErrorIs(t, err, ErrNoResult, "nothing stored in the other queue")

	waitFor(t, 10*time.Second, "the cancel task running", func() bool { return rec.count(EventStarted) >= 4 })
	_, err = mustAdmin(b).Cancel(ctx, "cancel")
	require.NoError(t, err)
	select {
	case cause := <-cancelled:
		require.ErrorIs(t, cause, ErrCancelled)
	case <-time.After(10 * time.Second):
		t.Fatal("the cancel did not reach the handler")
	}
}

// TestMultiQueueWarnsOfAClientThatIgnoresDeadlines: a worker on several queues warns about its client as a worker
// on one does (health.go).
func TestMultiQueueWarnsOfAClientThatIgnoresDeadlines(t *testing.T) {
	t.Parallel()
	mr := miniredis.RunT(t)
	for _, honoured := range []bool{false, true} {
		rdb := redis.NewClient(&redis.Options{Addr: mr.Addr(), ContextTimeoutEnabled: honoured})
		qs := mqQueues(t, rdb, "warn", 2, func(context.Context, string) error { return nil })
		m, err := NewMultiQueue(weighted(qs, 1, 1), nil)
		require.NoError(t, err)
		lines := &logLines{}
		_, err = NewTaskWorker(m, &WorkerConfig{Logger: slog.New(lines)})
		require.NoError(t, err)
		n := 0
		for _, msg := range lines.msgs {
			if strings.HasPrefix(msg, "taskqueue: the Redis client ignores context deadlines") {
				n++
			}
		}
		require.Equal(t, map[bool]int{false: 1, true: 0}[honoured], n)
		require.NoError(t, rdb.Close())
	}
}

// TestMultiQueueHistoryAndEventQueue: a MultiQueue worker counts each task's run in the history of the queue it came
// from (Admin.History of each member), and its events name that queue (Event.Queue).
func TestMultiQueueHistoryAndEventQueue(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	qs := mqQueues(t, rdb, "mqhist", 2, func(context.Context, string) error { return nil })
	fill(t, qs[0], "a", 3)
	fill(t, qs[1], "b", 5)
	m, err := NewMultiQueue(weighted(qs, 1, 1), nil)
	require.NoError(t, err)
	rec := &recorder{}
	w, err := NewTaskWorker(m, quietWorker(WorkerConfig{Concurrency: 4}, rec))
	require.NoError(t, err)
	require.NoError(t, w.Start(ctx))
	waitFor(t, 10*time.Second, "every task done", func() bool { return rec.count(EventSucceeded) == 8 })
	require.NoError(t, stopWorker(t, w, 10*time.Second))

	byQueue := map[string]int{}
	rec.mu.Lock()
	for _, e := range rec.events {
		if e.Kind == EventSucceeded {
			byQueue[e.Queue]++
		}
	}
	rec.mu.Unlock()
	require.Equal(t, map[string]int{qs[0].KeyPrefix(): 3, qs[1].KeyPrefix(): 5}, byQueue)
	for i, want := range []int64{3, 5} {
		adm, err := NewAdmin(qs[i])
		require.NoError(t, err)
		ps, err := adm.History(ctx, 10*time.Minute)
		require.NoError(t, err)
		got := historyTotals(ps)
		require.Equal(t, want, got.Started, "queue %d", i)
		require.Equal(t, want, got.Succeeded, "queue %d", i)
	}
}
