package taskqueue

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Workflows: a producer declares tasks (nodes) and their dependencies (a chain, any DAG, groups as nodes),
// validates them and submits them in one script call, idempotent by the workflow's id. No coordinator runs: the
// script that records a node's outcome (ack, dead letter) releases the children whose last parent it was, so a
// workflow advances as long as workers run. A workflow is a group run (group.go) whose members have parents:
// waiting, results and TTLs work as for groups. See docs/workflows.md.

// Bounds of one workflow.
const (
	// MaxWorkflowNodes bounds the nodes of one workflow (a group node counts its members).
	MaxWorkflowNodes = 5000
	// MaxWorkflowEdges bounds its edges (a group node's edges count once per member).
	MaxWorkflowEdges = 50000
)

// FailurePolicy says what a node does when one of its parents failed (dead-lettered) or was skipped.
type FailurePolicy uint8

// The failure policies. The zero value is [FailStop].
const (
	// FailStop (the default) skips the node: it ends in [NodeSkipped] without running, and so do the nodes that
	// depend on it through a FailStop edge.
	FailStop FailurePolicy = iota
	// FailContinue runs the node once all its parents have completed; [ParentResult] for the failed parent
	// returns a [*ParentError] (errors.Is [ErrParentFailed]) with its state and reason.
	FailContinue
	// FailIgnore runs the node as if the parent had succeeded without a result: [ParentResult] returns
	// [ErrNoResult] for it.
	FailIgnore
)

func (p FailurePolicy) String() string {
	switch p {
	case FailStop:
		return "stop"
	case FailContinue:
		return "continue"
	case FailIgnore:
		return "ignore"
	}
	return fmt.Sprintf("FailurePolicy(%d)", uint8(p))
}

// code is the policy's letter in the children lists of lua/workflow.lua.
func (p FailurePolicy) code() byte { return "sci"[p] }

// Workflow is a graph of tasks to submit with [RedisTaskQueue.SubmitWorkflow]. Build it with [NewWorkflow],
// [Workflow.Add], [Workflow.AddGroup], [WorkflowNode.After] and [Workflow.Chain]; mistakes (an unknown parent, a
// cycle, a duplicate id) are reported by [Workflow.Validate] and SubmitWorkflow, not while building. A Workflow is
// not safe for concurrent use while it is built.
type Workflow struct {
	id     string
	nodes  []*WorkflowNode
	byID   map[string]*WorkflowNode
	groups map[string][]string // group node id -> its members' node ids
	order  []string            // every id added (nodes and groups), to report duplicates
}

// WorkflowNode is one node of a [Workflow]: a task, or a group of tasks that run in parallel.
type WorkflowNode struct {
	id      string
	spec    *TaskSpec
	group   string // the group node it is a member of, "" for none
	parents []edge
	policy  FailurePolicy // for parents added without a policy of their own
	wf      *Workflow
	members []*WorkflowNode // a group node's members (the node itself runs nothing)
}

type edge struct {
	from   string
	policy FailurePolicy
	own    bool // policy set for this edge (AfterWith), not the node's default
}

// NewWorkflow starts a workflow. id names it in the queue: 1 to 64 of A-Za-z0-9._-, starting with a letter or
// digit. Submitting a workflow is idempotent by id while its keys live (until its TTL passes after its end).
func NewWorkflow(id string) *Workflow {
	return &Workflow{id: id, byID: map[string]*WorkflowNode{}, groups: map[string][]string{}}
}

// ID returns the workflow's id.
func (w *Workflow) ID() string { return w.id }

// Add adds a task node. id names the node in the workflow (1 to 64 of A-Za-z0-9._-, unique); spec is the task
// (a reference, typed arguments, options). The spec's TaskID must be empty (a node's task id is derived from the
// workflow and node ids) and its GroupID empty; a node cannot be delayed (ProcessIn, ProcessAt). The spec is copied
// at submit.
func (w *Workflow) Add(id string, spec *TaskSpec) *WorkflowNode {
	n := &WorkflowNode{id: id, spec: spec, wf: w}
	w.order = append(w.order, id)
	if _, dup := w.byID[id]; !dup {
		w.byID[id] = n
	}
	w.nodes = append(w.nodes, n)
	return n
}

