package taskqueue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

type order struct {
	ID    int64             `json:"id"`
	Items []string          `json:"items"`
	Meta  map[string]string `json:"meta"`
	Big   int64             `json:"big"`
}

func TestRoundTripTypedArgs(t *testing.T) {
	t.Parallel()
	backends(t, nil, func(t *testing.T, s *setup) {
		ctx := context.Background()
		got := make(chan order, 1)
		require.NoError(t, Register(s.ref, "shop.orders", "ship", func(_ context.Context, o order) error { got <- o; return nil }))
		want := order{ID: 7, Items: []string{"a<b>&c", "ü"}, Meta: map[string]string{"k": "v"}, Big: 1<<63 - 1}
		require.NoError(t, s.q.Enqueue(ctx, &TaskSpec{TaskID: "o-7", Executable: Ref("shop.orders", "ship", want), GroupID: "g1"}))

		raw, err := envelopeOf(ctx, s.q, "o-7")
		require.NoError(t, err)
		require.Contains(t, raw, `"a<b>&c"`, "stored JSON is not HTML-escaped")
		require.Contains(t, raw, `"big":9223372036854775807`)
		requireSeedRecord(t, s, "o-7", raw)

		d := s.lease(t, 1)[0]
		require.Equal(t, "o-7", d.Spec.TaskID)
		require.Equal(t, "g1", d.Spec.GroupID)
		require.Equal(t, DefaultResolverID, d.Spec.ResolverID)
		require.Equal(t, StrategyReference, d.Spec.SerializedTask.Strategy)
		require.Equal(t, 1, d.Deliveries)
		require.NoError(t, d.Spec.Executable.Run(ctx))
		require.Equal(t, want, <-got)
		require.NoError(t, s.q.Ack(ctx, d))
		require.Equal(t, Counts{}, s.counts(t))
		_, err = s.adm.Inspect(ctx, "o-7")
		require.ErrorIs(t, err, ErrNotFound, "finished tasks leave Redis")
	})
}

func TestEnqueueIdempotent(t *testing.T) {
	t.Parallel()
	backends(t, nil, func(t *testing.T, s *setup) {
		ctx := context.Background()
		spec := NewTaskSpec("same", Ref("m", "f", addArgs{A: 1}))
		require.NoError(t, s.q.Enqueue(ctx, spec))
		require.NoError(t, s.q.Enqueue(ctx, spec), "same id and content: no-op")
		require.NoError(t, s.q.Enqueue(ctx, NewTaskSpec("same", Ref("m", "f", addArgs{A: 1}))), "created_at differs, content same")
		require.Equal(t, int64(1), s.counts(t).Pending)

		err := s.q.Enqueue(ctx, NewTaskSpec("same", Ref("m", "f", addArgs{A: 2})))
		require.ErrorIs(t, err, ErrTaskIDConflict)
		require.Equal(t, int64(1), s.counts(t).Pending)

		// Once completed, a replay of the enqueue within the settled window does not make a second task.
		require.NoError(t, Register(s.ref, "m", "f", func(context.Context, addArgs) error { return nil }))
		d := s.lease(t, 1)[0]
		require.NoError(t, s.q.Ack(ctx, d))
		require.NoError(t, s.q.Enqueue(ctx, spec))
		require.Equal(t, Counts{}, s.counts(t))
	})
}

func TestEnqueueBatch(t *testing.T) {
	t.Parallel()
	backends(t, nil, func(t *testing.T, s *setup) {
		ctx := context.Background()
		specs := make([]*TaskSpec, 0, 100)
		for i := range 100 {
			specs = append(specs, NewTaskSpec(fmt.Sprintf("b-%03d", i), Ref("m", "f", addArgs{A: int64(i)})))
		}
		specs = append(specs, NewTaskSpec("bad id", Ref("m", "f", nil)), NewTaskSpec("closure", Func(func(context.Context) error { return nil })))
		err := s.q.EnqueueBatch(ctx, specs)
		var ee *EnqueueError
		require.ErrorAs(t, err, &ee)
		require.ErrorIs(t, err, ErrInvalidTaskID)
		require.ErrorIs(t, err, ErrNotSerializable)
		require.Equal(t, int64(100), s.counts(t).Pending)

		require.NoError(t, Register(s.ref, "m", "f", func(context.Context, addArgs) error { return nil }))
		ds, err := s.q.Dequeue(ctx, DequeueOptions{Max: 1000})
		require.NoError(t, err)
		require.Len(t, ds, 100)
		for i, d := range ds {
			require.Equal(t, fmt.Sprintf("b-%03d", i), d.Spec.TaskID, "FIFO")
		}
		require.NoError(t, s.q.Ack(ctx, ds...))
		require.Equal(t, Counts{}, s.counts(t))
	})
}

// TestEnqueueBatchIsSentInChunks: a batch larger than enqueueChunk goes as one script call per chunk, all in one
// pipeline (so a large batch never holds Redis for its whole length), again with EVAL after a SCRIPT FLUSH; the
// replies of the chunks line up with the batch (a conflict in the last chunk is reported at its index) and the
// tasks stay in order.
func TestEnqueueBatchIsSentInChunks(t *testing.T) {
	t.Parallel()
	backends(t, nil, func(t *testing.T, s *setup) {
		if s.mr == nil { // SCRIPT FLUSH on the shared server would be undone by the other tests' EVAL fallbacks
			s = newOwnReal(t, nil)
		}
		ctx := context.Background()
		n := 2*enqueueChunk + 50
		require.NoError(t, s.q.Enqueue(ctx, NewTaskSpec(fmt.Sprintf("c-%03d", n-20), Ref("m", "other", nil))))
		specs := make([]*TaskSpec, n)
		for i := range specs {
			specs[i] = NewTaskSpec(fmt.Sprintf("c-%03d", i), Ref("m", "f", addArgs{A: int64(i)}))
		}
		hook := &scriptCallHook{}
		s.rdb.AddHook(hook)
		require.NoError(t, s.rdb.ScriptFlush(ctx).Err())

		err := s.q.EnqueueBatch(ctx, specs)
		var ee *EnqueueError
		require.ErrorAs(t, err, &ee)
		require.ErrorIs(t, err, ErrTaskIDConflict)
		require.Equal(t, n-20, ee.Index)
		require.Equal(t, fmt.Sprintf("c-%03d", n-20), ee.TaskID)
		require.Equal(t, [][]string{{"evalsha", "evalsha", "evalsha"}, {"eval", "eval", "eval"}}, hook.pipelines(),
			"one pipeline of three calls, sent again with EVAL after NOSCRIPT")

		ids, err := s.rdb.LRange(ctx, s.q.keys.key(keyPending), 0, -1).Result()
		require.NoError(t, err)
		want := []string{fmt.Sprintf("c-%03d", n-20)}
		for i := range n {
			if i != n-20 {
				want = append(want, fmt.Sprintf("c-%03d", i))
			}
		}
		require.Equal(t, want, ids, "FIFO across chunks")
	})
}

