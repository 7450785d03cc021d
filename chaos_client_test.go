//go:build chaos

package taskqueue

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

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

// chaosLongTaskSilentConnection (scenario 5): a worker process with a 2s lease runs a task for five leases and its
// heartbeats keep it: one run, no redelivery, although a second worker reaps every 100ms. Then the worker's
// connection goes silent (a proxy holds every byte): the handler's context is cancelled before the lease deadline
// that Redis holds, and once the connection comes back the task runs again.
func chaosLongTaskSilentConnection(t *testing.T, bin string) {
	srv := startChaosRedis(t)
	rdb := srv.client(t, nil)
	const prefix = "chaos-hb"
	q, _ := chaosQueue(t, rdb, prefix, nil)
	ledger := filepath.Join(t.TempDir(), "ledger")
	ctx := context.Background()
	// 2s rather than 1s: under -race with the whole chaos suite in parallel, a 333ms heartbeat left too little room
	// (a CI run once timed out in part 1).
	const lease = 2 * time.Second
	proxy := startChaosProxy(t, srv.addr)
	a := startChaosWorker(t, bin, chaosWorkerOpts{Name: "via-proxy", Addr: proxy.addr(), Prefix: prefix, Ledger: ledger, Lease: lease, Concurrency: 2})

	// Part 1: five leases of work, with a second worker reaping all along.
	long := 5 * lease
	require.NoError(t, q.Enqueue(ctx, chaosWork(chaosWorkArgs{ID: "long", FirstSleepMS: ms(long), HonorCtx: true})))
	waitLedger(t, ledger, 10*time.Second, "the long task started", func(es []ledgerEntry) bool { return len(ledgerOf(es, "start", "long")) == 1 })
	b := startChaosWorker(t, bin, chaosWorkerOpts{Name: "reaper", Addr: srv.addr, Prefix: prefix, Ledger: ledger, Lease: lease, Concurrency: 2})
	var deadlines []float64
	es := waitLedger(t, ledger, long+20*time.Second, "the long task done", func(es []ledgerEntry) bool {
		if s, err := leaseDeadline(ctx, q, "long"); err == nil {
			if len(deadlines) == 0 || deadlines[len(deadlines)-1] != s {
				deadlines = append(deadlines, s)
			}
		}
		return len(ledgerOf(es, "done", "long")) == 1
	})
	waitStats(t, q, 10*time.Second, Counts{})
	starts := ledgerOf(es, "start", "long")
	require.Len(t, starts, 1, "never redelivered")
	require.Empty(t, ledgerOf(es, "cancel", "long"))
	ran := ledgerOf(es, "done", "long")[0].At.Sub(starts[0].At)
	require.GreaterOrEqual(t, ran, long)
	require.GreaterOrEqual(t, len(deadlines), 4, "the lease deadline in Redis moved forward with the heartbeats: %v", deadlines)
	require.Empty(t, b.logsWith("taskqueue: task started", "long"))
	require.Empty(t, a.logsWith("taskqueue: task lease_lost", "long"))
	b.signal(t, syscall.SIGTERM)
	require.Equal(t, 0, b.wait(t, 10*time.Second))

	// Part 2: the connection goes silent while a task runs; its handler must be cancelled before Redis's lease
	// deadline, since any other worker may take the task after it.
	const rounds = 3
	var cutToCancel, margins, backToRerun []time.Duration
	for r := range rounds {
		id := fmt.Sprintf("cut-%d", r)
		require.NoError(t, q.Enqueue(ctx, chaosWork(chaosWorkArgs{ID: id, FirstSleepMS: 60_000, SleepMS: 10, HonorCtx: true})))
		waitLedger(t, ledger, 10*time.Second, id+" started", func(es []ledgerEntry) bool { return len(ledgerOf(es, "start", id)) == 1 })
		proxy.hold()
		cutAt := time.Now()
		es := waitLedger(t, ledger, 2*lease+5*time.Second, id+" cancelled", func(es []ledgerEntry) bool { return len(ledgerOf(es, "cancel", id)) == 1 })
		cancel := ledgerOf(es, "cancel", id)[0]
		require.Contains(t, cancel.Detail, ErrLeaseExpired.Error(), "cancelled because the lease could not be renewed")
		deadlineMS, err := leaseDeadline(ctx, q, id)
		require.NoError(t, err, "still leased: nothing reached Redis from the silent worker")
		deadline := time.UnixMilli(int64(deadlineMS))
		// The worker gives a renewal until half a heartbeat (lease/6) before the lease ends; a quarter of a heartbeat
		// is left for scheduling. Before that rule, the cancel came a few ms before the deadline at best.
		require.GreaterOrEqual(t, deadline.Sub(cancel.At), lease/12, "%s: cancelled at %s, only %s before the lease deadline %s (cut at %s); log:\n%s", id, cancel.At, deadline.Sub(cancel.At), deadline, cutAt, a.logTail(25))
		cutToCancel = append(cutToCancel, cancel.At.Sub(cutAt))
		margins = append(margins, deadline.Sub(cancel.At))
		// No bound on cut-to-cancel itself (a duration): the deadline Redis holds was set by a renewal before the
		// cut, so cancelling before it, with the margin asserted above, is what "within a lease of the cut" means.

		proxy.release()
		backAt := time.Now()
		es = waitLedger(t, ledger, 20*time.Second, id+" rerun and done", func(es []ledgerEntry) bool { return len(ledgerOf(es, "done", id)) == 1 })
		reruns := ledgerOf(es, "start", id)
		require.Len(t, reruns, 2, "%s: the cancelled run and one rerun", id)
		backToRerun = append(backToRerun, reruns[1].At.Sub(backAt))
		waitStats(t, q, 10*time.Second, Counts{})
	}
	require.False(t, a.hasExited())
	es = readLedger(t, ledger)
	chaosResult(t, "long task: ran %s (lease %s), starts=1, %d lease deadlines seen moving; silent connection: cut->cancel %s, cancel before deadline by %s, back->rerun %s",
		ran.Round(time.Millisecond), lease, len(deadlines), durStats(cutToCancel), durStats(margins), durStats(backToRerun))
	dups := 0
	for _, n := range ledgerCount(es, "start") {
		dups += n - 1
	}
	require.Equal(t, rounds, dups, "the only reruns are those of the cut tasks")
	figure(t, "5", "tasks", 1+rounds, "lost", 0, "dup", dups, "long_run_ms", ms(ran), "lease_ms", ms(lease),
		"cut_to_cancel_p50_ms", ms(percentile(cutToCancel, 50)), "cut_to_cancel_max_ms", ms(percentile(cutToCancel, 100)),
		"margin_before_deadline_min_ms", ms(percentile(margins, 0)), "margin_p50_ms", ms(percentile(margins, 50)),
		"back_to_rerun_p50_ms", ms(percentile(backToRerun, 50)), "back_to_rerun_max_ms", ms(percentile(backToRerun, 100)))
}

