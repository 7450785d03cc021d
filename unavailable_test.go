package taskqueue

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

type outcomeArgs struct {
	V int `json:"v"`
}

func registerOutcome(t *testing.T, ref *ReferenceResolver) {
	require.NoError(t, Register(ref, "outcome", "f", func(context.Context, outcomeArgs) error { return nil }))
}

// closedAddr returns a loopback address on which nothing listens.
func closedAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

func TestRedisDownIsUnavailable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: closedAddr(t), MaxRetries: -1, DialTimeout: time.Second})
	t.Cleanup(func() { _ = rdb.Close() })
	reg, ref := testRegistry(t)
	registerOutcome(t, ref)
	q, err := NewRedisTaskQueue(rdb, "down", reg, quiet(nil))
	require.NoError(t, err)
	sq, err := NewShardedQueue(rdb, "down", 2, reg, quiet(nil))
	require.NoError(t, err)

	for name, tq := range map[string]TaskQueue{"redis": q, "sharded": sq} {
		spec := &TaskSpec{Executable: Ref("outcome", "f", outcomeArgs{V: 1})}
		err := tq.Enqueue(ctx, spec)
		require.ErrorIs(t, err, ErrUnavailable, name)
		require.ErrorIs(t, err, ErrTransient, name)
		var oe *net.OpError
		require.ErrorAs(t, err, &oe, "%s: the cause stays in the chain", name)
		require.NotEmpty(t, spec.TaskID, "%s: the id is written back for a safe retry", name)
		require.ErrorIs(t, tq.EnqueueBatch(ctx, []*TaskSpec{spec}), ErrUnavailable, name)
	}
	_, err = mustAdmin(q).Stats(ctx)
	require.ErrorIs(t, err, ErrUnavailable, "admin")
	_, err = mustAdmin(q).Inspect(ctx, "x")
	require.ErrorIs(t, err, ErrUnavailable, "admin inspect")
}

func TestClassifyUnavailable(t *testing.T) {
	t.Parallel()
	for _, err := range []error{
		&net.OpError{Op: "dial", Net: "tcp", Err: os.ErrDeadlineExceeded},
		&net.DNSError{Err: "no such host", Name: "redis"},
		redis.ErrPoolTimeout,
	} {
		require.ErrorIs(t, classify(err), ErrUnavailable, "%v", err)
		require.ErrorIs(t, classify(err), ErrTransient, "%v", err)
	}
	reset := &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}
	require.ErrorIs(t, classify(reset), ErrTransient)
	require.NotErrorIs(t, classify(reset), ErrUnavailable, "a lost reply is transient, not unreachable")
}

// TestRunWorkerMainHidesRedisLog runs RunWorkerMain in a child process against a closed port: the worker fails
// with its own error, and go-redis's own pool lines ("redis: ... pool.go:...") do not reach standard error.
func TestRunWorkerMainHidesRedisLog(t *testing.T) {
	if addr := os.Getenv("TQ_WORKERMAIN_CHILD"); addr != "" {
		reg, ref := testRegistry(t)
		registerOutcome(t, ref)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err := RunWorkerMain(ctx, reg, []string{"--redis-url", "redis://" + addr})
		require.ErrorIs(t, err, ErrUnavailable)
		return
	}
	t.Parallel()
	cmd := exec.Command(os.Args[0], "-test.run=^TestRunWorkerMainHidesRedisLog$", "-test.count=1")
	cmd.Env = append(os.Environ(), "TQ_WORKERMAIN_CHILD="+closedAddr(t))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(t, err, "child: %s\n%s", out, stderr.String())
	require.NotContains(t, stderr.String(), "pool.go", "go-redis's own log lines are hidden")
	require.NotContains(t, stderr.String(), "redis: connection pool")
}
