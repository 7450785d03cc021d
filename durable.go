package taskqueue

import (
	"context"
	"errors"
	"fmt"
	"slices"
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

// enqueueChunk is the most tasks that one call of the enqueue script carries. [RedisTaskQueue.EnqueueBatch] sends
// a larger batch as several calls in one pipeline: at a few microseconds of Redis time per task, a call of 100
// tasks holds Redis for well under a millisecond, and the other clients of the server are served in between.
const enqueueChunk = 100

// runEnqueue runs the enqueue script on args (id, envelope, delay for each task), one call per enqueueChunk
// tasks, all in one pipeline, followed by WAIT when the config asks for a durable enqueue. It returns the
// scripts' replies joined, one entry per task.
//
// While a Cluster moves the queue's slot (or reconfigures), Redis refuses the call with TRYAGAIN, ASK, MOVED or
// CLUSTERDOWN for as long as the move lasts (docs/scaling.md), more than go-redis's own few redirects cover. The
// call is then sent again, with a backoff of 10 ms doubling to 200 ms, until ctx ends (or, when ctx has no
// deadline, for at most enqueueRetryLimit): enqueue is idempotent by task id, so a call that did run before its
// reply was refused adds nothing the second time.
func (q *RedisTaskQueue) runEnqueue(ctx context.Context, args []any) (enqueueReply, error) {
	r, err := q.enqueueOnce(ctx, args)
	if err == nil || !isSlotMoving(err) {
		return r, err
	}
	limit := time.Now().Add(enqueueRetryLimit)
	if d, ok := ctx.Deadline(); ok {
		limit = d
	}
	for backoff := 10 * time.Millisecond; isSlotMoving(err) && time.Until(limit) > backoff; backoff = min(2*backoff, 200*time.Millisecond) {
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return r, err
		case <-t.C:
		}
		r, err = q.enqueueOnce(ctx, args)
	}
	return r, err
}

// enqueueRetryLimit bounds the retries of an enqueue refused by a moving slot when its context has no deadline.
const enqueueRetryLimit = 30 * time.Second

// enqueueOnce is one attempt of runEnqueue.
func (q *RedisTaskQueue) enqueueOnce(ctx context.Context, args []any) (enqueueReply, error) {
	if q.cfg.DurableReplicas <= 0 {
		if len(args) <= 3*enqueueChunk {
			res, err := enqueueScript.Run(ctx, q.rdb, q.enqueueKeys(args), chunkArgs(args)...).Slice()
			return enqueueReply{res: res}, err
		}
		return q.enqueuePipelined(ctx, q.rdb, args, false)
	}
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

// enqueueKeys returns the KEYS of one enqueue call on args (id, envelope, delay for each task): the scheduled set
// only when a task has a delay (enqueue.lua touches it only then; see keySet in keys.go).
func (q *RedisTaskQueue) enqueueKeys(args []any) []string {
	for i := 2; i < len(args); i += 3 {
		if ms, _ := args[i].(int64); ms > 0 {
			return q.keys.enqueueDelayed
		}
	}
	return q.keys.enqueue
}

// chunkArgs prepends the task count to the arguments of one script call.
func chunkArgs(part []any) []any {
	return append([]any{len(part) / 3}, part...)
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

// enqueuePipelined sends one EVALSHA per chunk of args and, when durable, WAIT after them, in one pipeline (one
// connection, which WAIT needs); and all of it again with EVAL when a chunk found the script missing from the
// cache (a primary promoted after a failover, or a SCRIPT FLUSH). Sending again is safe, as enqueue is
// idempotent: the chunks that did run answer "already there" the second time.
func (q *RedisTaskQueue) enqueuePipelined(ctx context.Context, node redis.Cmdable, args []any, durable bool) (enqueueReply, error) {
	for _, sha := range []bool{true, false} {
		scripts := make([]*redis.Cmd, 0, (len(args)/3+enqueueChunk-1)/enqueueChunk)
		var wait *redis.Cmd
		// The pipeline's error is its first failed command's; each command's own is read below.
		_, _ = node.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i := 0; i < len(args); i += 3 * enqueueChunk {
				chunk := args[i:min(i+3*enqueueChunk, len(args))]
				keys, part := q.enqueueKeys(chunk), chunkArgs(chunk)
				if sha {
					scripts = append(scripts, enqueueScript.EvalSha(ctx, p, keys, part...))
				} else {
					scripts = append(scripts, enqueueScript.Eval(ctx, p, keys, part...))
				}
			}
			if durable {
				wait = p.Do(ctx, "wait", q.cfg.DurableReplicas, q.cfg.DurableTimeout.Milliseconds())
			}
			return nil
		})
		if sha && slices.ContainsFunc(scripts, func(c *redis.Cmd) bool { return isNoScript(c.Err()) }) {
			continue
		}
		r := enqueueReply{res: make([]any, 0, len(args)/3)}
		for _, c := range scripts {
			res, err := c.Slice()
			if err != nil {
				return enqueueReply{}, err
			}
			r.res = append(r.res, res...)
		}
		if durable {
			if got, werr := wait.Int64(); werr != nil || int(got) < q.cfg.DurableReplicas {
				r.notReplicated = &ReplicationError{Want: q.cfg.DurableReplicas, Got: int(got), Timeout: q.cfg.DurableTimeout, Err: werr}
			}
		}
		return r, nil
	}
	return enqueueReply{}, errors.New("taskqueue: enqueue: unreachable: EVAL needs no script cache")
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
