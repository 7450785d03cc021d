//go:build chaos

package taskqueue

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// (1) A worker killed with SIGKILL while its tasks run: they run again on another worker once their lease has
// expired and a reaper has taken them back (lease + reap interval), and the crash costs no retry.
func chaosWorkerSIGKILL(t *testing.T, bin string) {
	srv := startChaosRedis(t)
	rdb := srv.client(t, nil)
	const prefix = "chaos-kill"
	q, _ := chaosQueue(t, rdb, prefix, nil)
	ledger := filepath.Join(t.TempDir(), "ledger")
	ctx := context.Background()
	const (
		lease    = time.Second
		reap     = 100 * time.Millisecond // the worker binary's default: a tenth of the lease, at least 100ms
		rounds   = 3
		inFlight = 4  // tasks running in the killed worker
		quick    = 25 // tasks enqueued after each kill, which must run exactly once
	)
	opts := func(name string) chaosWorkerOpts {
		return chaosWorkerOpts{Name: name, Addr: srv.addr, Prefix: prefix, Ledger: ledger, Lease: lease, Concurrency: inFlight}
	}
	var recovery []time.Duration
	var killed, quickIDs []string
	for r := range rounds {
		a := startChaosWorker(t, bin, opts(fmt.Sprintf("a%d", r)))
		var slow []string
		for i := range inFlight {
			id := fmt.Sprintf("slow-%d-%d", r, i)
			slow = append(slow, id)
			require.NoError(t, q.Enqueue(ctx, chaosWork(chaosWorkArgs{ID: id, FirstSleepMS: 60_000})))
		}
		waitLedger(t, ledger, 10*time.Second, "the slow tasks running in "+a.name, func(es []ledgerEntry) bool {
			for _, id := range slow {
				if len(ledgerOf(es, "start", id)) != 1 {
					return false
				}
			}
			return true
		})
		b := startChaosWorker(t, bin, opts(fmt.Sprintf("b%d", r)))
		a.signal(t, syscall.SIGKILL)
		killedAt := time.Now()
		require.Equal(t, -1, a.wait(t, 5*time.Second), "killed by a signal")
		for i := range quick {
			id := fmt.Sprintf("quick-%d-%d", r, i)
			quickIDs = append(quickIDs, id)
			require.NoError(t, q.Enqueue(ctx, chaosWork(chaosWorkArgs{ID: id, SleepMS: 5})))
		}
		es := waitLedger(t, ledger, lease+reap+10*time.Second, "the killed tasks done on "+b.name, func(es []ledgerEntry) bool {
			for _, id := range slow {
				if len(ledgerOf(es, "done", id)) != 1 {
					return false
				}
			}
			return true
		})
		waitStats(t, q, 10*time.Second, Counts{})
		for _, id := range slow {
			starts := ledgerOf(es, "start", id)
			require.Len(t, starts, 2, "%s: the killed run and the one that completed", id)
			require.Equal(t, a.pid(), starts[0].PID)
			require.Equal(t, b.pid(), starts[1].PID, "completed on another worker")
			took := starts[1].At.Sub(killedAt)
			recovery = append(recovery, took)
			require.Less(t, took, lease+reap+1500*time.Millisecond, "%s: back within lease + reap interval (+ slack)", id)
			require.Greater(t, took, lease/2, "%s: not reclaimed before its lease ran out", id)
			started := b.logsWith("taskqueue: task started", id)
			require.Len(t, started, 1)
			require.InDelta(t, 1, started[0].Attempt, 0, "%s: the crash used up no retry (Attempt 0 is logged as attempt 1)", id)
			require.Empty(t, b.logsWith("taskqueue: task retried", id))
		}
		killed = append(killed, slow...)
		b.signal(t, syscall.SIGTERM)
		require.Equal(t, 0, b.wait(t, 10*time.Second))
	}
	es := readLedger(t, ledger)
	starts := ledgerCount(es, "start")
	dups := 0
	for _, id := range quickIDs {
		require.Equal(t, 1, starts[id], "%s was not running at a kill: exactly one run", id)
		require.Len(t, ledgerOf(es, "done", id), 1)
	}
	for _, id := range killed {
		dups += starts[id] - 1
	}
	require.Equal(t, Counts{}, chaosStats(t, q))
	chaosResult(t, "tasks=%d kills=%d lost=0 duplicates=%d (all of them tasks running at a kill) recovery(kill->rerun start, lease=%s reap=%s): %s",
		len(killed)+len(quickIDs), rounds, dups, lease, reap, durStats(recovery))
}

