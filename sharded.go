package taskqueue

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// MaxShards is the most shards a [ShardedQueue] takes.
const MaxShards = 256

// ShardedQueue is one logical queue spread over several [RedisTaskQueue] shards, for a queue busier than one
// Redis thread can serve: on a Cluster the shards' slots spread over the primaries, so producers and workers
// spread their load over them. Shard i has the key prefix "keyPrefix.i" and thus a hash tag of its own; a task
// lives in the shard that the FNV-1a hash of its task id picks, so enqueue stays idempotent by task id.
//
// A pickup first tries the shards without blocking, starting from a different shard each time so that none is
// starved, and takes up to the batch from as many as it needs. When all are empty it blocks on every shard at
// once, one BLPOP per shard on the connection pool (a Cluster cannot block on keys of several slots in one call),
// and the first wake-up ends the others. An idle consumer thus holds one connection per shard; size the client's
// pool for it. Ordering is FIFO within a shard only.
//
// Group runs and workflows ([ShardedQueue.DispatchGroup], [ShardedQueue.SubmitWorkflow]) each live in one shard,
// chosen by the run's group id or the workflow's id; every delivery is settled in the shard it was leased from.
//
// It is safe for concurrent use; the caller owns the client. The number of shards is part of the queue's
// identity: producers and workers must agree on it, and changing it strands the tasks of the removed shards
// (drain the queue first). Do not use a prefix "keyPrefix.i" for another queue.
type ShardedQueue struct {
	prefix string
	shards []*RedisTaskQueue
	next   atomic.Uint32 // where the next pickup starts
}

// NewShardedQueue returns a queue of shards shards (1 to [MaxShards]) on rdb under keyPrefix; each shard is a
// [RedisTaskQueue] made with reg and cfg (copied; nil takes every default), so [RedisConfig.DurableReplicas]
// applies to each enqueue.
func NewShardedQueue(rdb redis.UniversalClient, keyPrefix string, shards int, reg *ResolverRegistry, cfg *RedisConfig) (*ShardedQueue, error) {
	if shards < 1 || shards > MaxShards {
		return nil, fmt.Errorf("%w: shards must be between 1 and %d", ErrInvalidConfig, MaxShards)
	}
	if err := validateKeyPrefix(keyPrefix); err != nil {
		return nil, err
	}
	s := &ShardedQueue{prefix: keyPrefix, shards: make([]*RedisTaskQueue, shards)}
	for i := range s.shards {
		q, err := NewRedisTaskQueue(rdb, fmt.Sprintf("%s.%d", keyPrefix, i), reg, cfg)
		if err != nil {
			return nil, err
		}
		s.shards[i] = q
	}
	return s, nil
}

// KeyPrefix returns the queue's key prefix, without the shard suffix.
func (s *ShardedQueue) KeyPrefix() string { return s.prefix }

// Shards returns the shards, in order. [NewAdmin] administers them all at once; an Admin of one shard works on
// that shard alone.
func (s *ShardedQueue) Shards() []*RedisTaskQueue { return append([]*RedisTaskQueue(nil), s.shards...) }

// ShardOf returns the index of the shard that holds taskID: FNV-1a of the id modulo the shard count, for any id
// (a group member's or workflow node's task lives in its run's shard instead: ShardOf of the group id
// "<name>@<run id>", or of the workflow id).
func (s *ShardedQueue) ShardOf(taskID string) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(taskID))
	return int(h.Sum32() % uint32(len(s.shards)))
}

// shardOf returns the shard a delivery was leased from, where its outcome goes (sharded_graph.go).
func (s *ShardedQueue) shardOf(d *Delivery) *RedisTaskQueue {
	return s.shards[s.shardIndex(d)]
}

// LeaseDuration implements [TaskQueue].
func (s *ShardedQueue) LeaseDuration() time.Duration { return s.shards[0].LeaseDuration() }

// Enqueue implements [TaskQueue]. A spec without a task id gets one here, which picks its shard. Like
// [RedisTaskQueue.Enqueue], it writes the generated id and the outcome ([TaskSpec.Enqueued]) into spec.
func (s *ShardedQueue) Enqueue(ctx context.Context, spec *TaskSpec) error {
	if err := s.routeUnique(spec); err != nil { // unique_admin.go
		return &EnqueueError{TaskID: specID(spec), Err: err}
	}
	prepare(spec)
	return s.shards[s.ShardOf(specID(spec))].Enqueue(ctx, spec)
}

