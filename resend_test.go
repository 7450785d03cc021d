package taskqueue

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/alicebob/miniredis/v2/server"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// newProxied returns a queue under a prefix of its own on the real redis-server, reached through a loopback proxy
// that can lose a reply. Its client does not resend by itself (MaxRetries -1): the worker's own policy is under
// test, and it must not depend on the client's.
func newProxied(t *testing.T, cfg *RedisConfig) (*setup, *chaosProxy) {
	t.Helper()
	proxy := startChaosProxy(t, realRedis(t))
	rdb := redis.NewClient(&redis.Options{Addr: proxy.addr(), MaxRetries: -1})
	t.Cleanup(func() { _ = rdb.Close() })
	reg, ref := testRegistry(t)
	prefix := "t-" + regexp.MustCompile(`[^A-Za-z0-9_.-]+`).ReplaceAllString(t.Name(), "_") + "-" + newID()[:6]
	q, err := NewRedisTaskQueue(rdb, prefix, reg, quiet(cfg))
	require.NoError(t, err)
	// Loaded beforehand, so that EVALSHA runs them at once: a lost NOSCRIPT reply would lose a call that did not run.
	ctx := context.Background()
	for _, sc := range []*redis.Script{ackScript, settleScript} {
		require.NoError(t, sc.Load(ctx, rdb).Err())
	}
	return &setup{rdb: rdb, q: q, reg: reg, ref: ref}, proxy
}

// scriptCall matches the request of a call of sc whose first ARGV is arg ("" for any).
func scriptCall(sc *redis.Script, arg string) func([]byte) bool {
	return func(req []byte) bool {
		return bytes.Contains(req, []byte(sc.Hash())) &&
			(arg == "" || bytes.Contains(req, fmt.Appendf(nil, "$%d\r\n%s\r\n", len(arg), arg)))
	}
}

// countTask counts the events of a kind about a task (queue errors of pickups and renewals name none).
func (r *recorder) countTask(kind EventKind) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, e := range r.events {
		if e.Kind == kind && e.TaskID != "" {
			n++
		}
	}
	return n
}

// The reply of a worker's outcome call is lost after Redis ran it (the proxy drops it and resets the connection).
// The worker resends the call, Redis recognises the resend, and the worker reports the outcome that happened, once:
// no queue error, no lost lease, one attempt counted, the task neither duplicated nor run again.
func TestWorkerLostOutcomeReply(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		call    func([]byte) bool
		result  error
		event   EventKind
		want    Counts
		attempt int
	}{
		{"ack", scriptCall(ackScript, ""), nil, EventSucceeded, Counts{}, 0},
		{"retry", scriptCall(settleScript, "retry"), errors.New("boom"), EventRetried, Counts{Scheduled: 1}, 1},
		{"dead", scriptCall(settleScript, "dead"), fmt.Errorf("%w: bad input", ErrSkipRetry), EventDead, Counts{Dead: 1}, 1}, // the dead letter counts its failed run
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, proxy := newProxied(t, nil)
			ctx := context.Background()
			var runs atomic.Int32
			require.NoError(t, Register(s.ref, "m", "f", func(context.Context, addArgs) error {
				runs.Add(1)
				return tc.result
			}))
			require.NoError(t, s.q.Enqueue(ctx, NewTaskSpec("t1", Ref("m", "f", nil))))
			proxy.dropReplyOnce(tc.call)
			rec := &recorder{}
			w := startWorker(t, s.q, quietWorker(WorkerConfig{Concurrency: 1, ReapInterval: -1,
				Backoff: func(int, error) time.Duration { return time.Hour }}, rec))
			waitFor(t, 10*time.Second, "the outcome recorded or given up", func() bool {
				return s.counts(t) == tc.want || rec.count(EventQueueError)+rec.count(EventLeaseLost) > 0
			})
			require.NoError(t, stopWorker(t, w, 10*time.Second)) // every event is out once Stop returns

			require.Equal(t, int32(1), proxy.dropped.Load(), "the reply was lost once")
			require.Zero(t, rec.count(EventQueueError), "no queue error: the outcome is known")
			require.Zero(t, rec.count(EventLeaseLost))
			require.Equal(t, 1, rec.count(tc.event), "%s reported once", tc.event)
			require.Equal(t, int32(1), runs.Load(), "run once")
			require.Equal(t, tc.want, s.counts(t), "recorded once: not pushed twice")
			if tc.want != (Counts{}) {
				raw, err := s.rdb.HGet(ctx, s.q.keys.key(keyTasks), "t1").Result()
				require.NoError(t, err)
				env, err := decodeEnvelope([]byte(raw), s.q.cfg.Limits)
				require.NoError(t, err)
				require.Equal(t, tc.attempt, env.Attempt, "attempts counted")
			}
		})
	}
}

