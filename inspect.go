package taskqueue

import (
	"context"
	"errors"
	"fmt"

	"time"

	"github.com/redis/go-redis/v9"
)

// Stats counts a queue's tasks per state.
type Stats struct {
	Pending   int64 // ready to run
	Active    int64 // leased by a worker
	Scheduled int64 // delayed, or waiting to be retried
	Dead      int64 // dead-lettered, waiting for an operator
}

// DeadLetter is a parked task: its raw envelope, exactly as stored, and why it was parked.
type DeadLetter struct {
	TaskID   string
	Reason   string
	DiedAt   time.Time
	Envelope string // the stored JSON, untouched (it may be the malformed input that got it parked)
}

// Stats returns the queue's counts per state, read in one round trip.
func (q *RedisTaskQueue) Stats(ctx context.Context) (Stats, error) {
	var pending, active, scheduled, dead *redis.IntCmd
	_, err := q.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		pending = p.LLen(ctx, q.keys.key(keyPending))
		active = p.ZCard(ctx, q.keys.key(keyActive))
		scheduled = p.ZCard(ctx, q.keys.key(keyScheduled))
		dead = p.ZCard(ctx, q.keys.key(keyDead))
		return nil
	})
	if err != nil {
		return Stats{}, fmt.Errorf("taskqueue: stats: %w", err)
	}
	return Stats{Pending: pending.Val(), Active: active.Val(), Scheduled: scheduled.Val(), Dead: dead.Val()}, nil
}

// DeadLetters lists dead letters, oldest first, starting at offset, at most limit of them.
func (q *RedisTaskQueue) DeadLetters(ctx context.Context, offset, limit int) ([]DeadLetter, error) {
	if offset < 0 || limit < 1 {
		return nil, fmt.Errorf("%w: offset must be 0 or more and limit at least 1", ErrInvalidConfig)
	}
	zs, err := q.rdb.ZRangeWithScores(ctx, q.keys.key(keyDead), int64(offset), int64(offset+limit-1)).Result()
	if err != nil {
		return nil, fmt.Errorf("taskqueue: dead letters: %w", err)
	}
	if len(zs) == 0 {
		return nil, nil
	}
	ids := make([]string, len(zs))
	for i, z := range zs {
		ids[i], _ = z.Member.(string)
	}
	var reasons, envs *redis.SliceCmd
	_, err = q.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		reasons = p.HMGet(ctx, q.keys.key(keyErrors), ids...)
		envs = p.HMGet(ctx, q.keys.key(keyTasks), ids...)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("taskqueue: dead letters: %w", err)
	}
	out := make([]DeadLetter, len(ids))
	for i, id := range ids {
		out[i] = DeadLetter{TaskID: id, DiedAt: time.UnixMilli(int64(zs[i].Score))}
		out[i].Reason, _ = reasons.Val()[i].(string)
		out[i].Envelope, _ = envs.Val()[i].(string)
	}
	return out, nil
}

// GetDeadLetter returns one dead letter, or [ErrNotFound].
func (q *RedisTaskQueue) GetDeadLetter(ctx context.Context, taskID string) (DeadLetter, error) {
	score, err := q.rdb.ZScore(ctx, q.keys.key(keyDead), taskID).Result()
	if errors.Is(err, redis.Nil) {
		return DeadLetter{}, fmt.Errorf("%w: no dead letter %s", ErrNotFound, quote(taskID))
	}
	if err != nil {
		return DeadLetter{}, fmt.Errorf("taskqueue: dead letter: %w", err)
	}
	dl := DeadLetter{TaskID: taskID, DiedAt: time.UnixMilli(int64(score))}
	dl.Reason, _ = q.rdb.HGet(ctx, q.keys.key(keyErrors), taskID).Result()
	dl.Envelope, _ = q.rdb.HGet(ctx, q.keys.key(keyTasks), taskID).Result()
	return dl, nil
}

// RequeueDead moves dead letters back to the tail of pending, with a fresh retry budget when their envelope can
// be read (one that cannot is requeued as it is, for a fixed or newer worker to read). It returns how many moved;
// ids that are not dead letters are skipped.
func (q *RedisTaskQueue) RequeueDead(ctx context.Context, taskIDs ...string) (int, error) {
	if len(taskIDs) == 0 {
		return 0, nil
	}
	envs, err := q.rdb.HMGet(ctx, q.keys.key(keyTasks), taskIDs...).Result()
	if err != nil {
		return 0, fmt.Errorf("taskqueue: requeue: %w", err)
	}
	args := make([]any, 1, 1+2*len(taskIDs))
	args[0] = "requeue"
	for i, id := range taskIDs {
		fresh := ""
		if raw, ok := envs[i].(string); ok {
			if env, err := decodeEnvelope([]byte(raw), q.cfg.Limits); err == nil {
				env.Attempt, env.Status, env.LastError, env.FailedAt = 0, StatusReady, "", 0
				if b, err := env.marshal(); err == nil {
					fresh = string(b)
				}
			}
		}
		args = append(args, id, fresh)
	}
	n, err := deadScript.Run(ctx, q.rdb, q.keys.all, args...).Int()
	if err != nil {
		return 0, fmt.Errorf("taskqueue: requeue: %w", err)
	}
	return n, nil
}

// DeleteDead removes dead letters for good and returns how many it removed.
func (q *RedisTaskQueue) DeleteDead(ctx context.Context, taskIDs ...string) (int, error) {
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
		return 0, fmt.Errorf("taskqueue: delete: %w", err)
	}
	return n, nil
}

// Peek returns the stored envelope of a task in any state, or [ErrNotFound].
func (q *RedisTaskQueue) Peek(ctx context.Context, taskID string) (string, error) {
	raw, err := q.rdb.HGet(ctx, q.keys.key(keyTasks), taskID).Result()
	if errors.Is(err, redis.Nil) {
		return "", fmt.Errorf("%w: %s", ErrNotFound, quote(taskID))
	}
	if err != nil {
		return "", fmt.Errorf("taskqueue: peek: %w", err)
	}
	return raw, nil
}

// ServerTime returns the Redis server's clock, which times leases and delayed tasks.
func (q *RedisTaskQueue) ServerTime(ctx context.Context) (time.Time, error) {
	t, err := q.rdb.Time(ctx).Result()
	if err != nil {
		return time.Time{}, fmt.Errorf("taskqueue: server time: %w", err)
	}
	return t, nil
}
