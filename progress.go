package taskqueue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"
)

// Progress of a running task: its handler reports a percentage and a short message through its context
// ([ReportProgress]); the worker stores the last report under {prefix}:progress:<task id> for
// [RedisConfig.ControlRetention], where [Admin.TaskProgress] and the taskqueue CLI read it while the task runs and
// after. Reports are throttled in the worker: at most one write per task every [ProgressInterval], the last report
// held back written when the interval ends or the run does, so a handler that reports in a tight loop costs Redis
// at most 1/ProgressInterval writes a second.

// MaxProgressMessage is the longest progress message stored, in bytes; a longer one is cut (at a character
// boundary) and marked ([TaskProgress.Truncated]).
const MaxProgressMessage = 256

// ProgressInterval is the shortest time between two progress writes of one task (5 a second at most).
const ProgressInterval = 200 * time.Millisecond

// TaskProgress is the last progress a task's handler reported.
type TaskProgress struct {
	TaskID    string    `json:"task_id"`
	Percent   float64   `json:"percent"`             // 0 to 100
	Message   string    `json:"message,omitempty"`   // at most MaxProgressMessage bytes
	Truncated bool      `json:"truncated,omitempty"` // the handler's message was longer and was cut
	At        time.Time `json:"at,omitzero"`         // when the handler reported it (the worker's clock)
}

type taskCtxKey struct{}

// ReportProgress records the progress of the task running under ctx: percent from 0 to 100 and a short message
// (longer than [MaxProgressMessage] bytes, it is cut and marked [TaskProgress.Truncated]). Writes are throttled
// (see [ProgressInterval]): a report within the interval of the last write is held back, and only the latest held
// report is written, when the interval ends or the run does. It returns [ErrInvalidProgress] for a percentage
// outside 0 to 100 (or NaN) and outside a task run by a [TaskWorker], and the error of a write it made. With a
// [MemoryQueue] reports are checked and dropped.
func ReportProgress(ctx context.Context, percent float64, message string) error {
	tc, _ := ctx.Value(taskCtxKey{}).(*taskCtx)
	if tc == nil {
		return fmt.Errorf("%w: not called from a task's context", ErrInvalidProgress)
	}
	if math.IsNaN(percent) || percent < 0 || percent > 100 {
		return fmt.Errorf("%w: percent %v is outside 0 to 100", ErrInvalidProgress, percent)
	}
	p := TaskProgress{TaskID: tc.run.d.Spec.TaskID, Percent: percent, Message: message, At: time.Now()}
	if len(p.Message) > MaxProgressMessage {
		cut := MaxProgressMessage - len("…")
		for cut > 0 && !utf8.RuneStart(p.Message[cut]) {
			cut--
		}
		p.Message, p.Truncated = p.Message[:cut]+"…", true
	}
	ps := tc.run.progress.Load()
	if ps == nil {
		q := originOf(tc.w.q, tc.run.d) // multiqueue.go
		shards, ok := q.(controlShards)
		if !ok {
			return nil // a queue that stores no progress
		}
		ps = &progressState{q: shardOfTask(shards.controlShards(), q, p.TaskID)}
		if !tc.run.progress.CompareAndSwap(nil, ps) {
			ps = tc.run.progress.Load()
		}
	}
	return ps.report(p)
}

// shardOfTask returns the shard of queue q that holds taskID.
func shardOfTask(shards []*RedisTaskQueue, q TaskQueue, taskID string) *RedisTaskQueue {
	if s, ok := q.(*ShardedQueue); ok {
		return shards[s.ShardOf(taskID)]
	}
	return shards[0]
}

// progressState throttles one run's progress writes.
type progressState struct {
	q *RedisTaskQueue

	mu      sync.Mutex
	last    time.Time     // when the last write was made
	held    *TaskProgress // the latest report held back, nil when none
	timer   *time.Timer   // writes held when the interval ends; nil when none is armed
	stopped bool          // the run ended: nothing more is written
}

