package taskqueuetest

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/graflow-go/taskqueue"
)

// MatchOption narrows which enqueued tasks match in [RequireEnqueued], [RequireNotEnqueued],
// [RequireNoneEnqueued] and [FindEnqueued].
type MatchOption func(*match)

type match struct {
	taskID     string
	group      *string
	delay      *time.Duration
	states     []taskqueue.State
	maxRetries *int
	meta       map[string]string
	comparer   any // func(got, want T) bool
	describe   []string
}

// WithTaskID matches the task with this id.
func WithTaskID(id string) MatchOption {
	return func(m *match) { m.taskID = id; m.describe = append(m.describe, "id "+id) }
}

// WithGroup matches tasks of this group id (TaskSpec.GroupID); "" matches tasks without one.
func WithGroup(groupID string) MatchOption {
	return func(m *match) { m.group = &groupID; m.describe = append(m.describe, fmt.Sprintf("group %q", groupID)) }
}

// WithDelay matches tasks enqueued with a delay of d (TaskSpec.ProcessIn): scheduled, and due d from now by the
// Redis server's clock, to within a second. On the kit's frozen miniredis clock ([Clock]) that is d from the
// time of the enqueue, as long as the test has not advanced the clock since.
func WithDelay(d time.Duration) MatchOption {
	return func(m *match) { m.delay = &d; m.describe = append(m.describe, "delay "+d.String()) }
}

// WithState matches tasks in one of these states. Default: pending, scheduled and retry (waiting to run).
func WithState(states ...taskqueue.State) MatchOption {
	return func(m *match) {
		m.states = states
		m.describe = append(m.describe, fmt.Sprintf("state %v", states))
	}
}

// WithMaxRetries matches tasks whose spec set MaxRetries to n.
func WithMaxRetries(n int) MatchOption {
	return func(m *match) { m.maxRetries = &n; m.describe = append(m.describe, fmt.Sprintf("max retries %d", n)) }
}

// WithMetadata matches tasks whose metadata holds key with value.
func WithMetadata(key, value string) MatchOption {
	return func(m *match) {
		if m.meta == nil {
			m.meta = map[string]string{}
		}
		m.meta[key] = value
		m.describe = append(m.describe, fmt.Sprintf("metadata %s=%q", key, value))
	}
}

// WithComparer compares decoded arguments with equal instead of [reflect.DeepEqual]: for arguments holding
// times, floats or fields a test does not care about. T must be the type of the arguments asserted.
func WithComparer[T any](equal func(got, want T) bool) MatchOption {
	return func(m *match) { m.comparer = equal }
}

// RequireEnqueued asserts that q holds exactly one task, waiting to run, that calls module.name with arguments
// equal to args once decoded into T (so field order and JSON spelling do not matter, values do), and that meets
// every option. It returns that task. Otherwise it fails the test with t.Fatalf, listing what q holds (bounded)
// and why each task of module.name did not match.
func RequireEnqueued[T any](t testing.TB, q taskqueue.AdminTarget, module, name string, args T, opts ...MatchOption) EnqueuedTask {
	t.Helper()
	found, all, why := find(t, q, module, name, &args, opts)
	switch len(found) {
	case 1:
		return found[0]
	case 0:
		t.Fatalf("taskqueuetest: no task %s enqueued; %s", describe(module, name, &args, opts), listing(all, why))
	default:
		t.Fatalf("taskqueuetest: %d tasks %s enqueued, want one (FindEnqueued returns them all); %s",
			len(found), describe(module, name, &args, opts), listing(all, why))
	}
	return EnqueuedTask{}
}

// RequireNotEnqueued asserts that q holds no task, waiting to run, that calls module.name with arguments equal
// to args and meets every option; otherwise it fails the test with t.Errorf, naming the tasks that match.
func RequireNotEnqueued[T any](t testing.TB, q taskqueue.AdminTarget, module, name string, args T, opts ...MatchOption) {
	t.Helper()
	found, _, _ := find(t, q, module, name, &args, opts)
	if len(found) > 0 {
		t.Errorf("taskqueuetest: want no task %s, found %d:%s", describe(module, name, &args, opts), len(found), lines(found))
	}
}

// RequireNoneEnqueued asserts that q holds no task, waiting to run, that calls module.name (whatever its
// arguments) and meets every option; otherwise it fails the test with t.Errorf, naming them.
func RequireNoneEnqueued(t testing.TB, q taskqueue.AdminTarget, module, name string, opts ...MatchOption) {
	t.Helper()
	found, _, _ := find[struct{}](t, q, module, name, nil, opts)
	if len(found) > 0 {
		t.Errorf("taskqueuetest: want no task %s, found %d:%s", describe[struct{}](module, name, nil, opts), len(found), lines(found))
	}
}

