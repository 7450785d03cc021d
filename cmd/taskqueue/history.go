package main

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/graflow-go/taskqueue"
)

// The history command joins the command table before "help", as locks does.
func init() {
	cmd := &command{name: "history", summary: "throughput and latency per minute, from the history workers keep",
		flags: historyFlags, run: runHistory,
		help: `Shows the queue's history, one row per minute, oldest first, the current (partial) minute
last: tasks enqueued, handler runs started, succeeded, failed (to be retried) and dead-lettered,
and the pickup latency (enqueue to handler start) and run time quantiles. Workers flush what
they count every few seconds (RedisConfig.HistoryInterval), so the last minute fills in late.
See docs/observability.md.

Flags:
  --minutes N  how many minutes to show (default 15, at most 1440)

Examples:
  taskqueue history
  taskqueue history --minutes 60 --json | jq '.[] | .succeeded'
`}
	at := slices.IndexFunc(commands, func(c *command) bool { return c.name == "help" })
	if at < 0 {
		at = len(commands)
	}
	commands = slices.Insert(commands, at, cmd)
}

type historyOpts struct{ minutes int }

func historyFlags(fs *flag.FlagSet) any {
	o := &historyOpts{}
	fs.IntVar(&o.minutes, "minutes", 15, "")
	return o
}

// historyJSON is the --json form of one minute.
type historyJSON struct {
	At            time.Time `json:"at"`
	Enqueued      int64     `json:"enqueued"`
	Started       int64     `json:"started"`
	Succeeded     int64     `json:"succeeded"`
	Failed        int64     `json:"failed"`
	Dead          int64     `json:"dead"`
	PickupP50Secs float64   `json:"pickup_p50_seconds"`
	PickupP99Secs float64   `json:"pickup_p99_seconds"`
	RunP50Seconds float64   `json:"run_p50_seconds"`
	RunP99Seconds float64   `json:"run_p99_seconds"`
}

func runHistory(ctx context.Context, c *cli, opts any, args []string) error {
	o := opts.(*historyOpts)
	if len(args) > 0 {
		return usagef("history takes no arguments")
	}
	if o.minutes < 1 || o.minutes > 1440 {
		return usagef("--minutes must be between 1 and 1440")
	}
	q, err := c.openExisting(ctx)
	if err != nil {
		return err
	}
	ps, err := q.History(ctx, time.Duration(o.minutes)*time.Minute)
	if err != nil {
		return err
	}
	if c.g.json {
		out := make([]historyJSON, len(ps))
		for i, p := range ps {
			out[i] = historyJSON{At: p.At.UTC(), Enqueued: p.Enqueued, Started: p.Started, Succeeded: p.Succeeded,
				Failed: p.Failed, Dead: p.Dead, PickupP50Secs: p.PickupP50.Seconds(), PickupP99Secs: p.PickupP99.Seconds(),
				RunP50Seconds: p.RunP50.Seconds(), RunP99Seconds: p.RunP99.Seconds()}
		}
		return c.writeJSON(out)
	}
	return writeHistory(c, ps)
}

func writeHistory(c *cli, ps []taskqueue.HistoryPoint) error {
	tw := tabwriter.NewWriter(c.stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, strings.Join([]string{"MINUTE (UTC)", "ENQUEUED", "STARTED", "SUCCEEDED", "FAILED", "DEAD", "PICKUP P50", "P99", "RUN P50", "P99", ""}, "\t"))
	n := func(v int64) string { return strconv.FormatInt(v, 10) }
	for _, p := range ps {
		fmt.Fprintln(tw, strings.Join([]string{p.At.UTC().Format("2006-01-02 15:04"), n(p.Enqueued), n(p.Started),
			n(p.Succeeded), n(p.Failed), n(p.Dead), latency(p.PickupP50), latency(p.PickupP99), latency(p.RunP50),
			latency(p.RunP99), ""}, "\t"))
	}
	return tw.Flush()
}

// latency formats a quantile: "-" when the minute has none, microseconds below a millisecond, then milliseconds
// with one decimal below a second.
func latency(d time.Duration) string {
	switch {
	case d == 0:
		return "-"
	case d < time.Millisecond:
		return d.Round(time.Microsecond).String()
	case d < time.Second:
		return d.Round(100 * time.Microsecond).String()
	}
	return human(d)
}