// AddGroup adds a group node: its specs run in parallel as nodes "<id>.<member>", member being a spec's TaskID or
// its index. A node that runs after the group runs after all its members; the group's parents are each
// member's. Read a member's result with [ParentResult] under its own node id ("transforms.0").
func (w *Workflow) AddGroup(id string, specs ...*TaskSpec) *WorkflowNode {
	g := &WorkflowNode{id: id, wf: w}
	w.order = append(w.order, id)
	if _, dup := w.byID[id]; !dup {
		w.byID[id] = g
	}
	for i, s := range specs {
		member := fmt.Sprint(i)
		var spec *TaskSpec
		if s != nil {
			c := *s
			if c.TaskID != "" {
				member, c.TaskID = c.TaskID, ""
			}
			spec = &c
		}
		m := w.Add(id+"."+member, spec)
		m.group = id
		g.members = append(g.members, m)
		w.groups[id] = append(w.groups[id], m.id)
	}
	if len(specs) == 0 {
		w.groups[id] = nil
	}
	return g
}

// After makes the node run after each of parents (node or group ids) has completed, with the node's failure
// policy ([WorkflowNode.OnParentFailure], default [FailStop]). It returns the node.
func (n *WorkflowNode) After(parents ...string) *WorkflowNode {
	for _, p := range parents {
		n.parents = append(n.parents, edge{from: p})
	}
	return n
}

// AfterWith is [WorkflowNode.After] with a failure policy for these edges only.
func (n *WorkflowNode) AfterWith(policy FailurePolicy, parents ...string) *WorkflowNode {
	for _, p := range parents {
		n.parents = append(n.parents, edge{from: p, policy: policy, own: true})
	}
	return n
}

// OnParentFailure sets the policy of the node's edges that have none of their own ([WorkflowNode.AfterWith]).
func (n *WorkflowNode) OnParentFailure(policy FailurePolicy) *WorkflowNode {
	n.policy = policy
	return n
}

// ID returns the node's id.
func (n *WorkflowNode) ID() string { return n.id }

// Chain makes each of ids run after the one before it: Chain("a", "b", "c") is b after a, c after b.
func (w *Workflow) Chain(ids ...string) *Workflow {
	for i := 1; i < len(ids); i++ {
		if n, ok := w.byID[ids[i]]; ok {
			n.After(ids[i-1])
		} else {
			w.order = append(w.order, "\x00"+ids[i]) // reported by Validate as an unknown node
		}
	}
	return w
}

// plan is a validated workflow, flattened: task nodes only (group nodes expanded), in the order they were added.
type plan struct {
	ids      []string                 // task nodes in order
	specs    map[string]*TaskSpec     // task node -> spec
	parents  map[string][]edge        // task node -> its parents (task nodes), policies resolved
	children map[string][]edge        // task node -> its children: edge.from holds the child
	groups   map[string][]string      // group node -> members
	graph    []WorkflowNodeInfo       // for the hash's "graph" field and Inspect
	byNode   map[string]*WorkflowNode // task node -> its node
}

// Validate checks the workflow: ids, an unknown parent (a dangling edge), a cycle, the size bounds, every spec.
// Each problem is a [*WorkflowError] naming the node or edge, errors.Is [ErrInvalidWorkflow] and its kind
// ([ErrWorkflowCycle], [ErrDanglingEdge], [ErrDuplicateNode], [ErrWorkflowTooLarge], [ErrInvalidNodeID]).
func (w *Workflow) Validate() error {
	_, err := w.plan()
	return err
}

