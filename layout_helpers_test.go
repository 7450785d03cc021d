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
