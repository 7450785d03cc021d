//go:build chaos

package taskqueue

import (
	"context"
	"fmt"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestChaosMultiQueue runs scenario 27 of docs/reliability.md: a worker process on two queues (--queues) killed
// with SIGKILL while it runs tasks of both.
func TestChaosMultiQueue(t *testing.T) {
	bin := buildChaosWorker(t, t.TempDir())
	t.Run("27_MultiQueueWorkerKilled", func(t *testing.T) { chaosMultiQueueKilled(t, bin) })
}

// (27) The tasks that a killed worker on several queues held come back, once their lease expires, each to the
// queue it came from (a reaper with no worker alive: the test's own Reap calls), and run again on a second
// worker on the same queues; the tasks enqueued after the kill into either queue run exactly once.
func chaosMultiQueueKilled(t *testing.T, bin string) {
	srv := startChaosRedis(t)
	rdb := srv.client(t, nil)
	ctx := context.Background()
	qa, _ := chaosQueue(t, rdb, "chaos-mq-a", nil)
	qb, _ := chaosQueue(t, rdb, "chaos-mq-b", nil)
	queues := []*RedisTaskQueue{qa, qb}
	ledger := filepath.Join(t.TempDir(), "ledger")
	const (
		lease   = time.Second
		perQ    = 2  // slow tasks of each queue running in the killed worker
		quick   = 20 // tasks enqueued into each queue after the kill
		workers = 2 * perQ
	)
	opts := func(name string) chaosWorkerOpts {
		return chaosWorkerOpts{Name: name, Addr: srv.addr, Queues: "chaos-mq-a:2,chaos-mq-b:1", Ledger: ledger, Lease: lease, Concurrency: workers}
	}
	a := startChaosWorker(t, bin, opts("a"))
	slow := map[*RedisTaskQueue][]string{}
	for k, q := range queues {
		for i := range perQ {
			id := fmt.Sprintf("slow-%d-%d", k, i)
			slow[q] = append(slow[q], id)
			require.NoError(t, q.Enqueue(ctx, chaosWork(chaosWorkArgs{ID: id, FirstSleepMS: 60_000})))
		}
	}
	waitLedger(t, ledger, 10*time.Second, "the slow tasks of both queues running in a", func(es []ledgerEntry) bool {
		for _, ids := range slow {
			for _, id := range ids {
				if len(ledgerOf(es, "start", id)) != 1 {
					return false
				}
			}
		}
		return true
	})
	for _, q := range queues {
		require.Equal(t, Counts{Active: perQ}, chaosStats(t, q))
	}
	a.signal(t, syscall.SIGKILL)
	killedAt := time.Now()
	require.Equal(t, -1, a.wait(t, 5*time.Second), "killed by a signal")

	// No worker is alive: reap as a worker's reaper would, until each queue has its own tasks back.
	for _, q := range queues {
		requeued := 0
		waitFor(t, lease+10*time.Second, q.prefix+": its tasks back after their lease", func() bool {
			res, err := q.Reap(ctx)
			requeued += res.Requeued
			return err == nil && requeued >= perQ
		})
		require.Equal(t, perQ, requeued, "%s: its own tasks, no other", q.prefix)
		require.Equal(t, Counts{Pending: perQ}, chaosStats(t, q), "%s: back in its own queue", q.prefix)
		for _, id := range slow[q] {
			info, err := mustAdmin(q).Inspect(ctx, id)
			require.NoError(t, err)
			require.Equal(t, StatePending, info.State, "%s in %s", id, q.prefix)
		}
	}
	back := time.Since(killedAt)

	b := startChaosWorker(t, bin, opts("b"))
	var quickIDs []string
	for k, q := range queues {
		for i := range quick {
			id := fmt.Sprintf("quick-%d-%d", k, i)
			quickIDs = append(quickIDs, id)
			require.NoError(t, q.Enqueue(ctx, chaosWork(chaosWorkArgs{ID: id, SleepMS: 5})))
		}
	}
	es := waitLedger(t, ledger, 20*time.Second, "every task done on b", func(es []ledgerEntry) bool {
		done := ledgerCount(es, "done")
		for _, ids := range slow {
			for _, id := range ids {
				if done[id] != 1 {
					return false
				}
			}
		}
		for _, id := range quickIDs {
			if done[id] != 1 {
				return false
			}
		}
		return true
	})
	for _, q := range queues {
		waitStats(t, q, 10*time.Second, Counts{})
	}
	starts := ledgerCount(es, "start")
	dups := 0
	for _, ids := range slow {
		for _, id := range ids {
			s := ledgerOf(es, "start", id)
			require.Len(t, s, 2, "%s: the killed run and the one that completed", id)
			require.Equal(t, a.pid(), s[0].PID)
			require.Equal(t, b.pid(), s[1].PID)
			require.Empty(t, b.logsWith("taskqueue: task retried", id), "the crash used up no retry")
			dups++
		}
	}
	for _, id := range quickIDs {
		require.Equal(t, 1, starts[id], "%s was not running at the kill: exactly one run", id)
	}
	b.signal(t, syscall.SIGTERM)
	require.Equal(t, 0, b.wait(t, 10*time.Second))
	chaosResult(t, "queues=2 tasks=%d kills=1 lost=0 duplicates=%d (the tasks running at the kill) back in their own queues %s after the kill (lease=%s)",
		len(quickIDs)+2*perQ, dups, back.Round(time.Millisecond), lease)
}