// (2) SIGTERM while handlers run past the shutdown grace: the process hands its tasks back (pending at once, long
// before the lease would expire), cancels the handlers' contexts, and exits 0.
func chaosWorkerSIGTERM(t *testing.T, bin string) {
	srv := startChaosRedis(t)
	rdb := srv.client(t, nil)
	const prefix = "chaos-term"
	q, _ := chaosQueue(t, rdb, prefix, nil)
	ledger := filepath.Join(t.TempDir(), "ledger")
	ctx := context.Background()
	const (
		lease = 30 * time.Second
		grace = 300 * time.Millisecond
	)
	for _, tc := range []struct {
		name     string
		stubborn bool // one handler ignores its context (stuck in a system call)
		exitIn   time.Duration
	}{
		{name: "cooperative", exitIn: grace + time.Second},
		{name: "stubborn", stubborn: true, exitIn: grace + 2*time.Second}, // Stop waits 1s more for it
	} {
		w := startChaosWorker(t, bin, chaosWorkerOpts{Name: "w-" + tc.name, Addr: srv.addr, Prefix: prefix, Ledger: ledger, Lease: lease, Grace: grace, Concurrency: 2})
		coop, other := tc.name+"-coop", tc.name+"-other"
		require.NoError(t, q.EnqueueBatch(ctx, []*TaskSpec{
			chaosWork(chaosWorkArgs{ID: coop, FirstSleepMS: 60_000, HonorCtx: true}),
			chaosWork(chaosWorkArgs{ID: other, FirstSleepMS: 60_000, HonorCtx: !tc.stubborn}),
		}))
		waitLedger(t, ledger, 10*time.Second, "both tasks running", func(es []ledgerEntry) bool {
			return len(ledgerOf(es, "start", coop)) == 1 && len(ledgerOf(es, "start", other)) == 1
		})
		require.Equal(t, Counts{Active: 2}, chaosStats(t, q))
		enqueuedAt := time.Now()
		termAt := time.Now() // before the signal: the worker's grace cannot start earlier
		w.signal(t, syscall.SIGTERM)
		var pendingAt time.Time
		for i := 0; pendingAt.IsZero() && !w.hasExited() && i < 5000; i++ {
			if chaosStats(t, q).Pending == 2 {
				pendingAt = time.Now()
			}
			time.Sleep(2 * time.Millisecond)
		}
		code := w.wait(t, tc.exitIn+5*time.Second)
		exitedAt := w.exitedAt
		st := chaosStats(t, q) // right after the exit
		require.Equal(t, 0, code, "a graceful stop exits 0; log:\n%s", w.logTail(20))
		require.Equal(t, Counts{Pending: 2}, st, "handed back at once, not after the %s lease", lease)
		require.Less(t, time.Since(enqueuedAt), lease/4, "long before the lease would have expired")
		require.Less(t, exitedAt.Sub(termAt), tc.exitIn, "exits within the grace (+1s for a handler that ignores cancellation); log:\n%s", w.logTail(30))
		if pendingAt.IsZero() {
			pendingAt = exitedAt
		}
		es := readLedger(t, ledger)
		cancels := ledgerOf(es, "cancel", coop)
		require.Len(t, cancels, 1, "the handler's context was cancelled")
		require.Contains(t, cancels[0].Detail, "worker stopping")
		ranFor := cancels[0].At.Sub(termAt)
		require.GreaterOrEqual(t, ranFor, grace, "the handler had its grace period")
		if tc.stubborn {
			require.Empty(t, ledgerOf(es, "cancel", other), "the stubborn handler never saw the cancellation")
		}
		require.Len(t, w.logsWith("taskqueue: task released", ""), 2)

		// The next worker gets them as first deliveries with no attempt used.
		ds, err := q.Dequeue(ctx, DequeueOptions{Max: 2})
		require.NoError(t, err)
		require.Len(t, ds, 2)
		for _, d := range ds {
			require.Equal(t, 1, d.Deliveries, "a hand-back is not a lost delivery")
			require.Equal(t, 0, d.Spec.Attempt, "nor a failed attempt")
		}
		require.NoError(t, q.Ack(ctx, ds...))
		chaosResult(t, "%s: SIGTERM->pending %s, SIGTERM->handler cancelled %s, SIGTERM->exit 0 %s (grace %s, lease %s)",
			tc.name, pendingAt.Sub(termAt).Round(time.Millisecond), ranFor.Round(time.Millisecond),
			exitedAt.Sub(termAt).Round(time.Millisecond), grace, lease)
	}
	require.Equal(t, Counts{}, chaosStats(t, q))
}

