package taskqueue

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

type stepArgs struct {
	Node    string   `json:"node"`
	Parents []string `json:"parents,omitempty"`
	Fail    bool     `json:"fail,omitempty"`
}

// stepLog records, per node, how often it ran and what it saw of its parents.
type stepLog struct {
	mu    sync.Mutex
	runs  map[string]int
	seen  map[string]map[string]error // node -> parent -> ParentResult's error
	early []string                    // nodes that started before a parent had completed
}

// registerStep registers wf.step: it sums its parents' results (ParentResult[int]) plus one, or fails without
// retry when asked.
func registerStep(t testing.TB, s *setup) *stepLog {
	t.Helper()
	log := &stepLog{runs: map[string]int{}, seen: map[string]map[string]error{}}
	require.NoError(t, RegisterResult(s.ref, "wf", "step", func(ctx context.Context, a stepArgs) (int, error) {
		sum := 1
		errs := map[string]error{}
		for _, p := range a.Parents {
			v, err := ParentResult[int](ctx, p)
			errs[p] = err
			if err == nil {
				sum += v
			} else if errors.Is(err, ErrNoResult) && !errors.Is(err, ErrParentFailed) {
				// a parent that has not completed reads as ErrNoResult "queued"/"waiting": too early
				log.mu.Lock()
				log.early = append(log.early, a.Node)
				log.mu.Unlock()
			}
		}
		log.mu.Lock()
		log.runs[a.Node]++
		log.seen[a.Node] = errs
		log.mu.Unlock()
		if a.Fail {
			return 0, fmt.Errorf("node %s refused: %w", a.Node, ErrSkipRetry)
		}
		return sum, nil
	}))
	return log
}

func step(node string, parents ...string) *TaskSpec {
	return &TaskSpec{Executable: Ref("wf", "step", stepArgs{Node: node, Parents: parents})}
}

func failingStep(node string, parents ...string) *TaskSpec {
	return &TaskSpec{Executable: Ref("wf", "step", stepArgs{Node: node, Parents: parents, Fail: true})}
}

func waitWorkflow(t *testing.T, run *WorkflowRun) (*WorkflowInfo, error) {
	t.Helper()
	return run.Wait(context.Background(), &WorkflowWaitOptions{Timeout: 30 * time.Second})
}

func nodeResult(t *testing.T, info *WorkflowInfo, id string) int {
	t.Helper()
	n, ok := info.Node(id)
	require.True(t, ok, id)
	var v int
	require.NoError(t, n.Decode(&v), id)
	return v
}

func TestWorkflowChain(t *testing.T) {
	t.Parallel()
	backends(t, nil, func(t *testing.T, s *setup) {
		ctx := context.Background()
		log := registerStep(t, s)
		wf := NewWorkflow("chain")
		wf.Add("a", step("a"))
		wf.Add("b", step("b", "a"))
		wf.Add("c", step("c", "b"))
		wf.Chain("a", "b", "c")
		run, err := s.q.SubmitWorkflow(ctx, wf, nil)
		require.NoError(t, err)
		require.False(t, run.Existed)
		info, err := run.Inspect(ctx)
		require.NoError(t, err)
		require.Equal(t, WorkflowRunning, info.State)
		require.Equal(t, []NodeState{NodeQueued, NodeWaiting, NodeWaiting}, []NodeState{info.Nodes[0].State, info.Nodes[1].State, info.Nodes[2].State})
		require.EqualValues(t, 1, s.counts(t).Pending, "only the root is enqueued")

		startWorker(t, s.q, quietWorker(WorkerConfig{Concurrency: 4}, nil))
		info, err = waitWorkflow(t, run)
		require.NoError(t, err)
		require.Equal(t, WorkflowSucceeded, info.State)
		require.Equal(t, 3, info.Done)
		require.False(t, info.Ended.IsZero())
		require.Equal(t, 1, nodeResult(t, info, "a"))
		require.Equal(t, 2, nodeResult(t, info, "b"))
		require.Equal(t, 3, nodeResult(t, info, "c"))
		require.Equal(t, map[string]int{"a": 1, "b": 1, "c": 1}, log.runs)
		require.Empty(t, log.early)
		require.Equal(t, []string{"b"}, info.Nodes[2].Parents)

		ttl, err := s.rdb.PTTL(ctx, s.q.keys.group(run.GroupID())).Result()
		require.NoError(t, err)
		require.Greater(t, ttl, time.Hour, "the hash expires after the TTL")
		ttl, err = s.rdb.PTTL(ctx, s.q.keys.groupDone(run.GroupID())).Result()
		require.NoError(t, err)
		require.True(t, ttl == -2 || ttl > time.Hour, "the done list was popped by Wait, or expires too: %v", ttl)
	})
}

