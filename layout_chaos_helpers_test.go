//go:build chaos

package taskqueue

import "context"

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
