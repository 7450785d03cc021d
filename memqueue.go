package taskqueue

import (
	"cmp"
	"container/list"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"sync"
	"time"
)

// MemoryQueue is an in-process [TaskQueue]: executables are stored as they are, never serialized (the seed's
// local path), so closures ([Func]) run on it. It keeps the same delivery rules as [RedisTaskQueue] (leases,
// fencing tokens, retries, dead letters, FIFO) and is meant for single-process use and tests. Enqueue is idempotent
// by task id; a conflicting content is detected for comparable executables and references (closures cannot be
// compared, so an id seen before is a no-op for them).
//
// It stores task results as [RedisTaskQueue] does with the default [RedisConfig]: at most 1 MiB of JSON each,
// readable with [MemoryQueue.Result] for 24 hours; it keeps the results of the last 10000 tasks at most.
type MemoryQueue struct {
	lease     time.Duration
	maxd      int
	maxResult int // the most bytes of one result (SetResult)

	mu        sync.Mutex
	changed   chan struct{} // closed and replaced whenever tasks become ready
	closed    bool
	tasks     map[string]*memTask
	pending   *list.List // of *memTask
	scheduled map[string]time.Time
	seq       int64
	dead      map[string]string
	interrupt map[string]bool
	settled   map[string]int64 // task id -> token*4 + outcome of its last settled delivery (see lua/settle.lua)
	order     []string         // settled ids, oldest first, to bound the map
	results   map[string]memResult
	resOrder  []string // ids in results, oldest first, to bound the map
}

// memResult is a task's stored result and when it expires.
type memResult struct {
	data    []byte
	expires time.Time
}

// A MemoryQueue's results: the limits of a RedisTaskQueue's default config, and a bound on how many it keeps.
const (
	memMaxResultBytes = 1 << 20
	memResultTTL      = 24 * time.Hour
	memResultWindow   = 10000
)

// keepResult stores a task's result, dropping expired results and the oldest beyond memResultWindow; q.mu must
// be held.
func (q *MemoryQueue) keepResult(id string, data []byte, now time.Time) {
	if _, ok := q.results[id]; !ok {
		q.resOrder = append(q.resOrder, id)
	}
	q.results[id] = memResult{data: data, expires: now.Add(memResultTTL)}
	for len(q.resOrder) > 0 {
		oldest := q.resOrder[0]
		if len(q.resOrder) <= memResultWindow && q.results[oldest].expires.After(now) {
			break
		}
		delete(q.results, oldest)
		q.resOrder = q.resOrder[1:]
	}
}

// memSettledWindow bounds how many settled deliveries a MemoryQueue remembers for idempotent replies.
const memSettledWindow = 10000

// remember records how a delivery settled; q.mu must be held.
func (q *MemoryQueue) remember(id string, token int64, outcome int64) {
	if _, ok := q.settled[id]; !ok {
		q.order = append(q.order, id)
	}
	q.settled[id] = token*4 + outcome
	if len(q.order) > memSettledWindow {
		delete(q.settled, q.order[0])
		q.order = q.order[1:]
	}
}

// replayed reports whether a settling call repeats one that already succeeded; q.mu must be held.
func (q *MemoryQueue) replayed(d *Delivery, outcome int64) bool {
	score, ok := q.settled[d.Spec.TaskID]
	return ok && score == d.Token*4+outcome
}

type memTask struct {
	spec       *TaskSpec
	elem       *list.Element
	token      int64 // of the current delivery; 0 when not leased
	deadline   time.Time
	deliveries int
}

// NewMemoryQueue returns an empty in-memory queue whose deliveries hold a lease of the given length (0 for 30s)
// and whose tasks are dead-lettered after maxDeliveries expired leases in a row (0 for 5).
func NewMemoryQueue(lease time.Duration, maxDeliveries int) *MemoryQueue {
	if lease <= 0 {
		lease = 30 * time.Second
	}
	if maxDeliveries <= 0 {
		maxDeliveries = 5
	}
	return &MemoryQueue{
		lease: lease, maxd: maxDeliveries, maxResult: memMaxResultBytes, changed: make(chan struct{}),
		tasks: make(map[string]*memTask), pending: list.New(), scheduled: make(map[string]time.Time),
		dead: make(map[string]string), interrupt: make(map[string]bool), settled: make(map[string]int64),
		results: make(map[string]memResult),
	}
}

