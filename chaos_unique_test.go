//go:build chaos

package taskqueue

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// chaosUniqueKilledWorkers (scenario 22 of docs/reliability.md and docs/unique.md): a producer enqueues unique
// tasks of 0.3-1.5 s over 6 keys (the default lifetime, duplicates dropped) for 9 s into 3 worker subprocesses, one of which
// is SIGKILLed and replaced every 1.5 s, killing the runs in flight. Afterwards: every stored task completed (a
// killed run's task ran again elsewhere, its lock held through the lost lease); no two tasks of one key were in
// the queue at once (each key's next task first started after its previous task's last run ended); every key ends
// released (no lock held, a new task of each key is stored at once, and no record is left after a sweep).
func chaosUniqueKilledWorkers(t *testing.T, bin string) {
	srv := startChaosRedis(t)
	rdb := srv.client(t, nil)
	const prefix = "chaos-unique"
	q, _ := chaosQueue(t, rdb, prefix, nil)
	ledger := filepath.Join(t.TempDir(), "ledger")
	ctx := context.Background()
	opts := func(name string) chaosWorkerOpts {
		return chaosWorkerOpts{Name: name, Addr: srv.addr, Prefix: prefix, Ledger: ledger, Lease: time.Second}
	}
	workers := []*chaosProc{startChaosWorker(t, bin, opts("w0")), startChaosWorker(t, bin, opts("w1")), startChaosWorker(t, bin, opts("w2"))}
	keys := []string{"k0", "k1", "k2", "k3", "k4", "k5"}
	keyOf := map[string]string{} // stored task id -> key
	var order []string           // stored task ids, in enqueue order
	dropped := 0
	rng := rand.New(rand.NewPCG(22, 22))
	spec := func(id, key string) *TaskSpec {
		ms := 300 + rng.Int64N(1200)
		s := chaosWork(chaosWorkArgs{ID: id, SleepMS: ms, FirstSleepMS: ms})
		s.Unique = &Unique{Key: key, TTL: time.Minute, DropDuplicate: true}
		return s
	}
	start := time.Now()
	nextKill, kills := start.Add(1500*time.Millisecond), 0
	for n := 0; time.Since(start) < 9*time.Second; n++ {
		key := keys[rng.IntN(len(keys))]
		s := spec(fmt.Sprintf("u-%d", n), key)
		require.NoError(t, q.Enqueue(ctx, s))
		if s.Enqueued == Stored {
			keyOf[s.TaskID] = key
			order = append(order, s.TaskID)
		} else {
			require.Equal(t, Dropped, s.Enqueued)
			dropped++
		}
		if time.Now().After(nextKill) {
			i := kills % len(workers)
			workers[i].signal(t, syscall.SIGKILL)
			<-workers[i].exited
			workers[i] = startChaosWorker(t, bin, opts(fmt.Sprintf("w%d-r%d", i, kills)))
			kills++
			nextKill = time.Now().Add(1500 * time.Millisecond)
		}
		time.Sleep(10 * time.Millisecond) // the producer's pace, not a wait for work
	}
	es := waitLedger(t, ledger, 60*time.Second, "every stored task done", func(es []ledgerEntry) bool {
		for _, id := range order {
			if len(ledgerOf(es, "done", id)) == 0 {
				return false
			}
		}
		return true
	})
	waitStats(t, q, 30*time.Second, Counts{})

	// No two tasks of one key at once: per key, in enqueue order, each task's first start comes after the
	// previous task's last run ended.
	reruns := 0
	for _, key := range keys {
		var prevEnd time.Time
		prev := ""
		for _, id := range order {
			if keyOf[id] != key {
				continue
			}
			starts, dones := ledgerOf(es, "start", id), ledgerOf(es, "done", id)
			reruns += len(starts) - 1
			if prev != "" {
				require.True(t, starts[0].At.After(prevEnd), "key %s: task %s started at %s, before %s's last run ended at %s",
					key, id, starts[0].At, prev, prevEnd)
			}
			prev, prevEnd = id, slices.MaxFunc(dones, func(a, b ledgerEntry) int { return a.At.Compare(b.At) }).At
		}
	}

	// Every key ends released.
	adm := mustAdmin(q)
	for _, key := range keys {
		l, err := adm.Lock(ctx, key)
		require.NoError(t, err)
		require.True(t, l == nil || !l.Held, "key %s still held: %+v", key, l)
	}
	_, err := adm.SweepLocks(ctx)
	require.NoError(t, err)
	left, err := adm.Locks(ctx, 100)
	require.NoError(t, err)
	require.Empty(t, left, "no lock record left after a sweep")
	for _, key := range keys {
		s := spec("after-"+key, key)
		require.NoError(t, q.Enqueue(ctx, s))
		require.Equal(t, Stored, s.Enqueued, "key %s is free", key)
	}
	chaosResult(t, "22 unique: %d stored, %d dropped as duplicates, %d SIGKILLs, %d runs killed and rerun, 0 lost, 0 keys held by two tasks, 0 stranded",
		len(order), dropped, kills, reruns)
}
