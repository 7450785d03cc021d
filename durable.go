package taskqueue

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Durable enqueue ([RedisConfig.DurableReplicas]): Redis replicates asynchronously, so a primary that dies right
// after acknowledging an enqueue can take the task with it when a replica is promoted. WAIT closes that window: it
// returns once n replicas have every write made so far on the connection it runs on. The enqueue script and WAIT
// are therefore sent in one pipeline on one connection, to the primary that serves the queue's slot.

// enqueueDurable is one attempt of a durable enqueue: the enqueue calls and WAIT in one pipeline on the primary
// of the queue's slot, found again after a moved slot (at most three times).
func (q *RedisTaskQueue) enqueueDurable(ctx context.Context, args []any) (enqueueReply, error) {
	var err error
	for attempt := range 3 {
		var node redis.Cmdable
		if node, err = q.primaryOfQueue(ctx, attempt > 0); err != nil {
			continue
		}
		var r enqueueReply
		r, err = q.enqueuePipelined(ctx, node, args, true)
		if err == nil || !isMoved(err) {
			return r, err
		}
	}
	return enqueueReply{}, err
}

// primaryOfQueue returns the client that talks to the primary of the queue's slot: on a Cluster the node client
// for it (after reloading the slot map if reload), else the client itself (a single node, or Sentinel's failover
// client, which always talks to the current primary).
func (q *RedisTaskQueue) primaryOfQueue(ctx context.Context, reload bool) (redis.Cmdable, error) {
	cc, ok := q.rdb.(*redis.ClusterClient)
	if !ok {
		return q.rdb, nil
	}
	if reload {
		cc.ReloadState(ctx)
	}
	return cc.MasterForKey(ctx, q.keys.key(keyTasks))
}

// validateDurable checks the durable-enqueue settings against the client's read timeout (0 when unknown), which
// must leave WAIT the time to answer.
func validateDurable(c *RedisConfig, readTimeout time.Duration) error {
	switch {
	case c.DurableReplicas < 0:
		return fmt.Errorf("%w: DurableReplicas must be 0 or more", ErrInvalidConfig)
	case c.DurableTimeout < 0:
		return fmt.Errorf("%w: DurableTimeout must not be negative", ErrInvalidConfig)
	case c.DurableReplicas > 0 && readTimeout > 0 && c.DurableTimeout+100*time.Millisecond > readTimeout:
		return fmt.Errorf("%w: DurableTimeout (%s) must be at least 100ms below the client's read timeout (%s)",
			ErrInvalidConfig, c.DurableTimeout, readTimeout)
	}
	return nil
}
