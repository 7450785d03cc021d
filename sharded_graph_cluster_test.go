//go:build cluster

package taskqueue

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestClusterShardedGroupAndWorkflow runs groups and workflows through a sharded queue whose three shards live on
// three primaries: each run's scripts touch only its shard's slot (a cross-slot key would be refused), members
// and nodes are settled in their run's shard, and the runs spread over the shards.
func TestClusterShardedGroupAndWorkflow(t *testing.T) {
	c := startCluster(t, 3, 0)
	cc := c.client(nil)
	t.Cleanup(func() { _ = cc.Close() })
	ctx := context.Background()
	prefix := spreadShards(t, cc, "sgc", 3, 3)
	reg, ref := testRegistry(t)
	s := &setup{reg: reg, ref: ref}
	ran := registerSquare(t, s)
	log := registerStep(t, s)
	q, err := NewShardedQueue(cc, prefix, 3, reg, quiet(nil))
	require.NoError(t, err)
	adm := mustAdmin(q)

	var groups []*GroupRun
	for range 3 {
		run, err := q.DispatchGroup(ctx, "cl", squares(20), nil)
		require.NoError(t, err)
		groups = append(groups, run)
	}
	info, err := adm.Inspect(ctx, groups[0].TaskIDs[19])
	require.NoError(t, err)
	require.Equal(t, StatePending, info.State)
	var flows []*WorkflowRun
	homes := map[int]bool{}
	for i := range 6 {
		wf := NewWorkflow(fmt.Sprintf("diamond-%d", i))
		wf.Add("a", step("a"))
		wf.Add("b", step("b", "a")).After("a")
		wf.Add("c", step("c", "a")).After("a")
		wf.Add("d", step("d", "b", "c")).After("b", "c")
		run, err := q.SubmitWorkflow(ctx, wf, nil)
		require.NoError(t, err)
		flows = append(flows, run)
		homes[q.ShardOf(wf.ID())] = true
	}
	require.Greater(t, len(homes), 1, "the workflows spread over the shards")

	startWorker(t, q, quietWorker(WorkerConfig{Concurrency: 8}, nil))
	for _, run := range groups {
		res, err := run.Wait(ctx, &WaitOptions{Timeout: time.Minute})
		require.NoError(t, err)
		require.Equal(t, 20, res.Succeeded)
		m, ok := res.Member("19")
		require.True(t, ok)
		var v int
		require.NoError(t, m.Decode(&v))
		require.Equal(t, 361, v)
	}
	for _, run := range flows {
		info, err := run.Wait(ctx, &WorkflowWaitOptions{Timeout: time.Minute})
		require.NoError(t, err)
		require.Equal(t, WorkflowSucceeded, info.State)
		require.Equal(t, 5, nodeResult(t, info, "d"))
	}
	require.EqualValues(t, 60, ran.Load())
	log.mu.Lock()
	require.Empty(t, log.early)
	log.mu.Unlock()
	waitFor(t, 10*time.Second, "every ack", func() bool {
		st, err := countsOf(ctx, q)
		return err == nil && st == Counts{}
	})
}