// TestEnqueueCallsIntoRedisPerTask: inside the enqueue script, Lua's calls into Redis cost more than the data they
// move, so a new ready task costs one call (HSETNX: it also meets the tombstone of a task acked recently) and
// everything else is one call per script run (RPUSH of the ready ids). Counted with INFO commandstats on a server of the test's own.
func TestEnqueueCallsIntoRedisPerTask(t *testing.T) {
	t.Parallel()
	rdb := ownRedis(t)
	reg, _ := testRegistry(t)
	q, err := NewRedisTaskQueue(rdb, "calls", reg, quiet(nil))
	require.NoError(t, err)
	ctx := context.Background()
	require.NoError(t, rdb.ConfigResetStat(ctx).Err())
	specs := make([]*TaskSpec, enqueueChunk)
	for i := range specs {
		specs[i] = NewTaskSpec(fmt.Sprintf("k-%03d", i), Ref("m", "f", addArgs{A: int64(i)}))
	}
	require.NoError(t, q.EnqueueBatch(ctx, specs))
	require.Equal(t, map[string]int{"evalsha": 1, "eval": 1, "hsetnx": enqueueChunk, "rpush": 1,
		"lpush": 1, "ltrim": 1}, commandCalls(t, rdb), "EVALSHA answered NOSCRIPT once, then EVAL ran; pending was empty: one wake-up")
	st, err := countsOf(ctx, q)
	require.NoError(t, err)
	require.Equal(t, int64(enqueueChunk), st.Pending)
}

// TestAckCallsIntoRedis: an ack batch makes a fixed number of calls into Redis, whatever its size, and touches the
// deliveries hash only when it exists (it holds only tasks whose lease once expired).
func TestAckCallsIntoRedis(t *testing.T) {
	t.Parallel()
	rdb := ownRedis(t)
	reg, ref := testRegistry(t)
	require.NoError(t, Register(ref, "m", "f", func(context.Context, addArgs) error { return nil }))
	q, err := NewRedisTaskQueue(rdb, "calls", reg, quiet(nil))
	require.NoError(t, err)
	ctx := context.Background()
	specs := make([]*TaskSpec, 20)
	for i := range specs {
		specs[i] = NewTaskSpec(fmt.Sprintf("a-%02d", i), Ref("m", "f", addArgs{A: int64(i)}))
	}
	require.NoError(t, q.EnqueueBatch(ctx, specs))
	ds, err := q.Dequeue(ctx, DequeueOptions{Max: 20})
	require.NoError(t, err)
	require.Len(t, ds, 20)

	require.NoError(t, rdb.ConfigResetStat(ctx).Err())
	require.NoError(t, q.Ack(ctx, ds[:10]...))
	want := map[string]int{"evalsha": 1, "eval": 1, "hget": 1, "hset": 2, "rpush": 1, "incrby": 1}
	require.Equal(t, want, commandCalls(t, rdb), "every delivery a first one: the batch's record read and rewritten, "+
		"the tombstones written and listed, the in-flight count lowered, nothing else (EVALSHA answered NOSCRIPT: "+
		"the ack script's first call)")

	// a-15 lost a lease before this delivery: the reaper counted it, and the pickup said so.
	require.NoError(t, rdb.HSet(ctx, q.keys.key(keyDeliveries), "a-15", 1).Err())
	ds[15].Deliveries = 2
	require.NoError(t, rdb.ConfigResetStat(ctx).Err())
	require.NoError(t, q.Ack(ctx, ds[10:]...))
	want = map[string]int{"evalsha": 1, "hget": 1, "hset": 1, "rpush": 1, "incrby": 1, "hdel": 2, "zrem": 1}
	require.Equal(t, want, commandCalls(t, rdb), "the batch's last deliveries: its record and lease go; a delivery "+
		"after a lost lease: its deliveries entry goes too")
	require.Zero(t, rdb.Exists(ctx, q.keys.key(keyDeliveries)).Val())
}

// commandCalls returns how many times each command ran on rdb's server since the last CONFIG RESETSTAT (INFO
// commandstats), leaving out those two commands.
func commandCalls(t *testing.T, rdb *redis.Client) map[string]int {
	t.Helper()
	info, err := rdb.InfoMap(context.Background(), "commandstats").Result()
	require.NoError(t, err)
	calls := map[string]int{}
	for name, v := range info["Commandstats"] {
		var n int
		_, err := fmt.Sscanf(v, "calls=%d,", &n)
		require.NoError(t, err)
		calls[strings.TrimPrefix(name, "cmdstat_")] = n
	}
	delete(calls, "config|resetstat")
	delete(calls, "info")
	return calls
}

// scriptCallHook records the script calls (EVALSHA, EVAL) of each pipeline a client sends.
type scriptCallHook struct {
	mu    sync.Mutex
	calls [][]string
}

