package taskqueue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"time"
)

// Snooze: a handler that returns [Snooze](d) asks for its task to run again after d without using up a retry
// (River's JobSnooze). The task waits in scheduled like a delayed task; its envelope counts the snoozes in its
// "snoozes" field (shown by [Admin.Inspect] and the taskqueue CLI's show), and a task that snoozed [MaxSnoozes]
// times fails its next snooze with [ErrSnoozeLimit], as a failed attempt: it cannot snooze forever unseen.

// MaxSnoozes is how many times one task may snooze; the next snooze fails its run with [ErrSnoozeLimit].
const MaxSnoozes = 1000

// MaxSnoozeDelay is the longest snooze; a longer one fails its run with [ErrInvalidSnooze].
const MaxSnoozeDelay = 30 * 24 * time.Hour

// SnoozeError is what [Snooze] returns: a handler returns it to run its task again after Delay.
type SnoozeError struct {
	Delay time.Duration
}

func (e *SnoozeError) Error() string { return "taskqueue: snooze for " + e.Delay.String() }

// Snooze returns the error a handler returns to have its task run again after d, without counting a failed
// attempt: the run ends, the task waits in scheduled, and its attempt count and retry budget stay as they were.
// d must be above 0 and at most [MaxSnoozeDelay], and a task snoozes at most [MaxSnoozes] times: past those
// bounds the run fails with [ErrInvalidSnooze] or [ErrSnoozeLimit] (a failed attempt, retried as usual). Wrapped
// errors work too: errors.As finds the [*SnoozeError]. With a [MemoryQueue] a snooze is a retry after d (it
// counts an attempt).
func Snooze(d time.Duration) error { return &SnoozeError{Delay: d} }

// snoozer is implemented by the queues that can snooze a delivery without counting an attempt.
type snoozer interface {
	snooze(ctx context.Context, d *Delivery, delay time.Duration) error
}

// snoozeOf returns the snooze a run's error asks for, if any.
func snoozeOf(runErr error) (*SnoozeError, bool) {
	var s *SnoozeError
	if runErr == nil || !errors.As(runErr, &s) {
		return nil, false
	}
	return s, true
}

// trySnooze records a run that returned a snooze and reports true; or, when the snooze is out of bounds, returns
// false and the error its run fails with instead.
func (w *TaskWorker) trySnooze(f *inflight, s *SnoozeError, took time.Duration) (bool, error) {
	if s.Delay <= 0 || s.Delay > MaxSnoozeDelay {
		return false, fmt.Errorf("%w: %s, want above 0 and at most %s", ErrInvalidSnooze, s.Delay, MaxSnoozeDelay)
	}
	d, spec := f.d, f.d.Spec
	rs := w.outcomeResend(f)
	var err error
	if sq, ok := w.q.(snoozer); ok {
		err = rs.do(func(ctx context.Context) error { return sq.snooze(ctx, d, s.Delay) })
	} else {
		err = rs.do(func(ctx context.Context) error { return w.q.Retry(ctx, d, s.Delay, s) })
	}
	if errors.Is(err, ErrSnoozeLimit) {
		return false, err
	}
	if err == nil {
		w.emit(Event{Kind: EventSnoozed, TaskID: spec.TaskID, Spec: spec, Attempt: spec.Attempt, Deliveries: d.Deliveries, Duration: took, Delay: s.Delay})
	}
	w.forget(f, err)
	return true, nil
}

// snoozesOf returns how many times an envelope's task snoozed (its "snoozes" field).
func snoozesOf(env *envelope) int {
	n, _ := strconv.Atoi(string(env.extra["snoozes"]))
	return n
}

// snooze puts a delivery's task back in scheduled after delay, counting a snooze and not an attempt (settle.lua's
// retry, with the envelope rewritten: status scheduled, snoozes + 1).
func (q *RedisTaskQueue) snooze(ctx context.Context, d *Delivery, delay time.Duration) error {
	env := *d.env
	n := snoozesOf(&env) + 1
	if n > MaxSnoozes {
		return fmt.Errorf("%w: the task snoozed %d times", ErrSnoozeLimit, MaxSnoozes)
	}
	env.extra = maps.Clone(env.extra)
	if env.extra == nil {
		env.extra = map[string]json.RawMessage{}
	}
	env.extra["snoozes"] = json.RawMessage(strconv.Itoa(n))
	env.Status = StateScheduled
	raw, err := q.fitted(&env)
	if err != nil {
		return err
	}
	return q.settle(ctx, "retry", d.Spec.TaskID, d, string(raw), delay, "", "")
}

func (s *ShardedQueue) snooze(ctx context.Context, d *Delivery, delay time.Duration) error {
	return s.shardOf(d).snooze(ctx, d, delay)
}
