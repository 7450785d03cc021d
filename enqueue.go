package taskqueue

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// EnqueueOutcome says what an enqueue did with one task. Every queue ([RedisTaskQueue], [ShardedQueue],
// [MemoryQueue]) writes it into [TaskSpec.Enqueued], for each spec of a batch.
type EnqueueOutcome uint8

// The outcomes of an enqueue.
const (
	// NotEnqueued is the zero value: the spec was not enqueued (its enqueue failed, with an error for it), or not
	// yet. After an error that leaves the outcome unknown (Redis unreachable, a lost reply), send the same spec
	// again: its TaskID was written back, so the retry cannot make a second task.
	NotEnqueued EnqueueOutcome = iota
	// Stored: the task was new and is now queued.
	Stored
	// Duplicate: a task with this id and the same content was already there (pending, scheduled, running,
	// retrying or dead); nothing changed.
	Duplicate
	// AlreadyCompleted: a task with this id completed within the settled window ([RedisConfig.SettledWindow]);
	// nothing was stored. To run the same work again, use a new task id.
	AlreadyCompleted
	// Dropped: the spec's [Unique] key is held by another task and [Unique.DropDuplicate] is set; nothing was
	// stored.
	Dropped
	// Debounced: the spec's [UniqueDebounce] key was held by a task still waiting; that task now carries this
	// spec's payload and is due later, and its id was written into the spec's TaskID.
	Debounced
)

func (o EnqueueOutcome) String() string {
	switch o {
	case NotEnqueued:
		return "not enqueued"
	case Stored:
		return "stored"
	case Duplicate:
		return "duplicate"
	case AlreadyCompleted:
		return "already completed"
	case Dropped:
		return "dropped"
	case Debounced:
		return "debounced"
	}
	return "EnqueueOutcome(" + strconv.Itoa(int(o)) + ")"
}

// prepare readies the caller's spec for an enqueue: a new task id when it has none, written back so that the
// caller can track the task and resend it safely, and the outcome cleared.
func prepare(spec *TaskSpec) {
	if spec == nil {
		return
	}
	if spec.TaskID == "" {
		spec.TaskID = newTaskID()
	}
	spec.Enqueued = NotEnqueued
}

// Enqueue implements [TaskQueue]: it serializes spec through the registry when it holds an executable and stores
// its envelope in one script call.
//
// Enqueue writes to spec: a generated task id into TaskID when it was empty (even when the enqueue then fails, so
// that a retry uses the same id), and the outcome ([Stored], [Duplicate], [AlreadyCompleted]) into Enqueued. A
// spec must therefore not be enqueued by two goroutines at once, and a spec reused as a template for new tasks
// needs its TaskID cleared first. A task's own error is an [*EnqueueError] naming its id.
func (q *RedisTaskQueue) Enqueue(ctx context.Context, spec *TaskSpec) error {
	return single(q.EnqueueBatch(ctx, []*TaskSpec{spec}))
}

// single turns a one-spec batch's error into Enqueue's: the task's [*EnqueueError] (which names its id) alone
// rather than joined.
func single(err error) error {
	var ee *EnqueueError
	if errors.As(err, &ee) && len(unjoin(err)) == 1 {
		return ee
	}
	return err
}

