package taskqueue

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// A worker on several queues (docs/flow-control.md, "Workers on several queues"): a [MultiQueue] is the
// [TaskQueue] a [TaskWorker] consumes when it serves several queues, each a [RedisTaskQueue] or a [ShardedQueue]
// with a key prefix of its own. Each pickup batch is served by one queue chosen first, in strict order or by
// smooth weighted round-robin, and filled from the others when that queue has fewer tasks ready. Every delivery
// remembers its queue, so that its acks, lease renewals, retries, dead letters and releases go to that queue.

// MaxMultiQueues is the most queues a [MultiQueue] takes.
const MaxMultiQueues = 64

// MaxQueueWeight is the largest [QueueWeight.Weight].
const MaxQueueWeight = 1_000_000

// ErrMultiQueueEnqueue is returned by [MultiQueue.Enqueue] and [MultiQueue.EnqueueBatch]: a MultiQueue only
// consumes; producers enqueue into one of its queues.
var ErrMultiQueueEnqueue = errors.New("taskqueue: a MultiQueue takes no tasks: enqueue into one of its queues")

// MultiQueueError names the field of a [NewMultiQueue] call that cannot work. It wraps [ErrInvalidConfig].
type MultiQueueError struct {
	Field   string // "Queues", or "Queues[i].Queue" or "Queues[i].Weight" for the i-th entry (0-based)
	Problem string
}

func (e *MultiQueueError) Error() string {
	return "taskqueue: invalid configuration: multi-queue: " + e.Field + ": " + e.Problem
}

// Unwrap returns [ErrInvalidConfig].
func (e *MultiQueueError) Unwrap() error { return ErrInvalidConfig }

// QueueWeight is one queue of a [MultiQueue] and its share of the pickups.
type QueueWeight struct {
	// Queue is a [*RedisTaskQueue] or a [*ShardedQueue]; all the queues of a MultiQueue use one Redis client.
	Queue TaskQueue
	// Weight is the queue's share of the pickup batches, from 1 to [MaxQueueWeight]: with weights 3 and 1, while
	// both have tasks ready, three batches in four come from the first queue. Under [MultiQueueConfig.Strict] it
	// is ignored and may be 0.
	Weight int
}

// MultiQueueConfig configures a [MultiQueue]. The zero value is weighted order.
type MultiQueueConfig struct {
	// Strict serves the queues in the order given: a pickup takes every ready task of a queue before any of the
	// next one, so a busy queue starves the ones after it. Default false: smooth weighted round-robin.
	Strict bool
}

// MultiQueue is what a [TaskWorker] consumes to serve several queues: build it with [NewMultiQueue] and pass it
// to [NewTaskWorker]. Each pickup first asks one queue for the whole batch, chosen by smooth weighted round-robin
// over the weights (the order of nginx and asynq: with weights 3 and 1, the first queue serves batches 1, 2 and
// 4 of every 4) or, under [MultiQueueConfig.Strict], always the first queue; a batch that queue cannot fill is
// filled from the others, in their order after it. Weights thus apply to pickup batches while the queues have
// tasks ready; an empty queue's turn goes to the others.
//
// When every queue is empty, a pickup blocks on all of them at once: on a single node or Sentinel one BLPOP over
// every queue's wake-up list; on a Cluster (a [*redis.ClusterClient], whose queues live in different slots) one
// BLPOP per queue (per shard of a [ShardedQueue]) on the connection pool, the first wake-up ending the others,
// as [ShardedQueue] does. An idle consumer on a Cluster thus holds one connection per queue; size the client's
// pool for it.
//
// Every delivery belongs to the queue it was leased from: its ack, lease renewal, retry, snooze, dead letter and
// release go there, under that queue's configuration (lease, retention, result size), and a handler reads the
// queue's key prefix with [QueueOf]. MultiQueue only consumes: Enqueue returns [ErrMultiQueueEnqueue]. It is
// safe for concurrent use.
type MultiQueue struct {
	members []multiMember
	units   []*RedisTaskQueue // every queue in Redis: the members', a ShardedQueue's shards in order
	unitOf  map[string]int    // a unit's wake-up list -> the unit
	strict  bool
	single  bool // one BLPOP over every wake-up list: the client serves keys of every slot in one call

	mu      sync.Mutex // the round-robin state
	current []int
	total   int
}

