package main

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/graflow-go/taskqueue"
)

// The locks command joins the command table before "help", as schedule does.
func init() {
	cmd := &command{name: "locks", args: "ACTION [KEY|ID]", summary: "unique-task locks: list, show, task, release, sweep",
		flags: locksFlags, run: runLocks,
		help: `Shows and manages the locks of unique tasks (docs/unique.md). A lock is held while its
task is (pending, running, retrying; dead too for until-success) and its TTL lasts: a
record whose task left the queue or was lost is listed as free, and the next enqueue of
its key, or a sweep, replaces it. Locks never strand; release is for letting a duplicate
in while the holder still exists.

Actions:
  list               the lock records (up to --limit), held or free
  show KEY           one unique key's lock
  task ID            the lock a task carries
  release KEY        delete a key's lock record, whatever it says
  sweep              delete every free record

Flags:
  --limit N          the most records list shows (default 100)

Examples:
  taskqueue locks list
  taskqueue locks task 3f9c2a
  taskqueue locks release report:42
`}
	at := slices.IndexFunc(commands, func(c *command) bool { return c.name == "help" })
	if at < 0 {
		at = len(commands)
	}
	commands = slices.Insert(commands, at, cmd)
}

type locksOpts struct{ limit int }

func locksFlags(fs *flag.FlagSet) any {
	o := &locksOpts{}
	fs.IntVar(&o.limit, "limit", 100, "")
	return o
}

// lockJSON is the --json form of a lock.
type lockJSON struct {
	Key       string    `json:"key"`
	TaskID    string    `json:"task_id"`
	Lifetime  string    `json:"lifetime"`
	ExpiresAt time.Time `json:"expires_at"`
	Held      bool      `json:"held"`
}

func runLocks(ctx context.Context, c *cli, opts any, args []string) error {
	o := opts.(*locksOpts)
	if len(args) == 0 {
		return usagef("locks takes an action: list, show, task, release or sweep")
	}
	action := args[0]
	switch action {
	case "list", "sweep":
		if len(args) != 1 {
			return usagef("locks %s takes no argument", action)
		}
	case "show", "task", "release":
		if len(args) != 2 {
			return usagef("locks %s takes one argument", action)
		}
	default:
		return usagef("unknown locks action %q", clip(action, 40))
	}
	if o.limit < 1 {
		return usagef("--limit must be at least 1")
	}
	q, err := c.openExisting(ctx)
	if err != nil {
		return err
	}
	var locks []taskqueue.LockInfo
	switch action {
	case "list":
		if locks, err = q.Locks(ctx, o.limit); err != nil {
			return err
		}
	case "show", "task":
		var l *taskqueue.LockInfo
		if action == "show" {
			l, err = q.Lock(ctx, args[1])
		} else {
			l, err = q.TaskLock(ctx, args[1])
		}
		if err != nil {
			return err
		}
		if l == nil {
			return &codeError{exitNotFound, fmt.Errorf("no lock for %s %q", map[string]string{"show": "key", "task": "task"}[action], clip(args[1], 64))}
		}
		locks = []taskqueue.LockInfo{*l}
	case "release":
		ok, err := q.ReleaseLock(ctx, args[1])
		if err != nil {
			return err
		}
		if !ok {
			return &codeError{exitNotFound, fmt.Errorf("no lock for key %q", clip(args[1], 64))}
		}
		if c.g.json {
			return c.writeJSON(map[string]any{"key": args[1], "released": true})
		}
		fmt.Fprintf(c.stdout, "lock %s: released\n", clip(args[1], 64))
		return nil
	case "sweep":
		n, err := q.SweepLocks(ctx)
		if err != nil {
			return err
		}
		if c.g.json {
			return c.writeJSON(map[string]int{"deleted": n})
		}
		fmt.Fprintf(c.stdout, "deleted %d free lock records\n", n)
		return nil
	}
	return c.writeLocks(locks)
}

func (c *cli) writeLocks(locks []taskqueue.LockInfo) error {
	if c.g.json {
		out := make([]lockJSON, len(locks))
		for i, l := range locks {
			out[i] = lockJSON(l)
		}
		return c.writeJSON(map[string]any{"locks": out})
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tTASK\tLIFETIME\tEXPIRES\tSTATE")
	for _, l := range locks {
		state := "free"
		if l.Held {
			state = "held"
		}
		exp := "-"
		if !l.ExpiresAt.IsZero() {
			exp = l.ExpiresAt.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", clip(l.Key, 64), clip(cmpOr(l.TaskID, "-"), 40), l.Lifetime, exp, state)
	}
	return tw.Flush()
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
