package taskqueue

import (
	"errors"
	"fmt"
	"time"
	"unicode/utf8"
)

// Sentinel errors. Every error the package returns wraps one of these, so callers test with [errors.Is]; typed
// errors ([*EnvelopeError], [*ResolveError], [*PanicError]) carry detail and are reachable with [errors.As].
var (
	// ErrClosed is returned by a worker or queue that has been stopped or closed.
	ErrClosed = errors.New("taskqueue: closed")

	// ErrLeaseLost is returned by ack, fail, release and lease extension when the delivery's fencing token no
	// longer owns the task: its lease expired and the task was reclaimed (and maybe delivered to another worker).
	ErrLeaseLost = errors.New("taskqueue: lease lost")

	// ErrTaskIDConflict is returned when a task id is enqueued again with different content while the first task
	// still exists. Enqueueing the same id with the same content is an idempotent no-op ([Duplicate]). The
	// error is an [*EnqueueError], whose message names the id.
	ErrTaskIDConflict = errors.New("taskqueue: task id already exists with different content")

	// ErrInvalidTaskID is returned for an empty, oversize or non-printable task id.
	ErrInvalidTaskID = errors.New("taskqueue: invalid task id")

	// ErrInvalidPriority is returned on enqueue for a [TaskSpec.Priority] that is not one of the levels
	// ([PriorityHigh], [PriorityDefault], [PriorityLow]), and by DispatchGroup for a member with a level other than
	// the default; nothing is stored. The message names the field and the value.
	ErrInvalidPriority = errors.New("taskqueue: invalid priority")

	// ErrInvalidFlowKey is returned on enqueue for a [TaskSpec.FlowKey] out of bounds or combined with what it
	// cannot be (a level other than the default, a [Unique], a group or workflow), and by the limit calls of
	// [Admin] for such a key; nothing is stored. The message names the field.
	ErrInvalidFlowKey = errors.New("taskqueue: invalid flow key")

	// ErrInvalidLimit is returned by [Admin.SetConcurrencyLimit] and [Admin.SetRateLimit] for a limit of zero or
	// less, a period out of bounds, or more limited keys than [MaxFlowLimits]; nothing is stored. The message
	// names the field.
	ErrInvalidLimit = errors.New("taskqueue: invalid limit")

	// ErrInvalidConfig is returned by constructors for a configuration that cannot work.
	ErrInvalidConfig = errors.New("taskqueue: invalid configuration")

	// ErrInvalidKeyPrefix is returned for a key prefix that is empty, too long, or holds braces, glob
	// characters, whitespace or other characters that would collide with the queue's keys.
	ErrInvalidKeyPrefix = errors.New("taskqueue: invalid key prefix")

	// ErrMalformedEnvelope is returned when a stored task is not a valid envelope: invalid JSON or UTF-8,
	// too deep, duplicate or case-variant keys, wrong types, missing required fields. Such tasks are parked.
	ErrMalformedEnvelope = errors.New("taskqueue: malformed task envelope")

	// ErrEnvelopeTooLarge is returned when an envelope exceeds the configured size limit.
	ErrEnvelopeTooLarge = errors.New("taskqueue: task envelope too large")

	// ErrUnsupportedVersion is returned for an envelope written by a newer, incompatible schema version. The task
	// is parked untouched, so a newer worker can requeue it.
	ErrUnsupportedVersion = errors.New("taskqueue: unsupported envelope version")

	// ErrUnknownResolver is returned when no resolver is registered under a task's resolver id.
	ErrUnknownResolver = errors.New("taskqueue: unknown resolver id")

	// ErrDuplicateResolver is returned when a resolver id is registered twice.
	ErrDuplicateResolver = errors.New("taskqueue: resolver id already registered")

	// ErrUnknownStrategy is returned when a resolver does not handle a task's serialization strategy.
	ErrUnknownStrategy = errors.New("taskqueue: unknown serialization strategy")

	// ErrUnsafeStrategy is returned for strategies that would execute code taken from a payload, such as
	// Python's "pickle" and "source". They are refused by design: no code ever comes out of a payload.
	ErrUnsafeStrategy = errors.New("taskqueue: strategy refused: it would execute code from the payload")

	// ErrUnknownTask is returned when a reference names a module and function that no one registered.
	ErrUnknownTask = errors.New("taskqueue: unknown task reference")

	// ErrDuplicateTask is returned when a module and name are registered twice on a reference resolver.
	ErrDuplicateTask = errors.New("taskqueue: task reference already registered")

	// ErrInvalidArgs is returned when a task's arguments do not decode into the registered function's argument type.
	ErrInvalidArgs = errors.New("taskqueue: invalid task arguments")

	// ErrNotSerializable is returned when a task spec destined for Redis holds an executable that its resolver
	// cannot serialize (a closure, for example).
	ErrNotSerializable = errors.New("taskqueue: executable cannot be serialized")

	// ErrNotRunnable is returned by running an unbound reference: a [Call] made by a producer names a function
	// that only a worker's registry can run.
	ErrNotRunnable = errors.New("taskqueue: reference is not bound to a function")

	// ErrNotFound is returned by inspection calls for a task id that does not exist in the asked state.
	ErrNotFound = errors.New("taskqueue: task not found")

	// ErrLeaseExpired is the cause recorded for a task whose worker stopped renewing its lease.
	ErrLeaseExpired = errors.New("taskqueue: lease expired")

	// ErrMaxDeliveries is the reason recorded for a task that lost its worker (lease expiry without ack or fail)
	// more times in a row than the queue allows, typically because it crashes the process.
	ErrMaxDeliveries = errors.New("taskqueue: maximum deliveries exceeded, the task keeps losing its worker")

	// ErrRetriesExhausted is the reason recorded for a task whose handler failed more times than its retry limit.
	ErrRetriesExhausted = errors.New("taskqueue: retries exhausted")

	// ErrTimeout is the cause recorded for a task whose handler ran past its timeout.
	ErrTimeout = errors.New("taskqueue: task timed out")

	// ErrSkipRetry can be returned (wrapped) by a handler to dead-letter the task at once instead of retrying it.
	ErrSkipRetry = errors.New("taskqueue: skip retry")

	// ErrInvalidWindow is returned by [Admin.History] for a window that is not more than 0 and at most
	// [MaxHistoryWindow].
	ErrInvalidWindow = errors.New("taskqueue: invalid history window")
)

