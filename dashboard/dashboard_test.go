package dashboard

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graflow-go/taskqueue"
)

// Every page renders, with the queue's data.
func TestPagesRender(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	f.kill(t, "card declined", "dead-1")
	f.enqueue(t, jobArgs{Customer: "ACME"}, "order-1", "order-2", "to-cancel")
	_, err := f.adm.Cancel(ctx, "to-cancel")
	require.NoError(t, err)
	require.NoError(t, f.sched.Create(ctx, &taskqueue.Schedule{Name: "nightly", Cron: "0 3 * * *",
		Task: &taskqueue.TaskSpec{Executable: taskqueue.Ref("jobs", "work", jobArgs{})}}))
	run, err := f.q.DispatchGroup(ctx, "batch", []*taskqueue.TaskSpec{{Executable: taskqueue.Ref("jobs", "work", jobArgs{})}}, nil)
	require.NoError(t, err)
	f.workflow(t)
	srv, _ := f.serve(t, Config{})
	c := client(t)
	for page, want := range map[string][]string{
		"/q/jobs/workflow?id=etl":           {`id="workflow-tree"`, "extract", "load", "also after enrich", "waiting"},
		"/":                                 {"jobs", `data-count="pending"`, ">4<", "running"},
		"/q/jobs/":                          {"order-1", "jobs.work", "page 1 of 1"},
		"/q/jobs/?state=dead":               {"dead-1", "card declined"},
		"/q/jobs/task?id=order-1":           {"order-1", "&#34;customer&#34;: &#34;ACME&#34;", "Timeline", "created"},
		"/q/jobs/task?id=dead-1":            {"card declined", "dead-lettered"},
		"/q/jobs/dead":                      {"dead-1", "Requeue all"},
		"/q/jobs/dead?reason=declined":      {"dead-1", "looked at"},
		"/q/jobs/search?text=ACME":          {"order-1", "order-2", "done"},
		"/q/jobs/search?id=dead-1":          {`id="exact-match"`},
		"/q/jobs/schedules":                 {"nightly", "0 3 * * *", "Trigger now"},
		"/q/jobs/locks":                     {"No locks"},
		"/q/jobs/groups":                    {"batch@", "group"},
		"/q/jobs/group?id=" + run.GroupID(): {"pending"},
		"/q/jobs/history":                   {"<svg", "No task counted"},
		"/q/jobs/flow":                      {`id="flow-limits"`, "No limits"},
		"/static/app.js":                    {"textContent"},
		"/static/app.css":                   {"svg.chart"},
		"/q/jobs/search.json?text=ACME":     {`"matches":[`, "order-1"},
	} {
		status, body := get(t, c, srv.URL+page)
		require.Equal(t, http.StatusOK, status, "%s: %s", page, body)
		for _, w := range want {
			require.Contains(t, body, w, page)
		}
	}
	for page, status := range map[string]int{
		"/q/nope/":                       http.StatusNotFound,
		"/q/jobs/task?id=missing":        http.StatusNotFound,
		"/q/jobs/task":                   http.StatusBadRequest,
		"/q/jobs/?state=bogus":           http.StatusBadRequest,
		"/q/jobs/workflow?id=nope":       http.StatusNotFound,
		"/q/jobs/group?id=x":             http.StatusNotFound,
		"/q/jobs/search?cursor=9:9&id=x": http.StatusBadRequest,
	} {
		got, body := get(t, c, srv.URL+page)
		require.Equal(t, status, got, "%s: %s", page, body)
	}
}

// A workflow shows as a tree: each node under its first parent.
func TestWorkflowTree(t *testing.T) {
	t.Parallel()
	info := &taskqueue.WorkflowInfo{Nodes: []taskqueue.WorkflowNodeInfo{
		{ID: "a"}, {ID: "b", Parents: []string{"a"}}, {ID: "c", Parents: []string{"a"}}, {ID: "d", Parents: []string{"b", "c"}},
	}}
	roots := workflowTree(info, "/q/x")
	require.Len(t, roots, 1)
	require.Equal(t, "a", roots[0].Node.ID)
	require.Len(t, roots[0].Children, 2)
	require.Equal(t, "d", roots[0].Children[0].Children[0].Node.ID)
	require.Equal(t, []string{"c"}, roots[0].Children[0].Children[0].OtherParents)
}

