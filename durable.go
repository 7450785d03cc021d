package taskqueue

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// Durable enqueue ([RedisConfig.DurableReplicas]): Redis replicates asynchronously, so a primary that dies right
// after acknowledging an enqueue can take the task with it when a replica is promoted. WAIT closes that window: it
// returns once n replicas have every write made so far on the connection it runs on. The enqueue script and WAIT
// are therefore sent in one pipeline on one connection, to the primary that serves the queue's slot.

// enqueueReply is the enqueue script's reply and, for a durable enqueue that fewer replicas than asked confirmed
// in time, a [*ReplicationError].
type enqueueReply struct {
	res           []any
	notReplicated error
}

// runEnqueue runs the enqueue script, durably when the config asks for it.
func (q *RedisTaskQueue) runEnqueue(ctx context.Context, args []any) (enqueueReply, error) {
	if q.cfg.DurableReplicas <= 0 {
		res, err := enqueueScript.Run(ctx, q.rdb, q.keys.all, args...).Slice()
		return enqueueReply{res: res}, err
	}
	var err error
	for attempt := range 3 {
		var node redis.Cmdable
		if node, err = q.primaryOfQueue(ctx, attempt > 0); err != nil {
			continue
		}
		var r enqueueReply
		r, err = q.enqueueAndWait(ctx, node, args)
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

// enqueueAndWait sends EVALSHA and WAIT in one pipeline (one connection), and again with EVAL on NOSCRIPT (the
// script did not run then; a primary promoted after a failover does not have it cached).
func (q *RedisTaskQueue) enqueueAndWait(ctx context.Context, node redis.Cmdable, args []any) (enqueueReply, error) {
	for _, sha := range []bool{true, false} {
		var script *redis.Cmd
		var wait *redis.Cmd
		// The pipeline's error is its first command's; each command's own is read below.
		_, _ = node.Pipelined(ctx, func(p redis.Pipeliner) error {
			if sha {
				script = enqueueScript.EvalSha(ctx, p, q.keys.all, args...)
			} else {
				script = enqueueScript.Eval(ctx, p, q.keys.all, args...)
			}
			wait = p.Do(ctx, "wait", q.cfg.DurableReplicas, q.cfg.DurableTimeout.Milliseconds())
			return nil
		})
		if err := script.Err(); sha && err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT") {
			continue
		}
		res, err := script.Slice()
		if err != nil {
			return enqueueReply{}, err
		}
		r := enqueueReply{res: res}
		if got, werr := wait.Int64(); werr != nil || int(got) < q.cfg.DurableReplicas {
			r.notReplicated = &ReplicationError{Want: q.cfg.DurableReplicas, Got: int(got), Timeout: q.cfg.DurableTimeout, Err: werr}
		}
		return r, nil
	}
	return enqueueReply{}, errors.New("taskqueue: enqueue: unreachable: EVAL needs no script cache")
}

// isMoved reports the errors after which a Cluster's slot map is stale: the slot moved (a failover or a
// resharding), or its node is gone.
func isMoved(err error) bool {
	if _, ok := redis.IsMovedError(err); ok {
		return true
	}
	if _, ok := redis.IsAskError(err); ok {
		return true
	}
	var ne net.Error
	return redis.IsClusterDownError(err) || redis.IsTryAgainError(err) || redis.IsReadOnlyError(err) ||
		errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNREFUSED)
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