// LeaseDuration implements [TaskQueue].
func (q *MemoryQueue) LeaseDuration() time.Duration { return q.lease }

// signal wakes blocked consumers; q.mu must be held.
func (q *MemoryQueue) signal() {
	close(q.changed)
	q.changed = make(chan struct{})
}

// Enqueue implements [TaskQueue]. The spec must hold an Executable; a copy of it is stored. Like
// [RedisTaskQueue.Enqueue], it writes a generated task id and the outcome ([TaskSpec.Enqueued]) into spec: an id
// that completed among the last 10000 settled tasks is [AlreadyCompleted] and not stored again.
func (q *MemoryQueue) Enqueue(ctx context.Context, spec *TaskSpec) error {
	return single(q.EnqueueBatch(ctx, []*TaskSpec{spec}))
}

// EnqueueBatch implements [TaskQueue], writing each spec's id and outcome as [MemoryQueue.Enqueue] does.
func (q *MemoryQueue) EnqueueBatch(_ context.Context, specs []*TaskSpec) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return ErrClosed
	}
	var errs []error
	now := time.Now()
	for i, spec := range specs {
		prepare(spec)
		if err := spec.validate(); err != nil {
			errs = append(errs, &EnqueueError{Index: i, TaskID: specID(spec), Err: err})
			continue
		}
		if spec.Executable == nil {
			errs = append(errs, &EnqueueError{Index: i, TaskID: spec.TaskID, Err: fmt.Errorf("%w: a memory queue needs an executable", ErrNotRunnable)})
			continue
		}
		if spec.Unique != nil {
			errs = append(errs, &EnqueueError{Index: i, TaskID: spec.TaskID, Err: &UniqueError{Field: "Unique", Problem: "not supported by a memory queue"}})
			continue
		}
		s := *spec
		s.Enqueued = NotEnqueued
		s.Metadata = maps.Clone(s.Metadata)
		if old, ok := q.tasks[s.TaskID]; ok {
			if !sameExecutable(old.spec.Executable, s.Executable) {
				errs = append(errs, &EnqueueError{Index: i, TaskID: s.TaskID, Err: ErrTaskIDConflict})
			} else {
				spec.Enqueued = Duplicate
			}
			continue
		}
		if score, ok := q.settled[s.TaskID]; ok && score%4 == 0 { // acked recently: a replay, as on Redis
			spec.Enqueued = AlreadyCompleted
			continue
		}
		if s.CreatedAt.IsZero() {
			s.CreatedAt = now
		}
		t := &memTask{spec: &s}
		q.tasks[s.TaskID] = t
		delay := s.ProcessIn
		if delay == 0 && !s.ProcessAt.IsZero() {
			delay = s.ProcessAt.Sub(now)
		}
		if delay > 0 {
			s.Status = StateScheduled
			q.scheduled[s.TaskID] = now.Add(delay)
		} else {
			s.Status = StatePending
			t.elem = memPushBack(q.pending, t)
		}
		spec.Enqueued = Stored
	}
	q.signal()
	return errors.Join(errs...)
}

// Dequeue implements [TaskQueue].
func (q *MemoryQueue) Dequeue(ctx context.Context, opts DequeueOptions) ([]*Delivery, error) {
	if opts.Max < 1 {
		opts.Max = 1
	}
	timer := time.NewTimer(opts.Wait)
	defer timer.Stop()
	for {
		q.mu.Lock()
		if q.closed {
			q.mu.Unlock()
			return nil, ErrClosed
		}
		if q.interrupt[opts.Consumer] {
			delete(q.interrupt, opts.Consumer)
			q.mu.Unlock()
			return nil, nil
		}
		now := time.Now()
		q.promote(now)
		q.reapLocked(now)
		var out []*Delivery
		for len(out) < opts.Max && q.pending.Len() > 0 {
			t := q.pending.Remove(q.pending.Front()).(*memTask)
			t.elem = nil
			q.seq++
			t.token, t.deadline = q.seq, now.Add(q.lease)
			t.deliveries++
			spec := *t.spec
			spec.Metadata = maps.Clone(spec.Metadata)
			out = append(out, &Delivery{Spec: &spec, Token: t.token, Deliveries: t.deliveries, LeaseDeadline: t.deadline, localEnds: t.deadline})
		}
		next := q.nextDue(now)
		changed := q.changed
		q.mu.Unlock()
		if len(out) > 0 {
			return out, nil
		}
		if again, err := waitChange(ctx, timer.C, changed, next); !again {
			return nil, err
		}
	}
}

