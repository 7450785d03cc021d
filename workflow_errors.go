package taskqueue

import (
	"errors"
	"fmt"
)

// The errors of workflows (workflow.go), kept beside them.
var (
	// ErrInvalidWorkflow is matched by every [*WorkflowError] from [Workflow.Validate] and
	// [RedisTaskQueue.SubmitWorkflow] about the graph or a node's spec.
	ErrInvalidWorkflow = errors.New("taskqueue: invalid workflow")
	// ErrWorkflowCycle is a workflow whose dependencies form a cycle; the error names an edge on it.
	ErrWorkflowCycle = errors.New("taskqueue: workflow has a cycle")
	// ErrDanglingEdge is an edge from (or a Chain through) a node that was not added.
	ErrDanglingEdge = errors.New("taskqueue: workflow edge from an unknown node")
	// ErrDuplicateNode is a node or group id added twice.
	ErrDuplicateNode = errors.New("taskqueue: workflow node id added twice")
	// ErrWorkflowTooLarge is a workflow without nodes or over [MaxWorkflowNodes] or [MaxWorkflowEdges].
	ErrWorkflowTooLarge = errors.New("taskqueue: workflow size out of bounds")
	// ErrInvalidNodeID is a workflow or node id that is not 1 to 64 of A-Za-z0-9._- starting with a letter or digit.
	ErrInvalidNodeID = errors.New("taskqueue: invalid workflow or node id")
	// ErrWorkflowConflict is a submit of a workflow id whose keys hold another graph.
	ErrWorkflowConflict = errors.New("taskqueue: workflow id exists with another graph")

	// ErrWorkflowNotFound is a workflow whose keys do not exist: never submitted, or expired after its TTL.
	ErrWorkflowNotFound = errors.New("taskqueue: workflow not found")
	// ErrWorkflowIncomplete is returned by [WorkflowRun.Wait] when the wait ended before the workflow did; it
	// also wraps the cause: [ErrWorkflowTimeout], context.Canceled or context.DeadlineExceeded.
	ErrWorkflowIncomplete = errors.New("taskqueue: workflow incomplete")
	// ErrWorkflowTimeout is the cause of an [ErrWorkflowIncomplete] wait that reached its Timeout.
	ErrWorkflowTimeout = errors.New("taskqueue: workflow wait timed out")
	// ErrWorkflowFailed is returned by [WorkflowRun.Wait] with the result of a workflow that ended with a node
	// failed or skipped ([WorkflowFailed]).
	ErrWorkflowFailed = errors.New("taskqueue: workflow failed")
	// ErrWorkflowCancelled is returned by [WorkflowRun.Wait] with the result of a cancelled workflow.
	ErrWorkflowCancelled = errors.New("taskqueue: workflow cancelled")

	// ErrNotWorkflowNode is returned by [ParentResult] outside a workflow node run by a [TaskWorker].
	ErrNotWorkflowNode = errors.New("taskqueue: not running as a workflow node")
	// ErrUnknownNode is returned by [ParentResult] for a node that is not in the workflow.
	ErrUnknownNode = errors.New("taskqueue: no such node in the workflow")
	// ErrParentFailed is matched by the [*ParentError] that [ParentResult] returns for a parent that failed or
	// was skipped, when the node runs anyway ([FailContinue]).
	ErrParentFailed = errors.New("taskqueue: parent node failed")
)

// WorkflowError is a problem with a workflow: Node and Edge name where (when they apply), Err what (one of the
// kinds above, or [ErrInvalidConfig] for a node's spec, or the spec's own error). It matches
// [ErrInvalidWorkflow] unless Err is a conflict with what is stored ([ErrTaskIDConflict], [ErrWorkflowConflict]).
type WorkflowError struct {
	Workflow string
	Node     string
	Edge     [2]string // from, to; empty when the problem is no edge's
	Err      error
}

func (e *WorkflowError) Error() string {
	s := "taskqueue: workflow " + quote(e.Workflow)
	if e.Edge[0] != "" {
		s += fmt.Sprintf(": edge %s -> %s", quote(e.Edge[0]), quote(e.Edge[1]))
	} else if e.Node != "" {
		s += ": node " + quote(e.Node)
	}
	return s + ": " + e.Err.Error()
}

// Unwrap returns the kind of problem.
func (e *WorkflowError) Unwrap() error { return e.Err }

// Is matches [ErrInvalidWorkflow] for a problem with the workflow itself.
func (e *WorkflowError) Is(target error) bool {
	return target == ErrInvalidWorkflow && !errors.Is(e.Err, ErrTaskIDConflict) && !errors.Is(e.Err, ErrWorkflowConflict)
}

// ParentError is what [ParentResult] returns for a parent that did not succeed: its node id, its state
// ([NodeFailed] or [NodeSkipped]) and its reason (the dead letter's error, or the failed node that skipped it).
type ParentError struct {
	Node   string
	State  NodeState
	Reason string
}

func (e *ParentError) Error() string {
	return fmt.Sprintf("taskqueue: parent node %s %s: %s", quote(e.Node), e.State, truncate(e.Reason, 256))
}

// Unwrap returns [ErrParentFailed].
func (e *ParentError) Unwrap() error { return ErrParentFailed }
