package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/graflow-go/taskqueue"
)

// The limits command joins the command table before "help", as schedule does.
func init() {
	cmd := &command{name: "limits", args: "ACTION [KEY]", summary: "per-key concurrency and rate limits: list, set, clear",
		flags: limitsFlags, run: runLimits,
		help: `Shows and changes the flow limits of the queue (docs/flow-control.md). A task's flow key
(TaskSpec.FlowKey: a tenant, a customer) decides its limits: at most N of a key leased
at once (--concurrency), at most N starts of a key per period (--rate N/PERIOD). KEY "*"
sets the default of every key without a limit of its own; --queue sets the rate of the
whole queue. Changes take effect at the next pickup; tasks running keep running.

Actions:
  list               the limits, the slots held per key, the keys held back
  set KEY            set --concurrency and/or --rate of KEY (or --queue)
  clear KEY          remove both limits of KEY (or of the queue's rate: --queue)

Flags:
  --concurrency N    most tasks of the key leased at once (1 or more)
  --rate N/PERIOD    most starts per period, e.g. 100/1s (period 10ms to 24h)
  --queue            the queue's own rate instead of a KEY

Examples:
  taskqueue limits set tenant-42 --concurrency 3
  taskqueue limits set '*' --concurrency 10 --rate 100/1s
  taskqueue limits set --queue --rate 1000/1m
  taskqueue limits list --json
`}
	at := slices.IndexFunc(commands, func(c *command) bool { return c.name == "help" })
	if at < 0 {
		at = len(commands)
	}
	commands = slices.Insert(commands, at, cmd)
}

type limitsOpts struct {
	concurrency int
	rate        string
	queue       bool
}

func limitsFlags(fs *flag.FlagSet) any {
	o := &limitsOpts{}
	fs.IntVar(&o.concurrency, "concurrency", 0, "")
	fs.StringVar(&o.rate, "rate", "", "")
	fs.BoolVar(&o.queue, "queue", false, "")
	return o
}

// parseRate reads "N/PERIOD" (PERIOD a Go duration such as 1s or 500ms).
func parseRate(s string) (int, time.Duration, error) {
	ns, ps, ok := strings.Cut(s, "/")
	n, err := strconv.Atoi(ns)
	if !ok || err != nil {
		return 0, 0, usagef("--rate %q must be N/PERIOD, e.g. 100/1s", clip(s, 40))
	}
	p, err := time.ParseDuration(ps)
	if err != nil {
		return 0, 0, usagef("--rate %q: the period must be a duration such as 1s", clip(s, 40))
	}
	return n, p, nil
}

func runLimits(ctx context.Context, c *cli, opts any, args []string) error {
	o := opts.(*limitsOpts)
	if len(args) == 0 {
		return usagef("limits takes an action: list, set or clear")
	}
	action, key := args[0], ""
	want := 1
	if action != "list" && !o.queue {
		want = 2
	}
	switch action {
	case "list", "set", "clear":
		if len(args) != want {
			return usagef("limits %s takes %d argument(s) here", action, want-1)
		}
	default:
		return usagef("unknown limits action %q", clip(action, 40))
	}
	if want == 2 {
		key = args[1]
	}
	q, err := c.open(ctx)
	if err != nil {
		return err
	}
	switch action {
	case "list":
		st, err := q.FlowState(ctx)
		if err != nil {
			return err
		}
		return c.writeLimits(st)
	case "set":
		if o.concurrency == 0 && o.rate == "" {
			return usagef("limits set takes --concurrency, --rate or both")
		}
		if o.queue && o.concurrency != 0 {
			return usagef("--queue takes --rate only")
		}
		if o.rate != "" {
			n, p, err := parseRate(o.rate)
			if err != nil {
				return err
			}
			if err := limitErr(q.SetRateLimit(ctx, key, n, p)); err != nil {
				return err
			}
		}
		if o.concurrency != 0 {
			if err := limitErr(q.SetConcurrencyLimit(ctx, key, o.concurrency)); err != nil {
				return err
			}
		}
	case "clear":
		if err := limitErr(q.ClearLimits(ctx, key)); err != nil {
			return err
		}
	}
	if c.g.json {
		return c.writeJSON(map[string]any{"key": key, "queue": o.queue, action: true})
	}
	fmt.Fprintf(c.stdout, "limits of %s: %s\n", limitName(key), map[string]string{"set": "set", "clear": "cleared"}[action])
	return nil
}

// limitErr turns a limit refused for its input into a usage error (exit 2).
func limitErr(err error) error {
	if errors.Is(err, taskqueue.ErrInvalidLimit) || errors.Is(err, taskqueue.ErrInvalidFlowKey) {
		return usagef("%v", err)
	}
	return err
}

func limitName(key string) string {
	switch key {
	case "":
		return "the queue"
	case taskqueue.AllFlowKeys:
		return "every key (default)"
	}
	return clip(key, 64)
}

// limitJSON is the --json form of a limit.
type limitJSON struct {
	Key         string `json:"key"`
	Concurrency int    `json:"concurrency,omitempty"`
	Rate        int    `json:"rate,omitempty"`
	PeriodMS    int64  `json:"period_ms,omitempty"`
}

func (c *cli) writeLimits(st taskqueue.FlowState) error {
	if c.g.json {
		out := make([]limitJSON, len(st.Limits))
		for i, l := range st.Limits {
			out[i] = limitJSON{l.Key, l.Concurrency, l.Rate, l.Period.Milliseconds()}
		}
		return c.writeJSON(map[string]any{"limits": out, "running": st.Running, "ready": st.Ready,
			"at_limit": st.AtLimit, "over_rate": st.OverRate, "truncated": st.Truncated})
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tCONCURRENCY\tRATE\tRUNNING")
	shown := map[string]bool{}
	for _, l := range st.Limits {
		conc, rate := "-", "-"
		if l.Concurrency > 0 {
			conc = strconv.Itoa(l.Concurrency)
		}
		if l.Rate > 0 {
			rate = fmt.Sprintf("%d/%s", l.Rate, l.Period)
		}
		name := l.Key
		if name == "" {
			name = "(queue)"
		}
		shown[l.Key] = true
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\n", clip(name, 64), conc, rate, st.Running[l.Key])
	}
	keys := make([]string, 0, len(st.Running))
	for k := range st.Running {
		if !shown[k] {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(tw, "%s\t-\t-\t%d\n", clip(k, 64), st.Running[k])
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "keyed tasks ready: %d; keys at their limit: %d; keys over their rate: %d\n", st.Ready, len(st.AtLimit), len(st.OverRate))
	return nil
}
