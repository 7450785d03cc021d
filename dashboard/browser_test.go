package dashboard

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/graflow-go/taskqueue"
)

// Browser tests: a real headless Chromium, one per test binary, a tab per test. Without a chromium binary they are
// skipped, except under CI=true, where they fail. TASKQUEUE_SCREENSHOTS=1 writes the main pages to
// ../docs/dashboard/*.png.

var browser struct {
	once   sync.Once
	ctx    context.Context
	cancel func()
	err    error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if browser.cancel != nil {
		browser.cancel()
	}
	os.Exit(code)
}

// chromiumPath finds the browser: $CHROMIUM, else chromium or chromium-browser on PATH.
func chromiumPath() (string, error) {
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p, nil
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", errors.New("no chromium on PATH (Debian: apt-get install chromium; or set CHROMIUM)")
}

func startBrowser() {
	path, err := chromiumPath()
	if err != nil {
		browser.err = err
		return
	}
	dir, err := os.MkdirTemp("", "dashboard-chromium-")
	if err != nil {
		browser.err = err
		return
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path), chromedp.UserDataDir(dir),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1280, 900),
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(allocCtx)
	// The first call starts the browser, which lives as long as its context: no timeout on it.
	if err := chromedp.Do(ctx); err != nil {
		cancelCtx()
		cancelAlloc()
		_ = os.RemoveAll(dir)
		browser.err = fmt.Errorf("start %s: %w", path, err)
		return
	}
	browser.ctx = ctx
	browser.cancel = func() {
		cancelCtx()
		cancelAlloc()
		_ = os.RemoveAll(dir)
	}
}

// tab opens a new tab of the shared browser for the test, closed at its end.
func tab(t *testing.T) context.Context {
	t.Helper()
	browser.once.Do(startBrowser)
	if browser.err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("browser tests need chromium under CI: %v", browser.err)
		}
		t.Skipf("SKIP browser test: %v", browser.err)
	}
	ctx, cancel := chromedp.NewContext(browser.ctx)
	t.Cleanup(cancel)
	require.NoError(t, chromedp.Do(ctx), "open a tab")
	ctx, cancelT := context.WithTimeout(ctx, 60*time.Second)
	t.Cleanup(cancelT)
	return ctx
}

func run(ctx context.Context, t *testing.T, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	require.NoError(t, chromedp.Do(ctx, actions...))
}

// eval evaluates a JavaScript expression in the tab.
func eval[T any](ctx context.Context, t *testing.T, expr string, opts ...chromedp.EvaluateOption) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, opts...))
	require.NoError(t, err, expr)
	return v
}

// screenshot writes the page to ../docs/dashboard/name.png when TASKQUEUE_SCREENSHOTS=1.
func screenshot(ctx context.Context, t *testing.T, name string) {
	t.Helper()
	if os.Getenv("TASKQUEUE_SCREENSHOTS") != "1" {
		return
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	require.NoError(t, err)
	dir := filepath.Join("..", "docs", "dashboard")
	require.NoError(t, os.MkdirAll(dir, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644))
}

func text(ctx context.Context, t *testing.T, sel string) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	require.NoError(t, err, sel)
	return strings.TrimSpace(s)
}

// The overview shows the counts of a queue the test filled.
func TestBrowserOverview(t *testing.T) {
	ctx := tab(t)
	f := newFixture(t)
	f.kill(t, "card declined", ids("dead-", 3)...)
	f.enqueue(t, jobArgs{Customer: "ACME"}, ids("order-", 42)...)
	require.NoError(t, f.q.Enqueue(context.Background(), &taskqueue.TaskSpec{TaskID: "later",
		Executable: taskqueue.Ref("jobs", "work", jobArgs{}), ProcessIn: time.Hour}))
	srv, _ := f.serve(t, Config{})
	run(ctx, t, chromedp.Navigate(srv.URL+"/"), chromedp.WaitVisible(chromedp.CSS("#overview")))
	require.Equal(t, "42", text(ctx, t, `tr[data-queue="jobs"] td[data-count="pending"]`))
	require.Equal(t, "3", text(ctx, t, `tr[data-queue="jobs"] td[data-count="dead"]`))
	require.Equal(t, "1", text(ctx, t, `tr[data-queue="jobs"] td[data-count="scheduled"]`))
	require.Equal(t, "0", text(ctx, t, `tr[data-queue="jobs"] td[data-count="active"]`))
	screenshot(ctx, t, "overview")

	// Pause through the UI (the page asks first: the test accepts), and the badge says so.
	run(ctx, t, chromedp.Navigate(srv.URL+"/q/jobs/"), chromedp.WaitVisible(chromedp.CSS(".task-row")))
	screenshot(ctx, t, "tasks")
	run(ctx, t, chromedp.Navigate(srv.URL+"/q/jobs/task?id=order-00001"), chromedp.WaitVisible(chromedp.CSS("#task-envelope")))
	require.Contains(t, text(ctx, t, "#task-envelope"), `"customer": "ACME"`)
	screenshot(ctx, t, "task")
}