func (h *scriptCallHook) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h *scriptCallHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (h *scriptCallHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		var names []string
		for _, c := range cmds {
			if name := strings.ToLower(c.Name()); name == "evalsha" || name == "eval" {
				names = append(names, name)
			}
		}
		if names != nil { // a new connection's set-up (HELLO, CLIENT SETINFO) is a pipeline too
			h.mu.Lock()
			h.calls = append(h.calls, names)
			h.mu.Unlock()
		}
		return next(ctx, cmds)
	}
}

func (h *scriptCallHook) pipelines() [][]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.calls)
}

func TestFencedAckAfterLeaseLoss(t *testing.T) {
	t.Parallel()
	backends(t, &RedisConfig{Lease: 200 * time.Millisecond}, func(t *testing.T, s *setup) {
		ctx := context.Background()
		require.NoError(t, Register(s.ref, "m", "f", func(context.Context, addArgs) error { return nil }))
		require.NoError(t, s.q.Enqueue(ctx, NewTaskSpec("x", Ref("m", "f", nil))))
		stale := s.lease(t, 1)[0]

		s.advance(300 * time.Millisecond)
		res, err := s.q.Reap(ctx)
		require.NoError(t, err)
		require.Equal(t, 1, res.Requeued)

		owner := s.lease(t, 1)[0]
		require.Greater(t, owner.Token, stale.Token)
		require.Equal(t, 2, owner.Deliveries)

		require.ErrorIs(t, s.q.Ack(ctx, stale), ErrLeaseLost)
		require.ErrorIs(t, s.q.Retry(ctx, stale, 0, errors.New("x")), ErrLeaseLost)
		require.ErrorIs(t, s.q.DeadLetter(ctx, stale, errors.New("x")), ErrLeaseLost)
		require.ErrorIs(t, s.q.Release(ctx, stale), ErrLeaseLost)
		lost, err := s.q.ExtendLeases(ctx, []*Delivery{stale, owner})
		require.NoError(t, err)
		require.Equal(t, []*Delivery{stale}, lost)

		require.NoError(t, s.q.Ack(ctx, owner))
		require.NoError(t, s.q.Ack(ctx, owner), "a repeated ack (a lost reply) succeeds")
		require.ErrorIs(t, s.q.Ack(ctx, stale), ErrLeaseLost, "the stale owner stays refused after the new owner acked")
		require.Equal(t, Counts{}, s.counts(t))
	})
}

func TestExtendKeepsLease(t *testing.T) {
	t.Parallel()
	backends(t, &RedisConfig{Lease: 300 * time.Millisecond}, func(t *testing.T, s *setup) {
		ctx := context.Background()
		require.NoError(t, Register(s.ref, "m", "f", func(context.Context, addArgs) error { return nil }))
		require.NoError(t, s.q.Enqueue(ctx, NewTaskSpec("x", Ref("m", "f", nil))))
		d := s.lease(t, 1)[0]
		first := d.LeaseDeadline
		for range 4 {
			s.advance(150 * time.Millisecond)
			lost, err := s.q.ExtendLeases(ctx, []*Delivery{d})
			require.NoError(t, err)
			require.Empty(t, lost)
			res, err := s.q.Reap(ctx)
			require.NoError(t, err)
			require.Zero(t, res.Requeued, "a renewed lease is never reaped")
		}
		require.True(t, d.LeaseDeadline.After(first))
		require.NoError(t, s.q.Ack(ctx, d))
	})
}

