//go:build chaos

package taskqueue

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// (8) Redis killed with SIGKILL mid-run under appendonly yes / appendfsync everysec, restarted on the same port
// and directory: every enqueue that returned success runs; the workers reconnect by themselves; no NOSCRIPT.
func chaosRedisSIGKILL(t *testing.T, bin string) {
	srv := startChaosRedis(t, "--appendonly", "yes", "--appendfsync", "everysec", "--save", "")
	const prefix = "chaos-aof"
	rdb := srv.client(t, &redis.Options{DialTimeout: 500 * time.Millisecond})
	q, _ := chaosQueue(t, rdb, prefix, nil)
	ledger := filepath.Join(t.TempDir(), "ledger")
	ctx := context.Background()
	const (
		lease    = 2 * time.Second
		produce  = 6 * time.Second
		killAt   = 1500 * time.Millisecond
		downtime = 2500 * time.Millisecond // longer than an enqueue's 2s deadline: some fail
		maxTasks = 4000
	)
	var workers []*chaosProc
	for i := range 2 {
		workers = append(workers, startChaosWorker(t, bin, chaosWorkerOpts{Name: fmt.Sprintf("w%d", i), Addr: srv.addr,
			Prefix: prefix, Ledger: ledger, Lease: lease, Concurrency: 8}))
	}

	type result struct {
		id       string
		sent, at time.Time
		err      error
	}
	results := make(chan result, maxTasks)
	began := time.Now()
	go func() {
		defer close(results)
		for i := 0; i < maxTasks && time.Since(began) < produce; i++ {
			id := fmt.Sprintf("e%05d", i)
			sent := time.Now()
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			err := q.Enqueue(cctx, chaosWork(chaosWorkArgs{ID: id, SleepMS: 1}))
			cancel()
			results <- result{id, sent, time.Now(), err}
			time.Sleep(time.Millisecond)
		}
	}()
	time.Sleep(killAt)
	seqBefore, err := rdb.Get(ctx, q.keys.key(keySeq)).Int64()
	require.NoError(t, err)
	srv.kill()
	killedAt := time.Now()
	time.Sleep(downtime)
	require.NoError(t, srv.start())
	restartedAt := time.Now()
	// The fencing-token counter survived: no token handed out before the kill is handed out again.
	seqAfter, err := srv.client(t, nil).Get(ctx, q.keys.key(keySeq)).Int64()
	require.NoError(t, err)
	require.GreaterOrEqual(t, seqAfter, seqBefore, "fencing tokens would repeat after the restart")

	var ok, failed []result
	var longest time.Duration
	okBefore, lastSecond := 0, 0
	for r := range results {
		longest = max(longest, r.at.Sub(r.sent))
		if r.err == nil {
			ok = append(ok, r)
			if r.at.Before(killedAt) {
				okBefore++
				if killedAt.Sub(r.at) <= time.Second {
					lastSecond++ // acknowledged inside the everysec window before the kill
				}
			}
		} else {
			failed = append(failed, r)
		}
	}
	for _, r := range failed {
		require.NotContains(t, r.err.Error(), "NOSCRIPT", "a NOSCRIPT error reached the caller")
	}
	var firstOKAfter time.Time
	for _, r := range ok {
		if r.sent.After(restartedAt) && firstOKAfter.IsZero() {
			firstOKAfter = r.at
		}
	}
	require.Positive(t, okBefore, "the producer enqueued before the kill")
	require.False(t, firstOKAfter.IsZero(), "the producer enqueued again after the restart")
	require.GreaterOrEqual(t, longest, downtime/2, "an enqueue was under way during the outage")

	// Every acknowledged enqueue runs, save those inside the everysec window before the kill (reported).
	deadline := time.Now().Add(60 * time.Second)
	var es []ledgerEntry
	var missing []result
	for {
		es = readLedger(t, ledger)
		d := ledgerCount(es, "done")
		missing = missing[:0]
		for _, r := range ok {
			if d[r.id] == 0 {
				missing = append(missing, r)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	inWindow := 0
	for _, r := range missing {
		if killedAt.Sub(r.at) <= 2*time.Second {
			inWindow++
		}
	}
	// A SIGKILL of the process keeps what Redis wrote to the file before it replied, so none is expected; but with
	// everysec Redis may postpone that write (up to 2s while a background fsync is slow) and still reply.
	require.Len(t, missing, inWindow, "acknowledged enqueues lost outside the everysec window: %v", missing)
	waitStats(t, q, 30*time.Second, Counts{})

	starts := ledgerCount(es, "start")
	dups := 0
	for _, n := range starts {
		dups += max(n-1, 0)
	}
	failedRan := 0
	for _, r := range failed {
		if starts[r.id] > 0 {
			failedRan++
		}
	}
	var reconnect []time.Duration
	for _, w := range workers {
		require.False(t, w.hasExited(), "worker %s survived the outage", w.name)
		var first time.Time
		for _, e := range es {
			if e.PID == w.pid() && e.Event == "start" && e.At.After(restartedAt) {
				first = e.At
				break
			}
		}
		require.False(t, first.IsZero(), "worker %s ran tasks after the restart by itself", w.name)
		reconnect = append(reconnect, first.Sub(restartedAt))
		for _, l := range w.logs() {
			require.NotContains(t, l.raw, "NOSCRIPT", "worker %s saw NOSCRIPT", w.name)
		}
	}
	for _, w := range workers {
		w.signal(t, syscall.SIGTERM)
		require.Equal(t, 0, w.wait(t, 10*time.Second))
	}
	chaosResult(t, "enqueues ok=%d (%d acknowledged in the last second before the kill) failed=%d (failed but ran anyway: %d; longest enqueue call %s) kills=1 (Redis, SIGKILL, down %s) lost=%d duplicates=%d; producer's first new enqueue done %s after restart, workers' first task after restart: %s",
		len(ok), lastSecond, len(failed), failedRan, longest.Round(time.Millisecond), downtime, len(missing), dups,
		firstOKAfter.Sub(restartedAt).Round(time.Millisecond), durStats(reconnect))
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
	// How long the calls took is reported, not asserted: each ran under a 500ms deadline, and one that ignored
	// it would hang here rather than return its error.
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
	tasksLen, err := envelopesLeft(ctx, q)
	require.NoError(t, err)
	leaseLen, err := prod.HLen(ctx, q.keys.key(keyBatches)).Result()
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

// (10) SCRIPT FLUSH, again and again, while a producer enqueues and a worker leases, renews, acks and reaps:
// every call still succeeds (go-redis's EVALSHA falls back to EVAL on NOSCRIPT, and every script is atomic).
func chaosScriptFlush(t *testing.T) {
	srv := startChaosRedis(t)
	ctx := context.Background()
	q, ref := chaosQueue(t, srv.client(t, nil), "chaos-flush", &RedisConfig{Lease: 600 * time.Millisecond})
	const n = 400
	var mu sync.Mutex
	runs := map[int64]int{}
	require.NoError(t, Register(ref, "m", "f", func(ctx context.Context, a addArgs) error {
		mu.Lock()
		runs[a.A]++
		mu.Unlock()
		if a.B > 0 { // outlives a heartbeat (200ms): its lease is renewed between flushes
			select {
			case <-time.After(time.Duration(a.B) * time.Millisecond):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	}))
	rec := &recorder{}
	w := startWorker(t, q, quietWorker(WorkerConfig{Concurrency: 8, ReapInterval: 20 * time.Millisecond}, rec))

	admin := srv.client(t, nil)
	stop := make(chan struct{})
	var flushes atomic.Int64
	var flusher sync.WaitGroup
	flusher.Add(1)
	go func() {
		defer flusher.Done()
		for range 100_000 { // bounded; stopped long before
			select {
			case <-stop:
				return
			default:
			}
			if admin.ScriptFlush(ctx).Err() == nil {
				flushes.Add(1)
			}
			time.Sleep(500 * time.Microsecond)
		}
	}()
	spec := func(i int) *TaskSpec {
		var sleep int64
		if i%40 == 0 {
			sleep = 450
		}
		return NewTaskSpec(fmt.Sprintf("f%03d", i), Ref("m", "f", addArgs{A: int64(i), B: sleep}))
	}
	for i := range n / 2 {
		require.NoError(t, q.Enqueue(ctx, spec(i)))
	}
	var batch []*TaskSpec
	for i := n / 2; i < n; i++ {
		batch = append(batch, spec(i))
		if len(batch) == 20 {
			require.NoError(t, q.EnqueueBatch(ctx, batch))
			batch = batch[:0]
		}
	}
	waitFor(t, 30*time.Second, "every task to run", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(runs) == n
	})
	waitStats(t, q, 10*time.Second, Counts{})
	// Direct calls too: a flush between each.
	for range 20 {
		require.NoError(t, admin.ScriptFlush(ctx).Err())
		_, err := q.Reap(ctx)
		require.NoError(t, err)
		require.NoError(t, admin.ScriptFlush(ctx).Err())
		_, err = countsOf(ctx, q)
		require.NoError(t, err)
		require.NoError(t, admin.ScriptFlush(ctx).Err())
		require.NoError(t, q.Interrupt(ctx, "nobody"))
	}
	close(stop)
	flusher.Wait()
	require.NoError(t, stopWorker(t, w, 5*time.Second))
	mu.Lock()
	defer mu.Unlock()
	dups := 0
	for i, c := range runs {
		require.Equal(t, 1, c, "task %d ran once", i)
		dups += c - 1
	}
	require.Zero(t, rec.count(EventQueueError), "no call failed: %v", rec.last(EventQueueError).Err)
	require.Zero(t, rec.count(EventLeaseLost))
	require.Equal(t, n, rec.count(EventSucceeded))
	chaosResult(t, "tasks=%d SCRIPT FLUSHes=%d (every ~0.5ms during the run) failed calls=0 lost=0 duplicates=%d", n, flushes.Load(), dups)
}

// chaosLongOutage (scenario 11, second half): Redis is killed for longer than the workers' block timeout (5s)
// and than their stuck bound (2 x 5s + 1s). Each worker's health check reports it stuck (a log line from
// TaskWorker.Health), the pickups back off instead of spinning, and after the restart every worker resumes by
// itself within the longest pickup backoff (5s) plus slack, and logs that it recovered.
func chaosLongOutage(t *testing.T, bin string) {
	srv := startChaosRedis(t)
	rdb := srv.client(t, nil)
	const prefix = "chaos-outage"
	q, _ := chaosQueue(t, rdb, prefix, nil)
	ledger := filepath.Join(t.TempDir(), "ledger")
	ctx := context.Background()
	const (
		workers    = 3
		block      = 5 * time.Second // the worker binary's BlockTimeout (the default)
		stuckAfter = 2*block + time.Second
		maxBackoff = 5 * time.Second
	)
	var ps []*chaosProc
	for i := range workers {
		ps = append(ps, startChaosWorker(t, bin, chaosWorkerOpts{Name: fmt.Sprintf("w%d", i), Addr: srv.addr, Prefix: prefix, Ledger: ledger, Lease: 2 * time.Second, Concurrency: 1}))
	}
	// Warm up: each worker runs a task, so all are blocked in pickup when Redis dies.
	for i := range workers {
		require.NoError(t, q.Enqueue(ctx, chaosWork(chaosWorkArgs{ID: fmt.Sprintf("warm-%d", i), SleepMS: 300})))
	}
	waitLedger(t, ledger, 15*time.Second, "the warm-up", func(es []ledgerEntry) bool { return len(ledgerCount(es, "done")) == workers })
	waitStats(t, q, 10*time.Second, Counts{})

	srv.kill()
	killedAt := time.Now()
	stuckAt := make([]time.Duration, workers)
	for i, p := range ps {
		require.Eventually(t, func() bool { return len(p.logsWith("taskqueue: worker stuck", "")) > 0 || p.hasExited() },
			stuckAfter+block+20*time.Second, 20*time.Millisecond, "worker %s never reported stuck; log:\n%s", p.name, p.logTail(20))
		require.False(t, p.hasExited(), "worker %s exited during the outage:\n%s", p.name, p.logTail(20))
		stuckAt[i] = time.Since(killedAt)
		require.Greater(t, stuckAt[i], block, "%s: not stuck before a pickup could have ended", p.name)
		l := p.logsWith("taskqueue: worker stuck", "")[0]
		require.Contains(t, l.Error, ErrWorkerStuck.Error())
		require.Contains(t, l.Error, "no successful pickup for")
	}
	outage := time.Since(killedAt)
	require.Greater(t, outage, block)

	require.NoError(t, srv.start())
	restartAt := time.Now()
	// One long task per worker (concurrency 1): each worker's own first start is its resumption.
	for i := range workers {
		require.NoError(t, q.Enqueue(ctx, chaosWork(chaosWorkArgs{ID: fmt.Sprintf("after-%d", i), FirstSleepMS: ms(maxBackoff + 10*time.Second), HonorCtx: true})))
	}
	es := waitLedger(t, ledger, maxBackoff+15*time.Second, "every worker resumed", func(es []ledgerEntry) bool {
		n := 0
		for i := range workers {
			n += len(ledgerOf(es, "start", fmt.Sprintf("after-%d", i)))
		}
		return n == workers
	})
	var resume []time.Duration
	pids := map[int]bool{}
	for i := range workers {
		s := ledgerOf(es, "start", fmt.Sprintf("after-%d", i))[0]
		pids[s.PID] = true
		resume = append(resume, s.At.Sub(restartAt))
	}
	require.Len(t, pids, workers, "each worker took one task: all of them resumed")
	for _, d := range resume {
		require.Less(t, d, maxBackoff+3*time.Second, "resumed within the longest pickup backoff + slack")
	}
	retries := 0
	for _, p := range ps {
		require.Eventually(t, func() bool { return len(p.logsWith("taskqueue: worker recovered", "")) >= 1 }, stuckAfter, 20*time.Millisecond,
			"%s logged its recovery", p.name)
		n := len(p.logsWith("taskqueue: pickup failed; retrying", ""))
		retries += n
		require.Less(t, n, 30, "%s: pickups backed off during a %s outage instead of spinning", p.name, outage.Round(time.Second))
	}
	chaosResult(t, "workers=%d outage=%s (block timeout %s, stuck bound %s): stuck reported %s after the kill; resumed after restart %s; failed pickups in all %d",
		workers, outage.Round(time.Millisecond), block, stuckAfter, durStats(stuckAt), durStats(resume), retries)
	figure(t, "11b", "workers", workers, "outage_ms", ms(outage), "stuck_report_p50_ms", ms(percentile(stuckAt, 50)), "stuck_report_max_ms", ms(percentile(stuckAt, 100)),
		"recovery_p50_ms", ms(percentile(resume, 50)), "recovery_p99_ms", ms(percentile(resume, 99)), "failed_pickups", retries, "lost", 0, "dup", 0)
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
