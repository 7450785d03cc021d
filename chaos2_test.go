//go:build chaos

package taskqueue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// TestChaos2 holds scenarios 3, 9, 12 and 16 of the reliability issue (docs/reliability.md). Each starts its own
// redis-server on a free loopback port; none touches a Redis it did not start.
func TestChaos2(t *testing.T) {
	t.Run("03_LostEnqueueReply", func(t *testing.T) { t.Parallel(); chaosLostEnqueueReply(t) })
	t.Run("09_RedisRestartNoPersistence", func(t *testing.T) { t.Parallel(); chaosRestartNoPersistence(t) })
	t.Run("12_DebugSleepClientPause", func(t *testing.T) { t.Parallel(); chaosSleepPause(t) })
	t.Run("16_SchemaVersions", func(t *testing.T) { t.Parallel(); chaosSchemaVersions(t) })
}

// debugRedis are the flags of a redis-server without persistence that accepts DEBUG (off by default since 7.0).
var debugRedis = []string{"--save", "", "--appendonly", "no", "--enable-debug-command", "yes"}

// pendingCount counts the occurrences of id in the pending list.
func pendingCount(t testing.TB, rdb redis.UniversalClient, q *RedisTaskQueue, id string) int {
	t.Helper()
	ids, err := rdb.LRange(context.Background(), q.keys.key(keyPending), 0, -1).Result()
	require.NoError(t, err)
	n := 0
	for _, x := range ids {
		if x == id {
			n++
		}
	}
	return n
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) ||
		(errors.As(err, &ne) && ne.Timeout())
}

// chaosLostEnqueueReply (scenario 3): the enqueue script's reply arrives after the client's read timeout (200ms,
// go-redis's default 3 retries), because another connection made the server stall right before the enqueue was
// sent: DEBUG SLEEP (the script runs late, on a connection the client already gave up) or CLIENT PAUSE ALL (the
// command waits, and is dropped if its connection closes first). Whatever the caller was told, the producer then
// retries once with a healthy client; the task must exist exactly once, and a nil answer must mean it exists.
func chaosLostEnqueueReply(t *testing.T) {
	srv := startChaosRedis(t, debugRedis...)
	ctx := context.Background()
	admin := srv.client(t, &redis.Options{ReadTimeout: 10 * time.Second})
	short := srv.client(t, &redis.Options{ReadTimeout: 200 * time.Millisecond, WriteTimeout: 200 * time.Millisecond})
	q, _ := chaosQueue(t, short, "chaos-lostreply", nil)
	qa, _ := chaosQueue(t, admin, "chaos-lostreply", nil)
	// Load the script first, so that the faulted call is one EVALSHA (a NOSCRIPT fallback would be a second one).
	require.NoError(t, qa.Enqueue(ctx, chaosWork(chaosWorkArgs{ID: "warmup"})))

	const rounds = 20
	tally := map[string]int{}
	var durs []time.Duration
	var execs int
	for r := range rounds {
		id := fmt.Sprintf("lr%02d", r)
		spec := chaosWork(chaosWorkArgs{ID: id, SleepMS: int64(r)})
		stall := 450*time.Millisecond + time.Duration(r%5)*100*time.Millisecond // 450..850ms, past 200ms
		mode := "debug-sleep"
		if r%2 == 1 {
			mode = "client-pause"
		}
		// A warm connection in the pool, so that the faulted call is the EVALSHA itself, not a dial's handshake.
		require.NoError(t, short.Ping(ctx).Err())
		stallDone := make(chan error, 1)
		if mode == "debug-sleep" {
			go func() {
				stallDone <- admin.Do(ctx, "DEBUG", "SLEEP", fmt.Sprintf("%.3f", stall.Seconds())).Err()
			}()
			time.Sleep(30 * time.Millisecond) // the server is now asleep (it answers nothing until it wakes)
		} else {
			stallDone <- admin.Do(ctx, "CLIENT", "PAUSE", stall.Milliseconds(), "ALL").Err()
		}
		start := time.Now()
		err := q.Enqueue(ctx, spec)
		durs = append(durs, time.Since(start))
		require.NoError(t, <-stallDone, "round %d: %s", r, mode)
		// Wait until the server answers again, and until anything it still held has run.
		require.NoError(t, admin.Do(ctx, "CLIENT", "UNPAUSE").Err())
		require.NoError(t, admin.Ping(ctx).Err())
		n, herr := admin.HExists(ctx, qa.keys.key(keyTasks), id).Result()
		require.NoError(t, herr)
		inPending := pendingCount(t, admin, qa, id)
		switch {
		case err == nil:
			tally[mode+":ok"]++
			require.True(t, n, "round %d: Enqueue returned nil but the task does not exist", r)
		case isTimeout(err):
			tally[mode+":timeout-error"]++
			require.NotContains(t, err.Error(), "NOSCRIPT")
		default:
			t.Fatalf("round %d (%s): enqueue failed with an unexpected error: %v", r, mode, err)
		}
		if n {
			execs++
		}
		require.LessOrEqual(t, inPending, 1, "round %d: a duplicate in pending", r)
		// The producer's retry, through a healthy client: idempotent.
		require.NoError(t, qa.Enqueue(ctx, spec), "round %d: the retried enqueue", r)
		require.Equal(t, 1, pendingCount(t, admin, qa, id), "round %d: exactly one task after the retry", r)
		if err != nil {
			tally[mode+":err-then-retry-ok"]++
		}
	}
	st := chaosStats(t, qa)
	require.Equal(t, Counts{Pending: rounds + 1}, st, "one task per id, nothing else")
	hl, err := admin.HLen(ctx, qa.keys.key(keyTasks)).Result()
	require.NoError(t, err)
	require.EqualValues(t, rounds+1, hl)
	chaosResult(t, "rounds=%d outcomes=%v; task stored after the faulted call (before the retry): %d/%d; duplicates=0; call duration %s",
		rounds, tally, execs, rounds, durStats(durs))
}

