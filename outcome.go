package taskqueue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"
	"unicode/utf8"
)

// Ack implements [TaskQueue]: every delivery in one script call, named by its pickup batch and its position in it.
// A delivery whose batch's record is gone (every delivery of the batch settled, or its lease was reclaimed) is
// asked about again by id and token, in a second call: a resent ack finds its task's tombstone.
func (q *RedisTaskQueue) Ack(ctx context.Context, ds ...*Delivery) error {
	if len(ds) == 0 {
		return nil
	}
	keys, args, order := q.ackArgs(ds)
	res, err := ackScript.Run(ctx, q.rdb, keys, args...).Int64Slice()
	if err != nil {
		return fmt.Errorf("taskqueue: ack: %w", classify(err))
	}
	if len(res) != len(ds) {
		return fmt.Errorf("taskqueue: ack: unexpected reply of %d items", len(res))
	}
	q.releaseLocks(ctx, "leave", ds) // unique.go: only deliveries that carry a lock make a call
	var errs []error
	var unknown []*Delivery
	for i, r := range res {
		switch d := ds[order[i]]; r {
		case 1:
		case 2:
			unknown = append(unknown, d)
		default:
			errs = append(errs, fmt.Errorf("%w: ack of %s", ErrLeaseLost, quote(d.Spec.TaskID)))
		}
	}
	if len(unknown) > 0 {
		args := make([]any, 4, 4+2*len(unknown))
		args[0], args[1], args[2], args[3] = q.cfg.SettledWindow, 0, 0, 0
		for _, d := range unknown {
			args = append(args, d.Spec.TaskID, d.Token)
		}
		res, err := ackScript.Run(ctx, q.rdb, q.keys.ack, args...).Int64Slice()
		if err != nil {
			return fmt.Errorf("taskqueue: ack: %w", classify(err))
		}
		for i, d := range unknown {
			if i >= len(res) || res[i] != 1 {
				errs = append(errs, fmt.Errorf("%w: ack of %s", ErrLeaseLost, quote(d.Spec.TaskID)))
			}
		}
	}
	return errors.Join(errs...)
}

// Retry implements [TaskQueue]. The rewritten envelope always fits what pickup reads back (see
// [EnvelopeHeadroom]): its last_error is cut shorter when needed. An envelope that does not fit even without a
// last_error (one that enqueue never accepted, stored by something else within bytes of the read limit) is
// dead-lettered instead, as it is stored, with a reason wrapping [ErrEnvelopeTooLarge] and the cause.
func (q *RedisTaskQueue) Retry(ctx context.Context, d *Delivery, delay time.Duration, cause error) error {
	env := *d.env
	env.Attempt++
	env.Status = StateRetry
	env.LastError = truncate(errString(cause), maxLastError)
	env.FailedAt = unixSeconds(d.failed())
	raw, err := q.fitted(&env)
	if errors.Is(err, ErrEnvelopeTooLarge) {
		reason := fmt.Errorf("%w; could not retry it after: %w", err, cause)
		q.cfg.Logger.WarnContext(ctx, "taskqueue: parked a task whose retry would not fit", slog.String("task_id", truncate(d.Spec.TaskID, 64)), slog.Any("error", err))
		return q.settle(ctx, "dead", d.Spec.TaskID, d, "", 0, reason.Error(), d.env.GroupID)
	}
	if err != nil {
		return err
	}
	return q.settle(ctx, "retry", d.Spec.TaskID, d, string(raw), delay, "", "")
}

