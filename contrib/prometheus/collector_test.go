package tqprom

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/graflow-go/taskqueue"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

type noArgs struct{}

// countingQueue counts the Stats calls that reach the queue's Admin.
type countingQueue struct {
	*taskqueue.Admin
	calls atomic.Int32
}

func (q *countingQueue) Stats(ctx context.Context) (taskqueue.Stats, error) {
	q.calls.Add(1)
	return q.Admin.Stats(ctx)
}

// adminOf returns the Admin of q.
func adminOf(t *testing.T, q *taskqueue.RedisTaskQueue) *taskqueue.Admin {
	t.Helper()
	a, err := taskqueue.NewAdmin(q)
	require.NoError(t, err)
	return a
}

// newQueue returns a queue under the prefix "orders" on a miniredis, with tasks registered in module shop.
func newQueue(t *testing.T) (*taskqueue.RedisTaskQueue, *redis.Client) {
	t.Helper()
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	ref := taskqueue.NewReferenceResolver()
	var flaky atomic.Int32
	taskqueue.MustRegister(ref, "shop", "ship", func(context.Context, noArgs) error { return nil })
	taskqueue.MustRegister(ref, "shop", "flaky", func(context.Context, noArgs) error {
		if flaky.Add(1) == 1 {
			return errors.New("first run fails")
		}
		return nil
	})
	taskqueue.MustRegister(ref, "shop", "broken", func(context.Context, noArgs) error { return errors.New("always fails") })
	reg := taskqueue.NewResolverRegistry()
	reg.MustRegister(taskqueue.DefaultResolverID, ref)
	q, err := taskqueue.NewRedisTaskQueue(rdb, "orders", reg, &taskqueue.RedisConfig{Logger: quiet()})
	require.NoError(t, err)
	return q, rdb
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// find returns the metric of a family with the given labels (all of them matching), or nil.
func find(families []*dto.MetricFamily, name string, labels map[string]string) *dto.Metric {
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.GetMetric() {
			for k, v := range labels {
				found := false
				for _, lp := range m.GetLabel() {
					found = found || (lp.GetName() == k && lp.GetValue() == v)
				}
				if !found {
					continue next
				}
			}
			return m
		}
	}
	return nil
}

func counter(t *testing.T, fs []*dto.MetricFamily, name, task string) float64 {
	t.Helper()
	m := find(fs, name, map[string]string{"queue": "orders", "task": task})
	require.NotNil(t, m, "%s{task=%q}", name, task)
	return m.GetCounter().GetValue()
}

func histogramCount(t *testing.T, fs []*dto.MetricFamily, name, task string) uint64 {
	t.Helper()
	m := find(fs, name, map[string]string{"queue": "orders", "task": task})
	require.NotNil(t, m, "%s{task=%q}", name, task)
	return m.GetHistogram().GetSampleCount()
}