// (4) A worker frozen with SIGSTOP loses its leases; another worker takes its tasks and acks them; once resumed
// (SIGCONT) the frozen worker's ack and fail are refused (ErrLeaseLost, logged as lease_lost) and change nothing.
func chaosWorkerSIGSTOP(t *testing.T, bin string) {
	srv := startChaosRedis(t)
	rdb := srv.client(t, nil)
	const prefix = "chaos-stop"
	q, _ := chaosQueue(t, rdb, prefix, nil)
	ledger := filepath.Join(t.TempDir(), "ledger")
	ctx := context.Background()
	const lease = time.Second
	opts := func(name string) chaosWorkerOpts {
		return chaosWorkerOpts{Name: name, Addr: srv.addr, Prefix: prefix, Ledger: ledger, Lease: lease, Concurrency: 2}
	}
	a := startChaosWorker(t, bin, opts("stalled"))
	// Both handlers ignore their context and, on their first run, sleep past the lease: once resumed, one
	// returns nil (the worker acks) and the other an error (the worker retries).
	ackID, failID := "stall-ack", "stall-fail"
	require.NoError(t, q.EnqueueBatch(ctx, []*TaskSpec{
		chaosWork(chaosWorkArgs{ID: ackID, FirstSleepMS: 2500}),
		chaosWork(chaosWorkArgs{ID: failID, FirstSleepMS: 2500, FirstFail: true}),
	}))
	waitLedger(t, ledger, 10*time.Second, "both tasks running in the worker to stall", func(es []ledgerEntry) bool {
		return len(ledgerOf(es, "start", ackID)) == 1 && len(ledgerOf(es, "start", failID)) == 1
	})
	a.signal(t, syscall.SIGSTOP)
	stoppedAt := time.Now()
	b := startChaosWorker(t, bin, opts("owner"))
	es := waitLedger(t, ledger, lease+10*time.Second, "both tasks done by the new owner", func(es []ledgerEntry) bool {
		return len(ledgerOf(es, "done", ackID)) == 1 && len(ledgerOf(es, "done", failID)) == 1
	})
	waitStats(t, q, 10*time.Second, Counts{})
	var takeover []time.Duration
	for _, id := range []string{ackID, failID} {
		starts := ledgerOf(es, "start", id)
		require.Len(t, starts, 2)
		require.Equal(t, b.pid(), starts[1].PID)
		takeover = append(takeover, starts[1].At.Sub(stoppedAt))
		tomb, err := rdb.HGet(ctx, q.keys.key(keyTasks), id).Result()
		require.NoError(t, err)
		require.True(t, isTombstone(tomb), "%s: settled by an ack (a tombstone)", id)
	}
	settledBefore, err := rdb.HMGet(ctx, q.keys.key(keyTasks), ackID, failID).Result()
	require.NoError(t, err)

	a.signal(t, syscall.SIGCONT)
	resumedAt := time.Now()
	deadline := time.Now().Add(10 * time.Second)
	for len(a.logsWith("taskqueue: task lease_lost", "")) < 2 {
		require.False(t, time.Now().After(deadline), "the resumed worker reports both leases lost; log:\n%s", a.logTail(20))
		time.Sleep(10 * time.Millisecond)
	}
	refusedIn := time.Since(resumedAt)
	waitLedger(t, ledger, 5*time.Second, "the stalled handlers returned", func(es []ledgerEntry) bool {
		return len(ledgerOf(es, "done", ackID)) == 2 && len(ledgerOf(es, "fail", failID)) == 1
	})
	lost := a.logsWith("taskqueue: task lease_lost", ackID)
	require.Len(t, lost, 1)
	require.Contains(t, lost[0].Error, "lease lost: ack of", "the stalled worker's ack was sent and refused")
	lost = a.logsWith("taskqueue: task lease_lost", failID)
	require.Len(t, lost, 1)
	require.Contains(t, lost[0].Error, "lease lost", "the stalled worker's failure was refused")

	// Nothing changed: no retry scheduled, nothing dead, the settled records still name the new owner's acks.
	a.signal(t, syscall.SIGTERM)
	require.Equal(t, 0, a.wait(t, 10*time.Second))
	require.Equal(t, Counts{}, chaosStats(t, q))
	settledAfter, err := rdb.HMGet(ctx, q.keys.key(keyTasks), ackID, failID).Result()
	require.NoError(t, err)
	require.Equal(t, settledBefore, settledAfter)
	es = readLedger(t, ledger)
	for _, id := range []string{ackID, failID} {
		require.Len(t, ledgerOf(es, "start", id), 2, "%s: no third run", id)
	}
	require.Empty(t, a.logsWith("taskqueue: task retried", ""))
	b.signal(t, syscall.SIGTERM)
	require.Equal(t, 0, b.wait(t, 10*time.Second))
	chaosResult(t, "tasks=2 stalls=1 lost=0 duplicates=2 (both ran in the stalled worker and in the new owner, one ack won each); takeover after SIGSTOP: %s (lease %s); stale ack/fail refused %s after SIGCONT",
		durStats(takeover), lease, refusedIn.Round(time.Millisecond))
}

