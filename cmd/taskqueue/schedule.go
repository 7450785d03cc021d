package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/graflow-go/taskqueue"
)

// The schedule commands join the command table before "help" (commands.go's init runs first: files initialize in
// name order).
func init() {
	cmd := &command{name: "schedule", args: "ACTION [NAME]", summary: "periodic schedules: list, create, update, pause, resume, trigger, delete",
		flags: scheduleFlags, run: runSchedule,
		help: `Manages the queue's periodic schedules (docs/periodic.md). Schedules live in Redis; every
worker binary runs a scheduler that fires each tick exactly once, as a task with the id
sched:<name>:<tick>.

Actions:
  list                 every schedule with its timing, last and next run (also: taskqueue schedules)
  show NAME            one schedule, with its task template
  create NAME          a new schedule: --cron or --every, and --task
  update NAME          replace a schedule's definition (same flags as create); history and pause kept
  pause NAME           stop firing until resume
  resume NAME          fire again, from the next tick after now (the paused ticks are skipped)
  trigger NAME         enqueue one run now, beside the ticks; prints the task id
  delete NAME          remove the schedule (tasks it enqueued stay)

Flags of create and update:
  --cron EXPR          cron expression: 5 fields (minute hour day month weekday), 6 with seconds
                       first, or @hourly, @daily, @weekly, @monthly, @yearly
  --tz ZONE            IANA time zone of --cron (default UTC), e.g. Europe/Berlin
  --every DURATION     fixed interval instead of --cron, at least 1s
  --task MODULE.NAME   the function the tasks run (a reference a worker registered)
  --args JSON          its arguments (default none)
  --resolver-id ID     the resolver of the tasks (default "default")
  --misfire POLICY     skip (default: ticks later than --grace are skipped) or catch-up
  --grace DURATION     how late a tick may fire under skip (default 1m)
  --max-catch-up N     the most missed ticks catch-up fires (default 10)
  --max-retries N      retries of each task (default: the worker's)
  --timeout DURATION   timeout of each run (default: the worker's)

A schedule whose stored record this version cannot read is listed as UNREADABLE with the
reason; schedulers skip it and fire the others.

Examples:
  taskqueue schedule create nightly-report --cron "30 2 * * *" --tz Europe/Berlin --task reports.nightly
  taskqueue schedule create heartbeat --every 30s --task ops.ping --args '{"target":"db"}'
  taskqueue schedule list
  taskqueue schedule trigger nightly-report
  taskqueue schedule pause heartbeat
`}
	list := &command{name: "schedules", summary: "list the periodic schedules (schedule list)", run: func(ctx context.Context, c *cli, _ any, args []string) error {
		if len(args) > 0 {
			return usagef("schedules takes no arguments")
		}
		return runSchedule(ctx, c, &scheduleOpts{resolverID: taskqueue.DefaultResolverID}, []string{"list"})
	}, help: `Lists the periodic schedules: the same as 'taskqueue schedule list'.

Examples:
  taskqueue schedules
  taskqueue schedules --json | jq -r '.schedules[] | select(.paused) | .name'
`}
	at := slices.IndexFunc(commands, func(c *command) bool { return c.name == "help" })
	if at < 0 {
		at = len(commands)
	}
	commands = slices.Insert(commands, at, cmd, list)
}

type scheduleOpts struct {
	cron, tz, task, args, resolverID, misfire string
	every, grace, timeout                     time.Duration
	maxCatchUp, maxRetries                    int
}

func scheduleFlags(fs *flag.FlagSet) any {
	o := &scheduleOpts{}
	fs.StringVar(&o.cron, "cron", "", "")
	fs.StringVar(&o.tz, "tz", "", "")
	fs.DurationVar(&o.every, "every", 0, "")
	fs.StringVar(&o.task, "task", "", "")
	fs.StringVar(&o.args, "args", "", "")
	fs.StringVar(&o.resolverID, "resolver-id", taskqueue.DefaultResolverID, "")
	fs.StringVar(&o.misfire, "misfire", "skip", "")
	fs.DurationVar(&o.grace, "grace", 0, "")
	fs.IntVar(&o.maxCatchUp, "max-catch-up", 0, "")
	fs.IntVar(&o.maxRetries, "max-retries", 0, "")
	fs.DurationVar(&o.timeout, "timeout", 0, "")
	return o
}