// Mutations need a POST with the CSRF token of the visitor's cookie, from the same origin.
func TestCSRF(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	srv, _ := f.serve(t, Config{})
	c := client(t)
	tok := token(t, c, srv.URL+"/")

	status, _, _ := post(t, client(t), srv.URL+"/q/jobs/pause", url.Values{"csrf": {tok}})
	require.Equal(t, http.StatusForbidden, status, "no cookie")
	status, _, _ = post(t, c, srv.URL+"/q/jobs/pause", url.Values{"csrf": {"forged"}})
	require.Equal(t, http.StatusForbidden, status, "a forged token")
	status, _, _ = post(t, c, srv.URL+"/q/jobs/pause", url.Values{})
	require.Equal(t, http.StatusForbidden, status, "no token")
	status, _, _ = post(t, c, srv.URL+"/q/jobs/pause", url.Values{"csrf": {tok}}, "Sec-Fetch-Site", "cross-site")
	require.Equal(t, http.StatusForbidden, status, "a cross-site request")
	require.False(t, f.stats(t).Paused)
	status, _ = get(t, c, srv.URL+"/q/jobs/pause")
	require.Equal(t, http.StatusMethodNotAllowed, status, "GET never mutates")
	require.False(t, f.stats(t).Paused)

	status, _, loc := post(t, c, srv.URL+"/q/jobs/pause", url.Values{"csrf": {tok}})
	require.Equal(t, http.StatusSeeOther, status)
	require.True(t, strings.HasPrefix(loc, "/q/jobs/?done="), loc)
	require.True(t, f.stats(t).Paused)
	status, _, _ = post(t, c, srv.URL+"/q/jobs/resume", url.Values{"csrf": {tok}})
	require.Equal(t, http.StatusSeeOther, status)
	require.False(t, f.stats(t).Paused)

	other, _ := f.serve(t, Config{})
	status, _, _ = post(t, c, other.URL+"/q/jobs/pause", url.Values{"csrf": {tok}})
	require.Equal(t, http.StatusForbidden, status, "a token of another dashboard's key")
}

// Read-only registers no mutating route and shows no control.
func TestReadOnly(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.kill(t, "boom", "dead-1")
	f.enqueue(t, jobArgs{}, "p-1")
	srv, _ := f.serve(t, Config{ReadOnly: true})
	c := client(t)
	for _, page := range []string{"/", "/q/jobs/", "/q/jobs/dead", "/q/jobs/task?id=dead-1", "/q/jobs/task?id=p-1", "/q/jobs/schedules", "/q/jobs/locks", "/q/jobs/flow"} {
		status, body := get(t, c, srv.URL+page)
		require.Equal(t, http.StatusOK, status, page)
		require.NotContains(t, body, `method="post"`, page)
		require.NotContains(t, body, `name="csrf"`, page)
		require.Contains(t, body, "read-only", page)
	}
	for _, action := range []string{"pause", "resume", "task/cancel", "task/delete", "dead/selected", "dead/bulk", "schedules/action", "locks/release", "flow/limits"} {
		status, _, _ := post(t, c, srv.URL+"/q/jobs/"+action, url.Values{"id": {"dead-1"}, "action": {"requeue"}, "confirm": {"1"}})
		require.Contains(t, []int{http.StatusNotFound, http.StatusMethodNotAllowed}, status, action)
	}
	st := f.stats(t)
	require.False(t, st.Paused)
	require.EqualValues(t, 1, st.Dead)
	require.EqualValues(t, 1, st.Pending)
}

// A value from Redis that holds markup is shown as text.
func TestEscaping(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	evil := `<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">`
	f.kill(t, evil, "<b>id</b>")
	f.enqueue(t, jobArgs{Customer: evil}, "payload-xss")
	srv, _ := f.serve(t, Config{})
	c := client(t)
	for _, page := range []string{"/q/jobs/dead", "/q/jobs/task?id=" + url.QueryEscape("<b>id</b>"), "/q/jobs/task?id=payload-xss",
		"/q/jobs/search?text=" + url.QueryEscape("<script>"), "/q/jobs/dead?reason=" + url.QueryEscape(evil)} {
		status, body := get(t, c, srv.URL+page)
		require.Equal(t, http.StatusOK, status, page)
		require.NotContains(t, body, "<script>window", page)
		require.NotContains(t, body, "<img src=x", page)
		require.NotContains(t, body, "<b>id", page)
		require.Contains(t, body, "&lt;script&gt;window.__pwned=1&lt;/script&gt;", page)
	}
	resp, err := c.Get(srv.URL + "/")
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Contains(t, resp.Header.Get("Content-Security-Policy"), "script-src 'self'")
}