func TestWorkflowDiamond(t *testing.T) {
	t.Parallel()
	backends(t, nil, func(t *testing.T, s *setup) {
		ctx := context.Background()
		log := registerStep(t, s)
		wf := NewWorkflow("diamond.1")
		wf.Add("a", step("a"))
		wf.Add("b", step("b", "a")).After("a")
		wf.Add("c", step("c", "a")).After("a")
		wf.Add("d", step("d", "b", "c")).After("b", "c")
		startWorker(t, s.q, quietWorker(WorkerConfig{Concurrency: 4}, nil))
		run, err := s.q.SubmitWorkflow(ctx, wf, nil)
		require.NoError(t, err)
		info, err := waitWorkflow(t, run)
		require.NoError(t, err)
		require.Equal(t, WorkflowSucceeded, info.State)
		require.Equal(t, 5, nodeResult(t, info, "d"), "d = b + c + 1 = 2 + 2 + 1")
		require.Equal(t, map[string]int{"a": 1, "b": 1, "c": 1, "d": 1}, log.runs)
		require.Empty(t, log.early)
		require.Zero(t, s.counts(t).Pending)
	})
}

func TestWorkflowGroupNode(t *testing.T) {
	t.Parallel()
	backends(t, nil, func(t *testing.T, s *setup) {
		ctx := context.Background()
		registerStep(t, s)
		wf := NewWorkflow("etl")
		wf.Add("extract", step("extract"))
		wf.AddGroup("transforms", step("t0", "extract"), step("t1", "extract"), &TaskSpec{TaskID: "x", Executable: Ref("wf", "step", stepArgs{Node: "tx", Parents: []string{"extract"}})}).After("extract")
		wf.Add("load", step("load", "transforms.0", "transforms.1", "transforms.x")).After("transforms")
		startWorker(t, s.q, quietWorker(WorkerConfig{Concurrency: 4}, nil))
		run, err := s.q.SubmitWorkflow(ctx, wf, nil)
		require.NoError(t, err)
		info, err := waitWorkflow(t, run)
		require.NoError(t, err)
		require.Len(t, info.Nodes, 5)
		require.Equal(t, "transforms", info.Nodes[3].Group)
		require.Equal(t, []string{"transforms.0", "transforms.1", "transforms.x"}, info.Nodes[4].Parents)
		require.Equal(t, 7, nodeResult(t, info, "load"), "3 transforms of 2, plus 1")
	})
}

