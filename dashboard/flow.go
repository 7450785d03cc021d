package dashboard

import (
	"cmp"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/graflow-go/taskqueue"
)

// The flow page: a queue's flow-control limits (taskqueue.Admin.Limits) and how its flow keys stand now
// (taskqueue.Admin.FlowState), and, unless read-only, forms that set and clear limits (docs/flow-control.md).

// flowShown bounds each list of the flow page: limits, keys with running tasks, keys held back. A queue may hold
// up to taskqueue.MaxFlowLimits limits and any number of keys; the page says how many it left out.
const flowShown = 200

// flowLimitRow is one limit with what its key holds now.
type flowLimitRow struct {
	taskqueue.FlowLimit
	Label   string // "the whole queue", "every key (default)", or the key
	Running int    // slots held (a flow key's only)
	Held    string // "at limit", "over rate" or ""
}

// flowKeyRow is one key with running tasks.
type flowKeyRow struct {
	Key     string
	Running int
	Limit   int // its concurrency limit (its own or the default); 0 for none
}

// flowView is what the flow page shows; each list at most flowShown long, *More counting what it left out.
type flowView struct {
	Limits       []flowLimitRow
	LimitsMore   int
	Keys         []flowKeyRow
	KeysMore     int
	RunningTotal int
	Ready        int64
	AtLimit      []string
	AtLimitMore  int
	OverRate     []string
	OverRateMore int
	Truncated    bool   // the library read at most taskqueue.MaxFlowStateScan keys of a shard
	Error        string // the message of a refused form, shown above the forms
	Form         flowForm
	MinPeriod    time.Duration
	MaxPeriod    time.Duration
	MaxRate      int
	DefaultKey   string
}

// flowForm is what a refused form held, written back into the forms.
type flowForm struct {
	Key, N, Period string
}

func (d *Dashboard) flowPage(w http.ResponseWriter, r *http.Request, q *Queue) error {
	v, err := flowViewOf(r, q)
	if err != nil {
		return err
	}
	d.render(w, r, http.StatusOK, "flow", v)
	return nil
}

// flowViewOf reads the queue's flow state into the page's view, every list cut to flowShown.
func flowViewOf(r *http.Request, q *Queue) (*flowView, error) {
	st, err := q.Admin.FlowState(r.Context())
	if err != nil {
		return nil, err
	}
	v := &flowView{Ready: st.Ready, Truncated: st.Truncated, MinPeriod: taskqueue.MinRatePeriod, MaxPeriod: taskqueue.MaxRatePeriod,
		MaxRate: taskqueue.MaxRate, DefaultKey: taskqueue.AllFlowKeys, Form: flowForm{Period: "1s"}}
	held := map[string]string{}
	for _, k := range st.AtLimit {
		held[k] = "at limit"
	}
	for _, k := range st.OverRate {
		held[k] = "over rate"
	}
	concurrency := map[string]int{}
	for _, l := range st.Limits {
		if l.Concurrency > 0 {
			concurrency[l.Key] = l.Concurrency
		}
	}
	// The queue's own rate first, then the default, then the keys in order.
	limits := slices.Clone(st.Limits)
	rank := func(k string) int {
		switch k {
		case "":
			return 0
		case taskqueue.AllFlowKeys:
			return 1
		}
		return 2
	}
	slices.SortStableFunc(limits, func(a, b taskqueue.FlowLimit) int {
		return cmp.Or(cmp.Compare(rank(a.Key), rank(b.Key)), strings.Compare(a.Key, b.Key))
	})
	for i, l := range limits {
		if i == flowShown {
			v.LimitsMore = len(limits) - flowShown
			break
		}
		row := flowLimitRow{FlowLimit: l, Label: l.Key, Running: st.Running[l.Key], Held: held[l.Key]}
		switch l.Key {
		case "":
			row.Label = "the whole queue"
		case taskqueue.AllFlowKeys:
			row.Label = "every key (default)"
		}
		v.Limits = append(v.Limits, row)
	}
	keys := make([]flowKeyRow, 0, len(st.Running))
	for k, n := range st.Running {
		v.RunningTotal += n
		keys = append(keys, flowKeyRow{Key: k, Running: n, Limit: cmp.Or(concurrency[k], concurrency[taskqueue.AllFlowKeys])})
	}
	// The busiest keys first.
	slices.SortFunc(keys, func(a, b flowKeyRow) int {
		return cmp.Or(cmp.Compare(b.Running, a.Running), strings.Compare(a.Key, b.Key))
	})
	if len(keys) > flowShown {
		v.KeysMore = len(keys) - flowShown
		keys = keys[:flowShown]
	}
	v.Keys = keys
	v.AtLimit, v.AtLimitMore = firstN(st.AtLimit, flowShown)
	v.OverRate, v.OverRateMore = firstN(st.OverRate, flowShown)
	return v, nil
}

