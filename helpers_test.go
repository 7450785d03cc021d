package taskqueue

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/graflow-go/taskqueue/internal/redistest"
)

func TestMain(m *testing.M) {
	if os.Getenv(groupWorkerEnv) != "" {
		os.Exit(groupWorkerMain()) // this binary runs as a worker subprocess of TestGroupMemberOfKilledWorker
	}
	code := m.Run()
	stopRealRedis()
	if code == 0 {
		if leaks := leakedGoroutines(5 * time.Second); leaks != "" {
			fmt.Fprintf(os.Stderr, "goroutine leak after tests:\n%s\n", leaks)
			code = 1
		}
	}
	os.Exit(code)
}

// leakedGoroutines waits up to timeout for goroutines running this package's code to end and returns the
// stacks of those that did not.
func leakedGoroutines(timeout time.Duration) string {
	deadline := time.Now().Add(timeout)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var leaks []string
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "graflow-go/taskqueue.") && !strings.Contains(g, "leakedGoroutines") &&
				!strings.Contains(g, "TestMain") {
				leaks = append(leaks, g)
			}
		}
		if len(leaks) == 0 {
			return ""
		}
		if time.Now().After(deadline) {
			return strings.Join(leaks, "\n\n")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// testRegistry returns a registry whose default resolver is ref.
func testRegistry(t testing.TB) (*ResolverRegistry, *ReferenceResolver) {
	t.Helper()
	ref := NewReferenceResolver()
	reg := NewResolverRegistry()
	require.NoError(t, reg.Register(DefaultResolverID, ref))
	return reg, ref
}

// setup is the bundle most tests start from.
type setup struct {
	mr  *miniredis.Miniredis // nil on a real Redis
	rdb *redis.Client
	q   *RedisTaskQueue
	adm *Admin // q's
	reg *ResolverRegistry
	ref *ReferenceResolver
}

// quiet returns cfg (or a new config) with a logger that discards, so that parked-task warnings do not flood the
// test output.
func quiet(cfg *RedisConfig) *RedisConfig {
	c := RedisConfig{}
	if cfg != nil {
		c = *cfg
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return &c
}

// mustAdmin returns the [Admin] of q, which is never nil in a test.
func mustAdmin(q AdminTarget) *Admin {
	a, err := NewAdmin(q)
	if err != nil {
		panic(err)
	}
	return a
}

// countsOf reads q's counts: those of its [Admin.Stats], or a [MemoryQueue]'s own Stats.
func countsOf(ctx context.Context, q TaskQueue) (Counts, error) {
	if m, ok := q.(*MemoryQueue); ok {
		st, err := m.Stats(ctx)
		return st.Counts, err
	}
	st, err := mustAdmin(q.(AdminTarget)).Stats(ctx)
	return st.Counts, err
}

// envelopeOf returns the stored envelope of a task in any state, from [Admin.Inspect].
func envelopeOf(ctx context.Context, q AdminTarget, taskID string) (string, error) {
	info, err := mustAdmin(q).Inspect(ctx, taskID)
	return info.Envelope, err
}

// deadLetterOf returns a dead letter from [Admin.Inspect], or an error wrapping [ErrNotFound] when the task is
// not dead.
func deadLetterOf(ctx context.Context, q AdminTarget, taskID string) (TaskInfo, error) {
	info, err := mustAdmin(q).Inspect(ctx, taskID)
	if err == nil && info.State != StateDead {
		return TaskInfo{}, fmt.Errorf("%w: %s is %s, not dead", ErrNotFound, taskID, info.State)
	}
	return info, err
}

// newMini starts a miniredis for the test and a queue on it.
func newMini(t testing.TB, cfg *RedisConfig) *setup {
	t.Helper()
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	reg, ref := testRegistry(t)
	q, err := NewRedisTaskQueue(rdb, "test", reg, quiet(cfg))
	require.NoError(t, err)
	return &setup{mr: mr, rdb: rdb, q: q, adm: mustAdmin(q), reg: reg, ref: ref}
}

// newReal returns a queue under a prefix of its own on the real redis-server that this test binary started.
func newReal(t testing.TB, cfg *RedisConfig) *setup {
	t.Helper()
	addr := realRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = rdb.Close() })
	reg, ref := testRegistry(t)
	prefix := "t-" + regexp.MustCompile(`[^A-Za-z0-9_.-]+`).ReplaceAllString(t.Name(), "_") + "-" + newID()[:6]
	q, err := NewRedisTaskQueue(rdb, prefix, reg, quiet(cfg))
	require.NoError(t, err)
	return &setup{rdb: rdb, q: q, adm: mustAdmin(q), reg: reg, ref: ref}
}

// newOwnReal returns a queue on a redis-server of the test's own (ownRedis): for a test that changes what every
// client of a server sees, such as SCRIPT FLUSH, which another test's EVAL on the shared server would undo.
func newOwnReal(t *testing.T, cfg *RedisConfig) *setup {
	t.Helper()
	rdb := ownRedis(t)
	reg, ref := testRegistry(t)
	q, err := NewRedisTaskQueue(rdb, "own", reg, quiet(cfg))
	require.NoError(t, err)
	return &setup{rdb: rdb, q: q, reg: reg, ref: ref}
}

var realSrv struct {
	once sync.Once
	srv  *redistest.Server
	err  error
}

// realRedis starts one redis-server on a free loopback port for the whole test binary. Without a redis-server
// binary the test is skipped loudly, except under CI, where it fails.
func realRedis(t testing.TB) string {
	t.Helper()
	realSrv.once.Do(func() {
		realSrv.srv, realSrv.err = redistest.Start(redistest.Options{Args: redistest.NoPersistence})
	})
	if realSrv.err != nil {
		redistest.SkipOrFail(t, realSrv.err)
	}
	return realSrv.srv.Addr
}

// ownRedis starts a redis-server for one test alone (for what the shared one must not see: CLIENT LIST, WAIT, a
// server that is stopped) and returns a client to it; both go at the end of the test.
func ownRedis(t *testing.T, extra ...string) *redis.Client {
	t.Helper()
	srv := redistest.Run(t, redistest.Options{Args: append(slices.Clone(redistest.NoPersistence), extra...)})
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

func stopRealRedis() {
	if realSrv.srv != nil {
		realSrv.srv.Stop()
	}
}

// waitFor polls cond until it holds or the timeout passes (a wait with a timeout, not a sleep for work).
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// goroutineID returns the id of the calling goroutine, as stack traces print it.
func goroutineID() string {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)] // "goroutine 123 [running]:..."
	return strings.Fields(string(buf))[1]
}

// childIn reports whether a goroutine that goroutine parent started is now inside fn, a function as stack traces
// name it (e.g. "taskqueue.waitChange("): how a test waits for its background call to block, instead of
// sleeping for a guess of how long that takes.
func childIn(parent, fn string) bool {
	buf := make([]byte, 8<<20)
	buf = buf[:runtime.Stack(buf, true)]
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, fn) && strings.Contains(g, " in goroutine "+parent+"\n") {
			return true
		}
	}
	return false
}

type addArgs struct {
	A int64 `json:"a"`
	B int64 `json:"b"`
}
