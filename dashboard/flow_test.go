package dashboard

import (
	"context"
	"fmt"
	"html"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graflow-go/taskqueue"
)

// enqueueKeyed adds ready tasks of flow key key.
func (f *fixture) enqueueKeyed(t testing.TB, key string, ids ...string) {
	t.Helper()
	for _, id := range ids {
		spec := taskqueue.NewTaskSpec(id, taskqueue.Ref("jobs", "work", jobArgs{Customer: key}))
		spec.FlowKey = key
		require.NoError(t, f.q.Enqueue(context.Background(), spec))
	}
}

func (f *fixture) limits(t testing.TB) []taskqueue.FlowLimit {
	t.Helper()
	l, err := f.adm.Limits(context.Background())
	require.NoError(t, err)
	return l
}

// The flow page lists the limits (the queue's rate, the default, per key) and how the keys stand: running slots,
// keys held at their limit, keyed tasks ready.
func TestFlowPage(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	srv, _ := f.serve(t, Config{})
	c := client(t)
	_, body := get(t, c, srv.URL+"/q/jobs/flow")
	require.Contains(t, body, "No limits")
	require.Contains(t, body, "No keyed task is running")

	require.NoError(t, f.adm.SetConcurrencyLimit(ctx, "tenant-a", 1))
	require.NoError(t, f.adm.SetConcurrencyLimit(ctx, taskqueue.AllFlowKeys, 5))
	require.NoError(t, f.adm.SetRateLimit(ctx, "", 100, time.Second))
	require.NoError(t, f.adm.SetRateLimit(ctx, "tenant-b", 7, time.Minute))
	f.enqueueKeyed(t, "tenant-a", "a-1", "a-2", "a-3")
	f.enqueueKeyed(t, "tenant-b", "b-1")
	ds, err := f.q.Dequeue(ctx, taskqueue.DequeueOptions{Max: 10})
	require.NoError(t, err)
	require.Len(t, ds, 2, "one of tenant-a (its limit), one of tenant-b")
	st, err := f.adm.FlowState(ctx)
	require.NoError(t, err)
	require.Equal(t, []string{"tenant-a"}, st.AtLimit)

	status, body := get(t, c, srv.URL+"/q/jobs/flow")
	require.Equal(t, http.StatusOK, status, body)
	for _, want := range []string{
		`data-key=""`, "the whole queue", "100 / 1s",
		`data-key="*"`, "every key (default)",
		`data-key="tenant-a"`, `<span class="badge paused">at limit</span>`,
		`data-key="tenant-b"`, "7 / 1m",
		"keyed tasks ready 2", "running with a key 2", "keys at their limit 1",
		`id="set-concurrency"`, `id="set-rate"`, `name="csrf"`,
	} {
		require.Contains(t, body, want)
	}
	for d, want := range map[time.Duration]string{time.Minute: "1m", 24 * time.Hour: "24h", 90 * time.Minute: "1h30m", 1500 * time.Millisecond: "1.5s"} {
		require.Equal(t, want, period(d))
	}
	// The queue's rate first, then the default, then the keys.
	require.Less(t, strings.Index(body, `data-key=""`), strings.Index(body, `data-key="*"`))
	require.Less(t, strings.Index(body, `data-key="*"`), strings.Index(body, `data-key="tenant-a"`))
}

// Each list of the flow page is cut to flowShown, saying how many it left out.
func TestFlowPageBounded(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	n := flowShown + 15
	for i := range n {
		require.NoError(t, f.adm.SetConcurrencyLimit(ctx, fmt.Sprintf("k-%04d", i), 2))
	}
	srv, _ := f.serve(t, Config{})
	_, body := get(t, client(t), srv.URL+"/q/jobs/flow")
	require.Equal(t, flowShown, strings.Count(body, `class="flow-limit"`))
	require.Contains(t, body, "and 15 more limits not shown")
}

