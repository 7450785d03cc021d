package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/graflow-go/taskqueue"
)

func init() {
	commands = []*command{
		{name: "stats", summary: "counts per state, oldest pending age, pickups per second", flags: statsFlags, run: runStats,
			help: `Shows how many tasks are pending, active, scheduled and dead, whether pickup is paused, how
long the next task has waited (its age since it was created), and the pickup rate: deliveries
handed to workers per second, retries included, measured over --interval.

Flags:
  --interval DURATION  how long to measure the pickup rate (default 1s; 0 skips it and
                       returns at once; at most 1m)

Examples:
  taskqueue stats
  taskqueue stats --interval 10s
  taskqueue stats --interval 0 --json | jq '.pending, .oldest_pending_age_seconds'
`},
		{name: "list", args: "STATE", summary: "tasks in one state (pending, scheduled, active, dead, cancelled), oldest first", flags: listFlags, run: runList,
			help: `Lists the tasks in one state, oldest first: pending in pickup order, scheduled by due time
(tasks waiting to be retried among them, shown as retry), active by lease deadline, dead by
the time they died, cancelled by the time of the cancel (records kept for the queue's
ControlRetention). Shows each task's id, its time (age, due, lease end or death), its
function (module.name) and attempt, and a dead letter's reason. "ready" is read as pending.

Flags:
  --offset N  skip the first N tasks (default 0)
  --limit N   show at most N tasks (default 20, at most 1000)

Examples:
  taskqueue list dead
  taskqueue list pending --offset 100 --limit 100
  taskqueue list dead --limit 1000 --json | jq -r '.tasks[].task_id'
`},
		{name: "show", args: "ID", summary: "one task: its state, times, reason and envelope, pretty-printed", run: runShow,
			help: `Shows one task: where it is, its time, a dead letter's reason, and its JSON envelope as the
seed's record (task_id, status and strategy written back in), pretty-printed (numbers kept exact). Exits 3 when no task has that id.

Examples:
  taskqueue show 2024-06-25-extract
  taskqueue show --json 2024-06-25-extract | jq .envelope.serialized_task.payload.args
  taskqueue show -- -id-that-starts-with-a-dash
`},
		deadCommand("requeue"),
		deadCommand("delete"),
		{name: "purge", args: "STATE", summary: "delete every pending, scheduled or dead task", flags: purgeFlags, run: runPurge,
			help: `Deletes every task in one state (pending, scheduled or dead), with its envelope, in batches,
showing progress on standard error. It asks first unless --yes is given, and refuses without
a terminal to ask on. Active tasks cannot be purged: workers hold them. To empty a queue
that workers consume, pause it first, let running tasks finish, then purge pending.

Flags:
  --yes  do not ask for confirmation

Examples:
  taskqueue purge dead
  taskqueue pause && taskqueue purge pending --yes && taskqueue resume
`},
		{name: "pause", summary: "stop workers from picking up tasks (running ones finish)", run: runPause,
			help: `Pauses pickup: every worker of the queue stops taking new tasks within milliseconds, while
running tasks finish and are acknowledged, and producers can still enqueue. The pause is
stored in Redis, so it holds across worker restarts until 'taskqueue resume'. Pausing a
queue that has no key yet works (the pause is its first key), with a note on standard error.

Examples:
  taskqueue pause
  taskqueue stats   # "pickup  PAUSED since ..."
`},
		{name: "resume", summary: "let workers pick up tasks again", run: runResume,
			help: `Resumes pickup after 'taskqueue pause': blocked workers are woken at once.

Examples:
  taskqueue resume
`},
		{name: "watch", summary: "a live view of stats, refreshed every --interval", flags: watchFlags, run: runWatch,
			help: `Shows the stats again every --interval, with the pickup rate since the previous refresh, until
Ctrl-C (or --count refreshes). On a terminal the screen is redrawn; otherwise each refresh is
printed below the last, and with --json each is one JSON object per line.

Flags:
  --interval DURATION  time between refreshes (default 2s, at least 100ms)
  --count N            stop after N refreshes (default 0: until interrupted)

Examples:
  taskqueue watch
  taskqueue watch --interval 10s --json >> queue-stats.ndjson
`},
		{name: "help", args: "[COMMAND]", summary: "this overview, or a command's help"},
	}
}

