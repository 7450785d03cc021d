package taskqueue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/redis/go-redis/v9"
)

// nodeRef is the task a worker runs, kept in its run's result slot so that [ParentResult] can find its workflow.
type nodeRef struct {
	q    TaskQueue
	spec *TaskSpec
	d    *Delivery // for a ShardedQueue: the shard it came from
}

// ParentResult reads the result of the node parent of the workflow that the task running under ctx belongs to,
// decoded into T. The result is read from Redis when asked (the workflow's hash), never copied into the child's
// envelope, so a large result costs only the nodes that read it. Any completed node of the workflow can be read,
// a parent being the usual case.
//
// It returns [ErrNotWorkflowNode] outside a workflow node run by a [TaskWorker]; [ErrUnknownNode] when parent is
// not a node of the workflow; [ErrNoResult] when the node succeeded without a result, has not completed, or failed
// on a [FailIgnore] edge of this node; a [*ParentError] (errors.Is [ErrParentFailed]) when it failed or was
// skipped and this node runs anyway ([FailContinue]).
func ParentResult[T any](ctx context.Context, parent string) (T, error) {
	var v T
	raw, err := ParentResultRaw(ctx, parent)
	if err != nil {
		return v, err
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return v, fmt.Errorf("taskqueue: result of node %s: %w", quote(parent), err)
	}
	return v, nil
}

// ParentResultRaw is [ParentResult] without decoding: the result's JSON.
func ParentResultRaw(ctx context.Context, parent string) (json.RawMessage, error) {
	s, _ := ctx.Value(resultSlotKey{}).(*resultSlot)
	if s == nil || s.node.spec == nil || !isWorkflowRun(s.node.spec.GroupID) {
		return nil, ErrNotWorkflowNode
	}
	q, ok := s.node.q.(*RedisTaskQueue)
	if sq, sharded := s.node.q.(*ShardedQueue); sharded && s.node.d != nil {
		q, ok = sq.shardOf(s.node.d), true // the workflow's shard (sharded_graph.go)
	}
	if !ok {
		return nil, ErrNotWorkflowNode
	}
	gid, self := s.node.spec.GroupID, s.node.spec.TaskID
	vals, err := q.rdb.HMGet(ctx, q.keys.group(gid), "m:"+gid+":"+parent, "i:"+self).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("taskqueue: result of node %s: %w", quote(parent), classify(err))
	}
	m, ok := vals[0].(string)
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrUnknownNode, quote(parent))
	}
	ignored, _ := vals[1].(string)
	state, reason, result := nodeOutcome(m, false)
	switch {
	case state == NodeSucceeded && result != nil:
		return result, nil
	case (state == NodeFailed || state == NodeSkipped) && !slices.Contains(strings.Fields(ignored), parent):
		return nil, &ParentError{Node: parent, State: state, Reason: strings.TrimPrefix(reason, gid+":")}
	}
	return nil, fmt.Errorf("%w: node %s %s", ErrNoResult, quote(parent), state)
}
