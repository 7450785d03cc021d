package taskqueue

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestCancelPriorityTasks: a task of another priority level waits in its level's list, a delayed or dead one has
// its level in levels; cancel and delete find them there and leave no level entry behind.
func TestCancelPriorityTasks(t *testing.T) {
	t.Parallel()
	backends(t, nil, func(t *testing.T, s *setup) {
		ctx := context.Background()
		require.NoError(t, s.q.EnqueueBatch(ctx, []*TaskSpec{
			{TaskID: "hi", Executable: Ref("test", "noop", nil), Priority: PriorityHigh},
			{TaskID: "lo", Executable: Ref("test", "noop", nil), Priority: PriorityLow},
			{TaskID: "later", Executable: Ref("test", "noop", nil), Priority: PriorityHigh, ProcessIn: time.Hour},
			NewTaskSpec("plain", Ref("test", "noop", nil)),
		}))
		for id, want := range map[string]State{"hi": StatePending, "lo": StatePending, "later": StateScheduled} {
			st, err := s.adm.Cancel(ctx, id)
			require.NoError(t, err, id)
			require.Equal(t, want, st, id)
		}
		require.Equal(t, Counts{Pending: 1}, s.counts(t))
		ds := s.lease(t, 1)
		require.Equal(t, "plain", ds[0].Spec.TaskID)
		lv, err := s.rdb.HKeys(ctx, s.q.keys.key(keyLevels)).Result()
		require.NoError(t, err)
		require.Equal(t, []string{"*"}, lv, "no level entry of a cancelled task is left")
	})
}

// TestCancelWorkflowNodeNotStarted: cancelling one waiting node of a workflow completes it as cancelled through
// the workflow's own keys, and the workflow goes on without it (its dependants on a stop edge are skipped).
func TestCancelWorkflowNodeNotStarted(t *testing.T) {
	t.Parallel()
	backends(t, nil, func(t *testing.T, s *setup) {
		ctx := context.Background()
		registerStep(t, s)
		wf := NewWorkflow("one")
		wf.Add("a", step("a"))
		wf.Add("b", step("b")).After("a")
		wf.Add("r", step("r"))
		run, err := s.q.SubmitWorkflow(ctx, wf, nil)
		require.NoError(t, err)
		info, err := run.Inspect(ctx)
		require.NoError(t, err)
		var aID string
		for _, n := range info.Nodes {
			if n.ID == "a" {
				aID = n.TaskID
			}
		}
		require.NotEmpty(t, aID)
		st, err := s.adm.Cancel(ctx, aID)
		require.NoError(t, err)
		require.Equal(t, StatePending, st)
		startWorker(t, s.q, quietWorker(WorkerConfig{Concurrency: 2}, nil))
		info, _ = waitWorkflow(t, run)
		states := map[string]NodeState{}
		for _, n := range info.Nodes {
			states[n.ID] = n.State
		}
		require.Equal(t, map[string]NodeState{"a": NodeCancelled, "b": NodeSkipped, "r": NodeSucceeded}, states)
	})
}

// TestCancelFreesUniqueLock: a cancelled or deleted task no longer holds its unique key, waiting or running (the
// lock is a claim checked against its task: unique.lua), so the next task of the key is stored.
func TestCancelFreesUniqueLock(t *testing.T) {
	t.Parallel()
	uniqueBackends(t, func(t *testing.T, s *setup) {
		ctx := context.Background()
		a := uniqueSpec("k", Unique{})
		require.NoError(t, s.q.Enqueue(ctx, a))
		require.Equal(t, a.TaskID, enqueueHeld(t, s, "k", Unique{}), "held while waiting")
		_, err := s.adm.Cancel(ctx, a.TaskID)
		require.NoError(t, err)
		require.Empty(t, enqueueHeld(t, s, "k", Unique{}), "free once its waiting task is cancelled")

		d := pickOne(t, s)
		require.Equal(t, d.Spec.TaskID, enqueueHeld(t, s, "k", Unique{}), "held while running")
		st, err := s.adm.Cancel(ctx, d.Spec.TaskID)
		require.NoError(t, err)
		require.Equal(t, StateActive, st)
		require.Empty(t, enqueueHeld(t, s, "k", Unique{}), "free once its running task is cancelled")

		c := pickOne(t, s)
		require.NoError(t, s.q.DeadLetter(ctx, c, errors.New("fatal")))
		_, err = s.adm.Delete(ctx, c.Spec.TaskID)
		require.NoError(t, err)
		require.Empty(t, enqueueHeld(t, s, "k", Unique{}), "free once deleted")
	})
}