// A dead letter is requeued through the UI and the count drops; then a bulk requeue by filter, confirmed on a
// page that states the count.
func TestBrowserRequeueDead(t *testing.T) {
	ctx := tab(t)
	f := newFixture(t)
	f.kill(t, "gateway timeout", ids("pay-", 4)...)
	f.kill(t, "bad input", ids("input-", 2)...)
	srv, _ := f.serve(t, Config{})
	run(ctx, t, chromedp.Navigate(srv.URL+"/q/jobs/dead"), chromedp.WaitVisible(chromedp.CSS("#dead-table")))
	screenshot(ctx, t, "dead")
	run(ctx, t,
		chromedp.Click(chromedp.CSS(`input[name="id"][value="input-00000"]`)),
		chromedp.Click(chromedp.CSS("#requeue-selected")),
		chromedp.WaitVisible(chromedp.CSS(".flash")))
	require.Contains(t, text(ctx, t, ".flash"), "Requeued 1 dead letter")
	require.EqualValues(t, 5, f.stats(t).Dead)
	rows := eval[int](ctx, t, `document.querySelectorAll("#dead-table .task-row").length`)
	require.Equal(t, 5, rows, "the page shows the dead letters left")

	run(ctx, t,
		chromedp.SetValue(chromedp.CSS(`input[name="reason"]`), "timeout"),
		chromedp.Submit(chromedp.CSS(`form.filter`)),
		chromedp.WaitVisible(chromedp.CSS("#bulk-requeue")),
		chromedp.Click(chromedp.CSS("#bulk-requeue")),
		chromedp.WaitVisible(chromedp.CSS("#confirm-form")))
	require.Equal(t, "4", text(ctx, t, "#confirm-count"))
	require.Contains(t, text(ctx, t, "#confirm-text"), "Requeue 4 dead letters")
	screenshot(ctx, t, "confirm")
	require.EqualValues(t, 5, f.stats(t).Dead, "nothing moves before the confirmation")
	run(ctx, t, chromedp.Click(chromedp.CSS("#confirm-yes")), chromedp.WaitVisible(chromedp.CSS(".flash")))
	require.Contains(t, text(ctx, t, ".flash"), "Requeued 4 dead letters")
	st := f.stats(t)
	require.EqualValues(t, 1, st.Dead)
	require.EqualValues(t, 5, st.Pending)
}

// Search by payload finds a task among thousands; the page's script runs the scan's steps, with progress.
func TestBrowserSearchPayload(t *testing.T) {
	ctx := tab(t)
	f := newFixture(t)
	f.enqueue(t, jobArgs{Customer: "hay"}, ids("hay-", 3000)...)
	f.enqueue(t, jobArgs{Customer: "needle-customer-42"}, "the-needle")
	srv, d := f.serve(t, Config{})
	d.searchSteps = 1 // the first step on the server, the rest by the script
	run(ctx, t, chromedp.Navigate(srv.URL+"/q/jobs/search"),
		chromedp.SetValue(chromedp.CSS("#search-text"), "needle-customer"),
		chromedp.Click(chromedp.CSS("#search-go")),
		chromedp.WaitVisible(chromedp.CSS(`#search-results[data-done="1"]`)))
	found := eval[[]string](ctx, t, `Array.from(document.querySelectorAll("#search-rows .task-row td.id")).map(e => e.textContent)`)
	require.Equal(t, []string{"the-needle"}, found)
	status := text(ctx, t, "#search-status")
	require.Contains(t, status, "done")
	scanned, _ := strconv.Atoi(strings.Fields(status)[0])
	require.GreaterOrEqual(t, scanned, 3001, "every task looked at: %s", status)
	screenshot(ctx, t, "search")
}

