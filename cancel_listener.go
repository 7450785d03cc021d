package taskqueue

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// The worker's side of cancels: a cancelListener subscribes to the control channel of each shard of the queue
// ({prefix}:cancelled:notify, published by lua/cancel.lua when it cancels a running task) and cancels the context
// of the named task if this worker runs it, with ErrCancelled as the cause. Nothing is polled: an idle channel
// costs Redis nothing. The record of the cancel lives in Redis (the 'c' mark of the delivery, the '~c' record),
// so a message that is lost changes only how soon the handler learns of it:
//   - on every (re)subscription the listener reads the tasks this worker holds and cancels those cancelled
//     meanwhile (a reconnect after a network cut, or a cancel sent before the subscription was up);
//   - the next lease renewal of a cancelled delivery is refused, which cancels its run as a lost lease;
//   - its ack, retry or release is refused, and the reaper never gives it back.
// A message can arrive before the pickup that leased the task has reached the worker's list of deliveries: the
// listener remembers the ids of recent cancels, and a task checks them before its handler starts (only while
// there are any: a worker that sees no cancel pays one atomic load per task).

// controlShards is implemented by the queues whose running tasks can be cancelled ([RedisTaskQueue],
// [ShardedQueue]).
type controlShards interface {
	controlShards() []*RedisTaskQueue
}

func (q *RedisTaskQueue) controlShards() []*RedisTaskQueue { return []*RedisTaskQueue{q} }

func (s *ShardedQueue) controlShards() []*RedisTaskQueue { return s.Shards() }

// recentCancels bounds the ids of recent cancels a listener remembers; older ones are forgotten after
// recentCancelAge.
const (
	recentCancels   = 4096
	recentCancelAge = time.Minute
)

type cancelListener struct {
	w    *TaskWorker
	subs []*redis.PubSub
	wg   sync.WaitGroup

	mu      sync.Mutex
	recent  map[string]time.Time // ids of recent cancels -> when they arrived
	nrecent atomic.Int64         // len(recent), read without the lock on every task start
	last    atomic.Int64         // when the latest cancel arrived (Unix ns)
}

// newCancelListener returns the listener of w's queue, or nil when its queue has no control channel.
func newCancelListener(w *TaskWorker) *cancelListener {
	if _, ok := w.q.(controlShards); !ok {
		return nil
	}
	return &cancelListener{w: w, recent: map[string]time.Time{}}
}

// start subscribes to the control channel of every shard. A subscription that fails (a user whose ACL lacks
// +subscribe or the channel pattern) is logged by go-redis's reconnects; cancels then reach the worker through
// the refused lease renewal.
func (l *cancelListener) start(ctx context.Context) {
	if l == nil {
		return
	}
	for _, q := range l.w.q.(controlShards).controlShards() {
		ps := q.rdb.Subscribe(ctx, q.keys.cancelNotify())
		l.subs = append(l.subs, ps)
		ch := ps.ChannelWithSubscriptions(redis.WithChannelSize(256))
		l.wg.Go(func() { l.listen(q, ch) })
	}
}

// stop closes the subscriptions and waits for their goroutines.
func (l *cancelListener) stop() {
	if l == nil {
		return
	}
	for _, ps := range l.subs {
		_ = ps.Close()
	}
	l.wg.Wait()
}

func (l *cancelListener) listen(q *RedisTaskQueue, ch <-chan any) {
	for msg := range ch {
		switch m := msg.(type) {
		case *redis.Message:
			l.cancel(m.Payload)
		case *redis.Subscription:
			if m.Kind == "subscribe" {
				l.catchUp(q)
			}
		}
	}
}

// cancel cancels the context of the task with this id if this worker runs it, and remembers the id for a pickup
// on its way.
func (l *cancelListener) cancel(taskID string) {
	l.remember(taskID)
	w := l.w
	var fl []*inflight
	w.mu.Lock()
	for f := w.heldHead; f != nil; f = f.next {
		if f.d.Spec.TaskID == taskID && !f.handed.Load() {
			fl = append(fl, f)
		}
	}
	w.mu.Unlock()
	for _, f := range fl {
		f.cancel(ErrCancelled)
		w.cfg.Logger.Info("taskqueue: task cancelled while running", slog.String("worker", w.cfg.Name), slog.String("task_id", truncate(taskID, 64)))
		time.AfterFunc(cancelGrace, func() { l.reportIgnored(f) })
	}
}

