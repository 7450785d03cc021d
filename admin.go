package taskqueue

import (
	"context"
	"fmt"
)

// Pause stops the pickup of tasks: while the queue is paused, Dequeue leases nothing and idle workers stay
// blocked, while enqueue, ack, retry, dead-lettering, lease renewal and reaping go on. Deliveries already running
// carry on and settle as usual. Pausing a paused queue keeps the time of the first pause. The pause is stored in
// Redis ({prefix}:paused), so it holds for every worker and survives their restarts until [RedisTaskQueue.Resume].
func (q *RedisTaskQueue) Pause(ctx context.Context) error {
	if err := pauseScript.Run(ctx, q.rdb, q.keys.all, "pause").Err(); err != nil {
		return fmt.Errorf("taskqueue: pause: %w", classify(err))
	}
	return nil
}

// Resume restarts the pickup of a paused queue and wakes a blocked worker, so that pickup resumes within
// milliseconds. Resuming a running queue does no harm.
func (q *RedisTaskQueue) Resume(ctx context.Context) error {
	if err := pauseScript.Run(ctx, q.rdb, q.keys.all, "resume").Err(); err != nil {
		return fmt.Errorf("taskqueue: resume: %w", classify(err))
	}
	return nil
}

// Paused reports whether pickup is paused.
func (q *RedisTaskQueue) Paused(ctx context.Context) (bool, error) {
	n, err := q.rdb.Exists(ctx, q.keys.key(keyPaused)).Result()
	if err != nil {
		return false, fmt.Errorf("taskqueue: paused: %w", classify(err))
	}
	return n == 1, nil
}

// Progress reports how far a bulk call has come; the progress callback gets one after each batch.
type Progress struct {
	Done    int // tasks acted on so far: purged, requeued or deleted
	Scanned int // tasks looked at so far; more than Done when a filter skips some
	Total   int // tasks in the state when the call started: the most it looks at
}

// BulkOption tunes a bulk call: [RedisTaskQueue.Purge], [RedisTaskQueue.RequeueAllDead] and
// [RedisTaskQueue.DeleteAllDead].
type BulkOption func(*bulkConfig)

type bulkConfig struct {
	batch    int
	progress func(Progress)
}

// WithProgress has fn called after each batch of a bulk call, on the caller's goroutine.
func WithProgress(fn func(Progress)) BulkOption {
	return func(c *bulkConfig) { c.progress = fn }
}

// WithBatchSize sets how many tasks one batch of a bulk call handles: one script call of Purge, one page of dead
// letters. Default 256, at most [MaxListLimit]. Each batch runs atomically, so Redis serves other clients between
// batches.
func WithBatchSize(n int) BulkOption {
	return func(c *bulkConfig) { c.batch = n }
}

func newBulkConfig(opts []BulkOption) (bulkConfig, error) {
	c := bulkConfig{batch: 256, progress: func(Progress) {}}
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	if c.batch < 1 || c.batch > MaxListLimit {
		return c, fmt.Errorf("%w: batch size must be between 1 and %d", ErrInvalidConfig, MaxListLimit)
	}
	if c.progress == nil {
		c.progress = func(Progress) {}
	}
	return c, nil
}

