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

// TestChaosCancel runs scenario 24 of docs/reliability.md: cancels of tasks that worker subprocesses run, while
// they run, while their worker is frozen (SIGSTOP) and after it was killed (SIGKILL). See docs/control.md.
func TestChaosCancel(t *testing.T) {
	bin := buildChaosWorker(t, t.TempDir())
	t.Run("24_CancelRunningInAnotherProcess", func(t *testing.T) { t.Parallel(); chaosCancelRunning(t, bin) })
	t.Run("24_CancelWhileWorkerStopped", func(t *testing.T) { t.Parallel(); chaosCancelStopped(t, bin) })
	t.Run("24_CancelAfterWorkerKilled", func(t *testing.T) { t.Parallel(); chaosCancelKilled(t, bin) })
}

// waitLeasesGone waits until the queue holds no lease record: every batch was settled, or its lease expired and
// a reaper removed it (a cancelled delivery's record goes only that way).
func waitLeasesGone(t *testing.T, q *RedisTaskQueue, timeout time.Duration) {
	t.Helper()
	waitFor(t, timeout, "no lease record left", func() bool {
		n, err := q.rdb.ZCard(context.Background(), q.keys.key(keyLeases)).Result()
		return err == nil && n == 0
	})
}

// chaosCancelRunning cancels, from the test process, tasks that a worker subprocess runs: each handler's
// context ends with the cause ErrCancelled; none runs again after its lease would have expired.
func chaosCancelRunning(t *testing.T, bin string) {
	srv := startChaosRedis(t)
	rdb := srv.client(t, nil)
	const prefix, n = "chaos-cancel", 20
	q, _ := chaosQueue(t, rdb, prefix, nil)
	adm := mustAdmin(q)
	ledger := filepath.Join(t.TempDir(), "ledger")
	ctx := context.Background()
	w := startChaosWorker(t, bin, chaosWorkerOpts{Name: "w", Addr: srv.addr, Prefix: prefix, Ledger: ledger, Concurrency: 4})
	var lat []time.Duration
	for i := range n {
		id := fmt.Sprintf("c%02d", i)
		require.NoError(t, q.Enqueue(ctx, chaosWork(chaosWorkArgs{ID: id, FirstSleepMS: 60_000, SleepMS: 60_000, HonorCtx: true})))
		waitLedger(t, ledger, 15*time.Second, id+" running", func(es []ledgerEntry) bool { return len(ledgerOf(es, "start", id)) == 1 })
		at := time.Now()
		st, err := adm.Cancel(ctx, id)
		require.NoError(t, err)
		require.Equal(t, StateActive, st)
		es := waitLedger(t, ledger, 15*time.Second, id+" cancelled", func(es []ledgerEntry) bool { return len(ledgerOf(es, "cancel", id)) == 1 })
		c := ledgerOf(es, "cancel", id)[0]
		require.Contains(t, c.Detail, ErrCancelled.Error())
		require.Equal(t, w.pid(), c.PID)
		lat = append(lat, c.At.Sub(at))
	}
	waitStats(t, q, 10*time.Second, Counts{})
	waitLeasesGone(t, q, 20*time.Second) // the leases expired and the reaper dropped the records
	// A task enqueued now runs and finishes: the worker is alive, and reaped past the cancelled leases.
	require.NoError(t, q.Enqueue(ctx, chaosWork(chaosWorkArgs{ID: "after"})))
	es := waitLedger(t, ledger, 15*time.Second, "the task after", func(es []ledgerEntry) bool { return len(ledgerOf(es, "done", "after")) == 1 })
	for id, runs := range ledgerCount(es, "start") {
		require.Equal(t, 1, runs, "%s ran again", id)
	}
	require.Empty(t, w.logsWith("taskqueue: task lease_lost", ""))
	chaosResult(t, "cancel → handler context cancelled (in another process): %s", durStats(lat))
}