type statsOpts struct{ interval time.Duration }

func statsFlags(fs *flag.FlagSet) any {
	o := &statsOpts{}
	fs.DurationVar(&o.interval, "interval", time.Second, "")
	return o
}

func runStats(ctx context.Context, c *cli, opts any, args []string) error {
	o := opts.(*statsOpts)
	if len(args) > 0 {
		return usagef("stats takes no arguments")
	}
	if o.interval < 0 || o.interval > time.Minute {
		return usagef("--interval must be between 0 and 1m")
	}
	q, err := c.openExisting(ctx)
	if err != nil {
		return err
	}
	first, err := q.Stats(ctx)
	if err != nil {
		return err
	}
	if o.interval == 0 {
		return c.writeStats(q, first, nil)
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(o.interval):
	}
	last, err := q.Stats(ctx)
	if err != nil {
		return err
	}
	return c.writeStats(q, last, &first)
}

type listOpts struct{ offset, limit int }

func listFlags(fs *flag.FlagSet) any {
	o := &listOpts{}
	fs.IntVar(&o.offset, "offset", 0, "")
	fs.IntVar(&o.limit, "limit", 20, "")
	return o
}

func runList(ctx context.Context, c *cli, opts any, args []string) error {
	o := opts.(*listOpts)
	if len(args) != 1 {
		return usagef("list takes one state: pending, scheduled, active, dead or cancelled")
	}
	state, err := taskqueue.ParseState(args[0])
	if args[0] == string(taskqueue.StateCancelled) { // not a place in the queue, but its records are listed
		state, err = taskqueue.StateCancelled, nil
	}
	if err != nil {
		return usagef("unknown state %q: want pending, scheduled, active, dead or cancelled", clip(args[0], 40))
	}
	if state == taskqueue.StateRetry {
		return usagef("tasks waiting to be retried are listed with the scheduled ones: taskqueue list scheduled")
	}
	if o.offset < 0 || o.limit < 1 || o.limit > taskqueue.MaxListLimit {
		return usagef("--offset must be 0 or more and --limit between 1 and %d", taskqueue.MaxListLimit)
	}
	q, err := c.openExisting(ctx)
	if err != nil {
		return err
	}
	st, err := q.Stats(ctx)
	if err != nil {
		return err
	}
	tasks, err := q.List(ctx, state, o.offset, o.limit)
	if err != nil {
		return err
	}
	total := countOf(st.Counts, state)
	if state == taskqueue.StateCancelled {
		total = st.Cancelled
	}
	return c.writeList(q, state, o, total, tasks, st.ServerTime)
}

func countOf(s taskqueue.Counts, state taskqueue.State) int64 {
	switch state {
	case taskqueue.StatePending:
		return s.Pending
	case taskqueue.StateScheduled:
		return s.Scheduled
	case taskqueue.StateActive:
		return s.Active
	}
	return s.Dead
}

func runShow(ctx context.Context, c *cli, _ any, args []string) error {
	if len(args) != 1 {
		return usagef("show takes one task id")
	}
	q, err := c.openExisting(ctx)
	if err != nil {
		return err
	}
	info, err := q.Inspect(ctx, args[0])
	if errors.Is(err, taskqueue.ErrNotFound) {
		return &codeError{exitNotFound, fmt.Errorf("no task %q in queue %s", clip(args[0], 64), q.KeyPrefix())}
	}
	if err != nil {
		return err
	}
	now, err := q.ServerTime(ctx)
	if err != nil {
		return err
	}
	return c.writeShow(info, now)
}

// deadOpts are the flags of requeue and delete.
type deadOpts struct {
	all, yes, dryRun bool
	reason           string
	olderThan        time.Duration
}