// (4, in process) The fencing of a stalled delivery, call by call, on a real server with a short lease.
func chaosStalledInProcess(t *testing.T) {
	srv := startChaosRedis(t)
	ctx := context.Background()
	cfg := &RedisConfig{Lease: 200 * time.Millisecond}
	q1, _ := chaosQueue(t, srv.client(t, nil), "chaos-stall", cfg)
	q2, _ := chaosQueue(t, srv.client(t, nil), "chaos-stall", cfg)
	require.NoError(t, q1.Enqueue(ctx, chaosWork(chaosWorkArgs{ID: "t"})))
	ds, err := q1.Dequeue(ctx, DequeueOptions{Max: 1})
	require.NoError(t, err)
	require.Len(t, ds, 1)
	stale := ds[0]

	waitFor(t, 5*time.Second, "the stalled lease to expire and be reaped", func() bool {
		res, err := q2.Reap(ctx)
		return err == nil && res.Requeued == 1
	})
	ds, err = q2.Dequeue(ctx, DequeueOptions{Max: 1})
	require.NoError(t, err)
	require.Len(t, ds, 1)
	owner := ds[0]
	require.Equal(t, 2, owner.Deliveries)
	require.Greater(t, owner.Token, stale.Token)

	lost, err := q1.ExtendLeases(ctx, []*Delivery{stale})
	require.NoError(t, err)
	require.Equal(t, []*Delivery{stale}, lost, "the stalled worker cannot renew")
	require.ErrorIs(t, q1.Retry(ctx, stale, 0, errors.New("late failure")), ErrLeaseLost)
	require.ErrorIs(t, q1.DeadLetter(ctx, stale, errors.New("late failure")), ErrLeaseLost)
	require.ErrorIs(t, q1.Release(ctx, stale), ErrLeaseLost)
	require.ErrorIs(t, q1.Ack(ctx, stale), ErrLeaseLost)
	require.NoError(t, q2.Ack(ctx, owner))
	require.NoError(t, q2.Ack(ctx, owner), "the owner's repeated ack (a lost reply) still succeeds")
	require.ErrorIs(t, q1.Ack(ctx, stale), ErrLeaseLost, "and the stale one still fails after it")
	require.Equal(t, Counts{}, chaosStats(t, q1))
}

