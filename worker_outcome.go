package taskqueue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// recordOutcome records what became of a run, frees its slot and ends its hold on the suspect gate once the outcome
// is recorded. A success goes to the acker, which acknowledges it in a batch and then ends the hold: the task's
// goroutine ends at once, while its hold lasts until the ack is recorded (a suspect runs only after every other
// task's outcome is in Redis). A run handed back by Stop records nothing.
func (w *TaskWorker) recordOutcome(f *inflight, runErr error, took time.Duration) {
	switch {
	case f.handed.Load():
		w.forget(f, nil)
		w.freeSlots(1)
		w.unlockGate(f)
	case w.control.wasCancelled(f): // cancel_listener.go
		w.endCancelled(f, runErr, took)
	case runErr == nil:
		spec := f.d.Spec
		w.emit(Event{Kind: EventSucceeded, TaskID: spec.TaskID, Spec: spec, Attempt: spec.Attempt, Deliveries: f.d.Deliveries, Duration: took, member: f.d.member})
		w.freeSlots(1)       // the slot frees while the ack is batched
		if !w.acker.add(f) { // only a handler that outlived Stop gets here; its delivery was handed back
			w.forget(f, ErrLeaseLost)
			w.unlockGate(f)
		}
	default:
		defer w.freeSlots(1)
		defer w.unlockGate(f)
		w.recordFailure(f, runErr, took)
	}
}

// recordFailure retries a failed run, or dead-letters it when its handler refused a retry ([ErrSkipRetry]) or its
// retries are exhausted. A run cancelled because its lease was lost or about to expire records nothing: its task
// returns after the lease. Both outcomes are resent on a transient error until shortly before the lease ends
// (resend.go); the event tells what became of the task once that is known.
func (w *TaskWorker) recordFailure(f *inflight, runErr error, took time.Duration) {
	if errors.Is(runErr, ErrLeaseLost) || errors.Is(runErr, ErrLeaseExpired) {
		w.forget(f, runErr)
		return
	}
	if s, ok := snoozeOf(runErr); ok { // snooze.go
		done, err := w.trySnooze(f, s, took)
		if done {
			return
		}
		runErr = err
	}
	d, spec := f.d, f.d.Spec
	rs := w.outcomeResend(f)
	if dead, cause := w.deadLetterCause(spec, runErr); dead {
		err := rs.do(func(ctx context.Context) error { return w.q.DeadLetter(ctx, d, cause) })
		if err == nil {
			w.emit(Event{Kind: EventDead, TaskID: spec.TaskID, Spec: spec, Attempt: spec.Attempt, Deliveries: d.Deliveries, Err: cause, Duration: took, member: d.member})
		}
		w.forget(f, err)
		return
	}
	delay := w.cfg.Backoff(spec.Attempt+1, runErr)
	err := rs.do(func(ctx context.Context) error { return w.q.Retry(ctx, d, delay, runErr) })
	if err == nil {
		w.emit(Event{Kind: EventRetried, TaskID: spec.TaskID, Spec: spec, Attempt: spec.Attempt, Deliveries: d.Deliveries, Err: runErr, Duration: took, Delay: delay, member: d.member})
	}
	w.forget(f, err)
}

// deadLetterCause reports whether a failed run of spec is its last one, and why: its handler refused a retry, or
// its retries (the spec's, else the worker's MaxRetries) are exhausted.
func (w *TaskWorker) deadLetterCause(spec *TaskSpec, runErr error) (dead bool, cause error) {
	if errors.Is(runErr, ErrSkipRetry) {
		return true, runErr
	}
	maxRetries := spec.MaxRetries
	if maxRetries == 0 {
		maxRetries = w.cfg.MaxRetries
	}
	if spec.Attempt < maxRetries {
		return false, nil
	}
	return true, fmt.Errorf("%w after %d attempts: %w", ErrRetriesExhausted, spec.Attempt+1, runErr)
}

// forget drops a delivery whose outcome is recorded (or could not be), reporting a lost lease or a queue error.
func (w *TaskWorker) forget(f *inflight, err error) {
	w.mu.Lock()
	w.unhold(f)
	w.mu.Unlock()
	w.reportForgotten(f, err)
}

// forgetAll drops the deliveries of an ack batch, all recorded, in one step.
func (w *TaskWorker) forgetAll(fs []*inflight) {
	w.mu.Lock()
	for _, f := range fs {
		w.unhold(f)
	}
	w.mu.Unlock()
}

// reportForgotten reports what became of a delivery that was dropped: a lost lease or a queue error.
func (w *TaskWorker) reportForgotten(f *inflight, err error) {
	d := f.d
	spec := d.Spec
	if errors.Is(err, ErrLeaseLost) {
		w.emit(Event{Kind: EventLeaseLost, TaskID: spec.TaskID, Spec: spec, Attempt: spec.Attempt, Deliveries: d.Deliveries, Err: err, member: d.member})
	} else if err != nil {
		w.emit(Event{Kind: EventQueueError, TaskID: spec.TaskID, Spec: spec, Err: err, member: d.member})
		w.cfg.Logger.Warn("taskqueue: could not record a task's outcome; it returns after its lease", slog.String("task_id", spec.TaskID), slog.Any("error", err))
	}
}

// unlockGate ends f's hold on the suspect gate, once its outcome is recorded.
func (w *TaskWorker) unlockGate(f *inflight) { w.gate.unlock(f.d) }