// Read-only mode shows no mutating control, and a forged POST is refused: in read-only mode (no route), and in
// read-write mode from the page without a token and from another site's auto-submitting form.
func TestBrowserReadOnlyAndForgedPost(t *testing.T) {
	ctx := tab(t)
	f := newFixture(t)
	f.kill(t, "boom", "dead-1")
	f.enqueue(t, jobArgs{}, "p-1")
	ro, _ := f.serve(t, Config{ReadOnly: true})
	for _, page := range []string{"/", "/q/jobs/", "/q/jobs/dead", "/q/jobs/task?id=dead-1", "/q/jobs/schedules", "/q/jobs/locks", "/q/jobs/flow"} {
		run(ctx, t, chromedp.Navigate(ro.URL+page), chromedp.WaitVisible(chromedp.CSS("#read-only")))
		controls := eval[int](ctx, t, `document.querySelectorAll('form[method="post"], button.mut, input[type="checkbox"][name="id"]').length`)
		require.Zero(t, controls, page)
	}
	forge := func(base string) int {
		return eval[int](ctx, t, fmt.Sprintf(`fetch(%q, {method: "POST", body: new URLSearchParams({csrf: "forged", id: "dead-1"})}).then(r => r.status)`,
			base+"/q/jobs/dead/selected"), chromedp.EvalAwaitPromise)
	}
	require.Contains(t, []int{http.StatusNotFound, http.StatusMethodNotAllowed}, forge(ro.URL))

	rw, _ := f.serve(t, Config{})
	run(ctx, t, chromedp.Navigate(rw.URL+"/q/jobs/dead"), chromedp.WaitVisible(chromedp.CSS("#dead-table")))
	require.Equal(t, http.StatusForbidden, forge(rw.URL), "same origin, with the cookie, a wrong token")

	// Another site's page posts a form to the dashboard on load.
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, `<!doctype html><form id="f" method="post" action="%s/q/jobs/pause"><input name="csrf" value="x"></form>
<script>document.getElementById("f").submit()</script>`, rw.URL)
	}))
	t.Cleanup(evil.Close)
	var body string
	run(ctx, t, chromedp.Navigate(evil.URL), chromedp.WaitVisible(chromedp.CSS("body")))
	require.Eventually(t, func() bool {
		body, _ = chromedp.Run(ctx, chromedp.Evaluate[string](`location.href + " " + document.body.innerText`))
		return strings.Contains(body, "/q/jobs/pause")
	}, 10*time.Second, 20*time.Millisecond, "the form was submitted")
	require.Regexp(t, `(?i)forbidden|cross-origin request`, body, "refused")
	st := f.stats(t)
	require.False(t, st.Paused)
	require.EqualValues(t, 1, st.Dead)
}

// A task whose last error and payload hold markup executes nothing: the page-side flag stays unset.
func TestBrowserNoScriptFromRedis(t *testing.T) {
	ctx := tab(t)
	f := newFixture(t)
	evil := `<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2"><svg onload="window.__pwned=3">`
	f.kill(t, evil, "xss-dead")
	f.enqueue(t, jobArgs{Customer: evil}, `xss-"><script>window.__pwned=4</script>`)
	srv, _ := f.serve(t, Config{})
	for _, page := range []string{"/q/jobs/task?id=xss-dead", "/q/jobs/dead", "/q/jobs/", "/q/jobs/search?text=pwned",
		"/q/jobs/dead?reason=" + strings.ReplaceAll(evil, " ", "+")} {
		run(ctx, t, chromedp.Navigate(srv.URL+page), chromedp.WaitVisible(chromedp.CSS("main")))
		require.False(t, eval[bool](ctx, t, `window.__pwned !== undefined`), page)
	}
	run(ctx, t, chromedp.Navigate(srv.URL+"/q/jobs/task?id=xss-dead"), chromedp.WaitVisible(chromedp.CSS("#task-reason")))
	require.Equal(t, evil, text(ctx, t, "#task-reason"), "shown as text")
	require.False(t, eval[bool](ctx, t, `window.__pwned !== undefined`))
}

// A queue of 10,000 dead letters: its first page, a page of the largest size, the last page, a filtered page and
// the bulk confirmation (which counts them all) each load in the browser under the budget.
func TestBrowserTenThousandDeadLetters(t *testing.T) {
	const budget = 5 * time.Second // generous: the measured times are logged
	ctx := tab(t)
	f := newFixture(t)
	f.killMany(t, "upstream 503", "dl-", 10000)
	require.EqualValues(t, 10000, f.stats(t).Dead)
	srv, _ := f.serve(t, Config{})
	for _, page := range []struct{ path, wait string }{
		{"/q/jobs/dead", "#dead-table"},
		{"/q/jobs/dead?size=500", "#dead-table"},
		{"/q/jobs/dead?page=200", "#dead-table"},
		{"/q/jobs/dead?reason=503&size=500", "#dead-table"},
	} {
		start := time.Now()
		run(ctx, t, chromedp.Navigate(srv.URL+page.path), chromedp.WaitVisible(chromedp.CSS(page.wait)))
		rows := eval[int](ctx, t, `document.querySelectorAll("#dead-table .task-row").length`)
		took := time.Since(start)
		t.Logf("%s: %d rows in %v (budget %v)", page.path, rows, took.Round(time.Millisecond), budget)
		require.Positive(t, rows)
		require.Less(t, took, budget, page.path)
	}
	start := time.Now()
	run(ctx, t, chromedp.Navigate(srv.URL+"/q/jobs/dead?reason=503"), chromedp.WaitVisible(chromedp.CSS("#bulk-delete")),
		chromedp.Click(chromedp.CSS("#bulk-delete")), chromedp.WaitVisible(chromedp.CSS("#confirm-count")))
	took := time.Since(start)
	require.Equal(t, "10000", text(ctx, t, "#confirm-count"))
	t.Logf("bulk delete confirmation (counts 10000 by filter): %v (budget %v)", took.Round(time.Millisecond), budget)
	require.Less(t, took, budget)
}