func TestReaperDeadLettersCrashLoop(t *testing.T) {
	t.Parallel()
	backends(t, &RedisConfig{Lease: 100 * time.Millisecond, MaxDeliveries: 3}, func(t *testing.T, s *setup) {
		ctx := context.Background()
		require.NoError(t, Register(s.ref, "m", "f", func(context.Context, addArgs) error { return nil }))
		require.NoError(t, s.q.Enqueue(ctx, NewTaskSpec("crashy", Ref("m", "f", nil))))
		require.NoError(t, s.q.Enqueue(ctx, NewTaskSpec("fine", Ref("m", "f", nil))))
		for i := 1; i <= 3; i++ {
			ds := s.lease(t, 1+boolInt(i == 1))
			require.Equal(t, "crashy", ds[0].Spec.TaskID)
			require.Equal(t, i, ds[0].Deliveries)
			if i == 1 {
				require.NoError(t, s.q.Ack(ctx, ds[1]))
			}
			s.advance(150 * time.Millisecond) // the worker "crashed": no ack, no renewal
			res, err := s.q.Reap(ctx)
			require.NoError(t, err)
			require.Equal(t, boolInt(i == 3), res.Dead)
		}
		st := s.counts(t)
		require.Equal(t, Counts{Dead: 1}, st)
		dl, err := deadLetterOf(ctx, s.q, "crashy")
		require.NoError(t, err)
		require.Contains(t, dl.Reason, ErrMaxDeliveries.Error())
		require.Contains(t, dl.Reason, "3 deliveries")
		require.NotEmpty(t, dl.Envelope)
	})
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestRetryAndDelayTiming(t *testing.T) {
	t.Parallel()
	backends(t, nil, func(t *testing.T, s *setup) {
		ctx := context.Background()
		require.NoError(t, Register(s.ref, "m", "f", func(context.Context, addArgs) error { return nil }))
		if s.mr != nil {
			// The server clock stands still from here on, moved only by advance: a busy machine's delay between the
			// enqueue and the first advance no longer brings "later" due early.
			s.mr.SetTime(time.Now())
		}
		require.NoError(t, s.q.Enqueue(ctx, &TaskSpec{TaskID: "later", Executable: Ref("m", "f", nil), ProcessIn: 300 * time.Millisecond}))
		require.NoError(t, s.q.Enqueue(ctx, NewTaskSpec("now", Ref("m", "f", nil))))
		require.Equal(t, Counts{Pending: 1, Scheduled: 1}, s.counts(t))

		d := s.lease(t, 1)[0]
		require.Equal(t, "now", d.Spec.TaskID)
		require.NoError(t, s.q.Retry(ctx, d, 500*time.Millisecond, errors.New("boom")))
		require.NoError(t, s.q.Retry(ctx, d, 500*time.Millisecond, errors.New("boom")), "a repeated retry (lost reply) succeeds")
		require.Equal(t, Counts{Scheduled: 2}, s.counts(t))

		s.advance(200 * time.Millisecond)
		s.lease(t, 0)
		s.advance(150 * time.Millisecond)
		d = s.lease(t, 1)[0]
		require.Equal(t, "later", d.Spec.TaskID)
		require.Equal(t, StateScheduled, d.Spec.Status)
		require.NoError(t, s.q.Ack(ctx, d))
		s.lease(t, 0)
		s.advance(200 * time.Millisecond)
		d = s.lease(t, 1)[0]
		require.Equal(t, "now", d.Spec.TaskID)
		require.Equal(t, 1, d.Spec.Attempt)
		require.Equal(t, "boom", d.Spec.LastError)
		require.Equal(t, StateRetry, d.Spec.Status)
		require.Equal(t, 1, d.Deliveries, "a retry resets the lost-delivery count")
		require.NoError(t, s.q.Ack(ctx, d))
		require.Equal(t, Counts{}, s.counts(t))
	})
}

func TestProcessAtUsesServerClock(t *testing.T) {
	t.Parallel()
	s := newMini(t, nil)
	ctx := context.Background()
	require.NoError(t, Register(s.ref, "m", "f", func(context.Context, addArgs) error { return nil }))
	// The server's clock is an hour ahead of ours; a task due in 1s by our clock is due 1s after the server's now.
	s.mr.SetTime(time.Now().Add(time.Hour))
	require.NoError(t, s.q.Enqueue(ctx, &TaskSpec{TaskID: "at", Executable: Ref("m", "f", nil), ProcessAt: time.Now().Add(time.Second)}))
	s.lease(t, 0)
	s.advance(900 * time.Millisecond)
	s.lease(t, 0)
	s.advance(200 * time.Millisecond)
	s.lease(t, 1)
}

func TestReleaseHandsBackAtHead(t *testing.T) {
	t.Parallel()
	backends(t, nil, func(t *testing.T, s *setup) {
		ctx := context.Background()
		require.NoError(t, Register(s.ref, "m", "f", func(context.Context, addArgs) error { return nil }))
		for _, id := range []string{"a", "b", "c"} {
			require.NoError(t, s.q.Enqueue(ctx, NewTaskSpec(id, Ref("m", "f", nil))))
		}
		d := s.lease(t, 1)[0]
		require.Equal(t, "a", d.Spec.TaskID)
		require.NoError(t, s.q.Release(ctx, d))
		ds, err := s.q.Dequeue(ctx, DequeueOptions{Max: 3})
		require.NoError(t, err)
		require.Equal(t, []string{"a", "b", "c"}, ids(ds))
		require.Equal(t, 1, ds[0].Deliveries, "a release does not count as a delivery")
		require.NoError(t, s.q.Ack(ctx, ds...))
	})
}

func TestBadInputIsParked(t *testing.T) {
	t.Parallel()
	backends(t, nil, func(t *testing.T, s *setup) {
		ctx := context.Background()
		require.NoError(t, Register(s.ref, "known", "fn", func(context.Context, addArgs) error { return nil }))
		good := func(id, resolver, strategy, payload string) string {
			return fmt.Sprintf(`{"v":1,"task_id":%q,"status":"ready","created_at":1,"strategy":%q,"resolver_id":%q,"serialized_task":{"strategy":%q,"payload":%s},"max_retries":0}`,
				id, strategy, resolver, strategy, payload)
		}
		cases := []struct {
			id, raw string
			want    error
		}{
			{"unknown-resolver", good("unknown-resolver", "nope", "reference", `{"module":"known","name":"fn"}`), ErrUnknownResolver},
			{"unknown-strategy", good("unknown-strategy", "default", "yaml", `{}`), ErrUnknownStrategy},
			{"pickle", good("pickle", "default", "pickle", `{"data":"gASV"}`), ErrUnsafeStrategy},
			{"unknown-name", good("unknown-name", "default", "reference", `{"module":"known","name":"other"}`), ErrUnknownTask},
			{"path-like", good("path-like", "default", "reference", `{"module":"os/exec","name":"Command"}`), ErrUnknownTask},
			{"dotdot", good("dotdot", "default", "reference", `{"module":"../x","name":"fn"}`), ErrUnknownTask},
			{"bad-args", good("bad-args", "default", "reference", `{"module":"known","name":"fn","args":{"a":"x"}}`), ErrInvalidArgs},
			{"big-int", good("big-int", "default", "reference", `{"module":"known","name":"fn","args":{"a":12345678901234567890}}`), ErrInvalidArgs},
			{"not-json", `{"v":1,"task_id":`, ErrMalformedEnvelope},
			{"dup-key", `{"v":1,"task_id":"dup-key","task_id":"x"}`, ErrMalformedEnvelope},
			{"case-key", `{"v":1,"Task_ID":"case-key"}`, ErrMalformedEnvelope},
			{"deep", `{"v":1,"x":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`, ErrMalformedEnvelope},
			{"bad-utf8", "{\"v\":1,\"task_id\":\"\xff\"}", ErrMalformedEnvelope},
			{"future", `{"v":99,"task_id":"future"}`, ErrUnsupportedVersion},
			{"wrong-type", `{"v":1,"task_id":5}`, ErrMalformedEnvelope},
		}
		for _, c := range cases {
			s.writeRaw(t, c.id, c.raw)
		}
		require.NoError(t, s.q.Enqueue(ctx, NewTaskSpec("fine", Ref("known", "fn", addArgs{A: 1}))))
		ds, err := s.q.Dequeue(ctx, DequeueOptions{Max: 100})
		require.NoError(t, err)
		require.Equal(t, []string{"fine"}, ids(ds), "only the good task is returned")
		require.NoError(t, s.q.Ack(ctx, ds...))

		require.Equal(t, Counts{Dead: int64(len(cases))}, s.counts(t))
		for _, c := range cases {
			dl, err := deadLetterOf(ctx, s.q, c.id)
			require.NoError(t, err, c.id)
			require.Contains(t, dl.Reason, c.want.Error(), c.id)
			if errors.Is(c.want, ErrMalformedEnvelope) || errors.Is(c.want, ErrUnsupportedVersion) {
				require.Equal(t, c.raw, dl.Envelope, "%s: an undecodable envelope is parked with its raw bytes", c.id)
			} else {
				want, err := decodeEnvelope([]byte(c.raw), s.q.cfg.Limits)
				require.NoError(t, err, c.id)
				want.Status = StateDead
				got, err := decodeEnvelope([]byte(dl.Envelope), s.q.cfg.Limits)
				require.NoError(t, err, c.id)
				require.Equal(t, want, got, "%s: a decoded envelope is parked as it was, with status dead", c.id)
				require.Contains(t, dl.Envelope, `"status":"dead"`, c.id)
			}
			require.Less(t, len(dl.Reason), 600, "%s: reasons are bounded", c.id)
		}
	})
}

func TestDeadLetterAdmin(t *testing.T) {
	t.Parallel()
	backends(t, nil, func(t *testing.T, s *setup) {
		ctx := context.Background()
		require.NoError(t, Register(s.ref, "m", "f", func(context.Context, addArgs) error { return nil }))
		for _, id := range []string{"d1", "d2", "d3"} {
			require.NoError(t, s.q.Enqueue(ctx, &TaskSpec{TaskID: id, Executable: Ref("m", "f", nil)}))
		}
		for _, d := range s.lease(t, 3) {
			require.NoError(t, s.q.Retry(ctx, d, 0, errors.New("first")))
		}
		for _, d := range s.lease(t, 3) {
			require.NoError(t, s.q.DeadLetter(ctx, d, fmt.Errorf("%w: gave up", ErrRetriesExhausted)))
		}
		require.Equal(t, Counts{Dead: 3}, s.counts(t))
		dls, err := s.adm.List(ctx, StateDead, 0, 10)
		require.NoError(t, err)
		require.Len(t, dls, 3)
		require.Contains(t, dls[0].Reason, "retries exhausted: gave up")
		require.Contains(t, dls[0].Envelope, `"status":"dead"`)
		page, err := s.adm.List(ctx, StateDead, 2, 10)
		require.NoError(t, err)
		require.Len(t, page, 1)

		n, err := s.adm.RequeueDead(ctx, "d1", "d2", "missing")
		require.NoError(t, err)
		require.Equal(t, 2, n)
		n, err = s.adm.DeleteDead(ctx, "d3", "d1")
		require.NoError(t, err)
		require.Equal(t, 1, n, "d1 is no longer dead")
		_, err = s.adm.Inspect(ctx, "d3")
		require.ErrorIs(t, err, ErrNotFound)

		ds := s.lease(t, 2)
		require.Equal(t, 0, ds[0].Spec.Attempt, "requeued with a fresh retry budget")
		require.Equal(t, StatePending, ds[0].Spec.Status)
		require.NoError(t, s.q.Ack(ctx, ds...))
		require.Equal(t, Counts{}, s.counts(t))
	})
}

func TestBlockingPickup(t *testing.T) {
	t.Parallel()
	backends(t, nil, func(t *testing.T, s *setup) {
		ctx := context.Background()
		require.NoError(t, Register(s.ref, "m", "f", func(context.Context, addArgs) error { return nil }))
		// The queue's counters tell what ended each wait: a wake-up, or the BLPOP timeout (opts.Wait, 5s).
		got := s.dequeueAsync("c1")
		waitForBlocked(t, s)
		require.NoError(t, s.q.Enqueue(ctx, NewTaskSpec("wake", Ref("m", "f", nil))))
		r := <-got
		require.NoError(t, r.err)
		require.Equal(t, []string{"wake"}, ids(r.ds))
		require.Zero(t, s.q.blockTimeouts.Load(), "woken by the enqueue, not by the timeout")
		require.NoError(t, s.q.Ack(ctx, r.ds...))

		// Interrupt ends a wait at once, without a task.
		got = s.dequeueAsync("c1")
		waitForBlocked(t, s)
		require.NoError(t, s.q.Interrupt(ctx, "c1"))
		r = <-got
		require.NoError(t, r.err)
		require.Empty(t, r.ds)
		require.Zero(t, s.q.blockTimeouts.Load(), "ended by the interrupt, not by the timeout")

		// A delayed task due during the wait ends it at its due time (server clock), by the consumer's due timer;
		// the BLPOP timeout, 10s past the due time here, cannot beat a timer that a busy machine delays.
		s.q.dueSlack = 10 * time.Second
		got = s.dequeueAsync("c1")
		waitForBlocked(t, s)
		const delay = 300 * time.Millisecond
		require.NoError(t, s.q.Enqueue(ctx, &TaskSpec{TaskID: "soon", Executable: Ref("m", "f", nil), ProcessIn: delay}))
		due, err := s.rdb.ZScore(ctx, s.q.keys.key(keyScheduled), "soon").Result()
		require.NoError(t, err)
		r = <-got
		require.NoError(t, r.err)
		require.Equal(t, []string{"soon"}, ids(r.ds))
		leasedAt := r.ds[0].LeaseDeadline.Add(-s.q.LeaseDuration()) // the server's clock when the script leased it
		require.GreaterOrEqual(t, leasedAt.UnixMilli(), int64(due), "not leased before it was due")
		require.EqualValues(t, 1, s.q.dueWakes.Load(), "the due timer ended the wait")
		require.Zero(t, s.q.dueTimeouts.Load()+s.q.blockTimeouts.Load(), "no wait ended by its timeout")
		require.NoError(t, s.q.Ack(ctx, r.ds...))
	})
}

func TestWakeChainsForFullBatches(t *testing.T) {
	t.Parallel()
	s := newReal(t, nil)
	ctx := context.Background()
	require.NoError(t, Register(s.ref, "m", "f", func(context.Context, addArgs) error { return nil }))
	// Two consumers wait; ten tasks arrive at once; each consumer takes at most 5, so the first wakes the second.
	var wg sync.WaitGroup
	got := make(chan []*Delivery, 2)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ds, err := s.q.Dequeue(ctx, DequeueOptions{Max: 5, Wait: 5 * time.Second, Consumer: fmt.Sprint("c", i)})
			if err == nil {
				got <- ds
			}
		}()
	}
	waitFor(t, 5*time.Second, "two blocked clients", func() bool {
		info, _ := s.rdb.Info(ctx, "clients").Result()
		return strings.Contains(info, "blocked_clients:2")
	})
	specs := make([]*TaskSpec, 10)
	for i := range specs {
		specs[i] = NewTaskSpec(fmt.Sprint("t", i), Ref("m", "f", nil))
	}
	require.NoError(t, s.q.EnqueueBatch(ctx, specs))
	wg.Wait()
	close(got)
	total := 0
	for ds := range got {
		require.Len(t, ds, 5)
		total += len(ds)
		require.NoError(t, s.q.Ack(ctx, ds...))
	}
	require.Equal(t, 10, total)
	require.Zero(t, s.q.blockTimeouts.Load(), "the second consumer was woken by the first, not by its timeout")
}

