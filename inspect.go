package taskqueue

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// The reads of one queue (one shard) behind [Admin]: counts, lists, one task, the clock. They only read.

// Counts counts a queue's tasks per place.
type Counts struct {
	Pending   int64 // ready to run
	Active    int64 // leased by a worker
	Scheduled int64 // delayed, or waiting to be retried (scheduled and retry tasks wait together)
	Dead      int64 // dead-lettered, waiting for an operator
}

// Stats is a queue's health at one moment: its counts, whether pickup is paused, how old the next task is, and
// the deliveries counter from which a pickup rate follows. [Admin.Stats] reads it; a [MemoryQueue] fills in the
// counts only.
type Stats struct {
	Counts
	// Paused is true while pickup is paused ([Admin.Pause]); PausedAt is when, by the server clock.
	Paused   bool
	PausedAt time.Time
	// OldestPendingAge is as [Admin.OldestPendingAge] returns it, except that an unreadable envelope at the head
	// gives 0 rather than an error.
	OldestPendingAge time.Duration
	// Delivered counts the deliveries (leases) handed out since the queue was created: its fencing-token
	// counter. Two readings give the pickup rate: (b.Delivered - a.Delivered) / b.ServerTime.Sub(a.ServerTime).
	Delivered int64
	// ServerTime is the Redis server's clock when the counts were read.
	ServerTime time.Time
	// Cancelled counts the cancelled tasks whose record is kept ([Admin.Cancel], [RedisConfig.ControlRetention]):
	// those [Admin.List] lists as [StateCancelled]. Records past the retention count until the next cancel of the
	// queue drops them. It is not part of Counts: a cancelled task is no longer in the queue.
	Cancelled int64
}

// MaxListLimit is the most tasks one [Admin.List] returns, and the largest batch of a bulk call.
const MaxListLimit = 1000

// TaskInfo is one task as an operator sees it: where it is, its raw envelope, when it is due, and why it died.
type TaskInfo struct {
	TaskID string
	// State is where the task is: pending, scheduled or retry (a delayed task whose envelope says it failed
	// before; both wait in the same sorted set), active or dead.
	State State
	// Envelope is the stored JSON, untouched (a dead letter's may be the malformed input that got it parked);
	// empty if the task left between the two reads of a List (it finished).
	Envelope string
	// Record is Envelope as the seed's record, what an operator reads (the taskqueue CLI's show prints it): the
	// fields that an envelope of version 2 leaves out because they are stored elsewhere written back in, in the
	// seed's order (task_id, the id it is stored under; status, pending when left out; strategy, that of
	// serialized_task), as compact JSON. When Envelope does not decode (a dead letter's malformed input), Record
	// is Envelope as it is; empty when Envelope is.
	Record string
	// Score is the time of the task's sorted-set score, by the Redis server clock: when a scheduled or retry task
	// is due, when an active delivery's lease ends, when a dead letter died. Zero for pending tasks.
	Score time.Time
	// Reason is why a dead letter was parked; empty in the other states.
	Reason string
}

