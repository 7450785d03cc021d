// Package tqprom exports the metrics of a taskqueue queue and its workers to Prometheus.
//
// Import it as github.com/graflow-go/taskqueue/contrib/prometheus; it is a module of its own, so the core
// module does not depend on the Prometheus client.
//
// A [Collector] covers one queue. It counts what the worker does through [taskqueue.WorkerConfig.OnEvent] (see
// [Collector.Instrument]), what producers enqueue through a [Producer], and reads the queue's depth per state with
// one bounded call ([taskqueue.Admin.Stats]: two pipelined round trips of constant work per shard), cached for
// [Config.StatsTTL] so that scrapes cost Redis at most one such call per TTL, however many scrapers there are.
//
//	admin, err := taskqueue.NewAdmin(q)
//	c, err := tqprom.New(admin, nil)
//	prometheus.MustRegister(c)
//	cfg := &taskqueue.WorkerConfig{Concurrency: 8}
//	c.Instrument(cfg)
//	w, err := taskqueue.NewTaskWorker(q, cfg)
//
// # Labels
//
// Every metric carries the constant label queue (the key prefix by default), so collectors of several queues
// register side by side. Task metrics carry task: "module.name" for reference tasks (read from the resolved
// executable, so no payload is parsed), [OtherTask] for other tasks and for names past [Config.MaxTaskNames].
// Worker-side names are bounded by the functions the worker registered (tasks it cannot resolve are parked at
// pickup and never reach it); the cap also bounds names that producers invent.
package tqprom

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/graflow-go/taskqueue"
)

// OtherTask is the task label of tasks that are not references (without [Config.TaskName]) and of task names
// seen after [Config.MaxTaskNames] others.
const OtherTask = "_other"

// StatsReader is what the depth gauges read: [*taskqueue.Admin] (of a [*taskqueue.RedisTaskQueue] or a
// [*taskqueue.ShardedQueue]) and [*taskqueue.MemoryQueue] implement it.
type StatsReader interface {
	Stats(ctx context.Context) (taskqueue.Stats, error)
}

// Config configures a [Collector]. The zero value of each field takes its default; the config is copied.
type Config struct {
	// Namespace prefixes every metric name. Default "taskqueue".
	Namespace string
	// Queue is the value of the queue label. Default the queue's KeyPrefix(); required when the queue has none.
	Queue string
	// StatsTTL is how long one read of the queue's depth serves scrapes. Default 5s; -1 reads on every scrape
	// (concurrent scrapes still share one read).
	StatsTTL time.Duration
	// StatsTimeout bounds one read of the queue's depth; a scrape waits for it at most this long. Default 2s.
	StatsTimeout time.Duration
	// MaxTaskNames bounds the distinct values of the task label ([OtherTask] included); later names are counted
	// under [OtherTask]. Default 200.
	MaxTaskNames int
	// TaskName, if set, names a task for the task label instead of the default ("module.name" for references,
	// [OtherTask] otherwise). It runs for every event: keep it cheap. Invalid UTF-8 is counted as [OtherTask].
	TaskName func(spec *taskqueue.TaskSpec) string
	// PickupBuckets are the buckets of the pickup latency histogram, in seconds. Default 0.5ms to 1h.
	PickupBuckets []float64
	// RunBuckets are the buckets of the run duration histogram, in seconds. Default 1ms to 30min.
	RunBuckets []float64
}

var (
	defaultPickupBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600}
	defaultRunBuckets    = []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900, 1800}
)