// (11) CLIENT KILL of the connections blocked in pickup: the workers resume by themselves within a bounded time.
func chaosClientKill(t *testing.T) {
	srv := startChaosRedis(t)
	ctx := context.Background()
	rdb := srv.client(t, nil)
	q, ref := chaosQueue(t, rdb, "chaos-ckill", nil)
	ran := make(chan string, 100)
	require.NoError(t, Register(ref, "m", "ping", func(_ context.Context, a chaosIDArgs) error {
		ran <- a.ID
		return nil
	}))
	// A block timeout far above what a reconnect takes: a worker that resumes only when its wait times out shows.
	const workers, block = 3, 20 * time.Second
	rec := &recorder{}
	for i := range workers {
		// Each worker on a client of its own, as in separate processes.
		wq, wref := chaosQueue(t, srv.client(t, nil), "chaos-ckill", nil)
		require.NoError(t, Register(wref, "m", "ping", func(_ context.Context, a chaosIDArgs) error {
			ran <- a.ID
			return nil
		}))
		startWorker(t, wq, quietWorker(WorkerConfig{Concurrency: 1, BlockTimeout: block, Name: fmt.Sprintf("ck%d", i)}, rec))
	}
	admin := srv.client(t, nil)
	blocked := func() int {
		info, err := admin.Info(ctx, "clients").Result()
		if err != nil {
			return -1
		}
		for line := range strings.SplitSeq(info, "\r\n") {
			if v, ok := strings.CutPrefix(line, "blocked_clients:"); ok {
				n, _ := strconv.Atoi(v)
				return n
			}
		}
		return -1
	}
	const rounds = 10
	var pickup, resume []time.Duration
	killedConns := 0
	for r := range rounds {
		waitFor(t, 10*time.Second, "every worker blocked in pickup", func() bool { return blocked() == workers })
		var killed int64
		if r%2 == 0 {
			n, err := admin.ClientKillByFilter(ctx, "TYPE", "normal").Result() // SKIPME yes: not this connection
			require.NoError(t, err)
			killed = n
		} else {
			list, err := admin.ClientList(ctx).Result()
			require.NoError(t, err)
			for line := range strings.SplitSeq(list, "\n") {
				if !strings.Contains(line, " cmd=blpop ") {
					continue
				}
				for f := range strings.FieldsSeq(line) {
					if v, ok := strings.CutPrefix(f, "id="); ok {
						require.NoError(t, admin.Do(ctx, "CLIENT", "KILL", "ID", v).Err())
						killed++
					}
				}
			}
		}
		killedAt := time.Now()
		require.GreaterOrEqual(t, killed, int64(workers), "round %d: the blocked pickups were killed", r)
		killedConns += int(killed)
		id := fmt.Sprintf("k%d", r)
		require.NoError(t, q.Enqueue(ctx, NewTaskSpec(id, Ref("m", "ping", chaosIDArgs{ID: id}))))
		select {
		case got := <-ran:
			require.Equal(t, id, got)
			pickup = append(pickup, time.Since(killedAt))
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: no worker picked up a task within 10s of the kill", r)
		}
		waitFor(t, block/2, "every worker blocked in pickup again, long before its block timeout", func() bool { return blocked() == workers })
		resume = append(resume, time.Since(killedAt))
	}
	waitStats(t, q, 5*time.Second, Counts{})
	chaosResult(t, "workers=%d rounds=%d killed connections=%d (TYPE normal and by id from CLIENT LIST cmd=blpop, alternately) lost=0; kill->task picked up: %s; kill->all workers blocked again: %s; pickup errors seen by workers: %d",
		workers, rounds, killedConns, durStats(pickup), durStats(resume), rec.count(EventQueueError))
}