// multiMember is one queue of a MultiQueue.
type multiMember struct {
	q      TaskQueue
	prefix string
	weight int
	units  []int         // its units in m.units
	shards *ShardedQueue // nil for a RedisTaskQueue
}

// NewMultiQueue returns the queue a worker consumes to serve queues, in weighted order or, with cfg.Strict, in
// the order given (nil cfg: weighted). It refuses, with a [*MultiQueueError] that names the field: no queue or
// more than [MaxMultiQueues]; a queue that is nil or not a [*RedisTaskQueue] or [*ShardedQueue]; a weight out of
// range; two queues with one key prefix (a ShardedQueue's shards count); queues on different Redis clients.
func NewMultiQueue(queues []QueueWeight, cfg *MultiQueueConfig) (*MultiQueue, error) {
	var c MultiQueueConfig
	if cfg != nil {
		c = *cfg
	}
	if len(queues) == 0 || len(queues) > MaxMultiQueues {
		return nil, &MultiQueueError{Field: "Queues", Problem: fmt.Sprintf("%d queues, want 1 to %d", len(queues), MaxMultiQueues)}
	}
	m := &MultiQueue{strict: c.Strict, unitOf: map[string]int{}, current: make([]int, len(queues))}
	owner := map[string]int{} // a unit's key prefix -> the entry that holds it
	var rdb redis.UniversalClient
	for i, qw := range queues {
		field := fmt.Sprintf("Queues[%d]", i)
		mm := multiMember{q: qw.Queue, weight: qw.Weight}
		var units []*RedisTaskQueue
		switch q := qw.Queue.(type) {
		case *RedisTaskQueue:
			if q != nil {
				mm.prefix, units = q.prefix, []*RedisTaskQueue{q}
			}
		case *ShardedQueue:
			if q != nil {
				mm.prefix, mm.shards, units = q.prefix, q, q.shards
			}
		}
		if len(units) == 0 {
			return nil, &MultiQueueError{Field: field + ".Queue", Problem: "want a *RedisTaskQueue or a *ShardedQueue"}
		}
		switch {
		case c.Strict && qw.Weight < 0:
			return nil, &MultiQueueError{Field: field + ".Weight", Problem: fmt.Sprintf("%d is negative", qw.Weight)}
		case !c.Strict && (qw.Weight < 1 || qw.Weight > MaxQueueWeight):
			return nil, &MultiQueueError{Field: field + ".Weight", Problem: fmt.Sprintf("%d, want 1 to %d", qw.Weight, MaxQueueWeight)}
		}
		for _, u := range units {
			if j, dup := owner[u.prefix]; dup {
				return nil, &MultiQueueError{Field: field + ".Queue", Problem: fmt.Sprintf("key prefix %s is already served by Queues[%d]", quote(u.prefix), j)}
			}
			owner[u.prefix] = i
			if rdb == nil {
				rdb = u.rdb
			} else if u.rdb != rdb {
				return nil, &MultiQueueError{Field: field + ".Queue", Problem: "uses another Redis client than Queues[0]: a worker blocks on all its queues through one client"}
			}
			mm.units = append(mm.units, len(m.units))
			m.unitOf[u.keys.key(keyWake)] = len(m.units)
			m.units = append(m.units, u)
		}
		m.total += max(qw.Weight, 0)
		m.members = append(m.members, mm)
	}
	_, m.single = rdb.(*redis.Client) // a single node or a Sentinel failover client; a Cluster refuses CROSSSLOT
	return m, nil
}