// Collector is a [prometheus.Collector] for one queue and the workers and producers that report to it. It is safe
// for concurrent use. Its metrics (with the default namespace):
//
//	taskqueue_enqueued_total{queue,task}         tasks enqueued through a [Producer]
//	taskqueue_started_total{queue,task}          handler runs started
//	taskqueue_succeeded_total{queue,task}        runs that returned nil
//	taskqueue_failed_total{queue,task}           runs that failed and were retried or dead-lettered
//	taskqueue_retried_total{queue,task}          failed runs scheduled to run again
//	taskqueue_dead_lettered_total{queue,task}    failed runs whose task was dead-lettered
//	taskqueue_released_total{queue,task}         running tasks handed back at worker shutdown
//	taskqueue_lease_lost_total{queue,task}       runs whose lease was lost (their result was not recorded)
//	taskqueue_cancelled_total{queue,task}        runs cancelled while they ran (Admin.Cancel)
//	taskqueue_snoozed_total{queue,task}          runs that snoozed (taskqueue.Snooze): they run again, no retry used
//	taskqueue_queue_errors_total{queue}          failed queue calls in workers
//	taskqueue_pickup_latency_seconds{queue,task} enqueue to handler start, first runs of ready tasks only
//	taskqueue_run_duration_seconds{queue,task}   handler run time of succeeded, retried and dead-lettered runs
//	taskqueue_queue_depth{queue,state}           tasks per state: pending, active, scheduled, dead, cancelled
//	taskqueue_stats_errors_total{queue}          failed reads of the queue depth
//
// Pickup latency is measured from the task's CreatedAt (the producer's clock, millisecond precision) to the
// start of its handler (the worker's clock), for tasks whose status is "pending" ([taskqueue.StatePending]; the
// seed's "ready" reads as pending) and that have not failed before (Attempt 0): delayed tasks (status "scheduled")
// and retries would count their delay, so they are left out. A
// task redelivered after its worker was lost or stopped, or requeued from the dead letters, is measured again
// from its enqueue. Clock skew between hosts shifts the figures; negative ones count as 0.
type Collector struct {
	queue        string
	prefix       string // the key prefix of the queue whose events it counts (InstrumentQueues)
	stats        StatsReader
	ttl, timeout time.Duration
	maxNames     int
	taskName     func(*taskqueue.TaskSpec) string

	enqueued, started, succeeded, failed, retried, dead, released, leaseLost, cancelled, snoozed *prometheus.CounterVec
	pickup, run                                                                                  *prometheus.HistogramVec
	queueErrors, statsErrors                                                                     prometheus.Counter
	depth                                                                                        *prometheus.Desc

	mu    sync.RWMutex
	tasks map[taskKey]*taskMetrics

	cache statsCache
}

// taskKey identifies a task label value without building the string: module and name of a reference, or the
// name from Config.TaskName in name.
type taskKey struct{ module, name string }

// taskMetrics are the children of one task label value, looked up once per event.
type taskMetrics struct {
	enqueued, started, succeeded, failed, retried, dead, released, leaseLost, cancelled, snoozed prometheus.Counter
	pickup, run                                                                                  prometheus.Observer
}

