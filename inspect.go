package taskqueue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
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
		return Stats{}, fmt.Errorf("taskqueue: stats: %w", classify(err))
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
		return nil, fmt.Errorf("taskqueue: dead letters: %w", classify(err))
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
		return nil, fmt.Errorf("taskqueue: dead letters: %w", classify(err))
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
		return DeadLetter{}, fmt.Errorf("taskqueue: dead letter: %w", classify(err))
	}
	dl := DeadLetter{TaskID: taskID, DiedAt: time.UnixMilli(int64(score))}
	dl.Reason, _ = q.rdb.HGet(ctx, q.keys.key(keyErrors), taskID).Result()
	dl.Envelope, _ = q.rdb.HGet(ctx, q.keys.key(keyTasks), taskID).Result()
	return dl, nil
}

// RequeueDead moves dead letters back to the tail of pending, with a fresh retry budget when their envelope can
// be read (one that cannot is requeued as it is, for a fixed or newer worker to read). Every envelope accepted at
// enqueue can be read, whatever delivery wrote into it since (see [EnvelopeHeadroom]), so its task runs again; a
// larger one (never accepted: written by something else) is parked again at pickup with [ErrEnvelopeTooLarge]. It returns how many moved;
// ids that are not dead letters are skipped. It never signs: a signed envelope keeps its signature, which still
// verifies, and an unsigned or forged one is parked again by a worker with [RedisConfig.Signing].
func (q *RedisTaskQueue) RequeueDead(ctx context.Context, taskIDs ...string) (int, error) {
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
		if raw, ok := envs[i].(string); ok {
			if env, err := decodeEnvelope([]byte(raw), q.cfg.Limits); err == nil {
				env.Attempt, env.Status, env.LastError, env.FailedAt = 0, StatusReady, "", 0
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
		return 0, fmt.Errorf("taskqueue: delete: %w", classify(err))
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
		return "", fmt.Errorf("taskqueue: peek: %w", classify(err))
	}
	return raw, nil
}

// ServerTime returns the Redis server's clock, which times leases and delayed tasks.
func (q *RedisTaskQueue) ServerTime(ctx context.Context) (time.Time, error) {
	t, err := q.rdb.Time(ctx).Result()
	if err != nil {
		return time.Time{}, fmt.Errorf("taskqueue: server time: %w", classify(err))
	}
	return t, nil
}

// State names where a task is in a Redis queue: the four places of docs/lifecycle.md.
type State string

// The states [RedisTaskQueue.List] and [RedisTaskQueue.Purge] take.
const (
	StatePending   State = "pending"   // ready to run, in FIFO order
	StateScheduled State = "scheduled" // delayed, or waiting to be retried
	StateActive    State = "active"    // leased by a worker
	StateDead      State = "dead"      // dead-lettered, waiting for an operator
)

var allStates = [...]State{StatePending, StateScheduled, StateActive, StateDead}

// ParseState returns the [State] named s, or a [*StateError].
func ParseState(s string) (State, error) {
	for _, st := range allStates {
		if string(st) == s {
			return st, nil
		}
	}
	return "", &StateError{Op: "parse", State: State(truncate(s, 64)), Reason: "want pending, scheduled, active or dead"}
}

// MaxListLimit is the most tasks one [RedisTaskQueue.List] returns, and the largest batch of a bulk call.
const MaxListLimit = 1000

// TaskInfo is one task as an operator sees it: where it is, its raw envelope, and when it is due.
type TaskInfo struct {
	TaskID string
	State  State
	// Envelope is the stored JSON, untouched; empty if the task left between the two reads of a List (it finished).
	Envelope string
	// Score is the time of the task's sorted-set score, by the Redis server clock: when a scheduled task is due,
	// when an active delivery's lease ends, when a dead letter died. Zero for pending tasks.
	Score time.Time
	// Reason is why a dead letter was parked; empty in the other states.
	Reason string
}

// List returns the tasks in one state, oldest first (pending in pickup order; scheduled by due time; active by
// lease deadline; dead by the time they died), skipping offset of them and returning at most limit (1 to
// [MaxListLimit]). It only reads (LRANGE or ZRANGE, then HMGET), in two round trips that are not atomic: a task
// can move between them, and pages of a queue that changes can overlap or skip tasks.
func (q *RedisTaskQueue) List(ctx context.Context, state State, offset, limit int) ([]TaskInfo, error) {
	if offset < 0 || limit < 1 || limit > MaxListLimit {
		return nil, fmt.Errorf("%w: offset must be 0 or more and limit between 1 and %d", ErrInvalidConfig, MaxListLimit)
	}
	start, stop := int64(offset), int64(offset+limit-1)
	var ids []string
	var scores []float64
	switch state {
	case StatePending:
		var err error
		if ids, err = q.rdb.LRange(ctx, q.keys.key(keyPending), start, stop).Result(); err != nil {
			return nil, fmt.Errorf("taskqueue: list: %w", classify(err))
		}
	case StateScheduled, StateActive, StateDead:
		zs, err := q.rdb.ZRangeWithScores(ctx, q.keys.key(stateKey(state)), start, stop).Result()
		if err != nil {
			return nil, fmt.Errorf("taskqueue: list: %w", classify(err))
		}
		ids, scores = make([]string, len(zs)), make([]float64, len(zs))
		for i, z := range zs {
			ids[i], _ = z.Member.(string)
			scores[i] = z.Score
		}
	default:
		return nil, &StateError{Op: "list", State: State(truncate(string(state), 64)), Reason: "want pending, scheduled, active or dead"}
	}
	if len(ids) == 0 {
		return nil, nil
	}
	var envs, reasons *redis.SliceCmd
	_, err := q.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		envs = p.HMGet(ctx, q.keys.key(keyTasks), ids...)
		if state == StateDead {
			reasons = p.HMGet(ctx, q.keys.key(keyErrors), ids...)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("taskqueue: list: %w", classify(err))
	}
	out := make([]TaskInfo, len(ids))
	for i, id := range ids {
		out[i] = TaskInfo{TaskID: id, State: state}
		out[i].Envelope, _ = envs.Val()[i].(string)
		if scores != nil {
			out[i].Score = time.UnixMilli(int64(scores[i]))
		}
		if reasons != nil {
			out[i].Reason, _ = reasons.Val()[i].(string)
		}
	}
	return out, nil
}

// stateKey is the key that holds the tasks of a state.
func stateKey(s State) int {
	switch s {
	case StateScheduled:
		return keyScheduled
	case StateActive:
		return keyActive
	case StateDead:
		return keyDead
	}
	return keyPending
}

// Inspect returns where one task is and its envelope, or [ErrNotFound]. It reads in one round trip: the task's
// score in active, scheduled and dead, its envelope and its reason; a task with an envelope in none of these
// sorted sets is pending.
func (q *RedisTaskQueue) Inspect(ctx context.Context, taskID string) (TaskInfo, error) {
	var env, reason *redis.StringCmd
	var scores [3]*redis.FloatCmd
	states := [3]State{StateActive, StateScheduled, StateDead}
	cmds, err := q.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		env = p.HGet(ctx, q.keys.key(keyTasks), taskID)
		reason = p.HGet(ctx, q.keys.key(keyErrors), taskID)
		for i, s := range states {
			scores[i] = p.ZScore(ctx, q.keys.key(stateKey(s)), taskID)
		}
		return nil
	})
	if err := pipeErr(cmds, err); err != nil {
		return TaskInfo{}, fmt.Errorf("taskqueue: inspect: %w", classify(err))
	}
	info := TaskInfo{TaskID: taskID, Envelope: env.Val()}
	for i, s := range states {
		if scores[i].Err() == nil {
			info.State, info.Score = s, time.UnixMilli(int64(scores[i].Val()))
			break
		}
	}
	switch {
	case info.State == StateDead:
		info.Reason = reason.Val()
	case info.State == "" && env.Err() == nil:
		info.State = StatePending
	case info.State == "":
		return TaskInfo{}, fmt.Errorf("%w: %s", ErrNotFound, quote(taskID))
	}
	return info, nil
}

