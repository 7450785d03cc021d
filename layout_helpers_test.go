//go:build chaos || cluster

package taskqueue

import (
	"context"

	"github.com/redis/go-redis/v9"
)

// leaseDeadline returns the lease deadline (ms, server clock) of the task id while a batch's lease record holds it
// in flight (or the previous layout's active set does), and redis.Nil when none does.
func leaseDeadline(ctx context.Context, q *RedisTaskQueue, id string) (float64, error) {
	all, err := q.leasedTasks(ctx)
	if err != nil {
		return 0, err
	}
	for _, t := range all {
		if t.id == id {
			return t.deadline, nil
		}
	}
	return 0, redis.Nil
}

// envelopesLeft counts the values of the tasks hash that are envelopes, not tombstones.
func envelopesLeft(ctx context.Context, q *RedisTaskQueue) (int, error) {
	vals, err := q.rdb.HVals(ctx, q.keys.key(keyTasks)).Result()
	n := 0
	for _, v := range vals {
		if !isTombstone(v) {
			n++
		}
	}
	return n, err
}