// Queues returns the queues, in the order given.
func (m *MultiQueue) Queues() []TaskQueue {
	out := make([]TaskQueue, len(m.members))
	for i, mm := range m.members {
		out[i] = mm.q
	}
	return out
}

// QueueOf returns the key prefix of the queue that the task running under ctx was picked up from (a
// [ShardedQueue]'s prefix, without the shard suffix), for a handler of a worker on several queues
// ([MultiQueue]); "" outside a task run by a [TaskWorker] and for a [MemoryQueue].
func QueueOf(ctx context.Context) string {
	tc, _ := ctx.Value(taskCtxKey{}).(*taskCtx)
	if tc == nil || tc.run == nil {
		return ""
	}
	switch q := originOf(tc.w.q, tc.run.d).(type) {
	case *RedisTaskQueue:
		return q.prefix
	case *ShardedQueue:
		return q.prefix
	}
	return ""
}

// originOf returns the queue that d was leased from: the member of a MultiQueue, else q itself.
func originOf(q TaskQueue, d *Delivery) TaskQueue {
	if m, ok := q.(*MultiQueue); ok {
		return m.members[d.member].q
	}
	return q
}

// first returns the member that the next pickup asks first: the first one under Strict, else the smooth weighted
// round-robin's choice (each member's current value grows by its weight, the largest is chosen, the first on a
// tie, and loses the total).
func (m *MultiQueue) first() int {
	if m.strict || len(m.members) == 1 {
		return 0
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	best := 0
	for i := range m.current {
		m.current[i] += m.members[i].weight
		if m.current[i] > m.current[best] {
			best = i
		}
	}
	m.current[best] -= m.total
	return best
}

// LeaseDuration implements [TaskQueue]: the shortest lease of the queues, which the worker's heartbeat follows.
func (m *MultiQueue) LeaseDuration() time.Duration {
	lease := m.members[0].q.LeaseDuration()
	for _, mm := range m.members[1:] {
		lease = min(lease, mm.q.LeaseDuration())
	}
	return lease
}

// Enqueue implements [TaskQueue]: it returns [ErrMultiQueueEnqueue].
func (m *MultiQueue) Enqueue(context.Context, *TaskSpec) error { return ErrMultiQueueEnqueue }

// EnqueueBatch implements [TaskQueue]: it returns [ErrMultiQueueEnqueue].
func (m *MultiQueue) EnqueueBatch(context.Context, []*TaskSpec) error { return ErrMultiQueueEnqueue }

// Dequeue implements [TaskQueue]. It leases up to opts.Max tasks, asking the queue that the order picks first
// and then the others in turn; with none ready it blocks on every queue at once until one signals work, a
// delayed task falls due, [MultiQueue.Interrupt] ends the wait, or opts.Wait passes. A queue that fails does not
// stop the pickup from the others; its error is returned only when nothing was leased. Tasks that cannot be
// decoded or resolved are dead-lettered in their queue and not returned.
func (m *MultiQueue) Dequeue(ctx context.Context, opts DequeueOptions) ([]*Delivery, error) {
	return dequeueDecoded(ctx, m.dequeueRaw, m.rehydrateLeased, opts)
}

// dequeueRaw is Dequeue without the decoding: the worker decodes a pickup while its next one is on its way.
func (m *MultiQueue) dequeueRaw(ctx context.Context, opts DequeueOptions) (leased, error) {
	if opts.Max < 1 {
		opts.Max = 1
	}
	start := time.Now()
	var woke []int // the units whose wake-ups the last wait took
	for {
		var tried []bool
		if len(woke) > 0 {
			tried = make([]bool, len(m.units))
		}
		l, nextDue, err := m.sweep(ctx, opts.Max, tried)
		if len(woke) > 0 {
			m.handBackWakes(ctx, woke, tried)
		}
		if err != nil || len(l.ds) > 0 {
			return l, err
		}
		remaining := opts.Wait - time.Since(start)
		if remaining <= 0 {
			return leased{}, nil
		}
		wait, dueWait := remaining, false
		if nextDue >= 0 && nextDue < wait {
			wait, dueWait = nextDue, true
		}
		var interrupted bool
		woke, interrupted, err = m.wait(ctx, opts.Consumer, wait, dueWait)
		if err != nil || interrupted {
			return leased{}, err
		}
	}
}

// sweep leases up to want tasks: from the member the order picks first, then from the others in turn. It marks
// in tried (when not nil) each unit it asked, and returns the soonest due time of a delayed task (-1 for none).
// It returns an error only when it leased nothing.
func (m *MultiQueue) sweep(ctx context.Context, want int, tried []bool) (leased, time.Duration, error) {
	n, first := len(m.members), m.first()
	var out leased
	var firstErr error
	nextDue := time.Duration(-1)
	for i := 0; i < n && len(out.ds) < want; i++ {
		k := (first + i) % n
		l, due, err := m.take(ctx, k, want-len(out.ds), tried)
		if err != nil && firstErr == nil {
			firstErr = err
		}
		if due >= 0 && (nextDue < 0 || due < nextDue) {
			nextDue = due
		}
		for _, d := range l.ds {
			d.member = k
		}
		if len(out.ds) == 0 {
			out = l // most pickups are served by one queue: no copy
		} else {
			out.add(l)
		}
	}
	if len(out.ds) == 0 && firstErr != nil {
		return leased{}, 0, firstErr
	}
	return out, nextDue, nil
}

// take leases up to want tasks from member k without blocking: a ShardedQueue's shards in turn from a rotating
// start, as its own pickup does. It returns an error only when it leased nothing.
func (m *MultiQueue) take(ctx context.Context, k, want int, tried []bool) (leased, time.Duration, error) {
	mm := &m.members[k]
	from := 0
	if mm.shards != nil {
		from = int(mm.shards.next.Add(1) % uint32(len(mm.units)))
	}
	var out leased
	var firstErr error
	nextDue := time.Duration(-1)
	for i := 0; i < len(mm.units) && len(out.ds) < want; i++ {
		u := mm.units[(from+i)%len(mm.units)]
		if tried != nil {
			tried[u] = true
		}
		l, due, err := m.units[u].dequeueOnce(ctx, want-len(out.ds))
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		if mm.shards != nil {
			markShard(l, (from+i)%len(mm.units)) // sharded_graph.go
		}
		if due >= 0 && (nextDue < 0 || due < nextDue) {
			nextDue = due
		}
		if len(out.ds) == 0 {
			out = l
		} else {
			out.add(l)
		}
	}
	if len(out.ds) == 0 && firstErr != nil {
		return leased{}, nextDue, firstErr
	}
	return out, nextDue, nil
}

// handBackWakes pushes a wake-up back to each unit in woke that the sweep after the wait did not ask (its batch
// was full first): the wake-up the wait took from that queue's list then wakes another consumer, rather than
// leaving its tasks to the next pickup of this one.
func (m *MultiQueue) handBackWakes(ctx context.Context, woke []int, tried []bool) {
	var back []int
	for _, u := range woke {
		if !tried[u] {
			back = append(back, u)
		}
	}
	if len(back) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
	defer cancel()
	_, _ = m.units[0].rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, u := range back {
			wake := m.units[u].keys.key(keyWake)
			p.LPush(ctx, wake, "1") // as wake_one (prelude.lua) does
			p.LTrim(ctx, wake, 0, 63)
		}
		return nil
	})
}

