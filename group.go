package taskqueue

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Parallel groups (Graflow's group_id, run bulk-synchronously): a producer dispatches the members of a group in
// one script call, then waits at a barrier until every member has completed, applies a [GroupPolicy] and goes
// on. Each dispatch is a run with its own id, so one group name can run several times at once. See
// docs/groups.md.

// MaxGroupMembers bounds the members of one group run.
const MaxGroupMembers = 1000

// GroupOptions configure [RedisTaskQueue.DispatchGroup]. The zero value takes every default.
type GroupOptions struct {
	// TTL bounds the life of the run's keys: set at dispatch, refreshed by each member's completion, removed by a
	// completed [GroupRun.Wait]. Default 24h, minimum 1s.
	TTL time.Duration
}

// GroupRun is one dispatch of a group: what [GroupRun.Wait] waits for.
type GroupRun struct {
	// Name is the group's name, as given to DispatchGroup.
	Name string
	// RunID identifies this run: a generated id (22 letters and digits), new for every dispatch.
	RunID string
	// MemberIDs are the members' ids, in dispatch order (each spec's TaskID, or its index when it had none).
	MemberIDs []string
	// TaskIDs are the members' task ids, "<group id>:<member id>", in the same order.
	TaskIDs []string

	q *RedisTaskQueue
}

// GroupID is the group_id that the members' envelopes carry: "<name>@<run id>".
func (r *GroupRun) GroupID() string { return r.Name + "@" + r.RunID }

// DispatchGroup enqueues specs as the members of one new run of the group name, in one script call: either all
// of them and the run's barrier are stored, or nothing is. name is 1 to 64 letters, digits and "._-", starting
// with a letter or digit. A spec's TaskID, if set, is its member id (same characters, unique in the group; by
// default the member's index); its task id becomes "<name>@<run id>:<member id>". A spec's GroupID must be empty
// or name. Members are picked up in order, after every task enqueued before them (FIFO across groups).
//
// A producer that loses the reply cannot tell whether the run was stored; dispatching again starts a second run.
func (q *RedisTaskQueue) DispatchGroup(ctx context.Context, name string, specs []*TaskSpec, opts *GroupOptions) (*GroupRun, error) {
	return q.dispatchGroup(ctx, name, newID(), specs, opts)
}

// dispatchGroup is DispatchGroup with the run id given: a ShardedQueue picks the shard by it (sharded_graph.go).
func (q *RedisTaskQueue) dispatchGroup(ctx context.Context, name, runID string, specs []*TaskSpec, opts *GroupOptions) (*GroupRun, error) {
	ttl, err := groupTTL(opts)
	if err != nil {
		return nil, err
	}
	if !groupNamePattern.MatchString(name) {
		return nil, fmt.Errorf("%w: group name %s must match %s", ErrInvalidConfig, quote(name), groupNamePattern)
	}
	if len(specs) == 0 || len(specs) > MaxGroupMembers {
		return nil, fmt.Errorf("%w: a group has 1 to %d members, not %d", ErrInvalidConfig, MaxGroupMembers, len(specs))
	}
	run := &GroupRun{Name: name, RunID: runID, q: q, MemberIDs: make([]string, len(specs)), TaskIDs: make([]string, len(specs))}
	gid := run.GroupID()
	args := make([]any, 3, 3+3*len(specs))
	args[0], args[1], args[2] = name, ttl.Milliseconds(), len(specs)
	seen := make(map[string]bool, len(specs))
	for i, spec := range specs {
		if spec == nil {
			return nil, &EnqueueError{Index: i, Err: errNilSpec()}
		}
		member := spec.TaskID
		if member == "" {
			member = strconv.Itoa(i)
		}
		switch {
		case !groupNamePattern.MatchString(member):
			return nil, &EnqueueError{Index: i, TaskID: spec.TaskID, Err: fmt.Errorf("%w: member id must match %s", ErrInvalidTaskID, groupNamePattern)}
		case seen[member]:
			return nil, &EnqueueError{Index: i, TaskID: spec.TaskID, Err: fmt.Errorf("%w: member id %s twice in the group", ErrInvalidTaskID, quote(member))}
		case spec.GroupID != "" && spec.GroupID != name:
			return nil, &EnqueueError{Index: i, TaskID: spec.TaskID, Err: fmt.Errorf("%w: GroupID %s differs from the group's name", ErrInvalidConfig, quote(spec.GroupID))}
		case spec.Priority != PriorityDefault: // members run at the default level (docs/flow-control.md)
			return nil, &EnqueueError{Index: i, TaskID: spec.TaskID, Err: fmt.Errorf("%w: TaskSpec.Priority of a group member must be the default", ErrInvalidPriority)}
		}
		seen[member] = true
		s := *spec
		s.TaskID, s.GroupID = gid+":"+member, gid
		_, raw, delay, err := q.seal(&s)
		if err != nil {
			return nil, &EnqueueError{Index: i, TaskID: s.TaskID, Err: err}
		}
		run.MemberIDs[i], run.TaskIDs[i] = member, s.TaskID
		args = append(args, s.TaskID, raw, delay.Milliseconds())
	}
	res, err := dispatchScript.Run(ctx, q.rdb, q.groupKeys(gid), args...).Slice()
	if err != nil {
		return nil, fmt.Errorf("taskqueue: dispatch group %s: %w", gid, classify(err))
	}
	if code, _ := res[0].(int64); code != 1 {
		// Only a colliding random run id gets here.
		return nil, fmt.Errorf("%w: group run %s or one of its task ids exists already", ErrTaskIDConflict, gid)
	}
	return run, nil
}

func groupTTL(opts *GroupOptions) (time.Duration, error) {
	ttl := 24 * time.Hour
	if opts != nil && opts.TTL != 0 {
		ttl = opts.TTL
	}
	if ttl < time.Second {
		return 0, fmt.Errorf("%w: group TTL must be at least 1s", ErrInvalidConfig)
	}
	return ttl, nil
}

// OpenGroup returns the run named by a group id ("<name>@<run id>", [GroupRun.GroupID]), so that another
// process can wait for it. Its MemberIDs and TaskIDs are empty: [GroupRun.Wait] reads the members from Redis.
func (q *RedisTaskQueue) OpenGroup(groupID string) (*GroupRun, error) {
	if !isGroupRun(groupID) {
		return nil, fmt.Errorf("%w: group id %s must be <name>@<run id>", ErrInvalidConfig, quote(groupID))
	}
	name, run, _ := strings.Cut(groupID, "@")
	return &GroupRun{Name: name, RunID: run, q: q}, nil
}

// WaitOptions configure [GroupRun.Wait]. The zero value waits as long as the context allows, applies
// [StrictPolicy] and removes the run's keys once it completed.
type WaitOptions struct {
	// Timeout bounds the wait on top of the context's deadline; 0 for none.
	Timeout time.Duration
	// Policy decides whether the completed group succeeded. Default [StrictPolicy].
	Policy GroupPolicy
	// Keep leaves the run's keys after a completed wait (they still expire after the run's TTL), so that it can
	// be waited for again.
	Keep bool
}

// groupFallback bounds each blocking wait: a wake-up lost (a failover) costs at most this long, never a hang.
const groupFallback = time.Second

// Wait blocks until every member of the run has completed (acknowledged, or dead-lettered: a member never
// completes by a retry that will run again), then returns the outcome of each and the policy's verdict: nil, or
// an error wrapping [ErrGroupFailed]. It wakes within milliseconds of the last member's completion (the script
// that records it pushes a wake-up the waiter blocks on; no polling). A completed wait removes the run's keys
// unless opts.Keep is set.
//
// When the context ends or opts.Timeout passes first, Wait returns the outcomes so far and an error wrapping
// [ErrGroupIncomplete] and the cause ([ErrGroupTimeout], context.Canceled or context.DeadlineExceeded); the run
// goes on and can be waited for again. A run that does not exist (any more) is [ErrGroupNotFound].
func (r *GroupRun) Wait(ctx context.Context, opts *WaitOptions) (*GroupResult, error) {
	var o WaitOptions
	if opts != nil {
		o = *opts
	}
	if o.Policy == nil {
		o.Policy = StrictPolicy()
	}
	if o.Timeout < 0 {
		return nil, fmt.Errorf("%w: negative wait timeout", ErrInvalidConfig)
	}
	if o.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, o.Timeout, ErrGroupTimeout)
		defer cancel()
	}
	q, gid := r.q, r.GroupID()
	waiter, release := q.openWaiter(ctx, gid)
	defer release()
	for {
		total, done, err := q.groupProgress(ctx, gid)
		if err != nil {
			return nil, err
		}
		if done >= total {
			return r.finish(ctx, o)
		}
		if ctx.Err() != nil {
			return r.incomplete(ctx, done, total)
		}
		wait := groupFallback
		if dl, ok := ctx.Deadline(); ok {
			wait = min(wait, time.Until(dl))
		}
		if err := q.blockOn(ctx, wait, q.keys.groupDone(gid), waiter); err != nil {
			if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
				<-ctx.Done() // the connection's deadline (the context's) can fire a moment before the context
			}
			if ctx.Err() != nil {
				return r.incomplete(ctx, done, total)
			}
			return nil, fmt.Errorf("taskqueue: wait for group %s: %w", gid, err)
		}
	}
}

