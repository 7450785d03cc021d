package main

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	neturl "net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// lockedBuffer is a writer that the test reads while the command writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startWeb runs "taskqueue web" with args until the test ends, and returns the URL it serves.
func startWeb(t *testing.T, env map[string]string, args ...string) string {
	t.Helper()
	var out, errb lockedBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, append([]string{"web", "--addr", "127.0.0.1:0"}, args...), &out, &errb, func(k string) string { return env[k] })
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case code := <-done:
			require.Equal(t, 0, code, "stdout %s\nstderr %s", out.String(), errb.String())
		case <-time.After(10 * time.Second):
			t.Error("web did not stop")
		}
	})
	re := regexp.MustCompile(`on (http://\S+/)`)
	var url string
	require.Eventually(t, func() bool {
		m := re.FindStringSubmatch(out.String())
		if m != nil {
			url = m[1]
		}
		return url != ""
	}, 10*time.Second, 5*time.Millisecond, "the served address: %s %s", out.String(), errb.String())
	return url
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

// "taskqueue web" serves the dashboard of the queue on a loopback address, and stops on its context.
func TestWebServesDashboard(t *testing.T) {
	t.Parallel()
	f := newMiniFixture(t)
	f.enqueue(t, "a", "b", "c")
	url := startWeb(t, f.env)
	require.True(t, strings.HasPrefix(url, "http://127.0.0.1:"), url)
	status, body := httpGet(t, url)
	require.Equal(t, http.StatusOK, status)
	require.Contains(t, body, `data-queue="ops"`)
	require.Contains(t, body, `<a href="/q/ops/?state=pending">3</a>`)
	require.Contains(t, body, `action="/q/ops/pause"`)

	ro := startWeb(t, f.env, "--read-only", "--base-path", "/ops-ui")
	require.True(t, strings.HasSuffix(ro, "/ops-ui/"), ro)
	status, body = httpGet(t, ro+"q/ops/")
	require.Equal(t, http.StatusOK, status)
	require.Contains(t, body, "read-only")
	require.NotContains(t, body, `method="post"`)
}

func TestWebSharded(t *testing.T) {
	t.Parallel()
	f := newMiniFixture(t)
	url := startWeb(t, f.env, "--queues", "ops,big", "--shards", "3")
	status, body := httpGet(t, url)
	require.Equal(t, http.StatusOK, status)
	require.Contains(t, body, `data-queue="big"`)
	require.Contains(t, body, `data-queue="ops"`)
}

func TestWebUsage(t *testing.T) {
	t.Parallel()
	f := newMiniFixture(t)
	for _, args := range [][]string{{"web", "extra"}, {"web", "--shards", "-1"}, {"web", "--base-path", "nope"}, {"web", "--queues", "a b"}} {
		r := cliEnv(t, f.env, args...)
		require.Equal(t, exitUsage, r.code, "%v: %s", args, r)
	}
	r := cliEnv(t, f.env, "web", "--help")
	require.Equal(t, 0, r.code)
	require.Contains(t, r.stdout, "127.0.0.1")
}

// Against a real redis-server: the overview shows the queue the library filled, and a dead letter requeued with
// the page's CSRF token leaves the dead letters.
func TestWebRealRedis(t *testing.T) {
	t.Parallel()
	f := newFixture(t, realRedis(t), "webreal")
	f.seed(t)
	url := startWeb(t, f.env)
	status, body := httpGet(t, url)
	require.Equal(t, http.StatusOK, status)
	for _, want := range []string{`data-queue="webreal"`, `state=pending">3</a>`, `state=active">1</a>`, `state=scheduled">1</a>`, `/q/webreal/dead">3</a>`} {
		require.Contains(t, body, want)
	}
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	c := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(url + "q/webreal/dead")
	require.NoError(t, err)
	page, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	_ = resp.Body.Close()
	m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindSubmatch(page)
	require.NotNil(t, m)
	resp, err = c.PostForm(url+"q/webreal/dead/selected", neturl.Values{"csrf": {string(m[1])}, "action": {"requeue"}, "id": {"d1"}})
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusSeeOther, resp.StatusCode)
	st, err := f.admin.Stats(context.Background())
	require.NoError(t, err)
	require.EqualValues(t, 2, st.Dead)
	require.EqualValues(t, 4, st.Pending)
}
