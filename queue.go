package taskqueue

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strconv"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"
)

// TaskQueue is the worker's contract with a queue, what a [TaskWorker] consumes from: a [RedisTaskQueue], a
// [ShardedQueue] or a [MemoryQueue]. Every delivery holds a lease that the worker renews until it settles the
// delivery with Ack, Retry, DeadLetter or Release; a delivery whose lease expires goes back to the queue
// (at-least-once).
//
// Its unexported methods are what the worker needs beyond the exported ones: a pickup split from the decoding of
// what it leased, the size limit of a task's result (which Ack stores), and the clean-up of a consumer's
// interrupt. Every queue must provide them, and the compiler checks that each does, so that no queue silently
// lacks a feature. They also seal the interface: a type of another package implements it only by embedding a
// TaskQueue (or one of the queues), and the worker picks up through the embedded queue's own pickup, never
// through an overriding Dequeue.
type TaskQueue interface {
	// Enqueue adds a task. It is idempotent by task id: the same id with the same content is a no-op, with other
	// content it is [ErrTaskIDConflict].
	Enqueue(ctx context.Context, spec *TaskSpec) error
	// EnqueueBatch adds several tasks in one round trip. The error joins one [*EnqueueError] per failed task.
	EnqueueBatch(ctx context.Context, specs []*TaskSpec) error
	// Dequeue leases up to opts.Max tasks, blocking up to opts.Wait while none is ready. It returns an empty
	// slice, not an error, when the wait ends with nothing to do.
	Dequeue(ctx context.Context, opts DequeueOptions) ([]*Delivery, error)
	// Interrupt ends a Dequeue of the named consumer that is blocked waiting.
	Interrupt(ctx context.Context, consumer string) error
	// Ack completes deliveries. The error joins one error per delivery that failed, [ErrLeaseLost] for those
	// whose lease was lost; calling it again for the same delivery succeeds.
	Ack(ctx context.Context, ds ...*Delivery) error
	// Retry schedules the task to run again after delay, recording cause as its last error and counting an attempt.
	Retry(ctx context.Context, d *Delivery, delay time.Duration, cause error) error
	// DeadLetter parks the task with cause as the reason, for an operator to inspect, requeue or delete.
	DeadLetter(ctx context.Context, d *Delivery, cause error) error
	// Release hands the task back to the head of the queue at once, without counting a delivery or an attempt.
	Release(ctx context.Context, d *Delivery) error
	// ExtendLeases renews the leases of running deliveries and returns those that were lost.
	ExtendLeases(ctx context.Context, ds []*Delivery) (lost []*Delivery, err error)
	// Reap returns expired deliveries to the queue, dead-letters tasks that keep losing their worker, and makes
	// due delayed tasks ready. It does a bounded amount of work per call.
	Reap(ctx context.Context) (ReapResult, error)
	// LeaseDuration is the lease each delivery gets, and each renewal extends it to.
	LeaseDuration() time.Duration

	// dequeueRaw leases as Dequeue does but decodes nothing, so that the worker decodes a pickup (with
	// rehydrateLeased) while its next one is on its way.
	dequeueRaw(ctx context.Context, opts DequeueOptions) (leased, error)
	// rehydrateLeased decodes and resolves what dequeueRaw leased; the deliveries that cannot run are parked and
	// left out.
	rehydrateLeased(ctx context.Context, l leased) []*Delivery
	// maxResultBytes bounds the JSON of a task's result ([SetResult]); Ack stores each delivery's result.
	maxResultBytes() int
	// clearInterrupt removes what Interrupt left for a consumer, after its last pickup ([TaskWorker.Stop]).
	clearInterrupt(ctx context.Context, consumer string) error
}

// Every queue implements the worker's contract, checked by the compiler.
var (
	_ TaskQueue = (*RedisTaskQueue)(nil)
	_ TaskQueue = (*ShardedQueue)(nil)
	_ TaskQueue = (*MemoryQueue)(nil)
)

