package taskqueue

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Admin administers and inspects a queue in Redis, for operators and their tools: counts ([Admin.Stats]), tasks
// by state ([Admin.List]), one task ([Admin.Inspect]), dead letters (requeue, delete), purges and pausing pickup.
// The queues' own methods are what producers and workers call; everything else is here, and so will be the
// administration of what later features store (schedules, cancellation, limits).
//
// An Admin works for a [*RedisTaskQueue] and for a [*ShardedQueue]. A plain queue is one shard. For a sharded
// queue it fans out over the shards: counts add up, lists merge (see [Admin.List] for the order), a task is
// looked up in the shard that holds it ([ShardedQueue.ShardOf]), and pause, purge and the bulk calls act on
// every shard in turn.
//
// It is safe for concurrent use and holds nothing but the queue; make one whenever it is needed.
type Admin struct {
	prefix  string
	shards  []*RedisTaskQueue
	shardOf func(taskID string) int // nil for a single shard
}

// AdminTarget is a queue that an [Admin] administers: a [*RedisTaskQueue] or a [*ShardedQueue].
type AdminTarget interface {
	// adminShards returns the queue's key prefix, its shards, and for several the shard of a task id.
	adminShards() (prefix string, shards []*RedisTaskQueue, shardOf func(taskID string) int)
}

// Both queues in Redis can be administered, checked by the compiler.
var (
	_ AdminTarget = (*RedisTaskQueue)(nil)
	_ AdminTarget = (*ShardedQueue)(nil)
)

func (q *RedisTaskQueue) adminShards() (string, []*RedisTaskQueue, func(string) int) {
	if q == nil {
		return "", nil, nil
	}
	return q.prefix, []*RedisTaskQueue{q}, nil
}

func (s *ShardedQueue) adminShards() (string, []*RedisTaskQueue, func(string) int) {
	if s == nil {
		return "", nil, nil
	}
	return s.prefix, s.Shards(), s.ShardOf
}

// NewAdmin returns the [Admin] of q, a [*RedisTaskQueue] or a [*ShardedQueue]; a nil queue is [ErrInvalidConfig].
func NewAdmin(q AdminTarget) (*Admin, error) {
	if q == nil {
		return nil, fmt.Errorf("%w: NewAdmin needs a queue", ErrInvalidConfig)
	}
	prefix, shards, shardOf := q.adminShards()
	if len(shards) == 0 {
		return nil, fmt.Errorf("%w: NewAdmin needs a queue", ErrInvalidConfig)
	}
	if len(shards) == 1 {
		shardOf = nil
	}
	return &Admin{prefix: prefix, shards: shards, shardOf: shardOf}, nil
}

// KeyPrefix returns the key prefix of the queue administered (a sharded queue's, without the shard suffix).
func (a *Admin) KeyPrefix() string { return a.prefix }

// shard returns the shard that holds taskID.
func (a *Admin) shard(taskID string) *RedisTaskQueue {
	if a.shardOf == nil {
		return a.shards[0]
	}
	return a.shards[a.shardOf(taskID)]
}

