package taskqueue

import (
	"context"
	"errors"
)

// Groups and workflows on a ShardedQueue. A group run or a workflow advances inside the outcome scripts of one
// slot (its barrier or graph is a hash beside its tasks), so each lives entirely in one shard:
//   - a group run in the shard of its group id, ShardOf("<name>@<run id>"), the run id being new for each dispatch;
//   - a workflow in the shard of its id, ShardOf("<workflow id>").
//
// Every member's or node's task id, "<name>@<run id>:<member id>", lives in that shard too, not in the one its own
// hash would pick. Task ids accepted by Enqueue may hold '@' and ':' (validateTaskID), so a plain task may have an
// id of that shape; ShardOf is therefore unchanged (a plain task keeps its shard) and the routing is:
//   - a delivery's outcome (ack, retry, dead letter, release, lease renewal, snooze, progress, ParentResult) goes
//     to the shard the pickup leased it from (Delivery.shard), whatever its id;
//   - an operator's lookup by task id (Admin.Inspect, Cancel, Delete, TaskProgress, Result, TaskLock,
//     RequeueDead, DeleteDead, ShardedQueue.Result) of an id of that exact shape (graphRunOf) asks the run's
//     shard first, then, when the task is not there, the shard its hash picks; any other id goes to its hash's
//     shard alone, as before.

// graphRunOf returns what places the run of a group member's or workflow node's task id: the group id
// "<name>@<run id>" of a group member (a generated run id of idLen letters and digits), the workflow id of a
// workflow node (a run id equal to workflowRunID of the workflow id). ok is false for any other id.
func graphRunOf(taskID string) (key string, ok bool) {
	at := -1
	for i := 0; i < len(taskID); i++ {
		if taskID[i] == '@' {
			at = i
			break
		}
	}
	if at < 1 || len(taskID) < at+idLen+3 || taskID[at+idLen+1] != ':' {
		return "", false
	}
	name, run, member := taskID[:at], taskID[at+1:at+idLen+1], taskID[at+idLen+2:]
	if !groupNamePattern.MatchString(name) || !groupNamePattern.MatchString(member) {
		return "", false
	}
	for i := 0; i < len(run); i++ {
		if c := run[i]; (c < '0' || c > '9') && (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') {
			return "", false
		}
	}
	if run == workflowRunID(name) {
		return name, true
	}
	return name + "@" + run, true
}

// homeOf returns the shard of the run of a group member's or workflow node's task id (graphRunOf); ok is false
// for any other id.
func (s *ShardedQueue) homeOf(taskID string) (int, bool) {
	key, ok := graphRunOf(taskID)
	if !ok {
		return 0, false
	}
	return s.ShardOf(key), true
}

// shardIndex returns the shard a delivery was leased from. A delivery that no pickup of this queue made (it
// carries no shard) goes to its run's shard when its id has a member's shape, else to its hash's.
func (s *ShardedQueue) shardIndex(d *Delivery) int { return s.leasedFrom(d, d.Spec.TaskID) }

// leasedFrom is shardIndex for a delivery whose task id is taskID (its Spec may not be decoded yet).
func (s *ShardedQueue) leasedFrom(d *Delivery, taskID string) int {
	if d.shard > 0 && d.shard <= len(s.shards) {
		return d.shard - 1
	}
	if k, ok := s.homeOf(taskID); ok {
		return k
	}
	return s.ShardOf(taskID)
}

// markShard records in each delivery of a pickup the shard k it was leased from.
func markShard(l leased, k int) {
	for _, d := range l.ds {
		d.shard = k + 1
	}
}

// lookupShards returns the shards that may hold taskID, in the order to ask them: its run's shard first for an
// id of a member's shape, then its hash's (only when they differ).
func (s *ShardedQueue) lookupShards(taskID string) []int {
	k := s.ShardOf(taskID)
	if h, ok := s.homeOf(taskID); ok && h != k {
		return []int{h, k}
	}
	return []int{k}
}

