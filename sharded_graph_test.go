package taskqueue

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// newShardedGraph returns a sharded queue of n shards on a miniredis of its own, and a bundle whose ref the
// group and workflow tests register their functions in (registerSquare, registerStep).
func newShardedGraph(t *testing.T, n int) (*ShardedQueue, *setup) {
	t.Helper()
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	reg, ref := testRegistry(t)
	q, err := NewShardedQueue(rdb, "sg", n, reg, quiet(nil))
	require.NoError(t, err)
	return q, &setup{mr: mr, rdb: rdb, reg: reg, ref: ref}
}

// shardHolds reports whether shard k of q holds taskID (in any state).
func shardHolds(ctx context.Context, t *testing.T, q *ShardedQueue, k int, taskID string) bool {
	t.Helper()
	_, err := mustAdmin(q.Shards()[k]).Inspect(ctx, taskID)
	if err != nil {
		require.ErrorIs(t, err, ErrNotFound)
		return false
	}
	return true
}

// ShardOf is part of a sharded queue's identity: it must never move a task id, whatever the id holds. The table
// is the FNV-1a hash of each id modulo 8 and 3, as computed before groups and workflows came to sharded queues,
// with ids that hold ':' and '@' and ids shaped like a group member's or a workflow node's.
func TestShardOfUnchangedForPlainIDs(t *testing.T) {
	t.Parallel()
	q8, _ := newShardedGraph(t, 8)
	q3, _ := newShardedGraph(t, 3)
	for _, c := range []struct {
		id     string
		k8, k3 int
	}{
		{"a", 4, 1},
		{"order-42", 4, 2},
		{"user:17", 4, 1},
		{"mail@example.com", 7, 1},
		{"job@abcdefghijklmnopqrstuv:x", 1, 0}, // a group member's shape
		{"wf@f68f8835c2a03286f541b7:a", 5, 1},  // workflow "wf", node "a"
		{"x@y:z", 0, 0},
		{"ns:sub:id", 1, 1},
		{"@", 7, 2},
		{":", 5, 2},
		{"report@ABCDEFGHIJKLMNOPQRSTUV:0", 4, 0},
		{"a@b@c:d:e", 4, 0},
	} {
		require.Equal(t, c.k8, q8.ShardOf(c.id), c.id)
		require.Equal(t, c.k3, q3.ShardOf(c.id), c.id)
	}
	require.Equal(t, "wf@f68f8835c2a03286f541b7:a", (&WorkflowRun{ID: "wf", RunID: workflowRunID("wf")}).TaskID("a"))

	for _, c := range []struct {
		id, run string
	}{
		{"job@abcdefghijklmnopqrstuv:x", "job@abcdefghijklmnopqrstuv"},
		{"report@ABCDEFGHIJKLMNOPQRSTUV:0", "report@ABCDEFGHIJKLMNOPQRSTUV"},
		{"wf@f68f8835c2a03286f541b7:a", "wf"},
		{"a.b_c-d@0123456789abcdefghijkl:m.1", "a.b_c-d@0123456789abcdefghijkl"},
		{"mail@example.com", ""},
		{"x@y:z", ""},
		{"a@b@c:d:e", ""},
		{"job@abcdefghijklmnopqrstu:x", ""},                          // a run id one short
		{"job@abcdefghijklmnopqrstuv:", ""},                          // no member
		{"job@abcdefghijklmnopqrstuv:x:y", ""},                       // a member with ':'
		{"-job@abcdefghijklmnopqrstuv:x", ""},                        // a name that no group may have
		{"job@abcdefghijklmnopqrst.v:x", ""},                         // a run id with a dot
		{"job@abcdefghijklmnopqrstuv:x y", ""},                       // a member with a space
		{"@abcdefghijklmnopqrstuv:x", ""},                            // no name
		{"job:abcdefghijklmnopqrstuv@x", ""},                         // the other way round
		{"job@abcdefghijklmnopqrstuvw:x", ""},                        // a run id one long
		{"wf@f68f8835c2a03286f541b7:a", "wf"},                        // repeated: a derived run id
		{"wg@f68f8835c2a03286f541b7:a", "wg@f68f8835c2a03286f541b7"}, // another workflow's run id: a group shape
	} {
		run, ok := graphRunOf(c.id)
		require.Equal(t, c.run != "", ok, c.id)
		require.Equal(t, c.run, run, c.id)
	}
}