func TestScrapeAfterWorkerRun(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	q, _ := newQueue(t)
	cq := &countingQueue{Admin: adminOf(t, q)}
	c, err := New(cq, &Config{StatsTTL: time.Hour})
	require.NoError(t, err)
	require.Equal(t, "orders", c.Queue(), "the key prefix by default")
	registry := prometheus.NewPedanticRegistry()
	require.NoError(t, registry.Register(c))

	p := c.Producer(q)
	for _, id := range []string{"s1", "s2", "s3"} {
		require.NoError(t, p.Enqueue(ctx, taskqueue.NewTaskSpec(id, taskqueue.Ref("shop", "ship", nil))))
	}
	require.NoError(t, p.EnqueueBatch(ctx, []*taskqueue.TaskSpec{
		taskqueue.NewTaskSpec("f1", taskqueue.Ref("shop", "flaky", nil)),
		{TaskID: "b1", Executable: taskqueue.Ref("shop", "broken", nil), MaxRetries: -1},
		{TaskID: "later", Executable: taskqueue.Ref("shop", "ship", nil), ProcessIn: time.Hour},
	}))

	cfg := &taskqueue.WorkerConfig{Concurrency: 4, Logger: quiet(), Backoff: func(int, error) time.Duration { return 0 }}
	var hooked atomic.Int32
	cfg.OnEvent = func(taskqueue.Event) { hooked.Add(1) }
	c.Instrument(cfg)
	w, err := taskqueue.NewTaskWorker(q, cfg)
	require.NoError(t, err)
	require.NoError(t, w.Start(ctx))
	waitFor(t, "4 successes and a dead letter", func() bool {
		fs, err := registry.Gather()
		require.NoError(t, err)
		s, d := find(fs, "taskqueue_succeeded_total", map[string]string{"task": "shop.flaky"}), find(fs, "taskqueue_dead_lettered_total", nil)
		return s != nil && s.GetCounter().GetValue() == 1 && d != nil &&
			find(fs, "taskqueue_succeeded_total", map[string]string{"task": "shop.ship"}).GetCounter().GetValue() == 3
	})
	stopCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	require.NoError(t, w.Stop(stopCtx))
	require.Positive(t, hooked.Load(), "the hook that was set before still runs")
	require.Equal(t, int32(1), cq.calls.Load(), "the waits above scraped once: one Stats call")

	// Scrape over HTTP twice, within the TTL: no further Stats call.
	srv := httptest.NewServer(promhttp.HandlerFor(registry, promhttp.HandlerOpts{}))
	defer srv.Close()
	scrape := func() string {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, http.NoBody)
		require.NoError(t, err)
		resp, err := srv.Client().Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return string(body)
	}
	text := scrape()
	_ = scrape()
	require.Equal(t, int32(1), cq.calls.Load(), "scrapes within the TTL share one Stats call")
	for _, line := range []string{
		`taskqueue_enqueued_total{queue="orders",task="shop.ship"} 4`,
		`taskqueue_started_total{queue="orders",task="shop.flaky"} 2`,
		`taskqueue_failed_total{queue="orders",task="shop.broken"} 1`,
		`taskqueue_dead_lettered_total{queue="orders",task="shop.broken"} 1`,
		`taskqueue_pickup_latency_seconds_count{queue="orders",task="shop.ship"} 3`,
		`taskqueue_run_duration_seconds_count{queue="orders",task="shop.flaky"} 2`,
		`taskqueue_queue_depth{queue="orders",state="scheduled"} 1`,
	} {
		require.Contains(t, text, line+"\n")
	}

	// A fresh read once the TTL is over shows the final depth.
	c.cache.mu.Lock()
	c.cache.at = time.Now().Add(-2 * time.Hour)
	c.cache.mu.Unlock()
	fs, err := registry.Gather()
	require.NoError(t, err)
	require.Equal(t, int32(2), cq.calls.Load())
	for task, want := range map[string][7]float64{ // enqueued, started, succeeded, failed, retried, dead, released
		"shop.ship":   {4, 3, 3, 0, 0, 0, 0},
		"shop.flaky":  {1, 2, 1, 1, 1, 0, 0},
		"shop.broken": {1, 1, 0, 1, 0, 1, 0},
	} {
		for i, name := range []string{"enqueued", "started", "succeeded", "failed", "retried", "dead_lettered", "released"} {
			require.Equal(t, want[i], counter(t, fs, "taskqueue_"+name+"_total", task), "%s %s", name, task)
		}
	}
	// Pickup latency: first runs of ready tasks only (the flaky task's retry is not measured again).
	require.Equal(t, uint64(3), histogramCount(t, fs, "taskqueue_pickup_latency_seconds", "shop.ship"))
	require.Equal(t, uint64(1), histogramCount(t, fs, "taskqueue_pickup_latency_seconds", "shop.flaky"))
	require.Equal(t, uint64(1), histogramCount(t, fs, "taskqueue_pickup_latency_seconds", "shop.broken"))
	require.Equal(t, uint64(2), histogramCount(t, fs, "taskqueue_run_duration_seconds", "shop.flaky"))
	require.Equal(t, uint64(3), histogramCount(t, fs, "taskqueue_run_duration_seconds", "shop.ship"))
	for state, want := range map[string]float64{"pending": 0, "active": 0, "scheduled": 1, "dead": 1, "cancelled": 0} {
		m := find(fs, "taskqueue_queue_depth", map[string]string{"queue": "orders", "state": state})
		require.NotNil(t, m, state)
		require.Equal(t, want, m.GetGauge().GetValue(), state)
	}
	require.Equal(t, 0.0, find(fs, "taskqueue_stats_errors_total", nil).GetCounter().GetValue())
}

