package taskqueue

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"sync/atomic"
	"time"
)

// The worker's running tasks: a fixed pool of Concurrency goroutines runs them, one at a time each, from launch to
// the outcome (worker_outcome.go). The deliveries the worker holds (running, or waiting for their ack) are kept in
// an intrusive list under w.mu, which a pickup adds to and an ack batch removes from in one step each.

// inflight is a delivery this worker holds: running, or finished and waiting for its outcome to be recorded. It
// carries the run's context and result slot, so that a task costs few allocations.
type inflight struct {
	d      *Delivery
	cancel context.CancelCauseFunc
	ctx    taskCtx
	slot   resultSlot
	handed atomic.Bool  // handed back by Stop: the run must not record its outcome
	ends   atomic.Int64 // when the lease ends, as the last pickup or renewal told: w.epoch + ends ns

	prev, next *inflight // the held list (w.mu)
	timeout    timeoutLink
	progress   atomic.Pointer[progressState] // set by the first ReportProgress (progress.go)
}

var errStopping = errors.New("taskqueue: worker stopping")

// launch hands the deliveries of one pickup to the task pool. Deliveries that arrive while stopping are handed
// back at once.
func (w *TaskWorker) launch(ds []*Delivery) {
	if len(ds) == 0 {
		return
	}
	fs := make([]inflight, len(ds)) // one allocation for the pickup's records
	for i, d := range ds {
		f := &fs[i]
		f.d = d
		tctx, cancel := context.WithCancelCause(w.baseCtx) // no cancellation to inherit: as cheap as Background
		f.ctx.Context, f.cancel = tctx, cancel
		ends := d.localEnds
		if ends.IsZero() { // a delivery made without a local estimate of its lease end
			ends = time.Now().Add(w.q.LeaseDuration())
		}
		f.setEnds(w, ends)
	}
	w.mu.Lock()
	stopping := w.state != stateRunning
	if !stopping {
		for i := range fs {
			w.hold(&fs[i])
		}
		w.tasks.Add(len(fs))
	}
	w.mu.Unlock()
	if stopping {
		for i := range fs {
			w.releaseAtOnce(&fs[i])
		}
		return
	}
	for i := range fs {
		w.gate.admit(fs[i].d)
	}
	w.work.push(fs) // never blocks
}

// releaseNew hands back deliveries that were leased but not launched, the newest first (each goes to the head of
// the queue, so the oldest ends up first), and frees their slots.
func (w *TaskWorker) releaseNew(ds []*Delivery) {
	ds = slices.Clone(ds)
	slices.SortFunc(ds, func(a, b *Delivery) int { return cmp.Compare(b.Token, a.Token) })
	ctx, c := context.WithTimeout(context.Background(), 5*time.Second)
	defer c()
	for _, d := range ds {
		if err := w.q.Release(ctx, d); err != nil {
			w.emit(Event{Kind: EventQueueError, TaskID: d.Spec.TaskID, Spec: d.Spec, Err: err, member: d.member})
		}
	}
	w.freeSlots(len(ds))
}

// releaseAtOnce hands back a delivery that arrived while the worker was stopping.
func (w *TaskWorker) releaseAtOnce(f *inflight) {
	f.cancel(errStopping)
	ctx, c := context.WithTimeout(context.Background(), 5*time.Second)
	if err := w.q.Release(ctx, f.d); err != nil {
		w.emit(Event{Kind: EventQueueError, TaskID: f.d.Spec.TaskID, Spec: f.d.Spec, Err: err, member: f.d.member})
	}
	c()
	w.freeSlots(1)
}

// setEnds records when f's lease ends.
func (f *inflight) setEnds(w *TaskWorker, t time.Time) { f.ends.Store(int64(t.Sub(w.epoch))) }

// leaseEnds returns when f's lease ends, on the local monotonic clock.
func (f *inflight) leaseEnds(w *TaskWorker) time.Time {
	return w.epoch.Add(time.Duration(f.ends.Load()))
}

// hold adds f to the held list; w.mu is held.
func (w *TaskWorker) hold(f *inflight) {
	f.prev, f.next = w.heldTail, nil
	if w.heldTail != nil {
		w.heldTail.next = f
	} else {
		w.heldHead = f
	}
	w.heldTail = f
	w.heldN.Add(1)
}

// unhold removes f from the held list, if it is there; w.mu is held.
func (w *TaskWorker) unhold(f *inflight) {
	if f.prev == nil && w.heldHead != f {
		return // not held (removed before)
	}
	if f.prev != nil {
		f.prev.next = f.next
	} else {
		w.heldHead = f.next
	}
	if f.next != nil {
		f.next.prev = f.prev
	} else {
		w.heldTail = f.prev
	}
	f.prev, f.next = nil, nil
	w.heldN.Add(-1)
}

// taskLoop is one goroutine of the task pool: it runs the tasks sent to it until the pool is closed.
func (w *TaskWorker) taskLoop() {
	defer w.pool.Done()
	for f, ok := w.work.take(); ok; f, ok = w.work.take() {
		w.runTask(f)
	}
}