// EnqueueBatch implements [TaskQueue]: the tasks are grouped by shard and each group is sent in one script call,
// the groups concurrently, each spec's id and outcome written back as [ShardedQueue.Enqueue] does. A shard that
// fails reports an [*EnqueueError] for each of its tasks, so the caller
// knows which to send again; the other shards' tasks are enqueued.
func (s *ShardedQueue) EnqueueBatch(ctx context.Context, specs []*TaskSpec) error {
	groups := make([][]*TaskSpec, len(s.shards))
	index := make([][]int, len(s.shards)) // position in specs of each task of a group
	var errs0 []error
	for i, spec := range specs {
		if err := s.routeUnique(spec); err != nil { // unique_admin.go
			errs0 = append(errs0, &EnqueueError{Index: i, TaskID: specID(spec), Err: err})
			continue
		}
		prepare(spec)
		k := s.ShardOf(specID(spec))
		groups[k] = append(groups[k], spec)
		index[k] = append(index[k], i)
	}
	errs := make([][]error, len(s.shards))
	each(groups, func(k int) {
		err := s.shards[k].EnqueueBatch(ctx, groups[k])
		for _, e := range unjoin(err) {
			var ee *EnqueueError
			if errors.As(e, &ee) {
				errs[k] = append(errs[k], &EnqueueError{Index: index[k][ee.Index], TaskID: ee.TaskID, Err: ee.Err})
				continue
			}
			for j, spec := range groups[k] { // the whole call failed: every task of the shard
				errs[k] = append(errs[k], &EnqueueError{Index: index[k][j], TaskID: specID(spec), Err: e})
			}
		}
	})
	all := errs0
	for _, e := range errs {
		all = append(all, e...)
	}
	return errors.Join(all...)
}

// unjoin returns the errors that errors.Join joined, or err alone.
func unjoin(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok { // only the outer join is unpacked
		return j.Unwrap()
	}
	return []error{err}
}

// each runs fn(k) for every k whose group is not empty, concurrently when there are several, and returns once
// all have returned.
func each[T any](groups [][]T, fn func(k int)) {
	var busy []int
	for k, g := range groups {
		if len(g) > 0 {
			busy = append(busy, k)
		}
	}
	inParallel(busy, fn)
}

// inParallel runs fn(k) for every k in ks, concurrently when there are several, and returns once all have
// returned.
func inParallel(ks []int, fn func(k int)) {
	if len(ks) == 1 {
		fn(ks[0])
		return
	}
	var wg sync.WaitGroup
	for _, k := range ks {
		wg.Go(func() { fn(k) })
	}
	wg.Wait()
}

// Dequeue implements [TaskQueue]. It leases from the shards in turn, starting from a different one each call,
// until it has opts.Max tasks or has tried them all; with none ready it blocks on every shard at once until one
// signals work, a delayed task falls due, [ShardedQueue.Interrupt] ends the wait, or opts.Wait passes. A shard
// that fails (its primary being failed over) does not stop the pickup from the others; its error is returned only
// when nothing was leased. Tasks that cannot be decoded or resolved are dead-lettered with the reason, in their
// shard, and not returned.
func (s *ShardedQueue) Dequeue(ctx context.Context, opts DequeueOptions) ([]*Delivery, error) {
	return dequeueDecoded(ctx, s.dequeueRaw, s.rehydrateLeased, opts)
}

// dequeueRaw is Dequeue without the decoding: the worker decodes a pickup while its next one is on its way.
func (s *ShardedQueue) dequeueRaw(ctx context.Context, opts DequeueOptions) (leased, error) {
	if opts.Max < 1 {
		opts.Max = 1
	}
	start, from := time.Now(), -1
	for {
		l, nextDue, err := s.sweep(ctx, opts.Max, from)
		if err != nil || len(l.ds) > 0 {
			return l, err
		}
		remaining := opts.Wait - time.Since(start)
		if remaining <= 0 {
			return leased{}, nil
		}
		wait := remaining
		if nextDue >= 0 && nextDue < wait {
			wait = nextDue
		}
		var interrupted bool
		from, interrupted, err = s.blockAll(ctx, opts.Consumer, wait)
		if err != nil || interrupted {
			return leased{}, err
		}
	}
}