// OldestPendingAge returns how long the task at the head of pending, the next to be picked up, has existed: the
// Redis server's clock minus the created_at of its envelope (the producer's clock; a negative difference counts
// as 0). It is 0 when nothing is pending. A task that waited in scheduled (a delay or a retry) counts from its
// creation, not from when it became ready. A growing age means workers do not keep up, or pickup is paused.
func (q *RedisTaskQueue) OldestPendingAge(ctx context.Context) (time.Duration, error) {
	for range 3 {
		var head *redis.StringCmd
		var now *redis.TimeCmd
		cmds, err := q.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			head = p.LIndex(ctx, q.keys.key(keyPending), 0)
			now = p.Time(ctx)
			return nil
		})
		if err := pipeErr(cmds, err); err != nil {
			return 0, fmt.Errorf("taskqueue: oldest pending age: %w", classify(err))
		}
		id, err := head.Result()
		if errors.Is(err, redis.Nil) {
			return 0, nil // nothing pending
		}
		age, found, err := q.pendingAge(ctx, id, now.Val())
		if found || err != nil {
			return age, err
		}
		// The head was leased between the two reads: look again.
	}
	return 0, nil
}

// pendingAge returns the age of a pending task at now, and false if its envelope is gone.
func (q *RedisTaskQueue) pendingAge(ctx context.Context, id string, now time.Time) (time.Duration, bool, error) {
	raw, err := q.rdb.HGet(ctx, q.keys.key(keyTasks), id).Result()
	if errors.Is(err, redis.Nil) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("taskqueue: oldest pending age: %w", classify(err))
	}
	var e struct {
		CreatedAt float64 `json:"created_at"`
	}
	if err := json.Unmarshal([]byte(raw), &e); err != nil || e.CreatedAt <= 0 {
		return 0, true, fmt.Errorf("%w: oldest pending task %s has no readable created_at", ErrMalformedEnvelope, quote(id))
	}
	return max(now.Sub(fromUnixSeconds(e.CreatedAt)), 0), true, nil
}