func TestWorkflowValidate(t *testing.T) {
	t.Parallel()
	spec := func() *TaskSpec { return &TaskSpec{Executable: Ref("wf", "step", stepArgs{})} }
	cases := []struct {
		name string
		wf   func() *Workflow
		kind error
		node string
		edge [2]string
	}{
		{"cycle", func() *Workflow {
			w := NewWorkflow("w")
			w.Add("a", spec()).After("c")
			w.Add("b", spec()).After("a")
			w.Add("c", spec()).After("b")
			return w
		}, ErrWorkflowCycle, "a", [2]string{"c", "a"}},
		{"self", func() *Workflow {
			w := NewWorkflow("w")
			w.Add("a", spec()).After("a")
			return w
		}, ErrWorkflowCycle, "a", [2]string{"a", "a"}},
		{"dangling", func() *Workflow {
			w := NewWorkflow("w")
			w.Add("a", spec()).After("nope")
			return w
		}, ErrDanglingEdge, "a", [2]string{"nope", "a"}},
		{"chain through unknown", func() *Workflow {
			w := NewWorkflow("w")
			w.Add("a", spec())
			w.Chain("a", "zz")
			return w
		}, ErrDanglingEdge, "zz", [2]string{}},
		{"duplicate", func() *Workflow {
			w := NewWorkflow("w")
			w.Add("a", spec())
			w.AddGroup("a", spec())
			return w
		}, ErrDuplicateNode, "a", [2]string{}},
		{"empty", func() *Workflow { return NewWorkflow("w") }, ErrWorkflowTooLarge, "", [2]string{}},
		{"too large", func() *Workflow {
			w := NewWorkflow("w")
			for i := range MaxWorkflowNodes + 1 {
				w.Add(fmt.Sprint(i), spec())
			}
			return w
		}, ErrWorkflowTooLarge, "", [2]string{}},
		{"bad node id", func() *Workflow {
			w := NewWorkflow("w")
			w.Add("a b", spec())
			return w
		}, ErrInvalidNodeID, "a b", [2]string{}},
		{"bad workflow id", func() *Workflow { return NewWorkflow("{w}") }, ErrInvalidNodeID, "", [2]string{}},
		{"delayed node", func() *Workflow {
			w := NewWorkflow("w")
			w.Add("a", &TaskSpec{Executable: Ref("wf", "step", stepArgs{}), ProcessIn: time.Second})
			return w
		}, ErrInvalidConfig, "a", [2]string{}},
		{"nil spec", func() *Workflow {
			w := NewWorkflow("w")
			w.Add("a", nil)
			return w
		}, ErrInvalidConfig, "a", [2]string{}},
		{"member after its group", func() *Workflow {
			w := NewWorkflow("w")
			w.AddGroup("g", spec(), spec()).After("g")
			return w
		}, ErrWorkflowCycle, "g.0", [2]string{"g", "g.0"}},
	}
	for _, c := range cases {
		err := c.wf().Validate()
		require.ErrorIs(t, err, ErrInvalidWorkflow, c.name)
		require.ErrorIs(t, err, c.kind, c.name)
		var we *WorkflowError
		require.ErrorAs(t, err, &we, c.name)
		if c.node != "" {
			require.Equal(t, c.node, we.Node, c.name)
		}
		require.Equal(t, c.edge, we.Edge, c.name)
	}
	w := NewWorkflow("w")
	w.Add("a", spec())
	w.Add("b", spec()).After("a", "a") // a repeated parent is one edge
	require.NoError(t, w.Validate())
}

func TestWorkflowSubmittedTwiceRunsOnce(t *testing.T) {
	t.Parallel()
	backends(t, nil, func(t *testing.T, s *setup) {
		ctx := context.Background()
		log := registerStep(t, s)
		build := func(extra bool) *Workflow {
			wf := NewWorkflow("once")
			wf.Add("a", step("a"))
			wf.Add("b", step("b", "a")).After("a")
			if extra {
				wf.Add("c", step("c"))
			}
			return wf
		}
		run1, err := s.q.SubmitWorkflow(ctx, build(false), nil)
		require.NoError(t, err)
		run2, err := s.q.SubmitWorkflow(ctx, build(false), nil)
		require.NoError(t, err)
		require.True(t, run2.Existed)
		require.Equal(t, run1.GroupID(), run2.GroupID())
		require.EqualValues(t, 1, s.counts(t).Pending)
		_, err = s.q.SubmitWorkflow(ctx, build(true), nil)
		require.ErrorIs(t, err, ErrWorkflowConflict)
		require.NotErrorIs(t, err, ErrInvalidWorkflow)

		startWorker(t, s.q, quietWorker(WorkerConfig{Concurrency: 2}, nil))
		_, err = waitWorkflow(t, run1)
		require.NoError(t, err)
		run3, err := s.q.SubmitWorkflow(ctx, build(false), nil)
		require.NoError(t, err)
		require.True(t, run3.Existed, "an ended workflow is not run again while its keys live")
		require.Equal(t, map[string]int{"a": 1, "b": 1}, log.runs)
	})
}