// (6) Eight reapers, each with its own connection, race over the same 1000 expired deliveries: every task is
// requeued or dead-lettered exactly once.
func chaosEightReapers(t *testing.T) {
	srv := startChaosRedis(t)
	ctx := context.Background()
	const (
		prefix  = "chaos-reap"
		n       = 1000
		reapers = 8
	)
	cfg := &RedisConfig{Lease: 100 * time.Millisecond, MaxDeliveries: 2, ReapBatch: 50}
	rdb := srv.client(t, nil)
	q, _ := chaosQueue(t, rdb, prefix, cfg)
	specs := make([]*TaskSpec, n)
	for i := range specs {
		specs[i] = chaosWork(chaosWorkArgs{ID: fmt.Sprintf("r%04d", i)})
	}
	for i := 0; i < n; i += 250 {
		require.NoError(t, q.EnqueueBatch(ctx, specs[i:i+250]))
	}
	expire := func() {
		t.Helper()
		maxDeadline, err := rdb.ZRangeWithScores(ctx, q.keys.key(keyLeases), -1, -1).Result()
		require.NoError(t, err)
		require.Len(t, maxDeadline, 1)
		waitFor(t, 5*time.Second, "every lease to expire (server clock)", func() bool {
			return float64(serverNowMS(t, rdb)) > maxDeadline[0].Score
		})
	}
	// Half the tasks lose a first delivery: their next expiry reaches MaxDeliveries and dead-letters them.
	ds, err := q.Dequeue(ctx, DequeueOptions{Max: n / 2})
	require.NoError(t, err)
	require.Len(t, ds, n/2)
	once := map[string]bool{}
	for _, d := range ds {
		once[d.Spec.TaskID] = true
	}
	expire()
	res, err := q.Reap(ctx)
	require.NoError(t, err)
	require.Equal(t, 50, res.Requeued, "one reap handles ReapBatch")
	for res.Requeued > 0 {
		res, err = q.Reap(ctx)
		require.NoError(t, err)
	}
	// The requeued half lost a worker once: each of them is leased alone (suspects), so gather them in a loop.
	ds = ds[:0]
	for calls := 0; len(ds) < n; calls++ {
		require.Less(t, calls, 2*n, "bounded")
		more, err := q.Dequeue(ctx, DequeueOptions{Max: n})
		require.NoError(t, err)
		require.NotEmpty(t, more)
		ds = append(ds, more...)
	}
	require.Len(t, ds, n)
	expire()

	type tally struct{ requeued, dead, calls int }
	results := make([]tally, reapers)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range reapers {
		rq, _ := chaosQueue(t, srv.client(t, nil), prefix, cfg)
		require.NoError(t, rq.rdb.Ping(ctx).Err()) // connected before the start line
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for range 1000 { // bounded: 1000 tasks in batches of 50 need at most 20 calls in all
				res, err := rq.Reap(ctx)
				if err != nil {
					t.Errorf("reaper %d: %v", i, err)
					return
				}
				results[i].calls++
				results[i].requeued += res.Requeued
				results[i].dead += res.Dead
				if res.Requeued+res.Dead == 0 {
					return
				}
			}
		}()
	}
	began := time.Now()
	close(start)
	wg.Wait()
	took := time.Since(began)

	var total tally
	working := 0
	for _, r := range results {
		total.requeued += r.requeued
		total.dead += r.dead
		total.calls += r.calls
		if r.requeued+r.dead > 0 {
			working++
		}
	}
	require.Equal(t, n/2, total.requeued)
	require.Equal(t, n/2, total.dead)
	pending, err := rdb.LRange(ctx, q.keys.key(keyPending), 0, -1).Result()
	require.NoError(t, err)
	require.Len(t, pending, n/2)
	seen := map[string]bool{}
	for _, id := range pending {
		require.False(t, seen[id], "%s is twice in pending", id)
		seen[id] = true
		require.False(t, once[id], "%s had lost a delivery before: it must be dead", id)
	}
	dead, err := rdb.ZRange(ctx, q.keys.key(keyDead), 0, -1).Result()
	require.NoError(t, err)
	require.Len(t, dead, n/2)
	for _, id := range dead {
		require.True(t, once[id], "%s is dead after one lost delivery", id)
		require.False(t, seen[id], "%s is both pending and dead", id)
	}
	require.Equal(t, Counts{Pending: n / 2, Dead: n / 2}, chaosStats(t, q))
	leases, err := rdb.HLen(ctx, q.keys.key(keyBatches)).Result()
	require.NoError(t, err)
	require.Zero(t, leases)
	counts, err := rdb.HGetAll(ctx, q.keys.key(keyDeliveries)).Result()
	require.NoError(t, err)
	require.Len(t, counts, n/2)
	for id, c := range counts {
		require.Equal(t, "1", c, "%s: one expired delivery counted once", id)
	}
	reason, err := rdb.HGet(ctx, q.keys.key(keyErrors), dead[0]).Result()
	require.NoError(t, err)
	require.Contains(t, reason, "2 deliveries")
	chaosResult(t, "expired=%d reapers=%d (each its own connection, ReapBatch 50) requeued=%d dead=%d duplicates=0 lost=0; %d reap calls, %d reapers did work, %s",
		n, reapers, total.requeued, total.dead, total.calls, working, took.Round(time.Millisecond))
}