// Purge removes every pending, scheduled or dead task, with its envelope, its reason and its delivery counts, and
// returns how many it removed. Active tasks are refused with a [*StateError] (wrapping [ErrInvalidState]): workers
// hold their leases; pause the queue, let them finish, and purge what is left. Purge works in batches (a script
// call each, [WithBatchSize]) so that Redis serves others meanwhile, and removes at most as many tasks as the state
// held when it started: tasks added while it runs may stay. A purged id can be enqueued again.
func (q *RedisTaskQueue) Purge(ctx context.Context, state State, opts ...BulkOption) (int, error) {
	switch state {
	case StatePending, StateScheduled, StateDead:
	case StateActive:
		return 0, &StateError{Op: "purge", State: state, Reason: "active tasks are leased by workers; pause the queue and purge pending instead"}
	default:
		return 0, &StateError{Op: "purge", State: State(truncate(string(state), 64)), Reason: "want pending, scheduled or dead"}
	}
	c, err := newBulkConfig(opts)
	if err != nil {
		return 0, err
	}
	total, err := q.count(ctx, state)
	if err != nil {
		return 0, fmt.Errorf("taskqueue: purge: %w", classify(err))
	}
	done := 0
	for done < total {
		res, err := purgeScript.Run(ctx, q.rdb, q.keys.all, string(state), min(c.batch, total-done)).Int64Slice()
		if err != nil {
			return done, fmt.Errorf("taskqueue: purge: %w", classify(err))
		}
		if len(res) != 2 {
			return done, fmt.Errorf("taskqueue: purge: unexpected reply of %d items", len(res))
		}
		done += int(res[0])
		c.progress(Progress{Done: done, Scanned: done, Total: total})
		if res[0] == 0 || res[1] == 0 {
			break
		}
	}
	return done, nil
}

// count returns how many tasks a state holds.
func (q *RedisTaskQueue) count(ctx context.Context, state State) (int, error) {
	var n int64
	var err error
	if state == StatePending {
		n, err = q.rdb.LLen(ctx, q.keys.key(keyPending)).Result()
	} else {
		n, err = q.rdb.ZCard(ctx, q.keys.key(stateKey(state))).Result()
	}
	return int(n), err
}

// RequeueAllDead requeues, like [RedisTaskQueue.RequeueDead], every dead letter for which filter returns true
// (every one when filter is nil), oldest first, a page at a time ([WithBatchSize]), and returns how many it
// requeued. It looks at most at as many dead letters as there were when it started, so a task that dies again
// meanwhile is not requeued twice. [WithProgress] reports each page.
func (q *RedisTaskQueue) RequeueAllDead(ctx context.Context, filter func(DeadLetter) bool, opts ...BulkOption) (int, error) {
	return q.eachDead(ctx, filter, opts, q.RequeueDead)
}

// DeleteAllDead deletes, like [RedisTaskQueue.DeleteDead], every dead letter for which filter returns true (every
// one when filter is nil), a page at a time, and returns how many it deleted. [WithProgress] reports each page.
func (q *RedisTaskQueue) DeleteAllDead(ctx context.Context, filter func(DeadLetter) bool, opts ...BulkOption) (int, error) {
	return q.eachDead(ctx, filter, opts, q.DeleteDead)
}

// eachDead pages through the dead letters there are now, oldest first, and acts on those that filter accepts.
// Acted-on letters leave the sorted set, so the next page starts after the ones skipped so far.
func (q *RedisTaskQueue) eachDead(ctx context.Context, filter func(DeadLetter) bool, opts []BulkOption,
	act func(context.Context, ...string) (int, error)) (int, error) {
	c, err := newBulkConfig(opts)
	if err != nil {
		return 0, err
	}
	total, err := q.count(ctx, StateDead)
	if err != nil {
		return 0, fmt.Errorf("taskqueue: dead letters: %w", classify(err))
	}
	done, scanned, skipped := 0, 0, 0
	for scanned < total {
		page, err := q.DeadLetters(ctx, skipped, min(c.batch, total-scanned))
		if err != nil {
			return done, err
		}
		if len(page) == 0 {
			break
		}
		ids := make([]string, 0, len(page))
		for _, dl := range page {
			if filter == nil || filter(dl) {
				ids = append(ids, dl.TaskID)
			}
		}
		scanned += len(page)
		skipped += len(page) - len(ids)
		n, err := act(ctx, ids...)
		done += n
		if err != nil {
			return done, err
		}
		c.progress(Progress{Done: done, Scanned: scanned, Total: total})
	}
	return done, nil
}