func deadCommand(action string) *command {
	verb := map[string]string{"requeue": "Moves dead letters back to the tail of pending, with a fresh retry budget",
		"delete": "Deletes dead letters for good, with their envelopes"}[action]
	summary := map[string]string{"requeue": "move dead letters back to pending: by id, --all, or by filter",
		"delete": "delete dead letters for good: by id, --all, or by filter"}[action]
	return &command{name: action, args: "ID... | --all | FILTER...", summary: summary, flags: deadFlags, run: runDead(action),
		help: verb + `: the ones named by id,
every one (--all), or those that match every filter given. Bulk actions (--all, filters) go
in batches, show progress on standard error, and ask first unless --yes is given; without a
terminal to ask on they refuse. Naming an id that is not a dead letter exits 3 (the others
are still ` + pastTense(action) + `).

Flags:
  --all                    every dead letter
  --reason-contains TEXT   those whose reason contains TEXT (ignoring case)
  --older-than DURATION    those that died more than DURATION ago (server clock), e.g. 1h
  --dry-run                count (and show a few of) the matching dead letters; change nothing
  --yes                    do not ask for confirmation

Examples:
  taskqueue ` + action + ` 2024-06-25-extract 2024-06-25-load
  taskqueue ` + action + ` --reason-contains "connection refused" --dry-run
  taskqueue ` + action + ` --reason-contains "connection refused" --older-than 15m --yes
  taskqueue ` + action + ` --all --yes --json
`}
}

func pastTense(action string) string {
	if action == "delete" {
		return "deleted"
	}
	return "requeued"
}

func deadFlags(fs *flag.FlagSet) any {
	o := &deadOpts{}
	fs.BoolVar(&o.all, "all", false, "")
	fs.StringVar(&o.reason, "reason-contains", "", "")
	fs.DurationVar(&o.olderThan, "older-than", 0, "")
	fs.BoolVar(&o.dryRun, "dry-run", false, "")
	fs.BoolVar(&o.yes, "yes", false, "")
	return o
}

func runDead(action string) func(context.Context, *cli, any, []string) error {
	return func(ctx context.Context, c *cli, opts any, args []string) error {
		o := opts.(*deadOpts)
		filtered := o.reason != "" || o.olderThan != 0
		switch {
		case o.olderThan < 0:
			return usagef("--older-than must be positive")
		case len(args) > 0 && (o.all || filtered):
			return usagef("name dead letters by id, or by --all or filters, not both")
		case len(args) == 0 && !o.all && !filtered:
			return usagef("name the dead letters to %s: task ids, --all, or a filter (--reason-contains, --older-than)", action)
		case o.all && filtered:
			return usagef("--all takes no filter: drop --all to %s only the dead letters that match", action)
		}
		q, err := c.openExisting(ctx)
		if err != nil {
			return err
		}
		if len(args) > 0 {
			return c.deadByID(ctx, q, action, args, o.dryRun)
		}
		return c.deadBulk(ctx, q, action, o)
	}
}

// deadResult is what requeue and delete report.
type deadResult struct {
	Queue    string   `json:"queue"`
	Action   string   `json:"action"`
	DryRun   bool     `json:"dry_run"`
	Matched  int      `json:"matched"`             // dead letters named or matching the filters
	Done     int      `json:"done"`                // requeued or deleted
	Scanned  int      `json:"scanned"`             // dead letters looked at
	Sample   []string `json:"sample,omitempty"`    // a few matching ids (dry run)
	NotFound []string `json:"not_found,omitempty"` // ids that are not dead letters
}

func (c *cli) deadByID(ctx context.Context, q *queue, action string, ids []string, dryRun bool) error {
	res := deadResult{Queue: q.KeyPrefix(), Action: action, DryRun: dryRun, Scanned: len(ids)}
	var found []string
	for _, id := range ids {
		info, err := q.Inspect(ctx, id)
		switch {
		case errors.Is(err, taskqueue.ErrNotFound):
			fmt.Fprintf(c.stderr, "taskqueue: %s: no such task\n", clip(id, 64))
			res.NotFound = append(res.NotFound, id)
		case err != nil:
			return err
		case info.State != taskqueue.StateDead:
			fmt.Fprintf(c.stderr, "taskqueue: %s: not a dead letter (it is %s)\n", clip(id, 64), info.State)
			res.NotFound = append(res.NotFound, id)
		default:
			found = append(found, id)
		}
	}
	res.Matched = len(found)
	if !dryRun && len(found) > 0 {
		var err error
		if action == "requeue" {
			res.Done, err = q.RequeueDead(ctx, found...)
		} else {
			res.Done, err = q.DeleteDead(ctx, found...)
		}
		if err != nil {
			return err
		}
	}
	if dryRun {
		res.Sample = found
	}
	if err := c.writeDead(res); err != nil {
		return err
	}
	if len(res.NotFound) > 0 {
		return &codeError{exitNotFound, fmt.Errorf("%d of %d ids are not dead letters", len(res.NotFound), len(ids))}
	}
	return nil
}

