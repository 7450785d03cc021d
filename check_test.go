package taskqueue

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// Captured from redis-server 7.0.15 (INFO server and INFO memory, shortened).
const (
	infoServer7 = "# Server\r\nredis_version:7.0.15\r\nredis_git_sha1:00000000\r\nredis_mode:standalone\r\nos:Linux\r\n"
	infoMemory  = "# Memory\r\nused_memory:1000000\r\nmaxmemory:2097152\r\nmaxmemory_human:2.00M\r\nmaxmemory_policy:%s\r\n"
)

func TestCheckInfoVersions(t *testing.T) {
	t.Parallel()
	for version, tooOld := range map[string]bool{
		"7.0.15": false, "6.2.0": false, "6.2.14": false, "7.2.4-rc1": false, "8.0.0": false, "10.0": false,
		"6.0.9": true, "6.1.99": true, "5.0.14": true, "2.8.24": true,
	} {
		server := strings.Replace(infoServer7, "7.0.15", version, 1)
		rep, err := checkInfo(server, nil, fmt.Sprintf(infoMemory, "noeviction"), nil)
		if !tooOld {
			require.NoError(t, err, version)
			require.Equal(t, version, rep.Version)
			require.Empty(t, rep.Warnings, version)
			continue
		}
		require.ErrorIs(t, err, ErrRedisTooOld, version)
		var ve *RedisVersionError
		require.ErrorAs(t, err, &ve)
		require.Equal(t, version, ve.Found)
		require.Equal(t, MinRedisVersion, ve.Need)
		require.Contains(t, err.Error(), version)
		require.Contains(t, err.Error(), "6.2.0")
	}
	// A version that cannot be read is a warning, not a refusal.
	for _, server := range []string{"# Server\r\n", "redis_version:banana\r\n", "redis_version:7\r\n", "redis_version:7.x.1\r\n"} {
		rep, err := checkInfo(server, nil, fmt.Sprintf(infoMemory, "noeviction"), nil)
		require.NoError(t, err, server)
		require.Len(t, rep.Warnings, 1, server)
		require.Contains(t, rep.Warnings[0], "version")
	}
}

func TestCheckInfoEvictionPolicies(t *testing.T) {
	t.Parallel()
	for policy, warns := range map[string]bool{
		"noeviction": false, "volatile-lru": false, "volatile-lfu": false, "volatile-random": false, "volatile-ttl": false,
		"allkeys-lru": true, "allkeys-lfu": true, "allkeys-random": true,
	} {
		rep, err := checkInfo(infoServer7, nil, fmt.Sprintf(infoMemory, policy), nil)
		require.NoError(t, err, policy)
		require.Equal(t, policy, rep.EvictionPolicy)
		require.Equal(t, int64(2<<20), rep.MaxMemory)
		if warns {
			require.Len(t, rep.Warnings, 1, policy)
			require.Contains(t, rep.Warnings[0], policy)
		} else {
			require.Empty(t, rep.Warnings, policy)
		}
	}
	rep, err := checkInfo(infoServer7, nil, "", errors.New("ERR section (memory) is not supported"))
	require.NoError(t, err)
	require.Len(t, rep.Warnings, 1)
	require.Contains(t, rep.Warnings[0], "eviction policy")
}

func TestCheckMiniredis(t *testing.T) {
	t.Parallel()
	// miniredis 2.40 answers INFO only for "clients" and "stats": Check reports what it could not read, and the
	// version check must not stop every unit test that starts a worker on it.
	s := newMini(t, nil)
	rep, err := s.adm.Check(context.Background())
	require.NoError(t, err)
	if rep.Version == "" {
		require.NotEmpty(t, rep.Warnings)
	}
}