// A plain task whose id looks like a group member's keeps its shard: enqueue puts it where ShardOf says, a worker
// settles it there (by the shard of its pickup), and the admin finds, cancels and deletes it there after asking
// the shard of the run its id names.
func TestShardedPlainIDsOfMemberShape(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	q, s := newShardedGraph(t, 4)
	runs := registerSquare(t, s)
	// Ids whose run's shard differs from their hash's.
	var odd []string
	for i := 0; len(odd) < 4 && i < 1000; i++ {
		id := fmt.Sprintf("job@abcdefghijklmnopqrstu%d:x", i%10) + fmt.Sprint(i)
		if h, ok := q.homeOf(id); ok && h != q.ShardOf(id) {
			odd = append(odd, id)
		}
	}
	require.Len(t, odd, 4)
	adm := mustAdmin(q)
	for _, id := range odd {
		require.NoError(t, q.Enqueue(ctx, &TaskSpec{TaskID: id, Executable: Ref("grp", "square", sqArgs{N: 3})}))
		require.True(t, shardHolds(ctx, t, q, q.ShardOf(id), id), "in its hash's shard")
		info, err := adm.Inspect(ctx, id)
		require.NoError(t, err)
		require.Equal(t, StatePending, info.State)
	}
	st, err := adm.Cancel(ctx, odd[0])
	require.NoError(t, err)
	require.Equal(t, StatePending, st)
	st, err = adm.Delete(ctx, odd[0])
	require.NoError(t, err)
	require.Equal(t, StateCancelled, st)
	_, err = adm.Inspect(ctx, odd[0])
	require.ErrorIs(t, err, ErrNotFound)
	_, err = adm.Cancel(ctx, odd[0])
	require.ErrorIs(t, err, ErrNotFound)

	startWorker(t, q, quietWorker(WorkerConfig{Concurrency: 2}, nil))
	waitFor(t, 10*time.Second, "the other three to run and be acknowledged", func() bool {
		c, err := countsOf(ctx, q)
		return err == nil && runs.Load() >= 3 && c == Counts{}
	})
	for _, id := range odd[1:] {
		raw, err := q.Result(ctx, id)
		require.NoError(t, err, "the result is stored in the task's shard and found there")
		require.JSONEq(t, "9", string(raw))
		raw, err = adm.Result(ctx, id)
		require.NoError(t, err)
		require.JSONEq(t, "9", string(raw))
	}
}

