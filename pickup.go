package taskqueue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Dequeue implements [TaskQueue]. It leases ready tasks in one script call; when none is ready it blocks on the
// queue's wake-up list (no polling) until an enqueue signals, a delayed task falls due, or opts.Wait passes.
// Tasks that cannot be decoded or resolved are dead-lettered with the reason and not returned.
func (q *RedisTaskQueue) Dequeue(ctx context.Context, opts DequeueOptions) ([]*Delivery, error) {
	return dequeueDecoded(ctx, q.dequeueRaw, q.rehydrateLeased, opts)
}

// dequeueDecoded is Dequeue for a queue whose pickup is split from the decoding (RedisTaskQueue, ShardedQueue):
// it leases with dequeueRaw and decodes with rehydrate, and leases again, for what remains of opts.Wait, when
// every task it leased was parked.
func dequeueDecoded(ctx context.Context, dequeueRaw func(context.Context, DequeueOptions) (leased, error),
	rehydrate func(context.Context, leased) []*Delivery, opts DequeueOptions) ([]*Delivery, error) {
	if opts.Consumer != "" && !consumerNamePattern.MatchString(opts.Consumer) {
		return nil, fmt.Errorf("%w: consumer %s must match %s", ErrInvalidConfig, quote(opts.Consumer), consumerNamePattern)
	}
	for end := time.Now().Add(opts.Wait); ; opts.Wait = time.Until(end) {
		l, err := dequeueRaw(ctx, opts)
		if err != nil || len(l.ds) == 0 {
			return nil, err
		}
		if ds := rehydrate(ctx, l); len(ds) > 0 || time.Until(end) <= 0 {
			return ds, nil
		}
	}
}

// dequeueRaw is Dequeue without the decoding: the worker decodes a pickup while its next one is on its way.
func (q *RedisTaskQueue) dequeueRaw(ctx context.Context, opts DequeueOptions) (leased, error) {
	if opts.Max < 1 {
		opts.Max = 1
	}
	start := time.Now()
	for {
		l, nextDue, err := q.dequeueOnce(ctx, opts.Max)
		if err != nil || len(l.ds) > 0 {
			return l, err
		}
		remaining := opts.Wait - time.Since(start)
		if remaining <= 0 {
			return leased{}, nil
		}
		wait, dueWait := remaining, false
		if nextDue >= 0 && nextDue < wait {
			wait, dueWait = nextDue, true
		}
		interrupted, err := q.waitForWork(ctx, opts.Consumer, wait, dueWait)
		if err != nil {
			return leased{}, err
		}
		if interrupted {
			return leased{}, nil
		}
	}
}

// waitKeys are the lists a pickup blocks on: the queue's wake-up list and the consumer's own, if named.
func (q *RedisTaskQueue) waitKeys(consumer string) []string {
	keys := []string{q.keys.key(keyWake)}
	if consumer != "" {
		keys = append(keys, q.keys.consumerWake(consumer))
	}
	return keys
}

// waitForWork blocks a pickup until a wake-up, an interrupt of the consumer, or wait; dueWait says that wait
// ends when a delayed task falls due (by the server's clock, as the dequeue script reported it). It reports
// whether the consumer was interrupted.
func (q *RedisTaskQueue) waitForWork(ctx context.Context, consumer string, wait time.Duration, dueWait bool) (bool, error) {
	if wait < time.Millisecond {
		return false, nil
	}
	keys := q.waitKeys(consumer)
	if dueWait && consumer != "" {
		// Redis checks the timeouts of blocked clients once per cron tick (every 100ms at the default hz 10), so
		// a BLPOP that ends when the task falls due returns up to 100ms late. A local timer wakes this consumer
		// alone instead; the BLPOP timeout stays as the safety net if its push fails.
		stop := q.dueTimer(keys[1], wait)
		defer stop()
		if q.dueSlack > 0 {
			wait += q.dueSlack
		} else {
			wait += dueWakeSlack
		}
	}
	woke, err := q.block(ctx, wait, keys...)
	if dueWait && consumer != "" && err == nil && woke == "" {
		q.dueTimeouts.Add(1)
	}
	return woke != "" && woke != q.keys.key(keyWake), err
}