// stats reads the queue's [Stats] in two round trips, with read-only commands.
func (q *RedisTaskQueue) stats(ctx context.Context) (Stats, error) {
	var pending, high, low, keyed, active, scheduled, dead, cancelled *redis.IntCmd
	var paused, seq, head, inflight *redis.StringCmd
	var now *redis.TimeCmd
	cmds, err := q.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		pending = p.LLen(ctx, q.keys.key(keyPending))
		// The lists of the other priority levels (priority.go).
		high, low = p.LLen(ctx, q.keys.key(keyPendingHigh)), p.LLen(ctx, q.keys.key(keyPendingLow))
		keyed = p.ZCard(ctx, q.keys.key(keyFlowReady)) // keyed tasks (flow.go)
		active = p.ZCard(ctx, q.keys.key(keyActive))   // deliveries of the previous layout (docs/migration.md)
		inflight = p.Get(ctx, q.keys.key(keyInflight))
		scheduled = p.ZCard(ctx, q.keys.key(keyScheduled))
		dead = p.ZCard(ctx, q.keys.key(keyDead))
		cancelled = p.ZCard(ctx, q.keys.cancelled()) // cancel.go
		paused = p.Get(ctx, q.keys.key(keyPaused))
		seq = p.Get(ctx, q.keys.key(keySeq))
		head = p.LIndex(ctx, q.keys.key(keyPending), 0)
		now = p.Time(ctx)
		return nil
	})
	if err := pipeErr(cmds, err); err != nil {
		return Stats{}, fmt.Errorf("taskqueue: stats: %w", classify(err))
	}
	st := Stats{
		Counts:     Counts{Pending: pending.Val() + high.Val() + low.Val() + keyed.Val(), Active: active.Val() + intOf(inflight.Val()), Scheduled: scheduled.Val(), Dead: dead.Val()},
		Paused:     paused.Err() == nil,
		ServerTime: now.Val(),
		Cancelled:  cancelled.Val(),
	}
	if ms, err := strconv.ParseInt(paused.Val(), 10, 64); err == nil {
		st.PausedAt = time.UnixMilli(ms)
	}
	st.Delivered, _ = strconv.ParseInt(seq.Val(), 10, 64)
	if head.Err() == nil {
		age, _, err := q.pendingAge(ctx, head.Val(), st.ServerTime)
		if err != nil && !errors.Is(err, ErrMalformedEnvelope) {
			return Stats{}, err
		}
		st.OldestPendingAge = age
	}
	return st, nil
}

// intOf reads a counter's value; a missing key ("") is 0.
func intOf(v string) int64 {
	n, _ := strconv.ParseInt(v, 10, 64)
	return n
}

// isTombstone reports whether a value of the tasks hash is a tombstone, '~' and the token of the delivery that
// acked the task (ack.lua), kept for the settled window: the task finished, and every reader treats it as absent.
func isTombstone(raw string) bool { return strings.HasPrefix(raw, "~") }

// count returns how many tasks a state holds (scheduled and retry together).
func (q *RedisTaskQueue) count(ctx context.Context, state State) (int, error) {
	var n int64
	var err error
	switch state {
	case StatePending:
		n, err = q.pendingCount(ctx) // every priority level (priority.go)
	case StateActive:
		var old *redis.IntCmd
		var cur *redis.StringCmd
		cmds, perr := q.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			old = p.ZCard(ctx, q.keys.key(keyActive))
			cur = p.Get(ctx, q.keys.key(keyInflight))
			return nil
		})
		n, err = old.Val()+intOf(cur.Val()), pipeErr(cmds, perr)
	case StateCancelled:
		n, err = q.rdb.ZCard(ctx, q.keys.cancelled()).Result()
	default:
		n, err = q.rdb.ZCard(ctx, q.keys.key(stateKey(state))).Result()
	}
	return int(n), err
}

// list returns the tasks of a listable state from start to stop (inclusive positions), as [Admin.List] does.
func (q *RedisTaskQueue) list(ctx context.Context, state State, start, stop int64) ([]TaskInfo, error) {
	ids, scores, err := q.rangeIDs(ctx, state, start, stop)
	if err != nil {
		return nil, err
	}
	return q.describe(ctx, state, ids, scores)
}

// leasedTask is one task in flight: its id, its lease deadline (ms, server clock), and its pickup batch.
type leasedTask struct {
	id       string
	deadline float64
	base     string
}