// Overview is a queue's health at one moment: its counts, whether pickup is paused, how old the next task is,
// and the deliveries counter from which a pickup rate follows.
type Overview struct {
	Stats
	// Paused is true while pickup is paused ([RedisTaskQueue.Pause]); PausedAt is when, by the server clock.
	Paused   bool
	PausedAt time.Time
	// OldestPendingAge is as [RedisTaskQueue.OldestPendingAge] returns it, except that an unreadable envelope at
	// the head gives 0 rather than an error.
	OldestPendingAge time.Duration
	// Delivered counts the deliveries (leases) handed out since the queue was created: its fencing-token
	// counter. Two readings give the pickup rate: (b.Delivered - a.Delivered) / b.ServerTime.Sub(a.ServerTime).
	Delivered int64
	// ServerTime is the Redis server's clock when the counts were read.
	ServerTime time.Time
}

// Overview reads a queue's [Overview] in two round trips, with read-only commands.
func (q *RedisTaskQueue) Overview(ctx context.Context) (Overview, error) {
	var pending, active, scheduled, dead *redis.IntCmd
	var paused, seq, head *redis.StringCmd
	var now *redis.TimeCmd
	cmds, err := q.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		pending = p.LLen(ctx, q.keys.key(keyPending))
		active = p.ZCard(ctx, q.keys.key(keyActive))
		scheduled = p.ZCard(ctx, q.keys.key(keyScheduled))
		dead = p.ZCard(ctx, q.keys.key(keyDead))
		paused = p.Get(ctx, q.keys.key(keyPaused))
		seq = p.Get(ctx, q.keys.key(keySeq))
		head = p.LIndex(ctx, q.keys.key(keyPending), 0)
		now = p.Time(ctx)
		return nil
	})
	if err := pipeErr(cmds, err); err != nil {
		return Overview{}, fmt.Errorf("taskqueue: overview: %w", classify(err))
	}
	o := Overview{
		Stats:      Stats{Pending: pending.Val(), Active: active.Val(), Scheduled: scheduled.Val(), Dead: dead.Val()},
		Paused:     paused.Err() == nil,
		ServerTime: now.Val(),
	}
	if ms, err := strconv.ParseInt(paused.Val(), 10, 64); err == nil {
		o.PausedAt = time.UnixMilli(ms)
	}
	o.Delivered, _ = strconv.ParseInt(seq.Val(), 10, 64)
	if head.Err() == nil {
		age, _, err := q.pendingAge(ctx, head.Val(), o.ServerTime)
		if err != nil && !errors.Is(err, ErrMalformedEnvelope) {
			return Overview{}, err
		}
		o.OldestPendingAge = age
	}
	return o, nil
}

// pipeErr returns the first error of a pipeline's commands other than redis.Nil (a missing key or field, which
// the caller reads from the command).
func pipeErr(cmds []redis.Cmder, err error) error {
	for _, c := range cmds {
		if err := c.Err(); err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
	}
	if errors.Is(err, redis.Nil) {
		return nil
	}
	return err
}