// wait blocks until a wake-up of any unit, an interrupt of the consumer, or wait; dueWait says that wait ends
// when a delayed task falls due. It returns the units whose wake-ups it took, and whether the consumer was
// interrupted.
func (m *MultiQueue) wait(ctx context.Context, consumer string, wait time.Duration, dueWait bool) ([]int, bool, error) {
	if wait < time.Millisecond {
		return nil, false, nil
	}
	u0 := m.units[0]
	interrupt := ""
	if consumer != "" {
		interrupt = u0.keys.consumerWake(consumer)
		if dueWait {
			// As RedisTaskQueue.waitForWork: a local timer wakes this consumer when the task falls due, rather
			// than the BLPOP timeout at Redis's next cron tick.
			stop := u0.dueTimer(interrupt, wait)
			defer stop()
			wait += dueWakeSlack
		}
	}
	if m.single || len(m.units) == 1 {
		keys := make([]string, 0, len(m.units)+1)
		for _, u := range m.units {
			keys = append(keys, u.keys.key(keyWake))
		}
		if interrupt != "" {
			keys = append(keys, interrupt)
		}
		woke, err := u0.block(ctx, wait, keys...)
		return m.woken(nil, woke, dueWait), woke != "" && woke == interrupt, err
	}
	return m.waitEach(ctx, consumer, interrupt, wait, dueWait)
}