func TestKeysShareOneSlotAndPrefix(t *testing.T) {
	t.Parallel()
	s := newReal(t, nil)
	ctx := context.Background()
	require.NoError(t, Register(s.ref, "m", "f", func(context.Context, addArgs) error { return nil }))
	require.NoError(t, s.q.Enqueue(ctx, NewTaskSpec("a", Ref("m", "f", nil))))
	require.NoError(t, s.q.Enqueue(ctx, &TaskSpec{TaskID: "b", Executable: Ref("m", "f", nil), ProcessIn: time.Hour}))
	d := s.lease(t, 1)[0]
	require.NoError(t, s.q.Retry(ctx, d, time.Hour, errors.New("x")))
	require.NoError(t, s.q.Enqueue(ctx, NewTaskSpec("c", Ref("m", "f", nil))))
	d = s.lease(t, 1)[0]
	require.NoError(t, s.q.DeadLetter(ctx, d, errors.New("x")))

	var keys []string
	iter := s.rdb.Scan(ctx, 0, "*"+s.q.KeyPrefix()+"*", 100).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	require.NoError(t, iter.Err())
	require.NotEmpty(t, keys)
	for _, k := range keys {
		require.True(t, strings.HasPrefix(k, "{"+s.q.KeyPrefix()+"}:"), k)
		require.Equal(t, redisSlot(s.q.keys.key(keyTasks)), redisSlot(k))
	}
}