func (w *Workflow) plan() (*plan, error) {
	if !groupNamePattern.MatchString(w.id) {
		return nil, &WorkflowError{Workflow: w.id, Err: fmt.Errorf("%w: workflow id must match %s", ErrInvalidNodeID, groupNamePattern)}
	}
	seen := map[string]bool{}
	for _, id := range w.order {
		if name, ok := strings.CutPrefix(id, "\x00"); ok {
			return nil, &WorkflowError{Workflow: w.id, Node: name, Err: fmt.Errorf("%w: Chain names a node that was not added", ErrDanglingEdge)}
		}
		if seen[id] {
			return nil, &WorkflowError{Workflow: w.id, Node: id, Err: ErrDuplicateNode}
		}
		seen[id] = true
	}
	p := &plan{specs: map[string]*TaskSpec{}, parents: map[string][]edge{}, children: map[string][]edge{},
		groups: w.groups, byNode: map[string]*WorkflowNode{}}
	if len(w.nodes) == 0 {
		return nil, &WorkflowError{Workflow: w.id, Err: fmt.Errorf("%w: no node", ErrWorkflowTooLarge)}
	}
	if len(w.nodes) > MaxWorkflowNodes {
		return nil, &WorkflowError{Workflow: w.id, Err: fmt.Errorf("%w: %d nodes, at most %d", ErrWorkflowTooLarge, len(w.nodes), MaxWorkflowNodes)}
	}
	edges := 0
	for _, n := range w.nodes {
		if err := checkWorkflowNode(w, n); err != nil {
			return nil, err
		}
		p.ids = append(p.ids, n.id)
		p.specs[n.id] = n.spec
		p.byNode[n.id] = n
		own := n.parents
		if n.group != "" {
			own = append(slices.Clone(w.byID[n.group].parents), own...)
			if n.policy == FailStop {
				n.policy = w.byID[n.group].policy
			}
		}
		for _, e := range own {
			if !e.own {
				e.policy = n.policy
			}
			from := []string{e.from}
			if members, ok := w.groups[e.from]; ok {
				from = members
			} else if _, ok := w.byID[e.from]; !ok {
				return nil, &WorkflowError{Workflow: w.id, Node: n.id, Edge: [2]string{e.from, n.id}, Err: ErrDanglingEdge}
			}
			for _, f := range from {
				if f == n.id || n.group != "" && e.from == n.group {
					return nil, &WorkflowError{Workflow: w.id, Node: n.id, Edge: [2]string{e.from, n.id}, Err: fmt.Errorf("%w: a node after itself", ErrWorkflowCycle)}
				}
				if slices.ContainsFunc(p.parents[n.id], func(x edge) bool { return x.from == f }) {
					continue // the same parent twice: one edge
				}
				p.parents[n.id] = append(p.parents[n.id], edge{from: f, policy: e.policy})
				p.children[f] = append(p.children[f], edge{from: n.id, policy: e.policy})
				edges++
			}
		}
	}
	if edges > MaxWorkflowEdges {
		return nil, &WorkflowError{Workflow: w.id, Err: fmt.Errorf("%w: %d edges, at most %d", ErrWorkflowTooLarge, edges, MaxWorkflowEdges)}
	}
	if err := p.checkAcyclic(w.id); err != nil {
		return nil, err
	}
	for _, id := range p.ids {
		info := WorkflowNodeInfo{ID: id, Group: p.byNode[id].group}
		for _, e := range p.parents[id] {
			info.Parents = append(info.Parents, e.from)
			info.Policies = append(info.Policies, e.policy.String())
		}
		p.graph = append(p.graph, info)
	}
	return p, nil
}

// checkWorkflowNode checks one task node's id and spec.
func checkWorkflowNode(w *Workflow, n *WorkflowNode) error {
	fail := func(err error) error { return &WorkflowError{Workflow: w.id, Node: n.id, Err: err} }
	switch {
	case !groupNamePattern.MatchString(n.id):
		return fail(fmt.Errorf("%w: node id must match %s", ErrInvalidNodeID, groupNamePattern))
	case n.spec == nil:
		return fail(errNilSpec())
	case n.spec.TaskID != "":
		return fail(fmt.Errorf("%w: a node's TaskID must be empty (it is derived from the workflow and node ids)", ErrInvalidConfig))
	case n.spec.GroupID != "":
		return fail(fmt.Errorf("%w: a node's GroupID must be empty", ErrInvalidConfig))
	case n.spec.ProcessIn != 0 || !n.spec.ProcessAt.IsZero():
		return fail(fmt.Errorf("%w: a node cannot be delayed (it runs when its parents complete)", ErrInvalidConfig))
	case n.policy > FailIgnore || slices.ContainsFunc(n.parents, func(e edge) bool { return e.policy > FailIgnore }):
		return fail(fmt.Errorf("%w: unknown failure policy", ErrInvalidConfig))
	}
	return nil
}

// checkAcyclic finds a cycle by Kahn's algorithm and names an edge on it.
func (p *plan) checkAcyclic(wf string) error {
	left := make(map[string]int, len(p.ids))
	var queue []string
	for _, id := range p.ids {
		left[id] = len(p.parents[id])
		if left[id] == 0 {
			queue = append(queue, id)
		}
	}
	for i := 0; i < len(queue); i++ {
		for _, c := range p.children[queue[i]] {
			if left[c.from]--; left[c.from] == 0 {
				queue = append(queue, c.from)
			}
		}
	}
	if len(queue) == len(p.ids) {
		return nil
	}
	for _, id := range p.ids { // a node on or after a cycle: follow unfinished parents until one repeats
		if left[id] == 0 {
			continue
		}
		at, walked := id, map[string]bool{}
		for !walked[at] {
			walked[at] = true
			for _, e := range p.parents[at] {
				if left[e.from] > 0 {
					at = e.from
					break
				}
			}
		}
		for _, e := range p.parents[at] {
			if left[e.from] > 0 {
				return &WorkflowError{Workflow: wf, Node: at, Edge: [2]string{e.from, at}, Err: ErrWorkflowCycle}
			}
		}
	}
	return &WorkflowError{Workflow: wf, Err: ErrWorkflowCycle}
}

// WorkflowOptions configure [RedisTaskQueue.SubmitWorkflow]. The zero value takes every default.
type WorkflowOptions struct {
	// TTL bounds the life of the workflow's keys: set at submit, refreshed by each node's completion, so they
	// expire TTL after the workflow ends (or after its last progress). Default 24h, minimum 1s. While they live, a
	// submit of the same id is a no-op.
	TTL time.Duration
}