// cancelGrace is how long a cancelled handler may take to return before the worker reports that it ignores its
// context.
const cancelGrace = 5 * time.Second

// reportIgnored warns when a cancelled run is still held cancelGrace after its cancel: its handler ignores its
// context (its goroutine and slot stay taken until it returns; its outcome is refused then).
func (l *cancelListener) reportIgnored(f *inflight) {
	w := l.w
	w.mu.Lock()
	held := f.prev != nil || w.heldHead == f
	w.mu.Unlock()
	if held && !f.handed.Load() {
		w.cfg.Logger.Warn("taskqueue: a cancelled task's handler ignores its context and still runs",
			slog.String("worker", w.cfg.Name), slog.String("task_id", truncate(f.d.Spec.TaskID, 64)), slog.Duration("since_cancel", cancelGrace))
	}
}

func (l *cancelListener) remember(taskID string) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	for id, at := range l.recent { // at most recentCancels
		if now.Sub(at) > recentCancelAge || len(l.recent) >= recentCancels {
			delete(l.recent, id)
		}
	}
	l.recent[taskID] = now
	l.nrecent.Store(int64(len(l.recent)))
	l.last.Store(now.UnixNano())
}

// check cancels f before its handler starts when its task was cancelled recently (a message that arrived before
// the pickup reached the worker's list).
func (l *cancelListener) check(f *inflight) {
	if l == nil || l.nrecent.Load() == 0 {
		return
	}
	l.mu.Lock()
	if time.Since(time.Unix(0, l.last.Load())) > recentCancelAge { // all of them are old: back to the free path
		clear(l.recent)
		l.nrecent.Store(0)
	}
	at, ok := l.recent[f.d.Spec.TaskID]
	l.mu.Unlock()
	if ok && time.Since(at) <= recentCancelAge {
		f.cancel(ErrCancelled)
	}
}

// catchUp cancels the tasks this worker holds that were cancelled while it was not subscribed: their value in
// tasks is a cancelled record ('~c' ...). Ids of other shards read as missing there, and are left alone.
func (l *cancelListener) catchUp(q *RedisTaskQueue) {
	var ids []string
	for _, f := range l.w.held() {
		ids = append(ids, f.d.Spec.TaskID)
	}
	if len(ids) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	vals, err := q.rdb.HMGet(ctx, q.keys.key(keyTasks), ids...).Result()
	if err != nil {
		return // the lease renewal and the ack still refuse a cancelled delivery
	}
	for i, v := range vals {
		if s, ok := v.(string); ok && isCancelledRecord(s) {
			l.cancel(ids[i])
		}
	}
}

// wasCancelled reports whether f's run was cancelled by a cancel (its context's cause is ErrCancelled).
func (l *cancelListener) wasCancelled(f *inflight) bool {
	return l != nil && f.ctx.Context.Err() != nil && errors.Is(context.Cause(f.ctx.Context), ErrCancelled)
}

// endCancelled ends a run whose task was cancelled: nothing is recorded (the cancel did, in Redis), the slot and
// the gate are freed, and the event tells what the handler did. A handler that returned nil after the cancel
// ignored its context: it is reported, and its success is not acknowledged (the ack would be refused anyway).
func (w *TaskWorker) endCancelled(f *inflight, runErr error, took time.Duration) {
	spec := f.d.Spec
	w.forget(f, nil)
	w.freeSlots(1)
	w.unlockGate(f)
	if runErr == nil {
		runErr = errCancelIgnored
		w.cfg.Logger.Warn("taskqueue: a cancelled task's handler ignored its context and returned success; the task stays cancelled",
			slog.String("worker", w.cfg.Name), slog.String("task_id", truncate(spec.TaskID, 64)), slog.Duration("ran", took))
	}
	w.emit(Event{Kind: EventCancelled, TaskID: spec.TaskID, Spec: spec, Attempt: spec.Attempt, Deliveries: f.d.Deliveries, Err: runErr, Duration: took})
}

// errCancelIgnored is the Err of the [EventCancelled] of a handler that returned nil after its cancel.
var errCancelIgnored = errors.Join(ErrCancelled, errors.New("the handler ignored its context and returned nil"))
