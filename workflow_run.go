package taskqueue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// WorkflowRun is a submitted workflow: what [WorkflowRun.Wait], [WorkflowRun.Inspect] and [WorkflowRun.Cancel]
// act on. Get one from [RedisTaskQueue.SubmitWorkflow] or [RedisTaskQueue.OpenWorkflow] (or their
// [ShardedQueue] twins).
type WorkflowRun struct {
	// ID is the workflow's id; RunID the run id derived from it (22 hex digits).
	ID, RunID string
	// Existed is set by SubmitWorkflow when the workflow existed already (a repeated submit): nothing was enqueued.
	Existed bool

	q *RedisTaskQueue
}

// GroupID is the group_id that the nodes' envelopes carry: "<workflow id>@<run id>".
func (r *WorkflowRun) GroupID() string { return r.ID + "@" + r.RunID }

// TaskID returns the task id of a node: "<group id>:<node id>".
func (r *WorkflowRun) TaskID(node string) string { return r.GroupID() + ":" + node }

// WorkflowState is where a workflow stands.
type WorkflowState string

// The states of a workflow: running, then one of three outcomes.
const (
	WorkflowRunning   WorkflowState = "running"   // a node has not completed yet
	WorkflowSucceeded WorkflowState = "succeeded" // every node succeeded
	WorkflowFailed    WorkflowState = "failed"    // every node completed; at least one failed or was skipped
	WorkflowCancelled WorkflowState = "cancelled" // cancelled ([WorkflowRun.Cancel]); every node completed or was cancelled
)

// NodeState is where one node of a workflow stands.
type NodeState string

// The states of a node. Waiting and queued are transient; the others are final.
const (
	NodeWaiting   NodeState = "waiting"   // a parent has not completed
	NodeQueued    NodeState = "queued"    // released: pending, running or retrying
	NodeSucceeded NodeState = "succeeded" // acknowledged (its result, if any, is kept)
	NodeFailed    NodeState = "failed"    // dead-lettered: retries exhausted, ErrSkipRetry, lost too often, parked
	NodeSkipped   NodeState = "skipped"   // never ran: a parent failed or was skipped on a FailStop edge
	NodeCancelled NodeState = "cancelled" // never ran: the workflow was cancelled before it started
)

// WorkflowNodeInfo is one task node of a workflow, as data.
type WorkflowNodeInfo struct {
	// ID is the node id; Group the group node it belongs to ("" for none).
	ID    string `json:"id"`
	Group string `json:"group,omitempty"`
	// Parents are the node's parents (task nodes), Policies the failure policy of each edge ("stop", "continue",
	// "ignore").
	Parents  []string `json:"parents,omitempty"`
	Policies []string `json:"policies,omitempty"`

	// TaskID is the node's task id.
	TaskID string `json:"-"`
	// State is where it stands.
	State NodeState `json:"-"`
	// Error is the reason of a failed node, the parent that skipped a skipped node, the reason of a cancellation.
	Error string `json:"-"`
	// Result is the JSON result a succeeded node's handler set, nil if none.
	Result json.RawMessage `json:"-"`
}

// Decode unmarshals the node's result into v; [ErrNoResult] if it has none.
func (n WorkflowNodeInfo) Decode(v any) error {
	if len(n.Result) == 0 {
		return fmt.Errorf("%w: node %s", ErrNoResult, quote(n.ID))
	}
	return json.Unmarshal(n.Result, v)
}

// WorkflowInfo is a workflow as data: what [WorkflowRun.Inspect] and [WorkflowRun.Wait] return.
type WorkflowInfo struct {
	ID, RunID string
	State     WorkflowState
	// Created and Ended (zero while it runs) on the Redis server's clock.
	Created, Ended time.Time
	// Total nodes, and how many have completed (succeeded, failed, skipped or cancelled).
	Total, Done int
	// Nodes in the order they were added (a group node's members where the group was added).
	Nodes []WorkflowNodeInfo
}

// Node returns the node with id.
func (w *WorkflowInfo) Node(id string) (WorkflowNodeInfo, bool) {
	for i := range w.Nodes {
		if w.Nodes[i].ID == id {
			return w.Nodes[i], true
		}
	}
	return WorkflowNodeInfo{}, false
}

// Count returns how many nodes are in state s.
func (w *WorkflowInfo) Count(s NodeState) int {
	c := 0
	for i := range w.Nodes {
		if w.Nodes[i].State == s {
			c++
		}
	}
	return c
}