func firstN(s []string, n int) ([]string, int) {
	if len(s) > n {
		return s[:n], len(s) - n
	}
	return s, 0
}

// flowAction sets a concurrency limit, sets a rate limit, or clears a key's limits. Input the library refuses
// (ErrInvalidLimit, ErrInvalidFlowKey: a limit of 0, a period out of bounds, a bad key) stores nothing and is shown
// on the flow page, with status 400, as the library's message.
func (d *Dashboard) flowAction(w http.ResponseWriter, r *http.Request, q *Queue) error {
	ctx := r.Context()
	op := r.PostFormValue("op")
	form := flowForm{Key: strings.TrimSpace(r.PostFormValue("key")), N: strings.TrimSpace(r.PostFormValue("n")),
		Period: strings.TrimSpace(r.PostFormValue("period"))}
	var err error
	var msg string
	switch op {
	case "concurrency":
		var n int
		if n, err = formInt("n", form.N); err == nil {
			err = q.Admin.SetConcurrencyLimit(ctx, form.Key, n)
			msg = fmt.Sprintf("At most %d tasks of %s at once.", n, keyName(form.Key))
		}
	case "rate":
		var n int
		var per time.Duration
		if n, err = formInt("n", form.N); err == nil {
			if per, err = time.ParseDuration(form.Period); err != nil {
				err = &formError{fmt.Sprintf("period %q is not a duration such as 1s, 500ms or 1m", trim(form.Period, 40))}
			} else {
				err = q.Admin.SetRateLimit(ctx, form.Key, n, per)
				msg = fmt.Sprintf("At most %d starts of %s per %s.", n, keyName(form.Key), period(per))
			}
		}
	case "clear":
		err = q.Admin.ClearLimits(ctx, form.Key)
		msg = fmt.Sprintf("Limits of %s cleared.", keyName(form.Key))
	default:
		return badRequest("op must be concurrency, rate or clear")
	}
	var fe *formError
	if errors.Is(err, taskqueue.ErrInvalidLimit) || errors.Is(err, taskqueue.ErrInvalidFlowKey) || errors.As(err, &fe) {
		v, verr := flowViewOf(r, q)
		if verr != nil {
			return verr
		}
		v.Error, v.Form = trim(err.Error(), 500), form
		d.render(w, r, http.StatusBadRequest, "flow", v)
		return nil
	}
	if err != nil {
		return err
	}
	d.cfg.Logger.InfoContext(ctx, "dashboard: flow limits "+op, "queue", q.Name, "key", form.Key, "n", form.N, "period", form.Period)
	d.redirect(w, r, q, "/flow", trim(msg, 300))
	return nil
}

// formError is a form field the page cannot read (not a number, not a duration).
type formError struct{ msg string }

func (e *formError) Error() string { return e.msg }

func formInt(field, s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, &formError{fmt.Sprintf("%s %q is not a whole number", field, trim(s, 40))}
	}
	return n, nil
}

// keyName names a limit's key in a message.
func keyName(k string) string {
	switch k {
	case "":
		return "the whole queue"
	case taskqueue.AllFlowKeys:
		return "every key without a limit of its own"
	}
	return "key " + trim(k, 80)
}

// period shows a rate's period without its zero units: 1m, not 1m0s; 24h, not 24h0m0s.
func period(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}