func (c *cli) deadBulk(ctx context.Context, q *queue, action string, o *deadOpts) error {
	now, err := q.ServerTime(ctx)
	if err != nil {
		return err
	}
	var filter func(taskqueue.TaskInfo) bool
	var what []string
	if o.reason != "" {
		what = append(what, fmt.Sprintf("whose reason contains %q", clip(o.reason, 80)))
	}
	if o.olderThan > 0 {
		what = append(what, "that died more than "+human(o.olderThan)+" ago")
	}
	if !o.all {
		needle, before := strings.ToLower(o.reason), now.Add(-o.olderThan)
		filter = func(dl taskqueue.TaskInfo) bool {
			return strings.Contains(strings.ToLower(dl.Reason), needle) && (o.olderThan == 0 || dl.Score.Before(before))
		}
	}
	st, err := q.Stats(ctx)
	if err != nil {
		return err
	}
	res := deadResult{Queue: q.KeyPrefix(), Action: action, DryRun: o.dryRun}
	if st.Dead == 0 {
		return c.writeDead(res)
	}
	if o.dryRun {
		if err := c.countDead(ctx, q, filter, &res); err != nil {
			return err
		}
		return c.writeDead(res)
	}
	if !o.yes {
		question := fmt.Sprintf("%s every dead letter %s (%d dead letters in queue %s)", action,
			strings.Join(what, " and "), st.Dead, q.KeyPrefix())
		if o.all {
			question = fmt.Sprintf("%s all %d dead letters of queue %s", action, st.Dead, q.KeyPrefix())
		}
		if err := c.confirm(strings.ReplaceAll(question, "  ", " ")); err != nil {
			return err
		}
	}
	bar := c.newProgress(action, pastTense(action))
	opt := taskqueue.WithProgress(func(p taskqueue.Progress) { res.Scanned = p.Scanned; bar.update(p) })
	if action == "requeue" {
		res.Done, err = q.RequeueAllDead(ctx, filter, opt)
	} else {
		res.Done, err = q.DeleteAllDead(ctx, filter, opt)
	}
	bar.finish()
	res.Matched = res.Done
	if err != nil {
		return fmt.Errorf("%s stopped after %d dead letters: %w", action, res.Done, err)
	}
	return c.writeDead(res)
}

// countDead pages through the dead letters with read-only calls and counts those that filter accepts.
func (c *cli) countDead(ctx context.Context, q *queue, filter func(taskqueue.TaskInfo) bool, res *deadResult) error {
	const page = 500
	for offset := 0; ; offset += page {
		dls, err := q.List(ctx, taskqueue.StateDead, offset, page)
		if err != nil {
			return err
		}
		for _, dl := range dls {
			if filter == nil || filter(dl) {
				res.Matched++
				if len(res.Sample) < 10 {
					res.Sample = append(res.Sample, dl.TaskID)
				}
			}
		}
		res.Scanned += len(dls)
		if len(dls) < page {
			return nil
		}
	}
}

type purgeOpts struct{ yes bool }

func purgeFlags(fs *flag.FlagSet) any {
	o := &purgeOpts{}
	fs.BoolVar(&o.yes, "yes", false, "")
	return o
}

func runPurge(ctx context.Context, c *cli, opts any, args []string) error {
	o := opts.(*purgeOpts)
	if len(args) != 1 {
		return usagef("purge takes one state: pending, scheduled or dead")
	}
	state, err := taskqueue.ParseState(args[0])
	if err != nil {
		return usagef("unknown state %q: want pending, scheduled or dead", clip(args[0], 40))
	}
	if state == taskqueue.StateRetry {
		return usagef("tasks waiting to be retried are purged with the scheduled ones: taskqueue purge scheduled")
	}
	if state == taskqueue.StateActive {
		return usagef("active tasks cannot be purged: workers hold them. Pause the queue ('taskqueue pause'), let them finish, then purge pending")
	}
	q, err := c.openExisting(ctx)
	if err != nil {
		return err
	}
	st, err := q.Stats(ctx)
	if err != nil {
		return err
	}
	n := countOf(st.Counts, state)
	if n > 0 && !o.yes {
		if err := c.confirm(fmt.Sprintf("purge (delete for good) %d %s tasks of queue %s", n, state, q.KeyPrefix())); err != nil {
			return err
		}
	}
	purged := 0
	if n > 0 {
		bar := c.newProgress("purge", "purged")
		purged, err = q.Purge(ctx, state, taskqueue.WithProgress(bar.update))
		bar.finish()
		if errors.Is(err, taskqueue.ErrInvalidState) {
			return usagef("%v", err)
		}
		if err != nil {
			return fmt.Errorf("purge stopped after %d tasks: %w", purged, err)
		}
	}
	if c.g.json {
		return c.writeJSON(map[string]any{"queue": q.KeyPrefix(), "action": "purge", "state": state, "purged": purged})
	}
	fmt.Fprintf(c.stdout, "purged %d %s tasks of queue %s\n", purged, state, q.KeyPrefix())
	return nil
}

