//go:build chaos

package taskqueue

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestChaosFlow runs scenarios 25 and 26 of docs/reliability.md: a per-key concurrency limit across worker
// subprocesses, one of them SIGKILLed mid-task, and the fairness of a tenant's first task behind another's
// backlog of 1,000,000. See docs/flow-control.md.
func TestChaosFlow(t *testing.T) {
	bin := buildChaosWorker(t, t.TempDir())
	// One after the other: 26's million enqueues load the machine enough to slow 25's kills.
	t.Run("25_KeyLimitKilledWorkers", func(t *testing.T) { chaosKeyLimitKilledWorkers(t, bin) })
	t.Run("26_FairnessMillionBacklog", func(t *testing.T) { chaosFairnessMillion(t) })
}

// chaosKeyLimitKilledWorkers (scenario 25): key K limited to 3, 120 tasks of K (300 ms each) and 60 of 3 other
// keys, 6 worker subprocesses of concurrency 4 (24 slots), while every second the worker running a task of K is
// SIGKILLed mid-task and replaced (4 times, at least 2 on a loaded machine). The handler entries and exits of
// every process, from the execution ledger (a killed run ends at its process's exit), never show 4 tasks of K at
// once; they do show 3 (the limit is reached, so the check is not vacuous); every task completes; no slot is left
// held at the end.
func chaosKeyLimitKilledWorkers(t *testing.T, bin string) {
	srv := startChaosRedis(t)
	rdb := srv.client(t, nil)
	const prefix, limit = "chaos-keylimit", 3
	q, _ := chaosQueue(t, rdb, prefix, nil)
	ctx := context.Background()
	adm := mustAdmin(q)
	require.NoError(t, adm.SetConcurrencyLimit(ctx, "K", limit))
	ledger := t.TempDir() + "/ledger"
	opts := func(name string) chaosWorkerOpts {
		return chaosWorkerOpts{Name: name, Addr: srv.addr, Prefix: prefix, Ledger: ledger, Lease: time.Second, Concurrency: 4}
	}
	var specs []*TaskSpec
	keyOf := map[string]string{}
	for i := range 120 {
		k := chaosWork(chaosWorkArgs{ID: fmt.Sprintf("k-%03d", i), SleepMS: 300, FirstSleepMS: 300})
		k.FlowKey = "K"
		specs = append(specs, k)
		keyOf[k.TaskID] = "K"
		if i%2 == 0 {
			o := chaosWork(chaosWorkArgs{ID: fmt.Sprintf("o-%02d", i), SleepMS: 300, FirstSleepMS: 300})
			o.FlowKey = fmt.Sprintf("O%d", i%6)
			specs = append(specs, o)
			keyOf[o.TaskID] = o.FlowKey
		}
	}
	require.NoError(t, q.EnqueueBatch(ctx, specs))
	var workers []*chaosProc
	var all []*chaosProc
	for i := range 6 {
		w := startChaosWorker(t, bin, opts(fmt.Sprintf("w%d", i)))
		workers, all = append(workers, w), append(all, w)
	}
	done := func(es []ledgerEntry) bool {
		for id := range keyOf {
			if len(ledgerOf(es, "done", id)) == 0 {
				return false
			}
		}
		return true
	}
	kills := 0
	for deadline := time.Now().Add(60 * time.Second); kills < 4 && time.Now().Before(deadline); {
		es := readLedger(t, ledger)
		if done(es) {
			break
		}
		// The process running a task of K now: a start of K without a done after it.
		open := map[string]int{}
		for _, e := range es {
			if keyOf[e.ID] != "K" {
				continue
			}
			switch e.Event {
			case "start":
				open[e.ID] = e.PID
			case "done":
				delete(open, e.ID)
			}
		}
		i := -1
		for _, p := range open {
			if j := slices.IndexFunc(workers, func(w *chaosProc) bool { return w.cmd.Process.Pid == p }); j >= 0 {
				i = j
			}
		}
		if i < 0 {
			time.Sleep(50 * time.Millisecond) // the test's pace, not a wait for work
			continue
		}
		workers[i].signal(t, syscall.SIGKILL)
		<-workers[i].exited
		workers[i] = startChaosWorker(t, bin, opts(fmt.Sprintf("w%d-r%d", i, kills)))
		all = append(all, workers[i])
		kills++
		time.Sleep(time.Second) // the pace of the kills
	}
	require.GreaterOrEqual(t, kills, 2, "workers killed while running a task of K")
	es := waitLedger(t, ledger, 90*time.Second, "every task done", done)
	waitStats(t, q, 30*time.Second, Counts{})

	// Replay the handler entries and exits of K in time order; a run without a done ends when its process exited.
	exitOf := map[int]time.Time{}
	for _, w := range all {
		select {
		case <-w.exited:
			exitOf[w.cmd.Process.Pid] = w.exitedAt
		default:
		}
	}
	type edge struct {
		at    time.Time
		delta int
	}
	var edges []edge
	killed := 0
	for id, k := range keyOf {
		if k != "K" {
			continue
		}
		starts, dones := ledgerOf(es, "start", id), ledgerOf(es, "done", id)
		for _, s := range starts {
			end := time.Time{}
			for _, d := range dones {
				if d.PID == s.PID && !d.At.Before(s.At) {
					end = d.At
					break
				}
			}
			if end.IsZero() {
				at, ok := exitOf[s.PID]
				require.True(t, ok, "run of %s in pid %d has no done and its process did not exit", id, s.PID)
				end = at
				killed++
			}
			edges = append(edges, edge{s.At, 1}, edge{end, -1})
		}
	}
	slices.SortFunc(edges, func(a, b edge) int {
		if c := a.at.Compare(b.at); c != 0 {
			return c
		}
		return a.delta - b.delta // an exit before an entry at the same instant
	})
	cur, peak := 0, 0
	for _, e := range edges {
		cur += e.delta
		peak = max(peak, cur)
	}
	require.LessOrEqual(t, peak, limit, "at most %d tasks of K ran at once", limit)
	require.Equal(t, limit, peak, "the limit was reached")
	require.GreaterOrEqual(t, killed, 1, "a run of K was killed mid-task")
	st, err := adm.FlowState(ctx)
	require.NoError(t, err)
	require.Empty(t, st.Running, "no slot held once everything is done")
	require.Empty(t, st.AtLimit)
	chaosResult(t, "25 key limit: limit %d, 6 workers x 4, %d SIGKILLs (%d runs of K killed mid-task), peak %d of K at once, 180 tasks done, 0 slots left",
		limit, kills, killed, peak)
}

