package taskqueue

import (
	"container/list"
	"context"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// Priority is a task's level within its queue ([TaskSpec.Priority]). There are three: [PriorityHigh],
// [PriorityDefault] and [PriorityLow]. Pickup is strict: a batch takes every ready task of a higher level before
// any of a lower one, and FIFO order holds within a level. A task keeps its level through retries, releases,
// reclaims after a lost lease, and dead-lettering and requeueing.
//
// Each level is a Redis list of its own; the default level is the queue's pending list, and the other two exist
// only once a task of theirs was enqueued, so a queue that never uses a level other than the default pays one
// EXISTS per pickup for the feature. Why three and not more, and why no aging: see docs/flow-control.md.
type Priority int8

// The priority levels, highest first.
const (
	// PriorityHigh runs before every ready task of the lower levels.
	PriorityHigh Priority = 1
	// PriorityDefault is the zero value: the level of a task that asks for none.
	PriorityDefault Priority = 0
	// PriorityLow runs only when no task of a higher level is ready.
	PriorityLow Priority = -1
)

// String returns "high", "default" or "low", or the number for a value out of range.
func (p Priority) String() string {
	switch p {
	case PriorityHigh:
		return "high"
	case PriorityDefault:
		return "default"
	case PriorityLow:
		return "low"
	}
	return strconv.Itoa(int(p))
}

// ParsePriority reads a level by its name ("high", "default", "low") or number (1, 0, -1), as the CLI takes it.
// Anything else is [ErrInvalidPriority].
func ParsePriority(s string) (Priority, error) {
	switch s {
	case "high", "1", "+1":
		return PriorityHigh, nil
	case "default", "0", "":
		return PriorityDefault, nil
	case "low", "-1":
		return PriorityLow, nil
	}
	return 0, fmt.Errorf("%w: %s is not high, default or low", ErrInvalidPriority, quote(s))
}

func (p Priority) valid() bool { return p >= PriorityLow && p <= PriorityHigh }

func (p Priority) invalid() error {
	return fmt.Errorf("%w: TaskSpec.Priority %d must be %d (PriorityHigh), 0 (PriorityDefault) or %d (PriorityLow)",
		ErrInvalidPriority, p, PriorityHigh, PriorityLow)
}

// levelArg is the delay argument of one task for the enqueue scripts: the delay in ms alone for the default
// level (enqueue.lua), or "<ms>/h" and "<ms>/l" (enqueue_levels.lua, lua/levels.lua).
func levelArg(p Priority, delayMS int64) any {
	switch p {
	case PriorityHigh:
		return strconv.FormatInt(delayMS, 10) + "/h"
	case PriorityLow:
		return strconv.FormatInt(delayMS, 10) + "/l"
	}
	return delayMS
}

// levelScript returns the enqueue script and KEYS for one call on args (id, envelope, delay for each task):
// enqueue_levels.lua when a task of the call has a level other than the default (its delay argument is a
// string, levelArg), else enqueue.lua with enqueueKeys.
func (q *RedisTaskQueue) levelScript(args []any) (*redis.Script, []string) {
	levels := false
	for i := 2; i < len(args); i += 3 {
		if s, ok := args[i].(string); ok {
			if isFlowArg(s) { // flow.go
				return enqueueFlowScript, q.keys.all
			}
			levels = true
		}
	}
	if levels {
		return enqueueLevelsScript, q.keys.enqueueLevels
	}
	return enqueueScript, q.enqueueKeys(args)
}

// levelKeys are the ready lists of the three levels, highest first.
func (q *RedisTaskQueue) levelKeys() [3]string {
	return [3]string{q.keys.key(keyPendingHigh), q.keys.key(keyPending), q.keys.key(keyPendingLow)}
}

// pendingCount is the number of ready tasks over every level.
func (q *RedisTaskQueue) pendingCount(ctx context.Context) (int64, error) {
	lens, err := q.levelLens(ctx)
	if err != nil {
		return 0, err
	}
	keyed, err := q.rdb.ZCard(ctx, q.keys.key(keyFlowReady)).Result() // keyed tasks (flow.go)
	return lens[0] + lens[1] + lens[2] + keyed, err
}

func (q *RedisTaskQueue) levelLens(ctx context.Context) ([3]int64, error) {
	var lens [3]int64
	var cmds [3]*redis.IntCmd
	keys := q.levelKeys()
	_, err := q.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range keys {
			cmds[i] = p.LLen(ctx, k)
		}
		return nil
	})
	for i, c := range cmds {
		lens[i] = c.Val()
	}
	return lens, err
}

// rangePending reads the ready ids from start to stop (inclusive, 0-based) in the order pickup takes them: the
// high level's, then the default's, then the low level's. Each list is read by its own LRANGE, so a list that
// changes between two reads may shift a page by the tasks that moved meanwhile, as any paging of a live queue.
func (q *RedisTaskQueue) rangePending(ctx context.Context, start, stop int64) ([]string, error) {
	lens, err := q.levelLens(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	offset := int64(0)
	for i, k := range q.levelKeys() {
		lo, hi := max(start-offset, 0), min(stop-offset, lens[i]-1)
		offset += lens[i]
		if lo > hi {
			continue
		}
		ids, err := q.rdb.LRange(ctx, k, lo, hi).Result()
		if err != nil {
			return nil, err
		}
		out = append(out, ids...)
	}
	return q.rangeKeyed(ctx, out, start-offset, stop-offset) // flow.go: keyed tasks after the lists
}

// memPushBack puts t at the tail of its level in a [MemoryQueue]'s ready list: after the last task of its level
// or a higher one. A queue whose tasks share one level finds the place at once.
func memPushBack(l *list.List, t *memTask) *list.Element {
	for e := l.Back(); e != nil; e = e.Prev() {
		if e.Value.(*memTask).spec.Priority >= t.spec.Priority {
			return l.InsertAfter(t, e)
		}
	}
	return l.PushFront(t)
}

// memPushFront puts t at the head of its level in a [MemoryQueue]'s ready list: before the first task of its level
// or a lower one (a released or reclaimed task).
func memPushFront(l *list.List, t *memTask) *list.Element {
	for e := l.Front(); e != nil; e = e.Next() {
		if e.Value.(*memTask).spec.Priority <= t.spec.Priority {
			return l.InsertBefore(t, e)
		}
	}
	return l.PushBack(t)
}
