package taskqueue

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
	"slices"
	"sync"
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
	case !resolverIDPattern.MatchString(c.Name):
		return fmt.Errorf("%w: Name %s must match %s", ErrInvalidConfig, quote(c.Name), resolverIDPattern)
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
type TaskWorker struct {
	q       TaskQueue
	cfg     WorkerConfig
	handler Handler

	mu      sync.Mutex
	state   int // 0 new, 1 running, 2 stopping, 3 stopped
	running map[*Delivery]*inflight
	slots   chan struct{}
	baseCtx context.Context // the values of Start's context, without its cancellation: every task's context derives from it
	picker  *picker         // worker_pickup.go
	acker   *acker          // worker_ack.go
	tasks   sync.WaitGroup  // task goroutines
	gate    suspectGate     // worker_gate.go

	leases *leaseKeeper // worker_lease.go
	reaper *reaper      // worker_reap.go

	health workerHealth // timestamps of the last successful round trips, for Health (health.go)
}

type inflight struct {
	d      *Delivery
	cancel context.CancelCauseFunc
	handed bool      // handed back by Stop: the goroutine must not record its outcome
	ends   time.Time // when the lease ends, as the last pickup or renewal told (w.mu; d.localEnds is the heartbeat's)
}

const (
	stateNew = iota
	stateRunning
	stateStopping
	stateStopped
)

var errStopping = errors.New("taskqueue: worker stopping")

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
	return &TaskWorker{q: q, cfg: c, handler: h, running: make(map[*Delivery]*inflight), gate: newSuspectGate()}, nil
}

// Name returns the worker's name.
func (w *TaskWorker) Name() string { return w.cfg.Name }

// Start starts consuming in the background and returns. Stop the worker with Stop: cancelling ctx does not stop
// it. Every task's context carries ctx's values (a logger, a tenant, a database handle the embedding program put
// there), but not its cancellation or deadline: a task's context ends only by its timeout, its lost lease or Stop.
func (w *TaskWorker) Start(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.state != stateNew {
		return fmt.Errorf("%w: a worker starts once", ErrClosed)
	}
	w.state = stateRunning
	w.slots = make(chan struct{}, w.cfg.Concurrency)
	for range w.cfg.Concurrency {
		w.slots <- struct{}{}
	}
	w.baseCtx = context.WithoutCancel(ctx)
	w.acker, w.leases, w.reaper, w.picker = newAcker(w), newLeaseKeeper(w), newReaper(w), newPicker(w)
	w.acker.start()
	w.leases.start()
	w.reaper.start()
	w.picker.start()
	w.cfg.Logger.Info("taskqueue: worker started", slog.String("worker", w.cfg.Name), slog.Int("concurrency", w.cfg.Concurrency))
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

	w.reaper.stop()
	w.picker.stop(ctx)

	finished := make(chan struct{})
	go func() { w.tasks.Wait(); close(finished) }()
	var err error
	select {
	case <-finished:
	case <-ctx.Done():
		err = w.handBack()
		select {
		case <-finished:
		case <-time.After(time.Second):
			w.cfg.Logger.Warn("taskqueue: handlers ignore cancellation; their goroutines outlive Stop", slog.String("worker", w.cfg.Name))
		}
	}
	w.acker.stop()
	w.leases.stop()
	w.reaper.wait()
	w.mu.Lock()
	w.state = stateStopped
	w.mu.Unlock()
	w.cfg.Logger.Info("taskqueue: worker stopped", slog.String("worker", w.cfg.Name))
	return err
}

// handBack cancels every running task and hands its delivery back to the queue (Release).
func (w *TaskWorker) handBack() error {
	w.mu.Lock()
	var fl []*inflight
	for _, f := range w.running {
		if !f.handed {
			f.handed = true
			fl = append(fl, f)
		}
	}
	w.mu.Unlock()
	// Each Release puts its task at the head of the queue: hand the newest back first so the oldest ends up first.
	slices.SortFunc(fl, func(a, b *inflight) int { return cmp.Compare(b.d.Token, a.d.Token) })
	var errs []error
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, f := range fl {
		f.cancel(errStopping)
		if err := w.q.Release(ctx, f.d); err != nil {
			errs = append(errs, err)
			w.emit(Event{Kind: EventQueueError, TaskID: f.d.Spec.TaskID, Spec: f.d.Spec, Err: err})
			w.cfg.Logger.Warn("taskqueue: could not hand a task back; it returns after its lease", slog.String("worker", w.cfg.Name), slog.String("task_id", f.d.Spec.TaskID), slog.Any("error", err))
			continue
		}
		w.emit(Event{Kind: EventReleased, TaskID: f.d.Spec.TaskID, Spec: f.d.Spec, Attempt: f.d.Spec.Attempt, Deliveries: f.d.Deliveries})
	}
	return errors.Join(errs...)
}

