//go:build chaos

package taskqueue

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// TestChaos runs the chaos scenarios of docs/reliability.md, each against redis-server processes and worker
// subprocesses of its own: make test-chaos. The numbers in the names are the scenarios of the reliability issue.
func TestChaos(t *testing.T) {
	bin := buildChaosWorker(t, t.TempDir())
	t.Run("01_WorkerSIGKILL", func(t *testing.T) { t.Parallel(); chaosWorkerSIGKILL(t, bin) })
	t.Run("02_WorkerSIGTERMPastGrace", func(t *testing.T) { t.Parallel(); chaosWorkerSIGTERM(t, bin) })
	t.Run("04_WorkerSIGSTOP", func(t *testing.T) { t.Parallel(); chaosWorkerSIGSTOP(t, bin) })
	t.Run("04_StalledDeliveryInProcess", func(t *testing.T) { t.Parallel(); chaosStalledInProcess(t) })
	t.Run("06_EightReapers", func(t *testing.T) { t.Parallel(); chaosEightReapers(t) })
	t.Run("07_CrashLoopAndPanicLoop", func(t *testing.T) { t.Parallel(); chaosCrashLoop(t, bin) })
	t.Run("07_CrashLoopBatchedNeighbours", func(t *testing.T) { t.Parallel(); chaosCrashLoopBatched(t, bin) })
	t.Run("08_RedisSIGKILLWithAOF", func(t *testing.T) { t.Parallel(); chaosRedisSIGKILL(t, bin) })
	t.Run("10_ScriptFlushUnderLoad", func(t *testing.T) { t.Parallel(); chaosScriptFlush(t) })
	t.Run("11_ClientKillBlockedPickups", func(t *testing.T) { t.Parallel(); chaosClientKill(t) })
	t.Run("13_ClockSkew", func(t *testing.T) { t.Parallel(); chaosClockSkew(t) })
}

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
		score, err := rdb.ZScore(ctx, q.keys.key(keySettled), id).Result()
		require.NoError(t, err)
		require.Zero(t, int64(score)%4, "%s: settled by an ack (outcome 0)", id)
	}
	settledBefore, err := rdb.ZRangeWithScores(ctx, q.keys.key(keySettled), 0, -1).Result()
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
	settledAfter, err := rdb.ZRangeWithScores(ctx, q.keys.key(keySettled), 0, -1).Result()
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
		maxDeadline, err := rdb.ZRangeWithScores(ctx, q.keys.key(keyActive), -1, -1).Result()
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
	leases, err := rdb.HLen(ctx, q.keys.key(keyLease)).Result()
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
	deadline, err := rdb.ZScore(ctx, q.keys.key(keyActive), "behind").Result()
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