// (7) A task that ends its worker process every time (os.Exit) is dead-lettered after MaxDeliveries crashes;
// one that panics every time after its retries, with a reason that tells the two apart; other tasks flow on.
// The workers run one task at a time here, so that no other task shares a crashing process.
func chaosCrashLoop(t *testing.T, bin string) {
	runChaosCrashLoop(t, bin, crashLoopCase{concurrency: 1, normal: 100, normalMS: 10, panicky: true})
}

// (7, batched) The crashing task and three normal tasks, four tasks per worker: the normal tasks are leased in the
// same batch as the crashing one and die with its process once. Found as a bug (they came back at the head with
// it, were leased with it again and dead-lettered with it after MaxDeliveries); fixed by leasing a task that lost
// its worker alone (lua/dequeue.lua) and running it alone (TaskWorker), so each normal task is lost at most once.
func chaosCrashLoopBatched(t *testing.T, bin string) {
	runChaosCrashLoop(t, bin, crashLoopCase{concurrency: 4, normal: 3, normalMS: 100})
}

type crashLoopCase struct {
	concurrency int   // tasks per worker process
	normal      int   // tasks that never crash
	normalMS    int64 // how long each of them runs
	panicky     bool  // add a task that panics on every run
}

func runChaosCrashLoop(t *testing.T, bin string, tc crashLoopCase) {
	concurrency, normal := tc.concurrency, tc.normal
	bad := 1
	if tc.panicky {
		bad = 2
	}
	srv := startChaosRedis(t)
	rdb := srv.client(t, nil)
	const prefix = "chaos-crash"
	q, _ := chaosQueue(t, rdb, prefix, nil)
	ledger := filepath.Join(t.TempDir(), "ledger")
	ctx := context.Background()
	const (
		lease         = 500 * time.Millisecond
		maxDeliveries = 5 // the queue's default, which the worker binary uses
	)
	specs := []*TaskSpec{NewTaskSpec("crashy", Ref("chaos", "exit", chaosIDArgs{ID: "crashy"}))}
	if tc.panicky {
		panicSpec := NewTaskSpec("panicky", Ref("chaos", "panic", chaosIDArgs{ID: "panicky"}))
		panicSpec.MaxRetries = 2 // three runs, backoff 1s then 2s
		specs = append(specs, panicSpec)
	}
	var normalIDs []string
	for i := range normal {
		id := fmt.Sprintf("n%03d", i)
		normalIDs = append(normalIDs, id)
		specs = append(specs, chaosWork(chaosWorkArgs{ID: id, SleepMS: tc.normalMS, FirstSleepMS: tc.normalMS}))
	}
	require.NoError(t, q.EnqueueBatch(ctx, specs))

	// A supervisor, as systemd or Kubernetes would be: it restarts the worker whenever it exits.
	began := time.Now()
	var exits []int
	var w *chaosProc
	restart := func() {
		w = startChaosWorkerNoWait(t, bin, chaosWorkerOpts{Name: fmt.Sprintf("w%d", len(exits)), Addr: srv.addr, Prefix: prefix,
			Ledger: ledger, Lease: lease, Concurrency: concurrency})
	}
	restart()
	// Settled: the bad tasks are dead and every other task is done or dead.
	settled := func() bool {
		st := chaosStats(t, q)
		if st.Pending+st.Active+st.Scheduled > 0 || st.Dead < int64(bad) {
			return false
		}
		d := ledgerCount(readLedger(t, ledger), "done")
		for _, id := range normalIDs {
			if d[id] == 0 {
				if _, err := deadLetterOf(ctx, q, id); err != nil {
					return false
				}
			}
		}
		return true
	}
	deadline := time.Now().Add(60 * time.Second)
	for !settled() {
		require.False(t, time.Now().After(deadline), "crash loop did not settle; stats %+v, exits %v", chaosStats(t, q), exits)
		require.LessOrEqual(t, len(exits), 3*maxDeliveries, "too many worker exits")
		if w.hasExited() {
			exits = append(exits, w.state.ExitCode())
			restart()
		}
		time.Sleep(20 * time.Millisecond)
	}
	took := time.Since(began)
	w.waitLog(t, 10*time.Second, "taskqueue: worker ready")
	w.signal(t, syscall.SIGTERM)
	require.Equal(t, 0, w.wait(t, 10*time.Second))

	es := readLedger(t, ledger)
	dls, err := mustAdmin(q).List(ctx, StateDead, 0, 100)
	require.NoError(t, err)
	var innocent []string
	for _, dl := range dls {
		if dl.TaskID != "crashy" && dl.TaskID != "panicky" {
			innocent = append(innocent, fmt.Sprintf("%s (%d runs started; %s)", dl.TaskID, len(ledgerOf(es, "start", dl.TaskID)), dl.Reason))
		}
	}
	require.Empty(t, innocent, "tasks that never crash were dead-lettered beside the crashing one")
	require.Equal(t, slices.Repeat([]int{3}, maxDeliveries), exits, "one process exit (status 3) per delivery of the crashing task")
	starts := ledgerCount(es, "start")
	require.Equal(t, maxDeliveries, starts["crashy"])
	dups := 0
	for _, id := range normalIDs {
		require.NotEmpty(t, ledgerOf(es, "done", id))
		dups += starts[id] - 1
	}
	require.LessOrEqual(t, dups, maxDeliveries*concurrency, "only tasks running beside a crash (or not yet acked) run twice")

	crash, err := deadLetterOf(ctx, q, "crashy")
	require.NoError(t, err)
	require.Contains(t, crash.Reason, ErrMaxDeliveries.Error())
	require.Contains(t, crash.Reason, fmt.Sprintf("%d deliveries, each lease expired", maxDeliveries))
	require.NotContains(t, crash.Reason, "panic")
	if !tc.panicky {
		chaosResult(t, "concurrency=%d tasks=%d worker exits=%d lost=0 duplicates=%d settled in %s", concurrency, normal+1, len(exits), dups, took.Round(time.Millisecond))
		return
	}
	require.GreaterOrEqual(t, starts["panicky"], 3, "first run and two retries, plus runs lost with a crashing process")
	pan, err := deadLetterOf(ctx, q, "panicky")
	require.NoError(t, err)
	require.Contains(t, pan.Reason, ErrRetriesExhausted.Error()+" after 3 attempts")
	require.Contains(t, pan.Reason, "handler panicked: chaos: deliberate panic")
	require.NotContains(t, pan.Reason, "deliveries")
	chaosResult(t, "concurrency=%d tasks=%d (1 exits its process, 1 panics, %d normal) worker exits=%d lost=0 duplicates=%d (normal tasks whose process died before their ack) settled in %s; reasons: crash=%q panic=%q",
		concurrency, normal+bad, normal, len(exits), dups, took.Round(time.Millisecond), crash.Reason, truncate(pan.Reason, 120))
}