// New returns a collector for q. q may be nil for a process that only produces: there are no depth gauges then,
// and Config.Queue is required. The config is copied; nil takes every default.
func New(q StatsReader, cfg *Config) (*Collector, error) {
	c := Config{}
	if cfg != nil {
		c = *cfg
	}
	if c.Namespace == "" {
		c.Namespace = "taskqueue"
	}
	prefix := c.Queue
	if p, ok := q.(interface{ KeyPrefix() string }); ok {
		prefix = p.KeyPrefix()
	}
	if c.Queue == "" {
		c.Queue = prefix
	}
	switch {
	case c.StatsTTL == 0:
		c.StatsTTL = 5 * time.Second
	case c.StatsTTL == -1:
		c.StatsTTL = 0
	case c.StatsTTL < 0:
		return nil, fmt.Errorf("%w: tqprom: StatsTTL must be -1 or more", taskqueue.ErrInvalidConfig)
	}
	if c.StatsTimeout == 0 {
		c.StatsTimeout = 2 * time.Second
	}
	if c.MaxTaskNames == 0 {
		c.MaxTaskNames = 200
	}
	if c.PickupBuckets == nil {
		c.PickupBuckets = defaultPickupBuckets
	}
	if c.RunBuckets == nil {
		c.RunBuckets = defaultRunBuckets
	}
	switch {
	case c.Queue == "" || !utf8.ValidString(c.Queue):
		return nil, fmt.Errorf("%w: tqprom: Config.Queue is required (valid UTF-8) for a queue without KeyPrefix", taskqueue.ErrInvalidConfig)
	case c.StatsTimeout < 0:
		return nil, fmt.Errorf("%w: tqprom: StatsTimeout must not be negative", taskqueue.ErrInvalidConfig)
	case c.MaxTaskNames < 1:
		return nil, fmt.Errorf("%w: tqprom: MaxTaskNames must be at least 1", taskqueue.ErrInvalidConfig)
	}

	constLabels := prometheus.Labels{"queue": c.Queue}
	counter := func(name, help string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: c.Namespace, Name: name, Help: help, ConstLabels: constLabels}, []string{"task"})
	}
	col := &Collector{
		queue: c.Queue, prefix: prefix, stats: q, ttl: c.StatsTTL, timeout: c.StatsTimeout, maxNames: c.MaxTaskNames, taskName: c.TaskName,
		enqueued:  counter("enqueued_total", "Tasks enqueued through a producer that reports to this collector."),
		started:   counter("started_total", "Handler runs started."),
		succeeded: counter("succeeded_total", "Handler runs that returned nil."),
		failed:    counter("failed_total", "Handler runs that failed and were retried or dead-lettered."),
		retried:   counter("retried_total", "Failed handler runs whose task was scheduled to run again."),
		dead:      counter("dead_lettered_total", "Failed handler runs whose task was dead-lettered."),
		released:  counter("released_total", "Running tasks handed back to the queue at worker shutdown."),
		leaseLost: counter("lease_lost_total", "Handler runs whose lease was lost; their result was not recorded."),
		cancelled: counter("cancelled_total", "Handler runs cancelled while they ran (Admin.Cancel)."),
		snoozed:   counter("snoozed_total", "Handler runs that snoozed: the task runs again after a delay, without using a retry."),
		pickup: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: c.Namespace, Name: "pickup_latency_seconds", ConstLabels: constLabels, Buckets: c.PickupBuckets,
			Help: "Time from enqueue (the task's created_at) to handler start, for first runs of tasks enqueued without a delay.",
		}, []string{"task"}),
		run: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: c.Namespace, Name: "run_duration_seconds", ConstLabels: constLabels, Buckets: c.RunBuckets,
			Help: "Handler run time of succeeded, retried and dead-lettered runs.",
		}, []string{"task"}),
		queueErrors: prometheus.NewCounter(prometheus.CounterOpts{Namespace: c.Namespace, Name: "queue_errors_total",
			Help: "Failed queue calls in workers (pickup, ack, retry, lease renewal, reaping).", ConstLabels: constLabels}),
		statsErrors: prometheus.NewCounter(prometheus.CounterOpts{Namespace: c.Namespace, Name: "stats_errors_total",
			Help: "Failed reads of the queue depth.", ConstLabels: constLabels}),
		depth: prometheus.NewDesc(prometheus.BuildFQName(c.Namespace, "", "queue_depth"),
			"Tasks in the queue per state, read at most once per stats TTL.", []string{"state"}, constLabels),
		tasks: make(map[taskKey]*taskMetrics),
	}
	return col, nil
}

// Queue returns the value of the collector's queue label.
func (c *Collector) Queue() string { return c.queue }

// Describe implements [prometheus.Collector].
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, v := range c.counterVecs() {
		v.Describe(ch)
	}
	c.pickup.Describe(ch)
	c.run.Describe(ch)
	c.queueErrors.Describe(ch)
	c.statsErrors.Describe(ch)
	if c.stats != nil {
		ch <- c.depth
	}
}

// Collect implements [prometheus.Collector]. It reads the queue depth through the cache: at most one call per
// TTL, shared by concurrent scrapes, bounded by Config.StatsTimeout.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	if c.stats != nil {
		if st, ok := c.readStats(); ok {
			for _, s := range []struct {
				state string
				n     int64
			}{{"pending", st.Pending}, {"active", st.Active}, {"scheduled", st.Scheduled}, {"dead", st.Dead}, {"cancelled", st.Cancelled}} {
				ch <- prometheus.MustNewConstMetric(c.depth, prometheus.GaugeValue, float64(s.n), s.state)
			}
		}
	}
	for _, v := range c.counterVecs() {
		v.Collect(ch)
	}
	c.pickup.Collect(ch)
	c.run.Collect(ch)
	c.queueErrors.Collect(ch)
	c.statsErrors.Collect(ch)
}