// chaosCancelStopped cancels a task whose worker process is frozen: a second worker never runs it when its lease
// expires, and the frozen one, resumed, cancels its handler and records nothing.
func chaosCancelStopped(t *testing.T, bin string) {
	srv := startChaosRedis(t)
	rdb := srv.client(t, nil)
	const prefix = "chaos-cancel-stop"
	q, _ := chaosQueue(t, rdb, prefix, nil)
	ledger := filepath.Join(t.TempDir(), "ledger")
	ctx := context.Background()
	opts := func(name string) chaosWorkerOpts {
		return chaosWorkerOpts{Name: name, Addr: srv.addr, Prefix: prefix, Ledger: ledger, Concurrency: 2}
	}
	a := startChaosWorker(t, bin, opts("frozen"))
	require.NoError(t, q.Enqueue(ctx, chaosWork(chaosWorkArgs{ID: "s1", FirstSleepMS: 60_000, SleepMS: 60_000, HonorCtx: true})))
	waitLedger(t, ledger, 15*time.Second, "s1 running", func(es []ledgerEntry) bool { return len(ledgerOf(es, "start", "s1")) == 1 })
	a.signal(t, syscall.SIGSTOP)
	_, err := mustAdmin(q).Cancel(ctx, "s1")
	require.NoError(t, err)
	startChaosWorker(t, bin, opts("other"))
	waitLeasesGone(t, q, 20*time.Second) // s1's lease expired and b's reaper dropped its record
	require.NoError(t, q.Enqueue(ctx, chaosWork(chaosWorkArgs{ID: "after"})))
	waitLedger(t, ledger, 15*time.Second, "the task after", func(es []ledgerEntry) bool { return len(ledgerOf(es, "done", "after")) == 1 })
	a.signal(t, syscall.SIGCONT)
	es := waitLedger(t, ledger, 15*time.Second, "the resumed handler cancelled", func(es []ledgerEntry) bool {
		return len(ledgerOf(es, "cancel", "s1")) == 1
	})
	require.Len(t, ledgerOf(es, "start", "s1"), 1, "s1 never ran again")
	require.Equal(t, a.pid(), ledgerOf(es, "cancel", "s1")[0].PID)
	waitStats(t, q, 10*time.Second, Counts{})
	info, err := mustAdmin(q).Inspect(ctx, "s1")
	require.NoError(t, err)
	require.Equal(t, StateCancelled, info.State)
	chaosResult(t, "cancel while SIGSTOPped: never ran again; resumed handler ended with %q", strings.TrimSpace(ledgerOf(es, "cancel", "s1")[0].Detail))
}

// chaosCancelKilled cancels a task whose worker process was killed: it never runs again.
func chaosCancelKilled(t *testing.T, bin string) {
	srv := startChaosRedis(t)
	rdb := srv.client(t, nil)
	const prefix = "chaos-cancel-kill"
	q, _ := chaosQueue(t, rdb, prefix, nil)
	ledger := filepath.Join(t.TempDir(), "ledger")
	ctx := context.Background()
	opts := func(name string) chaosWorkerOpts {
		return chaosWorkerOpts{Name: name, Addr: srv.addr, Prefix: prefix, Ledger: ledger, Concurrency: 2}
	}
	a := startChaosWorker(t, bin, opts("killed"))
	require.NoError(t, q.Enqueue(ctx, chaosWork(chaosWorkArgs{ID: "k1", FirstSleepMS: 60_000, SleepMS: 60_000, HonorCtx: true})))
	waitLedger(t, ledger, 15*time.Second, "k1 running", func(es []ledgerEntry) bool { return len(ledgerOf(es, "start", "k1")) == 1 })
	a.signal(t, syscall.SIGKILL)
	a.wait(t, 10*time.Second)
	_, err := mustAdmin(q).Cancel(ctx, "k1")
	require.NoError(t, err)
	startChaosWorker(t, bin, opts("survivor"))
	waitLeasesGone(t, q, 20*time.Second)
	require.NoError(t, q.Enqueue(ctx, chaosWork(chaosWorkArgs{ID: "after"})))
	es := waitLedger(t, ledger, 15*time.Second, "the task after", func(es []ledgerEntry) bool { return len(ledgerOf(es, "done", "after")) == 1 })
	require.Len(t, ledgerOf(es, "start", "k1"), 1, "k1 never ran again")
	waitStats(t, q, 10*time.Second, Counts{})
	chaosResult(t, "cancel after SIGKILL: never ran again")
}