func TestWorkflowFailurePolicies(t *testing.T) {
	t.Parallel()
	backends(t, nil, func(t *testing.T, s *setup) {
		ctx := context.Background()
		log := registerStep(t, s)
		wf := NewWorkflow("policies")
		wf.Add("a", failingStep("a"))
		wf.Add("ok", step("ok"))
		wf.Add("stop", step("stop", "a")).After("a", "ok")
		wf.Add("after-stop", step("after-stop", "stop")).After("stop")
		wf.Add("continue", step("continue", "a", "ok")).After("ok").AfterWith(FailContinue, "a")
		wf.Add("ignore", step("ignore", "a")).After("a").OnParentFailure(FailIgnore)
		wf.Add("after-skip", step("after-skip", "stop")).AfterWith(FailContinue, "stop")
		startWorker(t, s.q, quietWorker(WorkerConfig{Concurrency: 4}, nil))
		run, err := s.q.SubmitWorkflow(ctx, wf, nil)
		require.NoError(t, err)
		info, err := waitWorkflow(t, run)
		require.ErrorIs(t, err, ErrWorkflowFailed)
		require.Equal(t, WorkflowFailed, info.State)
		state := map[string]NodeState{}
		for _, n := range info.Nodes {
			state[n.ID] = n.State
		}
		require.Equal(t, map[string]NodeState{"a": NodeFailed, "ok": NodeSucceeded, "stop": NodeSkipped,
			"after-stop": NodeSkipped, "continue": NodeSucceeded, "ignore": NodeSucceeded, "after-skip": NodeSucceeded}, state)
		a, _ := info.Node("a")
		require.Contains(t, a.Error, "node a refused")
		stop, _ := info.Node("stop")
		require.Equal(t, "a", stop.Error, "a skipped node names the parent that skipped it")
		afterStop, _ := info.Node("after-stop")
		require.Equal(t, "stop", afterStop.Error)

		var pe *ParentError
		require.ErrorAs(t, log.seen["continue"]["a"], &pe)
		require.ErrorIs(t, pe, ErrParentFailed)
		require.Equal(t, NodeFailed, pe.State)
		require.Contains(t, pe.Reason, "node a refused")
		require.NoError(t, log.seen["continue"]["ok"])
		require.ErrorIs(t, log.seen["ignore"]["a"], ErrNoResult)
		require.NotErrorIs(t, log.seen["ignore"]["a"], ErrParentFailed)
		require.ErrorAs(t, log.seen["after-skip"]["stop"], &pe)
		require.Equal(t, NodeSkipped, pe.State)
		require.Zero(t, log.runs["stop"]+log.runs["after-stop"], "skipped nodes never run")
		require.Zero(t, s.counts(t).Pending)
	})
}

// A node's completion counts once: a resent ack, and a dead-lettered node requeued from the dead letters that
// then succeeds, change nothing (its first outcome stays; its children stay skipped).
func TestWorkflowDuplicateCompletionCountsOnce(t *testing.T) {
	t.Parallel()
	backends(t, nil, func(t *testing.T, s *setup) {
		ctx := context.Background()
		registerStep(t, s)
		wf := NewWorkflow("dup")
		wf.Add("a", step("a"))
		wf.Add("b", step("b")).After("a")
		run, err := s.q.SubmitWorkflow(ctx, wf, nil)
		require.NoError(t, err)
		ds := s.lease(t, 1)
		ds[0].result = []byte("41")
		require.NoError(t, s.q.Ack(ctx, ds[0]))
		require.NoError(t, s.q.Ack(ctx, ds[0]))
		info, err := run.Inspect(ctx)
		require.NoError(t, err)
		require.Equal(t, 1, info.Done)
		require.EqualValues(t, 1, s.counts(t).Pending, "b released once")

		ds = s.lease(t, 1)
		require.Equal(t, run.TaskID("b"), ds[0].Spec.TaskID)
		require.NoError(t, s.q.DeadLetter(ctx, ds[0], errors.New("boom")))
		info, err = run.Inspect(ctx)
		require.NoError(t, err)
		require.Equal(t, WorkflowFailed, info.State)
		n, err := s.adm.RequeueDead(ctx, run.TaskID("b"))
		require.NoError(t, err)
		require.Equal(t, 1, n)
		ds = s.lease(t, 1)
		require.NoError(t, s.q.Ack(ctx, ds[0]))
		info, err = run.Inspect(ctx)
		require.NoError(t, err)
		b, _ := info.Node("b")
		require.Equal(t, NodeFailed, b.State, "the first outcome stays")
		require.Equal(t, 2, info.Done)
	})
}

