package taskqueue

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// scriptCounter is a go-redis hook that counts the script calls (EVALSHA, EVAL) a client made (once answered),
// and keeps the earliest due entry that the last schedule_due.lua call of a scheduler's pass replied.
type scriptCounter struct {
	n        atomic.Int64
	earliest atomic.Int64
}

// noteDue records the earliest due entry of a schedule_due.lua reply.
func (c *scriptCounter) noteDue(cmd redis.Cmder) {
	args := cmd.Args()
	if len(args) < 2 || (args[1] != scheduleDueScript.Hash() && args[1] != scheduleDueSrc) {
		return
	}
	if res, err := cmd.(*redis.Cmd).Slice(); err == nil && len(res) >= 2 {
		if e, ok := res[1].(int64); ok {
			c.earliest.Store(e)
		}
	}
}

func (c *scriptCounter) count(cmd redis.Cmder) {
	if n := strings.ToLower(cmd.Name()); n == "evalsha" || n == "eval" {
		c.n.Add(1)
	}
}

func (c *scriptCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *scriptCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		c.count(cmd)
		c.noteDue(cmd)
		return err
	}
}

func (c *scriptCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		for _, cmd := range cmds {
			c.count(cmd)
		}
		return err
	}
}

// idleScheduler runs a scheduler of s's queue on a client of its own whose script calls it counts, and returns
// once the scheduler has made its first pass and subscribed to the schedules' wake-up channel: it is idle.
func idleScheduler(t *testing.T, s *setup, cfg SchedulerConfig) (*scriptCounter, *eventLog) {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: s.rdb.Options().Addr})
	t.Cleanup(func() { _ = rdb.Close() })
	calls := &scriptCounter{}
	calls.earliest.Store(-2)
	rdb.AddHook(calls)
	q, err := NewRedisTaskQueue(rdb, s.q.KeyPrefix(), s.reg, quiet(nil))
	require.NoError(t, err)
	log := &eventLog{}
	cfg.Logger, cfg.OnEvent = quiet(nil).Logger, log.add
	sc, err := NewScheduler(q, &cfg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = sc.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	ch := q.keys.scheduleWake()
	waitFor(t, 5*time.Second, "the scheduler's first pass and subscription", func() bool {
		subs, err := s.rdb.PubSubNumSub(context.Background(), ch).Result()
		require.NoError(t, err)
		// A due reply noted: the first pass is done (its EVALSHA, or the EVAL after a NOSCRIPT, was answered).
		return calls.earliest.Load() == -1 && subs[ch] >= 1
	})
	return calls, log
}

// TestSchedulerIdleMakesNoCalls: a scheduler of a queue without schedules makes no script call once idle (it
// used to make one a second): a queue that does not use schedules pays nothing for the scheduler every worker
// binary runs.
func TestSchedulerIdleMakesNoCalls(t *testing.T) {
	t.Parallel()
	s := newReal(t, nil)
	calls, log := idleScheduler(t, s, SchedulerConfig{})
	before := calls.n.Load()
	// An absence can only be observed over a window: 2.5 s held 2 polls of the former 1 s interval.
	<-time.After(2500 * time.Millisecond)
	require.Equal(t, before, calls.n.Load(), "no script call while idle")
	require.Empty(t, log.of(ScheduleFailed))
}

// TestSchedulerWokenByChange: a schedule created through another queue handle (another process) is fired by an
// already idle scheduler whose safety recheck is an hour away, and so are a resume and an update; each change
// wakes it through the wake-up channel.
func TestSchedulerWokenByChange(t *testing.T) {
	t.Parallel()
	s := newReal(t, nil)
	require.NoError(t, Register(s.ref, "test", "tick", func(context.Context, struct{}) error { return nil }))
	calls, log := idleScheduler(t, s, SchedulerConfig{Recheck: time.Hour})
	ctx := context.Background()
	other := mustSchedules(s.q) // s.q has a client of its own: the scheduler's is another
	require.NoError(t, other.Create(ctx, &Schedule{Name: "sec", Every: time.Second, Task: &TaskSpec{Executable: Ref("test", "tick", nil)}}))
	waitFor(t, 5*time.Second, "the new schedule's first tick fired by the idle scheduler", func() bool {
		return len(log.of(ScheduleFired)) >= 1
	})
	require.Equal(t, "sec", log.of(ScheduleFired)[0].Schedule)

	// Paused, the scheduler goes idle again: the pause wakes it for a pass that finds nothing in the due index
	// (earliest -1, which no pass before the pause saw: the schedule was in it), after which it sleeps for the
	// hour. A resume from elsewhere wakes it.
	calls.earliest.Store(-2)
	_, err := other.Pause(ctx, "sec")
	require.NoError(t, err)
	fired := len(log.of(ScheduleFired))
	waitFor(t, 5*time.Second, "a pass that sees nothing due", func() bool { return calls.earliest.Load() == -1 })
	_, err = other.Resume(ctx, "sec")
	require.NoError(t, err)
	waitFor(t, 5*time.Second, "a tick after the resume", func() bool { return len(log.of(ScheduleFired)) > fired })
	require.Empty(t, log.of(ScheduleFailed))
}