// logBuffer is a concurrency-safe log sink for asserting on warnings.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestCheckRealRedis(t *testing.T) {
	t.Parallel()
	var logs logBuffer
	s := newReal(t, &RedisConfig{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	rep, err := s.adm.Check(context.Background())
	require.NoError(t, err)
	_, ok := parseVersion(rep.Version)
	require.True(t, ok, rep.Version)
	require.Equal(t, "noeviction", rep.EvictionPolicy)
	require.Empty(t, rep.Warnings)
	require.Empty(t, logs.String())
}

func TestCheckEvictionPolicyWarning(t *testing.T) {
	t.Parallel()
	rdb := ownRedis(t, "--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru")
	var logs logBuffer
	reg, _ := testRegistry(t)
	q, err := NewRedisTaskQueue(rdb, "evict", reg, &RedisConfig{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	require.NoError(t, err)
	rep, err := mustAdmin(q).Check(context.Background())
	require.NoError(t, err)
	require.Equal(t, "allkeys-lru", rep.EvictionPolicy)
	require.Equal(t, int64(64<<20), rep.MaxMemory)
	require.Len(t, rep.Warnings, 1)
	require.Contains(t, rep.Warnings[0], "allkeys-lru can drop tasks")
	require.Contains(t, logs.String(), "level=WARN")
	require.Contains(t, logs.String(), "allkeys-lru can drop tasks")
	require.Contains(t, logs.String(), "key_prefix=evict")
}

func TestCheckPermission(t *testing.T) {
	t.Parallel()
	addr := realRedis(t)
	ctx := context.Background()
	admin := redis.NewClient(&redis.Options{Addr: addr})
	defer admin.Close()
	prefix := "chk-" + newID()[:8]
	user := func(name string, rules ...string) *RedisTaskQueue {
		args := []any{"ACL", "SETUSER", name, "reset", "on", ">secret", "~{" + prefix + "}:*"}
		for _, r := range rules {
			args = append(args, r)
		}
		require.NoError(t, admin.Do(ctx, args...).Err())
		t.Cleanup(func() { admin.Do(context.Background(), "ACL", "DELUSER", name) })
		rdb := redis.NewClient(&redis.Options{Addr: addr, Username: name, Password: "secret"})
		t.Cleanup(func() { _ = rdb.Close() })
		reg, _ := testRegistry(t)
		q, err := NewRedisTaskQueue(rdb, prefix, reg, quiet(nil))
		require.NoError(t, err)
		return q
	}

	// The worker allowlist (it has +info, not CONFIG): a full report.
	q := user(prefix+"-info", strings.Fields(workerACL)...)
	rep, err := mustAdmin(q).Check(ctx)
	require.NoError(t, err)
	require.NotEmpty(t, rep.Version)
	require.Equal(t, "noeviction", rep.EvictionPolicy)
	require.Empty(t, rep.Warnings)

	// Without +info: a permission error, not a warning.
	q = user(prefix+"-noinfo", strings.Fields(strings.ReplaceAll(workerACL, "+info", ""))...)
	_, err = mustAdmin(q).Check(ctx)
	require.ErrorIs(t, err, ErrPermission)
	require.Contains(t, err.Error(), "NOPERM")

	// Wrong credentials: a permission error too.
	rdb := redis.NewClient(&redis.Options{Addr: addr, Username: prefix + "-info", Password: "wrong", MaxRetries: -1})
	defer rdb.Close()
	reg, _ := testRegistry(t)
	q, err = NewRedisTaskQueue(rdb, prefix, reg, quiet(nil))
	require.NoError(t, err)
	_, err = mustAdmin(q).Check(ctx)
	require.ErrorIs(t, err, ErrPermission)
	require.Contains(t, err.Error(), "WRONGPASS")

	// No credentials while the default user is off is NOAUTH; checked on text, since that needs its own server.
	require.ErrorIs(t, classify(errors.New("NOAUTH Authentication required")), ErrPermission)
}

func TestClassifyPermission(t *testing.T) {
	t.Parallel()
	require.NoError(t, classify(nil))
	for _, msg := range []string{
		"NOPERM this user has no permissions to run the 'config|get' command",
		"NOAUTH Authentication required.",
		"WRONGPASS invalid username-password pair or user is disabled.",
		"taskqueue: ack: NOPERM No permissions to access a key",
	} {
		err := errors.New(msg)
		got := classify(err)
		require.ErrorIs(t, got, ErrPermission, msg)
		require.ErrorIs(t, got, err, "the Redis error stays in the chain")
		require.ErrorIs(t, classify(got), ErrPermission)
		require.Equal(t, got, classify(got), "classify is idempotent")
	}
	for _, msg := range []string{"ERR unknown command", "OOM command not allowed", "context deadline exceeded", "xNOPERM"} {
		err := errors.New(msg)
		require.Same(t, err, classify(err), msg)
	}
}

// TestClassifyTransient feeds error replies to a go-redis client from a miniredis, so that each reaches the queue
// exactly as go-redis surfaces it (its typed TRYAGAIN, ASK, MOVED... errors), and breaks the connection: the failures
// a resend may cure are [*TransientError]s (errors.Is ErrTransient, the Redis error still in the chain), the others
// are left as they are.
func TestClassifyTransient(t *testing.T) {
	t.Parallel()
	mr := miniredis.RunT(t)
	// No resends by the client: each call reports the reply it got.
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr(), MaxRetries: -1})
	t.Cleanup(func() { _ = rdb.Close() })
	reg, _ := testRegistry(t)
	q, err := NewRedisTaskQueue(rdb, "test", reg, quiet(nil))
	require.NoError(t, err)
	ctx := context.Background()
	require.NoError(t, rdb.Ping(ctx).Err()) // the connection's handshake, before the server refuses everything
	d := &Delivery{Spec: &TaskSpec{TaskID: "t"}, Token: 1}
	for reply, reason := range map[string]string{
		"TRYAGAIN Multiple keys request during rehashing of slot":                                "TRYAGAIN",
		"ASK 12066 127.0.0.1:7001":                                                               "ASK",
		"MOVED 12066 127.0.0.1:7002":                                                             "MOVED",
		"CLUSTERDOWN The cluster is down":                                                        "CLUSTERDOWN",
		"CLUSTERDOWN Hash slot not served":                                                       "CLUSTERDOWN",
		"LOADING Redis is loading the dataset in memory":                                         "LOADING",
		"READONLY You can't write against a read only replica.":                                  "READONLY",
		"MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.":       "MASTERDOWN",
		"NOREPLICAS Not enough good replicas to write.":                                          "NOREPLICAS",
		"BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.": "BUSY",
		"ERR unknown command 'evalsha'":                                                          "",
		"OOM command not allowed when used memory > 'maxmemory'.":                                "",
		"BUSYGROUP Consumer Group name already exists":                                           "",
		"NOPERM this user has no permissions to access one of the keys used as arguments":        "",
	} {
		mr.SetError(reply)
		for call, err := range map[string]error{
			"ack":    q.Ack(ctx, d),
			"retry":  q.settle(ctx, "retry", "t", d, "", 0, "", ""),
			"extend": func() error { _, err := q.ExtendLeases(ctx, []*Delivery{d}); return err }(),
			"pickup": func() error { _, err := q.Dequeue(ctx, DequeueOptions{}); return err }(),
		} {
			require.Error(t, err, "%s: %s", call, reply)
			require.Contains(t, err.Error(), reply, "%s: the reply's text stays in the message", call)
			var re redis.Error
			require.ErrorAs(t, err, &re, "%s: the Redis error stays in the chain", call)
			var te *TransientError
			if reason == "" {
				require.NotErrorIs(t, err, ErrTransient, "%s: %s", call, reply)
				continue
			}
			require.ErrorIs(t, err, ErrTransient, "%s: %s", call, reply)
			require.ErrorAs(t, err, &te)
			require.Equal(t, reason, te.Reason, "%s: %s", call, reply)
		}
		if strings.HasPrefix(reply, "ASK ") {
			_, ok := redis.IsAskError(classify(rdb.Get(ctx, "k").Err()))
			require.True(t, ok, "go-redis still recognises its own error through the wrapper")
		}
	}
	mr.SetError("")

	// Text only, as a wrapper that flattened the reply leaves it; and classify is idempotent.
	for msg, reason := range map[string]string{
		"taskqueue: ack: TRYAGAIN Multiple keys request during rehashing of slot": "TRYAGAIN",
		"ASK 3999 127.0.0.1:6381":   "ASK",
		"xASK 1 a":                  "",
		"context deadline exceeded": "",
	} {
		got := classify(errors.New(msg))
		var te *TransientError
		require.Equal(t, reason != "", errors.As(got, &te), msg)
		if reason != "" {
			require.Equal(t, reason, te.Reason)
			require.Same(t, te, classify(got), "classify is idempotent")
		}
	}
	require.NotErrorIs(t, classify(context.DeadlineExceeded), ErrTransient, "a context's own end is its caller's")
	require.NotErrorIs(t, classify(context.Canceled), ErrTransient)
	require.NotErrorIs(t, classify(redis.Nil), ErrTransient)
	require.NotErrorIs(t, classify(redis.ErrClosed), ErrTransient, "a client closed by its owner stays closed")

	// Lost replies: a reset connection, a read that timed out, a server gone.
	for err, reason := range map[error]string{
		io.EOF:              "connection",
		io.ErrUnexpectedEOF: "connection",
		&net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}:                         "connection",
		&net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}:                     "timeout",
		fmt.Errorf("taskqueue: ack: %w", &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}): "connection",
		redis.ErrPoolTimeout: "timeout",
	} {
		var te *TransientError
		require.ErrorAs(t, classify(err), &te, "%v", err)
		require.Equal(t, reason, te.Reason, "%v", err)
		require.ErrorIs(t, classify(err), err)
	}
	mr.Close()
	err = q.Ack(ctx, d)
	var te *TransientError
	require.ErrorAs(t, err, &te, "a server gone: %v", err)
	require.Equal(t, "connection", te.Reason)
}

