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

func TestWorkerMainParseQueues(t *testing.T) {
	t.Parallel()
	c, err := ParseWorkerMainConfig([]string{"--queues", "critical:6, default:3,low"}, nil)
	require.NoError(t, err)
	require.Equal(t, []WorkerMainQueue{{"critical", 6}, {"default", 3}, {"low", 1}}, c.Queues)
	require.False(t, c.Strict)
	c, err = ParseWorkerMainConfig([]string{"--strict"}, envMap("TASKQUEUE_QUEUES", "a:1,b.c:2"))
	require.NoError(t, err)
	require.Equal(t, []WorkerMainQueue{{"a", 1}, {"b.c", 2}}, c.Queues)
	require.True(t, c.Strict)
	c, err = ParseWorkerMainConfig(nil, nil)
	require.NoError(t, err)
	require.Empty(t, c.Queues)

	for _, tc := range []struct {
		name   string
		args   []string
		env    []string
		want   error
		substr string
	}{
		{"zero weight", []string{"--queues", "a:0,b:1"}, nil, ErrInvalidConfig, `weight "0" of queue "a"`},
		{"negative weight", []string{"--queues", "a:-2"}, nil, ErrInvalidConfig, "--queues"},
		{"weight not a number", []string{"--queues", "a:x"}, nil, ErrInvalidConfig, "from 1 to"},
		{"listed twice", []string{"--queues", "a:1,b:2,a:3"}, nil, ErrInvalidConfig, `queue "a" is listed twice`},
		{"empty entry", []string{"--queues", "a:1,,b"}, nil, ErrInvalidKeyPrefix, "queue 2"},
		{"bad prefix", []string{"--queues", "a{b}:1"}, nil, ErrInvalidKeyPrefix, "--queues"},
		{"bad env", nil, []string{"TASKQUEUE_QUEUES", "a:0"}, ErrInvalidConfig, "$TASKQUEUE_QUEUES"},
		{"with key prefix", []string{"--queues", "a", "--key-prefix", "b"}, nil, ErrInvalidConfig, "replaces --key-prefix"},
		{"strict alone", []string{"--strict"}, nil, ErrInvalidConfig, "--strict needs --queues"},
		{"strict not a bool", nil, []string{"TASKQUEUE_STRICT", "maybe", "TASKQUEUE_QUEUES", "a"}, ErrInvalidConfig, "$TASKQUEUE_STRICT"},
	} {
		c, err := ParseWorkerMainConfig(tc.args, envMap(tc.env...))
		require.Nil(t, c, tc.name)
		require.ErrorIs(t, err, tc.want, tc.name)
		require.Contains(t, err.Error(), tc.substr, tc.name)
	}
}

// TestWorkerMainRunsSeveralQueues: a worker binary given --queues runs the tasks of each queue.
func TestWorkerMainRunsSeveralQueues(t *testing.T) {
	t.Parallel()
	mr := miniredis.RunT(t)
	reg, ref := testRegistry(t)
	ran := make(chan string, 4)
	require.NoError(t, Register(ref, "mq", "work", func(ctx context.Context, _ mqArgs) error { ran <- QueueOf(ctx); return nil }))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- runWorkerMain(ctx, reg, []string{"--queues", "hi:3,lo:1", "--strict", "--worker-id", "multi", "--shutdown-grace", "2s"},
			envMap("REDIS_URL", miniURL(mr), "TASKQUEUE_LOG_LEVEL", "error"), io.Discard)
	}()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	preg, _ := testRegistry(t)
	for _, prefix := range []string{"lo", "hi"} {
		pq, err := NewRedisTaskQueue(rdb, prefix, preg, nil)
		require.NoError(t, err)
		require.NoError(t, pq.Enqueue(ctx, mqTask("t-"+prefix)))
		select {
		case got := <-ran:
			require.Equal(t, prefix, got)
		case err := <-done:
			t.Fatalf("the worker returned before running the task: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatalf("the task of %s did not run", prefix)
		}
	}
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("the worker did not return after its context was cancelled")
	}
}