// leasedTasks reads every task in flight, by lease deadline: those leased in batches (each live position of a
// record in batches, with its batch's deadline in leases) and those of the previous layout (active). It reads
// everything in flight, which workers and their concurrency bound.
func (q *RedisTaskQueue) leasedTasks(ctx context.Context) ([]leasedTask, error) {
	var bs, old *redis.ZSliceCmd
	cmds, err := q.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		bs = p.ZRangeWithScores(ctx, q.keys.key(keyLeases), 0, -1)
		old = p.ZRangeWithScores(ctx, q.keys.key(keyActive), 0, -1)
		return nil
	})
	if err := pipeErr(cmds, err); err != nil {
		return nil, err
	}
	recs := map[string][2]string{} // base -> mask, ids
	if len(bs.Val()) > 0 {
		fields := make([]string, 0, 2*len(bs.Val()))
		for _, z := range bs.Val() {
			base, _ := z.Member.(string)
			fields = append(fields, base, base+":ids")
		}
		vals, err := q.rdb.HMGet(ctx, q.keys.key(keyBatches), fields...).Result()
		if err != nil {
			return nil, err
		}
		for i := 0; i+1 < len(vals); i += 2 {
			mask, _ := vals[i].(string)
			ids, _ := vals[i+1].(string)
			recs[fields[i]] = [2]string{mask, ids}
		}
	}
	var out []leasedTask
	for _, z := range bs.Val() {
		base, _ := z.Member.(string)
		rec := recs[base]
		mask := rec[0]
		var ids []string
		if err := json.Unmarshal([]byte(rec[1]), &ids); err != nil {
			continue
		}
		for i, id := range ids {
			if i < len(mask) && mask[i] == '-' {
				out = append(out, leasedTask{id: id, deadline: z.Score, base: base})
			}
		}
	}
	for _, z := range old.Val() {
		id, _ := z.Member.(string)
		out = append(out, leasedTask{id: id, deadline: z.Score})
	}
	slices.SortStableFunc(out, func(a, b leasedTask) int { return cmp.Compare(a.deadline, b.deadline) })
	return out, nil
}

// rangeIDs reads the ids of a listable state from start to stop, and their scores (nil for pending).
func (q *RedisTaskQueue) rangeIDs(ctx context.Context, state State, start, stop int64) ([]string, []float64, error) {
	if state == StatePending {
		ids, err := q.rangePending(ctx, start, stop) // every priority level, highest first (priority.go)
		if err != nil {
			return nil, nil, fmt.Errorf("taskqueue: list: %w", classify(err))
		}
		return ids, nil, nil
	}
	if state == StateActive {
		all, err := q.leasedTasks(ctx)
		if err != nil {
			return nil, nil, fmt.Errorf("taskqueue: list: %w", classify(err))
		}
		start, stop = min(start, int64(len(all))), min(stop+1, int64(len(all)))
		var ids []string
		var scores []float64
		for _, t := range all[start:max(start, stop)] {
			ids, scores = append(ids, t.id), append(scores, t.deadline)
		}
		return ids, scores, nil
	}
	key := q.keys.key(stateKey(state))
	if state == StateCancelled {
		key = q.keys.cancelled() // by the time of the cancel (cancel.go)
	}
	zs, err := q.rdb.ZRangeWithScores(ctx, key, start, stop).Result()
	if err != nil {
		return nil, nil, fmt.Errorf("taskqueue: list: %w", classify(err))
	}
	ids, scores := make([]string, len(zs)), make([]float64, len(zs))
	for i, z := range zs {
		ids[i], _ = z.Member.(string)
		scores[i] = z.Score
	}
	return ids, scores, nil
}

// describe reads the envelopes (and a dead letter's reasons) of tasks found in state, in one round trip.
func (q *RedisTaskQueue) describe(ctx context.Context, state State, ids []string, scores []float64) ([]TaskInfo, error) {
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
		if state == StateCancelled && isCancelledRecord(out[i].Envelope) {
			out[i].Envelope = out[i].Envelope[2:] // the record is '~c' .. envelope (cancel.go)
		} else if isTombstone(out[i].Envelope) {
			out[i].Envelope = "" // the task finished between the two reads
		}
		if scores != nil {
			out[i].Score = time.UnixMilli(int64(scores[i]))
		}
		if reasons != nil {
			out[i].Reason, _ = reasons.Val()[i].(string)
		}
		out[i].State = q.delayedState(out[i].State, out[i].Envelope)
		out[i].Record = q.record(id, out[i].Envelope)
	}
	return out, nil
}