// refusals makes a miniredis refuse calls of chosen scripts with an error reply, as a Cluster node does while the
// queue's slot moves, and counts the calls.
type refusals struct {
	mu    sync.Mutex
	rules map[string]*refusal // by script SHA
}

type refusal struct {
	reply           string
	left            int           // calls still to refuse
	through         chan struct{} // closed when a call first goes through
	refused, passed atomic.Int32
}

// newMiniNoResend is newMini with a client that does not resend by itself, so that each refused call reaches the
// worker; the scripts are loaded, so that every call is an EVALSHA.
func newMiniNoResend(t *testing.T, cfg *RedisConfig) (*setup, *refusals) {
	t.Helper()
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr(), MaxRetries: -1})
	t.Cleanup(func() { _ = rdb.Close() })
	reg, ref := testRegistry(t)
	q, err := NewRedisTaskQueue(rdb, "test", reg, quiet(cfg))
	require.NoError(t, err)
	for _, sc := range []*redis.Script{ackScript, settleScript, extendScript, dequeueScript} {
		require.NoError(t, sc.Load(context.Background(), rdb).Err())
	}
	r := &refusals{rules: map[string]*refusal{}}
	mr.Server().SetPreHook(func(c *server.Peer, cmd string, args ...string) bool {
		if !strings.EqualFold(cmd, "evalsha") || len(args) == 0 {
			return false
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		rule := r.rules[args[0]]
		if rule == nil {
			return false
		}
		if rule.left == 0 {
			if rule.passed.Add(1) == 1 {
				close(rule.through)
			}
			return false
		}
		rule.left--
		rule.refused.Add(1)
		c.WriteError(rule.reply)
		return true
	})
	return &setup{mr: mr, rdb: rdb, q: q, reg: reg, ref: ref}, r
}

// refuse makes the next n calls of sc fail with reply.
func (r *refusals) refuse(sc *redis.Script, n int, reply string) *refusal {
	r.mu.Lock()
	defer r.mu.Unlock()
	rule := &refusal{reply: reply, left: n, through: make(chan struct{})}
	r.rules[sc.Hash()] = rule
	return rule
}

const tryAgain = "TRYAGAIN Multiple keys request during rehashing of slot"

// An ack refused with TRYAGAIN (the queue's slot is moving) is resent until it lands, within the lease: the task
// runs once and no error is reported. (The worker used to give up after three tries, and the task ran again after
// its lease.)
func TestWorkerResendsAckThroughTryAgain(t *testing.T) {
	t.Parallel()
	s, r := newMiniNoResend(t, &RedisConfig{Lease: 2 * time.Second})
	ctx := context.Background()
	var runs atomic.Int32
	require.NoError(t, Register(s.ref, "m", "f", func(context.Context, addArgs) error { runs.Add(1); return nil }))
	const refused = 8
	acks := r.refuse(ackScript, refused, tryAgain)
	require.NoError(t, s.q.Enqueue(ctx, NewTaskSpec("t1", Ref("m", "f", nil))))
	rec := &recorder{}
	w := startWorker(t, s.q, quietWorker(WorkerConfig{Concurrency: 1, ReapInterval: -1}, rec))
	waitFor(t, 10*time.Second, "the ack recorded or given up", func() bool {
		return acks.passed.Load() > 0 || rec.countTask(EventQueueError)+rec.count(EventLeaseLost) > 0
	})
	require.NoError(t, stopWorker(t, w, 10*time.Second))
	require.Zero(t, rec.countTask(EventQueueError), "no outcome error")
	require.Zero(t, rec.count(EventLeaseLost))
	require.Equal(t, int32(refused), acks.refused.Load())
	require.Equal(t, int32(1), acks.passed.Load(), "resent until it landed, once")
	require.Equal(t, Counts{}, s.counts(t))
	require.Equal(t, int32(1), runs.Load())
}