func (ps *progressState) report(p TaskProgress) error {
	ps.mu.Lock()
	if ps.stopped {
		ps.mu.Unlock()
		return nil
	}
	wait := ProgressInterval - time.Since(ps.last)
	if wait > 0 {
		ps.held = &p
		if ps.timer == nil {
			ps.timer = time.AfterFunc(wait, ps.flushHeld)
		}
		ps.mu.Unlock()
		return nil
	}
	ps.last = time.Now()
	ps.mu.Unlock()
	return ps.q.writeProgress(p)
}

// flushHeld writes the report held back, when the interval ends.
func (ps *progressState) flushHeld() {
	ps.mu.Lock()
	p := ps.held
	ps.held, ps.timer = nil, nil
	if p == nil || ps.stopped {
		ps.mu.Unlock()
		return
	}
	ps.last = time.Now()
	ps.mu.Unlock()
	_ = ps.q.writeProgress(*p) // a lost write is superseded by the next report
}

// flushProgress ends f's progress reporting when its handler returns: the report held back, if any, is written
// now (the task's final progress), and later reports (from goroutines the handler left behind) are dropped.
func (f *inflight) flushProgress() {
	ps := f.progress.Load()
	if ps == nil {
		return
	}
	ps.mu.Lock()
	ps.stopped = true
	p := ps.held
	ps.held = nil
	if ps.timer != nil {
		ps.timer.Stop()
		ps.timer = nil
	}
	ps.mu.Unlock()
	if p != nil {
		_ = ps.q.writeProgress(*p)
	}
}

// writeProgress stores p for the queue's ControlRetention.
func (q *RedisTaskQueue) writeProgress(p TaskProgress) error {
	raw, err := json.Marshal(p)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := q.rdb.Set(ctx, q.keys.progress(p.TaskID), raw, q.cfg.ControlRetention).Err(); err != nil {
		return fmt.Errorf("taskqueue: progress: %w", classify(err))
	}
	return nil
}

// TaskProgress returns the last progress the handler of a task reported ([ReportProgress]), while the task runs
// and for [RedisConfig.ControlRetention] after its last report. A task that exists but has reported nothing gives
// a zero Percent and an empty At. An id with no progress and no task is a [*ControlError] wrapping
// [ErrNotFound]; a task that finished without reporting any, one wrapping [ErrAlreadyFinished].
func (a *Admin) TaskProgress(ctx context.Context, taskID string) (TaskProgress, error) {
	if err := validateTaskID(taskID); err != nil {
		return TaskProgress{}, err
	}
	q := a.shard(taskID)
	var prog, env *redis.StringCmd
	cmds, err := q.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		prog = p.Get(ctx, q.keys.progress(taskID))
		env = p.HGet(ctx, q.keys.key(keyTasks), taskID)
		return nil
	})
	if err := pipeErr(cmds, err); err != nil {
		return TaskProgress{}, fmt.Errorf("taskqueue: progress: %w", classify(err))
	}
	if prog.Err() == nil {
		var p TaskProgress
		if err := json.Unmarshal([]byte(prog.Val()), &p); err != nil {
			return TaskProgress{}, fmt.Errorf("%w: progress of %s: %w", ErrMalformedEnvelope, quote(taskID), err)
		}
		return p, nil
	}
	switch raw := env.Val(); {
	case errors.Is(env.Err(), redis.Nil):
		return TaskProgress{}, &ControlError{Op: "progress", TaskID: taskID, Err: ErrNotFound}
	case isCancelledRecord(raw):
		return TaskProgress{}, &ControlError{Op: "progress", TaskID: taskID, State: StateCancelled, Err: ErrAlreadyFinished}
	case isTombstone(raw):
		return TaskProgress{}, &ControlError{Op: "progress", TaskID: taskID, State: StateDone, Err: ErrAlreadyFinished}
	}
	return TaskProgress{TaskID: taskID}, nil
}