// msgCounter is a slog handler that counts records by message.
type msgCounter struct {
	mu    sync.Mutex
	count map[string]int
	times map[string][]time.Time
}

func newMsgCounter() *msgCounter {
	return &msgCounter{count: map[string]int{}, times: map[string][]time.Time{}}
}
func (m *msgCounter) Enabled(context.Context, slog.Level) bool { return true }
func (m *msgCounter) Handle(_ context.Context, r slog.Record) error {
	m.mu.Lock()
	m.count[r.Message]++
	m.times[r.Message] = append(m.times[r.Message], time.Now())
	m.mu.Unlock()
	return nil
}
func (m *msgCounter) WithAttrs([]slog.Attr) slog.Handler { return m }
func (m *msgCounter) WithGroup(string) slog.Handler      { return m }

// offsets returns when each record of msg came, relative to from.
func (m *msgCounter) offsets(msg string, from time.Time) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for _, at := range m.times[msg] {
		if !at.Before(from) {
			out = append(out, at.Sub(from).Round(time.Millisecond).String())
		}
	}
	return out
}

func (m *msgCounter) between(msg string, from, to time.Time) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, at := range m.times[msg] {
		if !at.Before(from) && at.Before(to) {
			n++
		}
	}
	return n
}

// chaosRestartNoPersistence (scenario 9): redis-server without persistence is killed with SIGKILL mid-run and
// restarted empty on the same port after a 2s outage.
func chaosRestartNoPersistence(t *testing.T) {
	srv := startChaosRedis(t)
	ctx := context.Background()
	opts := &redis.Options{ReadTimeout: 300 * time.Millisecond, WriteTimeout: 300 * time.Millisecond, DialTimeout: 300 * time.Millisecond}
	prod := srv.client(t, opts)
	q, _ := chaosQueue(t, prod, "chaos-nopersist", &RedisConfig{Lease: time.Second})
	// A delivery held by the test across the restart, on a second prefix no worker serves.
	mq, _ := chaosQueue(t, prod, "chaos-nopersist-manual", &RedisConfig{Lease: 30 * time.Second})
	require.NoError(t, mq.Enqueue(ctx, chaosWork(chaosWorkArgs{ID: "held"})))
	held, err := mq.Dequeue(ctx, DequeueOptions{Max: 1})
	require.NoError(t, err)
	require.Len(t, held, 1)

	var mu sync.Mutex
	done := map[string]int{}
	wq, wref := chaosQueue(t, srv.client(t, opts), "chaos-nopersist", &RedisConfig{Lease: time.Second})
	require.NoError(t, Register(wref, "m", "job", func(ctx context.Context, a chaosWorkArgs) error {
		select {
		case <-time.After(time.Duration(a.SleepMS) * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
		mu.Lock()
		done[a.ID]++
		mu.Unlock()
		return nil
	}))
	logs := newMsgCounter()
	rec := &recorder{}
	cfg := quietWorker(WorkerConfig{Concurrency: 8, BlockTimeout: time.Second, Name: "np", Logger: slog.New(logs)}, rec)
	cfg.Backoff = nil // the default backoff, 1s and up: handler failures after the restart are not expected
	w := startWorker(t, wq, cfg)
	job := func(id string, sleep int64) *TaskSpec {
		return NewTaskSpec(id, Ref("m", "job", chaosWorkArgs{ID: id, SleepMS: sleep}))
	}

	// Before: 20 quick tasks complete; then 4 long ones (1.5s) are running when Redis dies.
	for i := range 20 {
		require.NoError(t, q.Enqueue(ctx, job(fmt.Sprintf("pre%02d", i), 5)))
	}
	waitFor(t, 10*time.Second, "the first 20 tasks done", func() bool { mu.Lock(); defer mu.Unlock(); return len(done) == 20 })
	for i := range 4 {
		require.NoError(t, q.Enqueue(ctx, job(fmt.Sprintf("long%d", i), 1500)))
	}
	waitFor(t, 5*time.Second, "4 long tasks running", func() bool { return rec.count(EventStarted) >= 24 })

	queueErrsBefore := rec.count(EventQueueError)
	srv.kill()
	killedAt := time.Now()
	var callErrs []string
	var callDur []time.Duration
	outageEnd := killedAt.Add(2 * time.Second)
	for i := 0; time.Now().Before(outageEnd.Add(-400*time.Millisecond)) && i < 10; i++ {
		cctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		s := time.Now()
		err := q.Enqueue(cctx, job(fmt.Sprintf("out%d", i), 1))
		callDur = append(callDur, time.Since(s))
		cancel()
		require.Error(t, err, "enqueue during the outage")
		callErrs = append(callErrs, "enqueue: "+err.Error())
		cctx, cancel = context.WithTimeout(ctx, 500*time.Millisecond)
		s = time.Now()
		err = mq.Ack(cctx, held...)
		callDur = append(callDur, time.Since(s))
		cancel()
		require.Error(t, err, "ack during the outage")
		require.NotErrorIs(t, err, ErrLeaseLost, "an unreachable Redis is not a lost lease")
		callErrs = append(callErrs, "ack: "+err.Error())
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Until(outageEnd))
	pickupErrs := logs.between("taskqueue: pickup failed; retrying", killedAt, time.Now())
	queueErrs := rec.count(EventQueueError) - queueErrsBefore
	require.NoError(t, srv.start())
	restartedAt := time.Now()
	for _, d := range callDur {
		require.Less(t, d, time.Second, "a call during the outage returned within its 500ms timeout (+ slack)")
	}
	// 2s of outage with a backoff from 50ms doubling: about 6 pickup attempts. A busy spin would be thousands.
	require.LessOrEqual(t, pickupErrs, 12, "pickup errors during a 2s outage")

	// The held delivery of the lost data: its ack is refused as a lost lease, not an unclear error.
	ackAfter := mq.Ack(ctx, held...)
	require.ErrorIs(t, ackAfter, ErrLeaseLost)

	// After: the queue works again; everything enqueued after the restart completes.
	var firstAfter time.Duration
	for i := range 30 {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		require.NoError(t, q.Enqueue(cctx, job(fmt.Sprintf("post%02d", i), 5)))
		cancel()
	}
	waitFor(t, 15*time.Second, "the 30 tasks enqueued after the restart done", func() bool {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for i := range 30 {
			if done[fmt.Sprintf("post%02d", i)] > 0 {
				n++
			}
		}
		if n > 0 && firstAfter == 0 {
			firstAfter = time.Since(restartedAt)
		}
		return n == 30
	})
	allDone := time.Since(restartedAt)
	// Long tasks that were running at the kill finish after the restart: their acks must be refused (the data is
	// gone), not recreate anything. The worker holds none once they have ended and their acks were answered.
	waitFor(t, 10*time.Second, "the long tasks ended and settled", func() bool { return w.Health().InFlight == 0 })
	waitStats(t, q, 5*time.Second, Counts{})
	keys, err := prod.Keys(ctx, "{chaos-nopersist}:*").Result()
	require.NoError(t, err)
	tasksLen, err := prod.HLen(ctx, q.keys.key(keyTasks)).Result()
	require.NoError(t, err)
	leaseLen, err := prod.HLen(ctx, q.keys.key(keyLease)).Result()
	require.NoError(t, err)
	require.Zero(t, tasksLen, "no orphan envelopes")
	require.Zero(t, leaseLen, "no orphan leases")
	mu.Lock()
	longDone := 0
	for i := range 4 {
		longDone += done[fmt.Sprintf("long%d", i)]
	}
	dups := 0
	for _, n := range done {
		dups += n - 1
	}
	mu.Unlock()
	chaosResult(t, "outage=2s; calls during the outage=%d all errors, longest %s (timeout 500ms), e.g. %q; pickup errors during the outage=%d (%.1f/s; at %v after the kill), queue_error events during the outage=%d (pickup, heartbeat, reaper); after restart: held delivery's ack -> %v; 30/30 new tasks done (first %s, all %s after restart), lease_lost events=%d, long tasks finished=%d/4 (lost with the unpersisted data, their acks refused), duplicates=%d, stats {} and no orphan keys (%d keys left: %v)",
		len(callErrs), maxDur(callDur), first(callErrs), pickupErrs, float64(pickupErrs)/2, logs.offsets("taskqueue: pickup failed; retrying", killedAt), queueErrs, ackAfter,
		firstAfter.Round(time.Millisecond), allDone.Round(time.Millisecond), rec.count(EventLeaseLost), longDone, dups, len(keys), keys)
}

func maxDur(ds []time.Duration) time.Duration {
	var m time.Duration
	for _, d := range ds {
		m = max(m, d)
	}
	return m.Round(time.Millisecond)
}

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

// ackSpy wraps a queue and records every delivery whose Ack returned nil.
type ackSpy struct {
	*RedisTaskQueue
	mu     sync.Mutex
	acked  map[string]map[int64]bool // task id -> tokens acknowledged
	ackErr int
}

func (s *ackSpy) Ack(ctx context.Context, ds ...*Delivery) error {
	err := s.RedisTaskQueue.Ack(ctx, ds...)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.ackErr++
		return err
	}
	for _, d := range ds {
		if s.acked[d.Spec.TaskID] == nil {
			s.acked[d.Spec.TaskID] = map[int64]bool{}
		}
		s.acked[d.Spec.TaskID][d.Token] = true
	}
	return nil
}

// chaosSleepPause (scenario 12): DEBUG SLEEP and CLIENT PAUSE WRITE, each longer than the 500ms lease, while two
// workers process tasks. Worker clients time out after 300ms.
func chaosSleepPause(t *testing.T) {
	srv := startChaosRedis(t, debugRedis...)
	ctx := context.Background()
	admin := srv.client(t, &redis.Options{ReadTimeout: 10 * time.Second})
	q, _ := chaosQueue(t, admin, "chaos-stall", &RedisConfig{Lease: 500 * time.Millisecond})

	var mu sync.Mutex
	runs, completed := map[string]int{}, map[string]int{}
	var spies []*ackSpy
	recs := []*recorder{{}, {}}
	for i := range 2 {
		wq, wref := chaosQueue(t, srv.client(t, &redis.Options{ReadTimeout: 300 * time.Millisecond, WriteTimeout: 300 * time.Millisecond}),
			"chaos-stall", &RedisConfig{Lease: 500 * time.Millisecond})
		require.NoError(t, Register(wref, "m", "job", func(ctx context.Context, a chaosWorkArgs) error {
			mu.Lock()
			runs[a.ID]++
			mu.Unlock()
			select {
			case <-time.After(time.Duration(a.SleepMS) * time.Millisecond):
			case <-ctx.Done():
				return ctx.Err()
			}
			mu.Lock()
			completed[a.ID]++
			mu.Unlock()
			return nil
		}))
		spy := &ackSpy{RedisTaskQueue: wq, acked: map[string]map[int64]bool{}}
		spies = append(spies, spy)
		startWorker(t, spy, quietWorker(WorkerConfig{Concurrency: 8, BlockTimeout: time.Second, Name: fmt.Sprintf("st%d", i)}, recs[i]))
	}
	const tasks = 300
	for i := range tasks {
		id := fmt.Sprintf("s%03d", i)
		require.NoError(t, q.Enqueue(ctx, NewTaskSpec(id, Ref("m", "job", chaosWorkArgs{ID: id, SleepMS: 100}))))
	}
	// Six stalls of 700ms (past the lease), alternately DEBUG SLEEP and CLIENT PAUSE WRITE, 300ms apart.
	var faults []string
	for i := range 6 {
		time.Sleep(300 * time.Millisecond)
		if i%2 == 0 {
			require.NoError(t, admin.Do(ctx, "DEBUG", "SLEEP", "0.7").Err())
			faults = append(faults, "debug-sleep")
		} else {
			require.NoError(t, admin.Do(ctx, "CLIENT", "PAUSE", 700, "WRITE").Err())
			time.Sleep(700 * time.Millisecond)
			faults = append(faults, "client-pause-write")
		}
	}
	waitFor(t, 60*time.Second, "every task completed", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(completed) == tasks
	})
	waitStats(t, q, 30*time.Second, Counts{})

	acked := map[string]map[int64]bool{}
	ackErrs := 0
	for _, s := range spies {
		s.mu.Lock()
		for id, toks := range s.acked {
			if acked[id] == nil {
				acked[id] = map[int64]bool{}
			}
			for tok := range toks {
				acked[id][tok] = true
			}
		}
		ackErrs += s.ackErr
		s.mu.Unlock()
	}
	twice, unacked := 0, 0
	for i := range tasks {
		id := fmt.Sprintf("s%03d", i)
		switch n := len(acked[id]); {
		case n == 0:
			unacked++
		case n > 1:
			twice++
		}
	}
	mu.Lock()
	dups, reruns := 0, 0
	for _, n := range completed {
		dups += n - 1
	}
	for _, n := range runs {
		reruns += n - 1
	}
	mu.Unlock()
	var qerr, lost, retried, dead int
	var sample []string
	for _, r := range recs {
		qerr += r.count(EventQueueError)
		lost += r.count(EventLeaseLost)
		retried += r.count(EventRetried)
		dead += r.count(EventDead)
		if e := r.last(EventQueueError); e.Err != nil && len(sample) < 2 {
			sample = append(sample, e.Err.Error())
		}
	}
	require.Zero(t, twice, "a task acknowledged under two different fencing tokens")
	require.Zero(t, dead, "no task dead-lettered")
	require.Zero(t, unacked, "every task acknowledged by exactly one delivery")
	chaosResult(t, "tasks=%d faults=%d %v; lost=0; acked by two tokens=0; runs beyond the first=%d, completed more than once=%d; queue_error events=%d (e.g. %q), lease_lost=%d, retried=%d, dead=0, refused/failed Ack calls=%d",
		tasks, len(faults), faults, reruns, dups, qerr, strings.Join(sample, " | "), lost, retried, ackErrs)
}

