package taskqueue

import (
	"context"
	"fmt"
)

// The writes of one queue (one shard) behind [Admin]: pause, purge, requeue and delete dead letters.

// pause and resume run pause.lua: see [Admin.Pause] and [Admin.Resume].
func (q *RedisTaskQueue) pause(ctx context.Context, op string) error {
	if err := pauseScript.Run(ctx, q.rdb, q.keys.all, op).Err(); err != nil {
		return fmt.Errorf("taskqueue: %s: %w", op, classify(err))
	}
	return nil
}

// Progress reports how far a bulk call has come; the progress callback gets one after each batch.
type Progress struct {
	Done    int // tasks acted on so far: purged, requeued or deleted
	Scanned int // tasks looked at so far; more than Done when a filter skips some
	Total   int // tasks in the state when the call started: the most it looks at
}

// BulkOption tunes a bulk call: [Admin.Purge], [Admin.RequeueAllDead] and [Admin.DeleteAllDead].
type BulkOption func(*bulkConfig)

type bulkConfig struct {
	batch    int
	progress func(Progress)
}

// WithProgress has fn called after each batch of a bulk call, on the caller's goroutine.
func WithProgress(fn func(Progress)) BulkOption {
	return func(c *bulkConfig) { c.progress = fn }
}

// WithBatchSize sets how many tasks one batch of a bulk call handles: one script call of Purge, one page of dead
// letters. Default 256, at most [MaxListLimit]. Each batch runs atomically, so Redis serves other clients between
// batches.
func WithBatchSize(n int) BulkOption {
	return func(c *bulkConfig) { c.batch = n }
}

func newBulkConfig(opts []BulkOption) (bulkConfig, error) {
	c := bulkConfig{batch: 256, progress: func(Progress) {}}
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	if c.batch < 1 || c.batch > MaxListLimit {
		return c, fmt.Errorf("%w: batch size must be between 1 and %d", ErrInvalidConfig, MaxListLimit)
	}
	if c.progress == nil {
		c.progress = func(Progress) {}
	}
	return c, nil
}

// purge removes up to total tasks of a purgeable state in batches, reporting each batch's running count.
func (q *RedisTaskQueue) purge(ctx context.Context, state State, batch, total int, report func(done int)) (int, error) {
	done := 0
	for done < total {
		res, err := purgeScript.Run(ctx, q.rdb, q.keys.all, string(state), min(batch, total-done)).Int64Slice()
		if err != nil {
			return done, fmt.Errorf("taskqueue: purge: %w", classify(err))
		}
		if len(res) != 2 {
			return done, fmt.Errorf("taskqueue: purge: unexpected reply of %d items", len(res))
		}
		done += int(res[0])
		report(done)
		if res[0] == 0 || res[1] == 0 {
			break
		}
	}
	return done, nil
}

// requeueDead is [Admin.RequeueDead] for ids of this queue.
func (q *RedisTaskQueue) requeueDead(ctx context.Context, taskIDs ...string) (int, error) {
	if len(taskIDs) == 0 {
		return 0, nil
	}
	envs, err := q.rdb.HMGet(ctx, q.keys.key(keyTasks), taskIDs...).Result()
	if err != nil {
		return 0, fmt.Errorf("taskqueue: requeue: %w", classify(err))
	}
	args := make([]any, 1, 1+2*len(taskIDs))
	args[0] = "requeue"
	for i, id := range taskIDs {
		fresh := ""
		if raw, ok := envs[i].(string); ok && !isTombstone(raw) {
			if env, err := decodeStored(id, []byte(raw), q.cfg.Limits); err == nil {
				env.Attempt, env.Status, env.LastError, env.FailedAt = 0, StatePending, "", 0
				if b, err := env.marshal(); err == nil && len(b) <= q.cfg.Limits.readLimit() {
					fresh = string(b)
				}
			}
		}
		args = append(args, id, fresh)
	}
	n, err := deadScript.Run(ctx, q.rdb, q.keys.all, args...).Int()
	if err != nil {
		return 0, fmt.Errorf("taskqueue: requeue: %w", classify(err))
	}
	return n, nil
}

// deleteDead is [Admin.DeleteDead] for ids of this queue.
func (q *RedisTaskQueue) deleteDead(ctx context.Context, taskIDs ...string) (int, error) {
	if len(taskIDs) == 0 {
		return 0, nil
	}
	args := make([]any, 1, 1+2*len(taskIDs))
	args[0] = "delete"
	for _, id := range taskIDs {
		args = append(args, id, "")
	}
	n, err := deadScript.Run(ctx, q.rdb, q.keys.all, args...).Int()
	if err != nil {
		return 0, fmt.Errorf("taskqueue: delete: %w", classify(err))
	}
	return n, nil
}

// eachDead pages through total dead letters (those there were when the call started), oldest first, batch at a
// time, and acts on those that filter accepts (every one when filter is nil). Acted-on letters leave the sorted
// set, so the next page starts after the ones skipped so far. It reports the running counts after each page and
// returns how many it acted on and how many it looked at.
func (q *RedisTaskQueue) eachDead(ctx context.Context, filter func(TaskInfo) bool, batch, total int,
	act func(*RedisTaskQueue, context.Context, ...string) (int, error), report func(done, scanned int)) (int, int, error) {
	done, scanned, skipped := 0, 0, 0
	for scanned < total {
		page, err := q.list(ctx, StateDead, int64(skipped), int64(skipped+min(batch, total-scanned)-1))
		if err != nil {
			return done, scanned, err
		}
		if len(page) == 0 {
			break
		}
		ids := make([]string, 0, len(page))
		for _, dl := range page {
			if filter == nil || filter(dl) {
				ids = append(ids, dl.TaskID)
			}
		}
		scanned += len(page)
		skipped += len(page) - len(ids)
		n, err := act(q, ctx, ids...)
		done += n
		if err != nil {
			return done, scanned, err
		}
		report(done, scanned)
	}
	return done, scanned, nil
}
