package taskqueue

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"strings"
	"time"
	"unicode/utf8"
)

// Executable is runnable task code. A worker runs it with a context that is cancelled when the task times out,
// its lease is lost, or the worker stops.
type Executable interface {
	Run(ctx context.Context) error
}

// Func adapts a plain function to [Executable]. A Func runs on a [MemoryQueue]; it cannot travel through Redis,
// where tasks are references to functions that workers registered (see [ReferenceResolver]).
type Func func(ctx context.Context) error

// Run calls f(ctx).
func (f Func) Run(ctx context.Context) error { return f(ctx) }

// TaskSpec describes one task. It holds either an [Executable] (a local task, stored as is by a [MemoryQueue]) or
// a [SerializedTask] plus the ResolverID that can rehydrate it (a task destined for, or read from, Redis). A
// [RedisTaskQueue] serializes an executable spec through its registry on enqueue; [TaskSpec.Serialized] does it
// ahead of time (the seed's "serialized-only spec").
type TaskSpec struct {
	// TaskID identifies the task; enqueue is idempotent by it. Up to 256 printable characters. A spec without
	// an id gets a random one on enqueue (16 letters and digits), written here (so the spec is written to: do not
	// enqueue one spec from two goroutines at once, and clear the id before reusing a spec for a new task).
	TaskID string
	// Executable is the code to run, for local queues, or to be serialized for Redis.
	Executable Executable
	// SerializedTask is the task in its portable form; set for Redis-bound specs and on dequeue.
	SerializedTask *SerializedTask
	// ResolverID names the registry entry that serializes and resolves the task; empty means the queue's default.
	ResolverID string
	// GroupID is the seed's group_id: the parallel group the task belongs to, if any.
	GroupID string
	// MaxRetries is how many handler failures are retried before the task is dead-lettered. 0 takes the
	// worker's default; -1 means no retry.
	MaxRetries int
	// Timeout bounds one run of the task; 0 takes the worker's default.
	Timeout time.Duration
	// ProcessIn delays the task's first run by this much, measured on the Redis server's clock.
	ProcessIn time.Duration
	// ProcessAt delays the task's first run until this time. It is sent as a delay from the producer's clock, so
	// the due time is kept by the server's clock. ProcessIn wins when both are set.
	ProcessAt time.Time
	// Metadata holds small string headers that travel with the task, in the envelope's "meta" field: the W3C
	// trace context ("traceparent", "tracestate") that carries a trace across Redis, a tenant, a request id.
	// Handlers and middleware read it on the spec they receive. It is bounded: at most [MaxMetadataEntries]
	// entries, keys of 1 to [MaxMetadataKeyLen] characters of [A-Za-z0-9._-] (no two that differ only in case),
	// values of valid UTF-8 up to [MaxMetadataValueLen] bytes; enqueue refuses anything else with
	// [ErrInvalidConfig]. It is not part of the task's identity: an enqueue repeated with the same task id and
	// other metadata is still a no-op, and the first enqueue's metadata stays. A retry keeps it.
	Metadata map[string]string
	// Unique, when set, makes the task unique by a key for a while: see [Unique] and docs/unique.md.
	Unique *Unique
	// Priority is the task's level within its queue: [PriorityHigh], [PriorityDefault] (the zero value) or
	// [PriorityLow]. Pickup takes every ready task of a higher level before any of a lower one, FIFO within a
	// level; a retried, released or reclaimed task keeps its level. Any other value is [ErrInvalidPriority].
	// See docs/flow-control.md.
	Priority Priority
	// FlowKey names who the task is for (a tenant, a customer, an API account), for fairness and per-key limits:
	// pickup takes turns over the keys with ready tasks, FIFO within a key, and holds to each key's concurrency
	// and rate limits ([Admin.SetConcurrencyLimit], [Admin.SetRateLimit]). Empty means none. 1 to
	// [MaxFlowKeyLen] characters of [A-Za-z0-9_.:/@+=-]; anything else is [ErrInvalidFlowKey]. A keyed task is of
	// the default level, and not a group member, a workflow node or a [Unique] task. See docs/flow-control.md.
	FlowKey string

	// Set on enqueue.

	// Enqueued is what the last enqueue of this spec did: [Stored], [Duplicate] or [AlreadyCompleted];
	// [NotEnqueued] when it failed. Every queue writes it, for each spec of a batch too.
	Enqueued EnqueueOutcome

	// Set on dequeue.

	// Status is the state recorded in the envelope's "status" field by its last write: [StatePending] or
	// [StateScheduled] from the enqueue, [StateRetry] after a failure.
	Status State
	// CreatedAt is when the task was first enqueued.
	CreatedAt time.Time
	// Attempt counts the handler failures so far; 0 on the first run.
	Attempt int
	// LastError is the error of the last failed run, if any.
	LastError string
}