// woken appends to us the unit whose wake-up list is key, if any. A due timer's token reads as unit 0's wake-up
// (RedisTaskQueue.block): with dueWait it is not counted, so that it is never handed back.
func (m *MultiQueue) woken(us []int, key string, dueWait bool) []int {
	u, ok := m.unitOf[key]
	if !ok || (dueWait && u == 0) {
		return us
	}
	return append(us, u)
}

// waitEach blocks on every unit at once (blockEach), unit 0's wait also on the consumer's interrupt list, as
// [ShardedQueue]'s pickup does. It returns the units whose wake-up ended a wait, the first first.
func (m *MultiQueue) waitEach(ctx context.Context, consumer, interrupt string, wait time.Duration, dueWait bool) ([]int, bool, error) {
	stop := "multi-" + consumer
	if consumer == "" {
		stop += newID()[:12] // an anonymous pickup's stop list is its own; it expires unread
	}
	woke, first, err := blockEach(ctx, m.units, stop, interrupt, wait)
	units := m.woken(nil, woke[first], dueWait)
	for i, k := range woke {
		if i != first {
			units = m.woken(units, k, dueWait)
		}
	}
	return units, interrupt != "" && slices.Contains(woke, interrupt), err
}

// Interrupt implements [TaskQueue]: it ends a blocked Dequeue of consumer. The consumer's interrupt list lives in
// the first queue (its first shard) and expires by itself if the consumer was not waiting.
func (m *MultiQueue) Interrupt(ctx context.Context, consumer string) error {
	return m.units[0].Interrupt(ctx, consumer)
}

// clearInterrupt removes a consumer's interrupt list after its last pickup.
func (m *MultiQueue) clearInterrupt(ctx context.Context, consumer string) error {
	return m.units[0].clearInterrupt(ctx, consumer)
}

// rehydrateLeased decodes and resolves what a pickup leased, each task by its queue; the deliveries that cannot
// run are parked in their queue and left out. A pickup's deliveries come in runs of one queue each (sweep).
func (m *MultiQueue) rehydrateLeased(ctx context.Context, l leased) []*Delivery {
	var out []*Delivery
	for i := 0; i < len(l.ds); {
		k, j := l.ds[i].member, i+1
		for j < len(l.ds) && l.ds[j].member == k {
			j++
		}
		run := leased{ds: l.ds[i:j:j], ids: l.ids[i:j:j], raws: l.raws[i:j:j]}
		ds := m.members[k].q.rehydrateLeased(ctx, run)
		if i == 0 && j == len(l.ds) {
			return ds // one queue served the pickup: no copy
		}
		out = append(out, ds...)
		i = j
	}
	return out
}