// groupProgress reads a run's member count and how many completed.
func (q *RedisTaskQueue) groupProgress(ctx context.Context, gid string) (total, done int, err error) {
	vals, err := q.rdb.HMGet(context.WithoutCancel(ctx), q.keys.group(gid), "total", "done").Result()
	if err != nil {
		return 0, 0, fmt.Errorf("taskqueue: wait for group %s: %w", gid, classify(err))
	}
	ts, _ := vals[0].(string)
	ds, _ := vals[1].(string)
	total, err1 := strconv.Atoi(ts)
	done, err2 := strconv.Atoi(ds)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("%w: %s", ErrGroupNotFound, gid)
	}
	return total, done, nil
}

// finish reads the outcomes of a completed run, applies the policy and removes the run's keys.
func (r *GroupRun) finish(ctx context.Context, o WaitOptions) (*GroupResult, error) {
	q, gid := r.q, r.GroupID()
	res, err := r.read(ctx)
	if err != nil {
		return nil, err
	}
	if !o.Keep {
		if err := q.rdb.Del(context.WithoutCancel(ctx), q.keys.group(gid), q.keys.groupDone(gid)).Err(); err != nil {
			return res, fmt.Errorf("taskqueue: clean up group %s: %w", gid, classify(err))
		}
	}
	if err := o.Policy.Evaluate(res); err != nil {
		if !errors.Is(err, ErrGroupFailed) {
			err = fmt.Errorf("%w: %s: %w", ErrGroupFailed, gid, err)
		}
		return res, err
	}
	return res, nil
}

