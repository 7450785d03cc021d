package taskqueue

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

func TestWorkerMainSchedulerFlag(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		args []string
		env  []string
		want bool
	}{
		{nil, nil, true},
		{[]string{"--scheduler=false"}, nil, false},
		{nil, []string{"TASKQUEUE_SCHEDULER", "0"}, false},
		{[]string{"--scheduler"}, []string{"TASKQUEUE_SCHEDULER", "false"}, true},
	} {
		cfg, err := ParseWorkerMainConfig(c.args, envMap(c.env...))
		require.NoError(t, err)
		require.Equal(t, c.want, cfg.Scheduler, "%v %v", c.args, c.env)
	}
	_, err := ParseWorkerMainConfig(nil, envMap("TASKQUEUE_SCHEDULER", "maybe"))
	require.ErrorIs(t, err, ErrInvalidConfig)
	require.Contains(t, err.Error(), "$TASKQUEUE_SCHEDULER")
}

// TestWorkerMainFiresSchedules: a worker binary fires a schedule created by another process and runs its task;
// with --scheduler=false it fires nothing.
func TestWorkerMainFiresSchedules(t *testing.T) {
	t.Parallel()
	mr := miniredis.RunT(t)
	reg, ref := testRegistry(t)
	ran := make(chan string, 16)
	require.NoError(t, Register(ref, "ops", "beat", func(ctx context.Context, _ struct{}) error {
		ran <- "beat"
		return nil
	}))
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	preg, _ := testRegistry(t)
	pq, err := NewRedisTaskQueue(rdb, "sched", preg, nil)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	require.NoError(t, mustSchedules(pq).Create(ctx, &Schedule{Name: "beat", Every: time.Second, Task: &TaskSpec{Executable: Ref("ops", "beat", nil)}}))

	// Without a scheduler, nothing fires: the schedule's first tick passes unfired.
	off, offCancel := context.WithCancel(ctx)
	offDone := make(chan error, 1)
	go func() {
		offDone <- runWorkerMain(off, reg, []string{"--key-prefix", "sched", "--scheduler=false", "--redis-url", miniURL(mr)},
			envMap("TASKQUEUE_LOG_LEVEL", "error"), io.Discard)
	}()
	waitFor(t, 10*time.Second, "the first tick to pass", func() bool {
		info, err := mustSchedules(pq).Get(ctx, "beat")
		require.NoError(t, err)
		now, err := rdb.Time(ctx).Result()
		require.NoError(t, err)
		return now.After(info.Next.Add(100 * time.Millisecond))
	})
	offCancel()
	require.NoError(t, <-offDone)
	require.Empty(t, ran)

	done := make(chan error, 1)
	go func() {
		done <- runWorkerMain(ctx, reg, []string{"--key-prefix", "sched", "--redis-url", miniURL(mr)},
			envMap("TASKQUEUE_LOG_LEVEL", "error"), io.Discard)
	}()
	select {
	case <-ran:
	case err := <-done:
		t.Fatalf("the worker returned: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("timed out waiting for a tick's task to run")
	}
	// The scheduler records the tick after enqueueing its task, so the task may run before the record lands.
	waitFor(t, 10*time.Second, "the schedule to record its tick", func() bool {
		info, err := mustSchedules(pq).Get(ctx, "beat")
		require.NoError(t, err)
		return strings.HasPrefix(info.LastTaskID, "sched:beat:")
	})
	cancel()
	require.NoError(t, <-done)
}