// block waits on the lists keys (all of this queue's slot) for at most wait and returns the one that fired ("" on
// timeout). A due token (see dueTimer) counts as a wake-up of the queue: it returns the queue's wake-up list.
func (q *RedisTaskQueue) block(ctx context.Context, wait time.Duration, keys ...string) (string, error) {
	if wait < time.Millisecond {
		return "", nil
	}
	var res []string
	var err error
	// BLPOP takes fractional seconds, but go-redis's BLPop rounds to whole ones. A short wait (a delayed task
	// falling due) goes through Do instead, which reads under the client's read timeout: only when it fits.
	if wait < time.Second && (q.readTimeout == 0 || wait+50*time.Millisecond <= q.readTimeout) {
		args := make([]any, 0, len(keys)+2)
		args = append(args, "blpop")
		for _, k := range keys {
			args = append(args, k)
		}
		args = append(args, strconv.FormatFloat(wait.Seconds(), 'f', 3, 64))
		res, err = q.rdb.Do(ctx, args...).StringSlice()
	} else {
		res, err = q.rdb.BLPop(ctx, max(wait.Truncate(time.Second), time.Second), keys...).Result()
	}
	if errors.Is(err, redis.Nil) {
		q.blockTimeouts.Add(1)
		return "", nil // timed out
	}
	if isUnblocked(err) {
		return "", nil // ended by a failover: the caller's next pickup finds the new primary
	}
	if err != nil {
		return "", fmt.Errorf("taskqueue: wait for tasks: %w", classify(err))
	}
	if len(res) == 0 {
		return "", nil
	}
	if len(res) > 1 && res[1] == dueToken {
		q.dueWakes.Add(1)
		return q.keys.key(keyWake), nil
	}
	return res[0], nil
}

// dueToken is what a consumer's due timer pushes to the consumer's own wake-up list; any other token there is
// an interrupt.
const dueToken = "due"

// dueWakeSlack is how much longer than the due time a consumer blocks when its due timer is armed: the BLPOP
// timeout then only matters if the timer's push fails.
const dueWakeSlack = 100 * time.Millisecond

// dueTimer arms a timer that pushes dueToken to key (a consumer's own wake-up list) after wait, waking only that
// consumer. The returned func disarms it, or waits for the push in flight, so that no goroutine outlives the
// wait. A token pushed after the consumer woke for another reason costs it one early, empty pickup: the dequeue
// script, on the server's clock, decides what is due.
func (q *RedisTaskQueue) dueTimer(key string, wait time.Duration) (stop func()) {
	pushed := make(chan struct{})
	t := time.AfterFunc(wait, func() {
		defer close(pushed)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, _ = q.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.RPush(ctx, key, dueToken)
			p.PExpire(ctx, key, time.Minute) // a consumer that died waiting leaves nothing behind for long
			return nil
		})
	})
	return func() {
		if !t.Stop() {
			<-pushed
		}
	}
}

// Interrupt implements [TaskQueue]. It pushes to the consumer's own wake-up list, which expires by itself if the
// consumer was not waiting; [TaskWorker.Stop] removes it once its pickup has ended.
func (q *RedisTaskQueue) Interrupt(ctx context.Context, consumer string) error {
	if !consumerNamePattern.MatchString(consumer) {
		return fmt.Errorf("%w: consumer %s must match %s", ErrInvalidConfig, quote(consumer), consumerNamePattern)
	}
	key := q.keys.consumerWake(consumer)
	_, err := q.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.RPush(ctx, key, "stop")
		p.PExpire(ctx, key, time.Minute)
		return nil
	})
	return err
}

// clearInterrupt removes a consumer's wake-up list after its last pickup.
func (q *RedisTaskQueue) clearInterrupt(ctx context.Context, consumer string) error {
	return q.rdb.Del(ctx, q.keys.consumerWake(consumer)).Err()
}

// leased is what one pickup leased, before its envelopes are decoded: each delivery's token, counts and lease,
// with the id and the raw envelope beside it. A MemoryQueue's pickup holds decoded deliveries alone.
type leased struct {
	ds   []*Delivery
	ids  []string
	raws []string
}

// add appends what another pickup leased.
func (l *leased) add(o leased) {
	l.ds = append(l.ds, o.ds...)
	l.ids = append(l.ids, o.ids...)
	l.raws = append(l.raws, o.raws...)
}

// dequeueOnce runs the dequeue script and reads its reply, decoding no envelope.
func (q *RedisTaskQueue) dequeueOnce(ctx context.Context, n int) (leased, time.Duration, error) {
	sent := time.Now()
	res, err := q.runDequeue(ctx, n) // flow.go
	if err != nil {
		return leased{}, 0, fmt.Errorf("taskqueue: dequeue: %w", classify(err))
	}
	if len(res) < 3 || (len(res)-3)%3 != 0 {
		return leased{}, 0, fmt.Errorf("taskqueue: dequeue: unexpected reply of %d items", len(res))
	}
	now, _ := res[0].(int64)
	nextDue := time.Duration(-1)
	if ms, _ := res[1].(int64); ms >= 0 {
		nextDue = time.Duration(ms) * time.Millisecond
	}
	base, _ := res[2].(int64)
	deadline := time.UnixMilli(now).Add(q.cfg.Lease)
	k := (len(res) - 3) / 3
	l := leased{ds: make([]*Delivery, 0, k), ids: make([]string, 0, k), raws: make([]string, 0, k)}
	all := make([]Delivery, k) // one allocation for the pickup's deliveries
	for i := 3; i < len(res); i += 3 {
		id, _ := res[i].(string)
		deliveries, _ := res[i+1].(int64)
		raw, _ := res[i+2].(string)
		pos := len(l.ds) + 1
		d := &all[pos-1]
		*d = Delivery{Token: base + int64(pos) - 1, Deliveries: int(deliveries), LeaseDeadline: deadline,
			base: base, pos: pos, localEnds: sent.Add(q.cfg.Lease)}
		l.ds = append(l.ds, d)
		l.ids = append(l.ids, id)
		l.raws = append(l.raws, raw)
	}
	return l, nextDue, nil
}

