package taskqueue

import (
	"bytes"
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

// testRegistry returns a registry whose default resolver is ref, which holds one function, test.noop, so that a
// worker may start on it (TaskWorker.Start refuses a registry that can resolve no task); tests register theirs.
func testRegistry(t testing.TB) (*ResolverRegistry, *ReferenceResolver) {
	t.Helper()
	ref := NewReferenceResolver()
	require.NoError(t, Register(ref, "test", "noop", func(context.Context, struct{}) error { return nil }))
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

// backends runs a test against miniredis and against the real redis-server the test binary starts.
func backends(t *testing.T, cfg *RedisConfig, fn func(t *testing.T, s *setup)) {
	t.Helper()
	for _, b := range []struct {
		name string
		mk   func(testing.TB, *RedisConfig) *setup
	}{{"mini", newMini}, {"real", newReal}} {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			fn(t, b.mk(t, cfg))
		})
	}
}

// lease dequeues without blocking and requires exactly n deliveries.
func (s *setup) lease(t *testing.T, n int) []*Delivery {
	t.Helper()
	ds, err := s.q.Dequeue(context.Background(), DequeueOptions{Max: max(n, 1)})
	require.NoError(t, err)
	require.Len(t, ds, n)
	return ds
}

// advance moves the clock that leases and due times follow: miniredis's, or the real one by waiting.
func (s *setup) advance(d time.Duration) {
	if s.mr != nil {
		now, _ := s.adm.ServerTime(context.Background())
		s.mr.SetTime(now.Add(d))
		return
	}
	time.Sleep(d)
}

// writeRaw stores a hand-made envelope as a pending task, as a hostile or foreign producer would.
func (s *setup) writeRaw(t *testing.T, id, raw string) {
	t.Helper()
	ctx := context.Background()
	require.NoError(t, s.rdb.HSet(ctx, s.q.keys.key(keyTasks), id, raw).Err())
	require.NoError(t, s.rdb.RPush(ctx, s.q.keys.key(keyPending), id).Err())
}

// counts reads the counts of the queue's [Admin.Stats].
func (s *setup) counts(t *testing.T) Counts {
	t.Helper()
	st, err := countsOf(context.Background(), s.q)
	require.NoError(t, err)
	return st
}

func ids(ds []*Delivery) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.Spec.TaskID
	}
	return out
}

type dequeueResult struct {
	ds  []*Delivery
	err error
	at  time.Time // when Dequeue returned
}

// dequeueAsync runs one blocking Dequeue (up to 5 s, consumer c) in the background.
func (s *setup) dequeueAsync(c string) <-chan dequeueResult {
	got := make(chan dequeueResult, 1)
	go func() {
		ds, err := s.q.Dequeue(context.Background(), DequeueOptions{Max: 1, Wait: 5 * time.Second, Consumer: c})
		got <- dequeueResult{ds, err, time.Now()}
	}()
	return got
}

// waitForBlocked waits until the pickup that the calling goroutine started (dequeueAsync) is in its blocking call
// and, on a real Redis, until the server lists a blocked client (miniredis lists none). Whether the wait began
// first changes no outcome that the tests check, only which path they take.
func waitForBlocked(t *testing.T, s *setup) {
	t.Helper()
	me := goroutineID()
	waitFor(t, 5*time.Second, "the pickup in its blocking call", func() bool { return childIn(me, "taskqueue.(*RedisTaskQueue).block(") })
	if s.mr != nil {
		return
	}
	waitFor(t, 5*time.Second, "a blocked client", func() bool {
		info, err := s.rdb.Info(context.Background(), "clients").Result()
		return err == nil && !strings.Contains(info, "blocked_clients:0")
	})
}

// syncBuffer is a log sink that a worker's goroutines write to while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// mustSchedules returns the [Schedules] of q.
func mustSchedules(q *RedisTaskQueue) *Schedules {
	s, err := NewSchedules(q)
	if err != nil {
		panic(err)
	}
	return s
}