func runSchedule(ctx context.Context, c *cli, opts any, args []string) error {
	o := opts.(*scheduleOpts)
	if len(args) == 0 {
		return usagef("schedule takes an action: list, show, create, update, pause, resume, trigger or delete")
	}
	action := args[0]
	switch action {
	case "list":
		if len(args) != 1 {
			return usagef("schedule list takes no name")
		}
	case "show", "create", "update", "pause", "resume", "trigger", "delete":
		if len(args) != 2 {
			return usagef("schedule %s takes one schedule name", action)
		}
	default:
		return usagef("unknown schedule action %q", clip(action, 40))
	}
	var def *taskqueue.Schedule
	if action == "create" || action == "update" {
		var err error
		if def, err = o.schedule(args[1]); err != nil {
			return err
		}
	}
	q, err := c.scheduleQueue(ctx, o.resolverID)
	if err != nil {
		return err
	}
	switch action {
	case "list":
		list, err := q.List(ctx)
		if err != nil {
			return err
		}
		now, err := q.rq.ServerTime(ctx)
		if err != nil {
			return err
		}
		return c.writeSchedules(q.rq.KeyPrefix(), list, now)
	case "show":
		info, err := q.Get(ctx, args[1])
		if err != nil {
			return scheduleErr(err)
		}
		now, err := q.rq.ServerTime(ctx)
		if err != nil {
			return err
		}
		return c.writeSchedules(q.rq.KeyPrefix(), []taskqueue.ScheduleInfo{*info}, now)
	case "create":
		err = q.Create(ctx, def)
	case "update":
		err = q.Update(ctx, def)
	case "delete":
		err = q.Delete(ctx, args[1])
	case "pause", "resume":
		var changed bool
		if action == "pause" {
			changed, err = q.Pause(ctx, args[1])
		} else {
			changed, err = q.Resume(ctx, args[1])
		}
		if err == nil && !changed {
			fmt.Fprintf(c.stderr, "taskqueue: schedule %s was already %s\n", clip(args[1], 64), map[string]string{"pause": "paused", "resume": "running"}[action])
		}
	case "trigger":
		var id string
		if id, err = q.Trigger(ctx, args[1]); err == nil {
			if c.g.json {
				return c.writeJSON(map[string]string{"schedule": args[1], "task_id": id})
			}
			fmt.Fprintln(c.stdout, id)
			return nil
		}
	}
	if err != nil {
		return scheduleErr(err)
	}
	if c.g.json {
		return c.writeJSON(map[string]string{"schedule": args[1], "action": action})
	}
	fmt.Fprintf(c.stdout, "schedule %s: %s\n", args[1], map[string]string{"create": "created", "update": "updated",
		"delete": "deleted", "pause": "paused", "resume": "resumed"}[action])
	return nil
}

// scheduleErr turns a missing schedule into exit 3 and a bad definition into exit 2.
func scheduleErr(err error) error {
	switch {
	case errors.Is(err, taskqueue.ErrScheduleNotFound):
		return &codeError{exitNotFound, err}
	case errors.Is(err, taskqueue.ErrInvalidSchedule), errors.Is(err, taskqueue.ErrScheduleExists):
		return usagef("%v", err)
	}
	return err
}

// schedule builds the definition that create and update store.
func (o *scheduleOpts) schedule(name string) (*taskqueue.Schedule, error) {
	module, fn, ok := strings.Cut(o.task, ".")
	if i := strings.LastIndex(o.task, "."); i > 0 {
		module, fn, ok = o.task[:i], o.task[i+1:], true
	}
	if !ok || module == "" || fn == "" {
		return nil, usagef("--task must name a function as MODULE.NAME")
	}
	var args any
	if o.args != "" {
		var raw json.RawMessage
		if err := json.Unmarshal([]byte(o.args), &raw); err != nil {
			return nil, usagef("--args is not valid JSON: %v", err)
		}
		args = raw
	}
	s := &taskqueue.Schedule{Name: name, Cron: o.cron, TimeZone: o.tz, Every: o.every, MisfireGrace: o.grace,
		MaxCatchUp: o.maxCatchUp, Task: &taskqueue.TaskSpec{Executable: taskqueue.Ref(module, fn, args), ResolverID: o.resolverID,
			MaxRetries: o.maxRetries, Timeout: o.timeout}}
	switch o.misfire {
	case "skip":
	case "catch-up", "catch_up":
		s.Misfire = taskqueue.MisfireCatchUp
	default:
		return nil, usagef("--misfire must be skip or catch-up")
	}
	return s, nil
}

// scheduleQueue is the schedules of a queue with a registry that serializes references (the CLI runs no task, so
// it needs none of the workers' functions).
type scheduleQueue struct {
	*taskqueue.Schedules
	rq *queue
}

