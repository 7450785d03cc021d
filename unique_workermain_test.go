package taskqueue

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// TestWorkerMainUniqueTasks: the worker binary sweeps the free lock records it finds at start (here one whose
// task is gone), runs unique tasks, and their success frees their keys and deletes their records.
func TestWorkerMainUniqueTasks(t *testing.T) {
	t.Parallel()
	mr := miniredis.RunT(t)
	reg, ref := testRegistry(t)
	release := make(chan struct{})
	require.NoError(t, Register(ref, "ops", "report", func(ctx context.Context, _ struct{}) error {
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	}))
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	preg, _ := testRegistry(t)
	pq, err := NewRedisTaskQueue(rdb, "uniq", preg, quiet(nil))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// A record whose task is gone (as after a lost write): swept at start.
	lost := &TaskSpec{Executable: Ref("ops", "report", nil), Unique: &Unique{Key: "lost", TTL: time.Hour}}
	require.NoError(t, pq.Enqueue(ctx, lost))
	require.NoError(t, rdb.HDel(ctx, pq.keys.key(keyTasks), lost.TaskID).Err())

	spec := &TaskSpec{Executable: Ref("ops", "report", nil), Unique: &Unique{Key: "report:1", TTL: time.Hour}}
	require.NoError(t, pq.Enqueue(ctx, spec))

	done := make(chan error, 1)
	go func() {
		done <- runWorkerMain(ctx, reg, []string{"--key-prefix", "uniq", "--redis-url", miniURL(mr), "--scheduler=false"},
			envMap("TASKQUEUE_LOG_LEVEL", "error"), io.Discard)
	}()
	waitFor(t, 10*time.Second, "the start-up sweep", func() bool {
		l, err := pq.Lock(ctx, "lost")
		return err == nil && l == nil
	})
	dup := &TaskSpec{Executable: Ref("ops", "report", nil), Unique: &Unique{Key: "report:1", TTL: time.Hour}}
	require.ErrorIs(t, pq.Enqueue(ctx, dup), ErrUniqueKeyHeld, "held while the worker runs it")
	close(release)
	waitFor(t, 10*time.Second, "the record deleted after the task's success", func() bool {
		l, err := pq.Lock(ctx, "report:1")
		return err == nil && l == nil
	})
	dup.TaskID = ""
	require.NoError(t, pq.Enqueue(ctx, dup))
	require.Equal(t, Stored, dup.Enqueued)
	cancel()
	require.NoError(t, <-done)
}