// EnqueueBatch implements [TaskQueue]. Tasks that cannot be encoded are reported and the others enqueued. Like
// [RedisTaskQueue.Enqueue], it writes each spec's task id (when generated) and outcome into the spec.
//
// A batch goes to Redis in one round trip, as one script call per 100 tasks: each call is atomic, and
// Redis serves other clients (workers' pickups and acks) between two calls, so a large batch never stalls the
// queue's workers for the whole of its length. When the call fails, some chunks may be stored and others not:
// sending the same batch again is safe (see below).
//
// Enqueue is idempotent by task id: while a task exists (pending, scheduled, running, retrying or dead), the same
// id with the same content is a no-op ([Duplicate]) and with other content [ErrTaskIDConflict]. After a task
// completes, its id stays in the settled window ([RedisConfig.SettledWindow], the last 10000 acked ids by
// default), and enqueueing it again is also a no-op ([AlreadyCompleted]): that is what makes a producer's retry
// after a lost reply safe even when a fast worker already ran the task. To run the same work again, use a new
// task id.
func (q *RedisTaskQueue) EnqueueBatch(ctx context.Context, specs []*TaskSpec) error {
	defer q.history.noteEnqueued(ctx, specs) // history_recorder.go
	if hasUnique(specs) {
		return q.enqueueUnique(ctx, specs) // unique.go
	}
	var errs []error
	args := make([]any, 0, 3*len(specs))
	type sent struct {
		index int
		env   *envelope
	}
	envs := make([]envelope, len(specs)) // one allocation for the batch's envelopes
	batch := make([]sent, 0, len(specs))
	for i, spec := range specs {
		prepare(spec)
		env := &envs[i]
		raw, delay, err := q.sealInto(spec, env)
		if err != nil {
			errs = append(errs, &EnqueueError{Index: i, TaskID: specID(spec), Err: err})
			continue
		}
		args = append(args, env.TaskID, raw, flowArg(spec, delay.Milliseconds())) // flow.go
		batch = append(batch, sent{i, env})
	}
	if len(batch) == 0 {
		return errors.Join(errs...)
	}
	reply, err := q.runEnqueue(ctx, args)
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("taskqueue: enqueue: %w", classify(err)))...)
	}
	for j, r := range reply.res {
		s := batch[j]
		spec := specs[s.index]
		switch r := r.(type) {
		case int64: // see lua/enqueue.lua
			spec.Enqueued = [...]EnqueueOutcome{Duplicate, Stored, AlreadyCompleted}[min(max(r, 0), 2)]
		case string:
			if sameTask(r, s.env, q.cfg.Limits) {
				spec.Enqueued = Duplicate
			} else {
				errs = append(errs, &EnqueueError{Index: s.index, TaskID: s.env.TaskID, Err: ErrTaskIDConflict})
			}
		}
	}
	if len(errs) == 0 {
		return reply.notReplicated // nil, or a *ReplicationError: no join to allocate
	}
	return errors.Join(append(errs, reply.notReplicated)...)
}

func specID(s *TaskSpec) string {
	if s == nil {
		return ""
	}
	return s.TaskID
}

// encode builds the envelope of a spec and its delay.
func (q *RedisTaskQueue) encode(spec *TaskSpec) (*envelope, time.Duration, error) {
	env := &envelope{}
	delay, err := q.encodeInto(spec, env)
	if err != nil {
		return nil, 0, err
	}
	return env, delay, nil
}

// encodeInto is encode into env, which it overwrites: the enqueue path's, without an allocation of its own.
func (q *RedisTaskQueue) encodeInto(spec *TaskSpec, env *envelope) (time.Duration, error) {
	if err := spec.validate(); err != nil {
		return 0, err
	}
	s := *spec
	if s.TaskID == "" {
		s.TaskID = newTaskID()
	}
	// The payload's one syntax scan, under the depth a worker accepts. The envelope is marshalled before the
	// enqueue returns, so it may share the spec's payload and metadata.
	resolverID, st, err := s.serializeTask(q.reg, q.cfg.DefaultResolverID, q.cfg.Limits.MaxDepth-2, false)
	if err != nil {
		return 0, err
	}
	delay := s.ProcessIn
	if delay == 0 && !s.ProcessAt.IsZero() {
		delay = time.Until(s.ProcessAt)
	}
	delay = max(delay, 0)
	if delay > 0 && delay < time.Millisecond {
		delay = time.Millisecond // the queue counts in milliseconds
	}
	status := StatePending
	if delay > 0 {
		status = StateScheduled
	}
	created := s.CreatedAt
	if created.IsZero() {
		created = time.Now()
	}
	meta := s.Metadata
	if len(meta) == 0 {
		meta = nil
	}
	*env = envelope{
		V:              EnvelopeVersion,
		TaskID:         s.TaskID,
		Status:         status,
		CreatedAt:      unixSeconds(created),
		Strategy:       st.Strategy,
		ResolverID:     resolverID,
		SerializedTask: st,
		GroupID:        s.GroupID,
		MaxRetries:     s.MaxRetries,
		TimeoutMS:      s.Timeout.Milliseconds(),
		Attempt:        s.Attempt,   // carried over by migrations; 0 for new tasks
		LastError:      s.LastError, // likewise
		Meta:           meta,
		Priority:       int(s.Priority),
		FlowKey:        s.FlowKey,
		payloadOK:      true, // checked above, or empty (written as {})
		key:            s.TaskID,
	}
	if s.FlowKey != "" && (s.Unique != nil || isGroupRun(s.GroupID)) {
		return 0, errFlowKeyWith() // flow.go
	}
	if s.Unique != nil {
		return q.attachUnique(s.Unique, env, delay) // unique.go
	}
	return delay, nil
}