// waitChange blocks until ctx ends (its error), the whole wait expires (nil), or tasks may have become ready: a
// change was signalled or the next delayed task fell due (again is true).
func waitChange(ctx context.Context, expired <-chan time.Time, changed <-chan struct{}, next time.Duration) (again bool, err error) {
	var due <-chan time.Time
	if next > 0 {
		dt := time.NewTimer(next)
		defer dt.Stop()
		due = dt.C
	}
	select {
	case <-ctx.Done():
		return false, ctx.Err()
	case <-expired:
		return false, nil
	case <-changed:
	case <-due:
	}
	return true, nil
}

// promote makes due tasks ready, earliest due first; q.mu must be held.
func (q *MemoryQueue) promote(now time.Time) {
	var due []string
	for id, at := range q.scheduled {
		if !at.After(now) {
			due = append(due, id)
		}
	}
	slices.SortFunc(due, func(a, b string) int {
		return cmp.Or(q.scheduled[a].Compare(q.scheduled[b]), cmp.Compare(a, b))
	})
	for _, id := range due {
		delete(q.scheduled, id)
		t := q.tasks[id]
		t.elem = memPushBack(q.pending, t)
	}
}

func (q *MemoryQueue) nextDue(now time.Time) time.Duration {
	var next time.Duration
	for _, at := range q.scheduled {
		if d := at.Sub(now); next == 0 || d < next {
			next = max(d, time.Millisecond)
		}
	}
	return next
}

// reapLocked returns expired deliveries; q.mu must be held.
func (q *MemoryQueue) reapLocked(now time.Time) ReapResult {
	var r ReapResult
	for id, t := range q.tasks {
		if t.token == 0 || t.deadline.After(now) {
			continue
		}
		t.token = 0
		if t.deliveries >= q.maxd {
			q.dead[id] = fmt.Sprintf("%s (%d deliveries, each lease expired)", ErrMaxDeliveries, t.deliveries)
			t.spec.Status = StateDead
			t.deliveries = 0
			r.Dead++
			continue
		}
		t.elem = memPushFront(q.pending, t)
		r.Requeued++
	}
	return r
}

// Interrupt implements [TaskQueue].
func (q *MemoryQueue) Interrupt(_ context.Context, consumer string) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.interrupt[consumer] = true
	q.signal()
	return nil
}

// clearInterrupt drops an interrupt that no pickup consumed.
func (q *MemoryQueue) clearInterrupt(_ context.Context, consumer string) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.interrupt, consumer)
	return nil
}

// dequeueRaw is Dequeue: a MemoryQueue has nothing to decode.
func (q *MemoryQueue) dequeueRaw(ctx context.Context, opts DequeueOptions) (leased, error) {
	ds, err := q.Dequeue(ctx, opts)
	return leased{ds: ds}, err
}

// rehydrateLeased returns the deliveries as they are: they hold their executables.
func (q *MemoryQueue) rehydrateLeased(_ context.Context, l leased) []*Delivery { return l.ds }

// owned returns the task a delivery still owns; q.mu must be held.
func (q *MemoryQueue) owned(d *Delivery) (*memTask, error) {
	t := q.tasks[d.Spec.TaskID]
	if t == nil || t.token != d.Token {
		return nil, fmt.Errorf("%w: %s", ErrLeaseLost, quote(d.Spec.TaskID))
	}
	return t, nil
}

// Ack implements [TaskQueue]. It stores the result a delivery's handler set ([SetResult]).
func (q *MemoryQueue) Ack(_ context.Context, ds ...*Delivery) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	var errs []error
	now := time.Now()
	for _, d := range ds {
		if _, err := q.owned(d); err != nil {
			if !q.replayed(d, 0) {
				errs = append(errs, err)
			}
			continue
		}
		delete(q.tasks, d.Spec.TaskID)
		q.remember(d.Spec.TaskID, d.Token, 0)
		if d.result != nil {
			q.keepResult(d.Spec.TaskID, d.result, now)
		}
	}
	return errors.Join(errs...)
}