// EnvelopeError describes why a stored envelope could not be decoded. It wraps one of [ErrMalformedEnvelope],
// [ErrEnvelopeTooLarge] or [ErrUnsupportedVersion].
type EnvelopeError struct {
	Kind   error  // the sentinel
	Detail string // a bounded description of the problem
}

// maxDetail bounds the detail of a typed error's message, whoever built it.
const maxDetail = 512

func (e *EnvelopeError) Error() string {
	s := kindText(e.Kind)
	if e.Detail == "" {
		return s
	}
	return s + ": " + truncate(e.Detail, maxDetail)
}

func (e *EnvelopeError) Unwrap() error { return e.Kind }

// ResolveError reports a task that could not be turned back into an executable. It wraps one of
// [ErrUnknownResolver], [ErrUnknownStrategy], [ErrUnsafeStrategy], [ErrUnknownTask] or [ErrInvalidArgs].
type ResolveError struct {
	Kind   error  // the sentinel
	Detail string // a bounded description; never echoes unbounded input
	Err    error  // an underlying cause, if any
}

func (e *ResolveError) Error() string {
	s := kindText(e.Kind)
	if e.Detail != "" {
		s += ": " + truncate(e.Detail, maxDetail)
	}
	if e.Err != nil {
		s += ": " + truncate(e.Err.Error(), 200)
	}
	return s
}

// Unwrap returns the sentinel and the cause.
func (e *ResolveError) Unwrap() []error {
	if e.Err != nil {
		return []error{e.Kind, e.Err}
	}
	return []error{e.Kind}
}

// PanicError is the failure recorded for a handler that panicked; the task is retried like any failure.
type PanicError struct {
	Value any    // what was passed to panic
	Stack []byte // the goroutine's stack at the panic
}

func (e *PanicError) Error() string {
	return "taskqueue: handler panicked: " + truncate(fmt.Sprint(e.Value), 200)
}

func kindText(kind error) string {
	if kind == nil {
		return "taskqueue: error"
	}
	return truncate(kind.Error(), maxDetail)
}

// quote formats untrusted input for an error message, bounded in length.
func quote(s string) string {
	return fmt.Sprintf("%q", truncate(s, 64))
}

// truncate bounds s to at most n bytes (at a rune boundary), marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// ErrInvalidState is returned by an admin call for a state it does not take: an unknown name, retry for
// [Admin.List] and [Admin.Purge] (retrying tasks are listed and purged with the scheduled ones), or active for
// [Admin.Purge]. The error is a [*StateError].
var ErrInvalidState = errors.New("taskqueue: invalid task state")