// FindEnqueued returns the tasks, waiting to run, that call module.name with arguments equal to args and meet
// every option, in the order of [Enqueued]. It fails the test only when q cannot be read.
func FindEnqueued[T any](t testing.TB, q taskqueue.AdminTarget, module, name string, args T, opts ...MatchOption) []EnqueuedTask {
	t.Helper()
	found, _, _ := find(t, q, module, name, &args, opts)
	return found
}

// find returns the matching tasks, every task, and for the tasks of module.name that did not match, why not.
// A nil args matches any arguments.
func find[T any](t testing.TB, q taskqueue.AdminTarget, module, name string, args *T, opts []MatchOption) (found, all []EnqueuedTask, why map[string]string) {
	t.Helper()
	m := match{states: []taskqueue.State{taskqueue.StatePending, taskqueue.StateScheduled, taskqueue.StateRetry}}
	for _, opt := range opts {
		opt(&m)
	}
	all = Enqueued(t, q)
	var now time.Time
	if m.delay != nil {
		adm, _ := taskqueue.NewAdmin(q) // Enqueued made one already: q is valid
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var err error
		if now, err = adm.ServerTime(ctx); err != nil {
			t.Fatalf("taskqueuetest: server time: %v", err)
		}
	}
	why = map[string]string{}
	for i := range all {
		e := &all[i]
		if e.Module != module || e.Name != name {
			continue
		}
		if reason := m.mismatch(e, args, now); reason != "" {
			why[e.TaskID] = reason
			continue
		}
		found = append(found, *e)
	}
	return found, all, why
}

// mismatch says why e does not match, or "" when it does.
func (m *match) mismatch(e *EnqueuedTask, args any, now time.Time) string {
	switch {
	case m.taskID != "" && e.TaskID != m.taskID:
		return "another task id"
	case !slices.Contains(m.states, e.State):
		return "state " + string(e.State)
	case m.group != nil && e.GroupID != *m.group:
		return fmt.Sprintf("group %q", e.GroupID)
	case m.maxRetries != nil && e.MaxRetries != *m.maxRetries:
		return fmt.Sprintf("max retries %d", e.MaxRetries)
	}
	for k, v := range m.meta {
		if got, ok := e.Metadata[k]; !ok || got != v {
			return fmt.Sprintf("metadata %s=%q", k, cut(got, 100))
		}
	}
	if m.delay != nil {
		if e.Due.IsZero() {
			return "not delayed"
		}
		if off := e.Due.Sub(now.Add(*m.delay)); off > time.Second || off < -time.Second {
			return fmt.Sprintf("due in %s", e.Due.Sub(now))
		}
	}
	return argsMismatch(e, args, m.comparer)
}

// argsMismatch decodes e's arguments into the type args points to and compares them.
func argsMismatch(e *EnqueuedTask, args, comparer any) string {
	if args == nil || reflect.ValueOf(args).IsNil() {
		return ""
	}
	want := reflect.ValueOf(args).Elem()
	got := reflect.New(want.Type())
	if err := e.DecodeArgs(got.Interface()); err != nil {
		return fmt.Sprintf("args do not decode into %s: %s", want.Type(), cut(err.Error(), 200))
	}
	equal := reflect.DeepEqual(got.Elem().Interface(), want.Interface())
	if comparer != nil {
		fn := reflect.ValueOf(comparer)
		if fn.Type().NumIn() != 2 || fn.Type().In(0) != want.Type() {
			return fmt.Sprintf("WithComparer takes %s, the args are %s", fn.Type().In(0), want.Type())
		}
		equal = fn.Call([]reflect.Value{got.Elem(), want})[0].Bool()
	}
	if !equal {
		return cut(fmt.Sprintf("args %+v", got.Elem().Interface()), 300)
	}
	return ""
}

func describe[T any](module, name string, args *T, opts []MatchOption) string {
	var m match
	for _, opt := range opts {
		opt(&m)
	}
	s := module + "." + name
	if args != nil {
		s += cut(fmt.Sprintf(" with args %+v", *args), 300)
	}
	if len(m.describe) > 0 {
		s += " (" + strings.Join(m.describe, ", ") + ")"
	}
	return s
}

// maxListing bounds the tasks a failure message lists.
const maxListing = 20

func listing(all []EnqueuedTask, why map[string]string) string {
	if len(all) == 0 {
		return "the queue holds no task"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "the queue holds %d:", len(all))
	for i := range all {
		e := &all[i]
		if i == maxListing {
			fmt.Fprintf(&b, "\n\t… and %d more", len(all)-maxListing)
			break
		}
		fmt.Fprintf(&b, "\n\t%s", e)
		if r, ok := why[e.TaskID]; ok {
			fmt.Fprintf(&b, "\n\t\tnot a match: %s", r)
		}
	}
	return b.String()
}

func lines(ts []EnqueuedTask) string {
	return strings.TrimPrefix(listing(ts, nil), fmt.Sprintf("the queue holds %d:", len(ts)))
}