// Page sizes are bounded by MaxPageSize whatever the request asks.
func TestPageSizeBounded(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.enqueue(t, jobArgs{}, ids("t-", 30)...)
	srv, _ := f.serve(t, Config{PageSize: 5, MaxPageSize: 10})
	c := client(t)
	_, body := get(t, c, srv.URL+"/q/jobs/")
	require.Equal(t, 5, strings.Count(body, `class="task-row"`))
	_, body = get(t, c, srv.URL+"/q/jobs/?size=100000&page=2")
	require.Equal(t, 10, strings.Count(body, `class="task-row"`))
	require.Contains(t, body, "t-00010")
	require.Contains(t, body, "page 2 of 3")
	_, body = get(t, c, srv.URL+"/q/jobs/?page=99")
	require.Zero(t, strings.Count(body, `class="task-row"`))
}

// A bulk requeue by filter asks first, stating the count, and then acts on at most that many.
func TestDeadBulkConfirm(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.kill(t, "timeout talking to bank", ids("bank-", 7)...)
	f.kill(t, "bad input", ids("input-", 3)...)
	srv, _ := f.serve(t, Config{})
	c := client(t)
	tok := token(t, c, srv.URL+"/q/jobs/dead")
	status, body, _ := post(t, c, srv.URL+"/q/jobs/dead/bulk", url.Values{"csrf": {tok}, "action": {"requeue"}, "reason": {"bank"}})
	require.Equal(t, http.StatusOK, status, body)
	require.Contains(t, body, `<strong id="confirm-count">7</strong>`)
	require.EqualValues(t, 10, f.stats(t).Dead, "nothing moved before the confirmation")

	status, _, _ = post(t, c, srv.URL+"/q/jobs/dead/bulk", url.Values{"csrf": {tok}, "action": {"requeue"}, "reason": {"bank"}, "confirm": {"5"}})
	require.Equal(t, http.StatusSeeOther, status)
	st := f.stats(t)
	require.EqualValues(t, 5, st.Dead, "at most the confirmed count")
	require.EqualValues(t, 5, st.Pending)

	status, _, loc := post(t, c, srv.URL+"/q/jobs/dead/selected", url.Values{"csrf": {tok}, "action": {"delete"}, "id": {"input-00000", "input-00001"}})
	require.Equal(t, http.StatusSeeOther, status)
	require.Contains(t, loc, "Deleted+2+dead+letters")
	require.EqualValues(t, 3, f.stats(t).Dead)
}

// The dashboard works mounted under a path prefix: links and routes carry it.
func TestBasePath(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.enqueue(t, jobArgs{}, "a")
	srv, _ := f.serve(t, Config{BasePath: "/ops/queues/"})
	c := client(t)
	status, body := get(t, c, srv.URL+"/ops/queues/")
	require.Equal(t, http.StatusOK, status)
	require.Contains(t, body, `href="/ops/queues/q/jobs/"`)
	require.Contains(t, body, `src="/ops/queues/static/app.js"`)
	status, _ = get(t, c, srv.URL+"/ops/queues")
	require.Contains(t, []int{http.StatusFound, http.StatusTemporaryRedirect, http.StatusMovedPermanently}, status, "to the slash")
	status, body = get(t, c, srv.URL+"/ops/queues/q/jobs/task?id=a")
	require.Equal(t, http.StatusOK, status, body)
	tok := token(t, c, srv.URL+"/ops/queues/q/jobs/")
	status, _, loc := post(t, c, srv.URL+"/ops/queues/q/jobs/pause", url.Values{"csrf": {tok}})
	require.Equal(t, http.StatusSeeOther, status)
	require.True(t, strings.HasPrefix(loc, "/ops/queues/q/jobs/"), loc)
}