// StateError reports a state that an admin call refused. It wraps [ErrInvalidState].
type StateError struct {
	Op     string // the call: "list", "purge", "parse"
	State  State  // the state asked for (bounded in length)
	Reason string // why it was refused
}

func (e *StateError) Error() string {
	return fmt.Sprintf("%s: %s %s: %s", ErrInvalidState, e.Op, quote(string(e.State)), e.Reason)
}

// Unwrap returns [ErrInvalidState].
func (e *StateError) Unwrap() error { return ErrInvalidState }

// ErrRedisTooOld is returned by [Admin.Check] (and a worker's start-up check) for a Redis server older than the scripts need. The error
// is a [*RedisVersionError].
var ErrRedisTooOld = errors.New("taskqueue: Redis server too old")

// RedisVersionError reports a Redis server whose version the queue cannot run on. It wraps [ErrRedisTooOld].
type RedisVersionError struct {
	Found string // the server's redis_version (bounded in length)
	Need  string // the oldest version the queue runs on
}

func (e *RedisVersionError) Error() string {
	return fmt.Sprintf("%s: found %s, need %s or newer", ErrRedisTooOld, quote(e.Found), e.Need)
}

// Unwrap returns [ErrRedisTooOld].
func (e *RedisVersionError) Unwrap() error { return ErrRedisTooOld }

// ErrPermission wraps a Redis refusal for lack of rights: NOPERM (an ACL denies the command or key), NOAUTH (no
// credentials given) or WRONGPASS (bad credentials). Retrying does not help; an operator must grant the rights.
// The Redis error stays in the chain, so its text and [errors.As] still reach it.
var ErrPermission = errors.New("taskqueue: permission denied by Redis")

// ErrSignature is the reason a queue with signing ([RedisConfig.Signing]) parks a task whose envelope is
// unsigned, signed with an unknown key id, or whose MAC does not match: the task is dead-lettered, never
// resolved, run or retried. The error is a [*SignatureError].
var ErrSignature = errors.New("taskqueue: task signature refused")

// SignatureProblem says why a signature was refused.
type SignatureProblem string

// The problems a [*SignatureError] reports.
const (
	SignatureMissing    SignatureProblem = "the task is not signed"
	SignatureUnknownKey SignatureProblem = "unknown key id"
	SignatureMismatch   SignatureProblem = "MAC does not match"
)

// SignatureError reports a task whose signature was refused. It wraps [ErrSignature].
type SignatureError struct {
	Problem SignatureProblem
	KeyID   string // the envelope's key id; empty when it is unsigned
}

func (e *SignatureError) Error() string {
	s := ErrSignature.Error() + ": " + string(e.Problem)
	if e.KeyID != "" {
		s += " (key id " + quote(e.KeyID) + ")"
	}
	return s
}

// Unwrap returns [ErrSignature].
func (e *SignatureError) Unwrap() error { return ErrSignature }

// Errors of parallel groups and task results (group.go, result.go).
var (
	// ErrGroupFailed is returned by [GroupRun.Wait] when the group completed but its [GroupPolicy] refused the
	// outcome (with the policy's reason).
	ErrGroupFailed = errors.New("taskqueue: group failed")

	// ErrGroupIncomplete is returned by [GroupRun.Wait] when the wait ended before every member completed; it
	// also wraps the reason: [ErrGroupTimeout], context.Canceled or context.DeadlineExceeded.
	ErrGroupIncomplete = errors.New("taskqueue: group incomplete")

	// ErrGroupTimeout is the cause of an [ErrGroupIncomplete] wait that reached [WaitOptions.Timeout].
	ErrGroupTimeout = errors.New("taskqueue: group wait timed out")

	// ErrGroupNotFound is returned for a group run whose keys do not exist: never dispatched, already waited for
	// and cleaned up, or expired.
	ErrGroupNotFound = errors.New("taskqueue: group run not found")

	// ErrNoResult is returned by [RedisTaskQueue.Result], [ShardedQueue.Result] and [MemoryQueue.Result] when a
	// task stored no result, or it expired.
	ErrNoResult = errors.New("taskqueue: no result")

	// ErrResultTooLarge is the cause of a task whose result exceeds its queue's limit ([RedisConfig.MaxResultBytes]
	// on Redis, 1 MiB on a [MemoryQueue]): the task fails
	// (and is dead-lettered at once, since a retry would produce the same result) rather than storing a
	// truncated result.
	ErrResultTooLarge = errors.New("taskqueue: task result too large")

	// ErrResultNotStored is returned by [SetResult] outside a task run by a [TaskWorker].
	ErrResultNotStored = errors.New("taskqueue: results are not stored here")
)