// redisSlot computes a key's Cluster slot (CRC16 of the hash tag, mod 16384).
func redisSlot(key string) uint16 {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	var crc uint16
	for _, b := range []byte(key) {
		crc ^= uint16(b) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc % 16384
}

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer rdb.Close()
	reg, _ := testRegistry(t)
	for _, p := range []string{"", "a{b}", "a*", "a?", "a[b]", "a b", strings.Repeat("x", 200), "a\\b"} {
		_, err := NewRedisTaskQueue(rdb, p, reg, nil)
		require.ErrorIs(t, err, ErrInvalidKeyPrefix, p)
	}
	for _, p := range []string{"app", "app:emails", "team/app-1.q_2"} {
		_, err := NewRedisTaskQueue(rdb, p, reg, nil)
		require.NoError(t, err, p)
	}
	_, err := NewRedisTaskQueue(nil, "p", reg, nil)
	require.ErrorIs(t, err, ErrInvalidConfig)
	_, err = NewRedisTaskQueue(rdb, "p", nil, nil)
	require.ErrorIs(t, err, ErrInvalidConfig)
	for _, cfg := range []RedisConfig{{Lease: time.Millisecond}, {MaxDeliveries: -1}, {ReapBatch: -5}, {DefaultResolverID: "a b"}, {Limits: Limits{MaxDepth: 2}}} {
		_, err := NewRedisTaskQueue(rdb, "p", reg, &cfg)
		require.ErrorIs(t, err, ErrInvalidConfig, "%+v", cfg)
	}
	cfg := &RedisConfig{}
	q, err := NewRedisTaskQueue(rdb, "p", reg, cfg)
	require.NoError(t, err)
	require.Equal(t, RedisConfig{}, *cfg, "the caller's config is not modified")
	require.Equal(t, 30*time.Second, q.LeaseDuration())
}

func TestEnvelopeSizeLimitOnEnqueue(t *testing.T) {
	t.Parallel()
	s := newMini(t, &RedisConfig{Limits: Limits{MaxEnvelopeBytes: 1024}})
	err := s.q.Enqueue(context.Background(), NewTaskSpec("big", Ref("m", "f", map[string]string{"x": strings.Repeat("y", 2000)})))
	require.ErrorIs(t, err, ErrEnvelopeTooLarge)
	require.Equal(t, Counts{}, s.counts(t))
}

func TestScriptFlushIsInvisible(t *testing.T) {
	t.Parallel()
	s := newReal(t, nil)
	ctx := context.Background()
	require.NoError(t, Register(s.ref, "m", "f", func(context.Context, addArgs) error { return nil }))
	require.NoError(t, s.q.Enqueue(ctx, NewTaskSpec("a", Ref("m", "f", nil))))
	require.NoError(t, s.rdb.ScriptFlush(ctx).Err())
	d := s.lease(t, 1)[0]
	require.NoError(t, s.rdb.ScriptFlush(ctx).Err())
	require.NoError(t, s.q.Ack(ctx, d))
}

