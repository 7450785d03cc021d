package taskqueue

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

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
	// DeadLetter parks the task with cause as the reason, for an operator to inspect, requeue or delete. Like Retry
	// it records a failed run and counts an attempt: a task dead after 3 failed runs has Attempt 3 in the dead set.
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
	base      int64     // the first token of the delivery's pickup batch, whose lease record fences it (Redis)
	pos       int       // the delivery's position in its pickup batch, 1-based: Token is base + pos - 1 (Redis)
	localEnds time.Time // the lease deadline estimated on the local monotonic clock (lower bound)
	result    []byte    // the handler's result (SetResult), stored by Ack
	failedAt  time.Time // set by the first Retry or DeadLetter: a resend writes the same envelope (settle.lua)
	member    int       // the queue of a MultiQueue it was leased from (multiqueue.go); 0 otherwise
	shard     int       // 1 + the shard of a ShardedQueue it was leased from (sharded_graph.go); 0 otherwise
}

// RedisConfig configures a [RedisTaskQueue]. The zero value of each field takes its default.
type RedisConfig struct {
	// DefaultResolverID is used for specs that name no resolver. Default [DefaultResolverID].
	DefaultResolverID string
	// Lease is how long a delivery stays owned without renewal before it is reclaimed. Default 30s, minimum 100ms.
	Lease time.Duration
	// MaxDeliveries dead-letters a task whose lease expired this many deliveries in a row (a task that keeps
	// crashing its worker). Default 5.
	MaxDeliveries int
	// SettledWindow is how many acked task ids the queue remembers (a tombstone in place of each envelope), so
	// that a repeated ack or enqueue after a lost reply is recognised. Default 10000; -1 remembers none. (A
	// repeated retry or dead letter is recognised by the envelope it wrote, whatever the window.)
	SettledWindow int
	// ReapBatch bounds the leased tasks whose lease expired that one Reap handles. Default 1000.
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
	// ControlRetention is how long a cancelled task ([Admin.Cancel]) and a task's last progress
	// ([ReportProgress]) stay readable. Default 24h, minimum 1s. See docs/control.md.
	ControlRetention time.Duration
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
	// HistoryInterval is how often the queue's workers send the per-minute counts and latency histograms they
	// keep in memory to Redis, in one round trip, for [Admin.History]; a producer that runs no worker sends its
	// enqueue counts at most this often, in the enqueue call that finds the interval over. Default 5s, minimum
	// 100ms; -1 keeps no history. See docs/observability.md.
	HistoryInterval time.Duration
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
	if out.ControlRetention == 0 {
		out.ControlRetention = 24 * time.Hour
	}
	if out.HistoryInterval == 0 {
		out.HistoryInterval = 5 * time.Second
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
	case c.ControlRetention < time.Second:
		return fmt.Errorf("%w: ControlRetention must be at least 1s", ErrInvalidConfig)
	case c.HistoryInterval != -1 && c.HistoryInterval < 100*time.Millisecond:
		return fmt.Errorf("%w: HistoryInterval must be -1 or at least 100ms", ErrInvalidConfig)
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
	flowPickup  atomic.Bool   // the queue uses flow keys or limits: pickups run dequeue_flow.lua (flow.go)

	// How this queue's blocking waits ended, for tests to observe which mechanism woke a pickup (reported
	// nowhere): blockTimeouts counts the BLPOPs (pickups and group waits) that ended by their timeout; dueWakes the
	// waits a consumer's due timer ended; dueTimeouts the waits for a delayed task that the BLPOP timeout ended
	// instead (the safety net, at Redis's next cron tick).
	blockTimeouts, dueWakes, dueTimeouts atomic.Int64
	// dueSlack, when set, replaces dueWakeSlack: a test that checks which of the due timer and the BLPOP timeout
	// ends a wait widens the margin between them beyond a busy machine's scheduling delays. Set before any pickup.
	dueSlack time.Duration

	uniqueCalls  atomic.Uint64 // calls of unique tasks (enqueues, releases): every 64th sweeps a page (unique.go)
	uniqueCursor atomic.Uint64 // where that sweep goes on

	history *historyRecorder // history_recorder.go; nil when RedisConfig.HistoryInterval is -1
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
	q := &RedisTaskQueue{rdb: rdb, prefix: keyPrefix, keys: newKeySet(keyPrefix), reg: reg, cfg: c, signer: sg, readTimeout: rt}
	q.history = newHistoryRecorder(q, c.HistoryInterval)
	return q, nil
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