// Inspect reads the workflow: its state and every node's state, error and result. [ErrWorkflowNotFound] when
// its keys do not exist.
func (r *WorkflowRun) Inspect(ctx context.Context) (*WorkflowInfo, error) {
	h, err := r.q.rdb.HGetAll(ctx, r.q.keys.group(r.GroupID())).Result()
	if err != nil {
		return nil, fmt.Errorf("taskqueue: inspect workflow %s: %w", quote(r.ID), classify(err))
	}
	if h["wf"] != "1" {
		return nil, fmt.Errorf("%w: %s", ErrWorkflowNotFound, quote(r.ID))
	}
	info := &WorkflowInfo{ID: r.ID, RunID: r.RunID, State: WorkflowRunning}
	if err := json.Unmarshal([]byte(h["graph"]), &info.Nodes); err != nil {
		return nil, fmt.Errorf("taskqueue: inspect workflow %s: graph: %w", quote(r.ID), err)
	}
	info.Total, _ = strconv.Atoi(h["total"])
	info.Done, _ = strconv.Atoi(h["done"])
	info.Created = serverMillis(h["created"])
	info.Ended = serverMillis(h["ended"])
	failed := false
	for i := range info.Nodes {
		n := &info.Nodes[i]
		n.TaskID = r.TaskID(n.ID)
		n.State, n.Error, n.Result = nodeOutcome(h["m:"+n.TaskID], h["e:"+n.TaskID] != "")
		if n.State == NodeSkipped {
			n.Error = strings.TrimPrefix(n.Error, r.GroupID()+":")
		}
		failed = failed || n.State == NodeFailed || n.State == NodeSkipped
	}
	switch {
	case h["state"] == "cancelled":
		info.State = WorkflowCancelled
		if info.Ended.IsZero() {
			info.State = WorkflowRunning // nodes that had started still run
		}
	case info.Ended.IsZero():
	case failed:
		info.State = WorkflowFailed
	default:
		info.State = WorkflowSucceeded
	}
	return info, nil
}

// nodeOutcome decodes a node's "m:" field (lua/workflow.lua).
func nodeOutcome(v string, waiting bool) (NodeState, string, json.RawMessage) {
	switch {
	case v == "" && waiting:
		return NodeWaiting, "", nil
	case v == "":
		return NodeQueued, "", nil
	case v[0] == '1':
		if len(v) > 1 {
			return NodeSucceeded, "", json.RawMessage(v[1:])
		}
		return NodeSucceeded, "", nil
	case v[0] == '2':
		return NodeSkipped, v[1:], nil
	case v[0] == '3':
		return NodeCancelled, v[1:], nil
	}
	return NodeFailed, v[1:], nil
}

func serverMillis(v string) time.Time {
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil || ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

// WorkflowWaitOptions configure [WorkflowRun.Wait]. The zero value waits as long as the context allows.
type WorkflowWaitOptions struct {
	// Timeout bounds the wait on top of the context's deadline; 0 for none.
	Timeout time.Duration
}

// Wait blocks until the workflow has ended (every node completed: succeeded, failed, skipped or cancelled) and
// returns it as data with nil, or with an error wrapping [ErrWorkflowFailed] or [ErrWorkflowCancelled] for those
// outcomes. It wakes within milliseconds of the end (the script that completes the last node pushes a wake-up the
// waiter blocks on, as for groups). The workflow's keys stay until their TTL.
//
// When the context ends or opts.Timeout passes first, Wait returns the workflow so far and an error wrapping
// [ErrWorkflowIncomplete] and the cause ([ErrWorkflowTimeout], context.Canceled or context.DeadlineExceeded).
// A workflow that does not exist (any more) is [ErrWorkflowNotFound].
func (r *WorkflowRun) Wait(ctx context.Context, opts *WorkflowWaitOptions) (*WorkflowInfo, error) {
	var o WorkflowWaitOptions
	if opts != nil {
		o = *opts
	}
	if o.Timeout < 0 {
		return nil, fmt.Errorf("%w: negative wait timeout", ErrInvalidConfig)
	}
	if o.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, o.Timeout, ErrWorkflowTimeout)
		defer cancel()
	}
	q, gid := r.q, r.GroupID()
	waiter, release := q.openWaiter(ctx, gid)
	defer release()
	for {
		total, done, err := q.groupProgress(ctx, gid)
		if errors.Is(err, ErrGroupNotFound) {
			return nil, fmt.Errorf("%w: %s", ErrWorkflowNotFound, quote(r.ID))
		}
		if err != nil {
			return nil, err
		}
		if done >= total {
			return r.ended(ctx)
		}
		if ctx.Err() != nil {
			info, _ := r.Inspect(context.WithoutCancel(ctx))
			return info, fmt.Errorf("%w: %s: %d of %d nodes done: %w", ErrWorkflowIncomplete, quote(r.ID), done, total, context.Cause(ctx))
		}
		wait := groupFallback
		if dl, ok := ctx.Deadline(); ok {
			wait = min(wait, time.Until(dl))
		}
		if err := q.blockOn(ctx, wait, q.keys.groupDone(gid), waiter); err != nil {
			if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
				<-ctx.Done()
			}
			if ctx.Err() == nil {
				return nil, fmt.Errorf("taskqueue: wait for workflow %s: %w", quote(r.ID), err)
			}
		}
	}
}