func (c *Collector) counterVecs() []*prometheus.CounterVec {
	return []*prometheus.CounterVec{c.enqueued, c.started, c.succeeded, c.failed, c.retried, c.dead, c.released, c.leaseLost,
		c.cancelled, c.snoozed}
}

// OnEvent records a worker event; it has the signature of [taskqueue.WorkerConfig.OnEvent].
func (c *Collector) OnEvent(e taskqueue.Event) {
	if e.Kind == taskqueue.EventQueueError {
		c.queueErrors.Inc()
		return
	}
	if e.Spec == nil {
		return
	}
	m := c.task(e.Spec)
	switch e.Kind {
	case taskqueue.EventStarted:
		m.started.Inc()
		if s := e.Spec; s.Status == taskqueue.StatePending && s.Attempt == 0 && !s.CreatedAt.IsZero() {
			m.pickup.Observe(max(time.Since(s.CreatedAt), 0).Seconds())
		}
	case taskqueue.EventSucceeded:
		m.succeeded.Inc()
		m.run.Observe(e.Duration.Seconds())
	case taskqueue.EventRetried:
		m.failed.Inc()
		m.retried.Inc()
		m.run.Observe(e.Duration.Seconds())
	case taskqueue.EventDead:
		m.failed.Inc()
		m.dead.Inc()
		m.run.Observe(e.Duration.Seconds())
	case taskqueue.EventReleased:
		m.released.Inc()
	case taskqueue.EventLeaseLost:
		m.leaseLost.Inc()
	case taskqueue.EventCancelled:
		m.cancelled.Inc()
		m.run.Observe(e.Duration.Seconds())
	case taskqueue.EventSnoozed:
		m.snoozed.Inc()
		m.run.Observe(e.Duration.Seconds())
	}
}

// Instrument makes a worker config report to the collector: it sets cfg.OnEvent to [Collector.OnEvent], calling
// the hook that was set before as well.
func (c *Collector) Instrument(cfg *taskqueue.WorkerConfig) {
	prev := cfg.OnEvent
	if prev == nil {
		cfg.OnEvent = c.OnEvent
		return
	}
	cfg.OnEvent = func(e taskqueue.Event) {
		c.OnEvent(e)
		prev(e)
	}
}