func TestSettledOutcomesAreKeptApart(t *testing.T) {
	t.Parallel()
	backends(t, nil, func(t *testing.T, s *setup) {
		ctx := context.Background()
		require.NoError(t, Register(s.ref, "m", "f", func(context.Context, addArgs) error { return nil }))
		require.NoError(t, s.q.Enqueue(ctx, NewTaskSpec("r", Ref("m", "f", nil))))
		d := s.lease(t, 1)[0]
		require.NoError(t, s.q.Release(ctx, d))
		require.NoError(t, s.q.Release(ctx, d), "a repeated release succeeds")
		require.ErrorIs(t, s.q.Ack(ctx, d), ErrLeaseLost, "an ack after a release of the same delivery is refused")
		require.ErrorIs(t, s.q.Retry(ctx, d, 0, errors.New("x")), ErrLeaseLost)
		require.Equal(t, Counts{Pending: 1}, s.counts(t))

		// A deleted dead letter's id can be enqueued again.
		d = s.lease(t, 1)[0]
		require.NoError(t, s.q.DeadLetter(ctx, d, errors.New("bad")))
		n, err := s.adm.DeleteDead(ctx, "r")
		require.NoError(t, err)
		require.Equal(t, 1, n)
		require.NoError(t, s.q.Enqueue(ctx, NewTaskSpec("r", Ref("m", "f", nil))))
		require.Equal(t, Counts{Pending: 1}, s.counts(t))
		require.NoError(t, s.q.Ack(ctx, s.lease(t, 1)...))
	})
}

func TestSettledWindowOff(t *testing.T) {
	t.Parallel()
	s := newMini(t, &RedisConfig{SettledWindow: -1})
	ctx := context.Background()
	require.NoError(t, Register(s.ref, "m", "f", func(context.Context, addArgs) error { return nil }))
	require.NoError(t, s.q.Enqueue(ctx, NewTaskSpec("x", Ref("m", "f", nil))))
	require.NoError(t, s.q.Ack(ctx, s.lease(t, 1)...))
	require.False(t, s.mr.Exists(s.q.keys.key(keySettled)), "no settled ids are kept")
	require.NoError(t, s.q.Enqueue(ctx, NewTaskSpec("x", Ref("m", "f", nil))))
	require.Equal(t, Counts{Pending: 1}, s.counts(t), "without a window, a completed id runs again")
}

func TestMismatchedTaskIDIsParked(t *testing.T) {
	t.Parallel()
	s := newMini(t, nil)
	ctx := context.Background()
	require.NoError(t, Register(s.ref, "m", "f", func(context.Context, addArgs) error { return nil }))
	s.writeRaw(t, "stored-as", `{"v":1,"task_id":"claims","status":"ready","created_at":1,"strategy":"reference","resolver_id":"default","serialized_task":{"strategy":"reference","payload":{"module":"m","name":"f"}},"max_retries":0}`)
	s.lease(t, 0)
	dl, err := deadLetterOf(ctx, s.q, "stored-as")
	require.NoError(t, err)
	require.Contains(t, dl.Reason, "does not match")
}

func TestEnqueueValidatesSpecs(t *testing.T) {
	t.Parallel()
	s := newMini(t, nil)
	ctx := context.Background()
	require.ErrorIs(t, s.q.Enqueue(ctx, &TaskSpec{TaskID: "neg", Executable: Ref("m", "f", nil), Timeout: -time.Second}), ErrInvalidConfig)
	require.ErrorIs(t, s.q.Enqueue(ctx, &TaskSpec{TaskID: "neg", Executable: Ref("m", "f", nil), MaxRetries: -2}), ErrInvalidConfig)
	require.ErrorIs(t, s.q.Enqueue(ctx, nil), ErrInvalidConfig)
	require.NoError(t, s.q.Enqueue(ctx, &TaskSpec{TaskID: "tiny", Executable: Ref("m", "f", nil), ProcessIn: 500 * time.Microsecond}))
	require.Equal(t, Counts{Scheduled: 1}, s.counts(t), "a sub-millisecond delay is rounded up, not dropped")
	_, err := s.q.Dequeue(ctx, DequeueOptions{Max: 1, Consumer: "bad name"})
	require.ErrorIs(t, err, ErrInvalidConfig)
	require.ErrorIs(t, s.q.Interrupt(ctx, "a}b"), ErrInvalidConfig)

	// A spec without an id gets a random one.
	require.NoError(t, s.q.Enqueue(ctx, &TaskSpec{Executable: Ref("m", "f", nil)}))
	require.Equal(t, int64(1), s.counts(t).Pending)
}

func TestSuspectsAreLeasedAlone(t *testing.T) {
	t.Parallel()
	backends(t, &RedisConfig{Lease: 100 * time.Millisecond}, func(t *testing.T, s *setup) {
		ctx := context.Background()
		require.NoError(t, Register(s.ref, "m", "f", func(context.Context, addArgs) error { return nil }))
		for _, id := range []string{"a", "b", "c", "d"} {
			require.NoError(t, s.q.Enqueue(ctx, NewTaskSpec(id, Ref("m", "f", nil))))
		}
		// b and c lose their worker; a and d are acked.
		ds := s.lease(t, 4)
		require.NoError(t, s.q.Ack(ctx, ds[0], ds[3]))
		s.advance(150 * time.Millisecond)
		res, err := s.q.Reap(ctx)
		require.NoError(t, err)
		require.Equal(t, 2, res.Requeued)
		require.NoError(t, s.q.Enqueue(ctx, NewTaskSpec("e", Ref("m", "f", nil))))

		// Pending is b, c (suspects, at the head), e. Each suspect comes alone, in order, then e.
		for _, want := range []string{"b", "c"} {
			ds, err := s.q.Dequeue(ctx, DequeueOptions{Max: 10})
			require.NoError(t, err)
			require.Equal(t, []string{want}, ids(ds))
			require.Equal(t, 2, ds[0].Deliveries)
			require.NoError(t, s.q.Ack(ctx, ds...))
		}
		ds, err = s.q.Dequeue(ctx, DequeueOptions{Max: 10})
		require.NoError(t, err)
		require.Equal(t, []string{"e"}, ids(ds))
		require.NoError(t, s.q.Ack(ctx, ds...))
	})
}