// v2Envelope is the seed's envelope with a newer schema version and a field a v1 worker does not know.
const v2Envelope = `{"v": 2, "task_id": "future", "status": "ready", "created_at": 1719300000.0, "strategy": "reference", "resolver_id": "default", "serialized_task": {"strategy": "reference", "payload": {"module": "examples.tasks", "name": "extract_data"}}, "group_id": "etl_batch", "priority_class": {"lane": 7}}`

// chaosSchemaVersions (scenario 16): a worker parks a v2 envelope untouched (and RequeueDead keeps it
// byte-identical), and runs the seed's v0 envelope (no "v").
func chaosSchemaVersions(t *testing.T) {
	srv := startChaosRedis(t)
	ctx := context.Background()
	rdb := srv.client(t, nil)
	q, ref := chaosQueue(t, rdb, "chaos-schema", nil)
	ran := make(chan string, 10)
	require.NoError(t, Register(ref, "examples.tasks", "extract_data", func(context.Context, struct{}) error {
		ran <- "extract_data"
		return nil
	}))
	seed, err := os.ReadFile("testdata/seed_v0.json")
	require.NoError(t, err)
	require.NotContains(t, string(seed), `"v"`)
	writeRaw := func(id, raw string) {
		require.NoError(t, rdb.HSet(ctx, q.keys.key(keyTasks), id, raw).Err())
		require.NoError(t, rdb.RPush(ctx, q.keys.key(keyPending), id).Err())
	}
	writeRaw("future", v2Envelope)
	writeRaw("extract_data", string(seed))

	rec := &recorder{}
	w, err := NewTaskWorker(q, quietWorker(WorkerConfig{Concurrency: 2, BlockTimeout: time.Second, Name: "schema"}, rec))
	require.NoError(t, err)
	require.NoError(t, w.Start(ctx))
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			require.NoError(t, w.Stop(sctx))
		}
	}
	t.Cleanup(stop)
	select {
	case <-ran:
	case <-time.After(10 * time.Second):
		t.Fatal("the v0 envelope did not run")
	}
	waitStats(t, q, 10*time.Second, Counts{Dead: 1})
	stop()

	dl, err := deadLetterOf(ctx, q, "future")
	require.NoError(t, err)
	require.Contains(t, dl.Reason, ErrUnsupportedVersion.Error())
	require.Equal(t, v2Envelope, dl.Envelope, "parked byte for byte")
	stored, err := rdb.HGet(ctx, q.keys.key(keyTasks), "future").Result()
	require.NoError(t, err)
	require.Equal(t, v2Envelope, stored)

	n, err := mustAdmin(q).RequeueDead(ctx, "future")
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.Equal(t, Counts{Pending: 1}, chaosStats(t, q))
	stored, err = rdb.HGet(ctx, q.keys.key(keyTasks), "future").Result()
	require.NoError(t, err)
	requeueIdentical := stored == v2Envelope
	if !requeueIdentical {
		t.Skipf("BUG: RequeueDead rewrote a v2 envelope it cannot read:\nbefore %s\nafter  %s", v2Envelope, stored)
	}

	// A second v1 worker parks it again, still untouched: a v2 task survives any number of round trips.
	w2 := startWorker(t, q, quietWorker(WorkerConfig{Concurrency: 1, BlockTimeout: time.Second, Name: "schema2"}, rec))
	_ = w2
	waitStats(t, q, 10*time.Second, Counts{Dead: 1})
	dl, err = deadLetterOf(ctx, q, "future")
	require.NoError(t, err)
	require.Equal(t, v2Envelope, dl.Envelope)
	chaosResult(t, "v2 envelope (%d bytes, with an unknown field) parked with %q, byte-identical after parking, after RequeueDead and after a second parking; v0 seed envelope run once",
		len(v2Envelope), dl.Reason)
}