// errShardedUnique refuses a unique lock on a group member or workflow node of a sharded queue: its lock would
// live in its run's shard, where the other tasks of its key (in their key's shard, routeUnique) never meet it.
func errShardedUnique() error {
	return &UniqueError{Field: "Key", Problem: "a group member or workflow node of a sharded queue cannot hold a unique lock"}
}

// DispatchGroup is [RedisTaskQueue.DispatchGroup] on the shard of the new run's group id ("<name>@<run id>"):
// the run's barrier and every member live in that shard, so the members' outcomes complete the run in one script
// as on a single queue, and the runs of one name spread over the shards. A member with a [Unique] lock is refused
// when there are several shards.
func (s *ShardedQueue) DispatchGroup(ctx context.Context, name string, specs []*TaskSpec, opts *GroupOptions) (*GroupRun, error) {
	if len(s.shards) > 1 {
		for i, spec := range specs {
			if spec != nil && spec.Unique != nil {
				return nil, &EnqueueError{Index: i, TaskID: spec.TaskID, Err: errShardedUnique()}
			}
		}
	}
	runID := newID()
	return s.shards[s.ShardOf(name+"@"+runID)].dispatchGroup(ctx, name, runID, specs, opts)
}

// OpenGroup is [RedisTaskQueue.OpenGroup] on the shard of the group id, where [ShardedQueue.DispatchGroup] put
// the run.
func (s *ShardedQueue) OpenGroup(groupID string) (*GroupRun, error) {
	return s.shards[s.ShardOf(groupID)].OpenGroup(groupID)
}

// SubmitWorkflow is [RedisTaskQueue.SubmitWorkflow] on the shard of the workflow's id: the workflow's graph and
// every node live in that shard, so a node's ack readies its children in one script as on a single queue, and a
// repeated submit finds the same shard. A node with a [Unique] lock is refused when there are several shards.
func (s *ShardedQueue) SubmitWorkflow(ctx context.Context, wf *Workflow, opts *WorkflowOptions) (*WorkflowRun, error) {
	if wf == nil {
		return s.shards[0].SubmitWorkflow(ctx, nil, opts)
	}
	if len(s.shards) > 1 {
		for _, n := range wf.nodes {
			if n.spec != nil && n.spec.Unique != nil {
				return nil, &WorkflowError{Workflow: wf.id, Node: n.id, Err: errShardedUnique()}
			}
		}
	}
	return s.shards[s.ShardOf(wf.id)].SubmitWorkflow(ctx, wf, opts)
}

// OpenWorkflow is [RedisTaskQueue.OpenWorkflow] on the shard of the workflow id, where
// [ShardedQueue.SubmitWorkflow] put it.
func (s *ShardedQueue) OpenWorkflow(id string) (*WorkflowRun, error) {
	return s.shards[s.ShardOf(id)].OpenWorkflow(id)
}

// lookupShards returns the shards that may hold taskID, in the order to ask them (ShardedQueue.lookupShards).
func (a *Admin) lookupShards(taskID string) []int {
	if a.sharded == nil {
		return []int{a.shardIndex(taskID)}
	}
	return a.sharded.lookupShards(taskID)
}

// shardIndex returns the shard that ShardOf picks for taskID (0 for a single shard).
func (a *Admin) shardIndex(taskID string) int {
	if a.shardOf == nil {
		return 0
	}
	return a.shardOf(taskID)
}

// lookupTask runs fn on the shards that may hold taskID (lookupShards), in turn, until one finds it (missing is
// false), and returns that answer or the last one.
func lookupTask[T any](shards []*RedisTaskQueue, ks []int, fn func(*RedisTaskQueue) (T, error), missing func(T, error) bool) (T, error) {
	var v T
	var err error
	for _, k := range ks {
		if v, err = fn(shards[k]); !missing(v, err) {
			return v, err
		}
	}
	return v, err
}

// notFound reports an error wrapping [ErrNotFound].
func notFound[T any](_ T, err error) bool { return errors.Is(err, ErrNotFound) }

// noResult reports an error wrapping [ErrNoResult].
func noResult[T any](_ T, err error) bool { return errors.Is(err, ErrNoResult) }