// The forms set and clear limits; input the library refuses is shown as its message, with nothing stored.
func TestFlowActions(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	srv, _ := f.serve(t, Config{})
	c := client(t)
	tok := token(t, c, srv.URL+"/q/jobs/flow")
	act := func(form url.Values) (int, string, string) {
		t.Helper()
		form.Set("csrf", tok)
		return post(t, c, srv.URL+"/q/jobs/flow/limits", form)
	}

	status, body, loc := act(url.Values{"op": {"concurrency"}, "key": {"tenant-a"}, "n": {"3"}})
	require.Equal(t, http.StatusSeeOther, status, body)
	require.True(t, strings.HasPrefix(loc, "/q/jobs/flow?done="), loc)
	status, _, _ = act(url.Values{"op": {"rate"}, "key": {""}, "n": {"50"}, "period": {"1s"}})
	require.Equal(t, http.StatusSeeOther, status)
	status, _, _ = act(url.Values{"op": {"rate"}, "key": {"*"}, "n": {"5"}, "period": {"1m"}})
	require.Equal(t, http.StatusSeeOther, status)
	want := []taskqueue.FlowLimit{
		{Key: "", Rate: 50, Period: time.Second},
		{Key: "*", Rate: 5, Period: time.Minute},
		{Key: "tenant-a", Concurrency: 3},
	}
	require.Equal(t, want, f.limits(t))
	_, body = get(t, c, srv.URL+loc)
	require.Contains(t, body, "At most 3 tasks of key tenant-a at once.")

	for name, tc := range map[string]struct {
		form url.Values
		msg  string
	}{
		"limit 0":           {url.Values{"op": {"concurrency"}, "key": {"tenant-a"}, "n": {"0"}}, "SetConcurrencyLimit n 0 must be 1 to"},
		"rate 0":            {url.Values{"op": {"rate"}, "key": {"tenant-a"}, "n": {"0"}, "period": {"1s"}}, "SetRateLimit n 0 must be 1 to"},
		"period too short":  {url.Values{"op": {"rate"}, "key": {"tenant-a"}, "n": {"1"}, "period": {"1ns"}}, "SetRateLimit period 1ns must be 10ms to 24h0m0s"},
		"period unread":     {url.Values{"op": {"rate"}, "key": {"tenant-a"}, "n": {"1"}, "period": {"soon"}}, `period "soon" is not a duration`},
		"n unread":          {url.Values{"op": {"concurrency"}, "key": {"tenant-a"}, "n": {"many"}}, `n "many" is not a whole number`},
		"bad key":           {url.Values{"op": {"concurrency"}, "key": {"a b"}, "n": {"2"}}, "invalid flow key: SetConcurrencyLimit key"},
		"queue concurrency": {url.Values{"op": {"concurrency"}, "key": {""}, "n": {"2"}}, "invalid flow key"},
	} {
		status, body, _ := act(tc.form)
		require.Equal(t, http.StatusBadRequest, status, name)
		require.Contains(t, html.UnescapeString(body), tc.msg, name)
		require.Contains(t, body, `id="flow-error"`, name)
		require.Contains(t, body, `id="flow-limits"`, name+": the page, with its forms")
		require.Equal(t, want, f.limits(t), name+": nothing stored")
	}
	status, _, _ = act(url.Values{"op": {"bogus"}})
	require.Equal(t, http.StatusBadRequest, status)
	status, _, _ = post(t, c, srv.URL+"/q/jobs/flow/limits", url.Values{"op": {"clear"}, "key": {"tenant-a"}, "csrf": {"forged"}})
	require.Equal(t, http.StatusForbidden, status, "a forged token")
	require.Equal(t, want, f.limits(t))

	status, _, _ = act(url.Values{"op": {"clear"}, "key": {"tenant-a"}})
	require.Equal(t, http.StatusSeeOther, status)
	status, _, _ = act(url.Values{"op": {"clear"}, "key": {""}})
	require.Equal(t, http.StatusSeeOther, status)
	require.Equal(t, want[1:2], f.limits(t))
}

// Read-only: the flow page shows the limits without a form, and no route sets one.
func TestFlowReadOnly(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	require.NoError(t, f.adm.SetConcurrencyLimit(context.Background(), "tenant-a", 2))
	srv, _ := f.serve(t, Config{ReadOnly: true})
	c := client(t)
	status, body := get(t, c, srv.URL+"/q/jobs/flow")
	require.Equal(t, http.StatusOK, status)
	require.Contains(t, body, `data-key="tenant-a"`)
	require.NotContains(t, body, `method="post"`)
	require.NotContains(t, body, `name="csrf"`)
	for _, form := range []url.Values{
		{"op": {"concurrency"}, "key": {"tenant-a"}, "n": {"9"}},
		{"op": {"clear"}, "key": {"tenant-a"}},
	} {
		status, _, _ := post(t, c, srv.URL+"/q/jobs/flow/limits", form)
		require.Contains(t, []int{http.StatusNotFound, http.StatusMethodNotAllowed}, status)
	}
	require.Equal(t, []taskqueue.FlowLimit{{Key: "tenant-a", Concurrency: 2}}, f.limits(t))
}

// The task page and the tasks list show a task's flow key and its priority level.
func TestTaskFlowKeyAndPriority(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.enqueueKeyed(t, "tenant-a", "keyed-1")
	spec := taskqueue.NewTaskSpec("urgent-1", taskqueue.Ref("jobs", "work", jobArgs{}))
	spec.Priority = taskqueue.PriorityHigh
	require.NoError(t, f.q.Enqueue(context.Background(), spec))
	f.enqueue(t, jobArgs{}, "plain-1")
	srv, _ := f.serve(t, Config{})
	c := client(t)
	_, body := get(t, c, srv.URL+"/q/jobs/task?id=keyed-1")
	require.Contains(t, body, `<code id="task-flow-key">tenant-a</code>`)
	require.NotContains(t, body, `id="task-priority"`)
	_, body = get(t, c, srv.URL+"/q/jobs/task?id=urgent-1")
	require.Contains(t, body, `<dd id="task-priority">high</dd>`)
	require.NotContains(t, body, `id="task-flow-key"`)
	_, body = get(t, c, srv.URL+"/q/jobs/task?id=plain-1")
	require.NotContains(t, body, `id="task-flow-key"`)
	require.NotContains(t, body, `id="task-priority"`)
	_, body = get(t, c, srv.URL+"/q/jobs/")
	require.Contains(t, body, `<td class="flow"><code>tenant-a</code></td>`)
	require.Contains(t, body, `<span class="badge high">high</span>`)
	require.Contains(t, body, "<th>Key · level</th>")

	plain := newFixture(t)
	plain.enqueue(t, jobArgs{}, "plain-1")
	srv, _ = plain.serve(t, Config{})
	_, body = get(t, c, srv.URL+"/q/jobs/")
	require.Contains(t, body, "plain-1")
	require.NotContains(t, body, "Key · level", "no column where no task has a key or a level")
}