// argHook records every numeric argument that the queue sends to Redis and looks like an absolute time (seconds
// or milliseconds since the epoch): leases and due times must be durations, timed by the server's clock.
type argHook struct {
	mu       sync.Mutex
	commands int
	absolute []string
}

func (h *argHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *argHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.check(cmd)
		return next(ctx, cmd)
	}
}

func (h *argHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, c := range cmds {
			h.check(c)
		}
		return next(ctx, cmds)
	}
}

func (h *argHook) check(cmd redis.Cmder) {
	args := cmd.Args()
	from := 1
	if name := strings.ToLower(cmd.Name()); name == "evalsha" || name == "eval" {
		from = 2 // the script or its digest
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.commands++
	for _, a := range args[min(from, len(args)):] {
		var v float64
		switch x := a.(type) {
		case int:
			v = float64(x)
		case int64:
			v = float64(x)
		case float64:
			v = x
		case string:
			f, err := strconv.ParseFloat(x, 64)
			if err != nil {
				continue
			}
			v = f
		default:
			continue
		}
		if looksLikeNow(v) {
			h.absolute = append(h.absolute, fmt.Sprintf("%s %v", cmd.Name(), a))
		}
	}
}

// looksLikeNow reports whether v is within a day of the present as Unix seconds, milliseconds, microseconds or
// nanoseconds. Fencing tokens (the server's clock in ms x 256 plus a count) fall in none of those ranges.
func looksLikeNow(v float64) bool {
	now := time.Now()
	for _, unit := range []time.Duration{time.Second, time.Millisecond, time.Microsecond, time.Nanosecond} {
		t := float64(now.UnixNano()) / float64(unit)
		day := float64(24*time.Hour) / float64(unit)
		if v > t-day && v < t+day {
			return true
		}
	}
	return false
}

// (13) Clock skew: the client's clock never times a lease or a due time. On a real server: no absolute client
// time crosses the wire; stored deadlines and due times are the server's TIME plus a duration; a lease is never
// reclaimed before its server-clock deadline; and ProcessAt timestamps from a clock ten minutes off either way
// are neither lost nor run early.
func chaosClockSkew(t *testing.T) {
	srv := startChaosRedis(t)
	ctx := context.Background()
	rdb := srv.client(t, nil)
	hook := &argHook{}
	rdb.AddHook(hook)
	const lease = 500 * time.Millisecond
	q, ref := chaosQueue(t, rdb, "chaos-skew", &RedisConfig{Lease: lease})
	require.NoError(t, Register(ref, "m", "f", func(context.Context, addArgs) error { return nil }))

	// Due times are the server's now plus the delay, whatever the client's clock says.
	const delay = 2 * time.Second
	require.NoError(t, q.Enqueue(ctx, &TaskSpec{TaskID: "in", Executable: Ref("m", "f", nil), ProcessIn: delay}))
	before := serverNowMS(t, rdb)
	require.NoError(t, q.Enqueue(ctx, &TaskSpec{TaskID: "at", Executable: Ref("m", "f", nil), ProcessAt: time.Now().Add(delay)}))
	after := serverNowMS(t, rdb)
	due, err := rdb.ZScore(ctx, q.keys.key(keyScheduled), "at").Result()
	require.NoError(t, err)
	require.InDelta(t, float64(before+delay.Milliseconds()), due, float64(after-before+20), "due = server now + delay")

	// A timestamp from a clock ten minutes behind is in the past here: the task runs at once, it is not lost.
	require.NoError(t, q.Enqueue(ctx, &TaskSpec{TaskID: "behind", Executable: Ref("m", "f", nil), ProcessAt: time.Now().Add(-10*time.Minute + time.Second)}))
	// One from a clock ten minutes ahead waits ten minutes by the server's clock, and nothing runs it early.
	before = serverNowMS(t, rdb)
	require.NoError(t, q.Enqueue(ctx, &TaskSpec{TaskID: "ahead", Executable: Ref("m", "f", nil), ProcessAt: time.Now().Add(10*time.Minute + time.Second)}))
	after = serverNowMS(t, rdb)
	due, err = rdb.ZScore(ctx, q.keys.key(keyScheduled), "ahead").Result()
	require.NoError(t, err)
	require.InDelta(t, float64(before+(10*time.Minute+time.Second).Milliseconds()), due, float64(after-before+20))
	require.Equal(t, Counts{Pending: 1, Scheduled: 3}, chaosStats(t, q))

	// Leases: the deadline is the server's now plus the lease, and the reaper never takes a lease back early.
	before = serverNowMS(t, rdb)
	ds, err := q.Dequeue(ctx, DequeueOptions{Max: 10})
	require.NoError(t, err)
	after = serverNowMS(t, rdb)
	require.Equal(t, []string{"behind"}, ids(ds))
	d := ds[0]
	deadline, err := leaseDeadline(ctx, q, "behind")
	require.NoError(t, err)
	require.InDelta(t, float64(before+lease.Milliseconds()), deadline, float64(after-before+20))
	require.Equal(t, int64(deadline), d.LeaseDeadline.UnixMilli(), "the delivery reports the server-clock deadline")
	var lastEarly, reclaimed int64
	for i := 0; reclaimed == 0 && i < 1000; i++ {
		res, err := q.Reap(ctx)
		require.NoError(t, err)
		now := serverNowMS(t, rdb)
		if res.Requeued == 1 {
			reclaimed = now
		} else {
			lastEarly = now
		}
		time.Sleep(5 * time.Millisecond)
	}
	require.NotZero(t, reclaimed, "the lease expired")
	require.GreaterOrEqual(t, float64(reclaimed), deadline, "not reclaimed before the server-clock deadline")
	aheadIn := time.Duration(due-float64(after)) * time.Millisecond

	// The delayed tasks come due by the server's clock: "in" and "at" after 2s, "ahead" not within this test.
	got := map[string]bool{}
	dl := time.Now().Add(10 * time.Second)
	for len(got) < 3 && time.Now().Before(dl) {
		ds, err := q.Dequeue(ctx, DequeueOptions{Max: 10, Wait: 500 * time.Millisecond})
		require.NoError(t, err)
		for _, d := range ds {
			got[d.Spec.TaskID] = true
			require.NotEqual(t, "ahead", d.Spec.TaskID, "ran ten minutes early")
			require.NoError(t, q.Ack(ctx, d))
		}
	}
	require.Equal(t, map[string]bool{"in": true, "at": true, "behind": true}, got)
	require.Equal(t, Counts{Scheduled: 1}, chaosStats(t, q))

	// A worker's whole cycle (pickup, heartbeats, retry with backoff, acks, reaping) sends only durations too.
	require.NoError(t, Register(ref, "m", "flaky", func(ctx context.Context, a addArgs) error {
		if a.A == 0 {
			return nil
		}
		select {
		case <-time.After(400 * time.Millisecond): // past a heartbeat
		case <-ctx.Done():
		}
		return errors.New("flaky")
	}))
	for i := range 10 {
		require.NoError(t, q.Enqueue(ctx, &TaskSpec{TaskID: fmt.Sprint("w", i), Executable: Ref("m", "flaky", addArgs{A: int64(i % 2)}), MaxRetries: 1}))
	}
	rec := &recorder{}
	w := startWorker(t, q, quietWorker(WorkerConfig{Concurrency: 4, ReapInterval: 50 * time.Millisecond}, rec))
	waitFor(t, 20*time.Second, "the worker's tasks to finish", func() bool { return chaosStats(t, q) == Counts{Scheduled: 1, Dead: 5} })
	require.NoError(t, stopWorker(t, w, 5*time.Second))
	require.Equal(t, 5, rec.count(EventRetried))

	hook.mu.Lock()
	defer hook.mu.Unlock()
	require.Empty(t, hook.absolute, "an absolute client time was sent to Redis")
	chaosResult(t, "commands checked=%d absolute client times sent=0; ProcessAt -10min: ran at once; ProcessAt +10min: due %s later by server clock, not run early; lease reclaimed %dms after its server-clock deadline, last early reap %dms before it",
		hook.commands, aheadIn.Round(time.Second), reclaimed-int64(deadline), int64(deadline)-lastEarly)
}