// NewTaskSpec returns a spec for running exe under the given task id.
func NewTaskSpec(taskID string, exe Executable) *TaskSpec {
	return &TaskSpec{TaskID: taskID, Executable: exe}
}

// Serialized returns a copy of the spec with SerializedTask populated by the registry's resolver and Executable
// cleared: the form a spec takes on its way to Redis. A spec that is already serialized is returned as a copy
// (its SerializedTask copied too); the registry is not consulted then, so a producer can forward tasks that only
// workers can resolve. An empty ResolverID takes [DefaultResolverID].
//
// Either way the spec is checked first (see [TaskSpec.validate]: a nil spec, one with no task, or options or
// Metadata out of bounds are [ErrInvalidConfig], an invalid task id [ErrInvalidTaskID], an invalid resolver id
// [ErrUnknownResolver]), and the result as a worker would read it: an unsafe strategy ("pickle", "source", ...) is
// [ErrUnsafeStrategy], an empty strategy or a payload that is not a JSON object [ErrNotSerializable]. Metadata is
// copied.
func (s *TaskSpec) Serialized(reg *ResolverRegistry) (*TaskSpec, error) {
	if err := s.validate(); err != nil {
		return nil, err
	}
	return s.serialize(reg, DefaultResolverID, maxSyntaxDepth)
}

// errNilSpec is the one error of a nil spec, on every enqueue path.
func errNilSpec() error { return fmt.Errorf("%w: nil task spec", ErrInvalidConfig) }

// validate checks everything about a spec that can be checked before it is serialized; every enqueue path
// ([RedisTaskQueue.Enqueue], EnqueueBatch, DispatchGroup, [MemoryQueue], [TaskSpec.Serialized]) calls it once,
// first. One kind per mistake:
//
//   - a nil spec, or one with neither an Executable nor a SerializedTask: [ErrInvalidConfig]
//   - a TaskID (when set; an empty one gets a random id) that is not 1 to [MaxTaskIDLen] printable
//     characters: [ErrInvalidTaskID]
//   - a ResolverID (when set; an empty one takes the queue's default) that no registry could hold:
//     [ErrUnknownResolver]
//   - MaxRetries below -1, a negative Timeout or Attempt: [ErrInvalidConfig]
//   - Metadata out of bounds: [ErrInvalidConfig]
//   - a Priority other than [PriorityHigh], [PriorityDefault] and [PriorityLow]: [ErrInvalidPriority]
//   - a FlowKey out of bounds, or with a Priority other than the default: [ErrInvalidFlowKey]
//
// A negative ProcessIn or a past ProcessAt is no mistake: the task is due at once. GroupID is free-form here;
// DispatchGroup checks it against the group's name.
func (s *TaskSpec) validate() error {
	switch {
	case s == nil:
		return errNilSpec()
	case s.Executable == nil && s.SerializedTask == nil:
		return fmt.Errorf("%w: task spec has neither an executable nor a serialized task", ErrInvalidConfig)
	case s.MaxRetries < -1:
		return fmt.Errorf("%w: MaxRetries must be -1 or more", ErrInvalidConfig)
	case s.Timeout < 0 || s.Attempt < 0:
		return fmt.Errorf("%w: Timeout and Attempt must not be negative", ErrInvalidConfig)
	case s.ResolverID != "" && !resolverIDPattern.MatchString(s.ResolverID):
		return &ResolveError{Kind: ErrUnknownResolver, Detail: quote(s.ResolverID) + " is not a valid resolver id"}
	case !s.Priority.valid():
		return s.Priority.invalid()
	case s.FlowKey != "":
		if err := s.validateFlowKey(); err != nil {
			return err
		}
	}
	if s.TaskID != "" {
		if err := validateTaskID(s.TaskID); err != nil {
			return err
		}
	}
	return validateMetadata(s.Metadata)
}