// blockingStats is a StatsReader whose calls wait for release.
type blockingStats struct {
	calls   atomic.Int32
	release chan struct{}
	err     error
}

func (b *blockingStats) Stats(ctx context.Context) (taskqueue.Stats, error) {
	b.calls.Add(1)
	select {
	case <-b.release:
	case <-ctx.Done():
		return taskqueue.Stats{}, ctx.Err()
	}
	return taskqueue.Stats{Counts: taskqueue.Counts{Pending: 7, Active: 2, Scheduled: 1, Dead: 3}}, b.err
}

func TestConcurrentScrapesShareOneStatsCall(t *testing.T) {
	t.Parallel()
	b := &blockingStats{release: make(chan struct{})}
	// A StatsTimeout far above what the scrapes take to pile up: the read ends by the release, not by the timeout.
	c, err := New(b, &Config{Queue: "q", StatsTimeout: time.Minute})
	require.NoError(t, err)
	registry := prometheus.NewRegistry()
	require.NoError(t, registry.Register(c))
	var wg sync.WaitGroup
	results := make(chan []*dto.MetricFamily, 8)
	for range 8 {
		wg.Go(func() {
			fs, err := registry.Gather()
			if err == nil {
				results <- fs
			}
		})
	}
	waitFor(t, "the first Stats call", func() bool { return b.calls.Load() == 1 })
	waitFor(t, "the other 7 scrapes waiting for it", func() bool { return waitingOnInflightRead() == 7 })
	close(b.release)
	wg.Wait()
	close(results)
	require.Equal(t, int32(1), b.calls.Load())
	n := 0
	for fs := range results {
		n++
		m := find(fs, "taskqueue_queue_depth", map[string]string{"queue": "q", "state": "pending"})
		require.NotNil(t, m)
		require.Equal(t, 7.0, m.GetGauge().GetValue())
	}
	require.Equal(t, 8, n)
}

// waitingOnInflightRead counts the goroutines blocked in readStats on the read that another scrape runs (only
// TestConcurrentScrapesShareOneStatsCall makes any).
func waitingOnInflightRead() int {
	buf := make([]byte, 8<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		head, rest, _ := strings.Cut(g, "\n")
		if strings.Contains(head, "[chan receive") && strings.HasPrefix(rest, "github.com/graflow-go/taskqueue/contrib/prometheus.(*Collector).readStats(") {
			n++
		}
	}
	return n
}

func TestStatsTTLAndErrors(t *testing.T) {
	t.Parallel()
	t.Run("-1 reads on every scrape", func(t *testing.T) {
		t.Parallel()
		b := &blockingStats{release: make(chan struct{})}
		close(b.release)
		c, err := New(b, &Config{Queue: "q", StatsTTL: -1})
		require.NoError(t, err)
		for range 3 {
			require.Positive(t, testutil.CollectAndCount(c, "taskqueue_queue_depth"))
		}
		require.Equal(t, int32(3), b.calls.Load())
	})
	t.Run("a failed read exports no depth and is cached", func(t *testing.T) {
		t.Parallel()
		b := &blockingStats{release: make(chan struct{}), err: errors.New("redis down")}
		close(b.release)
		c, err := New(b, &Config{Queue: "q"})
		require.NoError(t, err)
		require.Equal(t, 0, testutil.CollectAndCount(c, "taskqueue_queue_depth"))
		require.Equal(t, 0, testutil.CollectAndCount(c, "taskqueue_queue_depth"))
		require.Equal(t, int32(1), b.calls.Load())
		require.Equal(t, 1.0, testutil.ToFloat64(c.statsErrors))
	})
	t.Run("a slow read is cut at StatsTimeout", func(t *testing.T) {
		t.Parallel()
		b := &blockingStats{release: make(chan struct{})} // never released
		c, err := New(b, &Config{Queue: "q", StatsTimeout: 20 * time.Millisecond})
		require.NoError(t, err)
		start := time.Now()
		require.Equal(t, 0, testutil.CollectAndCount(c, "taskqueue_queue_depth"))
		require.Less(t, time.Since(start), 5*time.Second)
		require.Equal(t, 1.0, testutil.ToFloat64(c.statsErrors))
	})
}