// freeSlots frees n slots.
func (w *TaskWorker) freeSlots(n int) {
	for range n {
		w.slots <- struct{}{}
	}
}

// inflight counts the deliveries this worker holds.
func (w *TaskWorker) inflight() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.running)
}

// launch starts a goroutine for a delivery. A delivery that arrives while stopping is handed back at once.
func (w *TaskWorker) launch(d *Delivery) {
	tctx, cancel := context.WithCancelCause(w.baseCtx) // no cancellation to inherit: as cheap as Background
	f := &inflight{d: d, cancel: cancel, ends: d.localEnds}
	if f.ends.IsZero() { // a delivery made without a local estimate of its lease end
		f.ends = time.Now().Add(w.q.LeaseDuration())
	}
	w.mu.Lock()
	stopping := w.state != stateRunning
	if !stopping {
		w.running[d] = f
		w.tasks.Add(1)
	}
	w.mu.Unlock()
	if stopping {
		cancel(errStopping)
		ctx, c := context.WithTimeout(context.Background(), 5*time.Second)
		if err := w.q.Release(ctx, d); err != nil {
			w.emit(Event{Kind: EventQueueError, TaskID: d.Spec.TaskID, Spec: d.Spec, Err: err})
		}
		c()
		w.slots <- struct{}{}
		return
	}
	w.gate.admit(d)
	go w.runTask(tctx, f)
}

func (w *TaskWorker) runTask(ctx context.Context, f *inflight) {
	defer w.tasks.Done()
	d := f.d
	spec := d.Spec
	w.gate.enter(d)
	if ctx.Err() != nil { // handed back by Stop while it waited for the gate
		w.recordOutcome(f, context.Cause(ctx), 0)
		return
	}
	timeout := w.cfg.Timeout
	if spec.Timeout > 0 {
		timeout = spec.Timeout
	}
	if timeout > 0 {
		// One timer that cancels the task's own context, rather than a timeout context over it: a context, its
		// registration with the parent and a timer less per task.
		t := time.AfterFunc(timeout, func() { f.cancel(ErrTimeout) })
		defer t.Stop()
		ctx = &deadlineCtx{Context: ctx, deadline: time.Now().Add(timeout)}
	}
	w.emit(Event{Kind: EventStarted, TaskID: spec.TaskID, Spec: spec, Attempt: spec.Attempt, Deliveries: d.Deliveries})
	ctx, slot := withResultSlot(ctx, w.q)
	start := time.Now()
	err := w.safeRun(ctx, spec)
	took := time.Since(start)
	if err == nil && slot != nil {
		d.result, err = slot.data, slot.err // a result that could not be stored fails the run
	}
	if err != nil && ctx.Err() != nil {
		if cause := context.Cause(ctx); cause != nil && !errors.Is(err, cause) {
			err = fmt.Errorf("%w (%w)", cause, err)
		}
	}
	w.recordOutcome(f, err, took)
	f.cancel(nil)
}

// deadlineCtx is a task's context with its timeout: it reports the deadline, and context.DeadlineExceeded once
// the timer cancelled it with [ErrTimeout], as a context from context.WithTimeoutCause would. (Contexts a handler
// derives from it see context.Canceled at the timeout; their cause is ErrTimeout.)
type deadlineCtx struct {
	context.Context
	deadline time.Time
}

func (c *deadlineCtx) Deadline() (time.Time, bool) { return c.deadline, true }

func (c *deadlineCtx) Err() error {
	err := c.Context.Err()
	if err != nil && errors.Is(context.Cause(c.Context), ErrTimeout) {
		return context.DeadlineExceeded
	}
	return err
}

// safeRun runs the handler, turning a panic into a [*PanicError].
func (w *TaskWorker) safeRun(ctx context.Context, spec *TaskSpec) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &PanicError{Value: r, Stack: debug.Stack()}
		}
	}()
	return w.handler(ctx, spec)
}