// fanOut runs fn on every shard, concurrently when there are several, and joins their errors.
func (a *Admin) fanOut(fn func(k int, q *RedisTaskQueue) error) error {
	if len(a.shards) == 1 {
		return fn(0, a.shards[0])
	}
	errs := make([]error, len(a.shards))
	var wg sync.WaitGroup
	for k, q := range a.shards {
		wg.Go(func() { errs[k] = fn(k, q) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Stats returns the queue's [Stats]: its counts per place, whether pickup is paused, the age of the next task,
// the deliveries counter and the server's clock. It reads with read-only commands, in two round trips per
// shard. For a sharded queue the counts and deliveries add up, it is paused when any shard is (PausedAt is the
// earliest pause), the oldest pending age is the largest of the shards', and the clock is shard 0's; a shard
// that fails leaves its numbers out and its error joined in the one returned.
func (a *Admin) Stats(ctx context.Context) (Stats, error) {
	all := make([]Stats, len(a.shards))
	err := a.fanOut(func(k int, q *RedisTaskQueue) (err error) {
		all[k], err = q.stats(ctx)
		return err
	})
	if len(all) == 1 {
		return all[0], err
	}
	sum := Stats{ServerTime: all[0].ServerTime}
	for _, s := range all {
		sum.Pending += s.Pending
		sum.Active += s.Active
		sum.Scheduled += s.Scheduled
		sum.Dead += s.Dead
		sum.Cancelled += s.Cancelled
		sum.Delivered += s.Delivered
		sum.OldestPendingAge = max(sum.OldestPendingAge, s.OldestPendingAge)
		if s.Paused {
			if !sum.Paused || (!s.PausedAt.IsZero() && (sum.PausedAt.IsZero() || s.PausedAt.Before(sum.PausedAt))) {
				sum.PausedAt = s.PausedAt
			}
			sum.Paused = true
		}
	}
	return sum, err
}

// List returns the tasks in one state, oldest first, skipping offset of them and returning at most limit (1 to
// [MaxListLimit]). It takes pending (in pickup order), scheduled (by due time, the tasks waiting to be retried
// among them, each listed as [StateRetry]), active (by lease deadline), dead (by the time they died) and
// cancelled (by the time of the cancel, each with the envelope it had; [Stats.Cancelled] counts them); [StateRetry]
// alone is refused with a [*StateError]: list scheduled. It only reads (LRANGE or ZRANGE, then HMGET), in round
// trips that are not atomic: a task can move between them, and pages of a queue that changes can overlap or skip
// tasks.
//
// For a sharded queue, pending tasks are listed shard after shard (shard 0's first, each shard's in its pickup
// order), and the tasks of the other states by time across all shards (ties by shard number). A page of these
// reads the first offset+limit ids of every shard, so deep pages of a large sharded queue cost more.
func (a *Admin) List(ctx context.Context, state State, offset, limit int) ([]TaskInfo, error) {
	if offset < 0 || limit < 1 || limit > MaxListLimit {
		return nil, fmt.Errorf("%w: offset must be 0 or more and limit between 1 and %d", ErrInvalidConfig, MaxListLimit)
	}
	switch state {
	case StatePending, StateScheduled, StateActive, StateDead, StateCancelled:
	case StateRetry:
		return nil, &StateError{Op: "list", State: state, Reason: "tasks waiting to be retried are listed with the scheduled ones: list scheduled"}
	default:
		return nil, &StateError{Op: "list", State: State(truncate(string(state), 64)), Reason: "want pending, scheduled, active, dead or cancelled"}
	}
	start, stop := int64(offset), int64(offset+limit-1)
	switch {
	case len(a.shards) == 1:
		return a.shards[0].list(ctx, state, start, stop)
	case state == StatePending:
		return a.listPending(ctx, start, stop)
	}
	return a.listByTime(ctx, state, start, stop)
}

// listPending lists pending tasks from start to stop of the shards' lists, one after the other.
func (a *Admin) listPending(ctx context.Context, start, stop int64) ([]TaskInfo, error) {
	var out []TaskInfo
	for _, q := range a.shards {
		n, err := q.count(ctx, StatePending)
		if err != nil {
			return nil, fmt.Errorf("taskqueue: list: %w", classify(err))
		}
		if start >= int64(n) { // this page starts past the shard's tasks
			start, stop = start-int64(n), stop-int64(n)
			continue
		}
		page, err := q.list(ctx, StatePending, start, stop)
		if err != nil {
			return nil, err
		}
		out = append(out, page...)
		stop -= start + int64(len(page))
		start = 0
		if stop < 0 {
			break
		}
	}
	return out, nil
}

// listByTime lists the tasks of a sorted set from start to stop of the merged order of the shards: by score, ties
// by shard number, then by each shard's own order.
func (a *Admin) listByTime(ctx context.Context, state State, start, stop int64) ([]TaskInfo, error) {
	type entry struct {
		shard int
		id    string
		score float64
	}
	heads := make([][]entry, len(a.shards))
	err := a.fanOut(func(k int, q *RedisTaskQueue) error {
		ids, scores, err := q.rangeIDs(ctx, state, 0, stop)
		for i, id := range ids {
			heads[k] = append(heads[k], entry{k, id, scores[i]})
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	merged := slices.Concat(heads...)
	slices.SortStableFunc(merged, func(x, y entry) int { return cmp.Compare(x.score, y.score) })
	if start >= int64(len(merged)) {
		return nil, nil
	}
	merged = merged[start:min(stop+1, int64(len(merged)))]
	// Each shard describes its own tasks in one round trip; they go back to their place in the merged order.
	ids := make([][]string, len(a.shards))
	scores := make([][]float64, len(a.shards))
	for _, e := range merged {
		ids[e.shard] = append(ids[e.shard], e.id)
		scores[e.shard] = append(scores[e.shard], e.score)
	}
	infos := make([][]TaskInfo, len(a.shards))
	err = a.fanOut(func(k int, q *RedisTaskQueue) (err error) {
		infos[k], err = q.describe(ctx, state, ids[k], scores[k])
		return err
	})
	if err != nil {
		return nil, err
	}
	out := make([]TaskInfo, len(merged))
	next := make([]int, len(a.shards))
	for i, e := range merged {
		out[i] = infos[e.shard][next[e.shard]]
		next[e.shard]++
	}
	return out, nil
}

// Inspect returns one task in any state: where it is, its time (due, lease end, death), its stored envelope
// exactly as stored, and a dead letter's reason; or [ErrNotFound] when no task has that id (it finished, or never
// was). It reads in one round trip; a task with an envelope in none of the sorted sets is pending.
func (a *Admin) Inspect(ctx context.Context, taskID string) (TaskInfo, error) {
	return a.shard(taskID).inspect(ctx, taskID)
}

// byShard splits task ids by the shard that holds them.
func (a *Admin) byShard(taskIDs []string) [][]string {
	groups := make([][]string, len(a.shards))
	for _, id := range taskIDs {
		k := 0
		if a.shardOf != nil {
			k = a.shardOf(id)
		}
		groups[k] = append(groups[k], id)
	}
	return groups
}

// perShard runs act on each shard's share of taskIDs, one script call per shard involved, and adds up the counts.
func (a *Admin) perShard(ctx context.Context, taskIDs []string,
	act func(*RedisTaskQueue, context.Context, ...string) (int, error)) (int, error) {
	if len(a.shards) == 1 {
		return act(a.shards[0], ctx, taskIDs...)
	}
	total := 0
	var errs []error
	for k, ids := range a.byShard(taskIDs) {
		n, err := act(a.shards[k], ctx, ids...)
		total += n
		errs = append(errs, err)
	}
	return total, errors.Join(errs...)
}

// RequeueDead moves dead letters back to the tail of pending, with a fresh retry budget when their envelope can
// be read (one that cannot is requeued as it is, for a fixed or newer worker to read). Every envelope accepted at
// enqueue can be read, whatever delivery wrote into it since (see [EnvelopeHeadroom]), so its task runs again; a
// larger one (never accepted: written by something else) is parked again at pickup with [ErrEnvelopeTooLarge]. It
// returns how many moved; ids that are not dead letters are skipped. It never signs: a signed envelope keeps its
// signature, which still verifies, and an unsigned or forged one is parked again by a worker with
// [RedisConfig.Signing].
func (a *Admin) RequeueDead(ctx context.Context, taskIDs ...string) (int, error) {
	return a.perShard(ctx, taskIDs, (*RedisTaskQueue).requeueDead)
}

// DeleteDead removes dead letters for good and returns how many it removed; ids that are not dead letters are
// skipped.
func (a *Admin) DeleteDead(ctx context.Context, taskIDs ...string) (int, error) {
	return a.perShard(ctx, taskIDs, (*RedisTaskQueue).deleteDead)
}

// RequeueAllDead requeues, like [Admin.RequeueDead], every dead letter for which filter returns true (every one
// when filter is nil), oldest first, a page at a time ([WithBatchSize]), and returns how many it requeued. It
// looks at most at as many dead letters as there were when it started, so a task that dies again meanwhile is not
// requeued twice. [WithProgress] reports each page. A sharded queue's shards are handled one after the other.
func (a *Admin) RequeueAllDead(ctx context.Context, filter func(TaskInfo) bool, opts ...BulkOption) (int, error) {
	return a.eachDead(ctx, filter, opts, (*RedisTaskQueue).requeueDead)
}

// DeleteAllDead deletes, like [Admin.DeleteDead], every dead letter for which filter returns true (every one when
// filter is nil), a page at a time, and returns how many it deleted. [WithProgress] reports each page.
func (a *Admin) DeleteAllDead(ctx context.Context, filter func(TaskInfo) bool, opts ...BulkOption) (int, error) {
	return a.eachDead(ctx, filter, opts, (*RedisTaskQueue).deleteDead)
}

func (a *Admin) eachDead(ctx context.Context, filter func(TaskInfo) bool, opts []BulkOption,
	act func(*RedisTaskQueue, context.Context, ...string) (int, error)) (int, error) {
	c, err := newBulkConfig(opts)
	if err != nil {
		return 0, err
	}
	totals, total, err := a.counts(ctx, StateDead)
	if err != nil {
		return 0, fmt.Errorf("taskqueue: dead letters: %w", classify(err))
	}
	done, scanned := 0, 0
	for k, q := range a.shards {
		d, s, err := q.eachDead(ctx, filter, c.batch, totals[k], act, func(d, s int) {
			c.progress(Progress{Done: done + d, Scanned: scanned + s, Total: total})
		})
		done, scanned = done+d, scanned+s
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

// counts returns how many tasks a state holds in each shard, and in all.
func (a *Admin) counts(ctx context.Context, state State) ([]int, int, error) {
	each := make([]int, len(a.shards))
	err := a.fanOut(func(k int, q *RedisTaskQueue) (err error) {
		each[k], err = q.count(ctx, state)
		return err
	})
	total := 0
	for _, n := range each {
		total += n
	}
	return each, total, err
}

// Purge removes every pending, scheduled (retry included) or dead task, with its envelope, its reason and its
// delivery counts, and returns how many it removed. Active tasks are refused with a [*StateError] (wrapping
// [ErrInvalidState]): workers hold their leases; pause the queue, let them finish, and purge what is left. Purge
// works in batches (a script call each, [WithBatchSize]) so that Redis serves others meanwhile, and removes at
// most as many tasks as the state held when it started: tasks added while it runs may stay. A purged id can be
// enqueued again. A sharded queue's shards are purged one after the other.
func (a *Admin) Purge(ctx context.Context, state State, opts ...BulkOption) (int, error) {
	switch state {
	case StatePending, StateScheduled, StateDead:
	case StateRetry:
		return 0, &StateError{Op: "purge", State: state, Reason: "tasks waiting to be retried are purged with the scheduled ones: purge scheduled"}
	case StateActive:
		return 0, &StateError{Op: "purge", State: state, Reason: "active tasks are leased by workers; pause the queue and purge pending instead"}
	default:
		return 0, &StateError{Op: "purge", State: State(truncate(string(state), 64)), Reason: "want pending, scheduled or dead"}
	}
	c, err := newBulkConfig(opts)
	if err != nil {
		return 0, err
	}
	totals, total, err := a.counts(ctx, state)
	if err != nil {
		return 0, fmt.Errorf("taskqueue: purge: %w", classify(err))
	}
	done := 0
	for k, q := range a.shards {
		n, err := q.purge(ctx, state, c.batch, totals[k], func(d int) {
			c.progress(Progress{Done: done + d, Scanned: done + d, Total: total})
		})
		done += n
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

// Pause stops the pickup of tasks: while the queue is paused, Dequeue leases nothing and idle workers stay
// blocked, while enqueue, ack, retry, dead-lettering, lease renewal and reaping go on. Deliveries already running
// carry on and settle as usual. Pausing a paused queue keeps the time of the first pause. The pause is stored in
// Redis ({prefix}:paused, in every shard), so it holds for every worker and survives their restarts until
// [Admin.Resume].
func (a *Admin) Pause(ctx context.Context) error {
	return a.everyShard(func(q *RedisTaskQueue) error { return q.pause(ctx, "pause") })
}

// Resume restarts the pickup of a paused queue and wakes a blocked worker, so that pickup resumes within
// milliseconds. Resuming a running queue does no harm.
func (a *Admin) Resume(ctx context.Context) error {
	return a.everyShard(func(q *RedisTaskQueue) error { return q.pause(ctx, "resume") })
}

// everyShard runs fn on each shard in turn, all of them whatever fails, and joins the errors.
func (a *Admin) everyShard(fn func(q *RedisTaskQueue) error) error {
	errs := make([]error, len(a.shards))
	for k, q := range a.shards {
		errs[k] = fn(q)
	}
	return errors.Join(errs...)
}

// Paused reports whether pickup is paused: on a sharded queue, whether any shard is.
func (a *Admin) Paused(ctx context.Context) (bool, error) {
	paused := make([]bool, len(a.shards))
	err := a.fanOut(func(k int, q *RedisTaskQueue) (err error) {
		paused[k], err = q.paused(ctx)
		return err
	})
	return slices.Contains(paused, true), err
}

// OldestPendingAge returns how long the task at the head of pending, the next to be picked up, has existed: the
// Redis server's clock minus the created_at of its envelope (the producer's clock; a negative difference counts
// as 0). It is 0 when nothing is pending. A task that waited in scheduled (a delay or a retry) counts from its
// creation, not from when it became ready. A growing age means workers do not keep up, or pickup is paused. An
// envelope at the head without a readable created_at is an error wrapping [ErrMalformedEnvelope]. For a sharded
// queue it is the largest of the shards' ages.
func (a *Admin) OldestPendingAge(ctx context.Context) (time.Duration, error) {
	ages := make([]time.Duration, len(a.shards))
	err := a.fanOut(func(k int, q *RedisTaskQueue) (err error) {
		ages[k], err = q.oldestPendingAge(ctx)
		return err
	})
	return slices.Max(ages), err
}

// ServerTime returns the Redis server's clock (shard 0's), which times leases and delayed tasks.
func (a *Admin) ServerTime(ctx context.Context) (time.Time, error) {
	return a.shards[0].serverTime(ctx)
}

// Check checks the Redis server that holds the queue (every primary on a Cluster), as [RedisTaskQueue] workers
// do when they start: see [CheckReport]. It returns a [*RedisVersionError] (wrapping [ErrRedisTooOld]) for a
// server older than [MinRedisVersion], and an error wrapping [ErrPermission] when the user may not run INFO; an
// eviction policy that can drop tasks is reported in [CheckReport.Warnings] and logged, not refused.
func (a *Admin) Check(ctx context.Context) (CheckReport, error) {
	return a.shards[0].check(ctx)
}