// DequeueOptions tune one [TaskQueue.Dequeue] call.
type DequeueOptions struct {
	// Max is the most tasks to lease (at least 1).
	Max int
	// Wait is the longest to block while no task is ready; 0 returns at once.
	Wait time.Duration
	// Consumer names the caller, so that [TaskQueue.Interrupt] can end its wait.
	Consumer string
}

// ReapResult counts what one [TaskQueue.Reap] did.
type ReapResult struct {
	Requeued int // expired deliveries put back to pending
	Dead     int // tasks dead-lettered after too many lost deliveries
	Promoted int // delayed tasks made ready
}

// Delivery is one leased run of a task, as returned by [TaskQueue.Dequeue]. Spec has its Executable resolved.
type Delivery struct {
	// Spec is the task, rehydrated: Spec.Executable is ready to run.
	Spec *TaskSpec
	// Token is the fencing token of this delivery; settling calls are refused once another delivery owns the task.
	Token int64
	// Deliveries counts the deliveries of this task since it last settled: 1 normally, more after its worker was lost.
	Deliveries int
	// LeaseDeadline is when the lease expires unless renewed, by the queue's clock.
	LeaseDeadline time.Time

	env       *envelope
	localEnds time.Time // the lease deadline estimated on the local monotonic clock (lower bound)
	result    []byte    // the handler's result (SetResult), stored by Ack
	failedAt  time.Time // set by the first Retry or DeadLetter: a resend writes the same envelope (settle.lua)
}

// EnqueueError reports the failure of one task in [TaskQueue.EnqueueBatch].
type EnqueueError struct {
	Index  int
	TaskID string
	Err    error
}

func (e *EnqueueError) Error() string {
	return fmt.Sprintf("taskqueue: enqueue %s (#%d): %v", quote(e.TaskID), e.Index, e.Err)
}

func (e *EnqueueError) Unwrap() error { return e.Err }

// RedisConfig configures a [RedisTaskQueue]. The zero value of each field takes its default.
type RedisConfig struct {
	// DefaultResolverID is used for specs that name no resolver. Default [DefaultResolverID].
	DefaultResolverID string
	// Lease is how long a delivery stays owned without renewal before it is reclaimed. Default 30s, minimum 100ms.
	Lease time.Duration
	// MaxDeliveries dead-letters a task whose lease expired this many deliveries in a row (a task that keeps
	// crashing its worker). Default 5.
	MaxDeliveries int
	// SettledWindow is how many settled task ids the queue remembers, so that a repeated ack, retry or enqueue
	// after a lost reply is recognised. Default 10000; -1 remembers none.
	SettledWindow int
	// ReapBatch bounds the expired leases one Reap handles. Default 1000.
	ReapBatch int
	// PromoteBatch bounds the due delayed tasks one call makes ready. Default 1000.
	PromoteBatch int
	// Limits bound the envelopes accepted on enqueue and pickup.
	Limits Limits
	// MaxResultBytes bounds the JSON encoding of a task's result ([SetResult]); a larger result fails the task
	// with a [*ResultError]. Default 1 MiB.
	MaxResultBytes int
	// ResultTTL is how long the result of a task that is not a group member stays readable with
	// [RedisTaskQueue.Result]. Default 24h, minimum 1s.
	ResultTTL time.Duration
	// Logger receives the queue's warnings (parked tasks). Default slog.Default().
	Logger *slog.Logger
	// Signing, if set, signs every envelope on enqueue and parks, at pickup, any task whose signature is missing
	// or does not verify, before it is resolved. Default nil: no signing, and signatures are not checked.
	Signing *SigningConfig
	// DurableReplicas, above 0, makes every enqueue wait until this many replicas hold it (Redis WAIT on the
	// connection that ran the enqueue), closing the window in which a failover loses an acknowledged task. When
	// fewer confirm within DurableTimeout, the enqueue returns a [*ReplicationError] (wrapping [ErrNotReplicated]):
	// the task is enqueued on the primary all the same. Default 0: no waiting. See docs/scaling.md.
	DurableReplicas int
	// DurableTimeout bounds the wait of a durable enqueue. Default 1s; it must stay 100ms below the client's read
	// timeout.
	DurableTimeout time.Duration
}