// runTask runs a delivery once its turn at the suspect gate comes, within its timeout, and records the outcome.
func (w *TaskWorker) runTask(f *inflight) {
	defer w.tasks.Done()
	d := f.d
	spec := d.Spec
	w.gate.enter(d)
	// A cancel that came before this pickup reached the held list (cancel_listener.go).
	w.control.check(f)
	if f.ctx.Context.Err() != nil { // handed back by Stop while it waited for the gate
		w.recordOutcome(f, context.Cause(f.ctx.Context), 0)
		return
	}
	timeout := w.cfg.Timeout
	if spec.Timeout > 0 {
		timeout = spec.Timeout
	}
	if timeout > 0 {
		// One timer for every task of the worker (worker_timeout.go), rather than a timer or a timeout context each.
		f.ctx.deadline = w.timeouts.add(f, timeout)
	}
	q := originOf(w.q, d) // a MultiQueue's delivery belongs to one of its queues (multiqueue.go)
	f.slot.limit = q.maxResultBytes()
	f.slot.node = nodeRef{q: q, spec: spec}
	f.ctx.slot = &f.slot
	f.ctx.w, f.ctx.run = w, f // for ReportProgress (progress.go)
	w.emit(Event{Kind: EventStarted, TaskID: spec.TaskID, Spec: spec, Attempt: spec.Attempt, Deliveries: d.Deliveries, member: d.member})
	start := time.Now()
	err := w.safeRun(&f.ctx, spec)
	took := time.Since(start)
	f.flushProgress() // progress.go: the last report a throttle held back
	if timeout > 0 {
		w.timeouts.remove(f)
	}
	if err == nil {
		d.result, err = f.slot.data, f.slot.err // a result that could not be stored fails the run
	}
	if err != nil && f.ctx.Err() != nil {
		if cause := context.Cause(f.ctx.Context); cause != nil && !errors.Is(err, cause) {
			err = fmt.Errorf("%w (%w)", cause, err)
		}
	}
	w.recordOutcome(f, err, took)
	f.cancel(nil)
}

// taskCtx is a task's context: its own cancellation (with a cause), its deadline when it has a timeout, and its
// result slot ([SetResult]). Past the deadline the timer cancels it with [ErrTimeout], and it reports
// context.DeadlineExceeded, as a context from context.WithTimeoutCause would. (Contexts a handler derives from it
// see context.Canceled at the timeout; their cause is ErrTimeout.)
type taskCtx struct {
	context.Context
	deadline time.Time // zero without a timeout
	slot     *resultSlot
	w        *TaskWorker // the worker and the run, for ReportProgress (progress.go)
	run      *inflight
}

func (c *taskCtx) Deadline() (time.Time, bool) {
	if c.deadline.IsZero() {
		return c.Context.Deadline()
	}
	return c.deadline, true
}

func (c *taskCtx) Err() error {
	err := c.Context.Err()
	if err != nil && !c.deadline.IsZero() && errors.Is(context.Cause(c.Context), ErrTimeout) {
		return context.DeadlineExceeded
	}
	return err
}

func (c *taskCtx) Value(key any) any {
	if _, ok := key.(resultSlotKey); ok && c.slot != nil {
		return c.slot
	}
	if _, ok := key.(taskCtxKey); ok && c.run != nil {
		return c
	}
	return c.Context.Value(key)
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
// handed back. It returns once every task has, or a second after the hand-back if handlers ignore cancellation
// (reported in the log); all reports whether every task ended.
func (w *TaskWorker) drainTasks(ctx context.Context) (all bool, err error) {
	finished := make(chan struct{})
	go func() { w.tasks.Wait(); close(finished) }()
	select {
	case <-finished:
		return true, nil
	case <-ctx.Done():
	}
	err = w.handBack()
	select {
	case <-finished:
		return true, err
	case <-time.After(time.Second):
		w.cfg.Logger.Warn("taskqueue: handlers ignore cancellation; their goroutines outlive Stop", slog.String("worker", w.cfg.Name))
		return false, err
	}
}

// handBack cancels every running task and hands its delivery back to the queue (Release).
func (w *TaskWorker) handBack() error {
	w.mu.Lock()
	var fl []*inflight
	for f := w.heldHead; f != nil; f = f.next {
		if f.handed.CompareAndSwap(false, true) {
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
			w.emit(Event{Kind: EventQueueError, TaskID: f.d.Spec.TaskID, Spec: f.d.Spec, Err: err, member: f.d.member})
			w.cfg.Logger.Warn("taskqueue: could not hand a task back; it returns after its lease", slog.String("worker", w.cfg.Name), slog.String("task_id", f.d.Spec.TaskID), slog.Any("error", err))
			continue
		}
		w.emit(Event{Kind: EventReleased, TaskID: f.d.Spec.TaskID, Spec: f.d.Spec, Attempt: f.d.Spec.Attempt, Deliveries: f.d.Deliveries, member: f.d.member})
	}
	return errors.Join(errs...)
}

// held returns the deliveries this worker holds and has not handed back.
func (w *TaskWorker) held() []*inflight {
	w.mu.Lock()
	defer w.mu.Unlock()
	fl := make([]*inflight, 0, w.heldN.Load())
	for f := w.heldHead; f != nil; f = f.next {
		if !f.handed.Load() {
			fl = append(fl, f)
		}
	}
	return fl
}

// inflightCount counts the deliveries this worker holds.
func (w *TaskWorker) inflightCount() int { return int(w.heldN.Load()) }

// freeSlots frees n slots.
func (w *TaskWorker) freeSlots(n int) {
	for range n {
		w.slots <- struct{}{}
	}
}