// task returns the metrics of a task's label value, creating them on first sight while fewer than MaxTaskNames
// names are known. The common path is a read-locked map lookup keyed by the reference's module and name: no
// string is built and nothing allocates.
func (c *Collector) task(spec *taskqueue.TaskSpec) *taskMetrics {
	var key taskKey
	switch ref, ok := spec.Executable.(taskqueue.Referencer); {
	case c.taskName != nil:
		key.name = c.taskName(spec)
		if !utf8.ValidString(key.name) || key.name == "" {
			key.name = OtherTask
		}
	case ok:
		key.module, key.name, _ = ref.TaskReference()
	default:
		key.name = OtherTask
	}
	c.mu.RLock()
	m := c.tasks[key]
	c.mu.RUnlock()
	if m != nil {
		return m
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if m := c.tasks[key]; m != nil {
		return m
	}
	label := key.name
	if key.module != "" {
		label = key.module + "." + key.name
	}
	if !utf8.ValidString(label) {
		label = OtherTask
	}
	other := taskKey{name: OtherTask}
	if len(c.tasks) >= c.maxNames && key != other {
		if m = c.tasks[other]; m == nil {
			m = c.newTaskMetrics(OtherTask)
			c.tasks[other] = m
		}
		return m // the key is not stored: the map stays bounded
	}
	m = c.newTaskMetrics(label)
	c.tasks[key] = m
	return m
}

func (c *Collector) newTaskMetrics(label string) *taskMetrics {
	return &taskMetrics{
		enqueued: c.enqueued.WithLabelValues(label), started: c.started.WithLabelValues(label),
		succeeded: c.succeeded.WithLabelValues(label), failed: c.failed.WithLabelValues(label),
		retried: c.retried.WithLabelValues(label), dead: c.dead.WithLabelValues(label),
		released: c.released.WithLabelValues(label), leaseLost: c.leaseLost.WithLabelValues(label),
		cancelled: c.cancelled.WithLabelValues(label), snoozed: c.snoozed.WithLabelValues(label),
		pickup: c.pickup.WithLabelValues(label), run: c.run.WithLabelValues(label),
	}
}

// statsCache holds the last read of the queue depth; concurrent reads share one call.
type statsCache struct {
	mu       sync.Mutex
	at       time.Time // when the last read finished; zero before the first
	val      taskqueue.Stats
	err      error
	inflight chan struct{} // closed when the running read finishes; nil when none runs
}

// readStats returns the queue depth, read at most once per TTL. A failed read is cached for the TTL too, so a
// Redis that is down is not asked again by every scrape; its scrapes export no depth.
func (c *Collector) readStats() (taskqueue.Stats, bool) {
	cc := &c.cache
	cc.mu.Lock()
	if !cc.at.IsZero() && time.Since(cc.at) < c.ttl {
		defer cc.mu.Unlock()
		return cc.val, cc.err == nil
	}
	if wait := cc.inflight; wait != nil {
		cc.mu.Unlock()
		<-wait
		cc.mu.Lock()
		defer cc.mu.Unlock()
		return cc.val, cc.err == nil
	}
	done := make(chan struct{})
	cc.inflight = done
	cc.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	st, err := c.stats.Stats(ctx)
	cancel()
	if err != nil {
		c.statsErrors.Inc()
	}

	cc.mu.Lock()
	defer cc.mu.Unlock()
	cc.val, cc.err, cc.at, cc.inflight = st, err, time.Now(), nil
	close(done)
	return st, err == nil
}

// Enqueuer is the producer side of a queue: [*taskqueue.RedisTaskQueue], [*taskqueue.MemoryQueue], or any
// [taskqueue.TaskQueue].
type Enqueuer interface {
	Enqueue(ctx context.Context, spec *taskqueue.TaskSpec) error
	EnqueueBatch(ctx context.Context, specs []*taskqueue.TaskSpec) error
}

// Producer enqueues through a queue and counts the tasks it enqueued in taskqueue_enqueued_total. A repeated
// enqueue of an existing task id (a no-op for the queue) counts again: the counter counts accepted calls.
type Producer struct {
	q Enqueuer
	c *Collector
}

// Producer returns a [Producer] that enqueues through q and counts in c.
func (c *Collector) Producer(q Enqueuer) *Producer { return &Producer{q: q, c: c} }

// Enqueue enqueues spec and counts it if the queue accepted it.
func (p *Producer) Enqueue(ctx context.Context, spec *taskqueue.TaskSpec) error {
	err := p.q.Enqueue(ctx, spec)
	if err == nil && spec != nil {
		p.c.task(spec).enqueued.Inc()
	}
	return err
}

// EnqueueBatch enqueues specs and counts those that the queue accepted: every task but those reported in an
// [*taskqueue.EnqueueError]; none when the batch failed as a whole.
func (p *Producer) EnqueueBatch(ctx context.Context, specs []*taskqueue.TaskSpec) error {
	err := p.q.EnqueueBatch(ctx, specs)
	failed, whole := failedIndexes(err)
	if whole {
		return err
	}
	for i, spec := range specs {
		if spec != nil && !failed[i] {
			p.c.task(spec).enqueued.Inc()
		}
	}
	return err
}

// failedIndexes reads the tasks that an EnqueueBatch error reports; whole is true when the error is not only
// per-task errors (the call failed, and nothing can be counted).
func failedIndexes(err error) (failed map[int]bool, whole bool) {
	if err == nil {
		return nil, false
	}
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	failed = make(map[int]bool, len(errs))
	for _, e := range errs {
		var ee *taskqueue.EnqueueError
		if !errors.As(e, &ee) {
			return nil, true
		}
		failed[ee.Index] = true
	}
	return failed, false
}
