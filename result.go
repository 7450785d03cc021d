package taskqueue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"
)

// A task's result is a JSON value that its handler hands back. The worker keeps it beside the delivery and the
// ack stores it in the same script that completes the task: a group member's in its group run's hash (read with
// [GroupRun.Wait]), any other task's under "{prefix}:result:<task id>" for [RedisConfig.ResultTTL] (read with
// [RedisTaskQueue.Result]; on a [ShardedQueue], in the task's shard, read with [ShardedQueue.Result]). A
// [MemoryQueue] keeps it in memory ([MemoryQueue.Result]). A result larger than the queue's limit
// ([RedisConfig.MaxResultBytes]) fails the task with a [*ResultError]; it is never truncated.

// resultSlot is where one run's handler leaves its result; the worker puts it in the run's context.
type resultSlot struct {
	limit int
	data  []byte
	err   error
	node  nodeRef // the running task, when it is a workflow node (workflow_parent.go)
}

type resultSlotKey struct{}

// SetResult records v, encoded as JSON, as the result of the task running under ctx; a later call replaces it.
// Every queue stores it when the task succeeds: [RedisTaskQueue], [ShardedQueue] (in the task's shard) and
// [MemoryQueue]. It returns [ErrResultNotStored] outside a task run by a [TaskWorker], and a [*ResultError] when
// v cannot be encoded or its encoding exceeds the queue's limit ([RedisConfig.MaxResultBytes]): the task then
// fails, even if the handler returns nil, and is dead-lettered with that error (no retry would help).
func SetResult(ctx context.Context, v any) error {
	s, _ := ctx.Value(resultSlotKey{}).(*resultSlot)
	if s == nil {
		return ErrResultNotStored
	}
	raw, err := marshalNoEscape(v)
	if err != nil {
		s.err = &ResultError{Kind: ErrNotSerializable, Detail: err.Error()}
		return s.err
	}
	if len(raw) > s.limit {
		s.err = &ResultError{Kind: ErrResultTooLarge, Detail: fmt.Sprintf("%d bytes, limit %d", len(raw), s.limit)}
		return s.err
	}
	s.data, s.err = raw, nil
	return nil
}

// RegisterResult is [Register] for a function that returns a result: when fn succeeds, its result is stored
// with [SetResult]. Run outside a [TaskWorker] (its executable's Run called directly), fn's result is discarded.
func RegisterResult[T, R any](r *ReferenceResolver, module, name string, fn func(ctx context.Context, args T) (R, error)) error {
	if fn == nil {
		return fmt.Errorf("%w: nil function for %s.%s", ErrInvalidConfig, module, name)
	}
	return Register(r, module, name, func(ctx context.Context, args T) error {
		v, err := fn(ctx, args)
		if err != nil {
			return err
		}
		if err := SetResult(ctx, v); err != nil && !errors.Is(err, ErrResultNotStored) {
			return err
		}
		return nil
	})
}

// MustRegisterResult is [RegisterResult] for static set-up in a worker's main: it panics on error.
func MustRegisterResult[T, R any](r *ReferenceResolver, module, name string, fn func(ctx context.Context, args T) (R, error)) {
	if err := RegisterResult(r, module, name, fn); err != nil {
		panic(err)
	}
}

// withResultSlot gives a run a result slot, with the queue's limit.
func withResultSlot(ctx context.Context, q TaskQueue) (context.Context, *resultSlot) {
	s := &resultSlot{limit: q.maxResultBytes()}
	return context.WithValue(ctx, resultSlotKey{}, s), s
}

func (q *RedisTaskQueue) maxResultBytes() int { return q.cfg.MaxResultBytes }
func (s *ShardedQueue) maxResultBytes() int   { return s.shards[0].maxResultBytes() }
func (q *MemoryQueue) maxResultBytes() int    { return q.maxResult }

// Result returns the stored result of a task that is not a group member (a member's result is part of its
// [GroupResult]). It returns [ErrNoResult] when the task stored none, has not completed, or its result expired
// after [RedisConfig.ResultTTL].
func (q *RedisTaskQueue) Result(ctx context.Context, taskID string) (json.RawMessage, error) {
	if err := validateTaskID(taskID); err != nil {
		return nil, err
	}
	raw, err := q.rdb.Get(ctx, q.keys.result(taskID)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("%w: task %s", ErrNoResult, quote(taskID))
	}
	if err != nil {
		return nil, fmt.Errorf("taskqueue: result: %w", classify(err))
	}
	return raw, nil
}

// Result returns the stored result of a task, read from the task's shard ([RedisTaskQueue.Result]).
func (s *ShardedQueue) Result(ctx context.Context, taskID string) (json.RawMessage, error) {
	if err := validateTaskID(taskID); err != nil {
		return nil, err
	}
	return lookupTask(s.shards, s.lookupShards(taskID), func(q *RedisTaskQueue) (json.RawMessage, error) {
		return q.Result(ctx, taskID)
	}, noResult)
}

// Result returns the stored result of a task. It returns [ErrNoResult] when the task stored none, has not
// completed, or its result expired or made room for newer ones (see [MemoryQueue]).
func (q *MemoryQueue) Result(_ context.Context, taskID string) (json.RawMessage, error) {
	if err := validateTaskID(taskID); err != nil {
		return nil, err
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	r, ok := q.results[taskID]
	if !ok || !r.expires.After(time.Now()) {
		return nil, fmt.Errorf("%w: task %s", ErrNoResult, quote(taskID))
	}
	return slices.Clone(r.data), nil
}