// incomplete returns the outcomes so far of a wait that ended early, with its cause.
func (r *GroupRun) incomplete(ctx context.Context, done, total int) (*GroupResult, error) {
	cause := context.Cause(ctx)
	res, err := r.read(context.WithoutCancel(ctx))
	if err != nil {
		res = nil
	}
	return res, fmt.Errorf("%w: %s: %d of %d members done: %w", ErrGroupIncomplete, r.GroupID(), done, total, cause)
}

// read reads a run's hash into a GroupResult.
func (r *GroupRun) read(ctx context.Context) (*GroupResult, error) {
	gid := r.GroupID()
	h, err := r.q.rdb.HGetAll(context.WithoutCancel(ctx), r.q.keys.group(gid)).Result()
	if err != nil {
		return nil, fmt.Errorf("taskqueue: read group %s: %w", gid, classify(err))
	}
	if len(h) == 0 {
		return nil, fmt.Errorf("%w: %s", ErrGroupNotFound, gid)
	}
	return newGroupResult(r, h), nil
}

// openWaiter returns a waiter key of the group run gid, which an end of ctx interrupts (interruptWaiter), and
// the function that releases it when the wait is over: a group's and a workflow's Wait block on it.
func (q *RedisTaskQueue) openWaiter(ctx context.Context, gid string) (string, func()) {
	waiter := q.keys.groupWaiter(gid, newID()[:16])
	stop := context.AfterFunc(ctx, func() { q.interruptWaiter(waiter) })
	return waiter, func() {
		if !stop() {
			// The interrupt ran or is running: remove what it pushed (it expires by itself otherwise).
			c, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			_ = q.rdb.Del(c, waiter).Err()
			cancel()
		}
	}
}

// interruptWaiter ends a waiter's blocking wait: its context ended.
func (q *RedisTaskQueue) interruptWaiter(key string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, _ = q.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.RPush(ctx, key, "stop")
		p.PExpire(ctx, key, time.Minute)
		return nil
	})
}

// blockOn blocks on keys for at most wait (BLPOP), returning early when any of them gets an element.
func (q *RedisTaskQueue) blockOn(ctx context.Context, wait time.Duration, keys ...string) error {
	if wait < time.Millisecond {
		return nil
	}
	var err error
	// BLPOP takes fractional seconds, but go-redis's BLPop rounds to whole ones: a shorter wait goes through Do,
	// which reads under the client's read timeout, when it fits (as in Dequeue).
	if wait < time.Second || q.readTimeout == 0 || wait+50*time.Millisecond <= q.readTimeout {
		if q.readTimeout != 0 && wait+50*time.Millisecond > q.readTimeout {
			wait = max(q.readTimeout-50*time.Millisecond, time.Millisecond)
		}
		args := make([]any, 0, len(keys)+2)
		args = append(args, "blpop")
		for _, k := range keys {
			args = append(args, k)
		}
		args = append(args, strconv.FormatFloat(wait.Seconds(), 'f', 3, 64))
		err = q.rdb.Do(ctx, args...).Err()
	} else {
		err = q.rdb.BLPop(ctx, wait.Truncate(time.Second), keys...).Err()
	}
	if errors.Is(err, redis.Nil) {
		q.blockTimeouts.Add(1)
		return nil
	}
	if err == nil {
		return nil
	}
	return classify(err)
}