// delayedState tells a retry from a scheduled task, both in the scheduled sorted set, by the status its
// envelope was last written with. Any other state, and an envelope that cannot be read, is returned as it is.
func (q *RedisTaskQueue) delayedState(place State, raw string) State {
	if place != StateScheduled || raw == "" {
		return place
	}
	if env, err := decodeEnvelope([]byte(raw), q.cfg.Limits); err == nil && env.Status == StateRetry {
		return StateRetry
	}
	return place
}

// inspect returns where one task is, its envelope and a dead letter's reason, or [ErrNotFound]. It reads in one
// round trip the task's score in scheduled, dead and (the previous layout's) active, its envelope and its reason;
// a task with an envelope in none of these sorted sets is active when a batch's lease record holds it, else
// pending. A tombstone (a task acked recently) is not found.
func (q *RedisTaskQueue) inspect(ctx context.Context, taskID string) (TaskInfo, error) {
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
	if env.Err() == nil && isCancelledRecord(env.Val()) {
		return q.cancelledInfo(ctx, taskID, env.Val()) // cancel.go
	}
	if env.Err() == nil && isTombstone(env.Val()) {
		return TaskInfo{}, fmt.Errorf("%w: %s", ErrNotFound, quote(taskID))
	}
	info := TaskInfo{TaskID: taskID, Envelope: env.Val()}
	for i, s := range states {
		if scores[i].Err() == nil {
			info.State, info.Score = s, time.UnixMilli(int64(scores[i].Val()))
			break
		}
	}
	if info.State == "" && env.Err() == nil {
		all, err := q.leasedTasks(ctx)
		if err != nil {
			return TaskInfo{}, fmt.Errorf("taskqueue: inspect: %w", classify(err))
		}
		info.State = StatePending
		for _, t := range all {
			if t.id == taskID {
				info.State, info.Score = StateActive, time.UnixMilli(int64(t.deadline))
				break
			}
		}
	}
	switch info.State {
	case StateDead:
		info.Reason = reason.Val()
	case "":
		return TaskInfo{}, fmt.Errorf("%w: %s", ErrNotFound, quote(taskID))
	}
	info.State = q.delayedState(info.State, info.Envelope)
	info.Record = q.record(taskID, info.Envelope)
	return info, nil
}

// record returns [TaskInfo.Record] for the envelope raw stored under id.
func (q *RedisTaskQueue) record(id, raw string) string {
	if raw == "" {
		return ""
	}
	env, err := decodeStored(id, []byte(raw), q.cfg.Limits)
	if err != nil {
		return raw
	}
	b, err := env.record()
	if err != nil {
		return raw
	}
	return string(b)
}

// oldestPendingAge is [Admin.OldestPendingAge] for one queue.
func (q *RedisTaskQueue) oldestPendingAge(ctx context.Context) (time.Duration, error) {
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
	if errors.Is(err, redis.Nil) || (err == nil && isTombstone(raw)) {
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

// paused reports whether pickup is paused.
func (q *RedisTaskQueue) paused(ctx context.Context) (bool, error) {
	n, err := q.rdb.Exists(ctx, q.keys.key(keyPaused)).Result()
	if err != nil {
		return false, fmt.Errorf("taskqueue: paused: %w", classify(err))
	}
	return n == 1, nil
}

// serverTime returns the Redis server's clock.
func (q *RedisTaskQueue) serverTime(ctx context.Context) (time.Time, error) {
	t, err := q.rdb.Time(ctx).Result()
	if err != nil {
		return time.Time{}, fmt.Errorf("taskqueue: server time: %w", classify(err))
	}
	return t, nil
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
