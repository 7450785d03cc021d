package main

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/graflow-go/taskqueue"
)

func (c *cli) writeJSON(v any) error {
	enc := json.NewEncoder(c.stdout)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// statsJSON is the --json form of stats and of each watch refresh.
type statsJSON struct {
	Queue            string     `json:"queue"`
	Pending          int64      `json:"pending"`
	Active           int64      `json:"active"`
	Scheduled        int64      `json:"scheduled"`
	Dead             int64      `json:"dead"`
	Cancelled        int64      `json:"cancelled"`
	Paused           bool       `json:"paused"`
	PausedAt         *time.Time `json:"paused_at,omitempty"`
	OldestPendingAge float64    `json:"oldest_pending_age_seconds"`
	Delivered        int64      `json:"delivered_total"`
	PickupsPerSecond *float64   `json:"pickups_per_second,omitempty"`
	IntervalSeconds  float64    `json:"interval_seconds,omitempty"`
	ServerTime       time.Time  `json:"server_time"`
}

// writeStats shows an overview; with an earlier reading, the pickup rate between the two.
func (c *cli) writeStats(q *queue, o taskqueue.Stats, earlier *taskqueue.Stats) error {
	var rate *float64
	var interval time.Duration
	if earlier != nil {
		interval = o.ServerTime.Sub(earlier.ServerTime)
		r := 0.0
		if interval > 0 {
			r = math.Round(float64(o.Delivered-earlier.Delivered)/interval.Seconds()*10) / 10
		}
		rate = &r
	}
	if c.g.json {
		s := statsJSON{Queue: q.KeyPrefix(), Pending: o.Pending, Active: o.Active, Scheduled: o.Scheduled, Dead: o.Dead,
			Cancelled: o.Cancelled, Paused: o.Paused, OldestPendingAge: math.Round(o.OldestPendingAge.Seconds()*1000) / 1000,
			Delivered: o.Delivered, PickupsPerSecond: rate, IntervalSeconds: math.Round(interval.Seconds()*1000) / 1000,
			ServerTime: o.ServerTime.UTC()}
		if o.Paused && !o.PausedAt.IsZero() {
			at := o.PausedAt.UTC()
			s.PausedAt = &at
		}
		return c.writeJSON(s)
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "queue\t%s (%s)\n", q.KeyPrefix(), q.where)
	switch {
	case o.Paused && !o.PausedAt.IsZero():
		fmt.Fprintf(tw, "pickup\tPAUSED since %s (%s ago); 'taskqueue resume' restarts it\n",
			stamp(o.PausedAt), human(o.ServerTime.Sub(o.PausedAt)))
	case o.Paused:
		fmt.Fprintf(tw, "pickup\tPAUSED; 'taskqueue resume' restarts it\n")
	default:
		fmt.Fprintf(tw, "pickup\trunning\n")
	}
	if o.Pending > 0 {
		fmt.Fprintf(tw, "pending\t%d (oldest %s)\n", o.Pending, human(o.OldestPendingAge))
	} else {
		fmt.Fprintf(tw, "pending\t0\n")
	}
	fmt.Fprintf(tw, "active\t%d\nscheduled\t%d\ndead\t%d\n", o.Active, o.Scheduled, o.Dead)
	if o.Cancelled > 0 {
		fmt.Fprintf(tw, "cancelled\t%d (records kept; 'taskqueue list cancelled')\n", o.Cancelled)
	}
	if rate != nil {
		fmt.Fprintf(tw, "pickups/s\t%.1f (over %s)\n", *rate, human(interval))
	}
	return tw.Flush()
}

// taskJSON is the --json form of a task in list and show.
type taskJSON struct {
	TaskID        string          `json:"task_id"`
	State         taskqueue.State `json:"state"`
	DueAt         *time.Time      `json:"due_at,omitempty"`
	LeaseDeadline *time.Time      `json:"lease_deadline,omitempty"`
	DiedAt        *time.Time      `json:"died_at,omitempty"`
	CancelledAt   *time.Time      `json:"cancelled_at,omitempty"`
	Reason        string          `json:"reason,omitempty"`
	Envelope      json.RawMessage `json:"envelope,omitempty"`     // the seed's record of the stored JSON (TaskInfo.Record), when it is valid JSON
	EnvelopeRaw   *string         `json:"envelope_raw,omitempty"` // the stored bytes otherwise
}

func toJSON(t taskqueue.TaskInfo) taskJSON {
	out := taskJSON{TaskID: t.TaskID, State: t.State, Reason: t.Reason}
	if !t.Score.IsZero() {
		at := t.Score.UTC()
		switch t.State {
		case taskqueue.StateScheduled, taskqueue.StateRetry:
			out.DueAt = &at
		case taskqueue.StateActive:
			out.LeaseDeadline = &at
		case taskqueue.StateDead:
			out.DiedAt = &at
		case taskqueue.StateCancelled:
			out.CancelledAt = &at
		}
	}
	if json.Valid([]byte(t.Record)) {
		out.Envelope = json.RawMessage(t.Record)
	} else if t.Envelope != "" {
		raw := t.Envelope
		out.EnvelopeRaw = &raw
	}
	return out
}

// listJSON is the --json form of list.
type listJSON struct {
	Queue  string          `json:"queue"`
	State  taskqueue.State `json:"state"`
	Offset int             `json:"offset"`
	Limit  int             `json:"limit"`
	Total  int64           `json:"total"`
	Tasks  []taskJSON      `json:"tasks"`
}

func (c *cli) writeList(q *queue, state taskqueue.State, o *listOpts, total int64, tasks []taskqueue.TaskInfo, now time.Time) error {
	if c.g.json {
		out := listJSON{Queue: q.KeyPrefix(), State: state, Offset: o.offset, Limit: o.limit, Total: total, Tasks: []taskJSON{}}
		for _, t := range tasks {
			out.Tasks = append(out.Tasks, toJSON(t))
		}
		return c.writeJSON(out)
	}
	if len(tasks) == 0 {
		if o.offset > 0 && total > 0 {
			fmt.Fprintf(c.stdout, "no %s tasks from offset %d (%d in all)\n", state, o.offset, total)
		} else {
			fmt.Fprintf(c.stdout, "no %s tasks\n", state)
		}
		return nil
	}
	fmt.Fprintf(c.stdout, "%s tasks %d-%d of %d, oldest first\n", state, o.offset+1, o.offset+len(tasks), max(total, int64(o.offset+len(tasks))))
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	when := map[taskqueue.State]string{taskqueue.StatePending: "AGE", taskqueue.StateScheduled: "DUE",
		taskqueue.StateActive: "LEASE", taskqueue.StateDead: "DIED", taskqueue.StateCancelled: "CANCELLED"}[state]
	row := func(cells ...string) {
		if state != taskqueue.StateDead {
			cells = cells[:4] // only dead letters have a reason
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	row("ID", when, "FUNCTION", "ATTEMPT", "REASON")
	for _, t := range tasks {
		s := summarize(t.Envelope)
		w := "-"
		switch {
		case state == taskqueue.StatePending && !s.created.IsZero():
			w = human(now.Sub(s.created))
		case state == taskqueue.StateDead || state == taskqueue.StateCancelled:
			w = human(now.Sub(t.Score)) + " ago"
		case !t.Score.IsZero():
			w = relative(t.Score, now)
		}
		row(clip(t.TaskID, 64), w, clip(s.function, 60), s.attempt, clip(t.Reason, 80))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if next := o.offset + len(tasks); int64(next) < total {
		fmt.Fprintf(c.stdout, "next page: taskqueue list %s --offset %d --limit %d\n", state, next, o.limit)
	}
	return nil
}

// summary is what a table shows of an envelope.
type summary struct {
	function string // module.name of a reference, else the strategy
	attempt  string
	created  time.Time
	priority int // the envelope's "priority": 0 for the default level (docs/flow-control.md)
}

// summarize reads the few fields a table shows, leniently: the CLI shows what is stored, readable or not.
func summarize(env string) summary {
	var e struct {
		CreatedAt      float64 `json:"created_at"`
		Attempt        int     `json:"attempt"`
		Priority       int     `json:"priority"`
		Strategy       string  `json:"strategy"`
		SerializedTask struct {
			Strategy string          `json:"strategy"`
			Payload  json.RawMessage `json:"payload"`
		} `json:"serialized_task"`
	}
	if env == "" {
		return summary{function: "(gone)", attempt: "-"}
	}
	if err := json.Unmarshal([]byte(env), &e); err != nil {
		return summary{function: "(unreadable)", attempt: "-"}
	}
	s := summary{function: cmp.Or(e.SerializedTask.Strategy, e.Strategy), attempt: strconv.Itoa(e.Attempt), priority: e.Priority}
	var ref struct{ Module, Name string }
	if json.Unmarshal(e.SerializedTask.Payload, &ref) == nil && ref.Module != "" && ref.Name != "" {
		s.function = ref.Module + "." + ref.Name
	}
	if e.CreatedAt > 0 {
		s.created = time.UnixMilli(int64(math.Round(e.CreatedAt * 1000)))
	}
	return s
}

func (c *cli) writeShow(t taskqueue.TaskInfo, now time.Time) error {
	if c.g.json {
		return c.writeJSON(toJSON(t))
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "task\t%s\nstate\t%s\n", clip(t.TaskID, 256), t.State)
	if !t.Score.IsZero() {
		label := map[taskqueue.State]string{taskqueue.StateScheduled: "due", taskqueue.StateRetry: "due", taskqueue.StateActive: "lease ends",
			taskqueue.StateDead: "died"}[t.State]
		fmt.Fprintf(tw, "%s\t%s (%s)\n", label, stamp(t.Score), relative(t.Score, now))
	}
	s := summarize(t.Envelope)
	if !s.created.IsZero() {
		fmt.Fprintf(tw, "created\t%s (%s ago, producer's clock)\n", stamp(s.created), human(now.Sub(s.created)))
	}
	if s.priority != 0 {
		fmt.Fprintf(tw, "priority\t%s\n", taskqueue.Priority(s.priority))
	}
	if t.Reason != "" {
		fmt.Fprintf(tw, "reason\t%s\n", clip(t.Reason, 4096))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	// The seed's record: the stored envelope with what it leaves out because it is stored elsewhere (task_id,
	// status, strategy) written back in; the stored bytes when they do not decode.
	var pretty bytes.Buffer
	if err := json.Indent(&pretty, []byte(t.Record), "", "  "); err != nil {
		fmt.Fprintf(c.stdout, "envelope (not valid JSON: %v), as stored:\n%s\n", err, clip(t.Envelope, 64<<10))
		return nil
	}
	fmt.Fprintf(c.stdout, "envelope:\n%s\n", escapeC1(pretty.String()))
	return nil
}

// escapeC1 writes the C1 control characters (U+0080 to U+009F, which JSON leaves unescaped and some terminals
// obey) of a JSON text as \u escapes: the text stays valid JSON of the same value.
func escapeC1(s string) string {
	if !strings.ContainsFunc(s, isC1) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if isC1(r) {
			fmt.Fprintf(&b, `\u%04x`, r)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

func isC1(r rune) bool { return r >= 0x80 && r < 0xa0 }

func (c *cli) writeDead(r deadResult) error {
	if c.g.json {
		return c.writeJSON(r)
	}
	switch {
	case r.DryRun:
		fmt.Fprintf(c.stdout, "dry run: %d of %d dead letters would be %s", r.Matched, r.Scanned, pastTense(r.Action))
		if len(r.Sample) > 0 {
			ids := make([]string, len(r.Sample))
			for i, id := range r.Sample {
				ids[i] = clip(id, 64)
			}
			fmt.Fprintf(c.stdout, ", such as: %s", strings.Join(ids, " "))
		}
		fmt.Fprintln(c.stdout)
	case r.Scanned == 0 && r.Done == 0:
		fmt.Fprintf(c.stdout, "no dead letters in queue %s\n", r.Queue)
	default:
		fmt.Fprintf(c.stdout, "%s %d dead letters (%d looked at) in queue %s\n", pastTense(r.Action), r.Done, r.Scanned, r.Queue)
	}
	return nil
}

// progress draws a bulk action's progress on standard error: a redrawn bar on a terminal, else a line at most
// every second and one at the end.
type progress struct {
	w      io.Writer
	tty    bool
	label  string // "requeue"
	done   string // "requeued"
	last   time.Time
	drawn  bool
	latest taskqueue.Progress
}

func (c *cli) newProgress(label, done string) *progress {
	return &progress{w: c.stderr, tty: c.stderrTTY, label: label, done: done}
}

func (p *progress) update(pr taskqueue.Progress) {
	p.latest = pr
	end := pr.Scanned >= pr.Total
	if p.tty {
		const width = 30
		filled := width
		if pr.Total > 0 {
			filled = min(width, pr.Scanned*width/pr.Total)
		}
		fmt.Fprintf(p.w, "\r%s [%s%s] %d/%d, %d %s", p.label, strings.Repeat("#", filled), strings.Repeat(".", width-filled),
			pr.Scanned, pr.Total, pr.Done, p.done)
		p.drawn = true
		return
	}
	if end || time.Since(p.last) >= time.Second {
		fmt.Fprintf(p.w, "%s: %d/%d looked at, %d %s\n", p.label, pr.Scanned, pr.Total, pr.Done, p.done)
		p.last = time.Now()
	}
}

func (p *progress) finish() {
	if p.tty && p.drawn {
		fmt.Fprintln(p.w)
	}
}

// human formats a duration for people: milliseconds below a second, then whole seconds, minutes past an hour,
// hours past two days.
func human(d time.Duration) string {
	if d < 0 {
		d = -d
	}
	unit := func(n time.Duration, big, small string, m time.Duration) string {
		hi, lo := n/m, n%m
		switch {
		case hi == 0:
			return fmt.Sprintf("%d%s", lo, small)
		case lo == 0:
			return fmt.Sprintf("%d%s", hi, big)
		}
		return fmt.Sprintf("%d%s%d%s", hi, big, lo, small)
	}
	switch {
	case d == 0:
		return "0s"
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Hour-time.Second/2:
		return unit(d.Round(time.Second)/time.Second, "m", "s", 60)
	case d < 48*time.Hour-time.Minute/2:
		return unit(d.Round(time.Minute)/time.Minute, "h", "m", 60)
	}
	return unit(d.Round(time.Hour)/time.Hour, "d", "h", 24)
}

// relative says when t is, seen from now.
func relative(t, now time.Time) string {
	if t.After(now) {
		return "in " + human(t.Sub(now))
	}
	return human(now.Sub(t)) + " ago"
}

// stamp formats a server time in UTC, to the millisecond.
func stamp(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z07:00") }