// rehydrateLeased decodes and resolves what a pickup leased, each task by its shard; the deliveries that cannot
// run are parked in their shard and left out.
func (s *ShardedQueue) rehydrateLeased(ctx context.Context, l leased) []*Delivery {
	out := l.ds[:0]
	for i, d := range l.ds {
		if s.shards[s.leasedFrom(d, l.ids[i])].rehydrateOne(ctx, d, l.ids[i], l.raws[i]) {
			out = append(out, d)
		}
	}
	return out
}

// sweep leases up to want tasks from the shards in turn, starting at from (-1: the next in rotation), and returns
// the soonest due time of a delayed task (-1 for none). It returns an error only when it leased nothing.
func (s *ShardedQueue) sweep(ctx context.Context, want, from int) (leased, time.Duration, error) {
	n := len(s.shards)
	if from < 0 {
		from = int(s.next.Add(1) % uint32(n))
	}
	var out leased
	var firstErr error
	nextDue := time.Duration(-1)
	for i := 0; i < n && len(out.ds) < want; i++ {
		l, due, err := s.shards[(from+i)%n].dequeueOnce(ctx, want-len(out.ds))
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		markShard(l, (from+i)%n)
		out.add(l)
		if due >= 0 && (nextDue < 0 || due < nextDue) {
			nextDue = due
		}
	}
	if len(out.ds) == 0 && firstErr != nil {
		return leased{}, 0, firstErr
	}
	return out, nextDue, nil
}

// blockAll blocks on every shard's wake-up list at once for at most wait (blockEach), and on the consumer's
// interrupt list, which lives in shard 0. It returns the shard whose wake-up ended the first wait (-1 for none)
// and whether the consumer was interrupted.
func (s *ShardedQueue) blockAll(ctx context.Context, consumer string, wait time.Duration) (int, bool, error) {
	if len(s.shards) == 1 {
		q := s.shards[0]
		woke, err := q.block(ctx, wait, q.waitKeys(consumer)...)
		return 0, woke != "" && woke != q.keys.key(keyWake), err
	}
	stop := "sweep-" + consumer
	if consumer == "" {
		stop += newID()[:12] // an anonymous pickup's stop list is its own; it expires unread
	}
	interrupt := ""
	if consumer != "" {
		interrupt = s.shards[0].keys.consumerWake(consumer)
	}
	woke, first, err := blockEach(ctx, s.shards, stop, interrupt, wait)
	interrupted := interrupt != "" && slices.Contains(woke, interrupt)
	from := -1
	if woke[first] == s.shards[first].keys.key(keyWake) {
		from = first
	}
	return from, interrupted, err
}

// blockEach blocks on every queue of qs at once for at most wait, one BLPOP each (a Cluster cannot block on keys of
// several slots in one call): on its wake-up list and on stop's stop list in its slot, the first queue also on
// interrupt when it is set. The first wait to end stops the others through their stop lists (stopWaits). It
// returns once every wait has ended, with the list each one ended on ("" for none), the index of the first, and
// the first's error (the others' do not matter: the next pickup meets them again).
//
// A stop that arrives after its wait ended by itself stays in its list (which expires a minute after its last
// stop) and ends the next wait on that queue at once: one spurious pickup, never a lost wake-up.
func blockEach(ctx context.Context, qs []*RedisTaskQueue, stop, interrupt string, wait time.Duration) ([]string, int, error) {
	type result struct {
		i    int
		woke string
		err  error
	}
	results := make(chan result, len(qs))
	for i, q := range qs {
		keys := []string{q.keys.key(keyWake), q.keys.consumerWake(stop)}
		if i == 0 && interrupt != "" {
			keys = append(keys, interrupt)
		}
		go func() {
			woke, err := q.block(ctx, wait, keys...)
			results <- result{i, woke, err}
		}()
	}
	r := <-results
	stopWaits(context.WithoutCancel(ctx), qs, stop, r.i)
	woke := make([]string, len(qs))
	woke[r.i] = r.woke
	for range len(qs) - 1 {
		o := <-results
		woke[o.i] = o.woke
	}
	return woke, r.i, r.err
}