// A lease renewal refused with TRYAGAIN is resent within the heartbeat's bound: the task keeps its lease and no
// error is reported.
func TestWorkerResendsLeaseRenewalThroughTryAgain(t *testing.T) {
	t.Parallel()
	s, r := newMiniNoResend(t, &RedisConfig{Lease: 600 * time.Millisecond})
	ctx := context.Background()
	renewals := r.refuse(extendScript, 2, tryAgain)
	cancelled := make(chan error, 1)
	require.NoError(t, Register(s.ref, "m", "long", func(ctx context.Context, _ addArgs) error {
		select { // the handler's work lasts until a renewal went through
		case <-renewals.through:
		case <-ctx.Done():
		}
		cancelled <- context.Cause(ctx)
		return ctx.Err()
	}))
	require.NoError(t, s.q.Enqueue(ctx, NewTaskSpec("long", Ref("m", "long", nil))))
	rec := &recorder{}
	w := startWorker(t, s.q, quietWorker(WorkerConfig{Concurrency: 1, Heartbeat: 200 * time.Millisecond, ReapInterval: -1}, rec))
	require.NoError(t, <-cancelled, "the task kept its lease")
	waitFor(t, 5*time.Second, "the ack", func() bool { return s.counts(t) == Counts{} })
	require.NoError(t, stopWorker(t, w, 10*time.Second))
	require.Equal(t, int32(2), renewals.refused.Load())
	require.Zero(t, rec.count(EventQueueError), "the renewal was resent, not reported")
	require.Equal(t, 1, rec.count(EventSucceeded))
}

// logRecords keeps every log record, with its attributes, as text.
type logRecords struct {
	mu   sync.Mutex
	recs []logRecord
}

type logRecord struct {
	level slog.Level
	msg   string
	text  string // the message and every attribute
}

func (l *logRecords) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecords) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logRecords) WithGroup(string) slog.Handler            { return l }
func (l *logRecords) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	l.mu.Lock()
	l.recs = append(l.recs, logRecord{r.Level, r.Message, b.String()})
	l.mu.Unlock()
	return nil
}

// with returns the records whose text holds s.
func (l *logRecords) with(s string) []logRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []logRecord
	for _, r := range l.recs {
		if strings.Contains(r.text, s) {
			out = append(out, r)
		}
	}
	return out
}

// Pickups refused mid-move (an ASK that the client did not follow) back off quietly: one warning when the run of
// failures starts and one line when it ends, not the Redis error's text for every attempt.
func TestWorkerPickupBacksOffQuietly(t *testing.T) {
	t.Parallel()
	s, r := newMiniNoResend(t, nil)
	ctx := context.Background()
	done := make(chan struct{})
	require.NoError(t, Register(s.ref, "m", "f", func(context.Context, addArgs) error { close(done); return nil }))
	require.NoError(t, s.q.Enqueue(ctx, NewTaskSpec("t1", Ref("m", "f", nil))))
	const ask = "ASK 12066 127.0.0.1:7001"
	pickups := r.refuse(dequeueScript, 3, ask)
	logs := &logRecords{}
	rec := &recorder{}
	startWorker(t, s.q, quietWorker(WorkerConfig{Concurrency: 1, ReapInterval: -1, Logger: slog.New(logs)}, rec))
	<-done
	require.Equal(t, int32(3), pickups.refused.Load())
	require.Equal(t, 3, rec.count(EventQueueError), "each failed pickup is still an event")
	for _, l := range logs.with(ask) {
		require.Less(t, l.level, slog.LevelInfo, "the raw reply is logged at debug level only: %s", l.text)
	}
	warns := 0
	for _, l := range logs.with("pickup") {
		if l.level >= slog.LevelWarn {
			warns++
		}
	}
	require.Equal(t, 1, warns, "one warning for the run of failures")
	waitFor(t, 5*time.Second, "the recovery logged", func() bool { return len(logs.with("taskqueue: pickup recovered")) == 1 })
	require.Contains(t, logs.with("taskqueue: pickup recovered")[0].text, "failed_pickups=3")
}