func TestBatchIsCutBeforeASuspect(t *testing.T) {
	t.Parallel()
	s := newMini(t, nil)
	ctx := context.Background()
	require.NoError(t, Register(s.ref, "m", "f", func(context.Context, addArgs) error { return nil }))
	for _, id := range []string{"a", "b", "c"} {
		require.NoError(t, s.q.Enqueue(ctx, NewTaskSpec(id, Ref("m", "f", nil))))
	}
	require.NoError(t, s.rdb.HSet(ctx, s.q.keys.key(keyDeliveries), "b", 1).Err()) // b lost a worker before
	for _, want := range [][]string{{"a"}, {"b"}, {"c"}} {
		ds, err := s.q.Dequeue(ctx, DequeueOptions{Max: 10})
		require.NoError(t, err)
		require.Equal(t, want, ids(ds))
		require.NoError(t, s.q.Ack(ctx, ds...))
	}
	require.Zero(t, s.rdb.Exists(ctx, s.q.keys.key(keyDeliveries)).Val(), "b's ack removed its count of lost leases")
}

func TestTokensNeverRepeatAfterAnEmptyRestart(t *testing.T) {
	t.Parallel()
	backends(t, nil, func(t *testing.T, s *setup) {
		ctx := context.Background()
		require.NoError(t, Register(s.ref, "m", "f", func(context.Context, addArgs) error { return nil }))
		require.NoError(t, s.q.Enqueue(ctx, NewTaskSpec("x", Ref("m", "f", nil))))
		stale := s.lease(t, 1)[0]
		now, err := s.adm.ServerTime(ctx)
		require.NoError(t, err)
		require.Greater(t, stale.Token, (now.UnixMilli()-60_000)*256, "the counter starts from the server clock")

		// Redis restarts without persistence: every key of the queue is gone, the counter too. The same task is
		// enqueued again and delivered; the worker from before the restart must not be able to ack it.
		require.NoError(t, s.rdb.Del(ctx, s.q.keys.all...).Err())
		s.advance(5 * time.Millisecond)
		require.NoError(t, s.q.Enqueue(ctx, NewTaskSpec("x", Ref("m", "f", nil))))
		owner := s.lease(t, 1)[0]
		require.Greater(t, owner.Token, stale.Token)
		require.ErrorIs(t, s.q.Ack(ctx, stale), ErrLeaseLost)
		require.NoError(t, s.q.Ack(ctx, owner))
		require.NoError(t, s.q.Ack(ctx, owner), "repeated ack with a large token")
		require.Equal(t, Counts{}, s.counts(t))
	})
}

// A retry or dead letter resent after it ran is answered with success and writes nothing, even when the settled
// window no longer remembers it (here it is off); another outcome, or another error, is still refused.
func TestOutcomeResendAfterItRan(t *testing.T) {
	t.Parallel()
	backends(t, &RedisConfig{SettledWindow: -1}, func(t *testing.T, s *setup) {
		ctx := context.Background()
		require.NoError(t, Register(s.ref, "m", "f", func(context.Context, addArgs) error { return nil }))
		require.NoError(t, s.q.EnqueueBatch(ctx, []*TaskSpec{NewTaskSpec("r", Ref("m", "f", nil)), NewTaskSpec("d", Ref("m", "f", nil))}))
		ds := s.lease(t, 2)
		dr, dd := ds[0], ds[1]
		require.Equal(t, "r", dr.Spec.TaskID)
		cause := errors.New("boom")
		for range 2 {
			require.NoError(t, s.q.Retry(ctx, dr, time.Hour, cause))
			require.NoError(t, s.q.DeadLetter(ctx, dd, cause))
			require.Equal(t, Counts{Scheduled: 1, Dead: 1}, s.counts(t))
		}
		raw, err := s.rdb.HGet(ctx, s.q.keys.key(keyTasks), "r").Result()
		require.NoError(t, err)
		env, err := decodeEnvelope([]byte(raw), s.q.cfg.Limits)
		require.NoError(t, err)
		require.Equal(t, 1, env.Attempt, "one attempt counted")
		require.ErrorIs(t, s.q.DeadLetter(ctx, dr, cause), ErrLeaseLost, "another outcome")
		require.ErrorIs(t, s.q.Retry(ctx, dr, time.Hour, errors.New("other")), ErrLeaseLost, "another error")
		require.ErrorIs(t, s.q.Retry(ctx, dd, time.Hour, cause), ErrLeaseLost)
		require.Equal(t, Counts{Scheduled: 1, Dead: 1}, s.counts(t))
	})
}

// requireSeedRecord checks the envelope stored under id: it keeps the seed's field names for what it holds and
// leaves out what is stored elsewhere (task_id, a pending status, a strategy equal to serialized_task's), and
// Inspect presents the seed's record, every field of the seed's "Data Format Example" there.
func requireSeedRecord(t *testing.T, s *setup, id, stored string) {
	t.Helper()
	var fields map[string]json.RawMessage
	require.NoError(t, json.Unmarshal([]byte(stored), &fields))
	for _, k := range []string{"v", "created_at", "resolver_id", "serialized_task", "group_id"} {
		require.Contains(t, fields, k)
	}
	for _, k := range []string{"task_id", "status", "strategy"} {
		require.NotContains(t, fields, k)
	}
	info, err := s.adm.Inspect(context.Background(), id)
	require.NoError(t, err)
	require.Equal(t, stored, info.Envelope)
	var rec map[string]json.RawMessage
	require.NoError(t, json.Unmarshal([]byte(info.Record), &rec))
	for _, k := range []string{"v", "task_id", "status", "created_at", "strategy", "resolver_id", "serialized_task", "group_id"} {
		require.Contains(t, rec, k)
	}
	require.JSONEq(t, strconv.Quote(id), string(rec["task_id"]))
	require.JSONEq(t, `"pending"`, string(rec["status"]))
	require.JSONEq(t, `"`+StrategyReference+`"`, string(rec["strategy"]))
	require.True(t, strings.HasPrefix(info.Record, `{"v":2,"task_id":`), "the seed's order: %s", info.Record)
}