func TestTaskLabelsAreBounded(t *testing.T) {
	t.Parallel()
	c, err := New(nil, &Config{Queue: "q", MaxTaskNames: 2})
	require.NoError(t, err)
	for _, name := range []string{"a", "b", "c", "d", "a"} {
		c.OnEvent(taskqueue.Event{Kind: taskqueue.EventStarted, Spec: &taskqueue.TaskSpec{Executable: taskqueue.Ref("m", name, nil)}})
	}
	c.OnEvent(taskqueue.Event{Kind: taskqueue.EventStarted, Spec: &taskqueue.TaskSpec{Executable: taskqueue.Func(func(context.Context) error { return nil })}})
	require.Equal(t, 2.0, testutil.ToFloat64(c.started.WithLabelValues("m.a")))
	require.Equal(t, 1.0, testutil.ToFloat64(c.started.WithLabelValues("m.b")))
	require.Equal(t, 3.0, testutil.ToFloat64(c.started.WithLabelValues(OtherTask)), "c, d and a closure")
	require.Equal(t, 3, testutil.CollectAndCount(c.started))
	c.mu.RLock()
	require.Len(t, c.tasks, 3, "names past the cap are not remembered")
	c.mu.RUnlock()

	named, err := New(nil, &Config{Queue: "q", TaskName: func(s *taskqueue.TaskSpec) string { return s.GroupID }})
	require.NoError(t, err)
	named.OnEvent(taskqueue.Event{Kind: taskqueue.EventSucceeded, Spec: &taskqueue.TaskSpec{GroupID: "etl"}, Duration: time.Second})
	named.OnEvent(taskqueue.Event{Kind: taskqueue.EventSucceeded, Spec: &taskqueue.TaskSpec{GroupID: "bad\xff"}})
	named.OnEvent(taskqueue.Event{Kind: taskqueue.EventQueueError, Err: errors.New("x")})
	require.Equal(t, 1.0, testutil.ToFloat64(named.succeeded.WithLabelValues("etl")))
	require.Equal(t, 1.0, testutil.ToFloat64(named.succeeded.WithLabelValues(OtherTask)))
	require.Equal(t, 1.0, testutil.ToFloat64(named.queueErrors))
}

// TestCancelledAndSnoozedCounted: the control events (docs/control.md) have counters of their own, and count as
// runs, not as failures.
func TestCancelledAndSnoozedCounted(t *testing.T) {
	t.Parallel()
	c, err := New(nil, &Config{Queue: "q"})
	require.NoError(t, err)
	spec := &taskqueue.TaskSpec{Executable: taskqueue.Ref("m", "f", nil)}
	c.OnEvent(taskqueue.Event{Kind: taskqueue.EventCancelled, Spec: spec, Err: taskqueue.ErrCancelled, Duration: time.Second})
	c.OnEvent(taskqueue.Event{Kind: taskqueue.EventSnoozed, Spec: spec, Duration: time.Second})
	c.OnEvent(taskqueue.Event{Kind: taskqueue.EventSnoozed, Spec: spec, Duration: time.Second})
	require.Equal(t, 1.0, testutil.ToFloat64(c.cancelled.WithLabelValues("m.f")))
	require.Equal(t, 2.0, testutil.ToFloat64(c.snoozed.WithLabelValues("m.f")))
	require.Zero(t, testutil.ToFloat64(c.failed.WithLabelValues("m.f")))
}

func TestOnEventDoesNotAllocate(t *testing.T) {
	c, err := New(nil, &Config{Queue: "q"})
	require.NoError(t, err)
	e := taskqueue.Event{Kind: taskqueue.EventSucceeded, Spec: &taskqueue.TaskSpec{Executable: taskqueue.Ref("m", "f", nil)}, Duration: time.Millisecond}
	c.OnEvent(e)
	require.Zero(t, testing.AllocsPerRun(100, func() { c.OnEvent(e) }))
}

