package taskqueue

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// Handler runs one task. The default handler runs spec.Executable; [Middleware] wraps it.
type Handler func(ctx context.Context, spec *TaskSpec) error

// Middleware wraps the handler of every task a worker runs: metrics, tracing, logging, recovery policies.
type Middleware func(next Handler) Handler

// EventKind names what happened to a task in a worker.
type EventKind string

// Events a worker reports through [WorkerConfig.OnEvent].
const (
	EventStarted    EventKind = "started"     // the handler is about to run
	EventSucceeded  EventKind = "succeeded"   // the handler returned nil (the ack follows)
	EventRetried    EventKind = "retried"     // the handler failed and the task was scheduled to run again
	EventDead       EventKind = "dead"        // the task was dead-lettered
	EventReleased   EventKind = "released"    // the task was handed back at shutdown
	EventLeaseLost  EventKind = "lease_lost"  // the delivery's lease was lost; its result was not recorded
	EventQueueError EventKind = "queue_error" // a queue call failed (the error is in Event.Err)
	EventCancelled  EventKind = "cancelled"   // the task was cancelled while it ran (Admin.Cancel); Err says how it ended
	EventSnoozed    EventKind = "snoozed"     // the handler returned Snooze: the task runs again after Delay
)

// Event describes one step of a task in a worker. Hooks run synchronously on the worker's goroutines: keep
// them fast.
type Event struct {
	Kind    EventKind
	TaskID  string
	Spec    *TaskSpec // nil for queue errors
	Attempt int       // handler failures before this run
	// Deliveries counts the deliveries of the task since it last settled: 1 normally, more after lost leases.
	Deliveries int
	Err        error         // the handler's error, or the queue error
	Duration   time.Duration // how long the handler ran (succeeded, retried, dead)
	Delay      time.Duration // when retried: the backoff before the next run
	// Queue is the key prefix of the queue the task came from: the worker's queue, or for a [MultiQueue] worker
	// the member's (a [ShardedQueue] member's prefix, without the shard suffix). Empty for queue errors that concern
	// no task.
	Queue string

	member int // the MultiQueue member the task came from (Delivery.member)
}

// WorkerConfig configures a [TaskWorker]. The zero value of each field takes its default; the config is copied.
type WorkerConfig struct {
	// Concurrency is how many tasks run at once. Default 10.
	Concurrency int
	// BatchSize is the most tasks leased in one pickup. Default min(Concurrency, 128).
	BatchSize int
	// BlockTimeout bounds one blocking wait for new tasks. Default 5s. Waiting costs Redis nothing; the bound only
	// matters as a safety net for a lost wake-up.
	BlockTimeout time.Duration
	// Heartbeat is how often the leases of running tasks are renewed. Default a third of the queue's lease. A
	// task whose lease could not be renewed is cancelled one heartbeat before the lease would expire.
	Heartbeat time.Duration
	// ReapInterval is how often this worker returns expired leases of crashed workers to the queue. Default a
	// tenth of the lease, between 100ms and 5s; -1 disables reaping in this worker.
	ReapInterval time.Duration
	// Timeout bounds one run of a task whose spec sets none. Default 30 minutes; -1 means no timeout.
	Timeout time.Duration
	// MaxRetries is the retry limit of tasks whose spec sets none (MaxRetries 0). Default 25; -1 means none.
	MaxRetries int
	// Backoff returns the delay before retry number attempt (1 for the first retry). Default: exponential from 1s,
	// doubling, capped at 1h, with up to 25% jitter.
	Backoff func(attempt int, err error) time.Duration
	// Logger receives the worker's logs. Default slog.Default().
	Logger *slog.Logger
	// Middleware wraps every task's handler, the first entry outermost.
	Middleware []Middleware
	// OnEvent, if set, is called for every [Event].
	OnEvent func(Event)
	// Name identifies the worker in logs and as the queue consumer. Default a random id.
	Name string
}

func (c *WorkerConfig) withDefaults(lease time.Duration) WorkerConfig {
	out := WorkerConfig{}
	if c != nil {
		out = *c
	}
	if out.Concurrency == 0 {
		out.Concurrency = 10
	}
	if out.BatchSize == 0 {
		out.BatchSize = min(out.Concurrency, 128)
	}
	if out.BlockTimeout == 0 {
		out.BlockTimeout = 5 * time.Second
	}
	if out.Heartbeat == 0 {
		out.Heartbeat = lease / 3
	}
	if out.ReapInterval == 0 {
		out.ReapInterval = min(max(lease/10, 100*time.Millisecond), 5*time.Second)
	}
	if out.Timeout == 0 {
		out.Timeout = 30 * time.Minute
	}
	if out.MaxRetries == 0 {
		out.MaxRetries = 25
	}
	if out.Backoff == nil {
		out.Backoff = DefaultBackoff
	}
	if out.Logger == nil {
		out.Logger = slog.Default()
	}
	if out.Name == "" {
		out.Name = newID()[:12]
	}
	return out
}

