package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/graflow-go/taskqueue"
	"github.com/graflow-go/taskqueue/internal/redistest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	stopRealRedis()
	os.Exit(code)
}

// result is what one run of the CLI printed and returned.
type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\n--- stdout\n%s--- stderr\n%s", r.code, r.stdout, r.stderr)
}

// cliEnv runs the CLI in-process through run, the function main calls, with env as its whole environment.
func cliEnv(t *testing.T, env map[string]string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code := run(ctx, args, &out, &errb, func(k string) string { return env[k] })
	return result{code, out.String(), errb.String()}
}

// cliStdin runs the CLI with stdin as its standard input, which counts as a terminal when tty is true.
func cliStdin(t *testing.T, env map[string]string, stdin string, tty bool, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	c := &cli{stdin: strings.NewReader(stdin), stdout: &out, stderr: &errb, getenv: func(k string) string { return env[k] }, stdinTTY: tty}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code := c.run(ctx, args)
	return result{code, out.String(), errb.String()}
}

// fixture is a queue the tests fill with the library, and the environment that points the CLI at it.
type fixture struct {
	rdb   *redis.Client
	q     *taskqueue.RedisTaskQueue
	admin *taskqueue.Admin // q's
	env   map[string]string
}

// newFixture returns a queue under prefix on the Redis at addr, with one registered function, ops.send.
func newFixture(t *testing.T, addr, prefix string) *fixture {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = rdb.Close() })
	ref := taskqueue.NewReferenceResolver()
	require.NoError(t, taskqueue.Register(ref, "ops", "send", func(context.Context, struct{}) error { return nil }))
	reg := taskqueue.NewResolverRegistry()
	require.NoError(t, reg.Register(taskqueue.DefaultResolverID, ref))
	q, err := taskqueue.NewRedisTaskQueue(rdb, prefix, reg, &taskqueue.RedisConfig{Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	admin, err := taskqueue.NewAdmin(q)
	require.NoError(t, err)
	return &fixture{rdb: rdb, q: q, admin: admin, env: map[string]string{"REDIS_URL": "redis://" + addr + "/0", "TASKQUEUE_KEY_PREFIX": prefix}}
}

func newMiniFixture(t *testing.T) *fixture {
	t.Helper()
	return newFixture(t, miniredis.RunT(t).Addr(), "ops")
}

func (f *fixture) enqueue(t *testing.T, ids ...string) {
	t.Helper()
	for _, id := range ids {
		require.NoError(t, f.q.Enqueue(context.Background(), taskqueue.NewTaskSpec(id, taskqueue.Ref("ops", "send", nil))))
	}
}

// lease takes n tasks off pending.
func (f *fixture) lease(t *testing.T, n int) []*taskqueue.Delivery {
	t.Helper()
	ds, err := f.q.Dequeue(context.Background(), taskqueue.DequeueOptions{Max: n})
	require.NoError(t, err)
	require.Len(t, ds, n)
	return ds
}

// kill dead-letters new tasks with a reason.
func (f *fixture) kill(t *testing.T, reason string, ids ...string) {
	t.Helper()
	f.enqueue(t, ids...)
	for _, d := range f.lease(t, len(ids)) {
		require.NoError(t, f.q.DeadLetter(context.Background(), d, errors.New(reason)))
	}
}

// counts reads the queue's counts through its Admin.
func (f *fixture) counts(t *testing.T) taskqueue.Counts {
	t.Helper()
	st, err := f.admin.Stats(context.Background())
	require.NoError(t, err)
	return st.Counts
}

// closedPort returns a loopback address where nothing listens: a CLI pointed at it can reach no Redis.
func closedPort(t *testing.T) string {
	t.Helper()
	p, err := redistest.FreePort()
	require.NoError(t, err)
	return fmt.Sprintf("127.0.0.1:%d", p)
}

var realSrv struct {
	once sync.Once
	srv  *redistest.Server
	err  error
}

// realRedis starts one redis-server on a free loopback port for the whole test binary (never the one on 6379).
// Without a redis-server binary the test is skipped loudly, except under CI, where it fails.
func realRedis(t *testing.T) string {
	t.Helper()
	realSrv.once.Do(func() {
		realSrv.srv, realSrv.err = redistest.Start(redistest.Options{Args: redistest.NoPersistence})
	})
	if realSrv.err != nil {
		redistest.SkipOrFail(t, realSrv.err)
	}
	return realSrv.srv.Addr
}

func stopRealRedis() {
	if realSrv.srv != nil {
		realSrv.srv.Stop()
	}
}