// The other pages render in the browser: schedules, locks, groups, a workflow as a tree, history charts.
func TestBrowserOtherPages(t *testing.T) {
	ctx := tab(t)
	f := newFixture(t)
	bg := context.Background()
	require.NoError(t, f.sched.Create(bg, &taskqueue.Schedule{Name: "nightly-report", Cron: "0 3 * * *", TimeZone: "Europe/Berlin",
		Task: &taskqueue.TaskSpec{Executable: taskqueue.Ref("jobs", "work", jobArgs{})}}))
	require.NoError(t, f.sched.Create(bg, &taskqueue.Schedule{Name: "heartbeat", Every: time.Minute,
		Task: &taskqueue.TaskSpec{Executable: taskqueue.Ref("jobs", "work", jobArgs{})}}))
	require.NoError(t, f.q.Enqueue(bg, &taskqueue.TaskSpec{TaskID: "invoice-7", Executable: taskqueue.Ref("jobs", "work", jobArgs{N: 7}),
		Unique: &taskqueue.Unique{Key: "invoice:7", TTL: time.Hour}}))
	_, err := f.q.DispatchGroup(bg, "thumbnails", []*taskqueue.TaskSpec{
		{Executable: taskqueue.Ref("jobs", "work", jobArgs{N: 1})}, {Executable: taskqueue.Ref("jobs", "work", jobArgs{N: 2})},
	}, nil)
	require.NoError(t, err)
	f.workflow(t)
	srv, d := f.serve(t, Config{})
	now := time.Now().UTC().Truncate(time.Minute)
	var points []Point
	for i := range 60 {
		points = append(points, Point{At: now.Add(time.Duration(i-60) * time.Minute), Span: time.Minute,
			Processed: int64(900 + 300*((i/7)%3) + i), Failed: int64(i % 5), RunP50: time.Duration(18+i%4) * time.Millisecond,
			RunP99: time.Duration(60+(i*7)%40) * time.Millisecond})
	}
	d.queues[0].history = fakeHistory(points)

	run(ctx, t, chromedp.Navigate(srv.URL+"/q/jobs/schedules"), chromedp.WaitVisible(chromedp.CSS("#schedules")))
	require.Contains(t, text(ctx, t, "#schedules"), "nightly-report")
	screenshot(ctx, t, "schedules")
	run(ctx, t, chromedp.Click(chromedp.CSS(`#schedules button[value="pause"]`)), chromedp.WaitVisible(chromedp.CSS(".flash")))
	require.Contains(t, text(ctx, t, ".flash"), "paused")

	run(ctx, t, chromedp.Navigate(srv.URL+"/q/jobs/locks"), chromedp.WaitVisible(chromedp.CSS("#locks")))
	require.Contains(t, text(ctx, t, "#locks"), "invoice:7")
	screenshot(ctx, t, "locks")

	run(ctx, t, chromedp.Navigate(srv.URL+"/q/jobs/groups"), chromedp.WaitVisible(chromedp.CSS("#groups")))
	require.Contains(t, text(ctx, t, "#groups"), "thumbnails@")
	require.Contains(t, text(ctx, t, "#groups"), "etl")
	screenshot(ctx, t, "groups")

	run(ctx, t, chromedp.Navigate(srv.URL+"/q/jobs/workflow?id=etl"), chromedp.WaitVisible(chromedp.CSS("#workflow-tree")))
	depth := eval[int](ctx, t, `document.querySelectorAll("#workflow-tree ul ul li").length`)
	require.Equal(t, 1, depth, "load sits two levels under extract")
	screenshot(ctx, t, "workflow")

	run(ctx, t, chromedp.Navigate(srv.URL+"/q/jobs/history"), chromedp.WaitVisible(chromedp.CSS("#charts")))
	require.Equal(t, 3, eval[int](ctx, t, `document.querySelectorAll("#charts svg").length`))
	screenshot(ctx, t, "history")
}
