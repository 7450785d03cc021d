//go:build chaos

package taskqueue

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Scenarios 5 and 11 (second half) of docs/reliability.md: heartbeats over a connection that goes silent, and an
// outage longer than the pickup's block timeout, with the health check that shows the stuck consumers.
func TestChaos3(t *testing.T) {
	bin := buildChaosWorker(t, t.TempDir())
	t.Run("05_LongTaskAndSilentConnection", func(t *testing.T) { t.Parallel(); chaosLongTaskSilentConnection(t, bin) })
	t.Run("11_OutageLongerThanBlockTimeout", func(t *testing.T) { t.Parallel(); chaosLongOutage(t, bin) })
}

// figure logs a scenario's figures in the one greppable format that docs/reliability.md is built from:
// FIGURE scenario=<n> key=value ...
func figure(t testing.TB, scenario string, kv ...any) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "FIGURE scenario=%s", scenario)
	for i := 0; i+1 < len(kv); i += 2 {
		fmt.Fprintf(&b, " %v=%v", kv[i], kv[i+1])
	}
	t.Log(b.String())
}

// ms formats a duration in whole milliseconds, for figures.
func ms(d time.Duration) int64 { return d.Milliseconds() }

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
		if s, err := rdb.ZScore(ctx, q.keys.key(keyActive), "long").Result(); err == nil {
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
		deadlineMS, err := rdb.ZScore(ctx, q.keys.key(keyActive), id).Result()
		require.NoError(t, err, "still leased: nothing reached Redis from the silent worker")
		deadline := time.UnixMilli(int64(deadlineMS))
		// The worker gives a renewal until half a heartbeat (lease/6) before the lease ends; a quarter of a heartbeat
		// is left for scheduling. Before that rule, the cancel came a few ms before the deadline at best.
		require.GreaterOrEqual(t, deadline.Sub(cancel.At), lease/12, "%s: cancelled at %s, only %s before the lease deadline %s (cut at %s); log:\n%s", id, cancel.At, deadline.Sub(cancel.At), deadline, cutAt, a.logTail(25))
		cutToCancel = append(cutToCancel, cancel.At.Sub(cutAt))
		margins = append(margins, deadline.Sub(cancel.At))
		require.Less(t, cancel.At.Sub(cutAt), lease+500*time.Millisecond, "cancelled within a lease of the cut")

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