// byMember splits deliveries by their queue.
func (m *MultiQueue) byMember(ds []*Delivery) [][]*Delivery {
	groups := make([][]*Delivery, len(m.members))
	for _, d := range ds {
		groups[d.member] = append(groups[d.member], d)
	}
	return groups
}

// Ack implements [TaskQueue]: one call per queue involved, concurrently.
func (m *MultiQueue) Ack(ctx context.Context, ds ...*Delivery) error {
	groups := m.byMember(ds)
	errs := make([]error, len(groups))
	each(groups, func(k int) { errs[k] = m.members[k].q.Ack(ctx, groups[k]...) })
	return errors.Join(errs...)
}

// Retry implements [TaskQueue]: in the delivery's queue.
func (m *MultiQueue) Retry(ctx context.Context, d *Delivery, delay time.Duration, cause error) error {
	return m.members[d.member].q.Retry(ctx, d, delay, cause)
}

// DeadLetter implements [TaskQueue]: in the delivery's queue.
func (m *MultiQueue) DeadLetter(ctx context.Context, d *Delivery, cause error) error {
	return m.members[d.member].q.DeadLetter(ctx, d, cause)
}

// Release implements [TaskQueue]: to the head of the delivery's queue.
func (m *MultiQueue) Release(ctx context.Context, d *Delivery) error {
	return m.members[d.member].q.Release(ctx, d)
}

func (m *MultiQueue) snooze(ctx context.Context, d *Delivery, delay time.Duration) error {
	return m.members[d.member].q.(snoozer).snooze(ctx, d, delay)
}

// ExtendLeases implements [TaskQueue]: one call per queue involved, concurrently.
func (m *MultiQueue) ExtendLeases(ctx context.Context, ds []*Delivery) ([]*Delivery, error) {
	groups := m.byMember(ds)
	lost := make([][]*Delivery, len(groups))
	errs := make([]error, len(groups))
	each(groups, func(k int) { lost[k], errs[k] = m.members[k].q.ExtendLeases(ctx, groups[k]) })
	var out []*Delivery
	for _, l := range lost {
		out = append(out, l...)
	}
	return out, errors.Join(errs...)
}

// Reap implements [TaskQueue]: every queue, concurrently; the counts add up.
func (m *MultiQueue) Reap(ctx context.Context) (ReapResult, error) {
	res := make([]ReapResult, len(m.members))
	errs := make([]error, len(m.members))
	ks := make([]int, len(m.members))
	for k := range ks {
		ks[k] = k
	}
	inParallel(ks, func(k int) { res[k], errs[k] = m.members[k].q.Reap(ctx) })
	var sum ReapResult
	for _, r := range res {
		sum.Requeued += r.Requeued
		sum.Dead += r.Dead
		sum.Promoted += r.Promoted
	}
	return sum, errors.Join(errs...)
}

// maxResultBytes implements [TaskQueue]: the smallest of the queues' bounds. A worker stores each task's result
// under its own queue's bound (originOf).
func (m *MultiQueue) maxResultBytes() int {
	n := m.members[0].q.maxResultBytes()
	for _, mm := range m.members[1:] {
		n = min(n, mm.q.maxResultBytes())
	}
	return n
}

// controlShards returns every queue in Redis, for the worker's cancel listener.
func (m *MultiQueue) controlShards() []*RedisTaskQueue {
	return append([]*RedisTaskQueue(nil), m.units...)
}

// checkResolvers is the check of [TaskWorker.Start] for each queue's registry.
func (m *MultiQueue) checkResolvers() error {
	for i, mm := range m.members {
		if err := checkResolvers(registryOf(mm.q)); err != nil {
			return fmt.Errorf("%w (Queues[%d], key prefix %s)", err, i, quote(mm.prefix))
		}
	}
	return nil
}

// The worker's contract, checked by the compiler.
var (
	_ TaskQueue     = (*MultiQueue)(nil)
	_ snoozer       = (*MultiQueue)(nil)
	_ controlShards = (*MultiQueue)(nil)
)