func TestProducerCountsAcceptedTasks(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	q, rdb := newQueue(t)
	c, err := New(adminOf(t, q), nil)
	require.NoError(t, err)
	p := c.Producer(q)
	err = p.EnqueueBatch(ctx, []*taskqueue.TaskSpec{
		taskqueue.NewTaskSpec("ok", taskqueue.Ref("shop", "ship", nil)),
		taskqueue.NewTaskSpec("bad id", taskqueue.Ref("shop", "ship", nil)),
		nil,
		taskqueue.NewTaskSpec("ok2", taskqueue.Ref("shop", "flaky", nil)),
	})
	require.ErrorIs(t, err, taskqueue.ErrInvalidTaskID)
	require.Equal(t, 1.0, testutil.ToFloat64(c.enqueued.WithLabelValues("shop.ship")))
	require.Equal(t, 1.0, testutil.ToFloat64(c.enqueued.WithLabelValues("shop.flaky")))
	require.Error(t, p.Enqueue(ctx, taskqueue.NewTaskSpec("bad id", taskqueue.Ref("shop", "ship", nil))))
	require.Equal(t, 1.0, testutil.ToFloat64(c.enqueued.WithLabelValues("shop.ship")))

	// A batch that fails as a whole counts nothing.
	require.NoError(t, rdb.Close())
	require.Error(t, p.EnqueueBatch(ctx, []*taskqueue.TaskSpec{taskqueue.NewTaskSpec("x", taskqueue.Ref("shop", "ship", nil))}))
	require.Equal(t, 1.0, testutil.ToFloat64(c.enqueued.WithLabelValues("shop.ship")))
}

func TestMetricsLint(t *testing.T) {
	t.Parallel()
	q, _ := newQueue(t)
	c, err := New(adminOf(t, q), nil)
	require.NoError(t, err)
	c.OnEvent(taskqueue.Event{Kind: taskqueue.EventStarted, Spec: &taskqueue.TaskSpec{Executable: taskqueue.Ref("m", "f", nil)}})
	problems, err := testutil.CollectAndLint(c)
	require.NoError(t, err)
	require.Empty(t, problems)

	// Collectors of two queues register side by side.
	other, err := New(taskqueue.NewMemoryQueue(0, 0), &Config{Queue: "other"})
	require.NoError(t, err)
	registry := prometheus.NewPedanticRegistry()
	require.NoError(t, registry.Register(c))
	require.NoError(t, registry.Register(other))
	_, err = registry.Gather()
	require.NoError(t, err)
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		q   StatsReader
		cfg *Config
	}{
		"memory queue without a label": {taskqueue.NewMemoryQueue(0, 0), nil},
		"no queue and no label":        {nil, nil},
		"negative TTL":                 {nil, &Config{Queue: "q", StatsTTL: -2}},
		"negative timeout":             {nil, &Config{Queue: "q", StatsTimeout: -1}},
		"negative name cap":            {nil, &Config{Queue: "q", MaxTaskNames: -1}},
		"invalid UTF-8 label":          {nil, &Config{Queue: "\xff"}},
	} {
		_, err := New(tc.q, tc.cfg)
		require.ErrorIs(t, err, taskqueue.ErrInvalidConfig, name)
	}
	c, err := New(nil, &Config{Queue: "producer-only"})
	require.NoError(t, err)
	require.Equal(t, 0, testutil.CollectAndCount(c, "taskqueue_queue_depth"))
	descs := make(chan *prometheus.Desc, 100)
	c.Describe(descs)
	close(descs)
	for d := range descs {
		require.NotContains(t, d.String(), "queue_depth", "no depth without a queue")
	}
	require.True(t, strings.HasPrefix(c.Queue(), "producer"))
}

// The depth gauges count the cancelled tasks whose record is kept.
func TestCancelledDepth(t *testing.T) {
	t.Parallel()
	q, _ := newQueue(t)
	ctx := context.Background()
	require.NoError(t, q.Enqueue(ctx, taskqueue.NewTaskSpec("c1", taskqueue.Ref("shop", "ship", noArgs{}))))
	adm, err := taskqueue.NewAdmin(q)
	require.NoError(t, err)
	_, err = adm.Cancel(ctx, "c1")
	require.NoError(t, err)
	c, err := New(adm, &Config{StatsTTL: -1})
	require.NoError(t, err)
	registry := prometheus.NewPedanticRegistry()
	require.NoError(t, registry.Register(c))
	fs, err := registry.Gather()
	require.NoError(t, err)
	m := find(fs, "taskqueue_queue_depth", map[string]string{"queue": "orders", "state": "cancelled"})
	require.NotNil(t, m)
	require.Equal(t, 1.0, m.GetGauge().GetValue())
}
