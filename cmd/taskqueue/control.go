package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/graflow-go/taskqueue"
)

// The control over single tasks (docs/control.md): cancel, delete-task, progress.

func init() {
	commands = append(commands,
		&command{name: "cancel", args: "ID", summary: "cancel one task: pending, scheduled, or running (its handler's context is cancelled)", run: runControl("cancel"),
			help: `Cancels one task by id. A pending, scheduled or retry task leaves the queue at once; a running
task is marked cancelled in Redis and the worker that runs it cancels its handler's context
within milliseconds (cause: "task cancelled"). A cancelled task never runs again, is never
retried nor dead-lettered, and stays visible to 'taskqueue show' as cancelled for the queue's
ControlRetention (24h by default). Exits 3 when no task has that id, 6 when it already
finished (acknowledged, dead or cancelled).

Examples:
  taskqueue cancel 2024-06-25-extract
  taskqueue cancel --json 2024-06-25-extract | jq -r .was
`},
		&command{name: "delete-task", args: "ID", summary: "delete one task in any state but running: pending, scheduled, retry, dead or cancelled", run: runControl("delete"),
			help: `Deletes one task by id, with its envelope and its last progress, wherever it waits: pending,
scheduled, retry, dead or cancelled. A running task is refused (exit 7): cancel it first, then
delete its record. Exits 3 when no task has that id, 6 when it already finished (acknowledged).
('taskqueue delete' deletes dead letters, also in bulk.)

Examples:
  taskqueue delete-task 2024-06-25-extract
  taskqueue cancel 2024-06-25-extract && taskqueue delete-task 2024-06-25-extract
`},
		&command{name: "progress", args: "ID", summary: "the last progress a task's handler reported (percent, message)", run: runProgress,
			help: `Shows the last progress a task's handler reported (taskqueue.ReportProgress): a percentage, a
short message (cut at 256 bytes and marked when longer) and when it was reported. It is
readable while the task runs and for the queue's ControlRetention after. A task that has
reported nothing shows 0%. Exits 3 when no task has that id, 6 when it finished without
reporting any.

Examples:
  taskqueue progress 2024-06-25-extract
  taskqueue progress --json 2024-06-25-extract | jq .percent
`},
	)
}

// Exit codes of the control commands, beside those of cli.go.
const (
	exitFinished = 6 // cancel, delete-task or progress named a task that already finished
	exitRunning  = 7 // delete-task named a running task: cancel it first
)

// controlCode maps the errors of the control calls to their exit codes.
func controlCode(err error) error {
	switch {
	case errors.Is(err, taskqueue.ErrNotFound):
		return &codeError{exitNotFound, err}
	case errors.Is(err, taskqueue.ErrAlreadyFinished):
		return &codeError{exitFinished, err}
	case errors.Is(err, taskqueue.ErrTaskRunning):
		return &codeError{exitRunning, err}
	}
	return err
}

func runControl(action string) func(context.Context, *cli, any, []string) error {
	return func(ctx context.Context, c *cli, _ any, args []string) error {
		if len(args) != 1 {
			return usagef("%s takes one task id", map[string]string{"cancel": "cancel", "delete": "delete-task"}[action])
		}
		q, err := c.openExisting(ctx)
		if err != nil {
			return err
		}
		do := q.Cancel
		if action == "delete" {
			do = q.Delete
		}
		was, err := do(ctx, args[0])
		if err != nil {
			return controlCode(err)
		}
		if c.g.json {
			return c.writeJSON(map[string]any{"queue": q.KeyPrefix(), "task_id": args[0], "action": action, "was": was})
		}
		verb := map[string]string{"cancel": "cancelled", "delete": "deleted"}[action]
		fmt.Fprintf(c.stdout, "task %q %s (it was %s).\n", clip(args[0], 64), verb, was)
		return nil
	}
}

func runProgress(ctx context.Context, c *cli, _ any, args []string) error {
	if len(args) != 1 {
		return usagef("progress takes one task id")
	}
	q, err := c.openExisting(ctx)
	if err != nil {
		return err
	}
	p, err := q.TaskProgress(ctx, args[0])
	if err != nil {
		return controlCode(err)
	}
	if c.g.json {
		return c.writeJSON(p)
	}
	at := "never reported"
	if !p.At.IsZero() {
		at = "reported " + p.At.UTC().Format(time.RFC3339Nano)
	}
	fmt.Fprintf(c.stdout, "task %q: %.1f%% %s (%s)\n", clip(args[0], 64), p.Percent, p.Message, at)
	if p.Truncated {
		fmt.Fprintln(c.stdout, "  (the message was longer and was cut)")
	}
	return nil
}