// A group of 20 members runs to completion through a ShardedQueue worker: the run and its members live in the
// shard of its group id; Inspect and Cancel of a member find it there; Wait, OpenGroup and Admin.Group read it.
func TestShardedGroup(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	q, s := newShardedGraph(t, 4)
	runs := registerSquare(t, s)
	specs := squares(20, 7)
	run, err := q.DispatchGroup(ctx, "transforms", specs, nil)
	require.NoError(t, err)
	home := q.ShardOf(run.GroupID())
	elsewhere := 0
	for _, id := range run.TaskIDs {
		require.True(t, shardHolds(ctx, t, q, home, id), id)
		if q.ShardOf(id) != home {
			elsewhere++
		}
	}
	require.Positive(t, elsewhere, "some members' own hash picks another shard")
	require.Zero(t, heldTasks(ctx, t, q.Shards()[(home+1)%4]), "the other shards hold nothing")

	adm := mustAdmin(q)
	info, err := adm.Inspect(ctx, run.TaskIDs[3])
	require.NoError(t, err)
	require.Equal(t, StatePending, info.State)
	require.Contains(t, info.Envelope, run.GroupID())
	st, err := adm.Cancel(ctx, run.TaskIDs[5])
	require.NoError(t, err)
	require.Equal(t, StatePending, st)

	opened, err := q.OpenGroup(run.GroupID())
	require.NoError(t, err)
	startWorker(t, q, quietWorker(WorkerConfig{Concurrency: 4}, nil))
	res, err := opened.Wait(ctx, &WaitOptions{Timeout: 30 * time.Second, Keep: true})
	require.ErrorIs(t, err, ErrGroupFailed, "member 7 failed, member 5 was cancelled")
	require.Equal(t, 20, res.Total)
	require.Equal(t, 18, res.Succeeded)
	require.Equal(t, []string{"7"}, res.FailedIDs())
	m, ok := res.Member("5")
	require.True(t, ok)
	require.Equal(t, MemberCancelled, m.State)
	for i := range 20 {
		if i == 5 || i == 7 {
			continue
		}
		m, ok := res.Member(fmt.Sprint(i))
		require.True(t, ok)
		var v int
		require.NoError(t, m.Decode(&v))
		require.Equal(t, i*i, v)
	}
	require.EqualValues(t, 19, runs.Load(), "the cancelled member never ran")

	g, err := adm.Group(ctx, run.GroupID())
	require.NoError(t, err)
	require.Equal(t, 18, g.Succeeded)
	res, err = run.Wait(ctx, &WaitOptions{Timeout: 10 * time.Second, Policy: AtLeastPolicy(18)})
	require.NoError(t, err)
	require.Equal(t, 18, res.Succeeded)
	_, err = adm.Group(ctx, run.GroupID())
	require.ErrorIs(t, err, ErrGroupNotFound, "a completed wait removed the run")
	_, err = q.OpenGroup("no-run-id")
	require.ErrorIs(t, err, ErrInvalidConfig)

	// Runs of one name spread over the shards, each run in the shard of its id.
	seen := map[int]bool{}
	for range 12 {
		r, err := q.DispatchGroup(ctx, "spread", squares(1), nil)
		require.NoError(t, err)
		home := q.ShardOf(r.GroupID())
		seen[home] = true
		_, err = r.Wait(ctx, &WaitOptions{Timeout: 10 * time.Second, Keep: true})
		require.NoError(t, err)
		n, err := s.rdb.Exists(ctx, q.Shards()[home].keys.group(r.GroupID())).Result()
		require.NoError(t, err)
		require.EqualValues(t, 1, n, "the run's hash is in the shard of its id")
	}
	require.Greater(t, len(seen), 1)
}

// heldTasks returns how many tasks q holds (pending, scheduled, active, dead).
func heldTasks(ctx context.Context, t *testing.T, q AdminTarget) int64 {
	t.Helper()
	st, err := mustAdmin(q).Stats(ctx)
	require.NoError(t, err)
	return st.Pending + st.Scheduled + st.Active + st.Dead
}