// ResultError reports a result that cannot be stored: [ErrResultTooLarge] or [ErrNotSerializable]. It also
// matches [ErrSkipRetry], so the worker dead-letters the task at once with this error as the reason.
type ResultError struct {
	Kind   error  // the sentinel
	Detail string // sizes, or why encoding failed
}

func (e *ResultError) Error() string { return kindText(e.Kind) + ": " + truncate(e.Detail, maxDetail) }

// Unwrap returns the sentinel and [ErrSkipRetry].
func (e *ResultError) Unwrap() []error { return []error{e.Kind, ErrSkipRetry} }

// ErrNotReplicated is returned by a durable enqueue ([RedisConfig.DurableReplicas]) when fewer replicas than asked
// confirmed the write within [RedisConfig.DurableTimeout]. The task IS enqueued on the primary: it runs unless the
// primary is lost before a replica copies it. The caller may retry the enqueue (it is idempotent by task id) or
// give up. The error is a [*ReplicationError].
var ErrNotReplicated = errors.New("taskqueue: enqueue not replicated in time")

// ReplicationError reports a durable enqueue that fewer replicas than asked confirmed in time. It wraps
// [ErrNotReplicated] and, when WAIT itself failed, that error.
type ReplicationError struct {
	Want    int           // replicas asked for
	Got     int           // replicas that confirmed the write
	Timeout time.Duration // how long the primary waited
	Err     error         // WAIT's own failure, if any
}

func (e *ReplicationError) Error() string {
	s := fmt.Sprintf("%s: %d of %d replicas within %s (the task is enqueued on the primary)", ErrNotReplicated, e.Got, e.Want, e.Timeout)
	if e.Err != nil {
		s += ": " + truncate(e.Err.Error(), 200)
	}
	return s
}

// Unwrap returns [ErrNotReplicated] and WAIT's failure, if any.
func (e *ReplicationError) Unwrap() []error {
	if e.Err != nil {
		return []error{ErrNotReplicated, e.Err}
	}
	return []error{ErrNotReplicated}
}

// ErrWorkerStuck is the [WorkerHealth.Err] of a worker whose pickup loop has tried to reach Redis for longer than
// [WorkerHealth.StuckAfter] without one successful round trip: Redis is down, frozen or unreachable, or the
// connection hangs. The worker retries by itself and clears the error at its next successful pickup.
var ErrWorkerStuck = errors.New("taskqueue: worker stuck: pickup cannot reach Redis")

// ErrTransient marks a failed Redis call that a resend may cure: the connection broke or timed out, so the reply
// was lost and the call may or may not have run; or the server could not serve the queue's keys just then: a
// Cluster slot on the move (TRYAGAIN, or an ASK or MOVED that the client did not follow), a Cluster, a primary or
// a failover in progress (CLUSTERDOWN, MASTERDOWN, READONLY, NOREPLICAS), a server loading its data (LOADING) or
// busy with a script (BUSY). The error is a [*TransientError], and the Redis error stays in the chain. A worker
// resends its outcome calls (acks, retries, dead letters, lease renewals) on it until shortly before the lease
// ends, and its pickups back off quietly (docs/reliability.md); a [TaskQueue] of one's own gets the same by
// wrapping ErrTransient.
var ErrTransient = errors.New("taskqueue: transient Redis error")

// ErrUnavailable marks a failed Redis call that could not reach Redis at all: no connection could be made (the
// dial failed, was refused, the host or network is unreachable, the name did not resolve) or none was free within
// the pool's timeout. The call did not run. The error is a [*TransientError] with Unavailable set, so it also
// matches [ErrTransient], and the cause stays in the chain.
var ErrUnavailable = errors.New("taskqueue: Redis unavailable")

// TransientError is a Redis call's failure that a resend may cure. It wraps [ErrTransient] and the Redis error,
// and [ErrUnavailable] too when Unavailable is set.
type TransientError struct {
	// Reason names the failure in a word: the Redis error's prefix ("TRYAGAIN", "ASK", "MOVED", "CLUSTERDOWN",
	// "LOADING", "READONLY", "MASTERDOWN", "NOREPLICAS", "BUSY"), or "connection" (reset, refused, closed) or
	// "timeout" (no reply in time) when no reply came.
	Reason string
	// Unavailable is set when Redis could not be reached: no connection was made, so the call did not run.
	Unavailable bool
	Err         error
}

func (e *TransientError) Error() string {
	kind := ErrTransient
	if e.Unavailable {
		kind = ErrUnavailable
	}
	return kind.Error() + " (" + e.Reason + "): " + truncate(errString(e.Err), maxDetail)
}

