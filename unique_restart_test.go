package taskqueue

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/graflow-go/taskqueue/internal/redistest"
)

// firedLog records the ticks schedulers stored, to check that none is stored twice.
type firedLog struct {
	mu            sync.Mutex
	stored        map[string]int // task id -> stored enqueues
	notReplicated int            // passes refused with ErrNotReplicated (a durable queue)
}

func (l *firedLog) add(e ScheduleEvent) {
	if e.Kind == ScheduleFailed && errors.Is(e.Err, ErrNotReplicated) {
		l.mu.Lock()
		l.notReplicated++
		l.mu.Unlock()
	}
	if e.Kind != ScheduleFired || e.Outcome != Stored {
		return
	}
	l.mu.Lock()
	l.stored[e.TaskID]++
	l.mu.Unlock()
}

func (l *firedLog) snapshot() map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]int, len(l.stored))
	for k, v := range l.stored {
		out[k] = v
	}
	return out
}

// runSchedulers starts n schedulers on q until the test ends, reporting into log.
func runSchedulers(t *testing.T, q *RedisTaskQueue, n int, log *firedLog) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	for range n {
		sc, err := NewScheduler(q, &SchedulerConfig{Logger: quiet(nil).Logger, OnEvent: log.add, Recheck: 200 * time.Millisecond})
		require.NoError(t, err)
		wg.Go(func() { _ = sc.Run(ctx) })
	}
}

// TestUniqueAndSchedulesAcrossRestartWithoutPersistence: Redis restarts empty (no RDB, no AOF) while unique
// tasks hold their keys, one of them running, and two schedulers fire a 1-second schedule. After it: no lock is
// stranded (the key is free for a new task at once, and the old delivery's late ack neither fails open nor
// frees the new holder's lock), and no tick is stored twice. What is lost, as docs/unique.md and
// docs/periodic.md say: the tasks, their locks and the schedules (recreated here as a deploy would).
func TestUniqueAndSchedulesAcrossRestartWithoutPersistence(t *testing.T) {
	t.Parallel()
	srv := redistest.Run(t, redistest.Options{Args: redistest.NoPersistence})
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { _ = rdb.Close() })
	reg, ref := testRegistry(t)
	require.NoError(t, Register(ref, "test", "tick", func(context.Context, map[string]int) error { return nil }))
	q, err := NewRedisTaskQueue(rdb, "restart", reg, quiet(nil))
	require.NoError(t, err)
	ctx := context.Background()

	a := uniqueSpec("k", Unique{})
	require.NoError(t, q.Enqueue(ctx, a))
	require.NoError(t, q.Enqueue(ctx, uniqueSpec("k2", Unique{Lifetime: UniqueUntilSuccess})))
	ds, err := q.Dequeue(ctx, DequeueOptions{Max: 1})
	require.NoError(t, err)
	require.Len(t, ds, 1)

	sched := &Schedule{Name: "every", Every: time.Second, Task: tickTask()}
	require.NoError(t, mustSchedules(q).Create(ctx, sched))
	log := &firedLog{stored: map[string]int{}}
	runSchedulers(t, q, 2, log)
	waitFor(t, 30*time.Second, "two ticks before the restart", func() bool { return len(log.snapshot()) >= 2 })

	srv.Kill()
	require.NoError(t, srv.Restart())
	waitFor(t, 30*time.Second, "Redis back", func() bool { return rdb.Ping(ctx).Err() == nil })

	// Unique: nothing stranded.
	adm := mustAdmin(q)
	l, err := adm.Lock(ctx, "k")
	require.NoError(t, err)
	require.Nil(t, l, "the lock went with the data")
	b := uniqueSpec("k", Unique{})
	require.NoError(t, q.Enqueue(ctx, b))
	require.Equal(t, Stored, b.Enqueued, "the key is free at once")
	require.ErrorIs(t, q.Ack(ctx, ds[0]), ErrLeaseLost, "the lost delivery's late ack")
	l, err = adm.Lock(ctx, "k")
	require.NoError(t, err)
	require.Equal(t, b.TaskID, l.TaskID)
	require.True(t, l.Held, "the late ack left the new holder's lock alone")
	require.NoError(t, q.Enqueue(ctx, uniqueSpec("k2", Unique{Lifetime: UniqueUntilSuccess})))

	// Schedules: lost with the data; recreated, they go on, and no tick is stored twice.
	_, err = mustSchedules(q).Get(ctx, "every")
	require.ErrorIs(t, err, ErrScheduleNotFound)
	require.NoError(t, mustSchedules(q).Create(ctx, sched))
	before := len(log.snapshot())
	waitFor(t, 30*time.Second, "two ticks after the restart", func() bool { return len(log.snapshot()) >= before+2 })
	for id, n := range log.snapshot() {
		require.Equal(t, 1, n, "tick %s stored %d times", id, n)
	}
}
