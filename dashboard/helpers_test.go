package dashboard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/graflow-go/taskqueue"
)

// fixture is a queue "jobs" on a miniredis of the test's own, its Admin and Schedules.
type fixture struct {
	rdb   *redis.Client
	q     *taskqueue.RedisTaskQueue
	adm   *taskqueue.Admin
	sched *taskqueue.Schedules
}

type jobArgs struct {
	Customer string `json:"customer,omitempty"`
	N        int    `json:"n,omitempty"`
}

func testRegistry(t testing.TB) *taskqueue.ResolverRegistry {
	t.Helper()
	ref := taskqueue.NewReferenceResolver()
	taskqueue.MustRegister(ref, "jobs", "work", func(context.Context, jobArgs) error { return nil })
	reg := taskqueue.NewResolverRegistry()
	reg.MustRegister(taskqueue.DefaultResolverID, ref)
	return reg
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	return fixtureOn(t, rdb, "jobs")
}

func fixtureOn(t testing.TB, rdb *redis.Client, prefix string) *fixture {
	t.Helper()
	q, err := taskqueue.NewRedisTaskQueue(rdb, prefix, testRegistry(t), &taskqueue.RedisConfig{Logger: quietLogger()})
	require.NoError(t, err)
	adm, err := taskqueue.NewAdmin(q)
	require.NoError(t, err)
	sched, err := taskqueue.NewSchedules(q)
	require.NoError(t, err)
	return &fixture{rdb: rdb, q: q, adm: adm, sched: sched}
}

func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// enqueue adds ready tasks with the given ids and args.
func (f *fixture) enqueue(t testing.TB, args jobArgs, ids ...string) {
	t.Helper()
	specs := make([]*taskqueue.TaskSpec, len(ids))
	for i, id := range ids {
		specs[i] = taskqueue.NewTaskSpec(id, taskqueue.Ref("jobs", "work", args))
	}
	for len(specs) > 0 {
		n := min(len(specs), 1000)
		require.NoError(t, f.q.EnqueueBatch(context.Background(), specs[:n]))
		specs = specs[n:]
	}
}

// kill enqueues tasks and dead-letters them with reason. Nothing else may be pending.
func (f *fixture) kill(t testing.TB, reason string, ids ...string) {
	t.Helper()
	ctx := context.Background()
	f.enqueue(t, jobArgs{}, ids...)
	for left := len(ids); left > 0; {
		ds, err := f.q.Dequeue(ctx, taskqueue.DequeueOptions{Max: min(left, 500)})
		require.NoError(t, err)
		require.NotEmpty(t, ds)
		for _, d := range ds {
			require.NoError(t, f.q.DeadLetter(ctx, d, errors.New(reason)))
		}
		left -= len(ds)
	}
}

func (f *fixture) stats(t testing.TB) taskqueue.Stats {
	t.Helper()
	st, err := f.adm.Stats(context.Background())
	require.NoError(t, err)
	return st
}

// serve starts the dashboard of cfg (the fixture's queue when cfg has none) on a test server.
func (f *fixture) serve(t testing.TB, cfg Config) (*httptest.Server, *Dashboard) {
	t.Helper()
	if cfg.Queues == nil {
		cfg.Queues = []Queue{{Admin: f.adm, Schedules: f.sched}}
	}
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	d, err := New(cfg)
	require.NoError(t, err)
	mux := http.NewServeMux()
	mux.Handle(strings.TrimRight(cfg.BasePath, "/")+"/", d)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, d
}

// client is an HTTP client with cookies that does not follow redirects.
func client(t testing.TB) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// get fetches a page and returns its status and body.
func get(t testing.TB, c *http.Client, u string) (int, string) {
	t.Helper()
	resp, err := c.Get(u)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

func post(t testing.TB, c *http.Client, u string, form url.Values, header ...string) (int, string, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := c.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b), resp.Header.Get("Location")
}

var csrfInput = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// token loads a page and returns the CSRF token of its forms.
func token(t testing.TB, c *http.Client, page string) string {
	t.Helper()
	status, body := get(t, c, page)
	require.Equal(t, http.StatusOK, status, body)
	m := csrfInput.FindStringSubmatch(body)
	require.NotNil(t, m, "a form with a CSRF token on %s", page)
	return m[1]
}

func ids(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%05d", prefix, i)
	}
	return out
}

// workflow submits a diamond workflow "etl" and returns its id.
func (f *fixture) workflow(t testing.TB) string {
	t.Helper()
	wf := taskqueue.NewWorkflow("etl")
	spec := func() *taskqueue.TaskSpec {
		return &taskqueue.TaskSpec{Executable: taskqueue.Ref("jobs", "work", jobArgs{})}
	}
	wf.Add("extract", spec())
	wf.Add("clean", spec()).After("extract")
	wf.Add("enrich", spec()).After("extract")
	wf.Add("load", spec()).After("clean", "enrich")
	_, err := f.q.SubmitWorkflow(context.Background(), wf, nil)
	require.NoError(t, err)
	return "etl"
}

// killMany makes n dead letters with ids prefix00000...: one through the queue, the others as copies of it written
// in pipelines to the keys a dead letter has (docs/redis-keys.md: tasks, dead, errors), which is much faster on
// miniredis than n script calls.
func (f *fixture) killMany(t testing.TB, reason, prefix string, n int) {
	t.Helper()
	ctx := context.Background()
	first := ids(prefix, n)
	f.kill(t, reason, first[0])
	tag := "{" + f.adm.KeyPrefix() + "}:"
	env, err := f.rdb.HGet(ctx, tag+"tasks", first[0]).Result()
	require.NoError(t, err)
	died, err := f.rdb.ZScore(ctx, tag+"dead", first[0]).Result()
	require.NoError(t, err)
	for at := 1; at < n; at += 1000 {
		_, err := f.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i := at; i < min(at+1000, n); i++ {
				p.HSet(ctx, tag+"tasks", first[i], env)
				p.ZAdd(ctx, tag+"dead", redis.Z{Score: died + float64(i), Member: first[i]})
				p.HSet(ctx, tag+"errors", first[i], reason)
			}
			return nil
		})
		require.NoError(t, err)
	}
}