// rehydrateLeased decodes and resolves what a pickup leased; the deliveries that cannot run are parked and left
// out.
func (q *RedisTaskQueue) rehydrateLeased(ctx context.Context, l leased) []*Delivery {
	out := l.ds[:0]
	for i, d := range l.ds {
		if q.rehydrateOne(ctx, d, l.ids[i], l.raws[i]) {
			out = append(out, d)
		}
	}
	q.releaseLocks(ctx, "start", out) // unique.go: only tasks that carry a lock make a call
	return out
}

// rehydrateOne decodes and resolves one leased delivery into d; one that cannot run is parked (false).
func (q *RedisTaskQueue) rehydrateOne(ctx context.Context, d *Delivery, id, raw string) bool {
	spec, env, err := q.rehydrate(id, raw)
	if err == nil && env.TaskID != id {
		err = malformed(fmt.Sprintf("task_id %s does not match the id it is stored under", quote(env.TaskID)))
	}
	if err != nil {
		q.park(ctx, id, d, err, env, raw)
		return false
	}
	d.Spec, d.env = spec, env
	return true
}

// rehydrate decodes an envelope stored under the task id id and resolves it into a runnable spec (the seed's
// dequeue).
func (q *RedisTaskQueue) rehydrate(id, raw string) (*TaskSpec, *envelope, error) {
	env, err := decodeStored(id, stringBytes(raw), q.cfg.Limits)
	if err != nil {
		return nil, nil, err
	}
	if q.signer != nil { // before anything reads the task's content
		if err := q.signer.verify(env); err != nil {
			return nil, nil, err
		}
	}
	exe, err := q.reg.Resolve(env.ResolverID, env.SerializedTask)
	if err != nil {
		return nil, env, err
	}
	r := &resolvedSpec{st: env.SerializedTask} // the spec and its own copy of the serialized task, in one allocation
	r.spec = TaskSpec{
		TaskID:         env.TaskID,
		Executable:     exe,
		SerializedTask: &r.st,
		ResolverID:     env.ResolverID,
		GroupID:        env.GroupID,
		MaxRetries:     env.MaxRetries,
		Timeout:        time.Duration(env.TimeoutMS) * time.Millisecond,
		Status:         env.Status,
		CreatedAt:      fromUnixSeconds(env.CreatedAt),
		Attempt:        env.Attempt,
		LastError:      env.LastError,
		Metadata:       maps.Clone(env.Meta), // the handler's own copy: retries rewrite env.Meta
		Priority:       Priority(env.Priority),
		FlowKey:        env.FlowKey,
	}
	return &r.spec, env, nil
}

// resolvedSpec is a rehydrated spec with the serialized task it points to.
type resolvedSpec struct {
	spec TaskSpec
	st   SerializedTask
}

// park dead-letters a delivery that cannot be run, with the reason; a group member completes its group as failed.
// env is the decoded envelope when it decoded and, under signing, verified (nil otherwise): its status is then
// rewritten to dead, re-marshalled (status is not signed, so a signature still verifies). An envelope that did not
// decode or verify is kept byte-exact, as stored, for an operator: its status stays what it was, and the reason
// says why it was parked.
func (q *RedisTaskQueue) park(ctx context.Context, id string, d *Delivery, cause error, env *envelope, raw string) {
	rewritten := ""
	if env != nil {
		e := *env
		e.Status = StateDead
		if b, err := q.fitted(&e); err == nil && e.LastError == env.LastError {
			rewritten = string(b)
		}
	}
	err := q.settle(ctx, "dead", id, d, rewritten, 0, cause.Error(), groupOfStored(env, raw, q.cfg.Limits))
	if err != nil {
		q.cfg.Logger.ErrorContext(ctx, "taskqueue: could not park task; it returns after its lease", slog.String("task_id", truncate(id, 64)),
			slog.Any("error", err), slog.Any("reason", cause))
		return
	}
	// Logged once parked: a park refused (its lease lost to a slow pickup) is tried again after the lease, and
	// logs then.
	q.cfg.Logger.WarnContext(ctx, "taskqueue: parked a task that cannot run", slog.String("task_id", truncate(id, 64)), slog.Any("error", cause))
}