func (c *RedisConfig) withDefaults() RedisConfig {
	out := RedisConfig{}
	if c != nil {
		out = *c
	}
	if out.DefaultResolverID == "" {
		out.DefaultResolverID = DefaultResolverID
	}
	if out.Lease == 0 {
		out.Lease = 30 * time.Second
	}
	if out.MaxDeliveries == 0 {
		out.MaxDeliveries = 5
	}
	if out.SettledWindow == 0 {
		out.SettledWindow = 10000
	} else if out.SettledWindow < 0 {
		out.SettledWindow = 0
	}
	if out.ReapBatch == 0 {
		out.ReapBatch = 1000
	}
	if out.PromoteBatch == 0 {
		out.PromoteBatch = 1000
	}
	if out.DurableTimeout == 0 {
		out.DurableTimeout = time.Second
	}
	out.Limits = out.Limits.withDefaults()
	if out.MaxResultBytes == 0 {
		out.MaxResultBytes = 1 << 20
	}
	if out.ResultTTL == 0 {
		out.ResultTTL = 24 * time.Hour
	}
	if out.Logger == nil {
		out.Logger = slog.Default()
	}
	return out
}

func (c *RedisConfig) validate() error {
	switch {
	case c.Lease < 100*time.Millisecond:
		return fmt.Errorf("%w: Lease must be at least 100ms", ErrInvalidConfig)
	case c.MaxDeliveries < 1:
		return fmt.Errorf("%w: MaxDeliveries must be at least 1", ErrInvalidConfig)
	case c.ReapBatch < 1 || c.ReapBatch > 10000:
		return fmt.Errorf("%w: ReapBatch must be between 1 and 10000", ErrInvalidConfig)
	case c.PromoteBatch < 1 || c.PromoteBatch > 5000:
		return fmt.Errorf("%w: PromoteBatch must be between 1 and 5000", ErrInvalidConfig)
	case c.MaxResultBytes < 1 || c.MaxResultBytes > 64<<20:
		return fmt.Errorf("%w: MaxResultBytes must be between 1 and 64 MiB", ErrInvalidConfig)
	case c.ResultTTL < time.Second:
		return fmt.Errorf("%w: ResultTTL must be at least 1s", ErrInvalidConfig)
	case !resolverIDPattern.MatchString(c.DefaultResolverID):
		return fmt.Errorf("%w: DefaultResolverID %s", ErrInvalidConfig, quote(c.DefaultResolverID))
	}
	return c.Limits.validate()
}

// RedisTaskQueue is a [TaskQueue] in Redis. It needs no execution context: a Redis client, a key prefix and a
// [ResolverRegistry] are all it takes (the seed's decoupling). Tasks are stored as JSON envelopes under keys that
// start with "{keyPrefix}:"; see docs/redis-keys.md. It is safe for concurrent use; the caller owns the client.
type RedisTaskQueue struct {
	rdb         redis.UniversalClient
	prefix      string
	keys        keySet
	reg         *ResolverRegistry
	cfg         RedisConfig
	signer      *signer       // nil without RedisConfig.Signing
	readTimeout time.Duration // the client's, where it can be known; 0 if unknown or unlimited

	// How this queue's blocking waits ended, for tests to observe which mechanism woke a pickup (reported
	// nowhere): blockTimeouts counts the BLPOPs (pickups and group waits) that ended by their timeout; dueWakes the
	// waits a consumer's due timer ended; dueTimeouts the waits for a delayed task that the BLPOP timeout ended
	// instead (the safety net, at Redis's next cron tick).
	blockTimeouts, dueWakes, dueTimeouts atomic.Int64
	// dueSlack, when set, replaces dueWakeSlack: a test that checks which of the due timer and the BLPOP timeout
	// ends a wait widens the margin between them beyond a busy machine's scheduling delays. Set before any pickup.
	dueSlack time.Duration
}

