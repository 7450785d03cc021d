package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/graflow-go/taskqueue"
)

// The workflow command joins the command table before "help" (as schedule.go's do).
func init() {
	cmd := &command{name: "workflow", args: "ID", summary: "show a workflow as a tree of its nodes with their states",
		run: runWorkflow, help: `Shows a workflow (docs/workflows.md): its state (running, succeeded, failed,
cancelled), its progress, and every node in the order it was added, indented under its
first parent as a tree, with its state, its other parents, and its error or the start
of its result.

Node states: waiting (a parent has not completed), queued (pending, running or
retrying), succeeded, failed (dead-lettered), skipped (a parent failed on a stop
edge), cancelled.

With --json, the workflow as data (taskqueue.WorkflowInfo). Exit code 3 when there is
no such workflow (never submitted, or expired after its TTL).

Examples:
  taskqueue workflow etl-2026-12-06
  taskqueue workflow etl-2026-12-06 --json | jq -r '.Nodes[] | select(.State=="failed") | .ID'
`}
	at := slices.IndexFunc(commands, func(c *command) bool { return c.name == "help" })
	if at < 0 {
		at = len(commands)
	}
	commands = slices.Insert(commands, at, cmd)
}

// workflowNodeJSON is one node of workflow --json.
type workflowNodeJSON struct {
	taskqueue.WorkflowNodeInfo
	TaskID string              `json:"task_id"`
	State  taskqueue.NodeState `json:"state"`
	Error  string              `json:"error,omitempty"`
	Result any                 `json:"result,omitempty"`
}

func runWorkflow(ctx context.Context, c *cli, _ any, args []string) error {
	if len(args) != 1 {
		return usagef("workflow takes one workflow id")
	}
	q, err := c.openExisting(ctx)
	if err != nil {
		return err
	}
	info, err := q.Workflow(ctx, args[0])
	if errors.Is(err, taskqueue.ErrWorkflowNotFound) {
		return &codeError{exitNotFound, fmt.Errorf("no workflow %q in queue %s", clip(args[0], 64), q.KeyPrefix())}
	}
	if err != nil {
		return err
	}
	if c.g.json {
		nodes := make([]workflowNodeJSON, len(info.Nodes))
		for i := range info.Nodes {
			n := &info.Nodes[i]
			nodes[i] = workflowNodeJSON{WorkflowNodeInfo: *n, TaskID: n.TaskID, State: n.State, Error: n.Error}
			if n.Result != nil {
				nodes[i].Result = n.Result
			}
		}
		return c.writeJSON(map[string]any{"id": info.ID, "run_id": info.RunID, "state": info.State,
			"created": info.Created, "ended": nullTime(info.Ended), "total": info.Total, "done": info.Done, "nodes": nodes})
	}
	fmt.Fprintf(c.stdout, "workflow %s: %s, %d of %d nodes done", info.ID, info.State, info.Done, info.Total)
	if !info.Ended.IsZero() {
		fmt.Fprintf(c.stdout, ", ran %s", info.Ended.Sub(info.Created).Round(time.Millisecond))
	}
	fmt.Fprintln(c.stdout)
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tSTATE\tALSO AFTER\tERROR / RESULT")
	depth := map[string]int{}
	for i := range info.Nodes {
		n := &info.Nodes[i]
		d, also := 0, ""
		if len(n.Parents) > 0 {
			d = depth[n.Parents[0]] + 1
			also = strings.Join(n.Parents[1:], ",")
		}
		depth[n.ID] = d
		name := n.ID
		if d > 0 {
			name = strings.Repeat("  ", d-1) + "└─ " + n.ID
		}
		detail := n.Error
		if n.Result != nil {
			detail = string(n.Result)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", name, n.State, clip(also, 40), clip(detail, 60))
	}
	return tw.Flush()
}

func nullTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}
