//go:build chaos

package taskqueue

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// chaosNodeArgs mirror chaos.node's arguments (internal/chaosworker).
type chaosNodeArgs struct {
	ID      string   `json:"id"`
	Node    string   `json:"node"`
	Parents []string `json:"parents"`
	SleepMS int64    `json:"sleep_ms"`
}

// chaosWorkflowKilledWorkers: a DAG of 1,000 nodes (40 layers of 25; each node after 1 to 3 nodes of the layer
// before it and, one time in four, a node of any earlier layer) runs on 3 worker subprocesses (lease 1s,
// concurrency 8) while one of them, chosen at random, is SIGKILLed every 0.5-1 s and replaced. No coordinator
// runs: the outcome scripts advance the workflow. Every node must succeed exactly once as far as the workflow is
// concerned (its outcome recorded once, its result its own id), never start before each parent has completed
// (the handler reads every parent's result first and records "early" otherwise; its first start follows a done
// of each parent in the ledger), and the workflow must end, with the queue empty. Runs of a node beyond the
// first are bounded by the kills (each kill loses at most the tasks its process had leased).
func chaosWorkflowKilledWorkers(t *testing.T, bin string) {
	srv := startChaosRedis(t)
	rdb := srv.client(t, nil)
	const prefix = "chaos-wf"
	q, ref := chaosQueue(t, rdb, prefix, nil)
	require.NoError(t, Register(ref, "chaos", "node", func(context.Context, chaosNodeArgs) error { return errors.New("stub") }))
	ledger := filepath.Join(t.TempDir(), "ledger")
	ctx := context.Background()
	seed := uint64(time.Now().UnixNano())
	if s, err := strconv.ParseUint(os.Getenv("CHAOS_SEED"), 10, 64); err == nil {
		seed = s
	}
	t.Logf("seed %d (CHAOS_SEED replays it)", seed)
	rng := rand.New(rand.NewPCG(seed, 7))
	const (
		layers, width = 40, 25
		workers       = 3
		concurrency   = 8
		maxKills      = 40
	)
	wf := NewWorkflow("dag1000")
	gid := wf.ID() + "@" + workflowRunID(wf.ID())
	parentsOf := map[string][]string{}
	for l := range layers {
		for i := range width {
			id := fmt.Sprintf("n%02d-%02d", l, i)
			var parents []string
			if l > 0 {
				for range 1 + rng.IntN(3) {
					parents = append(parents, fmt.Sprintf("n%02d-%02d", l-1, rng.IntN(width)))
				}
				if l > 1 && rng.IntN(4) == 0 {
					parents = append(parents, fmt.Sprintf("n%02d-%02d", rng.IntN(l-1), rng.IntN(width)))
				}
			}
			parents = uniq(parents)
			parentsOf[id] = parents
			wf.Add(id, &TaskSpec{Executable: Ref("chaos", "node", chaosNodeArgs{ID: gid + ":" + id, Node: id, Parents: parents, SleepMS: 30 + rng.Int64N(60)})}).After(parents...)
		}
	}
	opts := func(name string) chaosWorkerOpts {
		return chaosWorkerOpts{Name: name, Addr: srv.addr, Prefix: prefix, Ledger: ledger, Lease: time.Second, Concurrency: concurrency}
	}
	procs := make([]*chaosProc, workers)
	for i := range procs {
		procs[i] = startChaosWorker(t, bin, opts(fmt.Sprintf("w%d", i)))
	}
	start := time.Now()
	run, err := q.SubmitWorkflow(ctx, wf, nil)
	require.NoError(t, err)

	ended := make(chan struct{})
	var info *WorkflowInfo
	var waitErr error
	go func() {
		defer close(ended)
		info, waitErr = run.Wait(ctx, &WorkflowWaitOptions{Timeout: 150 * time.Second})
	}()
	kills := 0
loop:
	for kills < maxKills {
		select {
		case <-ended:
			break loop
		case <-time.After(500*time.Millisecond + time.Duration(rng.IntN(500))*time.Millisecond):
		}
		k := rng.IntN(workers)
		procs[k].signal(t, syscall.SIGKILL)
		require.Equal(t, -1, procs[k].wait(t, 10*time.Second), "killed by a signal")
		kills++
		procs[k] = startChaosWorker(t, bin, opts(fmt.Sprintf("w%d-%d", k, kills)))
	}
	<-ended
	took := time.Since(start)
	require.NoError(t, waitErr)
	require.Equal(t, WorkflowSucceeded, info.State)
	require.Equal(t, layers*width, info.Total)
	require.Equal(t, info.Total, info.Done)
	for _, n := range info.Nodes {
		require.Equal(t, NodeSucceeded, n.State, n.ID)
		var v string
		require.NoError(t, n.Decode(&v))
		require.Equal(t, n.ID, v)
	}
	require.GreaterOrEqual(t, kills, 3, "the workflow outlived at least 3 kills (it took %s)", took)

	entries := readLedger(t, ledger)
	require.Empty(t, ledgerCountEvent(entries, "early"), "no node started before its parents")
	starts, dones := ledgerCount(entries, "start"), ledgerCount(entries, "done")
	firstStart, firstDone := map[string]time.Time{}, map[string]time.Time{}
	for _, e := range entries {
		if e.Event == "start" && firstStart[e.ID].IsZero() {
			firstStart[e.ID] = e.At
		}
		if e.Event == "done" && firstDone[e.ID].IsZero() {
			firstDone[e.ID] = e.At
		}
	}
	extra := 0
	for id, parents := range parentsOf {
		tid := gid + ":" + id
		require.GreaterOrEqual(t, dones[tid], 1, "node %s done", id)
		extra += starts[tid] - 1
		for _, p := range parents {
			require.True(t, firstDone[gid+":"+p].Before(firstStart[tid]), "node %s started before its parent %s was done", id, p)
		}
	}
	require.LessOrEqual(t, extra, kills*concurrency, "runs beyond the first are bounded by what the killed processes held")
	waitStats(t, q, 15*time.Second, Counts{})
	figure(t, "23_WorkflowKilledWorkers", "nodes", info.Total, "kills", kills, "extra_runs", extra, "early", 0,
		"stuck", 0, "took_ms", ms(took))
	chaosResult(t, "a DAG of %d nodes (40 layers) ended succeeded in %s through %d SIGKILLs of 3 worker processes: every node succeeded once in the workflow, %d extra runs (killed in flight), none before its parents",
		info.Total, took.Round(time.Millisecond), kills, extra)
}

func uniq(ids []string) []string {
	seen := map[string]bool{}
	out := ids[:0]
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}

func ledgerCountEvent(entries []ledgerEntry, event string) []ledgerEntry {
	var out []ledgerEntry
	for _, e := range entries {
		if e.Event == event {
			out = append(out, e)
		}
	}
	return out
}