func (c *WorkerConfig) validate(lease time.Duration) error {
	switch {
	case c.Concurrency < 1:
		return fmt.Errorf("%w: Concurrency must be at least 1", ErrInvalidConfig)
	case c.BatchSize < 1 || c.BatchSize > 1000:
		return fmt.Errorf("%w: BatchSize must be between 1 and 1000", ErrInvalidConfig)
	case c.BlockTimeout < 10*time.Millisecond:
		return fmt.Errorf("%w: BlockTimeout must be at least 10ms", ErrInvalidConfig)
	case c.Heartbeat <= 0 || c.Heartbeat > lease/2:
		return fmt.Errorf("%w: Heartbeat must be positive and at most half the lease (%s)", ErrInvalidConfig, lease)
	case c.ReapInterval < -1 || (c.ReapInterval > 0 && c.ReapInterval < 10*time.Millisecond):
		return fmt.Errorf("%w: ReapInterval must be -1 or at least 10ms", ErrInvalidConfig)
	case c.Timeout < -1:
		return fmt.Errorf("%w: Timeout must be -1 or more", ErrInvalidConfig)
	case c.MaxRetries < -1:
		return fmt.Errorf("%w: MaxRetries must be -1 or more", ErrInvalidConfig)
	case !consumerNamePattern.MatchString(c.Name):
		return fmt.Errorf("%w: Name %s must match %s", ErrInvalidConfig, quote(c.Name), consumerNamePattern)
	}
	return nil
}

// DefaultBackoff is the default [WorkerConfig.Backoff]: 1s, 2s, 4s, … capped at 1h, each with up to 25% jitter.
func DefaultBackoff(attempt int, _ error) time.Duration {
	d := time.Hour
	if attempt < 13 {
		d = min(time.Second<<max(attempt-1, 0), time.Hour)
	}
	return d + time.Duration(rand.Int64N(int64(d)/4+1))
}

// TaskWorker consumes tasks from a [TaskQueue] and runs them: blocking pickup in batches, a configurable number
// of tasks at once, leases renewed by heartbeats, a timeout per run, panics recovered into failures, retries with
// backoff, dead letters, and a graceful stop that hands unfinished tasks back at once. Tasks arrive resolved (the
// queue rehydrates them through its registry), so a worker needs only its queue.
//
// Inside, each background loop is a part of its own, started by Start and stopped by Stop: the picker makes the
// pickups (worker_pickup.go), the acker acknowledges succeeded tasks in batches (worker_ack.go), the lease keeper
// renews leases (worker_lease.go), the reaper reclaims the leases of crashed workers (worker_reap.go). A fixed pool
// of Concurrency goroutines runs the tasks (worker_run.go), each behind the suspect gate (worker_gate.go) and within
// its timeout (worker_timeout.go: one timer for all of them), and each task ends with its outcome recorded
// (worker_outcome.go).
type TaskWorker struct {
	q       TaskQueue
	cfg     WorkerConfig
	handler Handler

	mu       sync.Mutex
	state    int       // stateNew, stateRunning, stateStopping, stateStopped
	heldHead *inflight // the deliveries this worker holds, a list (worker_run.go)
	heldTail *inflight
	heldN    atomic.Int64    // how many it holds; written under mu
	epoch    time.Time       // the origin of inflight.ends
	slots    chan struct{}   // one token per task that may start
	work     *runQueue       // launched tasks, for the task pool (worker_runq.go)
	baseCtx  context.Context // the values of Start's context, without its cancellation: every task's context derives from it
	tasks    sync.WaitGroup  // tasks launched and not yet ended
	pool     sync.WaitGroup  // the task pool's goroutines
	timeouts *taskTimeouts   // the tasks' timeouts
	gate     suspectGate

	picker *picker
	acker  *acker
	leases *leaseKeeper
	reaper *reaper

	control *cancelListener // cancels of running tasks (cancel_listener.go); nil for a queue without them

	history      []*historyRecorder // where runs are counted, by MultiQueue member (history_recorder.go); nil entries count nothing
	prefixes     []string           // the key prefix of each member (one entry unless the queue is a MultiQueue)
	historyFlush *historyFlusher

	health workerHealth // timestamps of the last successful round trips, for Health (health.go)
	probe  *queueProbe  // the start-up look at the queue (exists.go); nil when there is none
}

const (
	stateNew = iota
	stateRunning
	stateStopping
	stateStopped
)