func (c *cli) scheduleQueue(ctx context.Context, resolverID string) (*scheduleQueue, error) {
	q, err := c.open(ctx)
	if err != nil {
		return nil, err
	}
	reg := taskqueue.NewResolverRegistry()
	if err := reg.Register(resolverID, taskqueue.NewReferenceResolver()); err != nil {
		return nil, usagef("--resolver-id: %v", err)
	}
	rq, err := taskqueue.NewRedisTaskQueue(q.rdb, c.g.keyPrefix, reg, &taskqueue.RedisConfig{DefaultResolverID: resolverID,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return nil, err
	}
	sc, err := taskqueue.NewSchedules(rq)
	if err != nil {
		return nil, err
	}
	return &scheduleQueue{Schedules: sc, rq: q}, nil
}

// scheduleJSON is one schedule of list --json.
type scheduleJSON struct {
	Name       string            `json:"name"`
	Cron       string            `json:"cron,omitempty"`
	TimeZone   string            `json:"tz,omitempty"`
	Every      string            `json:"every,omitempty"`
	Task       string            `json:"task,omitempty"`
	Misfire    string            `json:"misfire,omitempty"`
	Paused     bool              `json:"paused"`
	Next       *time.Time        `json:"next,omitempty"`
	LastTick   *time.Time        `json:"last_tick,omitempty"`
	LastRun    *time.Time        `json:"last_run,omitempty"`
	LastTaskID string            `json:"last_task_id,omitempty"`
	Revision   int               `json:"revision"`
	Error      string            `json:"error,omitempty"`
	Template   *json.RawMessage  `json:"payload,omitempty"`
	Meta       map[string]string `json:"meta,omitempty"`
}

func optTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

// taskName is module.name of a reference template, else its strategy.
func taskName(s *taskqueue.TaskSpec) string {
	if s == nil || s.SerializedTask == nil {
		return ""
	}
	var p struct{ Module, Name string }
	if s.SerializedTask.Strategy == "reference" && json.Unmarshal(s.SerializedTask.Payload, &p) == nil && p.Name != "" {
		return p.Module + "." + p.Name
	}
	return s.SerializedTask.Strategy
}

func (c *cli) writeSchedules(prefix string, list []taskqueue.ScheduleInfo, now time.Time) error {
	if c.g.json {
		out := make([]scheduleJSON, 0, len(list))
		for i := range list {
			in := &list[i]
			j := scheduleJSON{Name: in.Schedule.Name, Cron: in.Schedule.Cron, TimeZone: in.Schedule.TimeZone, Paused: in.Paused,
				Next: optTime(in.Next), LastTick: optTime(in.LastTick), LastRun: optTime(in.LastRun), LastTaskID: in.LastTaskID,
				Revision: in.Revision, Task: taskName(in.Schedule.Task)}
			if in.Schedule.Every > 0 {
				j.Every = in.Schedule.Every.String()
			}
			if in.Err != nil {
				j.Error = in.Err.Error()
			} else {
				j.Misfire = in.Schedule.Misfire.String()
				p := in.Schedule.Task.SerializedTask.Payload
				j.Template, j.Meta = &p, in.Schedule.Task.Metadata
			}
			out = append(out, j)
		}
		return c.writeJSON(map[string]any{"queue": prefix, "server_time": now.UTC(), "schedules": out})
	}
	if len(list) == 0 {
		fmt.Fprintf(c.stdout, "no schedules in queue %s\n", prefix)
		return nil
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tWHEN\tTASK\tSTATE\tLAST RUN\tNEXT RUN")
	for i := range list {
		in := &list[i]
		if in.Err != nil {
			fmt.Fprintf(tw, "%s\t-\t-\tUNREADABLE\t%s\t%s\n", clip(in.Schedule.Name, 64), relTime(in.LastRun, now), clip(in.Err.Error(), 200))
			continue
		}
		when := in.Schedule.Cron
		if in.Schedule.TimeZone != "" {
			when += " (" + in.Schedule.TimeZone + ")"
		}
		if in.Schedule.Every > 0 {
			when = "every " + in.Schedule.Every.String()
		}
		state, next := "active", relTime(in.Next, now)
		if in.Paused {
			state, next = "paused", "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", clip(in.Schedule.Name, 64), when, clip(taskName(in.Schedule.Task), 64), state,
			relTime(in.LastRun, now), next)
	}
	return tw.Flush()
}

// relTime shows a server time with how far it is from now.
func relTime(t, now time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := t.Sub(now)
	rel := "in " + human(d)
	if d < 0 {
		rel = human(-d) + " ago"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z") + " (" + rel + ")"
}