func TestWorkflowCancel(t *testing.T) {
	t.Parallel()
	backends(t, nil, func(t *testing.T, s *setup) {
		ctx := context.Background()
		started, cause := make(chan struct{}), make(chan error, 1)
		require.NoError(t, Register(s.ref, "wf", "block", func(ctx context.Context, _ struct{}) error {
			close(started)
			<-ctx.Done() // ends when the workflow's cancel cancels this running node
			cause <- context.Cause(ctx)
			return ctx.Err()
		}))
		registerStep(t, s)
		wf := NewWorkflow("cancel")
		wf.Add("a", &TaskSpec{Executable: Ref("wf", "block", struct{}{})})
		wf.Add("b", step("b")).After("a")
		wf.Add("c", step("c")).After("b")
		wf.Add("r", step("r")) // a root that stays pending: the worker runs one task at a time
		run, err := s.q.SubmitWorkflow(ctx, wf, nil)
		require.NoError(t, err)
		startWorker(t, s.q, quietWorker(WorkerConfig{Concurrency: 1, BatchSize: 1}, nil))
		<-started
		res, err := run.Cancel(ctx)
		require.NoError(t, err)
		require.Equal(t, 3, res.Cancelled)
		require.Equal(t, []string{"a"}, res.Started)
		select {
		case err := <-cause:
			require.ErrorIs(t, err, ErrCancelled, "the running node's context is cancelled with ErrCancelled")
		case <-time.After(20 * time.Second):
			t.Fatal("the running node's handler was not cancelled")
		}
		info, err := waitWorkflow(t, run)
		require.ErrorIs(t, err, ErrWorkflowCancelled)
		require.Equal(t, WorkflowCancelled, info.State)
		require.Zero(t, info.Count(NodeSucceeded))
		require.Equal(t, 4, info.Count(NodeCancelled), "the running node ends cancelled with the others")
		require.Zero(t, s.counts(t).Pending)
		_, err = s.q.OpenWorkflow("nope")
		require.NoError(t, err)
		nope, _ := s.q.OpenWorkflow("nope")
		_, err = nope.Cancel(ctx)
		require.ErrorIs(t, err, ErrWorkflowNotFound)
		_, err = nope.Wait(ctx, nil)
		require.ErrorIs(t, err, ErrWorkflowNotFound)
	})
}

func TestWorkflowWaitTimeout(t *testing.T) {
	t.Parallel()
	s := newMini(t, nil)
	ctx := context.Background()
	wf := NewWorkflow("slow")
	wf.Add("a", step("a"))
	run, err := s.q.SubmitWorkflow(ctx, wf, nil)
	require.NoError(t, err)
	info, err := run.Wait(ctx, &WorkflowWaitOptions{Timeout: 50 * time.Millisecond})
	require.ErrorIs(t, err, ErrWorkflowIncomplete)
	require.ErrorIs(t, err, ErrWorkflowTimeout)
	require.Equal(t, WorkflowRunning, info.State)
}

func TestParentResultOutsideWorkflow(t *testing.T) {
	t.Parallel()
	_, err := ParentResult[int](context.Background(), "a")
	require.ErrorIs(t, err, ErrNotWorkflowNode)
}

// A node whose worker keeps crashing is dead-lettered by the reaper (MaxDeliveries), in the script that completes
// its node: its stop dependants are skipped and its continue dependant is released, in that same call.
func TestWorkflowReaperDeadLettersCrashLoopingNode(t *testing.T) {
	t.Parallel()
	backends(t, &RedisConfig{Lease: 200 * time.Millisecond, MaxDeliveries: 1}, func(t *testing.T, s *setup) {
		ctx := context.Background()
		registerStep(t, s)
		wf := NewWorkflow("crash")
		wf.Add("a", step("a"))
		wf.Add("b", step("b")).After("a")
		wf.Add("c", step("c")).AfterWith(FailContinue, "a")
		run, err := s.q.SubmitWorkflow(ctx, wf, nil)
		require.NoError(t, err)
		s.lease(t, 1)
		s.advance(300 * time.Millisecond)
		rr, err := s.q.Reap(ctx)
		require.NoError(t, err)
		require.Equal(t, 1, rr.Dead)
		info, err := run.Inspect(ctx)
		require.NoError(t, err)
		a, _ := info.Node("a")
		require.Equal(t, NodeFailed, a.State)
		require.Contains(t, a.Error, ErrMaxDeliveries.Error())
		b, _ := info.Node("b")
		require.Equal(t, NodeSkipped, b.State)
		c, _ := info.Node("c")
		require.Equal(t, NodeQueued, c.State)
		ds := s.lease(t, 1)
		require.Equal(t, run.TaskID("c"), ds[0].Spec.TaskID)
	})
}
