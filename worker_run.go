package taskqueue

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"time"
)

// The worker's running tasks: a goroutine each, one per slot, from launch to the outcome (worker_outcome.go).

// inflight is a delivery this worker holds: running, or finished and waiting for its outcome to be recorded.
type inflight struct {
	d      *Delivery
	cancel context.CancelCauseFunc
	handed bool      // handed back by Stop: the goroutine must not record its outcome
	ends   time.Time // when the lease ends, as the last pickup or renewal told (w.mu; d.localEnds is the heartbeat's)
}

var errStopping = errors.New("taskqueue: worker stopping")

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
		w.freeSlots(1)
		return
	}
	w.gate.admit(d)
	go w.runTask(tctx, f)
}

// runTask runs a delivery once its turn at the suspect gate comes, within its timeout, and records the outcome.
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

// drainTasks waits for the running tasks to finish until ctx is done; those still running then are cancelled and
// handed back. It returns once every task goroutine has, or a second after the hand-back if handlers ignore
// cancellation (reported in the log).
func (w *TaskWorker) drainTasks(ctx context.Context) error {
	finished := make(chan struct{})
	go func() { w.tasks.Wait(); close(finished) }()
	select {
	case <-finished:
		return nil
	case <-ctx.Done():
	}
	err := w.handBack()
	select {
	case <-finished:
	case <-time.After(time.Second):
		w.cfg.Logger.Warn("taskqueue: handlers ignore cancellation; their goroutines outlive Stop", slog.String("worker", w.cfg.Name))
	}
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

// cancelTask cancels the run of d, if it still runs, with cause.
func (w *TaskWorker) cancelTask(d *Delivery, cause error) {
	w.mu.Lock()
	f := w.running[d]
	w.mu.Unlock()
	if f != nil {
		f.cancel(cause)
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

// inflightCount counts the deliveries this worker holds.
func (w *TaskWorker) inflightCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.running)
}

// freeSlots frees n slots.
func (w *TaskWorker) freeSlots(n int) {
	for range n {
		w.slots <- struct{}{}
	}
}