// Retry implements [TaskQueue].
func (q *MemoryQueue) Retry(_ context.Context, d *Delivery, delay time.Duration, cause error) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	t, err := q.owned(d)
	if err != nil {
		if q.replayed(d, 1) {
			return nil
		}
		return err
	}
	q.remember(d.Spec.TaskID, d.Token, 1)
	t.token, t.deliveries = 0, 0
	t.spec.Attempt++
	t.spec.LastError = errString(cause)
	t.spec.Status = StateRetry
	if delay > 0 {
		q.scheduled[t.spec.TaskID] = time.Now().Add(delay)
	} else {
		t.elem = memPushBack(q.pending, t)
	}
	q.signal()
	return nil
}

// DeadLetter implements [TaskQueue].
func (q *MemoryQueue) DeadLetter(_ context.Context, d *Delivery, cause error) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	t, err := q.owned(d)
	if err != nil {
		if q.replayed(d, 2) {
			return nil
		}
		return err
	}
	q.remember(d.Spec.TaskID, d.Token, 2)
	t.token, t.deliveries = 0, 0
	t.spec.Attempt++ // a failed run, counted as RedisTaskQueue.DeadLetter counts it
	t.spec.Status = StateDead
	t.spec.LastError = errString(cause)
	q.dead[t.spec.TaskID] = errString(cause)
	return nil
}

// Release implements [TaskQueue].
func (q *MemoryQueue) Release(_ context.Context, d *Delivery) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	t, err := q.owned(d)
	if err != nil {
		if q.replayed(d, 3) {
			return nil
		}
		return err
	}
	q.remember(d.Spec.TaskID, d.Token, 3)
	t.token = 0
	t.deliveries--
	t.elem = memPushFront(q.pending, t)
	q.signal()
	return nil
}

// ExtendLeases implements [TaskQueue].
func (q *MemoryQueue) ExtendLeases(_ context.Context, ds []*Delivery) ([]*Delivery, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	now := time.Now()
	var lost []*Delivery
	for _, d := range ds {
		t, err := q.owned(d)
		if err != nil {
			lost = append(lost, d)
			continue
		}
		t.deadline = now.Add(q.lease)
		d.LeaseDeadline, d.localEnds = t.deadline, t.deadline
	}
	return lost, nil
}

// Reap implements [TaskQueue].
func (q *MemoryQueue) Reap(context.Context) (ReapResult, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	now := time.Now()
	before := q.pending.Len()
	r := q.reapLocked(now)
	q.promote(now)
	r.Promoted = q.pending.Len() - before - r.Requeued
	if q.pending.Len() > 0 {
		q.signal()
	}
	return r, nil
}

// Stats returns the queue's counts per place; the fields of [Stats] beyond [Counts] are left zero.
func (q *MemoryQueue) Stats(context.Context) (Stats, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	s := Stats{Counts: Counts{Pending: int64(q.pending.Len()), Scheduled: int64(len(q.scheduled)), Dead: int64(len(q.dead))}}
	for _, t := range q.tasks {
		if t.token != 0 {
			s.Active++
		}
	}
	return s, nil
}

// DeadLetters returns the dead-lettered task ids and their reasons.
func (q *MemoryQueue) DeadLetters() map[string]string {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := make(map[string]string, len(q.dead))
	for id, r := range q.dead {
		out[id] = r
	}
	return out
}

// Close makes every later call return [ErrClosed] and ends blocked dequeues.
func (q *MemoryQueue) Close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = true
	q.signal()
}

// sameExecutable reports whether two executables are the same task. Comparable values compare with ==, references
// by module, name and arguments; closures cannot be compared, so the same id is taken as the same task.
func sameExecutable(a, b Executable) bool {
	ra, aok := a.(Referencer)
	rb, bok := b.(Referencer)
	if aok && bok {
		ma, na, argsA := ra.TaskReference()
		mb, nb, argsB := rb.TaskReference()
		ja, errA := json.Marshal(argsA)
		jb, errB := json.Marshal(argsB)
		return ma == mb && na == nb && errA == nil && errB == nil && jsonEqual(ja, jb)
	}
	ta, tb := reflect.TypeOf(a), reflect.TypeOf(b)
	if ta != tb {
		return false
	}
	if !ta.Comparable() {
		return true
	}
	return a == b
}
