package taskqueue

import (
	"context"
	"errors"
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

// stallingQueue wraps a queue whose pickups can be made to hang (as on a frozen Redis, until the caller's context
// ends) or to fail (as on a Redis that is down). The worker picks up through dequeueRaw.
type stallingQueue struct {
	TaskQueue
	hang    atomic.Bool
	fail    atomic.Bool
	release chan struct{} // closed to end the hanging pickups
}

func (s *stallingQueue) dequeueRaw(ctx context.Context, opts DequeueOptions) (leased, error) {
	if s.hang.Load() {
		select {
		case <-ctx.Done():
			return leased{}, ctx.Err()
		case <-s.release:
		}
	}
	if s.fail.Load() {
		return leased{}, errors.New("dial tcp 127.0.0.1:1: connect: connection refused")
	}
	return s.TaskQueue.dequeueRaw(ctx, opts)
}

func TestWorkerHealthShowsAHangingPickup(t *testing.T) {
	t.Parallel()
	q := NewMemoryQueue(time.Second, 0)
	defer q.Close()
	sq := &stallingQueue{TaskQueue: q, release: make(chan struct{})}
	w := startWorker(t, sq, quietWorker(WorkerConfig{BlockTimeout: 20 * time.Millisecond, ReapInterval: -1}, nil))
	waitFor(t, 5*time.Second, "a first pickup", func() bool { return !w.Health().LastPickup.IsZero() })
	h := w.Health()
	require.NoError(t, h.Err)
	require.True(t, h.Running)
	require.Equal(t, 2*20*time.Millisecond+time.Second, h.StuckAfter)

	sq.hang.Store(true)
	waitFor(t, 10*time.Second, "the worker reported stuck", func() bool { return w.Health().Err != nil })
	h = w.Health()
	require.ErrorIs(t, h.Err, ErrWorkerStuck)
	// The hanging pickup began after the last successful one ended: not reported before the bound since then.
	require.GreaterOrEqual(t, time.Since(h.LastPickup), h.StuckAfter, "not reported before the bound")
	require.False(t, h.PickupWaitingSince.IsZero())
	require.Contains(t, h.Err.Error(), "no successful pickup for")

	sq.hang.Store(false)
	releasedAt := time.Now()
	close(sq.release)
	waitFor(t, 5*time.Second, "the worker recovered", func() bool { return w.Health().Err == nil })
	h = w.Health()
	require.True(t, h.PickupWaitingSince.IsZero() || h.PickupWaitingSince.After(releasedAt), "a new pickup, if any")
	require.True(t, h.LastPickup.After(releasedAt))
	require.NoError(t, h.LastPickupError)
}

func TestWorkerHealthShowsFailingPickups(t *testing.T) {
	t.Parallel()
	q := NewMemoryQueue(time.Second, 0)
	defer q.Close()
	sq := &stallingQueue{TaskQueue: q}
	sq.fail.Store(true)
	started := time.Now() // before the worker's first pickup began
	w := startWorker(t, sq, quietWorker(WorkerConfig{BlockTimeout: 20 * time.Millisecond, ReapInterval: -1}, nil))
	waitFor(t, 10*time.Second, "the worker reported stuck", func() bool { return w.Health().Err != nil })
	h := w.Health()
	require.ErrorIs(t, h.Err, ErrWorkerStuck)
	require.GreaterOrEqual(t, time.Since(started), h.StuckAfter)
	require.ErrorContains(t, h.LastPickupError, "connection refused")
	require.Contains(t, h.Err.Error(), "connection refused", "the cause is in the message")
	require.True(t, h.LastPickup.IsZero(), "never picked up")

	sq.fail.Store(false) // the pickup backoff is at most 5s
	waitFor(t, 10*time.Second, "the worker recovered", func() bool { return w.Health().Err == nil })
}

func TestWorkerHealthBusyIsNotStuck(t *testing.T) {
	t.Parallel()
	q := NewMemoryQueue(300*time.Millisecond, 0)
	defer q.Close()
	sq := &stallingQueue{TaskQueue: q, release: make(chan struct{})}
	finish := make(chan struct{})
	long := Func(func(ctx context.Context) error {
		select {
		case <-finish:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	require.NoError(t, q.Enqueue(context.Background(), NewTaskSpec("long", long)))
	w := startWorker(t, sq, quietWorker(WorkerConfig{Concurrency: 1, BlockTimeout: 20 * time.Millisecond, ReapInterval: -1}, nil))
	waitFor(t, 5*time.Second, "the task running", func() bool { return w.Health().InFlight == 1 })
	// The only slot is taken: the pickup loop waits for it, not for Redis. Hanging pickups would not matter.
	sq.hang.Store(true)
	start := time.Now()
	for time.Since(start) < 2*w.Health().StuckAfter {
		h := w.Health()
		require.NoError(t, h.Err, "a busy worker is not stuck")
		require.True(t, h.PickupWaitingSince.IsZero())
		time.Sleep(50 * time.Millisecond) // sampling a state over time, not waiting for work
	}
	require.False(t, w.Health().LastHeartbeat.IsZero(), "the lease was renewed")
	require.True(t, w.Health().LastAck.IsZero())
	sq.hang.Store(false)
	close(sq.release)
	close(finish)
	waitFor(t, 5*time.Second, "the ack", func() bool { return !w.Health().LastAck.IsZero() })
	require.Equal(t, 0, w.Health().InFlight)
}

func TestWorkerHealthNotRunning(t *testing.T) {
	t.Parallel()
	q := NewMemoryQueue(time.Second, 0)
	defer q.Close()
	w, err := NewTaskWorker(q, quietWorker(WorkerConfig{Name: "idle", ReapInterval: -1}, nil))
	require.NoError(t, err)
	h := w.Health()
	require.ErrorIs(t, h.Err, ErrClosed)
	require.False(t, h.Running)
	require.NoError(t, w.Start(context.Background()))
	waitFor(t, 5*time.Second, "running and healthy", func() bool { return w.Health().Err == nil })
	require.NoError(t, stopWorker(t, w, time.Second))
	require.ErrorIs(t, w.Health().Err, ErrClosed)
	require.NotErrorIs(t, w.Health().Err, ErrWorkerStuck)
}

// logLines records the messages a logger receives.
type logLines struct {
	mu   sync.Mutex
	msgs []string
}

func (l *logLines) Enabled(context.Context, slog.Level) bool { return true }
func (l *logLines) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	l.msgs = append(l.msgs, r.Message)
	l.mu.Unlock()
	return nil
}
func (l *logLines) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logLines) WithGroup(string) slog.Handler      { return l }

func (l *logLines) count(msg string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, m := range l.msgs {
		if m == msg {
			n++
		}
	}
	return n
}

func TestWatchHealthLogsStuckAndRecovered(t *testing.T) {
	t.Parallel()
	q := NewMemoryQueue(time.Second, 0)
	defer q.Close()
	sq := &stallingQueue{TaskQueue: q, release: make(chan struct{})}
	w := startWorker(t, sq, quietWorker(WorkerConfig{BlockTimeout: 20 * time.Millisecond, ReapInterval: -1}, nil))
	lines := &logLines{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.watchHealth(ctx, slog.New(lines)) }()
	defer func() { cancel(); <-done }()

	sq.hang.Store(true)
	waitFor(t, 10*time.Second, "the stuck log", func() bool { return lines.count("taskqueue: worker stuck") == 1 })
	sq.hang.Store(false)
	close(sq.release)
	waitFor(t, 10*time.Second, "the recovery log", func() bool { return lines.count("taskqueue: worker recovered") == 1 })
	require.Equal(t, 1, lines.count("taskqueue: worker stuck"), "logged once per stuck stretch")
}

func TestNewTaskWorkerWarnsOfAClientThatIgnoresDeadlines(t *testing.T) {
	t.Parallel()
	mr := miniredis.RunT(t)
	reg, _ := testRegistry(t)
	cases := []struct {
		name string
		opts redis.Options
		warn bool
	}{
		{"defaults", redis.Options{}, true},
		{"no read timeout", redis.Options{ReadTimeout: -1}, true},
		{"timeouts below the heartbeat", redis.Options{ReadTimeout: 200 * time.Millisecond, WriteTimeout: 200 * time.Millisecond}, false},
		{"context deadlines honoured", redis.Options{ContextTimeoutEnabled: true}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := c.opts
			o.Addr = mr.Addr()
			rdb := redis.NewClient(&o)
			defer rdb.Close()
			q, err := NewRedisTaskQueue(rdb, "warn", reg, quiet(&RedisConfig{Lease: 900 * time.Millisecond}))
			require.NoError(t, err)
			lines := &logLines{}
			_, err = NewTaskWorker(q, &WorkerConfig{Logger: slog.New(lines)})
			require.NoError(t, err)
			n := 0
			for _, m := range lines.msgs {
				if strings.HasPrefix(m, "taskqueue: the Redis client ignores context deadlines") {
					n++
				}
			}
			require.Equal(t, map[bool]int{true: 1, false: 0}[c.warn], n)
		})
	}
	// A memory queue has no client to warn about.
	mq := NewMemoryQueue(time.Second, 0)
	defer mq.Close()
	lines := &logLines{}
	_, err := NewTaskWorker(mq, &WorkerConfig{Logger: slog.New(lines)})
	require.NoError(t, err)
	require.Empty(t, lines.msgs)
}