// TestOOMEnqueue fills a Redis with maxmemory and noeviction: enqueue must fail with the OOM error (no panic, no
// silent drop), and a task that was running before must still be acknowledged, which frees memory.
func TestOOMEnqueue(t *testing.T) {
	t.Parallel()
	rdb := ownRedis(t, "--maxmemory", "2mb", "--maxmemory-policy", "noeviction")
	ctx := context.Background()
	reg, ref := testRegistry(t)
	require.NoError(t, Register(ref, "m", "ok", func(context.Context, addArgs) error { return nil }))
	q, err := NewRedisTaskQueue(rdb, "oom", reg, quiet(nil))
	require.NoError(t, err)
	rep, err := mustAdmin(q).Check(ctx)
	require.NoError(t, err)
	require.Empty(t, rep.Warnings, "noeviction is the safe policy")

	require.NoError(t, q.Enqueue(ctx, NewTaskSpec("running", Ref("m", "ok", addArgs{A: 1, B: 2}))))
	ds, err := q.Dequeue(ctx, DequeueOptions{Max: 1})
	require.NoError(t, err)
	require.Len(t, ds, 1)

	pad := strings.Repeat("x", 200)
	var enqueued int
	var oomErr error
	for i := range 100000 {
		err := q.Enqueue(ctx, NewTaskSpec(fmt.Sprintf("t%06d-%s", i, pad[:40]), Ref("m", "ok", addArgs{A: int64(i)})))
		if err != nil {
			oomErr = err
			break
		}
		enqueued++
	}
	require.Error(t, oomErr, "Redis never refused an enqueue")
	require.True(t, redis.IsOOMError(oomErr), "%v", oomErr)
	t.Logf("enqueued %d tasks before OOM: %v", enqueued, oomErr)

	// Nothing was dropped silently: every enqueue that succeeded is pending, the refused one is not stored.
	st, err := countsOf(ctx, q)
	require.NoError(t, err)
	require.Equal(t, Counts{Pending: int64(enqueued), Active: 1}, st)

	// A batch is refused whole: Redis checks memory before a script's first write, and every write of the
	// enqueue script comes after its checks.
	batch := make([]*TaskSpec, 10)
	for i := range batch {
		batch[i] = NewTaskSpec(fmt.Sprintf("batch-%d", i), Ref("m", "ok", addArgs{A: int64(i)}))
	}
	err = q.EnqueueBatch(ctx, batch)
	require.Error(t, err)
	require.Contains(t, err.Error(), "OOM")
	st, err = countsOf(ctx, q)
	require.NoError(t, err)
	require.Equal(t, Counts{Pending: int64(enqueued), Active: 1}, st, "no part of the refused batch was stored")

	// The running task is acknowledged while Redis is full.
	ackErr := q.Ack(ctx, ds[0])
	t.Logf("ack under OOM: %v", ackErr)
	require.NoError(t, ackErr)
	st, err = countsOf(ctx, q)
	require.NoError(t, err)
	require.Equal(t, Counts{Pending: int64(enqueued)}, st)

	// Workers can still take and finish tasks, which drains the queue and frees memory.
	ds, err = q.Dequeue(ctx, DequeueOptions{Max: 64})
	t.Logf("dequeue under OOM: %d tasks, err %v", len(ds), err)
	require.NoError(t, err)
	require.NotEmpty(t, ds)
	require.NoError(t, q.Ack(ctx, ds...))
	st, err = countsOf(ctx, q)
	require.NoError(t, err)
	require.Equal(t, Counts{Pending: int64(enqueued - len(ds))}, st)
}