// Several queues, a sharded one among them, show side by side.
func TestSeveralQueues(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.enqueue(t, jobArgs{}, "a", "b")
	sq, err := taskqueue.NewShardedQueue(f.rdb, "sharded", 3, testRegistry(t), &taskqueue.RedisConfig{Logger: quietLogger()})
	require.NoError(t, err)
	var specs []*taskqueue.TaskSpec
	for _, id := range ids("s-", 12) {
		specs = append(specs, taskqueue.NewTaskSpec(id, taskqueue.Ref("jobs", "work", jobArgs{Customer: "initech"})))
	}
	require.NoError(t, sq.EnqueueBatch(context.Background(), specs))
	sadm, err := taskqueue.NewAdmin(sq)
	require.NoError(t, err)
	srv, _ := f.serve(t, Config{Queues: []Queue{{Admin: f.adm}, {Name: "big", Admin: sadm}}})
	c := client(t)
	_, body := get(t, c, srv.URL+"/")
	require.Contains(t, body, `data-queue="jobs"`)
	require.Contains(t, body, `data-queue="big"`)
	_, body = get(t, c, srv.URL+"/q/big/search?text=initech")
	require.Equal(t, 12, strings.Count(body, `class="task-row"`))
	_, body = get(t, c, srv.URL+"/q/big/task?id=s-00003")
	require.Contains(t, body, "initech")
}

func TestNewConfig(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	for name, cfg := range map[string]Config{
		"no queues":      {},
		"nil admin":      {Queues: []Queue{{Name: "x"}}},
		"bad name":       {Queues: []Queue{{Name: "a b", Admin: f.adm}}},
		"duplicate":      {Queues: []Queue{{Admin: f.adm}, {Admin: f.adm}}},
		"max page size":  {Queues: []Queue{{Admin: f.adm}}, MaxPageSize: taskqueue.MaxListLimit + 1},
		"page size":      {Queues: []Queue{{Admin: f.adm}}, PageSize: 600},
		"short key":      {Queues: []Queue{{Admin: f.adm}}, CSRFKey: []byte("short")},
		"base path":      {Queues: []Queue{{Admin: f.adm}}, BasePath: "ops"},
		"negative limit": {Queues: []Queue{{Admin: f.adm}}, Timeout: -time.Second},
	} {
		_, err := New(cfg)
		require.ErrorIs(t, err, ErrInvalidConfig, name)
	}
}

// The history charts are SVG drawn from the points.
func TestHistoryCharts(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	now := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	var points []Point
	for i := range 60 {
		points = append(points, Point{At: now.Add(time.Duration(i-60) * time.Minute), Span: time.Minute,
			Processed: int64(100 + i), Failed: int64(i % 3), RunP50: 20 * time.Millisecond, RunP99: time.Duration(80+i) * time.Millisecond})
	}
	srv, d := f.serve(t, Config{})
	d.queues[0].history = fakeHistory(points)
	status, body := get(t, client(t), srv.URL+"/q/jobs/history?window=24h")
	require.Equal(t, http.StatusOK, status)
	require.Equal(t, 3, strings.Count(body, "<svg"))
	require.Equal(t, 7, strings.Count(body, "<polyline"))
	require.Contains(t, body, "Throughput")
	require.Contains(t, body, "09:00")
	require.Contains(t, body, "60 points")
}

type fakeHistory []Point

func (h fakeHistory) History(context.Context, time.Duration) ([]Point, error) { return h, nil }

// The charts read the history the queue keeps in Redis (Admin.History), minutes merged into at most
// maxChartPoints intervals.
func TestAdminHistorySource(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	f.enqueue(t, jobArgs{}, ids("h-", 5)...)
	require.NoError(t, f.q.FlushHistory(ctx))
	src := adminHistory{f.adm}
	for window, want := range map[time.Duration]int{time.Hour: 60, 24 * time.Hour: 144} {
		points, err := src.History(ctx, window)
		require.NoError(t, err)
		require.Len(t, points, want, window)
		var enq int64
		for _, p := range points {
			enq += p.Enqueued
		}
		require.EqualValues(t, 5, enq, window)
	}
	srv, _ := f.serve(t, Config{})
	status, body := get(t, client(t), srv.URL+"/q/jobs/history?window=24h")
	require.Equal(t, http.StatusOK, status)
	require.Contains(t, body, "144 points")
	require.NotContains(t, body, "No task counted")
}