// ended reads an ended workflow and turns its outcome into Wait's error.
func (r *WorkflowRun) ended(ctx context.Context) (*WorkflowInfo, error) {
	info, err := r.Inspect(context.WithoutCancel(ctx))
	if err != nil {
		return nil, err
	}
	switch info.State {
	case WorkflowFailed:
		return info, fmt.Errorf("%w: %s: %d failed, %d skipped of %d nodes", ErrWorkflowFailed, quote(r.ID), info.Count(NodeFailed), info.Count(NodeSkipped), info.Total)
	case WorkflowCancelled:
		return info, fmt.Errorf("%w: %s", ErrWorkflowCancelled, quote(r.ID))
	}
	return info, nil
}

// WorkflowCancel is what [WorkflowRun.Cancel] did.
type WorkflowCancel struct {
	// Cancelled counts the nodes cancelled before they started (waiting for parents, or released and not picked
	// up); they end in [NodeCancelled].
	Cancelled int
	// Started are the node ids that had been picked up (running, retrying): they are cancelled as single tasks
	// are (a running handler's context is cancelled with [ErrCancelled]) and end in [NodeCancelled], unless
	// they finished first. See cancelStartedNodes.
	Started []string
}

// Cancel cancels the workflow: every node that has not started ends in [NodeCancelled] without running, in one
// script call; nodes already picked up are then cancelled as single tasks are ([Admin.Cancel]), and the workflow
// ends in [WorkflowCancelled] once every node is final. Cancelling an ended workflow does nothing (it keeps its
// outcome). [ErrWorkflowNotFound] when its keys do not exist.
func (r *WorkflowRun) Cancel(ctx context.Context) (*WorkflowCancel, error) {
	info, err := r.Inspect(ctx)
	if err != nil {
		return nil, err
	}
	if !info.Ended.IsZero() {
		return &WorkflowCancel{}, nil
	}
	args := make([]any, 1, 1+len(info.Nodes))
	args[0] = "cancelled"
	for i := range info.Nodes {
		args = append(args, info.Nodes[i].TaskID)
	}
	res, err := workflowCancelScript.Run(ctx, r.q.rdb, r.q.runKeys(r.GroupID()), args...).Slice()
	if err != nil {
		return nil, fmt.Errorf("taskqueue: cancel workflow %s: %w", quote(r.ID), classify(err))
	}
	n, _ := res[0].(int64)
	if n < 0 {
		return nil, fmt.Errorf("%w: %s", ErrWorkflowNotFound, quote(r.ID))
	}
	out := &WorkflowCancel{Cancelled: int(n)}
	var started []string
	for _, v := range res[1:] {
		id, _ := v.(string)
		started = append(started, id)
		out.Started = append(out.Started, strings.TrimPrefix(id, r.GroupID()+":"))
	}
	if err := r.q.cancelStartedNodes(ctx, started); err != nil {
		return out, err
	}
	return out, nil
}

// cancelStartedNodes cancels the nodes a workflow's cancel found started (picked up, or waiting for a retry) as
// single tasks are cancelled (cancel.go): a running node's handler sees its context cancelled with
// [ErrCancelled], and it is never retried; the cancel completes its node through group_done, and the workflow
// ends. A node that finished meanwhile keeps its outcome.
func (q *RedisTaskQueue) cancelStartedNodes(ctx context.Context, taskIDs []string) error {
	var errs []error
	for _, id := range taskIDs {
		if _, err := q.control(ctx, "cancel", id); err != nil && !errors.Is(err, ErrAlreadyFinished) && !errors.Is(err, ErrNotFound) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Workflow returns the workflow id as data, as [WorkflowRun.Inspect] does: for the CLI and dashboards, which hold
// an [Admin]. On a sharded queue it looks in the shard of the workflow id, where [ShardedQueue.SubmitWorkflow]
// puts it. [ErrWorkflowNotFound] when it does not exist.
func (a *Admin) Workflow(ctx context.Context, id string) (*WorkflowInfo, error) {
	run, err := a.shard(id).OpenWorkflow(id)
	if err != nil {
		return nil, err
	}
	return run.Inspect(ctx)
}