// chaosFairnessMillion (scenario 26): 1,000,000 tasks of tenant A, then, while two consumers drain A in batches of
// 100, 10 tasks of tenant B. Counted by fencing token (the order of leases on the server): the A tasks leased after
// B's enqueue and before B's first are at most one batch, and all 10 of B are leased within the next two batches.
func chaosFairnessMillion(t *testing.T) {
	srv := startChaosRedis(t)
	rdb := srv.client(t, nil)
	q, reg := chaosQueue(t, rdb, "chaos-fair", nil)
	require.NoError(t, Register(reg, "m", "f", func(context.Context, addArgs) error { return nil }))
	ctx := context.Background()
	const backlog, batch = 1_000_000, 100
	specs := make([]*TaskSpec, 0, 10_000)
	for i := 0; i < backlog; i += cap(specs) {
		specs = specs[:0]
		for j := range cap(specs) {
			specs = append(specs, &TaskSpec{TaskID: fmt.Sprintf("a-%07d", i+j), Executable: Ref("m", "f", nil), FlowKey: "A"})
		}
		require.NoError(t, q.EnqueueBatch(ctx, specs))
	}
	require.Equal(t, int64(backlog), chaosStats(t, q).Pending)

	type lease struct {
		token int64
		key   string
		id    string
	}
	leases := make(chan lease, 1<<16)
	stop := make(chan struct{})
	errs := make(chan error, 2)
	var gate sync.RWMutex // held by the test while it enqueues B: no pickup runs between its reading of seq and the enqueue
	for range 2 {
		go func() {
			for {
				select {
				case <-stop:
					errs <- nil
					return
				default:
				}
				gate.RLock()
				ds, err := q.Dequeue(ctx, DequeueOptions{Max: batch, Wait: time.Second})
				gate.RUnlock()
				if err == nil {
					for _, d := range ds {
						leases <- lease{d.Token, d.Spec.FlowKey, d.Spec.TaskID}
					}
					err = q.Ack(ctx, ds...)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	var got []lease
	read := func(until func() bool) {
		for deadline := time.Now().Add(60 * time.Second); !until(); {
			select {
			case l := <-leases:
				got = append(got, l)
			case <-time.After(time.Until(deadline)):
				t.Fatalf("timed out with %d leases read", len(got))
			}
		}
	}
	read(func() bool { return len(got) >= 20*batch }) // A is being drained
	var bs []*TaskSpec
	for i := range 10 {
		bs = append(bs, &TaskSpec{TaskID: fmt.Sprintf("b-%d", i), Executable: Ref("m", "f", nil), FlowKey: "B"})
	}
	gate.Lock()
	epoch, err := rdb.Get(ctx, q.keys.key(keyEpoch)).Int64()
	require.NoError(t, err)
	seq, err := rdb.Get(ctx, q.keys.key(keySeq)).Int64()
	require.NoError(t, err)
	require.NoError(t, q.EnqueueBatch(ctx, bs))
	gate.Unlock()
	after := epoch + seq // every token above is a lease after B's enqueue
	countB := func() int {
		return len(slices.DeleteFunc(slices.Clone(got), func(l lease) bool { return l.key != "B" }))
	}
	read(func() bool { return countB() == 10 })
	close(stop)
	for range 2 {
		require.NoError(t, <-errs)
	}
	slices.SortFunc(got, func(a, b lease) int { return int(a.token - b.token) })
	firstB := slices.IndexFunc(got, func(l lease) bool { return l.key == "B" })
	lastB := firstB
	for i, l := range got {
		if l.key == "B" {
			lastB = i
		}
	}
	aBefore, aUntilLast := 0, 0
	for i, l := range got {
		if l.token <= after || l.key != "A" {
			continue
		}
		if i < firstB {
			aBefore++
		}
		if i < lastB {
			aUntilLast++
		}
	}
	require.LessOrEqual(t, aBefore, batch, "B's first task was leased within one batch of its enqueue")
	require.LessOrEqual(t, aUntilLast, 2*batch, "all of B within two batches")
	chaosResult(t, "26 fairness: backlog of %d for A; A tasks leased after B's enqueue before B's first: %d (batch %d), before B's last: %d",
		backlog, aBefore, batch, aUntilLast)
}

// TestChaosFlowRateLimit checks a key's rate of 100 per second over 10 s on a real redis-server, with two
// consumers leasing as fast as the limit lets them: counted by the lease times on the server's clock (each
// delivery's lease deadline less the lease), every window of 1 s holds at most 100 + 100 starts and the 10 s from
// the first holds at most 100 + 1000 (the documented bound: n + n·t/period), and, the consumers being saturated,
// at least 700 (a loaded machine may slow them).
func TestChaosFlowRateLimit(t *testing.T) {
	srv := startChaosRedis(t)
	rdb := srv.client(t, nil)
	lease := 5 * time.Second
	q, reg := chaosQueue(t, rdb, "chaos-rate", &RedisConfig{Lease: lease})
	require.NoError(t, Register(reg, "m", "f", func(context.Context, addArgs) error { return nil }))
	ctx := context.Background()
	require.NoError(t, mustAdmin(q).SetRateLimit(ctx, "R", 100, time.Second))
	var specs []*TaskSpec
	for i := range 1500 {
		specs = append(specs, &TaskSpec{TaskID: fmt.Sprintf("r-%04d", i), Executable: Ref("m", "f", nil), FlowKey: "R"})
	}
	require.NoError(t, q.EnqueueBatch(ctx, specs))
	starts := make(chan int64, 4096)
	errs := make(chan error, 2)
	end := time.Now().Add(11 * time.Second)
	for c := range 2 {
		go func() {
			for time.Now().Before(end) {
				ds, err := q.Dequeue(ctx, DequeueOptions{Max: 50, Wait: 200 * time.Millisecond, Consumer: fmt.Sprintf("c%d", c)})
				if err == nil {
					for _, d := range ds {
						starts <- d.LeaseDeadline.Add(-lease).UnixMilli()
					}
					err = q.Ack(ctx, ds...)
				}
				if err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range 2 {
		require.NoError(t, <-errs)
	}
	close(starts)
	var at []int64
	for ms := range starts {
		at = append(at, ms)
	}
	slices.Sort(at)
	require.NotEmpty(t, at)
	first := at[0]
	count := func(from, length int64) int {
		n := 0
		for _, ms := range at {
			if ms >= from && ms < from+length {
				n++
			}
		}
		return n
	}
	in10 := count(first, 10_000)
	require.LessOrEqual(t, in10, 100+1000, "10 s from the first start")
	require.GreaterOrEqual(t, in10, 700, "the limiter does not starve the key (the consumers mostly keep up)")
	worst := 0
	for _, ms := range at {
		if ms < first+9_000 {
			worst = max(worst, count(ms, 1000))
		}
	}
	require.LessOrEqual(t, worst, 100+100, "any 1 s window")
	chaosResult(t, "rate 100/s: %d starts in the 10 s from the first (bound 1100), worst 1 s window %d (bound 200)",
		in10, worst)
}