// NewRedisTaskQueue returns a queue on rdb under keyPrefix that serializes and resolves tasks through reg. The
// config is copied; nil takes every default.
func NewRedisTaskQueue(rdb redis.UniversalClient, keyPrefix string, reg *ResolverRegistry, cfg *RedisConfig) (*RedisTaskQueue, error) {
	if rdb == nil {
		return nil, fmt.Errorf("%w: nil Redis client", ErrInvalidConfig)
	}
	if reg == nil {
		return nil, fmt.Errorf("%w: nil resolver registry", ErrInvalidConfig)
	}
	if err := validateKeyPrefix(keyPrefix); err != nil {
		return nil, err
	}
	c := cfg.withDefaults()
	if err := c.validate(); err != nil {
		return nil, err
	}
	rt := readTimeoutOf(rdb)
	if err := validateDurable(&c, rt); err != nil {
		return nil, err
	}
	sg, err := newSigner(c.Signing)
	if err != nil {
		return nil, err
	}
	c.Signing = nil // the signer holds its own copy of the keys
	return &RedisTaskQueue{rdb: rdb, prefix: keyPrefix, keys: newKeySet(keyPrefix), reg: reg, cfg: c, signer: sg, readTimeout: rt}, nil
}

// readTimeoutOf returns the read timeout of the client types that tell it (their options after go-redis filled in
// its defaults: 5s when unset), 0 when reads are unlimited or the type does not say.
func readTimeoutOf(rdb redis.UniversalClient) time.Duration {
	var rt time.Duration
	switch c := rdb.(type) {
	case *redis.Client:
		rt = c.Options().ReadTimeout
	case *redis.ClusterClient:
		rt = c.Options().ReadTimeout
	default:
		return 0
	}
	return max(rt, 0) // after go-redis's defaults, 0 and -1 both mean no read deadline
}

// KeyPrefix returns the queue's key prefix.
func (q *RedisTaskQueue) KeyPrefix() string { return q.prefix }

// LeaseDuration implements [TaskQueue].
func (q *RedisTaskQueue) LeaseDuration() time.Duration { return q.cfg.Lease }

// Enqueue implements [TaskQueue]: it serializes spec through the registry when it holds an executable and stores
// its envelope in one script call.
func (q *RedisTaskQueue) Enqueue(ctx context.Context, spec *TaskSpec) error {
	err := q.EnqueueBatch(ctx, []*TaskSpec{spec})
	var ee *EnqueueError
	if errors.As(err, &ee) {
		return ee.Err
	}
	return err
}