// DeadLetter implements [TaskQueue]. It records a failed run, as Retry does: the envelope's attempt counts it, so a
// task dead after 3 failed runs says "attempt":3, as its [ErrRetriesExhausted] reason ("after 3 attempts") and the
// worker's log line ("attempt"=3) do. The reason keeps up to 4096 bytes of cause; the rewritten envelope's
// last_error is cut shorter when the whole would not fit what pickup reads back (see [EnvelopeHeadroom]), and an
// envelope that does not fit even without it is dead-lettered as it is stored.
func (q *RedisTaskQueue) DeadLetter(ctx context.Context, d *Delivery, cause error) error {
	env := *d.env
	env.Attempt++
	env.Status = StateDead
	reason := truncate(errString(cause), maxLastError)
	env.LastError = reason
	env.FailedAt = unixSeconds(d.failed())
	raw, err := q.fitted(&env)
	if errors.Is(err, ErrEnvelopeTooLarge) {
		raw, err = nil, nil // keep the stored envelope: it reads back as it did at pickup
	}
	if err != nil {
		return err
	}
	return q.settle(ctx, "dead", d.Spec.TaskID, d, string(raw), 0, reason, env.GroupID)
}

// maxLastError is the longest error text recorded, in an envelope's last_error and as a dead letter's reason;
// a last_error may be cut shorter still by [RedisTaskQueue.fitted].
const maxLastError = 4096

// fitted marshals an envelope that delivery rewrote (Retry, DeadLetter) within what the decoder reads back,
// Limits.MaxEnvelopeBytes + [EnvelopeHeadroom], cutting env.LastError shorter when the whole would not fit. An
// envelope accepted at enqueue always fits with at least 4096 bytes of plain last_error: the delivery fields
// take less than the headroom. The error wraps [ErrEnvelopeTooLarge] when it does not fit even without a
// last_error.
func (q *RedisTaskQueue) fitted(env *envelope) ([]byte, error) {
	limit := q.cfg.Limits.readLimit()
	raw, err := env.marshal()
	if err == nil && len(raw) > limit && env.LastError != "" {
		quoted := len(appendString(nil, env.LastError))
		env.LastError = cutQuoted(env.LastError, quoted-(len(raw)-limit))
		raw, err = env.marshal()
	}
	if err == nil && len(raw) > limit {
		return nil, &EnvelopeError{Kind: ErrEnvelopeTooLarge, Detail: fmt.Sprintf("%d bytes once rewritten, limit %d", len(raw), limit)}
	}
	return raw, err
}

// cutQuoted returns s, or its longest prefix (cut between runes) followed by "…", whose JSON string (as
// appendString writes it, quotes included) takes at most budget bytes; "" when not even "…" fits.
func cutQuoted(s string, budget int) string {
	var buf [16]byte
	budget -= len(`""`) + len("…")
	n := 0
	for i := 0; i < len(s); {
		_, size := utf8.DecodeRuneInString(s[i:])
		w := len(appendString(buf[:0], s[i:i+size])) - len(`""`)
		if n+w > budget {
			if budget < 0 {
				return ""
			}
			return s[:i] + "…"
		}
		n += w
		i += size
	}
	return s
}

// failed returns the time of the delivery's failure: when its first Retry or DeadLetter call was made. A call
// resent after a lost reply thus sends the envelope it sent before, by which settle.lua recognises it.
func (d *Delivery) failed() time.Time {
	if d.failedAt.IsZero() {
		d.failedAt = time.Now()
	}
	return d.failedAt
}

// Release implements [TaskQueue].
func (q *RedisTaskQueue) Release(ctx context.Context, d *Delivery) error {
	return q.settle(ctx, "release", d.Spec.TaskID, d, "", 0, "", "")
}

// settle runs settle.lua for the delivery d of the task id. A dead letter of a group member (groupID names a run)
// also completes its group.
func (q *RedisTaskQueue) settle(ctx context.Context, mode, id string, d *Delivery, env string, delay time.Duration, reason, groupID string) error {
	ms := delay.Milliseconds()
	if delay > 0 && ms == 0 {
		ms = 1
	}
	keys, args := q.keys.all, []any{mode, id, d.base, d.pos, env, ms, truncate(reason, maxLastError), 0}
	if mode == "dead" && isGroupRun(groupID) {
		keys, args[7] = q.groupKeys(groupID), numKeys+1
	}
	n, err := settleScript.Run(ctx, q.rdb, keys, args...).Int64()
	if err != nil {
		return fmt.Errorf("taskqueue: %s: %w", mode, classify(err))
	}
	if n != 1 {
		return fmt.Errorf("%w: %s of %s", ErrLeaseLost, mode, quote(id))
	}
	if mode == "dead" {
		q.releaseLocks(ctx, "leave", []*Delivery{d}) // unique.go
	}
	return nil
}