// Unwrap returns [ErrTransient], [ErrUnavailable] when Redis could not be reached, and the Redis error.
func (e *TransientError) Unwrap() []error {
	if e.Unavailable {
		return []error{ErrTransient, ErrUnavailable, e.Err}
	}
	return []error{ErrTransient, e.Err}
}

// EnqueueError reports the failure of one task in [TaskQueue.Enqueue] or [TaskQueue.EnqueueBatch]: its message
// names the task id (quoted, bounded in length), and it wraps the cause's sentinel, such as [ErrTaskIDConflict].
type EnqueueError struct {
	Index  int
	TaskID string
	Err    error
}

func (e *EnqueueError) Error() string {
	return fmt.Sprintf("taskqueue: enqueue %s (#%d): %v", quote(e.TaskID), e.Index, e.Err)
}

func (e *EnqueueError) Unwrap() error { return e.Err }

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// ErrUniqueKeyHeld is returned (as a [*DuplicateError] inside an [*EnqueueError]) for a task whose [Unique] key
// is held by another task.
var ErrUniqueKeyHeld = errors.New("taskqueue: duplicate of a unique task")

// ErrInvalidUnique is returned (as a [*UniqueError]) for a [Unique] that cannot work: nothing is stored.
var ErrInvalidUnique = errors.New("taskqueue: invalid unique option")

// DuplicateError names the task that holds a unique key.
type DuplicateError struct {
	Key    string // the unique key
	TaskID string // the task that holds it
}

func (e *DuplicateError) Error() string {
	return fmt.Sprintf("taskqueue: duplicate of a unique task: key %s is held by task %s", quote(e.Key), quote(e.TaskID))
}

// Unwrap returns [ErrUniqueKeyHeld].
func (e *DuplicateError) Unwrap() error { return ErrUniqueKeyHeld }

// UniqueError names the field of a [Unique] that is out of bounds.
type UniqueError struct {
	Field   string // "Key", "TTL", "Lifetime", "Mode" or "ArgFields"
	Problem string
}

func (e *UniqueError) Error() string {
	return "taskqueue: invalid unique option: " + e.Field + ": " + e.Problem
}

// Unwrap returns [ErrInvalidUnique].
func (e *UniqueError) Unwrap() error { return ErrInvalidUnique }

// Errors of the control over single tasks: cancel, delete, progress and snooze (docs/control.md).
var (
	// ErrCancelled is the cause (context.Cause) of the context of a task cancelled by [Admin.Cancel] while it
	// ran, and the error a cancelled run ends with.
	ErrCancelled = errors.New("taskqueue: task cancelled")
	// ErrAlreadyFinished is returned for a cancel, delete or progress of a task that finished: acknowledged,
	// dead-lettered (cancel) or cancelled.
	ErrAlreadyFinished = errors.New("taskqueue: task already finished")
	// ErrTaskRunning is returned by [Admin.Delete] for a task a worker is running: cancel it ([Admin.Cancel]),
	// then delete its record.
	ErrTaskRunning = errors.New("taskqueue: task is running; cancel it first")
	// ErrInvalidProgress is returned by [ReportProgress] for a percentage outside 0 to 100, and outside a task.
	ErrInvalidProgress = errors.New("taskqueue: invalid progress")
	// ErrInvalidSnooze is the failure of a run whose handler returned a [Snooze] of zero or less, or longer
	// than [MaxSnoozeDelay]; ErrSnoozeLimit of one that snoozed more than [MaxSnoozes] times. Either run counts
	// as a failed attempt.
	ErrInvalidSnooze = errors.New("taskqueue: invalid snooze")
	ErrSnoozeLimit   = errors.New("taskqueue: snooze limit reached")
)

// ControlError is what [Admin.Cancel], [Admin.Delete] and [Admin.TaskProgress] return when they cannot act on a
// task: it names the operation, the task and where the task is, and wraps [ErrNotFound], [ErrAlreadyFinished] or
// [ErrTaskRunning].
type ControlError struct {
	Op     string // "cancel", "delete" or "progress"
	TaskID string
	State  State // where the task is: StateDone, StateDead, StateCancelled, StateActive; empty when not found
	Err    error
}

func (e *ControlError) Error() string {
	s := fmt.Sprintf("taskqueue: %s %s: %v", e.Op, quote(e.TaskID), e.Err)
	if e.State != "" {
		s += " (" + string(e.State) + ")"
	}
	return s
}

func (e *ControlError) Unwrap() error { return e.Err }