// A diamond workflow runs to completion through a ShardedQueue worker (ParentResult reads the parents' results in
// the workflow's shard); a node's Inspect and Cancel route to that shard; OpenWorkflow, Admin.Workflow and
// WorkflowRun.Cancel find it.
func TestShardedWorkflow(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	q, s := newShardedGraph(t, 4)
	log := registerStep(t, s)
	adm := mustAdmin(q)

	// Before any worker: a chain whose first node is cancelled by its task id, and one cancelled whole.
	chain := NewWorkflow("chain-x")
	chain.Add("x", step("x"))
	chain.Add("y", step("y", "x")).After("x")
	crun, err := q.SubmitWorkflow(ctx, chain, nil)
	require.NoError(t, err)
	xid := crun.TaskID("x")
	require.True(t, shardHolds(ctx, t, q, q.ShardOf("chain-x"), xid))
	info, err := adm.Inspect(ctx, xid)
	require.NoError(t, err)
	require.Equal(t, StatePending, info.State)
	st, err := adm.Cancel(ctx, xid)
	require.NoError(t, err)
	require.Equal(t, StatePending, st)

	whole := NewWorkflow("whole")
	whole.Add("p", step("p"))
	whole.Add("q", step("q", "p")).After("p")
	wrun, err := q.SubmitWorkflow(ctx, whole, nil)
	require.NoError(t, err)
	opened, err := q.OpenWorkflow("whole")
	require.NoError(t, err)
	wc, err := opened.Cancel(ctx)
	require.NoError(t, err)
	require.Equal(t, 2, wc.Cancelled)
	_, err = wrun.Wait(ctx, &WorkflowWaitOptions{Timeout: 10 * time.Second})
	require.ErrorIs(t, err, ErrWorkflowCancelled)

	wf := NewWorkflow("diamond.s")
	wf.Add("a", step("a"))
	wf.Add("b", step("b", "a")).After("a")
	wf.Add("c", step("c", "a")).After("a")
	wf.Add("d", step("d", "b", "c")).After("b", "c")
	startWorker(t, q, quietWorker(WorkerConfig{Concurrency: 4}, nil))
	run, err := q.SubmitWorkflow(ctx, wf, nil)
	require.NoError(t, err)
	info2, err := waitWorkflow(t, run)
	require.NoError(t, err)
	require.Equal(t, WorkflowSucceeded, info2.State)
	require.Equal(t, 5, nodeResult(t, info2, "d"), "d = b + c + 1 = 2 + 2 + 1")
	again, err := q.SubmitWorkflow(ctx, wf, nil)
	require.NoError(t, err)
	require.True(t, again.Existed, "a repeated submit finds the workflow in its shard")
	viaAdmin, err := adm.Workflow(ctx, "diamond.s")
	require.NoError(t, err)
	require.Equal(t, WorkflowSucceeded, viaAdmin.State)

	cinfo, err := crun.Wait(ctx, &WorkflowWaitOptions{Timeout: 30 * time.Second})
	require.Error(t, err, "x was cancelled: y never runs")
	x, _ := cinfo.Node("x")
	require.Equal(t, NodeCancelled, x.State)
	log.mu.Lock()
	defer log.mu.Unlock()
	require.Equal(t, map[string]int{"a": 1, "b": 1, "c": 1, "d": 1}, log.runs, "x, y, p and q never ran")
	require.Empty(t, log.early)
}

// A multi-queue worker over a sharded queue settles each member in the shard it was leased from too.
func TestShardedGroupThroughMultiQueue(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	q, s := newShardedGraph(t, 3)
	registerSquare(t, s)
	mq, err := NewMultiQueue([]QueueWeight{{Queue: q, Weight: 1}}, nil)
	require.NoError(t, err)
	run, err := q.DispatchGroup(ctx, "mq", squares(10), nil)
	require.NoError(t, err)
	startWorker(t, mq, quietWorker(WorkerConfig{Concurrency: 4}, nil))
	res, err := run.Wait(ctx, &WaitOptions{Timeout: 30 * time.Second})
	require.NoError(t, err)
	require.Equal(t, 10, res.Succeeded)
}

// A unique lock on a member or node of a sharded queue is refused (it would live away from its key's shard);
// nothing is stored.
func TestShardedGraphRefusesUnique(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	q, s := newShardedGraph(t, 3)
	registerStep(t, s)
	specs := squares(3)
	specs[1].Unique = &Unique{Key: "k"}
	_, err := q.DispatchGroup(ctx, "u", specs, nil)
	require.ErrorIs(t, err, ErrInvalidUnique)
	wf := NewWorkflow("u")
	n := step("a")
	n.Unique = &Unique{Key: "k"}
	wf.Add("a", n)
	_, err = q.SubmitWorkflow(ctx, wf, nil)
	require.ErrorIs(t, err, ErrInvalidUnique)
	_, err = q.SubmitWorkflow(ctx, nil, nil)
	require.ErrorIs(t, err, ErrInvalidConfig)
	require.Zero(t, heldTasks(ctx, t, q))
}

// BenchmarkGraphRunOf measures the lookup routing of a task id (Admin calls only; workers route by the shard of
// their pickup): a plain id, a group member's and a workflow node's.
func BenchmarkGraphRunOf(b *testing.B) {
	for _, id := range []string{"order-42", "transforms@4ZbQ7kT0cWm2xN9aLp3YhR:17", "wf@f68f8835c2a03286f541b7:a"} {
		b.Run(id[:min(len(id), 10)], func(b *testing.B) {
			for b.Loop() {
				_, _ = graphRunOf(id)
			}
		})
	}
}