// serialize returns a copy of a spec that [TaskSpec.validate] accepted, serialized through reg (an empty
// ResolverID takes defaultResolver), with its Metadata copied, and checked as a worker would read it: the
// payload's one syntax scan runs here, under maxDepth.
func (s *TaskSpec) serialize(reg *ResolverRegistry, defaultResolver string, maxDepth int) (*TaskSpec, error) {
	resolverID, st, err := s.serializeTask(reg, defaultResolver, maxDepth, true)
	if err != nil {
		return nil, err
	}
	out := *s
	out.ResolverID = resolverID
	out.Metadata = maps.Clone(out.Metadata)
	out.SerializedTask = &st
	out.Executable = nil
	return &out, nil
}

// serializeTask is serialize without the copy of the spec: the resolver id (defaultResolver when the spec names
// none) and the serialized task, checked. An already serialized payload is cloned when clone is set; the enqueue
// path, which only marshals it before it returns, reads it in place.
func (s *TaskSpec) serializeTask(reg *ResolverRegistry, defaultResolver string, maxDepth int, clone bool) (string, SerializedTask, error) {
	resolverID := s.ResolverID
	if resolverID == "" {
		resolverID = defaultResolver
	}
	var st SerializedTask
	if s.SerializedTask != nil {
		st = *s.SerializedTask
		if clone {
			st.Payload = bytes.Clone(st.Payload)
		}
	} else {
		res, err := reg.Lookup(resolverID)
		if err != nil {
			return "", SerializedTask{}, err
		}
		if st, err = res.Serialize(s.Executable); err != nil {
			return "", SerializedTask{}, err
		}
	}
	if err := checkSerialized(st, maxDepth); err != nil {
		return "", SerializedTask{}, err
	}
	return resolverID, st, nil
}

// checkSerialized refuses what a worker would park: an unsafe or empty strategy, a payload that is not a JSON
// object (an empty payload is written as {}) or not valid JSON within maxDepth.
func checkSerialized(st SerializedTask, maxDepth int) error {
	if IsUnsafeStrategy(st.Strategy) {
		return &ResolveError{Kind: ErrUnsafeStrategy, Detail: quote(st.Strategy)}
	}
	if st.Strategy == "" {
		return fmt.Errorf("%w: empty strategy", ErrNotSerializable)
	}
	if len(st.Payload) == 0 {
		return nil
	}
	if err := validateJSON(st.Payload, maxDepth); err != nil {
		return fmt.Errorf("%w: payload: %v", ErrNotSerializable, err)
	}
	if p := bytes.TrimLeft(st.Payload, " \t\r\n"); len(p) == 0 || p[0] != '{' {
		return fmt.Errorf("%w: payload is not a JSON object", ErrNotSerializable)
	}
	return nil
}

// Bounds of [TaskSpec.Metadata].
const (
	MaxMetadataEntries  = 32
	MaxMetadataKeyLen   = 64
	MaxMetadataValueLen = 1024
)

// validateMetadata checks [TaskSpec.Metadata] against the rules the envelope decoder applies, so that a producer
// never writes metadata that a worker would park.
func validateMetadata(m map[string]string) error {
	if len(m) > MaxMetadataEntries {
		return fmt.Errorf("%w: Metadata holds %d entries, at most %d", ErrInvalidConfig, len(m), MaxMetadataEntries)
	}
	for k, v := range m {
		switch {
		case !validMetadataKey(k):
			return fmt.Errorf("%w: Metadata key %s must be 1 to %d characters of [A-Za-z0-9._-]", ErrInvalidConfig, quote(k), MaxMetadataKeyLen)
		case len(v) > MaxMetadataValueLen:
			return fmt.Errorf("%w: Metadata value of %s is %d bytes, at most %d", ErrInvalidConfig, quote(k), len(v), MaxMetadataValueLen)
		case !utf8.ValidString(v):
			return fmt.Errorf("%w: Metadata value of %s is not valid UTF-8", ErrInvalidConfig, quote(k))
		}
	}
	if len(m) > 1 { // the decoder refuses keys that differ only in case, as in any object
		for k := range m {
			for k2 := range m {
				if k < k2 && strings.EqualFold(k, k2) {
					return fmt.Errorf("%w: Metadata keys %s and %s differ only in case", ErrInvalidConfig, quote(k), quote(k2))
				}
			}
		}
	}
	return nil
}

// validMetadataKey reports whether k is 1 to [MaxMetadataKeyLen] characters of [A-Za-z0-9._-].
func validMetadataKey[T string | []byte](k T) bool {
	if len(k) == 0 || len(k) > MaxMetadataKeyLen {
		return false
	}
	for i := range len(k) {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
