//go:build chaos

package taskqueue

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// soakArgs mirror chaos.quick's arguments (internal/chaosworker).
type soakArgs struct {
	ID      string `json:"id"`
	SleepMS int64  `json:"sleep_ms"`
}

// soakKill is one SIGKILL of the soak: when, which process, and the tasks it had started and not acknowledged.
type soakKill struct {
	at       time.Time
	pid      int
	inFlight []string
}

// workerSample is one goroutine and heap sample of a worker process (chaosworker's $CHAOS_STATS).
type workerSample struct {
	goroutines int
	heap       int64
}

// TestChaosSoak (scenario 20): steady load for SOAK_DURATION (default 60s) while worker processes are killed with
// SIGKILL at random (every 1.5–4.5 s) and replaced. One worker is never killed: its goroutines and heap are
// sampled for drift. At the end nothing is lost, every duplicate is a task the killed process had started and not
// acknowledged, the queue's keys are back to their baseline, and the surviving worker holds no more goroutines
// or heap than before. Run the long version with SOAK_DURATION=10m and -timeout 20m.
func TestChaosSoak(t *testing.T) {
	dur := 60 * time.Second
	if s := os.Getenv("SOAK_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		require.NoError(t, err, "SOAK_DURATION")
		dur = d
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("SOAK_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		require.NoError(t, err, "SOAK_SEED")
		seed = v
	}
	t.Logf("soak: duration %s, SOAK_SEED=%d", dur, seed)
	rng := rand.New(rand.NewPCG(seed, seed>>1|1))

	bin := buildChaosWorker(t, t.TempDir())
	srv := startChaosRedis(t)
	rdb := srv.client(t, nil)
	const prefix = "chaos-soak"
	q, ref := chaosQueue(t, rdb, prefix, nil)
	require.NoError(t, Register(ref, "chaos", "quick", func(context.Context, soakArgs) error { return errors.New("chaos: subprocess only") }))
	dir := t.TempDir()
	ledger := filepath.Join(dir, "ledger")
	statsPath := filepath.Join(dir, "anchor.stats")
	ctx := context.Background()
	const (
		lease       = 2 * time.Second
		victims     = 2
		concurrency = 4
		rate        = 60 // tasks a second, each running 20–170 ms
	)
	opts := func(name string) chaosWorkerOpts {
		return chaosWorkerOpts{Name: name, Addr: srv.addr, Prefix: prefix, Ledger: ledger, Lease: lease, Concurrency: concurrency}
	}
	anchorOpts := opts("anchor")
	anchorOpts.Env = []string{"CHAOS_STATS=" + statsPath}
	anchor := startChaosWorker(t, bin, anchorOpts)
	all := []*chaosProc{anchor}
	procs := make([]*chaosProc, victims)
	started := 0
	for i := range procs {
		procs[i] = startChaosWorker(t, bin, opts(fmt.Sprintf("v%d", started)))
		all = append(all, procs[i])
		started++
	}
	sample := func() workerSample {
		t.Helper()
		before := len(readStats(t, statsPath))
		anchor.signal(t, syscall.SIGUSR1)
		var s []workerSample
		require.Eventually(t, func() bool { s = readStats(t, statsPath); return len(s) > before }, 10*time.Second, 10*time.Millisecond)
		return s[len(s)-1]
	}
	taskSpec := func(id string) *TaskSpec {
		return NewTaskSpec(id, Ref("chaos", "quick", soakArgs{ID: id, SleepMS: 5 + rng.Int64N(26)}))
	}

	// Warm-up and baselines: the queue's keys once drained, and the anchor's goroutines and heap.
	var ids []string
	for i := range 40 {
		id := fmt.Sprintf("warm-%d", i)
		ids = append(ids, id)
		require.NoError(t, q.Enqueue(ctx, taskSpec(id)))
	}
	waitLedger(t, ledger, 30*time.Second, "the warm-up", func(es []ledgerEntry) bool { return len(ledgerCount(es, "done")) == len(ids) })
	waitStats(t, q, 10*time.Second, Counts{})
	baseKeys := soakKeys(t, srv)
	base := sample()

	// The producer: rate tasks a second until the soak ends.
	stop := make(chan struct{})
	var prodWG sync.WaitGroup
	var prodMu sync.Mutex
	var prodErr error
	prodWG.Add(1)
	go func() {
		defer prodWG.Done()
		tick := time.NewTicker(time.Second / rate)
		defer tick.Stop()
		for n := 0; ; n++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			id := fmt.Sprintf("s-%d", n)
			ectx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := q.Enqueue(ectx, NewTaskSpec(id, Ref("chaos", "quick", soakArgs{ID: id, SleepMS: 20 + int64(n%151)})))
			cancel()
			prodMu.Lock()
			if err != nil {
				prodErr = errors.Join(prodErr, fmt.Errorf("enqueue %s: %w", id, err))
			} else {
				ids = append(ids, id)
			}
			prodMu.Unlock()
		}
	}()
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		prodWG.Wait()
	}()

	// The killer: SIGKILL a random victim every 1.5–4.5 s, note what it had started and not acknowledged, and
	// start a replacement.
	var kills []soakKill
	var snapshot time.Duration // the longest time from a kill to its in-flight snapshot
	var drift []workerSample
	end := time.Now().Add(dur)
	nextSample := time.Now().Add(dur / 5)
	for time.Now().Before(end) {
		pause := time.NewTimer(1500*time.Millisecond + time.Duration(rng.Int64N(int64(3*time.Second))))
		select {
		case <-pause.C:
		case <-time.After(time.Until(end) + time.Millisecond):
			pause.Stop()
		}
		if !time.Now().Before(end) {
			break
		}
		i := rng.IntN(victims)
		p := procs[i]
		p.signal(t, syscall.SIGKILL)
		k := soakKill{at: time.Now(), pid: p.pid()}
		require.Equal(t, -1, p.wait(t, 10*time.Second))
		// The runs it took down: the tasks it started (the ledger) that were not acknowledged at the kill (their
		// envelope is still in the tasks hash; an ack deletes it). These are the only tasks allowed to run twice
		// because of the kill. A process stalled before its kill may have lost some of them already, so the
		// snapshot does not rely on their leases still being in the active set.
		es := readLedger(t, ledger)
		var mine []string
		seen := map[string]bool{}
		for _, e := range es {
			if e.Event == "start" && e.PID == k.pid && !seen[e.ID] {
				seen[e.ID] = true
				mine = append(mine, e.ID)
			}
		}
		if len(mine) > 0 {
			exists, err := rdb.HMGet(ctx, q.keys.key(keyTasks), mine...).Result()
			require.NoError(t, err)
			for j, v := range exists {
				if v != nil {
					k.inFlight = append(k.inFlight, mine[j])
				}
			}
		}
		snapshot = max(snapshot, time.Since(k.at))
		kills = append(kills, k)
		procs[i] = startChaosWorker(t, bin, opts(fmt.Sprintf("v%d", started)))
		all = append(all, procs[i])
		started++
		if time.Now().After(nextSample) {
			drift = append(drift, sample())
			nextSample = time.Now().Add(dur / 5)
		}
	}
	close(stop)
	prodWG.Wait()
	prodMu.Lock()
	require.NoError(t, prodErr)
	enqueued := slices.Clone(ids)
	prodMu.Unlock()

	// Drain, then count.
	es := waitLedger(t, ledger, 2*time.Minute, "every enqueued task done", func(es []ledgerEntry) bool {
		done := ledgerCount(es, "done")
		for _, id := range enqueued {
			if done[id] == 0 {
				return false
			}
		}
		return true
	})
	waitStats(t, q, 30*time.Second, Counts{})
	inFlight := 0
	for _, k := range kills {
		inFlight += len(k.inFlight)
	}
	// Every run of a task but its last must be explained. Either its process was killed after the run started
	// (the kill took it down before its ack), or the process lost the lease while stalled past it (a loaded
	// machine) and logged that it did. A run with neither explanation fails the test. The kill-explained runs are
	// each a distinct (killed process, task) pair that the process had started and not acknowledged: the tasks in
	// flight at the kills. The snapshot taken at each kill counts the same from Redis, as a cross-check.
	stalled := map[string]bool{}
	for _, p := range all {
		for _, l := range p.logs() {
			if l.TaskID != "" && (l.Msg == "taskqueue: task lease_lost" || l.Msg == "taskqueue: could not record a task's outcome; it returns after its lease") {
				stalled[l.TaskID] = true
			}
		}
	}
	killedAt := map[int]time.Time{}
	for _, k := range kills {
		killedAt[k.pid] = k.at
	}
	startsOf := map[string][]ledgerEntry{} // one pass: ledgerOf per task would be quadratic in a long soak
	for _, e := range es {
		if e.Event == "start" {
			startsOf[e.ID] = append(startsOf[e.ID], e)
		}
	}
	dups, killDups, stallDups := 0, 0, 0
	for _, id := range enqueued {
		runs := startsOf[id]
		for _, r := range runs[:max(len(runs)-1, 0)] {
			dups++
			switch at, killed := killedAt[r.PID]; {
			case killed && at.After(r.At):
				killDups++
			case stalled[id]:
				stallDups++
			default:
				t.Errorf("%s ran %d times; its run in pid %d at %s was neither taken down by a kill nor lost by a stalled worker",
					id, len(runs), r.PID, r.At.Format(time.RFC3339Nano))
			}
		}
	}
	t.Logf("in flight at the kills: %d by the snapshots (latest %s after its kill), %d runs taken down by a kill", inFlight, snapshot, killDups)
	var recovery []time.Duration
	for _, k := range kills {
		for _, id := range k.inFlight {
			for _, e := range startsOf[id] {
				if e.At.After(k.at) && e.PID != k.pid {
					recovery = append(recovery, e.At.Sub(k.at))
					break
				}
			}
		}
	}

	// A batch record with an outcome other than ack (a release, a retry) stays until its lease deadline so that a
	// resend finds its mark; the surviving worker's reaper removes it then. Wait for that, with a deadline.
	endKeys := soakKeys(t, srv)
	for end := time.Now().Add(15 * time.Second); !slices.Equal(baseKeys, endKeys) && time.Now().Before(end); endKeys = soakKeys(t, srv) {
		time.Sleep(50 * time.Millisecond)
	}
	require.Equal(t, baseKeys, endKeys, "the queue's keys are back to their baseline once drained")
	final := sample()
	require.False(t, anchor.hasExited())
	require.LessOrEqual(t, final.goroutines, base.goroutines+5, "goroutines of the surviving worker: %d -> %d", base.goroutines, final.goroutines)
	require.LessOrEqual(t, final.heap, base.heap+8<<20, "heap of the surviving worker after GC: %d -> %d bytes", base.heap, final.heap)

	var driftText []string
	for _, s := range append(append([]workerSample{base}, drift...), final) {
		driftText = append(driftText, fmt.Sprintf("%d/%.1fMiB", s.goroutines, float64(s.heap)/(1<<20)))
	}
	chaosResult(t, "duration=%s tasks=%d kills=%d in-flight at the kills=%d lost=0 duplicates=%d (%d in flight at a kill, %d lost by a stalled worker) recovery %s; keys %v; anchor goroutines/heap after GC: %s",
		dur, len(enqueued), len(kills), inFlight, dups, killDups, stallDups, durStats(recovery), endKeys, strings.Join(driftText, " "))
	figure(t, "20", "duration_s", int(dur.Seconds()), "tasks", len(enqueued), "kills", len(kills), "in_flight_at_kills", inFlight, "lost", 0, "dup", dups,
		"dup_kill", killDups, "dup_stall", stallDups, "snapshot_max_ms", ms(snapshot),
		"recovery_p50_ms", ms(percentile(recovery, 50)), "recovery_p99_ms", ms(percentile(recovery, 99)), "keys_end", len(endKeys),
		"goroutines_base", base.goroutines, "goroutines_end", final.goroutines, "heap_base_kib", base.heap>>10, "heap_end_kib", final.heap>>10)
}

// soakKeys lists the queue's keys on the test's own server, without the wake-up list, which comes and goes with
// idle pickups.
func soakKeys(t testing.TB, srv *chaosRedis) []string {
	t.Helper()
	rdb := srv.client(t, nil)
	keys, err := rdb.Keys(context.Background(), "*").Result()
	require.NoError(t, err)
	// Wake-up lists come and go; the history's minutes (history.go) expire by themselves after a day.
	keys = slices.DeleteFunc(keys, func(k string) bool { return strings.HasSuffix(k, ":wake") || strings.Contains(k, ":history:") })
	slices.Sort(keys)
	return keys
}

// readStats reads chaosworker's $CHAOS_STATS file.
func readStats(t testing.TB, path string) []workerSample {
	t.Helper()
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	require.NoError(t, err)
	var out []workerSample
	for line := range strings.SplitSeq(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			continue
		}
		g, _ := strconv.Atoi(f[1])
		h, _ := strconv.ParseInt(f[2], 10, 64)
		out = append(out, workerSample{goroutines: g, heap: h})
	}
	return out
}