// seal encodes a spec into the envelope that is stored: signed when the queue signs, marshalled, and within the
// enqueue size limit. Every enqueue path (Enqueue, EnqueueBatch, DispatchGroup) goes through it.
func (q *RedisTaskQueue) seal(spec *TaskSpec) (*envelope, []byte, time.Duration, error) {
	env := &envelope{}
	raw, delay, err := q.sealInto(spec, env)
	if err != nil {
		return nil, nil, 0, err
	}
	return env, raw, delay, nil
}

// sealInto is seal into env, which it overwrites.
func (q *RedisTaskQueue) sealInto(spec *TaskSpec, env *envelope) ([]byte, time.Duration, error) {
	delay, err := q.encodeInto(spec, env)
	if err != nil {
		return nil, 0, err
	}
	if q.signer != nil {
		q.signer.sign(env)
	}
	raw, err := env.marshal()
	if err == nil && len(raw) > q.cfg.Limits.MaxEnvelopeBytes {
		err = &EnvelopeError{Kind: ErrEnvelopeTooLarge, Detail: fmt.Sprintf("%d bytes, limit %d", len(raw), q.cfg.Limits.MaxEnvelopeBytes)}
	}
	if err != nil {
		return nil, 0, err
	}
	return raw, delay, nil
}

// sameTask reports whether a stored envelope describes the same task as a new one: everything but timestamps,
// status and delivery counters.
func sameTask(stored string, env *envelope, lim Limits) bool {
	old, err := decodeStored(env.TaskID, []byte(stored), lim)
	if err != nil {
		return false
	}
	return old.TaskID == env.TaskID && old.ResolverID == env.ResolverID && old.GroupID == env.GroupID &&
		old.SerializedTask.Strategy == env.SerializedTask.Strategy &&
		jsonEqual(old.SerializedTask.Payload, env.SerializedTask.Payload) &&
		old.MaxRetries == env.MaxRetries && old.TimeoutMS == env.TimeoutMS
}

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
	for backoff := resendFirstBackoff; isSlotMoving(err) && time.Until(limit) > backoff; backoff = min(2*backoff, resendMaxBackoff) {
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
	if q.cfg.DurableReplicas > 0 {
		return q.enqueueDurable(ctx, args)
	}
	if len(args) <= 3*enqueueChunk {
		script, keys := q.levelScript(args)
		res, err := script.Run(ctx, q.rdb, keys, chunkArgs(args)...).Slice()
		return enqueueReply{res: res}, err
	}
	return q.enqueuePipelined(ctx, q.rdb, args, false)
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
				script, keys := q.levelScript(chunk)
				part := chunkArgs(chunk)
				if sha {
					scripts = append(scripts, script.EvalSha(ctx, p, keys, part...))
				} else {
					scripts = append(scripts, script.Eval(ctx, p, keys, part...))
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
