package taskqueue

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Cancel and delete of one task by id, from any process: one script (lua/cancel.lua) finds the task wherever it
// is and acts in the same step, so that no delivery slips in between. A running task's worker learns of its
// cancel through the queue's control channel (cancel_listener.go); the record of the cancel lives in Redis, so
// that a worker that is away when it is sent never runs the task again. See docs/control.md.

var (
	//go:embed lua/cancel.lua
	cancelLua    string
	cancelSrc    = withPrelude(cancelLua)
	cancelScript = redis.NewScript(cancelSrc)
)

// Cancel cancels one task by id and returns where it was: a pending, scheduled or retry task leaves the queue
// at once; a running task ([StateActive]) is marked cancelled in Redis, so that its worker's ack, retry or lease
// renewal is refused and the reaper never gives it back, and its worker cancels the handler's context within
// milliseconds, with [ErrCancelled] as the cause (context.Cause). A cancelled task is never retried nor
// dead-lettered; it stays visible to [Admin.Inspect] as [StateCancelled] for [RedisConfig.ControlRetention], and
// enqueuing its id meanwhile is a no-op, as for a finished task. A group member's cancel completes its run's
// member as [MemberCancelled].
//
// An unknown id returns a [*ControlError] wrapping [ErrNotFound] (a task acknowledged longer ago than the
// settled window reads as unknown); a task that already finished (acknowledged, dead-lettered or cancelled) one
// wrapping [ErrAlreadyFinished]. The script scans the list of pending tasks and the lease records in flight: a
// cancel costs time in proportion to them, and a queue that never cancels pays nothing for it.
func (a *Admin) Cancel(ctx context.Context, taskID string) (State, error) {
	return a.control(ctx, "cancel", taskID)
}

// Delete removes one task by id, with its envelope and its last progress, and returns where it was: pending,
// scheduled, retry, dead or cancelled. A running task is refused with a [*ControlError] wrapping [ErrTaskRunning]:
// cancel it, then delete its record. The look and the removal are one script, so a delivery in flight (a pickup,
// an ack) comes either before (delete then sees it running, or finished) or after (it finds nothing). A deleted
// group member completes its run's member as [MemberCancelled]. Unknown and finished (acknowledged) tasks are
// refused as by [Admin.Cancel]. A deleted id can be enqueued again.
func (a *Admin) Delete(ctx context.Context, taskID string) (State, error) {
	return a.control(ctx, "delete", taskID)
}

// control runs a cancel or delete in the shard that holds taskID.
func (a *Admin) control(ctx context.Context, mode, taskID string) (State, error) {
	return lookupTask(a.shards, a.lookupShards(taskID), func(q *RedisTaskQueue) (State, error) {
		return q.control(ctx, mode, taskID)
	}, notFound)
}

// control runs lua/cancel.lua for one task of this queue.
func (q *RedisTaskQueue) control(ctx context.Context, mode, taskID string) (State, error) {
	if err := validateTaskID(taskID); err != nil {
		return "", err
	}
	// The group run comes from the stored envelope, read first: the script needs its keys.
	raw, err := q.rdb.HGet(ctx, q.keys.key(keyTasks), taskID).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return "", fmt.Errorf("taskqueue: %s: %w", mode, classify(err))
	}
	keys := append(slices.Clone(q.keys.all), q.keys.cancelled(), q.keys.progress(taskID))
	withGroup := 0
	if raw != "" && !isTombstone(raw) {
		env, _ := decodeStored(taskID, []byte(raw), q.cfg.Limits)
		if gid := groupOfStored(env, raw, q.cfg.Limits); isGroupRun(gid) {
			keys = append(keys, q.runKeys(gid)...) // a workflow's node advances its workflow (workflow.lua)
			withGroup = 1
		}
	}
	res, err := cancelScript.Run(ctx, q.rdb, keys, mode, taskID, q.cfg.ControlRetention.Milliseconds(), numKeys, withGroup).Slice()
	if err != nil {
		return "", fmt.Errorf("taskqueue: %s: %w", mode, classify(err))
	}
	if len(res) != 2 {
		return "", fmt.Errorf("taskqueue: %s: unexpected reply of %d items", mode, len(res))
	}
	code, _ := res[0].(int64)
	where, _ := res[1].(string)
	state := State(where)
	switch code {
	case 1:
		return state, nil
	case 0:
		return "", &ControlError{Op: mode, TaskID: taskID, Err: ErrNotFound}
	case 2:
		return state, &ControlError{Op: mode, TaskID: taskID, State: state, Err: ErrAlreadyFinished}
	case 3:
		return state, &ControlError{Op: mode, TaskID: taskID, State: state, Err: ErrTaskRunning}
	}
	return "", fmt.Errorf("taskqueue: %s: unexpected reply code %d", mode, code)
}

// CancelGroup cancels every member of a group run ([GroupRun.GroupID]) that has not completed, as [Admin.Cancel]
// does, and returns how many it cancelled. Each cancelled member completes in the run as [MemberCancelled], so
// the run's waiter ([GroupRun.Wait]) is released once the last one is, with a [*GroupResult] that counts them in
// Cancelled and, under the default [StrictPolicy], an error wrapping [ErrGroupFailed] and [ErrCancelled]. Members
// that complete meanwhile keep their outcome. An unknown run is [ErrGroupNotFound].
func (a *Admin) CancelGroup(ctx context.Context, groupID string) (int, error) {
	if !isGroupRun(groupID) {
		return 0, fmt.Errorf("%w: %s is no group run id (<name>@<run id>)", ErrGroupNotFound, quote(groupID))
	}
	// A group run lives in the queue it was dispatched on ([RedisTaskQueue.DispatchGroup]): one shard.
	var q *RedisTaskQueue
	var h map[string]string
	for _, s := range a.shards {
		m, err := s.rdb.HGetAll(ctx, s.keys.group(groupID)).Result()
		if err != nil {
			return 0, fmt.Errorf("taskqueue: cancel group: %w", classify(err))
		}
		if len(m) > 0 {
			q, h = s, m
			break
		}
	}
	if q == nil {
		return 0, fmt.Errorf("%w: %s", ErrGroupNotFound, quote(groupID))
	}
	var open []string
	for f, v := range h {
		if id, ok := strings.CutPrefix(f, "m:"); ok && v == "" {
			open = append(open, id)
		}
	}
	slices.Sort(open)
	n := 0
	var errs []error
	for _, id := range open {
		_, err := q.control(ctx, "cancel", id)
		switch {
		case err == nil:
			n++
		case errors.Is(err, ErrAlreadyFinished), errors.Is(err, ErrNotFound):
			// completed meanwhile (or its envelope went with the run's TTL): its outcome stands
		default:
			errs = append(errs, err)
		}
	}
	return n, errors.Join(errs...)
}

// cancelledInfo reads a cancelled task's record: raw is its value in tasks, '~c' .. envelope.
func (q *RedisTaskQueue) cancelledInfo(ctx context.Context, taskID, raw string) (TaskInfo, error) {
	info := TaskInfo{TaskID: taskID, State: StateCancelled, Envelope: raw[2:]}
	score, err := q.rdb.ZScore(ctx, q.keys.cancelled(), taskID).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return TaskInfo{}, fmt.Errorf("taskqueue: inspect: %w", classify(err))
	}
	if err == nil {
		info.Score = time.UnixMilli(int64(score))
	}
	info.Record = q.record(taskID, info.Envelope)
	return info, nil
}

// isCancelledRecord reports whether a value of the tasks hash is a cancelled task's record ('~c' .. envelope).
func isCancelledRecord(raw string) bool { return strings.HasPrefix(raw, "~c") }
