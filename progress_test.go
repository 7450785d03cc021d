package taskqueue

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// setCounter counts the progress writes a client sends.
type setCounter struct{ n atomic.Int64 }

func (c *setCounter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (c *setCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (c *setCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if args := cmd.Args(); cmd.Name() == "set" && len(args) > 1 {
			if k, _ := args[1].(string); strings.Contains(k, ":progress:") {
				c.n.Add(1)
			}
		}
		return next(ctx, cmd)
	}
}

// TestProgressThrottledUnderChattyHandler: 100,000 reports in a loop cost a handful of writes (at most one per
// ProgressInterval, plus the last), and the last report is what stays readable after the task.
func TestProgressThrottledUnderChattyHandler(t *testing.T) {
	t.Parallel()
	s := newReal(t, nil)
	ctx := context.Background()
	counter := &setCounter{}
	s.rdb.AddHook(counter)
	var took atomic.Int64
	seen := make(chan TaskProgress, 1)
	require.NoError(t, Register(s.ref, "m", "chatty", func(ctx context.Context, _ struct{}) error {
		start := time.Now()
		for i := range 100_000 {
			if err := ReportProgress(ctx, float64(i)/1000, "step"); err != nil {
				return err
			}
		}
		took.Store(int64(time.Since(start)))
		p, err := mustAdmin(s.q).TaskProgress(ctx, "p1")
		if err == nil {
			seen <- p
		}
		return ReportProgress(ctx, 100, "done")
	}))
	rec := &recorder{}
	startWorker(t, s.q, quietWorker(WorkerConfig{Concurrency: 1}, rec))
	require.NoError(t, s.q.Enqueue(ctx, NewTaskSpec("p1", Ref("m", "chatty", nil))))
	waitFor(t, 30*time.Second, "the task", func() bool { return rec.count(EventSucceeded) == 1 })
	waitFor(t, 10*time.Second, "the final progress", func() bool {
		p, err := s.adm.TaskProgress(ctx, "p1")
		return err == nil && p.Percent == 100
	})
	p, err := s.adm.TaskProgress(ctx, "p1")
	require.NoError(t, err)
	require.Equal(t, "done", p.Message)
	running := <-seen // read while the task ran
	require.Equal(t, "p1", running.TaskID)
	bound := int64(time.Duration(took.Load())/ProgressInterval) + 3
	require.LessOrEqual(t, counter.n.Load(), bound, "writes for 100,000 reports in %s", time.Duration(took.Load()))
	t.Logf("100,000 reports in %s: %d writes", time.Duration(took.Load()), counter.n.Load())
}

func TestProgressBoundsAndErrors(t *testing.T) {
	t.Parallel()
	s := newMini(t, nil)
	ctx := context.Background()
	require.ErrorIs(t, ReportProgress(ctx, 1, "x"), ErrInvalidProgress) // outside a task
	errs := make(chan error, 3)
	require.NoError(t, Register(s.ref, "m", "p", func(ctx context.Context, _ struct{}) error {
		errs <- ReportProgress(ctx, -1, "")
		errs <- ReportProgress(ctx, 101, "")
		return ReportProgress(ctx, 42, strings.Repeat("é", 300))
	}))
	rec := &recorder{}
	startWorker(t, s.q, quietWorker(WorkerConfig{Concurrency: 1}, rec))
	require.NoError(t, s.q.Enqueue(ctx, NewTaskSpec("p1", Ref("m", "p", nil))))
	waitFor(t, 20*time.Second, "the task", func() bool { return rec.count(EventSucceeded) == 1 })
	require.ErrorIs(t, <-errs, ErrInvalidProgress)
	require.ErrorIs(t, <-errs, ErrInvalidProgress)
	p, err := s.adm.TaskProgress(ctx, "p1")
	require.NoError(t, err)
	require.InDelta(t, 42, p.Percent, 0)
	require.True(t, p.Truncated)
	require.LessOrEqual(t, len(p.Message), MaxProgressMessage)
	require.True(t, strings.HasSuffix(p.Message, "…"))

	_, err = s.adm.TaskProgress(ctx, "nope")
	require.ErrorIs(t, err, ErrNotFound)
	require.NoError(t, s.q.Enqueue(ctx, NewTaskSpec("quiet", Ref("test", "noop", nil))))
	waitFor(t, 20*time.Second, "the second task", func() bool { return rec.count(EventSucceeded) == 2 })
	waitFor(t, 20*time.Second, "its ack", func() bool {
		_, err := s.adm.TaskProgress(ctx, "quiet")
		return err != nil
	})
	_, err = s.adm.TaskProgress(ctx, "quiet")
	require.ErrorIs(t, err, ErrAlreadyFinished)
}