// stopWaits ends the waits on every queue of qs but skip, in one pipeline (on a Cluster, one per primary,
// concurrently).
func stopWaits(ctx context.Context, qs []*RedisTaskQueue, stop string, skip int) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	_, _ = qs[0].rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, q := range qs {
			if i != skip {
				key := q.keys.consumerWake(stop)
				p.RPush(ctx, key, "stop")
				p.PExpire(ctx, key, time.Minute)
			}
		}
		return nil
	})
}

// Interrupt implements [TaskQueue]: it ends a blocked Dequeue of consumer. The consumer's interrupt list lives in
// shard 0 and expires by itself if the consumer was not waiting.
func (s *ShardedQueue) Interrupt(ctx context.Context, consumer string) error {
	return s.shards[0].Interrupt(ctx, consumer)
}

// clearInterrupt removes a consumer's interrupt list, in shard 0, after its last pickup.
func (s *ShardedQueue) clearInterrupt(ctx context.Context, consumer string) error {
	return s.shards[0].clearInterrupt(ctx, consumer)
}

// group splits deliveries by shard.
func (s *ShardedQueue) group(ds []*Delivery) [][]*Delivery {
	groups := make([][]*Delivery, len(s.shards))
	for _, d := range ds {
		k := s.shardIndex(d)
		groups[k] = append(groups[k], d)
	}
	return groups
}

// Ack implements [TaskQueue]: one script call per shard involved, concurrently.
func (s *ShardedQueue) Ack(ctx context.Context, ds ...*Delivery) error {
	groups := s.group(ds)
	errs := make([]error, len(groups))
	each(groups, func(k int) { errs[k] = s.shards[k].Ack(ctx, groups[k]...) })
	return errors.Join(errs...)
}

// Retry implements [TaskQueue].
func (s *ShardedQueue) Retry(ctx context.Context, d *Delivery, delay time.Duration, cause error) error {
	return s.shardOf(d).Retry(ctx, d, delay, cause)
}

// DeadLetter implements [TaskQueue].
func (s *ShardedQueue) DeadLetter(ctx context.Context, d *Delivery, cause error) error {
	return s.shardOf(d).DeadLetter(ctx, d, cause)
}

// Release implements [TaskQueue].
func (s *ShardedQueue) Release(ctx context.Context, d *Delivery) error {
	return s.shardOf(d).Release(ctx, d)
}

// ExtendLeases implements [TaskQueue]: one script call per shard involved, concurrently.
func (s *ShardedQueue) ExtendLeases(ctx context.Context, ds []*Delivery) ([]*Delivery, error) {
	groups := s.group(ds)
	lost := make([][]*Delivery, len(groups))
	errs := make([]error, len(groups))
	each(groups, func(k int) { lost[k], errs[k] = s.shards[k].ExtendLeases(ctx, groups[k]) })
	var out []*Delivery
	for _, l := range lost {
		out = append(out, l...)
	}
	return out, errors.Join(errs...)
}

// Reap implements [TaskQueue]: every shard, concurrently; the counts add up.
func (s *ShardedQueue) Reap(ctx context.Context) (ReapResult, error) {
	res := make([]ReapResult, len(s.shards))
	errs := make([]error, len(s.shards))
	s.eachShard(func(k int) { res[k], errs[k] = s.shards[k].Reap(ctx) })
	var sum ReapResult
	for _, r := range res {
		sum.Requeued += r.Requeued
		sum.Dead += r.Dead
		sum.Promoted += r.Promoted
	}
	return sum, errors.Join(errs...)
}

// eachShard runs fn(k) for every shard k, concurrently when there are several, and returns once all have returned.
func (s *ShardedQueue) eachShard(fn func(k int)) {
	ks := make([]int, len(s.shards))
	for k := range ks {
		ks[k] = k
	}
	inParallel(ks, fn)
}