// EnqueueBatch implements [TaskQueue]. Tasks that cannot be encoded are reported and the others enqueued.
//
// A batch goes to Redis in one round trip, as one script call per 100 tasks: each call is atomic, and
// Redis serves other clients (workers' pickups and acks) between two calls, so a large batch never stalls the
// queue's workers for the whole of its length. When the call fails, some chunks may be stored and others not:
// sending the same batch again is safe (see below).
//
// Enqueue is idempotent by task id: while a task exists (pending, scheduled, running, retrying or dead), the same
// id with the same content is a no-op and with other content [ErrTaskIDConflict]. After a task completes, its id
// stays in the settled window ([RedisConfig.SettledWindow], the last 10000 settled ids by default), and enqueueing
// it again is also a no-op: that is what makes a producer's retry after a lost reply safe even when a fast worker
// already ran the task. To run the same work again, use a new task id.
func (q *RedisTaskQueue) EnqueueBatch(ctx context.Context, specs []*TaskSpec) error {
	var errs []error
	args := make([]any, 0, 3*len(specs))
	type sent struct {
		index int
		env   *envelope
	}
	batch := make([]sent, 0, len(specs))
	for i, spec := range specs {
		env, raw, delay, err := q.seal(spec)
		if err != nil {
			errs = append(errs, &EnqueueError{Index: i, TaskID: specID(spec), Err: err})
			continue
		}
		args = append(args, env.TaskID, raw, delay.Milliseconds())
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
		existing, isString := r.(string)
		if !isString {
			continue // created, identical, or a replay of a settled task
		}
		s := batch[j]
		if !sameTask(existing, s.env, q.cfg.Limits) {
			errs = append(errs, &EnqueueError{Index: s.index, TaskID: s.env.TaskID, Err: ErrTaskIDConflict})
		}
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
	if spec == nil {
		return nil, 0, fmt.Errorf("%w: nil task spec", ErrInvalidConfig)
	}
	s := *spec
	if s.ResolverID == "" {
		s.ResolverID = q.cfg.DefaultResolverID
	}
	if s.TaskID == "" {
		s.TaskID = newID()
	}
	if err := validateTaskID(s.TaskID); err != nil {
		return nil, 0, err
	}
	ser, err := s.serialized(q.reg, false)
	if err != nil {
		return nil, 0, err
	}
	// The payload's one syntax check, under the depth a worker accepts (Serialized leaves it to this one).
	if len(ser.SerializedTask.Payload) > 0 {
		if err := validateJSON(ser.SerializedTask.Payload, q.cfg.Limits.MaxDepth-2); err != nil {
			return nil, 0, fmt.Errorf("%w: payload: %v", ErrNotSerializable, err)
		}
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
	if s.MaxRetries < -1 {
		return nil, 0, fmt.Errorf("%w: MaxRetries must be -1 or more", ErrInvalidConfig)
	}
	if s.Timeout < 0 || s.Attempt < 0 {
		return nil, 0, fmt.Errorf("%w: Timeout and Attempt must not be negative", ErrInvalidConfig)
	}
	return &envelope{
		V:              EnvelopeVersion,
		TaskID:         s.TaskID,
		Status:         status,
		CreatedAt:      unixSeconds(created),
		Strategy:       ser.SerializedTask.Strategy,
		ResolverID:     ser.ResolverID,
		SerializedTask: *ser.SerializedTask,
		GroupID:        s.GroupID,
		MaxRetries:     s.MaxRetries,
		TimeoutMS:      s.Timeout.Milliseconds(),
		Attempt:        s.Attempt,   // carried over by migrations; 0 for new tasks
		LastError:      s.LastError, // likewise
		Meta:           ser.Metadata,
		payloadOK:      true, // checked above, or empty (written as {})
	}, delay, nil
}

// seal encodes a spec into the envelope that is stored: signed when the queue signs, marshalled, and within the
// enqueue size limit. Every enqueue path (Enqueue, EnqueueBatch, DispatchGroup) goes through it.
func (q *RedisTaskQueue) seal(spec *TaskSpec) (*envelope, []byte, time.Duration, error) {
	env, delay, err := q.encode(spec)
	if err != nil {
		return nil, nil, 0, err
	}
	if q.signer != nil {
		q.signer.sign(env)
	}
	raw, err := env.marshal()
	if err == nil && len(raw) > q.cfg.Limits.MaxEnvelopeBytes {
		err = &EnvelopeError{Kind: ErrEnvelopeTooLarge, Detail: fmt.Sprintf("%d bytes, limit %d", len(raw), q.cfg.Limits.MaxEnvelopeBytes)}
	}
	if err != nil {
		return nil, nil, 0, err
	}
	return env, raw, delay, nil
}

// sameTask reports whether a stored envelope describes the same task as a new one: everything but timestamps,
// status and delivery counters.
func sameTask(stored string, env *envelope, lim Limits) bool {
	old, err := decodeEnvelope([]byte(stored), lim)
	if err != nil {
		return false
	}
	return old.TaskID == env.TaskID && old.ResolverID == env.ResolverID && old.GroupID == env.GroupID &&
		old.SerializedTask.Strategy == env.SerializedTask.Strategy &&
		jsonEqual(old.SerializedTask.Payload, env.SerializedTask.Payload) &&
		old.MaxRetries == env.MaxRetries && old.TimeoutMS == env.TimeoutMS
}

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
	if opts.Consumer != "" && !resolverIDPattern.MatchString(opts.Consumer) {
		return nil, fmt.Errorf("%w: consumer %s must match %s", ErrInvalidConfig, quote(opts.Consumer), resolverIDPattern)
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
		l, nextDue, err := q.leaseRaw(ctx, opts.Max)
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
	if !resolverIDPattern.MatchString(consumer) {
		return fmt.Errorf("%w: consumer %s must match %s", ErrInvalidConfig, quote(consumer), resolverIDPattern)
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

// leaseRaw runs the dequeue script and reads its reply, decoding no envelope.
func (q *RedisTaskQueue) leaseRaw(ctx context.Context, n int) (leased, time.Duration, error) {
	sent := time.Now()
	res, err := dequeueScript.Run(ctx, q.rdb, q.keys.all, n, q.cfg.Lease.Milliseconds(), q.cfg.PromoteBatch).Slice()
	if err != nil {
		return leased{}, 0, fmt.Errorf("taskqueue: dequeue: %w", classify(err))
	}
	if len(res) < 2 || (len(res)-2)%4 != 0 {
		return leased{}, 0, fmt.Errorf("taskqueue: dequeue: unexpected reply of %d items", len(res))
	}
	now, _ := res[0].(int64)
	nextDue := time.Duration(-1)
	if ms, _ := res[1].(int64); ms >= 0 {
		nextDue = time.Duration(ms) * time.Millisecond
	}
	deadline := time.UnixMilli(now).Add(q.cfg.Lease)
	k := (len(res) - 2) / 4
	l := leased{ds: make([]*Delivery, 0, k), ids: make([]string, 0, k), raws: make([]string, 0, k)}
	for i := 2; i < len(res); i += 4 {
		id, _ := res[i].(string)
		token, _ := res[i+1].(int64)
		deliveries, _ := res[i+2].(int64)
		raw, _ := res[i+3].(string)
		l.ds = append(l.ds, &Delivery{Token: token, Deliveries: int(deliveries), LeaseDeadline: deadline, localEnds: sent.Add(q.cfg.Lease)})
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
	return out
}

// rehydrateOne decodes and resolves one leased delivery into d; one that cannot run is parked (false).
func (q *RedisTaskQueue) rehydrateOne(ctx context.Context, d *Delivery, id, raw string) bool {
	spec, env, err := q.rehydrate(raw)
	if err == nil && env.TaskID != id {
		err = malformed(fmt.Sprintf("task_id %s does not match the id it is stored under", quote(env.TaskID)))
	}
	if err != nil {
		q.park(ctx, id, d.Token, err, groupOfStored(env, raw, q.cfg.Limits))
		return false
	}
	d.Spec, d.env = spec, env
	return true
}

// rehydrate decodes an envelope and resolves it into a runnable spec (the seed's dequeue).
func (q *RedisTaskQueue) rehydrate(raw string) (*TaskSpec, *envelope, error) {
	env, err := decodeEnvelope([]byte(raw), q.cfg.Limits)
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
	st := env.SerializedTask
	return &TaskSpec{
		TaskID:         env.TaskID,
		Executable:     exe,
		SerializedTask: &st,
		ResolverID:     env.ResolverID,
		GroupID:        env.GroupID,
		MaxRetries:     env.MaxRetries,
		Timeout:        time.Duration(env.TimeoutMS) * time.Millisecond,
		Status:         env.Status,
		CreatedAt:      fromUnixSeconds(env.CreatedAt),
		Attempt:        env.Attempt,
		LastError:      env.LastError,
		Metadata:       maps.Clone(env.Meta), // the handler's own copy: retries rewrite env.Meta
	}, env, nil
}

// park dead-letters a delivery that cannot be run, keeping its raw envelope, with the reason; a group member
// completes its group as failed.
func (q *RedisTaskQueue) park(ctx context.Context, id string, token int64, cause error, groupID string) {
	q.cfg.Logger.WarnContext(ctx, "taskqueue: parked a task that cannot run", slog.String("task_id", truncate(id, 64)), slog.Any("error", cause))
	err := q.settle(ctx, "dead", id, token, "", 0, cause.Error(), groupID)
	if err != nil {
		q.cfg.Logger.ErrorContext(ctx, "taskqueue: could not park task; it returns after its lease", slog.String("task_id", truncate(id, 64)), slog.Any("error", err))
	}
}

// Ack implements [TaskQueue]: every delivery in one script call.
func (q *RedisTaskQueue) Ack(ctx context.Context, ds ...*Delivery) error {
	if len(ds) == 0 {
		return nil
	}
	keys, args := q.ackArgs(ds)
	res, err := ackScript.Run(ctx, q.rdb, keys, args...).Int64Slice()
	if err != nil {
		return fmt.Errorf("taskqueue: ack: %w", classify(err))
	}
	var errs []error
	for i, r := range res {
		if r != 1 && i < len(ds) {
			errs = append(errs, fmt.Errorf("%w: ack of %s", ErrLeaseLost, quote(ds[i].Spec.TaskID)))
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
		return q.settle(ctx, "dead", d.Spec.TaskID, d.Token, "", 0, reason.Error(), d.env.GroupID)
	}
	if err != nil {
		return err
	}
	return q.settle(ctx, "retry", d.Spec.TaskID, d.Token, string(raw), delay, "", "")
}

// DeadLetter implements [TaskQueue]. The reason keeps up to 4096 bytes of cause; the rewritten envelope's
// last_error is cut shorter when the whole would not fit what pickup reads back (see [EnvelopeHeadroom]), and an
// envelope that does not fit even without it is dead-lettered as it is stored.
func (q *RedisTaskQueue) DeadLetter(ctx context.Context, d *Delivery, cause error) error {
	env := *d.env
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
	return q.settle(ctx, "dead", d.Spec.TaskID, d.Token, string(raw), 0, reason, env.GroupID)
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
	return q.settle(ctx, "release", d.Spec.TaskID, d.Token, "", 0, "", "")
}

// settle runs settle.lua. A dead letter of a group member (groupID names a run) also completes its group.
func (q *RedisTaskQueue) settle(ctx context.Context, mode, id string, token int64, env string, delay time.Duration, reason, groupID string) error {
	ms := delay.Milliseconds()
	if delay > 0 && ms == 0 {
		ms = 1
	}
	keys, args := q.keys.all, []any{mode, q.cfg.SettledWindow, id, token, env, ms, truncate(reason, maxLastError)}
	if mode == "dead" && isGroupRun(groupID) {
		keys, args = q.groupKeys(groupID), append(args, numKeys+1)
	}
	n, err := settleScript.Run(ctx, q.rdb, keys, args...).Int64()
	if err != nil {
		return fmt.Errorf("taskqueue: %s: %w", mode, classify(err))
	}
	if n != 1 {
		return fmt.Errorf("%w: %s of %s", ErrLeaseLost, mode, quote(id))
	}
	return nil
}

// ExtendLeases implements [TaskQueue].
func (q *RedisTaskQueue) ExtendLeases(ctx context.Context, ds []*Delivery) ([]*Delivery, error) {
	if len(ds) == 0 {
		return nil, nil
	}
	sent := time.Now()
	args := make([]any, 1, 1+2*len(ds))
	args[0] = q.cfg.Lease.Milliseconds()
	for _, d := range ds {
		args = append(args, d.Spec.TaskID, d.Token)
	}
	res, err := extendScript.Run(ctx, q.rdb, q.keys.extend, args...).Int64Slice()
	if err != nil {
		return nil, fmt.Errorf("taskqueue: extend leases: %w", classify(err))
	}
	if len(res) != len(ds)+1 {
		return nil, fmt.Errorf("taskqueue: extend leases: unexpected reply of %d items", len(res))
	}
	deadline := time.UnixMilli(res[0]).Add(q.cfg.Lease)
	var lost []*Delivery
	for i, d := range ds {
		if res[i+1] == 1 {
			d.LeaseDeadline = deadline
			d.localEnds = sent.Add(q.cfg.Lease)
		} else {
			lost = append(lost, d)
		}
	}
	return lost, nil
}

// Reap implements [TaskQueue]. A group member dead-lettered for too many lost deliveries completes its group as
// failed (see reap in group_delivery.go).
func (q *RedisTaskQueue) Reap(ctx context.Context) (ReapResult, error) {
	return q.reap(ctx)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
