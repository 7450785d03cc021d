package taskqueue

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// groupWorkerEnv makes the test binary run groupWorkerMain instead of the tests: "<redis addr> <key prefix>".
const groupWorkerEnv = "TASKQUEUE_TEST_GROUP_WORKER"

// groupWorkerMain is a worker process whose grp.hang handler never returns: it holds its members until it is
// killed.
func groupWorkerMain() int {
	var addr, prefix string
	if _, err := fmt.Sscan(os.Getenv(groupWorkerEnv), &addr, &prefix); err != nil {
		fmt.Fprintln(os.Stderr, "group worker:", err)
		return 2
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	ref := NewReferenceResolver()
	reg := NewResolverRegistry()
	reg.MustRegister(DefaultResolverID, ref)
	MustRegister(ref, "grp", "hang", func(ctx context.Context, _ sqArgs) error {
		<-ctx.Done()
		return ctx.Err()
	})
	quiet := slog.New(slog.DiscardHandler)
	q, err := NewRedisTaskQueue(rdb, prefix, reg, &RedisConfig{Lease: 500 * time.Millisecond, Logger: quiet})
	if err != nil {
		fmt.Fprintln(os.Stderr, "group worker:", err)
		return 2
	}
	w, err := NewTaskWorker(q, &WorkerConfig{Concurrency: 8, Logger: quiet})
	if err != nil {
		fmt.Fprintln(os.Stderr, "group worker:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if err := w.Run(ctx, time.Second); err != nil {
		fmt.Fprintln(os.Stderr, "group worker:", err)
		return 1
	}
	return 0
}

// A worker SIGKILLed while it runs members of a group: the leases expire, the members are redelivered to another
// worker, and the group completes; nothing waits for a hard-coded timeout.
func TestGroupMemberOfKilledWorker(t *testing.T) {
	t.Parallel()
	s := newReal(t, &RedisConfig{Lease: 500 * time.Millisecond})
	ctx := context.Background()
	const members = 6
	specs := make([]*TaskSpec, members)
	for i := range specs {
		specs[i] = &TaskSpec{Executable: Ref("grp", "hang", sqArgs{N: i})}
	}
	require.NoError(t, RegisterResult(s.ref, "grp", "hang", func(_ context.Context, a sqArgs) (int, error) { return a.N, nil }))
	run, err := s.q.DispatchGroup(ctx, "killed", specs, nil)
	require.NoError(t, err)

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), groupWorkerEnv+"="+realRedis(t)+" "+s.q.KeyPrefix())
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Start())
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	waitFor(t, 20*time.Second, "the subprocess running every member", func() bool { return s.counts(t).Active == members })
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatal("the killed worker did not exit")
	}

	rec := &recorder{}
	startWorker(t, s.q, quietWorker(WorkerConfig{Concurrency: 8}, rec))
	res, err := run.Wait(ctx, &WaitOptions{Timeout: 20 * time.Second})
	require.NoError(t, err)
	require.Equal(t, members, res.Succeeded)
	for i, m := range res.Members {
		var v int
		require.NoError(t, m.Decode(&v))
		require.Equal(t, i, v)
	}
	// Each member ran again in the new worker as its second delivery: taken back when the killed worker's 500ms
	// lease ran out (the Wait's 20s would not cover the default 30s lease).
	rec.mu.Lock()
	defer rec.mu.Unlock()
	started := 0
	for _, e := range rec.events {
		if e.Kind == EventStarted {
			started++
			require.Equal(t, 2, e.Deliveries, "%s: redelivered after the lost lease", e.TaskID)
		}
	}
	require.Equal(t, members, started, "each member ran once in the new worker")
}