// recordOutcome records a run's outcome in the queue, frees its slot and unlocks the gate once the outcome is
// recorded. A success is handed to the ack loop, which acknowledges it in a batch and unlocks the gate: the task's
// goroutine ends at once, while its hold on the suspect gate lasts until the ack is recorded (a suspect runs only
// after every other task's outcome is in Redis).
func (w *TaskWorker) recordOutcome(f *inflight, runErr error, took time.Duration) {
	d := f.d
	spec := d.Spec
	w.mu.Lock()
	handed := f.handed
	w.mu.Unlock()
	if handed {
		w.forget(f, nil)
		w.slots <- struct{}{}
		w.unlockGate(f)
		return
	}
	if runErr == nil {
		w.emit(Event{Kind: EventSucceeded, TaskID: spec.TaskID, Spec: spec, Attempt: spec.Attempt, Deliveries: d.Deliveries, Duration: took})
		w.slots <- struct{}{} // the slot frees while the ack is batched
		if !w.acker.add(f) {  // only a handler that outlived Stop gets here; its delivery was handed back
			w.forget(f, ErrLeaseLost)
			w.unlockGate(f)
		}
		return
	}
	defer func() { w.slots <- struct{}{} }()
	defer w.unlockGate(f)
	if errors.Is(runErr, ErrLeaseLost) || errors.Is(runErr, ErrLeaseExpired) {
		w.forget(f, runErr)
		return
	}
	// Both outcomes are resent on a transient error until shortly before the lease ends (resend.go); the event
	// tells what became of the task once that is known.
	rs := w.outcomeResend(f)
	maxRetries := spec.MaxRetries
	if maxRetries == 0 {
		maxRetries = w.cfg.MaxRetries
	}
	if errors.Is(runErr, ErrSkipRetry) || spec.Attempt >= maxRetries {
		cause := runErr
		if !errors.Is(runErr, ErrSkipRetry) {
			cause = fmt.Errorf("%w after %d attempts: %w", ErrRetriesExhausted, spec.Attempt+1, runErr)
		}
		err := rs.do(func(ctx context.Context) error { return w.q.DeadLetter(ctx, d, cause) })
		if err == nil {
			w.emit(Event{Kind: EventDead, TaskID: spec.TaskID, Spec: spec, Attempt: spec.Attempt, Deliveries: d.Deliveries, Err: cause, Duration: took})
		}
		w.forget(f, err)
		return
	}
	delay := w.cfg.Backoff(spec.Attempt+1, runErr)
	err := rs.do(func(ctx context.Context) error { return w.q.Retry(ctx, d, delay, runErr) })
	if err == nil {
		w.emit(Event{Kind: EventRetried, TaskID: spec.TaskID, Spec: spec, Attempt: spec.Attempt, Deliveries: d.Deliveries, Err: runErr, Duration: took, Delay: delay})
	}
	w.forget(f, err)
}

// forget drops a delivery whose outcome is recorded (or could not be), reporting a lost lease or a queue error.
func (w *TaskWorker) forget(f *inflight, err error) {
	d := f.d
	spec := d.Spec
	w.mu.Lock()
	delete(w.running, d)
	w.mu.Unlock()
	if errors.Is(err, ErrLeaseLost) {
		w.emit(Event{Kind: EventLeaseLost, TaskID: spec.TaskID, Spec: spec, Attempt: spec.Attempt, Deliveries: d.Deliveries, Err: err})
	} else if err != nil {
		w.emit(Event{Kind: EventQueueError, TaskID: spec.TaskID, Spec: spec, Err: err})
		w.cfg.Logger.Warn("taskqueue: could not record a task's outcome; it returns after its lease", slog.String("task_id", spec.TaskID), slog.Any("error", err))
	}
}

// held returns the deliveries this worker holds and has not handed back.
func (w *TaskWorker) held() []*inflight {
	w.mu.Lock()
	defer w.mu.Unlock()
	fl := make([]*inflight, 0, len(w.running))
	for _, f := range w.running {
		if !f.handed {
			fl = append(fl, f)
		}
	}
	return fl
}

// cancelTask cancels the run of d, if it still runs, with cause.
func (w *TaskWorker) cancelTask(d *Delivery, cause error) {
	w.mu.Lock()
	f := w.running[d]
	w.mu.Unlock()
	if f != nil {
		f.cancel(cause)
	}
}

// unlockGate ends f's hold on the suspect gate, once its outcome is recorded.
func (w *TaskWorker) unlockGate(f *inflight) { w.gate.unlock(f.d) }

func (w *TaskWorker) emit(e Event) {
	if w.cfg.OnEvent != nil {
		w.cfg.OnEvent(e)
	}
}