// workflowRunID derives the run id of a workflow from its id, so that a repeated submit finds the same keys: 22
// lowercase hex digits (a group run id is random letters and digits: isWorkflowRun tells them apart).
func workflowRunID(id string) string {
	sum := sha256.Sum256([]byte("taskqueue/workflow\x00" + id))
	return hex.EncodeToString(sum[:])[:idLen]
}

// isWorkflowRun reports whether a group id names a workflow's run: its run id is 22 lowercase hex digits. A
// random group run id looks so with a probability of (16/62)^22, about 1e-13; it would then only get three more
// KEYS, which its scripts ignore (the run's hash has no "wf" field).
func isWorkflowRun(groupID string) bool {
	n := len(groupID)
	if n < idLen+2 || groupID[n-idLen-1] != '@' {
		return false
	}
	for _, c := range groupID[n-idLen:] {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// SubmitWorkflow validates wf and stores it with its root nodes enqueued, in one script call: all or nothing.
// It is idempotent by the workflow's id while the workflow's keys live: a repeated submit of the same graph
// returns the existing run with [WorkflowRun.Existed] set and enqueues nothing; a different graph under that id is
// [ErrWorkflowConflict]. A node's task id is "<workflow id>@<run id>:<node id>", the run id derived from the
// workflow id; every node's envelope carries "<workflow id>@<run id>" as its group_id.
func (q *RedisTaskQueue) SubmitWorkflow(ctx context.Context, wf *Workflow, opts *WorkflowOptions) (*WorkflowRun, error) {
	if wf == nil {
		return nil, &WorkflowError{Err: fmt.Errorf("%w: nil workflow", ErrInvalidConfig)}
	}
	ttl := 24 * time.Hour
	if opts != nil && opts.TTL != 0 {
		ttl = opts.TTL
	}
	if ttl < time.Second {
		return nil, fmt.Errorf("%w: workflow TTL must be at least 1s", ErrInvalidConfig)
	}
	p, err := wf.plan()
	if err != nil {
		return nil, err
	}
	run := &WorkflowRun{ID: wf.id, RunID: workflowRunID(wf.id), q: q}
	gid := run.GroupID()
	graph, err := json.Marshal(p.graph)
	if err != nil {
		return nil, fmt.Errorf("taskqueue: submit workflow %s: %w", quote(wf.id), err)
	}
	args := make([]any, 4, 4+5*len(p.ids))
	args[0], args[1], args[2], args[3] = wf.id, ttl.Milliseconds(), len(p.ids), graph
	for _, id := range p.ids {
		s := *p.specs[id]
		s.TaskID, s.GroupID = gid+":"+id, gid
		_, raw, _, err := q.seal(&s)
		if err != nil {
			return nil, &WorkflowError{Workflow: wf.id, Node: id, Err: err}
		}
		var kids, ignored []string
		for _, c := range p.children[id] {
			kids = append(kids, string(c.policy.code())+gid+":"+c.from)
		}
		for _, e := range p.parents[id] {
			if e.policy == FailIgnore {
				ignored = append(ignored, e.from)
			}
		}
		args = append(args, s.TaskID, raw, len(p.parents[id]), strings.Join(kids, " "), strings.Join(ignored, " "))
	}
	res, err := workflowSubmitScript.Run(ctx, q.rdb, q.runKeys(gid), args...).Slice()
	if err != nil {
		return nil, fmt.Errorf("taskqueue: submit workflow %s: %w", quote(wf.id), classify(err))
	}
	switch code, _ := res[0].(int64); code {
	case 1:
	case 0:
		run.Existed = true
	case 3:
		return nil, &WorkflowError{Workflow: wf.id, Err: ErrWorkflowConflict}
	default:
		id, _ := res[1].(string)
		return nil, &WorkflowError{Workflow: wf.id, Node: strings.TrimPrefix(id, gid+":"), Err: fmt.Errorf("%w: task %s exists", ErrTaskIDConflict, quote(id))}
	}
	return run, nil
}

// OpenWorkflow returns the run of the workflow id, to wait for it, inspect or cancel it from any process. It does
// not check that the workflow exists: its methods return [ErrWorkflowNotFound] when it does not.
func (q *RedisTaskQueue) OpenWorkflow(id string) (*WorkflowRun, error) {
	if !groupNamePattern.MatchString(id) {
		return nil, &WorkflowError{Workflow: id, Err: fmt.Errorf("%w: workflow id must match %s", ErrInvalidNodeID, groupNamePattern)}
	}
	return &WorkflowRun{ID: id, RunID: workflowRunID(id), q: q}, nil
}