// byBatch returns the indexes of ds grouped by pickup batch, each batch where its first delivery is, and the
// deliveries of a batch in the order of ds: the order in which ack.lua and extend.lua name them and answer.
func byBatch(ds []*Delivery) (order []int, counts []int) {
	order = make([]int, 0, len(ds))
	if len(ds) > 0 && ds[0].base == ds[len(ds)-1].base { // usually one batch: no map
		same := true
		for _, d := range ds {
			if d.base != ds[0].base {
				same = false
				break
			}
		}
		if same {
			for i := range ds {
				order = append(order, i)
			}
			return order, []int{len(ds)}
		}
	}
	at := map[int64]int{}
	var groups [][]int
	for i, d := range ds {
		g, ok := at[d.base]
		if !ok {
			g = len(groups)
			at[d.base] = g
			groups = append(groups, nil)
		}
		groups[g] = append(groups[g], i)
	}
	for _, g := range groups {
		order = append(order, g...)
		counts = append(counts, len(g))
	}
	return order, counts
}

// ackArgs returns the KEYS and ARGV of ack.lua for a batch, and the index in ds of each of the script's answers.
// A batch without group members or results sends per pickup batch its base token, a count and per delivery its
// position and task id; otherwise every delivery sends five values and each group run's keys (or result key) are appended once. The
// deliveries hash is passed only when a delivery of the batch is not its task's first since it last settled: only
// such a task can have an entry there (reap.lua counts a lease that expired, and the next pickup reports it in
// Delivery.Deliveries), and the hash usually does not exist, which a Cluster refuses in a call's KEYS while the
// queue's slot moves (keySet in keys.go).
func (q *RedisTaskQueue) ackArgs(ds []*Delivery) ([]string, []any, []int) {
	plain, redelivered, keyed := true, false, false
	for _, d := range ds {
		if d.result != nil || isGroupRun(d.Spec.GroupID) {
			plain = false
		}
		if d.Spec.FlowKey != "" {
			keyed = true
		}
		if d.Deliveries != 1 {
			redelivered = true
		}
	}
	keys, dk := q.keys.ack, 0
	if redelivered {
		keys, dk = q.keys.ackRedelivered, len(q.keys.ackRedelivered)
	}
	order, counts := byBatch(ds)
	stride := 2
	if !plain {
		stride = 5
		keys = slices.Clone(keys)
	}
	args := make([]any, 4, 4+2*len(counts)+stride*len(ds))
	args[0], args[1], args[2], args[3] = q.cfg.SettledWindow, stride, q.cfg.ResultTTL.Milliseconds(), dk
	runs := map[string]int{}
	at := 0
	for _, c := range counts {
		args = append(args, flowBase(ds[order[at]].base, keyed && batchKeyed(ds, order[at:at+c])), c) // flow.go
		for _, i := range order[at : at+c] {
			d := ds[i]
			if plain {
				args = append(args, d.pos, d.Spec.TaskID)
				continue
			}
			g, r := 0, 0
			if gid := d.Spec.GroupID; isGroupRun(gid) {
				if g = runs[gid]; g == 0 {
					g = len(keys) + 1 // KEYS is 1-based: the hash is KEYS[g], the done list KEYS[g+1] (runKeys)
					keys = append(keys, q.runKeys(gid)...)
					runs[gid] = g
				}
			} else if d.result != nil {
				keys = append(keys, q.keys.result(d.Spec.TaskID))
				r = len(keys)
			}
			args = append(args, d.pos, d.Spec.TaskID, g, r, d.result)
		}
		at += c
	}
	if keyed {
		keys = append(slices.Clip(keys), q.keys.ackFlow...) // ack.lua reads them as its last four KEYS
	}
	return keys, args, order
}