func runPause(ctx context.Context, c *cli, _ any, args []string) error {
	if len(args) > 0 {
		return usagef("pause takes no arguments")
	}
	q, err := c.open(ctx)
	if err != nil {
		return err
	}
	// Pausing a queue before its first producer is legitimate (the pause creates it), so pause goes ahead on a
	// queue with no key, but says so: a typo in the prefix would otherwise pause nothing anyone uses.
	missing := q.requireExists(ctx)
	var ce *codeError
	if missing != nil && !errors.As(missing, &ce) {
		return missing
	}
	if err := q.Pause(ctx); err != nil {
		return err
	}
	if ce != nil {
		fmt.Fprintf(c.stderr, "taskqueue: note: %s\ntaskqueue: note: the pause is stored and holds for workers of that queue when they come\n", ce.err)
	}
	if c.g.json {
		return c.writeJSON(map[string]any{"queue": q.KeyPrefix(), "paused": true})
	}
	fmt.Fprintf(c.stdout, "queue %s: pickup paused. Running tasks finish; workers take no new ones until 'taskqueue resume'.\n", q.KeyPrefix())
	return nil
}

func runResume(ctx context.Context, c *cli, _ any, args []string) error {
	if len(args) > 0 {
		return usagef("resume takes no arguments")
	}
	q, err := c.openExisting(ctx)
	if err != nil {
		return err
	}
	if err := q.Resume(ctx); err != nil {
		return err
	}
	if c.g.json {
		return c.writeJSON(map[string]any{"queue": q.KeyPrefix(), "paused": false})
	}
	fmt.Fprintf(c.stdout, "queue %s: pickup resumed.\n", q.KeyPrefix())
	return nil
}

type watchOpts struct {
	interval time.Duration
	count    int
}

func watchFlags(fs *flag.FlagSet) any {
	o := &watchOpts{}
	fs.DurationVar(&o.interval, "interval", 2*time.Second, "")
	fs.IntVar(&o.count, "count", 0, "")
	return o
}

func runWatch(ctx context.Context, c *cli, opts any, args []string) error {
	o := opts.(*watchOpts)
	if len(args) > 0 {
		return usagef("watch takes no arguments")
	}
	if o.interval < 100*time.Millisecond || o.count < 0 {
		return usagef("--interval must be at least 100ms and --count 0 or more")
	}
	q, err := c.openExisting(ctx)
	if err != nil {
		return err
	}
	var prev *taskqueue.Stats
	for i := 0; o.count == 0 || i < o.count; i++ {
		if i > 0 {
			select {
			case <-ctx.Done():
				return nil // Ctrl-C is how a watch ends
			case <-time.After(o.interval):
			}
		}
		ov, err := q.Stats(ctx)
		select {
		case <-ctx.Done():
			return nil // interrupted during a read
		default:
		}
		if err != nil {
			return err
		}
		if !c.g.json {
			if c.stdoutTTY {
				fmt.Fprint(c.stdout, "\x1b[H\x1b[2J")
			} else if i > 0 {
				fmt.Fprintln(c.stdout)
			}
			fmt.Fprintf(c.stdout, "%s UTC  every %s, Ctrl-C to quit\n", ov.ServerTime.UTC().Format(time.DateTime), human(o.interval))
		}
		if err := c.writeStats(q, ov, prev); err != nil {
			return err
		}
		prev = &ov
	}
	return nil
}
