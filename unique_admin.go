package taskqueue

import (
	"context"
	"fmt"
)

// The unique locks through [Admin], for plain and sharded queues alike (the CLI's "locks" commands). A sharded
// queue keeps each key's lock on the shard of its tasks (see [ShardedQueue.EnqueueBatch]).

// Locks lists up to limit lock records of the queue (of every shard), each with whether it still holds its key.
func (a *Admin) Locks(ctx context.Context, limit int) ([]LockInfo, error) {
	var out []LockInfo
	for _, q := range a.shards {
		var cursor uint64
		for range 1 << 16 {
			if len(out) >= limit {
				return out[:limit], nil
			}
			page, next, err := q.Locks(ctx, cursor, min(limit-len(out), 500))
			if err != nil {
				return out, err
			}
			out = append(out, page...)
			if cursor = next; cursor == 0 {
				break
			}
		}
	}
	return out[:min(len(out), limit)], nil
}

// Lock returns the lock record of a unique key, or nil when there is none.
func (a *Admin) Lock(ctx context.Context, key string) (*LockInfo, error) {
	for _, q := range a.shards {
		l, err := q.Lock(ctx, key)
		if err != nil || l != nil {
			return l, err
		}
	}
	return nil, nil
}

// TaskLock returns the lock a task carries, or nil when it carries none (or does not exist).
func (a *Admin) TaskLock(ctx context.Context, taskID string) (*LockInfo, error) {
	return lookupTask(a.shards, a.lookupShards(taskID), func(q *RedisTaskQueue) (*LockInfo, error) {
		return q.TaskLock(ctx, taskID)
	}, func(l *LockInfo, err error) bool { return l == nil && err == nil })
}

// ReleaseLock deletes the lock record of a unique key whatever it says (see [RedisTaskQueue.ReleaseLock]); it
// reports whether there was one.
func (a *Admin) ReleaseLock(ctx context.Context, key string) (bool, error) {
	released := false
	for _, q := range a.shards {
		ok, err := q.ReleaseLock(ctx, key)
		if err != nil {
			return released, err
		}
		released = released || ok
	}
	return released, nil
}

// SweepLocks deletes the records of every free lock (see [RedisTaskQueue.SweepLocks]) and returns how many.
func (a *Admin) SweepLocks(ctx context.Context) (int, error) {
	total := 0
	for _, q := range a.shards {
		n, err := q.SweepLocks(ctx)
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// routeUnique gives a spec with an explicit unique key and no task id an id on its key's shard, so that every
// task of one key meets the same lock; a derived key, or an explicit id on another shard, is refused.
func (s *ShardedQueue) routeUnique(spec *TaskSpec) error {
	if spec == nil || spec.Unique == nil || len(s.shards) == 1 {
		return nil
	}
	if spec.Unique.Key == "" {
		return &UniqueError{Field: "Key", Problem: "a sharded queue needs an explicit key"}
	}
	want := s.ShardOf(spec.Unique.Key)
	if spec.TaskID != "" {
		if s.ShardOf(spec.TaskID) != want {
			return &UniqueError{Field: "Key", Problem: "the task id lands on another shard than the key: leave TaskID empty"}
		}
		return nil
	}
	for range 64 * len(s.shards) {
		if id := newID(); s.ShardOf(id) == want {
			spec.TaskID = id
			return nil
		}
	}
	return fmt.Errorf("%w: no task id found for the key's shard", ErrInvalidUnique)
}