// NewTaskWorker returns a worker for q. The config is copied; nil takes every default.
func NewTaskWorker(q TaskQueue, cfg *WorkerConfig) (*TaskWorker, error) {
	if q == nil {
		return nil, fmt.Errorf("%w: nil queue", ErrInvalidConfig)
	}
	lease := q.LeaseDuration()
	c := cfg.withDefaults(lease)
	if err := c.validate(lease); err != nil {
		return nil, err
	}
	h := Handler(func(ctx context.Context, spec *TaskSpec) error {
		if spec.Executable == nil {
			return fmt.Errorf("%w: task has no executable", ErrNotRunnable)
		}
		return spec.Executable.Run(ctx)
	})
	for i := len(c.Middleware) - 1; i >= 0; i-- {
		h = c.Middleware[i](h)
	}
	warnSlowRenewal(q, &c)
	w := &TaskWorker{q: q, cfg: c, handler: h, gate: newSuspectGate(), epoch: time.Now()}
	var flush []*historyRecorder
	w.history, flush = historyTargets(q)
	w.prefixes = queuePrefixes(q)
	w.historyFlush = newHistoryFlusher(w, flush)
	return w, nil
}

// Name returns the worker's name.
func (w *TaskWorker) Name() string { return w.cfg.Name }

// Start starts consuming in the background and returns. Stop the worker with Stop: cancelling ctx does not stop
// it. Every task's context carries ctx's values (a logger, a tenant, a database handle the embedding program put
// there), but not its cancellation or deadline: a task's context ends only by its timeout, its lost lease or Stop.
//
// A worker of a [RedisTaskQueue] or a [ShardedQueue] whose registry can resolve no task (no resolver, or only
// [ReferenceResolver]s with no function) does not start: the error wraps [ErrInvalidConfig] and [ErrNoResolvers].
// Once started, it checks in the background that its queue has keys in Redis, and logs a warning when it has
// none (a wrong key prefix or database, or a queue no producer has written to yet); see [Admin.Exists].
func (w *TaskWorker) Start(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if reg := registryOf(w.q); reg != nil {
		if err := checkResolvers(reg); err != nil {
			return err
		}
	}
	if m, ok := w.q.(*MultiQueue); ok { // multiqueue.go: each queue's registry
		if err := m.checkResolvers(); err != nil {
			return err
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.state != stateNew {
		return fmt.Errorf("%w: a worker starts once", ErrClosed)
	}
	w.state = stateRunning
	w.slots = make(chan struct{}, w.cfg.Concurrency)
	w.freeSlots(w.cfg.Concurrency)
	w.baseCtx = context.WithoutCancel(ctx)
	w.timeouts = newTaskTimeouts()
	w.work = newRunQueue(w.cfg.Concurrency)
	w.pool.Add(w.cfg.Concurrency)
	for range w.cfg.Concurrency {
		go w.taskLoop()
	}
	w.acker, w.leases, w.reaper, w.picker = newAcker(w), newLeaseKeeper(w), newReaper(w), newPicker(w)
	w.acker.start()
	w.leases.start()
	w.reaper.start()
	w.picker.start()
	w.control = newCancelListener(w)
	w.control.start(w.baseCtx)
	w.historyFlush.start()
	w.cfg.Logger.Info("taskqueue: worker started", slog.String("worker", w.cfg.Name), slog.Int("concurrency", w.cfg.Concurrency))
	w.probe = w.startQueueProbe()
	return nil
}

// Run starts the worker, waits until ctx is done, then stops it within shutdownGrace: tasks still running then
// are cancelled and handed back. Tasks' contexts carry ctx's values, as with Start.
func (w *TaskWorker) Run(ctx context.Context, shutdownGrace time.Duration) error {
	if err := w.Start(ctx); err != nil {
		return err
	}
	<-ctx.Done()
	stopCtx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	return w.Stop(stopCtx)
}

// Stop stops picking up tasks and waits for running ones to finish until ctx is done; those still running are
// then cancelled and handed back to the queue at once (not after their lease). Pending acks are flushed. Stop
// returns after every goroutine the worker started has returned, except handlers that ignore cancellation,
// which are reported in the log; their late results are refused by the fencing token.
func (w *TaskWorker) Stop(ctx context.Context) error {
	w.mu.Lock()
	if w.state != stateRunning {
		w.mu.Unlock()
		return ErrClosed
	}
	w.state = stateStopping
	w.mu.Unlock()

	w.probe.stop()
	w.reaper.stop()
	w.picker.stop(ctx)
	all, err := w.drainTasks(ctx)
	w.work.close() // no more launches: the picker has stopped
	if all {
		w.pool.Wait() // each pool goroutine is past its last task
	}
	w.timeouts.stop()
	w.acker.stop()  // no more acks can come: the last are sent
	w.leases.stop() // no task runs any more
	w.control.stop()
	w.historyFlush.stop() // after the last outcome: nothing counted is left behind
	w.reaper.wait()
	w.mu.Lock()
	w.state = stateStopped
	w.mu.Unlock()
	w.cfg.Logger.Info("taskqueue: worker stopped", slog.String("worker", w.cfg.Name))
	return err
}

// emit reports e to the OnEvent hook.
func (w *TaskWorker) emit(e Event) {
	if e.TaskID != "" && e.member < len(w.prefixes) {
		e.Queue = w.prefixes[e.member]
		w.history[e.member].observe(&e) // history_recorder.go
	}
	if w.cfg.OnEvent != nil {
		w.cfg.OnEvent(e)
	}
}
